import { amountAt, keepRule, type HeadPolicy, type KeepRule } from '../head-policy.js';
import { markKept } from '../evict.js';
import type { HeadStore } from '../head-store.js';
import type { HeadAttentionStats } from './types.js';

/**
 * Attention recovery of cache policies over a prompt (the FastGen profiling criterion):
 *   recovery(C) = (1/n) Σ_i Σ_{j ∈ C(i), j visible to i} A[i, j]          (mean over the n query rows i)
 * where C(i) is what policy C keeps as seen from row i: special/punct by token class, frequent = the top ⌈r_f·n⌉ keys
 * by cumulative attention (column sums, summed over the KV head's query heads), local = keys within distance w of i,
 * sink = the first positions, full = everything.
 *
 * Every set is a static part M (the same for every row: special, punct, frequent, sink) plus, for the local
 * policies, the band of keys within distance w of the row. Splitting the band into what M already holds and the
 * rest gives, with column sums col[j] = Σ_i A[i, j] and band column sums band[j] = Σ_{i : pos_i − pos_j ≤ w} A[i, j]:
 *   Σ_i Σ_{j ∈ C(i)} A[i, j] = Σ_{j ∈ M} col[j] + [C has local] · (Σ_j band[j] − Σ_{j ∈ M} band[j])
 * So profiling needs no attention map and no second pass over the queries: the attention kernels add each row's
 * probabilities into col and, within the band, into band while they compute it (the band is one contiguous slot
 * range per row, since the prompt's slots are in position order). Cost: O(n) per candidate.
 */

/** The local distances the candidates use (window − 1), ascending and distinct: the band sums a backend collects. */
export function bandDistances(candidates: readonly HeadPolicy[], promptLength: number): number[] {
  const w = new Set<number>();
  for (const cand of candidates) if (!cand.full && cand.window !== undefined) w.add(amountAt(cand.window, promptLength) - 1); // keeps distances 0..window−1
  return [...w].sort((a, b) => a - b);
}

/**
 * What profiling needs of the candidates at one prompt length, computed once for all heads of a pass: each candidate's
 * static part M (its keep rule without the window; the lattice's windows share a few of them), and for local
 * candidates the window w and the index of its band sums among `bands`.
 */
export interface CandidatePlan {
  candidates: readonly HeadPolicy[];
  /** The band distances the backend collected (bandDistances). */
  bands: readonly number[];
  /** Distinct static parts. */
  statics: KeepRule[];
  /** Per candidate: its static part's index, its window (0: not local) and its band's index (−1: not local). */
  staticOf: Int32Array;
  window: Int32Array;
  band: Int32Array;
}

export function planCandidates(candidates: readonly HeadPolicy[], n: number): CandidatePlan {
  const bands = bandDistances(candidates, n);
  const statics: KeepRule[] = [];
  const keys = new Map<string, number>();
  const staticOf = new Int32Array(candidates.length);
  const window = new Int32Array(candidates.length);
  const band = new Int32Array(candidates.length).fill(-1);
  candidates.forEach((cand, c) => {
    const rule = { ...keepRule(cand, n), window: 0 };
    const key = `${rule.full}|${rule.classMask}|${rule.sinks}|${rule.heavy}`;
    if (!keys.has(key)) { keys.set(key, statics.length); statics.push(rule); }
    staticOf[c] = keys.get(key)!;
    if (!cand.full && cand.window !== undefined) {
      window[c] = Math.min(n, amountAt(cand.window, n));
      band[c] = bands.indexOf(window[c] - 1);
      if (band[c] < 0) throw new Error(`internal: no band sums collected for ${cand.name}`);
    }
  });
  return { candidates, bands, statics, staticOf, window, band };
}

/**
 * Recovery of every candidate of `plan` for each query head of one KV head's group, from their column and band sums
 * over `rows` query rows, and the prompt tokens each candidate keeps, for the KV head's store of the n-token prompt
 * (slot s = position s; its token classes and cumulative attention, which `frequent` ranks by). A candidate's static
 * part M is what eviction would keep of it without the window, so markKept decides it, once per distinct part:
 *   kept(C) = |M| + [C has local] · (w − |M ∩ last w slots|)
 */
export function profileCandidates(plan: CandidatePlan, group: readonly HeadAttentionStats[], rows: number,
  store: HeadStore): { recoveries: number[][]; kept: number[] } {
  const n = store.length;
  const { candidates } = plan;
  if (rows === 0) return { recoveries: group.map(() => candidates.map(() => 1)), kept: candidates.map(() => n) };
  const bandTotal = group.map((st) => st.bands.map((band) => {
    let t = 0;
    for (let j = 0; j < n; j++) t += band[j];
    return t;
  }));
  // Per static part: Σ_M col and Σ_M band_k per query head, and M's size from each slot to the end.
  const mask = new Uint8Array(n);
  const statics = plan.statics.map((rule) => {
    markKept(store, rule, n - 1, mask);
    const fromEnd = new Int32Array(n + 1); // fromEnd[i] = |M ∩ [i, n)|
    for (let j = n - 1; j >= 0; j--) fromEnd[j] = fromEnd[j + 1] + mask[j];
    const inMask = group.map(() => 0);
    const bandInMask = group.map((st) => st.bands.map(() => 0));
    group.forEach((st, g) => {
      for (let j = 0; j < n; j++) {
        if (!mask[j]) continue;
        inMask[g] += st.column[j];
        for (let k = 0; k < st.bands.length; k++) bandInMask[g][k] += st.bands[k][j];
      }
    });
    return { inMask, bandInMask, fromEnd };
  });
  const kept: number[] = [];
  const recoveries: number[][] = group.map(() => []);
  for (let c = 0; c < candidates.length; c++) {
    const s = statics[plan.staticOf[c]];
    const w = plan.window[c];
    const k = plan.band[c];
    kept.push(s.fromEnd[0] + (k >= 0 ? w - s.fromEnd[n - w] : 0));
    for (let g = 0; g < group.length; g++) recoveries[g].push((s.inMask[g] + (k >= 0 ? bandTotal[g][k] - s.bandInMask[g][k] : 0)) / rows);
  }
  return { recoveries, kept };
}

/**
 * Pick the first candidate whose recovery reaches T. `full` (the last candidate) always qualifies; with T ≥ 1 only
 * full does, so T = 1 is lossless by construction rather than by floating-point luck.
 */
export function chooseCandidate(recoveries: readonly number[], candidates: readonly HeadPolicy[], threshold: number): number {
  for (let c = 0; c < candidates.length; c++) {
    if (candidates[c].full) return c;
    if (threshold < 1 && recoveries[c] >= threshold) return c;
  }
  return candidates.length - 1;
}
