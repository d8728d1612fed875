/**
 * The WASM kernel runtime: loads kernels.wasm (built from kernels/ by scripts/build-wasm.mjs), owns the one shared
 * WebAssembly.Memory, hands out memory from a bump arena, and wraps every kernel in a typed method.
 *
 * Everything is addressed by byte pointers (`Ptr`) into that memory: weights, activations, KV pages and scratch are
 * all allocated here, so the worker threads (pool.ts), which instantiate the same module on the same memory, see
 * them at the same addresses.
 */
import { host } from './host-node.js';
import { JobList } from './jobs.js';
import { q8Blocks, q8ScaleBytes, q8WeightBytes } from './layout.js';

/** Byte address in the runtime's memory. */
export type Ptr = number;

/** The raw exports of kernels.wasm (see kernels/*.ts for the semantics). Pointers are byte addresses. */
export interface KernelExports {
  heap_base(): number;
  matmul_f32(out: Ptr, x: Ptr, w: Ptr, T: number, rows: number, cols: number, r0: number, r1: number): void;
  matmul_f16(out: Ptr, x: Ptr, w: Ptr, T: number, rows: number, cols: number, r0: number, r1: number): void;
  /** Workbench variants of matmul_f32 / matmul_f16 (kernels/variants.ts): the four-row decode kernels. */
  matmul_f32_rows4(out: Ptr, x: Ptr, w: Ptr, T: number, rows: number, cols: number, r0: number, r1: number): void;
  matmul_f16_rows4(out: Ptr, x: Ptr, w: Ptr, T: number, rows: number, cols: number, r0: number, r1: number): void;
  /** Workbench variant of matmul_f32: prefill over all tokens at once, no token blocks (f32-flat). */
  matmul_f32_flat(out: Ptr, x: Ptr, w: Ptr, T: number, rows: number, cols: number, r0: number, r1: number): void;
  matmul_q8_0(out: Ptr, xq: Ptr, xd: Ptr, wq: Ptr, wd: Ptr, T: number, rows: number, cols: number, r0: number, r1: number): void;
  /** Workbench variant of matmul_q8_0 (kernels/q8.ts): one row × four tokens for prefill. */
  matmul_q8_0_r1t4(out: Ptr, xq: Ptr, xd: Ptr, wq: Ptr, wd: Ptr, T: number, rows: number, cols: number, r0: number, r1: number): void;
  /** Workbench variant of matmul_q8_0: prefill widening the weights with load8x8_s (q8-ld). */
  matmul_q8_0_ld(out: Ptr, xq: Ptr, xd: Ptr, wq: Ptr, wd: Ptr, T: number, rows: number, cols: number, r0: number, r1: number): void;
  matmul_q8_0_f32(out: Ptr, x: Ptr, wq: Ptr, wd: Ptr, T: number, rows: number, cols: number, r0: number, r1: number): void;
  quantize_q8_0(qs: Ptr, d: Ptr, src: Ptr, rows: number, cols: number, r0: number, r1: number): void;
  quantize_q8_act(xq: Ptr, xd: Ptr, x: Ptr, T: number, cols: number): void;
  dequantize_q8_0(out: Ptr, qs: Ptr, d: Ptr, rows: number, cols: number, r0: number, r1: number): void;
  f32_to_f16(dst: Ptr, src: Ptr, n: number): void;
  f16_to_f32(dst: Ptr, src: Ptr, n: number): void;
  rmsnorm(out: Ptr, x: Ptr, w: Ptr, T: number, n: number, eps: number): void;
  rope(x: Ptr, T: number, nHeads: number, headDim: number, cosTab: Ptr, sinTab: Ptr, pos: Ptr): void;
  softmax(x: Ptr, n: number): void;
  swiglu(gate: Ptr, up: Ptr, n: number): void;
  add(x: Ptr, y: Ptr, n: number): void;
  argmax(x: Ptr, n: number): number;
  copy(dst: Ptr, src: Ptr, bytes: number): void;
  attention(out: Ptr, probs: Ptr, q: Ptr, pool: Ptr, pageTable: Ptr, nSlots: number, pageTokens: number, headDim: number,
    scale: number, positions: Ptr, queryPos: number, accum: Ptr, band: Ptr, bandFrom: number, kvHalf: number): void;
  attention_rows(out: Ptr, probs: Ptr, q: Ptr, rowStride: number, rows: number, firstSlots: number, pool: Ptr, pageTable: Ptr,
    pageTokens: number, headDim: number, scale: number, accum: Ptr, band: Ptr, bands: Ptr, kvHalf: number): void;
  kv_write(pool: Ptr, pageTable: Ptr, slot: number, k: Ptr, v: Ptr, pageTokens: number, headDim: number, rows: number,
    rowStride: number, kvHalf: number): void;
  plan_jobs(list: Ptr, count: number, nThreads: number, ctrl: Ptr, tag: number): number;
  /** Sampling's pass over the vocabulary (kernels/sample.ts, driven by sampling.ts). */
  sample_split(x: Ptr, n: number, invT: number, cut: number, maxNear: number, sP: number, hist: number, far: number, ids: Ptr, gaps: Ptr, w: Ptr, mass: Ptr, tab: Ptr, out: Ptr): number;
  sample_partition(x: Ptr, ids: Ptr, n: number, m: number, sP: number, B: number, keep: Ptr, edge: Ptr, out: Ptr): number;
  sample_walk(ids: Ptr, gaps: Ptr, w: Ptr, n: number, target: number): number;
  run_jobs(list: Ptr, count: number, tid: number, nThreads: number, ctrl: Ptr, tag: number, after: number): number;
}

