/**
 * Sampling on the GPU: each sequence's next token from its logits row, by the rule of src/generate/sample-rule.ts
 * (temperature, top-k, top-p, min-p, then the token where u · Z falls in id order), so that a step reads back 8 bytes
 * per sequence instead of a vocabulary of floats.
 *
 * One workgroup of 128 threads per row; thread t owns the contiguous ids [t·C, (t+1)·C), C = ⌈V / 128⌉, and every
 * sum is taken per thread in id order and then across threads in thread order, so a row's result is deterministic.
 * Nothing sorts the vocabulary: top-k and top-p are radix selects over an order-preserving u32 key of the logit
 * (larger key = larger logit), 4 bits a level, 8 levels, each a histogram of counts (top-k) or of weights w (top-p)
 * over the candidates that match the key prefix so far. The selected key K splits the ranking: every token with a
 * larger key is in, and of the tokens tied at K the first r by id (r from the count or mass still missing).
 *
 * Parameters per row (u32 words at par[parOff + 8·row]): source row of the logits, 1/T (f32 bits; 0 = greedy),
 * topK (0 = off), topP, minP, u (f32 bits). Output per row (tokens[outOff + 2·row]): the token, and a status:
 * 0 ok, 1 a NaN logit, 2 a +Infinity logit, 3 every logit −Infinity (the CPU raises NonFiniteLogitsError).
 * Greedy rows (topK 1 or 1/T = 0) take only the first pass: the first index of the largest logit.
 */
import { NonFiniteLogitsError } from '../../errors.js';
import type { DeviceSample } from '../../generate/sample-rule.js';

export const SAMPLE_THREADS = 128;

