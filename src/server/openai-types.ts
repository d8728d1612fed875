/**
 * The OpenAI-compatible wire format: request validation (into engine options) and response shapes.
 *
 * Follows the OpenAI API and the habits of vLLM / llama.cpp: unknown top-level fields are ignored; known fields that
 * would change the meaning of the request but are not implemented (best_of, tools, logit_bias, ...) are refused with a
 * 400 rather than silently dropped. `model` may be left out (one model is served). Extra fields: top_k, min_p,
 * repetition_penalty, ignore_eos, stop_token_ids (vLLM), and `cache` (the per-request KV-cache policy:
 * { policy, recovery, local_ratio, frequent_ratio, ... } or just "fastgen").
 */
import { allCacheOptions, CACHE_POLICY_NAMES, resolveCacheOptions, type CacheOptions } from '../cache/policies/index.js';
import { FastgenError } from '../errors.js';
import type { GenerateOptions, StopReason } from '../generate/request.js';
import type { ChatMessage } from '../tokenizer/types.js';
import type { ChatLogprobs, CompletionLogprobs } from './logprobs.js';

// ---------------------------------------------------------------------------------------------------------------
// Errors

export type ApiErrorType = 'invalid_request_error' | 'not_found_error' | 'rate_limit_error' | 'server_error' | 'service_unavailable';

/** An error that becomes an OpenAI-style `{ "error": { message, type, param, code } }` response. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ApiErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export function errorBody(e: ApiError): ErrorBody {
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}

const SNAKE: Record<string, string> = {
  maxTokens: 'max_tokens',
  topK: 'top_k',
  topP: 'top_p',
  minP: 'min_p',
  repetitionPenalty: 'repetition_penalty',
  repetitionWindow: 'repetition_window',
  frequencyPenalty: 'frequency_penalty',
  presencePenalty: 'presence_penalty',
  stopIds: 'stop_token_ids',
  ignoreEos: 'ignore_eos',
};

/** Map an engine error to an API error: user-caused FastgenErrors are 400s naming the field, anything else a 500. */
export function toApiError(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof FastgenError) {
    const where = e.where ? (SNAKE[e.where] ?? e.where.replace(/^cache\./, 'cache.')) : null;
    switch (e.code) {
      case 'INVALID_OPTION':
        return new ApiError(400, e.message, 'invalid_request_error', where, 'invalid_value');
      case 'CONTEXT_OVERFLOW':
        return new ApiError(400, e.message, 'invalid_request_error', 'prompt', 'context_length_exceeded');
      case 'TOKENIZER_ERROR':
        return new ApiError(400, e.message, 'invalid_request_error', where, 'invalid_value');
      case 'KV_POOL_EXHAUSTED':
        return new ApiError(503, e.message, 'service_unavailable', null, 'kv_cache_exhausted');
      case 'ABORTED':
        return new ApiError(503, e.message, 'service_unavailable', null, 'aborted');
      default:
        return new ApiError(500, e.message, 'server_error', where, e.code.toLowerCase());
    }
  }
  const msg = e instanceof Error ? e.message : String(e);
  return new ApiError(500, `internal error: ${msg}`, 'server_error', null, 'internal_error');
}

// ---------------------------------------------------------------------------------------------------------------
// Requests

/** What both endpoints share after validation. */
export interface ParsedRequest {
  /** undefined: the one served model. */
  model: string | undefined;
  /** undefined: the endpoint's default (16 for completions, the rest of the context for chat). */
  maxTokens: number | undefined;
  stream: boolean;
  includeUsage: boolean;
  /** Choices to generate for the prompt (they share one prefill). */
  n: number;
  /** Log-probabilities: undefined = none; else how many most likely alternatives to list per token (0 = none). */
  logprobs: number | undefined;
  /** Engine options (sampling, stop, cache) — maxTokens is filled in by the server once the prompt is tokenised. */
  options: GenerateOptions & { frequencyPenalty?: number; presencePenalty?: number };
}

