/**
 * The messages between the page (page.ts, main thread) and the engine (engine-worker.ts, a dedicated worker: the wasm
 * backend's calling thread blocks on Atomics while its pool works, which a page's main thread may not do).
 */

import type { CacheOptions } from '../cache/policies/index.js';

export type BackendRequest = 'auto' | 'wasm' | 'webgpu' | 'cpu-ref';

/** Where the page's model comes from: URLs (the default model served by `fastgen web`, any host) or picked files. */
export type ModelSourceSpec =
  | { kind: 'url'; url: string; tokenizerUrl?: string }
  | { kind: 'files'; files: File[]; label: string };

export interface GenerateSettings {
  prompt: string;
  maxTokens: number;
  temperature: number;
  seed: number;
  /** A cache policy of the registry (src/cache/policies) and its options, e.g. recovery T for fastgen. */
  cache: CacheOptions;
}

export type EngineRequest =
  | { type: 'load'; source: ModelSourceSpec; backend: BackendRequest }
  | { type: 'generate'; id: number; settings: GenerateSettings }
  | { type: 'stop' };

export interface ModelSummary {
  name: string;
  architecture: string;
  parameters: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  maxSeqLen: number;
  vocabSize: number;
  source: string;
  loadMs: number;
}

/** Which backend runs, and why that one. */
export interface BackendChoice {
  name: 'webgpu' | 'wasm' | 'cpu-ref';
  why: string;
}

/** One cell of the layer × KV-head grid. */
export interface HeadCell {
  /** The head's policy, sizes included ('special+frequent@0.1+local@0.2'). */
  policy: string;
  /** Tokens this head holds now. */
  kept: number;
  /** FastGen: the recovery its chosen policy reached at the end of the prompt. */
  recovery?: number;
}

export interface KvNow {
  sequenceTokens: number;
  kvBytes: number;
  fullKvBytes: number;
  peakKvBytes: number;
  grid: HeadCell[][];
}

/** A failure in plain words: `title` says what kind, `message` what happened and what to do. */
export interface PlainError {
  code: string;
  title: string;
  message: string;
}

export type EngineEvent =
  | { type: 'progress'; phase: 'download' | 'load'; loaded: number; total: number; what: string }
  | { type: 'loaded'; model: ModelSummary; backend: BackendChoice }
  | { type: 'prefilled'; id: number; promptTokens: number; prefillMs: number; profileMs: number; kv: KvNow }
  | { type: 'token'; id: number; piece: string; generated: number; decodeTokensPerSecond: number; kv: KvNow }
  | { type: 'done'; id: number; stopReason: string; text: string; generated: number; promptTokens: number; prefillTokensPerSecond: number; decodeTokensPerSecond: number; kv: KvNow }
  /** `stillLoaded`: after a failed load, the model still in use (a file that is not a model replaces nothing). */
  | { type: 'error'; id?: number; during: 'load' | 'generate'; error: PlainError; stillLoaded?: string };
