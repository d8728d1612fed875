import { AbortedError, InvalidOptionError } from '../errors.js';
import type { Backend } from '../backend/types.js';
import { checkBackendOptions, checkModelFits, createBackend, type BackendName, type WeightDtype } from '../backend/index.js';
import { PagePool } from '../cache/page-pool.js';
import { resolveCacheOptions, type CacheOptions } from '../cache/policies/index.js';
import { SequenceKv, type HeadProfile } from '../cache/sequence-kv.js';
import { findModel, type ModelLocation } from '../model/load-checkpoint.js';
import { inspectModelInput, loadModelInput } from '../model/model-input.js';
import { checkFiniteWeights } from '../model/tensor.js';
import { parameterCount } from '../model/describe.js';
import type { LoadedCheckpoint, ModelConfig } from '../model/types.js';
import { loadTokenizer } from '../tokenizer/load-tokenizer.js';
import { computeTokenClasses, type TokenClasses } from '../tokenizer/token-classes.js';
import type { ChatMessage, Tokenizer } from '../tokenizer/types.js';
import { GenerationRequest, type GenerateOptions, type GenerateResult } from './request.js';
import { step } from './step.js';
import { prepareSamplingKernel } from '../backend/wasm/sampling.js';

export interface LoadModelOptions {
  backend?: BackendName;
  /** Weight dtype the kernels run on (wasm and webgpu backends): f32, f16 or q8_0. */
  dtype?: WeightDtype;
  /** Byte budget of the shared KV page pool (default: unlimited). */
  kvBudgetBytes?: number;
  /** Tokens per KV page (default 16). */
  pageTokens?: number;
  /** Element type of the KV cache: f32 (default) or f16 (half the bytes). */
  kvDtype?: 'f32' | 'f16';
  /** Worker threads for backends that use them (wasm; default 2, at most MAX_THREADS). */
  threads?: number;
  /** llama2.c tokenizer file when it is not next to the checkpoint. */
  tokenizerPath?: string;
  /** Progress of the whole load: reading the weights, then converting and uploading them to the backend. */
  onProgress?: (loadedBytes: number, totalBytes: number, what: string) => void;
}

/** The per-layer, per-KV-head FastGen choices for one prompt. */
export interface ProfileReport {
  promptTokens: number;
  recovery: number;
  gqa: 'mean' | 'min';
  layers: HeadProfile[][];
  headsPerPolicy: Record<string, number>;
  kvBytes: number;
  fullKvBytes: number;
  prunedRatio: number;
  profileMs: number;
  prefillMs: number;
}

/**
 * A streaming generation: iterate it for text pieces; `result` resolves to the final report (token counts, stop
 * reason, timings, KV use). Reading `result` before iterating runs the generation to the end by itself; leaving the
 * loop early (`break`) ends the generation there, and `result` then reports it with stopReason 'aborted'.
 */
export class Generation implements AsyncIterable<string> {
  private readonly settled: Promise<GenerateResult>;
  private readonly iterator: AsyncGenerator<string, void>;
  private resolve!: (r: GenerateResult) => void;
  private reject!: (e: unknown) => void;
  private started = false;

