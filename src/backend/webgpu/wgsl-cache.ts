/**
 * WGSL kernels over the paged KV cache: writing new keys/values into their slots, ragged attention through each
 * head's page table, the attention statistics cache policies need, and eviction + compaction.
 *
 * Cache layout on the GPU (the page layout of src/cache/page-layout.ts):
 *   kv parts: f32 or f16 pages (halves packed two per u32 word), page id p in part ⌊p / pagesPerPart⌋: [ K: pageTokens × headDim | V: pageTokens × headDim ]
 *   meta:     u32 per (page, row): position | token classes << 30 (SPECIAL = 1, PUNCT = 2)
 *   scores:   f32 per (page, row): cumulative attention (for heavy-hitter policies)
 *   tables:   u32 [sequence slot][layer][kvHead][maxPages]: each head's page ids in slot order (pages of its dense
 *             slots, as HeadStore.pages)
 * The per-pass bookkeeping comes from the `pass` buffer (u32), written once per forward pass:
 *   rowItem[T], rowT[T] (row → sequence of the batch and index among its new tokens), items[i] = [seqSlot, rowStart,
 *   nRows, t of its first row (0 but in a chunked prefill's later chunks)], older[(item·nLayers + layer)·nKvHeads +
 *   kvHead] = the head's slots before this pass (its new tokens follow them, so row t sees the slot prefix
 *   [0, older + t]), rowMeta[T] = position | classes << 30.
 */

import { keyOffsetInPage, pageElements, valueOffsetInPage } from '../../cache/page-layout.js';

/**
 * Most KV parts (each at most one storage binding, 2 GiB on the NVIDIA adapter) a kernel binds: the cache kernels bind
 * at most 6 other storage buffers beside them (attentionStats), within the device's per-stage limit (16 on the
 * NVIDIA adapter and lavapipe: 10 parts, 20 GiB of f32 KV on the H200).
 */
export function maxKvParts(maxStorageBuffers: number): number {
  return Math.max(1, Math.min(16, maxStorageBuffers - 6));
}

/**
 * Bindings kv0..kv{n-1} (u32 words: f32 bits, or two packed halves of an f16 cache, widened with unpack2x16float — no
 * shader-f16) and over them `fn kvGet(page, element) -> f32`, `fn kvWord(page, word) -> u32`, `fn kvSetWord(page,
 * word, v)`. Kernels that move K/V copy words; a cache row (HD elements) is HDW words (HD even for f16).
 */
function kvAccess(parts: number, write: boolean): string {
  const decl = Array.from({ length: parts }, (_, i) =>
    `@group(0) @binding(${10 + i}) var<storage, ${write ? 'read_write' : 'read'}> kv${i}: array<u32>;`).join('\n');
  const cases = (body: (i: number) => string) =>
    Array.from({ length: parts }, (_, i) => (i === parts - 1 ? `default { ${body(i)} }` : `case ${i}u { ${body(i)} }`)).join('\n    ');
  return `${decl}
fn kvWord(page: u32, w: u32) -> u32 {
  let j = (page % PPP) * PAGE_WORDS + w;
  switch (page / PPP) {
    ${cases((i) => `return kv${i}[j];`)}
  }
}
fn kvGet(page: u32, off: u32) -> f32 {
  if (HALF) { return unpack2x16float(kvWord(page, off >> 1u))[off & 1u]; }
  return bitcast<f32>(kvWord(page, off));
}
/**
 * f32 → half bits, round to nearest even, exactly as src/half.ts's f32ToF16 (WGSL leaves pack2x16float's rounding to
 * the implementation: lavapipe's differs), so an f16 cache holds the same halves as on the CPU backends.
 */
fn toHalf(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  let sign = (bits >> 16u) & 0x8000u;
  let exp = i32((bits >> 23u) & 0xffu);
  var mant = bits & 0x7fffffu;
  if (exp == 0xff) { return sign | 0x7c00u | select(0u, 0x200u | (mant >> 13u), mant != 0u); }
  let e = exp - 127 + 15;
  if (e >= 31) { return sign | 0x7c00u; }
  if (e <= 0) {
    if (e < -10) { return sign; }
    mant |= 0x800000u;
    let shift = u32(14 - e);
    let h = mant >> shift;
    let rem = mant & ((1u << shift) - 1u);
    let halfway = 1u << (shift - 1u);
    return sign | (h + select(0u, 1u, rem > halfway || (rem == halfway && (h & 1u) != 0u)));
  }
  var h = (u32(e) << 10u) | (mant >> 13u);
  let rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0u)) { h++; }
  return sign | h;
}
fn packHalves(a: f32, b: f32) -> u32 { return toHalf(a) | (toHalf(b) << 16u); }
${write ? `fn kvSetWord(page: u32, w: u32, v: u32) {
  let j = (page % PPP) * PAGE_WORDS + w;
  switch (page / PPP) {
    ${cases((i) => `kv${i}[j] = v;`)}
  }
}` : ''}`;
}

/** Compile-time constants of a cache kernel: pages per part, page tokens, head dim, and whether K/V are f16. */
export interface CacheShape {
  parts: number;
  pagesPerPart: number;
  pageTokens: number;
  headDim: number;
  /** An f16 cache (packed in u32 words); f32 when absent. */
  half?: boolean;
}

