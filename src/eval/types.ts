/** Shapes shared by the evaluation's runner, aggregation, reports and workers (all JSON-serialisable). */
import type { BasicPolicyName, CachePolicyName } from '../cache/policies/index.js';

/** A policy the evaluator runs at FastGen's memory (CachePolicy.baseline). */
export type BaselineName = Exclude<CachePolicyName, 'full' | 'fastgen'>;
import type { JudgeOutcome } from './metrics.js';
import type { EvalPrompt, PromptCategory } from './prompts.js';

export interface EvalSettings {
  /** FastGen recovery thresholds T to sweep (1 included: it must reproduce the full cache exactly). */
  thresholds: number[];
  /** Uniform baselines run at each FastGen point's achieved KV ratio (matched memory). */
  baselines: BaselineName[];
  /** Also run the paper's variant of FastGen at every T < 1, beside the default. */
  paper: boolean;
  /** Options of the default FastGen variant for the sweep and its gqa alternative (e.g. { margin: 0 }); {} for its defaults. */
  fastgen: Record<string, number | string>;
  /** Ablation (paper's Table 4): FastGen at `ablationT` with one basic policy left out of the hybrid set. */
  ablation: boolean;
  ablationT: number;
  /** Also run FastGen with gqa = 'min' at every T < 1 (only when the model has grouped-query attention). */
  gqaMin: boolean;
  /** Tokens generated per prompt (= teacher-forced reference length). */
  maxTokens: number;
  /** Base seed: prompt i samples with seed + 1000·i, its controls with seed + 1000·i + k. */
  seed: number;
  /** Full-vs-full control pairs per prompt (other seeds). */
  controlPairs: number;
  /** Judge samples per prompt and configuration (seeds seed + 1000·i + 100·j). */
  samples: number;
  /** The paper's sampling for the win-rate judge. */
  temperature: number;
  topP: number;
}

export type ConfigGroup = 'sweep' | 'baseline' | 'paper' | 'ablation' | 'gqa-alt';

/** One cache configuration evaluated on every prompt. */
export interface ConfigSpec {
  /** Stable key, e.g. 'fastgen@0.95', 'local@0.95' (baseline matched to FastGen at T = 0.95), 'fastgen@0.98-frequent'. */
  key: string;
  group: ConfigGroup;
  method: 'fastgen' | BaselineName;
  /** FastGen: its threshold; baselines: the FastGen point whose KV ratio they match. */
  T: number;
  gqa?: 'mean' | 'min';
  /** FastGen: the variant ('paper' for the published chain; the default otherwise). */
  variant?: 'paper' | 'lattice';
  exclude?: BasicPolicyName[];
}

export interface RecoveryResult {
  /** Per (layer, KV head), row-major [layer × nKvHeads]: mean over decode steps and the group's query heads of the
   *  full-cache attention mass on the positions this cache still held. */
  achieved: number[];
  /** FastGen only: the recovery the chosen policy had on the prompt at profiling time (what T promised). */
  promised?: number[];
}

export interface ConfigResult {
  key: string;
  /** Baselines: the KV ratio to match (the FastGen point's kvBytes / fullKvBytes at the end of this prompt's
   *  teacher-forced run) and the ratio option they finally ran with (after at most one correction). */
  target?: number;
  ratio?: number;
  /** Teacher-forced run over the reference continuation, compressing as decoding goes. */
  tf: {
    kvBytes: number;
    fullKvBytes: number;
    pruned: number;
    /** Σ NLL over the reference tokens (nats) and their count. */
    nllSum: number;
    tokens: number;
    /** Σ KL(full ‖ compressed) over the same positions. */
    klSum: number;
    klMax: number;
  };
  greedy: { tokens: number; prefix: number; rougeL: number; identical: boolean };
  /** Sampled continuations (the paper's sampling), one per judge seed; sizes and timings are the first one's. */
  sample: {
    tokens: number;
    eos: boolean;
    /** Per seed: mean log-prob per token under the full cache, and the judge's verdict against the full sample. */
    scores: number[];
    outcomes: JudgeOutcome[];
    pruned: number;
    prefillMs: number;
    decodeMs: number;
    profileMs: number;
  };
  recovery: RecoveryResult;
  /** FastGen: chosen policy per [layer][kvHead]. */
  policies?: string[][];
  /** Set when this run was certain to repeat an earlier configuration on the same prompt (same per-head policies,
   *  or same baseline and target) and its results were reused. */
  reusedFrom?: string;
}

