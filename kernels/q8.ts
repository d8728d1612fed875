// q8_0: llama.cpp's Q8_0 idea: a row is cut into blocks of QK = 32 columns; each block stores 32 int8 values q and
// one scale d with w ≈ d·q, d = max|w| / 127 over the block.
//
// Memory layout of a q8_0 matrix [rows, cols] (two separate allocations, so both stay 16-byte aligned):
//   qs: int8 [rows][nb·32]   nb = ceil(cols / 32); the tail of the last block is zero padding
//   d:  f32  [rows][nb]      one scale per block (f32 rather than llama.cpp's f16: exact, and 1.125 vs 1.0625 B/weight)
//
// Activations for the integer path are quantized the same way per token, but stored widened to int16 so the inner
// loop needs no widening for x (i32x4.dot_i16x8_s multiplies i16 pairs and adds adjacent products):
//   xq: int16 [T][nb·32]     xd: f32 [T][nb]
// Per block the integer dot product Σ qw·qx is exact in i32 (|Σ| ≤ 32·127² < 2^24, so even its f32 conversion is
// exact), and out[t, r] = Σ_b dw[r, b] · dx[t, b] · Σ_{c ∈ b} qw·qx.
//
// Rounding: d = amax / 127 and id = 1 / d in f32 (id = 0 for an all-zero block); q = nearest(x · id), ties to even.
// reference-extra.ts implements the same arithmetic bit-for-bit.

import { hsum, hsum4, hsum4i, gather4, storeColumn } from './simd';

// ---- quantization ----------------------------------------------------------------------------------------------

/** Inverse scale for a block of n ≤ 32 floats at p; writes the scale to dOut. */
@inline function blockScale(p: usize, n: i32, dOut: usize): f32 {
  let amax: f32 = 0;
  if (n == 32) {
    // |v| as bit patterns order like the floats (and a NaN's above +∞, so it still wins): i32x4.max_s is one pmaxsd,
    // where f32x4.max is a long NaN-handling sequence in V8. Same amax for every input, NaN included.
    let m = i32x4.max_s(f32x4.abs(v128.load(p)), f32x4.abs(v128.load(p, 16)));
    m = i32x4.max_s(m, i32x4.max_s(f32x4.abs(v128.load(p, 32)), f32x4.abs(v128.load(p, 48))));
    m = i32x4.max_s(m, i32x4.max_s(f32x4.abs(v128.load(p, 64)), f32x4.abs(v128.load(p, 80))));
    m = i32x4.max_s(m, i32x4.max_s(f32x4.abs(v128.load(p, 96)), f32x4.abs(v128.load(p, 112))));
    m = i32x4.max_s(m, v128.shuffle<i32>(m, m, 2, 3, 0, 1));
    amax = reinterpret<f32>(max<i32>(i32x4.extract_lane(m, 0), i32x4.extract_lane(m, 1)));
  } else {
    for (let c = 0; c < n; c++) amax = max<f32>(amax, abs<f32>(load<f32>(p + (<usize>c << 2))));
  }
  const d: f32 = amax / <f32>127.0;
  store<f32>(dOut, d);
  return d != 0 ? <f32>1.0 / d : 0;
}

/**
 * Four quantized lanes as i32x4: nearest(v·id), ties to even. Adding 1.5·2^23 rounds |v·id| ≤ 127.5 to an integer
 * held in the low mantissa bits; subtracting the shifter's bit pattern reads it out. Same result as
 * trunc_sat(nearest(v·id)), in three cheap instructions instead of V8's long trunc_sat sequence.
 */
@inline function q4(v: v128, id: v128): v128 {
  const t = f32x4.add(f32x4.mul(v, id), f32x4.splat(12582912.0));
  return i32x4.sub(t, i32x4.splat(0x4B400000));
}

/** One quantized value (same lane arithmetic as q4). */
@inline function q1(v: f32, id: f32): i32 {
  return i32x4.extract_lane(q4(f32x4.splat(v), f32x4.splat(id)), 0);
}

