/**
 * Each WebGPU kernel against its plain-TS reference on random inputs with odd sizes. Used by the workbench
 * (dev/kernels/run.ts) and by `npm test` (test/webgpu-kernels.test.ts, on lavapipe in CI).
 * A check returns the worst error it saw and the tolerance it holds it to.
 */
import { PagePool } from '../../src/cache/page-pool.js';
import { HeadStore } from '../../src/cache/head-store.js';
import { PUNCT, SPECIAL, type KeepRule } from '../../src/cache/head-policy.js';
import { markKept } from '../../src/cache/evict.js';
import { addInPlace, matmul, rmsnorm, ropeRotateHalf, swiglu, softmax, dot } from '../../src/backend/cpu-ref/math.js';
import { ropeInvFreq } from '../../src/model/rope.js';
import { dequantizeQ8_0, quantizeQ8_0 } from '../../src/backend/wasm/reference-extra.js';
import { argmax } from '../../src/argmax.js';
import { sampleWithUniform, type DeviceSample } from '../../src/generate/sample-rule.js';
import { Sampler } from '../../src/generate/sampler.js';
import { sampleParams } from '../../src/backend/webgpu/wgsl-sample.js';
import { ropeTables } from '../../src/backend/wasm/runtime.js';
import { f16ToF32, f32ToF16 } from '../../src/half.js';
import { mulberry32 } from '../../src/generate/rng.js';
import type { ModelConfig } from '../../src/model/types.js';
import { StepEncoder, type GpuDevice } from '../../src/backend/webgpu/encoder.js';
import { readF32, readU32 } from '../../src/backend/webgpu/io.js';
import { DEFAULT_MATVEC_VARIANT, GpuOps, type CacheBuffers } from '../../src/backend/webgpu/ops.js';
import type { WeightKind } from '../../src/backend/webgpu/wgsl.js';
import {
  applyMovesWgsl, attentionCombineWgsl, attentionStatsWgsl, attentionVec4Fits, attentionVec4Wgsl, attentionWgsl, copyPagesWgsl, evictWgsl, kvFillWgsl,
  kvWriteWgsl, maxKvParts, setScoresWgsl,
} from '../../src/backend/webgpu/wgsl-cache.js';

export interface CheckResult {
  name: string;
  maxError: number;
  tolerance: number;
  ok: boolean;
  detail?: string;
}

type Rand = () => number;
const randn = (r: Rand, n: number, scale = 1): Float32Array<ArrayBuffer> => Float32Array.from({ length: n }, () => (r() * 2 - 1) * scale);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
function result(name: string, maxError: number, tolerance: number, detail?: string): CheckResult {
  return { name, maxError, tolerance, ok: maxError <= tolerance, detail };
}

/** What the GPU sees of a weight matrix in each kind, as f32: the reference multiplies by exactly these values. */
function asStored(kind: WeightKind, w: Float32Array, rows: number, cols: number): Float32Array {
  if (kind === 'f32') return w;
  if (kind === 'f16') return w.map((v) => f16ToF32(f32ToF16(v)));
  const q = quantizeQ8_0(w, rows, cols);
  return dequantizeQ8_0(q.qs, q.d, rows, cols);
}

async function buf(gpu: GpuDevice, data: ArrayBufferView | number, what = 'check'): Promise<GPUBuffer> {
  return typeof data === 'number' ? gpu.buffer(data, what) : gpu.buffer(data.byteLength, what, data);
}

/**
 * out[T, rows] = x'[T, cols] · Wᵀ in each weight kind, through the matrix × vector or the tiled kernel, where x' is x
 * itself, RMSNorm(x) ⊙ g (the fused norm), or silu(gate) · up of [gate | up] rows (the fused SwiGLU).
 */
export async function checkFusedMatmul(ops: GpuOps, kind: WeightKind, variant: string, input: 'norm' | 'swiglu', T: number, rows: number, cols: number, seed = 5): Promise<CheckResult> {
  const r = mulberry32(seed);
  const w = randn(r, rows * cols);
  // Rows of x apart by more than cols (the fused q|k|v layout); whole vec4f apart for the `-xv` variants.
  const xStride = input === 'swiglu' ? 2 * cols : cols + (variant.split('-').includes('xv') ? 4 : 3);
  const x = randn(r, T * xStride, 2);
  const g = randn(r, cols);
  const resid = randn(r, T * rows);
  const m = await ops.uploadMatrix(w, rows, cols, kind, 'W');
  // act: x [T, xStride], out [T, rows] (a residual added to), scratch [T, cols] for the tiled path's norm.
  const act = await buf(ops.gpu, concat(concat(x, resid), new Float32Array(T * cols)));
  const gBuf = await buf(ops.gpu, g);
  const enc = new StepEncoder(ops.gpu);
  const fused = input === 'norm' ? { norm: gBuf, eps: 1e-5, scratchOff: T * xStride + T * rows } : { upOff: cols };
  withVariant(ops, variant, (path) => ops.matmul(enc, act, m, T, 0, xStride, T * xStride, rows, true, path, fused));
  enc.submit();
  const got = await readF32(ops.gpu, act, T * xStride, T * rows);
  const xin = new Float32Array(T * cols);
  for (let t = 0; t < T; t++) {
    const row = x.subarray(t * xStride, t * xStride + cols);
    const dst = xin.subarray(t * cols, (t + 1) * cols);
    if (input === 'norm') rmsnorm(dst, row, g, 1e-5);
    else { dst.set(row); swiglu(dst, x.subarray(t * xStride + cols, t * xStride + 2 * cols)); }
  }
  const want = new Float32Array(T * rows);
  matmul(want, xin, asStored(kind, w, rows, cols), T, rows, cols);
  addInPlace(want, resid);
  return matmulResult(ops, `matmul ${kind} ${variant} + ${input} ${T}x${rows}x${cols}`, variant, T, maxAbsDiff(got, want), 4e-5 * Math.sqrt(cols) + 1e-5);
}

/** Record through the workbench variant `variant` (GpuOps.setMatvecVariant), then back to the default kernel. */
function withVariant(ops: GpuOps, variant: string, record: (path: 'matvec' | 'tiled') => void): void {
  try {
    record(ops.setMatvecVariant(variant));
  } finally {
    ops.setMatvecVariant(DEFAULT_MATVEC_VARIANT);
  }
}

/**
 * The check's result; failed when a vec4 variant (`vrows…`, `tiled4`) ran another kernel, or one without the x staging
 * it asked for, or the default did not take the vec4 kernel with 8 rows a workgroup for 2–8 tokens and 4 otherwise.
 */
function matmulResult(ops: GpuOps, name: string, variant: string, T: number, err: number, tolerance: number): CheckResult {
  const key = ops.lastMatmulKey;
  const defaultWant = `matvec4-${key.split('-')[1]}-r${T >= 2 && T <= 8 ? 8 : 4}-`;
  const wrong = (variant.startsWith('vrows') && !key.startsWith('matvec4-')) || (variant.split('-').includes('xs') && !key.endsWith('-xs'))
    || (variant.split('-').includes('xv') && !key.endsWith('-xv'))
    || (variant === 'tiled4' && !key.startsWith('matmul4-')) || (variant === DEFAULT_MATVEC_VARIANT && !key.startsWith(defaultWant));
  return wrong ? result(name, Infinity, tolerance, `ran ${key}`) : result(name, err, tolerance);
}

/**
 * out[T, rows] = x[T, cols] · Wᵀ in each weight kind, through a matrix × vector variant (`vrows4`, `rows4-tb8`, …:
 * GpuOps.setMatvecVariant) or the tiled kernel.
 */
