/**
 * `fastgen inspect`: what a model is (architecture, sizes, dtype, context, KV bytes per token) and how much memory it
 * needs for a given context and batch (like node-llama-cpp's `inspect estimate`). Reads headers only: no weights are
 * loaded, so it answers in a moment even for a model too large for this machine.
 */
import { checkModelFits, WEIGHT_DTYPES, type WeightDtype } from '../backend/index.js';
import { WASM_MEMORY_LIMIT, wasmMemoryBytes } from '../backend/wasm/backend.js';
import { formatBytes, table } from '../format.js';
import { kvBytesPerToken } from '../model/describe.js';
import { inspectCheckpoint, type CheckpointInfo } from '../model/load-checkpoint.js';
import { loadTokenizer } from '../tokenizer/load-tokenizer.js';
import type { Tokenizer } from '../tokenizer/types.js';
import { modelOptions, newCommand, numberArg, option, runCommand } from './args.js';

const WEIGHT_BYTES: Record<WeightDtype, number> = { f32: 4, f16: 2, q8_0: 36 / 32 };

export interface MemoryEstimate {
  context: number;
  batch: number;
  kvDtype: 'f32' | 'f16';
  /** Per weight dtype: weights, KV cache for batch × context tokens, and what the wasm backend needs in all. */
  rows: { dtype: WeightDtype; weightBytes: number; kvBytes: number; totalBytes: number; wasmBytes: number; fitsWasm: boolean }[];
}

function estimateMemory(info: CheckpointInfo, o: { context?: number; batch?: number; kvDtype?: 'f32' | 'f16'; threads?: number }): MemoryEstimate {
  const c = info.config;
  const context = o.context ?? c.maxSeqLen;
  const batch = o.batch ?? 1;
  const kvDtype = o.kvDtype ?? 'f32';
  const kvBytes = kvBytesPerToken(c, kvDtype === 'f16' ? 2 : 4) * context * batch;
  const rows = WEIGHT_DTYPES.map((dtype) => {
    const weightBytes = Math.round(info.parameters * WEIGHT_BYTES[dtype]);
    // The wasm backend keeps the token embedding in JS (f32) and the rest, with activations, in its memory.
    const wasmBytes = wasmMemoryBytes({ ...c, maxSeqLen: Math.max(context, 1) }, dtype, o.threads ?? 2) + kvBytes;
    return { dtype, weightBytes, kvBytes, totalBytes: weightBytes + kvBytes, wasmBytes, fitsWasm: wasmBytes <= WASM_MEMORY_LIMIT };
  });
  return { context, batch, kvDtype, rows };
}

function describeCheckpoint(info: CheckpointInfo, tokenizer: Tokenizer, o: { backend?: string; dtype?: string }) {
  const c = info.config;
  return {
    name: c.name,
    source: info.source,
    architecture: c.architecture,
    parameters: info.parameters,
    dtype: c.sourceDtype,
    weightBytesOnDisk: info.weightBytes,
    computeDtype: (o.backend ?? 'wasm') === 'wasm' ? (o.dtype ?? 'f32') : 'f32',
    backend: o.backend ?? 'wasm',
    contextLength: c.maxSeqLen,
    vocabSize: c.vocabSize,
    layers: c.nLayers,
    dim: c.dim,
    hiddenDim: c.hiddenDim,
    heads: c.nHeads,
    kvHeads: c.nKvHeads,
    headDim: c.headDim,
    attention: c.nKvHeads === c.nHeads ? 'MHA' : c.nKvHeads === 1 ? 'MQA' : `GQA (${c.nHeads / c.nKvHeads} query heads per KV head)`,
    ropeTheta: c.ropeTheta,
    ropeScaling: c.ropeScaling ?? null,
    tiedEmbeddings: c.tiedEmbeddings,
    qkvBias: c.qkvBias,
    qkNorm: c.qkNorm,
    kvBytesPerToken: kvBytesPerToken(c, 4),
    kvBytesFullContext: kvBytesPerToken(c, 4) * c.maxSeqLen,
    tokenizer: { kind: tokenizer.kind, vocabSize: tokenizer.vocabSize, chatTemplate: tokenizer.hasChatTemplate },
    bosTokenId: c.bosTokenId ?? null,
    eosTokenIds: c.eosTokenIds,
  };
}