/** Quantize one row of `cols` floats at src. wide=false: int8 output (weights); wide=true: int16 (activations). */
@inline function quantizeRow(q: usize, d: usize, src: usize, cols: i32, wide: bool): void {
  const nb = (cols + 31) >> 5;
  for (let b = 0; b < nb; b++) {
    const p = src + (<usize>b << 7);
    const n = min(32, cols - (b << 5));
    const idf = blockScale(p, n, d + (<usize>b << 2));
    const qb = q + (<usize>b << (wide ? 6 : 5));
    if (n == 32) {
      const id = f32x4.splat(idf);
      const h0 = i16x8.narrow_i32x4_s(q4(v128.load(p), id), q4(v128.load(p, 16), id));
      const h1 = i16x8.narrow_i32x4_s(q4(v128.load(p, 32), id), q4(v128.load(p, 48), id));
      const h2 = i16x8.narrow_i32x4_s(q4(v128.load(p, 64), id), q4(v128.load(p, 80), id));
      const h3 = i16x8.narrow_i32x4_s(q4(v128.load(p, 96), id), q4(v128.load(p, 112), id));
      if (wide) {
        v128.store(qb, h0);
        v128.store(qb, h1, 16);
        v128.store(qb, h2, 32);
        v128.store(qb, h3, 48);
      } else {
        v128.store(qb, i8x16.narrow_i16x8_s(h0, h1));
        v128.store(qb, i8x16.narrow_i16x8_s(h2, h3), 16);
      }
    } else {
      for (let c = 0; c < 32; c++) {
        const v = c < n ? q1(load<f32>(p + (<usize>c << 2)), idf) : 0;
        if (wide) store<i16>(qb + (<usize>c << 1), <i16>v);
        else store<i8>(qb + <usize>c, <i8>v);
      }
    }
  }
}

/** Weights: src f32 [rows, cols] → qs int8 [rows][nb·32], d f32 [rows][nb]. Rows [r0, r1) only. */
export function quantize_q8_0(qs: usize, d: usize, src: usize, rows: i32, cols: i32, r0: i32, r1: i32): void {
  const nb = (cols + 31) >> 5;
  for (let r = r0; r < r1; r++) {
    quantizeRow(qs + <usize>r * (<usize>nb << 5), d + <usize>r * (<usize>nb << 2), src + <usize>r * (<usize>cols << 2), cols, false);
  }
}

/** Activations: x f32 [T, cols] → xq int16 [T][nb·32], xd f32 [T][nb]. */
export function quantize_q8_act(xq: usize, xd: usize, x: usize, T: i32, cols: i32): void {
  const nb = (cols + 31) >> 5;
  for (let t = 0; t < T; t++) {
    quantizeRow(xq + <usize>t * (<usize>nb << 6), xd + <usize>t * (<usize>nb << 2), x + <usize>t * (<usize>cols << 2), cols, true);
  }
}

/** Dequantize rows [r0, r1) of a q8_0 matrix back to f32 [rows, cols] (tests, debugging). */
export function dequantize_q8_0(out: usize, qs: usize, d: usize, rows: i32, cols: i32, r0: i32, r1: i32): void {
  const nb = (cols + 31) >> 5;
  for (let r = r0; r < r1; r++) {
    for (let c = 0; c < cols; c++) {
      const q = load<i8>(qs + <usize>r * (<usize>nb << 5) + <usize>c);
      const s = load<f32>(d + ((<usize>r * <usize>nb + <usize>(c >> 5)) << 2));
      store<f32>(out + ((<usize>r * <usize>cols + <usize>c) << 2), s * <f32>q);
    }
  }
}

// ---- q8_0 weights × q8 activations (integer dot products) -----------------------------------------------------