/** The page layout of src/cache/page-layout.ts as WGSL constants: K rows at (row)·HD, V rows at (PT + row)·HD. */
function consts(c: CacheShape): string {
  if (keyOffsetInPage(1, c.headDim) !== c.headDim || valueOffsetInPage(0, c.pageTokens, c.headDim) !== c.pageTokens * c.headDim) {
    throw new Error('internal: the WGSL cache kernels assume page-layout.ts\'s [K rows | V rows] pages');
  }
  if (c.half && c.headDim % 2 !== 0) throw new Error(`internal: an f16 cache on the GPU needs an even head dim, got ${c.headDim}`);
  const ew = c.half ? 2 : 1;
  return `const PPP = ${c.pagesPerPart}u;
const PT = ${c.pageTokens}u;
const HD = ${c.headDim}u;
const HALF = ${c.half ? 'true' : 'false'};
/** Words of one K or V row, of one page. */
const HDW = ${c.headDim / ew}u;
const PAGE_WORDS = ${pageElements(c.pageTokens, c.headDim) / ew}u;
/** Elements (K and V values) of one page, whatever their width. */
const PAGE_FLOATS = ${pageElements(c.pageTokens, c.headDim)}u;`;
}

/** Storage bindings 1, 2, … in order: `@group(0) @binding(i) var<storage, access> name: array<type>;` each. */
function storage(...decls: [name: string, access: 'read' | 'read_write', type: string][]): string {
  return decls.map(([name, access, type], i) => `@group(0) @binding(${i + 1}) var<storage, ${access}> ${name}: array<${type}>;`).join('\n');
}

/** Parameters shared by the cache kernels (one struct, so the encoder fills them the same way). */
const CACHE_PARAMS = `struct P {
  nLayers: u32, layer: u32, nHeads: u32, nKvHeads: u32,
  maxPages: u32, T: u32, qOff: u32, qStride: u32,
  kOff: u32, vOff: u32, kvStride: u32, outOff: u32,
  rowItemOff: u32, rowTOff: u32, itemOff: u32, olderOff: u32,
  rowMetaOff: u32, mlOff: u32, flagsOff: u32, entryOff: u32,
  scale: f32, nChunks: u32, rawStride: u32, _c: u32,
};
@group(0) @binding(0) var<uniform> p: P;`;

const TABLE_BASE = `fn tableBase(seqSlot: u32, kvh: u32) -> u32 { return tableBaseAt(seqSlot, p.layer, kvh); }
fn tableBaseAt(seqSlot: u32, layer: u32, kvh: u32) -> u32 { return ((seqSlot * p.nLayers + layer) * p.nKvHeads + kvh) * p.maxPages; }`;

/** New keys (after RoPE) and values of every row into their reserved slots; the slot's meta word; score 0. */
export function kvWriteWgsl(c: CacheShape): string {
  return `${consts(c)}
${CACHE_PARAMS}
${storage(['act', 'read_write', 'f32'], ['pbuf', 'read', 'u32'], ['tables', 'read', 'u32'], ['slotMeta', 'read_write', 'u32'], ['scores', 'read_write', 'f32'])}
${kvAccess(c.parts, true)}
${TABLE_BASE}
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  // One word per thread: an element (f32) or two (f16, packed).
  let i = (wid.x + wid.y * 65535u) * 64u + lid.x;
  if (i >= p.T * p.nKvHeads * HDW) { return; }
  let e = i % HDW;
  let kvh = (i / HDW) % p.nKvHeads;
  let row = i / (HDW * p.nKvHeads);
  let item = pbuf[p.rowItemOff + row];
  let seqSlot = pbuf[p.itemOff + item * 4u];
  let slot = pbuf[p.olderOff + (item * p.nLayers + p.layer) * p.nKvHeads + kvh] + pbuf[p.rowTOff + row];
  let page = tables[tableBase(seqSlot, kvh) + slot / PT];
  let r = slot % PT;
  let k = p.kOff + row * p.kvStride + kvh * HD;
  let v = p.vOff + row * p.kvStride + kvh * HD;
  if (HALF) {
    kvSetWord(page, r * HDW + e, packHalves(act[k + 2u * e], act[k + 2u * e + 1u]));
    kvSetWord(page, (PT + r) * HDW + e, packHalves(act[v + 2u * e], act[v + 2u * e + 1u]));
  } else {
    kvSetWord(page, r * HDW + e, bitcast<u32>(act[k + e]));
    kvSetWord(page, (PT + r) * HDW + e, bitcast<u32>(act[v + e]));
  }
  if (e == 0u) {
    slotMeta[page * PT + r] = pbuf[p.rowMetaOff + row];
    scores[page * PT + r] = 0.0;
  }
}`;
}

/**
 * Hash of a slot element for kvFill (lowbias32): the same integer function in TS (dev/kernels/checks.ts) and here.
 * Value in [-1, 1) from its top 24 bits.
 */
const FILL_HASH = `fn fillHash(x0: u32) -> u32 {
  var x = x0;
  x ^= x >> 16u; x *= 0x7feb352du;
  x ^= x >> 15u; x *= 0x846ca68bu;
  x ^= x >> 16u;
  return x;
}
fn fillValue(seed: u32, page: u32, off: u32) -> f32 {
  return f32(fillHash(seed ^ fillHash(page * PAGE_FLOATS + off)) >> 8u) / 8388608.0 - 1.0;
}`;

/**
 * Context without a prefill (the benchmark's depth): every reserved slot of the listed heads gets pseudo-random K and V
 * (fillValue of its page and offset), its meta word (position from the list, or the slot number), score 0.
 * One workgroup per 64 (slot, element) pairs of one entry (8 u32 at entryOff + 8·wid.y): seqSlot, layer, kvHead, n,
 * posOff (0xffffffff: position = slot), _, _, _. Positions at pbuf[posOff + s]; p.scale's bits (as u32) seed the values.
 */
