import { ContextOverflowError, InvalidOptionError } from '../errors.js';
import type { SequenceKv, KvStats, HeadProfile } from '../cache/sequence-kv.js';
import type { CacheOptions } from '../cache/policies/index.js';
import type { StreamDecoder, Tokenizer } from '../tokenizer/types.js';
import { applyPenalties, tokenLogprob, type TokenLogprob } from './logprobs.js';
import { Sampler, type SamplingOptions } from './sampler.js';
import type { DeviceSample } from './sample-rule.js';
import { StopStringMatcher } from './stop.js';

export interface GenerateOptions extends SamplingOptions {
  /** Tokens to generate at most (default 256; generation also stops when the context is full). */
  maxTokens?: number;
  /** Stop when any of these strings appears; the text ends before it. */
  stop?: string[];
  /** Stop on any of these token ids (in addition to the model's EOS ids). */
  stopIds?: number[];
  /** Keep generating past EOS (benchmarks). */
  ignoreEos?: boolean;
  signal?: AbortSignal;
  cache?: CacheOptions;
  /** Prepend BOS to a text prompt (default: the tokenizer's habit). */
  addBos?: boolean;
  /** When the prompt is longer than the context: keep its last tokens instead of failing. */
  truncatePrompt?: boolean;
  /** OpenAI's penalties over the generated tokens, in [-2, 2] (0 = off); applied before the sampler's own. */
  frequencyPenalty?: number;
  presencePenalty?: number;
  /** Record each generated token's log-probability with this many alternatives, 0 to 20 (default: none). */
  logprobs?: number;
}

export type StopReason = 'eos' | 'stop' | 'length' | 'context' | 'aborted';

export interface GenerateTimings {
  prefillMs: number;
  decodeMs: number;
  /** FastGen profiling time (included in prefillMs). */
  profileMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
}

export interface KvReport extends KvStats {
  policy: string;
  /** Highest kvBytes during the generation. */
  peakKvBytes: number;
  /** fullKvBytes at that moment. */
  peakFullKvBytes: number;
}

export interface GenerateResult {
  text: string;
  /** Generated token ids (a terminating EOS / stop id excluded). */
  tokens: number[];
  promptTokens: number;
  generatedTokens: number;
  stopReason: StopReason;
  timings: GenerateTimings;
  kv: KvReport;
  /** FastGen: per-layer, per-KV-head profiling choices. */
  profile?: HeadProfile[][];
}

export function validateGenerateOptions(o: GenerateOptions): void {
  if (o.maxTokens !== undefined && (!Number.isInteger(o.maxTokens) || o.maxTokens < 0)) {
    throw new InvalidOptionError(`maxTokens must be a non-negative integer, got ${o.maxTokens}`, 'maxTokens');
  }
  if (o.stop !== undefined && (!Array.isArray(o.stop) || o.stop.some((s) => typeof s !== 'string' || s.length === 0))) {
    throw new InvalidOptionError('stop must be an array of non-empty strings', 'stop');
  }
  if (o.stopIds !== undefined && (!Array.isArray(o.stopIds) || o.stopIds.some((s) => !Number.isInteger(s) || s < 0))) {
    throw new InvalidOptionError('stopIds must be an array of non-negative integer token ids', 'stopIds');
  }
  for (const k of ['frequencyPenalty', 'presencePenalty'] as const) {
    const v = o[k];
    if (v !== undefined && !(typeof v === 'number' && v >= -2 && v <= 2)) throw new InvalidOptionError(`${k} must be a number in [-2, 2] (0 = off), got ${v}`, k);
  }
  if (o.logprobs !== undefined && !(Number.isInteger(o.logprobs) && o.logprobs >= 0 && o.logprobs <= 20)) {
    throw new InvalidOptionError(`logprobs must be an integer from 0 to 20, got ${o.logprobs}`, 'logprobs');
  }
  // Duck-typed signals ({ aborted: true }) would never fire their 'abort' event: only the real thing is accepted.
  if (o.signal !== undefined && !(typeof AbortSignal !== 'undefined' && o.signal instanceof AbortSignal)) {
    throw new InvalidOptionError('signal must be an AbortSignal (e.g. new AbortController().signal or AbortSignal.timeout(ms))', 'signal');
  }
}

/**
 * The generation state of one sequence: prompt, cache, sampler, stop conditions, streamed text and its own timings.
 * `step()` (./step.ts) drives any number of them: `input()` is what to push through the model next,
 * `accept(logits)` samples from the returned logits, `recordStep(ms)` books the step's time as prefill or decode.
 */