export async function checkMatmul(ops: GpuOps, kind: WeightKind, variant: string, T: number, rows: number, cols: number, seed = 1): Promise<CheckResult> {
  const r = mulberry32(seed);
  const w = randn(r, rows * cols);
  const x = randn(r, T * cols);
  const resid = randn(r, T * rows);
  const m = await ops.uploadMatrix(w, rows, cols, kind, 'W');
  // act: x [T, cols] then out [T, rows] holding a residual that the kernel adds to.
  const act = await buf(ops.gpu, concat(x, resid));
  const enc = new StepEncoder(ops.gpu);
  withVariant(ops, variant, (path) => ops.matmul(enc, act, m, T, 0, cols, T * cols, rows, true, path));
  enc.submit();
  const got = await readF32(ops.gpu, act, T * cols, T * rows);
  const want = new Float32Array(T * rows);
  matmul(want, x, asStored(kind, w, rows, cols), T, rows, cols);
  addInPlace(want, resid);
  // f32 accumulation over `cols` terms of size ~1 in a different order than the f64 reference.
  return matmulResult(ops, `matmul ${kind} ${variant} ${T}x${rows}x${cols}`, variant, T, maxAbsDiff(got, want), 2e-5 * Math.sqrt(cols) + 1e-5);
}

export async function checkEmbed(ops: GpuOps, kind: WeightKind, seed = 2): Promise<CheckResult> {
  const r = mulberry32(seed);
  const vocab = 37;
  const dim = 45;
  const w = randn(r, vocab * dim);
  const toks = Uint32Array.from([5, 0, 36, 5]);
  const m = await ops.uploadMatrix(w, vocab, dim, kind, 'E');
  const pass = await buf(ops.gpu, toks);
  const act = await buf(ops.gpu, toks.length * dim * 4);
  const enc = new StepEncoder(ops.gpu);
  ops.embed(enc, act, pass, m, toks.length, 0, 0);
  enc.submit();
  const got = await readF32(ops.gpu, act, 0, toks.length * dim);
  const stored = asStored(kind, w, vocab, dim);
  const want = new Float32Array(toks.length * dim);
  toks.forEach((t, i) => want.set(stored.subarray(t * dim, (t + 1) * dim), i * dim));
  return result(`embed ${kind}`, maxAbsDiff(got, want), 1e-6);
}

export async function checkRmsnorm(ops: GpuOps, seed = 3): Promise<CheckResult[]> {
  const r = mulberry32(seed);
  const rows = 5;
  const n = 301;
  const x = randn(r, rows * n, 3);
  const wt = randn(r, n);
  const act = await buf(ops.gpu, concat(x, new Float32Array(rows * n)));
  const enc = new StepEncoder(ops.gpu);
  ops.rmsnorm(enc, act, await buf(ops.gpu, wt), rows, n, 0, n, rows * n, n, 1e-5);
  ops.rmsnorm(enc, act, await buf(ops.gpu, wt), rows, n, 0, n, 0, n, 1e-5); // in place
  enc.submit();
  const got = await readF32(ops.gpu, act, 0, 2 * rows * n);
  const want = new Float32Array(rows * n);
  for (let i = 0; i < rows; i++) rmsnorm(want.subarray(i * n, (i + 1) * n), x.subarray(i * n, (i + 1) * n), wt, 1e-5);
  // q/k norm inside fused rows: 3 tokens × 4 heads of 10, rows 47 apart (the rest of each row untouched).
  const T = 3, heads = 4, hd = 10, stride = 47;
  const y = randn(r, T * stride, 2);
  const hw = randn(r, hd);
  const act2 = await buf(ops.gpu, y);
  const enc2 = new StepEncoder(ops.gpu);
  ops.rmsnorm(enc2, act2, await buf(ops.gpu, hw), T * heads, hd, 3, stride, 3, stride, 1e-6, heads);
  enc2.submit();
  const got2 = await readF32(ops.gpu, act2, 0, T * stride);
  const want2 = y.slice();
  for (let t = 0; t < T; t++) for (let h = 0; h < heads; h++) {
    const o = t * stride + 3 + h * hd;
    rmsnorm(want2.subarray(o, o + hd), y.subarray(o, o + hd), hw, 1e-6);
  }
  return [
    result('rmsnorm', Math.max(maxAbsDiff(got.subarray(0, rows * n), want), maxAbsDiff(got.subarray(rows * n), want)), 1e-5),
    result('rmsnorm per head inside fused rows (q/k norm)', maxAbsDiff(got2, want2), 1e-5),
  ];
}

export async function checkRope(ops: GpuOps, seed = 4): Promise<CheckResult> {
  const r = mulberry32(seed);
  // llama3 scaling, so the table covers that branch; positions up to 300.
  const config = { headDim: 14, ropeTheta: 500000, maxSeqLen: 301, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 } } as unknown as ModelConfig;
  const inv = ropeInvFreq(config);
  const T = 3;
  const nHeads = 3;
  const hd = 14;
  const stride = nHeads * hd + 5;
  const x = randn(r, T * stride);
  const positions = Uint32Array.from([0, 7, 300]);
  const t = ropeTables(inv, config.maxSeqLen);
  const act = await buf(ops.gpu, x);
  const enc = new StepEncoder(ops.gpu);
  ops.rope(enc, act, { cos: await buf(ops.gpu, t.cos), sin: await buf(ops.gpu, t.sin) }, await buf(ops.gpu, positions), T, nHeads, hd, 0, stride, 0);
  enc.submit();
  const got = await readF32(ops.gpu, act, 0, T * stride);
  const want = x.slice();
  for (let i = 0; i < T; i++) for (let h = 0; h < nHeads; h++) ropeRotateHalf(want, i * stride + h * hd, hd, positions[i], inv);
  return result('rope (llama3 scaling)', maxAbsDiff(got, want), 1e-5);
}

export async function checkElementwise(ops: GpuOps, seed = 5): Promise<CheckResult[]> {
  const r = mulberry32(seed);
  const n = 1003;
  const a = randn(r, n, 4);
  const b = randn(r, n, 4);
  const bias = randn(r, 17);
  // Rows of gate | up side by side (the fused projection's output): 17 rows of 59, stride 118 — n = 1003.
  const rowsG = 17, w = 59;
  const fused = new Float32Array(2 * n);
  for (let t = 0; t < rowsG; t++) { fused.set(a.subarray(t * w, (t + 1) * w), t * 2 * w); fused.set(b.subarray(t * w, (t + 1) * w), t * 2 * w + w); }
  const act = await buf(ops.gpu, fused);
  const enc = new StepEncoder(ops.gpu);
  ops.swiglu(enc, act, rowsG, w, 0, w, 2 * w);
  enc.submit();
  const fusedOut = await readF32(ops.gpu, act, 0, 2 * n);
  const g = new Float32Array(n);
  for (let t = 0; t < rowsG; t++) g.set(fusedOut.subarray(t * 2 * w, t * 2 * w + w), t * w);
  const wantG = a.slice();
  swiglu(wantG, b);
  const act2 = await buf(ops.gpu, concat(a, b));
  const enc2 = new StepEncoder(ops.gpu);
  ops.add(enc2, act2, n, 0, n);
  ops.bias(enc2, act2, await buf(ops.gpu, bias), 3, 17, n, 19); // rows of 17 at stride 19 in the second half
  enc2.submit();
  const s = await readF32(ops.gpu, act2, 0, 2 * n);
  const wantS = a.slice();
  addInPlace(wantS, b);
  const wantB = b.slice();
  for (let t = 0; t < 3; t++) for (let i = 0; i < 17; i++) wantB[t * 19 + i] += bias[i];
  return [
    result('swiglu (gate | up rows)', maxAbsDiff(g, wantG), 1e-5),
    result('add', maxAbsDiff(s.subarray(0, n), wantS), 1e-6),
    result('bias', maxAbsDiff(s.subarray(n), wantB), 1e-6),
  ];
}

