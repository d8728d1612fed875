import { PUNCT, SPECIAL } from '../../cache/head-store.js';
import { frequentBudget, localSpan, type HeadPolicy } from '../../cache/policy.js';

/**
 * A head policy at a given sequence length, reduced to the numbers markKept (src/cache/evict.ts) computes from it:
 * keep a slot when its token classes meet classMask, when current − position < window, when position < sinks, or
 * when it is among the top `heavy` slots by cumulative attention (ties: the lower position). The GPU's eviction
 * kernel executes exactly this rule.
 */
export interface KeepRule {
  full: boolean;
  classMask: number;
  window: number;
  sinks: number;
  heavy: number;
}

export function keepRule(policy: HeadPolicy, seqLength: number): KeepRule {
  const rule: KeepRule = { full: false, classMask: 0, window: 0, sinks: 0, heavy: 0 };
  for (const c of policy.components) {
    switch (c.kind) {
      case 'full':
        rule.full = true;
        break;
      case 'special':
        rule.classMask |= SPECIAL;
        break;
      case 'punct':
        rule.classMask |= PUNCT;
        break;
      case 'local':
        rule.window = Math.max(rule.window, localSpan(c, seqLength));
        break;
      case 'sink':
        rule.sinks = Math.max(rule.sinks, c.count);
        break;
      case 'frequent':
        rule.heavy = Math.max(rule.heavy, frequentBudget(c, seqLength));
        break;
    }
  }
  return rule;
}
