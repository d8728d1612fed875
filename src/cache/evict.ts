import { PUNCT, SPECIAL, type HeadStore } from './head-store.js';
import { frequentBudget, localSpan, type HeadPolicy } from './policy.js';

/** Per-token-id membership of the classes the `special` and `punct` policies keep (1 = member). */
export interface TokenClasses {
  special: Uint8Array;
  punct: Uint8Array;
}

/**
 * Mark in `keep` (length ≥ store.length) which stored tokens `policy` keeps when the newest token is at position
 * `current` and the sequence holds `seqLength` tokens. Union of the components:
 *   special/punct: by token class (the store's classBits); local: current − pos < span; sink: pos < count;
 *   frequent: the top-B stored tokens by cumulative attention (ties: the older token wins).
 * Returns the number kept.
 */
export function markKept(
  store: HeadStore,
  policy: HeadPolicy,
  current: number,
  seqLength: number,
  keep: Uint8Array,
): number {
  const n = store.length;
  // The union of the components as a handful of numbers, then one pass over the slots: this runs for every
  // compressed head on every decode step. Several components of a kind unite to the widest one.
  let classMask = 0;
  let span = 0;
  let sink = 0;
  let budget = 0;
  for (const c of policy.components) {
    switch (c.kind) {
      case 'full':
        keep.fill(1, 0, n);
        return n;
      case 'special':
        classMask |= SPECIAL;
        break;
      case 'punct':
        classMask |= PUNCT;
        break;
      case 'local':
        span = Math.max(span, localSpan(c, seqLength));
        break;
      case 'sink':
        sink = Math.max(sink, c.count);
        break;
      case 'frequent':
        budget = Math.max(budget, frequentBudget(c, seqLength));
        break;
    }
  }
  const bits = store.classBits;
  const pos = store.positions;
  let kept = 0;
  for (let s = 0; s < n; s++) {
    const p = pos[s];
    const k = (bits[s] & classMask) !== 0 || current - p < span || p < sink ? 1 : 0;
    keep[s] = k;
    kept += k;
  }
  if (budget > 0) kept += markTopScores(store, budget, keep);
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

/** Apply `policy` to the store: evict every token it does not keep. Returns the number evicted. */
export function applyPolicy(
  store: HeadStore,
  policy: HeadPolicy,
  current: number,
  seqLength: number,
  keep: Uint8Array,
): number {
  const kept = markKept(store, policy, current, seqLength, keep);
  if (kept === store.length) return 0;
  return store.retain(keep);
}