export async function checkArgmax(ops: GpuOps, seed = 6): Promise<CheckResult> {
  const r = mulberry32(seed);
  const n = 1237;
  const rows = 3;
  const x = randn(r, rows * n);
  x[5] = NaN; x[700] = NaN; // the first NaN wins (src/argmax.ts)
  x[n + 100] = 50; x[n + 900] = 50; // ties: the first index
  x[2 * n + n - 1] = 60; // the last element
  const logits = await buf(ops.gpu, x);
  const tokens = await buf(ops.gpu, 16);
  const enc = new StepEncoder(ops.gpu);
  ops.argmax(enc, logits, tokens, rows, n, 0, 0);
  enc.submit();
  const got = await readU32(ops.gpu, tokens, 0, rows);
  let wrong = 0;
  for (let i = 0; i < rows; i++) if (got[i] !== argmax(x.subarray(i * n, (i + 1) * n))) wrong++;
  return result('argmax', wrong, 0, `got ${[...got]}`);
}

/** Run the sampling kernel over `rows` (each: a logits row of `x` and a rule); returns (token, status) per row. */
async function gpuSample(ops: GpuOps, x: Float32Array, n: number, rows: { src: number; s: DeviceSample }[]): Promise<Uint32Array> {
  const logits = await buf(ops.gpu, x);
  const params = await buf(ops.gpu, Uint32Array.from(rows.flatMap((r) => sampleParams(r.src, r.s))));
  const tokens = await buf(ops.gpu, rows.length * 8);
  const enc = new StepEncoder(ops.gpu);
  ops.sample(enc, logits, tokens, params, rows.length, n, 0, 0, 0);
  enc.submit();
  return readU32(ops.gpu, tokens, 0, 2 * rows.length);
}

/**
 * The sampling kernel against src/generate/sample-rule.ts: the same token for the same uniform, over temperatures,
 * top-k (ties at the cut included), top-p, min-p and their combinations, on rows of odd lengths; greedy rows; the
 * non-finite statuses. Draws whose uniform lies within 1e-5 (relative) of a boundary are not compared (f32 sums in
 * another order may fall on either side); the check fails if fewer than 75 % were compared (one draw in six is u = 0.9999999, next to the last boundary on purpose).
 */
export async function checkSample(ops: GpuOps, seed = 10): Promise<CheckResult[]> {
  const r = mulberry32(seed);
  const out: CheckResult[] = [];
  for (const n of [1237, 5003]) {
    const logitRows: Float32Array[] = [
      randn(r, n, 4),
      randn(r, n, 12),
      // Few distinct values: many ties at every cut.
      randn(r, n, 3).map((v) => Math.round(v * 2) / 2),
      // −Infinity entries (masked tokens) and one dominant logit.
      randn(r, n, 2).map((v, i) => (i % 7 === 3 ? -Infinity : i === n - 2 ? 9 : v)),
    ];
    const x = new Float32Array(n * logitRows.length);
    logitRows.forEach((row, i) => x.set(row, i * n));
    const rules: Omit<DeviceSample, 'uniform'>[] = [
      { invTemperature: 1, topK: 0, topP: 1, minP: 0 },
      { invTemperature: 1 / 0.7, topK: 40, topP: 1, minP: 0 },
      { invTemperature: 1, topK: 1, topP: 1, minP: 0 },
      { invTemperature: 0, topK: 0, topP: 1, minP: 0 },
      { invTemperature: 1, topK: 0, topP: 0.9, minP: 0 },
      { invTemperature: 2, topK: 0, topP: 0.5, minP: 0 },
      { invTemperature: 1, topK: 300, topP: 0.95, minP: 0 },
      { invTemperature: 1, topK: 7, topP: 0.3, minP: 0 },
      { invTemperature: 0.8, topK: 0, topP: 1, minP: 0.05 },
      { invTemperature: 1.3, topK: 100, topP: 0.8, minP: 0.02 },
      { invTemperature: 1, topK: n + 5, topP: 1, minP: 0 },
    ];
    const rows: { src: number; s: DeviceSample }[] = [];
    for (let src = 0; src < logitRows.length; src++) {
      for (const rule of rules) for (let j = 0; j < 6; j++) rows.push({ src, s: { ...rule, uniform: j === 0 ? 0 : j === 5 ? 0.9999999 : r() } });
    }
    const got = await gpuSample(ops, x, n, rows);
    let wrong = 0;
    let compared = 0;
    const detail: string[] = [];
    rows.forEach((row, j) => {
      const want = sampleWithUniform(logitRows[row.src], row.s);
      if (got[2 * j + 1] !== 0) { wrong++; detail.push(`row ${j}: status ${got[2 * j + 1]}`); return; }
      if (want.margin < 1e-5) return;
      compared++;
      if (got[2 * j] !== want.token) { wrong++; if (detail.length < 4) detail.push(`row ${j} (${JSON.stringify(row.s)}, logits ${row.src}): got ${got[2 * j]}, want ${want.token}`); }
    });
    if (compared < 0.75 * rows.length) { wrong++; detail.push(`only ${compared} of ${rows.length} draws were far enough from a boundary`); }
    out.push(result(`sample ${n}: ${rows.length} draws against sample-rule.ts`, wrong, 0, detail.join('; ')));
  }
  // Statuses: NaN, +Infinity, every logit −Infinity (greedy and sampled rows alike).
  const n = 301;
  const bad = new Float32Array(3 * n).fill(-Infinity);
  bad.set(randn(r, n), 0); bad[17] = NaN; bad[30] = Infinity;
  bad.set(randn(r, n), n); bad[n + 200] = Infinity;
  const st = await gpuSample(ops, bad, n, [0, 1, 2].flatMap((src) => [{ src, s: { invTemperature: 1, topK: 0, topP: 0.9, minP: 0, uniform: 0.5 } }, { src, s: { invTemperature: 0, topK: 1, topP: 1, minP: 0, uniform: 0 } }]));
  const statuses = [1, 1, 2, 2, 3, 3];
  out.push(result('sample: non-finite statuses', statuses.filter((s, i) => st[2 * i + 1] !== s).length, 0, `got ${[...st]}`));
  return out;
}

/**
 * The sampling kernel's distribution against the CPU Sampler's (sampler.ts's `distribution`, which sorts): N
 * evenly spaced uniforms u = (j + ½)/N pick each token about N·p times (at most one off per boundary), under top-k,
 * top-p, min-p and temperature. The error is the largest |count/N − p|.
 */
export async function checkSampleDistribution(ops: GpuOps, seed = 11): Promise<CheckResult[]> {
  const r = mulberry32(seed);
  const n = 211;
  const x = randn(r, n, 3);
  const N = 1500;
  const out: CheckResult[] = [];
  const cases = [
    { temperature: 1, topK: 0, topP: 1, minP: 0 },
    { temperature: 0.7, topK: 12, topP: 1, minP: 0 },
    { temperature: 1.5, topK: 0, topP: 0.8, minP: 0 },
    { temperature: 1, topK: 50, topP: 0.9, minP: 0.03 },
  ];
  for (const c of cases) {
    const rows = Array.from({ length: N }, (_, j) => ({ src: 0, s: { invTemperature: 1 / c.temperature, topK: c.topK, topP: c.topP, minP: c.minP, uniform: (j + 0.5) / N } }));
    const got = await gpuSample(ops, x, n, rows);
    const counts = new Float64Array(n);
    for (let j = 0; j < N; j++) counts[got[2 * j]]++;
    const d = new Sampler({ ...c, seed: 1 }, n).distribution(x);
    const p = new Float64Array(n);
    d.ids.forEach((id, k) => { p[id] = d.probs[k]; });
    let err = 0;
    for (let i = 0; i < n; i++) err = Math.max(err, Math.abs(counts[i] / N - p[i]));
    out.push(result(`sample distribution ${JSON.stringify(c)} over ${N} stratified draws`, err, 1.5 / N));
  }
  return out;
}

