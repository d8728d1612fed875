import { frequentBudget, type HeadPolicy } from './policy.js';
import type { TokenClasses } from './evict.js';

/**
 * Attention recovery of cache policies over a prompt (the FastGen profiling criterion):
 *   recovery(C) = mean over query rows i of Σ_{j ∈ C(i), j visible to i} A[i, j]
 * where C(i) is what policy C keeps as seen from row i: special/punct by token class, frequent = the top ⌈r_f·n⌉ keys
 * by cumulative attention (column sums, summed over the KV head's query heads), local = keys within distance of i,
 * sink = the first positions.
 *
 * `RecoveryAccumulator` consumes attention rows one at a time, so a long prompt never needs an n×n map in memory.
 */
export class RecoveryAccumulator {
  private readonly staticMasks: Uint8Array[];
  private readonly localDistance: number[]; // -1 = no local component; Infinity = full
  private readonly sums: Float64Array;
  private rows = 0;

  /**
   * @param candidates the policies to score
   * @param tokenIds   token id of each key slot        [n]
   * @param positions  position of each key slot       [n]
   * @param scores     cumulative attention of each key slot (for `frequent`)   [n]
   */
  constructor(
    readonly candidates: readonly HeadPolicy[],
    tokenIds: Int32Array,
    positions: Int32Array,
    scores: Float32Array,
    classes: TokenClasses,
    n: number,
  ) {
    this.sums = new Float64Array(candidates.length);
    this.staticMasks = [];
    this.localDistance = [];
    const byScore = topOrder(scores, positions, n);
    for (const cand of candidates) {
      const mask = new Uint8Array(n);
      let local = -1;
      for (const c of cand.components) {
        if (c.kind === 'full') {
          mask.fill(1);
          local = Infinity;
        } else if (c.kind === 'special') {
          for (let j = 0; j < n; j++) if (classes.special[tokenIds[j]]) mask[j] = 1;
        } else if (c.kind === 'punct') {
          for (let j = 0; j < n; j++) if (classes.punct[tokenIds[j]]) mask[j] = 1;
        } else if (c.kind === 'frequent') {
          const b = Math.min(n, frequentBudget(c, n));
          for (let r = 0; r < b; r++) mask[byScore[r]] = 1;
        } else if (c.kind === 'sink') {
          for (let j = 0; j < n; j++) if (positions[j] < c.count) mask[j] = 1;
        } else if (c.kind === 'local') {
          // Profiling uses the fixed window; ratio/budget forms are measured at the prompt length.
          local = c.maxDistance ?? (c.budget !== undefined ? c.budget - 1 : Math.ceil((c.ratio ?? 0) * n) - 1);
        }
      }
      this.staticMasks.push(mask);
      this.localDistance.push(local);
    }
    this.positions = positions;
  }
  private readonly positions: Int32Array;

  /** Add one query row: probs[j] = A[i, j] over the key slots (0 for slots the row cannot see). */
  addRow(probs: Float32Array | Float64Array, rowPosition: number, n: number): void {
    for (let c = 0; c < this.candidates.length; c++) {
      const mask = this.staticMasks[c];
      const dist = this.localDistance[c];
      let s = 0;
      for (let j = 0; j < n; j++) {
        if (mask[j] || rowPosition - this.positions[j] <= dist) s += probs[j];
      }
      this.sums[c] += s;
    }
    this.rows++;
  }

  /** Mean recovery per candidate. */
  result(): number[] {
    return Array.from(this.sums, (s) => (this.rows ? s / this.rows : 1));
  }
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
