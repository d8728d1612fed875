/**
 * Token sampler: logits → next token id.
 *
 * Pipeline (the order of HF transformers' default logits processors / warpers):
 *   1. repetition penalty (CTRL): for each distinct id in the last `repetitionWindow` of `recentTokens`,
 *      logit > 0 → logit / penalty, logit ≤ 0 → logit · penalty
 *   2. temperature: logits / T (T = 0 → greedy: argmax of the penalised logits, no randomness)
 *   3. top-k: keep the k highest logits (exactly k; equal logits → lower id first)
 *   4. top-p (nucleus): in descending order, keep the smallest prefix whose cumulative probability ≥ topP
 *      (a token is kept iff the mass strictly before it is < topP, so at least one is always kept)
 *   5. min-p: drop tokens whose probability is < minP × (highest probability)
 *   6. renormalise and draw with the seeded generator.
 *
 * Where the sampling kernel is loaded (src/backend/wasm/sampling.ts; loadModel prepares it) and no top-k is asked for,
 * one SIMD pass (kernels/sample.ts) splits the vocabulary at 16 nats below the maximum: the near tokens are weighed
 * exactly as below (the same f64 arithmetic, in wasm), the far ones only summed, and the kept set, the draw order and
 * the drawn token are those of the whole-vocabulary path (filterNear; the test pins it against a plain reference).
 *
 * Cost per call for vocabulary V on the whole-vocabulary path — the vocabulary is never sorted:
 *   - always one pass for the max; one table-driven exp (≈3× Math.exp's speed, rel. error < 3e-14) per token that
 *     can still matter;
 *   - top-k: k ≤ 64 a size-k heap (one pass, rare inserts); larger k a histogram of the logits in 1/64 steps,
 *     keeping every bucket above the one where the count reaches k and sorting only that bucket;
 *   - top-p: the same histogram on log-probabilities (1/64 nat) filled during the exp pass, summing mass instead
 *     of counting; only the bucket where the cumulative mass crosses topP is sorted;
 *   - min-p: a threshold (it keeps a prefix of the same order, so the order with top-p does not matter for
 *     the set); without top-k/top-p, tokens below the threshold skip the exp.
 * Sorts use packed (logit-bits, id) float64 keys with the native numeric sort. Scratch buffers are allocated once
 * per Sampler; a sample() call allocates only O(1) small objects.
 */
import { argmax } from '../argmax.js';
import { InvalidOptionError, NonFiniteLogitsError } from '../errors.js';
import { Xoshiro128StarStar, randomSeed } from './rng.js';
import { GREEDY_SAMPLE, type DeviceSample } from './sample-rule.js';
import { samplingKernel } from '../backend/wasm/sampling.js';

export interface SamplingOptions {
  /** Softmax temperature, finite, ≥ 0. 0 = greedy (argmax). Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens. Integer ≥ 0; 0 (default) = off; 1 = greedy; ≥ vocab size = off. */
  topK?: number;
  /** Nucleus sampling mass, in (0, 1]. Default 1 (off). */
  topP?: number;
  /** Drop tokens less likely than minP × the most likely one. In [0, 1). Default 0 (off). */
  minP?: number;
  /**
   * CTRL repetition penalty in [1e-3, 1e3]. 1 (default) = off; > 1 discourages repeats, < 1 encourages them. (Beyond
   * that range a penalised f32 logit can overflow to ±Infinity.)
   */
  repetitionPenalty?: number;
  /** How many of the most recent tokens the penalty looks at. Integer ≥ 0 or Infinity (default: all). 0 = none. */
  repetitionWindow?: number;
  /** Seed for the random generator, any safe integer. Default: a fresh random seed (see Sampler.seed). */
  seed?: number;
}

/** Options after validation, with defaults filled in. `seed` stays undefined when none was given. */
export interface NormalizedSamplingOptions {
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly minP: number;
  readonly repetitionPenalty: number;
  readonly repetitionWindow: number;
  readonly seed: number | undefined;
}

const DEFAULT_SAMPLING_OPTIONS: Readonly<Omit<NormalizedSamplingOptions, 'seed'>> = Object.freeze({
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  repetitionWindow: Number.POSITIVE_INFINITY,
});