/** What validation needs to know about the served model. */
export interface RequestLimits {
  vocabSize?: number;
}

/** Most choices per request (`n`). */
export const MAX_N = 16;
/** Most alternatives per token (`logprobs` / `top_logprobs`), as vLLM. */
export const MAX_TOP_LOGPROBS = 20;

export interface ParsedCompletionRequest extends ParsedRequest {
  prompt: string | number[];
}

export interface ParsedChatRequest extends ParsedRequest {
  messages: ChatMessage[];
}

type Json = Record<string, unknown>;

function bad(param: string, message: string, code = 'invalid_value'): ApiError {
  return new ApiError(400, message, 'invalid_request_error', param, code);
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

export function asObject(body: unknown, what = 'the request body'): Json {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw bad('', `${what} must be a JSON object, got ${typeName(body)}`, 'invalid_type');
  }
  return body as Json;
}

function optNumber(b: Json, key: string, opts: { integer?: boolean; min?: number; max?: number; minExclusive?: boolean } = {}): number | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(key, `'${key}' must be a ${opts.integer ? 'integer' : 'number'}, got ${typeName(v)} ${JSON.stringify(v)}`, 'invalid_type');
  if (opts.integer && !Number.isSafeInteger(v)) throw bad(key, `'${key}' must be an integer, got ${v}`, 'invalid_type');
  if (opts.min !== undefined && (opts.minExclusive ? v <= opts.min : v < opts.min)) {
    throw bad(key, `'${key}' must be ${opts.minExclusive ? '>' : '≥'} ${opts.min}, got ${v}`);
  }
  if (opts.max !== undefined && v > opts.max) throw bad(key, `'${key}' must be ≤ ${opts.max}, got ${v}`);
  return v;
}

function optBool(b: Json, key: string): boolean | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw bad(key, `'${key}' must be a boolean, got ${typeName(v)}`, 'invalid_type');
  return v;
}

function unsupported(b: Json, key: string, isDefault: (v: unknown) => boolean, hint = ''): void {
  const v = b[key];
  if (v === undefined || v === null || isDefault(v)) return;
  throw bad(key, `'${key}' = ${JSON.stringify(v)} is not supported by this server${hint ? `; ${hint}` : ''}`, 'unsupported_parameter');
}

/** Parse the `cache` extra field (object or policy name) into engine CacheOptions, validated against the policy registry. */
export function parseCacheField(v: unknown, param = 'cache'): CacheOptions | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') v = { policy: v };
  const o = asObject(v, `'${param}'`);
  // Every option any policy declares, by its snake_case name (and its library camelCase name).
  const alias = new Map<string, string>([['policy', 'policy']]);
  for (const { spec } of allCacheOptions()) {
    alias.set(snakeCase(spec.key), spec.key);
    alias.set(spec.key, spec.key);
  }
  const typedAs = new Map<string, string>();
  const out: Record<string, unknown> = {};
  for (const [k, val] of Object.entries(o)) {
    // A Map: inherited names ('constructor', '__proto__') are not fields.
    const key = alias.get(k);
    if (!key) throw bad(`${param}.${k}`, `unknown field '${param}.${k}'; known: ${[...alias.keys()].filter((a) => !/[A-Z]/.test(a)).join(', ')}`, 'unknown_parameter');
    if (val === null || val === undefined) continue;
    if (key === 'policy') {
      if (typeof val !== 'string') throw bad(`${param}.${k}`, `'${param}.${k}' must be a string, got ${typeName(val)}`, 'invalid_type');
      if (!(CACHE_POLICY_NAMES as readonly string[]).includes(val)) {
        throw bad(`${param}.policy`, `unknown cache policy '${val}'; expected one of: ${CACHE_POLICY_NAMES.join(', ')}`);
      }
    }
    typedAs.set(key, k);
    out[key] = val;
  }
  try {
    resolveCacheOptions(out as CacheOptions);
  } catch (e) {
    const api = toApiError(e);
    // Name the field as the client wrote it.
    const key = api.param?.startsWith('cache.') ? api.param.slice(6) : undefined;
    const field = key !== undefined ? `${param}.${typedAs.get(key) ?? key}` : api.param ?? param;
    throw new ApiError(400, key !== undefined ? api.message.replaceAll(`cache.${key}`, field) : api.message, 'invalid_request_error', field, 'invalid_value');
  }
  return out as CacheOptions;
}