export class GenerationRequest {
  readonly kv: SequenceKv;
  readonly promptIds: number[];
  readonly generated: number[] = [];
  text = '';
  stopReason: StopReason | undefined;
  prefillMs = 0;
  decodeMs = 0;
  peakKvBytes = 0;
  peakFullKvBytes = 0;
  /** The stop id (EOS or one of stopIds) that ended the generation, when one did; not part of `generated`. */
  stopToken: number | undefined;
  /** Logits to sample from at the next step without a forward pass (a request resumed from a shared prefill). */
  pendingLogits: Float32Array | undefined;
  /** With the logprobs option: one entry per generated token. */
  readonly logprobs: TokenLogprob[] = [];
  /** Set while a caller needs this request's logits after its next step (the server forks a leader's prefill from them). */
  keepLogits = false;
  private prefilled = false;
  private logitsOut: Float32Array | undefined;
  /** Penalised copy of the logits (frequency / presence penalties). */
  private penalised: Float32Array | undefined;
  private readonly sampler: Sampler;
  private readonly decoder: StreamDecoder;
  private readonly stopper: StopStringMatcher;
  private readonly stopIds: Set<number>;
  private readonly maxTokens: number;
  private readonly contextLength: number;
  private readonly history: number[];

  constructor(
    kv: SequenceKv,
    promptIds: number[],
    tokenizer: Tokenizer,
    contextLength: number,
    private readonly opts: GenerateOptions,
    resumeFrom?: Float32Array,
  ) {
    validateGenerateOptions(opts);
    if (resumeFrom) {
      this.pendingLogits = resumeFrom;
      this.prefilled = true;
    } else if (promptIds.length === 0) throw new InvalidOptionError('the prompt is empty: give at least one token (or allow BOS)', 'prompt');
    if (promptIds.length > contextLength) {
      if (!opts.truncatePrompt) {
        throw new ContextOverflowError(
          `the prompt is ${promptIds.length} tokens but the model's context is ${contextLength}; shorten it, or ask for truncation (truncatePrompt / --truncate) to keep its last ${contextLength} tokens`,
        );
      }
      promptIds = promptIds.slice(promptIds.length - contextLength);
    }
    this.kv = kv;
    this.promptIds = promptIds;
    this.contextLength = contextLength;
    this.sampler = new Sampler(opts, tokenizer.vocabSize);
    this.decoder = tokenizer.streamDecoder({ skipSpecial: true, context: promptIds });
    this.stopper = new StopStringMatcher(opts.stop ?? []);
    this.stopIds = new Set([...(opts.ignoreEos ? [] : tokenizer.eosIds), ...(opts.stopIds ?? [])]);
    this.maxTokens = opts.maxTokens ?? 256;
    this.history = promptIds.slice();
    if (this.maxTokens === 0) this.stopReason = 'length';
  }

  /**
   * A request whose prompt already went through `kv` (a fork of a prefill shared by several continuations): its first
   * step samples from `logits`, the prompt's last logits, without a forward pass. `promptIds` (optional) are the
   * prompt's tokens, for the repetition penalty and the text decoder's context.
   */
  static resume(
    kv: SequenceKv,
    logits: Float32Array,
    tokenizer: Tokenizer,
    contextLength: number,
    opts: GenerateOptions,
    promptIds: number[] = [],
  ): GenerationRequest {
    return new GenerationRequest(kv, promptIds, tokenizer, contextLength, opts, logits);
  }

  get done(): boolean {
    return this.stopReason !== undefined;
  }

  /** Tokens to push through the model next: the prompt first, then the last sampled token. */
  input(): number[] {
    if (this.kv.seqLength === 0) return this.promptIds;
    if (this.generated.length === 0) throw new Error('internal: a resumed request has no input before its first accept()');
    return [this.generated[this.generated.length - 1]];
  }

  /** This request's logits buffer (reused every step: no 128 KB allocation per token). */
  logitsBuffer(vocabSize: number): Float32Array {
    return (this.logitsOut ??= new Float32Array(vocabSize));
  }

  /** Check cancellation between steps. */
  checkAbort(): boolean {
    if (this.opts.signal?.aborted && !this.done) this.stopReason = 'aborted';
    return this.done;
  }

