/**
 * Job lists: kernel calls recorded into the shared memory, executed by kernels/jobs.ts run_jobs on every thread of
 * the pool at once (or on one thread with WasmRuntime.runList). One dispatch per list, so a list should carry as much
 * independent work as possible (e.g. the q, k and v projections), with barrier() where a later op reads an earlier
 * op's output.
 *
 * Every method appends one record and returns its index, so a list built once can be replayed per token with only
 * the changing arguments patched (setArg). `owner`: SPLIT (default) cuts the op's rows / tokens / elements into
 * chunks that the threads claim as they go (ops that cannot be split are one chunk); group(id) makes consecutive
 * records one chunk, run in order by one thread; TAIL runs the op after the rest of its phase, on the thread that
 * finished last (for ops too small to be worth a phase of their own); a thread number pins the whole op to that thread (avoid in hot
 * lists: a pinned op waits for its thread, even when that thread is descheduled).
 */
import { GROUP_BASE, JOB_BYTES, JOB_MAX_ARGS, OP, SPLIT } from './layout.js';
import type { AttentionArgs, Ptr, Q8Matrix, WasmRuntime } from './runtime.js';

/**
 * Float matmul kernels: rows1 = shipped (decode one sequential row at a time, prefill 2 rows × 4 tokens); the workbench's
 * variants: rows4 = the four-row decode kernel, flat = f32 prefill without token blocks (the kernel before).
 */
export type DecodeKernel = 'rows1' | 'rows4' | 'flat';

export class JobList {
  readonly ptr: Ptr;
  readonly capacity: number;
  private count = 0;
  // Views over the whole list. They stay valid when the memory grows: a shared memory's buffer is never detached,
  // growing only makes a new, longer SharedArrayBuffer over the same bytes.
  private readonly words: Int32Array;
  private readonly floats: Float32Array;

  constructor(rt: WasmRuntime, capacity: number) {
    this.capacity = capacity;
    this.ptr = rt.alloc(capacity * JOB_BYTES, 64);
    this.words = rt.i32(this.ptr, (capacity * JOB_BYTES) / 4);
    this.floats = rt.f32(this.ptr, (capacity * JOB_BYTES) / 4);
  }

  /** Number of records. */
  get length(): number {
    return this.count;
  }

  clear(): this {
    this.count = 0;
    return this;
  }

  /** Overwrite argument `arg` of record `index` (e.g. the slot count of an attention op, per token). */
  setArg(index: number, arg: number, value: number, isFloat = false): void {
    if (index >= this.count || arg >= JOB_MAX_ARGS) throw new RangeError(`no argument ${arg} of job ${index}`);
    const at = (index * JOB_BYTES) / 4 + 2 + arg;
    if (isFloat) this.floats[at] = value;
    else this.words[at] = value;
  }

  /** Append a record; args are i32 words (pointers ≥ 2^31 wrap to the same bits) except the one at floatArg. */
  private push(op: number, owner: number, args: number[], floatArg = -1): number {
    if (this.count >= this.capacity) throw new RangeError(`job list full (capacity ${this.capacity})`);
    const base = (this.count * JOB_BYTES) / 4;
    this.words[base] = op;
    this.words[base + 1] = owner;
    for (let k = 0; k < args.length; k++) {
      if (k === floatArg) this.floats[base + 2 + k] = args[k];
      else this.words[base + 2 + k] = args[k];
    }
    return this.count++;
  }

  /** Owner value for records that must run in order on one thread (any thread): consecutive records with one id. */
  static group(id: number): number {
    return GROUP_BASE - (id & 0x3fffffff);
  }

  /** Every op before it is complete before any op after it starts. */
  barrier(): number {
    return this.push(OP.BARRIER, SPLIT, []);
  }

