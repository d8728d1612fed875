/**
 * `fastgen loadtest`: N concurrent streaming clients against the server, once with `--cache full` and once with
 * `--cache fastgen`, under the same KV budget. Loopback only and bounded (a fixed number of requests, a timeout).
 *
 * By default it starts the server in-process on 127.0.0.1 (ephemeral port); `--url` points it at a running
 * `fastgen serve` on this machine instead (the two runs then differ by the per-request `cache` field).
 */
import { request as httpRequest } from 'node:http';
import { InvalidOptionError } from '../errors.js';
import { loadModel, type LoadModelOptions } from '../generate/model.js';
import { CALIBRATION_TEXT } from '../server/capacity.js';
import { FastgenServer } from '../server/http.js';
import { parsePrometheus } from '../server/metrics.js';
import { formatBytes, mulberry32, parseRange, percentile } from '../server/util.js';
import { CACHE_POLICY_NAMES, cachePolicy } from '../cache/policies/index.js';
import { modelOptions, newCommand, numberArg, option, parseChoice, parseCommand, sizeArg } from './args.js';

export function loadtestCli() {
  const cmd = newCommand(
    'fastgen loadtest',
    `Run N concurrent streaming clients (varied prompt and output lengths) against the server, first with a full KV cache
and then with FastGen under the same KV budget; report throughput, latency, time to first token, peak concurrency and
KV use. Starts the server in-process on 127.0.0.1 unless --url is given (loopback addresses only).`,
  );
  modelOptions(cmd, { tokenizer: false, dtype: false, kvBudget: false });
  cmd
    .addOption(option('--url <url>', 'use a running server on this machine instead (e.g. http://127.0.0.1:8080)'))
    .addOption(option('--api-key <key>', "that server's API key (default: the FASTGEN_API_KEY environment variable)"))
    .addOption(option('-c, --clients <n>', 'concurrent clients (default 8)', numberArg('--clients', { integer: true, min: 1, max: 256 })))
    .addOption(option('-n, --requests <n>', 'requests per run (default 2 × clients)', numberArg('--requests', { integer: true, min: 1, max: 10_000 })))
    .addOption(option('--kv-budget <size>', "KV budget (default: what a full cache needs for about a third of the clients' largest requests)", sizeArg('--kv-budget')))
    .addOption(option('--page-tokens <n>', 'tokens per KV page (in-process server; default 16)', numberArg('--page-tokens', { integer: true, min: 1, max: 4096 })))
    .addOption(option('--prompt-tokens <range>', 'prompt length range in tokens, A-B (default 24-96)', (v) => parseRange(v, '--prompt-tokens')))
    .addOption(option('--max-tokens <range>', 'output length range in tokens, A-B (default 16-64; EOS is ignored so every output has its length)', (v) => parseRange(v, '--max-tokens')))
    .addOption(option('--cache <list>', `runs, in order, comma-separated: ${CACHE_POLICY_NAMES.join(', ')} (default full,fastgen)`, (v) => v.split(',').map((c) => c.trim()).filter(Boolean).map((c) => parseChoice(c, '--cache', CACHE_POLICY_NAMES, 'cache policy'))))
    .addOption(option('--recovery <t>', 'FastGen recovery threshold (default 0.95)', numberArg('--recovery', { above: 0, max: 1 })))
    .addOption(option('--temperature <t>', 'sampling temperature (default 0.8; every request has a fixed seed)', numberArg('--temperature', { min: 0 })))
    .addOption(option('--seed <n>', 'workload seed (default 1)', numberArg('--seed', { integer: true })))
    .addOption(option('--timeout <s>', 'give up on a request after S seconds (default 600)', numberArg('--timeout', { above: 0 })))
    .addOption(option('--json', 'print the report as JSON'));
  return cmd;
}