/** Σ over one block: 32 int8 weights at p against 32 int16 activations x0..x3, as i32x4 partial sums. */
@inline function bdot(p: usize, x0: v128, x1: v128, x2: v128, x3: v128, narrowLoads: bool): v128 {
  if (narrowLoads) { // q8-ld: the same values through four load8x8_s
    let s = i32x4.dot_i16x8_s(v128.load8x8_s(p), x0);
    s = i32x4.add(s, i32x4.dot_i16x8_s(v128.load8x8_s(p, 8), x1));
    s = i32x4.add(s, i32x4.dot_i16x8_s(v128.load8x8_s(p, 16), x2));
    return i32x4.add(s, i32x4.dot_i16x8_s(v128.load8x8_s(p, 24), x3));
  }
  const v0 = v128.load(p), v1 = v128.load(p, 16);
  let s = i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(v0), x0);
  s = i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(v0), x1));
  s = i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(v1), x2));
  return i32x4.add(s, i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(v1), x3));
}

/** acc + f32(isum) · (dw · dx) */
@inline function scaleAdd(acc: v128, isum: v128, dw: f32, dx: f32): v128 {
  return f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(isum), f32x4.splat(dw * dx)));
}

/** 4 rows × 1 token. w/wd point at row 0's blocks/scales; wrb/wdb are the per-row strides in bytes. */
@inline function q8r4t1(o: usize, xq: usize, xd: usize, w: usize, wd: usize, nb: i32, narrowLoads: bool): void {
  const wrb = <usize>nb << 5, wdb = <usize>nb << 2;
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  for (let b = 0; b < nb; b++) {
    const xo = xq + (<usize>b << 6);
    const x0 = v128.load(xo), x1 = v128.load(xo, 16), x2 = v128.load(xo, 32), x3 = v128.load(xo, 48);
    const dx = load<f32>(xd + (<usize>b << 2));
    const p = w + (<usize>b << 5), s = wd + (<usize>b << 2);
    a0 = scaleAdd(a0, bdot(p, x0, x1, x2, x3, narrowLoads), load<f32>(s), dx);
    a1 = scaleAdd(a1, bdot(p + wrb, x0, x1, x2, x3, narrowLoads), load<f32>(s + wdb), dx);
    a2 = scaleAdd(a2, bdot(p + 2 * wrb, x0, x1, x2, x3, narrowLoads), load<f32>(s + 2 * wdb), dx);
    a3 = scaleAdd(a3, bdot(p + 3 * wrb, x0, x1, x2, x3, narrowLoads), load<f32>(s + 3 * wdb), dx);
  }
  v128.store(o, hsum4(a0, a1, a2, a3));
}

/** 1 row × 1 token (same per-row arithmetic as q8r4t1, so results do not depend on the row blocking). */
@inline function q8r1t1(xq: usize, xd: usize, w: usize, wd: usize, nb: i32, narrowLoads: bool = false): f32 {
  let a = f32x4.splat(0);
  for (let b = 0; b < nb; b++) {
    const xo = xq + (<usize>b << 6);
    const isum = bdot(w + (<usize>b << 5), v128.load(xo), v128.load(xo, 16), v128.load(xo, 32), v128.load(xo, 48), narrowLoads);
    a = scaleAdd(a, isum, load<f32>(wd + (<usize>b << 2)), load<f32>(xd + (<usize>b << 2)));
  }
  return hsum(a);
}

/** Σ over one block for one token whose activations start at xo, weights already widened to e0..e3. */
@inline function bdotw(xo: usize, e0: v128, e1: v128, e2: v128, e3: v128): v128 {
  let s = i32x4.dot_i16x8_s(e0, v128.load(xo));
  s = i32x4.add(s, i32x4.dot_i16x8_s(e1, v128.load(xo, 16)));
  s = i32x4.add(s, i32x4.dot_i16x8_s(e2, v128.load(xo, 32)));
  return i32x4.add(s, i32x4.dot_i16x8_s(e3, v128.load(xo, 48)));
}

/**
 * 1 row × 4 tokens: each weight block is widened once and used for four tokens. The four per-token integer sums
 * are folded into one vector (lane = token), scaled by [dx_t0..dx_t3]·dw, and accumulated; lane j ends as out[t+j].
 */
