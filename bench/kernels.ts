/**
 * Kernel benchmarks for the stories15M shapes (dim 288, hidden 768, 6 layers, 32000 vocab).
 *   npm run build && node dist/bench/kernels.js [--quick] [--only=model,single,small]
 *
 * "model" rows time every matmul of one forward pass as job lists shaped like the real decode step: per layer
 * [quantize?] qkv | wo | w1,w3 | w2 with a barrier between dependent groups, then the classifier, each matrix in its
 * own memory (as in the model, so decode streams ~60 MB of f32 weights from DRAM, not from cache). T=1 is decode
 * (classifier included: tok/s = 1 / time); T=64 is a prefill chunk (no classifier: only the last token needs logits).
 * Timings are the best of several repetitions: this machine is shared, and the minimum is the least disturbed run.
 */
import { WasmRuntime, type Ptr, type Q8Matrix } from '../src/backend/wasm/runtime.js';
import { WorkerPool } from '../src/backend/wasm/pool.js';
import type { JobList } from '../src/backend/wasm/jobs.js';
import { q8ActBytes, q8Blocks, kvPageBytes } from '../src/backend/wasm/layout.js';

const quick = process.argv.includes('--quick');
const onlyArg = process.argv.find((a) => a.startsWith('--only='));
const sections = new Set((onlyArg ? onlyArg.slice(7) : 'model,single,small').split(','));
const DIM = 288, HIDDEN = 768, LAYERS = 6, VOCAB = 32000, HEADS = 6, HEAD_DIM = 48;

const rt = await WasmRuntime.create({ initialBytes: 256 << 20 });
const pool = await WorkerPool.create(rt, { threads: 2 });

function randomF32(n: number, scale = 0.05): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (Math.random() * 2 - 1) * scale;
  return a;
}

/** Best time per call in ms: `reps` repetitions of a loop sized to run ≈ targetMs. */
function time(fn: () => void, targetMs = quick ? 40 : 150, reps = quick ? 3 : 7): number {
  fn();
  let n = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn();
    const dt = performance.now() - t0;
    if (dt > targetMs / 4) { n = Math.max(1, Math.round((n * targetMs) / dt)); break; }
    n *= 4;
  }
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn();
    best = Math.min(best, (performance.now() - t0) / n);
  }
  return best;
}

type Row = { what: string; dtype: string; T: number; threads: number; ms: number; flops: number; bytes: number; extra?: string };
const rows: Row[] = [];
function report(r: Row): void {
  rows.push(r);
  const gflops = r.flops / r.ms / 1e6;
  const gbs = r.bytes / r.ms / 1e6;
  console.log(
    `${r.what.padEnd(26)} ${r.dtype.padEnd(6)} T=${String(r.T).padEnd(3)} thr=${r.threads}  ` +
      `${(r.ms * 1000).toFixed(1).padStart(9)} µs  ${gflops.toFixed(1).padStart(6)} GFLOP/s  ${gbs.toFixed(1).padStart(6)} GB/s` +
      (r.extra ? `  ${r.extra}` : ''),
  );
}

// ---- weights ---------------------------------------------------------------------------------------------------

type DType = 'f32' | 'f16' | 'q8' | 'q8f';
interface Mat { rows: number; cols: number; f32: Ptr; f16: Ptr; q8: Q8Matrix }
function makeMat(rows: number, cols: number): Mat {
  const w = randomF32(rows * cols);
  const f32 = rt.putF32(w);
  return { rows, cols, f32, f16: rt.toF16(f32, rows * cols), q8: rt.quantizeQ8(f32, rows, cols) };
}
function weightBytes(m: Mat, dt: DType): number {
  return dt === 'f32' ? m.rows * m.cols * 4 : dt === 'f16' ? m.rows * m.cols * 2 : m.rows * q8Blocks(m.cols) * (32 + 4);
}

console.log('allocating stories15M-shaped weights (f32 + f16 + q8_0 copies)...');
const layers = Array.from({ length: LAYERS }, () => ({
  wq: makeMat(DIM, DIM), wk: makeMat(DIM, DIM), wv: makeMat(DIM, DIM), wo: makeMat(DIM, DIM),
  w1: makeMat(HIDDEN, DIM), w3: makeMat(HIDDEN, DIM), w2: makeMat(DIM, HIDDEN),
}));
const cls = makeMat(VOCAB, DIM);