export interface LoadtestOptions {
  modelPath?: string;
  /** Extra model-loading options for the in-process server (backend, kvDtype, threads). */
  load?: Pick<LoadModelOptions, 'backend' | 'kvDtype' | 'threads' | 'dtype'>;
  /** A running server (loopback only); otherwise one is started in-process. */
  url?: string;
  clients: number;
  requests: number;
  kvBudgetBytes?: number;
  pageTokens?: number;
  promptTokens: [number, number];
  maxTokens: [number, number];
  caches: string[];
  recovery: number;
  temperature: number;
  seed: number;
  timeoutMs: number;
  /** Bearer key of a running server started with --api-key (--url). */
  apiKey?: string;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
}

export interface RequestRecord {
  index: number;
  promptTokens: number;
  maxTokens: number;
  ok: boolean;
  error?: string;
  status?: number;
  latencyMs: number;
  ttftMs: number;
  completionTokens: number;
  text: string;
  kvPeakBytes?: number;
  kvFullBytes?: number;
  preemptions?: number;
  retries429: number;
}

export interface PhaseReport {
  cache: string;
  requests: number;
  ok: number;
  failed: number;
  errors: string[];
  makespanS: number;
  requestsPerS: number;
  generatedTokens: number;
  generatedTokensPerS: number;
  latencyS: { p50: number; p99: number; mean: number };
  ttftS: { p50: number; p99: number; mean: number };
  peakRunning: number;
  peakWaiting: number;
  peakKvBytes: number;
  peakKvPages: number;
  /** Mean over requests of 1 − peak kept bytes / full-cache bytes. */
  meanPrunedRatio: number;
  preemptions: number;
  records: RequestRecord[];
}

export interface LoadtestReport {
  url: string;
  model: string;
  /** Backend of the in-process server (unknown with --url). */
  backend?: string;
  contextLength: number;
  budgetBytes: number;
  budgetPages: number;
  pageBytes: number;
  clients: number;
  requests: number;
  promptTokens: [number, number];
  maxTokens: [number, number];
  /** Full-cache worst-case pages of the mean request, and how many such requests the budget fits at once. */
  fullPagesPerMeanRequest: number;
  fullCacheFitsAtOnce: number;
  phases: PhaseReport[];
  comparison?: {
    concurrencyGain: number;
    speedup: number;
    fastgenServedMoreConcurrently: boolean;
    fastgenFinishedSooner: boolean;
  };
}

