/**
 * `fastgen serve`: the OpenAI-compatible server.
 *
 *   fastgen serve [--model PATH] [--host 127.0.0.1] [--port 8080] [--kv-budget 512MiB] [--cache fastgen] [--recovery 0.95]
 */
import { parseArgs } from 'node:util';
import type { CacheOptions } from '../cache/policies/index.js';
import { FastgenError, InvalidOptionError } from '../errors.js';
import { loadModel, type LoadModelOptions } from '../generate/model.js';
import { FastgenServer } from '../server/http.js';
import { numFlag, parseSize } from '../server/util.js';
import { cacheFlags, cacheFlagsHelp, cacheOptions, parseCommandArgs } from './options.js';

export const SERVE_USAGE = `Usage: fastgen serve [options]

Serve a model over an OpenAI-compatible HTTP API with continuous batching and FastGen KV-cache compression.

Endpoints: POST /v1/completions, POST /v1/chat/completions (JSON or SSE streaming), GET /v1/models[/ID],
           GET /health (503 while loading), GET /metrics (Prometheus), POST /tokenize, POST /detokenize

Options:
  -m, --model PATH            llama2.c .bin or Hugging Face folder (default: the embedded stories15M)
      --tokenizer PATH        tokenizer file when it is not next to the model
      --backend NAME          compute backend (default wasm)
      --dtype f32|f16|q8_0    weight dtype (backend-dependent)
      --kv-dtype f32|f16      KV cache element type (default f32)
      --threads N             worker threads for backends that use them
      --host HOST             address to bind (default 127.0.0.1)
      --port N                port (default 8080; 0 = any free port)
      --kv-budget SIZE        KV page pool budget, e.g. 512MiB, 1GiB, 100MB (default 512MiB)
      --page-tokens N         tokens per KV page (default 16)
  default cache policy (fastgen unless given) and its options:
${cacheFlagsHelp('      ')}
      --max-running N         most requests in the running batch (default 64)
      --max-queue N           most requests waiting beyond the free running slots; beyond it 429 (default 256;
                              0 = no waiting room: a request runs at once or gets a 429)
      --served-model-name ID  model id clients send in "model" (default: the model's name)
      --shutdown-timeout S    on SIGTERM, seconds to let in-flight requests finish before cancelling them (default 30)
      --api-key KEY           require 'Authorization: Bearer KEY' on every endpoint but /health
                              (default: the FASTGEN_API_KEY environment variable, if set)
      --allowed-origins LIST  browser origins allowed to call the API (CORS), comma-separated, or '*' (default: none)
      --allowed-hosts LIST    Host names accepted besides localhost when bound to loopback without an API key
                              (DNS-rebinding protection; e.g. the public name a reverse proxy passes on)
      --body-timeout S        seconds a client has to send its request body (default 60) → 408
      --headers-timeout S     seconds a client has to send its request headers (default 30) → 408
      --max-connections N     open connections at most; more get a 503 (default 512)
      --no-calibrate          skip the FastGen capacity estimate at startup
  -q, --quiet                 no per-request log lines
  -h, --help                  show this help

Per request, the extra field "cache" picks the policy, e.g. {"cache": {"policy": "full"}} or
{"cache": {"policy": "fastgen", "recovery": 0.9}}; usage reports kv_peak_bytes and kv_full_bytes.`;

