/**
 * The webgpu backend under the server (stories260K on lavapipe in CI): fork() of a compressed prefill on the GPU
 * against cpu-ref's, and the scheduler's continuous batching — several concurrent requests, streamed and not, with
 * different cache policies and n > 1 — giving what each gives alone, with the pool back to empty.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { CacheOptions } from '../src/cache/policies/index.js';
import type { SequenceKv } from '../src/cache/sequence-kv.js';
import { argmax } from '../src/generate/sampler.js';
import { loadModel, type Model } from '../src/generate/model.js';
import { FastgenServer } from '../src/server/http.js';
import { SKIP_SHARED, sharedPath } from './shared-fixtures.js';
import { gpuOrSkip } from './webgpu-helpers.js';

const MODEL = sharedPath('models/stories260K/stories260K.bin');
const PROMPT = 'Lily and Tom went to the park. They saw a big dog, and the dog ran to them!';

/**
 * Prefill, decode `before` steps, fork, then decode original and copy greedily in turns; the tokens (after the fork)
 * and every head's kept positions after each step, as each backend holds them (the GPU's own slot metadata once it
 * has evicted from a head: a fork after decoding copies heads whose metadata only the GPU holds).
 */
async function forkRun(m: Model, cache: CacheOptions, steps: number, before: number): Promise<{ tokens: number[][]; heads: number[][][] }> {
  const kv = m.newSequence(cache);
  let [logits] = await m.backend.forward([{ kv, tokens: m.encode(PROMPT), logits: 'last' }]);
  for (let s = 0; s < before; s++) [logits] = await m.backend.forward([{ kv, tokens: [argmax(logits)], logits: 'last' }]);
  const copy = kv.fork();
  const seqs = [kv, copy];
  const next = [argmax(logits), argmax(logits)];
  const out = { tokens: [[], []] as number[][], heads: [] as number[][][] };
  for (let s = 0; s < steps; s++) {
    // The copy runs first, then the original: the copy must not depend on the original's later writes.
    for (const i of [1, 0]) {
      out.tokens[i].push(next[i]);
      const [l] = await m.backend.forward([{ kv: seqs[i], tokens: [next[i]], logits: 'last' }]);
      next[i] = argmax(l);
    }
    for (const kv of seqs) out.heads.push(await kv.slotPositions());
  }
  kv.release();
  copy.release();
  return out;
}

test('webgpu fork(): the copy of a compressed prefill, or of a sequence that evicted while decoding, decodes like cpu-ref\'s copy (tokens and kept slots per head), independently of the original', { skip: SKIP_SHARED }, async (t) => {
  if (!(await gpuOrSkip(t))) return;
  const gpu = await loadModel(MODEL, { backend: 'webgpu' });
  const ref = await loadModel(MODEL, { backend: 'cpu-ref' });
  for (const [cache, before] of [[{ policy: 'fastgen', recovery: 0.9 }, 0], [{ policy: 'fastgen', recovery: 0.9 }, 3], [{ policy: 'local+frequent', budget: 12 }, 2],
    [{ policy: 'full' }, 0]] as [CacheOptions, number][]) {
    const want = await forkRun(ref, cache, 6, before);
    const got = await forkRun(gpu, cache, 6, before);
    assert.deepEqual(got.tokens, want.tokens, `${cache.policy}: tokens`);
    assert.deepEqual(got.tokens[1], got.tokens[0], `${cache.policy}: the copy continues like the original`);
    assert.deepEqual(got.heads, want.heads, `${cache.policy}: kept slots`);
  }
  assert.equal(gpu.pool.pagesInUse, 0);
});

async function post(url: string, body: unknown): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
}

/** The text of a completion: the JSON body's choices, or a stream's pieces joined per choice index. */
async function texts(res: Response, stream: boolean): Promise<string[]> {
  assert.equal(res.status, 200);
  if (!stream) return ((await res.json()) as { choices: { index: number; text: string }[] }).choices.sort((a, b) => a.index - b.index).map((c) => c.text);
  const out: string[] = [];
  const raw = await res.text();
  assert.ok(raw.trimEnd().endsWith('data: [DONE]'), 'the stream ends with [DONE]');
  for (const block of raw.split('\n\n')) {
    if (!block.startsWith('data: {')) continue;
    for (const c of JSON.parse(block.slice(6)).choices as { index: number; text: string }[]) out[c.index] = (out[c.index] ?? '') + c.text;
  }
  return out;
}

test('webgpu server: continuous batching of concurrent requests (streamed and not, five cache policies, greedy and seeded sampling, n = 2) equals each request alone; the pool returns to empty', { skip: SKIP_SHARED }, async (t) => {
  if (!(await gpuOrSkip(t))) return;
  const model = await loadModel(MODEL, { backend: 'webgpu' });
  const lib = await loadModel(MODEL, { backend: 'webgpu' });
  const server = await FastgenServer.start({ port: 0, model, calibrate: false, log: () => {} });
  try {
    await server.ready;
    const reqs = [
      { prompt: 'Once upon a time', max_tokens: 24, temperature: 0.8, seed: 11, cache: { policy: 'fastgen' }, stream: false },
      { prompt: 'The dog ran to the park and', max_tokens: 20, temperature: 0, cache: { policy: 'full' }, stream: true },
      { prompt: 'Lily had a big red ball.', max_tokens: 28, temperature: 1, top_p: 0.9, seed: 12, cache: { policy: 'local+frequent', budget: 12 }, stream: true },
      { prompt: 'Tom was sad because', max_tokens: 16, temperature: 0.9, top_k: 20, seed: 13, cache: { policy: 'snapkv', budget: 14, window: 4 }, stream: false },
      { prompt: 'The sun was hot', max_tokens: 22, temperature: 1.1, seed: 14, cache: { policy: 'sink+local', budget: 10 }, stream: true },
      { prompt: 'A little bird', max_tokens: 18, temperature: 0.9, seed: 15, n: 2, cache: { policy: 'fastgen' }, stream: false },
    ];
    const forked0 = server.scheduler!.forkedChoices;
    const got = await Promise.all(reqs.map(async (r) => texts(await post(`${server.url}/v1/completions`, { model: 'stories260K', ...r }), r.stream)));
    assert.ok(server.scheduler!.peakRunning >= 3, `several requests ran in one batch (peak ${server.scheduler!.peakRunning})`);
    assert.equal(server.scheduler!.forkedChoices - forked0, 1, 'the second choice forked the first one’s prefill on the GPU');
    for (const [i, r] of reqs.entries()) {
      for (let c = 0; c < (r.n ?? 1); c++) {
        const want = await lib.complete(r.prompt, { maxTokens: r.max_tokens, temperature: r.temperature, topP: r.top_p, topK: r.top_k, seed: r.seed === undefined ? undefined : r.seed + c, cache: r.cache as CacheOptions });
        assert.equal(got[i][c], want.text, `request ${i} choice ${c} (${r.cache.policy}${r.stream ? ', streamed' : ''}) differs from the same request alone`);
      }
    }
    t.diagnostic(`peak running ${server.scheduler!.peakRunning}, steps ${server.scheduler!.steps}`);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(model.pool.pagesInUse, 0, 'every page back in the pool');
  } finally {
    await server.shutdown(1000);
  }
  assert.equal(lib.pool.pagesInUse, 0);
});
