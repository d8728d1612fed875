/**
 * What a load balancer reads from a replica, in-process: GET /health's load figure and its 503 while draining, the
 * HAProxy agent's replies and weights, the capacity and reservation metrics, and streams that send no header while
 * they wait in the queue (so that a request cut there can be retried elsewhere, or answered with a status).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { loadModel, type Model } from '../src/generate/model.js';
import { agentReply } from '../src/server/haproxy-agent.js';
import { FastgenServer, type ServerOptions } from '../src/server/http.js';
import { loadFigure, loadWeightPercent, parsePrometheus, type GaugeSnapshot } from '../src/server/metrics.js';
import { sharedPath } from './shared-fixtures.js';

const MODEL = sharedPath('models/stories260K/stories260K.bin');
const SKIP = existsSync(MODEL) ? false : `${MODEL} not found (../shared is absent): load-balancer tests skipped`;
const BUDGET = 2 * 1024 * 1024;

/** One line from a TCP port (the HAProxy agent protocol: connect, read, the peer closes). */
function agentLine(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (c: string) => (text += c));
    s.on('end', () => resolve(text));
    s.on('error', reject);
    s.setTimeout(5000, () => reject(new Error('the agent did not answer')));
  });
}

interface Pending {
  /** Resolves with the status when the response headers arrive. */
  headers: Promise<number>;
  /** The whole body once the response ends. */
  body: Promise<string>;
  headersSeen: () => boolean;
}

