/**
 * The `fastgen` command line. Each command parses its own flags; every user error becomes one clear line on stderr
 * and a non-zero exit code, never a stack trace. Timings go to stderr so stdout stays clean for pipes.
 */
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { FastgenError } from '../errors.js';
import { loadModel, type Model } from '../generate/model.js';
import type { GenerateResult } from '../generate/request.js';
import { kvBytesPerToken } from '../model/describe.js';
import type { ChatMessage } from '../tokenizer/types.js';
import { colorizer, formatBytes, table } from './format.js';
import { cachePolicy } from '../cache/policies/index.js';
import { cacheFlags, cacheOptions, generateOptions, loadOptions, modelFlags, samplingFlags } from './options.js';
import { profileGrid, profileSvg } from './profile-view.js';

const USAGE = `fastgen — LLM inference with FastGen adaptive per-head KV-cache compression

usage: fastgen <command> [options]

commands:
  generate [PROMPT]   continue a prompt (from the argument or stdin)
  chat                interactive chat (uses the model's chat template when it has one)
  inspect             architecture, parameters, dtype, context, KV bytes per token
  profile PROMPT      FastGen's per-head policy choice for a prompt (grid, --svg FILE, --json)
  eval                quality vs. compression sweep against the baselines
  bench               llama-bench style throughput table
  serve               OpenAI-compatible HTTP server with continuous batching
  loadtest            concurrent streaming clients against the server, full vs fastgen

common options:
  -m, --model PATH    llama2.c .bin or Hugging Face folder (default: embedded stories15M)
  --backend NAME      cpu-ref | wasm | webgpu --dtype f32|f16|q8_0
  --cache POLICY      full | fastgen | local | frequent | local+frequent | sink+local
  --recovery T        FastGen attention recovery threshold (default 0.95)
  --json              machine-readable output
Run 'fastgen <command> --help' for a command's options.`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        console.log(USAGE);
        return cmd === undefined ? 1 : 0;
      case 'generate':
        return await generateCommand(rest);
      case 'chat':
        return await chatCommand(rest);
      case 'inspect':
        return await inspectCommand(rest);
      case 'profile':
        return await profileCommand(rest);
      case 'eval':
        return await delegate('./eval.js', 'evalCommand', rest);
      case 'bench':
        return await delegate('./bench.js', 'benchCommand', rest);
      case 'serve':
        return await delegate('./serve.js', 'serveCommand', rest);
      case 'loadtest':
        return await delegate('./loadtest.js', 'loadtestCommand', rest);
      default:
        console.error(`fastgen: unknown command '${cmd}'\n\n${USAGE}`);
        return 2;
    }
  } catch (e) {
    return reportError(e);
  }
}

export function reportError(e: unknown): number {
  if (e instanceof FastgenError) {
    console.error(`fastgen: error: ${e.message}`);
    return 1;
  }
  const err = e as { code?: string; message?: string };
  if (err?.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || err?.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' || err?.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
    console.error(`fastgen: ${err.message}`);
    return 2;
  }
  console.error(`fastgen: internal error: ${err?.message ?? String(e)}`);
  if (process.env.FASTGEN_DEBUG) console.error(e);
  return 70;
}

async function delegate(file: string, fn: string, args: string[]): Promise<number> {
  let mod: Record<string, (a: string[]) => Promise<number>>;
  try {
    mod = await import(file);
  } catch {
    throw new FastgenError('INVALID_OPTION', `this build of fastgen has no '${file.slice(2, -3)}' command yet`);
  }
  return mod[fn](args);
}

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) return '';
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function kvSummary(r: GenerateResult): string {
  const kv = r.kv;
  const heads = Object.entries(kv.headsPerPolicy)
    .map(([p, n]) => `${p}:${n}`)
    .join(' ');
  return (
    `kv: ${kv.policy} ${formatBytes(kv.kvBytes)} of ${formatBytes(kv.fullKvBytes)} full (${(kv.prunedRatio * 100).toFixed(1)} % pruned), ` +
    `peak ${formatBytes(kv.peakKvBytes)}; heads ${heads}` +
    (r.timings.profileMs > 0 ? `; ${cachePolicy(kv.policy).adaptive ? 'profiling' : 'selecting'} ${r.timings.profileMs.toFixed(1)} ms` : '')
  );
}

function timingLine(r: GenerateResult): string {
  const t = r.timings;
  return (
    `prefill: ${r.promptTokens} tokens in ${t.prefillMs.toFixed(1)} ms (${t.prefillTokensPerSecond.toFixed(1)} tok/s); ` +
    `decode: ${r.generatedTokens} tokens in ${t.decodeMs.toFixed(1)} ms (${t.decodeTokensPerSecond.toFixed(1)} tok/s); stop: ${r.stopReason}`
  );
}

