/**
 * The OpenAI-compatible HTTP server (node:http only).
 *
 *   POST /v1/completions, POST /v1/chat/completions   (JSON, or SSE with `stream: true`, ending in `data: [DONE]`)
 *   GET  /v1/models, GET /v1/models/{id}, GET /health (503 while the model loads), GET /metrics (Prometheus text)
 *   POST /tokenize, POST /detokenize
 *
 * It listens at once and loads the model in the background, so /health can say 503 until it is ready. Generation
 * goes through the Scheduler (continuous batching); a client that disconnects cancels its request.
 *
 * Hardening: optional Bearer API key on every endpoint but /health; bound to loopback without a key, a Host header
 * that does not name this machine is refused (DNS rebinding); requests from a browser Origin are refused unless allowed (CORS
 * is off by default); POST bodies must be application/json (a cross-site text/plain form cannot run a generation);
 * body and header timeouts and a connection cap answer with OpenAI-shaped errors where a response is still possible;
 * a prompt whose byte length alone proves it longer than the context is refused before it is tokenised.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { statSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { dirname } from 'node:path';
import type { CacheOptions } from '../cache/policies/index.js';
import { cacheLabel, resolveCacheOptions } from '../cache/policies/index.js';
import { FastgenError } from '../errors.js';
import type { Model } from '../generate/model.js';
import { HfTokenizer } from '../tokenizer/hf.js';
import type { ChatMessage } from '../tokenizer/types.js';
import { formatCapacity, measureCapacity, type CapacityReport } from './capacity.js';
import { chatLogprobs, completionLogprobs, type TokenLogprob } from './logprobs.js';
import { AgentListenError, HaproxyAgent, type AgentState } from './haproxy-agent.js';
import { loadFigure, ServerMetrics, type LoadFigure } from './metrics.js';
import {
  ApiError,
  asObject,
  errorBody,
  finishReason,
  parseChatRequest,
  parseCompletionRequest,
  parseMessages,
  toApiError,
  type ChatCompletionChunk,
  type ChatCompletionResponse,
  type CompletionResponse,
  type ModelCard,
  type ModelList,
  type ParsedRequest,
  type Usage,
} from './openai-types.js';
import { JobFailedError, Scheduler, SchedulerRejectError, type Job, type JobResult } from './scheduler.js';
import { OffThreadTokenizer } from './tokenize-worker.js';
import { formatBytes } from './util.js';

export interface ServerOptions {
  /** A loaded model, or `load` to load it after the server starts listening. */
  model?: Model;
  load?: () => Promise<Model>;
  /** The id clients use in `model` (default: the model's name). The model's name is accepted too. */
  servedModelName?: string;
  host?: string;
  /** 0 = an ephemeral port. Default 8080. */
  port?: number;
  /** Default cache options for requests without a `cache` field (default: fastgen, recovery 0.95). */
  cache?: CacheOptions;
  /** KV budget the scheduler admits against (default: the pool's). */
  kvBudgetBytes?: number;
  maxRunning?: number;
  /** Requests that may wait beyond the free running slots; beyond it requests get 429 (default 256; 0 = no waiting room). */
  maxWaiting?: number;
  /** Measure FastGen's expected capacity at startup on a calibration prompt (default true). */
  calibrate?: boolean;
  /** Largest accepted request body (default 4 MiB). */
  maxBodyBytes?: number;
  /** Bearer token every endpoint but /health requires (default: none). */
  apiKey?: string;
  /** Browser origins allowed to call the API (CORS), e.g. 'https://app.example'; '*' = any. Default: none. */
  allowedOrigins?: readonly string[];
  /** Host header names accepted besides localhost / loopback addresses when bound to loopback. */
  allowedHosts?: readonly string[];
  /** Time a client has to send the whole request body, from its headers (default 60 s) → 408. */
  bodyTimeoutMs?: number;
  /** Time a client has to send the request headers (default 30 s) → 408. */
  headersTimeoutMs?: number;
  /** Idle keep-alive connections are closed after this (default 30 s). */
  keepAliveTimeoutMs?: number;
  /** Open connections at most; beyond it a new connection gets a 503 and is closed (default 512). */
  maxConnections?: number;
  /** Texts longer than this (UTF-8 bytes) are tokenised on a worker thread when the tokenizer allows (default 256 KiB). */
  offThreadTokenizeBytes?: number;
  /** Log lines (startup, requests, shutdown). Default: none. */
  log?: (line: string) => void;
  /** Log one line per finished generation request (default true when `log` is given). */
  logRequests?: boolean;
  /** Port for HAProxy's agent check (state and KV-based weight, see haproxy-agent.ts); 0 = any free port. Default: none. */
  agentPort?: number;
}

export type ServerState = 'loading' | 'ready' | 'failed' | 'draining' | 'closed';

const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache',
  Connection: 'keep-alive',
  'X-Accel-Buffering': 'no',
};

/** Host names that reach a loopback-bound server legitimately (anything else is a rebinding attack or a mistake). */
function isLoopbackName(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** The host part of a Host header ('example.com:8080' → 'example.com', '[::1]:80' → '[::1]'). */
function hostOf(header: string): string {
  const m = /^(\[[^\]]*\]|[^:]*)(?::\d*)?$/.exec(header.trim());
  return (m ? m[1] : header).toLowerCase();
}

