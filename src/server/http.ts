/**
 * The OpenAI-compatible HTTP server (node:http only).
 *
 *   POST /v1/completions, POST /v1/chat/completions   (JSON, or SSE with `stream: true`, ending in `data: [DONE]`)
 *   GET  /v1/models, GET /health (503 while the model loads), GET /metrics (Prometheus text)
 *   POST /tokenize, POST /detokenize
 *
 * It listens at once and loads the model in the background, so /health can say 503 until it is ready. Generation
 * goes through the Scheduler (continuous batching); a client that disconnects cancels its request.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import type { CacheOptions } from '../cache/policies/index.js';
import { cacheLabel, resolveCacheOptions } from '../cache/policies/index.js';
import { FastgenError } from '../errors.js';
import type { Model } from '../generate/model.js';
import { formatCapacity, measureCapacity, type CapacityReport } from './capacity.js';
import { ServerMetrics } from './metrics.js';
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
  type ModelList,
  type ParsedRequest,
  type Usage,
} from './openai-types.js';
import { JobFailedError, Scheduler, SchedulerRejectError, type Job, type JobResult } from './scheduler.js';
import { formatBytes } from './util.js';

export interface ServerOptions {
  /** A loaded model, or `load` to load it after the server starts listening. */
  model?: Model;
  load?: () => Promise<Model>;
  /** The id clients use in `model` (default: the model's name). The model's name and path are accepted too. */
  servedModelName?: string;
  host?: string;
  /** 0 = an ephemeral port. Default 8080. */
  port?: number;
  /** Default cache options for requests without a `cache` field (default: fastgen, recovery 0.95). */
  cache?: CacheOptions;
  /** KV budget the scheduler admits against (default: the pool's). */
  kvBudgetBytes?: number;
  maxRunning?: number;
  /** Bounded queue; beyond it requests get 429 (default 256). */
  maxWaiting?: number;
  /** Measure FastGen's expected capacity at startup on a calibration prompt (default true). */
  calibrate?: boolean;
  /** Largest accepted request body (default 4 MiB). */
  maxBodyBytes?: number;
  /** Log lines (startup, requests, shutdown). Default: none. */
  log?: (line: string) => void;
  /** Log one line per finished generation request (default true when `log` is given). */
  logRequests?: boolean;
}

export type ServerState = 'loading' | 'ready' | 'failed' | 'draining' | 'closed';

