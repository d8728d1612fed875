// Attention of one query head over a paged KV store.
//
// Page layout (mirrored by src/backend/wasm/layout.ts): the KV pool is an array of equal pages starting at `pool`;
// page i starts at pool + i·pageBytes, pageBytes = 2·pageTokens·headDim·4, and holds one (layer, kv-head)'s slots:
//   K: f32 [pageTokens][headDim]   at page + 0
//   V: f32 [pageTokens][headDim]   at page + pageTokens·headDim·4
// A head's slots s = 0..nSlots-1 live in page pageTable[s / pageTokens] (i32 page indices), row s % pageTokens.
// Slots need not be in position order (eviction compacts or reuses them); positions[s] (i32) is the token position
// stored in slot s, used for the causal limit only.

import { hsum, hsum4, gather4, exp4, exp1 } from './simd';

/**
 * scores[s] = scale · q·K[s]; slots with positions[s] > queryPos are masked (when positions ≠ 0);
 * probs = softmax(scores) over the unmasked slots (masked ones get exactly 0); out = Σ_s probs[s]·V[s].
 * If no slot is unmasked, probs and out are all zero. When accum ≠ 0, accum[s] += probs[s] (attention mass
 * bookkeeping for eviction policies). probs must hold nSlots floats; out and q hold headDim.
 */
export function attention(out: usize, probs: usize, q: usize, pool: usize, pageTable: usize, nSlots: i32,
  pageTokens: i32, headDim: i32, scale: f32, positions: usize, queryPos: i32, accum: usize): void {
  const rowB = <usize>headDim << 2;
  const vOff = <usize>pageTokens * rowB;
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
      const k0 = k + <usize>j * rowB, k1 = k0 + rowB, k2 = k1 + rowB, k3 = k2 + rowB;
      let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
      let i: usize = 0;
      for (; i < end; i += 16) {
        const qv = v128.load(q + i);
        a0 = f32x4.add(a0, f32x4.mul(v128.load(k0 + i), qv));
        a1 = f32x4.add(a1, f32x4.mul(v128.load(k1 + i), qv));
        a2 = f32x4.add(a2, f32x4.mul(v128.load(k2 + i), qv));
        a3 = f32x4.add(a3, f32x4.mul(v128.load(k3 + i), qv));
      }
      let d = hsum4(a0, a1, a2, a3);
      for (; i < rowB; i += 4) {
        d = f32x4.add(d, f32x4.mul(gather4(k0 + i, k1 + i, k2 + i, k3 + i), v128.load32_splat(q + i)));
      }
      v128.store(pr + (<usize>j << 2), f32x4.mul(d, sv));
    }
    for (; j < cnt; j++) {
      const kr = k + <usize>j * rowB;
      let a = f32x4.splat(0);
      let i: usize = 0;
      for (; i < end; i += 16) a = f32x4.add(a, f32x4.mul(v128.load(kr + i), v128.load(q + i)));
      let d = hsum(a);
      for (; i < rowB; i += 4) d += load<f32>(kr + i) * load<f32>(q + i);
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
  const mv = f32x4.splat(mx);
  let accv = f32x4.splat(0);
  let i: usize = 0;
  for (; i + 16 <= nb; i += 16) {
    const e = exp4(f32x4.sub(v128.load(probs + i), mv));
    v128.store(probs + i, e);
    accv = f32x4.add(accv, e);
  }
  let sum = hsum(accv);
  for (; i < nb; i += 4) {
    const e = exp1(load<f32>(probs + i) - mx);
    store<f32>(probs + i, e);
    sum += e;
  }
  const inv: f32 = <f32>1.0 / sum;
  const iv = f32x4.splat(inv);
  for (i = 0; i + 16 <= nb; i += 16) v128.store(probs + i, f32x4.mul(v128.load(probs + i), iv));
  for (; i < nb; i += 4) store<f32>(probs + i, load<f32>(probs + i) * inv);
  if (accum != 0) {
    for (i = 0; i + 16 <= nb; i += 16) v128.store(accum + i, f32x4.add(v128.load(accum + i), v128.load(probs + i)));
    for (; i < nb; i += 4) store<f32>(accum + i, load<f32>(accum + i) + load<f32>(probs + i));
  }

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
      const v0 = v + <usize>j * rowB, v1 = v0 + rowB, v2 = v1 + rowB, v3 = v2 + rowB;
      let d: usize = 0;
      for (; d < end; d += 16) {
        let o = f32x4.add(v128.load(out + d), f32x4.mul(p0, v128.load(v0 + d)));
        o = f32x4.add(o, f32x4.mul(p1, v128.load(v1 + d)));
        o = f32x4.add(o, f32x4.mul(p2, v128.load(v2 + d)));
        v128.store(out + d, f32x4.add(o, f32x4.mul(p3, v128.load(v3 + d))));
      }
      for (; d < rowB; d += 4) {
        let o = load<f32>(out + d) + f32x4.extract_lane(p0, 0) * load<f32>(v0 + d);
        o += f32x4.extract_lane(p1, 0) * load<f32>(v1 + d);
        o += f32x4.extract_lane(p2, 0) * load<f32>(v2 + d);
        store<f32>(out + d, o + f32x4.extract_lane(p3, 0) * load<f32>(v3 + d));
      }
    }
    for (; j < cnt; j++) {
      const p = load<f32>(pr + (<usize>j << 2));
      if (p == 0) continue;
      const pv = f32x4.splat(p);
      const vr = v + <usize>j * rowB;
      let d: usize = 0;
      for (; d < end; d += 16) v128.store(out + d, f32x4.add(v128.load(out + d), f32x4.mul(pv, v128.load(vr + d))));
      for (; d < rowB; d += 4) store<f32>(out + d, load<f32>(out + d) + p * load<f32>(vr + d));
    }
  }
}

/** Write one token's key and value vectors (headDim floats each) into slot `slot` of a head's pages. */
export function kv_write(pool: usize, pageTable: usize, slot: i32, k: usize, v: usize, pageTokens: i32, headDim: i32): void {
  const rowB = <usize>headDim << 2;
  const vOff = <usize>pageTokens * rowB;
  const page = pool + <usize>load<i32>(pageTable + (<usize>(slot / pageTokens) << 2)) * (vOff << 1);
  const row = <usize>(slot % pageTokens) * rowB;
  memory.copy(page + row, k, rowB);
  memory.copy(page + vOff + row, v, rowB);
}