const TMAX = 64;
const xIn = rt.putF32(randomF32(TMAX * HIDDEN, 1));
const xq = rt.alloc(q8ActBytes(TMAX, HIDDEN)), xd = rt.alloc(TMAX * q8Blocks(HIDDEN) * 4);
const outs = Array.from({ length: 3 }, () => rt.alloc(TMAX * VOCAB * 4));

/** Append out = W·x in the given dtype (q8: against the already-quantized xq/xd). */
function pushMatmul(list: JobList, m: Mat, dt: DType, T: number, out: Ptr): void {
  if (dt === 'f32') list.matmulF32(out, xIn, m.f32, T, m.rows, m.cols);
  else if (dt === 'f16') list.matmulF16(out, xIn, m.f16, T, m.rows, m.cols);
  else if (dt === 'q8') list.matmulQ8(out, xq, xd, m.q8, T);
  else list.matmulQ8F32(out, xIn, m.q8, T);
}

function modelList(dt: DType, T: number, withClassifier: boolean): { list: JobList; flops: number; bytes: number } {
  const list = rt.jobList(256);
  let flops = 0, bytes = 0;
  const group = (mats: Mat[], cols: number): void => {
    if (dt === 'q8') { list.quantizeQ8Act(xq, xd, xIn, T, cols); list.barrier(); }
    mats.forEach((m, i) => { pushMatmul(list, m, dt, T, outs[i]); flops += 2 * T * m.rows * m.cols; bytes += weightBytes(m, dt); });
    list.barrier();
  };
  for (const L of layers) {
    group([L.wq, L.wk, L.wv], DIM);
    group([L.wo], DIM);
    group([L.w1, L.w3], DIM);
    group([L.w2], HIDDEN);
  }
  if (withClassifier) group([cls], DIM);
  return { list, flops, bytes };
}

const DTYPES: DType[] = ['f32', 'f16', 'q8', 'q8f'];
const dtName = (dt: DType): string => (dt === 'q8' ? 'q8_0' : dt === 'q8f' ? 'q8deq' : dt);

// ---- 1. whole-model matmuls ----------------------------------------------------------------------------------------

if (sections.has('model')) console.log('\n== all matmuls of one forward pass (job lists with barriers, as in decode/prefill) ==');
for (const T of sections.has('model') ? [1, TMAX] : []) {
  for (const dt of DTYPES) {
    if (dt === 'q8f' && T > 1) continue; // the dequantize-on-the-fly kernel has no token blocking
    const { list, flops, bytes } = modelList(dt, T, T === 1);
    for (const threads of [1, 2]) {
      const ms = time(() => (threads === 1 ? rt.runList(list) : pool.run(list)));
      const tokS = (T / ms) * 1000;
      report({ what: T === 1 ? 'model decode (+classifier)' : 'model prefill (layers)', dtype: dtName(dt), T, threads, ms, flops, bytes,
        extra: `${tokS.toFixed(0)} tok/s (matmuls only)` });
    }
  }
}

// ---- 2. single matrices ----------------------------------------------------------------------------------------

if (sections.has('single')) console.log('\n== single matrices (one job each; q8_0 includes quantizing x) ==');
const shapes: [string, Mat][] = !sections.has('single') ? [] : [['wq 288×288', layers[0].wq], ['w1 768×288', layers[0].w1], ['w2 288×768', layers[0].w2], ['classifier 32000×288', cls]];
for (const [name, m] of shapes) {
  for (const T of [1, TMAX]) {
    for (const dt of DTYPES) {
      if (dt === 'q8f' && T > 1) continue;
      const list = rt.jobList(4);
      if (dt === 'q8') { list.quantizeQ8Act(xq, xd, xIn, T, m.cols); list.barrier(); }
      pushMatmul(list, m, dt, T, outs[0]);
      for (const threads of [1, 2]) {
        const ms = time(() => (threads === 1 ? rt.runList(list) : pool.run(list)));
        report({ what: name, dtype: dtName(dt), T, threads, ms, flops: 2 * T * m.rows * m.cols, bytes: weightBytes(m, dt) });
      }
    }
  }
}

