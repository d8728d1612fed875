// Job lists: a sequence of kernel calls that every thread of the pool walks through together.
//
// Record layout (mirrored by src/backend/wasm/layout.ts), JOB_BYTES = 128 per record, i32 words:
//   [0] opcode   [1] owner   [2..31] up to 30 arguments (i32, or f32 bit patterns)
// owner SPLIT (-1): the op's natural parallel dimension (rows of a matmul, tokens, elements) is cut into chunks that
//            any thread may run; ops without one (attention, argmax, ...) are one chunk.
// owner ≤ -2: a group id; consecutive records with the same id are one chunk (run in order by one thread).
// owner ≥ 0: the whole op runs on thread owner % nThreads.
// owner TAIL: runs after every other op of its phase, on the thread that finished the last of them (small ops such
//            as a T=1 rmsnorm: a phase boundary costs more than the op).
// Ops between two BARRIERs must be independent of each other (or in one group); after a BARRIER every op before it
// is complete. See "the dynamic schedule" below for how threads share the work.
//
// Control block (ctrl, 64-byte lines so the hot words do not share a cache line; layout.ts CTRL):
//   +128 sleeping phase waiters   +192 abort flag   +256 spin count   +704 live dispatch tag
//   +768 matmul chunk policy: most weight bytes per chunk, and the least number of chunks per matmul   +2048 phase counters

import { matmul_f32, matmul_f16, matmul_f32_flat } from './matmul_float';
import { matmul_q8_0, matmul_q8_0_r1t4, matmul_q8_0_ld, matmul_q8_0_f32, quantize_q8_act } from './q8';
import { rmsnorm, rope, softmax, swiglu, add, argmax, copy } from './elementwise';
import { attention, attention_rows, kv_write } from './attention';
import { matmul_f16_rows4, matmul_f32_rows4 } from './variants';

const JOB_BYTES: usize = 128;
const BAR_WAITERS: usize = 128;
const ABORT: usize = 192;
const SPIN: usize = 256;
const CHUNK_BYTES: usize = 768; // layout.ts CTRL.CHUNK_BYTES
const CHUNK_SPLIT: usize = 772; // layout.ts CTRL.CHUNK_SPLIT

// Opcodes (layout.ts OP).
const OP_BARRIER = 1;
const OP_MATMUL_F32 = 2;
const OP_MATMUL_F16 = 3;
const OP_MATMUL_Q8 = 4;
const OP_MATMUL_Q8_F32 = 5;
const OP_QUANT_Q8_ACT = 6;
const OP_RMSNORM = 7;
const OP_ROPE = 8;
const OP_SOFTMAX = 9;
const OP_SWIGLU = 10;
const OP_ADD = 11;
const OP_ATTENTION = 12;
const OP_KV_WRITE = 13;
const OP_ARGMAX = 14;
const OP_COPY = 15;
const OP_ATTENTION_ROWS = 16;
const OP_ADD_ROWS = 17;
const OP_HOOK = 18;
/** run_jobs returns HOOK_BASE + r when the calling (main) thread reached hook record r. */
const HOOK_BASE = 2;

@inline function ai(rec: usize, k: i32): i32 { return load<i32>(rec + 8 + (<usize>k << 2)); }
@inline function ap(rec: usize, k: i32): usize { return <usize>load<u32>(rec + 8 + (<usize>k << 2)); }
@inline function af(rec: usize, k: i32): f32 { return load<f32>(rec + 8 + (<usize>k << 2)); }

@inline function canSplit(op: i32): bool {
  return op != OP_SOFTMAX && op != OP_ATTENTION && op != OP_ATTENTION_ROWS && op != OP_KV_WRITE && op != OP_ARGMAX && op != OP_COPY && op != OP_HOOK;
}

/**
 * Run record `rec` over [r0, r1) of its split dimension (rows of a matmul, tokens, elements); an op that cannot be
 * split ignores the range. tid picks the attention kernel's per-thread probability scratch (argument 12 = stride).
 */
