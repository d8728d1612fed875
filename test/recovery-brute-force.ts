import type { LayerTap } from '../src/eval/tapped-kv.js';
/**
 * FastGen's profiling criterion computed the slow, obvious way, for tests: explicit attention maps, and for each
 * candidate policy C, recovery = mean_i Σ_j [j ∈ C(i)] A[i, j] with the sets spelled out from the specification.
 */

/**
 * An evaluator tap that records, for every layer of the prompt's pass (from an empty cache, so slot j = position j),
 * the explicit attention maps of that pass's own queries and keys, before the policy compresses anything.
 */
export function promptMapsTap(c: { nHeads: number; nKvHeads: number; headDim: number }, maps: number[][][][]): LayerTap {
  return (layer, tapped, q, qStride, n) => {
    if (tapped.seqLength > 0) return; // later passes: not the prompt
    const keys = Array.from({ length: c.nKvHeads }, (_, h) => {
      const st = tapped.store(layer, h);
      const buf = new Float32Array(st.length * c.headDim);
      for (let s = 0; s < st.length; s++) st.readKey(s, buf, s * c.headDim);
      return buf;
    });
    maps[layer] = attentionMaps(n, c.nHeads, c.nKvHeads, c.headDim,
      (qh, i, x) => q[i * qStride + qh * c.headDim + x], (h, j, x) => keys[h][j * c.headDim + x]);
  };
}

/** A[qh][i][j]: causal softmax(q_i · k_j / √d) for a prompt of n tokens at positions 0..n−1. */
export function attentionMaps(n: number, nHeads: number, nKvHeads: number, headDim: number,
  query: (qh: number, i: number, x: number) => number, key: (kvh: number, j: number, x: number) => number): number[][][] {
  const group = nHeads / nKvHeads;
  const maps: number[][][] = [];
  for (let qh = 0; qh < nHeads; qh++) {
    const kvh = Math.floor(qh / group);
    const A: number[][] = [];
    for (let i = 0; i < n; i++) {
      const row = new Array<number>(n).fill(0);
      let max = -Infinity;
      for (let j = 0; j <= i; j++) {
        let d = 0;
        for (let x = 0; x < headDim; x++) d += query(qh, i, x) * key(kvh, j, x);
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
  return maps;
}

/**
 * Recovery of the hybrid candidates special, +punct, +frequent, +local, full for every KV head ([kvh][candidate]):
 * frequent = top ⌈rf·n⌉ keys by the group's column sums (ties → lower position), local = keys within ⌊rl·n⌋.
 */
export function bruteForceRecoveries(maps: number[][][], nKvHeads: number, tokens: readonly number[],
  isSpecial: (t: number) => boolean, isPunct: (t: number) => boolean, rl: number, rf: number, gqa: 'mean' | 'min'): number[][] {
  const n = tokens.length;
  const group = maps.length / nKvHeads;
  const out: number[][] = [];
  for (let kvh = 0; kvh < nKvHeads; kvh++) {
    const col = new Array<number>(n).fill(0);
    for (let g = 0; g < group; g++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) col[j] += maps[kvh * group + g][i][j];
    const order = [...col.keys()].sort((a, b) => col[b] - col[a] || a - b);
    const F = new Set(order.slice(0, Math.ceil(rf * n)));
    const w = Math.floor(rl * n);
    const sets: ((i: number, j: number) => boolean)[] = [
      (_i, j) => isSpecial(tokens[j]),
      (_i, j) => isSpecial(tokens[j]) || isPunct(tokens[j]),
      (_i, j) => isSpecial(tokens[j]) || isPunct(tokens[j]) || F.has(j),
      (i, j) => isSpecial(tokens[j]) || isPunct(tokens[j]) || F.has(j) || i - j <= w,
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
  return out;
}
