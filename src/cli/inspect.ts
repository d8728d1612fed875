/** `fastgen inspect`: what a model is (architecture, sizes, dtype, context, KV bytes per token). */
import { formatBytes } from '../format.js';
import { loadModel, type Model } from '../generate/model.js';
import { kvBytesPerToken } from '../model/describe.js';
import { modelOptions, newCommand, option, runCommand, toLoadOptions } from './args.js';

export function describeModel(model: Model) {
  const c = model.config;
  const dtypeBytes = 4;
  return {
    name: c.name,
    source: model.source,
    architecture: c.architecture,
    parameters: model.parameters,
    dtype: c.sourceDtype,
    computeDtype: model.backend.weightDtype,
    backend: model.backend.name,
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
    kvBytesPerToken: kvBytesPerToken(c, dtypeBytes),
    kvBytesFullContext: kvBytesPerToken(c, dtypeBytes) * c.maxSeqLen,
    tokenizer: { kind: model.tokenizer.kind, vocabSize: model.tokenizer.vocabSize, chatTemplate: model.tokenizer.hasChatTemplate },
    bosTokenId: c.bosTokenId ?? null,
    eosTokenIds: c.eosTokenIds,
  };
}

export function inspectCli() {
  const cmd = newCommand('fastgen inspect', 'Architecture, parameters, dtype, context and KV bytes per token of a model.');
  modelOptions(cmd, { kvBudget: false });
  cmd.addOption(option('--json', 'print the description as JSON'));
  return cmd;
}

export function inspectCommand(args: string[]): Promise<number> {
  return runCommand(inspectCli(), args, async ({ opts: o }) => {
  const model = await loadModel(o.model, toLoadOptions(o));
  const d = describeModel(model);
  model.dispose();
  if (o.json) {
    console.log(JSON.stringify(d, null, 2));
    return 0;
  }
  const rows: [string, string][] = [
    ['model', `${d.name} (${d.source.kind}: ${d.source.path})`],
    ['architecture', `${d.architecture}, ${d.attention}`],
    ['parameters', `${(d.parameters / 1e6).toFixed(2)} M (${d.parameters})`],
    ['dtype', `${d.dtype} on disk; ${d.computeDtype} in the ${d.backend} backend`],
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
  return 0;
  });
}
