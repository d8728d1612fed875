// Probe (not part of the engine): how much relaxed SIMD would buy the prefill matmuls. Compiled on its own by
// dev/kernels/relaxed-probe.ts with `--enable relaxed-simd`; runs only where the engine has relaxed SIMD (Node 20:
// `node --experimental-wasm-relaxed-simd`; on by default from Node 22 / Chrome 114).
//
// - q8_0 × q7: weights as shipped (int8, f32 block scales); activations quantized to 7 bits and offset into [1, 127]
//   (u = q + 64, |q| ≤ 63), the operand i32x4.relaxed_dot_i8x16_i7x16_add_s wants non-negative. Per block and row,
//   Σ w·q = Σ w·u − 64·Σ w, with Σ w per (row, block) computed once per matrix (wsum).
// - f32 with f32x4.relaxed_madd (one fused multiply-add where SIMD128 has a multiply and an add).
// The shipped kernels are exported alongside, for the same-module A/B.

import { hsum4, hsum4i, gather4, storeColumn } from '../simd';
export { matmul_q8_0, quantize_q8_0, quantize_q8_act } from '../q8';
export { matmul_f32 } from '../matmul_float';

/** Activations x f32 [T, cols] → xu u8 [T][nb·32] (q + 64, q = nearest(x·63/amax)), xd f32 [T][nb]. */
export function quantize_q7_act(xu: usize, xd: usize, x: usize, T: i32, cols: i32): void {
  const nb = (cols + 31) >> 5;
  for (let t = 0; t < T; t++) {
    for (let b = 0; b < nb; b++) {
      const p = x + ((<usize>t * <usize>cols + (<usize>b << 5)) << 2);
      const n = min(32, cols - (b << 5));
      let amax: f32 = 0;
      for (let c = 0; c < n; c++) amax = max<f32>(amax, abs<f32>(load<f32>(p + (<usize>c << 2))));
      const d: f32 = amax / <f32>63.0;
      const id: f32 = d != 0 ? <f32>1.0 / d : 0;
      store<f32>(xd + ((<usize>t * <usize>nb + <usize>b) << 2), d);
      const q = xu + <usize>t * (<usize>nb << 5) + (<usize>b << 5);
      for (let c = 0; c < 32; c++) store<u8>(q + <usize>c, <u8>(64 + (c < n ? <i32>nearest<f32>(load<f32>(p + (<usize>c << 2)) * id) : 0)));
    }
  }
}

/** wsum i32 [rows][nb]: Σ of each block's int8 weights. */
export function q8_block_sums(wsum: usize, wq: usize, rows: i32, cols: i32): void {
  const nb = (cols + 31) >> 5;
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      let s = 0;
      const p = wq + (<usize>r * <usize>nb + <usize>b) * 32;
      for (let c = 0; c < 32; c++) s += <i32>load<i8>(p + <usize>c);
      store<i32>(wsum + ((<usize>r * <usize>nb + <usize>b) << 2), s);
    }
  }
}

/** Σ over one block of one row (wa, wb: its two halves) against one token's 32 activations at xo. */
@inline function dot7(wa: v128, wb: v128, xo: usize): v128 {
  return i32x4.relaxed_dot_i8x16_i7x16_add_s(wb, v128.load(xo, 16), i32x4.relaxed_dot_i8x16_i7x16_add_s(wa, v128.load(xo), i32x4.splat(0)));
}