export interface PromptResult {
  prompt: Omit<EvalPrompt, 'ids' | 'reference'> & { promptTokens: number; referenceTokens: number };
  full: {
    nllSum: number;
    tokens: number;
    greedyTokens: number;
    samples: { tokens: number; eos: boolean; score: number }[];
    /** Full vs full with other seeds, in disjoint pairs (the first pair against the first judge sample). */
    control: { score: number; tokens: number; outcome: JudgeOutcome }[];
  };
  configs: ConfigResult[];
  ms: number;
}

export interface PointSummary {
  key: string;
  group: ConfigGroup;
  method: string;
  T: number;
  gqa?: 'mean' | 'min';
  exclude?: BasicPolicyName[];
  prompts: number;
  /** Mean over prompts of the end-of-generation KV (teacher-forced run). */
  kvBytes: number;
  fullKvBytes: number;
  /** 1 − Σ kvBytes / Σ fullKvBytes. */
  pruned: number;
  /** Same, for the sampled (win-rate) generations. */
  prunedSampled: number;
  ppl: number;
  fullPpl: number;
  /** Mean KL(full ‖ compressed) per token, nats. */
  kl: number;
  klMax: number;
  greedyPrefix: number;
  greedyPrefixFraction: number;
  rougeL: number;
  greedyIdentical: number;
  win: { wins: number; ties: number; losses: number; n: number; rate: number; lo95: number; hi95: number };
  /** Decode-time recovery: mean over prompts and heads; share of (prompt, head) pairs at or above T. */
  recoveryAchieved: number;
  recoveryPromised?: number;
  headsAtOrAboveT?: number;
  recoveryP10: number;
  /** FastGen: per chosen policy, mean promised vs achieved recovery and how many (prompt, head) pairs. */
  recoveryByPolicy?: { policy: string; heads: number; promised: number; achieved: number }[];
  /** FastGen: share of each policy per layer (over prompts and KV heads): [layer] → {policy: share}. */
  policyShareByLayer?: Record<string, number>[];
  headsPerPolicy?: Record<string, number>;
  /** Profiling time as a share of the whole generation (prefill + decode) of the sampled runs. */
  profileShare?: number;
  profileMs?: number;
  /** Per prompt category: pruned and win rate. */
  byCategory?: Partial<Record<PromptCategory, { prompts: number; pruned: number; winRate: number; kl: number }>>;
}

export interface Invariant {
  name: string;
  ok: boolean;
  detail: string;
}

export interface EvalReport {
  version: 1;
  model: {
    name: string;
    path: string;
    nLayers: number;
    nHeads: number;
    nKvHeads: number;
    headDim: number;
    contextLength: number;
    parameters: number;
    attention: 'multi-head' | 'grouped-query' | 'multi-query';
  };
  backend: string;
  settings: EvalSettings & { prompts: number; quick: boolean; jobs: number };
  machine: { date: string; cpu: string; cores: number; node: string; platform: string };
  wallMs: number;
  /** Prompts taken from a checkpoint instead of being run (their time is not in wallMs). */
  resumedPrompts: number;
  control: { wins: number; ties: number; losses: number; n: number; rate: number; lo95: number; hi95: number; lo99: number; hi99: number };
  fullPpl: number;
  points: PointSummary[];
  invariants: Invariant[];
  prompts: PromptResult[];
}
