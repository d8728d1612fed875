// Kernel variants kept for the workbench (dev/kernels/wasm-run.ts): the losing side of a measured A/B decision,
// so the decision can be re-run on other hardware. The engine never selects them.
//
// matmul_f16_rows4: the f16 decode (T = 1) kernel that 8a2c4cf replaced with seqRowHalf (matmul_float.ts): four rows
// share each load of x and widen halves without the final ·2^112 (it is applied to x instead, when |x| < 2^15). It
// takes fewer instructions per weight, but four streams per thread read DRAM slower (stories15M f16 decode ~325 tok/s
// vs ~445 then). T > 1 falls through to the shipped kernel: the variant only ever concerned decode.
//
// matmul_f32_rows4: the same four-row decode kernel for f32 weights, which seqRow (matmul_float.ts) replaced: one
// sequential stream per thread read the 37 MB classifier ~2.3× faster (26 vs 11 GB/s on one thread).

import { hsum4, gather4, gather4h, F16_MASK, f16_scale, f16one } from './simd';
import { matmul_f16, matmul_f32 } from './matmul_float';

/** 4 rows × 1 token of f32 weights: o[0..4) = W[0..4) · x, four rows sharing each load of x. */
@inline function r4t1f(o: usize, x: usize, w: usize, cols: i32): void {
  const wb = <usize>cols << 2;
  const w0 = w, w1 = w + wb, w2 = w1 + wb, w3 = w2 + wb;
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  const end = <usize>(cols & ~3) << 2;
  let i: usize = 0;
  for (; i < end; i += 16) {
    const xv = v128.load(x + i);
    a0 = f32x4.add(a0, f32x4.mul(v128.load(w0 + i), xv));
    a1 = f32x4.add(a1, f32x4.mul(v128.load(w1 + i), xv));
    a2 = f32x4.add(a2, f32x4.mul(v128.load(w2 + i), xv));
    a3 = f32x4.add(a3, f32x4.mul(v128.load(w3 + i), xv));
  }
  let s = hsum4(a0, a1, a2, a3);
  for (; i < wb; i += 4) s = f32x4.add(s, f32x4.mul(gather4(w0 + i, w1 + i, w2 + i, w3 + i), v128.load32_splat(x + i)));
  v128.store(o, s);
}

/** As matmul_f32, with the four-row decode kernel. */
export function matmul_f32_rows4(out: usize, x: usize, w: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  if (T != 1) {
    matmul_f32(out, x, w, T, rows, cols, r0, r1);
    return;
  }
  const wb = <usize>cols << 2;
  let r = r0;
  for (; r + 4 <= r1; r += 4) r4t1f(out + (<usize>r << 2), x, w + <usize>r * wb, cols);
  for (; r < r1; r++) {
    let s: f32 = 0;
    for (let c = 0; c < cols; c++) s += load<f32>(w + <usize>r * wb + (<usize>c << 2)) * load<f32>(x + (<usize>c << 2));
    store<f32>(out + (<usize>r << 2), s);
  }
}

/** Four halves at p as f32x4 *without* the final ·2^112 (w·2^-112, exact); times x·2^112 gives exactly w·x. */
@inline function loadHalf4Scaled(p: usize): v128 {
  return v128.and(i32x4.shl(v128.load16x4_s(p), 13), i32x4.splat(F16_MASK));
}

/** Four halves at p as f32x4. */
@inline function loadHalf4(p: usize): v128 {
  return f32x4.mul(loadHalf4Scaled(p), f16_scale());
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

/** 4 rows × 1 token: o[0..4) = W[0..4) · x; w points at the first row. scaled: x·2^112 against unscaled halves. */
@inline function r4t1h(o: usize, x: usize, w: usize, cols: i32, scaled: bool): void {
  const wb = <usize>cols << 1;
  const w0 = w, w1 = w + wb, w2 = w1 + wb, w3 = w2 + wb;
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  const xb = <usize>cols << 2;
  const end = <usize>(cols & ~3) << 2;
  let i: usize = 0;
  if (scaled) {
    for (; i < end; i += 16) {
      const xv = f32x4.mul(v128.load(x + i), f16_scale());
      const j = i >> 1;
      a0 = f32x4.add(a0, f32x4.mul(loadHalf4Scaled(w0 + j), xv));
      a1 = f32x4.add(a1, f32x4.mul(loadHalf4Scaled(w1 + j), xv));
      a2 = f32x4.add(a2, f32x4.mul(loadHalf4Scaled(w2 + j), xv));
      a3 = f32x4.add(a3, f32x4.mul(loadHalf4Scaled(w3 + j), xv));
    }
  } else {
    for (; i < end; i += 16) {
      const xv = v128.load(x + i);
      const j = i >> 1;
      a0 = f32x4.add(a0, f32x4.mul(loadHalf4(w0 + j), xv));
      a1 = f32x4.add(a1, f32x4.mul(loadHalf4(w1 + j), xv));
      a2 = f32x4.add(a2, f32x4.mul(loadHalf4(w2 + j), xv));
      a3 = f32x4.add(a3, f32x4.mul(loadHalf4(w3 + j), xv));
    }
  }
  let s = hsum4(a0, a1, a2, a3);
  for (; i < xb; i += 4) {
    const j = i >> 1;
    s = f32x4.add(s, f32x4.mul(gather4h(w0 + j, w1 + j, w2 + j, w3 + j), v128.load32_splat(x + i)));
  }
  v128.store(o, s);
}

/** 1 row × 1 token (scalar): the rows left over after the blocks of four. */
@inline function r1t1h(x: usize, w: usize, cols: i32): f32 {
  let s: f32 = 0;
  for (let c = 0; c < cols; c++) s += f16one(load<u16>(w + (<usize>c << 1))) * load<f32>(x + (<usize>c << 2));
  return s;
}

/** As matmul_f16, with the four-row decode kernel. */
export function matmul_f16_rows4(out: usize, x: usize, w: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  if (T != 1) {
    matmul_f16(out, x, w, T, rows, cols, r0, r1);
    return;
  }
  const wb = <usize>cols << 1;
  let r = r0;
  if (absMax(x, cols) < <f32>32768.0) {
    for (; r + 4 <= r1; r += 4) r4t1h(out + (<usize>r << 2), x, w + <usize>r * wb, cols, true);
  } else {
    for (; r + 4 <= r1; r += 4) r4t1h(out + (<usize>r << 2), x, w + <usize>r * wb, cols, false);
  }
  for (; r < r1; r++) store<f32>(out + (<usize>r << 2), r1t1h(x, w + <usize>r * wb, cols));
}