@inline function q8r1t4(o: usize, ldo: usize, xq: usize, xd: usize, w: usize, wd: usize, nb: i32): void {
  const xrb = <usize>nb << 6, xdb = <usize>nb << 2;
  let acc = f32x4.splat(0);
  for (let b = 0; b < nb; b++) {
    const v0 = v128.load(w + (<usize>b << 5)), v1 = v128.load(w + (<usize>b << 5), 16);
    const e0 = i16x8.extend_low_i8x16_s(v0), e1 = i16x8.extend_high_i8x16_s(v0);
    const e2 = i16x8.extend_low_i8x16_s(v1), e3 = i16x8.extend_high_i8x16_s(v1);
    const xo = xq + (<usize>b << 6);
    const s = hsum4i(bdotw(xo, e0, e1, e2, e3), bdotw(xo + xrb, e0, e1, e2, e3),
      bdotw(xo + 2 * xrb, e0, e1, e2, e3), bdotw(xo + 3 * xrb, e0, e1, e2, e3));
    const xs = xd + (<usize>b << 2);
    const scale = f32x4.mul(gather4(xs, xs + xdb, xs + 2 * xdb, xs + 3 * xdb), v128.load32_splat(wd + (<usize>b << 2)));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(s), scale));
  }
  storeColumn(o, ldo, acc);
}

/** Σ over one block of one token's activations at xo against widened weights: i32x4 partial sums. */
@inline function bdotx(x0: v128, x1: v128, x2: v128, x3: v128, e0: v128, e1: v128, e2: v128, e3: v128): v128 {
  let s = i32x4.dot_i16x8_s(e0, x0);
  s = i32x4.add(s, i32x4.dot_i16x8_s(e1, x1));
  s = i32x4.add(s, i32x4.dot_i16x8_s(e2, x2));
  return i32x4.add(s, i32x4.dot_i16x8_s(e3, x3));
}

/**
 * 2 rows × 4 tokens: q8r1t4's arithmetic for each row (the same per-token operations, so results do not depend on
 * the blocking), sharing each token's activation loads and each block's scale gather between the two rows. (20 live
 * vectors: V8 spills a few of x64's 16 registers; measured faster all the same, docs/bench.md.)
 */
@inline function q8r2t4(o: usize, ldo: usize, xq: usize, xd: usize, w: usize, wd: usize, nb: i32, wrb: usize, wdb: usize, narrowLoads: bool): void {
  const xrb = <usize>nb << 6, xdb = <usize>nb << 2;
  let acc0 = f32x4.splat(0), acc1 = acc0;
  for (let b = 0; b < nb; b++) {
    const p = w + (<usize>b << 5), q = p + wrb;
    let e0: v128, e1: v128, e2: v128, e3: v128, f0: v128, f1: v128, f2: v128, f3: v128;
    if (narrowLoads) {
      // The workbench's q8-ld: four i16x8.load8x8_s a row (one pmovsxbw with a memory operand each) instead of two
      // loads and four extends (extend_high costs V8 a shuffle too); the same values, so bit-identical results.
      // Measured slower all the same (docs/bench.md).
      e0 = v128.load8x8_s(p); e1 = v128.load8x8_s(p, 8); e2 = v128.load8x8_s(p, 16); e3 = v128.load8x8_s(p, 24);
      f0 = v128.load8x8_s(q); f1 = v128.load8x8_s(q, 8); f2 = v128.load8x8_s(q, 16); f3 = v128.load8x8_s(q, 24);
    } else {
      const v0 = v128.load(p), v1 = v128.load(p, 16), u0 = v128.load(q), u1 = v128.load(q, 16);
      e0 = i16x8.extend_low_i8x16_s(v0); e1 = i16x8.extend_high_i8x16_s(v0);
      e2 = i16x8.extend_low_i8x16_s(v1); e3 = i16x8.extend_high_i8x16_s(v1);
      f0 = i16x8.extend_low_i8x16_s(u0); f1 = i16x8.extend_high_i8x16_s(u0);
      f2 = i16x8.extend_low_i8x16_s(u1); f3 = i16x8.extend_high_i8x16_s(u1);
    }
    let xo = xq + (<usize>b << 6);
    let x0 = v128.load(xo), x1 = v128.load(xo, 16), x2 = v128.load(xo, 32), x3 = v128.load(xo, 48);
    const s0 = bdotx(x0, x1, x2, x3, e0, e1, e2, e3), t0 = bdotx(x0, x1, x2, x3, f0, f1, f2, f3);
    xo += xrb;
    x0 = v128.load(xo); x1 = v128.load(xo, 16); x2 = v128.load(xo, 32); x3 = v128.load(xo, 48);
    const s1 = bdotx(x0, x1, x2, x3, e0, e1, e2, e3), t1 = bdotx(x0, x1, x2, x3, f0, f1, f2, f3);
    xo += xrb;
    x0 = v128.load(xo); x1 = v128.load(xo, 16); x2 = v128.load(xo, 32); x3 = v128.load(xo, 48);
    const s2 = bdotx(x0, x1, x2, x3, e0, e1, e2, e3), t2 = bdotx(x0, x1, x2, x3, f0, f1, f2, f3);
    xo += xrb;
    x0 = v128.load(xo); x1 = v128.load(xo, 16); x2 = v128.load(xo, 32); x3 = v128.load(xo, 48);
    const s3 = bdotx(x0, x1, x2, x3, e0, e1, e2, e3), t3 = bdotx(x0, x1, x2, x3, f0, f1, f2, f3);
    const xs = xd + (<usize>b << 2);
    const dx = gather4(xs, xs + xdb, xs + 2 * xdb, xs + 3 * xdb);
    const ws = wd + (<usize>b << 2);
    acc0 = f32x4.add(acc0, f32x4.mul(f32x4.convert_i32x4_s(hsum4i(s0, s1, s2, s3)), f32x4.mul(dx, v128.load32_splat(ws))));
    acc1 = f32x4.add(acc1, f32x4.mul(f32x4.convert_i32x4_s(hsum4i(t0, t1, t2, t3)), f32x4.mul(dx, v128.load32_splat(ws + wdb))));
  }
  storeColumn(o, ldo, acc0);
  storeColumn(o + 4, ldo, acc1);
}

