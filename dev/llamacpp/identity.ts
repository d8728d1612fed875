/**
 * Greedy output of fastgen against llama.cpp's on the same weights, token by token (a dev tool, not CI).
 *
 *   node dist/dev/llamacpp/identity.js --gguf-f32 F --gguf-q8_0 F [--tokens 200] [--llamacpp-dir /work/llamacpp]
 *                                      [--prompt TEXT]… [--json]
 *
 * llama.cpp is driven through node-llama-cpp (its prebuilt CPU libraries, the same ones llama-bench runs; installed by
 * scripts/llamacpp-bench.sh into LLAMACPP_DIR, outside the repository, so it is imported from there at run time). For
 * each dtype and prompt, both sides get the same prompt token ids (fastgen's tokenizer; the GGUF's vocabulary is the
 * same one, dev/llamacpp/to-gguf.ts) and decode greedily up to --tokens tokens or the first end-of-text token. Printed per case: how
 * many tokens agree before the first difference, and, at a difference, fastgen's margin between its top two logits
 * there — a near tie (a margin of the order of the two engines' rounding differences) explains a divergence that a
 * real bug would not. q8_0 cannot be expected to match as far as f32: our converter writes llama.cpp's f16 block
 * scales, while fastgen quantizes the f32 weights with f32 scales (kernels/q8.ts), so the two q8_0 models differ.
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { loadModel } from '../../src/generate/model.js';
import { step } from '../../src/generate/step.js';
import type { WeightDtype } from '../../src/backend/index.js';

const { values } = parseArgs({
  options: {
    'gguf-f32': { type: 'string' }, 'gguf-q8_0': { type: 'string' }, tokens: { type: 'string', default: '200' },
    'llamacpp-dir': { type: 'string', default: process.env.LLAMACPP_DIR ?? '/work/llamacpp' },
    prompt: { type: 'string', multiple: true }, json: { type: 'boolean', default: false },
  },
});
const maxTokens = Number(values.tokens);
const ggufs: [WeightDtype, string][] = [];
if (values['gguf-f32']) ggufs.push(['f32', values['gguf-f32']]);
if (values['gguf-q8_0']) ggufs.push(['q8_0', values['gguf-q8_0']]);
if (ggufs.length === 0 || !(maxTokens >= 1)) {
  console.error('usage: node dist/dev/llamacpp/identity.js --gguf-f32 F [--gguf-q8_0 F] [--tokens N] [--llamacpp-dir D] [--prompt TEXT]… [--json]');
  process.exit(2);
}
// From BOS alone (what llama2.c's run and the earlier check did), and two story openings.
const prompts = values.prompt ?? ['', 'Once upon a time, there was a little dog', 'Tom and Sue went to the park.'];

/** The part of node-llama-cpp's API this tool uses (it is not a dependency of fastgen: imported from its install). */
interface LlamaSequence { evaluate(tokens: number[], opts: { temperature: number }): AsyncGenerator<number> }
interface LlamaContext { getSequence(): LlamaSequence; dispose(): Promise<void> }
interface LlamaModel { createContext(opts: { contextSize: number; threads: number }): Promise<LlamaContext>; dispose(): Promise<void> }
interface Llama { loadModel(opts: { modelPath: string }): Promise<LlamaModel> }
interface NodeLlamaCpp { getLlama(opts: { gpu: false; build: 'never'; progressLogs: boolean; logLevel: string }): Promise<Llama> }

/** llama.cpp's greedy tokens after `prompt`, up to `room` (fastgen's: --tokens within the model's context) or a token in `stops` (fastgen's end-of-text ids). */
async function llamacppGreedy(llama: Llama, gguf: string, prompt: number[], stops: ReadonlySet<number>, room: number): Promise<number[]> {
  const model = await llama.loadModel({ modelPath: gguf });
  const ctx = await model.createContext({ contextSize: prompt.length + room + 8, threads: 2 });
  const out: number[] = [];
  try {
    for await (const t of ctx.getSequence().evaluate(prompt, { temperature: 0 })) {
      if (stops.has(t)) break;
      out.push(t);
      if (out.length >= room) break;
    }
  } finally {
    await ctx.dispose();
    await model.dispose();
  }
  return out;
}

interface Case { dtype: WeightDtype; prompt: string; promptTokens: number; fastgen: number; llamacpp: number; identical: number; margin?: number; fastgenNext?: number; llamacppNext?: number }

async function main(): Promise<void> {
  const nlc = (await import(pathToFileURL(join(values['llamacpp-dir']!, 'node_modules', 'node-llama-cpp', 'dist', 'index.js')).href)) as NodeLlamaCpp;
  const llama = await nlc.getLlama({ gpu: false, build: 'never', progressLogs: false, logLevel: 'error' });
  const cases: Case[] = [];
  for (const [dtype, gguf] of ggufs) {
    const model = await loadModel(undefined, { backend: 'wasm', dtype });
    const vocab = model.config.vocabSize;
    for (const text of prompts) {
      const ids = text === '' ? [model.config.bosTokenId ?? 1] : model.encode(text, true);
      const room = Math.min(maxTokens, model.config.maxSeqLen - ids.length);
      // fastgen's greedy tokens, and after each step the margin between the top two logits that step chose from.
      const req = model.createRequest(ids, { cache: { policy: 'full' }, maxTokens: room, temperature: 0 });
      const margins: number[] = [];
      try {
        while (!req.done) {
          for (const o of await step(model.backend, [req])) if (o.error !== undefined) throw o.error;
          const x = req.logitsBuffer(vocab);
          let a = -Infinity, b = -Infinity;
          for (let i = 0; i < vocab; i++) {
            const v = x[i];
            if (v > a) { b = a; a = v; } else if (v > b) b = v;
          }
          margins.push(a - b);
        }
      } finally {
        req.kv.release();
      }
      const ours = req.generated;
      // llama2.c's models end a story with BOS: fastgen's tokenizer counts it among the end-of-text ids, so both stop there.
      const theirs = await llamacppGreedy(llama, gguf, ids, new Set(model.tokenizer.eosIds), room);
      let k = 0;
      while (k < ours.length && k < theirs.length && ours[k] === theirs[k]) k++;
      const differs = k < ours.length && k < theirs.length;
      cases.push({ dtype, prompt: text === '' ? '(BOS)' : text, promptTokens: ids.length, fastgen: ours.length, llamacpp: theirs.length, identical: k,
        ...(differs ? { margin: margins[k], fastgenNext: ours[k], llamacppNext: theirs[k] } : {}) });
    }
    model.dispose();
  }
  if (values.json) {
    console.log(JSON.stringify({ date: new Date().toISOString(), maxTokens, cases }, null, 2));
    return;
  }
  console.log('| dtype | prompt | prompt tokens | fastgen tokens | llama.cpp tokens | identical prefix | at the first difference |');
  console.log('| ----- | ------ | ------------: | -------------: | ---------------: | ---------------: | ----------------------- |');
  for (const c of cases) {
    const diff = c.margin === undefined ? (c.fastgen === c.llamacpp ? 'none' : 'one side stopped (EOS) earlier')
      : `fastgen ${c.fastgenNext}, llama.cpp ${c.llamacppNext}; fastgen's top-2 logit margin ${c.margin.toExponential(2)}`;
    console.log(`| ${c.dtype} | ${c.prompt} | ${c.promptTokens} | ${c.fastgen} | ${c.llamacpp} | ${c.identical} | ${diff} |`);
  }
}

await main();