  // Matmuls: out[T, rows] = x · Wᵀ. With resid ≠ 0, also resid[T, rows] += out as each chunk of rows is done
  // (a fused residual add: same arithmetic as a separate add, one phase less).
  // kernel 'rows4': the workbench's four-row decode variant (kernels/variants.ts), never used by the engine.
  matmulF32(out: Ptr, x: Ptr, w: Ptr, T: number, rows: number, cols: number, owner = SPLIT, resid: Ptr = 0,
    kernel: DecodeKernel = 'rows1'): number {
    return this.push(OP.MATMUL_F32, owner, [out, x, w, T, rows, cols, resid, kernel === 'rows4' ? 1 : kernel === 'flat' ? 2 : 0]);
  }
  matmulF16(out: Ptr, x: Ptr, w: Ptr, T: number, rows: number, cols: number, owner = SPLIT, resid: Ptr = 0,
    kernel: DecodeKernel = 'rows1'): number {
    return this.push(OP.MATMUL_F16, owner, [out, x, w, T, rows, cols, resid, kernel === 'rows4' ? 1 : 0]);
  }
  // q8_0 kernel 'r1t4': the workbench's one-row prefill variant (kernels/q8.ts matmul_q8_0_r1t4).
  matmulQ8(out: Ptr, xq: Ptr, xd: Ptr, w: Q8Matrix, T: number, owner = SPLIT, resid: Ptr = 0, kernel: 'r2t4' | 'r1t4' | 'ld' = 'r2t4'): number {
    return this.push(OP.MATMUL_Q8, owner, [out, xq, xd, w.qs, w.d, T, w.rows, w.cols, resid, kernel === 'r1t4' ? 1 : kernel === 'ld' ? 2 : 0]);
  }
  matmulQ8F32(out: Ptr, x: Ptr, w: Q8Matrix, T: number, owner = SPLIT, resid: Ptr = 0): number {
    return this.push(OP.MATMUL_Q8_F32, owner, [out, x, w.qs, w.d, T, w.rows, w.cols, resid]);
  }
  /** Split over tokens. */
  quantizeQ8Act(xq: Ptr, xd: Ptr, x: Ptr, T: number, cols: number, owner = SPLIT): number {
    return this.push(OP.QUANT_Q8_ACT, owner, [xq, xd, x, T, cols]);
  }
  /** Split over tokens. */
  rmsnorm(out: Ptr, x: Ptr, w: Ptr, T: number, n: number, eps: number, owner = SPLIT): number {
    return this.push(OP.RMSNORM, owner, [out, x, w, T, n, eps], 5);
  }
  /** Split over tokens. */
  rope(x: Ptr, T: number, nHeads: number, headDim: number, tables: { cos: Ptr; sin: Ptr }, pos: Ptr, owner = SPLIT): number {
    return this.push(OP.ROPE, owner, [x, T, nHeads, headDim, tables.cos, tables.sin, pos]);
  }
  softmax(x: Ptr, n: number, owner = SPLIT): number {
    return this.push(OP.SOFTMAX, owner, [x, n]);
  }
  /** Split over elements. */
  swiglu(gate: Ptr, up: Ptr, n: number, owner = SPLIT): number {
    return this.push(OP.SWIGLU, owner, [gate, up, n]);
  }
  /** Split over elements. */
  add(x: Ptr, y: Ptr, n: number, owner = SPLIT): number {
    return this.push(OP.ADD, owner, [x, y, n]);
  }
  /** x[t, :] += b for every row t of x[T, n] (a bias). Split over rows. */
  addRows(x: Ptr, b: Ptr, T: number, n: number, owner = SPLIT): number {
    return this.push(OP.ADD_ROWS, owner, [x, b, T, n]);
  }
  /** Arguments 5 (nSlots) and 10 (queryPos) are the ones to patch per token. probs + tid·probsStride is the scratch. */
  attention(a: AttentionArgs, owner = SPLIT): number {
    return this.push(OP.ATTENTION, owner, [a.out, a.probs, a.q, a.pool, a.pageTable, a.nSlots, a.pageTokens, a.headDim,
      a.scale, a.positions ?? 0, a.queryPos ?? 0, a.accum ?? 0, a.probsStride ?? 0, a.band ?? 0, a.bandFrom ?? 0,
      a.kvHalf ? 1 : 0], 8);
  }
  /** `rows` tokens' k and v (rowStride bytes apart) into consecutive slots from `slot`; kvHalf: pages of halves. */
  kvWrite(pool: Ptr, pageTable: Ptr, slot: number, k: Ptr, v: Ptr, pageTokens: number, headDim: number, owner = SPLIT,
    rows = 1, rowStride = 0, kvHalf = false): number {
    return this.push(OP.KV_WRITE, owner, [pool, pageTable, slot, k, v, pageTokens, headDim, rows, rowStride, kvHalf ? 1 : 0]);
  }
  /**
   * Attention of `rows` consecutive query rows of one head (rowStride bytes apart in q and out) over a head's pages:
   * row j sees slots [0, firstSlots + j + 1). band ≠ 0: add each row's probabilities of its last w_k + 1 visible
   * slots to band + k·stride for each band k of the descriptor `bands` = i32 [K, stride bytes, w_0 … w_{K−1}].
   * probs + tid·probsStride is the per-thread scratch.
   */
  attentionRows(a: { out: Ptr; probs: Ptr; probsStride: number; q: Ptr; rowStride: number; rows: number; firstSlots: number;
    pool: Ptr; pageTable: Ptr; pageTokens: number; headDim: number; scale: number; accum: Ptr; band: Ptr; bands: Ptr;
    kvHalf: boolean }, owner = SPLIT): number {
    return this.push(OP.ATTENTION_ROWS, owner, [a.out, a.probs, a.q, a.rowStride, a.rows, a.firstSlots, a.pool, a.pageTable,
      a.pageTokens, a.headDim, a.scale, a.accum, a.band, a.bands, a.kvHalf ? 1 : 0, a.probsStride], 10);
  }
  /** Writes the index (i32) to result. */
  argmax(result: Ptr, x: Ptr, n: number, owner = SPLIT): number {
    return this.push(OP.ARGMAX, owner, [result, x, n]);
  }
  copy(dst: Ptr, src: Ptr, bytes: number, owner = SPLIT): number {
    return this.push(OP.COPY, owner, [dst, src, bytes]);
  }
  /**
   * A point where the main thread leaves the list to run JS (WorkerPool.run's onHook, with this record's index and
   * `id`) while the other threads go on with the list; it then rejoins. Nothing in the list may depend on the hook.
   */
  hook(id: number): number {
    return this.push(OP.HOOK, 0, [id]);
  }
  /** Integer argument k of record `index`. */
  arg(index: number, k: number): number {
    if (index >= this.count || k >= JOB_MAX_ARGS) throw new RangeError(`no argument ${k} of job ${index}`);
    return this.words[(index * JOB_BYTES) / 4 + 2 + k];
  }
}
