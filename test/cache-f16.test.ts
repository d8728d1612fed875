/** The f16 KV cache: exact half conversion, half the bytes, and logits close to the f32 cache. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { f16ToF32, f32ToF16 } from '../src/half.js';
import { loadModel } from '../src/generate/model.js';
import { relErr, SKIP_SHARED, sharedPath } from './shared-fixtures.js';

test('f32 → f16 rounds to nearest even, including subnormals, overflow, inf and nan', () => {
  // Every half value round-trips exactly.
  for (let h = 0; h < 65536; h++) {
    const x = f16ToF32(h);
    if (Number.isNaN(x)) assert.ok(Number.isNaN(f16ToF32(f32ToF16(x))));
    else assert.equal(f32ToF16(x), h === 0x8000 ? 0x8000 : h, `half ${h.toString(16)}`);
  }
  // Midpoints between neighbours go to the even one; just above goes up.
  const one = 0x3c00;
  const mid = (f16ToF32(one) + f16ToF32(one + 1)) / 2;
  assert.equal(f32ToF16(mid), one);
  assert.equal(f32ToF16(Math.fround(mid + 2 ** -20)), one + 1);
  assert.equal(f32ToF16(1e6), 0x7c00);
  assert.equal(f32ToF16(-1e-10), 0x8000);
  assert.equal(f32ToF16(2 ** -24), 1);
});

test('stories260K with an f16 KV cache: half the KV bytes, logits within 1e-2 of the f32 cache', { skip: SKIP_SHARED }, async () => {
  const path = sharedPath('models/stories260K/stories260K.bin');
  const a = await loadModel(path, { backend: 'cpu-ref' });
  const b = await loadModel(path, { kvDtype: 'f16', backend: 'cpu-ref' });
  const ids = a.encode('Once upon a time, there was a little girl named Lily. She liked to play.');
  const ka = a.newSequence({ policy: 'fastgen', recovery: 0.9 });
  const kb = b.newSequence({ policy: 'fastgen', recovery: 0.9 });
  const [la] = await a.backend.forward([{ kv: ka, tokens: ids, logits: 'all' }]);
  const [lb] = await b.backend.forward([{ kv: kb, tokens: ids, logits: 'all' }]);
  let num = 0;
  let den = 0;
  for (let i = 0; i < la.length; i++) {
    num = Math.max(num, Math.abs(la[i] - lb[i]));
    den = Math.max(den, Math.abs(la[i]));
  }
  assert.ok(num / den < 1e-2, `relative error ${num / den}`);
  const sa = ka.stats();
  const sb = kb.stats();
  assert.equal(sb.fullKvBytes * 2, sa.fullKvBytes);
  assert.equal(b.pool.pageBytes * 2, a.pool.pageBytes);
  const kept = (s: typeof sb) => s.keptTokens.flat().reduce((x, y) => x + y, 0);
  assert.equal(sb.kvBytes, kept(sb) * 2 * b.config.headDim * 2);
  ka.release();
  kb.release();
  const r = await b.complete('Once upon a time', { temperature: 0, maxTokens: 40, cache: { policy: 'local+frequent', ratio: 0.5 } });
  assert.equal(r.generatedTokens, 40);
  assert.equal(b.pool.pagesInUse, 0);
});

test('the wasm backend with an f16 KV cache matches cpu-ref with one: logits and greedy tokens', { skip: SKIP_SHARED }, async () => {
  const path = sharedPath('models/stories260K/stories260K.bin');
  const ref = await loadModel(path, { kvDtype: 'f16', backend: 'cpu-ref' });
  const fast = await loadModel(path, { kvDtype: 'f16', backend: 'wasm' });
  const ids = ref.encode('Once upon a time, there was a little girl named Lily. She liked to play.');
  for (const cache of [{ policy: 'full' as const }, { policy: 'fastgen' as const, variant: 'paper' as const, recovery: 0.9 }]) {
    const ka = ref.newSequence(cache);
    const kb = fast.newSequence(cache);
    const [la] = await ref.backend.forward([{ kv: ka, tokens: ids, logits: 'all' }]);
    const [lb] = await fast.backend.forward([{ kv: kb, tokens: ids, logits: 'all' }]);
    // Not bit-equal: the backends' keys differ in the last f32 bits, which can flip the rounding of a half.
    assert.ok(relErr(lb, la) < 2e-3, `${cache.policy}: relative error ${relErr(lb, la)}`);
    assert.deepEqual(kb.stats().keptTokens, ka.stats().keptTokens);
    ka.release();
    kb.release();
    const opts = { temperature: 0, maxTokens: 40, cache };
    const a = await ref.complete('Once upon a time', opts);
    const b = await fast.complete('Once upon a time', opts);
    assert.deepEqual(b.tokens, a.tokens);
  }
  assert.equal(fast.pool.pagesInUse, 0);
  fast.dispose();
});
