import { amountAt, keepRule, type HeadPolicy } from '../head-policy.js';
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
 * Recovery of every candidate for each query head of one KV head's group, from their column and band sums over `rows`
 * query rows (`bands`: the distances the band sums were collected for), and the prompt tokens each candidate keeps,
 * for the KV head's store of the n-token prompt (slot s = position s; its token classes and cumulative attention,
 * which `frequent` ranks by). A candidate's static part M is what eviction would keep of it without the window, so
 * markKept decides it; candidates sharing a static part (the lattice's windows) share one mask and one pass over it:
 *   kept(C) = |M| + [C has local] · (w − |M ∩ last w slots|)
 */
export function profileCandidates(candidates: readonly HeadPolicy[], group: readonly HeadAttentionStats[], bands: readonly number[], rows: number,
  store: HeadStore): { recoveries: number[][]; kept: number[] } {
  const n = store.length;
  if (rows === 0) return { recoveries: group.map(() => candidates.map(() => 1)), kept: candidates.map(() => n) };
  const bandTotal = group.map((st) => st.bands.map((band) => {
    let t = 0;
    for (let j = 0; j < n; j++) t += band[j];
    return t;
  }));
  // Per distinct static part: Σ_M col and Σ_M band_k per query head, and M's size from each slot to the end.
  const statics = new Map<string, { inMask: number[]; bandInMask: number[][]; fromEnd: Int32Array }>();
  const staticOf = (cand: HeadPolicy) => {
    const rule = { ...keepRule(cand, n), window: 0 };
    const key = `${rule.full}|${rule.classMask}|${rule.sinks}|${rule.heavy}`;
    let s = statics.get(key);
    if (!s) {
      const mask = new Uint8Array(n);
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
      s = { inMask, bandInMask, fromEnd };
      statics.set(key, s);
    }
    return s;
  };
  const kept: number[] = [];
  const recoveries: number[][] = group.map(() => []);
  for (const cand of candidates) {
    const s = staticOf(cand);
    const local = !cand.full && cand.window !== undefined;
    const w = local ? Math.min(n, amountAt(cand.window, n)) : 0;
    const k = local ? bands.indexOf(w - 1) : -1;
    if (local && k < 0) throw new Error(`internal: no band sums collected for ${cand.name}`);
    kept.push(s.fromEnd[0] + (local ? w - s.fromEnd[n - w] : 0));
    group.forEach((_, g) => recoveries[g].push((s.inMask[g] + (local ? bandTotal[g][k] - s.bandInMask[g][k] : 0)) / rows));
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