function exec(rec: usize, op: i32, r0: i32, r1: i32, tid: i32): void {
  execOp(rec, op, r0, r1, tid);
  // Matmuls with a residual argument: resid[t, r0..r1) += out[t, r0..r1) for this chunk's rows, right after
  // computing them (the same float additions as a separate add op, without a phase of its own).
  if (op >= OP_MATMUL_F32 && op <= OP_MATMUL_Q8_F32) {
    const ra = op == OP_MATMUL_Q8 ? 8 : op == OP_MATMUL_Q8_F32 ? 7 : 6;
    const resid = ap(rec, ra);
    if (resid != 0) {
      const T = op == OP_MATMUL_Q8 ? ai(rec, 5) : op == OP_MATMUL_Q8_F32 ? ai(rec, 4) : ai(rec, 3);
      const rows = splitSize(rec, op);
      const out = ap(rec, 0);
      const hiRow = min(r1, rows);
      for (let t = 0; t < T; t++) {
        const off = (<usize>t * <usize>rows + <usize>r0) << 2;
        add(resid + off, out + off, hiRow - r0);
      }
    }
  }
}

function execOp(rec: usize, op: i32, r0: i32, r1: i32, tid: i32): void {
  switch (op) {
    case OP_MATMUL_F32: // out, x, w, T, rows, cols, resid, variant (1: the workbench's four-row decode kernel, 2: f32-flat)
      if (ai(rec, 7) == 1) matmul_f32_rows4(ap(rec, 0), ap(rec, 1), ap(rec, 2), ai(rec, 3), ai(rec, 4), ai(rec, 5), r0, r1);
      else if (ai(rec, 7) == 2) matmul_f32_flat(ap(rec, 0), ap(rec, 1), ap(rec, 2), ai(rec, 3), ai(rec, 4), ai(rec, 5), r0, r1);
      else matmul_f32(ap(rec, 0), ap(rec, 1), ap(rec, 2), ai(rec, 3), ai(rec, 4), ai(rec, 5), r0, r1);
      break;
    case OP_MATMUL_F16: // out, x, w, T, rows, cols, resid, variant (1: the workbench's four-row decode kernel)
      if (ai(rec, 7) == 1) matmul_f16_rows4(ap(rec, 0), ap(rec, 1), ap(rec, 2), ai(rec, 3), ai(rec, 4), ai(rec, 5), r0, r1);
      else matmul_f16(ap(rec, 0), ap(rec, 1), ap(rec, 2), ai(rec, 3), ai(rec, 4), ai(rec, 5), r0, r1);
      break;
    case OP_MATMUL_Q8: // out, xq, xd, wq, wd, T, rows, cols, resid, variant (1: the workbench's one-row prefill kernel, 2: q8-ld)
      if (ai(rec, 9) == 1) matmul_q8_0_r1t4(ap(rec, 0), ap(rec, 1), ap(rec, 2), ap(rec, 3), ap(rec, 4), ai(rec, 5), ai(rec, 6), ai(rec, 7), r0, r1);
      else if (ai(rec, 9) == 2) matmul_q8_0_ld(ap(rec, 0), ap(rec, 1), ap(rec, 2), ap(rec, 3), ap(rec, 4), ai(rec, 5), ai(rec, 6), ai(rec, 7), r0, r1);
      else matmul_q8_0(ap(rec, 0), ap(rec, 1), ap(rec, 2), ap(rec, 3), ap(rec, 4), ai(rec, 5), ai(rec, 6), ai(rec, 7), r0, r1);
      break;
    case OP_MATMUL_Q8_F32: // out, x, wq, wd, T, rows, cols
      matmul_q8_0_f32(ap(rec, 0), ap(rec, 1), ap(rec, 2), ap(rec, 3), ai(rec, 4), ai(rec, 5), ai(rec, 6), r0, r1);
      break;
    case OP_QUANT_Q8_ACT: { // xq, xd, x, T, cols — over tokens
      const cols = ai(rec, 4);
      const nb = (cols + 31) >> 5;
      quantize_q8_act(ap(rec, 0) + <usize>r0 * (<usize>nb << 6), ap(rec, 1) + <usize>r0 * (<usize>nb << 2),
        ap(rec, 2) + <usize>r0 * (<usize>cols << 2), r1 - r0, cols);
      break;
    }
    case OP_RMSNORM: { // out, x, w, T, n, eps — over tokens
      const rb = <usize>ai(rec, 4) << 2;
      rmsnorm(ap(rec, 0) + <usize>r0 * rb, ap(rec, 1) + <usize>r0 * rb, ap(rec, 2), r1 - r0, ai(rec, 4), af(rec, 5));
      break;
    }
    case OP_ROPE: { // x, T, nHeads, headDim, cos, sin, pos — over tokens
      const rb = <usize>ai(rec, 2) * <usize>ai(rec, 3) << 2;
      rope(ap(rec, 0) + <usize>r0 * rb, r1 - r0, ai(rec, 2), ai(rec, 3), ap(rec, 4), ap(rec, 5), ap(rec, 6) + (<usize>r0 << 2));
      break;
    }
    case OP_SOFTMAX: softmax(ap(rec, 0), ai(rec, 1)); break; // x, n
    case OP_ADD_ROWS: { // x, b, T, n: x[t] += b for every row t — over rows
      const rb = <usize>ai(rec, 3) << 2;
      for (let t = r0; t < r1; t++) add(ap(rec, 0) + <usize>t * rb, ap(rec, 1), ai(rec, 3));
      break;
    }
    case OP_SWIGLU: case OP_ADD: { // a, b, n — over elements (multiples of 16)
      const off = <usize>r0 << 2;
      if (op == OP_SWIGLU) swiglu(ap(rec, 0) + off, ap(rec, 1) + off, r1 - r0);
      else add(ap(rec, 0) + off, ap(rec, 1) + off, r1 - r0);
      break;
    }
    case OP_ATTENTION: // out, probs, q, pool, pageTable, nSlots, pageTokens, headDim, scale, positions, queryPos, accum,
      //                  probsStride, band, bandFrom, kvHalf
      attention(ap(rec, 0), ap(rec, 1) + <usize>tid * ap(rec, 12), ap(rec, 2), ap(rec, 3), ap(rec, 4), ai(rec, 5), ai(rec, 6),
        ai(rec, 7), af(rec, 8), ap(rec, 9), ai(rec, 10), ap(rec, 11), ap(rec, 13), ai(rec, 14), ai(rec, 15));
      break;
    case OP_ATTENTION_ROWS: // out, probs, q, rowStride, rows, firstSlots, pool, pageTable, pageTokens, headDim, scale,
      //                       accum, band, bands (descriptor), kvHalf, probsStride
      attention_rows(ap(rec, 0), ap(rec, 1) + <usize>tid * ap(rec, 15), ap(rec, 2), ap(rec, 3), ai(rec, 4), ai(rec, 5),
        ap(rec, 6), ap(rec, 7), ai(rec, 8), ai(rec, 9), af(rec, 10), ap(rec, 11), ap(rec, 12), ap(rec, 13), ai(rec, 14));
      break;
    case OP_KV_WRITE: // pool, pageTable, slot, k, v, pageTokens, headDim, rows, rowStride, kvHalf
      kv_write(ap(rec, 0), ap(rec, 1), ai(rec, 2), ap(rec, 3), ap(rec, 4), ai(rec, 5), ai(rec, 6), ai(rec, 7), ap(rec, 8), ai(rec, 9));
      break;
    case OP_ARGMAX: store<i32>(ap(rec, 0), argmax(ap(rec, 1), ai(rec, 2))); break; // result ptr, x, n
    case OP_COPY: copy(ap(rec, 0), ap(rec, 1), ai(rec, 2)); break; // dst, src, bytes
    case OP_HOOK: break; // handled by the walkers: the main thread returns to JS there
    default: unreachable();
  }
}

