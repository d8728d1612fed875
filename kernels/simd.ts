// Shared SIMD helpers for the kernels. Everything is @inline: Binaryen inlines it into the hot loops, and
// a call inside an inner loop would cost more than the work it does.

/** Σ lanes of an f32x4. */
@inline export function hsum(v: v128): f32 {
  const s = f32x4.add(v, v128.shuffle<f32>(v, v, 2, 3, 0, 1));
  return f32x4.extract_lane(s, 0) + f32x4.extract_lane(s, 1);
}

/** [Σa, Σb, Σc, Σd]: four horizontal sums at once (a 4×4 transpose folded into the adds). */
@inline export function hsum4(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = f32x4.add(v128.shuffle<f32>(a, b, 0, 4, 1, 5), v128.shuffle<f32>(a, b, 2, 6, 3, 7)); // a02 b02 a13 b13
  const cd = f32x4.add(v128.shuffle<f32>(c, d, 0, 4, 1, 5), v128.shuffle<f32>(c, d, 2, 6, 3, 7));
  return f32x4.add(v128.shuffle<f32>(ab, cd, 0, 1, 4, 5), v128.shuffle<f32>(ab, cd, 2, 3, 6, 7));
}

/** hsum4 for i32 lanes. */
@inline export function hsum4i(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(v128.shuffle<i32>(a, b, 0, 4, 1, 5), v128.shuffle<i32>(a, b, 2, 6, 3, 7));
  const cd = i32x4.add(v128.shuffle<i32>(c, d, 0, 4, 1, 5), v128.shuffle<i32>(c, d, 2, 6, 3, 7));
  return i32x4.add(v128.shuffle<i32>(ab, cd, 0, 1, 4, 5), v128.shuffle<i32>(ab, cd, 2, 3, 6, 7));
}

/** Store lane k of v at o + k·ldo: one row of a matmul's out, four tokens. */
@inline export function storeColumn(o: usize, ldo: usize, v: v128): void {
  v128.store32_lane(o, v, 0);
  v128.store32_lane(o + ldo, v, 1);
  v128.store32_lane(o + 2 * ldo, v, 2);
  v128.store32_lane(o + 3 * ldo, v, 3);
}

/** [p0[0], p1[0], p2[0], p3[0]] as f32x4 (used for the scalar column tails). */
@inline export function gather4(p0: usize, p1: usize, p2: usize, p3: usize): v128 {
  let v = v128.load32_zero(p0);
  v = v128.load32_lane(p1, v, 1);
  v = v128.load32_lane(p2, v, 2);
  return v128.load32_lane(p3, v, 3);
}

/**
 * e^x per lane, Cephes expf: x = n·ln2 + r, |r| ≤ ln2/2, degree-6 polynomial, scale by 2^n through the exponent bits.
 * About 1 ulp. Inputs are clamped to [-87.34, 88] so 2^n stays a normal float; results below the smallest normal
 * (x < -87.34) are flushed to 0 (softmax only ever feeds x ≤ 0; silu's e^(-g) saturates harmlessly at 1.6e38).
 * Written by hand because Mathf.exp brings a lookup table (a data segment) into the module.
 *
 * Instruction choice matters here (measured: 3× faster than the obvious version): wasm's f32x4.min/max and
 * i32x4.trunc_sat need long NaN-handling sequences on x64, so the clamps use pmin/pmax (one minps/maxps; NaN still
 * propagates since it is the first operand), and n = round(x·log2e) comes from adding 1.5·2^23, which leaves n in
 * the low mantissa bits (rounded to nearest even), readable without any float→int conversion.
 */
@inline export function exp4(x: v128): v128 {
  const SHIFTER: f32 = 12582912.0; // 1.5·2^23
  const tiny = f32x4.lt(x, f32x4.splat(-87.33654));
  x = f32x4.pmax(f32x4.pmin(x, f32x4.splat(88.0)), f32x4.splat(-87.33654));
  const t = f32x4.add(f32x4.mul(x, f32x4.splat(1.44269504088896341)), f32x4.splat(SHIFTER));
  const n = f32x4.sub(t, f32x4.splat(SHIFTER));
  let r = f32x4.sub(x, f32x4.mul(n, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.9875691500e-4);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.3981999507e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(8.3334519073e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(4.1665795894e-2));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.6666665459e-1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(5.0000001201e-1));
  p = f32x4.add(f32x4.add(f32x4.mul(p, f32x4.mul(r, r)), r), f32x4.splat(1.0));
  // bits(t) = 0x4B400000 + n; shifting left by 23 keeps n's low 9 bits, i.e. n << 23 (two's complement).
  const pow2n = i32x4.add(i32x4.shl(t, 23), i32x4.splat(127 << 23));
  return v128.andnot(f32x4.mul(p, pow2n), tiny);
}

/** Scalar e^x with exactly the lane semantics of exp4 (for tails, so results do not depend on alignment). */
@inline export function exp1(x: f32): f32 {
  return f32x4.extract_lane(exp4(f32x4.splat(x)), 0);
}

// ---- f16 → f32 widening -------------------------------------------------------------------------------------
// Wasm has no f16 lanes. For a finite half h: sign-extend to 32 bits and shift left by 13, which puts the sign at
// bit 31 and exponent+mantissa at bits 27..13 (bits 30..28 get copies of the sign: masked off). Read as an f32 this
// is the value scaled by 2^-112 — also for subnormal halves — so one multiply by 2^112 finishes the job.
// Inf/NaN halves come out as large finite numbers: the matmul kernels assume finite weights (loaders check);
// f16_to_f32 fixes them up for general use.

export const F16_MASK: i32 = 0x8FFFE000;
@inline export function f16_scale(): v128 { return f32x4.splat(reinterpret<f32>(0x77800000)); } // 2^112

/** Halves 0..3 of an i16x8 vector as f32x4 (finite values). */
@inline export function f16lo(h: v128): v128 {
  const v = v128.and(i32x4.shl(i32x4.extend_low_i16x8_s(h), 13), i32x4.splat(F16_MASK));
  return f32x4.mul(v, f16_scale());
}

/** Halves 4..7 of an i16x8 vector as f32x4 (finite values). */
@inline export function f16hi(h: v128): v128 {
  const v = v128.and(i32x4.shl(i32x4.extend_high_i16x8_s(h), 13), i32x4.splat(F16_MASK));
  return f32x4.mul(v, f16_scale());
}

/** One finite half → f32, same arithmetic as f16lo. */
@inline export function f16one(h: u16): f32 {
  return reinterpret<f32>((<i32>(<i16>h) << 13) & F16_MASK) * reinterpret<f32>(0x77800000);
}

/** [w0, w1, w2, w3] halves → f32x4 (tails). */
@inline export function gather4h(p0: usize, p1: usize, p2: usize, p3: usize): v128 {
  let v = v128.load16_lane(p0, i32x4.splat(0), 0);
  v = v128.load16_lane(p1, v, 1);
  v = v128.load16_lane(p2, v, 2);
  v = v128.load16_lane(p3, v, 3);
  return f16lo(v);
}
