// Float weights, f32 or f16:   out[t·rows + r] = Σ_c W[r·cols + c] · x[t·cols + c]   for t ∈ [0, T), r ∈ [r0, r1).
// W is row-major [rows, cols] exactly as loaded (no padding): rows may start unaligned when cols % 4 ≠ 0, which
// wasm loads allow. x and out are f32. The row range [r0, r1) lets threads split the rows.
//
// T = 1 (decode) streams W once, one row at a time (seqRow, seqRowHalf): a single sequential stream per thread is what
// the hardware prefetcher follows best.
// T > 1 (prefill) register-blocks 2 rows × 4 tokens (8 accumulators): each weight vector loaded (and, for f16,
// widened) is used four times and each x vector twice. f32 takes the tokens in blocks whose x rows fit in L1.
//
// The microkernels are generic over the weight element W (f32 or u16 = IEEE half); sizeof<W>() is a compile-time
// constant, so each instantiation is straight-line code for one type. Offsets `i` count bytes of x; the matching
// weight offset is i >> WSHIFT.

import { hsum, hsum4, gather4, storeColumn, F16_MASK, f16_scale, f16one, f16lo, f16hi } from './simd';

@inline export function wshift<W>(): usize { return sizeof<W>() == 2 ? 1 : 0; }

/** Four consecutive weights at p as f32x4. f16: load-and-sign-extend, then the shift/mask/scale of simd.ts. */
@inline export function loadW4<W>(p: usize): v128 {
  if (sizeof<W>() == 2) {
    return f32x4.mul(v128.and(i32x4.shl(v128.load16x4_s(p), 13), i32x4.splat(F16_MASK)), f16_scale());
  }
  return v128.load(p);
}

@inline function splatW<W>(p: usize): v128 {
  if (sizeof<W>() == 2) return f32x4.splat(f16one(load<u16>(p)));
  return v128.load32_splat(p);
}

@inline function loadW1<W>(p: usize): f32 {
  if (sizeof<W>() == 2) return f16one(load<u16>(p));
  return load<f32>(p);
}

/** 1 row × 1 token. */
@inline export function r1t1<W>(x: usize, w: usize, cols: i32): f32 {
  const S = wshift<W>();
  let a = f32x4.splat(0);
  const xb = <usize>cols << 2;
  const end = <usize>(cols & ~3) << 2;
  let i: usize = 0;
  for (; i < end; i += 16) a = f32x4.add(a, f32x4.mul(loadW4<W>(w + (i >> S)), v128.load(x + i)));
  let s = hsum(a);
  for (; i < xb; i += 4) s += loadW1<W>(w + (i >> S)) * load<f32>(x + i);
  return s;
}

/** 2 rows × 4 tokens. x points at token 0's row, o at out[t0, r]; ldo = bytes between tokens in out. */
@inline function r2t4<W>(o: usize, ldo: usize, x: usize, w: usize, cols: i32): void {
  const S = wshift<W>();
  const xb = <usize>cols << 2;
  const wb = <usize>cols * sizeof<W>();
  const x0 = x, x1 = x + xb, x2 = x1 + xb, x3 = x2 + xb;
  const w0 = w, w1 = w + wb;
  let a00 = f32x4.splat(0), a01 = a00, a02 = a00, a03 = a00; // row 0, tokens 0..3
  let a10 = a00, a11 = a00, a12 = a00, a13 = a00; //              row 1
  const end = <usize>(cols & ~3) << 2;
  let i: usize = 0;
  for (; i < end; i += 16) {
    const v0 = loadW4<W>(w0 + (i >> S)), v1 = loadW4<W>(w1 + (i >> S));
    let xv = v128.load(x0 + i);
    a00 = f32x4.add(a00, f32x4.mul(v0, xv));
    a10 = f32x4.add(a10, f32x4.mul(v1, xv));
    xv = v128.load(x1 + i);
    a01 = f32x4.add(a01, f32x4.mul(v0, xv));
    a11 = f32x4.add(a11, f32x4.mul(v1, xv));
    xv = v128.load(x2 + i);
    a02 = f32x4.add(a02, f32x4.mul(v0, xv));
    a12 = f32x4.add(a12, f32x4.mul(v1, xv));
    xv = v128.load(x3 + i);
    a03 = f32x4.add(a03, f32x4.mul(v0, xv));
    a13 = f32x4.add(a13, f32x4.mul(v1, xv));
  }
  let s0 = hsum4(a00, a01, a02, a03);
  let s1 = hsum4(a10, a11, a12, a13);
  for (; i < xb; i += 4) {
    const xv = gather4(x0 + i, x1 + i, x2 + i, x3 + i);
    s0 = f32x4.add(s0, f32x4.mul(splatW<W>(w0 + (i >> S)), xv));
    s1 = f32x4.add(s1, f32x4.mul(splatW<W>(w1 + (i >> S)), xv));
  }
  storeColumn(o, ldo, s0);
  storeColumn(o + 4, ldo, s1);
}

