/**
 * Continuous batching: KV-memory admission, preemption with exact replay, failure isolation, cancellation (pages back
 * to the pool), the bounded queue (429) and graceful shutdown.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { loadModel, type Model } from '../src/generate/model.js';
import { FastgenServer } from '../src/server/http.js';
import { parsePrometheus } from '../src/server/metrics.js';
import { JobFailedError, Scheduler, SchedulerRejectError, type JobResult } from '../src/server/scheduler.js';
import { sharedPath } from './shared-fixtures.js';

const MODEL = sharedPath('models/stories260K/stories260K.bin');
const SKIP = existsSync(MODEL) ? false : `${MODEL} not found (../shared is absent): scheduler tests skipped`;

async function metrics(url: string): Promise<Map<string, number>> {
  return parsePrometheus(await (await fetch(`${url}/metrics`)).text());
}

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function post(url: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal });
}

/** Read an SSE response until the first chunk with text; returns the reader to continue with. */
async function firstText(res: Response): Promise<{ reader: ReadableStreamDefaultReader<Uint8Array>; seen: string }> {
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let seen = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended early: ${seen}`);
    seen += dec.decode(value, { stream: true });
    if (/"text":"[^"]/.test(seen) || /"content":"[^"]/.test(seen)) return { reader, seen };
  }
}

async function readRest(reader: ReadableStreamDefaultReader<Uint8Array>, seen: string): Promise<string> {
  const dec = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return seen;
    seen += dec.decode(value, { stream: true });
  }
}

describe('scheduler', { skip: SKIP }, () => {
  let model: Model;
  let lib: Model;
  const prompts = ['Once upon a time', 'The dog ran', 'Lily and Tom went to the park. They', 'A big red ball', 'The sun was hot', 'Mom said'];

  before(async () => {
    model = await loadModel(MODEL);
    lib = await loadModel(MODEL);
  });

  test('FastGen admission that turns out optimistic preempts the youngest and replays it exactly; the budget is never exceeded', async () => {
    const pool = model.pool;
    const budgetPages = 200;
    const sched = new Scheduler(model, { kvBudgetBytes: budgetPages * pool.pageBytes, fastgenPrior: 0.02, defaultCache: { policy: 'fastgen' } });
    const peak0 = pool.peakPagesInUse;
    assert.equal(pool.pagesInUse, 0);
    pool.peakPagesInUse = 0;
    const streamed: string[] = prompts.map(() => '');
    const jobs = prompts.map((p, i) =>
      sched.submit(model.encode(p), { maxTokens: 60, ignoreEos: true, temperature: 0.8, seed: 100 + i, onText: (t) => (streamed[i] += t) }),
    );
    const results = await Promise.all(jobs.map((j) => j.result));
    const preemptions = results.reduce((s, r) => s + r.preemptions, 0);
    assert.ok(preemptions > 0, 'the optimistic prior must have led to preemptions');
    assert.ok(sched.peakRunning > 2, `several requests ran at once (peak ${sched.peakRunning})`);
    assert.ok(pool.peakPagesInUse <= budgetPages, `pool peak ${pool.peakPagesInUse} ≤ budget ${budgetPages}`);
    assert.equal(pool.pagesInUse, 0, 'every page back in the pool');
    for (let i = 0; i < prompts.length; i++) {
      const want = await lib.complete(prompts[i], { maxTokens: 60, ignoreEos: true, temperature: 0.8, seed: 100 + i, cache: { policy: 'fastgen' } });
      assert.equal(results[i].text, want.text, `request ${i} text equals the library's`);
      assert.equal(streamed[i], want.text, `request ${i}: streamed pieces, nothing sent twice across preemptions`);
      assert.equal(results[i].generatedTokens, 60);
    }
    pool.peakPagesInUse = Math.max(peak0, pool.peakPagesInUse);
  });

  test('full cache admission reserves the worst case: with room for one request they run one at a time, never preempted', async () => {
    const pool = model.pool;
    const ids = model.encode('Once upon a time'); // 5 tokens + 43 = 48 tokens = 3 pages per (layer, KV head)
    const heads = model.config.nLayers * model.config.nKvHeads;
    const sched = new Scheduler(model, { kvBudgetBytes: 3 * heads * pool.pageBytes + pool.pageBytes, defaultCache: { policy: 'full' } });
    const jobs = [1, 2, 3].map((s) => sched.submit(ids, { maxTokens: 43, ignoreEos: true, temperature: 1, seed: s }));
    const results = await Promise.all(jobs.map((j) => j.result));
    assert.equal(sched.peakRunning, 1);
    assert.ok(results.every((r) => r.preemptions === 0 && r.generatedTokens === 43));
    assert.ok(results[2].queueMs > results[0].queueMs, 'the later ones waited');
    const want = await lib.complete(ids, { maxTokens: 43, ignoreEos: true, temperature: 1, seed: 3 });
    assert.equal(results[2].text, want.text);
    assert.equal(pool.pagesInUse, 0);
  });

  test('continuous batching: requests with different lengths share steps, and each equals the library output', async () => {
    const sched = new Scheduler(model, { defaultCache: { policy: 'full' } });
    const lens = [5, 30, 12, 20];
    const jobs = lens.map((n, i) => sched.submit(model.encode(prompts[i]), { maxTokens: n, ignoreEos: true, temperature: 0.7, seed: i }));
    // A request arriving while the others run joins at a step boundary.
    await new Promise((r) => setTimeout(r, 5));
    const late = sched.submit(model.encode('The end'), { maxTokens: 6, ignoreEos: true, temperature: 0 });
    const results = await Promise.all([...jobs, late].map((j) => j.result));
    assert.ok(sched.steps < lens.reduce((a, b) => a + b, 0) + 6, `batched: ${sched.steps} steps`);
    assert.ok(sched.peakRunning >= 4);
    for (let i = 0; i < lens.length; i++) {
      const want = await lib.complete(prompts[i], { maxTokens: lens[i], ignoreEos: true, temperature: 0.7, seed: i });
      assert.equal(results[i].text, want.text);
    }
    assert.equal((await lib.complete('The end', { maxTokens: 6, ignoreEos: true, temperature: 0 })).text, results[4].text);
  });

  test('a request whose forward fails is failed alone; the others in its batch are replayed and complete exactly', async () => {
    const broken = await loadModel(MODEL);
    const POISON = 500;
    const realForward = broken.backend.forward.bind(broken.backend);
    (broken.backend as { forward: typeof realForward }).forward = async (items) => {
      const out = await realForward(items);
      if (items.some((it) => it.tokens.includes(POISON))) throw new Error('simulated kernel failure');
      return out;
    };
    const sched = new Scheduler(broken, { defaultCache: { policy: 'fastgen' } });
    const good1 = sched.submit(broken.encode('Once upon a time'), { maxTokens: 12, temperature: 0.9, seed: 1 });
    const bad = sched.submit([1, 300, POISON, 301], { maxTokens: 12, temperature: 0.9, seed: 2 });
    const good2 = sched.submit(broken.encode('The dog ran'), { maxTokens: 12, temperature: 0.9, seed: 3 });
    await assert.rejects(bad.result, (e) => e instanceof JobFailedError && /simulated kernel failure/.test(e.message));
    const [r1, r2] = await Promise.all([good1.result, good2.result]);
    assert.equal(r1.text, (await lib.complete('Once upon a time', { maxTokens: 12, temperature: 0.9, seed: 1, cache: { policy: 'fastgen' } })).text);
    assert.equal(r2.text, (await lib.complete('The dog ran', { maxTokens: 12, temperature: 0.9, seed: 3, cache: { policy: 'fastgen' } })).text);
    assert.equal(broken.pool.pagesInUse, 0);
  });

  test('refusals at submit: bad options, a prompt that can never fit the budget, a full queue', async () => {
    const heads = model.config.nLayers * model.config.nKvHeads;
    const sched = new Scheduler(model, { kvBudgetBytes: 2 * heads * model.pool.pageBytes, maxRunning: 1, maxWaiting: 1 });
    assert.throws(() => sched.submit([1, 2, 3], { temperature: -1 }), /temperature/);
    assert.throws(() => sched.submit(Array.from({ length: 40 }, () => 5)), (e) => e instanceof SchedulerRejectError && e.reason === 'too_large');
    const a = sched.submit([1, 2, 3], { maxTokens: 2 }); // admitted at once (the loop starts on submit)
    const b = sched.submit([1, 2, 3], { maxTokens: 2 }); // waits: one running at most
    assert.throws(() => sched.submit([1, 2, 3], { maxTokens: 2 }), (e) => e instanceof SchedulerRejectError && e.reason === 'queue_full');
    await Promise.all([a.result, b.result]);
    assert.equal(model.pool.pagesInUse, 0);
  });
});