function bad(option: keyof SamplingOptions, range: string, value: unknown): InvalidOptionError {
  const shown = typeof value === 'number' || typeof value === 'bigint' ? String(value) : JSON.stringify(value) ?? String(value);
  return new InvalidOptionError(`${option} must be ${range}, got ${shown}`, option);
}

/** undefined / null → default; anything that is not a number is rejected. */
function num(o: SamplingOptions, key: keyof SamplingOptions, range: string): number | undefined {
  const v = (o as Record<string, unknown>)[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || Number.isNaN(v)) throw bad(key, range, v);
  return v;
}

/**
 * Checks every option and fills in defaults. Throws InvalidOptionError (code INVALID_OPTION, `where` = option name)
 * naming the option and its valid range.
 */
export function validateSamplingOptions(o: SamplingOptions = {}): NormalizedSamplingOptions {
  if (typeof o !== 'object' || o === null) {
    throw new InvalidOptionError(`sampling options must be an object, got ${o === null ? 'null' : typeof o}`);
  }
  const d = DEFAULT_SAMPLING_OPTIONS;

  const tRange = 'a finite number ≥ 0 (0 = greedy)';
  const temperature = num(o, 'temperature', tRange) ?? d.temperature;
  if (!Number.isFinite(temperature) || temperature < 0) throw bad('temperature', tRange, temperature);

  const kRange = 'an integer ≥ 0 (0 = off)';
  const topK = num(o, 'topK', kRange) ?? d.topK;
  if (!Number.isSafeInteger(topK) || topK < 0) throw bad('topK', kRange, topK);

  const pRange = 'in (0, 1] (1 = off)';
  const topP = num(o, 'topP', pRange) ?? d.topP;
  if (!(topP > 0 && topP <= 1)) throw bad('topP', pRange, topP);

  const mRange = 'in [0, 1) (0 = off)';
  const minP = num(o, 'minP', mRange) ?? d.minP;
  if (!(minP >= 0 && minP < 1)) throw bad('minP', mRange, minP);

  const rRange = 'in [0.001, 1000] (1 = off)';
  const repetitionPenalty = num(o, 'repetitionPenalty', rRange) ?? d.repetitionPenalty;
  if (!(repetitionPenalty >= 1e-3 && repetitionPenalty <= 1e3)) throw bad('repetitionPenalty', rRange, repetitionPenalty);

  const wRange = 'an integer ≥ 0 or Infinity (all tokens)';
  const repetitionWindow = num(o, 'repetitionWindow', wRange) ?? d.repetitionWindow;
  if (!(repetitionWindow === Number.POSITIVE_INFINITY || (Number.isSafeInteger(repetitionWindow) && repetitionWindow >= 0))) {
    throw bad('repetitionWindow', wRange, repetitionWindow);
  }

  const sRange = `a safe integer (between ${Number.MIN_SAFE_INTEGER} and ${Number.MAX_SAFE_INTEGER})`;
  const seed = num(o, 'seed', sRange);
  if (seed !== undefined && !Number.isSafeInteger(seed)) throw bad('seed', sRange, seed);

  return { temperature, topK, topP, minP, repetitionPenalty, repetitionWindow, seed };
}

export { argmax };

// ---- numerics ---------------------------------------------------------------------------------------------------

/**
 * Fixed-point resolution: distances below the max are handled as t = 64 · (max − x) / T (top-p, exp) or
 * t = 64 · (max − x) (top-k). Histogram buckets are one unit of t wide (1/64 nat or logit); the last collects
 * everything 32 or more below the max.
 */
const S = 64;
const NB = 32 * S + 1;
const LAST = NB - 1;

/** The first bucket where the running sum of `amounts` reaches `target` (LAST if none), and the sum before it. */
function bucketReaching(amounts: Float64Array, target: number): { bucket: number; before: number } {
  let before = 0;
  for (let b = 0; b < NB; b++) {
    if (before + amounts[b] >= target) return { bucket: b, before };
    before += amounts[b];
  }
  return { bucket: LAST, before };
}
const T_UNDERFLOW = 745 * S; // e^−745 is below the smallest subnormal
const EXP_INT = Float64Array.from({ length: 746 }, (_, k) => Math.exp(-k));
const EXP_FRAC = Float64Array.from({ length: S }, (_, j) => Math.exp(-j / S));
/** Both tables, for the sampling kernel's copy of expNeg64 (kernels/sample.ts). */
export const EXP_TABLES = Float64Array.of(...EXP_INT, ...EXP_FRAC);

