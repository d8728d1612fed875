/**
 * OpenAI's logprobs objects for the generated tokens' log-probabilities (src/generate/logprobs.ts computes them, with
 * the frequency / presence penalties, inside each request's own sampling step).
 *
 *   penalties (OpenAI's definition, over the tokens generated so far, not the prompt):
 *     logit[t] −= count[t] · frequency_penalty + (count[t] > 0) · presence_penalty
 *   logprobs: log_softmax of the model's raw logits (before penalties and temperature, as vLLM reports by default).
 */
import type { Tokenizer } from '../tokenizer/types.js';

export { applyPenalties, logSumExp, tokenLogprob, type TokenLogprob, type TopLogprob } from '../generate/logprobs.js';
import type { TokenLogprob } from '../generate/logprobs.js';

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
