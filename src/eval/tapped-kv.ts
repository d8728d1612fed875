/**
 * A SequenceKv the evaluator can look into, built only on the cache's public API:
 *
 *  - `tap`: called at the end of every layer's attention, *before* the cache applies its policy (profiling and
 *    compression on the first pass, eviction afterwards). It sees the layer's queries (after RoPE) exactly as the
 *    backend hands them to `finishLayer`, and the store still holds every token the query just attended to. The
 *    evaluator uses it to record full-cache attention rows and, on compressed caches, which positions each head held
 *    while decoding (decode-time recovery).
 *  - `fork()` (SequenceKv's, into this type): the teacher-forced, greedy and sampled runs of one configuration all
 *    start from the very same compressed prefill without recomputing it.
 */
import { resolveCacheOptions, type CacheOptions } from '../cache/policies/index.js';
import { SequenceKv, type PromptAttentionStats } from '../cache/sequence-kv.js';
import type { Model } from '../generate/model.js';

export type LayerTap = (layer: number, kv: TappedSequenceKv, q: Float32Array, qStride: number, n: number, startPos: number) => void;

export class TappedSequenceKv extends SequenceKv {
  tap: LayerTap | undefined;

  static create(model: Model, cache: CacheOptions): TappedSequenceKv {
    const c = model.config;
    return new TappedSequenceKv(
      model.pool,
      { nLayers: c.nLayers, nHeads: c.nHeads, nKvHeads: c.nKvHeads, headDim: c.headDim },
      resolveCacheOptions(cache),
      model.classes,
    );
  }

  override get wantsQueries(): boolean {
    return this.tap !== undefined;
  }

  override finishLayer(layer: number, q: Float32Array, qStride: number, n: number, startPos: number, stats?: PromptAttentionStats): void {
    this.tap?.(layer, this, q, qStride, n, startPos);
    super.finishLayer(layer, q, qStride, n, startPos, stats);
  }

  /** A copy of this cache to decode from independently (only after the prompt has gone through); no tap. */
  override fork(): TappedSequenceKv {
    if (this.seqLength === 0) throw new Error('internal: fork() before the prompt was prefilled');
    return this.copyInto(new TappedSequenceKv(this.pool, this.shape, this.options, this.classes, this.policy.fork()));
  }
}