async function generateCommand(args: string[]): Promise<number> {
  const { values: v, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...modelFlags, ...samplingFlags, ...cacheFlags, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (v.help) {
    console.log(`usage: fastgen generate [PROMPT] [--model PATH] [--max-tokens N] [--temperature T] [--top-k K] [--top-p P]
       [--min-p P] [--repeat-penalty R] [--seed S] [--stop STR]... [--truncate] [--cache POLICY] [--recovery T] [--json]
The prompt comes from the argument, or from stdin when none is given.`);
    return 0;
  }
  let prompt = positionals.join(' ');
  if (!prompt) prompt = (await readStdin()).replace(/\n$/, '');
  const opts = generateOptions(v);
  const model = await loadModel(v.model, loadOptions(v));
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once('SIGINT', onSigint);
  try {
    const gen = model.generate(prompt, { ...opts, signal: controller.signal });
    if (!v.json) {
      process.stdout.write(prompt);
      for await (const piece of gen) process.stdout.write(piece);
      process.stdout.write('\n');
    }
    const r = await gen.result;
    if (v.json) {
      console.log(JSON.stringify({ prompt, ...r }, null, 2));
    } else {
      console.error(timingLine(r));
      if (opts.cache) console.error(kvSummary(r));
    }
    return 0;
  } finally {
    process.off('SIGINT', onSigint);
    model.dispose();
  }
}

async function chatCommand(args: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args,
    options: { ...modelFlags, ...samplingFlags, ...cacheFlags, system: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (v.help) {
    console.log('usage: fastgen chat [--model PATH] [--system TEXT] [sampling and cache options]\nType a message and press Enter; an empty line or Ctrl-D ends the chat.');
    return 0;
  }
  const opts = generateOptions(v);
  const model = await loadModel(v.model, loadOptions(v));
  const messages: ChatMessage[] = v.system ? [{ role: 'system', content: v.system as string }] : [];
  if (!model.tokenizer.hasChatTemplate) console.error('(this model has no chat template: messages are continued as plain text)');
  const rl = createInterface({ input: process.stdin, terminal: false });
  process.stderr.write('> ');
  try {
    // The async iterator buffers lines, so piped input with several messages is read one turn at a time.
    for await (const line of rl) {
      if (line.trim() === '') break;
      messages.push({ role: 'user', content: line });
      const gen = model.chat(messages, opts);
      let reply = '';
      for await (const piece of gen) {
        reply += piece;
        process.stdout.write(piece);
      }
      process.stdout.write('\n');
      const r = await gen.result;
      console.error(timingLine(r));
      if (opts.cache) console.error(kvSummary(r));
      messages.push({ role: 'assistant', content: reply });
      process.stderr.write('> ');
    }
    return 0;
  } finally {
    rl.close();
    model.dispose();
  }
}

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

async function inspectCommand(args: string[]): Promise<number> {
  const { values: v } = parseArgs({ args, options: { ...modelFlags, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (v.help) {
    console.log('usage: fastgen inspect [--model PATH] [--json]');
    return 0;
  }
  const model = await loadModel(v.model, loadOptions(v));
  const d = describeModel(model);
  model.dispose();
  if (v.json) {
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
}

async function profileCommand(args: string[]): Promise<number> {
  const { values: v, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      ...modelFlags,
      recovery: { type: 'string' },
      'local-ratio': { type: 'string' },
      'frequent-ratio': { type: 'string' },
      gqa: { type: 'string' },
      truncate: { type: 'boolean' },
      json: { type: 'boolean' },
      svg: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) {
    console.log('usage: fastgen profile [--recovery T] [--gqa mean|min] [--json] [--svg FILE] [--model PATH] PROMPT');
    return 0;
  }
  let prompt = positionals.join(' ');
  if (!prompt) prompt = (await readStdin()).replace(/\n$/, '');
  const cache = cacheOptions({ ...v, cache: 'fastgen' })!;
  const model = await loadModel(v.model, loadOptions(v));
  try {
    const report = await model.profile(prompt, { cache, truncatePrompt: v.truncate as boolean | undefined });
    if (v.svg) writeFileSync(v.svg as string, profileSvg(report, `FastGen profile: ${model.config.name}`));
    if (v.json) {
      console.log(JSON.stringify({ model: model.config.name, prompt, ...report }, null, 2));
      return 0;
    }
    console.log(profileGrid(report, colorizer(process.stdout)));
    console.log('');
    console.log(
      table(
        ['policy', 'heads'],
        Object.entries(report.headsPerPolicy).map(([p, n]) => [p, n]),
        ['l', 'r'],
      ),
    );
    console.log(
      `\nT = ${report.recovery}: ${report.promptTokens} prompt tokens, KV ${formatBytes(report.kvBytes)} of ${formatBytes(report.fullKvBytes)} ` +
        `(${(report.prunedRatio * 100).toFixed(1)} % pruned); profiling ${report.profileMs.toFixed(1)} ms of a ${report.prefillMs.toFixed(1)} ms prefill`,
    );
    if (v.svg) console.error(`wrote ${v.svg}`);
    return 0;
  } finally {
    model.dispose();
  }
}
