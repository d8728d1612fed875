import type { HeadStore } from './head-store.js';
import { frequentBudget, localSpan, type HeadPolicy } from './policy.js';

/** Per-token-id membership of the classes the `special` and `punct` policies keep (1 = member). */
export interface TokenClasses {
  special: Uint8Array;
  punct: Uint8Array;
}

/**
 * Mark in `keep` (length ≥ store.length) which stored tokens `policy` keeps when the newest token is at position
 * `current` and the sequence holds `seqLength` tokens. Union of the components:
 *   special/punct: by token class; local: current − pos < span; sink: pos < count;
 *   frequent: the top-B stored tokens by cumulative attention (ties: the older token wins).
 * Returns the number kept.
 */
export function markKept(
  store: HeadStore,
  policy: HeadPolicy,
  classes: TokenClasses,
  current: number,
  seqLength: number,
  keep: Uint8Array,
): number {
  const n = store.length;
  keep.fill(0, 0, n);
  for (const c of policy.components) {
    switch (c.kind) {
      case 'full':
        keep.fill(1, 0, n);
        return n;
      case 'special':
        for (let s = 0; s < n; s++) if (classes.special[store.tokenIds[s]]) keep[s] = 1;
        break;
      case 'punct':
        for (let s = 0; s < n; s++) if (classes.punct[store.tokenIds[s]]) keep[s] = 1;
        break;
      case 'local': {
        const span = localSpan(c, seqLength);
        for (let s = 0; s < n; s++) if (current - store.positions[s] < span) keep[s] = 1;
        break;
      }
      case 'sink':
        for (let s = 0; s < n; s++) if (store.positions[s] < c.count) keep[s] = 1;
        break;
      case 'frequent':
        markTopScores(store, frequentBudget(c, seqLength), keep);
        break;
    }
  }
  let kept = 0;
  for (let s = 0; s < n; s++) kept += keep[s];
  return kept;
}

let scratchIdx = new Int32Array(0);

/**
 * Set keep[s] = 1 for the `budget` slots ranked highest by (score desc, position asc). Quickselect over slot indices:
 * O(n) on average per step rather than a full sort, since this runs for every frequent head on every token.
 */
function markTopScores(store: HeadStore, budget: number, keep: Uint8Array): void {
  const n = store.length;
  if (budget >= n) {
    keep.fill(1, 0, n);
    return;
  }
  if (budget <= 0) return;
  if (scratchIdx.length < n) scratchIdx = new Int32Array(Math.max(n, scratchIdx.length * 2));
  const idx = scratchIdx;
  for (let s = 0; s < n; s++) idx[s] = s;
  const scores = store.scores;
  const pos = store.positions;
  // before(a, b): slot a ranks ahead of slot b.
  const before = (a: number, b: number) => scores[a] > scores[b] || (scores[a] === scores[b] && pos[a] < pos[b]);
  let lo = 0;
  let hi = n - 1;
  const k = budget - 1; // place the k-th ranked slot at idx[k], better ones before it
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const pivot = idx[mid];
    idx[mid] = idx[hi];
    idx[hi] = pivot;
    let store_ = lo;
    for (let i = lo; i < hi; i++) {
      if (before(idx[i], pivot)) {
        const t = idx[i];
        idx[i] = idx[store_];
        idx[store_] = t;
        store_++;
      }
    }
    idx[hi] = idx[store_];
    idx[store_] = pivot;
    if (store_ === k) break;
    if (store_ < k) lo = store_ + 1;
    else hi = store_ - 1;
  }
  for (let i = 0; i < budget; i++) keep[idx[i]] = 1;
}

/** Apply `policy` to the store: evict every token it does not keep. Returns the number evicted. */
export function applyPolicy(
  store: HeadStore,
  policy: HeadPolicy,
  classes: TokenClasses,
  current: number,
  seqLength: number,
  keep: Uint8Array,
): number {
  const kept = markKept(store, policy, classes, current, seqLength, keep);
  if (kept === store.length) return 0;
  return store.retain(keep);
}