/** out[t·rows + r] for T a multiple of 4 and rows a multiple of 2 (a probe: no tails). */
export function matmul_q8_q7(out: usize, xu: usize, xd: usize, wq: usize, wd: usize, wsum: usize, T: i32, rows: i32, cols: i32): void {
  const nb = (cols + 31) >> 5;
  const wrb = <usize>nb << 5, wdb = <usize>nb << 2, xrb = <usize>nb << 5, xdb = <usize>nb << 2, ldo = <usize>rows << 2;
  for (let r = 0; r + 2 <= rows; r += 2) {
    const w = wq + <usize>r * wrb, wd0 = wd + <usize>r * wdb, ws0 = wsum + <usize>r * wdb;
    for (let t = 0; t + 4 <= T; t += 4) {
      const x = xu + <usize>t * xrb, xs = xd + <usize>t * xdb;
      let acc0 = f32x4.splat(0), acc1 = acc0;
      for (let b = 0; b < nb; b++) {
        const p = w + (<usize>b << 5), q = p + wrb, xo = x + (<usize>b << 5);
        const a0 = v128.load(p), a1 = v128.load(p, 16), b0 = v128.load(q), b1 = v128.load(q, 16);
        const s0 = hsum4i(dot7(a0, a1, xo), dot7(a0, a1, xo + xrb), dot7(a0, a1, xo + 2 * xrb), dot7(a0, a1, xo + 3 * xrb));
        const s1 = hsum4i(dot7(b0, b1, xo), dot7(b0, b1, xo + xrb), dot7(b0, b1, xo + 2 * xrb), dot7(b0, b1, xo + 3 * xrb));
        const bo = <usize>b << 2;
        const dx = gather4(xs + bo, xs + xdb + bo, xs + 2 * xdb + bo, xs + 3 * xdb + bo);
        const i0 = i32x4.sub(s0, i32x4.shl(v128.load32_splat(ws0 + bo), 6));
        const i1 = i32x4.sub(s1, i32x4.shl(v128.load32_splat(ws0 + wdb + bo), 6));
        acc0 = f32x4.add(acc0, f32x4.mul(f32x4.convert_i32x4_s(i0), f32x4.mul(dx, v128.load32_splat(wd0 + bo))));
        acc1 = f32x4.add(acc1, f32x4.mul(f32x4.convert_i32x4_s(i1), f32x4.mul(dx, v128.load32_splat(wd0 + wdb + bo))));
      }
      const o = out + <usize>t * ldo + (<usize>r << 2);
      storeColumn(o, ldo, acc0);
      storeColumn(o + 4, ldo, acc1);
    }
  }
}

/** f32 out[t·rows + r], 2 rows × 4 tokens with relaxed_madd; T a multiple of 4, rows of 2, cols of 4 (a probe). */
export function matmul_f32_madd(out: usize, x: usize, w: usize, T: i32, rows: i32, cols: i32): void {
  const xb = <usize>cols << 2, ldo = <usize>rows << 2;
  for (let r = 0; r + 2 <= rows; r += 2) {
    const w0 = w + <usize>r * xb, w1 = w0 + xb;
    for (let t = 0; t + 4 <= T; t += 4) {
      const x0 = x + <usize>t * xb, x1 = x0 + xb, x2 = x1 + xb, x3 = x2 + xb;
      let a00 = f32x4.splat(0), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
      for (let i: usize = 0; i < xb; i += 16) {
        const v0 = v128.load(w0 + i), v1 = v128.load(w1 + i);
        let xv = v128.load(x0 + i);
        a00 = f32x4.relaxed_madd(v0, xv, a00); a10 = f32x4.relaxed_madd(v1, xv, a10);
        xv = v128.load(x1 + i);
        a01 = f32x4.relaxed_madd(v0, xv, a01); a11 = f32x4.relaxed_madd(v1, xv, a11);
        xv = v128.load(x2 + i);
        a02 = f32x4.relaxed_madd(v0, xv, a02); a12 = f32x4.relaxed_madd(v1, xv, a12);
        xv = v128.load(x3 + i);
        a03 = f32x4.relaxed_madd(v0, xv, a03); a13 = f32x4.relaxed_madd(v1, xv, a13);
      }
      const o = out + <usize>t * ldo + (<usize>r << 2);
      storeColumn(o, ldo, hsum4(a00, a01, a02, a03));
      storeColumn(o + 4, ldo, hsum4(a10, a11, a12, a13));
    }
  }
}