export function kvFillWgsl(c: CacheShape): string {
  return `${consts(c)}
${CACHE_PARAMS}
${storage(['pbuf', 'read', 'u32'], ['tables', 'read', 'u32'], ['slotMeta', 'read_write', 'u32'], ['scores', 'read_write', 'f32'])}
${kvAccess(c.parts, true)}
${FILL_HASH}
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  // One thread per (slot, element): neighbours write neighbouring floats.
  let e = p.entryOff + wid.y * 8u;
  let i = wid.x * 64u + lid.x;
  let s = i / HD;
  let d = i % HD;
  if (s >= pbuf[e + 3u]) { return; }
  let posOff = pbuf[e + 4u];
  let tb = ((pbuf[e] * p.nLayers + pbuf[e + 1u]) * p.nKvHeads + pbuf[e + 2u]) * p.maxPages;
  let page = tables[tb + s / PT];
  let r = s % PT;
  let seed = bitcast<u32>(p.scale);
  // An f16 cache: the thread of each even element writes the word holding it and the next one.
  if (HALF) {
    if (d % 2u == 0u) {
      let k = r * HD + d;
      let v = (PT + r) * HD + d;
      kvSetWord(page, k / 2u, packHalves(fillValue(seed, page, k), fillValue(seed, page, k + 1u)));
      kvSetWord(page, v / 2u, packHalves(fillValue(seed, page, v), fillValue(seed, page, v + 1u)));
    }
  } else {
    kvSetWord(page, r * HD + d, bitcast<u32>(fillValue(seed, page, r * HD + d)));
    kvSetWord(page, (PT + r) * HD + d, bitcast<u32>(fillValue(seed, page, (PT + r) * HD + d)));
  }
  if (d == 0u) {
    slotMeta[page * PT + r] = select(pbuf[posOff + s], s, posOff == 0xffffffffu) & 0x3fffffffu;
    scores[page * PT + r] = 0.0;
  }
}`;
}

/**
 * Slots one attention workgroup covers (split-K: long contexts spread over many workgroups, then combined), for the
 * default vec4 kernel: on the H200 (one decode row, 32 heads of 128, f16 K/V; `run.js attention --chunk N --variant
 * vec4 --kv-dtype f16`, run 3) 32 / 64 / 128 / 256 slots took 177 / 108 / 77 / 87 µs at 4096 and 42 / 39 / 31 / 41 µs
 * at 512. (The scalar kernel measured 64 best, 202 vs 232 µs at 4096 with 128: it stays checked, not tuned.)
 */
export const ATTENTION_CHUNK = 128;

/**
 * The start of both attention kernels: which (query head, row, chunk of CH slots) this workgroup is, the slots its row
 * sees (n), and where its partial goes (pb); a chunk past the row's slots writes an empty partial and returns.
 */
const ATTENTION_ROW = `  let qh = wid.x;
  let row = wid.y;
  let chunk = wid.z;
  let item = pbuf[p.rowItemOff + row];
  let seqSlot = pbuf[p.itemOff + item * 4u];
  let kvh = qh / (p.nHeads / p.nKvHeads);
  let n = pbuf[p.olderOff + (item * p.nLayers + p.layer) * p.nKvHeads + kvh] + pbuf[p.rowTOff + row] + 1u;
  let pb = ((row * p.nHeads + qh) * p.nChunks + chunk) * (HD + 2u);
  let first = chunk * CH;
  if (first >= n) {
    if (lid.x == 0u) { part[pb] = NEG; part[pb + 1u] = 0.0; }
    return;
  }
  let last = min(n, first + CH);
  let tb = tableBase(seqSlot, kvh);`;

/**
 * The attention kernels' walk over their chunk's slots, 64 at a time, a thread per slot: opens the loop and, for a slot
 * in range, its page (kept in pg for the value phase). The kernel goes on with that slot's score.
 */
const SLOT_LOOP = `  for (var s0 = first; s0 < last; s0 += 64u) {
    let s = s0 + lid.x;
    var score = NEG;
    if (s < last) {
      let page = tables[tb + s / PT];
      pg[lid.x] = page;`;

/**
 * One block of 64 slots of the online softmax, shared by both attention kernels: `score` (NEG past `last`) → the
 * block's max and the running max m → newm, corr = e^(m − newm), sc[j] = e^(score_j − newm) for the values, the
 * running sum l updated.
 */
const ONLINE_SOFTMAX = `    red[lid.x] = score;
    workgroupBarrier();
    for (var h = 32u; h > 0u; h >>= 1u) {
      if (lid.x < h) { red[lid.x] = max(red[lid.x], red[lid.x + h]); }
      workgroupBarrier();
    }
    let newm = max(m, red[0]);
    workgroupBarrier();
    let corr = exp(m - newm);
    let e = select(0.0, exp(score - newm), s < last);
    sc[lid.x] = e;
    red[lid.x] = e;
    workgroupBarrier();
    for (var h = 32u; h > 0u; h >>= 1u) {
      if (lid.x < h) { red[lid.x] += red[lid.x + h]; }
      workgroupBarrier();
    }
    l = l * corr + red[0];`;

/**
 * Ragged paged attention, split over the slots: one workgroup per (query head, row, chunk of ATTENTION_CHUNK slots)
 * computes, over the slots s ≤ older + t of the query head's KV head (GQA/MQA: kvHead = qh / group) in its chunk, the
 * online-softmax partial (max m, sum l, Σ exp(score − m)·V) into `part`; attentionCombine merges a row's chunks. No
 * score buffer, any length; decode rows get as many workgroups as their context needs.
 * part[((row · nHeads + qh) · nChunks + chunk) · (HD + 2) …] = m, l, acc[HD].
 */
