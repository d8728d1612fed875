/** The one generation step: batching, timings booked by the request, resumed requests, early exits of the library loop. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FastgenError } from '../src/errors.js';
import { loadModel, type Model } from '../src/generate/model.js';
import { GenerationRequest, type GenerateResult } from '../src/generate/request.js';
import { step } from '../src/generate/step.js';
import { SKIP_SHARED, sharedPath } from './shared-fixtures.js';

let model: Model | undefined;
async function m260(): Promise<Model> {
  return (model ??= await loadModel(sharedPath('models/stories260K/stories260K.bin')));
}

test('a request books its first step as prefill and every later one as decode', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const req = m.createRequest('Once upon a time', { maxTokens: 3 });
  try {
    req.recordStep(5);
    req.recordStep(3);
    req.recordStep(2);
    assert.equal(req.prefillMs, 5);
    assert.equal(req.decodeMs, 5);
  } finally {
    req.kv.release();
  }
});

test('one batched step over several requests gives each the tokens it gets alone', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const prompts = ['Once upon a time', 'Tom had a red ball. He', 'The cat'];
  const opts = [
    { temperature: 0, maxTokens: 12 },
    { temperature: 0.8, seed: 5, maxTokens: 7, cache: { policy: 'fastgen' as const, recovery: 0.9 } },
    { temperature: 0.7, topP: 0.9, seed: 9, maxTokens: 20, stop: ['.'] },
  ];
  const alone: GenerateResult[] = [];
  for (let i = 0; i < prompts.length; i++) alone.push(await m.complete(prompts[i], opts[i]));
  const reqs = prompts.map((p, i) => m.createRequest(p, opts[i]));
  const texts = reqs.map(() => '');
  try {
    let steps = 0;
    while (reqs.some((r) => !r.done)) {
      const out = await step(m.backend, reqs);
      out.forEach((o, i) => {
        assert.equal(o.error, undefined);
        texts[i] += o.piece;
      });
      steps++;
    }
    assert.equal(steps, Math.max(...alone.map((r) => r.generatedTokens + (r.stopReason === 'length' ? 0 : 1))));
    reqs.forEach((r, i) => {
      const res = r.result();
      assert.deepEqual(res.tokens, alone[i].tokens, prompts[i]);
      assert.equal(res.text, alone[i].text);
      assert.equal(texts[i], alone[i].text);
      assert.equal(res.stopReason, alone[i].stopReason);
      assert.ok(res.timings.prefillMs > 0 && res.timings.decodeMs > 0);
    });
  } finally {
    for (const r of reqs) r.kv.release();
  }
  assert.equal(m.pool.pagesInUse, 0);
});

test('a request resumed from a fork of a shared prefill continues exactly like a fresh one', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const ids = m.encode('Lily found a ball in the park.');
  const want = await m.complete(ids, { temperature: 0.9, seed: 4, maxTokens: 15 });
  const kv = m.newSequence();
  try {
    const [last] = await m.backend.forward([{ kv, tokens: ids, logits: 'last' }]);
    const forks = [kv.fork(), kv.fork()];
    const reqs = forks.map((f) => GenerationRequest.resume(f, last, m.tokenizer, m.config.maxSeqLen, { temperature: 0.9, seed: 4, maxTokens: 15 }, ids));
    while (reqs.some((r) => !r.done)) await step(m.backend, reqs);
    for (const r of reqs) {
      assert.deepEqual(r.generated, want.tokens);
      assert.equal(r.result().text, want.text);
      assert.equal(r.prefillMs, 0, 'the prefill was not this request’s');
      r.kv.release();
    }
  } finally {
    kv.release();
  }
  assert.equal(m.pool.pagesInUse, 0);
});

test('a sampling failure fails only its own request; the others of the step carry on', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const good = m.createRequest('Once upon a time', { temperature: 0, maxTokens: 4 });
  const bad = m.createRequest('Once upon a time', { temperature: 0, maxTokens: 4 });
  (bad as unknown as { accept: () => never }).accept = () => {
    throw new RangeError('boom');
  };
  try {
    const [a, b] = await step(m.backend, [good, bad]);
    assert.equal(a.error, undefined);
    assert.ok(b.error instanceof RangeError);
    assert.equal(good.generated.length, 1);
  } finally {
    good.kv.release();
    bad.kv.release();
  }
});

test('leaving the for-await loop early ends the generation: result settles as aborted and the pages are freed', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const gen = m.generate('Once upon a time', { temperature: 0, maxTokens: 100, ignoreEos: true });
  let text = '';
  for await (const piece of gen) {
    text += piece;
    if (text.length > 10) break;
  }
  const r = await Promise.race([gen.result, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('result still pending')), 10_000))]);
  assert.equal(r.stopReason, 'aborted');
  assert.ok(r.generatedTokens > 0 && r.generatedTokens < 100);
  assert.ok(r.text.startsWith(text));
  assert.equal(m.pool.pagesInUse, 0);
});

test('text() is the generated text; result is the report', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  const opts = { temperature: 0, maxTokens: 8 };
  const text = await m.generate('Once upon a time', opts).text();
  assert.equal(typeof text, 'string');
  assert.equal(text, (await m.generate('Once upon a time', opts).result).text);
});

test('a signal that is not an AbortSignal is refused', { skip: SKIP_SHARED }, async () => {
  const m = await m260();
  for (const signal of [{ aborted: false }, 'stop', 1]) {
    assert.throws(() => m.generate('hi', { signal: signal as never }), (e: FastgenError) => e.code === 'INVALID_OPTION' && /signal must be an AbortSignal/.test(e.message));
  }
  assert.equal(m.pool.pagesInUse, 0);
});
