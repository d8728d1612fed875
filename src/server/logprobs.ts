/**
 * OpenAI's per-request logits extras that the engine's sampler does not have: frequency / presence penalties and
 * log-probabilities of the generated tokens (with the most likely alternatives).
 *
 *   penalties (OpenAI's definition, over the tokens generated so far, not the prompt):
 *     logit[t] −= count[t] · frequency_penalty + (count[t] > 0) · presence_penalty
 *   logprobs: log_softmax of the model's raw logits (before penalties and temperature, as vLLM reports by default).
 */
import type { Tokenizer } from '../tokenizer/types.js';

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

/** A token's text as OpenAI lists it (special tokens by their name), and its UTF-8 bytes. */
export function tokenText(tokenizer: Tokenizer, id: number): { token: string; bytes: number[] } {
  const token = tokenizer.decode([id], { skipSpecial: false });
  return { token, bytes: [...Buffer.from(token, 'utf8')] };
}

/** The completions endpoint's `logprobs` object. */
export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[] | null;
  text_offset: number[];
}

/** The chat endpoint's `logprobs` object. */
export interface ChatLogprobs {
  content: { token: string; logprob: number; bytes: number[]; top_logprobs: { token: string; logprob: number; bytes: number[] }[] }[];
}

export function completionLogprobs(tokenizer: Tokenizer, entries: readonly TokenLogprob[], top: number, offset0 = 0): CompletionLogprobs {
  const out: CompletionLogprobs = { tokens: [], token_logprobs: [], top_logprobs: top > 0 ? [] : null, text_offset: [] };
  let offset = offset0;
  for (const e of entries) {
    const { token } = tokenText(tokenizer, e.id);
    out.tokens.push(token);
    out.token_logprobs.push(e.logprob);
    out.text_offset.push(offset);
    offset += token.length;
    if (out.top_logprobs) {
      const alt: Record<string, number> = {};
      for (const t of e.top) {
        const s = tokenText(tokenizer, t.id).token;
        if (!Object.hasOwn(alt, s)) alt[s] = t.logprob;
      }
      out.top_logprobs.push(alt);
    }
  }
  return out;
}

export function chatLogprobs(tokenizer: Tokenizer, entries: readonly TokenLogprob[]): ChatLogprobs {
  return {
    content: entries.map((e) => ({
      ...tokenText(tokenizer, e.id),
      logprob: e.logprob,
      top_logprobs: e.top.map((t) => ({ ...tokenText(tokenizer, t.id), logprob: t.logprob })),
    })),
  };
}
