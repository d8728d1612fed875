/** Any failure of the engine, in plain words for the page: what kind (the title) and what happened, what to do. */
import { FastgenError } from '../errors.js';
import type { PlainError } from './protocol.js';

const TITLES: Partial<Record<string, string>> = {
  GPU_UNAVAILABLE: 'No WebGPU',
  NOT_A_MODEL: 'Not a model',
  CORRUPT_MODEL: 'Not a model (damaged or incomplete)',
  UNSUPPORTED_MODEL: 'A model this engine does not support',
  CONFIG_ERROR: 'Not a model (bad config.json)',
  CHECKSUM_MISMATCH: 'Damaged model file',
  MODEL_NOT_FOUND: 'Model not found',
  TOKENIZER_ERROR: 'Tokenizer problem',
  CONTEXT_OVERFLOW: 'Prompt too long',
  INVALID_OPTION: 'Invalid setting',
  KV_POOL_EXHAUSTED: 'Out of memory',
};

const OUT_OF_MEMORY = /out of memory|memory exhausted|allocat|Array buffer|typed array length|Memory\.grow|maximum memory/i;

/** Any failure, in plain words for the page. */
export function plainError(err: unknown): PlainError {
  const message = err instanceof Error ? err.message : String(err);
  if (OUT_OF_MEMORY.test(message) && (err instanceof RangeError || /out of memory/i.test(message))) {
    return {
      code: 'OUT_OF_MEMORY',
      title: 'Out of memory',
      message: `the model does not fit in the memory this tab may use (${message}). Try a smaller model, the other backend, or close other tabs.`,
    };
  }
  if (err instanceof FastgenError) return { code: err.code, title: TITLES[err.code] ?? 'Error', message };
  return { code: 'INTERNAL', title: 'Internal error', message };
}
