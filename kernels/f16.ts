// IEEE half-precision conversion (weights stored as u16 bit patterns).

import { F16_MASK, f16_scale } from './simd';

/** f32 → f16, round to nearest even; overflow → ±inf, NaN stays NaN (quiet, top payload bits kept). */
@inline export function toHalf(f: f32): u16 {
  const bits = reinterpret<u32>(f);
  const sign = (bits >>> 16) & 0x8000;
  const exp = <i32>((bits >>> 23) & 0xff);
  let mant = bits & 0x7fffff;
  if (exp == 0xff) return <u16>(sign | 0x7c00 | (mant != 0 ? 0x200 | (mant >>> 13) : 0));
  const e = exp - 127 + 15; // biased half exponent
  if (e >= 31) return <u16>(sign | 0x7c00);
  if (e <= 0) {
    // Subnormal half (or zero): shift the full significand right, then round to nearest even.
    if (e < -10) return <u16>sign;
    mant |= 0x800000;
    const shift = <u32>(14 - e);
    const half = mant >>> shift;
    const rem = mant & ((<u32>1 << shift) - 1);
    const halfway = <u32>1 << (shift - 1);
    const up = rem > halfway || (rem == halfway && (half & 1) != 0) ? 1 : 0;
    return <u16>(sign | (half + up));
  }
  let h = (<u32>e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1) != 0)) h++; // a carry into the exponent is correct, up to inf
  return <u16>(sign | h);
}

/** dst[i] = half(src[i]) for i ∈ [0, n). Load-time conversion: scalar is plenty fast. */
export function f32_to_f16(dst: usize, src: usize, n: i32): void {
  for (let i = 0; i < n; i++) store<u16>(dst + (<usize>i << 1), toHalf(load<f32>(src + (<usize>i << 2))));
}

/** Four halves (sign-extended to i32 lanes) → f32x4, including ±inf and NaN. */
@inline function widen(v: v128): v128 {
  const f = f32x4.mul(v128.and(i32x4.shl(v, 13), i32x4.splat(F16_MASK)), f16_scale());
  // Exponent all ones (inf/NaN): the multiply produced a finite number in [2^16, 2^17); force exponent 255.
  const special = i32x4.eq(v128.and(v, i32x4.splat(0x7c00)), i32x4.splat(0x7c00));
  return v128.or(f, v128.and(special, i32x4.splat(0x7f800000)));
}

/** dst[i] = f32(src[i]) for i ∈ [0, n), exact for every half. */
export function f16_to_f32(dst: usize, src: usize, n: i32): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) v128.store(dst + (<usize>i << 2), widen(v128.load16x4_s(src + (<usize>i << 1))));
  for (; i < n; i++) {
    const v = widen(i32x4.splat(<i32>load<i16>(src + (<usize>i << 1))));
    store<f32>(dst + (<usize>i << 2), f32x4.extract_lane(v, 0));
  }
}