/** e^(−t/64) for t ≥ 0 (+Infinity allowed); relative error < 3e-14, about 3× faster than Math.exp. */
export function expNeg64(t: number): number {
  if (!(t < T_UNDERFLOW)) return 0;
  const i = t | 0;
  const r = (t - i) * (1 / S); // [0, 1/64): degree-5 Taylor is exact to ~2e-14
  return EXP_INT[i >> 6] * EXP_FRAC[i & 63] * (1 - r * (1 - r * (0.5 - r * (1 / 6 - r * (1 / 24 - r * (1 / 120))))));
}

/**
 * The near path's cut: tokens more than this many nats (after temperature) below the maximum are far — weight below
 * 1.2e-7 of the maximum's, so that their f32 mass (kernels/sample.ts) moves the total by < 2.5e-10 of itself at worst
 * for 32,000 tokens (~1e-12 typically): the kept set and the drawn token change only when the uniform lands that close
 * to a boundary. When more than a quarter of the vocabulary is near (a very flat distribution), the JS pass is faster.
 */
const NEAR_NATS = 16;
/** Beyond this 1/T the kernel's f32 arithmetic could overflow: such temperatures take the exact path. */
const NEAR_MAX_INV_T = 1e30;

/** The far mass of a split: its gaps and tail, summed. */
function farMass(gaps: Float64Array, n: number, tail: number): number {
  let f = tail;
  for (let j = 0; j < n; j++) f += gaps[j];
  return f;
}

/** Below this many candidates, top-p sorts them directly instead of building a histogram. */
const SORT_DIRECT = 256;
/** Up to this k, top-k uses a heap (one pass, rare inserts); above it, a histogram (two passes). */
const HEAP_MAX = 64;
/** Sort keys pack (logit order, id) into one exact double: needs ids < 2^21. */
const ID_SPACE = 2 ** 21;
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** max(x) for sampling: throws NonFiniteLogitsError on NaN, +Infinity, or all −Infinity. */
function samplableMax(x: Float32Array): number {
  let m = -Infinity;
  let nan = false;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (v > m) m = v;
    else if (v !== v) nan = true;
  }
  if (nan || !(m > -Infinity && m < Infinity)) throw nonFinite(x, nan ? x.findIndex((v) => v !== v) : x.indexOf(m));
  return m;
}

function nonFinite(x: Float32Array, i: number): NonFiniteLogitsError {
  const what = x[i] !== x[i] ? `logits[${i}] is NaN` : x[i] === Infinity ? `logits[${i}] is +Infinity` : 'every logit is −Infinity';
  return new NonFiniteLogitsError(`cannot sample the next token: ${what} (a numerical failure of the model or of the penalties)`);
}

export class Sampler {
  /** The validated options; `seed` is always the seed actually in use. */
  readonly options: NormalizedSamplingOptions & { readonly seed: number };
  readonly vocabSize: number;
  /** The seed in use (the one given, or the one drawn from crypto) — log it to reproduce a run. */
  readonly seed: number;

  private readonly rng: Xoshiro128StarStar;
  private readonly greedy: boolean;
  private readonly k: number; // effective top-k, 0 = off
  private readonly invT: number;
  private readonly work: Float32Array; // penalised copy of the logits
  private readonly stamp: Uint32Array; // repetition-penalty de-duplication
  private gen = 0;
  private readonly w: Float64Array; // unnormalised probabilities e^((x − max)/T), by token id
  private readonly a: Int32Array; // candidate lists (tails used as scratch)
  private readonly b: Int32Array;
  private readonly keys: Float64Array | null; // packed sort keys (null when vocab ≥ 2^21: comparator sort)
  private readonly mass = new Float64Array(NB);
  private cur: Float32Array; // logits being sorted (comparator fallback)
  private readonly byLogitDesc = (p: number, q: number): number => this.cur[q] - this.cur[p] || p - q;
  // result of filter(): candidates list[0..n) (null = every token), their total weight
  private list: Int32Array | null = null;
  private total = 0;
  /** filterNear() for plain temperature sampling: the draw walks the far gaps too. */
  private nearMode = false;
  /** Top-p draws on the near path whose nucleus needed the exact far mass (the bound left it open): tests, the workbench. */
  nearExact = 0;
  /** The weights filter() or filterNear() left: this.w, or the sampling kernel's. */
  private weights: Float64Array;

