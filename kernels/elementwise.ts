// Small per-token kernels: rmsnorm, rotary embedding, softmax, SwiGLU, residual add, argmax, copy.
// Vector bodies with scalar tails; the tails use the same per-element arithmetic so results do not depend on n % 4.

import { hsum, exp4, exp1 } from './simd';

/** For each of T rows of n: out = x / sqrt(mean(x²) + eps) ⊙ w.  out may alias x. */
export function rmsnorm(out: usize, x: usize, w: usize, T: i32, n: i32, eps: f32): void {
  const rb = <usize>n << 2;
  const end = <usize>(n & ~3) << 2;
  for (let t = 0; t < T; t++) {
    const xr = x + <usize>t * rb, or = out + <usize>t * rb;
    let acc = f32x4.splat(0);
    let i: usize = 0;
    for (; i < end; i += 16) {
      const v = v128.load(xr + i);
      acc = f32x4.add(acc, f32x4.mul(v, v));
    }
    let ss = hsum(acc);
    for (; i < rb; i += 4) ss += load<f32>(xr + i) * load<f32>(xr + i);
    const scale: f32 = <f32>1.0 / sqrt<f32>(ss / <f32>n + eps);
    const sv = f32x4.splat(scale);
    for (i = 0; i < end; i += 16) v128.store(or + i, f32x4.mul(f32x4.mul(v128.load(xr + i), sv), v128.load(w + i)));
    for (; i < rb; i += 4) store<f32>(or + i, load<f32>(xr + i) * scale * load<f32>(w + i));
  }
}

/**
 * Rotary embedding, rotate-half layout (HF), in place. x: [T, nHeads, headDim]. For token t at position p = pos[t]
 * (i32) and j < headDim/2: (x[j], x[j + half]) is rotated by the angle whose cos/sin are cosTab[p·half + j] and
 * sinTab[p·half + j] (tables [maxPos, half], f32, built by the runtime from the inverse frequencies).
 */
export function rope(x: usize, T: i32, nHeads: i32, headDim: i32, cosTab: usize, sinTab: usize, pos: usize): void {
  const half = headDim >> 1;
  const hb = <usize>half << 2;
  const end = <usize>(half & ~3) << 2;
  for (let t = 0; t < T; t++) {
    const p = <usize>load<i32>(pos + (<usize>t << 2));
    const c = cosTab + p * hb, s = sinTab + p * hb;
    for (let h = 0; h < nHeads; h++) {
      const a = x + ((<usize>t * <usize>nHeads + <usize>h) * <usize>headDim << 2), b = a + hb;
      let i: usize = 0;
      for (; i < end; i += 16) {
        const av = v128.load(a + i), bv = v128.load(b + i), cv = v128.load(c + i), sv = v128.load(s + i);
        v128.store(a + i, f32x4.sub(f32x4.mul(av, cv), f32x4.mul(bv, sv)));
        v128.store(b + i, f32x4.add(f32x4.mul(bv, cv), f32x4.mul(av, sv)));
      }
      for (; i < hb; i += 4) {
        const av = load<f32>(a + i), bv = load<f32>(b + i), cv = load<f32>(c + i), sv = load<f32>(s + i);
        store<f32>(a + i, av * cv - bv * sv);
        store<f32>(b + i, bv * cv + av * sv);
      }
    }
  }
}

/** max over n ≥ 1 floats. */
@inline function maxOf(x: usize, n: i32): f32 {
  const xb = <usize>n << 2;
  const end = <usize>(n & ~3) << 2;
  let m = f32x4.splat(-Infinity);
  let i: usize = 0;
  // pmax (one maxps) rather than max (a NaN-propagating sequence): like the reference, NaN never becomes the max.
  for (; i < end; i += 16) m = f32x4.pmax(m, v128.load(x + i));
  m = f32x4.pmax(m, v128.shuffle<f32>(m, m, 2, 3, 0, 1));
  let r = max<f32>(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1));
  for (; i < xb; i += 4) {
    const v = load<f32>(x + i);
    if (v > r) r = v;
  }
  return r;
}

