/**
 * IEEE 754 half precision (and bfloat16) in plain numbers: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.
 * One implementation for the model loader (f16/bf16 tensors), the f16 KV cache and the wasm kernels' reference.
 */

/** Half bits → number, exactly. Exponent 0: zero and subnormals (mantissa · 2^-24); exponent 31: ±∞ and NaN. */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

let table: Float32Array | undefined;

/** All 65536 halves decoded, built on first use: one lookup per element in inner loops. */
export function f16Table(): Float32Array {
  if (table === undefined) {
    table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) table[h] = f16ToF32(h);
  }
  return table;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/**
 * number (taken as f32) → half bits, round to nearest even; overflow → ±∞; NaN → quiet NaN keeping its top payload
 * bits (as kernels/f16.ts does).
 */
export function f32ToF16(x: number): number {
  f32Scratch[0] = x;
  const bits = u32Scratch[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15; // biased half exponent
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal half (or zero): shift the full significand right, then round to nearest even.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    return sign | (half + (rem > halfway || (rem === halfway && half & 1) ? 1 : 0));
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // a carry into the exponent is correct, up to ∞
  return sign | h;
}

// bfloat16 is the top half of a float32, so decoding is a 16-bit shift through a shared 4-byte scratch.
const bfU32 = new Uint32Array(1);
const bfF32 = new Float32Array(bfU32.buffer);

/** bfloat16 bit pattern → number, exactly. */
export function bf16ToF32(b: number): number {
  bfU32[0] = (b & 0xffff) << 16;
  return bfF32[0]!;
}