  constructor(opts: SamplingOptions, vocabSize: number) {
    if (!Number.isSafeInteger(vocabSize) || vocabSize < 1 || vocabSize > 0x7fffffff) {
      throw new InvalidOptionError(`vocabSize must be an integer in [1, 2^31), got ${String(vocabSize)}`, 'vocabSize');
    }
    const o = validateSamplingOptions(opts);
    this.seed = o.seed ?? randomSeed();
    this.options = Object.freeze({ ...o, seed: this.seed });
    this.vocabSize = vocabSize;
    this.rng = new Xoshiro128StarStar(this.seed);
    this.invT = o.temperature > 0 ? 1 / o.temperature : Number.POSITIVE_INFINITY;
    // A temperature so small that 64/T overflows is greedy in the limit (and (x − max)·64/T would give 0·∞ = NaN).
    this.greedy = o.temperature === 0 || o.topK === 1 || !Number.isFinite(S * this.invT);
    this.k = o.topK > 0 && o.topK < vocabSize ? o.topK : 0;
    const V = vocabSize;
    const filtered = !this.greedy && (this.k > 0 || o.topP < 1 || o.minP > 0);
    this.work = new Float32Array(o.repetitionPenalty !== 1 && o.repetitionWindow > 0 ? V : 0);
    this.stamp = new Uint32Array(this.work.length);
    this.w = new Float64Array(this.greedy ? 0 : V);
    this.weights = this.w;
    this.a = new Int32Array(filtered ? V : 0);
    this.b = new Int32Array(filtered && o.topP < 1 ? V : 0);
    this.keys = filtered && V <= ID_SPACE ? new Float64Array(V) : null;
    this.cur = this.work;
  }

  /**
   * Picks the next token. `logits` (length vocabSize) is not modified. `recentTokens` are the ids the repetition
   * penalty looks at (prompt + generated so far, as in HF); only the last `repetitionWindow` are used.
   * Throws RangeError on a wrong length or a token id outside the vocabulary (checked while the penalty is on), and
   * NonFiniteLogitsError (code NON_FINITE_LOGITS) when the penalised logits hold NaN, +Infinity, or nothing but
   * −Infinity (greedy too); greedy decoding is exactly `argmax` of the penalised logits and uses no randomness.
   */
  sample(logits: Float32Array, recentTokens?: ArrayLike<number>): number {
    const x = this.penalize(logits, recentTokens);
    if (this.greedy) {
      // argmax picks the first NaN, else a +Infinity, else (all −Infinity) index 0: any of them is not a token.
      // The kernel's SIMD argmax (same semantics) is ~1.4× the JS scan's speed, its copy of the logits included.
      const kern = samplingKernel();
      const i = kern !== undefined && kern.fits(x.length) ? kern.argmax(x) : argmax(x);
      if (!(x[i] > -Infinity && x[i] < Infinity)) throw nonFinite(x, i);
      return i;
    }
    const near = this.filterNear(x);
    if (near < 0) return this.draw(this.filter(x), this.rng.nextFloat());
    const u = this.rng.nextFloat();
    const id = this.drawNear(near, u);
    return id >= 0 ? id : this.draw(this.filter(x), u);
  }

  /**
   * This token's parameters for a backend that samples on its device (the rule of sample-rule.ts: the same candidate
   * set), with its uniform drawn from this sampler's generator exactly where sample() would draw it (none when
   * greedy). Undefined when the repetition penalty is on: it needs the token history applied to the logits, so that
   * token is sampled here, from logits read back.
   */
  deviceSample(): DeviceSample | undefined {
    if (this.work.length > 0) return undefined;
    if (this.greedy) return GREEDY_SAMPLE;
    const { topP, minP } = this.options;
    return { invTemperature: this.invT, topK: this.k, topP, minP, uniform: this.rng.nextFloat() };
  }

