/**
 * `snapkv`: SnapKV (Li et al., 2024). At the end of the prompt each KV head keeps the prompt tokens that its last
 * `window` prompt queries (the observation window) attended to most, pooled over neighbouring positions, plus the
 * window itself; C = budget or ⌈ratio × prompt⌉ prompt tokens in all. Generated tokens are all kept.
 *
 * Score of prefix slot s (s < P − W, the prompt of P tokens, slot s = position s), over the KV head's query heads qh:
 *   raw[s] = Σ_qh Σ_{i ≥ P − W} A_qh[i, s]          pooled[s] = (1/k) Σ_{|j − s| ≤ ⌊k/2⌋, 0 ≤ j < P − W} raw[j]
 * (SnapKV's avg_pool1d with zero padding), and the head keeps the top C − W slots by pooled score plus the last W.
 */
import type { HeadPolicy } from '../head-policy.js';
import { InvalidOptionError } from '../../errors.js';
import type { CachePolicy, KvShape, LayerNeeds, LayerPass, PolicyOptions, PolicyTarget, SequencePolicy } from './types.js';

export interface SnapkvOptions extends PolicyOptions {
  window: number;
  ratio: number;
  budget?: number;
  poolKernel: number;
}

/** After the prompt a SnapKV head keeps every new token. */
const KEEP_NEW: HeadPolicy = { name: 'snapkv', full: true };

/** Prompt tokens one head keeps, and the observation window (never wider than that). */
function capacity(o: SnapkvOptions, promptLength: number): { keep: number; window: number } {
  const keep = Math.min(promptLength, o.budget ?? Math.ceil(o.ratio * promptLength));
  return { keep, window: Math.min(o.window, keep) };
}

export const snapkv: CachePolicy = {
  name: 'snapkv',
  summary: 'SnapKV: prompt tokens most attended by the last prompt queries, plus that window; new tokens all kept',
  options: [
    { key: 'ratio', kind: 'fraction', default: 0.5, help: 'fraction of the prompt each head keeps' },
    { key: 'budget', kind: 'count', help: 'prompt tokens each head keeps (instead of --ratio)' },
    { key: 'window', kind: 'count', default: 16, help: 'snapkv: observation window (last prompt queries; always kept)' },
    { key: 'poolKernel', kind: 'count', default: 5, help: 'snapkv: width of the average pooling of scores (odd)' },
  ],
  adaptive: false,
  baseline: true,
  complete(o) {
    if ((o.poolKernel as number) % 2 === 0) throw new InvalidOptionError(`cache.poolKernel must be odd, got ${o.poolKernel}`, 'cache.poolKernel');
    return o;
  },
  start: (o, shape) => new SnapkvSequence(o as SnapkvOptions, shape),
  keptTokens(o, length, promptLength) {
    const { keep } = capacity(o as SnapkvOptions, promptLength);
    return Math.min(length, keep + Math.max(0, length - promptLength));
  },
  matchMemory(fraction, length, promptLength) {
    // keep + (length − prompt) = fraction × length
    const keep = fraction * length - (length - promptLength);
    return { ratio: Math.min(1, Math.max(keep / promptLength, 1 / promptLength)) };
  },
  label: (o) => `snapkv ${o.budget !== undefined ? `B=${o.budget}` : `r=${o.ratio}`} W=${o.window}`,
};

class SnapkvSequence implements SequencePolicy {
  readonly evicts = true;
  decideMs = 0;
  private readonly done: boolean[];

  constructor(
    private readonly o: SnapkvOptions,
    private readonly shape: KvShape,
  ) {
    this.done = new Array<boolean>(shape.nLayers).fill(false);
  }

  head(): HeadPolicy {
    return KEEP_NEW;
  }

  needs(layer: number, n: number, startPos: number): LayerNeeds {
    const scores = new Array<boolean>(this.shape.nKvHeads).fill(false);
    if (this.done[layer] || startPos !== 0) return { scores, stats: null };
    const { keep, window } = capacity(this.o, n);
    return { scores, stats: keep < n ? { fromRow: n - window, bands: [] } : null };
  }

  afterAttention(kv: PolicyTarget, pass: LayerPass): void {
    const { layer, n } = pass;
    if (this.done[layer]) return;
    this.done[layer] = true;
    if (!pass.stats) return; // the prompt fits the budget: nothing to select
    const t0 = performance.now();
    const { keep, window } = capacity(this.o, n);
    const { nHeads, nKvHeads } = this.shape;
    const group = nHeads / nKvHeads;
    const prefix = n - window;
    const half = this.o.poolKernel >> 1;
    const select: HeadPolicy = { name: 'snapkv', window: { tokens: window }, heavy: { tokens: keep - window } };
    const raw = new Float64Array(prefix);
    for (let h = 0; h < nKvHeads; h++) {
      raw.fill(0);
      for (let g = 0; g < group; g++) {
        const col = pass.stats[h * group + g].column;
        for (let s = 0; s < prefix; s++) raw[s] += col[s];
      }
      // Slot s holds position s (the first pass starts from an empty cache): score the prefix by its pooled
      // attention, and rank the window below every prefix slot so the heavy places all go to the prefix.
      const st = kv.store(layer, h);
      for (let s = 0; s < prefix; s++) {
        let sum = 0;
        for (let j = Math.max(0, s - half); j <= Math.min(prefix - 1, s + half); j++) sum += raw[j];
        st.scores[s] = sum / this.o.poolKernel;
      }
      for (let s = prefix; s < n; s++) st.scores[s] = -1;
      kv.apply(layer, h, select, n - 1);
    }
    this.decideMs += performance.now() - t0;
  }

  fork(): SequencePolicy {
    const copy = new SnapkvSequence(this.o, this.shape);
    copy.done.splice(0, this.done.length, ...this.done);
    copy.decideMs = this.decideMs;
    return copy;
  }
}