// ---- the paged cache ----------------------------------------------------------------------------------------------

interface CacheScenario {
  ops: GpuOps;
  b: CacheBuffers;
  shape: { parts: number; pagesPerPart: number; pageTokens: number; headDim: number; half: boolean };
  nLayers: number;
  layer: number;
  nHeads: number;
  nKvHeads: number;
  maxPages: number;
  pool: Float32Array;
  tables: Uint32Array;
  items: { seqSlot: number; rows: number; older: number[] }[];
  q: Float32Array;
  T: number;
  offs: { rowItem: number; rowT: number; item: number; older: number; flags: number };
  pass: Uint32Array;
}

/** A batch of two sequences over scattered pages of two KV parts, GQA 2:1, odd head dim. */
async function cacheScenario(ops: GpuOps, seed: number, olderA: number[], olderB: number[], half = false, hd = 20): Promise<CacheScenario> {
  const r = mulberry32(seed);
  const pt = 4;
  const nLayers = 2;
  const layer = 1;
  const nHeads = 4;
  const nKvHeads = 2;
  const maxPages = 8;
  const pagesPerPart = 40;
  const totalPages = 2 * pagesPerPart;
  const items = [{ seqSlot: 1, rows: 3, older: olderA }, { seqSlot: 0, rows: 2, older: olderB }];
  const T = items.reduce((s, it) => s + it.rows, 0);
  // An f16 cache holds halves: the reference reads the same rounded values.
  const pool = randn(r, totalPages * 2 * pt * hd).map((v) => (half ? f16ToF32(f32ToF16(v)) : v));
  // Each head's page table: distinct pages in a shuffled order, across both parts.
  const perm = Array.from({ length: totalPages }, (_, i) => i).sort(() => r() - 0.5);
  const tables = new Uint32Array(2 * nLayers * nKvHeads * maxPages);
  let next = 0;
  for (let s = 0; s < 2; s++) for (let l = 0; l < nLayers; l++) for (let h = 0; h < nKvHeads; h++) {
    for (let pg = 0; pg < 4; pg++) tables[((s * nLayers + l) * nKvHeads + h) * maxPages + pg] = perm[next++ % totalPages];
  }
  const q = randn(r, T * nHeads * hd, 2);
  // pass: rowItem[T], rowT[T], items[2][4], older[2 · nLayers · nKvHeads], flags[2 · nLayers · nKvHeads · 2]
  const rowItem: number[] = [];
  const rowT: number[] = [];
  items.forEach((it, i) => { for (let t = 0; t < it.rows; t++) { rowItem.push(i); rowT.push(t); } });
  const offs = { rowItem: 0, rowT: T, item: 2 * T, older: 2 * T + 8, flags: 2 * T + 8 + 2 * nLayers * nKvHeads };
  const pass = new Uint32Array(offs.flags + 2 * nLayers * nKvHeads * 4);
  for (let h = 0; h < 2 * nLayers * nKvHeads; h++) pass[offs.flags + 4 * h + 2] = 0xffffffff;
  pass.set(rowItem, offs.rowItem);
  pass.set(rowT, offs.rowT);
  let rowStart = 0;
  items.forEach((it, i) => {
    pass.set([it.seqSlot, rowStart, it.rows, 0], offs.item + 4 * i);
    rowStart += it.rows;
    for (let h = 0; h < nKvHeads; h++) pass[offs.older + (i * nLayers + layer) * nKvHeads + h] = it.older[h];
  });
  const shape = { parts: 2, pagesPerPart, pageTokens: pt, headDim: hd, half };
  const partFloats = pagesPerPart * 2 * pt * hd;
  const stored = (x: Float32Array) => (half ? new Uint32Array(Uint16Array.from(x, f32ToF16).buffer) : x);
  const b: CacheBuffers = {
    raw: await buf(ops.gpu, T * nHeads * 16 * 4),
    act: await buf(ops.gpu, concat(q, new Float32Array(T * nHeads * hd))),
    pass: await buf(ops.gpu, pass),
    tables: await buf(ops.gpu, tables),
    meta: await buf(ops.gpu, totalPages * pt * 4),
    scores: await buf(ops.gpu, totalPages * pt * 4),
    ml: await buf(ops.gpu, T * nHeads * 2 * 4),
    part: await buf(ops.gpu, T * nHeads * 16 * (hd + 2) * 4),
    stats: await buf(ops.gpu, 4096 * 4),
    work: await buf(ops.gpu, 4096 * 4),
    report: await buf(ops.gpu, 1024 * 4),
    kv: [await buf(ops.gpu, stored(pool.subarray(0, partFloats))), await buf(ops.gpu, stored(pool.subarray(partFloats)))],
  };
  return { ops, b, shape, nLayers, layer, nHeads, nKvHeads, maxPages, pool, tables, items, q, T, offs, pass };
}

function scenarioParams(s: CacheScenario) {
  return {
    nLayers: s.nLayers, layer: s.layer, nHeads: s.nHeads, nKvHeads: s.nKvHeads, maxPages: s.maxPages, T: s.T,
    qOff: 0, qStride: s.nHeads * s.shape.headDim, outOff: s.T * s.nHeads * s.shape.headDim,
    rowItemOff: s.offs.rowItem, rowTOff: s.offs.rowT, itemOff: s.offs.item, olderOff: s.offs.older, flagsOff: s.offs.flags,
    mlOff: 0, scale: 1 / Math.sqrt(s.shape.headDim),
  };
}

/**
 * The cache write: each new row's K and V (after RoPE) into its reserved slot (older + t) through the page tables of
 * two KV parts, in f32 or as halves packed two per word, rounded to nearest even exactly as src/half.ts (the CPU
 * backends' f16 cache); values include ties, subnormals, overflow and a NaN.
 */
