/**
 * FastGen's profile as each backend collects it (column and band sums from inside its attention computation) equals
 * a brute-force recomputation from the very queries and keys of the prompt pass: every layer, every KV head, every
 * candidate's recovery; MHA (stories15M) and GQA (stories260K), f32 and f16 KV. (MQA and odd sizes: cache-recovery.)
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CacheOptions } from '../src/cache/policies/index.js';
import { TappedSequenceKv } from '../src/eval/tapped-kv.js';
import { loadModel, type Model } from '../src/generate/model.js';
import { bruteForceRecoveries, promptMapsTap } from './recovery-brute-force.js';
import { SKIP_SHARED, sharedPath } from './shared-fixtures.js';

const PROMPT = 'Once upon a time, there was a little girl named Lily. She had a red ball, and she liked to play in the park!';

async function checkProfiles(model: Model, cache: CacheOptions & { gqa: 'mean' | 'min' }): Promise<void> {
  const c = model.config;
  const ids = model.encode(PROMPT);
  const kv = TappedSequenceKv.create(model, { ...cache, policy: 'fastgen', variant: 'paper', recovery: 0.9 });
  const maps: number[][][][] = [];
  kv.tap = promptMapsTap(c, maps);
  await model.backend.forward([{ kv, tokens: ids, logits: 'last' }]);
  const o = kv.options;
  let worst = 0;
  for (let l = 0; l < c.nLayers; l++) {
    const want = bruteForceRecoveries(maps[l], c.nKvHeads, ids, (t) => model.classes.special[t] === 1, (t) => model.classes.punct[t] === 1,
      o.localRatio!, o.frequentRatio!, cache.gqa);
    for (let h = 0; h < c.nKvHeads; h++) {
      const got = kv.profiles[l][h].recoveries.map((r) => r.recovery);
      assert.equal(got.length, want[h].length);
      got.forEach((r, ci) => (worst = Math.max(worst, Math.abs(r - want[h][ci]))));
    }
  }
  kv.release();
  // f32 accumulation in the kernels against an f64 brute force.
  assert.ok(worst < 2e-5, `largest recovery difference ${worst}`);
}

for (const backend of ['cpu-ref', 'wasm'] as const) {
  test(`${backend}: stories15M (MHA) profiles = brute force`, async () => {
    const m = await loadModel(undefined, { backend });
    await checkProfiles(m, { gqa: 'mean' });
    m.backend.dispose();
  });
  for (const kvDtype of ['f32', 'f16'] as const) {
    test(`${backend}: stories260K (GQA) profiles = brute force, ${kvDtype} KV, gqa mean and min`, { skip: SKIP_SHARED }, async () => {
      const m = await loadModel(sharedPath('models/stories260K/stories260K.bin'), { backend, kvDtype });
      await checkProfiles(m, { gqa: 'mean' });
      await checkProfiles(m, { gqa: 'min', localRatio: 0.2, frequentRatio: 0.4 });
      m.backend.dispose();
    });
  }
}
