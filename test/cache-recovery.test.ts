/** FastGen profiling: recovery computed by the cache equals a brute-force computation from explicit attention maps. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PagePool } from '../src/cache/page-pool.js';
import { hybridCandidates, resolveCacheOptions } from '../src/cache/policy.js';
import { SequenceKv } from '../src/cache/sequence-kv.js';

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

/**
 * Brute force: build every query head's full n×n causal attention map A, then for each candidate policy C
 * recovery = mean_i Σ_j [j ∈ C(i)] A[i, j], with the sets spelled out directly from the specification.
 */
function bruteForce(c: Case, q: Float32Array, k: Float32Array, tokens: number[], special: Set<number>, punct: Set<number>, rl: number, rf: number, gqa: 'mean' | 'min') {
  const { n, nHeads, nKvHeads, headDim } = c;
  const group = nHeads / nKvHeads;
  const maps: number[][][] = []; // [qh][i][j]
  for (let qh = 0; qh < nHeads; qh++) {
    const kvh = Math.floor(qh / group);
    const A: number[][] = [];
    for (let i = 0; i < n; i++) {
      const row = new Array(n).fill(0);
      let max = -Infinity;
      for (let j = 0; j <= i; j++) {
        let d = 0;
        for (let x = 0; x < headDim; x++) d += q[(i * nHeads + qh) * headDim + x] * k[(j * nKvHeads + kvh) * headDim + x];
        row[j] = d / Math.sqrt(headDim);
        max = Math.max(max, row[j]);
      }
      let sum = 0;
      for (let j = 0; j <= i; j++) sum += (row[j] = Math.exp(row[j] - max));
      for (let j = 0; j <= i; j++) row[j] /= sum;
      A.push(row);
    }
    maps.push(A);
  }
  const out: number[][] = []; // [kvh][candidate]
  for (let kvh = 0; kvh < nKvHeads; kvh++) {
    // frequent: top ⌈rf·n⌉ keys by the group's column sums (ties → lower position)
    const col = new Array(n).fill(0);
    for (let g = 0; g < group; g++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) col[j] += maps[kvh * group + g][i][j];
    const order = [...col.keys()].sort((a, b) => col[b] - col[a] || a - b);
    const F = new Set(order.slice(0, Math.ceil(rf * n)));
    const w = Math.floor(rl * n);
    const sets: ((i: number, j: number) => boolean)[] = [
      (_i, j) => special.has(tokens[j]),
      (_i, j) => special.has(tokens[j]) || punct.has(tokens[j]),
      (_i, j) => special.has(tokens[j]) || punct.has(tokens[j]) || F.has(j),
      (i, j) => special.has(tokens[j]) || punct.has(tokens[j]) || F.has(j) || i - j <= w,
      () => true,
    ];
    const perQuery = Array.from({ length: group }, (_, g) =>
      sets.map((inSet) => {
        let total = 0;
        for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) if (inSet(i, j)) total += maps[kvh * group + g][i][j];
        return total / n;
      }),
    );
    out.push(sets.map((_, ci) => (gqa === 'min' ? Math.min(...perQuery.map((r) => r[ci])) : perQuery.reduce((a, r) => a + r[ci], 0) / group)));
  }
  return { recoveries: out, maps };
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
      const kv = new SequenceKv(pool, { nLayers: 1, ...c }, resolveCacheOptions({ policy: 'fastgen', recovery: 0.9, gqa, localRatio: rl, frequentRatio: rf }), classes);
      const bf = bruteForce(c, q, k, tokens, special, punct, rl, rf, gqa);
      kv.appendLayer(0, k, v, kvDim, c.n, 0, tokens);
      // The forward pass adds each query row's probabilities to the slot scores; do the same from the brute-force maps.
      const group = c.nHeads / c.nKvHeads;
      for (let h = 0; h < c.nKvHeads; h++) {
        const st = kv.store(0, h);
        for (let g = 0; g < group; g++) for (const row of bf.maps[h * group + g]) row.forEach((p, j) => (st.scores[j] += p));
      }
      kv.finishLayer(0, q, qDim, c.n, 0);
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
  const kv = new SequenceKv(pool, { nLayers: 1, nHeads: 1, nKvHeads: 1, headDim: 2 }, resolveCacheOptions({ policy: 'fastgen', recovery: 1 }), classes);
  // A one-token prompt of BOS: `special` recovers 100 % of the attention.
  kv.appendLayer(0, Float32Array.of(1, 0), Float32Array.of(1, 1), 2, 1, 0, [0]);
  kv.store(0, 0).scores[0] = 1;
  kv.finishLayer(0, Float32Array.of(1, 0), 2, 1, 0);
  assert.equal(kv.profiles[0][0].recoveries[0].recovery, 1);
  assert.equal(kv.profiles[0][0].policy, 'full');
  kv.release();
});
