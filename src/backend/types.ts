import type { KvArena } from '../cache/page-pool.js';
import type { SequenceKv } from '../cache/sequence-kv.js';
import type { ModelConfig } from '../model/types.js';
import type { DeviceSample } from '../generate/sample-rule.js';

/** One sequence's part of a forward pass: its cache and the new tokens to push through the model. */
export interface ForwardItem {
  kv: SequenceKv;
  tokens: readonly number[];
  /** Which logits to return: the last token's [vocab], every token's [n × vocab], or none. */
  logits: 'last' | 'all' | 'none';
  /**
   * Where to write them (at least rows × vocab floats); the returned array is then a view of it. Decode loops pass
   * one buffer per sequence: a fresh 128 KB array per token costs ~7 % of stories15M's decode in allocation and GC.
   */
  out?: Float32Array;
  /**
   * On a backend that samples on its device (`forwardSampled`): sample this item's next token there by the rule of
   * src/generate/sample-rule.ts instead of returning logits (`logits` must then be 'last').
   */
  sample?: DeviceSample;
}

/**
 * A tensor backend runs the transformer. It owns the weights in whatever form its kernels want (f32 arrays, wasm
 * memory, GPU buffers) and the arena the KV pages live in; the cache policy logic is shared and lives in src/cache.
 *
 * Contract for every backend (the cache tests run against each):
 *   - keys are stored after RoPE, at their original positions: through `kv.appendLayer`, or by the backend's own
 *     kernels into the slots `kv.reserveLayer` added;
 *   - attention for a query at position p covers the stored slots with position ≤ p;
 *   - when `kv.tracksScores(layer, kvHead)`, each query row's attention probabilities are added to the slot scores;
 *     when `kv.profilingBand(layer, …)` is not null, the column and band sums it describes are collected instead;
 *   - once a layer's attention of this pass is done (right after it, or after the whole pass: a layer's policy only
 *     affects that layer's next attention), `kv.finishLayer(...)` runs for it (profiling/compression or eviction),
 *     with the layer's queries when `kv.wantsQueries`;
 *   - after the pass, `kv.advance(n)`.
 */
export interface Backend {
  readonly name: string;
  readonly config: ModelConfig;
  /** Where this backend wants KV pages to live. */
  createArena(): KvArena;
  forward(items: readonly ForwardItem[]): Promise<Float32Array[]>;
  /**
   * Optional: a forward pass in which the items that carry `sample` get their next token sampled on the device (a
   * token id back, or the NonFiniteLogitsError their logits would raise), the others their logits as in forward().
   */
  forwardSampled?(items: readonly ForwardItem[]): Promise<(Float32Array | number | Error)[]>;
  /** Weight dtype actually used by the kernels (f32, f16, q8_0). */
  readonly weightDtype: string;
  dispose(): void;
}
