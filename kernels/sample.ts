// Sampling's pass over the whole vocabulary (src/generate/sampler.ts, through src/backend/wasm/sampling.ts).
//
// A sampled token needs every token's weight w = e^((x − max)/T) only for their sum: with 32,000 logits almost all
// of them sit so far below the maximum that they can never be drawn or kept, yet in JS one exp per token cost more
// than a q8_0 forward pass's third. So the vocabulary is split in one SIMD pass:
//   near: y = (x − max)/T ≥ −cut   → their ids go to ids[0..count), in id order, weighed exactly as the sampler's JS
//         does (f64, the same table-driven exp, bit for bit): w[id], their sum, and (hist) the histogram of their
//         mass over t = 64·(max − x)/T in 1/64-nat buckets;
//   far:  the rest                 → only their mass is summed (exp4: ~1 ulp in f32, summed in f64), and kept as
//         gaps[j] = the far mass between near token j − 1 and near token j (id order), tail = the far mass after the
//         last near token: so the sampler can walk the cumulative distribution in id order exactly as over all tokens.
// With cut = 16 nats a far weight is < 1.2e-7 of the maximum's, so all of them together are < 4e-3 of the total for a
// 32,000-token vocabulary (typically ~1e-4), and their f32 rounding (~1 ulp each, of either sign) moves the total by
// < 2.5e-10 of itself at worst, ~1e-12 typically.
//
// Not every caller needs the far mass exactly (`far`): min-p alone never uses it, and top-p only through the nucleus's
// target p·(near + far), which decides the kept set only when it lies close to a step of the cumulative mass; the
// sampler asks for an upper bound first (FAR_BOUND, a fifth of the exact pass's work per token) and for the exact
// mass only when the kept set differs between the bound's two ends (src/generate/sampler.ts filterNear).
//
// Returns the near count, -1 when a logit is NaN or the maximum is not finite (the caller's exact path reports it), or
// -2 as soon as more than maxNear tokens are near (a flat distribution: the caller's JS pass over all tokens is faster).
// out: f64 tail at +0, f64 near sum at +8, f32 max at +16; +32..48 is scratch.
// The arithmetic of everything the sampler compares or sums in f64 (t, w, the sums, the histogram) is the JS
// sampler's, operation for operation, so the near path keeps and draws exactly the tokens the whole-vocabulary path
// does (src/generate/sampler.ts expNeg64, filter, nucleus, draw).

import { exp1 } from './simd';

/** Histogram buckets (1/64 nat each; the last collects everything 32 nats or more below the maximum). */
const S: f64 = 64;
const NB: i32 = 32 * 64 + 1;
const LAST: i32 = NB - 1;
const T_UNDERFLOW: f64 = 745 * 64;

/** e^(−t/64), the sampler's expNeg64: tables at tab (f64 e^−k for k < 746, then e^(−j/64) for j < 64). */
@inline function expNeg64(t: f64, tab: usize): f64 {
  if (!(t < T_UNDERFLOW)) return 0;
  const i = <i32>t;
  const r = (t - <f64>i) * (1 / S);
  const p = 1 - r * (1 - r * (0.5 - r * (1.0 / 6.0 - r * (1.0 / 24.0 - r * (1.0 / 120.0)))));
  return load<f64>(tab + (<usize>(i >> 6) << 3)) * load<f64>(tab + 746 * 8 + (<usize>(i & 63) << 3)) * p;
}

/**
 * exp4 for the far lanes (y < −cut ≤ 0), same arithmetic as simd.ts exp4 (so exp1 gives the scalar lanes' value)
 * but reading its constants from memory at c (FAR_CONSTANTS, written by JS): V8 rebuilds every v128.const inside a
 * loop with several instructions, a load folds into the arithmetic (measured: the whole split ~2× faster).
 */
@inline function farExp4(x: v128, c: usize): v128 {
  const tiny = f32x4.lt(x, v128.load(c));
  x = f32x4.pmax(x, v128.load(c));
  const t = f32x4.add(f32x4.mul(x, v128.load(c, 16)), v128.load(c, 32));
  const n = f32x4.sub(t, v128.load(c, 32));
  let r = f32x4.sub(x, f32x4.mul(n, v128.load(c, 48)));
  r = f32x4.sub(r, f32x4.mul(n, v128.load(c, 64)));
  let p = v128.load(c, 80);
  p = f32x4.add(f32x4.mul(p, r), v128.load(c, 96));
  p = f32x4.add(f32x4.mul(p, r), v128.load(c, 112));
  p = f32x4.add(f32x4.mul(p, r), v128.load(c, 128));
  p = f32x4.add(f32x4.mul(p, r), v128.load(c, 144));
  p = f32x4.add(f32x4.mul(p, r), v128.load(c, 160));
  p = f32x4.add(f32x4.add(f32x4.mul(p, f32x4.mul(r, r)), r), v128.load(c, 176));
  const pow2n = i32x4.add(i32x4.shl(t, 23), v128.load(c, 192));
  return v128.andnot(f32x4.mul(p, pow2n), tiny);
}

