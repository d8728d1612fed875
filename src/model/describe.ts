/** Facts about a loaded model (sizes, memory per token) and dtype decoding for f16/bf16 tensors. */
import type { ModelConfig, ModelWeights, Tensor } from './types.js';

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

/**
 * IEEE 754 half precision -> number, exactly: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.
 * Exponent 0 encodes zero and subnormals (mantissa * 2^-24); exponent 31 encodes infinities and NaNs.
 */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

// bfloat16 is the top half of a float32, so decoding is a 16-bit shift through a shared 4-byte scratch.
const scratchU32 = new Uint32Array(1);
const scratchF32 = new Float32Array(scratchU32.buffer);

/** bfloat16 bit pattern -> number, exactly. */
export function bf16ToF32(b: number): number {
  scratchU32[0] = (b & 0xffff) << 16;
  return scratchF32[0]!;
}

/** All 65536 half-precision values, built on first use; decoding a tensor is then one lookup per element. */
let f16Table: Float32Array | undefined;
function f16LookupTable(): Float32Array {
  if (f16Table === undefined) {
    f16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) f16Table[i] = f16ToF32(i);
  }
  return f16Table;
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
    const table = f16LookupTable();
    for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  }
  return out;
}
