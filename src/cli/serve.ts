/**
 * `fastgen serve`: the OpenAI-compatible server.
 *
 *   fastgen serve [--model PATH] [--host 127.0.0.1] [--port 8080] [--kv-budget 512MiB] [--cache fastgen] [--recovery 0.95]
 */
import { FastgenError, InvalidOptionError } from '../errors.js';
import { loadModel, type LoadModelOptions } from '../generate/model.js';
import { FastgenServer } from '../server/http.js';
import { AgentListenError } from '../server/haproxy-agent.js';
import { parseSize } from '../format.js';
import { cacheOptions, modelOptions, newCommand, numberArg, option, parseCommand, parseNumber, sizeArg, toCacheOptions } from './args.js';

export function serveCli() {
  const cmd = newCommand(
    'fastgen serve',
    `Serve a model over an OpenAI-compatible HTTP API with continuous batching and FastGen KV-cache compression.

Endpoints: POST /v1/completions, POST /v1/chat/completions (JSON or SSE streaming), GET /v1/models[/ID],
           GET /health (200 with the replica's load; 503 while loading or shutting down), GET /metrics (Prometheus),
           POST /tokenize, POST /detokenize. Behind HAProxy: --agent-port (see deploy/haproxy/).`,
  );
  modelOptions(cmd, { kvBudget: false });
  cmd
    .addOption(option('--host <host>', 'address to bind (default 127.0.0.1)'))
    .addOption(option('-p, --port <n>', 'port (default 8080; 0 = any free port)', numberArg('--port', { integer: true, min: 0, max: 65535 })))
    .addOption(option('--kv-budget <size>', 'KV page pool budget, e.g. 512MiB, 1GiB, 100MB (default 512MiB)', sizeArg('--kv-budget')))
    .addOption(option('--page-tokens <n>', 'tokens per KV page (default 16)', numberArg('--page-tokens', { integer: true, min: 1, max: 4096 })));
  cacheOptions(cmd, { defaultPolicy: 'fastgen' });
  cmd
    .addOption(option('--max-running <n>', 'most requests in the running batch (default 64)', numberArg('--max-running', { integer: true, min: 1 })))
    .addOption(option('--max-queue <n>', 'most requests waiting beyond the free running slots; beyond it 429 (default 256; 0 = no waiting room: a request runs at once or gets a 429)', numberArg('--max-queue', { integer: true, min: 0 })))
    .addOption(option('--served-model-name <id>', 'model id clients send in "model" (default: the model\'s name)'))
    .addOption(option('--shutdown-timeout <s>', 'on SIGTERM, seconds to let in-flight requests finish before cancelling them (default 30)', numberArg('--shutdown-timeout', { min: 0 })))
    .addOption(option('--api-key <key>', "require 'Authorization: Bearer KEY' on every endpoint but /health (default: the FASTGEN_API_KEY environment variable, if set)"))
    .addOption(option('--allowed-origins <list>', "browser origins allowed to call the API (CORS), comma-separated, or '*' (default: none)", list))
    .addOption(option('--allowed-hosts <list>', 'Host names accepted besides localhost when bound to loopback (DNS-rebinding protection)', list))
    .addOption(option('--body-timeout <s>', 'seconds a client has to send its request body (default 60) → 408', seconds('--body-timeout')))
    .addOption(option('--headers-timeout <s>', 'seconds a client has to send its request headers (default 30) → 408', seconds('--headers-timeout')))
    .addOption(option('--agent-port <n>', "answer HAProxy's agent check on this port: state and a weight from the free KV memory (0 = any free port; default: off)", numberArg('--agent-port', { integer: true, min: 0, max: 65535 })))
    .addOption(option('--max-connections <n>', 'open connections at most; more get a 503 (default 512)', numberArg('--max-connections', { integer: true, min: 1 })))
    .addOption(option('--no-calibrate', 'skip the FastGen capacity estimate at startup'))
    .addOption(option('-q, --quiet', 'no per-request log lines'));
  cmd.addHelpText(
    'after',
    `
The cache flags set the default policy (fastgen unless --cache says otherwise). Per request, the extra field "cache"
picks the policy, e.g. {"cache": {"policy": "full"}} or {"cache": {"policy": "fastgen", "recovery": 0.9}}; usage
reports kv_peak_bytes and kv_full_bytes.`,
  );
  return cmd;
}