  /**
   * The renormalised distribution sample() would draw from for these inputs, most likely first (ties → lower id).
   * For tests, debugging and logprobs; allocates, and does not advance the generator.
   */
  distribution(logits: Float32Array, recentTokens?: ArrayLike<number>): { ids: Int32Array; probs: Float64Array } {
    const x = this.penalize(logits, recentTokens);
    if (this.greedy) return { ids: Int32Array.of(argmax(x)), probs: Float64Array.of(1) };
    const n = this.filter(x);
    const list = this.list;
    const pairs: Array<[number, number]> = [];
    for (let j = 0; j < n; j++) {
      const i = list === null ? j : list[j];
      if (this.w[i] > 0) pairs.push([i, this.w[i] / this.total]);
    }
    pairs.sort((p, q) => q[1] - p[1] || x[q[0]] - x[p[0]] || p[0] - q[0]);
    return { ids: Int32Array.from(pairs, (p) => p[0]), probs: Float64Array.from(pairs, (p) => p[1]) };
  }

  // ---- internals ----------------------------------------------------------------------------------------------

  private penalize(logits: Float32Array, recent: ArrayLike<number> | undefined): Float32Array {
    const V = this.vocabSize;
    if (logits.length !== V) throw new RangeError(`logits has length ${logits.length}, expected vocabSize ${V}`);
    const { repetitionPenalty: p, repetitionWindow: win } = this.options;
    if (this.work.length === 0 || recent === undefined || recent.length === 0) return logits;
    const len = recent.length;
    const start = win >= len ? 0 : len - win;
    const work = this.work;
    const stamp = this.stamp;
    work.set(logits);
    if (++this.gen === 0xffffffff) {
      stamp.fill(0);
      this.gen = 1;
    }
    const gen = this.gen;
    for (let j = start; j < len; j++) {
      const id = recent[j];
      if (!((id >>> 0) === id && id < V)) throw new RangeError(`recentTokens[${j}] = ${id} is not a token id in [0, ${V})`);
      if (stamp[id] !== gen) {
        stamp[id] = gen;
        const v = work[id];
        work[id] = v < 0 ? v * p : v / p;
      }
    }
    return work;
  }

  /**
   * Temperature, top-k, top-p, min-p. Leaves unnormalised weights in `w`, the candidates in `this.list[0..n)`
   * (null = every token) and their total weight in `this.total`; returns n.
   */
  private filter(x: Float32Array): number {
    const V = this.vocabSize;
    const w = (this.weights = this.w);
    const sP = S * this.invT;
    const { topP, minP } = this.options;

    const m = samplableMax(x);

    let list: Int32Array | null;
    let n: number;
    if (this.k > 0) {
      n = this.selectTopK(x, m, this.k);
      list = this.a;
      let z = 0;
      for (let j = 0; j < n; j++) {
        const i = list[j];
        const wi = expNeg64((m - x[i]) * sP);
        w[i] = wi;
        z += wi;
      }
      if (topP < 1) {
        n = this.nucleus(x, list, n, z, m, false);
        list = this.b;
      }
    } else if (topP < 1) {
      // one pass: weights, their sum, and the histogram nucleus() needs
      const mass = this.mass;
      mass.fill(0);
      let z = 0;
      for (let i = 0; i < V; i++) {
        const t = (m - x[i]) * sP;
        const wi = expNeg64(t);
        w[i] = wi;
        z += wi;
        mass[t < LAST ? t | 0 : LAST] += wi;
      }
      n = this.nucleus(x, null, V, z, m, true);
      list = this.b;
    } else if (minP > 0) {
      // w(max) = 1, so "p < minP · p_max" is "w < minP", i.e. t > −64·ln(minP): most tokens need no exp at all
      const tCut = -Math.log(minP) * S * (1 + 1e-9) + 1e-6;
      list = this.a;
      n = 0;
      let z = 0;
      for (let i = 0; i < V; i++) {
        const t = (m - x[i]) * sP;
        if (t <= tCut) {
          const wi = expNeg64(t);
          if (wi >= minP) {
            w[i] = wi;
            list[n++] = i;
            z += wi;
          }
        }
      }
      this.list = list;
      this.total = z;
      return n;
    } else {
      let z = 0;
      for (let i = 0; i < V; i++) {
        const wi = expNeg64((m - x[i]) * sP);
        w[i] = wi;
        z += wi;
      }
      this.list = null;
      this.total = z;
      return V;
    }

    return this.minPAfter(list, n);
  }

