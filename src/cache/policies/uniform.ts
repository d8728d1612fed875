/**
 * The uniform baselines: every head gets the same HeadPolicy, sized by `ratio` (a fraction of the current length) or
 * `budget` (tokens per head, taking precedence).
 *   local           the most recent tokens
 *   frequent        heavy hitters by cumulative attention
 *   local+frequent  half each (H2O)
 *   sink+local      the first `sinkTokens` positions plus a recent window (StreamingLLM); the budget includes the sinks
 */
import { maxKept, type Amount, type HeadPolicy } from '../head-policy.js';
import { assignedHeads } from './assigned.js';
import type { CachePolicy, OptionSpec, PolicyOptions } from './types.js';

const SIZE: OptionSpec[] = [
  { key: 'ratio', kind: 'fraction', default: 0.5, help: 'fraction of the current sequence each head keeps (snapkv: of the prompt)' },
  { key: 'budget', kind: 'count', help: 'tokens each head keeps, instead of a ratio (snapkv: of the prompt)' },
];
const SINKS: OptionSpec = { key: 'sinkTokens', kind: 'count0', default: 4, help: 'sink+local: first positions always kept' };

interface Size {
  ratio: number;
  budget?: number;
}

/** A uniform policy: the same head policy for every head and every step. */
function uniform(name: string, summary: string, head: (o: Size & PolicyOptions) => HeadPolicy, extra: OptionSpec[] = []): CachePolicy {
  const options = [...SIZE, ...extra];
  return {
    name,
    summary,
    options,
    adaptive: false,
    baseline: true,
    start: (o, shape) => {
      const policy = head(o as Size & PolicyOptions);
      return assignedHeads(shape, () => policy);
    },
    keptTokens: (o, length) => maxKept(head(o as Size & PolicyOptions), length),
    matchMemory: (fraction) => ({ ratio: clampRatio(fraction) }),
    label: (o) => (o.budget !== undefined ? `${name} B=${o.budget}` : `${name} r=${o.ratio}`),
  };
}

/** A ratio of 0 is not a cache. */
const clampRatio = (r: number) => Math.min(1, Math.max(r, 1e-6));

const amount = (o: Size): Amount => (o.budget !== undefined ? { tokens: o.budget } : { ratio: o.ratio });
const half = (o: Size): Amount => (o.budget !== undefined ? { tokens: Math.max(1, Math.floor(o.budget / 2)) } : { ratio: o.ratio / 2 });

export const local = uniform('local', 'the most recent tokens', (o) => ({ name: 'local', window: amount(o) }));

export const frequent = uniform('frequent', 'heavy hitters by cumulative attention', (o) => ({ name: 'frequent', heavy: amount(o) }));

export const localFrequent = uniform('local+frequent', 'half recent tokens, half heavy hitters (H2O-style)', (o) => ({
  name: 'local+frequent',
  window: half(o),
  heavy: half(o),
}));

export const sinkLocal: CachePolicy = {
  ...uniform(
    'sink+local',
    'the first tokens plus a recent window (StreamingLLM-style)',
    (o) => {
      const sinks = o.sinkTokens as number;
      return { name: 'sink+local', sinks, window: o.budget !== undefined ? { tokens: Math.max(1, o.budget - sinks) } : { ratio: o.ratio } };
    },
    [SINKS],
  ),
  // The sinks come on top of ⌈ratio × length⌉ recent tokens: take them off the window so the total matches.
  matchMemory: (fraction, length) => ({ ratio: clampRatio(fraction - (SINKS.default as number) / length) }),
};
