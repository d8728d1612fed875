// Attention of one query head over a paged KV store.
//
// Page layout (mirrored by src/backend/wasm/layout.ts): the KV pool is an array of equal pages starting at `pool`;
// page i starts at pool + i·pageBytes, pageBytes = 2·pageTokens·headDim·E (E = 4 for an f32 cache, 2 for f16), and
// holds one (layer, kv-head)'s slots:
//   K: [pageTokens][headDim]   at page + 0
//   V: [pageTokens][headDim]   at page + pageTokens·headDim·E
// An f16 cache stores IEEE halves (finite: the cache writes them with round-to-nearest-even and no overflow to ∞ is
// expected of keys and values); they are widened exactly to f32 on load, so the arithmetic is that of an f32 cache
// holding the rounded values.
// A head's slots s = 0..nSlots-1 live in page pageTable[s / pageTokens] (i32 page indices), row s % pageTokens.
// Slots need not be in position order (eviction compacts or reuses them); positions[s] (i32) is the token position
// stored in slot s, used for the causal limit only.

import { hsum, hsum4, F16_MASK, f16_scale, f16one } from './simd';
import { expShift, scaleInPlace } from './elementwise';
import { toHalf } from './f16';

/** Four consecutive K/V elements at p as f32x4 (E = f32 or u16 = IEEE half). */
@inline function load4<E>(p: usize): v128 {
  if (sizeof<E>() == 2) return f32x4.mul(v128.and(i32x4.shl(v128.load16x4_s(p), 13), i32x4.splat(F16_MASK)), f16_scale());
  return v128.load(p);
}

@inline function load1<E>(p: usize): f32 {
  if (sizeof<E>() == 2) return f16one(load<u16>(p));
  return load<f32>(p);
}

/** Element i of four rows as one f32x4 (the tail of a dot product when headDim % 4 ≠ 0). */
@inline function gather4e<E>(p0: usize, p1: usize, p2: usize, p3: usize): v128 {
  let v = f32x4.splat(load1<E>(p0));
  v = f32x4.replace_lane(v, 1, load1<E>(p1));
  v = f32x4.replace_lane(v, 2, load1<E>(p2));
  return f32x4.replace_lane(v, 3, load1<E>(p3));
}

/**
 * scores[s] = scale · q·K[s]; slots with positions[s] > queryPos are masked (when positions ≠ 0);
 * probs = softmax(scores) over the unmasked slots (masked ones get exactly 0); out = Σ_s probs[s]·V[s].
 * If no slot is unmasked, probs and out are all zero. When accum ≠ 0, accum[s] += probs[s] (attention mass
 * bookkeeping for eviction policies and FastGen's column sums); when band ≠ 0, also band[s] += probs[s] for
 * s ∈ [bandFrom, nSlots) (FastGen's band sums: the slots within the local window of this row). kvHalf ≠ 0: the
 * pages hold halves. probs must hold nSlots floats; out and q hold headDim.
 */
export function attention(out: usize, probs: usize, q: usize, pool: usize, pageTable: usize, nSlots: i32,
  pageTokens: i32, headDim: i32, scale: f32, positions: usize, queryPos: i32, accum: usize,
  band: usize, bandFrom: i32, kvHalf: i32): void {
  if (kvHalf != 0) attentionOf<u16>(out, probs, q, pool, pageTable, nSlots, pageTokens, headDim, scale, positions, queryPos, accum, band, bandFrom);
  else attentionOf<f32>(out, probs, q, pool, pageTable, nSlots, pageTokens, headDim, scale, positions, queryPos, accum, band, bandFrom);
}