  /**
   * filter() over the near tokens only (the SIMD split, kernels/sample.ts: every token within NEAR_NATS of the
   * maximum weighed exactly as filter() does, and the far tokens' mass between them), with the same result and the
   * same draw order as over the whole vocabulary. Returns n as filter() does, or -1 where it does not apply: no
   * kernel, top-k (whose candidate order is its heap's), non-finite logits (filter() reports them), a flat
   * distribution (over a quarter of the tokens near), a min-p threshold or a nucleus that reaches beyond the near
   * tokens. Plain temperature sampling leaves the walk to drawNear().
   */
  private filterNear(x: Float32Array): number {
    if (this.k > 0) return -1;
    const kern = samplingKernel();
    const { topP, minP } = this.options;
    if (kern === undefined || !kern.fits(this.vocabSize) || !(this.invT < NEAR_MAX_INV_T)) return -1;
    if (minP > 0 && -Math.log(minP) > NEAR_NATS - 1) return -1;
    const sP = S * this.invT;
    // Min-p alone never reads the far mass; top-p first tries with an upper bound of it (below); plain temperature
    // sampling walks the far gaps, so it needs them exactly.
    const far = topP < 1 ? 'bound' : minP > 0 ? 'none' : 'exact';
    let nc = kern.split(x, this.invT, NEAR_NATS, this.vocabSize >> 2, sP, topP < 1, EXP_TABLES, far);
    if (nc < 0) return -1;
    const ids = kern.ids;
    const w = (this.weights = kern.w);
    this.nearMode = topP === 1 && minP === 0;
    if (topP < 1) {
      // nucleus() over the whole vocabulary, histogram path: the far tokens all lie in buckets after the edge one. Its
      // target is topP·(near + far) with far in [0, bound]; the kept set only grows with the target, so where both
      // ends keep the same set, so does the exact far mass (f64 rounding is monotonic too), and no exact pass is needed.
      let r = this.nucleusNear(x, sP, topP * kern.near, topP * (kern.near + kern.tail));
      if (r === -2) {
        nc = kern.split(x, this.invT, NEAR_NATS, this.vocabSize >> 2, sP, true, EXP_TABLES, 'exact');
        if (nc < 0) return -1;
        this.nearExact++;
        const target = topP * (kern.near + farMass(kern.gaps, nc, kern.tail));
        r = this.nucleusNear(x, sP, target, target);
      }
      return r < 0 ? -1 : this.minPAfter(this.b, r);
    }
    if (minP > 0) {
      // the min-p-only loop of filter(), over the near tokens (a superset of those within its threshold)
      const tCut = -Math.log(minP) * S * (1 + 1e-9) + 1e-6;
      const m = kern.max;
      const list = this.a;
      let n = 0;
      let z = 0;
      for (let j = 0; j < nc; j++) {
        const i = ids[j];
        if ((m - x[i]) * sP <= tCut && w[i] >= minP) {
          list[n++] = i;
          z += w[i];
        }
      }
      this.list = list;
      this.total = z;
      return n;
    }
    this.total = kern.near + farMass(kern.gaps, nc, kern.tail);
    return nc;
  }

