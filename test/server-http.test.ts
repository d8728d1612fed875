/**
 * The server over real HTTP: OpenAI endpoints (plain fetch and the official `openai` client), SSE streaming, equality
 * with the library for the same seed, metrics, and 400s for bad input while a concurrent request carries on.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { loadModel, type Model } from '../src/generate/model.js';
import { FastgenServer } from '../src/server/http.js';
import { parsePrometheus } from '../src/server/metrics.js';
import { sharedPath } from './shared-fixtures.js';

const MODEL = sharedPath('models/stories260K/stories260K.bin');
const SKIP = existsSync(MODEL) ? false : `${MODEL} not found (../shared is absent): server HTTP tests skipped`;

interface Sse {
  status: number;
  contentType: string;
  events: any[];
  done: boolean;
  raw: string;
}

async function post(url: string, body: unknown): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

async function readSse(res: Response): Promise<Sse> {
  const raw = await res.text();
  const events: any[] = [];
  let done = false;
  for (const block of raw.split('\n\n')) {
    if (!block) continue;
    assert.ok(block.startsWith('data: '), `SSE block: ${block}`);
    assert.ok(!done, 'nothing may follow [DONE]');
    const data = block.slice(6);
    if (data === '[DONE]') done = true;
    else events.push(JSON.parse(data));
  }
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', events, done, raw };
}

async function metrics(url: string): Promise<Map<string, number>> {
  return parsePrometheus(await (await fetch(`${url}/metrics`)).text());
}

describe('server over HTTP', { skip: SKIP }, () => {
  let server: FastgenServer;
  let url: string;
  let lib: Model;
  let releaseLoad!: () => void;
  const gate = new Promise<void>((r) => (releaseLoad = r));

  before(async () => {
    // The load waits on `gate` so that the test can see /health say 503 while the model loads.
    server = await FastgenServer.start({
      port: 0,
      load: async () => {
        await gate;
        return loadModel(MODEL, { kvBudgetBytes: 4 * 1024 * 1024 });
      },
      kvBudgetBytes: 4 * 1024 * 1024,
      calibrate: false,
    });
    url = server.url;
    lib = await loadModel(MODEL);
  });

  after(async () => {
    releaseLoad();
    await server?.shutdown(1000);
  });

  test('GET /health is 503 while the model loads, then 200; generation is 503 meanwhile', async () => {
    let r = await fetch(`${url}/health`);
    assert.equal(r.status, 503);
    assert.deepEqual(await r.json(), { status: 'loading' });
    r = await post(`${url}/v1/completions`, { model: 'stories260K', prompt: 'Hi' });
    assert.equal(r.status, 503);
    assert.equal((await r.json()).error.code, 'model_loading');
    releaseLoad();
    await server.ready;
    r = await fetch(`${url}/health`);
    assert.equal(r.status, 200);
    const health = await r.json();
    assert.equal(health.status, 'ok');
    // Idle: the load figure a balancer reads says so, and the budget is the one configured.
    assert.deepEqual(health.load, {
      running: 0,
      waiting: 0,
      max_running: 64,
      kv_bytes_used: 0,
      kv_bytes_reserved: 0,
      kv_bytes_budget: 4 * 1024 * 1024,
      kv_usage: 0,
      kv_reserved_usage: 0,
      full: false,
    });
  });

  test('GET /v1/models, POST /tokenize and /detokenize', async () => {
    await server.ready;
    const models = await (await fetch(`${url}/v1/models`)).json();
    assert.equal(models.object, 'list');
    assert.equal(models.data[0].id, 'stories260K');
    assert.equal(models.data[0].max_model_len, 512);
    const tok = await (await post(`${url}/tokenize`, { prompt: 'Once upon a time' })).json();
    assert.deepEqual(tok.tokens, lib.encode('Once upon a time'));
    assert.equal(tok.count, tok.tokens.length);
    const de = await (await post(`${url}/detokenize`, { tokens: tok.tokens })).json();
    assert.equal(de.prompt.trim(), 'Once upon a time');
  });

  test('completions: same text as the library for the same seed (fastgen default and full), usage reports KV', async () => {
    await server.ready;
    for (const cache of [undefined, { policy: 'full' as const }]) {
      const r = await post(`${url}/v1/completions`, { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 24, temperature: 0.9, seed: 42, ...(cache ? { cache } : {}) });
      assert.equal(r.status, 200);
      const body = await r.json();
      const want = await lib.complete('Once upon a time', { maxTokens: 24, temperature: 0.9, seed: 42, cache: cache ?? { policy: 'fastgen' } });
      assert.equal(body.object, 'text_completion');
      assert.equal(body.choices[0].text, want.text);
      assert.equal(body.usage.completion_tokens, want.generatedTokens);
      assert.equal(body.usage.prompt_tokens, want.promptTokens);
      assert.equal(body.usage.total_tokens, want.promptTokens + want.generatedTokens);
      assert.equal(body.usage.kv_peak_bytes, want.kv.peakKvBytes);
      assert.equal(body.usage.kv_full_bytes, want.kv.peakFullKvBytes);
      if (cache) {
        assert.equal(body.usage.kv_policy, 'full');
        assert.equal(body.usage.kv_peak_bytes, body.usage.kv_full_bytes);
      } else {
        assert.equal(body.usage.kv_policy, 'fastgen');
        assert.ok(body.usage.kv_peak_bytes < body.usage.kv_full_bytes, 'fastgen holds less than a full cache');
        assert.ok(body.usage.kv_pruned_ratio > 0);
      }
    }
  });

  test('completions SSE stream: pieces add up to the non-streamed text, finish chunk, usage chunk, [DONE]', async () => {
    await server.ready;
    const req = { model: 'stories260K', prompt: 'The cat', max_tokens: 20, temperature: 0.7, seed: 7 };
    const plain = await (await post(`${url}/v1/completions`, req)).json();
    const sse = await readSse(await post(`${url}/v1/completions`, { ...req, stream: true, stream_options: { include_usage: true } }));
    assert.equal(sse.status, 200);
    assert.match(sse.contentType, /^text\/event-stream/);
    assert.ok(sse.done, 'ends with data: [DONE]');
    const withChoices = sse.events.filter((e) => e.choices.length);
    assert.equal(withChoices.map((e) => e.choices[0].text).join(''), plain.choices[0].text);
    assert.equal(withChoices.filter((e) => e.choices[0].finish_reason).length, 1);
    assert.equal(withChoices.at(-1).choices[0].finish_reason, plain.choices[0].finish_reason);
    const last = sse.events.at(-1);
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.completion_tokens, plain.usage.completion_tokens);
    assert.ok(sse.events.every((e) => e.id === sse.events[0].id));
  });

  test('chat: same text as model.chat for the same seed; streaming starts with the role', async () => {
    await server.ready;
    const messages = [{ role: 'user', content: 'Once upon a time there was a dog.' }];
    const want = await lib.chat(messages, { maxTokens: 16, temperature: 0.8, seed: 3, cache: { policy: 'fastgen' } }).result;
    const r = await post(`${url}/v1/chat/completions`, { model: 'stories260K', messages, max_tokens: 16, temperature: 0.8, seed: 3 });
    const body = await r.json();
    assert.equal(body.object, 'chat.completion');
    assert.equal(body.choices[0].message.role, 'assistant');
    assert.equal(body.choices[0].message.content, want.text);
    const sse = await readSse(await post(`${url}/v1/chat/completions`, { model: 'stories260K', messages, max_tokens: 16, temperature: 0.8, seed: 3, stream: true }));
    assert.deepEqual(sse.events[0].choices[0].delta, { role: 'assistant', content: '' });
    assert.equal(sse.events.map((e) => e.choices[0]?.delta?.content ?? '').join(''), want.text);
    assert.ok(sse.done);
  });

  test('the official openai client: completions and chat, streaming and not', async () => {
    await server.ready;
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const c = await client.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 12, temperature: 0, seed: 1 });
    const want = await lib.complete('Once upon a time', { maxTokens: 12, temperature: 0, cache: { policy: 'fastgen' } });
    assert.equal(c.choices[0].text, want.text);
    assert.equal(c.usage?.completion_tokens, want.generatedTokens);

    let text = '';
    let usage: any;
    const stream = await client.completions.create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 12, temperature: 0, stream: true, stream_options: { include_usage: true } });
    for await (const chunk of stream) {
      text += chunk.choices[0]?.text ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(text, want.text);
    assert.equal(usage.completion_tokens, want.generatedTokens);

    const messages = [{ role: 'user' as const, content: 'Tom had a red ball.' }];
    const chatWant = await lib.chat(messages, { maxTokens: 10, temperature: 0.5, seed: 11, cache: { policy: 'full' } }).result;
    // The per-request cache policy is an extra field: the client passes it through in the body.
    const chat = await client.chat.completions.create({ model: 'stories260K', messages, max_tokens: 10, temperature: 0.5, seed: 11, cache: { policy: 'full' } } as any);
    assert.equal((chat as any).choices[0].message.content, chatWant.text);
    assert.equal((chat as any).usage.kv_policy, 'full');

    let chatText = '';
    let chatUsage: any;
    const chatStream = await client.chat.completions.create({ model: 'stories260K', messages, max_tokens: 10, temperature: 0.5, seed: 11, stream: true, stream_options: { include_usage: true }, cache: { policy: 'full' } } as any);
    for await (const chunk of chatStream as any) {
      chatText += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) chatUsage = chunk.usage;
    }
    assert.equal(chatText, chatWant.text);
    assert.equal(chatUsage.completion_tokens, chatWant.generatedTokens);

    await assert.rejects(client.completions.create({ model: 'gpt-4', prompt: 'x', max_tokens: 2 }), (e: any) => {
      assert.ok(e instanceof OpenAI.NotFoundError, 'an unknown model is a 404, as with OpenAI');
      assert.equal(e.code, 'model_not_found');
      assert.match(e.message, /does not exist/);
      return true;
    });
  });

  test('bad input gets a 400 with an OpenAI-style error while a concurrent request completes', async () => {
    await server.ready;
    const long = post(`${url}/v1/completions`, { model: 'stories260K', prompt: 'Once upon a time', max_tokens: 120, temperature: 0.6, seed: 5, ignore_eos: true });
    const longPrompt = Array.from({ length: 600 }, () => 100);
    const cases: [string, unknown, string | null][] = [
      ['malformed JSON', '{"model": "stories260K", "prompt": ', null],
      ['empty body', '', null],
      ['body not an object', '[1,2,3]', null],
      ['model of the wrong type', { model: 7, prompt: 'hi' }, 'model'],
      ['missing prompt', { model: 'stories260K' }, 'prompt'],
      ['wrong type: temperature', { model: 'stories260K', prompt: 'hi', temperature: 'hot' }, 'temperature'],
      ['wrong type: max_tokens', { model: 'stories260K', prompt: 'hi', max_tokens: '5' }, 'max_tokens'],
      ['negative max_tokens', { model: 'stories260K', prompt: 'hi', max_tokens: -3 }, 'max_tokens'],
      ['fractional max_tokens', { model: 'stories260K', prompt: 'hi', max_tokens: 2.5 }, 'max_tokens'],
      ['absurd max_tokens', { model: 'stories260K', prompt: 'hi', max_tokens: 1e9 }, 'max_tokens'],
      ['prompt longer than the context', { model: 'stories260K', prompt: longPrompt, max_tokens: 4 }, 'prompt'],
      ['token id outside the vocabulary', { model: 'stories260K', prompt: [1, 99999], max_tokens: 4 }, 'prompt'],
      ['top_p out of range', { model: 'stories260K', prompt: 'hi', top_p: 1.5 }, 'top_p'],
      ['n too large', { model: 'stories260K', prompt: 'hi', n: 1000 }, 'n'],
      ['unknown cache policy', { model: 'stories260K', prompt: 'hi', cache: { policy: 'magic' } }, 'cache.policy'],
      ['recovery out of range', { model: 'stories260K', prompt: 'hi', cache: { policy: 'fastgen', recovery: 2 } }, 'cache.recovery'],
      ['stop of the wrong type', { model: 'stories260K', prompt: 'hi', stop: 5 }, 'stop'],
      ['several prompts', { model: 'stories260K', prompt: ['a', 'b'] }, 'prompt'],
    ];
    for (const [name, body, param] of cases) {
      const r = await post(`${url}/v1/completions`, body);
      assert.equal(r.status, 400, `${name}: status`);
      const e = await r.json();
      assert.equal(typeof e.error?.message, 'string', `${name}: message`);
      assert.equal(e.error.type, 'invalid_request_error', `${name}: type`);
      if (param) assert.equal(e.error.param, param, `${name}: param (${e.error.message})`);
    }
    const chatCases: [string, unknown][] = [
      ['messages missing', { model: 'stories260K' }],
      ['messages not an array', { model: 'stories260K', messages: 'hi' }],
      ['message without content', { model: 'stories260K', messages: [{ role: 'user' }] }],
      ['message with a number role', { model: 'stories260K', messages: [{ role: 1, content: 'x' }] }],
      ['absurd max_completion_tokens', { model: 'stories260K', messages: [{ role: 'user', content: 'x' }], max_completion_tokens: 100000 }],
    ];
    for (const [name, body] of chatCases) {
      const r = await post(`${url}/v1/chat/completions`, body);
      assert.equal(r.status, 400, `${name}: status`);
      assert.equal((await r.json()).error.type, 'invalid_request_error', name);
    }
    assert.equal((await fetch(`${url}/v1/nothing`)).status, 404);
    assert.equal((await fetch(`${url}/v1/completions`)).status, 405);

    const r = await long;
    assert.equal(r.status, 200);
    const body = await r.json();
    const want = await lib.complete('Once upon a time', { maxTokens: 120, temperature: 0.6, seed: 5, ignoreEos: true, cache: { policy: 'fastgen' } });
    assert.equal(body.choices[0].text, want.text, 'the concurrent request is unaffected');
    assert.equal(body.usage.completion_tokens, 120);
  });

  test('metrics move with traffic', async () => {
    await server.ready;
    const m0 = await metrics(url);
    const r = await post(`${url}/v1/completions`, { model: 'stories260K', prompt: 'A bird', max_tokens: 8, temperature: 0, ignore_eos: true });
    assert.equal(r.status, 200);
    await r.json();
    const m1 = await metrics(url);
    const d = (k: string) => (m1.get(k) ?? 0) - (m0.get(k) ?? 0);
    assert.equal(d('fastgen_generation_tokens_total'), 8);
    assert.ok(d('fastgen_prompt_tokens_total') >= 2);
    assert.equal(d('fastgen_time_to_first_token_seconds_count'), 1);
    assert.equal(d('fastgen_requests_total{finish_reason="length"}'), 1);
    assert.ok(d('fastgen_scheduler_steps_total') >= 8);
    assert.ok(d('fastgen_kv_heads_profiled_total{policy="full"}') + d('fastgen_kv_heads_profiled_total{policy="special+punct+frequent+local"}') > 0);
    assert.equal(m1.get('fastgen_kv_bytes_budget'), 4 * 1024 * 1024);
    assert.equal(m1.get('fastgen_requests_running'), 0);
    assert.equal(m1.get('fastgen_kv_pages_used'), 0, 'pages return to the pool');
    assert.ok((m1.get('fastgen_kv_pages_used_peak') ?? 0) > 0);
    assert.ok(m1.has('fastgen_requests_waiting'));
    assert.ok((m1.get('fastgen_requests_rejected_total{reason="invalid"}') ?? 0) > 0);
  });
});