/** Run a whole record. */
function execWhole(rec: usize, tid: i32): void {
  const op = load<i32>(rec);
  exec(rec, op, 0, canSplit(op) ? splitSize(rec, op) : 0, tid);
}

/** Size of the split dimension of a splittable record. */
function splitSize(rec: usize, op: i32): i32 {
  switch (op) {
    case OP_MATMUL_F32: case OP_MATMUL_F16: return ai(rec, 4);
    case OP_MATMUL_Q8: return ai(rec, 6);
    case OP_MATMUL_Q8_F32: return ai(rec, 5);
    case OP_QUANT_Q8_ACT: case OP_RMSNORM: return ai(rec, 3);
    case OP_ADD_ROWS: return ai(rec, 2);
    case OP_ROPE: return ai(rec, 1);
    default: return ai(rec, 2); // swiglu, add: elements
  }
}

/**
 * Chunk length (in units of the split dimension) for the dynamic schedule. A chunk should be big enough that
 * claiming it stays a small part of its work, and small enough that the threads can balance. Matmuls: ≤ maxBytes of
 * weight rows per chunk, fewer rows when several tokens share each row, and at most 1/split of the rows; 4-aligned
 * for the kernels' row blocking. The pool writes (maxBytes, split) into ctrl (pool.ts MATMUL_CHUNK_POLICIES; the
 * shipped default is 512 KB and a quarter, ~20-30 µs from DRAM and two chunks per thread). Claims cost far more here
 * than their two atomics suggest (and each chunk restarts the prefetcher's stream): measured in paired A/Bs on
 * stories15M with 2 threads, 512 KB instead of 160 KB gave decode f32 +4.5 %, q8_0 +5.5 %, prefill f32 +18 %, q8_0
 * +8 %; then a quarter instead of an eighth of the rows gave decode f32 and q8_0 +10 % (half the rows: only +6 %).
 * Re-measure with `node dist/dev/kernels/wasm-run.js model --variant ...` (docs/bench.md).
 * Per-token ops: an eighth of the tokens. Elementwise: ≥ 4096 elements, 16-aligned.
 */