export class FastgenServer {
  readonly http: Server;
  readonly metrics = new ServerMetrics();
  readonly options: ServerOptions;
  state: ServerState = 'loading';
  model: Model | undefined;
  scheduler: Scheduler | undefined;
  capacity: CapacityReport | undefined;
  loadError: Error | undefined;
  /** Resolves when the model is loaded and the server is ready; rejects if loading failed. */
  readonly ready: Promise<void>;
  private readyResolve!: () => void;
  private readyReject!: (e: unknown) => void;
  private readonly log: (line: string) => void;
  private readonly active = new Set<ServerResponse>();
  private readonly sockets = new Set<Socket>();
  /** Connections over the cap: answered 503 at the socket level, their requests ignored. */
  private readonly refused = new WeakSet<Socket>();
  private shutdownPromise: Promise<void> | undefined;
  private baseUrl: string | undefined;
  private agent: HaproxyAgent | undefined;
  /** The HAProxy agent's port, once it listens (agentPort option). */
  agentPort: number | undefined;
  private readonly created = Math.floor(Date.now() / 1000);
  private readonly apiKeyHash: Buffer | undefined;
  private maxTokenBytesCache: number | undefined;
  /** Tokenises large prompts off the event loop (Hugging Face tokenizers loaded from a folder); null: not possible. */
  private offThreadCache: OffThreadTokenizer | null | undefined;

