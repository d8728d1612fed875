/**
 * A SequenceKv the evaluator can look into and copy, built only on the cache's public API:
 *
 *  - `tap`: called at the end of every layer's attention, *before* the cache applies its policy (profiling and
 *    compression on the first pass, eviction afterwards). It sees the layer's queries (after RoPE) exactly as the
 *    backend hands them to `finishLayer`, and the store still holds every token the query just attended to. The
 *    evaluator uses it to record full-cache attention rows and, on compressed caches, which positions each head held
 *    while decoding (decode-time recovery).
 *  - `fork()`: an independent copy of the cache after the prompt (same kept slots in the same order, same positions,
 *    token ids, scores, policies and profiles), so the teacher-forced, greedy and sampled runs of one configuration all
 *    start from the very same compressed prefill without recomputing it. Slot order is preserved, so attention sums in
 *    the same order and a fork behaves bit for bit like the original.
 *
 * The base class keeps "has this layer been prefilled" private; a fork is always taken after the first pass, so it
 * re-implements the two prefilled-layer branches (`tracksScores` and `finishLayer`) with the same public calls the
 * base class makes (`usesScores(policy)` and `finishDecode`). A `SequenceKv.fork()` in src/cache would make this
 * unnecessary (proposed in the eval report).
 */
import { resolveCacheOptions, usesScores, type CacheOptions } from '../cache/policy.js';
import { SequenceKv, type PromptAttentionStats } from '../cache/sequence-kv.js';
import type { Model } from '../generate/model.js';

export type LayerTap = (layer: number, kv: TappedSequenceKv, q: Float32Array, qStride: number, n: number, startPos: number) => void;

export class TappedSequenceKv extends SequenceKv {
  tap: LayerTap | undefined;
  private forked = false;

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

  override tracksScores(layer: number, kvHead: number): boolean {
    if (this.forked) return usesScores(this.policy(layer, kvHead));
    return super.tracksScores(layer, kvHead);
  }

  override finishLayer(layer: number, q: Float32Array, qStride: number, n: number, startPos: number, stats?: PromptAttentionStats): void {
    this.tap?.(layer, this, q, qStride, n, startPos);
    if (this.forked) {
      this.finishDecode(layer, startPos + n - 1);
      return;
    }
    super.finishLayer(layer, q, qStride, n, startPos, stats);
  }

  /** A copy of this cache to decode from independently (only after the prompt has gone through). */
  fork(): TappedSequenceKv {
    if (this.length === 0) throw new Error('internal: fork() before the prompt was prefilled');
    const copy = new TappedSequenceKv(this.pool, this.shape, this.options, this.classes);
    copy.forked = true;
    const hd = this.shape.headDim;
    const kBuf = new Float32Array(hd);
    const vBuf = new Float32Array(hd);
    for (let i = 0; i < this.stores.length; i++) {
      const src = this.stores[i];
      const dst = copy.stores[i];
      for (let s = 0; s < src.length; s++) {
        // Through f32 scratch (exact for an f16 cache too): appending may grow the arena and replace its views.
        src.readKey(s, kBuf);
        src.readValue(s, vBuf);
        dst.append(kBuf, 0, vBuf, 0, src.positions[s], src.tokenIds[s], src.scores[s]);
      }
      copy.policies[i] = this.policies[i];
    }
    copy.length = this.length;
    copy.profiles.push(...this.profiles);
    copy.profileMs = this.profileMs;
    return copy;
  }
}