describe('server: cancellation, queue limit, shutdown', { skip: SKIP }, () => {
  let server: FastgenServer;
  let url: string;

  before(async () => {
    server = await FastgenServer.start({ port: 0, load: () => loadModel(MODEL), kvBudgetBytes: 8 * 1024 * 1024, maxRunning: 2, maxWaiting: 1, calibrate: false });
    await server.ready;
    url = server.url;
  });
  after(async () => {
    await server?.shutdown(1000);
  });

  test('a streaming client that disconnects cancels its generation and its pages return to the pool', async () => {
    const m0 = await metrics(url);
    const ac = new AbortController();
    const res = await post(`${url}/v1/completions`, { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 500, ignore_eos: true, stream: true }, ac.signal);
    await firstText(res);
    const mid = await metrics(url);
    assert.equal(mid.get('fastgen_requests_running'), 1);
    assert.ok((mid.get('fastgen_kv_pages_used') ?? 0) > 0);
    ac.abort();
    await until('pages back in the pool', async () => {
      const m = await metrics(url);
      return m.get('fastgen_requests_running') === 0 && m.get('fastgen_kv_pages_used') === 0;
    });
    const m1 = await metrics(url);
    assert.equal((m1.get('fastgen_requests_total{finish_reason="aborted"}') ?? 0) - (m0.get('fastgen_requests_total{finish_reason="aborted"}') ?? 0), 1);
    assert.ok((m1.get('fastgen_generation_tokens_total') ?? 0) - (m0.get('fastgen_generation_tokens_total') ?? 0) < 500, 'generation stopped early');
  });

  test('a non-streaming client that disconnects cancels too', async () => {
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(`${url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' } });
      req.on('error', () => {});
      req.end(JSON.stringify({ model: 'stories260K', prompt: 'The cat', max_tokens: 500, ignore_eos: true }));
      until('the request to run', async () => (await metrics(url)).get('fastgen_requests_running') === 1)
        .then(() => {
          req.destroy();
          resolve();
        })
        .catch(reject);
    });
    await until('pages back in the pool', async () => {
      const m = await metrics(url);
      return m.get('fastgen_requests_running') === 0 && m.get('fastgen_kv_pages_used') === 0;
    });
  });

  test('beyond the bounded queue: 429 with a clear message; the queued request still completes', async () => {
    const acs = [new AbortController(), new AbortController()];
    const streams = await Promise.all(
      acs.map((ac, i) => post(`${url}/v1/completions`, { model: 'stories260K', prompt: `Story ${i}`, max_tokens: 500, ignore_eos: true, stream: true }, ac.signal)),
    );
    await Promise.all(streams.map(firstText));
    // Two running (max_running 2): the next one waits, the one after is refused.
    const queued = post(`${url}/v1/completions`, { model: 'stories260K', prompt: 'Queued', max_tokens: 4, temperature: 0 });
    await until('one request waiting', async () => (await metrics(url)).get('fastgen_requests_waiting') === 1);
    const refused = await post(`${url}/v1/completions`, { model: 'stories260K', prompt: 'Refused', max_tokens: 4 });
    assert.equal(refused.status, 429);
    const err = await refused.json();
    assert.equal(err.error.type, 'rate_limit_error');
    assert.equal(err.error.code, 'queue_full');
    assert.match(err.error.message, /queue limit 1/);
    assert.equal(refused.headers.get('retry-after'), '1');
    for (const ac of acs) ac.abort();
    const q = await queued;
    assert.equal(q.status, 200);
    assert.equal((await q.json()).usage.completion_tokens > 0, true);
    await until('idle', async () => (await metrics(url)).get('fastgen_kv_pages_used') === 0);
  });

  test('graceful shutdown lets an in-flight stream finish, refuses new work, then closes', async () => {
    const s = await FastgenServer.start({ port: 0, load: () => loadModel(MODEL), calibrate: false });
    await s.ready;
    const res = await post(`${s.url}/v1/completions`, { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 80, ignore_eos: true, stream: true });
    const { reader, seen } = await firstText(res);
    const closing = s.shutdown(30_000);
    assert.equal(s.state, 'draining');
    const refused = await post(`${s.url}/v1/completions`, { model: 'stories260K', prompt: 'x', max_tokens: 2 }).then(
      (r) => r.status,
      () => 'connection refused',
    );
    assert.ok(refused === 503 || refused === 'connection refused', `new work refused (${refused})`);
    const text = await readRest(reader, seen);
    assert.match(text, /"finish_reason":"length"/);
    assert.ok(text.endsWith('data: [DONE]\n\n'));
    await closing;
    assert.equal(s.state, 'closed');
    assert.equal(s.model!.pool.pagesInUse, 0);
  });

  test('shutdown with no grace cancels in-flight streams with an error event and [DONE]', async () => {
    const s = await FastgenServer.start({ port: 0, load: () => loadModel(MODEL), calibrate: false });
    await s.ready;
    const res = await post(`${s.url}/v1/completions`, { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 500, ignore_eos: true, stream: true });
    const { reader, seen } = await firstText(res);
    await s.shutdown(0);
    const text = await readRest(reader, seen);
    assert.match(text, /"code":"shutting_down"/);
    assert.ok(text.endsWith('data: [DONE]\n\n'));
    assert.equal(s.model!.pool.pagesInUse, 0);
  });
});

export type { JobResult };