function chunkLen(ctrl: usize, rec: usize, op: i32, n: i32): i32 {
  if (op == OP_MATMUL_F32 || op == OP_MATMUL_F16 || op == OP_MATMUL_Q8 || op == OP_MATMUL_Q8_F32) {
    const T = op == OP_MATMUL_Q8 ? ai(rec, 5) : op == OP_MATMUL_Q8_F32 ? ai(rec, 4) : ai(rec, 3);
    const cols = op == OP_MATMUL_Q8 ? ai(rec, 7) : op == OP_MATMUL_Q8_F32 ? ai(rec, 6) : ai(rec, 5);
    const rowBytes = op == OP_MATMUL_F32 ? cols << 2 : op == OP_MATMUL_F16 ? cols << 1 : cols + (cols >> 3);
    const maxBytes = load<i32>(ctrl + CHUNK_BYTES);
    const split = max(1, load<i32>(ctrl + CHUNK_SPLIT));
    let byBytes = maxBytes / max(1, rowBytes) / max(1, (T + 3) >> 2);
    let c = min(byBytes, (n + split - 1) / split);
    c = (c + 3) & ~3;
    return max(4, c);
  }
  if (op == OP_SWIGLU || op == OP_ADD) return max(4096, (((n + 7) >> 3) + 15) & ~15);
  return max(1, (n + 7) >> 3); // tokens
}

// ---- the dynamic schedule (nThreads > 1) -------------------------------------------------------------------------
//
// A list is cut into phases at its BARRIERs. All work of a phase is a sequence of chunks, numbered in record order:
// a splittable op (owner SPLIT) contributes ceil(n / chunkLen) chunks, any other unowned op one chunk, and a run of
// consecutive records with the same owner ≤ GROUP_BASE one chunk (run in order by one thread: e.g. the attention
// rows that accumulate into one head's scores). Threads claim chunk numbers from the phase's counter and execute
// them; the phase ends when its done counter reaches the total. Records with owner ≥ 0 are pinned: only thread
// owner % nThreads runs them (they count towards the total too).
//
// So a thread that is descheduled (2 threads on a busy 2-core machine) delays nothing: the other claims its
// share. Under a static split every barrier would wait a scheduler time slice (~0.4 ms measured) for it.
//
// Per phase p, at ctrl + PHASES + 32·p: claim (tag << 16 | next chunk), done (tag << 16 | chunks, pinned and tail
// records done), their total, the claimable chunks, the tail records, 1 if the phase is tails only. A phase of tails only gets one empty chunk,
// whose finisher runs them.
// The tag is the dispatch sequence number (1..65535, pool.ts): plan_jobs writes fresh counters before a list is
// published, and a thread still walking an older list (it was descheduled while the others finished it) sees a
// foreign tag, claims nothing and leaves. Claims are compare-and-swap on a word whose tag must match, so a late
// thread can never take a chunk of a newer list; pinned records check CUR_RUN first (the main thread sets it to 0
// when a list is complete, before the list memory can be rewritten).

const PHASES: usize = 2048;
const MAX_PHASES = 256;
const CUR_RUN: usize = 704; // layout.ts CTRL.CUR_RUN
const GROUP_BASE = -2; // owner ≤ GROUP_BASE: a group id
const TAIL: i32 = -2147483648; // layout.ts TAIL

