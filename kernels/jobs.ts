// Job lists: a sequence of kernel calls that every thread of the pool walks through together.
//
// Record layout (mirrored by src/backend/wasm/layout.ts), JOB_BYTES = 64 per record, i32 words:
//   [0] opcode   [1] owner   [2..15] up to 14 arguments (i32, or f32 bit patterns)
// owner < 0: the op's natural parallel dimension (rows of a matmul, tokens, elements) is split across the threads;
//            ops without one (attention, argmax, ...) run on thread 0.
// owner ≥ 0: the whole op runs on thread owner % nThreads (e.g. spread attention heads over threads).
// Ops between two BARRIERs must be independent of each other; a BARRIER makes every thread wait for all the others.
//
// Control block (ctrl, 64-byte lines so the hot words do not share a cache line):
//   +0 barrier arrivals   +64 barrier generation   +128 sleeping barrier waiters   +192 abort flag   +256 spin count

import { matmul_f32, matmul_f16 } from './matmul_float';
import { matmul_q8_0, matmul_q8_0_f32, quantize_q8_act } from './q8';
import { rmsnorm, rope, softmax, swiglu, add, argmax, copy } from './elementwise';
import { attention, kv_write } from './attention';

const JOB_BYTES: usize = 64;
const BAR_COUNT: usize = 0;
const BAR_GEN: usize = 64;
const BAR_WAITERS: usize = 128;
const ABORT: usize = 192;
const SPIN: usize = 256;

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

/**
 * Wait until all nThreads threads arrived. Spins (ctrl+SPIN iterations) before sleeping in memory.atomic.wait32,
 * because a wake-up costs tens of µs. Returns false when the list was aborted (another thread failed).
 */
function barrier(ctrl: usize, nThreads: i32): bool {
  const gen = atomic.load<i32>(ctrl + BAR_GEN);
  // A failing thread sets ABORT, then bumps BAR_GEN. Checked after reading gen: either we see ABORT here, or the
  // bump comes after our read and releases the wait below.
  if (atomic.load<i32>(ctrl + ABORT) != 0) return false;
  if (atomic.add<i32>(ctrl + BAR_COUNT, 1) + 1 == nThreads) {
    atomic.store<i32>(ctrl + BAR_COUNT, 0);
    atomic.add<i32>(ctrl + BAR_GEN, 1);
    if (atomic.load<i32>(ctrl + BAR_WAITERS) > 0) atomic.notify(ctrl + BAR_GEN, -1);
  } else {
    const spin = atomic.load<i32>(ctrl + SPIN);
    for (let k = 0; k < spin && atomic.load<i32>(ctrl + BAR_GEN) == gen; k++) {}
    if (atomic.load<i32>(ctrl + BAR_GEN) == gen) {
      // Registered waiters make the last arriver notify; wait32 re-checks gen atomically, so no wake-up is lost.
      atomic.add<i32>(ctrl + BAR_WAITERS, 1);
      while (atomic.load<i32>(ctrl + BAR_GEN) == gen) atomic.wait<i32>(ctrl + BAR_GEN, gen, -1);
      atomic.sub<i32>(ctrl + BAR_WAITERS, 1);
    }
  }
  return atomic.load<i32>(ctrl + ABORT) == 0;
}

// This thread's share [lo, hi) of a split dimension (set by part()).
let lo = 0;
let hi = 0;

/** Split n into nThreads chunks, each a multiple of `align` (so every thread keeps the same register blocking). */
function part(n: i32, align: i32, tid: i32, nThreads: i32, split: bool): void {
  if (!split) { lo = 0; hi = n; return; }
  const chunk = ((n + nThreads - 1) / nThreads + align - 1) / align * align;
  lo = min(n, tid * chunk);
  hi = min(n, lo + chunk);
}

@inline function ai(rec: usize, k: i32): i32 { return load<i32>(rec + 8 + (<usize>k << 2)); }
@inline function ap(rec: usize, k: i32): usize { return <usize>load<u32>(rec + 8 + (<usize>k << 2)); }
@inline function af(rec: usize, k: i32): f32 { return load<f32>(rec + 8 + (<usize>k << 2)); }