/** x[i] = exp(x[i] - mx), returns Σ. */
@inline export function expShift(x: usize, n: i32, mx: f32): f32 {
  const xb = <usize>n << 2;
  const end = <usize>(n & ~3) << 2;
  const mv = f32x4.splat(mx);
  let acc = f32x4.splat(0);
  let i: usize = 0;
  for (; i < end; i += 16) {
    const e = exp4(f32x4.sub(v128.load(x + i), mv));
    v128.store(x + i, e);
    acc = f32x4.add(acc, e);
  }
  let sum = hsum(acc);
  for (; i < xb; i += 4) {
    const e = exp1(load<f32>(x + i) - mx);
    store<f32>(x + i, e);
    sum += e;
  }
  return sum;
}

/** x[i] *= k */
@inline export function scaleInPlace(x: usize, n: i32, k: f32): void {
  const xb = <usize>n << 2;
  const end = <usize>(n & ~3) << 2;
  const kv = f32x4.splat(k);
  let i: usize = 0;
  for (; i < end; i += 16) v128.store(x + i, f32x4.mul(v128.load(x + i), kv));
  for (; i < xb; i += 4) store<f32>(x + i, load<f32>(x + i) * k);
}

/** In place: x[0..n) = softmax(x[0..n)). Entries of -inf get probability 0 (as long as one entry is finite). */
export function softmax(x: usize, n: i32): void {
  if (n <= 0) return;
  const sum = expShift(x, n, maxOf(x, n));
  scaleInPlace(x, n, <f32>1.0 / sum);
}

/** In place: gate[i] = silu(gate[i]) · up[i],  silu(g) = g / (1 + e^-g). */
export function swiglu(gate: usize, up: usize, n: i32): void {
  const xb = <usize>n << 2;
  const end = <usize>(n & ~3) << 2;
  const one = f32x4.splat(1);
  let i: usize = 0;
  for (; i < end; i += 16) {
    const g = v128.load(gate + i);
    const silu = f32x4.div(g, f32x4.add(one, exp4(f32x4.neg(g))));
    v128.store(gate + i, f32x4.mul(silu, v128.load(up + i)));
  }
  for (; i < xb; i += 4) {
    const g = load<f32>(gate + i);
    store<f32>(gate + i, (g / (<f32>1.0 + exp1(-g))) * load<f32>(up + i));
  }
}

/** x[i] += y[i] (residual connection). */
export function add(x: usize, y: usize, n: i32): void {
  const xb = <usize>n << 2;
  const end = <usize>(n & ~3) << 2;
  let i: usize = 0;
  for (; i < end; i += 16) v128.store(x + i, f32x4.add(v128.load(x + i), v128.load(y + i)));
  for (; i < xb; i += 4) store<f32>(x + i, load<f32>(x + i) + load<f32>(y + i));
}

/**
 * Index of the largest of x[0..n); the first one on ties; 0 when nothing beats -inf. A NaN wins (the first one), as in
 * the engine's sampler and torch.argmax: a NaN logit shows instead of hiding behind a finite one.
 * Passes beat tracking indices in the loop: the max is one maxps per vector, and the searches stop early.
 */
export function argmax(x: usize, n: i32): i32 {
  const nan = firstNaN(x, n);
  if (nan >= 0) return nan;
  const m = maxOf(x, n);
  if (!(m > -Infinity)) return 0;
  const mv = f32x4.splat(m);
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    if (v128.any_true(f32x4.eq(v128.load(x + (<usize>i << 2)), mv))) break;
  }
  for (; i < n; i++) if (load<f32>(x + (<usize>i << 2)) == m) return i;
  return 0; // unreachable: m is one of the elements
}

/** Index of the first NaN in x[0..n), or -1. */
@inline function firstNaN(x: usize, n: i32): i32 {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const v = v128.load(x + (<usize>i << 2));
    if (v128.any_true(f32x4.ne(v, v))) break;
  }
  for (; i < n; i++) {
    const v = load<f32>(x + (<usize>i << 2));
    if (v != v) return i;
  }
  return -1;
}

/** memcpy (e.g. saving the residual stream inside a job list). */
export function copy(dst: usize, src: usize, bytes: i32): void {
  memory.copy(dst, src, <usize>bytes);
}