export async function checkKvWrite(ops: GpuOps, half: boolean, seed = 13): Promise<CheckResult> {
  const s = await cacheScenario(ops, seed, [5, 9], [0, 2]);
  const { pageTokens: pt, headDim: hd } = s.shape;
  const kvDim = s.nKvHeads * hd;
  const r = mulberry32(seed);
  const kv = randn(r, 2 * s.T * kvDim, 3);
  // Edge values: halfway between two halves (both parities), a subnormal half, beyond the half range, NaN.
  kv.set([1 + 2 ** -11, 1 + 3 * 2 ** -11, 2 ** -20 * 1.5, 70000, -1e-9, NaN, 65520, 5.960464477539063e-8]);
  const act = await buf(ops.gpu, kv);
  const shape = { ...s.shape, half };
  const enc = new StepEncoder(ops.gpu);
  ops.kvWrite(enc, shape, { ...s.b, act }, { ...scenarioParams(s), kOff: 0, vOff: s.T * kvDim, kvStride: kvDim, rowMetaOff: s.offs.rowT }, s.T, s.nKvHeads);
  enc.submit();
  const words = s.shape.pagesPerPart * 2 * pt * hd;
  const parts = [await readU32(ops.gpu, s.b.kv[0], 0, words), await readU32(ops.gpu, s.b.kv[1], 0, words)];
  const f32v = new Float32Array(1);
  const bitsOf = (x: number) => { f32v[0] = x; return new Uint32Array(f32v.buffer)[0]; };
  let bad = 0;
  const notes: string[] = [];
  let row = 0;
  s.items.forEach((it, i) => {
    for (let t = 0; t < it.rows; t++, row++) {
      for (let h = 0; h < s.nKvHeads; h++) {
        const slot = it.older[h] + t;
        const page = s.tables[((it.seqSlot * s.nLayers + s.layer) * s.nKvHeads + h) * s.maxPages + Math.floor(slot / pt)];
        const part = parts[Math.floor(page / s.shape.pagesPerPart)];
        const pageWords = (2 * pt * hd) / (half ? 2 : 1);
        for (const [which, off] of [[0, 0], [1, s.T * kvDim]] as const) {
          for (let d = 0; d < hd; d++) {
            const x = kv[off + row * kvDim + h * hd + d];
            const el = (which * pt + (slot % pt)) * hd + d;
            const w = part[(page % s.shape.pagesPerPart) * pageWords + (half ? el >> 1 : el)];
            const got = half ? (w >>> (16 * (el & 1))) & 0xffff : w;
            const want = half ? f32ToF16(x) : bitsOf(x);
            if (got !== want) { bad++; if (notes.length < 3) notes.push(`item ${i} row ${t} head ${h} ${which ? 'V' : 'K'}[${d}] = ${x}: got ${got.toString(16)}, want ${want.toString(16)}`); }
          }
        }
      }
    }
  });
  return result(`cache write (${half ? 'f16, packed halves' : 'f32'})`, bad, 0, notes.join('; '));
}

/** The reference: each row's probabilities over its visible slot prefix, and its output. */
function referenceAttention(s: CacheScenario, item: number, t: number, qh: number): { probs: Float32Array; out: Float32Array } {
  const { pageTokens: pt, headDim: hd } = s.shape;
  const it = s.items[item];
  const kvh = Math.floor(qh / (s.nHeads / s.nKvHeads));
  const n = it.older[kvh] + t + 1;
  const tb = ((it.seqSlot * s.nLayers + s.layer) * s.nKvHeads + kvh) * s.maxPages;
  const keyAt = (slot: number) => s.tables[tb + Math.floor(slot / pt)] * 2 * pt * hd + (slot % pt) * hd;
  const row = s.items.slice(0, item).reduce((a, x) => a + x.rows, 0) + t;
  const qOff = (row * s.nHeads + qh) * hd;
  const probs = new Float32Array(n);
  for (let j = 0; j < n; j++) probs[j] = dot(s.q, qOff, s.pool, keyAt(j), hd) / Math.sqrt(hd);
  softmax(probs);
  const out = new Float32Array(hd);
  for (let j = 0; j < n; j++) for (let d = 0; d < hd; d++) out[d] += probs[j] * s.pool[keyAt(j) + pt * hd + d];
  return { probs, out };
}

/**
 * Paged ragged attention (two sequences, GQA, two KV parts), then the score accumulation over it (which reads the
 * rows' max and sum the attention left). `variant`: GpuOps.attentionVariant; 'vec4' falls back to 'scalar' where the
 * head is not a whole number of 16-byte words (f16 needs hd % 8 = 0: 24 here), and with one chunk (16 slots, chunk
 * ≥ 16) writes its output without the combine kernel.
 */
export async function checkAttention(ops: GpuOps, seed = 7, chunk = 64, half = false, variant: GpuOps['attentionVariant'] = 'vec4', hd = 20): Promise<CheckResult[]> {
  const s = await cacheScenario(ops, seed, [5, 9], [0, 2], half, hd);
  const saved = [ops.attentionChunk, ops.attentionVariant] as const;
  ops.attentionChunk = chunk;
  ops.attentionVariant = variant;
  // Track scores on every head; start them from random values to see the += .
  const flags = s.pass.slice();
  for (let h = 0; h < 2 * s.nLayers * s.nKvHeads; h++) flags[s.offs.flags + 4 * h] = 1;
  ops.gpu.device.queue.writeBuffer(s.b.pass, 0, flags);
  const pt = s.shape.pageTokens;
  const scores0 = randn(mulberry32(seed + 1), 80 * pt);
  ops.gpu.device.queue.writeBuffer(s.b.scores, 0, scores0);
  // The vec4 kernel keeps its scores for the statistics kernel (16 slots a row), the scalar one has it read K again.
  const params = { ...scenarioParams(s), rawStride: ops.keepsRawScores(s.shape) ? 16 : 0 };
  const enc = new StepEncoder(ops.gpu);
  ops.attention(enc, s.shape, s.b, params, s.T, s.nHeads, 16);
  ops.attentionStats(enc, s.shape, s.b, params, 16, 2, s.nKvHeads);
  enc.submit();
  const got = await readF32(ops.gpu, s.b.act, s.T * s.nHeads * hd, s.T * s.nHeads * hd);
  const gotScores = await readF32(ops.gpu, s.b.scores, 0, 80 * pt);
  let outErr = 0;
  const wantScores = scores0.slice();
  const added = new Float64Array(80 * pt);
  let row = 0;
  s.items.forEach((it, i) => {
    for (let t = 0; t < it.rows; t++, row++) {
      for (let qh = 0; qh < s.nHeads; qh++) {
        const ref = referenceAttention(s, i, t, qh);
        outErr = Math.max(outErr, maxAbsDiff(got.subarray((row * s.nHeads + qh) * hd, (row * s.nHeads + qh + 1) * hd), ref.out));
        const kvh = Math.floor(qh / 2);
        const tb = ((it.seqSlot * s.nLayers + s.layer) * s.nKvHeads + kvh) * s.maxPages;
        ref.probs.forEach((p, slot) => { added[s.tables[tb + Math.floor(slot / pt)] * pt + (slot % pt)] += p; });
      }
    }
  });
  for (let i = 0; i < added.length; i++) wantScores[i] += added[i];
  [ops.attentionChunk, ops.attentionVariant] = saved;
  const what = `${attentionVec4Fits({ ...s.shape, half }) ? variant : 'scalar'}, chunks of ${chunk}, head dim ${hd}${half ? ', f16 K/V' : ''}`;
  return [
    result(`attention (paged, ragged, GQA, 2 parts, ${what})`, outErr, 1e-5),
    result(`attention scores (+= probabilities), ${what}`, maxAbsDiff(gotScores, wantScores), 1e-5),
  ];
}

/**
 * FastGen's profiling statistics: column and band sums per query head of a prompt from an empty cache; `chunked`:
 * the prompt's rows in two dispatches (a chunked prefill), the second adding to the first's sums.
 */