/** 1 row × 4 tokens (the odd last row of a prefill range). */
@inline function r1t4<W>(o: usize, ldo: usize, x: usize, w: usize, cols: i32): void {
  const S = wshift<W>();
  const xb = <usize>cols << 2;
  const x0 = x, x1 = x + xb, x2 = x1 + xb, x3 = x2 + xb;
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  const end = <usize>(cols & ~3) << 2;
  let i: usize = 0;
  for (; i < end; i += 16) {
    const v = loadW4<W>(w + (i >> S));
    a0 = f32x4.add(a0, f32x4.mul(v, v128.load(x0 + i)));
    a1 = f32x4.add(a1, f32x4.mul(v, v128.load(x1 + i)));
    a2 = f32x4.add(a2, f32x4.mul(v, v128.load(x2 + i)));
    a3 = f32x4.add(a3, f32x4.mul(v, v128.load(x3 + i)));
  }
  let s = hsum4(a0, a1, a2, a3);
  for (; i < xb; i += 4) {
    s = f32x4.add(s, f32x4.mul(splatW<W>(w + (i >> S)), gather4(x0 + i, x1 + i, x2 + i, x3 + i)));
  }
  storeColumn(o, ldo, s);
}

@inline function matmulFloat<W>(out: usize, x: usize, w: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32, blocked: bool = false): void {
  const wb = <usize>cols * sizeof<W>(); // bytes per weight row
  let r = r0;
  if (T == 1) {
    if (sizeof<W>() == 4) {
      for (; r < r1; r++) store<f32>(out + (<usize>r << 2), seqRow(x, w + <usize>r * wb, cols));
    } else {
      for (; r < r1; r++) store<f32>(out + (<usize>r << 2), seqRowHalf(x, w + <usize>r * wb, cols));
    }
    return;
  }
  if (!blocked) {
    prefillTokens<W>(out, x, w, 0, T, rows, cols, r0, r1);
    return;
  }
  // Token blocks whose x rows fit in half of L1 (16 KB; at least 4 tokens): every row pair of the range streams past
  // the same block of x, which stays in L1, and the range's weight rows are read once per block (from L2). Blocks
  // start at multiples of 4, so each (row, token) takes the same microkernel as unblocked: bit-identical results.
  const tb = max(4, (16384 / (cols << 2)) & ~3);
  for (let t0 = 0; t0 < T; t0 += tb) prefillTokens<W>(out, x, w, t0, min(T, t0 + tb), rows, cols, r0, r1);
}

/** Prefill: tokens [t0, t1) × rows [r0, r1), row pairs outermost (the two weight rows stay in L1 while the tokens stream past). */
@inline function prefillTokens<W>(out: usize, x: usize, w: usize, t0: i32, t1: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  const xb = <usize>cols << 2; //           bytes per x row
  const wb = <usize>cols * sizeof<W>(); // bytes per weight row
  const ldo = <usize>rows << 2; //          bytes per out row
  let r = r0;
  for (; r + 2 <= r1; r += 2) {
    const wr = w + <usize>r * wb;
    let t = t0;
    for (; t + 4 <= t1; t += 4) r2t4<W>(out + <usize>t * ldo + (<usize>r << 2), ldo, x + <usize>t * xb, wr, cols);
    for (; t < t1; t++) {
      const o = out + <usize>t * ldo + (<usize>r << 2);
      const xt = x + <usize>t * xb;
      store<f32>(o, r1t1<W>(xt, wr, cols));
      store<f32>(o + 4, r1t1<W>(xt, wr + wb, cols));
    }
  }
  if (r < r1) {
    const wr = w + <usize>r * wb;
    let t = t0;
    for (; t + 4 <= t1; t += 4) r1t4<W>(out + <usize>t * ldo + (<usize>r << 2), ldo, x + <usize>t * xb, wr, cols);
    for (; t < t1; t++) store<f32>(out + <usize>t * ldo + (<usize>r << 2), r1t1<W>(x + <usize>t * xb, wr, cols));
  }
}