// ---- 3. small kernels and dispatch -------------------------------------------------------------------------------

if (sections.has('small')) {
console.log('\n== small kernels (1 thread) and pool dispatch ==');
const us = (what: string, ms: number): void => console.log(`${what.padEnd(52)} ${(ms * 1000).toFixed(2).padStart(9)} µs`);
const v288 = rt.putF32(randomF32(TMAX * DIM, 1)), w288 = rt.putF32(randomF32(DIM, 1));
const logits = rt.putF32(randomF32(VOCAB, 5));
const logitsCopy = rt.alloc(VOCAB * 4);
us('rmsnorm 288', time(() => rt.rmsnorm(outs[0], v288, w288, 1, DIM, 1e-5)));
us('quantize activations 288 (q8)', time(() => rt.quantizeQ8Act(xq, xd, v288, 1, DIM)));
us('swiglu 768', time(() => rt.swiglu(outs[0], outs[1], HIDDEN)));
us('argmax 32000', time(() => rt.argmax(logits, VOCAB)));
us('softmax 32000 (incl. 128 KB copy)', time(() => { rt.copy(logitsCopy, logits, VOCAB * 4); rt.softmax(logitsCopy, VOCAB); }));
const tables = rt.putRopeTables(Float32Array.from({ length: HEAD_DIM / 2 }, (_, j) => 1 / Math.pow(10000, (2 * j) / HEAD_DIM)), 1024);
const posP = rt.putI32([100]);
us('rope q+k (12 heads of 48)', time(() => rt.rope(v288, 1, 2 * HEADS, HEAD_DIM, tables, posP)));
for (const nSlots of [256, 1024]) {
  const pageTokens = 16;
  const nPages = nSlots / pageTokens;
  const kvPool = rt.alloc(nPages * HEADS * kvPageBytes(pageTokens, HEAD_DIM));
  rt.f32(kvPool, (nPages * HEADS * kvPageBytes(pageTokens, HEAD_DIM)) / 4).set(randomF32((nPages * HEADS * kvPageBytes(pageTokens, HEAD_DIM)) / 4, 1));
  const tablesP = Array.from({ length: HEADS }, (_, h) => rt.putI32(Array.from({ length: nPages }, (_, i) => h * nPages + i)));
  const probs = rt.alloc(HEADS * nSlots * 4);
  const one = (h: number): void => rt.attention({ out: outs[0] + h * HEAD_DIM * 4, probs: probs + h * nSlots * 4, q: v288 + h * HEAD_DIM * 4,
    pool: kvPool, pageTable: tablesP[h], nSlots, pageTokens, headDim: HEAD_DIM, scale: 1 / Math.sqrt(HEAD_DIM) });
  const ms = time(() => { for (let h = 0; h < HEADS; h++) one(h); });
  us(`attention 6 heads × ${nSlots} slots (one layer)`, ms);
  const list = rt.jobList(HEADS);
  // Unowned: each head is a chunk for whichever thread is free; per-thread probability scratch (probsStride).
  for (let h = 0; h < HEADS; h++) list.attention({ out: outs[0] + h * HEAD_DIM * 4, probs, probsStride: nSlots * 4, q: v288 + h * HEAD_DIM * 4,
    pool: kvPool, pageTable: tablesP[h], nSlots, pageTokens, headDim: HEAD_DIM, scale: 1 / Math.sqrt(HEAD_DIM) });
  us(`  same, heads shared by 2 threads`, time(() => pool.run(list)));
}
const empty = rt.jobList(1);
us('pool.run(empty list), workers spinning', time(() => pool.run(empty)));
const barriers = rt.jobList(32);
for (let i = 0; i < 32; i++) barriers.barrier();
us('one in-list barrier / phase end (32 per list)', time(() => pool.run(barriers)) / 32);
{
  // Dispatch after the worker went to sleep: the Atomics.notify wake-up path.
  let total = 0;
  const n = quick ? 10 : 30;
  for (let i = 0; i < n; i++) {
    const until = performance.now() + 2;
    while (performance.now() < until) { /* let the worker's spin expire */ }
    const t0 = performance.now();
    pool.run(empty);
    total += performance.now() - t0;
  }
  us('pool.run(empty list) waking a sleeping worker (mean)', total / n);
}
}

await pool.close();