/** What sample_split computes of the far tokens' mass (its `far` argument). */
const FAR_EXACT: i32 = 1; // every far weight (farExp4), summed in f64 into the gaps between near tokens and the tail
const FAR_BOUND: i32 = 2; // only an upper bound of their total (in tail; gaps are 0), ~6 instructions a group, not ~30
const FAR_NONE: i32 = 0; //  nothing (tail and gaps 0): for callers that never use it (min-p alone)

/**
 * An upper bound of farExp4(y) per lane, ≤ 2× it: 2^ceil(y·log2 e) through the exponent bits (exp4's shifter trick).
 * y is first raised to exp4's floor (−87.34, where 2^−126 is still normal), which only raises the bound. Where the f32
 * product y·log2 e rounds down onto an integer, the bound can fall short of e^y by ~1e-7 of it: sample_split's final
 * factor covers that.
 */
@inline function farBound4(y: v128, c: usize): v128 {
  const u = f32x4.ceil(f32x4.mul(f32x4.pmax(y, v128.load(c)), v128.load(c, 16)));
  return i32x4.add(i32x4.shl(f32x4.add(u, v128.load(c, 32)), 23), v128.load(c, 192));
}

/** Bucket of t (t ≥ 0). */
@inline function bucket(t: f64): i32 {
  return t < <f64>LAST ? <i32>t : LAST;
}

