/**
 * OpenAI's per-request logits extras, applied by a request's own sampling step: frequency / presence penalties and
 * log-probabilities of the generated tokens (with the most likely alternatives).
 *
 *   penalties (OpenAI's definition, over the tokens generated so far, not the prompt):
 *     logit[t] −= count[t] · frequency_penalty + (count[t] > 0) · presence_penalty
 *   logprobs: log_softmax of the model's raw logits (before penalties and temperature, as vLLM reports by default).
 */

/** Apply the penalties for `generated` to `out` (a copy of the logits). */
export function applyPenalties(out: Float32Array, generated: readonly number[], frequency: number, presence: number): void {
  const counts = new Map<number, number>();
  for (const t of generated) counts.set(t, (counts.get(t) ?? 0) + 1);
  for (const [t, c] of counts) out[t] -= c * frequency + presence;
}

export interface TopLogprob {
  id: number;
  logprob: number;
}

/** One generated token's log-probability and the `top` most likely tokens at its position (most likely first). */
export interface TokenLogprob extends TopLogprob {
  top: TopLogprob[];
}

/** log Σ exp(x), stable; −Infinity for an all −Infinity row. */
export function logSumExp(x: Float32Array): number {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i] > m) m = x[i];
  if (!Number.isFinite(m)) return m;
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp(x[i] - m);
  return m + Math.log(s);
}

/** The log-probability of `id` and the `top` most likely ids (ties → lower id) under softmax(logits). */
export function tokenLogprob(logits: Float32Array, id: number, top: number, lse = logSumExp(logits)): TokenLogprob {
  const best: number[] = [];
  if (top > 0) {
    // A sorted insertion list of at most `top` ids (top ≤ 20): one pass, rare inserts.
    for (let i = 0; i < logits.length; i++) {
      const v = logits[i];
      if (best.length === top && !(v > logits[best[top - 1]])) continue;
      let j = Math.min(best.length, top - 1);
      while (j > 0 && v > logits[best[j - 1]]) j--;
      best.splice(j, 0, i);
      if (best.length > top) best.pop();
    }
  }
  return { id, logprob: logits[id] - lse, top: best.map((t) => ({ id: t, logprob: logits[t] - lse })) };
}
