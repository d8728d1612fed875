/**
 * The WebGPU kernel workbench (llm.c dev/cuda style): check every kernel against its plain-TS reference, then time
 * named variants over several shapes. Re-run it to revisit a measured decision.
 *
 *   node dist/dev/kernels/run.js check                          every kernel against its reference (small, odd sizes)
 *   node dist/dev/kernels/run.js matvec [--variant vrows4] [--kind f16] [--shape 4096x11008|7b] [--tokens 1,8,16] [--json]
 *   node dist/dev/kernels/run.js matmul  --kind f16 --shape 4096x4096 --tokens 128
 *   node dist/dev/kernels/run.js attention [--ctx 4096] [--heads 32] [--kv-heads 32] [--head-dim 128] [--chunk 256] [--kv-dtype f16] [--variant vec4|scalar]
 *   node dist/dev/kernels/run.js sample [--vocab 32000]                one sequence's token under each sampling rule
 *
 * matvec variants (GpuOps.setMatvecVariant): vrows1 … vrows8 — the vec4 kernel (16-byte weight loads, every token of
 * the pass at once), N rows per workgroup — and rows1 … rows8, the word kernel (u32 loads, tokens in blocks of 4);
 * each optionally -wg32/-wg64/-wg128/-wg256 (threads per workgroup; default: by row length), -tbN (vec4: most tokens
 * per block, default 16; word: tokens per block, default 4), -xs (vec4: x staged through workgroup memory, coalesced),
 * -nosg (the word kernel, reduced without subgroupAdd). The `kernel` column names the pipeline that ran.
 * `matmul --tokens 16,32,64 --variant vrows4 --variant tiled --variant tiled4` compares the paths at those rows
 * (GpuOps.tiledFromRows; tiled4 = the vec4 tiled kernel, GpuOps.tiledVec4).
 * --tokens takes a list; each shape's matrix is timed at each count.
 * Shapes are rows x cols of the weight matrix; `7b` = Llama-2-7B's matrices as the backend stacks them (12288x4096
 * q|k|v, 4096x4096 o, 22016x4096 gate|up, 4096x11008 down, 32000x4096 classifier), and with all five timed the output
 * adds the weight time of one 7B decode step per variant. The defaults: stories15M (288x288, 768x288, 32000x288) and
 * the 7B five. Bandwidth = weight bytes (with q8_0's scales) / time per call.
 */
import { parseArgs } from 'node:util';
import { tryGpuContext } from '../../src/backend/webgpu/device.js';
import { GpuDevice, StepEncoder } from '../../src/backend/webgpu/encoder.js';
import { GpuOps, type CacheBuffers } from '../../src/backend/webgpu/ops.js';
import type { WeightKind } from '../../src/backend/webgpu/wgsl.js';
import { runAllChecks } from './checks.js';
import { mulberry32 } from '../../src/generate/rng.js';
import { GREEDY_SAMPLE, type DeviceSample } from '../../src/generate/sample-rule.js';
import { sampleParams } from '../../src/backend/webgpu/wgsl-sample.js';

/** Llama-2-7B's weight matrices as the backend stacks them: q|k|v, o, gate|up, down (per layer), classifier. */
const LLAMA2_7B_SHAPES = ['12288x4096', '4096x4096', '22016x4096', '4096x11008', '32000x4096'];
const DEFAULT_SHAPES = ['288x288', '768x288', '32000x288', ...LLAMA2_7B_SHAPES];