const snakeCase = (key: string) => key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function parseStop(b: Json): string[] | undefined {
  const v = b.stop;
  if (v === undefined || v === null) return undefined;
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== 'string')) throw bad('stop', `'stop' must be a string or an array of strings, got ${typeName(v)}`, 'invalid_type');
  if (list.length > 16) throw bad('stop', `'stop' may hold at most 16 strings, got ${list.length}`);
  const out = (list as string[]).filter((s) => s.length > 0);
  return out.length ? out : undefined;
}

function parseCommon(b: Json, endpoint: 'completions' | 'chat', limits: RequestLimits): ParsedRequest {
  const model = b.model;
  if (model !== undefined && model !== null && typeof model !== 'string') throw bad('model', `'model' must be a string, got ${typeName(model)}`, 'invalid_type');

  let maxTokens = optNumber(b, 'max_tokens', { integer: true, min: 1 });
  if (endpoint === 'chat') {
    const mct = optNumber(b, 'max_completion_tokens', { integer: true, min: 1 });
    if (mct !== undefined) maxTokens = mct;
  }
  const stream = optBool(b, 'stream') ?? false;
  let includeUsage = false;
  if (b.stream_options !== undefined && b.stream_options !== null) {
    const so = asObject(b.stream_options, "'stream_options'");
    if (so.include_usage !== undefined && so.include_usage !== null && typeof so.include_usage !== 'boolean') {
      throw bad('stream_options.include_usage', "'stream_options.include_usage' must be a boolean", 'invalid_type');
    }
    includeUsage = so.include_usage === true;
  }

  const n = optNumber(b, 'n', { integer: true, min: 1, max: MAX_N }) ?? 1;
  let logprobs: number | undefined;
  if (endpoint === 'chat') {
    const want = optBool(b, 'logprobs') ?? false;
    const top = optNumber(b, 'top_logprobs', { integer: true, min: 0, max: MAX_TOP_LOGPROBS });
    if (top !== undefined && !want) throw bad('top_logprobs', "'top_logprobs' needs 'logprobs': true");
    if (want) logprobs = top ?? 0;
  } else {
    logprobs = optNumber(b, 'logprobs', { integer: true, min: 0, max: MAX_TOP_LOGPROBS });
  }
  unsupported(b, 'best_of', (v) => v === 1 || v === n);
  unsupported(b, 'logit_bias', (v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0);
  unsupported(b, 'echo', (v) => v === false);
  unsupported(b, 'suffix', (v) => v === '');
  unsupported(b, 'tools', (v) => Array.isArray(v) && v.length === 0);
  unsupported(b, 'functions', (v) => Array.isArray(v) && v.length === 0);
  unsupported(b, 'response_format', (v) => typeof v === 'object' && v !== null && (v as Json).type === 'text');

  const options: ParsedRequest['options'] = {
    temperature: optNumber(b, 'temperature', { min: 0 }),
    topP: optNumber(b, 'top_p', { min: 0, minExclusive: true, max: 1 }),
    topK: optNumber(b, 'top_k', { integer: true, min: -1 }),
    minP: optNumber(b, 'min_p', { min: 0 }),
    repetitionPenalty: optNumber(b, 'repetition_penalty', { min: 0, minExclusive: true }),
    frequencyPenalty: optNumber(b, 'frequency_penalty', { min: -2, max: 2 }),
    presencePenalty: optNumber(b, 'presence_penalty', { min: -2, max: 2 }),
    seed: optNumber(b, 'seed', { integer: true }),
    stop: parseStop(b),
    ignoreEos: optBool(b, 'ignore_eos'),
    cache: parseCacheField(b.cache),
  };
  if (options.topK === -1) options.topK = 0; // vLLM: -1 = off
  if (options.seed !== undefined && !Number.isSafeInteger(options.seed + n - 1)) {
    throw bad('seed', `'seed' + n − 1 must be a safe integer (choice i samples with seed + i); got seed ${options.seed} with n ${n}`);
  }
  if (b.stop_token_ids !== undefined && b.stop_token_ids !== null) {
    const ids = b.stop_token_ids;
    const V = limits.vocabSize;
    if (!Array.isArray(ids) || ids.some((x) => !Number.isSafeInteger(x) || (x as number) < 0)) {
      throw bad('stop_token_ids', "'stop_token_ids' must be an array of non-negative integers", 'invalid_type');
    }
    const outside = V === undefined ? undefined : (ids as number[]).find((x) => x >= V);
    if (outside !== undefined) throw bad('stop_token_ids', `'stop_token_ids' holds ${outside}, outside the vocabulary [0, ${V})`);
    options.stopIds = ids as number[];
  }
  for (const k of Object.keys(options) as (keyof typeof options)[]) if (options[k] === undefined) delete options[k];
  return { model: typeof model === 'string' ? model : undefined, maxTokens, stream, includeUsage, n, logprobs, options };
}

export function parseCompletionRequest(body: unknown, limits: RequestLimits = {}): ParsedCompletionRequest {
  const b = asObject(body);
  const common = parseCommon(b, 'completions', limits);
  let p = b.prompt;
  if (p === undefined || p === null) throw bad('prompt', "missing required field 'prompt'", 'missing_required_parameter');
  // A batch of one is accepted: ["text"] or [[ids]].
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || Array.isArray(p[0]))) p = p[0];
  if (typeof p === 'string') return { ...common, prompt: p };
  if (Array.isArray(p)) {
    if (p.length === 0) throw bad('prompt', "'prompt' is empty", 'invalid_value');
    if (p.every((x) => typeof x === 'number')) {
      if (p.some((x) => !Number.isSafeInteger(x) || x < 0)) throw bad('prompt', "'prompt' token ids must be non-negative integers", 'invalid_value');
      return { ...common, prompt: p as number[] };
    }
    if (p.every((x) => typeof x === 'string' || Array.isArray(x))) {
      throw bad('prompt', `'prompt' holds ${p.length} prompts; this server takes one prompt per request (send them as separate requests)`, 'unsupported_parameter');
    }
  }
  throw bad('prompt', `'prompt' must be a string or an array of token ids, got ${typeName(p)}`, 'invalid_type');
}