const flags = {
  model: { type: 'string', short: 'm' },
  tokenizer: { type: 'string' },
  backend: { type: 'string' },
  dtype: { type: 'string' },
  'kv-dtype': { type: 'string' },
  threads: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string', short: 'p' },
  'kv-budget': { type: 'string' },
  'page-tokens': { type: 'string' },
  ...cacheFlags,
  'max-running': { type: 'string' },
  'max-queue': { type: 'string' },
  'served-model-name': { type: 'string' },
  'shutdown-timeout': { type: 'string' },
  'api-key': { type: 'string' },
  'allowed-origins': { type: 'string' },
  'allowed-hosts': { type: 'string' },
  'body-timeout': { type: 'string' },
  'headers-timeout': { type: 'string' },
  'max-connections': { type: 'string' },
  'no-calibrate': { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
} as const;

function timestamp(): string {
  return new Date().toISOString().replace('T', ' ').slice(0, 19);
}

export function logLine(line: string): void {
  process.stderr.write(`INFO ${timestamp()} [fastgen] ${line}\n`);
}

function list(v: string | undefined): string[] | undefined {
  const items = v?.split(',').map((x) => x.trim()).filter((x) => x.length > 0);
  return items?.length ? items : undefined;
}

/** Options of `serve` parsed into server options (exported for the load tester and tests). */
export function parseServeArgs(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const { values: v } = parseArgs({ args, options: flags, allowPositionals: false, strict: true });
  const budget = parseSize(v['kv-budget'] ?? '512MiB', '--kv-budget');
  const cache: CacheOptions = cacheOptions(v) ?? { policy: 'fastgen' };
  const port = numFlag(v.port, 'port', { integer: true, min: 0, max: 65535 }) ?? 8080;
  const load: LoadModelOptions = {
    backend: v.backend as LoadModelOptions['backend'],
    dtype: v.dtype as LoadModelOptions['dtype'],
    kvDtype: v['kv-dtype'] as LoadModelOptions['kvDtype'],
    threads: numFlag(v.threads, 'threads', { integer: true, min: 1 }),
    tokenizerPath: v.tokenizer,
    kvBudgetBytes: budget,
    pageTokens: numFlag(v['page-tokens'], 'page-tokens', { integer: true, min: 1, max: 4096 }),
  };
  return {
    help: v.help === true,
    modelPath: v.model,
    load,
    host: v.host ?? '127.0.0.1',
    port,
    budget,
    cache,
    maxRunning: numFlag(v['max-running'], 'max-running', { integer: true, min: 1 }),
    maxWaiting: numFlag(v['max-queue'], 'max-queue', { integer: true, min: 0 }),
    servedModelName: v['served-model-name'],
    shutdownMs: (numFlag(v['shutdown-timeout'], 'shutdown-timeout', { min: 0 }) ?? 30) * 1000,
    calibrate: v['no-calibrate'] !== true,
    quiet: v.quiet === true,
    apiKey: apiKey(v['api-key'] ?? env.FASTGEN_API_KEY),
    allowedOrigins: list(v['allowed-origins']),
    allowedHosts: list(v['allowed-hosts']),
    bodyTimeoutMs: seconds(v['body-timeout'], 'body-timeout'),
    headersTimeoutMs: seconds(v['headers-timeout'], 'headers-timeout'),
    maxConnections: numFlag(v['max-connections'], 'max-connections', { integer: true, min: 1 }),
  };
}

function apiKey(key: string | undefined): string | undefined {
  if (key === undefined) return undefined;
  if (key.trim() === '') throw new InvalidOptionError('--api-key (or FASTGEN_API_KEY) is empty; give a key or leave it unset', '--api-key');
  return key.trim();
}

function seconds(v: string | undefined, flag: string): number | undefined {
  const s = numFlag(v, flag, { min: 0.001, max: 86_400 });
  return s === undefined ? undefined : Math.round(s * 1000);
}

export async function serveCommand(args: string[]): Promise<number> {
  const o = parseCommandArgs('serve', args, parseServeArgs, SERVE_USAGE);
  if (typeof o === 'number') return o;

  let server: FastgenServer;
  try {
    server = await FastgenServer.start({
      load: () => loadModel(o.modelPath, o.load),
      host: o.host,
      port: o.port,
      cache: o.cache,
      kvBudgetBytes: o.budget,
      maxRunning: o.maxRunning,
      maxWaiting: o.maxWaiting,
      servedModelName: o.servedModelName,
      calibrate: o.calibrate,
      apiKey: o.apiKey,
      allowedOrigins: o.allowedOrigins,
      allowedHosts: o.allowedHosts,
      bodyTimeoutMs: o.bodyTimeoutMs,
      headersTimeoutMs: o.headersTimeoutMs,
      maxConnections: o.maxConnections,
      log: logLine,
      logRequests: !o.quiet,
    });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`fastgen serve: cannot listen on ${o.host}:${o.port}: ${msg}\n`);
    return 1;
  }
  logLine(`listening on ${server.url} (GET /health is 503 until the model is loaded); loading ${o.modelPath ?? 'the default model (stories15M)'}`);

  let exitCode = 0;
  const done = new Promise<void>((resolve) => {
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals) => {
      signals++;
      if (signals === 1) {
        logLine(`${sig}: graceful shutdown (in-flight requests get up to ${(o.shutdownMs / 1000).toFixed(0)} s; send again to stop now)`);
        void server.shutdown(o.shutdownMs).then(resolve);
      } else {
        logLine(`${sig} again: cancelling in-flight requests`);
        server.scheduler?.running.concat(server.scheduler.waiting).forEach((j) => j.cancel('shutdown'));
        void server.shutdown(0).then(resolve);
      }
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    void server.ready.catch((e) => {
      exitCode = 1;
      const msg = e instanceof FastgenError ? e.message : e instanceof Error ? e.message : String(e);
      process.stderr.write(`fastgen serve: ${msg}\n`);
      void server.shutdown(0).then(resolve);
    });
    server.http.once('close', () => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    });
  });
  await done;
  return exitCode;
}
