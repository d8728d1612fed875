import { InvalidOptionError } from '../errors.js';

/**
 * Cache policies as unions of basic components. A head's policy decides, after every step, which of its stored tokens
 * stay. FastGen picks one policy per head from the hybrid set; the uniform baselines give every head the same one.
 */
export type Component =
  | { kind: 'full' }
  | { kind: 'special' }
  | { kind: 'punct' }
  /** Recent tokens: keep a token while (current position − its position) < span, span computed by `localSpan`. */
  | { kind: 'local'; maxDistance?: number; ratio?: number; budget?: number }
  /** Heavy hitters: the `budget` (or ⌈ratio × sequence length⌉) stored tokens with the highest cumulative attention. */
  | { kind: 'frequent'; ratio?: number; budget?: number }
  /** Attention sinks: the first `count` positions of the sequence (StreamingLLM). */
  | { kind: 'sink'; count: number };

export interface HeadPolicy {
  /** Display name, e.g. 'special+punct+frequent'. */
  name: string;
  components: Component[];
}

export const FULL_POLICY: HeadPolicy = { name: 'full', components: [{ kind: 'full' }] };

export type BasicPolicyName = 'special' | 'punct' | 'frequent' | 'local';
export const HYBRID_ORDER: BasicPolicyName[] = ['special', 'punct', 'frequent', 'local'];

/** Short letter per policy for terminal grids: S, P, F (…+frequent), L (…+local), * (full). */
export function policyLetter(name: string): string {
  if (name === 'full') return '*';
  const last = name.split('+').pop()!;
  return { special: 'S', punct: 'P', frequent: 'F', local: 'L', sink: 'K' }[last] ?? '?';
}

export function isFull(p: HeadPolicy): boolean {
  return p.components.some((c) => c.kind === 'full');
}

export function usesScores(p: HeadPolicy): boolean {
  return p.components.some((c) => c.kind === 'frequent');
}

/** How many most recent positions the local component keeps at sequence length `len` (0 when no local). */
export function localSpan(c: Extract<Component, { kind: 'local' }>, len: number): number {
  if (c.maxDistance !== undefined) return c.maxDistance + 1;
  if (c.budget !== undefined) return c.budget;
  return Math.ceil((c.ratio ?? 0) * len);
}

export function frequentBudget(c: Extract<Component, { kind: 'frequent' }>, len: number): number {
  if (c.budget !== undefined) return c.budget;
  return Math.ceil((c.ratio ?? 0) * len);
}

/**
 * The FastGen hybrid set in the paper's order (cheapest first), each candidate the union of the basic policies so
 * far, ending with full. `exclude` drops basic policies for the ablation (paper's Table 4).
 * The local window is fixed at profile time: distance ≤ ⌊r_l × prompt length⌋.
 */