  /**
   * The nucleus of the last split's near tokens for a target known to lie in [lo, hi] (lo = hi: known exactly): the
   * kept ids into this.b[0..r), the order nucleus() leaves them in. Returns r; -2 when lo and hi keep different sets
   * (the caller needs the exact target), -1 when the nucleus reaches too close to the far tokens.
   */
  private nucleusNear(x: Float32Array, sP: number, lo: number, hi: number): number {
    const kern = samplingKernel()!;
    const w = kern.w;
    const atLo = bucketReaching(kern.mass, lo);
    const B = atLo.bucket;
    if (bucketReaching(kern.mass, hi).bucket !== B) return -2;
    if (B >= NEAR_NATS * S - 2) return -1; // the nucleus must end well inside the near tokens
    const out = this.b;
    let r = kern.partition(sP, B);
    out.set(kern.keep.subarray(0, r));
    const tail = out.length - kern.edgeCount;
    out.set(kern.edge.subarray(0, kern.edgeCount), tail);
    this.sortDesc(x, out, tail, out.length);
    // The edge bucket's tokens, largest first, until the mass before them reaches the target: at both ends.
    let before = atLo.before;
    let beforeHi = before;
    let j = tail;
    for (; j < out.length && before < lo; j++) {
      const i = out[j];
      out[r++] = i;
      before += w[i];
      beforeHi += w[i];
    }
    if (j < out.length && beforeHi < hi) return -2; // hi would keep at least one more
    return r;
  }

  /**
   * Draw after filterNear(): as draw(), and for plain temperature sampling the kernel's walk through the near
   * weights and far gaps in id order, so that u picks the same token as over the whole vocabulary. Returns -1 when u
   * lands in far mass (at most 4e-3 of the total): the caller then draws over the whole vocabulary with the same u.
   */
  private drawNear(n: number, u: number): number {
    return this.nearMode ? samplingKernel()!.walk(u * this.total) : this.draw(n, u);
  }

  /** min-p after top-k / top-p on list[0..n): a threshold on the same weights (max weight is 1 and always survives). */
  private minPAfter(list: Int32Array, n: number): number {
    const w = this.weights;
    const minP = this.options.minP;
    let z = 0;
    if (minP > 0) {
      let r = 0;
      for (let j = 0; j < n; j++) {
        const i = list[j];
        if (w[i] >= minP) {
          list[r++] = i;
          z += w[i];
        }
      }
      n = r;
    } else {
      for (let j = 0; j < n; j++) z += w[list[j]];
    }
    this.list = list;
    this.total = z;
    return n;
  }

  /** The k largest logits (ties → lower id) into a[0..k), unordered. */
  private selectTopK(x: Float32Array, m: number, k: number): number {
    const V = this.vocabSize;
    const h = this.a;
    if (k <= HEAP_MAX) {
      // min-heap of the k best so far, worst at h[0]; "worse" = lower logit, or equal logit and higher id
      for (let i = 0; i < k; i++) h[i] = i;
      for (let p = (k >> 1) - 1; p >= 0; p--) this.siftDown(x, k, p);
      let root = x[h[0]];
      for (let i = k; i < V; i++) {
        // i exceeds every id in the heap, so on equal logits it ranks lower: strict > is the whole test
        if (x[i] > root) {
          h[0] = i;
          this.siftDown(x, k, 0);
          root = x[h[0]];
        }
      }
      return k;
    }
    // histogram of t = 64·(max − x); keep the buckets above the one where the count reaches k, sort that one
    const cnt = this.mass;
    cnt.fill(0);
    for (let i = 0; i < V; i++) {
      const t = (m - x[i]) * S;
      cnt[t < LAST ? t | 0 : LAST]++;
    }
    const { bucket: B } = bucketReaching(cnt, k);
    let r = 0;
    let tail = V;
    for (let i = 0; i < V; i++) {
      const t = (m - x[i]) * S;
      const b = t < LAST ? t | 0 : LAST;
      h[r] = i; // branch-free keep (b < B is unpredictable); r < tail always holds, so the slot is free
      r += (b - B) >>> 31;
      if (b === B) h[--tail] = i;
    }
    this.sortDesc(x, h, tail, V);
    for (let j = tail; r < k; j++) h[r++] = h[j];
    return k;
  }

  private siftDown(x: Float32Array, k: number, pos: number): void {
    const h = this.a;
    const item = h[pos];
    const xi = x[item];
    for (;;) {
      let c = 2 * pos + 1;
      if (c >= k) break;
      let hc = h[c];
      if (c + 1 < k) {
        const hd = h[c + 1];
        if (x[hd] < x[hc] || (x[hd] === x[hc] && hd > hc)) {
          c++;
          hc = hd;
        }
      }
      // stop unless the child is worse than the item
      if (!(x[hc] < xi || (x[hc] === xi && hc > item))) break;
      h[pos] = hc;
      pos = c;
    }
    h[pos] = item;
  }