/** A q8_0 weight matrix in the runtime's memory (layout: layout.ts / kernels/q8.ts). */
export interface Q8Matrix {
  qs: Ptr; // int8 [rows][blocks·32]
  d: Ptr; //  f32 [rows][blocks]
  rows: number;
  cols: number;
}

/** Arguments of one attention call (kernels/attention.ts); one query head over one kv head's pages. */
export interface AttentionArgs {
  out: Ptr; //          f32 [headDim]
  probs: Ptr; //        f32 [nSlots]: the attention probabilities (also the score scratch)
  q: Ptr; //            f32 [headDim]
  pool: Ptr; //         first byte of page 0
  pageTable: Ptr; //    i32 [ceil(nSlots / pageTokens)]
  nSlots: number;
  pageTokens: number;
  headDim: number;
  scale: number; //     usually 1/sqrt(headDim)
  positions?: Ptr; //   i32 [nSlots]; 0/undefined = no causal limit
  queryPos?: number; // slots with positions[s] > queryPos are masked
  accum?: Ptr; //       f32 [nSlots]; when set, accum[s] += probs[s]
  band?: Ptr; //        f32 [nSlots]; when set, band[s] += probs[s] for s ≥ bandFrom (FastGen's band sums)
  bandFrom?: number;
  kvHalf?: boolean; //  the pages hold f16 halves (an f16 KV cache), else f32
  probsStride?: number; // job lists only: thread tid uses probs + tid·probsStride (per-thread scratch, any thread may run it)
}

export interface RuntimeOptions {
  /** Initial memory (default 16 MiB). Grows on demand up to maximumBytes. */
  initialBytes?: number;
  /** Maximum memory (default and limit 4 GiB). V8 reserves the address space of a shared memory up front. */
  maximumBytes?: number;
  /** Where kernels.wasm is (default: next to this file, where the build puts it). */
  wasmUrl?: URL;
}

const PAGE = 65536;
const MAX_PAGES = 65536;
const defaultWasmUrl = new URL('./kernels.wasm', import.meta.url);
const moduleCache = new Map<string, Promise<WebAssembly.Module>>();

/** Compile kernels.wasm once per process (the compiled Module is also what the workers instantiate). */
export function loadKernelModule(url: URL = defaultWasmUrl): Promise<WebAssembly.Module> {
  let m = moduleCache.get(url.href);
  if (!m) {
    m = host.compileKernels(url).catch((err: unknown) => {
      moduleCache.delete(url.href);
      throw new Error(`cannot load the WASM kernels at ${url.href}: ${(err as Error).message}. In a clone, run \`npm run build\` (build:wasm) first`, { cause: err });
    });
    moduleCache.set(url.href, m);
  }
  return m;
}