/** Median seconds per call of `record` (dispatches recorded into one command buffer, `reps` times). */
async function time(gpu: GpuDevice, record: (enc: StepEncoder) => void, reps: number, rounds = 5): Promise<{ median: number; spread: number }> {
  const enc = new StepEncoder(gpu);
  const times: number[] = [];
  for (let round = -1; round < rounds; round++) {
    for (let i = 0; i < reps; i++) record(enc);
    const t0 = performance.now();
    enc.submit();
    await gpu.device.queue.onSubmittedWorkDone();
    if (round >= 0) times.push((performance.now() - t0) / 1000 / reps); // round -1 warms up (compiles)
  }
  times.sort((a, b) => a - b);
  const median = times[times.length >> 1];
  return { median, spread: (times[times.length - 1] - times[0]) / median };
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      variant: { type: 'string', multiple: true }, kind: { type: 'string', multiple: true }, shape: { type: 'string', multiple: true },
      tokens: { type: 'string', default: '1' }, ctx: { type: 'string', default: '4096' }, heads: { type: 'string', default: '32' },
      'kv-heads': { type: 'string' }, 'kv-dtype': { type: 'string' }, 'head-dim': { type: 'string', default: '128' }, reps: { type: 'string', default: '20' },
      chunk: { type: 'string' }, vocab: { type: 'string', default: '32000' }, json: { type: 'boolean', default: false },
    },
  });
  const what = positionals[0] ?? 'check';
  const { ctx, reason } = await tryGpuContext();
  if (!ctx) { console.error(reason); process.exit(1); }
  const gpu = new GpuDevice(ctx);
  const ops = new GpuOps(gpu);
  const rows: Record<string, unknown>[] = [];
  const print = (r: Record<string, unknown>) => { rows.push(r); if (!values.json) console.log(Object.entries(r).map(([k, v]) => `${k}=${v}`).join('  ')); };
  if (!values.json) console.log(`adapter: ${ctx.adapterName}; subgroups: ${ctx.subgroups}; max binding ${ctx.maxBinding} B`);
  const reps = Number(values.reps);

  if (what === 'check') {
    const results = await runAllChecks(ops);
    for (const r of results) print({ kernel: r.name, ok: r.ok, maxError: r.maxError.toExponential(2), tolerance: r.tolerance.toExponential(1), ...(r.detail && !r.ok ? { detail: r.detail } : {}) });
    if (values.json) console.log(JSON.stringify(rows));
    process.exit(results.every((r) => r.ok) ? 0 : 1);
  }

  if (what === 'matvec' || what === 'matmul') {
    const tokenCounts = values.tokens.split(',').map(Number);
    const variants = values.variant ?? (what === 'matvec' ? ['default', 'rows4'] : ['tiled']);
    const shapes = (values.shape ?? DEFAULT_SHAPES).flatMap((s) => (s === '7b' ? LLAMA2_7B_SHAPES : [s]));
    // Median µs per call by kind/tokens/variant/shape, for the 7B step estimate below.
    const us = new Map<string, number>();
    for (const kind of (values.kind ?? ['f16']) as WeightKind[]) {
      for (const shape of shapes) {
        const [rowsN, cols] = shape.split('x').map(Number);
        // Random weights straight on the GPU: the values do not matter for timing.
        const m = await ops.randomMatrix(rowsN, cols, kind, 1, 'W');
        for (const T of tokenCounts) {
          const act = await gpu.buffer((T * cols + T * rowsN) * 4, 'act');
          for (const variant of variants) {
            const path = ops.setMatvecVariant(variant);
            const t = await time(gpu, (enc) => ops.matmul(enc, act, m, T, 0, cols, T * cols, rowsN, false, path), reps);
            us.set(`${kind}/${T}/${variant}/${shape}`, t.median * 1e6);
            print({ kernel: ops.lastMatmulKey, kind, variant, shape, tokens: T, us: (t.median * 1e6).toFixed(1), 'GB/s': (m.bytes / t.median / 1e9).toFixed(0),
              'GFLOP/s': ((2 * T * rowsN * cols) / t.median / 1e9).toFixed(0), spread: `${(t.spread * 100).toFixed(0)}%` });
          }
          act.destroy();
        }
        for (const p of m.parts) { p.w.destroy(); if (kind === 'q8_0') p.d.destroy(); }
      }
      // With every 7B matrix timed: one decode step's weight time (32 layers × (q|k|v, o, gate|up, down) + classifier),
      // the figure docs/gpu-results.md's "weights" column measures inside the real step.
      if (LLAMA2_7B_SHAPES.every((s) => shapes.includes(s))) {
        for (const T of tokenCounts) {
          for (const variant of variants) {
            const per = (s: string) => us.get(`${kind}/${T}/${variant}/${s}`)!;
            const ms = (32 * LLAMA2_7B_SHAPES.slice(0, 4).reduce((a, s) => a + per(s), 0) + per(LLAMA2_7B_SHAPES[4])) / 1000;
            print({ kernel: `${what} 7B step (32 layers + classifier)`, kind, variant, tokens: T, 'weights ms': ms.toFixed(2), 'tok/s if weights only': (T / ms * 1000).toFixed(0) });
          }
        }
      }
    }
  } else if (what === 'attention') {
    // One decode row per query head over ctx slots in contiguous pages.
    const nHeads = Number(values.heads);
    const nKv = Number(values['kv-heads'] ?? values.heads);
    const hd = Number(values['head-dim']);
    const n = Number(values.ctx);
    const pt = 16;
    const pages = Math.ceil(n / pt) * nKv;
    const half = values['kv-dtype'] === 'f16';
    const shape = { parts: 1, pagesPerPart: pages, pageTokens: pt, headDim: hd, half };
    const maxPages = Math.ceil(n / pt);
    const tables = Uint32Array.from({ length: pages }, (_, i) => i);
    const pass = Uint32Array.from([0, 0, 0, 0, 1, 0, ...new Array(nKv).fill(n - 1)]);
    const b: CacheBuffers = {
      act: await gpu.buffer(2 * nHeads * hd * 4, 'act'), raw: await gpu.buffer(16, 'raw'), pass: await gpu.buffer(pass.byteLength, 'pass', pass),
      tables: await gpu.buffer(tables.byteLength, 'tables', tables), meta: await gpu.buffer(16, 'meta'), scores: await gpu.buffer(16, 's'),
      ml: await gpu.buffer(nHeads * 8, 'ml'), part: await gpu.buffer(ops.attentionPartFloats(1, nHeads, hd, n) * 4, 'part'), stats: await gpu.buffer(16, 'st'), work: await gpu.buffer(16, 'w'), report: await gpu.buffer(16, 'r'),
      kv: [await gpu.buffer(pages * 2 * pt * hd * 4, 'kv')],
    };
    const params = { nLayers: 1, layer: 0, nHeads, nKvHeads: nKv, maxPages, T: 1, qOff: 0, qStride: nHeads * hd, outOff: nHeads * hd,
      rowItemOff: 0, rowTOff: 1, itemOff: 2, olderOff: 6, mlOff: 0xffffffff, scale: 1 / Math.sqrt(hd) };
    if (values.chunk) ops.attentionChunk = Number(values.chunk);
    for (const variant of (values.variant ?? ['vec4', 'scalar']) as GpuOps['attentionVariant'][]) {
      ops.attentionVariant = variant;
      const t = await time(gpu, (enc) => ops.attention(enc, shape, b, params, 1, nHeads, n), reps);
      const bytes = nKv * n * 2 * hd * (half ? 2 : 4);
      print({ kernel: 'attention', variant: `${variant}-splitk${ops.attentionChunk}${half ? '-f16' : ''}`, ctx: n, heads: nHeads, kvHeads: nKv, headDim: hd, us: (t.median * 1e6).toFixed(1),
        'GB/s': (bytes / t.median / 1e9).toFixed(0), spread: `${(t.spread * 100).toFixed(0)}%` });
    }
  } else if (what === 'sample') {
    // One sequence's token from --vocab logits (random normal × 3), for each rule: the step's sampling cost.
    const vocab = Number(values.vocab);
    const r = mulberry32(1);
    const logits = Float32Array.from({ length: vocab }, () => (r() + r() + r() - 1.5) * 3);
    const rules: [string, DeviceSample][] = [
      ['greedy', GREEDY_SAMPLE],
      ['temperature', { invTemperature: 1, topK: 0, topP: 1, minP: 0, uniform: 0.5 }],
      ['top-k 40', { invTemperature: 1, topK: 40, topP: 1, minP: 0, uniform: 0.5 }],
      ['top-p 0.9', { invTemperature: 1, topK: 0, topP: 0.9, minP: 0, uniform: 0.5 }],
      ['top-k 40 + top-p 0.9', { invTemperature: 1, topK: 40, topP: 0.9, minP: 0, uniform: 0.5 }],
    ];
    const lb = await gpu.buffer(logits.byteLength, 'logits', logits);
    const out = await gpu.buffer(16, 'tokens');
    for (const [name, rule] of rules) {
      const par = Uint32Array.from(sampleParams(0, rule));
      const pb = await gpu.buffer(par.byteLength, 'params', par);
      const t = await time(gpu, (enc) => ops.sample(enc, lb, out, pb, 1, vocab, 0, 0, 0), reps);
      print({ kernel: 'sample', variant: name, vocab, us: (t.median * 1e6).toFixed(1), spread: `${(t.spread * 100).toFixed(0)}%` });
    }
  } else {
    console.error(`unknown kernel '${what}'; expected check, matvec, matmul, attention or sample`);
    process.exit(2);
  }
  if (values.json) console.log(JSON.stringify(rows));
  process.exit(0);
}

await main();