export function attentionWgsl(c: CacheShape, chunk = ATTENTION_CHUNK): string {
  const dPer = Math.ceil(c.headDim / 64);
  return `${consts(c)}
${CACHE_PARAMS}
${storage(['act', 'read_write', 'f32'], ['pbuf', 'read', 'u32'], ['tables', 'read', 'u32'], ['part', 'read_write', 'f32'])}
${kvAccess(c.parts, false)}
${TABLE_BASE}
const NEG = -3.0e38;
const CH = ${chunk}u;
var<workgroup> qs: array<f32, HD>;
var<workgroup> sc: array<f32, 64>;
var<workgroup> red: array<f32, 64>;
var<workgroup> pg: array<u32, 64>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
${ATTENTION_ROW}
  let qb = p.qOff + row * p.qStride + qh * HD;
  for (var d = lid.x; d < HD; d += 64u) { qs[d] = act[qb + d]; }
  workgroupBarrier();
  var m = NEG;
  var l = 0.0;
  var acc: array<f32, ${dPer}>;
  for (var k = 0u; k < ${dPer}u; k++) { acc[k] = 0.0; }
${SLOT_LOOP}
      let kb = (s % PT) * HD;
      var dotv = 0.0;
      for (var d = 0u; d < HD; d++) { dotv += qs[d] * kvGet(page, kb + d); }
      score = dotv * p.scale;
    }
${ONLINE_SOFTMAX}
    let cnt = min(64u, last - s0);
    for (var k = 0u; k < ${dPer}u; k++) {
      let d = lid.x + 64u * k;
      if (d < HD) {
        var a = acc[k] * corr;
        for (var j = 0u; j < cnt; j++) { a += sc[j] * kvGet(pg[j], (PT + (s0 + j) % PT) * HD + d); }
        acc[k] = a;
      }
    }
    m = newm;
    workgroupBarrier();
  }
  if (lid.x == 0u) { part[pb] = m; part[pb + 1u] = l; }
  for (var k = 0u; k < ${dPer}u; k++) {
    let d = lid.x + 64u * k;
    if (d < HD) { part[pb + 2u + d] = acc[k]; }
  }
}`;
}

/**
 * The same attention, reading K and V as 16-byte words (`vec4<u32>`: 8 halves or 4 floats per load), for heads whose
 * rows are a whole number of such words (HDW % 4 = 0, HD ≤ 512 f16 / 256 f32); the scalar kernel above reads one
 * element per load through a switch over the KV parts, which left attention at ~0.6 TB/s on the H200 (docs/gpu-results.md).
 * Scores: a thread per slot, its K row read in one arm of the part switch. Values: HDW4 threads per slot row (one
 * 16-byte word each, coalesced), 64 / HDW4 slots at a time, summed across those phases at the end. With one chunk
 * (p.nChunks = 1) it writes the output and the row's (max, sum) itself, and the combine kernel is not dispatched.
 * With p.rawStride > 0 it also keeps each score q·K_s·scale at raw[(row · nHeads + qh) · rawStride + s] for the
 * statistics kernel.
 */
export function attentionVec4Fits(c: CacheShape): boolean {
  const hdw = c.half ? c.headDim / 2 : c.headDim;
  return hdw % 4 === 0 && hdw / 4 <= 64;
}

export function attentionVec4Wgsl(c: CacheShape, chunk = ATTENTION_CHUNK): string {
  const hdw = c.half ? c.headDim / 2 : c.headDim;
  if (!attentionVec4Fits(c)) throw new Error(`internal: attentionVec4Wgsl needs a head of a multiple of 4 words and at most 64 of them, got ${hdw}`);
  const hdw4 = hdw / 4;
  const phases = Math.floor(64 / hdw4);
  // Elements per 16-byte word, and the word → 4 or 8 floats widening.
  const per = c.half ? 8 : 4;
  const widen = c.half
    ? (w: string) => `vec4f(unpack2x16float(${w}.x), unpack2x16float(${w}.y)), vec4f(unpack2x16float(${w}.z), unpack2x16float(${w}.w))`
    : (w: string) => `bitcast<vec4f>(${w})`;
  const parts = Array.from({ length: c.parts }, (_, i) => i);
  const decl = parts.map((i) => `@group(0) @binding(${10 + i}) var<storage, read> kv${i}: array<vec4<u32>>;`).join('\n');
  // The word at index j of the page's part (j counted in 16-byte words from the part's start).
  const sw = (body: (i: number) => string) => `switch (page / PPP) {
      ${parts.map((i) => `${i === c.parts - 1 ? 'default' : `case ${i}u`} { ${body(i)} }`).join('\n      ')}
    }`;
  const dotK = c.half
    ? (i: number) => `for (var w = 0u; w < HDW4; w++) { let k = kv${i}[kb + w]; acc += dot(qs[2u * w], vec4f(unpack2x16float(k.x), unpack2x16float(k.y))) + dot(qs[2u * w + 1u], vec4f(unpack2x16float(k.z), unpack2x16float(k.w))); }`
    : (i: number) => `for (var w = 0u; w < HDW4; w++) { acc += dot(qs[w], bitcast<vec4f>(kv${i}[kb + w])); }`;
  const loadV = (i: number) => `vw = kv${i}[vb];`;
  return `${consts(c)}
${CACHE_PARAMS}
${storage(['act', 'read_write', 'f32'], ['pbuf', 'read', 'u32'], ['tables', 'read', 'u32'], ['part', 'read_write', 'f32'], ['ml', 'read_write', 'f32'], ['raw', 'read_write', 'f32'])}
${decl}
${TABLE_BASE}
const NEG = -3.0e38;
const CH = ${chunk}u;
const HDW4 = ${hdw4}u;
const PHASES = ${phases}u;
/** 16-byte words of one page. */
const PAGE_W4 = PAGE_WORDS / 4u;
var<workgroup> qs: array<vec4f, ${c.headDim / 4}>;
var<workgroup> sc: array<f32, 64>;
var<workgroup> red: array<f32, 64>;
var<workgroup> pg: array<u32, 64>;
var<workgroup> vsum: array<vec4f, ${phases * hdw4 * (per / 4)}>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  _ = &ml;
  _ = &raw;
${ATTENTION_ROW}
  let qb = p.qOff + row * p.qStride + qh * HD;
  for (var d = lid.x; d < HD / 4u; d += 64u) { qs[d] = vec4f(act[qb + 4u * d], act[qb + 4u * d + 1u], act[qb + 4u * d + 2u], act[qb + 4u * d + 3u]); }
  workgroupBarrier();
  // This thread's share of the values: word vw4 of a row, for the slots j ≡ phase (mod PHASES).
  let vw4 = lid.x % HDW4;
  let phase = lid.x / HDW4;
  var m = NEG;
  var l = 0.0;
  var acc0 = vec4f(0.0);
  var acc1 = vec4f(0.0);
${SLOT_LOOP}
      let kb = (page % PPP) * PAGE_W4 + (s % PT) * HDW4;
      var acc = 0.0;
      ${sw(dotK)}
      score = acc * p.scale;
      // The statistics kernel turns these into probabilities once the row's max and sum are known (instead of
      // reading K again).
      if (p.rawStride > 0u) { raw[(row * p.nHeads + qh) * p.rawStride + s] = score; }
    }
${ONLINE_SOFTMAX}
    acc0 *= corr;
    acc1 *= corr;
    let cnt = min(64u, last - s0);
    if (phase < PHASES) {
      for (var j = phase; j < cnt; j += PHASES) {
        let page = pg[j];
        let vb = (page % PPP) * PAGE_W4 + (PT + (s0 + j) % PT) * HDW4 + vw4;
        var vw = vec4<u32>(0u);
        ${sw(loadV)}
        ${c.half ? `acc0 += sc[j] * vec4f(unpack2x16float(vw.x), unpack2x16float(vw.y));
        acc1 += sc[j] * vec4f(unpack2x16float(vw.z), unpack2x16float(vw.w));` : `acc0 += sc[j] * bitcast<vec4f>(vw);`}
      }
    }
    m = newm;
    workgroupBarrier();
  }
  // Sum the phases' value partials.
  if (phase < PHASES) {
    vsum[(phase * HDW4 + vw4) * ${per / 4}u] = acc0;
    ${c.half ? 'vsum[(phase * HDW4 + vw4) * 2u + 1u] = acc1;' : '_ = acc1;'}
  }
  workgroupBarrier();
  let one = p.nChunks == 1u;
  let ob = p.outOff + row * p.qStride + qh * HD;
  for (var d = lid.x; d < HD; d += 64u) {
    var a = 0.0;
    for (var ph = 0u; ph < PHASES; ph++) { a += vsum[ph * (HD / 4u) + d / 4u][d % 4u]; }
    if (one) { act[ob + d] = a / l; } else { part[pb + 2u + d] = a; }
  }
  if (lid.x == 0u) {
    if (one) {
      ml[p.mlOff + (row * p.nHeads + qh) * 2u] = m;
      ml[p.mlOff + (row * p.nHeads + qh) * 2u + 1u] = l;
    } else { part[pb] = m; part[pb + 1u] = l; }
  }
}`;
}