export function hybridCandidates(opts: {
  promptLength: number;
  localRatio: number;
  frequentRatio: number;
  exclude?: readonly BasicPolicyName[];
}): HeadPolicy[] {
  const out: HeadPolicy[] = [];
  const parts: string[] = [];
  const comps: Component[] = [];
  for (const basic of HYBRID_ORDER) {
    if (opts.exclude?.includes(basic)) continue;
    parts.push(basic);
    if (basic === 'special') comps.push({ kind: 'special' });
    else if (basic === 'punct') comps.push({ kind: 'punct' });
    else if (basic === 'frequent') comps.push({ kind: 'frequent', ratio: opts.frequentRatio });
    else comps.push({ kind: 'local', maxDistance: Math.floor(opts.localRatio * opts.promptLength) });
    out.push({ name: parts.join('+'), components: comps.slice() });
  }
  out.push(FULL_POLICY);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// User-facing cache specification

export type UniformPolicyName = 'local' | 'frequent' | 'local+frequent' | 'sink+local';
export const UNIFORM_POLICIES: UniformPolicyName[] = ['local', 'frequent', 'local+frequent', 'sink+local'];
export const CACHE_POLICY_NAMES = ['full', 'fastgen', ...UNIFORM_POLICIES] as const;
export type CachePolicyName = (typeof CACHE_POLICY_NAMES)[number];

export interface CacheOptions {
  policy?: CachePolicyName;
  /** FastGen: attention recovery threshold T in (0, 1]. Default 0.95. */
  recovery?: number;
  /** FastGen: r_l, local window as a fraction of the prompt length. Default 0.3. */
  localRatio?: number;
  /** FastGen: r_f, heavy-hitter budget as a fraction of the current length. Default 0.3. */
  frequentRatio?: number;
  /** FastGen with GQA: recovery of a KV head = mean (default) or min over its query heads. */
  gqa?: 'mean' | 'min';
  /** FastGen ablation: basic policies left out of the hybrid set. */
  exclude?: BasicPolicyName[];
  /** Uniform baselines: fraction of the current sequence each head keeps (default 0.5) ... */
  ratio?: number;
  /** ... or a fixed number of tokens per head (takes precedence over ratio). */
  budget?: number;
  /** sink+local: number of sink tokens (default 4). */
  sinkTokens?: number;
}

export interface ResolvedCacheOptions {
  policy: CachePolicyName;
  recovery: number;
  localRatio: number;
  frequentRatio: number;
  gqa: 'mean' | 'min';
  exclude: BasicPolicyName[];
  ratio?: number;
  budget?: number;
  sinkTokens: number;
}

export function resolveCacheOptions(o: CacheOptions | undefined): ResolvedCacheOptions {
  const policy = o?.policy ?? 'full';
  if (!(CACHE_POLICY_NAMES as readonly string[]).includes(policy)) {
    throw new InvalidOptionError(`unknown cache policy '${policy}'; expected one of: ${CACHE_POLICY_NAMES.join(', ')}`, 'cache.policy');
  }
  const frac = (name: string, v: number | undefined, dflt: number, lowOpen = true): number => {
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isFinite(v) || (lowOpen ? v <= 0 : v < 0) || v > 1) {
      throw new InvalidOptionError(`cache.${name} must be a number in ${lowOpen ? '(0, 1]' : '[0, 1]'}, got ${v}`, `cache.${name}`);
    }
    return v;
  };
  const recovery = frac('recovery', o?.recovery, 0.95);
  const localRatio = frac('localRatio', o?.localRatio, 0.3, false);
  const frequentRatio = frac('frequentRatio', o?.frequentRatio, 0.3, false);
  const gqa = o?.gqa ?? 'mean';
  if (gqa !== 'mean' && gqa !== 'min') throw new InvalidOptionError(`cache.gqa must be 'mean' or 'min', got '${gqa}'`, 'cache.gqa');
  const exclude = o?.exclude ?? [];
  for (const e of exclude) {
    if (!HYBRID_ORDER.includes(e)) throw new InvalidOptionError(`cache.exclude: unknown policy '${e}'; expected any of ${HYBRID_ORDER.join(', ')}`, 'cache.exclude');
  }
  let ratio: number | undefined;
  let budget: number | undefined;
  if (o?.budget !== undefined) {
    if (!Number.isInteger(o.budget) || o.budget < 1) throw new InvalidOptionError(`cache.budget must be a positive integer number of tokens, got ${o.budget}`, 'cache.budget');
    budget = o.budget;
  } else if ((UNIFORM_POLICIES as string[]).includes(policy)) {
    ratio = frac('ratio', o?.ratio, 0.5);
  }
  const sinkTokens = o?.sinkTokens ?? 4;
  if (!Number.isInteger(sinkTokens) || sinkTokens < 0) throw new InvalidOptionError(`cache.sinkTokens must be a non-negative integer, got ${sinkTokens}`, 'cache.sinkTokens');
  return { policy, recovery, localRatio, frequentRatio, gqa, exclude, ratio, budget, sinkTokens };
}

/** The one policy every head gets under a uniform baseline. */
export function uniformPolicy(o: ResolvedCacheOptions): HeadPolicy {
  const amount = o.budget !== undefined ? { budget: o.budget } : { ratio: o.ratio ?? 0.5 };
  const half = o.budget !== undefined ? { budget: Math.max(1, Math.floor(o.budget / 2)) } : { ratio: (o.ratio ?? 0.5) / 2 };
  switch (o.policy) {
    case 'full':
    case 'fastgen':
      return FULL_POLICY;
    case 'local':
      return { name: 'local', components: [{ kind: 'local', ...amount }] };
    case 'frequent':
      return { name: 'frequent', components: [{ kind: 'frequent', ...amount }] };
    case 'local+frequent':
      // H2O: the budget split evenly between recent tokens and heavy hitters.
      return { name: 'local+frequent', components: [{ kind: 'local', ...half }, { kind: 'frequent', ...half }] };
    case 'sink+local': {
      const sinks = o.sinkTokens;
      const local = o.budget !== undefined ? { budget: Math.max(1, o.budget - sinks) } : { ratio: o.ratio ?? 0.5 };
      return { name: 'sink+local', components: [{ kind: 'sink', count: sinks }, { kind: 'local', ...local }] };
    }
  }
}
