/**
 * Evaluate every cache configuration on one prompt.
 *
 * Full cache, once per prompt:
 *   prefill the prompt (kept as the source every full-cache run forks from);
 *   teacher-forced pass over the reference continuation in one forward call: next-token log-probs for perplexity and
 *     KL, and, through the layer tap, the full attention rows of every query head at every reference position;
 *   greedy continuation; sampled continuation (T 0.6, top-p 0.9, seed s); control samples (other seeds);
 *   scores of the sampled continuations: mean log-prob per token under the full cache.
 *
 * Each compressed configuration: prefill (FastGen profiles and compresses here) then, from forks of that prefill:
 *   teacher forcing token by token (compression applied as decoding goes) → NLL, KL(full ‖ compressed), KV bytes at
 *     the end, and decode-time recovery: at every step and layer, before the cache evicts, the share of the full
 *     model's attention row (same tokens, same position) that falls on the positions this head still holds;
 *   greedy continuation → matched prefix, ROUGE-L against the full greedy one;
 *   sampled continuation with the full run's seed → judged against the full sample by the full cache's likelihood.
 *
 * Baselines run at the KV ratio the FastGen point just reached on the same prompt (matched memory).
 */
import type { CacheOptions } from '../cache/policies/index.js';
import { cachePolicy, HYBRID_ORDER } from '../cache/policies/index.js';
import type { SequenceKv } from '../cache/sequence-kv.js';
import type { Model } from '../generate/model.js';
import { GenerationRequest } from '../generate/request.js';
import type { SamplingOptions } from '../generate/sampler.js';
import { step } from '../generate/step.js';
import { causalAttentionRow } from '../backend/cpu-ref/math.js';
import { judge, klDivergence, logProbOf, logSoftmax, matchedPrefix, rougeL, sameTokens, type JudgeOutcome } from './metrics.js';
import type { EvalPrompt } from './prompts.js';
import { TappedSequenceKv } from './tapped-kv.js';
import type { ConfigResult, ConfigSpec, EvalSettings, PromptResult } from './types.js';

/** Reruns allowed to bring a baseline's end-of-generation KV ratio within a point of FastGen's. */
const MAX_RATIO_CORRECTIONS = 2;

/** The configurations for these settings, in run order (each baseline right after the FastGen point it matches). */
export function configSpecs(settings: EvalSettings, nHeads: number, nKvHeads: number): ConfigSpec[] {
  const out: ConfigSpec[] = [];
  const Ts = [...settings.thresholds].sort((a, b) => b - a);
  for (const T of Ts) {
    out.push({ key: `fastgen@${T}`, group: 'sweep', method: 'fastgen', T, gqa: nKvHeads < nHeads ? 'min' : 'mean' });
    if (T < 1) for (const b of settings.baselines) out.push({ key: `${b}@${T}`, group: 'baseline', method: b, T });
    // The paper's own algorithm at the same T, beside the default variant.
    if (T < 1 && settings.paper) out.push({ key: `fastgen-paper@${T}`, group: 'paper', method: 'fastgen', T, gqa: 'mean', variant: 'paper' });
  }
  if (settings.ablation) {
    for (const p of HYBRID_ORDER) {
      // The paper's Table 4, on the paper's algorithm.
      out.push({ key: `fastgen@${settings.ablationT}-${p}`, group: 'ablation', method: 'fastgen', T: settings.ablationT, gqa: 'mean', exclude: [p], variant: 'paper' });
    }
  }
  if (settings.gqaMin && nKvHeads < nHeads) {
    // The other rule than the default (min) for a KV head's recovery over its query group.
    for (const T of Ts) if (T < 1) out.push({ key: `fastgen-mean@${T}`, group: 'gqa-alt', method: 'fastgen', T, gqa: 'mean' });
  }
  return out;
}

/** Work estimate in "decode-token equivalents", for progress and ETA. */
export function estimateCost(promptTokens: number, G: number, settings: EvalSettings): { full: number; config: number } {
  const prefill = 0.5 * promptTokens;
  const score = 0.8 * G;
  return {
    full: prefill + G * (1 + settings.samples + 2 * settings.controlPairs) + score * (settings.samples + 2 * settings.controlPairs),
    config: prefill + (2 + settings.samples) * G + settings.samples * score,
  };
}

interface Continuation {
  tokens: number[];
  /** tokens plus the stop token when generation ended on one: what the judge scores. */
  scored: number[];
  eos: boolean;
  ms: number;
}

