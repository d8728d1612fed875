/** `full`: every head keeps every token (the reference every other policy is measured against). */
import { FULL } from '../head-policy.js';
import type { CachePolicy, SequencePolicy } from './types.js';

const keepAll: SequencePolicy = {
  head: () => FULL,
  needs: () => ({ scores: [], stats: null }),
  afterAttention: () => {},
  evicts: false,
  fork: () => keepAll,
  decideMs: 0,
};

export const full: CachePolicy = {
  name: 'full',
  summary: 'every head keeps every token (default)',
  options: [],
  adaptive: false,
  baseline: false,
  start: () => keepAll,
  keptTokens: (_o, length) => length,
  label: () => 'full',
};
