/**
 * Sampling from one given uniform draw: the rule a backend that samples on its device (webgpu) implements, written as
 * the math, in f64. It is the GPU kernel's reference (dev/kernels/checks.ts) and defines what a seed means there.
 *
 * Given logits x[V], the sampler's options and a uniform u ∈ [0, 1):
 *   rank   tokens by logit descending, equal logits by id ascending
 *   w_i    = exp((x_i − max x) / T)
 *   K      = the first topK tokens of the ranking (every token when topK is 0 or ≥ V)
 *   P      = i ∈ K kept iff Σ w_j over the j ∈ K ranked before i is < topP · Σ_{j ∈ K} w_j   (the nucleus)
 *   M      = i ∈ P with w_i ≥ minP                                                            (min-p: w_max = 1)
 *   token  = the smallest id i ∈ M with u · Σ_{j ∈ M} w_j < Σ_{j ∈ M, j ≤ i} w_j               (walk M in id order)
 * Greedy (temperature 0, topK 1, or a temperature so small that 64/T overflows): the first index of the largest logit;
 * u is not used. Logits holding NaN or +Infinity, or nothing but −Infinity, cannot be sampled (NonFiniteLogitsError).
 *
 * M is exactly the CPU Sampler's candidate set (sampler.ts), so the distribution is the same on every backend; and a
 * request draws its uniforms from the same seeded generator in the same order (one per non-greedy token). What differs
 * is the walk: the CPU Sampler walks M in its own internal order, this rule in id order — so on the webgpu backend a
 * seed reproduces that backend's run exactly, but need not pick the CPU backends' token for the same seed.
 */
import { NonFiniteLogitsError } from '../errors.js';

/** What a device sampler needs per sequence: the request's options and this token's uniform. */
export interface DeviceSample {
  /** 1 / temperature; 0 for greedy. */
  invTemperature: number;
  /** 0 = off; 1 = greedy. */
  topK: number;
  topP: number;
  minP: number;
  /** The uniform draw in [0, 1) (rounded to f32 on the device). */
  uniform: number;
}

/** The device parameters of greedy decoding. */
export const GREEDY_SAMPLE: Readonly<DeviceSample> = Object.freeze({ invTemperature: 0, topK: 1, topP: 1, minP: 0, uniform: 0 });

/**
 * The token the rule picks, and how far the draw was from changing it: the smallest relative distance of u·Z from a
 * cumulative boundary, of the nucleus target from the ranked cumulative masses, and of a weight from minP (a device
 * that sums in f32 and in another order agrees with this reference wherever that margin is well above f32 rounding).
 */
export function sampleWithUniform(logits: Float32Array, s: DeviceSample): { token: number; margin: number } {
  const V = logits.length;
  let max = -Infinity;
  for (let i = 0; i < V; i++) {
    const v = logits[i];
    if (v !== v) throw new NonFiniteLogitsError(`cannot sample the next token: logits[${i}] is NaN`);
    if (v === Infinity) throw new NonFiniteLogitsError(`cannot sample the next token: logits[${i}] is +Infinity`);
    if (v > max) max = v;
  }
  if (max === -Infinity) throw new NonFiniteLogitsError('cannot sample the next token: every logit is −Infinity');
  if (s.topK === 1 || s.invTemperature === 0) return { token: logits.indexOf(max), margin: Infinity };

  const rank = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b] - logits[a] || a - b);
  const w = Array.from(logits, (x) => Math.exp((x - max) * s.invTemperature));
  let margin = Infinity;
  const k = s.topK > 0 && s.topK < V ? s.topK : V;
  const K = rank.slice(0, k);
  let P = K;
  if (s.topP < 1) {
    const z = K.reduce((a, i) => a + w[i], 0);
    const target = s.topP * z;
    P = [];
    let before = 0;
    for (const i of K) {
      margin = Math.min(margin, Math.abs(before - target) / z);
      if (!(before < target)) break;
      P.push(i);
      before += w[i];
    }
  }
  const M = P.filter((i) => {
    if (s.minP > 0) margin = Math.min(margin, Math.abs(w[i] - s.minP));
    return w[i] >= s.minP;
  }).sort((a, b) => a - b);
  const z = M.reduce((a, i) => a + w[i], 0);
  const target = Math.fround(s.uniform) * z;
  let acc = 0;
  let token = -1;
  for (const i of M) {
    if (w[i] === 0) continue;
    acc += w[i];
    margin = Math.min(margin, Math.abs(acc - target) / z);
    if (token < 0 && target < acc) token = i;
  }
  if (token < 0) token = [...M].reverse().find((i) => w[i] > 0)!;
  return { token, margin };
}
