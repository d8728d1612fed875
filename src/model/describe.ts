/** Facts about a loaded model (sizes, memory per token) and dtype decoding for f16/bf16 tensors. */
import type { ModelConfig, ModelWeights, Tensor } from './types.js';
import { f16Table } from '../half.js';

/** Number of weights. Tied embeddings are one tensor used twice, so they count once. */
export function parameterCount(weights: ModelWeights): number {
  const seen = new Set<Tensor>();
  const add = (t: Tensor | undefined): void => {
    if (t !== undefined) seen.add(t);
  };
  add(weights.tokenEmbedding);
  add(weights.finalNorm);
  add(weights.lmHead);
  for (const l of weights.layers) {
    for (const t of [l.attnNorm, l.wq, l.wk, l.wv, l.wo, l.bq, l.bk, l.bv, l.qNorm, l.kNorm, l.ffnNorm, l.wGate, l.wDown, l.wUp]) add(t);
  }
  let n = 0;
  for (const t of seen) n += t.shape.reduce((a, b) => a * b, 1);
  return n;
}

/** Bytes of K and V cache one token occupies across all layers (uncompressed), at `bytesPerElement` per value. */
export function kvBytesPerToken(config: ModelConfig, bytesPerElement = 4): number {
  return 2 * config.nLayers * config.nKvHeads * config.headDim * bytesPerElement;
}

/** The tensor's values as float32. An f32 tensor returns its own array (not a copy). */
export function tensorToF32(t: Tensor): Float32Array {
  if (t.dtype === 'f32') return t.data as Float32Array;
  const src = t.data as Uint16Array;
  const out = new Float32Array(src.length);
  if (t.dtype === 'bf16') {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
  } else {
    const table = f16Table();
    for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  }
  return out;
}
