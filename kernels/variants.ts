// Kernel variants kept for the workbench (dev/kernels/wasm-run.ts): the losing side of a measured A/B decision,
// so the decision can be re-run on other hardware. The engine never selects them.
//
// matmul_f32_rows4 / matmul_f16_rows4: the decode (T = 1) kernel that seqRow / seqRowHalf (matmul_float.ts) replaced:
// four rows share each load of x. For f16 the halves are widened without the final ·2^112, which is applied to x
// instead when |x| < 2^15. Fewer instructions per weight, but four streams per thread: one sequential stream read the
// 37 MB f32 classifier ~2.3× faster on one thread (26 vs 11 GB/s), and stories15M f16 decode went ~325 → ~445 tok/s
// (8a2c4cf). T > 1 falls through to the shipped kernels: the variant only ever concerned decode.

import { hsum4, gather4, gather4h, F16_MASK, f16_scale } from './simd';
import { matmul_f16, matmul_f32, loadW4, r1t1, wshift } from './matmul_float';

/** Four halves at p as f32x4 *without* the final ·2^112 (w·2^-112, exact); times x·2^112 gives exactly w·x. */
@inline function loadHalf4Scaled(p: usize): v128 {
  return v128.and(i32x4.shl(v128.load16x4_s(p), 13), i32x4.splat(F16_MASK));
}

@inline function gatherW<W>(p0: usize, p1: usize, p2: usize, p3: usize): v128 {
  if (sizeof<W>() == 2) return gather4h(p0, p1, p2, p3);
  return gather4(p0, p1, p2, p3);
}

/** max |x[i]| over n floats. */
@inline function absMax(x: usize, n: i32): f32 {
  let m = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= n; i += 4) m = f32x4.max(m, f32x4.abs(v128.load(x + (<usize>i << 2))));
  let r = max<f32>(max<f32>(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1)), max<f32>(f32x4.extract_lane(m, 2), f32x4.extract_lane(m, 3)));
  for (; i < n; i++) r = max<f32>(r, abs<f32>(load<f32>(x + (<usize>i << 2))));
  return r;
}

/**
 * 4 rows × 1 token: o[0..4) = W[0..4) · x; w points at the first row.
 * scaledHalves (f16 only, a compile-time constant after inlining): loadHalf4Scaled against x·2^112.
 */
@inline function r4t1<W>(o: usize, x: usize, w: usize, cols: i32, scaledHalves: bool): void {
  const S = wshift<W>();
  const wb = <usize>cols * sizeof<W>();
  const w0 = w, w1 = w + wb, w2 = w1 + wb, w3 = w2 + wb;
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  const xb = <usize>cols << 2;
  const end = <usize>(cols & ~3) << 2;
  let i: usize = 0;
  if (sizeof<W>() == 2 && scaledHalves) {
    for (; i < end; i += 16) {
      const xv = f32x4.mul(v128.load(x + i), f16_scale());
      const j = i >> S;
      a0 = f32x4.add(a0, f32x4.mul(loadHalf4Scaled(w0 + j), xv));
      a1 = f32x4.add(a1, f32x4.mul(loadHalf4Scaled(w1 + j), xv));
      a2 = f32x4.add(a2, f32x4.mul(loadHalf4Scaled(w2 + j), xv));
      a3 = f32x4.add(a3, f32x4.mul(loadHalf4Scaled(w3 + j), xv));
    }
  } else {
    for (; i < end; i += 16) {
      const xv = v128.load(x + i);
      const j = i >> S;
      a0 = f32x4.add(a0, f32x4.mul(loadW4<W>(w0 + j), xv));
      a1 = f32x4.add(a1, f32x4.mul(loadW4<W>(w1 + j), xv));
      a2 = f32x4.add(a2, f32x4.mul(loadW4<W>(w2 + j), xv));
      a3 = f32x4.add(a3, f32x4.mul(loadW4<W>(w3 + j), xv));
    }
  }
  let s = hsum4(a0, a1, a2, a3);
  for (; i < xb; i += 4) {
    const j = i >> S;
    s = f32x4.add(s, f32x4.mul(gatherW<W>(w0 + j, w1 + j, w2 + j, w3 + j), v128.load32_splat(x + i)));
  }
  v128.store(o, s);
}

@inline function matmulRows4<W>(out: usize, x: usize, w: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  if (T != 1) {
    if (sizeof<W>() == 2) matmul_f16(out, x, w, T, rows, cols, r0, r1);
    else matmul_f32(out, x, w, T, rows, cols, r0, r1);
    return;
  }
  const wb = <usize>cols * sizeof<W>();
  let r = r0;
  if (sizeof<W>() == 2 && absMax(x, cols) < <f32>32768.0) {
    for (; r + 4 <= r1; r += 4) r4t1<W>(out + (<usize>r << 2), x, w + <usize>r * wb, cols, true);
  } else {
    for (; r + 4 <= r1; r += 4) r4t1<W>(out + (<usize>r << 2), x, w + <usize>r * wb, cols, false);
  }
  for (; r < r1; r++) store<f32>(out + (<usize>r << 2), r1t1<W>(x, w + <usize>r * wb, cols));
}

/** As matmul_f32, with the four-row decode kernel. */
export function matmul_f32_rows4(out: usize, x: usize, w: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulRows4<f32>(out, x, w, T, rows, cols, r0, r1);
}

/** As matmul_f16, with the four-row decode kernel. */
export function matmul_f16_rows4(out: usize, x: usize, w: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulRows4<u16>(out, x, w, T, rows, cols, r0, r1);
}