  constructor(opts: ServerOptions) {
    if (!opts.model && !opts.load) throw new Error('FastgenServer needs `model` or `load`');
    this.options = opts;
    this.log = opts.log ?? (() => {});
    if (opts.cache) resolveCacheOptions(opts.cache);
    if (opts.apiKey !== undefined && opts.apiKey.length === 0) throw new Error('apiKey must not be empty');
    this.apiKeyHash = opts.apiKey !== undefined ? sha256(opts.apiKey) : undefined;
    this.ready = new Promise((res, rej) => {
      this.readyResolve = res;
      this.readyReject = rej;
    });
    this.ready.catch(() => {});
    const headersTimeout = opts.headersTimeoutMs ?? 30_000;
    const bodyTimeout = opts.bodyTimeoutMs ?? 60_000;
    this.http = createServer(
      {
        // Streams can be long: the response is never timed out; the request body has its own timeout (readJson).
        requestTimeout: 0,
        headersTimeout,
        // Steps of the batch block the event loop for a while: a short keep-alive timeout would close pooled client
        // connections just as they are reused.
        keepAliveTimeout: opts.keepAliveTimeoutMs ?? 30_000,
        // How often Node checks the headers timeout: fine enough for the smallest timeout configured.
        connectionsCheckingInterval: Math.max(20, Math.min(30_000, Math.floor(Math.min(headersTimeout, bodyTimeout) / 4))),
      },
      (req, res) => {
        if (this.refused.has(req.socket)) return; // already answered 503 at the socket level
        this.active.add(res);
        res.on('close', () => this.active.delete(res));
        this.handle(req, res).catch((e) => this.sendError(res, toApiError(e)));
      },
    );
    this.http.on('connection', (socket: Socket) => this.onConnection(socket));
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => this.onClientError(err, socket, headersTimeout));
  }

  /** Start listening, then load the model (in the background); resolves once listening. */
  static async start(opts: ServerOptions): Promise<FastgenServer> {
    const s = new FastgenServer(opts);
    await s.listen();
    if (opts.agentPort !== undefined) {
      const agent = new HaproxyAgent(() => s.agentState());
      try {
        s.agentPort = await agent.listen(opts.agentPort, opts.host ?? '127.0.0.1');
      } catch (e) {
        await new Promise<void>((r) => s.http.close(() => r()));
        throw new AgentListenError(opts.agentPort, e);
      }
      s.agent = agent;
    }
    void s.initialise();
    return s;
  }

  get address(): AddressInfo {
    const a = this.http.address();
    if (!a || typeof a === 'string') throw new Error('server is not listening');
    return a;
  }

  /** The base URL (kept after the server closes). */
  get url(): string {
    if (!this.baseUrl) {
      const a = this.address;
      const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
      this.baseUrl = `http://${host}:${a.port}`;
    }
    return this.baseUrl;
  }

  get servedModelName(): string {
    return this.options.servedModelName ?? this.model?.config.name ?? 'model';
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error) => reject(e);
      this.http.once('error', onError);
      this.http.listen(this.options.port ?? 8080, this.options.host ?? '127.0.0.1', () => {
        this.http.off('error', onError);
        void this.url;
        resolve();
      });
    });
  }

  async initialise(): Promise<void> {
    try {
      const model = this.options.model ?? (await this.options.load!());
      this.model = model;
      const cache = this.options.cache ?? { policy: 'fastgen' };
      this.capacity = await measureCapacity(model, this.options.kvBudgetBytes ?? Number.POSITIVE_INFINITY, cache, this.options.calibrate ?? true);
      const prior = this.capacity.fastgen ? Math.min(1, this.capacity.fastgen.keptByteRatio + 0.05) : 1;
      this.scheduler = new Scheduler(model, {
        maxRunning: this.options.maxRunning,
        maxWaiting: this.options.maxWaiting,
        kvBudgetBytes: this.options.kvBudgetBytes,
        defaultCache: cache,
        fastgenPrior: prior,
        metrics: this.metrics,
        log: this.log,
      });
      const scheduler = this.scheduler;
      this.metrics.source = () => ({ ...scheduler.snapshot(this.servedModelName), capacity: this.capacity });
      const c = model.config;
      this.log(
        `model ${c.name} (${(model.parameters / 1e6).toFixed(1)}M parameters, ${c.nLayers} layers, ${c.nHeads} heads / ${c.nKvHeads} KV heads, ` +
          `context ${c.maxSeqLen}, vocab ${c.vocabSize}) on ${model.backend.name} (${model.backend.weightDtype}), loaded in ${model.loadMs.toFixed(0)} ms`,
      );
      for (const line of formatCapacity(this.capacity)) this.log(line);
      const rc = resolveCacheOptions(cache);
      this.log(
        `default cache: ${cacheLabel(rc)}; max running ${this.scheduler.maxRunning}, ` +
          `queue ${this.scheduler.maxWaiting}; serving '${this.servedModelName}' at ${this.url}` +
          (this.apiKeyHash ? '; API key required' : '') +
          (this.options.allowedOrigins?.length ? `; CORS origins: ${this.options.allowedOrigins.join(', ')}` : ''),
      );
      if (this.state === 'loading') this.state = 'ready';
      this.readyResolve();
    } catch (e) {
      this.loadError = e instanceof Error ? e : new Error(String(e));
      if (this.state === 'loading') this.state = 'failed';
      this.log(`model failed to load: ${this.loadError.message}`);
      this.readyReject(this.loadError);
    }
  }

  /**
   * Graceful shutdown: refuse new requests (503, `Connection: close`) while in-flight requests finish for up to
   * graceMs, then cancel the rest and close every connection. The server keeps reading during the grace, so a request
   * that was already sent (in a socket or the listen backlog) gets its 503 instead of a connection reset.
   */
  shutdown(graceMs = 30_000): Promise<void> {
    this.shutdownPromise ??= (async () => {
      this.state = 'draining';
      if (this.scheduler) {
        const n = this.scheduler.running.length + this.scheduler.waiting.length;
        if (n) this.log(`shutting down: waiting up to ${(graceMs / 1000).toFixed(0)} s for ${n} in-flight requests`);
        await this.scheduler.drain(graceMs);
      }
      // Answer what is already readable (a few turns of the event loop), then stop listening.
      for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
      const closed = new Promise<void>((r) => this.http.close(() => r()));
      this.http.closeIdleConnections();
      // Let the last responses flush, then drop whatever connection is left.
      const deadline = Date.now() + 2000;
      while (this.active.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      this.http.closeAllConnections();
      for (const s of this.sockets) s.destroy();
      await this.offThreadCache?.close();
      await this.agent?.close();
      await closed;
      this.state = 'closed';
      this.log('server closed');
    })();
    return this.shutdownPromise;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Connections and request checks

  private onConnection(socket: Socket): void {
    const max = this.options.maxConnections ?? 512;
    if (this.sockets.size >= max) {
      // Refused at the socket level, with an answer the client can read, instead of a silent drop.
      this.refused.add(socket);
      this.metrics.rejected.inc({ reason: 'too_many_connections' });
      const body = JSON.stringify(errorBody(new ApiError(503, `the server has ${max} open connections, its limit; retry later`, 'service_unavailable', null, 'too_many_connections')));
      socket.end(
        `HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n${body}`,
      );
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  /** Node's own refusals (headers timeout, malformed request, headers too large), answered OpenAI-shaped. */
  private onClientError(err: NodeJS.ErrnoException, socket: Socket, headersTimeoutMs: number): void {
    const inResponse = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent;
    if (!socket.writable || inResponse || err.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    const [status, reason, e] =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout', new ApiError(408, `the request headers did not arrive within ${headersTimeoutMs / 1000} s`, 'invalid_request_error', null, 'request_timeout')]
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? [431, 'Request Header Fields Too Large', new ApiError(431, 'the request headers are too large', 'invalid_request_error', null, 'headers_too_large')]
          : [400, 'Bad Request', new ApiError(400, `malformed HTTP request (${err.code ?? err.message})`, 'invalid_request_error', null, 'bad_request')];
    if (status === 408) this.metrics.rejected.inc({ reason: 'timeout' });
    const body = JSON.stringify(errorBody(e));
    socket.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }

  /** Host, Origin (CORS) and API key checks; returns false when the request was fully answered (a preflight). */
  private checkAccess(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    const bound = this.options.host ?? '127.0.0.1';
    const host = req.headers.host;
    // DNS rebinding: a web page whose name now resolves to 127.0.0.1 calls the server as its own origin. Without an
    // API key only the Host header tells; with one, such a page cannot authenticate (and a proxy may keep its Host).
    if (isLoopbackName(bound) && host !== undefined && !this.apiKeyHash) {
      const name = hostOf(host);
      if (!isLoopbackName(name) && !(this.options.allowedHosts ?? []).some((h) => h.toLowerCase() === name)) {
        this.metrics.rejected.inc({ reason: 'forbidden' });
        throw new ApiError(
          403,
          `Host '${host}' is not this server: bound to ${bound}, it answers only to localhost names (DNS-rebinding protection); list other names with --allowed-hosts`,
          'invalid_request_error',
          null,
          'host_not_allowed',
        );
      }
    }
    const origin = req.headers.origin;
    if (origin !== undefined) {
      const allowed = this.options.allowedOrigins ?? [];
      const any = allowed.includes('*');
      if (!any && !allowed.includes(origin)) {
        this.metrics.rejected.inc({ reason: 'forbidden' });
        throw new ApiError(403, `requests from the browser origin '${origin}' are not allowed; start the server with --allowed-origins ${origin} to allow them`, 'invalid_request_error', null, 'origin_not_allowed');
      }
      res.setHeader('Access-Control-Allow-Origin', any ? '*' : origin);
      res.setHeader('Vary', 'Origin');
      if (req.method === 'OPTIONS') {
        res.writeHead(204, {
          'Access-Control-Allow-Methods': 'GET, POST, OPTIONS',
          'Access-Control-Allow-Headers': 'Authorization, Content-Type',
          'Access-Control-Max-Age': '600',
        });
        res.end();
        return false;
      }
    }
    if (this.apiKeyHash && path !== '/health') {
      const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
      if (!m || !timingSafeEqual(sha256(m[1].trim()), this.apiKeyHash)) {
        this.metrics.rejected.inc({ reason: 'unauthorized' });
        res.setHeader('WWW-Authenticate', 'Bearer');
        throw new ApiError(
          401,
          m ? 'Incorrect API key provided.' : "You didn't provide an API key: send it as 'Authorization: Bearer KEY'.",
          'invalid_request_error',
          null,
          'invalid_api_key',
        );
      }
    }
    return true;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Routing

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0].replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    if (this.state === 'draining' || this.state === 'closed') res.setHeader('Connection', 'close');
    if (!this.checkAccess(req, res, path)) return;
    const route = (allowed: string): boolean => {
      if (method === allowed || (allowed === 'GET' && method === 'HEAD')) return true;
      res.setHeader('Allow', allowed);
      throw new ApiError(405, `${method} ${path} is not allowed; use ${allowed}`, 'invalid_request_error', null, 'method_not_allowed');
    };
    const post = (): void => {
      route('POST');
      // A browser sends a cross-site POST without a preflight only as a form type (text/plain, ...): never run one.
      const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
      if (type !== 'application/json') {
        throw new ApiError(
          415,
          `POST bodies must be JSON with 'Content-Type: application/json'${type ? `, got '${type}'` : ' (none was sent)'}`,
          'invalid_request_error',
          null,
          'unsupported_media_type',
        );
      }
    };
    if (path.startsWith('/v1/models/')) {
      route('GET');
      return this.modelCard(res, decodeURIComponent(path.slice('/v1/models/'.length)));
    }
    switch (path) {
      case '/health':
        route('GET');
        return this.health(res);
      case '/metrics':
        route('GET');
        return this.sendText(res, 200, await this.metrics.render(), this.metrics.contentType);
      case '/v1/models':
      case '/models':
        route('GET');
        return this.models(res);
      case '/tokenize':
      case '/v1/tokenize':
        post();
        return this.tokenize(req, res);
      case '/detokenize':
      case '/v1/detokenize':
        post();
        return this.detokenize(req, res);
      case '/v1/completions':
      case '/completions':
        post();
        return this.generation('completion', req, res);
      case '/v1/chat/completions':
      case '/chat/completions':
        post();
        return this.generation('chat', req, res);
      case '/':
        route('GET');
        return this.sendJson(res, 200, { name: 'fastgen', status: this.state, model: this.model ? this.servedModelName : null });
      default:
        throw new ApiError(404, `no route ${method} ${path}; see /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics, /tokenize`, 'not_found_error', null, 'not_found');
    }
  }

  /** The replica's load, once the model is loaded (GET /health, the HAProxy agent). */
  load(): LoadFigure | undefined {
    const g = this.metrics.source?.();
    return g ? loadFigure(g) : undefined;
  }

  private agentState(): AgentState {
    const load = this.load();
    if (this.state === 'ready' && load) return { state: 'ready', load };
    if (this.state === 'loading') return { state: 'loading' };
    if (this.state === 'failed') return { state: 'failed' };
    return { state: 'draining' };
  }

  /**
   * 200 while the replica takes work, with its load (a full replica is healthy: it queues); 503 while loading, after
   * a failed load and from the moment a shutdown starts (SIGTERM), so that a load balancer stops sending requests.
   */
  private health(res: ServerResponse): void {
    switch (this.state) {
      case 'ready':
        return this.sendJson(res, 200, { status: 'ok', load: this.load() });
      case 'loading':
        return this.sendJson(res, 503, { status: 'loading' });
      case 'failed':
        // Unauthenticated: no details (they may name files on this machine); the server's log has them.
        return this.sendJson(res, 503, { status: 'error', error: 'the model failed to load; see the server log' });
      default:
        return this.sendJson(res, 503, { status: 'shutting_down', load: this.load() });
    }
  }

  private requireReady(): { model: Model; scheduler: Scheduler } {
    if (this.state === 'loading') {
      this.metrics.rejected.inc({ reason: 'loading' });
      throw new ApiError(503, 'the model is still loading; retry when GET /health says ok', 'service_unavailable', null, 'model_loading');
    }
    if (this.state === 'failed') throw new ApiError(503, 'the model failed to load; see the server log', 'service_unavailable', null, 'model_load_failed');
    if (this.state !== 'ready' || !this.model || !this.scheduler) {
      this.metrics.rejected.inc({ reason: 'shutting_down' });
      throw new ApiError(503, 'the server is shutting down', 'service_unavailable', null, 'shutting_down');
    }
    return { model: this.model, scheduler: this.scheduler };
  }

  /** `model` may be left out (one model is served); a name that is not it is a 404, as with OpenAI and vLLM. */
  private checkModelName(name: string | undefined, model: Model): void {
    if (name === undefined || name === this.servedModelName || name === model.config.name) return;
    throw new ApiError(404, `The model '${name}' does not exist; this server serves '${this.servedModelName}' (see GET /v1/models).`, 'invalid_request_error', 'model', 'model_not_found');
  }

  private card(model: Model): ModelCard {
    // `root` names the model, never where it lives on this machine.
    return { id: this.servedModelName, object: 'model', created: this.created, owned_by: 'fastgen', root: model.config.name, parent: null, max_model_len: model.config.maxSeqLen };
  }

  private models(res: ServerResponse): void {
    const list: ModelList = { object: 'list', data: this.model ? [this.card(this.model)] : [] };
    this.sendJson(res, 200, list);
  }

  private modelCard(res: ServerResponse, id: string): void {
    const { model } = this.requireReady();
    this.checkModelName(id, model);
    this.sendJson(res, 200, this.card(model));
  }

  private async tokenize(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const b = asObject(await this.readJson(req));
    const { model } = this.requireReady();
    if (b.model !== undefined && b.model !== null) {
      if (typeof b.model !== 'string') throw new ApiError(400, "'model' must be a string", 'invalid_request_error', 'model', 'invalid_type');
      this.checkModelName(b.model, model);
    }
    const addSpecial = b.add_special_tokens ?? b.add_special;
    if (addSpecial !== undefined && typeof addSpecial !== 'boolean') throw new ApiError(400, "'add_special_tokens' must be a boolean", 'invalid_request_error', 'add_special_tokens', 'invalid_type');
    let tokens: number[];
    if (b.messages !== undefined) {
      tokens = await this.encodeChat(model, parseMessages(b.messages), Number.POSITIVE_INFINITY);
    } else {
      const text = b.prompt ?? b.content;
      if (typeof text !== 'string') throw new ApiError(400, "give 'prompt' (a string) or 'messages'", 'invalid_request_error', 'prompt', text === undefined ? 'missing_required_parameter' : 'invalid_type');
      tokens = await this.encodeText(model, text, addSpecial as boolean | undefined, 'prompt', Number.POSITIVE_INFINITY);
    }
    this.sendJson(res, 200, { tokens, count: tokens.length, max_model_len: model.config.maxSeqLen });
  }

  private async detokenize(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const b = asObject(await this.readJson(req));
    const { model } = this.requireReady();
    const t = b.tokens;
    if (!Array.isArray(t) || t.some((x) => !Number.isInteger(x) || x < 0 || x >= model.config.vocabSize)) {
      throw new ApiError(400, `'tokens' must be an array of token ids in [0, ${model.config.vocabSize})`, 'invalid_request_error', 'tokens', 'invalid_value');
    }
    const text = model.tokenizer.decode(t as number[]);
    this.sendJson(res, 200, { prompt: text, content: text });
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Prompts

  /**
   * Most UTF-8 bytes one token can stand for (an over-estimate: the longest vocabulary string). A text of B bytes
   * has at least B / this tokens, whatever the tokenizer merges (its normalizers do not delete characters).
   */
  private maxTokenBytes(model: Model): number {
    if (this.maxTokenBytesCache === undefined) {
      let m = 1;
      for (let id = 0; id < model.tokenizer.vocabSize; id++) m = Math.max(m, Buffer.byteLength(model.tokenizer.tokenString(id)));
      this.maxTokenBytesCache = m;
    }
    return this.maxTokenBytesCache;
  }

  /**
   * Refuse a text whose byte length alone proves it longer than `limit` tokens — before tokenising it, which for a
   * text of megabytes would hold the event loop (and every other client) for seconds.
   */
  private checkTextLength(model: Model, text: string, param: string, limit: number): void {
    if (!Number.isFinite(limit) || text.length <= limit) return; // cheap: a UTF-16 unit is at most 3 bytes
    const bytes = Buffer.byteLength(text);
    const atLeast = Math.ceil(bytes / this.maxTokenBytes(model));
    if (atLeast > limit) {
      throw new ApiError(
        400,
        `This model's maximum context length is ${model.config.maxSeqLen} tokens. However, your ${param === 'messages' ? 'messages are' : 'prompt is'} ` +
          `${bytes} bytes, which is at least ${atLeast} tokens. Please shorten it.`,
        'invalid_request_error',
        param,
        'context_length_exceeded',
      );
    }
  }

  /** The worker that tokenises large texts, for a Hugging Face tokenizer loaded from a folder (else null). */
  get offThread(): OffThreadTokenizer | null {
    if (this.offThreadCache === undefined) {
      const tok = this.model?.tokenizer;
      let dir: string | undefined;
      if (tok instanceof HfTokenizer) {
        try {
          if (statSync(tok.where).isDirectory()) dir = tok.where;
        } catch {
          dir = undefined;
        }
      }
      this.offThreadCache = dir ? new OffThreadTokenizer(dir) : null;
    }
    return this.offThreadCache;
  }

  private offThreadFor(text: string): OffThreadTokenizer | null {
    const threshold = this.options.offThreadTokenizeBytes ?? 256 * 1024;
    return text.length * 3 > threshold && Buffer.byteLength(text) > threshold ? this.offThread : null;
  }

  private async encodeText(model: Model, text: string, addBos: boolean | undefined, param: string, limit: number): Promise<number[]> {
    this.checkTextLength(model, text, param, limit);
    const worker = this.offThreadFor(text);
    return worker ? worker.encode(text, addBos) : model.encode(text, addBos);
  }

  /** The chat prompt's ids: the template's markers are special tokens, message content is always plain text. */
  private async encodeChat(model: Model, messages: ChatMessage[], limit: number): Promise<number[]> {
    // Rendering is cheap per message, but not for a body of 100,000 tiny messages: a chat template writes at least one
    // token per message, so more messages than the context holds cannot fit.
    if (model.tokenizer.hasChatTemplate && messages.length > limit) {
      throw new ApiError(
        400,
        `This model's maximum context length is ${model.config.maxSeqLen} tokens. However, you sent ${messages.length} messages, and the chat template writes at least one token for each. Please send fewer.`,
        'invalid_request_error',
        'messages',
        'context_length_exceeded',
      );
    }
    try {
      // Thousands of messages: even rendering them would hold the event loop; the worker renders and encodes.
      if (model.tokenizer.hasChatTemplate && messages.length > 1000 && this.offThread) return await this.offThread.encodeChat(messages);
      const rendered = model.renderChat(messages);
      this.checkTextLength(model, rendered, 'messages', limit);
      const worker = model.tokenizer.hasChatTemplate ? this.offThreadFor(rendered) : null;
      return await (worker ? worker.encodeChat(messages) : model.encodeChat(messages));
    } catch (e) {
      if (e instanceof FastgenError) throw new ApiError(400, e.message, 'invalid_request_error', 'messages', 'invalid_value');
      throw e;
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Generation

  private async generation(kind: 'completion' | 'chat', req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await this.readJson(req);
    const { model, scheduler } = this.requireReady();
    const ctx = model.config.maxSeqLen;
    const reject = (e: unknown): never => {
      this.metrics.rejected.inc({ reason: 'invalid' });
      throw toApiError(e);
    };
    let parsed: ParsedRequest;
    let ids: number[] = [];
    try {
      const limits = { vocabSize: model.config.vocabSize };
      if (kind === 'chat') {
        const p = parseChatRequest(body, limits);
        this.checkModelName(p.model, model);
        ids = await this.encodeChat(model, p.messages, ctx - 1);
        parsed = p;
      } else {
        const p = parseCompletionRequest(body, limits);
        this.checkModelName(p.model, model);
        ids = typeof p.prompt === 'string' ? await this.encodeText(model, p.prompt, undefined, 'prompt', ctx - 1) : p.prompt;
        parsed = p;
      }
    } catch (e) {
      return reject(e);
    }
    const where = kind === 'chat' ? 'messages' : 'prompt';
    if (ids.length === 0) reject(new ApiError(400, 'the prompt is empty', 'invalid_request_error', 'prompt', 'invalid_value'));
    if (ids.length >= ctx) {
      reject(
        new ApiError(
          400,
          `This model's maximum context length is ${ctx} tokens. However, your prompt is ${ids.length} tokens, which leaves no room for the completion. Please shorten the prompt.`,
          'invalid_request_error',
          where,
          'context_length_exceeded',
        ),
      );
    }
    const maxTokens = parsed.maxTokens ?? (kind === 'chat' ? ctx - ids.length : Math.min(16, ctx - ids.length));
    if (ids.length + maxTokens > ctx) {
      reject(
        new ApiError(
          400,
          `This model's maximum context length is ${ctx} tokens. However, you requested ${ids.length + maxTokens} tokens ` +
            `(${ids.length} in the ${where}, ${maxTokens} for the completion). Please reduce the length of the prompt or of max_tokens.`,
          'invalid_request_error',
          'max_tokens',
          'context_length_exceeded',
        ),
      );
    }

    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`;
    const created = Math.floor(Date.now() / 1000);
    const modelName = this.servedModelName;
    const { stream, n, logprobs: top } = parsed;
    const tokenizer = model.tokenizer;
    const usageField = parsed.includeUsage ? { usage: null } : {};
    // A stream's headers go out when its request is admitted, not when it is queued: until then nothing has been sent,
    // so a request that dies in the queue (the replica killed or shut down) is answered with a status, or not at all —
    // and a load balancer in front may send it to another replica.
    const startStream = () => {
      if (res.headersSent || res.writableEnded || res.destroyed) return;
      res.writeHead(200, SSE_HEADERS);
      res.flushHeaders();
      if (kind === 'chat') {
        for (let index = 0; index < n; index++) {
          write({ id, object: 'chat.completion.chunk', created, model: modelName, choices: [{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }], ...usageField });
        }
      }
    };
    const write = (obj: unknown) => {
      startStream();
      if (!res.writableEnded && !res.destroyed) res.write(`data: ${JSON.stringify(obj)}\n\n`);
    };
    // Per choice: log-probability entries and text characters already streamed.
    const lpSent = new Array<number>(n).fill(0);
    const textSent = new Array<number>(n).fill(0);
    const logprobsOf = (entries: readonly TokenLogprob[], offset: number) =>
      top === undefined ? null : kind === 'chat' ? chatLogprobs(tokenizer, entries) : completionLogprobs(tokenizer, entries, top, offset);
    const chunk = (index: number, text: string, finish: ReturnType<typeof finishReason>, entries: readonly TokenLogprob[] = []) => {
      const lp = logprobsOf(entries, textSent[index]);
      textSent[index] += text.length;
      if (kind === 'chat') {
        const c: ChatCompletionChunk = {
          id,
          object: 'chat.completion.chunk',
          created,
          model: modelName,
          choices: [{ index, delta: finish && !text ? {} : { content: text }, logprobs: lp as ChatCompletionChunk['choices'][0]['logprobs'], finish_reason: finish }],
          ...usageField,
        };
        return c;
      }
      return { id, object: 'text_completion' as const, created, model: modelName, choices: [{ index, text, logprobs: lp, finish_reason: finish }], ...usageField };
    };
    const usageChunk = (usage: Usage) => ({ id, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created, model: modelName, choices: [], usage });
    const pendingLogprobs = (index: number, job: Job): TokenLogprob[] => {
      const entries = job.logprobs.slice(lpSent[index]);
      lpSent[index] = Math.max(lpSent[index], job.logprobs.length);
      return entries;
    };

    let jobs: Job[];
    try {
      jobs = scheduler.submitChoices(
        ids,
        {
          ...parsed.options,
          maxTokens,
          logprobs: top,
          onStart: stream ? startStream : undefined,
          onText: stream
            ? (text, job) => {
                const index = jobs.indexOf(job);
                write(chunk(index, text, null, pendingLogprobs(index, job)));
              }
            : undefined,
        },
        n,
      );
    } catch (e) {
      if (e instanceof SchedulerRejectError) {
        this.metrics.rejected.inc({ reason: e.reason });
        if (e.reason === 'queue_full') {
          res.setHeader('Retry-After', '1');
          throw new ApiError(429, e.message, 'rate_limit_error', null, 'queue_full');
        }
        if (e.reason === 'shutting_down') throw new ApiError(503, e.message, 'service_unavailable', null, 'shutting_down');
        throw new ApiError(400, e.message, 'invalid_request_error', 'prompt', 'kv_budget_exceeded');
      }
      return reject(e);
    }
    const cancelAll = () => jobs.forEach((j) => j.cancel('client'));
    res.on('close', () => {
      if (!res.writableFinished) cancelAll();
    });
    // The client may already be gone (it hung up while the body was read or the prompt tokenised).
    if (res.destroyed || req.socket.destroyed) cancelAll();

    // Each choice's end is streamed as it comes; the response ends when all have.
    const results: JobResult[] = [];
    let failure: ApiError | undefined;
    await Promise.all(
      jobs.map(async (job, index) => {
        try {
          const r = await job.result;
          results[index] = r;
          this.logRequest(kind, job, r);
          if (stream && !r.cancelled) write(chunk(index, '', finishReason(r.stopReason), pendingLogprobs(index, job)));
        } catch (e) {
          const err = e instanceof JobFailedError ? jobError(e) : toApiError(e);
          this.log(`request ${job.id}: failed: ${err.message}`);
          failure ??= err;
          cancelAll(); // one failed choice fails the request
        }
      }),
    );

    const shutdown = results.some((r) => r?.cancelled === 'shutdown');
    if (!failure && shutdown) failure = new ApiError(503, 'the server shut down before the request finished', 'service_unavailable', null, 'shutting_down');
    if (failure) {
      // sendError reports it as an SSE event when the stream has begun, else as a status with a JSON body.
      this.sendError(res, failure);
      return;
    }
    if (results.some((r) => r.cancelled === 'client')) {
      if (!res.writableEnded) res.end();
      return;
    }

    const usage = toUsage(results);
    if (stream) {
      if (parsed.includeUsage) write(usageChunk(usage));
      this.endStream(res);
      return;
    }
    if (kind === 'chat') {
      const out: ChatCompletionResponse = {
        id,
        object: 'chat.completion',
        created,
        model: modelName,
        choices: results.map((r, index) => ({
          index,
          message: { role: 'assistant', content: r.text },
          logprobs: top === undefined ? null : chatLogprobs(tokenizer, jobs[index].logprobs),
          finish_reason: finishReason(r.stopReason),
        })),
        usage,
      };
      this.sendJson(res, 200, out);
    } else {
      const out: CompletionResponse = {
        id,
        object: 'text_completion',
        created,
        model: modelName,
        choices: results.map((r, index) => ({
          index,
          text: r.text,
          logprobs: top === undefined ? null : completionLogprobs(tokenizer, jobs[index].logprobs, top),
          finish_reason: finishReason(r.stopReason),
        })),
        usage,
      };
      this.sendJson(res, 200, out);
    }
  }

  private logRequest(kind: string, job: Job, r: JobResult): void {
    if (this.options.logRequests === false) return;
    const status = r.cancelled ? `cancelled (${r.cancelled})` : r.stopReason;
    this.log(
      `request ${job.id} ${kind}: ${status}, ${r.promptTokens} prompt + ${r.generatedTokens} generated tokens, ` +
        `queue ${r.queueMs.toFixed(0)} ms, ttft ${r.ttftMs.toFixed(0)} ms, total ${r.latencyMs.toFixed(0)} ms; ` +
        `KV ${r.kv.policy} peak ${formatBytes(r.kv.peakKvBytes)} of ${formatBytes(r.kv.peakFullKvBytes)} full` +
        (r.preemptions ? `; preempted ${r.preemptions}×` : ''),
    );
  }

  // ---------------------------------------------------------------------------------------------------------------
  // I/O helpers

  /** The request body as JSON: at most maxBodyBytes, within bodyTimeoutMs of the headers (else 413 / 408). */
  private readJson(req: IncomingMessage): Promise<unknown> {
    const limit = this.options.maxBodyBytes ?? 4 * 1024 * 1024;
    const timeoutMs = this.options.bodyTimeoutMs ?? 60_000;
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let settled = false;
      const fail = (e: ApiError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.removeAllListeners('data');
        reject(e);
      };
      const timer = setTimeout(() => {
        this.metrics.rejected.inc({ reason: 'timeout' });
        fail(new ApiError(408, `the request body did not arrive within ${timeoutMs / 1000} s`, 'invalid_request_error', null, 'request_timeout'));
      }, timeoutMs);
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > limit) fail(new ApiError(413, `the request body is larger than ${limit} bytes`, 'invalid_request_error', null, 'request_too_large'));
        else chunks.push(c);
      });
      req.on('error', (e) => fail(new ApiError(400, `could not read the request body: ${e.message}`, 'invalid_request_error', null, 'bad_body')));
      req.on('end', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        if (text.trim() === '') {
          reject(new ApiError(400, 'the request body is empty; send a JSON object', 'invalid_request_error', null, 'invalid_json'));
          return;
        }
        try {
          resolve(JSON.parse(text));
        } catch (e) {
          reject(new ApiError(400, `the request body is not valid JSON: ${(e as Error).message}`, 'invalid_request_error', null, 'invalid_json'));
        }
      });
    });
  }

  private endStream(res: ServerResponse): void {
    if (res.writableEnded || res.destroyed) return;
    res.end('data: [DONE]\n\n');
  }

  private sendJson(res: ServerResponse, status: number, body: unknown): void {
    this.sendText(res, status, JSON.stringify(body), 'application/json');
  }

  private sendText(res: ServerResponse, status: number, text: string, type: string): void {
    if (res.headersSent) {
      if (!res.writableEnded) res.end();
      return;
    }
    res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  private sendError(res: ServerResponse, e: ApiError): void {
    if (e.status >= 500 && e.code === 'internal_error') this.log(`internal error: ${e.message}`);
    e = this.scrub(e);
    if (res.headersSent) {
      // Mid-stream: report it as an SSE event and close the stream.
      if (!res.writableEnded && !res.destroyed) {
        res.write(`data: ${JSON.stringify(errorBody(e))}\n\n`);
        this.endStream(res);
      }
      return;
    }
    // The rest of an unread body (a timeout, a body too large) is not worth reading: close after the answer.
    if (e.status === 408 || e.status === 413) res.setHeader('Connection', 'close');
    this.sendJson(res, e.status, errorBody(e));
  }

  /** Error messages name the model, never where it lives on this machine. */
  private scrub(e: ApiError): ApiError {
    const path = this.model?.source.path;
    if (!path || path.length < 2) return e;
    const name = this.model!.config.name;
    let msg = e.message;
    for (const p of [path, dirname(path)]) if (p.length > 1) msg = msg.split(p).join(`<${name}>`);
    return msg === e.message ? e : new ApiError(e.status, msg, e.type, e.param, e.code);
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** A choice's failure: a numerical failure keeps its code (non_finite_logits), anything else is generation_failed. */
function jobError(e: JobFailedError): ApiError {
  const cause = e.cause instanceof FastgenError ? e.cause : undefined;
  return new ApiError(500, e.message, 'server_error', null, cause ? cause.code.toLowerCase() : 'generation_failed');
}

/** Usage of a request: its prompt once, every choice's completion, and the KV the choices held together at peak. */
export function toUsage(results: readonly JobResult[]): Usage {
  const r0 = results[0];
  const sum = (f: (r: JobResult) => number) => results.reduce((a, r) => a + f(r), 0);
  const completion = sum((r) => r.generatedTokens);
  const peak = sum((r) => r.kv.peakKvBytes);
  const full = sum((r) => r.kv.peakFullKvBytes);
  return {
    prompt_tokens: r0.promptTokens,
    completion_tokens: completion,
    total_tokens: r0.promptTokens + completion,
    kv_policy: r0.kv.policy,
    kv_peak_bytes: peak,
    kv_full_bytes: full,
    kv_pruned_ratio: full > 0 ? 1 - peak / full : 0,
    kv_peak_pages: sum((r) => r.peakPages),
    kv_heads_per_policy: r0.kv.headsPerPolicy,
    preemptions: sum((r) => r.preemptions),
  };
}

/** Start a server (listening at once, loading in the background). */
export function startServer(opts: ServerOptions): Promise<FastgenServer> {
  return FastgenServer.start(opts);
}