function isLoopback(url: URL): boolean {
  const h = url.hostname.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

async function getJson(url: string, init?: { method?: string; body?: string; apiKey?: string }): Promise<any> {
  const r = await httpCall(url, init?.method ?? 'GET', init?.body, 120_000, init?.apiKey);
  const text = await readAll(r.body);
  if (r.status !== 200) throw new Error(`${init?.method ?? 'GET'} ${url}: HTTP ${r.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

async function getMetrics(base: string, apiKey: string | undefined): Promise<Map<string, number>> {
  const r = await httpCall(`${base}/metrics`, 'GET', undefined, 120_000, apiKey);
  return parsePrometheus(await readAll(r.body));
}

interface WorkItem {
  index: number;
  prompt: number[];
  maxTokens: number;
  seed: number;
}

/** Deterministic workload: prompts cut from an in-domain text at varied offsets, lengths drawn from the ranges. */
async function buildWorkload(base: string, model: string, ctx: number, o: LoadtestOptions): Promise<WorkItem[]> {
  const tok = await getJson(`${base}/tokenize`, { method: 'POST', body: JSON.stringify({ model, prompt: CALIBRATION_TEXT }), apiKey: o.apiKey });
  const ids: number[] = tok.tokens;
  const bos = ids[0];
  const body = ids.slice(1);
  const rnd = mulberry32(o.seed);
  const pick = ([a, b]: [number, number]) => a + Math.floor(rnd() * (b - a + 1));
  const items: WorkItem[] = [];
  for (let i = 0; i < o.requests; i++) {
    let p = pick(o.promptTokens);
    let m = pick(o.maxTokens);
    if (p + m > ctx) {
      p = Math.max(2, Math.min(p, ctx - m));
      m = Math.min(m, ctx - p);
    }
    const start = Math.floor(rnd() * body.length);
    const prompt = [bos];
    for (let k = 0; prompt.length < p; k++) prompt.push(body[(start + k) % body.length]);
    items.push({ index: i, prompt, maxTokens: m, seed: o.seed * 1000 + i });
  }
  return items;
}

interface HttpReply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: AsyncIterable<Buffer>;
}

/**
 * One HTTP request on a fresh connection (no keep-alive pool: a pooled connection that the server closes while
 * idle would fail the next request sent on it, which a load test must not mistake for a server failure).
 */
function httpCall(url: string, method: string, body: string | undefined, timeoutMs: number, apiKey?: string): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = body ? { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } : {};
    if (apiKey !== undefined) headers.Authorization = `Bearer ${apiKey}`;
    const req = httpRequest(url, { method, agent: false, headers, timeout: timeoutMs });
    req.on('response', (res) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res }));
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(body);
  });
}

async function readAll(body: AsyncIterable<Buffer>): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of body) parts.push(c);
  return Buffer.concat(parts).toString('utf8');
}

/** One streaming completion; checks that the stream is well-formed. */
async function runOne(base: string, model: string, item: WorkItem, cache: Record<string, unknown>, o: LoadtestOptions): Promise<RequestRecord> {
  const rec: RequestRecord = {
    index: item.index,
    promptTokens: item.prompt.length,
    maxTokens: item.maxTokens,
    ok: false,
    latencyMs: 0,
    ttftMs: Number.NaN,
    completionTokens: 0,
    text: '',
    retries429: 0,
  };
  const payload = JSON.stringify({
    model,
    prompt: item.prompt,
    max_tokens: item.maxTokens,
    temperature: o.temperature,
    seed: item.seed,
    ignore_eos: true,
    stream: true,
    stream_options: { include_usage: true },
    cache,
  });
  const t0 = performance.now();
  try {
    let res: HttpReply;
    for (;;) {
      res = await httpCall(`${base}/v1/completions`, 'POST', payload, o.timeoutMs, o.apiKey);
      if (res.status !== 429 || rec.retries429 >= 50) break;
      rec.retries429++;
      await readAll(res.body);
      await new Promise((r) => setTimeout(r, 200));
    }
    rec.status = res.status;
    if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${(await readAll(res.body)).slice(0, 200)}`);
    const type = String(res.headers['content-type'] ?? '');
    if (!type.startsWith('text/event-stream')) throw new Error(`content-type ${type}`);
    const dec = new TextDecoder();
    let buf = '';
    let done = false;
    let finish: string | null = null;
    let usage: any;
    let id: string | undefined;
    const onEvent = (ev: string) => {
      if (done) throw new Error('data after [DONE]');
      if (!ev.startsWith('data: ')) throw new Error(`malformed SSE event: ${JSON.stringify(ev.slice(0, 80))}`);
      const data = ev.slice(6);
      if (data === '[DONE]') {
        done = true;
        return;
      }
      const c = JSON.parse(data);
      if (c.error) throw new Error(`error event: ${c.error.message}`);
      if (c.object !== 'text_completion' || typeof c.id !== 'string' || !Array.isArray(c.choices)) throw new Error(`malformed chunk: ${data.slice(0, 120)}`);
      if (id !== undefined && c.id !== id) throw new Error('chunk ids differ within one stream');
      id = c.id;
      if (c.usage) usage = c.usage;
      for (const ch of c.choices) {
        if (typeof ch.text !== 'string') throw new Error('chunk without text');
        if (ch.text && Number.isNaN(rec.ttftMs)) rec.ttftMs = performance.now() - t0;
        rec.text += ch.text;
        if (ch.finish_reason) {
          if (finish) throw new Error('two finish_reason chunks');
          finish = ch.finish_reason;
        }
      }
    };
    for await (const value of res.body) {
      buf += dec.decode(value, { stream: true });
      let k: number;
      while ((k = buf.indexOf('\n\n')) >= 0) {
        onEvent(buf.slice(0, k));
        buf = buf.slice(k + 2);
      }
    }
    if (buf.trim()) throw new Error('stream ended in the middle of an event');
    if (!done) throw new Error('stream ended without data: [DONE]');
    if (!finish) throw new Error('no finish_reason');
    if (!usage) throw new Error('no usage chunk (stream_options.include_usage)');
    rec.completionTokens = usage.completion_tokens;
    rec.kvPeakBytes = usage.kv_peak_bytes;
    rec.kvFullBytes = usage.kv_full_bytes;
    rec.preemptions = usage.preemptions;
    if (usage.prompt_tokens !== item.prompt.length) throw new Error(`usage.prompt_tokens ${usage.prompt_tokens} ≠ ${item.prompt.length}`);
    if (usage.completion_tokens !== item.maxTokens || finish !== 'length') {
      throw new Error(`expected ${item.maxTokens} tokens and finish_reason length, got ${usage.completion_tokens} and ${finish}`);
    }
    if (rec.text.length === 0) throw new Error('empty text');
    rec.ok = true;
  } catch (e) {
    const cause = e instanceof Error && e.cause ? ` (${e.cause instanceof Error ? e.cause.message : String(e.cause)})` : '';
    rec.error = `${e instanceof Error ? e.message : String(e)}${cause}`;
  }
  rec.latencyMs = performance.now() - t0;
  return rec;
}