export const sampleWgsl = `
struct P { rows: u32, n: u32, inOff: u32, outOff: u32, parOff: u32, _a: u32, _b: u32, _c: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;
@group(0) @binding(3) var<storage, read> par: array<u32>;
const WG = ${SAMPLE_THREADS}u;
const NONE = 0xffffffffu;
/** Per-thread histogram columns: hist[bin · WG + thread]. */
var<workgroup> hist: array<f32, ${16 * SAMPLE_THREADS}>;
var<workgroup> redF: array<f32, ${SAMPLE_THREADS}>;
var<workgroup> redU: array<u32, ${SAMPLE_THREADS}>;
var<workgroup> redI: array<u32, ${SAMPLE_THREADS}>;
var<workgroup> wgU: u32;
var<workgroup> wgU2: u32;
var<workgroup> wgF: f32;
var<workgroup> wgF2: f32;

var<private> lo: u32;
var<private> hi: u32;
var<private> base: u32;
var<private> mx: f32;
var<private> invT: f32;
var<private> aOn: bool;
var<private> aKey: u32;
var<private> aCut: u32;
var<private> bOn: bool;
var<private> bKey: u32;
var<private> bCut: u32;
var<private> minP: f32;

/** Order-preserving key of a logit: larger logit, larger key (−0 is +0). */
fn keyOf(x: f32) -> u32 {
  var b = bitcast<u32>(x);
  if (b == 0x80000000u) { b = 0u; }
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}
fn logitOf(k: u32) -> f32 { return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u)); }
fn wOf(x: f32) -> f32 { return exp((x - mx) * invT); }
fn inA(i: u32, k: u32) -> bool { return !aOn || k > aKey || (k == aKey && i < aCut); }
fn inB(i: u32, k: u32) -> bool { return !bOn || k > bKey || (k == bKey && i < bCut); }

/**
 * Radix select over the candidates (mode 0: every token, counting; mode 1: top-k's set, weighing by w): the key K with
 * S(key > K) < goal ≤ S(key ≥ K). Returns K; S(key > K) in wgF.
 */
fn radixSelect(lid: u32, mode: u32, goal: f32) -> u32 {
  var prefix = 0u;
  var mask = 0u;
  var above = 0.0;
  for (var level = 0u; level < 8u; level++) {
    let shift = 28u - 4u * level;
    for (var b = 0u; b < 16u; b++) { hist[b * WG + lid] = 0.0; }
    for (var i = lo; i < hi; i++) {
      let x = logits[base + i];
      let k = keyOf(x);
      if ((k & mask) != prefix) { continue; }
      if (mode == 1u && !inA(i, k)) { continue; }
      let d = (k >> shift) & 15u;
      hist[d * WG + lid] += select(1.0, wOf(x), mode == 1u);
    }
    workgroupBarrier();
    if (lid < 16u) {
      var s = 0.0;
      for (var j = 0u; j < WG; j++) { s += hist[lid * WG + j]; }
      redF[lid] = s;
    }
    workgroupBarrier();
    if (lid == 0u) {
      var acc = above;
      var chosen = 16u;
      var lowest = 16u;
      var accLowest = above;
      for (var bb = 0u; bb < 16u; bb++) {
        let b = 15u - bb;
        if (redF[b] > 0.0) {
          if (acc + redF[b] >= goal) { chosen = b; break; }
          lowest = b;
          accLowest = acc;
        }
        acc += redF[b];
      }
      // Rounding left the goal above the total: the last non-empty bin.
      if (chosen == 16u) { chosen = lowest; acc = accLowest; }
      wgU = chosen;
      wgF = acc;
    }
    let c = workgroupUniformLoad(&wgU);
    above = wgF;
    prefix |= c << shift;
    mask |= 15u << shift;
  }
  workgroupBarrier();
  if (lid == 0u) { wgF = above; }
  workgroupBarrier();
  return prefix;
}

/** The id cut among the tokens tied at key K (mode as radixSelect): the r-th of them in id order is the last kept. */
fn tieCut(lid: u32, mode: u32, key: u32, r: u32) -> u32 {
  var c = 0u;
  for (var i = lo; i < hi; i++) {
    let k = keyOf(logits[base + i]);
    if (k == key && (mode == 0u || inA(i, k))) { c++; }
  }
  redU[lid] = c;
  workgroupBarrier();
  if (lid == 0u) {
    var acc = 0u;
    var t = 0u;
    for (; t < WG; t++) {
      if (acc + redU[t] >= r) { break; }
      acc += redU[t];
    }
    wgU = t;
    wgU2 = r - acc;
    wgF2 = 0.0;
  }
  let owner = workgroupUniformLoad(&wgU);
  if (owner == WG) { return p.n; }
  if (lid == owner) {
    var need = wgU2;
    for (var i = lo; i < hi; i++) {
      let k = keyOf(logits[base + i]);
      if (k == key && (mode == 0u || inA(i, k))) {
        need--;
        if (need == 0u) { wgU2 = i + 1u; break; }
      }
    }
  }
  workgroupBarrier();
  return workgroupUniformLoad(&wgU2);
}

/** Σ of one value per thread, in thread order. */
fn total(lid: u32, v: f32) -> f32 {
  redF[lid] = v;
  workgroupBarrier();
  if (lid == 0u) {
    var s = 0.0;
    for (var j = 0u; j < WG; j++) { s += redF[j]; }
    wgF = s;
  }
  return workgroupUniformLoad(&wgF);
}

@compute @workgroup_size(${SAMPLE_THREADS}) fn main(@builtin(local_invocation_id) lidv: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let lid = lidv.x;
  let row = wid.x;
  if (row >= p.rows) { return; }
  let pr = p.parOff + 8u * row;
  base = p.inOff + par[pr] * p.n;
  let invTRow = bitcast<f32>(par[pr + 1u]);
  invT = invTRow;
  let topK = par[pr + 2u];
  let topP = bitcast<f32>(par[pr + 3u]);
  minP = bitcast<f32>(par[pr + 4u]);
  let u = bitcast<f32>(par[pr + 5u]);
  let C = (p.n + WG - 1u) / WG;
  lo = min(p.n, lid * C);
  hi = min(p.n, lo + C);

  // Pass 1: the max (and its first index), NaN and +Infinity.
  var m = -3.4e38;
  var at = NONE;
  var bad = 0u;
  var any = false;
  for (var i = lo; i < hi; i++) {
    let bits = bitcast<u32>(logits[base + i]);
    if ((bits & 0x7fffffffu) > 0x7f800000u) { bad = max(bad, 2u); continue; }
    if (bits == 0x7f800000u) { bad = max(bad, 1u); continue; }
    if (bits == 0xff800000u) { continue; }
    let x = bitcast<f32>(bits);
    if (!any || x > m) { m = x; at = i; any = true; }
  }
  redF[lid] = m;
  redU[lid] = bad;
  redI[lid] = at;
  workgroupBarrier();
  if (lid == 0u) {
    var best = -3.4e38;
    var bi = NONE;
    var worst = 0u;
    for (var j = 0u; j < WG; j++) {
      worst = max(worst, redU[j]);
      if (redI[j] != NONE && (bi == NONE || redF[j] > best)) { best = redF[j]; bi = redI[j]; }
    }
    // 2 → NaN (status 1), 1 → +Infinity (status 2), no finite logit → 3.
    wgU = select(select(0u, 3u, bi == NONE), select(2u, 1u, worst == 2u), worst != 0u);
    wgU2 = bi;
    wgF = best;
  }
  let status = workgroupUniformLoad(&wgU);
  let first = wgU2;
  mx = wgF;
  if (status != 0u || topK == 1u || invTRow == 0.0) {
    if (lid == 0u) {
      tokens[p.outOff + 2u * row] = select(first, NONE, status != 0u);
      tokens[p.outOff + 2u * row + 1u] = status;
    }
    return;
  }

  // Top-k: the k-th largest key, then the cut among the tokens tied at it.
  let useK = topK > 0u && topK < p.n;
  aOn = useK;
  if (useK) {
    aKey = radixSelect(lid, 0u, f32(topK));
    let above = wgF;
    aCut = tieCut(lid, 0u, aKey, topK - u32(above));
  }
  // Top-p over top-k's set: the key where the ranked mass reaches topP · Z, then the tied tokens still needed.
  let useP = topP < 1.0;
  bOn = useP;
  if (useP) {
    var z = 0.0;
    for (var i = lo; i < hi; i++) {
      let x = logits[base + i];
      if (inA(i, keyOf(x))) { z += wOf(x); }
    }
    let goal = topP * total(lid, z);
    bKey = radixSelect(lid, 1u, goal);
    let above = wgF;
    let wk = wOf(logitOf(bKey));
    let r = max(1.0, ceil(min((goal - above) / wk, f32(p.n))));
    bCut = tieCut(lid, 1u, bKey, u32(r));
  }

  // The draw: Z over the candidates, then the first id where the cumulative weight passes u · Z.
  var s = 0.0;
  var last = NONE;
  for (var i = lo; i < hi; i++) {
    let x = logits[base + i];
    let k = keyOf(x);
    let w = wOf(x);
    if (inA(i, k) && inB(i, k) && w >= minP) { s += w; if (w > 0.0) { last = i; } }
  }
  redF[lid] = s;
  redI[lid] = last;
  workgroupBarrier();
  if (lid == 0u) {
    var z = 0.0;
    for (var j = 0u; j < WG; j++) { z += redF[j]; }
    let goal = u * z;
    var acc = 0.0;
    var owner = NONE;
    var lastOwner = 0u;
    for (var j = 0u; j < WG; j++) {
      if (redF[j] > 0.0) { lastOwner = j; }
      if (owner == NONE && redF[j] > 0.0 && acc + redF[j] > goal) { owner = j; wgF = acc; wgF2 = goal; }
      if (owner == NONE) { acc += redF[j]; }
    }
    // Rounding put u · Z past the total: the last candidate.
    if (owner == NONE) { owner = lastOwner; wgF = 0.0; wgF2 = 3.4e38; }
    wgU = owner;
  }
  let owner = workgroupUniformLoad(&wgU);
  if (lid == owner) {
    var acc = wgF;
    let goal = wgF2;
    var tok = last;
    for (var i = lo; i < hi; i++) {
      let x = logits[base + i];
      let k = keyOf(x);
      let w = wOf(x);
      if (inA(i, k) && inB(i, k) && w >= minP && w > 0.0) {
        acc += w;
        if (acc > goal) { tok = i; break; }
      }
    }
    tokens[p.outOff + 2u * row] = tok;
    tokens[p.outOff + 2u * row + 1u] = 0u;
  }
}`;

const f32Bits = new Float32Array(1);
const u32Bits = new Uint32Array(f32Bits.buffer);
function bits(v: number): number {
  f32Bits[0] = v;
  return u32Bits[0];
}

/** The kernel's 8 parameter words of one row: its logits row and the sampling rule's parameters. */
export function sampleParams(srcRow: number, s: DeviceSample): number[] {
  return [srcRow, bits(s.invTemperature), s.topK, bits(s.topP), bits(s.minP), bits(s.uniform), 0, 0];
}

/** The status word of a row → the error the CPU sampler raises for the same logits. */
export function sampleStatusError(status: number): NonFiniteLogitsError {
  const what = status === 1 ? 'a logit is NaN' : status === 2 ? 'a logit is +Infinity' : 'every logit is −Infinity';
  return new NonFiniteLogitsError(`cannot sample the next token: ${what} (a numerical failure of the model or of the penalties)`);
}