  /**
   * Nucleus of list[0..n) (null = every token) whose weights sum to z: writes the kept ids to b[0..r), returns r.
   * A token is kept iff the mass ranked before it is < topP · z. With `massReady`, this.mass already holds the
   * histogram of t = 64·(max − x)/T over the list. `histogram` takes the histogram path even for a short list (the
   * near path: the order it leaves the kept ids in is the draw order, and must be the one over the whole vocabulary).
   */
  private nucleus(x: Float32Array, list: Int32Array | null, n: number, z: number, m: number, massReady: boolean, histogram = false): number {
    const w = this.w;
    const out = this.b;
    const target = this.options.topP * z;

    if (n <= SORT_DIRECT && !histogram) {
      for (let j = 0; j < n; j++) out[j] = list === null ? j : list[j];
      this.sortDesc(x, out, 0, n);
      let before = 0;
      let r = 0;
      while (r < n && before < target) before += w[out[r++]];
      return r;
    }

    const sP = S * this.invT;
    const mass = this.mass;
    if (!massReady) {
      mass.fill(0);
      for (let j = 0; j < n; j++) {
        const i = list === null ? j : list[j];
        const t = (m - x[i]) * sP;
        mass[t < LAST ? t | 0 : LAST] += w[i];
      }
    }
    // B = first bucket where the cumulative mass reaches the target: all above it are kept, all below dropped
    let { bucket: B, before } = bucketReaching(mass, target);
    // Split: buckets < B → out[0..r), bucket B → out[tail..). The keep test is branch-free (b < B is
    // unpredictable); r < tail always holds, so writing out[r] unconditionally only touches a free slot.
    let r = 0;
    let tail = out.length;
    if (list === null) {
      for (let i = 0; i < n; i++) {
        const t = (m - x[i]) * sP;
        const b = t < LAST ? t | 0 : LAST;
        out[r] = i;
        r += (b - B) >>> 31;
        if (b === B) out[--tail] = i;
      }
    } else {
      for (let j = 0; j < n; j++) {
        const i = list[j];
        const t = (m - x[i]) * sP;
        const b = t < LAST ? t | 0 : LAST;
        out[r] = i;
        r += (b - B) >>> 31;
        if (b === B) out[--tail] = i;
      }
    }
    this.sortDesc(x, out, tail, out.length);
    for (let j = tail; j < out.length && before < target; j++) {
      const i = out[j];
      out[r++] = i;
      before += w[i];
    }
    return r;
  }

  /** Sorts ids[from..to) by logit descending, equal logits by id ascending. */
  private sortDesc(x: Float32Array, ids: Int32Array, from: number, to: number): void {
    const n = to - from;
    if (n < 2) return;
    const keys = this.keys;
    if (keys === null) {
      this.cur = x;
      ids.subarray(from, to).sort(this.byLogitDesc);
      return;
    }
    // key = (descending order of the float's bits) · 2^21 + id: an exact integer < 2^53, sorted natively
    for (let j = 0; j < n; j++) {
      const i = ids[from + j];
      f32[0] = x[i] + 0; // −0 → +0
      const u = u32[0];
      const asc = u >= 0x80000000 ? ~u >>> 0 : u + 0x80000000;
      keys[j] = (0xffffffff - asc) * ID_SPACE + i;
    }
    const sorted = keys.subarray(0, n).sort();
    for (let j = 0; j < n; j++) ids[from + j] = sorted[j] % ID_SPACE;
  }

  /** Draw from filter()'s candidates with the uniform u: the first kept id (in list order) whose cumulative weight exceeds u · total. */
  private draw(n: number, u: number): number {
    const w = this.weights;
    const list = this.list;
    const target = u * this.total;
    let acc = 0;
    let last = -1;
    if (list === null) {
      for (let i = 0; i < n; i++) {
        const wi = w[i];
        if (wi > 0) {
          acc += wi;
          last = i;
          if (target < acc) return i;
        }
      }
    } else {
      for (let j = 0; j < n; j++) {
        const i = list[j];
        const wi = w[i];
        if (wi > 0) {
          acc += wi;
          last = i;
          if (target < acc) return i;
        }
      }
    }
    return last; // only reachable through rounding
  }
}
