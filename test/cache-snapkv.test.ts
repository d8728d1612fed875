/**
 * SnapKV on both backends: the prompt tokens each head keeps equal an independent recomputation from the prompt
 * pass's own queries and keys (explicit attention maps, the observation window's column sums, average pooling, top-k),
 * every later token is kept, bytes are exact and the pool empties.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TappedSequenceKv } from '../src/eval/tapped-kv.js';
import { loadModel, type Model } from '../src/generate/model.js';
import { promptMapsTap } from './recovery-brute-force.js';
import { SKIP_SHARED, sharedPath } from './shared-fixtures.js';

const PROMPT = 'Once upon a time, there was a little girl named Lily. She had a red ball, and she liked to play in the park with her dog!';

/** Positions one KV head keeps, by the specification: top (keep − W) prefix slots by pooled window attention, plus the last W. */
function snapkvKept(maps: number[][][], kvHead: number, group: number, n: number, keep: number, W: number, kernel: number): { kept: number[]; pooled: number[] } {
  const prefix = n - W;
  const raw = new Array<number>(prefix).fill(0);
  for (let g = 0; g < group; g++) {
    const A = maps[kvHead * group + g];
    for (let i = n - W; i < n; i++) for (let j = 0; j < prefix; j++) raw[j] += A[i][j];
  }
  const half = kernel >> 1;
  const pooled = raw.map((_, s) => {
    let sum = 0;
    for (let j = s - half; j <= s + half; j++) if (j >= 0 && j < prefix) sum += raw[j];
    return sum / kernel;
  });
  const order = pooled.map((p, s) => ({ p, s })).sort((a, b) => b.p - a.p || a.s - b.s);
  const kept = [...order.slice(0, keep - W).map((x) => x.s), ...Array.from({ length: W }, (_, i) => prefix + i)];
  return { kept: kept.sort((a, b) => a - b), pooled };
}

async function checkSnapkv(model: Model, ratio: number, window: number, poolKernel: number): Promise<void> {
  const c = model.config;
  const group = c.nHeads / c.nKvHeads;
  const ids = model.encode(PROMPT);
  const n = ids.length;
  const keep = Math.ceil(ratio * n);
  const W = Math.min(window, keep);
  const kv = TappedSequenceKv.create(model, { policy: 'snapkv', ratio, window, poolKernel });
  const maps: number[][][][] = [];
  kv.tap = promptMapsTap(c, maps);
  let [logits] = await model.backend.forward([{ kv, tokens: ids, logits: 'last' }]);
  let nearTies = 0;
  for (let l = 0; l < c.nLayers; l++) {
    for (let h = 0; h < c.nKvHeads; h++) {
      const st = kv.store(l, h);
      const got = Array.from(st.positions.subarray(0, st.length)).sort((a, b) => a - b);
      const want = snapkvKept(maps[l], h, group, n, keep, W, poolKernel);
      assert.equal(got.length, keep, `layer ${l} head ${h}: ${got.length} tokens kept, expected ${keep}`);
      const a = new Set(got);
      const b = new Set(want.kept);
      const onlyGot = got.filter((p) => !b.has(p));
      const onlyWant = want.kept.filter((p) => !a.has(p));
      // f32 kernel sums against an f64 recomputation: a swap is allowed only between slots whose scores tie to 1e-6.
      for (let i = 0; i < onlyGot.length; i++) {
        const gap = Math.abs(want.pooled[onlyGot[i]] - want.pooled[onlyWant[i]]);
        assert.ok(gap < 1e-6, `layer ${l} head ${h}: kept ${onlyGot[i]} instead of ${onlyWant[i]} (scores differ by ${gap})`);
        nearTies++;
      }
    }
  }
  assert.ok(nearTies <= 2, `${nearTies} near-tie swaps`);
  // Later tokens are all kept: every head grows by one per step; bytes are exactly the kept tokens'.
  const perToken = 2 * c.headDim * model.pool.elementBytes;
  for (let step = 0; step < 5; step++) {
    let best = 0;
    for (let t = 1; t < logits.length; t++) if (logits[t] > logits[best]) best = t;
    [logits] = await model.backend.forward([{ kv, tokens: [best], logits: 'last' }]);
    for (const st of kv.stores) assert.equal(st.length, keep + step + 1);
    assert.equal(kv.kvBytes(), c.nLayers * c.nKvHeads * (keep + step + 1) * perToken);
    assert.equal(model.pool.bytesInUse, kv.stores.reduce((s, st) => s + st.pages.length, 0) * model.pool.pageBytes);
  }
  kv.release();
  assert.equal(model.pool.pagesInUse, 0);
}

for (const backend of ['cpu-ref', 'wasm'] as const) {
  test(`${backend}: stories15M (MHA) SnapKV keeps what an independent recomputation keeps`, async () => {
    const m = await loadModel(undefined, { backend });
    await checkSnapkv(m, 0.4, 8, 5);
    m.backend.dispose();
  });
  for (const kvDtype of ['f32', 'f16'] as const) {
    test(`${backend}: stories260K (GQA) SnapKV = recomputation, ${kvDtype} KV`, { skip: SKIP_SHARED }, async () => {
      const m = await loadModel(sharedPath('models/stories260K/stories260K.bin'), { backend, kvDtype });
      await checkSnapkv(m, 0.5, 6, 3);
      await checkSnapkv(m, 0.3, 16, 7);
      m.backend.dispose();
    });
  }
}