interface FullContext {
  prefill: TappedSequenceKv;
  lastLogits: Float32Array;
  /** [G × vocab] log-probs of the reference tokens' positions. */
  logProbs: Float64Array;
  /** rows[layer][step]: nHeads × rowStride attention probabilities by position, for query position P + step. */
  rows: Float32Array[][];
  rowStride: number;
  greedy: number[];
  /** One per judge seed, with its score. */
  samples: { c: Continuation; score: number; seed: number }[];
}

export class PromptEvaluator {
  private readonly model: Model;
  private readonly settings: EvalSettings;
  private readonly vocab: number;

  constructor(model: Model, settings: EvalSettings) {
    this.model = model;
    this.settings = settings;
    this.vocab = model.config.vocabSize;
  }

  async run(prompt: EvalPrompt, index: number, onProgress?: (cost: number) => void): Promise<PromptResult> {
    const t0 = performance.now();
    const { settings, model } = this;
    const c = model.config;
    const specs = configSpecs(settings, c.nHeads, c.nKvHeads);
    const cost = estimateCost(prompt.ids.length, prompt.reference.length, settings);
    const seeds = Array.from({ length: settings.samples }, (_, j) => settings.seed + 1000 * index + 100 * j);

    const full = await this.fullRuns(prompt, seeds);
    // Control pairs are disjoint: pair 1 is a fresh sample against the first judge sample, every later pair two fresh
    // samples. Given the prompt, each pair is then an independent fair coin under "the judge is unbiased" (pairs
    // sharing one reference sample would all move together, and the binomial interval would be too narrow).
    const controls = [];
    for (let k = 1; k <= settings.controlPairs; k++) {
      const cseed = settings.seed + 1000 * index + 50 + 2 * k;
      const other = await this.sample(full.prefill.fork(), full.lastLogits, cseed);
      const score = await this.score(full, other.scored);
      let opponent = full.samples[0];
      if (k > 1) {
        const c = await this.sample(full.prefill.fork(), full.lastLogits, cseed + 1);
        opponent = { c, seed: cseed + 1, score: await this.score(full, c.scored) };
      }
      controls.push({ score, tokens: other.tokens.length, outcome: judge({ tokens: other.scored, score }, { tokens: opponent.c.scored, score: opponent.score }) });
    }
    let fullNll = 0;
    for (let i = 0; i < prompt.reference.length; i++) fullNll -= full.logProbs[i * this.vocab + prompt.reference[i]];
    onProgress?.(cost.full);

    const results: ConfigResult[] = [];
    const ratioAt = new Map<number, number>();
    // Runs that are certain to repeat an earlier one on this prompt (same per-head policies after profiling, or the
    // same baseline at the same target ratio) reuse its results: everything downstream is deterministic.
    const reuse = new Map<string, ConfigResult>();
    try {
      for (const spec of specs) {
        let cache: CacheOptions;
        let target: number | undefined;
        if (spec.method === 'fastgen') {
          const own = spec.group === 'sweep' || spec.group === 'gqa-alt' ? settings.fastgen : {};
          cache = { policy: 'fastgen', ...own, variant: spec.variant, recovery: spec.T, gqa: spec.gqa, exclude: spec.exclude };
        } else {
          target = ratioAt.get(spec.T);
          if (target === undefined) throw new Error(`internal: baseline ${spec.key} before its FastGen point`);
          // The policy's own options for that memory at the end of generation (sink+local takes its sinks off the
          // window, snapkv its generated tokens off the prompt's share).
          const length = prompt.ids.length + prompt.reference.length - 1;
          cache = { policy: spec.method, ...cachePolicy(spec.method).matchMemory!(target, length, prompt.ids.length) };
        }
        const res = await this.runConfig(spec, cache, prompt, full, target, reuse);
        if (spec.group === 'sweep') ratioAt.set(spec.T, res.tf.kvBytes / res.tf.fullKvBytes);
        results.push(res);
        onProgress?.(cost.config);
      }
    } finally {
      full.prefill.release();
    }

    return {
      prompt: {
        id: prompt.id,
        category: prompt.category,
        source: prompt.source,
        preview: prompt.preview,
        promptTokens: prompt.ids.length,
        referenceTokens: prompt.reference.length,
      },
      full: {
        nllSum: fullNll,
        tokens: prompt.reference.length,
        greedyTokens: full.greedy.length,
        samples: full.samples.map((s) => ({ tokens: s.c.tokens.length, eos: s.c.eos, score: s.score })),
        control: controls,
      },
      configs: results,
      ms: performance.now() - t0,
    };
  }

