/** Tensor values as the kernels read them: f16/bf16 bit patterns decoded to f32. */
import { f16Table } from '../half.js';
import type { Tensor } from './types.js';

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
