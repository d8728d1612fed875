import type { HeadStore } from './head-store.js';
import type { KeepRule } from './head-policy.js';

/**
 * The CPU executor of a KeepRule, and the reference for every backend's eviction kernel. Marks in `keep` (length ≥
 * store.length) which stored tokens the rule keeps when the newest token is at position `current`: the union of
 *   classes: (classBits & classMask) ≠ 0;  sinks: pos < sinks;  window: current − pos < window;
 *   heavy: the top-`heavy` stored tokens by cumulative attention (ties: the older token wins).
 * Returns the number kept.
 */
export function markKept(store: HeadStore, rule: KeepRule, current: number, keep: Uint8Array): number {
  const n = store.length;
  if (rule.full) {
    keep.fill(1, 0, n);
    return n;
  }
  // One pass over the slots: this runs for every compressed head on every decode step.
  const { classMask, window, sinks } = rule;
  const bits = store.classBits;
  const pos = store.positions;
  let kept = 0;
  for (let s = 0; s < n; s++) {
    const p = pos[s];
    const k = (bits[s] & classMask) !== 0 || current - p < window || p < sinks ? 1 : 0;
    keep[s] = k;
    kept += k;
  }
  if (rule.heavy > 0) kept += markTopScores(store, rule.heavy, keep);
  return kept;
}

let scratchScores = new Float32Array(0);
let scratchTies = new Int32Array(0);

/**
 * Set keep[s] = 1 for the `budget` slots ranked highest by (score desc, position asc); returns how many of them were
 * not marked yet. This runs for every frequent head on every decode step, so it avoids sorting: a quickselect on a
 * plain copy of the scores finds the budget-th largest score t (O(n) on average, numeric compares only), every slot
 * above t is kept, and the remaining places go to the slots scoring exactly t, lowest positions first.
 */
function markTopScores(store: HeadStore, budget: number, keep: Uint8Array): number {
  const n = store.length;
  let added = 0;
  if (budget >= n) {
    for (let s = 0; s < n; s++) added += 1 - keep[s];
    keep.fill(1, 0, n);
    return added;
  }
  if (budget <= 0) return 0;
  if (scratchScores.length < n) {
    scratchScores = new Float32Array(Math.max(n, scratchScores.length * 2));
    scratchTies = new Int32Array(scratchScores.length);
  }
  const scores = store.scores;
  const a = scratchScores;
  a.set(scores.subarray(0, n));
  const t = kthLargest(a, n, budget - 1);
  let above = 0;
  let ties = 0;
  for (let s = 0; s < n; s++) {
    const v = scores[s];
    if (v > t) {
      added += 1 - keep[s];
      keep[s] = 1;
      above++;
    } else if (v === t) {
      scratchTies[ties++] = s;
    }
  }
  let need = budget - above;
  if (need < ties) {
    const pos = store.positions;
    const tied = scratchTies.subarray(0, ties).sort((x, y) => pos[x] - pos[y]);
    for (let i = 0; i < need; i++) {
      added += 1 - keep[tied[i]];
      keep[tied[i]] = 1;
    }
    return added;
  }
  for (let i = 0; i < ties && need > 0; i++, need--) {
    added += 1 - keep[scratchTies[i]];
    keep[scratchTies[i]] = 1;
  }
  return added;
}

/** The k-th largest (0-based) of a[0..n), reordering a. Hoare-style quickselect with a median-of-three pivot. */
function kthLargest(a: Float32Array, n: number, k: number): number {
  let lo = 0;
  let hi = n - 1;
  while (hi > lo) {
    const mid = (lo + hi) >>> 1;
    // median of a[lo], a[mid], a[hi] as the pivot value
    const x = a[lo];
    const y = a[mid];
    const z = a[hi];
    const pivot = x > y ? (y > z ? y : x > z ? z : x) : x > z ? x : y > z ? z : y;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] > pivot) i++;
      while (a[j] < pivot) j--;
      if (i <= j) {
        const tmp = a[i];
        a[i] = a[j];
        a[j] = tmp;
        i++;
        j--;
      }
    }
    // Now a[lo..j] ≥ pivot ≥ a[i..hi], and a[j+1..i-1] = pivot.
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k];
  }
  return a[k];
}

/** Evict every token `rule` does not keep from the store (compacting it, freeing emptied pages). Returns the number evicted. */
export function applyRule(store: HeadStore, rule: KeepRule, current: number, keep: Uint8Array): number {
  if (rule.full) return 0;
  const kept = markKept(store, rule, current, keep);
  if (kept === store.length) return 0;
  return store.retain(keep);
}