  // ---- full cache --------------------------------------------------------------------------------------------

  private async fullRuns(prompt: EvalPrompt, seeds: number[]): Promise<FullContext> {
    const { model } = this;
    const c = model.config;
    const P = prompt.ids.length;
    const R = prompt.reference;
    const G = R.length;
    const prefill = TappedSequenceKv.create(model, { policy: 'full' });
    try {
      const [lastLogits] = await model.backend.forward([{ kv: prefill, tokens: prompt.ids, logits: 'last' }]);

      // Teacher-forced reference pass, token by token exactly as the compressed runs go (a batched pass would round
      // differently and leave a ~1e-8 KL floor): log-probs of R[i] at every step, and the full attention rows of the
      // query positions P .. P+G−2 (the tokens R[0..G−2]).
      const rowStride = P + G;
      const rows: Float32Array[][] = Array.from({ length: c.nLayers }, () => []);
      const tf = prefill.fork();
      tf.tap = (layer, kv, q, qStride, n, startPos) => {
        for (let t = 0; t < n; t++) rows[layer][startPos - P + t] = this.attentionRows(kv, layer, q, t * qStride, startPos + t, rowStride);
      };
      const logProbs = new Float64Array(G * this.vocab);
      const scratch = new Float64Array(this.vocab);
      let logits = lastLogits;
      for (let i = 0; i < G; i++) {
        if (i > 0) [logits] = await model.backend.forward([{ kv: tf, tokens: [R[i - 1]], logits: 'last' }]);
        logProbs.set(logSoftmax(logits, scratch), i * this.vocab);
      }
      tf.release();

      const greedy = await this.decode(prefill.fork(), lastLogits, null);
      const ctx: FullContext = { prefill, lastLogits, logProbs, rows, rowStride, greedy: greedy.tokens, samples: [] };
      for (const seed of seeds) {
        const c = await this.sample(prefill.fork(), lastLogits, seed);
        ctx.samples.push({ c, seed, score: await this.score(ctx, c.scored) });
      }
      return ctx;
    } catch (e) {
      prefill.release();
      throw e;
    }
  }

  /** softmax(q · K / √d) of every query head of `layer` at `pos`, over the (full) store, indexed by key position. */
  private attentionRows(kv: TappedSequenceKv, layer: number, q: Float32Array, qOff: number, pos: number, stride: number): Float32Array {
    const { nHeads, nKvHeads, headDim } = kv.shape;
    const group = nHeads / nKvHeads;
    const out = new Float32Array(nHeads * stride);
    const scale = 1 / Math.sqrt(headDim);
    for (let h = 0; h < nKvHeads; h++) {
      const st = kv.store(layer, h);
      const m = st.length;
      const keys = new Float32Array(m * headDim);
      const keyOff = new Int32Array(m);
      for (let s = 0; s < m; s++) {
        keyOff[s] = s * headDim;
        st.readKey(s, keys, keyOff[s]);
      }
      const probs = new Float64Array(m);
      for (let g = 0; g < group; g++) {
        const qh = h * group + g;
        causalAttentionRow(probs, q, qOff + qh * headDim, keys, keyOff, st.positions, pos, m, headDim, scale);
        const base = qh * stride;
        for (let s = 0; s < m; s++) if (probs[s] > 0) out[base + st.positions[s]] = probs[s];
      }
    }
    return out;
  }

  /** Mean log-prob per token of `tokens` as a continuation of the prompt, under the full cache (teacher-forced). */
  private async score(full: Pick<FullContext, 'prefill' | 'lastLogits'>, tokens: readonly number[]): Promise<number> {
    if (tokens.length === 0) return 0;
    let sum = logProbOf(full.lastLogits, tokens[0]);
    if (tokens.length > 1) {
      const kv = full.prefill.fork();
      try {
        const [all] = await this.model.backend.forward([{ kv, tokens: tokens.slice(0, -1), logits: 'all' }]);
        for (let i = 1; i < tokens.length; i++) sum += logProbOf(all.subarray((i - 1) * this.vocab, i * this.vocab), tokens[i]);
      } finally {
        kv.release();
      }
    }
    return sum / tokens.length;
  }

  private sample(kv: TappedSequenceKv, firstLogits: Float32Array, seed: number): Promise<Continuation> {
    return this.decode(kv, firstLogits, this.sampling(seed));
  }

  /** The judge samples' sampling settings with this seed. */
  private sampling(seed: number): SamplingOptions {
    return { temperature: this.settings.temperature, topP: this.settings.topP, seed };
  }

