/**
 * A streaming detokenizer that works for any tokenizer with a whole-sequence `decode`.
 *
 * Tokens do not map to text one by one: a multi-byte UTF-8 character can span several byte tokens, SentencePiece
 * decoders strip a leading space at the start of a sequence, and so on. So instead of decoding each id on its own, we
 * keep a small window of ids and emit the difference between two decodes of that window (the scheme vLLM and
 * transformers' TextStreamer use):
 *
 *   prefixText = decode(ids[prefixOffset .. readOffset])   // already emitted; serves as context
 *   newText    = decode(ids[prefixOffset .. end])
 *   emit newText.slice(prefixText.length) unless newText ends in U+FFFD (an incomplete UTF-8 sequence: hold it back)
 *
 * Concatenating everything `push` and `flush` return gives `decode(all ids)` for every tokenizer whose decode is
 * "prefix-stable" once a character boundary is reached (byte-level BPE, SentencePiece with byte fallback, llama2.c).
 */
import type { StreamDecoder } from './types.js';

/** How many already-emitted ids to keep as decoding context (like vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET). */
const CONTEXT_IDS = 5;

export interface StreamDecoderOptions {
  /**
   * Ids that precede the stream (e.g. the prompt): used only as decoding context (so that, say, a llama2.c piece right
   * after BOS loses its leading space exactly as in a whole-sequence decode); their text is never emitted.
   */
  context?: readonly number[];
}

export function createStreamDecoder(
  decode: (ids: readonly number[]) => string,
  opts: StreamDecoderOptions = {},
): StreamDecoder {
  const ctx = opts.context ?? [];
  let ids: number[] = ctx.slice(Math.max(0, ctx.length - CONTEXT_IDS));
  let prefixOffset = 0;
  let readOffset = ids.length;

  const emit = (force: boolean): string => {
    if (readOffset >= ids.length) return '';
    const prefixText = prefixOffset < readOffset ? decode(ids.slice(prefixOffset, readOffset)) : '';
    const newText = decode(ids.slice(prefixOffset));
    if (!force && (newText.length <= prefixText.length || newText.endsWith('\uFFFD'))) return '';
    // If a decoder rewrote already-emitted text (e.g. HF clean-up of spaces), what was emitted stays emitted.
    const out = newText.slice(prefixText.length);
    // Advance: what was read becomes context; keep the window (and the id array) small.
    prefixOffset = readOffset;
    readOffset = ids.length;
    if (prefixOffset > 4 * CONTEXT_IDS + 64) {
      const drop = prefixOffset;
      ids = ids.slice(drop);
      prefixOffset -= drop;
      readOffset -= drop;
    }
    return out;
  };

  return {
    push(id: number): string {
      ids.push(id);
      return emit(false);
    },
    flush(): string {
      return emit(true);
    },
  };
}