@inline function attentionOf<E>(out: usize, probs: usize, q: usize, pool: usize, pageTable: usize, nSlots: i32,
  pageTokens: i32, headDim: i32, scale: f32, positions: usize, queryPos: i32, accum: usize, band: usize, bandFrom: i32): void {
  const S: usize = sizeof<E>() == 2 ? 1 : 0; // byte offset of element i in a K/V row = (i·4) >> S
  const rowB = <usize>headDim << 2; //         bytes of an f32 row (q, out)
  const kRowB = rowB >> S; //                  bytes of a K/V row
  const vOff = <usize>pageTokens * kRowB;
  const pageB = vOff << 1;
  const end = <usize>(headDim & ~3) << 2;
  const sv = f32x4.splat(scale);

  // 1. Scores, four slots (consecutive rows of one page) at a time.
  for (let s0 = 0, pi: usize = 0; s0 < nSlots; s0 += pageTokens, pi++) {
    const k = pool + <usize>load<i32>(pageTable + (pi << 2)) * pageB;
    const cnt = min(pageTokens, nSlots - s0);
    const pr = probs + (<usize>s0 << 2);
    let j = 0;
    for (; j + 4 <= cnt; j += 4) {
      const k0 = k + <usize>j * kRowB, k1 = k0 + kRowB, k2 = k1 + kRowB, k3 = k2 + kRowB;
      let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
      let i: usize = 0;
      for (; i < end; i += 16) {
        const qv = v128.load(q + i);
        const e = i >> S;
        a0 = f32x4.add(a0, f32x4.mul(load4<E>(k0 + e), qv));
        a1 = f32x4.add(a1, f32x4.mul(load4<E>(k1 + e), qv));
        a2 = f32x4.add(a2, f32x4.mul(load4<E>(k2 + e), qv));
        a3 = f32x4.add(a3, f32x4.mul(load4<E>(k3 + e), qv));
      }
      let d = hsum4(a0, a1, a2, a3);
      for (; i < rowB; i += 4) {
        const e = i >> S;
        d = f32x4.add(d, f32x4.mul(gather4e<E>(k0 + e, k1 + e, k2 + e, k3 + e), v128.load32_splat(q + i)));
      }
      v128.store(pr + (<usize>j << 2), f32x4.mul(d, sv));
    }
    for (; j < cnt; j++) {
      const kr = k + <usize>j * kRowB;
      let a = f32x4.splat(0);
      let i: usize = 0;
      for (; i < end; i += 16) a = f32x4.add(a, f32x4.mul(load4<E>(kr + (i >> S)), v128.load(q + i)));
      let d = hsum(a);
      for (; i < rowB; i += 4) d += load1<E>(kr + (i >> S)) * load<f32>(q + i);
      store<f32>(pr + (<usize>j << 2), d * scale);
    }
  }

  // 2. Causal limit, then max over the unmasked scores.
  let mx: f32 = -Infinity;
  for (let s = 0; s < nSlots; s++) {
    const p = probs + (<usize>s << 2);
    if (positions != 0 && load<i32>(positions + (<usize>s << 2)) > queryPos) store<f32>(p, -Infinity);
    else mx = max<f32>(mx, load<f32>(p));
  }
  memory.fill(out, 0, rowB);
  if (mx == -Infinity) { // nothing to attend to (or all scores -inf)
    memory.fill(probs, 0, <usize>nSlots << 2);
    return;
  }

  // 3. Softmax in place (exp(-inf - mx) = 0 for masked slots).
  const nb = <usize>nSlots << 2;
  scaleInPlace(probs, nSlots, <f32>1.0 / expShift(probs, nSlots, mx));
  if (accum != 0) addTo(accum, probs, 0, nb);
  if (band != 0 && bandFrom < nSlots) addTo(band, probs, <usize>max(0, bandFrom) << 2, nb);

  // 4. out = Σ p·V: four slots per pass over out (one load/store of out per four rows of V); groups whose
  // probabilities are all 0 (masked or underflowed) are skipped.
  for (let s0 = 0, pi: usize = 0; s0 < nSlots; s0 += pageTokens, pi++) {
    const v = pool + <usize>load<i32>(pageTable + (pi << 2)) * pageB + vOff;
    const cnt = min(pageTokens, nSlots - s0);
    const pr = probs + (<usize>s0 << 2);
    let j = 0;
    for (; j + 4 <= cnt; j += 4) {
      const p4 = v128.load(pr + (<usize>j << 2));
      if (!v128.any_true(p4)) continue;
      const p0 = f32x4.splat(f32x4.extract_lane(p4, 0)), p1 = f32x4.splat(f32x4.extract_lane(p4, 1));
      const p2 = f32x4.splat(f32x4.extract_lane(p4, 2)), p3 = f32x4.splat(f32x4.extract_lane(p4, 3));
      const v0 = v + <usize>j * kRowB, v1 = v0 + kRowB, v2 = v1 + kRowB, v3 = v2 + kRowB;
      let d: usize = 0;
      for (; d < end; d += 16) {
        const e = d >> S;
        let o = f32x4.add(v128.load(out + d), f32x4.mul(p0, load4<E>(v0 + e)));
        o = f32x4.add(o, f32x4.mul(p1, load4<E>(v1 + e)));
        o = f32x4.add(o, f32x4.mul(p2, load4<E>(v2 + e)));
        v128.store(out + d, f32x4.add(o, f32x4.mul(p3, load4<E>(v3 + e))));
      }
      for (; d < rowB; d += 4) {
        const e = d >> S;
        let o = load<f32>(out + d) + f32x4.extract_lane(p0, 0) * load1<E>(v0 + e);
        o += f32x4.extract_lane(p1, 0) * load1<E>(v1 + e);
        o += f32x4.extract_lane(p2, 0) * load1<E>(v2 + e);
        store<f32>(out + d, o + f32x4.extract_lane(p3, 0) * load1<E>(v3 + e));
      }
    }
    for (; j < cnt; j++) {
      const p = load<f32>(pr + (<usize>j << 2));
      if (p == 0) continue;
      const pv = f32x4.splat(p);
      const vr = v + <usize>j * kRowB;
      let d: usize = 0;
      for (; d < end; d += 16) v128.store(out + d, f32x4.add(v128.load(out + d), f32x4.mul(pv, load4<E>(vr + (d >> S)))));
      for (; d < rowB; d += 4) store<f32>(out + d, load<f32>(out + d) + p * load1<E>(vr + (d >> S)));
    }
  }
}