/**
 * out[t·rows + r] = Σ_b wd[r,b]·xd[t,b]·Σ_c wq[r,c]·xq[t,c]   for t ∈ [0,T), r ∈ [r0,r1).
 * wq/wd: a q8_0 matrix (layout above); xq/xd: activations from quantize_q8_act.
 * T = 1 (decode): four rows share each activation block. T > 1 (prefill): row pairs × 4 tokens (q8r2t4).
 */
export function matmul_q8_0(out: usize, xq: usize, xd: usize, wq: usize, wd: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulQ8(out, xq, xd, wq, wd, T, rows, cols, r0, r1, true);
}

/** matmul_q8_0 with one row × 4 tokens for prefill: the kernel before q8r2t4, kept as the workbench's q8-r1t4 variant. */
export function matmul_q8_0_r1t4(out: usize, xq: usize, xd: usize, wq: usize, wd: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulQ8(out, xq, xd, wq, wd, T, rows, cols, r0, r1, false);
}

/** matmul_q8_0 widening the weights with load8x8_s (decode and prefill): the workbench's q8-ld variant. */
export function matmul_q8_0_ld(out: usize, xq: usize, xd: usize, wq: usize, wd: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulQ8(out, xq, xd, wq, wd, T, rows, cols, r0, r1, true, true);
}