/** Message roles a request may use ('developer' is taken as 'system'). */
export const CHAT_ROLES = ['system', 'developer', 'user', 'assistant'] as const;

export function parseMessages(v: unknown): ChatMessage[] {
  if (v === undefined || v === null) throw bad('messages', "missing required field 'messages'", 'missing_required_parameter');
  if (!Array.isArray(v)) throw bad('messages', `'messages' must be an array, got ${typeName(v)}`, 'invalid_type');
  if (v.length === 0) throw bad('messages', "'messages' is empty: give at least one message", 'invalid_value');
  return v.map((m, i) => {
    const where = `messages[${i}]`;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw bad(where, `'${where}' must be an object, got ${typeName(m)}`, 'invalid_type');
    const { content } = m as Json;
    let role: unknown = (m as Json).role;
    if (typeof role !== 'string' || role.length === 0) throw bad(`${where}.role`, `'${where}.role' must be a non-empty string`, 'invalid_type');
    if (role === 'tool' || role === 'function') {
      throw bad(`${where}.role`, `'${where}.role' = '${role}': tool messages need tool calling, which this server does not support`, 'unsupported_parameter');
    }
    // The role is written into the prompt by the chat template: only the roles it is made for.
    if (!(CHAT_ROLES as readonly string[]).includes(role)) throw bad(`${where}.role`, `'${where}.role' = ${JSON.stringify(role)} is not a role; expected one of: ${CHAT_ROLES.join(', ')}`);
    if (role === 'developer') role = 'system'; // OpenAI's newer name for the system message
    let text: string;
    if (typeof content === 'string') text = content;
    else if (content === null || content === undefined) {
      if (role !== 'assistant') throw bad(`${where}.content`, `'${where}.content' is missing`, 'missing_required_parameter');
      text = '';
    } else if (Array.isArray(content)) {
      text = content
        .map((part, j) => {
          const pw = `${where}.content[${j}]`;
          if (typeof part !== 'object' || part === null) throw bad(pw, `'${pw}' must be a content part object`, 'invalid_type');
          const pt = part as Json;
          if (pt.type !== 'text' || typeof pt.text !== 'string') {
            throw bad(pw, `'${pw}': only text parts ({ "type": "text", "text": "..." }) are supported, got type ${JSON.stringify(pt.type)}`, 'unsupported_parameter');
          }
          return pt.text;
        })
        .join('');
    } else throw bad(`${where}.content`, `'${where}.content' must be a string or an array of text parts, got ${typeName(content)}`, 'invalid_type');
    return { role: role as string, content: text };
  });
}

