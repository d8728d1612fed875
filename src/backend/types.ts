import type { KvArena } from '../cache/page-pool.js';
import type { SequenceKv } from '../cache/sequence-kv.js';
import type { ModelConfig } from '../model/types.js';

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
}

/**
 * A tensor backend runs the transformer. It owns the weights in whatever form its kernels want (f32 arrays, wasm
 * memory, GPU buffers) and the arena the KV pages live in; the cache policy logic is shared and lives in src/cache.
 *
 * Contract for every backend (the cache tests run against each):
 *   - keys are appended after RoPE, at their original positions, through `kv.appendLayer`;
 *   - attention for a query at position p covers the stored slots with position ≤ p;
 *   - when `kv.tracksScores(layer, kvHead)`, each query row's attention probabilities are added to the slot scores;
 *   - after each layer's attention, `kv.finishLayer(...)` runs (profiling/compression or eviction);
 *   - after the pass, `kv.advance(n)`.
 */
export interface Backend {
  readonly name: string;
  readonly config: ModelConfig;
  /** Where this backend wants KV pages to live. */
  createArena(): KvArena;
  forward(items: readonly ForwardItem[]): Promise<Float32Array[]>;
  /** Weight dtype actually used by the kernels (f32, f16, q8_0). */
  readonly weightDtype: string;
  dispose(): void;
}
