/**
 * Quality metrics for `fastgen eval`, all plain functions over numbers so that they can be checked by hand:
 *
 *   - log-softmax, perplexity, KL(full ‖ compressed) of next-token distributions (teacher-forced);
 *   - greedy agreement: matched prefix length and ROUGE-L (longest common subsequence over token ids);
 *   - the likelihood judge: compare the mean log-probability per token that the full-cache model gives two
 *     continuations; the candidate wins, ties (identical outputs, or exactly equal scores) or loses; win rate counts a
 *     tie as ½, so 50 % means "indistinguishable" (the paper's scale);
 *   - confidence intervals for win rates (Wilson score interval; ties count as half a success).
 *
 * Everything accumulates in float64.
 */

/** log softmax(logits) at temperature 1, in float64. */
export function logSoftmax(logits: ArrayLike<number>, out: Float64Array = new Float64Array(logits.length)): Float64Array {
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(logits[i] - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < n; i++) out[i] = logits[i] - lse;
  return out;
}

/** log p(id) under softmax(logits): one token's log-probability without materialising the distribution. */
export function logProbOf(logits: ArrayLike<number>, id: number): number {
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(logits[i] - max);
  return logits[id] - max - Math.log(sum);
}

/**
 * KL(P ‖ Q) = Σ_i p_i (log p_i − log q_i) from log-probabilities (natural log, nats). P is the reference (full cache),
 * Q the approximation (compressed cache). Terms with p_i = 0 contribute 0; a q_i = 0 where p_i > 0 gives Infinity.
 */
export function klDivergence(logP: ArrayLike<number>, logQ: ArrayLike<number>): number {
  if (logP.length !== logQ.length) throw new RangeError(`KL: distributions of different sizes (${logP.length} vs ${logQ.length})`);
  let kl = 0;
  for (let i = 0; i < logP.length; i++) {
    const lp = logP[i];
    if (lp === -Infinity) continue;
    kl += Math.exp(lp) * (lp - logQ[i]);
  }
  // Rounding can leave a tiny negative value for identical distributions.
  return kl < 0 ? 0 : kl;
}

/** Perplexity from per-token negative log-likelihoods (nats): exp(mean NLL). 1 for an empty list. */
export function perplexity(nlls: readonly number[]): number {
  if (nlls.length === 0) return 1;
  return Math.exp(nlls.reduce((a, b) => a + b, 0) / nlls.length);
}

/** Number of leading positions where a and b agree. */
export function matchedPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** Length of the longest common subsequence (O(|a|·|b|) time, O(|b|) memory). */
export function lcsLength(a: readonly number[], b: readonly number[]): number {
  if (a.length === 0 || b.length === 0) return 0;
  let prev = new Int32Array(b.length + 1);
  let cur = new Int32Array(b.length + 1);
  for (let i = 1; i <= a.length; i++) {
    const ai = a[i - 1];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = ai === b[j - 1] ? prev[j - 1] + 1 : cur[j - 1] > prev[j] ? cur[j - 1] : prev[j];
    }
    [prev, cur] = [cur, prev];
  }
  return prev[b.length];
}

export interface RougeL {
  precision: number;
  recall: number;
  /** F-measure with β = 1. */
  f1: number;
}

/**
 * ROUGE-L of a candidate against a reference (both token sequences): LCS / |candidate|, LCS / |reference| and their
 * harmonic mean. Two empty sequences agree perfectly (1); one empty sequence against a non-empty one scores 0.
 */
export function rougeL(reference: readonly number[], candidate: readonly number[]): RougeL {
  if (reference.length === 0 && candidate.length === 0) return { precision: 1, recall: 1, f1: 1 };
  const lcs = lcsLength(reference, candidate);
  const precision = candidate.length ? lcs / candidate.length : 0;
  const recall = reference.length ? lcs / reference.length : 0;
  const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
  return { precision, recall, f1 };
}

export type JudgeOutcome = 'win' | 'tie' | 'loss';

/**
 * The likelihood judge: the candidate (compressed cache) against the baseline (full cache) sampled with the same
 * seed. Identical outputs tie; otherwise the higher mean log-prob per token (under the full-cache model) wins, and
 * exactly equal scores tie.
 */
export function judge(candidate: { tokens: readonly number[]; score: number }, baseline: { tokens: readonly number[]; score: number }): JudgeOutcome {
  if (sameTokens(candidate.tokens, baseline.tokens)) return 'tie';
  if (candidate.score > baseline.score) return 'win';
  if (candidate.score < baseline.score) return 'loss';
  return 'tie';
}

export function sameTokens(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && matchedPrefix(a, b) === a.length;
}

export interface WinRate {
  wins: number;
  ties: number;
  losses: number;
  n: number;
  /** (wins + ties / 2) / n; NaN when n = 0. */
  rate: number;
  /** Wilson score interval at 95 % (ties as half a success). */
  lo95: number;
  hi95: number;
}

export function winRate(outcomes: readonly JudgeOutcome[]): WinRate {
  let wins = 0;
  let ties = 0;
  let losses = 0;
  for (const o of outcomes) {
    if (o === 'win') wins++;
    else if (o === 'tie') ties++;
    else losses++;
  }
  const n = outcomes.length;
  const rate = n ? (wins + ties / 2) / n : NaN;
  const [lo95, hi95] = wilsonInterval(rate, n, 1.96);
  return { wins, ties, losses, n, rate, lo95, hi95 };
}

/** Wilson score interval for a proportion p̂ observed over n trials, at normal quantile z. [NaN, NaN] when n = 0. */
export function wilsonInterval(p: number, n: number, z: number): [number, number] {
  if (!(n > 0) || !Number.isFinite(p)) return [NaN, NaN];
  const z2 = z * z;
  const denom = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / denom;
  const half = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / denom;
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

/** Arithmetic mean; NaN for an empty list. */
export function mean(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

/** The q-quantile (0..1) by linear interpolation between order statistics; NaN for an empty list. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = xs.slice().sort((a, b) => a - b);
  const pos = (s.length - 1) * Math.min(1, Math.max(0, q));
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}