export function inspectCli() {
  const cmd = newCommand(
    'fastgen inspect',
    'Architecture, parameters, dtype, context and KV bytes per token of a model, and its memory for a context and batch. Reads headers only: no weights are loaded.',
  );
  modelOptions(cmd, { kvBudget: false });
  cmd
    .addOption(option('--context <n>', "tokens per sequence for the estimate (default: the model's context)", numberArg('--context', { integer: true, min: 1 })))
    .addOption(option('--batch <n>', 'sequences held at once for the estimate (default 1)', numberArg('--batch', { integer: true, min: 1 })))
    .addOption(option('--json', 'print the description and the estimate as JSON'));
  return cmd;
}

export function inspectCommand(args: string[]): Promise<number> {
  return runCommand(inspectCli(), args, async ({ opts: o }) => {
    const info = await inspectCheckpoint(o.model, { tokenizerPath: o.tokenizer });
    if (!info.tokenizer) throw new Error(`no tokenizer found for ${info.source.path}`);
    const tokenizer = await loadTokenizer(info.tokenizer, info.config.vocabSize);
    const d = describeCheckpoint(info, tokenizer, o);
    const estimate = estimateMemory(info, { context: o.context, batch: o.batch, kvDtype: o.kvDtype, threads: o.threads });
    let fits: string | undefined;
    try {
      checkModelFits({ ...info.config, maxSeqLen: estimate.context }, o);
    } catch (e) {
      fits = (e as Error).message;
    }
    if (o.json) {
      console.log(JSON.stringify({ ...d, estimate, wasmLimitBytes: WASM_MEMORY_LIMIT, fits: fits === undefined, problem: fits }, null, 2));
      return 0;
    }
    const rows: [string, string][] = [
      ['model', `${d.name} (${d.source.kind}: ${d.source.path})`],
      ['architecture', `${d.architecture}, ${d.attention}`],
      ['parameters', `${(d.parameters / 1e6).toFixed(2)} M (${d.parameters})`],
      ['dtype', `${d.dtype} on disk (${formatBytes(d.weightBytesOnDisk)}); ${d.computeDtype} in the ${d.backend} backend`],
      ['context length', String(d.contextLength)],
      ['layers / dim / ffn', `${d.layers} / ${d.dim} / ${d.hiddenDim}`],
      ['heads / kv heads / head dim', `${d.heads} / ${d.kvHeads} / ${d.headDim}`],
      ['vocabulary', `${d.vocabSize} (${d.tokenizer.kind} tokenizer${d.tokenizer.chatTemplate ? ', chat template' : ''})`],
      ['rope', `theta ${d.ropeTheta}${d.ropeScaling ? `, ${d.ropeScaling.type} scaling ×${d.ropeScaling.factor}` : ''}`],
      ['extras', [d.tiedEmbeddings && 'tied embeddings', d.qkvBias && 'q/k/v bias', d.qkNorm && 'q/k norm'].filter(Boolean).join(', ') || '-'],
      ['KV cache (f32)', `${formatBytes(d.kvBytesPerToken)} per token; ${formatBytes(d.kvBytesFullContext)} for the full context`],
    ];
    const w = Math.max(...rows.map((r) => r[0].length));
    for (const [k, val] of rows) console.log(`${k.padEnd(w)}  ${val}`);
    console.log(
      `\nmemory estimate: ${estimate.batch} × ${estimate.context} tokens, ${estimate.kvDtype} KV cache (full cache; FastGen keeps less)`,
    );
    console.log(
      table(
        ['weights', 'weight memory', 'KV cache', 'total', 'wasm backend', 'fits wasm (4 GiB)'],
        estimate.rows.map((r) => [r.dtype, formatBytes(r.weightBytes), formatBytes(r.kvBytes), formatBytes(r.totalBytes), formatBytes(r.wasmBytes), r.fitsWasm ? 'yes' : 'no']),
        ['l', 'r', 'r', 'r', 'r', 'l'],
      ),
    );
    if (fits !== undefined) console.log(`\n${fits}`);
    return 0;
  });
}
