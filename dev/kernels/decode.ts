/**
 * Decode speed of the WebGPU backend on a model of a real shape with random weights (or a real checkpoint):
 *   node dist/dev/kernels/decode.js --synthetic llama2-7b --dtype f16 --prompt 32 --steps 64 [--batch 1] [--cache fastgen] [--json]
 * Batch-1 decode reads every weight once per step, so weight bytes / step time is the bandwidth it reaches.
 * Variants of measured decisions: --flush-layers N (layers per command buffer; 0: the whole pass in one),
 * --tiled-from N (token rows from which matrix products take the tiled kernel).
 */
import { parseArgs } from 'node:util';
import { PagePool } from '../../src/cache/page-pool.js';
import { resolveCacheOptions } from '../../src/cache/policies/index.js';
import { SequenceKv } from '../../src/cache/sequence-kv.js';
import { argmax } from '../../src/generate/sampler.js';
import { loadCheckpoint } from '../../src/model/load-checkpoint.js';
import { WebGpuBackend } from '../../src/backend/webgpu/backend.js';
import { SYNTHETIC_CONFIGS } from '../../src/backend/webgpu/synthetic.js';
import type { WeightKind } from '../../src/backend/webgpu/wgsl.js';

const { values } = parseArgs({
  options: {
    synthetic: { type: 'string' }, model: { type: 'string' }, dtype: { type: 'string', default: 'f16' }, prompt: { type: 'string', default: '32' },
    steps: { type: 'string', default: '64' }, 'flush-layers': { type: 'string' }, 'tiled-from': { type: 'string' }, sample: { type: 'string', default: 'gpu' }, batch: { type: 'string', default: '1' }, cache: { type: 'string', default: 'full' }, json: { type: 'boolean', default: false },
  },
});
const kind = values.dtype as WeightKind;
const t0 = performance.now();
const backend = values.synthetic
  ? await WebGpuBackend.createSynthetic(SYNTHETIC_CONFIGS[values.synthetic] ?? (() => { throw new Error(`unknown --synthetic ${values.synthetic}; one of ${Object.keys(SYNTHETIC_CONFIGS).join(', ')}`); })(), { dtype: kind })
  : await WebGpuBackend.create(await loadCheckpoint(values.model), { dtype: kind });
const loadS = (performance.now() - t0) / 1000;
if (values['flush-layers'] !== undefined) backend.flushLayers = Number(values['flush-layers']) || Number.MAX_SAFE_INTEGER;
if (values['tiled-from'] !== undefined) backend.ops.tiledFromRows = Number(values['tiled-from']);
const c = backend.config;
const pool = new PagePool({ headDim: c.headDim, arena: backend.createArena() });
const none = new Uint8Array(c.vocabSize);
const B = Number(values.batch);
const P = Number(values.prompt);
const steps = Number(values.steps);
const kvs = Array.from({ length: B }, () => new SequenceKv(pool, c, resolveCacheOptions({ policy: values.cache as 'full' }), { special: none, punct: none }));
const prompt = Array.from({ length: P }, (_, i) => (i * 7919 + 13) % c.vocabSize);
// --sample gpu: greedy on the GPU, 4 bytes back per sequence; cpu: the logits back, argmax here.
const gpuSample = values.sample === 'gpu';
const step = async (tokens: number[][]): Promise<number[]> => gpuSample
  ? backend.forwardGreedy(kvs.map((kv, i) => ({ kv, tokens: tokens[i] })))
  : (await backend.forward(kvs.map((kv, i) => ({ kv, tokens: tokens[i], logits: 'last' as const })))).map((l) => argmax(l));
let tp = performance.now();
let next = await step(kvs.map(() => prompt));
const prefillS = (performance.now() - tp) / 1000;
const times: number[] = [];
const split = { encodeMs: 0, waitMs: 0, afterMs: 0 };
for (let s = 0; s < steps; s++) {
  tp = performance.now();
  next = await step(next.map((t) => [t]));
  times.push(performance.now() - tp);
  for (const k of ['encodeMs', 'waitMs', 'afterMs'] as const) split[k] += backend.lastPass[k] / steps;
}
const warm = times.slice(Math.min(4, times.length >> 2)).sort((a, b) => a - b);
const med = warm[warm.length >> 1];
const row = {
  model: c.name, adapter: backend.adapterName, dtype: kind, flushLayers: values['flush-layers'] ?? 'default', tiledFrom: values['tiled-from'] ?? 'default', sample: values.sample, batch: B, prompt: P, steps, cache: values.cache, loadS: +loadS.toFixed(1),
  prefillTokS: +((B * P) / prefillS).toFixed(0), stepMs: +med.toFixed(3), decodeTokS: +((1000 * B) / med).toFixed(1),
  weightGB: +(backend.weightBytes / 1e9).toFixed(3), weightGBs: +(backend.weightBytes / (med / 1000) / 1e9).toFixed(0),
  kvBytes: kvs.reduce((s, kv) => s + kv.kvBytes(), 0),
  dispatches: backend.lastPass.dispatches, cpuEncodeMs: +split.encodeMs.toFixed(3), gpuWaitMs: +split.waitMs.toFixed(3), cpuAfterMs: +split.afterMs.toFixed(3),
};
console.log(values.json ? JSON.stringify(row) : Object.entries(row).map(([k, v]) => `${k}=${v}`).join('  '));
process.exit(0);