export async function checkProfileStats(ops: GpuOps, seed = 8, chunked = false, variant: GpuOps['attentionVariant'] = 'vec4'): Promise<CheckResult> {
  const s = await cacheScenario(ops, seed, [0, 0], [0, 0]);
  const bands = [0, 2];
  const fromRow = 1; // SnapKV's observation window starts inside the pass
  const n0 = s.items[0].rows;
  const split = Math.ceil(n0 / 2);
  // After the pass: the band list (count, the pass's rows, distances), then the items entries of the two chunks.
  const extra = [bands.length, n0, ...bands, s.items[0].seqSlot, 0, split, 0, s.items[1].seqSlot, n0, 0, 0,
    s.items[0].seqSlot, split, n0 - split, split, s.items[1].seqSlot, n0, 0, 0];
  const flags = new Uint32Array(s.pass.length + extra.length);
  flags.set(s.pass);
  flags.set(extra, s.pass.length);
  const bandsAt = s.pass.length;
  s.b.pass = await buf(ops.gpu, flags.length * 4);
  // item 0's heads profile (statistics from offset 0), item 1's track nothing.
  for (let h = 0; h < s.nKvHeads; h++) {
    const head = (0 * s.nLayers + s.layer) * s.nKvHeads + h;
    flags.set([2, 0, bandsAt, fromRow], s.offs.flags + 4 * head);
  }
  ops.gpu.device.queue.writeBuffer(s.b.pass, 0, flags);
  const saved = ops.attentionVariant;
  ops.attentionVariant = variant;
  const params = { ...scenarioParams(s), rawStride: ops.keepsRawScores(s.shape) ? 16 : 0 };
  const enc = new StepEncoder(ops.gpu);
  ops.attention(enc, s.shape, s.b, params, s.T, s.nHeads, 16);
  if (!chunked) ops.attentionStats(enc, s.shape, s.b, params, 16, 2, s.nKvHeads);
  else {
    ops.attentionStats(enc, s.shape, s.b, { ...params, itemOff: bandsAt + 2 + bands.length }, 16, 2, s.nKvHeads);
    ops.attentionStats(enc, s.shape, s.b, { ...params, itemOff: bandsAt + 10 + bands.length }, 16, 2, s.nKvHeads);
  }
  enc.submit();
  ops.attentionVariant = saved;
  const n = s.items[0].rows;
  const got = await readF32(ops.gpu, s.b.stats, 0, (1 + bands.length) * s.nHeads * n);
  let err = 0;
  for (let qh = 0; qh < s.nHeads; qh++) {
    const col = new Float64Array(n);
    const bandSums = bands.map(() => new Float64Array(n));
    for (let t = 0; t < n; t++) {
      const { probs } = referenceAttention(s, 0, t, qh);
      if (t >= fromRow) probs.forEach((p, j) => { col[j] += p; bands.forEach((w, k) => { if (t - j <= w) bandSums[k][j] += p; }); });
    }
    const at = qh * (1 + bands.length) * n;
    err = Math.max(err, maxAbsDiff(got.subarray(at, at + n), col));
    bandSums.forEach((b, k) => { err = Math.max(err, maxAbsDiff(got.subarray(at + (1 + k) * n, at + (2 + k) * n), b)); });
  }
  return result(`profiling column sums and two band sums (from a row on${chunked ? ', the rows in two chunks' : ''}; ${params.rawStride ? 'kept scores' : 'K read again'})`, err, 1e-5);
}

/**
 * Eviction + compaction against the CPU cache itself: a HeadStore of n slots (unique positions, random classes,
 * scores with ties) evicted by markKept + HeadStore.retain, and the same store on the GPU evicted by the keep rule.
 * Every kept slot must hold the same position and the same K/V, in the same order; the report must give the new length
 * and the evicted count, and the work region's bits must name the evicted.
 */
export async function checkEvict(ops: GpuOps, seed = 9, n = 53): Promise<CheckResult> {
  const r = mulberry32(seed);
  const hd = 20;
  const pt = 4;
  const pool = new PagePool({ headDim: hd, pageTokens: pt, slabPages: 8 });
  const special = new Uint8Array(50);
  const punct = new Uint8Array(50);
  for (let i = 0; i < 50; i++) { special[i] = r() < 0.1 ? 1 : 0; punct[i] = !special[i] && r() < 0.2 ? 1 : 0; }
  const store = new HeadStore(pool, { special, punct });
  const positions = Array.from({ length: n + 20 }, (_, i) => i).sort(() => r() - 0.5).slice(0, n);
  const k = randn(r, hd);
  for (const pos of positions) {
    for (let d = 0; d < hd; d++) k[d] = r();
    store.append(k, 0, k.map((v) => -v), 0, pos, Math.floor(r() * 50), Math.floor(r() * 6) / 8 - 0.25); // ties, negatives (SnapKV ranks the window at −1)
  }
  const current = n + 19;
  const rule: KeepRule = { full: false, classMask: SPECIAL | PUNCT, window: 9, sinks: 3, heavy: 11 };

  // GPU copy of the store: one KV part holding the whole arena, a table with the store's pages.
  const totalPages = pool.bytesReserved / pool.pageBytes;
  const meta = new Uint32Array(totalPages * pt);
  const scores = new Float32Array(totalPages * pt);
  for (let s = 0; s < n; s++) {
    const at = store.pages[Math.floor(s / pt)] * pt + (s % pt);
    meta[at] = store.positions[s] | (store.classBits[s] << 30);
    scores[at] = store.scores[s];
  }
  // The head is layer 1 of 2: entries name their layer (a pass evicts every layer in one dispatch), p.layer is not read.
  const maxPages = Math.ceil(n / pt) + 1;
  const tables = new Uint32Array(2 * maxPages).fill(0xffffffff);
  tables.set(store.pages, maxPages);
  const entry = Uint32Array.from([0, 0, n, rule.classMask, rule.window, current, rule.sinks, rule.heavy, 0, 1, 0, 0, /* moves */ 0, 0, 3 * n, 1]);
  const shape = { parts: 1, pagesPerPart: totalPages, pageTokens: pt, headDim: hd };
  const b: CacheBuffers = {
    act: await buf(ops.gpu, 16), raw: await buf(ops.gpu, 16), pass: await buf(ops.gpu, entry), tables: await buf(ops.gpu, tables),
    meta: await buf(ops.gpu, meta), scores: await buf(ops.gpu, scores), ml: await buf(ops.gpu, 16), stats: await buf(ops.gpu, 16), part: await buf(ops.gpu, 16),
    work: await buf(ops.gpu, (4 * n + 1 + Math.ceil(n / 32)) * 4), report: await buf(ops.gpu, 2 * 4), kv: [await buf(ops.gpu, pool.arena.floats.slice(0, totalPages * 2 * pt * hd))],
  };
  const params = { nLayers: 2, layer: 0, nHeads: 1, nKvHeads: 1, maxPages };
  const enc = new StepEncoder(ops.gpu);
  ops.evict(enc, shape, b, { ...params, entryOff: 0 }, 1);
  ops.applyMoves(enc, shape, b, { ...params, entryOff: 12 }, 1);
  enc.submit();

  const keep = new Uint8Array(n);
  markKept(store, rule, current, keep);
  const evictedWant = [...keep].flatMap((v, s) => (v ? [] : [s]));
  store.retain(keep);
  const report = await readU32(ops.gpu, b.report, 0, 2);
  const bits = await readU32(ops.gpu, b.work, 4 * n + 1, Math.ceil(n / 32));
  const gotMeta = await readU32(ops.gpu, b.meta, 0, totalPages * pt);
  const gotKv = await readF32(ops.gpu, b.kv[0], 0, totalPages * 2 * pt * hd);
  let bad = 0;
  const notes: string[] = [];
  if (report[0] !== store.length) { bad++; notes.push(`new length ${report[0]} ≠ ${store.length}`); }
  const evictedGot = Array.from({ length: n }, (_, s) => s).filter((s) => (bits[s >>> 5] >>> (s & 31)) & 1);
  if (report[1] !== evictedWant.length || evictedGot.join() !== evictedWant.join()) { bad++; notes.push('evicted slots differ'); }
  for (let s = 0; s < store.length; s++) {
    const at = store.pages[Math.floor(s / pt)] * pt + (s % pt);
    if ((gotMeta[at] & 0x3fffffff) !== store.positions[s]) { bad++; notes.push(`slot ${s}: position ${gotMeta[at] & 0x3fffffff} ≠ ${store.positions[s]}`); break; }
    const ko = store.keyOffset(s);
    for (let d = 0; d < hd; d++) {
      if (gotKv[ko + d] !== pool.arena.floats[ko + d] || gotKv[ko + pt * hd + d] !== pool.arena.floats[ko + pt * hd + d]) { bad++; notes.push(`slot ${s}: K/V differ`); break; }
    }
  }
  return result(`evict + compaction (n=${n}, kept ${store.length})`, bad, 0, notes.join('; '));
}

