/**
 * The WASM kernel workbench (llm.c dev/cuda style, the WebGPU one's twin in run.ts): check every kernel against its
 * plain-TS reference, then time named variants over several shapes. Re-run it to revisit a measured decision
 * (docs/bench.md lists them with their commands).
 *
 *   node dist/dev/kernels/wasm-run.js check [--only NAME]            every kernel against its reference (wasm-checks.ts)
 *   node dist/dev/kernels/wasm-run.js matmul [--variant V]… [--shape 4096x11008]… [--dtype f32|f16|q8_0|q8_0-f32]…
 *                                            [--tokens 1]… [--threads 1 --threads 2]
 *   node dist/dev/kernels/wasm-run.js model [--variant V]… [--dtype …]… [--tokens 1 --tokens 64]
 *                                            all matmuls of one stories15M forward pass, as the backend's job lists
 *   node dist/dev/kernels/wasm-run.js attention [--ctx 256]… [--kv f32|f16]…   decode (attention) and prefill rows
 *   node dist/dev/kernels/wasm-run.js small                           rmsnorm, rope, swiglu, add, softmax, argmax,
 *                                                                     activation quantization, kv_write
 *   node dist/dev/kernels/wasm-run.js sample                          the sampler per token, whole-vocabulary JS path
 *                                                                     vs the sampling kernel's near path (32,000 logits)
 *   node dist/dev/kernels/wasm-run.js steps [--dtype …]… [--threads …]… [--tokens 64]
 *                                            whole stories15M decode steps, greedy through Backend.forward and sampled
 *                                            through generate(): the last step's job list patched and the workers woken
 *                                            ahead ('kept', shipped) vs a list built afresh ('rebuilt') vs no wake-up
 * Every command takes --rounds N (default 7) and --json.
 *
 * Variants (--variant, several to compare): the matmul chunk policies of src/backend/wasm/pool.ts
 * (512k-quarter = shipped, 512k-eighth, 160k-eighth, 512k-half), q8-r1t4 (the q8_0 prefill kernel before the
 * two-row one: one row × four tokens), q8-ld (q8_0 prefill widening weights with load8x8_s), f32-flat (f32 prefill
 * without the L1-sized token blocks), and f32-rows4 / f16-rows4 (the four-row decode
 * kernels of kernels/variants.ts, with the shipped chunks; they apply to their dtype only). Variants run round-robin within each round, so a noisy machine
 * hits them alike; each row gives the median time over the rounds, the spread (max − min) / median, and the ratio to
 * the first variant. A ratio is flagged '?' when either row's spread exceeds twice its distance from 1: on a shared
 * machine, such a difference is noise.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { WasmRuntime, type Ptr, type Q8Matrix } from '../../src/backend/wasm/runtime.js';
import { WorkerPool, MATMUL_CHUNK_POLICIES, DEFAULT_MATMUL_CHUNK, type MatmulChunkName } from '../../src/backend/wasm/pool.js';
import type { JobList } from '../../src/backend/wasm/jobs.js';
import { q8ActBytes, q8Blocks, q8ScaleBytes, q8WeightBytes, kvPageBytes } from '../../src/backend/wasm/layout.js';
import { runWasmChecks } from './wasm-checks.js';
import { Sampler, type SamplingOptions } from '../../src/generate/sampler.js';
import { prepareSamplingKernel, useSamplingKernel } from '../../src/backend/wasm/sampling.js';
import { loadModel } from '../../src/generate/model.js';
import { argmax } from '../../src/argmax.js';
import type { WasmBackend } from '../../src/backend/wasm/backend.js';

// stories15M (dim 288, hidden 768, vocab 32000) and Llama-2-7B (dim 4096, hidden 11008) weight shapes, rows x cols.
const DEFAULT_SHAPES = ['288x288', '768x288', '288x768', '32000x288', '4096x4096', '11008x4096', '4096x11008', '32000x4096'];
const DTYPES = ['f32', 'f16', 'q8_0', 'q8_0-f32'] as const;
type DType = (typeof DTYPES)[number];

/** A chunk policy, and optionally another kernel for one dtype (which the variant only concerns). */
interface Variant { chunk: MatmulChunkName; kernel?: { dtype: 'f32' | 'f16' | 'q8_0'; name: 'rows4' | 'flat' | 'r1t4' | 'ld' } }
const VARIANTS: Record<string, Variant> = {
  ...Object.fromEntries(Object.keys(MATMUL_CHUNK_POLICIES).map((k) => [k, { chunk: k as MatmulChunkName }])),
  'f32-rows4': { chunk: DEFAULT_MATMUL_CHUNK, kernel: { dtype: 'f32', name: 'rows4' } },
  'f16-rows4': { chunk: DEFAULT_MATMUL_CHUNK, kernel: { dtype: 'f16', name: 'rows4' } },
  // f32 prefill over all tokens at once (kernels/matmul_float.ts matmul_f32_flat), the kernel before token blocks
  'f32-flat': { chunk: DEFAULT_MATMUL_CHUNK, kernel: { dtype: 'f32', name: 'flat' } },
  // q8_0 prefill with one row × four tokens (kernels/q8.ts matmul_q8_0_r1t4), the kernel before q8r2t4
  'q8-r1t4': { chunk: DEFAULT_MATMUL_CHUNK, kernel: { dtype: 'q8_0', name: 'r1t4' } },
  // q8_0 prefill widening the weights with load8x8_s (kernels/q8.ts matmul_q8_0_ld)
  'q8-ld': { chunk: DEFAULT_MATMUL_CHUNK, kernel: { dtype: 'q8_0', name: 'ld' } },
};