/** far: FAR_EXACT, FAR_BOUND or FAR_NONE (what the caller needs of the far tokens' mass; see the file's head). */
export function sample_split(x: usize, n: i32, invT: f32, cut: f32, maxNear: i32, sP: f64, hist: i32, far: i32, ids: usize, gaps: usize,
  w: usize, mass: usize, tab: usize, out: usize): i32 {
  const end = <usize>(n & ~3) << 2;
  const xb = <usize>n << 2;
  // The maximum by pmax (one maxps; f32x4.max is a long NaN-propagating sequence in V8: this pass took ~2× as long),
  // with NaNs caught by their own test; scalar f32.max propagates them for the last few.
  let mv = f32x4.splat(-Infinity);
  let bad = v128.splat<i32>(0);
  let i: usize = 0;
  for (; i < end; i += 16) {
    const v = v128.load(x + i);
    mv = f32x4.pmax(mv, v);
    bad = v128.or(bad, f32x4.ne(v, v));
  }
  if (v128.any_true(bad)) return -1;
  mv = f32x4.pmax(mv, v128.shuffle<f32>(mv, mv, 2, 3, 0, 1));
  let m = max<f32>(f32x4.extract_lane(mv, 0), f32x4.extract_lane(mv, 1));
  for (; i < xb; i += 4) m = max<f32>(m, load<f32>(x + i));
  if (!(m > -Infinity && m < Infinity)) return -1; // also false for NaN
  if (m == 0) {
    // pmax keeps whichever zero came first; the maximum of −0 and +0 is +0 (as f32x4.max and Math.max have it).
    m = -0.0;
    for (let k: usize = 0; k < xb; k += 4) {
      if (load<i32>(x + k) == 0) {
        m = 0;
        break;
      }
    }
  }
  if (hist) memory.fill(mass, 0, <usize>NB << 3);

  const ms = f32x4.splat(m), it = f32x4.splat(invT), lim = f32x4.splat(-cut);
  const md = <f64>m;
  let ga = f64x2.splat(0), gb = ga; // far mass since the last near token, by lane pairs
  let gs: f64 = 0; //                  … and from scalar lanes
  let fb = f32x4.splat(0); //          FAR_BOUND: the bound's sum, by lane
  let near: f64 = 0;
  let count = 0;
  const c = tab + 810 * 8; // farExp4's constants
  for (i = 0; i < xb; i += 16) {
    // Runs of all-far groups of four (nearly every group) in a tight loop per mode, not one loop testing the mode in
    // every group (measured on stories15M's logits: the split without far-mass work 62 → 46 µs, docs/bench.md).
    if (far == FAR_EXACT) {
      for (; i < end; i += 16) {
        const y = f32x4.mul(f32x4.sub(v128.load(x + i), ms), it);
        if (v128.any_true(f32x4.ge(y, lim))) break;
        const e = farExp4(y, c);
        ga = f64x2.add(ga, f64x2.promote_low_f32x4(e));
        gb = f64x2.add(gb, f64x2.promote_low_f32x4(v128.shuffle<f32>(e, e, 2, 3, 0, 1)));
      }
    } else if (far == FAR_BOUND) {
      for (; i < end; i += 16) {
        const y = f32x4.mul(f32x4.sub(v128.load(x + i), ms), it);
        if (v128.any_true(f32x4.ge(y, lim))) break;
        fb = f32x4.add(fb, farBound4(y, c));
      }
    } else {
      for (; i < end; i += 16) {
        if (v128.any_true(f32x4.ge(f32x4.mul(f32x4.sub(v128.load(x + i), ms), it), lim))) break;
      }
    }
    if (i >= xb) break;
    const lanes = min<usize>(16, xb - i);
    if (lanes == 16) {
      v128.store(out + 32, farExp4(f32x4.mul(f32x4.sub(v128.load(x + i), ms), it), c)); // far lanes' weights, by lane
    } else {
      // the last few tokens: exp1 is exactly exp4's lane arithmetic
      for (let k: usize = 0; k < lanes; k += 4) store<f32>(out + 32 + k, exp1((load<f32>(x + i + k) - m) * invT));
    }
    // A group with a near token, or the last few: lane by lane, in id order.
    for (let k: usize = 0; k < lanes; k += 4) {
      const xv = load<f32>(x + i + k);
      if ((xv - m) * invT < -cut) {
        if (far != FAR_NONE) gs += <f64>load<f32>(out + 32 + k); // exact, so also within the bound
        continue;
      }
      const id = <i32>((i + k) >> 2);
      store<i32>(ids + (<usize>count << 2), id);
      if (far == FAR_EXACT) {
        store<f64>(gaps + (<usize>count << 3), f64x2.extract_lane(ga, 0) + f64x2.extract_lane(ga, 1) + f64x2.extract_lane(gb, 0) + f64x2.extract_lane(gb, 1) + gs);
        ga = f64x2.splat(0);
        gb = ga;
        gs = 0;
      } else {
        store<f64>(gaps + (<usize>count << 3), 0);
      }
      if (++count > maxNear) return -2;
      const t = (md - <f64>xv) * sP;
      const wi = expNeg64(t, tab);
      store<f64>(w + (<usize>id << 3), wi);
      near += wi;
      if (hist) {
        const p = mass + (<usize>bucket(t) << 3);
        store<f64>(p, load<f64>(p) + wi);
      }
    }
  }
  if (far == FAR_EXACT) store<f64>(out, f64x2.extract_lane(ga, 0) + f64x2.extract_lane(ga, 1) + f64x2.extract_lane(gb, 0) + f64x2.extract_lane(gb, 1) + gs);
  else if (far == FAR_BOUND) {
    // f32 sums of ≤ 8,000 terms per lane are within 8000·2^-24 < 5e-4 of exact: 1.002 keeps the result an upper bound;
    // gs sums the same f32 weights as FAR_EXACT's gaps, in another grouping: 1 + 1e-12 covers that f64 rounding.
    const b = <f64>f32x4.extract_lane(fb, 0) + <f64>f32x4.extract_lane(fb, 1) + <f64>f32x4.extract_lane(fb, 2) + <f64>f32x4.extract_lane(fb, 3);
    store<f64>(out, (b * 1.002 + gs) * (1 + 1e-12));
  } else store<f64>(out, 0);
  store<f64>(out + 8, near);
  store<f32>(out + 16, m);
  return count;
}

/**
 * The nucleus split of the near tokens (the sampler's nucleus(), histogram path): ids whose bucket is below B go to
 * keep[0..r) in id order, those in bucket B to edge[0..e). Returns r; e goes to out + 24.
 */
export function sample_partition(x: usize, ids: usize, n: i32, m: f32, sP: f64, B: i32, keep: usize, edge: usize, out: usize): i32 {
  const md = <f64>m;
  let r = 0, e = 0;
  for (let j = 0; j < n; j++) {
    const id = load<i32>(ids + (<usize>j << 2));
    const b = bucket((md - <f64>load<f32>(x + (<usize>id << 2))) * sP);
    if (b < B) {
      store<i32>(keep + (<usize>r << 2), id);
      r++;
    } else if (b == B) {
      store<i32>(edge + (<usize>e << 2), id);
      e++;
    }
  }
  store<i32>(out + 24, e);
  return r;
}

/**
 * The sampler's draw over the whole vocabulary, walked through a split: the first near id at which the cumulative
 * mass (far gaps included, in id order) exceeds target, or -1 when target falls in far mass.
 */
export function sample_walk(ids: usize, gaps: usize, w: usize, n: i32, target: f64): i32 {
  let acc: f64 = 0;
  for (let j = 0; j < n; j++) {
    acc += load<f64>(gaps + (<usize>j << 3));
    if (target < acc) return -1;
    const id = load<i32>(ids + (<usize>j << 2));
    acc += load<f64>(w + (<usize>id << 3));
    if (target < acc) return id;
  }
  return -1;
}