  constructor(run: (emit: (r: GenerateResult) => void) => AsyncGenerator<string, void>) {
    this.settled = new Promise((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    // A failure reaches whoever iterates; keep it from also surfacing as an unhandled rejection.
    this.settled.catch(() => {});
    const self = this;
    this.iterator = (async function* () {
      try {
        yield* run((r) => self.resolve(r));
      } catch (e) {
        self.reject(e);
        throw e;
      }
    })();
  }

  /** The final report; reading it without iterating runs the generation to the end. */
  get result(): Promise<GenerateResult> {
    if (!this.started) void this.drain();
    return this.settled;
  }

  [Symbol.asyncIterator](): AsyncIterator<string> {
    this.started = true;
    return this.iterator;
  }

  /** Run to completion and return the whole generated text (`result` has the full report). */
  async text(): Promise<string> {
    return (await this.result).text;
  }

  private async drain(): Promise<void> {
    this.started = true;
    try {
      for await (const _ of this.iterator) void _;
    } catch {
      // already delivered through `result`
    }
  }
}

export class Model {
  readonly config: ModelConfig;
  readonly tokenizer: Tokenizer;
  readonly backend: Backend;
  readonly pool: PagePool;
  readonly classes: TokenClasses;
  readonly source: LoadedCheckpoint['source'];
  readonly parameters: number;
  readonly loadMs: number;

  constructor(ckpt: LoadedCheckpoint, tokenizer: Tokenizer, backend: Backend, opts: LoadModelOptions, loadMs: number) {
    this.config = ckpt.config;
    this.tokenizer = tokenizer;
    this.backend = backend;
    this.source = ckpt.source;
    this.parameters = parameterCount(ckpt.weights);
    this.classes = computeTokenClasses(tokenizer);
    this.pool = new PagePool({
      headDim: ckpt.config.headDim,
      pageTokens: opts.pageTokens,
      budgetBytes: opts.kvBudgetBytes,
      kvDtype: opts.kvDtype,
      arena: backend.createArena(),
    });
    this.loadMs = loadMs;
  }

  /** Text → token ids (with BOS when the tokenizer adds one, unless told otherwise). */
  encode(text: string, addBos?: boolean): number[] {
    return this.tokenizer.encode(text, { addBos });
  }

  /** A fresh per-sequence KV cache on the shared pool. Release it when done. */
  newSequence(cache?: CacheOptions): SequenceKv {
    const options = resolveCacheOptions(cache);
    const c = this.config;
    return new SequenceKv(this.pool, { nLayers: c.nLayers, nHeads: c.nHeads, nKvHeads: c.nKvHeads, headDim: c.headDim }, options, this.classes);
  }

  /** Build a generation request (validated; throws typed errors) without running it. */
  createRequest(prompt: string | readonly number[], opts: GenerateOptions = {}): GenerationRequest {
    const ids = typeof prompt === 'string' ? this.encode(prompt, opts.addBos) : this.checkIds(prompt);
    const kv = this.newSequence(opts.cache);
    try {
      return new GenerationRequest(kv, ids, this.tokenizer, this.config.maxSeqLen, opts);
    } catch (e) {
      kv.release();
      throw e;
    }
  }

  /** Stream a continuation of `prompt`. */
  generate(prompt: string | readonly number[], opts: GenerateOptions = {}): Generation {
    const req = this.createRequest(prompt, opts);
    const backend = this.backend;
    return new Generation(async function* (finish) {
      let settled = false;
      try {
        while (!req.done) {
          const [o] = await step(backend, [req]);
          if (o.error) throw o.error;
          if (o.piece) yield o.piece;
          // A forward pass can settle without the event loop turning (the wasm backend's main thread computes too):
          // let timers, signals and I/O (an abort, Ctrl-C, a closed pipe) in between tokens.
          await yieldToEventLoop();
        }
        settled = true;
        finish(req.result());
      } catch (e) {
        settled = true;
        throw e;
      } finally {
        // The consumer left the loop early (break, return, a throw in its body): the generation ends here.
        if (!settled) {
          req.finish('aborted');
          finish(req.result());
        }
        req.kv.release();
      }
    });
  }

  /** Generate to the end and return the report (text included). */
  async complete(prompt: string | readonly number[], opts: GenerateOptions = {}): Promise<GenerateResult> {
    return this.generate(prompt, opts).result;
  }

  /** Render `messages` with the model's chat template (plain "role: content" lines when it has none). */
  renderChat(messages: readonly ChatMessage[]): string {
    if (!Array.isArray(messages) || messages.some((m) => typeof m?.content !== 'string' || typeof m?.role !== 'string')) {
      throw new InvalidOptionError('messages must be an array of { role: string, content: string }', 'messages');
    }
    // A template that does not parse is an error, never a silent fallback to plain text.
    if (this.tokenizer.hasChatTemplate || this.tokenizer.chatTemplateError !== undefined) {
      return this.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
    }
    // Base models without a template (the stories models): continue the conversation as text.
    return messages.map((m) => m.content).join('\n');
  }

  /**
   * The chat prompt's ids: the template's markers are special tokens, message content is always plain text (typing a
   * special token's text into a message does not make it that token). A rendered template carries its own BOS.
   */
  encodeChat(messages: readonly ChatMessage[]): number[] {
    const text = this.renderChat(messages); // validates; the plain-text rendering when there is no template
    return this.tokenizer.hasChatTemplate ? this.tokenizer.encodeChat(messages, { addGenerationPrompt: true }) : this.encode(text);
  }

  chat(messages: readonly ChatMessage[], opts: GenerateOptions = {}): Generation {
    return this.generate(this.encodeChat(messages), opts);
  }

  /** Run the prompt through the model with a FastGen cache and report every head's choice (no generation). */
  async profile(prompt: string | readonly number[], opts: { cache?: CacheOptions; addBos?: boolean; truncatePrompt?: boolean } = {}): Promise<ProfileReport> {
    const req = this.createRequest(prompt, { ...opts, cache: { ...opts.cache, policy: 'fastgen' }, maxTokens: 1 });
    try {
      const t0 = performance.now();
      await this.backend.forward([{ kv: req.kv, tokens: req.promptIds, logits: 'none' }]);
      const prefillMs = performance.now() - t0;
      const st = req.kv.stats();
      return {
        promptTokens: req.promptIds.length,
        recovery: req.kv.options.recovery!,
        gqa: req.kv.options.gqa!,
        layers: req.kv.profiles,
        headsPerPolicy: st.headsPerPolicy,
        kvBytes: st.kvBytes,
        fullKvBytes: st.fullKvBytes,
        prunedRatio: st.prunedRatio,
        profileMs: req.kv.profileMs,
        prefillMs,
      };
    } finally {
      req.kv.release();
    }
  }

  dispose(): void {
    this.backend.dispose();
  }

  private checkIds(ids: readonly number[]): number[] {
    if (!Array.isArray(ids)) throw new InvalidOptionError('prompt must be a string or an array of token ids', 'prompt');
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.config.vocabSize) {
        throw new InvalidOptionError(`prompt token id ${id} is outside the vocabulary [0, ${this.config.vocabSize})`, 'prompt');
      }
    }
    return ids.slice();
  }
}