/**
 * Merges a row's chunk partials (one workgroup per (query head, row)): M = max m_c, l = Σ l_c·e^(m_c − M),
 * out = Σ acc_c·e^(m_c − M) / l; the row's M and l go to ml[(row · nHeads + qh) · 2] for the statistics kernel.
 */
export function attentionCombineWgsl(c: CacheShape): string {
  return `${consts(c)}
${CACHE_PARAMS}
${storage(['act', 'read_write', 'f32'], ['part', 'read_write', 'f32'], ['ml', 'read_write', 'f32'])}
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let qh = wid.x;
  let row = wid.y;
  let pb = (row * p.nHeads + qh) * p.nChunks * (HD + 2u);
  var big = -3.0e38;
  for (var c = 0u; c < p.nChunks; c++) { big = max(big, part[pb + c * (HD + 2u)]); }
  var l = 0.0;
  for (var c = 0u; c < p.nChunks; c++) { l += part[pb + c * (HD + 2u) + 1u] * exp(part[pb + c * (HD + 2u)] - big); }
  let ob = p.outOff + row * p.qStride + qh * HD;
  for (var d = lid.x; d < HD; d += 64u) {
    var a = 0.0;
    for (var c = 0u; c < p.nChunks; c++) {
      let w = exp(part[pb + c * (HD + 2u)] - big);
      if (w > 0.0) { a += part[pb + c * (HD + 2u) + 2u + d] * w; }
    }
    act[ob + d] = a / l;
  }
  if (lid.x == 0u) {
    ml[p.mlOff + (row * p.nHeads + qh) * 2u] = big;
    ml[p.mlOff + (row * p.nHeads + qh) * 2u + 1u] = l;
  }
}`;
}

/**
 * The attention statistics a cache policy asked for, per (sequence, KV head, block of 64 slots), recomputing each
 * probability p = exp(q·K_s · scale − m) / l from the attention kernel's per-row m and l — from the scores the vec4
 * attention kernel kept (compiled with fromRaw: p.rawStride > 0), or by reading K again. Per head
 * (h = (item·nLayers + layer)·nKvHeads + kvHead), four words at pbuf[flagsOff + 4h]: flags, statistics offset,
 * bands offset (pbuf there: count nb ≤ MAX_BANDS, the pass's rows N, then the distances), fromRow. A chunked prefill
 * runs the N rows in several dispatches: the item's entry says which (its 4th word: the first row's index t).
 *   flags bit 0: add Σ over the group's query heads and the pass's rows to the slot's cumulative score;
 *   flags bit 1: per query head the column sums col[s] = Σ_{t ≥ fromRow} p and, per distance w_k, the band sums
 *     (rows with t − s ≤ w_k) into stats at offset + (qh·(1 + nb))·N (column) and + (qh·(1 + nb) + 1 + k)·N (band k)
 *     — collected on a pass from an empty cache, where slot s holds position s.
 */
export const MAX_BANDS = 8;