/** The q8_0 matmul; pairs (a constant after inlining): prefill by row pairs (q8r2t4), else row by row (q8r1t4). */
@inline function matmulQ8(out: usize, xq: usize, xd: usize, wq: usize, wd: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32, pairs: bool, narrowLoads: bool = false): void {
  const nb = (cols + 31) >> 5;
  const wrb = <usize>nb << 5, wdb = <usize>nb << 2; // weight row / scale row bytes
  const xrb = <usize>nb << 6, xdb = <usize>nb << 2; // activation row / scale row bytes
  const ldo = <usize>rows << 2;
  let r = r0;
  if (T == 1) {
    for (; r + 4 <= r1; r += 4) q8r4t1(out + (<usize>r << 2), xq, xd, wq + <usize>r * wrb, wd + <usize>r * wdb, nb, narrowLoads);
    for (; r < r1; r++) store<f32>(out + (<usize>r << 2), q8r1t1(xq, xd, wq + <usize>r * wrb, wd + <usize>r * wdb, nb, narrowLoads));
    return;
  }
  // Rows outermost: their blocks stay in L1 while all T tokens stream past them.
  if (pairs) {
    for (; r + 2 <= r1; r += 2) {
      const w = wq + <usize>r * wrb, s = wd + <usize>r * wdb;
      let t = 0;
      for (; t + 4 <= T; t += 4) q8r2t4(out + <usize>t * ldo + (<usize>r << 2), ldo, xq + <usize>t * xrb, xd + <usize>t * xdb, w, s, nb, wrb, wdb, narrowLoads);
      for (; t < T; t++) {
        const o = out + <usize>t * ldo + (<usize>r << 2);
        store<f32>(o, q8r1t1(xq + <usize>t * xrb, xd + <usize>t * xdb, w, s, nb));
        store<f32>(o + 4, q8r1t1(xq + <usize>t * xrb, xd + <usize>t * xdb, w + wrb, s + wdb, nb));
      }
    }
  }
  for (; r < r1; r++) {
    const w = wq + <usize>r * wrb, s = wd + <usize>r * wdb;
    let t = 0;
    for (; t + 4 <= T; t += 4) q8r1t4(out + <usize>t * ldo + (<usize>r << 2), ldo, xq + <usize>t * xrb, xd + <usize>t * xdb, w, s, nb);
    for (; t < T; t++) store<f32>(out + <usize>t * ldo + (<usize>r << 2), q8r1t1(xq + <usize>t * xrb, xd + <usize>t * xdb, w, s, nb));
  }
}

// ---- q8_0 weights × f32 activations (dequantize on the fly) ---------------------------------------------------
// The alternative to quantizing x: widen each int8 to f32 in the inner loop. No activation rounding, but ~2× the
// instructions per weight of the integer path. Kept for comparison (bench) and for callers that need exact x.

@inline function q8fRow(x: usize, w: usize, wd: usize, cols: i32): f32 {
  const full = cols >> 5;
  let acc = f32x4.splat(0);
  for (let b = 0; b < full; b++) {
    const p = w + (<usize>b << 5), xo = x + (<usize>b << 7);
    // Two 8-byte loads per 8 weights: load8x8_s widens to i16, then low/high halves to i32.
    let s = f32x4.splat(0);
    for (let k: usize = 0; k < 32; k += 8) {
      const h = v128.load8x8_s(p + k);
      s = f32x4.add(s, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(h)), v128.load(xo + (k << 2))));
      s = f32x4.add(s, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(h)), v128.load(xo + (k << 2), 16)));
    }
    acc = f32x4.add(acc, f32x4.mul(s, v128.load32_splat(wd + (<usize>b << 2))));
  }
  let total = hsum(acc);
  if ((full << 5) < cols) {
    const p = w + (<usize>full << 5), xo = x + (<usize>full << 7);
    let s: f32 = 0;
    for (let c = 0; c < cols - (full << 5); c++) s += <f32>load<i8>(p + <usize>c) * load<f32>(xo + (<usize>c << 2));
    total += s * load<f32>(wd + (<usize>full << 2));
  }
  return total;
}

/** out[t·rows + r] = Σ_b wd[r,b]·Σ_c wq[r,c]·x[t,c] with x f32 [T, cols] (unpadded). */
export function matmul_q8_0_f32(out: usize, x: usize, wq: usize, wd: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  const nb = (cols + 31) >> 5;
  const wrb = <usize>nb << 5, wdb = <usize>nb << 2;
  for (let t = 0; t < T; t++) {
    const xt = x + <usize>t * (<usize>cols << 2), ot = out + <usize>t * (<usize>rows << 2);
    for (let r = r0; r < r1; r++) store<f32>(ot + (<usize>r << 2), q8fRow(xt, wq + <usize>r * wrb, wd + <usize>r * wdb, cols));
  }
}