function fail(message: string): never {
  console.error(`wasm-run: ${message}`);
  process.exit(2);
}

/** parseArgs, with an unknown or malformed option reported as one line (exit 2) instead of a stack trace. */
function parseArgsOrExit<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  }
}

const { positionals, values } = parseArgsOrExit({
  allowPositionals: true,
  options: {
    variant: { type: 'string', multiple: true }, shape: { type: 'string', multiple: true }, dtype: { type: 'string', multiple: true },
    tokens: { type: 'string', multiple: true }, threads: { type: 'string', multiple: true }, ctx: { type: 'string', multiple: true },
    kv: { type: 'string', multiple: true }, rounds: { type: 'string', default: '7' }, only: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});
const what = positionals[0] ?? 'check';
const int = (s: string, flag: string, min = 1): number => {
  const n = Number(s);
  if (!Number.isInteger(n) || n < min) fail(`--${flag} wants an integer ≥ ${min}, got '${s}'`);
  return n;
};
const rounds = int(values.rounds!, 'rounds');
const variantNames = what === 'steps' ? [] : values.variant ?? [DEFAULT_MATMUL_CHUNK];
for (const v of variantNames) if (!VARIANTS[v]) fail(`unknown variant '${v}'; expected one of ${Object.keys(VARIANTS).join(', ')}`);
const dtypes = (values.dtype ?? ['f32', 'f16', 'q8_0']) as DType[];
for (const d of dtypes) if (!DTYPES.includes(d)) fail(`unknown dtype '${d}'; expected ${DTYPES.join(', ')}`);
const shapes = (values.shape ?? DEFAULT_SHAPES).map((s) => {
  const m = /^(\d+)x(\d+)$/.exec(s);
  if (!m) fail(`--shape wants ROWSxCOLS (e.g. 4096x11008), got '${s}'`);
  return [int(m[1], 'shape'), int(m[2], 'shape')] as const;
});
const tokensList = (values.tokens ?? (what === 'model' ? ['1', '64'] : what === 'steps' ? ['64'] : ['1'])).map((t) => int(t, 'tokens'));
const threadsList = (values.threads ?? ['1', '2']).map((t) => int(t, 'threads'));
if (!['check', 'matmul', 'model', 'attention', 'small', 'sample', 'steps'].includes(what)) fail(`unknown command '${what}'; expected check, matmul, model, attention, small, sample or steps`);

const rt = await WasmRuntime.create({ initialBytes: 64 << 20 });
const pools = new Map<number, WorkerPool>();
async function poolOf(threads: number): Promise<WorkerPool> {
  let p = pools.get(threads);
  if (!p) pools.set(threads, (p = await WorkerPool.create(rt, { threads })));
  return p;
}

const rows: Record<string, unknown>[] = [];
let pending: Record<string, unknown>[] = [];
function print(r: Record<string, unknown>): void {
  rows.push(r);
  pending.push(r);
}
/** Print the rows since the last flush as a markdown table (llama-bench style); numbers right-aligned. */
function flush(): void {
  if (values.json || pending.length === 0) return;
  const keys = [...new Set(pending.flatMap((r) => Object.keys(r)))];
  const cell = (r: Record<string, unknown>, k: string): string => (r[k] === undefined ? '' : String(r[k]));
  const width = keys.map((k) => Math.max(k.length, ...pending.map((r) => cell(r, k).length)));
  const numeric = keys.map((k) => pending.every((r) => /^[-\d.e+%?x]*$/.test(cell(r, k))));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => (numeric[i] ? c.padStart(width[i]) : c.padEnd(width[i]))).join(' | ')} |`;
  console.log(line(keys));
  console.log(`| ${width.map((w, i) => (numeric[i] ? '-'.repeat(w - 1) + ':' : '-'.repeat(w))).join(' | ')} |`);
  for (const r of pending) console.log(line(keys.map((k) => cell(r, k))));
  console.log();
  pending = [];
}

// ---- timing ------------------------------------------------------------------------------------------------------

interface Timing { median: number; spread: number }

/**
 * Time several thunks round-robin: a warm-up call and a calibration (calls per round ≈ 60 ms), then `rounds` rounds
 * in which each thunk runs its batch. Returns per-call ms, median and spread over the rounds.
 */
function timeRoundRobin(fns: (() => void)[]): Timing[] {
  const batch = fns.map((fn) => {
    fn();
    let n = 1;
    for (;;) {
      const t0 = performance.now();
      for (let i = 0; i < n; i++) fn();
      const dt = performance.now() - t0;
      if (dt > 15) return Math.max(1, Math.round((n * 60) / dt));
      n *= 4;
    }
  });
  const samples: number[][] = fns.map(() => []);
  for (let r = 0; r < rounds; r++) {
    fns.forEach((fn, k) => {
      const t0 = performance.now();
      for (let i = 0; i < batch[k]; i++) fn();
      samples[k].push((performance.now() - t0) / batch[k]);
    });
  }
  return samples.map((s) => {
    s.sort((a, b) => a - b);
    const median = s[s.length >> 1];
    return { median, spread: (s[s.length - 1] - s[0]) / median };
  });
}

/** Ratio of b's time to a's (< 1: b faster), '?' when the spreads make it meaningless. */
function ratio(a: Timing, b: Timing): string {
  if (a === b) return 'base';
  const r = b.median / a.median;
  const noisy = Math.max(a.spread, b.spread) > 2 * Math.abs(r - 1);
  return `${r.toFixed(3)}${noisy ? '?' : ''}`;
}

const pct = (x: number): string => `${(x * 100).toFixed(0)}%`;
/** Microseconds from milliseconds: three decimals below 10 µs (a tiny matmul takes ~0.05 µs: '0.0' said nothing). */
const usOf = (ms: number): string => (ms * 1000).toFixed(ms < 0.01 ? 3 : 1);

// ---- random data in wasm memory (values do not matter for timing, only finiteness) --------------------------------

let seed = 0x9e3779b9;
function fillF32(p: Ptr, n: number, scale = 0.05): void {
  const a = rt.f32(p, n);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) | 0;
    a[i] = (seed / 2147483648) * scale;
  }
}
function fillU16Halves(p: Ptr, n: number): void {
  const a = rt.u16(p, n);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) | 0;
    a[i] = (seed & 0x83ff) | 0x2400; // |w| in [2^-6, 2^-5): finite, sign random
  }
}
function fillI8(p: Ptr, n: number): void {
  const a = rt.i32(p, n >> 2);
  for (let i = 0; i < a.length; i++) a[i] = seed = (Math.imul(seed, 1664525) + 1013904223) | 0;
}

interface Weights { rows: number; cols: number; dtype: DType; f32: Ptr; f16: Ptr; q8: Q8Matrix | undefined; bytes: number }
function makeWeights(rowsN: number, cols: number, dtype: DType): Weights {
  const w: Weights = { rows: rowsN, cols, dtype, f32: 0, f16: 0, q8: undefined, bytes: 0 };
  if (dtype === 'f32') { w.f32 = rt.alloc(rowsN * cols * 4); fillF32(w.f32, rowsN * cols); w.bytes = rowsN * cols * 4; }
  else if (dtype === 'f16') { w.f16 = rt.alloc(rowsN * cols * 2); fillU16Halves(w.f16, rowsN * cols); w.bytes = rowsN * cols * 2; }
  else {
    const qs = rt.alloc(q8WeightBytes(rowsN, cols)), d = rt.alloc(q8ScaleBytes(rowsN, cols));
    fillI8(qs, q8WeightBytes(rowsN, cols));
    fillF32(d, rowsN * q8Blocks(cols), 0.01);
    w.q8 = { qs, d, rows: rowsN, cols };
    w.bytes = q8WeightBytes(rowsN, cols) + q8ScaleBytes(rowsN, cols);
  }
  return w;
}

/** Activation buffers for T tokens of up to `cols` columns and outputs of up to `rows`. */
function makeActs(T: number, cols: number, rowsN: number): { x: Ptr; xq: Ptr; xd: Ptr; outs: Ptr[] } {
  const x = rt.alloc(T * cols * 4);
  fillF32(x, T * cols, 1);
  return { x, xq: rt.alloc(q8ActBytes(T, cols)), xd: rt.alloc(T * q8Blocks(cols) * 4), outs: [0, 1, 2].map(() => rt.alloc(T * rowsN * 4)) };
}

/** Append out = x·Wᵀ; q8_0 quantizes the activations first (a phase of its own, as in the backend). */
function pushMatmul(list: JobList, w: Weights, a: { x: Ptr; xq: Ptr; xd: Ptr }, T: number, out: Ptr, v: Variant, quantize = true): void {
  const own = v.kernel?.dtype === w.dtype ? v.kernel.name : undefined;
  if (w.dtype === 'f32') list.matmulF32(out, a.x, w.f32, T, w.rows, w.cols, undefined, 0, own === 'rows4' || own === 'flat' ? own : 'rows1');
  else if (w.dtype === 'f16') list.matmulF16(out, a.x, w.f16, T, w.rows, w.cols, undefined, 0, own === 'rows4' ? own : 'rows1');
  else if (w.dtype === 'q8_0-f32') list.matmulQ8F32(out, a.x, w.q8!, T);
  else {
    if (quantize) { list.quantizeQ8Act(a.xq, a.xd, a.x, T, w.cols); list.barrier(); }
    list.matmulQ8(out, a.xq, a.xd, w.q8!, T, undefined, 0, own === 'r1t4' || own === 'ld' ? own : 'r2t4');
  }
}

/** A runner for a list under a variant: the pool's chunk policy is set before each run (round-robin A/B). */
async function runner(threads: number, list: JobList, v: Variant): Promise<() => void> {
  if (threads === 1) return () => rt.runList(list);
  const pool = await poolOf(threads);
  const policy = MATMUL_CHUNK_POLICIES[v.chunk];
  return () => { pool.setMatmulChunk(policy); pool.run(list); };
}

/**
 * The requested variants that mean something for this dtype and thread count: f32-rows4 / f16-rows4 only for their
 * dtype; on one thread there are no chunks, so variants that differ only in their chunk policy are one run (the first).
 */
function variantsFor(dtype: DType, threads: number): string[] {
  const kernelOf = (n: string): string => (VARIANTS[n].kernel?.dtype === dtype ? VARIANTS[n].kernel!.name : 'shipped');
  const other = (m: string): boolean => VARIANTS[m].kernel !== undefined && VARIANTS[m].kernel!.dtype !== dtype;
  return variantNames.filter((n, i) => {
    if (other(n)) return false;
    return threads > 1 || variantNames.findIndex((m) => kernelOf(m) === kernelOf(n) && !other(m)) === i;
  });
}

// ---- commands ------------------------------------------------------------------------------------------------------

async function check(): Promise<boolean> {
  const results = runWasmChecks(rt, { pool: await poolOf(2), only: values.only });
  if (results.length === 0) fail(`no check matches --only '${values.only}'`);
  for (const r of results) {
    print({ check: r.name, ok: r.ok, maxError: Number.isFinite(r.maxError) ? r.maxError.toExponential(2) : '-', tolerance: r.tolerance,
      ...(r.detail ? { detail: r.detail } : {}) });
  }
  flush();
  return results.every((r) => r.ok);
}

async function matmul(): Promise<void> {
  for (const [rowsN, cols] of shapes) for (const dtype of dtypes) {
    const mark = rt.mark();
    const w = makeWeights(rowsN, cols, dtype);
    for (const T of tokensList) {
      const a = makeActs(T, cols, rowsN);
      for (const threads of threadsList) {
        const names = variantsFor(dtype, threads);
        const fns = await Promise.all(names.map(async (n) => {
          const list = rt.jobList(4);
          pushMatmul(list, w, a, T, a.outs[0], VARIANTS[n]);
          return runner(threads, list, VARIANTS[n]);
        }));
        const t = timeRoundRobin(fns);
        names.forEach((n, k) => print({
          kernel: 'matmul', dtype, variant: n, shape: `${rowsN}x${cols}`, tokens: T, threads, us: usOf(t[k].median),
          'GB/s': (w.bytes / t[k].median / 1e6).toFixed(1), 'GFLOP/s': ((2 * T * rowsN * cols) / t[k].median / 1e6).toFixed(1),
          spread: pct(t[k].spread), vsFirst: ratio(t[0], t[k]),
        }));
      }
    }
    rt.reset(mark);
    flush();
  }
}

/** All matmuls of one stories15M forward pass, grouped as the backend's job lists are (barrier between dependent groups). */
async function model(): Promise<void> {
  const DIM = 288, HIDDEN = 768, LAYERS = 6, VOCAB = 32000;
  for (const dtype of dtypes) {
    const mark = rt.mark();
    // Each matrix in its own memory, as in the model: decode streams the weights from DRAM, not from cache.
    const layers = Array.from({ length: LAYERS }, () => ({
      qkv: [makeWeights(DIM, DIM, dtype), makeWeights(DIM, DIM, dtype), makeWeights(DIM, DIM, dtype)],
      wo: makeWeights(DIM, DIM, dtype), w13: [makeWeights(HIDDEN, DIM, dtype), makeWeights(HIDDEN, DIM, dtype)], w2: makeWeights(DIM, HIDDEN, dtype),
    }));
    const cls = makeWeights(VOCAB, DIM, dtype);
    for (const T of tokensList) {
      const a = makeActs(T, HIDDEN, VOCAB);
      const build = (v: Variant): JobList => {
        const list = rt.jobList(256);
        const group = (ws: Weights[]): void => {
          if (dtype === 'q8_0') { list.quantizeQ8Act(a.xq, a.xd, a.x, T, ws[0].cols); list.barrier(); }
          ws.forEach((w, i) => pushMatmul(list, w, a, T, a.outs[i], v, false));
          list.barrier();
        };
        for (const L of layers) { group(L.qkv); group([L.wo]); group(L.w13); group([L.w2]); }
        if (T === 1) group([cls]); // prefill needs logits of the last token only
        return list;
      };
      const bytes = layers.reduce((s, L) => s + [...L.qkv, L.wo, ...L.w13, L.w2].reduce((t, w) => t + w.bytes, 0), 0) + (T === 1 ? cls.bytes : 0);
      for (const threads of threadsList) {
        const names = variantsFor(dtype, threads);
        const fns = await Promise.all(names.map((n) => runner(threads, build(VARIANTS[n]), VARIANTS[n])));
        const t = timeRoundRobin(fns);
        names.forEach((n, k) => print({
          kernel: T === 1 ? 'model decode (+classifier)' : 'model prefill (layers)', dtype, variant: n, tokens: T, threads,
          us: usOf(t[k].median), 'tok/s': ((T / t[k].median) * 1000).toFixed(0), 'GB/s': (bytes / t[k].median / 1e6).toFixed(1),
          spread: pct(t[k].spread), vsFirst: ratio(t[0], t[k]),
        }));
      }
    }
    rt.reset(mark);
    flush();
  }
}

/** One layer's attention: decode (one query row per head over ctx slots) and a prefill chunk (attention_rows with accumulators and bands). */
async function attention(): Promise<void> {
  const ctxs = (values.ctx ?? ['256', '1024', '4096']).map((c) => int(c, 'ctx'));
  const kvs = values.kv ?? ['f32', 'f16'];
  for (const k of kvs) if (k !== 'f32' && k !== 'f16') fail(`--kv wants f32 or f16, got '${k}'`);
  const models: [string, number, number][] = [['stories15M', 6, 48], ['7B', 32, 128]];
  const pageTokens = 16;
  for (const [name, heads, headDim] of models) for (const kv of kvs) for (const nSlots of ctxs) {
    const mark = rt.mark();
    const E = kv === 'f16' ? 2 : 4;
    const pages = Math.ceil(nSlots / pageTokens);
    const page = kvPageBytes(pageTokens, headDim, E);
    const pool = rt.alloc(heads * pages * page);
    if (E === 4) fillF32(pool, (heads * pages * page) / 4, 1); else fillU16Halves(pool, (heads * pages * page) / 2);
    const tables = Array.from({ length: heads }, (_, h) => rt.putI32(Array.from({ length: pages }, (_, i) => h * pages + i)));
    const q = rt.alloc(64 * heads * headDim * 4), out = rt.alloc(64 * heads * headDim * 4);
    fillF32(q, 64 * heads * headDim, 1);
    const maxThreads = Math.max(...threadsList);
    const probs = rt.alloc(maxThreads * nSlots * 4), accum = rt.alloc(heads * nSlots * 4), band = rt.alloc(heads * 2 * nSlots * 4);
    const bands = rt.putI32([2, nSlots * 4, 16, 64]);
    const decode = rt.jobList(heads), prefill = rt.jobList(heads);
    const rowsT = Math.min(64, nSlots);
    for (let h = 0; h < heads; h++) {
      decode.attention({ out: out + h * headDim * 4, probs, probsStride: nSlots * 4, q: q + h * headDim * 4, pool, pageTable: tables[h], nSlots,
        pageTokens, headDim, scale: 1 / Math.sqrt(headDim), accum: accum + h * nSlots * 4, kvHalf: E === 2 });
      prefill.attentionRows({ out: out + h * headDim * 4, probs, probsStride: nSlots * 4, q: q + h * headDim * 4, rowStride: heads * headDim * 4,
        rows: rowsT, firstSlots: nSlots - rowsT, pool, pageTable: tables[h], pageTokens, headDim, scale: 1 / Math.sqrt(headDim),
        accum: accum + h * nSlots * 4, band: band + h * 2 * nSlots * 4, bands, kvHalf: E === 2 });
    }
    for (const threads of threadsList) {
      const fns = [await runner(threads, decode, VARIANTS[DEFAULT_MATMUL_CHUNK]), await runner(threads, prefill, VARIANTS[DEFAULT_MATMUL_CHUNK])];
      const t = timeRoundRobin(fns);
      const bytes = heads * nSlots * 2 * headDim * E;
      print({ kernel: 'attention (decode)', model: name, heads, headDim, kv, ctx: nSlots, threads, us: (t[0].median * 1000).toFixed(1),
        'GB/s': (bytes / t[0].median / 1e6).toFixed(1), spread: pct(t[0].spread) });
      print({ kernel: `attention_rows (${rowsT} rows, 2 bands)`, model: name, heads, headDim, kv, ctx: nSlots, threads,
        us: (t[1].median * 1000).toFixed(1), 'us/row': ((t[1].median * 1000) / rowsT).toFixed(1), spread: pct(t[1].spread) });
    }
    rt.reset(mark);
  }
  flush();
}

/** The small kernels, one thread, at stories15M and 7B sizes. */
function small(): void {
  const sizes: [string, number, number, number, number][] = [['stories15M', 288, 768, 6, 48], ['7B', 4096, 11008, 32, 128]];
  for (const [name, dim, hidden, heads, headDim] of sizes) {
    const mark = rt.mark();
    const x = rt.alloc(hidden * 4), y = rt.alloc(hidden * 4), g = rt.alloc(hidden * 4), w = rt.alloc(dim * 4), logits = rt.alloc(32000 * 4), copy = rt.alloc(32000 * 4);
    fillF32(x, hidden, 1); fillF32(y, hidden, 1); fillF32(w, dim, 1); fillF32(logits, 32000, 5);
    const xq = rt.alloc(q8ActBytes(1, hidden)), xd = rt.alloc(q8Blocks(hidden) * 4);
    const tables = rt.putRopeTables(Float32Array.from({ length: headDim / 2 }, (_, j) => 1 / Math.pow(10000, (2 * j) / headDim)), 1024);
    const pos = rt.putI32([100]);
    const kvPool = rt.alloc(4 * kvPageBytes(16, headDim)), table = rt.putI32([3, 1, 0, 2]);
    const kernels: [string, number, () => void][] = [
      ['rmsnorm', dim, () => rt.rmsnorm(y, x, w, 1, dim, 1e-5)],
      ['quantize activations (q8)', dim, () => rt.quantizeQ8Act(xq, xd, x, 1, dim)],
      // swiglu shrinks its gate towards 0 (and denormals) if applied again and again: restore it each call.
      ['swiglu (+copy of the gate)', hidden, () => { rt.copy(g, x, hidden * 4); rt.swiglu(g, y, hidden); }],
      ['add', dim, () => rt.add(y, x, dim)],
      ['rope q+k', 2 * heads * headDim, () => rt.rope(x, 1, Math.min(2 * heads, Math.floor(hidden / headDim)), headDim, tables, pos)],
      ['argmax', 32000, () => rt.argmax(logits, 32000)],
      ['softmax (+128 KB copy)', 32000, () => { rt.copy(copy, logits, 32000 * 4); rt.softmax(copy, 32000); }],
      ['kv_write (k and v, one head)', headDim, () => rt.kvWrite(kvPool, table, 37, x, y, 16, headDim)],
    ];
    const t = timeRoundRobin(kernels.map((k) => k[2]));
    kernels.forEach(([kernel, n], k) => print({ kernel, model: name, n, us: (t[k].median * 1000).toFixed(2), spread: pct(t[k].spread) }));
    rt.reset(mark);
  }
  flush();
}

/**
 * The sampler per token on real logits (stories15M's, the first 16 greedy steps from BOS: 32,000 each), each setting
 * through the whole-vocabulary JS path and through the sampling kernel's near path, round-robin. Greedy is argmax
 * (JS) against the kernel's copy + SIMD argmax.
 */
async function sample(): Promise<void> {
  await prepareSamplingKernel();
  const model = await loadModel(undefined, { threads: 1 });
  const V = model.config.vocabSize;
  const kv = model.newSequence();
  const sets: Float32Array[] = [];
  let token = model.config.bosTokenId ?? 1;
  for (let i = 0; i < 16; i++) {
    const [logits] = await model.backend.forward([{ kv, tokens: [token], logits: 'last' }]);
    sets.push(logits.slice());
    token = argmax(logits);
  }
  kv.release();
  model.dispose();
  const settings: [string, SamplingOptions][] = [
    ['greedy', { temperature: 0 }], ['T=1', { temperature: 1 }], ['T=0.8 top-p 0.9', { temperature: 0.8, topP: 0.9 }],
    ['T=0.7 min-p 0.05', { temperature: 0.7, minP: 0.05 }], ['T=0.8 top-k 40 (JS either way)', { temperature: 0.8, topK: 40 }],
  ];
  for (const [name, o] of settings) {
    const paths = ['JS, whole vocabulary', 'kernel, near tokens'];
    const samplers = paths.map(() => new Sampler({ ...o, seed: 1 }, V));
    const fns = paths.map((_, k) => {
      const s = samplers[k];
      return () => {
        useSamplingKernel(k === 1);
        for (const x of sets) s.sample(x);
      };
    });
    const t = timeRoundRobin(fns);
    useSamplingKernel(true);
    // exact passes: top-p draws whose nucleus the far mass's bound left open (a second, exact split; kernel path only)
    paths.forEach((path, k) => print({ sampler: name, path, 'us/token': ((t[k].median * 1000) / sets.length).toFixed(1), spread: pct(t[k].spread), vsFirst: ratio(t[0], t[k]),
      'exact passes': k === 1 && o.topP !== undefined ? `${samplers[k].nearExact}` : '' }));
  }
  flush();
}

/**
 * Whole decode steps of stories15M (full cache), per variant on a model of its own, round-robin: 'tg' decodes greedily
 * from BOS through Backend.forward (as bench's tgN and generate's step call it), 'sample' through Model.generate() at
 * T = 0.8, top-p 0.9 (seeded, no EOS stop) as a user streams it. Variants: 'kept' (shipped: the last step's job list
 * patched, the workers woken at forward()'s start), 'rebuilt' (a list built afresh every step), 'no-wake' (no heads-up
 * to sleeping workers). Each round decodes `--tokens` steps per variant and test on a fresh sequence.
 */
async function steps(): Promise<void> {
  const dts = (values.dtype ?? ['f32', 'q8_0']) as DType[];
  const names = ['kept', 'rebuilt', 'no-wake'];
  for (const dtype of dts) {
    if (dtype === 'q8_0-f32') fail('steps: --dtype f32, f16 or q8_0');
    for (const threads of threadsList) {
      for (const n of tokensList) {
        const models = await Promise.all(names.map(() => loadModel(undefined, { dtype, threads })));
        models.forEach((m, k) => {
          const b = m.backend as WasmBackend;
          b.keepDecodeLists = names[k] !== 'rebuilt';
          b.wakeAhead = names[k] !== 'no-wake';
        });
        const bos = models[0].config.bosTokenId ?? 1;
        const tg = (m: (typeof models)[number]) => async (): Promise<number> => {
          const kv = m.newSequence({ policy: 'full' });
          let token = bos;
          const t0 = performance.now();
          for (let i = 0; i < n; i++) token = argmax((await m.backend.forward([{ kv, tokens: [token], logits: 'last' }]))[0]);
          const dt = performance.now() - t0;
          kv.release();
          return dt / n;
        };
        const sampled = (m: (typeof models)[number]) => async (): Promise<number> => {
          const g = m.generate([bos], { maxTokens: n, ignoreEos: true, temperature: 0.8, topP: 0.9, seed: 1 });
          const t0 = performance.now();
          for await (const piece of g) void piece;
          const dt = performance.now() - t0;
          return dt / (await g.result).generatedTokens;
        };
        const fns = [...models.map(tg), ...models.map(sampled)];
        for (const f of fns) await f(); // warm-up
        const samples: number[][] = fns.map(() => []);
        for (let r = 0; r < rounds; r++) for (let k = 0; k < fns.length; k++) samples[k].push(await fns[k]());
        const t: Timing[] = samples.map((s) => {
          s.sort((a, b) => a - b);
          const median = s[s.length >> 1];
          return { median, spread: (s[s.length - 1] - s[0]) / median };
        });
        fns.forEach((_, k) => {
          const v = k % names.length, base = k - v;
          print({ dtype, threads, test: k < names.length ? `tg${n}` : `sample${n}`, variant: names[v], 'us/token': usOf(t[k].median),
            'tok/s': (1000 / t[k].median).toFixed(1), spread: pct(t[k].spread), vsFirst: ratio(t[base], t[k]),
            'vs tg kept': k < names.length ? '' : (t[0].median / t[k].median).toFixed(3) });
        });
        for (const m of models) m.dispose();
      }
    }
  }
  flush();
}

let ok = true;
try {
  if (what === 'check') ok = await check();
  else if (what === 'matmul') await matmul();
  else if (what === 'model') await model();
  else if (what === 'attention') await attention();
  else if (what === 'sample') await sample();
  else if (what === 'steps') await steps();
  else small();
} catch (err) {
  // e.g. a shape beyond the 4 GiB of wasm32 memory: say so in one line.
  if (!(err instanceof RangeError)) throw err;
  fail(err.message);
}
if (values.json) console.log(JSON.stringify(rows));
for (const p of pools.values()) await p.close();
process.exit(ok ? 0 : 1);