export function attentionStatsWgsl(c: CacheShape, fromRaw = false): string {
  // From kept scores it binds no KV part (a kernel may bind only so many storage buffers: the KV parts are sized to
  // what the other cache kernels leave, see maxKvParts).
  const k = fromRaw ? { decl: '@group(0) @binding(7) var<storage, read> raw: array<f32>;', use: '_ = &raw; _ = &act; // bound whether used or not' }
    : { decl: kvAccess(c.parts, false), use: '' };
  return `${consts(c)}
${CACHE_PARAMS}
${storage(['act', 'read_write', 'f32'], ['pbuf', 'read', 'u32'], ['tables', 'read', 'u32'], ['ml', 'read_write', 'f32'], ['scores', 'read_write', 'f32'], ['stats', 'read_write', 'f32'])}
${k.decl}
${TABLE_BASE}
var<workgroup> qs: array<f32, HD>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  ${k.use}
  let item = wid.y / p.nKvHeads;
  let kvh = wid.y % p.nKvHeads;
  let head = (item * p.nLayers + p.layer) * p.nKvHeads + kvh;
  let flags = pbuf[p.flagsOff + head * 4u];
  if (flags == 0u) { return; }
  let profOff = pbuf[p.flagsOff + head * 4u + 1u];
  let bandsAt = pbuf[p.flagsOff + head * 4u + 2u];
  let profiles = (flags & 2u) != 0u;
  let nb = select(0u, min(pbuf[bandsAt], ${MAX_BANDS}u), profiles);
  let fromRow = pbuf[p.flagsOff + head * 4u + 3u];
  let seqSlot = pbuf[p.itemOff + item * 4u];
  let rowStart = pbuf[p.itemOff + item * 4u + 1u];
  let nRows = pbuf[p.itemOff + item * 4u + 2u];
  let rowBase = pbuf[p.itemOff + item * 4u + 3u];
  let older = pbuf[p.olderOff + head];
  // The policy's pass: N rows, of which this dispatch runs nRows from the rowBase-th (several for a chunked prefill);
  // its statistics cover every slot of the pass, its scores the slots these rows see.
  let N = select(rowBase + nRows, pbuf[bandsAt + 1u], profiles);
  let total = older + N;
  let s = wid.x * 64u + lid.x;
  if (wid.x * 64u >= total) { return; }
  let valid = s < total;
  var page = 0u;
  if (valid) { page = tables[tableBase(seqSlot, kvh) + s / PT]; }
  let kb = (s % PT) * HD;
  let group = p.nHeads / p.nKvHeads;
  var sum = 0.0;
  for (var g = 0u; g < group; g++) {
    let qh = kvh * group + g;
    var col = 0.0;
    var bandSum: array<f32, ${MAX_BANDS}>;
    for (var k = 0u; k < ${MAX_BANDS}u; k++) { bandSum[k] = 0.0; }
    for (var tc = 0u; tc < nRows; tc++) {
      let row = rowStart + tc;
      let t = rowBase + tc;
      ${fromRaw ? '' : `workgroupBarrier();
      for (var d = lid.x; d < HD; d += 64u) { qs[d] = act[p.qOff + row * p.qStride + qh * HD + d]; }
      workgroupBarrier();`}
      if (valid && s <= older + t) {
        ${fromRaw ? 'let score = raw[(row * p.nHeads + qh) * p.rawStride + s];' : `var dotv = 0.0;
        for (var d = 0u; d < HD; d++) { dotv += qs[d] * kvGet(page, kb + d); }
        let score = dotv * p.scale;`}
        let mi = ml[p.mlOff + (row * p.nHeads + qh) * 2u];
        let li = ml[p.mlOff + (row * p.nHeads + qh) * 2u + 1u];
        let pr = exp(score - mi) / li;
        sum += pr;
        if (t >= fromRow) {
          col += pr;
          for (var k = 0u; k < nb; k++) { if (older + t - s <= pbuf[bandsAt + 2u + k]) { bandSum[k] += pr; } }
        }
      }
    }
    // The first chunk writes every slot's sums (zero where no row of it sees the slot), later chunks add theirs.
    if (valid && (flags & 2u) != 0u) {
      let first = rowBase == 0u;
      let at = profOff + qh * (1u + nb) * N + s;
      stats[at] = select(stats[at], 0.0, first) + col;
      for (var k = 0u; k < nb; k++) {
        let bk = profOff + (qh * (1u + nb) + 1u + k) * N + s;
        stats[bk] = select(stats[bk], 0.0, first) + bandSum[k];
      }
    }
  }
  if (valid && (flags & 1u) != 0u) { scores[page * PT + s % PT] += sum; }
}`;
}

/**
 * Eviction for one (sequence, layer, KV head) per workgroup, executing a keep rule (the numbers markKept in
 * src/cache/evict.ts computes from a policy): keep slot s when its classes meet classMask, or current − pos < span,
 * or pos < sinks, or it is among the top `budget` by score (ties: the lower position wins). Then it plans the
 * compaction HeadStore.retain performs (walking from the end, the last slot moves into each hole), through a bitmask
 * of the evicted slots (any number of them fits ⌈n / 32⌉ words: when heavy hitters fall inside the window a step
 * evicts far more than its new tokens). The moves go to the work buffer for applyMoves; the report, which the CPU
 * reads back every step, is two words: [new length, evicted count] (the CPU keeps that many slots: HeadStore.keepFirst).
 * Entry (12 u32 in pass at entryOff + 12·wid.x): seqSlot, kvHead, n, classMask, span, current, sinks, budget,
 * reportOff, layer, workOff, _ (entries of any layers: a pass evicts once, after its last layer). Work region (4n + 1
 * + ⌈n / 32⌉ words): keep[n], score[n], pos[n], the moves (count, pairs: at most n / 2), the evicted-slot bits.
 */
