/** The library's generation API: streaming, result report, stop conditions, cancellation, chat, errors. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FastgenError } from '../src/errors.js';
import { loadModel, type Model } from '../src/generate/model.js';
import { StopStringMatcher } from '../src/generate/stop.js';
import { SKIP_SHARED, sharedPath } from './shared-fixtures.js';

let model: Model | undefined;
async function m260(): Promise<Model> {
  return (model ??= await loadModel(sharedPath('models/stories260K/stories260K.bin')));
}

test('streamed pieces concatenate to the final text; the result reports counts, stop reason and timings', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const gen = m.generate('Once upon a time', { temperature: 0, maxTokens: 25 });
  let streamed = '';
  for await (const piece of gen) streamed += piece;
  const r = await gen.result;
  assert.equal(streamed, r.text);
  assert.equal(r.generatedTokens, 25);
  assert.equal(r.tokens.length, 25);
  assert.equal(r.stopReason, 'length');
  assert.equal(r.promptTokens, m.encode('Once upon a time').length);
  assert.ok(r.timings.prefillMs > 0 && r.timings.decodeMs > 0 && r.timings.decodeTokensPerSecond > 0);
  assert.equal(r.text, m.tokenizer.decode(r.tokens));
  assert.equal(r.kv.policy, 'full');
  assert.equal(r.kv.prunedRatio, 0);
});

test('same seed and options give the same output; another seed differs', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const o = { temperature: 1, topK: 40, topP: 0.95, minP: 0.01, repetitionPenalty: 1.1, maxTokens: 30 };
  const a = await m.complete('The dog', { ...o, seed: 42 });
  const b = await m.complete('The dog', { ...o, seed: 42 });
  const c = await m.complete('The dog', { ...o, seed: 43 });
  assert.deepEqual(a.tokens, b.tokens);
  assert.notDeepEqual(a.tokens, c.tokens);
});

test('stop strings end the text before them; stop ids end generation', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const free = await m.complete('Once upon a time', { temperature: 0, maxTokens: 60 });
  const dot = free.text.indexOf('.');
  assert.ok(dot > 0, 'the free continuation has a full stop');
  const r = await m.complete('Once upon a time', { temperature: 0, maxTokens: 60, stop: ['.'] });
  assert.equal(r.stopReason, 'stop');
  assert.equal(r.text, free.text.slice(0, dot));
  const stopId = free.tokens[3];
  const s = await m.complete('Once upon a time', { temperature: 0, maxTokens: 60, stopIds: [stopId] });
  assert.equal(s.stopReason, 'stop');
  assert.deepEqual(s.tokens, free.tokens.slice(0, free.tokens.indexOf(stopId)));
});

test('stop strings spanning pieces are held back and never leak', () => {
  const sm = new StopStringMatcher(['END', '\n\n']);
  let out = '';
  for (const p of ['a', 'bE', 'N', 'x E', 'ND', 'tail']) {
    const r = sm.push(p);
    out += r.emit;
    if (r.stopped) break;
  }
  assert.equal(out, 'abENx ');
});

test('an AbortSignal cancels generation and frees its pages', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const ac = new AbortController();
  const gen = m.generate('Once upon a time', { temperature: 0, maxTokens: 200, signal: ac.signal });
  let pieces = 0;
  for await (const _ of gen) {
    if (++pieces === 5) ac.abort();
  }
  const r = await gen.result;
  assert.equal(r.stopReason, 'aborted');
  assert.ok(r.generatedTokens < 200);
  assert.equal(m.pool.pagesInUse, 0);
});

test('end of story stops generation with reason eos (llama2.c models delimit stories with BOS, as run.c stops)', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const o = { seed: 1, temperature: 0.8, maxTokens: 480 };
  const free = await m.complete('Once upon a time', { ...o, ignoreEos: true });
  const end = free.tokens.indexOf(1);
  assert.ok(end > 0, 'the story ends within the budget');
  const r = await m.complete('Once upon a time', o);
  assert.equal(r.stopReason, 'eos');
  assert.deepEqual(r.tokens, free.tokens.slice(0, end));
});

test('a prompt longer than the context is an error unless truncation is asked for', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const long = 'the cat sat on the mat and '.repeat(100);
  assert.throws(() => m.generate(long, { maxTokens: 1 }), (e: FastgenError) => e.code === 'CONTEXT_OVERFLOW' && /context is 512/.test(e.message) && /truncat/.test(e.message));
  const r = await m.complete(long, { maxTokens: 2, truncatePrompt: true, temperature: 0 });
  assert.equal(r.promptTokens, 512);
  assert.equal(r.stopReason, 'context');
  assert.equal(m.pool.pagesInUse, 0);
});

test('invalid sampling and generation values are typed errors naming the option', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const bad: [object, RegExp][] = [
    [{ temperature: -1 }, /temperature/],
    [{ topP: 0 }, /topP/],
    [{ topK: 1.5 }, /topK/],
    [{ minP: 1 }, /minP/],
    [{ repetitionPenalty: 0 }, /repetitionPenalty/],
    [{ maxTokens: -3 }, /maxTokens/],
    [{ stop: [''] }, /stop/],
    [{ cache: { policy: 'fastgen', recovery: 1.5 } }, /recovery/],
    [{ cache: { policy: 'nope' } }, /unknown cache policy/],
  ];
  for (const [opts, re] of bad) {
    assert.throws(() => m.generate('hi', opts as any), (e: FastgenError) => e instanceof FastgenError && e.code === 'INVALID_OPTION' && re.test(e.message), JSON.stringify(opts));
  }
  assert.throws(() => m.generate([1, 99999]), /outside the vocabulary/);
  assert.equal(m.pool.pagesInUse, 0);
});

test('chat without a template continues the messages as text; profile reports every head', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const r = await m.chat([{ role: 'user', content: 'Once upon a time' }], { temperature: 0, maxTokens: 10 }).result;
  const plain = await m.complete('Once upon a time', { temperature: 0, maxTokens: 10 });
  assert.equal(r.text, plain.text);
  const p = await m.profile('Once upon a time, Lily saw a cat. The cat was big!', { cache: { recovery: 0.9 } });
  assert.equal(p.layers.length, m.config.nLayers);
  assert.ok(p.layers.every((l) => l.length === m.config.nKvHeads));
  assert.equal(Object.values(p.headsPerPolicy).reduce((a, b) => a + b, 0), m.config.nLayers * m.config.nKvHeads);
  assert.ok(p.prunedRatio > 0 && p.prunedRatio < 1);
  for (const l of p.layers) for (const h of l) assert.equal(h.queryHeadRecoveries.length, m.config.nHeads / m.config.nKvHeads);
});

test('chat applies the chat template of a Hugging Face model (hf-tiny llama3 + tokenizer-bpe512)', { skip: SKIP_SHARED }, async () => {
  const { mkdtempSync, symlinkSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = mkdtempSync(join(tmpdir(), 'fastgen-chat-'));
  for (const f of ['config.json', 'generation_config.json', 'model.safetensors']) symlinkSync(sharedPath('fixtures/hf-tiny/llama3-gqa-f32', f), join(dir, f));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) symlinkSync(sharedPath('fixtures/tokenizer-bpe512', f), join(dir, f));
  const m = await loadModel(dir);
  assert.ok(m.tokenizer.hasChatTemplate);
  const messages = [{ role: 'user', content: 'Hello there' }];
  const rendered = m.renderChat(messages);
  const ref = JSON.parse((await import('node:fs')).readFileSync(sharedPath('fixtures/tokenizer-bpe512/reference.json'), 'utf8'));
  assert.ok(rendered.includes('Hello there'));
  assert.notEqual(rendered, 'Hello there');
  const viaChat = await m.chat(messages, { temperature: 0, maxTokens: 8, ignoreEos: true }).result;
  const viaIds = await m.complete(m.encode(rendered, false), { temperature: 0, maxTokens: 8, ignoreEos: true });
  assert.deepEqual(viaChat.tokens, viaIds.tokens);
  assert.equal(viaChat.promptTokens, m.encode(rendered, false).length);
  // The template's control markers are special tokens, which the FastGen `special` policy keeps.
  assert.ok(ref.chat && m.tokenizer.specialIds().size > 1);
  const p = await m.profile(m.encode(rendered, false), { cache: { recovery: 0.9 } });
  assert.equal(p.layers.length, 2);
});

test('a generation iterated later still streams everything; reading result alone runs it to the end', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const gen = m.generate('Once upon a time', { temperature: 0, maxTokens: 10 });
  await new Promise((r) => setTimeout(r, 20));
  let streamed = '';
  for await (const piece of gen) streamed += piece;
  const r = await gen.result;
  assert.equal(r.generatedTokens, 10);
  assert.equal(streamed, r.text);
  const alone = await m.generate('Once upon a time', { temperature: 0, maxTokens: 10 }).result;
  assert.equal(alone.text, r.text);
});