/**
 * cos/sin tables for the rope kernel: [maxPos, headDim/2] each, angle = pos · invFreq[j] computed in f64 and rounded
 * once (as the reference ropeRotateHalf computes it).
 */
export function ropeTables(invFreq: Float32Array, maxPos: number): { cos: Float32Array; sin: Float32Array } {
  const half = invFreq.length;
  const cos = new Float32Array(maxPos * half);
  const sin = new Float32Array(maxPos * half);
  for (let p = 0; p < maxPos; p++) {
    for (let j = 0; j < half; j++) {
      const a = p * invFreq[j];
      cos[p * half + j] = Math.cos(a);
      sin[p * half + j] = Math.sin(a);
    }
  }
  return { cos, sin };
}

export class WasmRuntime {
  readonly module: WebAssembly.Module;
  readonly memory: WebAssembly.Memory;
  readonly exports: KernelExports;
  private readonly maxBytes: number;
  private top: number;

  static async create(options: RuntimeOptions = {}): Promise<WasmRuntime> {
    const module = await loadKernelModule(options.wasmUrl);
    const maxPages = Math.min(MAX_PAGES, Math.ceil((options.maximumBytes ?? MAX_PAGES * PAGE) / PAGE));
    const initial = Math.min(maxPages, Math.max(1, Math.ceil((options.initialBytes ?? 16 << 20) / PAGE)));
    const memory = new WebAssembly.Memory({ initial, maximum: maxPages, shared: true });
    const instance = await WebAssembly.instantiate(module, { env: { memory } });
    return new WasmRuntime(module, memory, instance.exports as unknown as KernelExports, maxPages * PAGE);
  }

  private constructor(module: WebAssembly.Module, memory: WebAssembly.Memory, exports: KernelExports, maxBytes: number) {
    this.module = module;
    this.memory = memory;
    this.exports = exports;
    this.maxBytes = maxBytes;
    // Leave the module's static area (and address 0, so 0 can mean "none") alone.
    this.top = Math.max(1024, align(exports.heap_base(), 64));
  }

  // ---- arena ----------------------------------------------------------------------------------------------------

  /** Allocate `bytes` (zeroed if never used before; see reset) aligned to `alignment` (a power of two ≥ 16). */
  alloc(bytes: number, alignment = 16): Ptr {
    const ptr = align(this.top, Math.max(16, alignment));
    const end = ptr + Math.max(0, bytes);
    if (end > this.memory.buffer.byteLength) {
      if (end > this.maxBytes) {
        throw new RangeError(`WASM memory exhausted: need ${end} bytes, maximum is ${this.maxBytes} (RuntimeOptions.maximumBytes)`);
      }
      this.memory.grow(Math.ceil((end - this.memory.buffer.byteLength) / PAGE));
    }
    this.top = end;
    return ptr;
  }

  /** Arena position, for releasing scratch later with reset(mark). */
  mark(): number {
    return this.top;
  }

  /** Free everything allocated after `mark`. The bytes are not cleared. */
  reset(mark: number): void {
    this.top = mark;
  }

  /** Bytes of memory currently in use by the arena. */
  get used(): number {
    return this.top;
  }

  // ---- views and uploads -----------------------------------------------------------------------------------------
  // Views are cheap; take them when needed rather than keeping them, since growing the memory replaces its buffer.