export function evictWgsl(c: CacheShape): string {
  return `${consts(c)}
${CACHE_PARAMS}
${storage(['pbuf', 'read', 'u32'], ['tables', 'read', 'u32'], ['slotMeta', 'read', 'u32'], ['scores', 'read', 'f32'], ['work', 'read_write', 'u32'], ['report', 'read_write', 'u32'])}
${TABLE_BASE}
var<workgroup> red: array<u32, 256>;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> sel: array<u32, 4>;
/** An f32's bits as a u32 that orders like the number (−0 as +0). */
fn scoreKey(bits: u32) -> u32 {
  let b = select(bits, 0u, bits == 0x80000000u);
  return select(b | 0x80000000u, ~b, (b >> 31u) == 1u);
}
@compute @workgroup_size(256) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let e = p.entryOff + wid.x * 12u;
  let seqSlot = pbuf[e];
  let kvh = pbuf[e + 1u];
  let n = pbuf[e + 2u];
  let classMask = pbuf[e + 3u];
  let span = pbuf[e + 4u];
  let current = pbuf[e + 5u];
  let sinks = pbuf[e + 6u];
  let budget = pbuf[e + 7u];
  let reportOff = pbuf[e + 8u];
  let wk = pbuf[e + 10u];
  let tb = tableBaseAt(seqSlot, pbuf[e + 9u], kvh);
  // Static part, and each slot's score and position side by side for the ranking.
  for (var s = lid.x; s < n; s += 256u) {
    let at = tables[tb + s / PT] * PT + s % PT;
    let m = slotMeta[at];
    let pos = m & 0x3fffffffu;
    let keep = ((m >> 30u) & classMask) != 0u || current - pos < span || pos < sinks || budget >= n;
    work[wk + s] = select(0u, 1u, keep);
    work[wk + n + s] = bitcast<u32>(scores[at]);
    work[wk + 2u * n + s] = pos;
  }
  storageBarrier();
  workgroupBarrier();
  if (budget > 0u && budget < n) {
    // Heavy hitters: the 'budget' slots first by (score desc, position asc), found by two radix selects (8 bits a
    // pass, a 256-bin histogram): the budget-th largest score key K, then among the slots scoring exactly K the
    // smallest positions up to the places left. Linear in the slots, whatever their number.
    if (lid.x == 0u) { sel[0] = 0u; sel[1] = budget; }
    for (var digit = 0u; digit < 4u; digit++) {
      let shift = 24u - 8u * digit;
      let hi = select(0xffffffffu << (shift + 8u), 0u, digit == 0u);
      atomicStore(&hist[lid.x], 0u);
      workgroupBarrier();
      let prefix = sel[0];
      for (var s = lid.x; s < n; s += 256u) {
        let k = scoreKey(work[wk + n + s]);
        if ((k & hi) == (prefix & hi)) { atomicAdd(&hist[(k >> shift) & 255u], 1u); }
      }
      workgroupBarrier();
      if (lid.x == 0u) {
        var acc = 0u;
        for (var d = 255i; d >= 0i; d--) {
          let c = atomicLoad(&hist[d]);
          if (acc + c >= sel[1]) { sel[0] = prefix | (u32(d) << shift); sel[1] = sel[1] - acc; break; }
          acc += c;
        }
      }
      workgroupBarrier();
    }
    let K = sel[0];
    workgroupBarrier();
    if (lid.x == 0u) { sel[2] = 0u; sel[3] = sel[1]; }
    for (var digit = 0u; digit < 4u; digit++) {
      let shift = 24u - 8u * digit;
      let hi = select(0xffffffffu << (shift + 8u), 0u, digit == 0u);
      atomicStore(&hist[lid.x], 0u);
      workgroupBarrier();
      let prefix = sel[2];
      for (var s = lid.x; s < n; s += 256u) {
        let ps = work[wk + 2u * n + s];
        if (scoreKey(work[wk + n + s]) == K && (ps & hi) == (prefix & hi)) { atomicAdd(&hist[(ps >> shift) & 255u], 1u); }
      }
      workgroupBarrier();
      if (lid.x == 0u) {
        var acc = 0u;
        for (var d = 0u; d < 256u; d++) {
          let c = atomicLoad(&hist[d]);
          if (acc + c >= sel[3]) { sel[2] = prefix | (d << shift); sel[3] = sel[3] - acc; break; }
          acc += c;
        }
      }
      workgroupBarrier();
    }
    let P = sel[2];
    for (var s = lid.x; s < n; s += 256u) {
      let k = scoreKey(work[wk + n + s]);
      if (k > K || (k == K && work[wk + 2u * n + s] <= P)) { work[wk + s] = 1u; }
    }
  }
  storageBarrier();
  workgroupBarrier();
  var kept = 0u;
  for (var s = lid.x; s < n; s += 256u) { kept += work[wk + s]; }
  red[lid.x] = kept;
  workgroupBarrier();
  for (var h = 128u; h > 0u; h >>= 1u) {
    if (lid.x < h) { red[lid.x] += red[lid.x + h]; }
    workgroupBarrier();
  }
  let newLen = red[0];
  // The evicted slots as a bitmask (bit s % 32 of word s / 32), after the moves' room.
  let bitsAt = wk + 4u * n + 1u;
  for (var wd = lid.x; wd < (n + 31u) / 32u; wd += 256u) {
    var bits = 0u;
    for (var j = 0u; j < 32u; j++) {
      let s = wd * 32u + j;
      if (s < n && work[wk + s] == 0u) { bits |= 1u << j; }
    }
    work[bitsAt + wd] = bits;
  }
  // HeadStore.retain, replayed on slot numbers (the scores' region is free now): walking from the end, each evicted
  // slot takes the current last slot; orig[d] ends as the slot whose contents d holds. Only evicted slots act, so the
  // walk visits them through the bitmask (a step evicts a few of thousands: serial work ⌈n / 32⌉ + evicted, not n).
  let orig = wk + n;
  for (var s = lid.x; s < n; s += 256u) { work[orig + s] = s; }
  storageBarrier();
  workgroupBarrier();
  if (lid.x == 0u) {
    report[reportOff] = newLen;
    report[reportOff + 1u] = n - newLen;
    var len = n;
    var wd = (n + 31u) / 32u;
    while (wd > 0u) {
      wd--;
      var bits = work[bitsAt + wd];
      while (bits != 0u) {
        let b = firstLeadingBit(bits);
        bits &= ~(1u << b);
        let s = wd * 32u + b;
        let last = len - 1u;
        if (s != last) { work[orig + s] = work[orig + last]; }
        len--;
      }
    }
    // The moves: each evicted slot below newLen now holds a slot from at or above it (independent pairs).
    let mv = wk + 3u * n;
    var moves = 0u;
    for (var w = 0u; w < (newLen + 31u) / 32u; w++) {
      var bits = work[bitsAt + w];
      while (bits != 0u) {
        let b = firstTrailingBit(bits);
        bits &= bits - 1u;
        let d = w * 32u + b;
        if (d < newLen) {
          work[mv + 1u + 2u * moves] = d;
          work[mv + 2u + 2u * moves] = work[orig + d];
          moves++;
        }
      }
    }
    work[mv] = moves;
  }
}`;
}