/** A macrotask turn: setImmediate in Node, a MessageChannel round trip in browsers (setTimeout(0) is clamped to 4 ms). */
const yieldToEventLoop: () => Promise<void> = (() => {
  if (typeof setImmediate === 'function') return () => new Promise<void>((r) => setImmediate(r));
  if (typeof MessageChannel === 'function') {
    const channel = new MessageChannel();
    const waiting: (() => void)[] = [];
    channel.port1.onmessage = () => waiting.shift()?.();
    return () =>
      new Promise<void>((r) => {
        waiting.push(r);
        channel.port2.postMessage(0);
      });
  }
  return () => new Promise<void>((r) => setTimeout(r, 0));
})();

/**
 * Load a model (path to a llama2.c .bin or a Hugging Face folder — in a page, a URL —, files already found, or by
 * default the embedded stories15M). What can be checked from the headers is checked before the weights are read: the
 * options, the tokenizer against the model's vocabulary, and whether the model fits the backend (the wasm backend's
 * 4 GiB).
 */
export async function loadModel(where?: ModelLocation, opts: LoadModelOptions = {}): Promise<Model> {
  const t0 = performance.now();
  if (opts.kvDtype !== undefined && opts.kvDtype !== 'f32' && opts.kvDtype !== 'f16') {
    throw new InvalidOptionError(`kvDtype must be 'f32' or 'f16', got '${opts.kvDtype}'`, 'kvDtype');
  }
  checkBackendOptions(opts);
  const input = await findModel(where, opts.tokenizerPath);
  const info = await inspectModelInput(input);
  if (!info.tokenizer) {
    throw new InvalidOptionError(
      `no tokenizer found for ${info.source.path}: put tokenizer.bin (llama2.c) or tokenizer.json (Hugging Face) next to the model, or pass tokenizerPath / --tokenizer`,
      'tokenizer',
    );
  }
  const tokenizer = await loadTokenizer(info.tokenizer, info.config.vocabSize);
  checkModelFits(info.config, opts);
  const ckpt = await loadModelInput(input, opts.onProgress);
  checkFiniteWeights(ckpt.weights, ckpt.source.path);
  const backend = await createBackend(ckpt, { backend: opts.backend, dtype: opts.dtype, threads: opts.threads, onProgress: opts.onProgress });
  // Sampling's SIMD pass over the vocabulary, whatever the backend (its absence only costs speed).
  await prepareSamplingKernel();
  return new Model(ckpt, tokenizer, backend, opts, performance.now() - t0);
}

export { AbortedError };