function timestamp(): string {
  return new Date().toISOString().replace('T', ' ').slice(0, 19);
}

export function logLine(line: string): void {
  process.stderr.write(`INFO ${timestamp()} [fastgen] ${line}\n`);
}

/** Options of `serve` parsed into server options (exported for the load tester and tests); `help` after --help. */
export function parseServeArgs(args: string[], env: NodeJS.ProcessEnv = process.env) {
  const parsed = parseCommand(serveCli(), args);
  return parsed ? serveOptions(parsed.opts, env) : { ...serveOptions({}, {}), help: true };
}

function serveOptions(v: Record<string, any>, env: NodeJS.ProcessEnv) {
  const budget: number = v.kvBudget ?? parseSize('512MiB');
  const cache = toCacheOptions(v, 'fastgen')!;
  const load: LoadModelOptions = {
    backend: v.backend,
    dtype: v.dtype,
    kvDtype: v.kvDtype,
    threads: v.threads,
    tokenizerPath: v.tokenizer,
    kvBudgetBytes: budget,
    pageTokens: v.pageTokens,
  };
  return {
    help: false,
    modelPath: v.model as string | undefined,
    load,
    host: (v.host as string | undefined) ?? '127.0.0.1',
    port: (v.port as number | undefined) ?? 8080,
    budget,
    cache,
    maxRunning: v.maxRunning as number | undefined,
    maxWaiting: v.maxQueue as number | undefined,
    servedModelName: v.servedModelName as string | undefined,
    shutdownMs: ((v.shutdownTimeout as number | undefined) ?? 30) * 1000,
    calibrate: v.calibrate !== false,
    quiet: v.quiet === true,
    apiKey: apiKey(v.apiKey ?? env.FASTGEN_API_KEY),
    allowedOrigins: v.allowedOrigins as string[] | undefined,
    allowedHosts: v.allowedHosts as string[] | undefined,
    bodyTimeoutMs: v.bodyTimeout as number | undefined,
    headersTimeoutMs: v.headersTimeout as number | undefined,
    maxConnections: v.maxConnections as number | undefined,
    agentPort: v.agentPort as number | undefined,
  };
}

function apiKey(key: string | undefined): string | undefined {
  if (key === undefined) return undefined;
  if (key.trim() === '') throw new InvalidOptionError('--api-key (or FASTGEN_API_KEY) is empty; give a key or leave it unset', '--api-key');
  return key.trim();
}

/** A duration flag in seconds, as milliseconds. */
function seconds(flag: string): (v: string) => number {
  return (v) => Math.round(parseNumber(v, flag, { min: 0.001, max: 86_400 }) * 1000);
}

/** A comma-separated list flag. */
function list(v: string): string[] | undefined {
  const items = v.split(',').map((x) => x.trim()).filter((x) => x.length > 0);
  return items.length ? items : undefined;
}

export async function serveCommand(args: string[]): Promise<number> {
  const o = parseServeArgs(args);
  if (o.help) return 0;

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
      agentPort: o.agentPort,
      log: logLine,
      logRequests: !o.quiet,
    });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(e instanceof AgentListenError ? `fastgen serve: ${msg}\n` : `fastgen serve: cannot listen on ${o.host}:${o.port}: ${msg}\n`);
    return 1;
  }
  logLine(`listening on ${server.url} (GET /health is 503 until the model is loaded); loading ${o.modelPath ?? 'the default model (stories15M)'}`);
  if (server.agentPort !== undefined) logLine(`HAProxy agent check on ${o.host}:${server.agentPort}`);

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
