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
 * Recovery of every candidate for one query head, from that head's column and band sums over `rows` query rows
 * (`bands`: the distances its band sums were collected for), for the KV head's store (its slots, token classes and
 * cumulative attention, which `frequent` ranks by). A candidate's static part is what eviction would keep of it
 * without the window, so markKept decides it.
 */
export function recoveryFromStats(candidates: readonly HeadPolicy[], stats: HeadAttentionStats, bands: readonly number[], rows: number, store: HeadStore): number[] {
  if (rows === 0) return candidates.map(() => 1);
  const n = store.length;
  const { column } = stats;
  const bandTotal = stats.bands.map((band) => {
    let t = 0;
    for (let j = 0; j < n; j++) t += band[j];
    return t;
  });
  const mask = new Uint8Array(n);
  return candidates.map((cand) => {
    const local = !cand.full && cand.window !== undefined;
    const k = local ? bands.indexOf(amountAt(cand.window, n) - 1) : -1;
    if (local && k < 0) throw new Error(`internal: no band sums collected for ${cand.name}`);
    markKept(store, { ...keepRule(cand, n), window: 0 }, n - 1, mask);
    let inMask = 0;
    let bandInMask = 0;
    for (let j = 0; j < n; j++) {
      if (!mask[j]) continue;
      inMask += column[j];
      if (local) bandInMask += stats.bands[k][j];
    }
    return (inMask + (local ? bandTotal[k] - bandInMask : 0)) / rows;
  });
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