/** dst[i] += src[i] for the byte range [from, to) of both (multiples of 4). */
@inline function addTo(dst: usize, src: usize, from: usize, to: usize): void {
  let i = from;
  for (; i + 16 <= to; i += 16) v128.store(dst + i, f32x4.add(v128.load(dst + i), v128.load(src + i)));
  for (; i < to; i += 4) store<f32>(dst + i, load<f32>(dst + i) + load<f32>(src + i));
}

/**
 * Attention of `rows` consecutive query rows of one head, as the prompt or a decode step appends them: row j (query
 * and output at q + j·rowStride, out + j·rowStride) sees the slot prefix [0, firstSlots + j + 1), i.e. every older
 * slot and the new ones up to its own. With band ≠ 0, row j adds its probabilities of the last w_k + 1 of those slots
 * to band + k·stride for each band k (FastGen's band sums), as bands = [K, stride bytes, w_0 … w_{K−1}] (i32) says.
 * The other arguments are those of attention(); probs is this thread's scratch.
 */
export function attention_rows(out: usize, probs: usize, q: usize, rowStride: usize, rows: i32, firstSlots: i32,
  pool: usize, pageTable: usize, pageTokens: i32, headDim: i32, scale: f32, accum: usize, band: usize, bands: usize,
  kvHalf: i32): void {
  const K = band != 0 ? load<i32>(bands) : 0;
  const stride = band != 0 ? <usize>load<i32>(bands + 4) : 0;
  for (let j = 0; j < rows; j++) {
    const nSlots = firstSlots + j + 1;
    const o = <usize>j * rowStride;
    attention(out + o, probs, q + o, pool, pageTable, nSlots, pageTokens, headDim, scale, 0, 0, accum, 0, 0, kvHalf);
    const nb = <usize>nSlots << 2;
    for (let k = 0; k < K; k++) {
      const from = max(0, nSlots - 1 - load<i32>(bands + 8 + (<usize>k << 2)));
      addTo(band + <usize>k * stride, probs, <usize>from << 2, nb);
    }
  }
}

/**
 * Write `rows` tokens' key and value vectors (headDim floats each; token j's at k + j·rowStride, v + j·rowStride)
 * into slots slot, slot + 1, … of a head's pages; kvHalf ≠ 0: as halves (round to nearest even, like the JS cache).
 */
export function kv_write(pool: usize, pageTable: usize, slot: i32, k: usize, v: usize, pageTokens: i32, headDim: i32,
  rows: i32, rowStride: usize, kvHalf: i32): void {
  const E: usize = kvHalf != 0 ? 2 : 4;
  const rowB = <usize>headDim * E;
  const vOff = <usize>pageTokens * rowB;
  for (let j = 0; j < rows; j++) {
    const s = slot + j;
    const page = pool + <usize>load<i32>(pageTable + (<usize>(s / pageTokens) << 2)) * (vOff << 1);
    const dst = page + <usize>(s % pageTokens) * rowB;
    const ks = k + <usize>j * rowStride, vs = v + <usize>j * rowStride;
    if (kvHalf != 0) {
      for (let i = 0; i < headDim; i++) {
        store<u16>(dst + (<usize>i << 1), toHalf(load<f32>(ks + (<usize>i << 2))));
        store<u16>(dst + vOff + (<usize>i << 1), toHalf(load<f32>(vs + (<usize>i << 2))));
      }
    } else {
      memory.copy(dst, ks, rowB);
      memory.copy(dst + vOff, vs, rowB);
    }
  }
}
