/**
 * Plain-TS references for the WASM kernels that src/backend/cpu-ref/math.ts does not cover: q8_0 quantization,
 * IEEE half conversion, paged attention, argmax. Like math.ts they read like the formula; the quantizers reproduce
 * the kernels' f32 arithmetic exactly (Math.fround after every operation), so the tests can demand bit equality.
 */
import { keyOffsetInPage, pageElements, valueOffsetInPage } from '../../cache/page-layout.js';
import { dot, softmax } from '../cpu-ref/math.js';

const f = Math.fround;

/** Round to nearest integer, ties to even (wasm `nearest`). */
export function roundHalfEven(v: number): number {
  const r = Math.round(v); // ties toward +∞
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

// ---- q8_0 ------------------------------------------------------------------------------------------------------

export const QK = 32;

/** One block: scale d = amax/127 (f32), values q = nearest(x · (1/d)) (f32 product), zeros beyond n. */
function quantizeBlock(x: ArrayLike<number>, start: number, n: number, q: Int8Array | Int16Array, qStart: number): number {
  let amax = 0;
  for (let c = 0; c < n; c++) amax = Math.max(amax, Math.abs(x[start + c]));
  const d = f(amax / 127);
  const id = d !== 0 ? f(1 / d) : 0;
  for (let c = 0; c < QK; c++) q[qStart + c] = c < n ? roundHalfEven(f(x[start + c] * id)) : 0;
  return d;
}

/** Rows of x [rows, cols] quantized block by block into q [rows][nb·32]; returns the scales d [rows][nb]. */
function quantizeRows(x: Float32Array, rows: number, cols: number, q: Int8Array | Int16Array): Float32Array {
  const nb = Math.ceil(cols / QK);
  const d = new Float32Array(rows * nb);
  for (let r = 0; r < rows; r++) {
    for (let b = 0; b < nb; b++) {
      d[r * nb + b] = quantizeBlock(x, r * cols + b * QK, Math.min(QK, cols - b * QK), q, (r * nb + b) * QK);
    }
  }
  return d;
}

/** f32 [rows, cols] → q8_0: qs int8 [rows][nb·32], d f32 [rows][nb] (layout of kernels/q8.ts). */
export function quantizeQ8_0(w: Float32Array, rows: number, cols: number): { qs: Int8Array; d: Float32Array } {
  const qs = new Int8Array(rows * Math.ceil(cols / QK) * QK);
  return { qs, d: quantizeRows(w, rows, cols, qs) };
}

/** Activations: same blocks, int16 storage: xq [T][nb·32], xd [T][nb]. */
export function quantizeQ8Act(x: Float32Array, T: number, cols: number): { q: Int16Array; d: Float32Array } {
  const q = new Int16Array(T * Math.ceil(cols / QK) * QK);
  return { q, d: quantizeRows(x, T, cols, q) };
}

/** q8_0 → f32 [rows, cols]: w = d·q, rounded once to f32 as the kernel does. */
export function dequantizeQ8_0(qs: Int8Array | Int16Array, d: Float32Array, rows: number, cols: number): Float32Array {
  const nb = Math.ceil(cols / QK);
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[r * cols + c] = d[r * nb + (c >> 5)] * qs[r * nb * QK + c];
  }
  return out;
}

/**
 * q8_0 weights × q8 activations: out[t, r] = Σ_b (dw[r,b]·dx[t,b]) · Σ_{c∈b} qw·qx, with the per-block integer sum
 * exact and the rest in f64 (the kernel rounds to f32 along the way; compare with an f32 tolerance).
 */
export function matmulQ8_0(out: Float32Array, xq: Int16Array, xd: Float32Array, wq: Int8Array, wd: Float32Array,
  T: number, rows: number, cols: number): void {
  const nb = Math.ceil(cols / QK);
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < rows; r++) {
      let sum = 0;
      for (let b = 0; b < nb; b++) {
        let isum = 0;
        for (let c = 0; c < QK; c++) isum += wq[(r * nb + b) * QK + c] * xq[(t * nb + b) * QK + c];
        sum += f(wd[r * nb + b] * xd[t * nb + b]) * isum;
      }
      out[t * rows + r] = sum;
    }
  }
}

// ---- IEEE half ---------------------------------------------------------------------------------------------------

// The half conversions every backend shares; re-exported so the kernel tests find the whole reference here.
export { f16ToF32, f32ToF16 } from '../../half.js';

// ---- attention over pages -------------------------------------------------------------------------------------

/**
 * The kernels/attention.ts contract on plain arrays. pool: all pages as one Float32Array, laid out as
 * src/cache/page-layout.ts says (page i at i·pageElements floats: K rows then V rows). Returns out [headDim] and probs [nSlots].
 */
export function pagedAttention(q: Float32Array, pool: Float32Array, pageTable: Int32Array, nSlots: number,
  pageTokens: number, headDim: number, scale: number, positions?: Int32Array, queryPos = 0): { out: Float32Array; probs: Float32Array } {
  const pageFloats = pageElements(pageTokens, headDim);
  const pageOf = (s: number): number => pageTable[Math.floor(s / pageTokens)] * pageFloats;
  const keyAt = (s: number): number => pageOf(s) + keyOffsetInPage(s % pageTokens, headDim);
  const valueAt = (s: number): number => pageOf(s) + valueOffsetInPage(s % pageTokens, pageTokens, headDim);
  const probs = new Float32Array(nSlots);
  const out = new Float32Array(headDim);
  const live: number[] = [];
  for (let s = 0; s < nSlots; s++) if (!positions || positions[s] <= queryPos) live.push(s);
  if (live.length === 0) return { out, probs };
  const scores = new Float32Array(live.length);
  live.forEach((s, i) => { scores[i] = dot(q, 0, pool, keyAt(s), headDim) * scale; });
  softmax(scores);
  live.forEach((s, i) => { probs[s] = scores[i]; });
  for (let d = 0; d < headDim; d++) {
    let sum = 0;
    for (const s of live) sum += probs[s] * pool[valueAt(s) + d];
    out[d] = sum;
  }
  return { out, probs };
}

/** The kernels' argmax follows the engine's (first maximum; the first NaN wins): one definition. */
export { argmax } from '../../argmax.js';