  /** Continue from a prefilled cache (greedy when sampling is null); releases the cache unless `keep` is set. */
  private async decode(kv: TappedSequenceKv, firstLogits: Float32Array, sampling: SamplingOptions | null, keep = false): Promise<Continuation> {
    try {
      return await continueSequence(this.model, kv, firstLogits, sampling, this.settings.maxTokens);
    } finally {
      if (!keep) kv.release();
    }
  }

  // ---- one compressed configuration -------------------------------------------------------------------------

  private async prefill(cache: CacheOptions, prompt: EvalPrompt): Promise<{ kv: TappedSequenceKv; lastLogits: Float32Array; ms: number }> {
    const kv = TappedSequenceKv.create(this.model, cache);
    try {
      const t0 = performance.now();
      const [lastLogits] = await this.model.backend.forward([{ kv, tokens: prompt.ids, logits: 'last' }]);
      return { kv, lastLogits, ms: performance.now() - t0 };
    } catch (e) {
      kv.release();
      throw e;
    }
  }

  /**
   * Teacher forcing over the reference, one token at a time from a fork of the compressed prefill, with decode-time
   * recovery: at every step and layer, before eviction, the share of the full model's attention row (same position)
   * that lies on the positions each KV head holds (mean over the group's query heads).
   */
  private async teacherForce(pre: { kv: TappedSequenceKv; lastLogits: Float32Array }, prompt: EvalPrompt, full: FullContext) {
    const c = this.model.config;
    const R = prompt.reference;
    const G = R.length;
    const P = prompt.ids.length;
    const nKv = c.nKvHeads;
    const group = c.nHeads / nKv;
    const recSum = new Float64Array(c.nLayers * nKv);
    let recSteps = 0;
    const tf = pre.kv.fork();
    tf.tap = (layer, kv, _q, _qs, n, startPos) => {
      if (n !== 1) return;
      const rows = full.rows[layer][startPos - P];
      if (!rows) return;
      if (layer === 0) recSteps++;
      for (let h = 0; h < nKv; h++) {
        const st = kv.store(layer, h);
        let share = 0;
        for (let g = 0; g < group; g++) {
          const base = (h * group + g) * full.rowStride;
          for (let s = 0; s < st.length; s++) share += rows[base + st.positions[s]];
        }
        recSum[layer * nKv + h] += share / group;
      }
    };
    const scratch = new Float64Array(this.vocab);
    let nll = 0;
    let klSum = 0;
    let klMax = 0;
    try {
      let logits = pre.lastLogits;
      for (let i = 0; i < G; i++) {
        if (i > 0) [logits] = await this.model.backend.forward([{ kv: tf, tokens: [R[i - 1]], logits: 'last' }]);
        const lq = logSoftmax(logits, scratch);
        nll -= lq[R[i]];
        const kl = klDivergence(full.logProbs.subarray(i * this.vocab, (i + 1) * this.vocab), lq);
        klSum += kl;
        if (kl > klMax) klMax = kl;
      }
      const stats = tf.stats();
      return { stats, nll, klSum, klMax, tokens: G, achieved: Array.from(recSum, (x) => (recSteps ? x / recSteps : 1)) };
    } finally {
      tf.release();
    }
  }