  f32(ptr: Ptr, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, n);
  }

  /**
   * Views of the whole memory, for hot loops that touch many small regions (index = byte offset / 4). Kept until the
   * memory grows, which gives it a new, longer buffer.
   */
  heap(): { f32: Float32Array; i32: Int32Array } {
    const buffer = this.memory.buffer;
    if (this.heapViews?.buffer !== buffer) this.heapViews = { buffer, f32: new Float32Array(buffer), i32: new Int32Array(buffer) };
    return this.heapViews;
  }
  private heapViews: { buffer: ArrayBufferLike; f32: Float32Array; i32: Int32Array } | undefined;
  i32(ptr: Ptr, n: number): Int32Array {
    return new Int32Array(this.memory.buffer, ptr, n);
  }
  u16(ptr: Ptr, n: number): Uint16Array {
    return new Uint16Array(this.memory.buffer, ptr, n);
  }
  i16(ptr: Ptr, n: number): Int16Array {
    return new Int16Array(this.memory.buffer, ptr, n);
  }
  i8(ptr: Ptr, n: number): Int8Array {
    return new Int8Array(this.memory.buffer, ptr, n);
  }
  u8(ptr: Ptr, n: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, ptr, n);
  }

  /** Allocate and copy in. */
  putF32(src: ArrayLike<number>): Ptr {
    const p = this.alloc(src.length * 4);
    this.f32(p, src.length).set(src);
    return p;
  }
  putI32(src: ArrayLike<number>): Ptr {
    const p = this.alloc(src.length * 4);
    this.i32(p, src.length).set(src);
    return p;
  }
  putU16(src: ArrayLike<number>): Ptr {
    const p = this.alloc(src.length * 2);
    this.u16(p, src.length).set(src);
    return p;
  }

  // ---- weight conversion (load time) ----------------------------------------------------------------------------

  /** Quantize f32 [rows, cols] (a Ptr into this memory, or an array that is copied in temporarily) to q8_0. */
  quantizeQ8(src: Ptr | Float32Array, rows: number, cols: number): Q8Matrix {
    const qs = this.alloc(q8WeightBytes(rows, cols));
    const d = this.alloc(q8ScaleBytes(rows, cols));
    if (typeof src === 'number') {
      this.exports.quantize_q8_0(qs, d, src, rows, cols, 0, rows);
    } else {
      // Copy in chunks of rows to a scratch area above the result, so big matrices need little extra memory.
      const mark = this.mark();
      const chunkRows = Math.max(1, Math.min(rows, Math.floor((4 << 20) / (cols * 4))));
      const tmp = this.alloc(chunkRows * cols * 4);
      for (let r = 0; r < rows; r += chunkRows) {
        const n = Math.min(chunkRows, rows - r);
        this.f32(tmp, n * cols).set(src.subarray(r * cols, (r + n) * cols));
        const nb = q8Blocks(cols);
        this.exports.quantize_q8_0(qs + r * nb * 32, d + r * nb * 4, tmp, n, cols, 0, n);
      }
      this.reset(mark);
    }
    return { qs, d, rows, cols };
  }

  /** Convert f32 values to f16 (round to nearest even) into new memory; returns the u16 array's pointer. */
  toF16(src: Ptr | Float32Array, n = typeof src === 'number' ? 0 : src.length): Ptr {
    const dst = this.alloc(n * 2);
    if (typeof src === 'number') {
      this.exports.f32_to_f16(dst, src, n);
    } else {
      const mark = this.mark();
      const tmp = this.putF32(src);
      this.exports.f32_to_f16(dst, tmp, n);
      this.reset(mark);
    }
    return dst;
  }

  /** Upload rope tables (see ropeTables). */
  putRopeTables(invFreq: Float32Array, maxPos: number): { cos: Ptr; sin: Ptr } {
    const t = ropeTables(invFreq, maxPos);
    return { cos: this.putF32(t.cos), sin: this.putF32(t.sin) };
  }

  // ---- kernels (single-threaded; see jobs.ts / pool.ts for the threaded versions) --------------------------------

  /** out[t, r] = Σ_c W[r, c]·x[t, c] for rows [r0, r1); W f32 [rows, cols], x [T, cols], out [T, rows]. */
  matmulF32(out: Ptr, x: Ptr, w: Ptr, T: number, rows: number, cols: number, r0 = 0, r1 = rows): void {
    this.exports.matmul_f32(out, x, w, T, rows, cols, r0, r1);
  }
  /** As matmulF32 with W f16 (u16 bits, finite values). */
  matmulF16(out: Ptr, x: Ptr, w: Ptr, T: number, rows: number, cols: number, r0 = 0, r1 = rows): void {
    this.exports.matmul_f16(out, x, w, T, rows, cols, r0, r1);
  }
  /** q8_0 weights × q8 activations (from quantizeQ8Act): integer dot products per block. */
  matmulQ8(out: Ptr, xq: Ptr, xd: Ptr, w: Q8Matrix, T: number, r0 = 0, r1 = w.rows): void {
    this.exports.matmul_q8_0(out, xq, xd, w.qs, w.d, T, w.rows, w.cols, r0, r1);
  }
  /** q8_0 weights × f32 activations, dequantizing on the fly (slower, no activation rounding). */
  matmulQ8F32(out: Ptr, x: Ptr, w: Q8Matrix, T: number, r0 = 0, r1 = w.rows): void {
    this.exports.matmul_q8_0_f32(out, x, w.qs, w.d, T, w.rows, w.cols, r0, r1);
  }
  /** x f32 [T, cols] → xq int16 [T][blocks·32] (q8ActBytes), xd f32 [T][blocks]. */
  quantizeQ8Act(xq: Ptr, xd: Ptr, x: Ptr, T: number, cols: number): void {
    this.exports.quantize_q8_act(xq, xd, x, T, cols);
  }
  dequantizeQ8(out: Ptr, w: Q8Matrix): void {
    this.exports.dequantize_q8_0(out, w.qs, w.d, w.rows, w.cols, 0, w.rows);
  }
  f32ToF16(dst: Ptr, src: Ptr, n: number): void {
    this.exports.f32_to_f16(dst, src, n);
  }
  f16ToF32(dst: Ptr, src: Ptr, n: number): void {
    this.exports.f16_to_f32(dst, src, n);
  }
  /** T rows of n: out = x / sqrt(mean(x²) + eps) ⊙ w (out may alias x). */
  rmsnorm(out: Ptr, x: Ptr, w: Ptr, T: number, n: number, eps: number): void {
    this.exports.rmsnorm(out, x, w, T, n, eps);
  }
  /** Rotate-half RoPE in place on x [T, nHeads, headDim]; token t at position pos[t] (i32 array). */
  rope(x: Ptr, T: number, nHeads: number, headDim: number, tables: { cos: Ptr; sin: Ptr }, pos: Ptr): void {
    this.exports.rope(x, T, nHeads, headDim, tables.cos, tables.sin, pos);
  }
  softmax(x: Ptr, n: number): void {
    this.exports.softmax(x, n);
  }
  /** gate = silu(gate) ⊙ up */
  swiglu(gate: Ptr, up: Ptr, n: number): void {
    this.exports.swiglu(gate, up, n);
  }
  /** x += y */
  add(x: Ptr, y: Ptr, n: number): void {
    this.exports.add(x, y, n);
  }
  /** First index of the maximum (NaN ignored). */
  argmax(x: Ptr, n: number): number {
    return this.exports.argmax(x, n);
  }
  copy(dst: Ptr, src: Ptr, bytes: number): void {
    this.exports.copy(dst, src, bytes);
  }
  attention(a: AttentionArgs): void {
    this.exports.attention(a.out, a.probs, a.q, a.pool, a.pageTable, a.nSlots, a.pageTokens, a.headDim, a.scale,
      a.positions ?? 0, a.queryPos ?? 0, a.accum ?? 0, a.band ?? 0, a.bandFrom ?? 0, a.kvHalf ? 1 : 0);
  }
  /**
   * Store `rows` tokens' k and v (headDim floats each, rowStride bytes apart) in slots slot, slot + 1, … of the head
   * whose pages pageTable lists; kvHalf: the pages hold halves.
   */
  kvWrite(pool: Ptr, pageTable: Ptr, slot: number, k: Ptr, v: Ptr, pageTokens: number, headDim: number, rows = 1,
    rowStride = 0, kvHalf = false): void {
    this.exports.kv_write(pool, pageTable, slot, k, v, pageTokens, headDim, rows, rowStride, kvHalf ? 1 : 0);
  }

  // ---- job lists -------------------------------------------------------------------------------------------------

  /** A job list with room for `capacity` records, allocated in this memory. */
  jobList(capacity: number): JobList {
    return new JobList(this, capacity);
  }

  /** Run a job list on this thread alone (the pool's multi-threaded run gives the same results). */
  runList(list: JobList): void {
    if (this.exports.run_jobs(list.ptr, list.length, 0, 1, 0, 0, -1) !== 0) throw new Error('job list aborted (or it holds a hook: run it through a WorkerPool)');
  }
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}