/** f32 weights [rows, cols]; prefill in L1-sized token blocks (measured faster than unblocked: docs/bench.md). */
export function matmul_f32(out: usize, x: usize, w: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulFloat<f32>(out, x, w, T, rows, cols, r0, r1, true);
}

/** matmul_f32 with prefill over all tokens at once (no token blocks), the kernel before: the workbench's f32-flat. */
export function matmul_f32_flat(out: usize, x: usize, w: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulFloat<f32>(out, x, w, T, rows, cols, r0, r1);
}

/** f16 weights [rows, cols] as u16 bit patterns; must be finite (see simd.ts). */
export function matmul_f16(out: usize, x: usize, w: usize, T: i32, rows: i32, cols: i32, r0: i32, r1: i32): void {
  matmulFloat<u16>(out, x, w, T, rows, cols, r0, r1);
}

/**
 * One row of halves · x, read sequentially like seqRow (16 halves per step, four accumulators). Four rows sharing each
 * x vector widen halves with fewer instructions, but four streams per thread read DRAM slower (measured: stories15M f16
 * decode ~325 tok/s that way, ~430-490 this way). Either way f16 decode is bound by the widening arithmetic (wasm has no
 * half-precision conversion): ~4.7 G weights/s per thread here, so it is slower than f32 despite half the bytes.
 */
@inline function seqRowHalf(x: usize, wr: usize, cols: i32): f32 {
  const end16 = <usize>(cols & ~15) << 1; // bytes of halves in whole 16-half steps
  const end8 = <usize>(cols & ~7) << 1;
  const wb = <usize>cols << 1;
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  let i: usize = 0; // byte offset in the row of halves; the matching x offset is i << 1
  for (; i < end16; i += 32) {
    const h0 = v128.load(wr + i), h1 = v128.load(wr + i, 16);
    const xi = x + (i << 1);
    a0 = f32x4.add(a0, f32x4.mul(f16lo(h0), v128.load(xi)));
    a1 = f32x4.add(a1, f32x4.mul(f16hi(h0), v128.load(xi, 16)));
    a2 = f32x4.add(a2, f32x4.mul(f16lo(h1), v128.load(xi, 32)));
    a3 = f32x4.add(a3, f32x4.mul(f16hi(h1), v128.load(xi, 48)));
  }
  for (; i < end8; i += 16) {
    const h = v128.load(wr + i);
    const xi = x + (i << 1);
    a0 = f32x4.add(a0, f32x4.mul(f16lo(h), v128.load(xi)));
    a1 = f32x4.add(a1, f32x4.mul(f16hi(h), v128.load(xi, 16)));
  }
  let s = hsum(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)));
  for (; i < wb; i += 2) s += f16one(load<u16>(wr + i)) * load<f32>(x + (i << 1));
  return s;
}

/**
 * One row · x with four independent f32x4 accumulators over 64-byte steps: the row is one sequential stream.
 * For T = 1 with f32 weights this reads DRAM ~2.3× faster than four interleaved rows (measured on the
 * 37 MB classifier, one thread: 26 vs 11 GB/s), presumably because the hardware prefetcher follows one stream
 * per core much better than four streams 1 KB apart.
 */
@inline function seqRow(x: usize, wr: usize, cols: i32): f32 {
  const wb = <usize>cols << 2;
  const end64 = <usize>(cols & ~15) << 2;
  const end16 = <usize>(cols & ~3) << 2;
  let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
  let i: usize = 0;
  for (; i < end64; i += 64) {
    a0 = f32x4.add(a0, f32x4.mul(v128.load(wr + i), v128.load(x + i)));
    a1 = f32x4.add(a1, f32x4.mul(v128.load(wr + i, 16), v128.load(x + i, 16)));
    a2 = f32x4.add(a2, f32x4.mul(v128.load(wr + i, 32), v128.load(x + i, 32)));
    a3 = f32x4.add(a3, f32x4.mul(v128.load(wr + i, 48), v128.load(x + i, 48)));
  }
  for (; i < end16; i += 16) a0 = f32x4.add(a0, f32x4.mul(v128.load(wr + i), v128.load(x + i)));
  let s = hsum(f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3)));
  for (; i < wb; i += 4) s += load<f32>(wr + i) * load<f32>(x + i);
  return s;
}