  /**
   * One cache configuration on one prompt. Baselines get `target`, the FastGen point's KV ratio: when the KV ratio
   * they actually end the teacher-forced run with is off by more than one point (local+frequent's two halves
   * overlap), the ratio is corrected (at most twice) and the configuration rerun, so that every method is compared at
   * (nearly) the same end-of-generation memory.
   */
  private async runConfig(
    spec: ConfigSpec,
    cache: CacheOptions,
    prompt: EvalPrompt,
    full: FullContext,
    target: number | undefined,
    reuse: Map<string, ConfigResult>,
  ): Promise<ConfigResult> {
    let pre = await this.prefill(cache, prompt);
    const same =
      spec.method === 'fastgen'
        ? `fastgen|${pre.kv.profiles.map((layer) => layer.map((hp) => hp.policy).join(',')).join('|')}`
        : `${spec.method}|${target}`;
    const earlier = reuse.get(same);
    if (earlier) {
      pre.kv.release();
      return { ...earlier, key: spec.key, reusedFrom: earlier.reusedFrom ?? earlier.key };
    }
    try {
      let tf = await this.teacherForce(pre, prompt, full);
      if (target !== undefined && cache.ratio !== undefined) {
        // Up to two corrections: first by the difference, then a secant step through the two runs so far
        // (local+frequent's overlap grows with the ratio, so one additive step can fall short).
        let prev: { ratio: number; got: number } | undefined;
        for (let attempt = 0; attempt < MAX_RATIO_CORRECTIONS; attempt++) {
          const ratio: number = cache.ratio!;
          const got = tf.stats.kvBytes / Math.max(1, tf.stats.fullKvBytes);
          if (Math.abs(got - target) <= 0.01) break;
          const slope = prev && Math.abs(got - prev.got) > 1e-9 ? (ratio - prev.ratio) / (got - prev.got) : 1;
          const next = Math.min(1, Math.max(1e-6, ratio + (target - got) * Math.min(4, Math.max(0.25, slope))));
          if (next === ratio) break;
          prev = { ratio, got };
          cache = { ...cache, ratio: next };
          pre.kv.release();
          pre = await this.prefill(cache, prompt);
          tf = await this.teacherForce(pre, prompt, full);
        }
      }

      const greedy = await this.decode(pre.kv.fork(), pre.lastLogits, null);
      // Judge samples: same seeds as the full cache's; identical outputs tie without scoring.
      const scores: number[] = [];
      const outcomes: JudgeOutcome[] = [];
      let sample: Continuation | undefined;
      let sampleStats: ReturnType<TappedSequenceKv['stats']> | undefined;
      for (const ref of full.samples) {
        const kv = pre.kv.fork();
        const c = await this.decode(kv, pre.lastLogits, this.sampling(ref.seed), true);
        if (!sample) {
          sample = c;
          sampleStats = kv.stats();
        }
        kv.release();
        const score = sameTokens(c.scored, ref.c.scored) ? ref.score : await this.score(full, c.scored);
        scores.push(score);
        outcomes.push(judge({ tokens: c.scored, score }, { tokens: ref.c.scored, score: ref.score }));
      }
      if (!sample || !sampleStats) throw new Error('internal: no judge samples');

      const result: ConfigResult = {
        key: spec.key,
        tf: {
          kvBytes: tf.stats.kvBytes,
          fullKvBytes: tf.stats.fullKvBytes,
          pruned: tf.stats.prunedRatio,
          nllSum: tf.nll,
          tokens: tf.tokens,
          klSum: tf.klSum,
          klMax: tf.klMax,
        },
        greedy: {
          tokens: greedy.tokens.length,
          prefix: matchedPrefix(full.greedy, greedy.tokens),
          rougeL: rougeL(full.greedy, greedy.tokens).f1,
          identical: sameTokens(full.greedy, greedy.tokens),
        },
        sample: {
          tokens: sample.tokens.length,
          eos: sample.eos,
          scores,
          outcomes,
          pruned: sampleStats.prunedRatio,
          prefillMs: pre.ms,
          decodeMs: sample.ms,
          profileMs: pre.kv.profileMs,
        },
        recovery: { achieved: tf.achieved },
      };
      if (target !== undefined) {
        result.target = target;
        result.ratio = cache.ratio;
      }
      reuse.set(same, result);
      if (spec.method === 'fastgen') {
        result.policies = pre.kv.profiles.map((layer) => layer.map((hp) => hp.policy));
        result.recovery.promised = pre.kv.profiles.flatMap((layer) => layer.map((hp) => hp.recoveries.find((r) => r.policy === hp.policy)?.recovery ?? 1));
      }
      return result;
    } finally {
      pre.kv.release();
    }
  }
}

/**
 * Generate up to maxTokens from a prefilled cache whose last logits are `firstLogits` (greedy when `sampling` is
 * null), through the engine's own generation step: it stops at EOS or a full context exactly as `generate` does
 * (the stop token is not fed back). `promptIds`, when given, are the tokens already in the cache.
 */
export async function continueSequence(
  model: Model,
  kv: SequenceKv,
  firstLogits: Float32Array,
  sampling: SamplingOptions | null,
  maxTokens: number,
  promptIds: number[] = [],
): Promise<{ tokens: number[]; scored: number[]; eos: boolean; ms: number }> {
  const req = GenerationRequest.resume(kv, firstLogits, model.tokenizer, model.config.maxSeqLen, { ...(sampling ?? { temperature: 0 }), maxTokens }, promptIds);
  while (!req.done) {
    const [o] = await step(model.backend, [req]);
    if (o.error !== undefined) throw o.error;
  }
  const tokens = req.generated.slice();
  return { tokens, scored: req.stopToken === undefined ? tokens : [...tokens, req.stopToken], eos: req.stopReason === 'eos', ms: req.decodeMs };
}