export function parseChatRequest(body: unknown, limits: RequestLimits = {}): ParsedChatRequest {
  const b = asObject(body);
  const common = parseCommon(b, 'chat', limits);
  return { ...common, messages: parseMessages(b.messages) };
}

// ---------------------------------------------------------------------------------------------------------------
// Responses

export type FinishReason = 'stop' | 'length';

export function finishReason(r: StopReason): FinishReason | null {
  switch (r) {
    case 'eos':
    case 'stop':
      return 'stop';
    case 'length':
    case 'context':
      return 'length';
    default:
      return null;
  }
}

/** OpenAI usage plus the KV-cache figures of this request (extra fields, ignored by clients that do not know them). */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Cache policy the request ran under. */
  kv_policy: string;
  /** Highest K/V bytes the request held (kept tokens × 2 × headDim × bytes per element, over layers and KV heads). */
  kv_peak_bytes: number;
  /** What a full cache would have held at that moment. */
  kv_full_bytes: number;
  /** 1 − kv_peak_bytes / kv_full_bytes. */
  kv_pruned_ratio: number;
  /** Highest number of pool pages the request held. */
  kv_peak_pages: number;
  /** (layer, KV head) pairs on each policy (FastGen's choice per head). */
  kv_heads_per_policy: Record<string, number>;
  /** Times the scheduler preempted (and transparently restarted) the request for lack of KV memory. */
  preemptions: number;
}

export interface CompletionChoice {
  index: number;
  text: string;
  logprobs: CompletionLogprobs | null;
  finish_reason: FinishReason | null;
}

export interface CompletionResponse {
  id: string;
  object: 'text_completion';
  created: number;
  model: string;
  choices: CompletionChoice[];
  usage?: Usage | null;
}

export interface ChatChoice {
  index: number;
  message: { role: 'assistant'; content: string };
  logprobs: ChatLogprobs | null;
  finish_reason: FinishReason | null;
}

export interface ChatCompletionResponse {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: ChatChoice[];
  usage: Usage;
}

export interface ChatChunkChoice {
  index: number;
  delta: { role?: 'assistant'; content?: string };
  logprobs: ChatLogprobs | null;
  finish_reason: FinishReason | null;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: ChatChunkChoice[];
  usage?: Usage | null;
}

/** GET /v1/models/{id}: OpenAI's model object with vLLM's extras (`root` is the model's name, never a path). */
export interface ModelCard {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
  root: string;
  parent: null;
  max_model_len: number;
}

export interface ModelList {
  object: 'list';
  data: ModelCard[];
}