/** Run `count` records from `list` as thread tid of nThreads. Returns 0, or -1 if the list was aborted. */
export function run_jobs(list: usize, count: i32, tid: i32, nThreads: i32, ctrl: usize): i32 {
  for (let n = 0; n < count; n++) {
    const rec = list + <usize>n * JOB_BYTES;
    const op = load<i32>(rec);
    const owner = load<i32>(rec, 4);
    if (op == OP_BARRIER) {
      if (nThreads > 1 && !barrier(ctrl, nThreads)) return -1;
      continue;
    }
    // Who runs it: the named owner; or, unowned, every thread for a splittable op and thread 0 for the others.
    const canSplit = op != OP_SOFTMAX && op != OP_ATTENTION && op != OP_KV_WRITE && op != OP_ARGMAX && op != OP_COPY;
    if (owner >= 0 ? owner % nThreads != tid : !canSplit && tid != 0) continue;
    const split = owner < 0 && canSplit && nThreads > 1;
    switch (op) {
      case OP_MATMUL_F32: case OP_MATMUL_F16: { // out, x, w, T, rows, cols
        part(ai(rec, 4), 4, tid, nThreads, split);
        if (op == OP_MATMUL_F32) matmul_f32(ap(rec, 0), ap(rec, 1), ap(rec, 2), ai(rec, 3), ai(rec, 4), ai(rec, 5), lo, hi);
        else matmul_f16(ap(rec, 0), ap(rec, 1), ap(rec, 2), ai(rec, 3), ai(rec, 4), ai(rec, 5), lo, hi);
        break;
      }
      case OP_MATMUL_Q8: { // out, xq, xd, wq, wd, T, rows, cols
        part(ai(rec, 6), 4, tid, nThreads, split);
        matmul_q8_0(ap(rec, 0), ap(rec, 1), ap(rec, 2), ap(rec, 3), ap(rec, 4), ai(rec, 5), ai(rec, 6), ai(rec, 7), lo, hi);
        break;
      }
      case OP_MATMUL_Q8_F32: { // out, x, wq, wd, T, rows, cols
        part(ai(rec, 5), 4, tid, nThreads, split);
        matmul_q8_0_f32(ap(rec, 0), ap(rec, 1), ap(rec, 2), ap(rec, 3), ai(rec, 4), ai(rec, 5), ai(rec, 6), lo, hi);
        break;
      }
      case OP_QUANT_Q8_ACT: { // xq, xd, x, T, cols — split over tokens
        const cols = ai(rec, 4);
        const nb = (cols + 31) >> 5;
        part(ai(rec, 3), 1, tid, nThreads, split);
        quantize_q8_act(ap(rec, 0) + <usize>lo * (<usize>nb << 6), ap(rec, 1) + <usize>lo * (<usize>nb << 2),
          ap(rec, 2) + <usize>lo * (<usize>cols << 2), hi - lo, cols);
        break;
      }
      case OP_RMSNORM: { // out, x, w, T, n, eps — split over tokens
        const rb = <usize>ai(rec, 4) << 2;
        part(ai(rec, 3), 1, tid, nThreads, split);
        rmsnorm(ap(rec, 0) + <usize>lo * rb, ap(rec, 1) + <usize>lo * rb, ap(rec, 2), hi - lo, ai(rec, 4), af(rec, 5));
        break;
      }
      case OP_ROPE: { // x, T, nHeads, headDim, cos, sin, pos — split over tokens
        const rb = <usize>ai(rec, 2) * <usize>ai(rec, 3) << 2;
        part(ai(rec, 1), 1, tid, nThreads, split);
        rope(ap(rec, 0) + <usize>lo * rb, hi - lo, ai(rec, 2), ai(rec, 3), ap(rec, 4), ap(rec, 5), ap(rec, 6) + (<usize>lo << 2));
        break;
      }
      case OP_SOFTMAX: softmax(ap(rec, 0), ai(rec, 1)); break; // x, n
      case OP_SWIGLU: case OP_ADD: { // a, b, n — split over elements (multiples of 16)
        part(ai(rec, 2), 16, tid, nThreads, split);
        const off = <usize>lo << 2;
        if (op == OP_SWIGLU) swiglu(ap(rec, 0) + off, ap(rec, 1) + off, hi - lo);
        else add(ap(rec, 0) + off, ap(rec, 1) + off, hi - lo);
        break;
      }
      case OP_ATTENTION: // out, probs, q, pool, pageTable, nSlots, pageTokens, headDim, scale, positions, queryPos, accum
        attention(ap(rec, 0), ap(rec, 1), ap(rec, 2), ap(rec, 3), ap(rec, 4), ai(rec, 5), ai(rec, 6), ai(rec, 7),
          af(rec, 8), ap(rec, 9), ai(rec, 10), ap(rec, 11));
        break;
      case OP_KV_WRITE: // pool, pageTable, slot, k, v, pageTokens, headDim
        kv_write(ap(rec, 0), ap(rec, 1), ai(rec, 2), ap(rec, 3), ap(rec, 4), ai(rec, 5), ai(rec, 6));
        break;
      case OP_ARGMAX: store<i32>(ap(rec, 0), argmax(ap(rec, 1), ai(rec, 2))); break; // result ptr, x, n
      case OP_COPY: copy(ap(rec, 0), ap(rec, 1), ai(rec, 2)); break; // dst, src, bytes
      default: unreachable();
    }
  }
  return 0;
}