function concat(...parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/**
 * Every cache kernel compiles with as many KV parts as the arena may hold on this device (maxKvParts): each binds
 * the parts beside its other storage buffers, within the device's per-stage limit (a kernel one binding over it is
 * an invalid pipeline — only seen on a cache of more than 18 GiB, run 3 on the H200).
 */
export async function checkKvPartLimit(ops: GpuOps): Promise<CheckResult> {
  const parts = maxKvParts(ops.gpu.ctx.maxStorageBuffers);
  const notes: string[] = [];
  for (const half of [false, true]) {
    const c = { parts, pagesPerPart: 1024, pageTokens: 16, headDim: 128, half };
    const sources: [string, string][] = [
      ['kvwrite', kvWriteWgsl(c)], ['attention', attentionWgsl(c)], ['attention4', attentionVec4Wgsl(c)], ['attncombine', attentionCombineWgsl(c)],
      ['attnstats', attentionStatsWgsl(c)], ['attnstats-raw', attentionStatsWgsl(c, true)], ['evict', evictWgsl(c)], ['moves', applyMovesWgsl(c)],
      ['copypages', copyPagesWgsl(c)], ['kvfill', kvFillWgsl(c)], ['setscores', setScoresWgsl(c)],
    ];
    for (const [name, code] of sources) {
      const dev = ops.gpu.device;
      dev.pushErrorScope('validation');
      const module = dev.createShaderModule({ code });
      dev.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
      const err = await dev.popErrorScope();
      if (err) notes.push(`${name}${half ? ' f16' : ''}: ${err.message.split('\n')[0]}`);
    }
  }
  return result(`cache kernels with ${parts} KV parts (the device's ${ops.gpu.ctx.maxStorageBuffers} storage buffers a stage)`, notes.length, 0, notes.slice(0, 3).join('; '));
}

/**
 * fork()'s page copies across two KV parts: each destination page gets its source's K/V, metadata and scores (the
 * reference: the same copies between plain arrays); every other page is untouched.
 */
export async function checkCopyPages(ops: GpuOps, seed = 12): Promise<CheckResult> {
  const r = mulberry32(seed);
  const shape = { parts: 2, pagesPerPart: 3, pageTokens: 4, headDim: 5 };
  const pageFloats = 2 * shape.pageTokens * shape.headDim;
  const pages = 2 * shape.pagesPerPart;
  const kv = randn(r, pages * pageFloats);
  const meta = Uint32Array.from({ length: pages * shape.pageTokens }, () => Math.floor(r() * 2 ** 32));
  const scores = randn(r, pages * shape.pageTokens);
  const pairs = [0, 4, 5, 1, 2, 3];
  const half = shape.pagesPerPart * pageFloats;
  const b = {
    meta: await buf(ops.gpu, meta), scores: await buf(ops.gpu, scores),
    kv: [await buf(ops.gpu, kv.slice(0, half)), await buf(ops.gpu, kv.slice(half))],
  };
  const enc = new StepEncoder(ops.gpu);
  ops.copyPages(enc, shape, b, await buf(ops.gpu, Uint32Array.from(pairs)), pairs.length / 2);
  enc.submit();
  const got = concat(await readF32(ops.gpu, b.kv[0], 0, half), await readF32(ops.gpu, b.kv[1], 0, half));
  const gotMeta = await readU32(ops.gpu, b.meta, 0, meta.length);
  const gotScores = await readF32(ops.gpu, b.scores, 0, scores.length);
  const pt = shape.pageTokens;
  for (let j = 0; j < pairs.length; j += 2) {
    const [src, dst] = [pairs[j], pairs[j + 1]];
    kv.copyWithin(dst * pageFloats, src * pageFloats, (src + 1) * pageFloats);
    meta.copyWithin(dst * pt, src * pt, (src + 1) * pt);
    scores.copyWithin(dst * pt, src * pt, (src + 1) * pt);
  }
  const err = Math.max(maxAbsDiff(got, kv), maxAbsDiff(gotScores, scores), gotMeta.some((v, i) => v !== meta[i]) ? 1 : 0);
  return result('copy pages (fork) across two KV parts', err, 0);
}

/** Every check at the small sizes the test suite runs (lavapipe runs ~1–3 GFLOP/s). */
/** kvFillWgsl's value of a slot element (lowbias32 hash of page · pageFloats + offset, seeded): the same integers. */
export function fillValue(seed: number, pageFloats: number, page: number, off: number): number {
  const hash = (x0: number) => {
    let x = x0 >>> 0;
    x ^= x >>> 16; x = Math.imul(x, 0x7feb352d) >>> 0;
    x ^= x >>> 15; x = Math.imul(x, 0x846ca68b) >>> 0;
    x ^= x >>> 16;
    return x >>> 0;
  };
  return (hash((seed ^ hash(page * pageFloats + off)) >>> 0) >>> 8) / 8388608 - 1;
}

/**
 * The context fill (the benchmark's depth): two heads over two KV parts, one holding positions 0, 1, 2, … (no list),
 * one a shuffled list; every slot's K and V equal fillValue, its meta word the position, its score 0; other slots
 * untouched.
 */
export async function checkKvFill(ops: GpuOps, seed = 31): Promise<CheckResult> {
  const r = mulberry32(seed);
  const hd = 12;
  const pt = 4;
  const ppp = 5; // pages per part: the heads' pages straddle both parts
  const shape = { parts: 2, pagesPerPart: ppp, pageTokens: pt, headDim: hd };
  const pageFloats = 2 * pt * hd;
  const maxPages = 4;
  const n = [13, 9];
  const tables = Uint32Array.from([3, 7, 1, 9, /* head 1 */ 2, 5, 8, 0]);
  const shuffled = Array.from({ length: 40 }, (_, i) => i).sort(() => r() - 0.5).slice(0, n[1]);
  const pass = Uint32Array.from([...shuffled, 0, 0, 0, n[0], 0xffffffff, 0, 0, 0, 0, 0, 1, n[1], 0, 0, 0, 0]);
  const entryOff = shuffled.length;
  const canary = -7.5;
  const kvInit = new Float32Array(ppp * pageFloats).fill(canary);
  const b = {
    pass: await buf(ops.gpu, pass), tables: await buf(ops.gpu, tables),
    meta: await buf(ops.gpu, new Uint32Array(2 * ppp * pt).fill(0xdeadbeef)), scores: await buf(ops.gpu, new Float32Array(2 * ppp * pt).fill(9)),
    kv: [await buf(ops.gpu, kvInit), await buf(ops.gpu, kvInit)],
  };
  const fseed = 1234.5;
  const enc = new StepEncoder(ops.gpu);
  ops.kvFill(enc, shape, b, { nLayers: 1, nKvHeads: 2, maxPages, entryOff }, 2, Math.max(...n), fseed);
  enc.submit();
  const kv = [await readF32(ops.gpu, b.kv[0], 0, ppp * pageFloats), await readF32(ops.gpu, b.kv[1], 0, ppp * pageFloats)];
  const meta = await readU32(ops.gpu, b.meta, 0, 2 * ppp * pt);
  const scores = await readF32(ops.gpu, b.scores, 0, 2 * ppp * pt);
  const seedBits = new Uint32Array(Float32Array.from([fseed]).buffer)[0];
  const want = [new Float32Array(kvInit), new Float32Array(kvInit)];
  const wantMeta = new Uint32Array(2 * ppp * pt).fill(0xdeadbeef);
  const wantScores = new Float32Array(2 * ppp * pt).fill(9);
  for (let h = 0; h < 2; h++) {
    for (let s = 0; s < n[h]; s++) {
      const page = tables[h * maxPages + Math.floor(s / pt)];
      const row = s % pt;
      for (let d = 0; d < hd; d++) {
        for (const off of [row * hd + d, (pt + row) * hd + d]) want[Math.floor(page / ppp)][(page % ppp) * pageFloats + off] = fillValue(seedBits, pageFloats, page, off);
      }
      wantMeta[page * pt + row] = h === 0 ? s : shuffled[s];
      wantScores[page * pt + row] = 0;
    }
  }
  const err = Math.max(maxAbsDiff(kv[0], want[0]), maxAbsDiff(kv[1], want[1]), maxAbsDiff(meta, wantMeta), maxAbsDiff(scores, wantScores));
  return result('kv fill (2 heads, 2 parts, listed and implicit positions)', err, 1e-6);
}

/**
 * Synthetic weights generated on the GPU: every value finite with magnitude in [scale/2, 2·scale) (scale = 1/√cols),
 * signs mixed, values varied; q8_0's block scales all scale/64. The error is the share of values out of range.
 */
export async function checkRandomWeights(ops: GpuOps, kind: WeightKind): Promise<CheckResult> {
  const rows = 37;
  const cols = 300;
  const m = await ops.randomMatrix(rows, cols, kind, 7, 'random');
  const words = await readU32(ops.gpu, m.parts[0].w, 0, rows * m.rowWords);
  const scale = 1 / Math.sqrt(cols);
  let values: number[];
  if (kind === 'f32') values = [...new Float32Array(words.buffer)];
  else if (kind === 'f16') values = [...new Uint16Array(words.buffer)].map(f16ToF32);
  else {
    const d = await readF32(ops.gpu, m.parts[0].d, 0, rows * (m.rowWords / 8));
    const bad = d.filter((x) => Math.abs(x - scale / 64) > 1e-9).length;
    const q = new Int8Array(words.buffer);
    const distinct = new Set(q).size;
    return result(`random weights ${kind} (scales, ${distinct} distinct int8s)`, bad + (distinct > 200 ? 0 : 1), 0);
  }
  const out = values.filter((v) => !(Math.abs(v) >= scale / 2 && Math.abs(v) < 2 * scale)).length;
  const negative = values.filter((v) => v < 0).length / values.length;
  const distinct = new Set(values).size;
  // f16 under one exponent has 2 × 1024 possible values.
  const ok = negative > 0.4 && negative < 0.6 && distinct > Math.min(values.length / 4, 1500);
  return result(`random weights ${kind} (${(negative * 100).toFixed(0)} % negative, ${distinct} distinct)`, out / values.length + (ok ? 0 : 1), 0);
}

export async function runAllChecks(ops: GpuOps): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const kind of ['f32', 'f16', 'q8_0'] as const) {
    out.push(await checkEmbed(ops, kind));
    // The word kernel: tokens in blocks of 4 (21 = five blocks, the last partial).
    for (const T of [1, 3, 6, 21]) out.push(await checkMatmul(ops, kind, 'rows4', T, 67, 45));
    // The vec4 kernel (the default): 45 columns leave a ragged last word in every kind, 96 none (f32 24 words of 4,
    // f16 12 of 8, q8_0 6 of 16 = 3 blocks); 1000 (f16 125 words, q8_0 32 blocks = 1024 values, ragged) makes each
    // thread loop. T up to 16 is one block of the next power of two (2 of TB 2, 3 of 4, 5 of 8, 13 of 16), 17 two
    // (16 + 1); -tb4 loops 5 blocks. Few distinct pipelines: lavapipe takes seconds to compile each unrolled one.
    for (const T of [1, 3, 13, 17]) out.push(await checkMatmul(ops, kind, 'vrows4', T, 67, 45));
    for (const T of [2, 16]) out.push(await checkMatmul(ops, kind, 'vrows4', T, 37, 96));
    out.push(await checkMatmul(ops, kind, kind === 'q8_0' ? 'vrows1-wg64' : 'vrows8-wg64', 3, 67, 1000));
    if (kind === 'f16') out.push(await checkMatmul(ops, kind, 'vrows2-tb4', 17, 29, 1000));
    // The default: the vec4 kernel, 8 rows a workgroup for 2–8 tokens, 4 for one and for more.
    for (const T of [1, 8, 9]) out.push(await checkMatmul(ops, kind, DEFAULT_MATVEC_VARIANT, T, 37, 96));
    // x staged through workgroup memory: ragged and whole words, several iterations per row (1000 columns, 32 threads).
    out.push(await checkMatmul(ops, kind, 'vrows4-xs', 5, 67, 45), await checkMatmul(ops, kind, 'vrows2-xs-wg32', 17, 37, 1000),
      await checkFusedMatmul(ops, kind, 'vrows4-xs', 'norm', 3, 37, 1000), await checkFusedMatmul(ops, kind, 'vrows4-xs', 'swiglu', 6, 29, 45));
    // x read as vec4f: whole words (96 columns), one and several tokens, both fused inputs, several iterations a thread.
    out.push(await checkMatmul(ops, kind, 'vrows4-xv', 1, 37, 96), await checkMatmul(ops, kind, 'vrows8-xv', 5, 67, 96),
      await checkMatmul(ops, kind, 'vrows8-wg32-xv', 8, 29, 1024), await checkFusedMatmul(ops, kind, 'vrows8-xv', 'norm', 8, 37, 96),
      await checkFusedMatmul(ops, kind, 'vrows4-xv', 'swiglu', 3, 29, 96));
    out.push(await checkMatmul(ops, kind, 'tiled', 37, 67, 45));
    // The vec4 tiled kernel: a partial token tile and ragged columns (45), two token tiles and whole tiles (96 = 3 × 32).
    out.push(await checkMatmul(ops, kind, 'tiled4', 37, 67, 45), await checkMatmul(ops, kind, 'tiled4', 70, 37, 96));
    for (const input of ['norm', 'swiglu'] as const) {
      out.push(await checkFusedMatmul(ops, kind, 'rows4', input, 5, 67, 45), await checkFusedMatmul(ops, kind, 'tiled', input, 37, 29, 45));
      out.push(input === 'norm' ? await checkFusedMatmul(ops, kind, 'vrows4', input, 3, 67, 45) : await checkFusedMatmul(ops, kind, 'vrows4', input, 13, 29, 96));
    }
  }
  out.push(...(await checkRmsnorm(ops)), await checkRope(ops), ...(await checkElementwise(ops)), await checkArgmax(ops));
  out.push(...(await checkSample(ops)), ...(await checkSampleDistribution(ops)));
  out.push(...(await checkAttention(ops)), ...(await checkAttention(ops, 7, 4)), ...(await checkAttention(ops, 7, 16, true, 'vec4', 24)),
    ...(await checkAttention(ops, 7, 64, true, 'vec4', 24)), ...(await checkAttention(ops, 7, 64, false, 'scalar')), ...(await checkAttention(ops, 7, 4, true, 'scalar')),
    await checkProfileStats(ops), await checkProfileStats(ops, 8, true), await checkProfileStats(ops, 8, true, 'scalar'));
  for (const n of [1, 13, 53, 200, 1500]) out.push(await checkEvict(ops, 9 + n, n));
  out.push(await checkCopyPages(ops), await checkKvWrite(ops, false), await checkKvWrite(ops, true), await checkKvPartLimit(ops));
  out.push(await checkKvFill(ops));
  for (const kind of ['f32', 'f16', 'q8_0'] as const) out.push(await checkRandomWeights(ops, kind));
  return out;
}

export { GpuOps };
