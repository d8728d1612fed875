/**
 * The cache-policy interface. A policy is a registry entry (src/cache/policies/index.ts) that declares its options
 * and, for each sequence, starts a SequencePolicy: the object that says which attention statistics a forward pass must
 * collect and what happens after each layer's attention. Whatever it decides, each head ends up with a declarative
 * HeadPolicy (head-policy.ts), which is what backends execute. See src/cache/README.md.
 */
import type { HeadPolicy } from '../head-policy.js';
import type { HeadStore } from '../head-store.js';

export interface KvShape {
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
}

/** One option of a policy. The CLI flag is the key in kebab-case, the server field the key in snake_case. */
export interface OptionSpec {
  /** Library name (camelCase), e.g. 'localRatio'. */
  key: string;
  /** fraction: (0, 1]; fraction0: [0, 1]; count: integer ≥ 1; count0: integer ≥ 0; choice: one of `choices`; list: subset of `choices`. */
  kind: 'fraction' | 'fraction0' | 'count' | 'count0' | 'choice' | 'list';
  choices?: readonly string[];
  /** Filled in when the option is absent (none: the option stays absent). */
  default?: number | string | readonly string[];
  help: string;
}

/** Validated options of one policy, defaults filled in. `policy` is the registry name. */
export interface PolicyOptions {
  readonly policy: string;
  readonly [option: string]: unknown;
}

/**
 * Column sums a backend collects during a pass (per query head, over the KV head's slots), from the attention
 * probabilities A[i, s] of the pass's rows i ≥ fromRow, and band sums for each distance w of `bands`:
 *   column[qh][s] = Σ_{i ≥ fromRow} A[i, s]        bands[k][qh][s] = Σ_{i ≥ fromRow, pos_i − pos_s ≤ bands[k]} A[i, s]
 * Collected only on a pass that starts from an empty cache, so slot s holds position s.
 */
export interface StatsRequest {
  fromRow: number;
  /** Band distances, ascending, each ≥ 0 (empty: column sums only). */
  bands: readonly number[];
}

/** What a backend collected for one query head (over the KV head's slots). */
export interface HeadAttentionStats {
  column: ArrayLike<number>;
  /** One array per distance of StatsRequest.bands, in that order. */
  bands: readonly ArrayLike<number>[];
}

/** The statistics of one layer's pass, indexed by query head. */
export type PromptAttentionStats = readonly HeadAttentionStats[];

/** What the backend must do during one layer's attention for one sequence. */
export interface LayerNeeds {
  /** Per KV head: add each row's attention probabilities to the slots' cumulative scores. */
  scores: readonly boolean[];
  /** Column/band sums to collect and hand to finishLayer, or null. */
  stats: StatsRequest | null;
}

/** One pass over one layer, as the policy sees it after the layer's attention. */
export interface LayerPass {
  layer: number;
  /** Tokens in this pass, at positions startPos … startPos + n − 1. */
  n: number;
  startPos: number;
  /** The statistics requested by needs(), when any. */
  stats?: PromptAttentionStats;
}

/** The part of the sequence's cache a policy acts on. */
export interface PolicyTarget {
  readonly shape: KvShape;
  store(layer: number, kvHead: number): HeadStore;
  /** Evict from one head every token `policy` does not keep at the current position (compacts, frees pages). */
  apply(layer: number, kvHead: number, policy: HeadPolicy, current: number): void;
}

/** A policy's decisions for one sequence. */
export interface SequencePolicy {
  /** The policy head (layer, kvHead) follows now. */
  head(layer: number, kvHead: number): HeadPolicy;
  /** Statistics the backend must collect in a pass of n tokens from startPos over `layer`. */
  needs(layer: number, n: number, startPos: number): LayerNeeds;
  /** After a layer's attention: decide (profile, select) and evict through the target. */
  afterAttention(kv: PolicyTarget, pass: LayerPass): void;
  /** Whether afterAttention can change anything (false for a full cache: backends skip the hook). */
  readonly evicts: boolean;
  /** A copy whose later decisions are independent of this one's. */
  fork(): SequencePolicy;
  /** Milliseconds spent deciding (FastGen's profiling), for reports. */
  readonly decideMs: number;
}

/** A registry entry. */
export interface CachePolicy {
  readonly name: string;
  /** One line for --help and the README. */
  readonly summary: string;
  readonly options: readonly OptionSpec[];
  /** Whether the tokens kept depend on the prompt (decided by profiling), so admission must estimate them. */
  readonly adaptive: boolean;
  /** Whether the evaluator runs it as a baseline at FastGen's memory (see matchMemory). */
  readonly baseline: boolean;
  /** Checks across options, after each was validated on its own, and defaults that depend on other options. */
  complete?(o: PolicyOptions): PolicyOptions;
  start(o: PolicyOptions, shape: KvShape): SequencePolicy;
  /**
   * Most tokens one head holds after a step at sequence length `length` of a sequence whose prompt had `promptLength`
   * tokens (for admission); undefined when it depends on the profile (adaptive policies).
   */
  keptTokens(o: PolicyOptions, length: number, promptLength: number): number | undefined;
  /** Options of this policy that hold about `fraction` of a full cache at `length` tokens (the evaluator's baselines). */
  matchMemory?(fraction: number, length: number, promptLength: number): Record<string, unknown>;
  /** A short label for tables and logs, e.g. 'fastgen T=0.95'. */
  label(o: PolicyOptions): string;
}
