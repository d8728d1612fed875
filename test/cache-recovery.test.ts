/**
 * FastGen profiling: the recoveries the cache computes from column and band sums equal a brute-force computation from
 * explicit attention maps (the sums here come from the same maps; test/cache-profile-backends checks that the backends
 * collect them right).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PagePool } from '../src/cache/page-pool.js';
import { hybridCandidates, resolveCacheOptions } from '../src/cache/policies/index.js';
import { SequenceKv } from '../src/cache/sequence-kv.js';
import { attentionMaps, bruteForceRecoveries } from './recovery-brute-force.js';

/** Deterministic pseudo-random numbers for reproducible tests. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

interface Case {
  n: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  seed: number;
}

const CASES: Case[] = [
  { n: 1, nHeads: 2, nKvHeads: 2, headDim: 4, seed: 1 },
  { n: 7, nHeads: 3, nKvHeads: 3, headDim: 5, seed: 2 }, // MHA, odd sizes
  { n: 23, nHeads: 4, nKvHeads: 2, headDim: 8, seed: 3 }, // GQA 2:1
  { n: 40, nHeads: 6, nKvHeads: 1, headDim: 6, seed: 4 }, // MQA
  { n: 33, nHeads: 8, nKvHeads: 4, headDim: 16, seed: 5 }, // spans several 16-token pages
];

for (const c of CASES) {
  for (const gqa of ['mean', 'min'] as const) {
    test(`recovery = brute force: n=${c.n} heads=${c.nHeads}/${c.nKvHeads} d=${c.headDim} gqa=${gqa}`, () => {
      const r = rng(c.seed);
      const vocab = 20;
      const special = new Set([0, 1]);
      const punct = new Set([2, 3, 4]);
      const tokens = Array.from({ length: c.n }, (_, i) => (i === 0 ? 1 : Math.floor((r() + 0.5) * vocab)));
      const qDim = c.nHeads * c.headDim;
      const kvDim = c.nKvHeads * c.headDim;
      const q = Float32Array.from({ length: c.n * qDim }, () => r() * 4);
      const k = Float32Array.from({ length: c.n * kvDim }, () => r() * 4);
      const v = Float32Array.from({ length: c.n * kvDim }, () => r());
      const classes = { special: new Uint8Array(vocab), punct: new Uint8Array(vocab) };
      special.forEach((t) => (classes.special[t] = 1));
      punct.forEach((t) => (classes.punct[t] = 1));
      const rl = 0.3;
      const rf = 0.3;
      const pool = new PagePool({ headDim: c.headDim });
      const kv = new SequenceKv(pool, { nLayers: 1, ...c }, resolveCacheOptions({ policy: 'fastgen', variant: 'paper', recovery: 0.9, gqa, localRatio: rl, frequentRatio: rf }), classes);
      const maps = attentionMaps(c.n, c.nHeads, c.nKvHeads, c.headDim,
        (qh, i, x) => q[(i * c.nHeads + qh) * c.headDim + x], (kvh, j, x) => k[(j * c.nKvHeads + kvh) * c.headDim + x]);
      const bf = { recoveries: bruteForceRecoveries(maps, c.nKvHeads, tokens, (t) => special.has(t), (t) => punct.has(t), rl, rf, gqa) };
      kv.appendLayer(0, k, v, kvDim, c.n, 0, tokens);
      const needs = kv.needs(0, c.n);
      assert.equal(needs.scores[0], false, 'the profiling pass collects statistics instead of scores');
      assert.equal(needs.stats?.fromRow, 0, 'over every row of the prompt');
      assert.equal(needs.stats?.bands.length, 1, 'the paper\'s candidates share one window');
      const w = needs.stats?.bands[0];
      assert.equal(w, Math.floor(rl * c.n));
      // What a backend collects while it computes the attention: per query head, column and band sums.
      const stats = maps.map((A) => {
        const column = new Float64Array(c.n);
        const band = new Float64Array(c.n);
        A.forEach((row, i) => row.forEach((p, j) => {
          column[j] += p;
          if (i - j <= w!) band[j] += p;
        }));
        return { column, bands: [band] };
      });
      kv.finishLayer(0, q, qDim, c.n, 0, stats);
      const candidates = hybridCandidates({ promptLength: c.n, localRatio: rl, frequentRatio: rf });
      for (let h = 0; h < c.nKvHeads; h++) {
        const prof = kv.profiles[0][h];
        assert.deepEqual(prof.recoveries.map((x) => x.policy), candidates.map((x) => x.name));
        prof.recoveries.forEach((x, ci) => assert.ok(Math.abs(x.recovery - bf.recoveries[h][ci]) < 1e-6, `head ${h} ${x.policy}: ${x.recovery} vs brute force ${bf.recoveries[h][ci]}`));
        // The choice is the first candidate reaching T (full always qualifies).
        const expected = candidates.findIndex((cand, ci) => cand.name === 'full' || bf.recoveries[h][ci] >= 0.9);
        assert.equal(prof.policy, candidates[expected].name);
        // Nested sets: recovery never decreases along the hybrid order.
        for (let ci = 1; ci < candidates.length; ci++) assert.ok(bf.recoveries[h][ci] >= bf.recoveries[h][ci - 1] - 1e-12);
      }
      kv.release();
      assert.equal(pool.pagesInUse, 0);
    });
  }
}

test('T = 1 picks full for every head, even where a cheaper policy recovers everything', () => {
  const classes = { special: Uint8Array.from([1, 0]), punct: new Uint8Array(2) };
  const pool = new PagePool({ headDim: 2 });
  const kv = new SequenceKv(pool, { nLayers: 1, nHeads: 1, nKvHeads: 1, headDim: 2 }, resolveCacheOptions({ policy: 'fastgen', variant: 'paper', recovery: 1 }), classes);
  // A one-token prompt of BOS: `special` recovers 100 % of the attention.
  kv.appendLayer(0, Float32Array.of(1, 0), Float32Array.of(1, 1), 2, 1, 0, [0]);
  kv.finishLayer(0, Float32Array.of(1, 0), 2, 1, 0, [{ column: [1], bands: [[1]] }]);
  assert.equal(kv.store(0, 0).scores[0], 1, 'the column sums become the scores');
  assert.equal(kv.profiles[0][0].recoveries[0].recovery, 1);
  assert.equal(kv.profiles[0][0].policy, 'full');
  kv.release();
});