/** Chunks of record rec for the dynamic schedule (0 for pinned records and for group records after the first). */
@inline function recChunks(ctrl: usize, list: usize, r: i32, op: i32, owner: i32): i32 {
  if (owner >= 0 || owner == TAIL) return 0;
  if (owner <= GROUP_BASE) {
    if (r > 0 && load<i32>(list + <usize>(r - 1) * JOB_BYTES, 4) == owner && load<i32>(list + <usize>(r - 1) * JOB_BYTES) != OP_BARRIER) return 0;
    return 1;
  }
  if (!canSplit(op)) return 1;
  const rec = list + <usize>r * JOB_BYTES;
  const n = splitSize(rec, op);
  if (n <= 0) return 1;
  const c = chunkLen(ctrl, rec, op, n);
  return (n + c - 1) / c;
}

/**
 * Main thread, before publishing a list for dispatch `tag`: write every phase's counters. Returns the number of
 * phases, or -1 if the list has more than MAX_PHASES.
 */
export function plan_jobs(list: usize, count: i32, nThreads: i32, ctrl: usize, tag: i32): i32 {
  let p = 0;
  let claimable = 0;
  let pinned = 0;
  let tails = 0;
  for (let r = 0; r <= count; r++) {
    const rec = list + <usize>r * JOB_BYTES;
    if (r == count || load<i32>(rec) == OP_BARRIER) {
      if (p >= MAX_PHASES) return -1;
      const at = ctrl + PHASES + (<usize>p << 5);
      const empty = tails > 0 && claimable + pinned == 0;
      if (empty) claimable = 1; // the empty chunk
      store<i32>(at + 20, empty ? 1 : 0);
      store<i32>(at + 8, claimable + pinned + tails);
      store<i32>(at + 12, claimable);
      store<i32>(at + 16, tails);
      atomic.store<i32>(at + 4, tag << 16);
      atomic.store<i32>(at, tag << 16);
      p++;
      claimable = 0;
      pinned = 0;
      tails = 0;
      continue;
    }
    const owner = load<i32>(rec, 4);
    if (owner == TAIL) tails++;
    else if (owner >= 0) pinned++;
    else claimable += recChunks(ctrl, list, r, load<i32>(rec), owner);
  }
  atomic.store<i32>(ctrl + ABORT, 0);
  atomic.store<i32>(ctrl + CUR_RUN, tag);
  return p;
}

/** Claim the next chunk of phase `at`: its number, or -1 (none left), or -2 (the counters belong to another list). */
@inline function claim(at: usize, tag: i32): i32 {
  for (;;) {
    const c = atomic.load<i32>(at);
    if ((c >>> 16) != tag) return -2;
    const k = c & 0xffff;
    if (k >= load<i32>(at + 12)) return -1;
    if (atomic.cmpxchg<i32>(at, c, c + 1) == c) return k;
  }
  return -1; // unreachable
}

/**
 * One chunk (or pinned record) of the phase [start, end) finished. The thread that finishes the last one runs the
 * phase's tail records, in list order; whoever completes the phase wakes the sleepers.
 */
function finish(ctrl: usize, at: usize, list: usize, start: i32, end: i32, tid: i32): void {
  let d = atomic.add<i32>(at + 4, 1) + 1;
  const total = load<i32>(at + 8);
  const tails = load<i32>(at + 16);
  if (tails > 0 && (d & 0xffff) == total - tails) {
    for (let r = start; r < end; r++) {
      const rec = list + <usize>r * JOB_BYTES;
      if (load<i32>(rec, 4) == TAIL) execWhole(rec, tid);
    }
    d = atomic.add<i32>(at + 4, tails) + tails;
  }
  if ((d & 0xffff) == total && atomic.load<i32>(ctrl + BAR_WAITERS) > 0) atomic.notify(at + 4, -1);
}

/**
 * Wait for the end of phase `at`. Returns 0 when it is complete, 1 when the counters were taken over by a newer list
 * (this thread fell behind: leave), -1 when the list was aborted.
 */
function waitPhase(ctrl: usize, at: usize, tag: i32): i32 {
  const spin = atomic.load<i32>(ctrl + SPIN);
  for (let k = 0; ; k++) {
    const d = atomic.load<i32>(at + 4);
    if ((d >>> 16) != tag) return 1;
    if ((d & 0xffff) >= load<i32>(at + 8)) return 0;
    if (atomic.load<i32>(ctrl + ABORT) != 0) return -1;
    if (k >= spin) {
      // Registered waiters make the last finisher notify; the timeout re-checks ABORT (a failing thread does not
      // know which word we sleep on).
      atomic.add<i32>(ctrl + BAR_WAITERS, 1);
      atomic.wait<i32>(at + 4, d, 1000000);
      atomic.sub<i32>(ctrl + BAR_WAITERS, 1);
    }
  }
  return 0; // unreachable
}

