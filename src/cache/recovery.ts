import { frequentBudget, type HeadPolicy } from './policy.js';
import type { TokenClasses } from './evict.js';

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

/** What a backend collects for one query head during the profiling pass (both over the KV head's slots). */
export interface HeadAttentionStats {
  /** col[s] = Σ over the pass's rows of A[row, s]. */
  column: ArrayLike<number>;
  /** band[s] = the same sum over the rows within the band distance of slot s. */
  band: ArrayLike<number>;
}

/** The one local distance the candidates use (-1 if none has a local component). */
export function bandDistance(candidates: readonly HeadPolicy[], promptLength: number): number {
  let w = -1;
  for (const cand of candidates) {
    for (const c of cand.components) {
      if (c.kind !== 'local') continue;
      const d = localDistance(c, promptLength);
      if (w >= 0 && d !== w) throw new Error(`internal: hybrid candidates with two local windows (${w}, ${d})`);
      w = d;
    }
  }
  return w;
}

function localDistance(c: Extract<HeadPolicy['components'][number], { kind: 'local' }>, n: number): number {
  // Profiling uses the fixed window; ratio/budget forms are measured at the prompt length.
  return c.maxDistance ?? (c.budget !== undefined ? c.budget - 1 : Math.ceil((c.ratio ?? 0) * n) - 1);
}

/**
 * Recovery of every candidate for one query head, from that head's column and band sums over `rows` query rows.
 * tokenIds/positions/scores describe the n slots; scores are the KV head's cumulative attention (for `frequent`).
 */
export function recoveryFromStats(
  candidates: readonly HeadPolicy[],
  stats: HeadAttentionStats,
  rows: number,
  tokenIds: Int32Array,
  positions: Int32Array,
  scores: Float32Array,
  classes: TokenClasses,
  n: number,
): number[] {
  if (rows === 0) return candidates.map(() => 1);
  const { column, band } = stats;
  let bandTotal = 0;
  for (let j = 0; j < n; j++) bandTotal += band[j];
  let byScore: number[] | undefined;
  const mask = new Uint8Array(n);
  return candidates.map((cand) => {
    mask.fill(0);
    let local = false;
    for (const c of cand.components) {
      if (c.kind === 'full') {
        mask.fill(1);
      } else if (c.kind === 'special') {
        for (let j = 0; j < n; j++) if (classes.special[tokenIds[j]]) mask[j] = 1;
      } else if (c.kind === 'punct') {
        for (let j = 0; j < n; j++) if (classes.punct[tokenIds[j]]) mask[j] = 1;
      } else if (c.kind === 'frequent') {
        byScore ??= topOrder(scores, positions, n);
        const b = Math.min(n, frequentBudget(c, n));
        for (let r = 0; r < b; r++) mask[byScore[r]] = 1;
      } else if (c.kind === 'sink') {
        for (let j = 0; j < n; j++) if (positions[j] < c.count) mask[j] = 1;
      } else if (c.kind === 'local') {
        local = true;
      }
    }
    let inMask = 0;
    let bandInMask = 0;
    for (let j = 0; j < n; j++) {
      if (!mask[j]) continue;
      inMask += column[j];
      bandInMask += band[j];
    }
    return (inMask + (local ? bandTotal - bandInMask : 0)) / rows;
  });
}

/** Slots ordered by score descending, ties towards lower positions (matches eviction's ranking). */
export function topOrder(scores: Float32Array, positions: Int32Array, n: number): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  return idx.sort((a, b) => scores[b] - scores[a] || positions[a] - positions[b]);
}

/**
 * Pick the first candidate whose recovery reaches T. `full` (the last candidate) always qualifies; with T ≥ 1 only
 * full does, so T = 1 is lossless by construction rather than by floating-point luck.
 */
export function chooseCandidate(recoveries: readonly number[], candidates: readonly HeadPolicy[], threshold: number): number {
  for (let c = 0; c < candidates.length; c++) {
    if (candidates[c].name === 'full') return c;
    if (threshold < 1 && recoveries[c] >= threshold) return c;
  }
  return candidates.length - 1;
}
