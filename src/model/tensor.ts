/** Tensor values as the kernels read them: f16/bf16 bit patterns decoded to f32. */
import { f16Table } from '../half.js';
import { ModelLoadError } from '../errors.js';
import type { ModelWeights, Tensor } from './types.js';

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

/** Index of the first NaN or ±Infinity in the tensor, or -1. */
function firstNonFinite(t: Tensor): number {
  if (t.dtype === 'f32') {
    const x = t.data as Float32Array;
    // One pass of sums (NaN and ±∞ survive them; finite f32 values cannot overflow an f64 sum), then the search.
    let sum = 0;
    for (let i = 0; i < x.length; i++) sum += x[i]!;
    if (Number.isFinite(sum)) return -1;
    return x.findIndex((v) => !Number.isFinite(v));
  }
  // f16: exponent bits 0x7c00 all set; bf16: 0x7f80 all set.
  const mask = t.dtype === 'f16' ? 0x7c00 : 0x7f80;
  return (t.data as Uint16Array).findIndex((b) => (b & mask) === mask);
}

/** Throw CORRUPT_MODEL naming the first tensor with a NaN or infinite weight: such a model only produces garbage. */
export function checkFiniteWeights(weights: ModelWeights, path: string): void {
  const named: [string, Tensor | undefined][] = [
    ['token embedding', weights.tokenEmbedding],
    ['final norm', weights.finalNorm],
    ['output layer (lm_head)', weights.lmHead === weights.tokenEmbedding ? undefined : weights.lmHead],
  ];
  weights.layers.forEach((l, i) => {
    for (const [k, t] of Object.entries(l)) named.push([`layer ${i} ${k}`, t as Tensor | undefined]);
  });
  for (const [name, t] of named) {
    if (t === undefined) continue;
    const at = firstNonFinite(t);
    if (at >= 0) {
      throw new ModelLoadError(
        'CORRUPT_MODEL',
        `${path}: the ${name} weights [${t.shape.join(', ')}] contain a NaN or infinite value (element ${at}); the checkpoint is damaged or was saved from a diverged run: re-download or re-export it`,
        path,
      );
    }
  }
}