function runDynamic(list: usize, count: i32, tid: i32, nThreads: i32, ctrl: usize, tag: i32, after: i32): i32 {
  let p = 0;
  let start = 0;
  while (start <= count) {
    let end = start;
    while (end < count && load<i32>(list + <usize>end * JOB_BYTES) != OP_BARRIER) end++;
    if (start == end && end == count) break;
    if (end <= after) { // resuming after a hook: this phase lies wholly before it
      p++;
      start = end + 1;
      continue;
    }
    const at = ctrl + PHASES + (<usize>p << 5);
    if (atomic.load<i32>(ctrl + ABORT) != 0) return -1;
    // 1. Pinned records of this thread (only while the list is live: see above). A hook counts as done at once (no
    // op of this list depends on it) and hands the main thread back to JS; the other threads go on meanwhile.
    for (let r = max(start, after + 1); r < end; r++) {
      const rec = list + <usize>r * JOB_BYTES;
      const owner = load<i32>(rec, 4);
      if (owner < 0 || owner % nThreads != tid) continue;
      if (atomic.load<i32>(ctrl + CUR_RUN) != tag) return 1;
      if (load<i32>(rec) == OP_HOOK) {
        finish(ctrl, at, list, start, end, tid);
        return HOOK_BASE + r;
      }
      execWhole(rec, tid);
      finish(ctrl, at, list, start, end, tid);
    }
    // 2. Claimed chunks. The cursor (record r, whose first chunk is number base) only moves forward, since this
    // thread's claims increase.
    let r = start;
    let base = 0;
    for (;;) {
      const k = claim(at, tag);
      if (k == -2) return 1;
      if (k < 0) break;
      if (load<i32>(at + 20) != 0) {
        finish(ctrl, at, list, start, end, tid); // the empty chunk of a tails-only phase
        continue;
      }
      let rec = list + <usize>r * JOB_BYTES;
      let op = load<i32>(rec);
      let owner = load<i32>(rec, 4);
      let nc = recChunks(ctrl, list, r, op, owner);
      while (k >= base + nc) {
        base += nc;
        r++;
        rec = list + <usize>r * JOB_BYTES;
        op = load<i32>(rec);
        owner = load<i32>(rec, 4);
        nc = recChunks(ctrl, list, r, op, owner);
      }
      if (owner <= GROUP_BASE) {
        // The group: this record and the following ones with the same owner.
        for (let g = r; g < end && load<i32>(list + <usize>g * JOB_BYTES, 4) == owner; g++) {
          const gr = list + <usize>g * JOB_BYTES;
          execWhole(gr, tid);
        }
      } else if (canSplit(op)) {
        const n = splitSize(rec, op);
        const c = chunkLen(ctrl, rec, op, n);
        const r0 = (k - base) * c;
        exec(rec, op, r0, min(n, r0 + c), tid);
      } else {
        execWhole(rec, tid);
      }
      finish(ctrl, at, list, start, end, tid);
    }
    // 3. The barrier: the phase's chunks all done.
    const w = waitPhase(ctrl, at, tag);
    if (w != 0) return w;
    p++;
    start = end + 1;
  }
  return 0;
}

/**
 * Run `count` records from `list` as thread tid of nThreads, from just after record `after` (-1: from the start).
 * nThreads == 1: every op whole, in order. Otherwise the dynamic schedule above for dispatch `tag` (plan_jobs must
 * have run). Returns 0; 1 if this thread fell behind and the list was completed without it; -1 if the list was
 * aborted; HOOK_BASE + r when it reached hook record r (pinned to thread 0): the caller runs its JS, then calls again
 * with after = r to rejoin the list.
 */
export function run_jobs(list: usize, count: i32, tid: i32, nThreads: i32, ctrl: usize, tag: i32, after: i32): i32 {
  if (nThreads > 1) return runDynamic(list, count, tid, nThreads, ctrl, tag, after);
  for (let n = after + 1; n < count; n++) {
    const rec = list + <usize>n * JOB_BYTES;
    const op = load<i32>(rec);
    if (op == OP_BARRIER) continue;
    if (op == OP_HOOK) return HOOK_BASE + n;
    execWhole(rec, 0);
  }
  return 0;
}