function stream(url: string, body: object): Pending {
  let seen = false;
  let onHeaders!: (s: number) => void;
  const headers = new Promise<number>((r) => (onHeaders = r));
  const whole = new Promise<string>((resolve, reject) => {
    const req = request(`${url}/v1/completions`, { method: 'POST', agent: false, headers: { 'Content-Type': 'application/json' } }, (res) => {
      seen = true;
      onHeaders(res.statusCode ?? 0);
      let raw = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (raw += c));
      res.on('end', () => resolve(raw));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(JSON.stringify({ ...body, stream: true }));
  });
  return { headers, body: whole, headersSeen: () => seen };
}

async function until(what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const snapshot = (over: Partial<GaugeSnapshot>): GaugeSnapshot => ({
  modelName: 'm',
  running: 0,
  waiting: 0,
  maxRunning: 8,
  peakRunning: 0,
  kvPagesReserved: 0,
  fastgenKeptRatio: 1,
  kvPagesUsed: 0,
  kvPagesTotal: 100,
  kvPageBytes: 1024,
  kvBudgetBytes: 102_400,
  kvPeakPagesUsed: 0,
  kvTokenBytes: 0,
  kvFullBytes: 0,
  headsPerPolicy: {},
  runningPerPolicy: {},
  ...over,
});

describe('what a load balancer reads', { skip: SKIP }, () => {
  let model: Model;
  const servers: FastgenServer[] = [];
  const start = async (opts: Partial<ServerOptions> = {}) => {
    const s = await FastgenServer.start({ model, port: 0, kvBudgetBytes: BUDGET, calibrate: false, ...opts });
    servers.push(s);
    await s.ready;
    return s;
  };
  before(async () => {
    model = await loadModel(MODEL, { kvBudgetBytes: BUDGET, threads: 1 });
  });
  after(async () => {
    await Promise.all(servers.map((s) => s.shutdown(100)));
    model?.backend.dispose();
  });

  test('the load figure and the weight it asks for: by reserved KV memory, 1 % when full', () => {
    const idle = loadFigure(snapshot({}));
    assert.equal(idle.full, false);
    assert.equal(loadWeightPercent(idle), 100);
    // Admission's reservation (FastGen's projected size), not just the pages held now, sets the weight.
    const reserved = loadFigure(snapshot({ running: 2, kvPagesUsed: 10, kvPagesReserved: 60 }));
    assert.equal(reserved.kv_usage, 0.1);
    assert.equal(reserved.kv_reserved_usage, 0.6);
    assert.equal(loadWeightPercent(reserved), 40);
    assert.equal(agentReply({ state: 'ready', load: reserved }), 'up ready 40%\n');
    // Requests waiting, every running slot taken, or the budget promised: full.
    for (const over of [{ waiting: 1 }, { running: 8 }, { kvPagesReserved: 100 }]) {
      const l = loadFigure(snapshot(over));
      assert.equal(l.full, true, JSON.stringify(over));
      assert.equal(loadWeightPercent(l), 1, 'full is 1 %, never 0 (HAProxy reads 0 as drain)');
    }
    // No budget (unlimited): usage stays 0 rather than NaN.
    const unbounded = loadFigure(snapshot({ kvPagesTotal: Number.POSITIVE_INFINITY, kvBudgetBytes: Number.POSITIVE_INFINITY, kvPagesUsed: 5 }));
    assert.equal(unbounded.kv_usage, 0);
    assert.equal(unbounded.kv_bytes_budget, null);
  });

  test('the HAProxy agent: down while loading, up with a weight when ready, drain on shutdown', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const s = await FastgenServer.start({
      port: 0,
      agentPort: 0,
      kvBudgetBytes: BUDGET,
      calibrate: false,
      load: async () => {
        await gate;
        return model;
      },
    });
    servers.push(s);
    assert.ok(s.agentPort! > 0);
    assert.equal(await agentLine(s.agentPort!), 'down #loading\n');
    release();
    await s.ready;
    assert.equal(await agentLine(s.agentPort!), 'up ready 100%\n');
    // A running request takes part of the budget: the weight drops below 100 while it runs.
    const p = stream(s.url, { prompt: 'Once upon a time', max_tokens: 300, ignore_eos: true });
    await p.headers;
    const busy = await agentLine(s.agentPort!);
    const pct = Number(/^up ready (\d+)%\n$/.exec(busy)?.[1]);
    assert.ok(pct >= 1 && pct < 100, `weight while a request runs: ${busy}`);
    const closed = s.shutdown(30_000);
    assert.equal(await agentLine(s.agentPort!), 'drain\n');
    const h = await fetch(`${s.url}/health`);
    assert.equal(h.status, 503);
    const hb = await h.json();
    assert.equal(hb.status, 'shutting_down');
    assert.equal(hb.load.running, 1, 'the draining replica still reports its load');
    assert.match(await p.body, /"finish_reason":"length"[\s\S]*data: \[DONE\]\n\n$/, 'the in-flight stream finished');
    await closed;
    await assert.rejects(agentLine(s.agentPort!), 'the agent port closes with the server');
  });

  test('a stream sends no header while queued; cut by the shutdown it gets a 503, the running one an error event', async () => {
    const s = await start({ maxRunning: 1 });
    const running = stream(s.url, { prompt: 'Once upon a time', max_tokens: 400, ignore_eos: true });
    assert.equal(await running.headers, 200);
    const queued = stream(s.url, { prompt: 'The dog', max_tokens: 4 });
    await until('the second request to be queued', () => s.scheduler!.waiting.length === 1);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(queued.headersSeen(), false, 'no response header while the request waits');
    await s.shutdown(50); // the grace ends before either finishes
    assert.equal(await queued.headers, 503);
    const q = JSON.parse(await queued.body);
    assert.equal(q.error.code, 'shutting_down');
    const events = (await running.body).split('\n\n').filter(Boolean);
    assert.equal(events.at(-1), 'data: [DONE]');
    assert.equal(JSON.parse(events.at(-2)!.slice(6)).error.code, 'shutting_down');
    for (const e of events.slice(0, -1)) JSON.parse(e.slice(6)); // every event is whole JSON
    assert.equal(model.pool.pagesInUse, 0);
  });

  test('/metrics: KV bytes used, reserved and budget, expected capacity, running and waiting — each name once', async () => {
    const s = await start({ calibrate: true, maxRunning: 1 });
    const text0 = await (await fetch(`${s.url}/metrics`)).text();
    const m0 = parsePrometheus(text0);
    const cap = s.capacity!;
    assert.equal(m0.get('fastgen_kv_capacity_tokens{cache="full"}'), cap.full.tokens);
    assert.equal(m0.get('fastgen_kv_capacity_tokens{cache="fastgen"}'), cap.fastgen!.tokens);
    assert.ok(cap.fastgen!.tokens > cap.full.tokens, 'FastGen is expected to hold more tokens than a full cache');
    assert.equal(m0.get('fastgen_kv_max_concurrency{cache="fastgen"}'), cap.fastgen!.maxConcurrency);
    assert.equal(m0.get('fastgen_kv_bytes_budget'), BUDGET);
    assert.equal(m0.get('fastgen_kv_bytes_reserved'), 0);
    const types = text0.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2]);
    assert.equal(new Set(types).size, types.length, 'no metric is exposed twice');
    for (const name of ['vllm:num_requests_running', 'vllm:num_requests_waiting', 'vllm:kv_cache_usage_perc']) assert.ok(types.includes(name), name);

    const a = stream(s.url, { prompt: 'Once upon a time', max_tokens: 300, ignore_eos: true });
    await a.headers;
    const b = stream(s.url, { prompt: 'The dog', max_tokens: 4 });
    await until('b to wait', () => s.scheduler!.waiting.length === 1);
    const m = parsePrometheus(await (await fetch(`${s.url}/metrics`)).text());
    assert.equal(m.get('vllm:num_requests_running{model_name="stories260K"}'), 1);
    assert.equal(m.get('vllm:num_requests_waiting{model_name="stories260K"}'), 1);
    const used = m.get('fastgen_kv_bytes_used')!;
    const reserved = m.get('fastgen_kv_bytes_reserved')!;
    assert.ok(used > 0 && reserved >= used, `reserved ${reserved} ≥ used ${used} > 0`);
    const health = await (await fetch(`${s.url}/health`)).json();
    assert.equal(health.load.full, true, 'a request waits: full');
    // `a` keeps decoding between the two reads, so /health may see more pages in use, never more than `a` reserved.
    const seen = health.load.kv_bytes_used;
    assert.ok(seen >= used && seen <= reserved, `/health's KV bytes used ${seen} within [${used}, ${reserved}] of /metrics`);
    await Promise.all([a.body, b.body]);
    await until('the pool to empty', () => model.pool.pagesInUse === 0);
    const after = parsePrometheus(await (await fetch(`${s.url}/metrics`)).text());
    assert.equal(after.get('fastgen_kv_bytes_used'), 0);
    assert.equal(after.get('fastgen_kv_bytes_reserved'), 0);
  });
});