const SSE_HEADERS = {
  'Content-Type': 'text/event-stream; charset=utf-8',
  'Cache-Control': 'no-cache',
  Connection: 'keep-alive',
  'X-Accel-Buffering': 'no',
};

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
  private shutdownPromise: Promise<void> | undefined;
  private baseUrl: string | undefined;
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(opts: ServerOptions) {
    if (!opts.model && !opts.load) throw new Error('FastgenServer needs `model` or `load`');
    this.options = opts;
    this.log = opts.log ?? (() => {});
    if (opts.cache) resolveCacheOptions(opts.cache);
    this.ready = new Promise((res, rej) => {
      this.readyResolve = res;
      this.readyReject = rej;
    });
    this.ready.catch(() => {});
    this.http = createServer((req, res) => {
      this.active.add(res);
      res.on('close', () => this.active.delete(res));
      this.handle(req, res).catch((e) => this.sendError(res, toApiError(e)));
    });
    // Streams can be long: do not let Node time out a request that is still generating.
    this.http.requestTimeout = 0;
    this.http.headersTimeout = 60_000;
    // Steps of the batch block the event loop for a while: a short keep-alive timeout would close pooled client
    // connections just as they are reused.
    this.http.keepAliveTimeout = 30_000;
  }

  /** Start listening, then load the model (in the background); resolves once listening. */
  static async start(opts: ServerOptions): Promise<FastgenServer> {
    const s = new FastgenServer(opts);
    await s.listen();
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
      const c = model.config;
      this.log(
        `model ${c.name} (${(model.parameters / 1e6).toFixed(1)}M parameters, ${c.nLayers} layers, ${c.nHeads} heads / ${c.nKvHeads} KV heads, ` +
          `context ${c.maxSeqLen}, vocab ${c.vocabSize}) on ${model.backend.name} (${model.backend.weightDtype}), loaded in ${model.loadMs.toFixed(0)} ms`,
      );
      for (const line of formatCapacity(this.capacity)) this.log(line);
      const rc = resolveCacheOptions(cache);
      this.log(
        `default cache: ${cacheLabel(rc)}; max running ${this.scheduler.maxRunning}, ` +
          `queue ${this.scheduler.maxWaiting}; serving '${this.servedModelName}' at ${this.url}`,
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
   * Graceful shutdown: stop listening, refuse new requests (503), let in-flight requests finish for up to graceMs,
   * cancel the rest, close every connection.
   */
  shutdown(graceMs = 30_000): Promise<void> {
    this.shutdownPromise ??= (async () => {
      this.state = 'draining';
      const closed = new Promise<void>((r) => this.http.close(() => r()));
      this.http.closeIdleConnections();
      if (this.scheduler) {
        const n = this.scheduler.running.length + this.scheduler.waiting.length;
        if (n) this.log(`shutting down: waiting up to ${(graceMs / 1000).toFixed(0)} s for ${n} in-flight requests`);
        await this.scheduler.drain(graceMs);
      }
      // Let the last responses flush, then drop whatever connection is left.
      const deadline = Date.now() + 2000;
      while (this.active.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      this.http.closeAllConnections();
      await closed;
      this.state = 'closed';
      this.log('server closed');
    })();
    return this.shutdownPromise;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Routing

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0].replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const route = (allowed: string): boolean => {
      if (method === allowed || (allowed === 'GET' && method === 'HEAD')) return true;
      res.setHeader('Allow', allowed);
      throw new ApiError(405, `${method} ${path} is not allowed; use ${allowed}`, 'invalid_request_error', null, 'method_not_allowed');
    };
    switch (path) {
      case '/health':
        route('GET');
        return this.health(res);
      case '/metrics':
        route('GET');
        return this.sendText(res, 200, this.metrics.render(this.scheduler?.snapshot(this.servedModelName)), 'text/plain; version=0.0.4; charset=utf-8');
      case '/v1/models':
      case '/models':
        route('GET');
        return this.models(res);
      case '/tokenize':
      case '/v1/tokenize':
        route('POST');
        return this.tokenize(req, res);
      case '/detokenize':
      case '/v1/detokenize':
        route('POST');
        return this.detokenize(req, res);
      case '/v1/completions':
      case '/completions':
        route('POST');
        return this.generation('completion', req, res);
      case '/v1/chat/completions':
      case '/chat/completions':
        route('POST');
        return this.generation('chat', req, res);
      case '/':
        route('GET');
        return this.sendJson(res, 200, { name: 'fastgen', status: this.state, model: this.model ? this.servedModelName : null });
      default:
        throw new ApiError(404, `no route ${method} ${path}; see /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics, /tokenize`, 'not_found_error', null, 'not_found');
    }
  }

  private health(res: ServerResponse): void {
    switch (this.state) {
      case 'ready':
        return this.sendJson(res, 200, { status: 'ok' });
      case 'loading':
        return this.sendJson(res, 503, { status: 'loading' });
      case 'failed':
        return this.sendJson(res, 503, { status: 'error', error: this.loadError?.message });
      default:
        return this.sendJson(res, 503, { status: 'shutting_down' });
    }
  }

  private requireReady(): { model: Model; scheduler: Scheduler } {
    if (this.state === 'loading') {
      this.metrics.rejected.inc(1, { reason: 'loading' });
      throw new ApiError(503, 'the model is still loading; retry when GET /health says ok', 'service_unavailable', null, 'model_loading');
    }
    if (this.state === 'failed') throw new ApiError(503, `the model failed to load: ${this.loadError?.message}`, 'service_unavailable', null, 'model_load_failed');
    if (this.state !== 'ready' || !this.model || !this.scheduler) {
      this.metrics.rejected.inc(1, { reason: 'shutting_down' });
      throw new ApiError(503, 'the server is shutting down', 'service_unavailable', null, 'shutting_down');
    }
    return { model: this.model, scheduler: this.scheduler };
  }

  private checkModelName(name: string | undefined, model: Model): void {
    if (name === undefined) return;
    const known = [this.servedModelName, model.config.name, model.source.path];
    if (!known.includes(name)) {
      throw new ApiError(400, `the model '${name}' does not exist; this server serves '${this.servedModelName}' (see GET /v1/models)`, 'invalid_request_error', 'model', 'model_not_found');
    }
  }

  private models(res: ServerResponse): void {
    const list: ModelList = { object: 'list', data: [] };
    if (this.model) {
      list.data.push({
        id: this.servedModelName,
        object: 'model',
        created: this.created,
        owned_by: 'fastgen',
        root: this.model.source.path,
        max_model_len: this.model.config.maxSeqLen,
      });
    }
    this.sendJson(res, 200, list);
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
      const text = this.renderChat(model, parseMessages(b.messages));
      tokens = model.encode(text, addSpecial ?? (model.tokenizer.hasChatTemplate ? false : undefined));
    } else {
      const text = b.prompt ?? b.content;
      if (typeof text !== 'string') throw new ApiError(400, "give 'prompt' (a string) or 'messages'", 'invalid_request_error', 'prompt', text === undefined ? 'missing_required_parameter' : 'invalid_type');
      tokens = model.encode(text, addSpecial as boolean | undefined);
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

  private renderChat(model: Model, messages: { role: string; content: string }[]): string {
    try {
      return model.renderChat(messages);
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
    let parsed: ParsedRequest;
    let ids: number[];
    try {
      if (kind === 'chat') {
        const p = parseChatRequest(body);
        this.checkModelName(p.model, model);
        const text = this.renderChat(model, p.messages);
        // A rendered template already carries its own BOS when the template wants one (as Model.chat does).
        ids = model.encode(text, model.tokenizer.hasChatTemplate ? false : undefined);
        parsed = p;
      } else {
        const p = parseCompletionRequest(body);
        this.checkModelName(p.model, model);
        ids = typeof p.prompt === 'string' ? model.encode(p.prompt) : p.prompt;
        parsed = p;
      }
    } catch (e) {
      this.metrics.rejected.inc(1, { reason: 'invalid' });
      throw toApiError(e);
    }
    const ctx = model.config.maxSeqLen;
    const reject = (msg: string, param: string, code: string): never => {
      this.metrics.rejected.inc(1, { reason: 'invalid' });
      throw new ApiError(400, msg, 'invalid_request_error', param, code);
    };
    if (ids.length === 0) reject('the prompt is empty', 'prompt', 'invalid_value');
    if (ids.length >= ctx) {
      reject(
        `This model's maximum context length is ${ctx} tokens. However, your prompt is ${ids.length} tokens, which leaves no room for the completion. Please shorten the prompt.`,
        kind === 'chat' ? 'messages' : 'prompt',
        'context_length_exceeded',
      );
    }
    const maxTokens = parsed.maxTokens ?? (kind === 'chat' ? ctx - ids.length : Math.min(16, ctx - ids.length));
    if (ids.length + maxTokens > ctx) {
      reject(
        `This model's maximum context length is ${ctx} tokens. However, you requested ${ids.length + maxTokens} tokens ` +
          `(${ids.length} in the ${kind === 'chat' ? 'messages' : 'prompt'}, ${maxTokens} for the completion). Please reduce the length of the prompt or of max_tokens.`,
        'max_tokens',
        'context_length_exceeded',
      );
    }

    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replace(/-/g, '')}`;
    const created = Math.floor(Date.now() / 1000);
    const modelName = this.servedModelName;
    const stream = parsed.stream;
    const write = (obj: unknown) => {
      if (!res.writableEnded && !res.destroyed) res.write(`data: ${JSON.stringify(obj)}\n\n`);
    };
    const usageField = parsed.includeUsage ? { usage: null } : {};
    const chunk = (text: string, finish: ReturnType<typeof finishReason>, usage?: Usage) => {
      if (kind === 'chat') {
        const c: ChatCompletionChunk = {
          id,
          object: 'chat.completion.chunk',
          created,
          model: modelName,
          choices: usage ? [] : [{ index: 0, delta: finish ? {} : { content: text }, logprobs: null, finish_reason: finish }],
          ...usageField,
        };
        if (usage) c.usage = usage;
        return c;
      }
      return {
        id,
        object: 'text_completion' as const,
        created,
        model: modelName,
        choices: usage ? [] : [{ index: 0, text, logprobs: null, finish_reason: finish }],
        ...usageField,
        ...(usage ? { usage } : {}),
      };
    };

    let job: Job;
    try {
      job = scheduler.submit(ids, {
        ...parsed.options,
        maxTokens,
        onText: stream ? (text) => write(chunk(text, null)) : undefined,
      });
    } catch (e) {
      if (e instanceof SchedulerRejectError) {
        this.metrics.rejected.inc(1, { reason: e.reason });
        if (e.reason === 'queue_full') {
          res.setHeader('Retry-After', '1');
          throw new ApiError(429, e.message, 'rate_limit_error', null, 'queue_full');
        }
        if (e.reason === 'shutting_down') throw new ApiError(503, e.message, 'service_unavailable', null, 'shutting_down');
        throw new ApiError(400, e.message, 'invalid_request_error', 'prompt', 'kv_budget_exceeded');
      }
      this.metrics.rejected.inc(1, { reason: 'invalid' });
      throw toApiError(e);
    }
    res.on('close', () => {
      if (!res.writableFinished) job.cancel('client');
    });
    // The client may already be gone (it hung up while the body was read or the prompt tokenised).
    if (res.destroyed || req.socket.destroyed) job.cancel('client');

    if (stream) {
      res.writeHead(200, SSE_HEADERS);
      res.flushHeaders();
      if (kind === 'chat') {
        write({ id, object: 'chat.completion.chunk', created, model: modelName, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }], ...usageField });
      }
    }

    let result: JobResult;
    try {
      result = await job.result;
    } catch (e) {
      const err = e instanceof JobFailedError ? new ApiError(500, e.message, 'server_error', null, 'generation_failed') : toApiError(e);
      this.log(`request ${job.id}: failed: ${err.message}`);
      if (stream) {
        write(errorBody(err));
        this.endStream(res);
      } else this.sendError(res, err);
      return;
    }
    this.logRequest(kind, job, result);

    if (result.cancelled === 'client') {
      if (!res.writableEnded) res.end();
      return;
    }
    if (result.cancelled === 'shutdown') {
      const err = new ApiError(503, 'the server shut down before the request finished', 'service_unavailable', null, 'shutting_down');
      if (stream) {
        write(errorBody(err));
        this.endStream(res);
      } else this.sendError(res, err);
      return;
    }

    const usage = toUsage(result);
    const finish = finishReason(result.stopReason);
    if (stream) {
      write(chunk('', finish));
      if (parsed.includeUsage) write(chunk('', null, usage));
      this.endStream(res);
      return;
    }
    if (kind === 'chat') {
      const body: ChatCompletionResponse = {
        id,
        object: 'chat.completion',
        created,
        model: modelName,
        choices: [{ index: 0, message: { role: 'assistant', content: result.text }, logprobs: null, finish_reason: finish }],
        usage,
      };
      this.sendJson(res, 200, body);
    } else {
      const body: CompletionResponse = {
        id,
        object: 'text_completion',
        created,
        model: modelName,
        choices: [{ index: 0, text: result.text, logprobs: null, finish_reason: finish }],
        usage,
      };
      this.sendJson(res, 200, body);
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

  private readJson(req: IncomingMessage): Promise<unknown> {
    const limit = this.options.maxBodyBytes ?? 4 * 1024 * 1024;
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let failed = false;
      req.on('data', (c: Buffer) => {
        if (failed) return;
        size += c.length;
        if (size > limit) {
          failed = true;
          reject(new ApiError(413, `the request body is larger than ${limit} bytes`, 'invalid_request_error', null, 'request_too_large'));
          return;
        }
        chunks.push(c);
      });
      req.on('error', (e) => reject(new ApiError(400, `could not read the request body: ${e.message}`, 'invalid_request_error', null, 'bad_body')));
      req.on('end', () => {
        if (failed) return;
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
    if (res.headersSent) {
      // Mid-stream: report it as an SSE event and close the stream.
      if (!res.writableEnded && !res.destroyed) {
        res.write(`data: ${JSON.stringify(errorBody(e))}\n\n`);
        this.endStream(res);
      }
      return;
    }
    this.sendJson(res, e.status, errorBody(e));
  }
}

export function toUsage(r: JobResult): Usage {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.generatedTokens,
    total_tokens: r.promptTokens + r.generatedTokens,
    kv_policy: r.kv.policy,
    kv_peak_bytes: r.kv.peakKvBytes,
    kv_full_bytes: r.kv.peakFullKvBytes,
    kv_pruned_ratio: r.kv.peakFullKvBytes > 0 ? 1 - r.kv.peakKvBytes / r.kv.peakFullKvBytes : 0,
    kv_peak_pages: r.peakPages,
    kv_heads_per_policy: r.kv.headsPerPolicy,
    preemptions: r.preemptions,
  };
}

/** Start a server (listening at once, loading in the background). */
export function startServer(opts: ServerOptions): Promise<FastgenServer> {
  return FastgenServer.start(opts);
}
