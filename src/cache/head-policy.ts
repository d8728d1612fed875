/**
 * What one attention head keeps, as data. Every cache policy — FastGen's per-head choice, the uniform baselines,
 * SnapKV — ends up giving each (layer, KV head) a HeadPolicy, and every backend executes HeadPolicies the same way:
 * after a layer's attention, resolve the head's policy at the current length into a KeepRule (five numbers) and keep
 * exactly the slots the rule keeps (src/cache/evict.ts is the CPU executor and the reference for the others).
 */

/** Token classes, as bits of HeadStore.classBits. */
export const SPECIAL = 1;
export const PUNCT = 2;

/** An amount of tokens: a fixed count, or ⌈ratio × the sequence's current length⌉. */
export type Amount = { readonly tokens: number } | { readonly ratio: number };

export interface HeadPolicy {
  /** Display name, e.g. 'special+punct+frequent'. */
  readonly name: string;
  /** Keep every token (nothing else matters). */
  readonly full?: boolean;
  /** Token classes kept: SPECIAL | PUNCT. */
  readonly classes?: number;
  /** The first `sinks` positions of the sequence (attention sinks, StreamingLLM). */
  readonly sinks?: number;
  /** The most recent tokens: a token stays while (current position − its position) < window. */
  readonly window?: Amount;
  /** Heavy hitters: additionally the stored tokens with the highest cumulative attention score (ties: older wins). */
  readonly heavy?: Amount;
}

/** A HeadPolicy resolved at one sequence length: what a backend's eviction kernel is given. */
export interface KeepRule {
  full: boolean;
  classMask: number;
  sinks: number;
  window: number;
  heavy: number;
}

export const FULL: HeadPolicy = { name: 'full', full: true };

export function amountAt(a: Amount | undefined, seqLength: number): number {
  if (a === undefined) return 0;
  return 'tokens' in a ? a.tokens : Math.ceil(a.ratio * seqLength);
}

export function keepRule(p: HeadPolicy, seqLength: number): KeepRule {
  return {
    full: p.full === true,
    classMask: p.classes ?? 0,
    sinks: p.sinks ?? 0,
    window: amountAt(p.window, seqLength),
    heavy: amountAt(p.heavy, seqLength),
  };
}

/** Whether a head on this policy ranks tokens by cumulative attention (the backend must add scores for it). */
export function usesScores(p: HeadPolicy): boolean {
  return !p.full && p.heavy !== undefined;
}

/**
 * Most tokens a head on this policy holds after a step at sequence length `seqLength`, whatever the scores and token
 * classes: the parts' sum, capped by the length. (Token-class parts are unbounded: a class policy reports the length.)
 */
export function maxKept(p: HeadPolicy, seqLength: number): number {
  if (p.full || p.classes) return seqLength;
  const r = keepRule(p, seqLength);
  return Math.min(seqLength, Math.min(r.sinks, seqLength) + r.window + r.heavy);
}

/** A policy's name without its sizes: 'special+frequent@0.1+local@0.2' → 'special+frequent+local'. */
export function policyFamily(name: string): string {
  return name.replace(/@[0-9.e-]+/g, '');
}

/** Short letter per policy for terminal grids: S, P, F (…+frequent), L (…+local), K (sink), * (full). */
export function policyLetter(name: string): string {
  if (name === 'full') return '*';
  const last = policyFamily(name).split('+').pop()!;
  return { special: 'S', punct: 'P', frequent: 'F', local: 'L', sink: 'K', snapkv: 'V' }[last] ?? '?';
}
