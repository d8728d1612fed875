/**
 * Memory layouts shared between the AssemblyScript kernels (kernels/*.ts) and the JS side. Each constant here has a
 * twin in the kernel source named in its comment; the tests exercise every one of them through the kernels.
 */
import { keyOffsetInPage, pageBytes, valueOffsetInPage } from '../../cache/page-layout.js';

// ---- job lists (kernels/jobs.ts) ------------------------------------------------------------------------------

/** Bytes per job record: [opcode, owner, 30 argument words]. */
export const JOB_BYTES = 128;
export const JOB_MAX_ARGS = 30;

/** Opcodes of the job interpreter (kernels/jobs.ts OP_*). */
export const OP = {
  BARRIER: 1,
  MATMUL_F32: 2,
  MATMUL_F16: 3,
  MATMUL_Q8: 4,
  MATMUL_Q8_F32: 5,
  QUANT_Q8_ACT: 6,
  RMSNORM: 7,
  ROPE: 8,
  SOFTMAX: 9,
  SWIGLU: 10,
  ADD: 11,
  ATTENTION: 12,
  KV_WRITE: 13,
  ARGMAX: 14,
  COPY: 15,
  ATTENTION_ROWS: 16,
  ADD_ROWS: 17,
  HOOK: 18,
} as const;

/** owner value: split the op into chunks any thread may run (ops that cannot be split are one chunk). */
export const SPLIT = -1;
/** owner values ≤ GROUP_BASE are group ids: consecutive records with the same id run in order on one thread. */
export const GROUP_BASE = -2;
/** owner value: run after every other op of the phase, by the thread that finished the last of them. */
export const TAIL = -0x80000000;

/**
 * Pool control block, byte offsets. The wasm scheduler (kernels/jobs.ts) reads BAR_WAITERS..SPIN, CUR_RUN and the
 * phase counters; the rest is the JS-side dispatch protocol (pool.ts, worker.ts). Hot words sit on their own 64-byte line.
 */
export const CTRL = {
  BAR_WAITERS: 128, //    threads asleep waiting for a phase to end (wasm)
  ABORT: 192, //          1 = a thread failed: waits return early, the list is abandoned
  SPIN: 256, //           phase-wait spin iterations before sleeping (wasm)
  SEQ: 320, //            dispatch tag (1..65535), changed by the main thread for each job list
  SLEEPERS: 448, //       workers asleep waiting for SEQ (main notifies only if > 0)
  LIST: 576, //           job list pointer
  COUNT: 580, //          job list length
  QUIT: 584, //           1 = workers exit
  ERROR: 640, //          byte length of the first worker error message (0 = none)
  CUR_RUN: 704, //        tag of the list being run, 0 once it is complete (wasm: pinned ops check it)
  CHUNK_BYTES: 768, //    matmul chunk policy: most weight bytes per chunk (wasm; pool.ts MatmulChunkPolicy)
  CHUNK_SPLIT: 772, //    … and at most 1/split of a matmul's rows per chunk
  MESSAGE: 1024, //       the message, UTF-8
  PHASES: 2048, //        per phase (32 bytes each): claim and done counters, totals (wasm)
} as const;
export const CTRL_MESSAGE_BYTES = 1024;
/** Most barriers + 1 that one job list may hold under the pool. */
export const MAX_PHASES = 256;
export const CTRL_BYTES = CTRL.PHASES + MAX_PHASES * 32;

// ---- q8_0 (kernels/q8.ts) ------------------------------------------------------------------------------------

/** Columns per q8_0 block. */
export const Q8_BLOCK = 32;
/** Blocks per row of `cols` columns. */
export const q8Blocks = (cols: number): number => Math.ceil(cols / Q8_BLOCK);
/** Bytes of the int8 values of a q8_0 weight matrix: int8 [rows][blocks·32] (last block zero-padded). */
export const q8WeightBytes = (rows: number, cols: number): number => rows * q8Blocks(cols) * Q8_BLOCK;
/** Bytes of its scales: f32 [rows][blocks]. */
export const q8ScaleBytes = (rows: number, cols: number): number => rows * q8Blocks(cols) * 4;
/** Bytes of quantized activations: int16 [T][blocks·32] (widened so the kernel's inner loop does not widen x). */
export const q8ActBytes = (T: number, cols: number): number => T * q8Blocks(cols) * Q8_BLOCK * 2;

// ---- paged KV store (kernels/attention.ts) ---------------------------------------------------------------------

/**
 * Paged KV layout: src/cache/page-layout.ts, in bytes here. The pool is an array of equal pages; page i starts at
 * pool + i·kvPageBytes(pageTokens, headDim, E) (E = 4: f32 cache, 2: f16 halves); a head's page table is an Int32Array
 * of page indices; positions[s] (Int32Array) is the token position held by slot s.
 */
export const kvPageBytes = pageBytes;
/** Byte offset of slot-in-page `row`'s key within its page. */
export const kvKeyOffset = (row: number, headDim: number, elementBytes = 4): number => keyOffsetInPage(row, headDim) * elementBytes;
/** Byte offset of slot-in-page `row`'s value within its page. */
export const kvValueOffset = (row: number, pageTokens: number, headDim: number, elementBytes = 4): number =>
  valueOffsetInPage(row, pageTokens, headDim) * elementBytes;