  /** Book a step's time (its forward pass and this request's sampling): prefill the first time, decode after that. */
  recordStep(ms: number): void {
    if (this.prefilled) this.decodeMs += ms;
    else {
      this.prefillMs += ms;
      this.prefilled = true;
    }
  }

  /**
   * The next token's parameters for a backend that samples on its device (one uniform drawn now, as accept() would),
   * or undefined when this token needs its logits on the CPU: the repetition, frequency or presence penalty, logprobs,
   * or `keepLogits`.
   */
  deviceSample(): DeviceSample | undefined {
    const { frequencyPenalty: fp = 0, presencePenalty: pp = 0, logprobs } = this.opts;
    if (this.keepLogits || logprobs !== undefined || fp !== 0 || pp !== 0 || this.done) return undefined;
    return this.sampler.deviceSample();
  }

  /** Sample the next token from the logits of the last input token; returns the newly printable text. */
  accept(logits: Float32Array): string {
    if (this.beforeToken()) return '';
    const { frequencyPenalty: fp = 0, presencePenalty: pp = 0 } = this.opts;
    let x = logits;
    if (fp !== 0 || pp !== 0) {
      x = this.penalised ??= new Float32Array(logits.length);
      x.set(logits);
      applyPenalties(x, this.generated, fp, pp);
    }
    return this.take(this.sampler.sample(x, this.history), logits);
  }

  /** Take a token the backend sampled on its device (with this request's deviceSample()); returns the new text. */
  acceptToken(id: number): string {
    if (this.beforeToken()) return '';
    return this.take(id);
  }

  /** Bookkeeping before each token; true when the request was aborted. */
  private beforeToken(): boolean {
    this.pendingLogits = undefined;
    // Every token: only the byte count, not the full per-head report of stats().
    const kvBytes = this.kv.kvBytes();
    if (kvBytes > this.peakKvBytes) {
      this.peakKvBytes = kvBytes;
      this.peakFullKvBytes = this.kv.fullKvBytes();
    }
    return this.checkAbort();
  }

  private take(id: number, logits?: Float32Array): string {
    const { logprobs } = this.opts;
    this.history.push(id);
    if (this.stopIds.has(id)) {
      this.stopToken = id;
      this.stopReason = this.opts.stopIds?.includes(id) ? 'stop' : 'eos';
      return this.finishText();
    }
    if (logprobs !== undefined && logits) this.logprobs.push(tokenLogprob(logits, id, logprobs));
    this.generated.push(id);
    const { emit, stopped } = this.stopper.push(this.decoder.push(id));
    this.text += emit;
    if (stopped) {
      this.stopReason = 'stop';
      return emit;
    }
    let out = emit;
    if (this.generated.length >= this.maxTokens) this.stopReason = 'length';
    else if (this.kv.seqLength >= this.contextLength) this.stopReason = 'context';
    if (this.done) out += this.finishText();
    return out;
  }

  /** End the generation from outside (scheduler limits, shutdown): flushes held-back text; returns it. */
  finish(reason: StopReason): string {
    if (this.done) return '';
    this.stopReason = reason;
    return this.finishText();
  }

  private finishText(): string {
    const { emit } = this.stopper.push(this.decoder.flush());
    const rest = emit + this.stopper.flush();
    this.text += rest;
    return rest;
  }

  result(): GenerateResult {
    const profileMs = this.kv.profileMs;
    const st = this.kv.stats();
    const decoded = Math.max(0, this.generated.length - 1);
    return {
      text: this.text,
      tokens: this.generated.slice(),
      promptTokens: this.promptIds.length,
      generatedTokens: this.generated.length,
      stopReason: this.stopReason ?? 'aborted',
      timings: {
        prefillMs: this.prefillMs,
        decodeMs: this.decodeMs,
        profileMs,
        prefillTokensPerSecond: this.prefillMs > 0 ? (this.promptIds.length * 1000) / this.prefillMs : 0,
        decodeTokensPerSecond: this.decodeMs > 0 ? (decoded * 1000) / this.decodeMs : 0,
      },
      kv: {
        ...st,
        policy: this.kv.options.policy,
        peakKvBytes: Math.max(this.peakKvBytes, st.kvBytes),
        peakFullKvBytes: this.peakKvBytes >= st.kvBytes ? this.peakFullKvBytes : st.fullKvBytes,
      },
      profile: this.kv.profiles.length ? this.kv.profiles : undefined,
    };
  }
}