async function waitIdle(base: string, timeoutMs: number, apiKey: string | undefined): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const m = await getMetrics(base, apiKey);
    if ((m.get('fastgen_requests_running') ?? 0) === 0 && (m.get('fastgen_requests_waiting') ?? 0) === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the server did not become idle');
}

async function runPhase(
  base: string,
  model: string,
  work: WorkItem[],
  cacheName: string,
  o: LoadtestOptions,
  pageBytes: number,
  server: FastgenServer | undefined,
): Promise<PhaseReport> {
  await waitIdle(base, 60_000, o.apiKey);
  // In-process: the scheduler's exact peaks, reset for this run (polling /metrics, used for --url, samples them).
  const sched = server?.scheduler;
  if (sched) {
    sched.peakRunning = 0;
    sched.peakWaiting = 0;
    sched.peakPagesUsed = 0;
  }
  const takesRecovery = cachePolicy(cacheName).options.some((s) => s.key === 'recovery');
  const cache: Record<string, unknown> = takesRecovery ? { policy: cacheName, recovery: o.recovery } : { policy: cacheName };
  const before = await getMetrics(base, o.apiKey);
  let peakRunning = 0;
  let peakWaiting = 0;
  let peakPages = 0;
  let polling = !sched;
  const poller = (async () => {
    while (polling) {
      try {
        const m = await getMetrics(base, o.apiKey);
        peakRunning = Math.max(peakRunning, m.get('fastgen_requests_running') ?? 0);
        peakWaiting = Math.max(peakWaiting, m.get('fastgen_requests_waiting') ?? 0);
        peakPages = Math.max(peakPages, m.get('fastgen_kv_pages_used') ?? 0);
      } catch {
        // the server is busy; try again
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const records: RequestRecord[] = [];
  let next = 0;
  const t0 = performance.now();
  const client = async () => {
    while (next < work.length) {
      const item = work[next++];
      const r = await runOne(base, model, item, cache, o);
      records.push(r);
      o.log?.(`  [${cacheName}] request ${item.index + 1}/${work.length}: ${r.ok ? 'ok' : `FAILED (${r.error})`} ${item.prompt.length}+${item.maxTokens} tokens in ${(r.latencyMs / 1000).toFixed(2)} s`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.clients, work.length) }, client));
  const makespanS = (performance.now() - t0) / 1000;
  polling = false;
  await poller;
  const after = await getMetrics(base, o.apiKey);
  if (sched) {
    peakRunning = Math.max(peakRunning, sched.peakRunning);
    peakWaiting = Math.max(peakWaiting, sched.peakWaiting);
    peakPages = Math.max(peakPages, sched.peakPagesUsed);
  }
  records.sort((a, b) => a.index - b.index);
  const ok = records.filter((r) => r.ok);
  const lat = ok.map((r) => r.latencyMs / 1000);
  const ttft = ok.map((r) => r.ttftMs / 1000).filter((x) => Number.isFinite(x));
  const gen = ok.reduce((s, r) => s + r.completionTokens, 0);
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
  const pruned = ok.filter((r) => r.kvFullBytes).map((r) => 1 - r.kvPeakBytes! / r.kvFullBytes!);
  return {
    cache: cacheName,
    requests: work.length,
    ok: ok.length,
    failed: records.length - ok.length + (work.length - records.length),
    errors: records.filter((r) => !r.ok).map((r) => `request ${r.index}: ${r.error}`),
    makespanS,
    requestsPerS: ok.length / makespanS,
    generatedTokens: gen,
    generatedTokensPerS: gen / makespanS,
    latencyS: { p50: percentile(lat, 50), p99: percentile(lat, 99), mean: mean(lat) },
    ttftS: { p50: percentile(ttft, 50), p99: percentile(ttft, 99), mean: mean(ttft) },
    peakRunning,
    peakWaiting,
    peakKvBytes: peakPages * pageBytes,
    peakKvPages: peakPages,
    meanPrunedRatio: mean(pruned),
    preemptions: (after.get('fastgen_preemptions_total') ?? 0) - (before.get('fastgen_preemptions_total') ?? 0),
    records,
  };
}

export async function runLoadtest(o: LoadtestOptions): Promise<LoadtestReport> {
  const log = o.log ?? (() => {});
  let server: FastgenServer | undefined;
  let base: string;
  try {
    if (o.url) {
      const u = new URL(o.url);
      if (!isLoopback(u)) throw new InvalidOptionError(`--url must be a loopback address (127.0.0.1, ::1, localhost); got ${u.hostname}`, '--url');
      base = u.origin;
    } else {
      const loadOpts: LoadModelOptions = { ...o.load, pageTokens: o.pageTokens, kvBudgetBytes: o.kvBudgetBytes };
      log(`loading ${o.modelPath ?? 'the default model (stories15M)'} ...`);
      const model = await loadModel(o.modelPath, loadOpts);
      let budget = o.kvBudgetBytes;
      if (budget === undefined) {
        // Default: a full cache fits about a third of the clients' largest requests at once.
        const c = model.config;
        const heads = c.nLayers * c.nKvHeads;
        const worst = Math.min(c.maxSeqLen, o.promptTokens[1] + o.maxTokens[1]);
        const pages = heads * Math.ceil(worst / model.pool.pageTokens) * Math.max(1, Math.round(o.clients / 3));
        budget = pages * model.pool.pageBytes;
      }
      server = await FastgenServer.start({
        model,
        host: '127.0.0.1',
        port: 0,
        kvBudgetBytes: budget,
        cache: { policy: 'fastgen', recovery: o.recovery },
        maxRunning: Math.max(64, o.clients),
        maxWaiting: Math.max(256, o.requests),
        log: (l) => log(`  server: ${l}`),
        logRequests: false,
      });
      await server.ready;
      base = server.url;
    }
    const models = await getJson(`${base}/v1/models`, { apiKey: o.apiKey });
    const model: string = models.data[0].id;
    const ctx: number = models.data[0].max_model_len;
    const m0 = await getMetrics(base, o.apiKey);
    const budgetBytes = m0.get('fastgen_kv_bytes_budget') ?? Number.POSITIVE_INFINITY;
    const budgetPages = m0.get('fastgen_kv_pages_total') ?? Number.POSITIVE_INFINITY;
    const pageBytes = budgetPages > 0 && Number.isFinite(budgetPages) ? Math.floor(budgetBytes / budgetPages) : 0;
    const work = await buildWorkload(base, model, ctx, o);

    // Warm the JIT on both policies so that the first run is not penalised.
    for (const name of o.caches) {
      await getJson(`${base}/v1/completions`, {
        method: 'POST',
        body: JSON.stringify({ model, prompt: work[0].prompt.slice(0, 8), max_tokens: 4, ignore_eos: true, cache: { policy: name } }),
        apiKey: o.apiKey,
      });
    }

    const phases: PhaseReport[] = [];
    for (const name of o.caches) {
      log(`run: --cache ${name}, ${o.clients} clients, ${work.length} requests`);
      phases.push(await runPhase(base, model, work, name, o, pageBytes, server));
    }

    // Mean full-cache need of a request, in pages, against the budget.
    const sample = server?.model;
    let fullPagesPerMeanRequest = Number.NaN;
    if (sample) {
      const c = sample.config;
      const heads = c.nLayers * c.nKvHeads;
      const meanLen = work.reduce((s, w) => s + w.prompt.length + w.maxTokens, 0) / work.length;
      fullPagesPerMeanRequest = heads * Math.ceil(meanLen / sample.pool.pageTokens);
    }
    const report: LoadtestReport = {
      url: base,
      model,
      backend: server?.model?.backend.name,
      contextLength: ctx,
      budgetBytes,
      budgetPages,
      pageBytes,
      clients: o.clients,
      requests: work.length,
      promptTokens: o.promptTokens,
      maxTokens: o.maxTokens,
      fullPagesPerMeanRequest,
      fullCacheFitsAtOnce: budgetPages / fullPagesPerMeanRequest,
      phases,
    };
    const full = phases.find((p) => p.cache === 'full');
    const fg = phases.find((p) => p.cache === 'fastgen');
    if (full && fg) {
      report.comparison = {
        concurrencyGain: fg.peakRunning / full.peakRunning,
        speedup: full.makespanS / fg.makespanS,
        fastgenServedMoreConcurrently: fg.peakRunning > full.peakRunning,
        fastgenFinishedSooner: fg.makespanS < full.makespanS,
      };
    }
    return report;
  } finally {
    if (server) await server.shutdown(5000);
  }
}

function f(x: number, d = 2): string {
  return Number.isFinite(x) ? x.toFixed(d) : '-';
}

export function formatReport(r: LoadtestReport): string {
  const lines: string[] = [];
  lines.push(
    `model ${r.model} (context ${r.contextLength}${r.backend ? `, ${r.backend} backend` : ''}); KV budget ${formatBytes(r.budgetBytes)} = ${r.budgetPages} pages of ${formatBytes(r.pageBytes)}; ` +
      `${r.clients} clients, ${r.requests} requests per run, prompts ${r.promptTokens.join('-')} tokens, outputs ${r.maxTokens.join('-')} tokens`,
  );
  if (Number.isFinite(r.fullCacheFitsAtOnce)) {
    lines.push(`a full cache needs ${r.fullPagesPerMeanRequest} pages for the mean request: the budget fits ${f(r.fullCacheFitsAtOnce, 1)} of them at once (clients: ${r.clients})`);
  }
  lines.push('');
  const headers = ['cache', 'ok/total', 'wall s', 'req/s', 'gen tok/s', 'lat p50 s', 'lat p99 s', 'TTFT p50 s', 'TTFT p99 s', 'peak running', 'peak waiting', 'peak KV', 'KV pruned', 'preempt'];
  const rows = r.phases.map((p) => [
    p.cache,
    `${p.ok}/${p.requests}`,
    f(p.makespanS),
    f(p.requestsPerS),
    f(p.generatedTokensPerS, 1),
    f(p.latencyS.p50),
    f(p.latencyS.p99),
    f(p.ttftS.p50),
    f(p.ttftS.p99),
    String(p.peakRunning),
    String(p.peakWaiting),
    `${formatBytes(p.peakKvBytes)} (${f((p.peakKvPages / r.budgetPages) * 100, 0)}%)`,
    `${f(p.meanPrunedRatio * 100, 0)}%`,
    String(p.preemptions),
  ]);
  const cells = [headers, ...rows];
  const widths = headers.map((_, i) => Math.max(...cells.map((row) => row[i].length)));
  const line = (row: string[]) => `| ${row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`;
  lines.push(line(headers), `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|')}|`, ...rows.map(line));
  for (const p of r.phases) for (const e of p.errors.slice(0, 10)) lines.push(`  ${p.cache}: ${e}`);
  if (r.comparison) {
    const c = r.comparison;
    lines.push('');
    lines.push(
      `FastGen vs full under the same budget: ${f(c.concurrencyGain)}× the peak concurrency, finished ${f(c.speedup)}× ${c.speedup >= 1 ? 'sooner' : 'slower'} ` +
        `(${c.fastgenServedMoreConcurrently ? 'more' : 'NOT more'} requests served at once; ${c.fastgenFinishedSooner ? 'finished sooner' : 'did NOT finish sooner'})`,
    );
    if (r.backend === 'cpu-ref') {
      lines.push(
        'note: the cpu-ref backend runs the sequences of a step one after another (a step of B sequences costs B single steps), ' +
          'so serving more at once shortens queueing and time to first token but hardly the total time; a backend that ' +
          'batches sequences through one pass over the weights turns the extra concurrency into throughput.',
      );
    }
  }
  return lines.join('\n');
}

export function parseLoadtestArgs(args: string[]): LoadtestOptions & { json: boolean; help: boolean } {
  const parsed = parseCommand(loadtestCli(), args);
  const v: Record<string, any> = parsed?.opts ?? {};
  const clients: number = v.clients ?? 8;
  return {
    modelPath: v.model,
    load: { backend: v.backend, kvDtype: v.kvDtype, threads: v.threads },
    url: v.url,
    apiKey: v.apiKey ?? process.env.FASTGEN_API_KEY,
    clients,
    requests: v.requests ?? 2 * clients,
    kvBudgetBytes: v.kvBudget,
    pageTokens: v.pageTokens,
    promptTokens: v.promptTokens ?? [24, 96],
    maxTokens: v.maxTokens ?? [16, 64],
    caches: v.cache ?? ['full', 'fastgen'],
    recovery: v.recovery ?? 0.95,
    temperature: v.temperature ?? 0.8,
    seed: v.seed ?? 1,
    timeoutMs: (v.timeout ?? 600) * 1000,
    json: v.json === true,
    help: parsed === null,
  };
}

export async function loadtestCommand(args: string[]): Promise<number> {
  const o = parseLoadtestArgs(args);
  if (o.help) return 0;
  let report: LoadtestReport;
  try {
    report = await runLoadtest({ ...o, log: (l) => process.stderr.write(`${l}\n`) });
  } catch (e) {
    process.stderr.write(`fastgen loadtest: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  if (o.json) {
    const slim = { ...report, phases: report.phases.map(({ records, ...p }) => ({ ...p, records: records.map(({ text, ...r }) => ({ ...r, textChars: text.length })) })) };
    process.stdout.write(`${JSON.stringify(slim, null, 2)}\n`);
  } else process.stdout.write(`${formatReport(report)}\n`);
  const failed = report.phases.reduce((s, p) => s + p.failed, 0);
  return failed > 0 ? 1 : 0;
}
