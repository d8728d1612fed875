/** The wasm backend at model level: batching, agreement with cpu-ref, quantized weights, clean exit. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadModel, type Model } from '../src/generate/model.js';
import type { WasmBackend } from '../src/backend/wasm/backend.js';
import type { SequenceKv } from '../src/cache/sequence-kv.js';
import { relErr, REPO_ROOT, SKIP_SHARED, sharedPath } from './shared-fixtures.js';

const M260 = () => sharedPath('models/stories260K/stories260K.bin');


test('a batch of sequences in one pass gives the same logits as one pass each (mixed prefill and decode, mixed policies)', { skip: SKIP_SHARED }, async () => {
  const m = await loadModel(M260(), { backend: 'wasm' });
  const prompts = ['Once upon a time', 'The little dog ran to the park and saw a big red ball.', 'Lily'];
  const policies = [{ policy: 'full' as const }, { policy: 'fastgen' as const, recovery: 0.9 }, { policy: 'local+frequent' as const, ratio: 0.5 }];
  const solo = prompts.map((_, i) => m.newSequence(policies[i]));
  const batch = prompts.map((_, i) => m.newSequence(policies[i]));
  const ids = prompts.map((p) => m.encode(p));
  let a = await Promise.all(ids.map(async (t, i) => (await m.backend.forward([{ kv: solo[i], tokens: t, logits: 'last' }]))[0]));
  let b = await m.backend.forward(ids.map((t, i) => ({ kv: batch[i], tokens: t, logits: 'last' as const })));
  for (let step = 0; step < 12; step++) {
    a.forEach((x, i) => assert.ok(relErr(b[i], x) < 1e-5, `step ${step} seq ${i}: ${relErr(b[i], x)}`));
    const next = a.map((x) => x.indexOf(Math.max(...x)));
    // Sequence 2 joins late with a second chunk of prompt while the others decode.
    const extra = step === 5 ? m.encode(' and Tom went home.', false) : [];
    const inputs = next.map((t, i) => (i === 2 && extra.length ? [t, ...extra] : [t]));
    a = await Promise.all(inputs.map(async (t, i) => (await m.backend.forward([{ kv: solo[i], tokens: t, logits: 'last' }]))[0]));
    b = await m.backend.forward(inputs.map((t, i) => ({ kv: batch[i], tokens: t, logits: 'last' as const })));
  }
  solo.forEach((kv, i) => assert.deepEqual(batch[i].stats().keptTokens, kv.stats().keptTokens));
  [...solo, ...batch].forEach((kv) => kv.release());
  assert.equal(m.pool.pagesInUse, 0);
  m.dispose();
});

test('decode steps run the last step\'s job list patched: bit for bit the logits of lists built afresh (batch changes, new pages, outgrown tables, a moved arena, GQA)', { skip: SKIP_SHARED }, async () => {
  // stories260K: 8 query heads on 4 KV heads, so one KV head's patch reaches two attention records. Pages of 2 tokens:
  // a kept list's page tables (room for 16 pages) are outgrown within the run, and a new list is made.
  const models = [await loadModel(M260(), { backend: 'wasm', pageTokens: 2 }), await loadModel(M260(), { backend: 'wasm', pageTokens: 2 })];
  const [kept, fresh] = models.map((m) => m.backend as WasmBackend);
  fresh.keepDecodeLists = false;
  const prompts = ['Once upon a time', 'The little dog ran to the park and saw a big red ball.', 'Lily'];
  const seqs: SequenceKv[][] = models.map((m) => prompts.map(() => m.newSequence({ policy: 'full' })));
  const firstBase = seqs[0][0].pool.arena.baseByteOffset;
  let outs = await Promise.all(models.map((m, j) => m.backend.forward(prompts.map((p, i) => ({ kv: seqs[j][i], tokens: m.encode(p), logits: 'last' as const })))));
  for (let step = 0; step < 70; step++) {
    outs[0].forEach((x, i) => assert.ok(x.every((v, k) => Object.is(v, outs[1][i][k])), `step ${step} seq ${i}: logits differ`));
    if (step === 20) {
      // Something allocated after the KV arena: its next growth has to move it (kernels then read the new address).
      for (const m of models) m.backend.createArena().ensureFloats(1024);
    }
    // Sequence 2 leaves after step 40 (a new shape: the list is rebuilt, then kept again); at step 55 one step decodes
    // with logits for sequence 0 only.
    const n = step < 40 ? 3 : 2;
    const next = outs[0].slice(0, n).map((x) => x.indexOf(Math.max(...x)));
    outs = await Promise.all(models.map((m, j) => m.backend.forward(next.map((t, i) => ({ kv: seqs[j][i], tokens: [t],
      logits: step === 55 && i > 0 ? 'none' as const : 'last' as const })))));
    if (step === 55) outs = await Promise.all(models.map((m, j) => m.backend.forward(next.map((_, i) => ({ kv: seqs[j][i], tokens: [1], logits: 'last' as const })))));
  }
  assert.notEqual(seqs[0][0].pool.arena.baseByteOffset, firstBase, 'the arena never moved: the test does not cover it');
  assert.equal(fresh.keptPasses, 0);
  assert.ok(kept.keptPasses >= 55, `only ${kept.keptPasses} passes ran a kept list`);
  for (const m of models) m.dispose();
});

test('wasm and cpu-ref agree under FastGen (paper): same profile choices, same greedy tokens', { skip: SKIP_SHARED }, async () => {
  const ref = await loadModel(M260(), { backend: 'cpu-ref' });
  const fast = await loadModel(M260(), { backend: 'wasm' });
  const prompt = 'Once upon a time, there was a girl named Lily. She had a red ball. She liked to play with it in the park!';
  for (const recovery of [0.9, 0.95]) {
    const o = { temperature: 0, maxTokens: 80, cache: { policy: 'fastgen' as const, variant: 'paper' as const, recovery } };
    const r1 = await ref.complete(prompt, o);
    const r2 = await fast.complete(prompt, o);
    assert.deepEqual(r2.profile?.map((l) => l.map((h) => h.policy)), r1.profile?.map((l) => l.map((h) => h.policy)));
    assert.deepEqual(r2.tokens, r1.tokens);
    assert.equal(r2.kv.kvBytes, r1.kv.kvBytes);
  }
  fast.dispose();
});

test('wasm and cpu-ref agree under FastGen (lattice): same recoveries; choices differ only where a candidate ties T', { skip: SKIP_SHARED }, async () => {
  const ref = await loadModel(M260(), { backend: 'cpu-ref' });
  const fast = await loadModel(M260(), { backend: 'wasm' });
  const prompt = 'Once upon a time, there was a girl named Lily. She had a red ball. She liked to play with it in the park!';
  let heads = 0;
  let differ = 0;
  for (const recovery of [0.9, 0.95]) {
    const o = { temperature: 0, maxTokens: 1, cache: { policy: 'fastgen' as const, recovery } };
    const p1 = (await ref.complete(prompt, o)).profile!;
    const p2 = (await fast.complete(prompt, o)).profile!;
    p1.forEach((layer, l) => layer.forEach((h1, h) => {
      const h2 = p2[l][h];
      heads++;
      // f64 sums (cpu-ref) against f32 sums (wasm): every candidate's recovery within 1e-5.
      h1.recoveries.forEach((r, c) => assert.ok(Math.abs(r.recovery - h2.recoveries[c].recovery) < 1e-5, `${l}/${h} ${r.policy}`));
      if (h1.policy === h2.policy) return;
      differ++;
      const near = (name: string) => Math.abs(h1.recoveries.find((r) => r.policy === name)!.recovery - recovery) < 1e-5;
      assert.ok(near(h1.policy) || near(h2.policy), `layer ${l} head ${h}: ${h1.policy} vs ${h2.policy} with no candidate at T`);
    }));
  }
  assert.ok(differ <= heads / 10, `${differ} of ${heads} choices differ`);
  fast.dispose();
});

test('long prompts in one batch (the pass scratch and the job list grow): same logits, profiles and kept tokens as cpu-ref', { skip: SKIP_SHARED }, async () => {
  const ref = await loadModel(M260(), { backend: 'cpu-ref' });
  const fast = await loadModel(M260(), { backend: 'wasm' });
  const text = readFileSync(sharedPath('data/tinystories_sample.txt'), 'utf8');
  const all = fast.encode(text);
  const prompts = [all.slice(0, 120), [1, ...all.slice(200, 299)], [1, ...all.slice(400, 511)]];
  const caches = [{ policy: 'fastgen' as const, recovery: 0.9 }, { policy: 'fastgen' as const, recovery: 0.95, gqa: 'min' as const }, { policy: 'local+frequent' as const, ratio: 0.5 }];
  const a = prompts.map((_, i) => ref.newSequence(caches[i]));
  const b = prompts.map((_, i) => fast.newSequence(caches[i]));
  let la = await Promise.all(prompts.map(async (p, i) => (await ref.backend.forward([{ kv: a[i], tokens: p, logits: 'last' }]))[0]));
  let lb = await fast.backend.forward(prompts.map((p, i) => ({ kv: b[i], tokens: p, logits: 'last' as const })));
  for (let step = 0; step < 6; step++) {
    la.forEach((x, i) => assert.ok(relErr(lb[i], x) < 1e-4, `step ${step} seq ${i}: ${relErr(lb[i], x)}`));
    const next = la.map((x) => [x.indexOf(Math.max(...x))]);
    la = await Promise.all(next.map(async (t, i) => (await ref.backend.forward([{ kv: a[i], tokens: t, logits: 'last' }]))[0]));
    lb = await fast.backend.forward(next.map((t, i) => ({ kv: b[i], tokens: t, logits: 'last' as const })));
  }
  a.forEach((kv, i) => {
    assert.deepEqual(b[i].profiles.map((l) => l.map((h) => h.policy)), kv.profiles.map((l) => l.map((h) => h.policy)));
    assert.deepEqual(b[i].stats().keptTokens, kv.stats().keptTokens);
  });
  [...a, ...b].forEach((kv) => kv.release());
  assert.equal(fast.pool.pagesInUse, 0);
  fast.dispose();
});

for (const backend of ['cpu-ref', 'wasm'] as const) {
  test(`${backend}: a fork of a compressed cache decodes bit for bit like the original`, { skip: SKIP_SHARED }, async () => {
    const m = await loadModel(M260(), { backend });
    const ids = m.encode('Once upon a time, there was a girl named Lily. She had a red ball. She liked to play with it in the park!');
    for (const cache of [{ policy: 'fastgen' as const, recovery: 0.9 }, { policy: 'local+frequent' as const, ratio: 0.5 }]) {
      const kv = m.newSequence(cache);
      let [a] = await m.backend.forward([{ kv, tokens: ids, logits: 'last' }]);
      const fork = kv.fork();
      assert.deepEqual(fork.stats(), kv.stats());
      let b = a;
      for (let step = 0; step < 20; step++) {
        const next = [a.indexOf(Math.max(...a))];
        // Both in one batch, as the server would run them.
        [a, b] = await m.backend.forward([{ kv, tokens: next, logits: 'last' }, { kv: fork, tokens: next, logits: 'last' }]);
        assert.deepEqual(Array.from(b), Array.from(a), `${cache.policy} step ${step}`);
      }
      assert.deepEqual(fork.stats().keptTokens, kv.stats().keptTokens);
      kv.release();
      fork.release();
    }
    assert.equal(m.pool.pagesInUse, 0);
    m.dispose();
  });
}

/** Teacher-forced perplexity of the model on the first 256 tokens of the in-domain sample text. */
async function perplexity(m: Model): Promise<number> {
  const text = readFileSync(sharedPath('data/tinystories_sample.txt'), 'utf8');
  const ids = m.encode(text).slice(0, m.config.maxSeqLen);
  const kv = m.newSequence();
  const [logits] = await m.backend.forward([{ kv, tokens: ids, logits: 'all' }]);
  kv.release();
  const V = m.config.vocabSize;
  let nll = 0;
  for (let t = 0; t + 1 < ids.length; t++) {
    const row = logits.subarray(t * V, (t + 1) * V);
    let max = -Infinity;
    for (const x of row) max = Math.max(max, x);
    let sum = 0;
    for (const x of row) sum += Math.exp(x - max);
    nll -= row[ids[t + 1]] - max - Math.log(sum);
  }
  return Math.exp(nll / (ids.length - 1));
}

test('stories15M perplexity: q8_0 within 1 % of f32, f16 within 0.1 %', { skip: SKIP_SHARED }, async () => {
  const result: Record<string, number> = {};
  for (const dtype of ['f32', 'q8_0', 'f16'] as const) {
    const m = await loadModel(undefined, { backend: 'wasm', dtype });
    result[dtype] = await perplexity(m);
    m.dispose();
  }
  assert.ok(result.f32 > 1 && result.f32 < 20, `f32 perplexity ${result.f32}`);
  assert.ok(Math.abs(result.q8_0 / result.f32 - 1) < 0.01, JSON.stringify(result));
  assert.ok(Math.abs(result.f16 / result.f32 - 1) < 0.001, JSON.stringify(result));
});

test('a program that generates on the wasm backend and never disposes it exits by itself', { skip: SKIP_SHARED }, () => {
  const lib = join(REPO_ROOT, 'dist', 'src', 'index.js');
  const code = `import { loadModel } from ${JSON.stringify(lib)};
    const m = await loadModel(${JSON.stringify(M260())}, { backend: 'wasm', threads: 2 });
    const r = await m.complete('Once upon a time', { maxTokens: 5, seed: 1 });
    console.log(r.generatedTokens);`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), '5');
});
