/**
 * The registry of cache policies. Everything that names a policy — the library's `cache` option, the CLI's --cache
 * and its option flags, the server's `cache` request field, admission, the evaluator's baselines — derives from this
 * list. A new policy is one file exporting a CachePolicy, listed here (and its options added to CacheOptions).
 */
import { InvalidOptionError } from '../../errors.js';
import { fastgen, type BasicPolicyName } from './fastgen.js';
import { full } from './full.js';
import { snapkv } from './snapkv.js';
import type { CachePolicy, OptionSpec, PolicyOptions } from './types.js';
import { frequent, local, localFrequent, sinkLocal } from './uniform.js';

export const CACHE_POLICIES: readonly CachePolicy[] = [full, fastgen, local, frequent, localFrequent, sinkLocal, snapkv];

export const CACHE_POLICY_NAMES = ['full', 'fastgen', 'local', 'frequent', 'local+frequent', 'sink+local', 'snapkv'] as const;
export type CachePolicyName = (typeof CACHE_POLICY_NAMES)[number];

/** Every policy's options, for the library (each applies to the policies that declare it). */
export interface CacheOptions {
  policy?: CachePolicyName;
  /** fastgen: 'lattice' (default: each head's cheapest of a grid of windows and heavy hitters) or 'paper'. */
  variant?: 'lattice' | 'paper';
  /** fastgen: attention recovery threshold T in (0, 1]. Default 0.95. */
  recovery?: number;
  /** fastgen: r_l, local window as a fraction of the prompt length. Default 0.3. */
  localRatio?: number;
  /** fastgen: r_f, heavy-hitter budget as a fraction of the current length. Default 0.3. */
  frequentRatio?: number;
  /** fastgen with GQA: recovery of a KV head = mean or min over its query heads (default: min; paper: mean). */
  gqa?: 'mean' | 'min';
  /** fastgen, lattice variant: profile on the prompt's rows from this fraction on (default 0.25). */
  profileFrom?: number;
  /** fastgen, lattice variant: share of T's missing attention held back for decoding (default 0.45). */
  margin?: number;
  /** fastgen, lattice variant: smallest heavy-hitter share of a pruned head (default 0.05; 0 allows window-only heads). */
  minFrequent?: number;
  /** fastgen ablation: basic policies left out of the hybrid set. */
  exclude?: BasicPolicyName[];
  /** Uniform baselines: fraction of the current sequence each head keeps (default 0.5); snapkv: of the prompt ... */
  ratio?: number;
  /** ... or a fixed number of tokens per head (takes precedence over ratio). */
  budget?: number;
  /** sink+local: number of sink tokens (default 4). */
  sinkTokens?: number;
  /** snapkv: observation window (default 16). */
  window?: number;
  /** snapkv: width of the score pooling (default 5). */
  poolKernel?: number;
}

/** Validated options with defaults filled in: the options of `policy` only. */
export type ResolvedCacheOptions = Readonly<CacheOptions & { policy: CachePolicyName }> & PolicyOptions;

const byName = new Map(CACHE_POLICIES.map((p) => [p.name, p]));
if (CACHE_POLICIES.some((p, i) => p.name !== CACHE_POLICY_NAMES[i]) || CACHE_POLICIES.length !== CACHE_POLICY_NAMES.length) {
  throw new Error('internal: CACHE_POLICY_NAMES must list the registry in order');
}

export function cachePolicy(name: string): CachePolicy {
  const p = byName.get(name);
  if (!p) throw new InvalidOptionError(`unknown cache policy '${name}'; expected one of: ${CACHE_POLICY_NAMES.join(', ')}`, 'cache.policy');
  return p;
}

/** Every option key any policy declares, with the policies that take it (for the CLI and the server). */
export function allCacheOptions(): { spec: OptionSpec; policies: string[] }[] {
  const out = new Map<string, { spec: OptionSpec; policies: string[] }>();
  for (const p of CACHE_POLICIES) {
    for (const spec of p.options) {
      const seen = out.get(spec.key);
      if (seen) seen.policies.push(p.name);
      else out.set(spec.key, { spec, policies: [p.name] });
    }
  }
  return [...out.values()];
}

/**
 * Validate `o` against its policy's option schema and fill in defaults. Options of other policies are an error (a
 * user who passes --recovery with --cache local has misread something); undefined values count as absent.
 */
export function resolveCacheOptions(o: CacheOptions | undefined): ResolvedCacheOptions {
  const policy = cachePolicy(o?.policy ?? 'full');
  const given = (o ?? {}) as Record<string, unknown>;
  const out: Record<string, unknown> = { policy: policy.name };
  for (const key of Object.keys(given)) {
    if (key === 'policy' || given[key] === undefined) continue;
    if (!policy.options.some((s) => s.key === key)) {
      const takers = allCacheOptions().find((x) => x.spec.key === key)?.policies;
      const own = policy.options.map((s) => s.key).join(', ') || 'none';
      throw new InvalidOptionError(
        takers
          ? `cache.${key} applies to ${takers.join(', ')}, not to policy '${policy.name}' (its options: ${own})`
          : `unknown cache option '${key}'; policy '${policy.name}' takes: ${own}`,
        `cache.${key}`,
      );
    }
  }
  for (const spec of policy.options) {
    const v = Object.hasOwn(given, spec.key) ? given[spec.key] : undefined;
    if (v === undefined) {
      if (spec.default !== undefined) out[spec.key] = spec.default;
      continue;
    }
    out[spec.key] = checkOption(spec, v);
  }
  return (policy.complete ? policy.complete(out as ResolvedCacheOptions) : out) as ResolvedCacheOptions;
}

function checkOption(spec: OptionSpec, v: unknown): unknown {
  const field = `cache.${spec.key}`;
  const fail = (want: string): never => {
    throw new InvalidOptionError(`${field} must be ${want}, got ${JSON.stringify(v) ?? String(v)}`, field);
  };
  switch (spec.kind) {
    case 'fraction':
    case 'fraction0': {
      const open = spec.kind === 'fraction';
      if (typeof v !== 'number' || !Number.isFinite(v) || (open ? v <= 0 : v < 0) || v > 1) fail(`a number in ${open ? '(0, 1]' : '[0, 1]'}`);
      return v;
    }
    case 'count':
    case 'count0': {
      const min = spec.kind === 'count' ? 1 : 0;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail(`an integer ≥ ${min} (tokens)`);
      return v;
    }
    case 'choice':
      if (typeof v !== 'string' || !spec.choices!.includes(v)) fail(`one of ${spec.choices!.join(', ')}`);
      return v;
    case 'list':
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || !spec.choices!.includes(x))) fail(`a list of: ${spec.choices!.join(', ')}`);
      return [...(v as string[])];
  }
}

/** A short label for tables and logs, e.g. 'fastgen T=0.95', 'local r=0.5'. */
export function cacheLabel(o: ResolvedCacheOptions): string {
  return cachePolicy(o.policy).label(o);
}

export type { CachePolicy, OptionSpec, SequencePolicy, KvShape, StatsRequest, LayerNeeds, HeadAttentionStats, PromptAttentionStats } from './types.js';
export { HYBRID_ORDER, hybridCandidates, profilesOf, type BasicPolicyName, type HeadProfile } from './fastgen.js';