/**
 * Compaction moves, one workgroup per (sequence, layer, KV head): slot dst ← slot src for each pair (K, V, meta,
 * score). Every destination lies below the new length and every source at or above it, so the pairs are independent.
 * Entry (4 u32 at entryOff + 4·wid.x): seqSlot, kvHead, workOff (the move count there, then dst/src pairs), layer.
 */
export function applyMovesWgsl(c: CacheShape): string {
  return `${consts(c)}
${CACHE_PARAMS}
${storage(['pbuf', 'read', 'u32'], ['tables', 'read', 'u32'], ['slotMeta', 'read_write', 'u32'], ['scores', 'read_write', 'f32'], ['work', 'read', 'u32'])}
${kvAccess(c.parts, true)}
${TABLE_BASE}
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let e = p.entryOff + wid.x * 4u;
  let seqSlot = pbuf[e];
  let kvh = pbuf[e + 1u];
  let mv = pbuf[e + 2u];
  let moves = work[mv];
  let tb = tableBaseAt(seqSlot, pbuf[e + 3u], kvh);
  for (var i = lid.x; i < moves * 2u * HDW; i += 64u) {
    let m = i / (2u * HDW);
    let el = i % (2u * HDW);
    let dst = work[mv + 1u + 2u * m];
    let src = work[mv + 2u + 2u * m];
    let dp = tables[tb + dst / PT];
    let sp = tables[tb + src / PT];
    // el < HDW: a word of the key; else of the value.
    let row = select(PT + 0u, 0u, el < HDW);
    let d = el % HDW;
    kvSetWord(dp, (row + dst % PT) * HDW + d, kvWord(sp, (row + src % PT) * HDW + d));
    if (el == 0u) {
      slotMeta[dp * PT + dst % PT] = slotMeta[sp * PT + src % PT];
      scores[dp * PT + dst % PT] = scores[sp * PT + src % PT];
    }
  }
}`;
}

/**
 * Slot scores set from the CPU, one workgroup per (sequence, layer, KV head), after the CPU decided on a pass with
 * statistics (the policy set the scores it ranks by later from them). Entry (4 u32 at entryOff + 4·wid.x): seqSlot,
 * kvHead, workOff, count; the scores (f32 bits) at work[workOff …].
 */
export function setScoresWgsl(c: CacheShape): string {
  return `${consts(c)}
${CACHE_PARAMS}
${storage(['pbuf', 'read', 'u32'], ['tables', 'read', 'u32'], ['scores', 'read_write', 'f32'], ['work', 'read', 'u32'])}
${TABLE_BASE}
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let e = p.entryOff + wid.x * 4u;
  let tb = tableBase(pbuf[e], pbuf[e + 1u]);
  let off = pbuf[e + 2u];
  for (var s = lid.x; s < pbuf[e + 3u]; s += 64u) { scores[tables[tb + s / PT] * PT + s % PT] = bitcast<f32>(work[off + s]); }
}`;
}

/** Page-table entries set from a list of (index, page id) pairs: tables[list[2j]] = list[2j + 1], j < count. */
export const patchTablesWgsl = `
struct P { count: u32, _a: u32, _b: u32, _c: u32 };
@group(0) @binding(0) var<uniform> p: P;
${storage(['tables', 'read_write', 'u32'], ['list', 'read', 'u32'])}
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let j = (wid.x + wid.y * 65535u) * 64u + lid.x;
  if (j >= p.count) { return; }
  tables[list[2u * j]] = list[2u * j + 1u];
}`;

/**
 * Whole pages copied (fork()): pair j = (src, dst) page ids at pairs[2j], pairs[2j + 1]; one workgroup per pair
 * copies the page's K and V, and its rows' metadata and scores. Source and destination may lie in any KV parts.
 */
export function copyPagesWgsl(c: CacheShape): string {
  return `${consts(c)}
struct P { count: u32, _a: u32, _b: u32, _c: u32 };
@group(0) @binding(0) var<uniform> p: P;
${storage(['pairs', 'read', 'u32'], ['slotMeta', 'read_write', 'u32'], ['scores', 'read_write', 'f32'])}
${kvAccess(c.parts, true)}
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let j = wid.x + wid.y * 65535u;
  if (j >= p.count) { return; }
  let src = pairs[2u * j];
  let dst = pairs[2u * j + 1u];
  for (var i = lid.x; i < PAGE_WORDS; i += 64u) { kvSetWord(dst, i, kvWord(src, i)); }
  for (var r = lid.x; r < PT; r += 64u) {
    slotMeta[dst * PT + r] = slotMeta[src * PT + r];
    scores[dst * PT + r] = scores[src * PT + r];
  }
}`;
}
