/**
 * `fastgen`: FastGen (Ge et al., ICLR 2024). On the prompt's pass every KV head is profiled from the attention
 * statistics the backend collected (no attention map, see fastgen-recovery.ts) and given the first policy of the hybrid
 * set whose recovery reaches T; the prompt's cache is compressed to it, and every later step evicts by it.
 */
import { FULL, PUNCT, SPECIAL, usesScores, type HeadPolicy } from '../head-policy.js';
import { InvalidOptionError } from '../../errors.js';
import { chooseCandidate, planCandidates, profileCandidates, type CandidatePlan } from './fastgen-recovery.js';
import type { CachePolicy, KvShape, LayerNeeds, LayerPass, PolicyTarget, PromptAttentionStats, PolicyOptions, SequencePolicy } from './types.js';

export type BasicPolicyName = 'special' | 'punct' | 'frequent' | 'local';
export const HYBRID_ORDER: readonly BasicPolicyName[] = ['special', 'punct', 'frequent', 'local'];

export type FastgenVariant = 'lattice' | 'paper';

/** Lattice: profile on the prompt's rows from this fraction on (the last three quarters). */
const DEFAULT_PROFILE_FROM = 0.25;
/**
 * Lattice: the share of T's missing attention held back for decoding. On stories15M a head's decode-time shortfall
 * was about twice what the prompt showed (docs/results.md): asking the prompt for 1 − 0.55 (1 − T) keeps T while
 * decoding for most heads.
 */
const DEFAULT_MARGIN = 0.45;
/**
 * Lattice: every pruned head keeps at least this share of heavy hitters. A window-only head can never look back at a
 * token once it leaves the window, and a short prompt's rows rarely show the long-range look-ups generation makes
 * (docs/results.md: window-only heads promised 97 % and kept 50–68 % on a 17-token prompt).
 */
const DEFAULT_MIN_FREQUENT = 0.05;

export interface FastgenOptions extends PolicyOptions {
  variant: FastgenVariant;
  profileFrom?: number;
  recovery: number;
  localRatio: number;
  frequentRatio: number;
  gqa: 'mean' | 'min';
  exclude: readonly BasicPolicyName[];
  margin?: number;
  minFrequent?: number;
}

/** The profiling outcome of one (layer, KV head). */
export interface HeadProfile {
  layer: number;
  kvHead: number;
  /** Chosen policy name. */
  policy: string;
  /** Recovery of every candidate in hybrid order (aggregated over the group's query heads by mean or min). */
  recoveries: { policy: string; recovery: number }[];
  /** Per query head of the group: recovery of every candidate. */
  queryHeadRecoveries: number[][];
  /** Prompt tokens kept right after compression. */
  tokensKept: number;
  promptTokens: number;
}

/**
 * The hybrid set in the paper's order (cheapest first), each candidate the union of the basic policies so far, ending
 * with full. `exclude` drops basic policies for the ablation (paper's Table 4). The local window is fixed at profile
 * time: distance ≤ ⌊r_l × prompt length⌋.
 */
export function hybridCandidates(opts: {
  promptLength: number;
  localRatio: number;
  frequentRatio: number;
  exclude?: readonly BasicPolicyName[];
}): HeadPolicy[] {
  const out: HeadPolicy[] = [];
  const names: string[] = [];
  let p: { classes?: number; heavy?: HeadPolicy['heavy']; window?: HeadPolicy['window'] } = {};
  for (const basic of HYBRID_ORDER) {
    if (opts.exclude?.includes(basic)) continue;
    names.push(basic);
    if (basic === 'special') p = { ...p, classes: (p.classes ?? 0) | SPECIAL };
    else if (basic === 'punct') p = { ...p, classes: (p.classes ?? 0) | PUNCT };
    else if (basic === 'frequent') p = { ...p, heavy: { ratio: opts.frequentRatio } };
    else p = { ...p, window: { tokens: Math.floor(opts.localRatio * opts.promptLength) + 1 } };
    out.push({ name: names.join('+'), ...p });
  }
  out.push(FULL);
  return out;
}

/** The lattice's steps, as fractions of the largest ratio. */
const LATTICE_STEPS = [0, 1 / 6, 1 / 3, 2 / 3, 1];

/**
 * The lattice variant's candidates: token classes (special, or special + punct) with heavy hitters and a local window
 * each at a ratio from a grid (r × {0, ⅙, ⅓, ⅔, 1}), the window a share of the *current* length, so it follows the
 * sequence as it grows; and full. Each head takes the one that keeps the fewest tokens and still reaches T.
 */
export function latticeCandidates(opts: { localRatio: number; frequentRatio: number; minFrequent?: number; exclude?: readonly BasicPolicyName[] }): HeadPolicy[] {
  const out: HeadPolicy[] = [];
  const ex = (b: BasicPolicyName) => opts.exclude?.includes(b) ?? false;
  const round = (x: number) => Math.round(x * 1e4) / 1e4;
  const floor = Math.min(opts.minFrequent ?? 0, opts.frequentRatio);
  const heavies = ex('frequent')
    ? [0]
    : [...new Set([floor, ...LATTICE_STEPS.map((f) => f * opts.frequentRatio)].filter((h) => h >= floor).map(round))].sort((a, b) => a - b);
  const windows = ex('local') ? [0] : [...new Set(LATTICE_STEPS.map((f) => round(f * opts.localRatio)))];
  const classSets: [string, number][] = [];
  if (!ex('special')) classSets.push(['special', SPECIAL]);
  if (!ex('special') && !ex('punct')) classSets.push(['special+punct', SPECIAL | PUNCT]);
  else if (!ex('punct')) classSets.push(['punct', PUNCT]);
  if (classSets.length === 0) classSets.push(['', 0]);
  for (const [cname, classes] of classSets) {
    for (const h of heavies) {
      for (const w of windows) {
        const parts = [cname, h > 0 ? `frequent@${h}` : '', w > 0 ? `local@${w}` : ''].filter(Boolean);
        if (parts.length === 0) continue;
        out.push({
          name: parts.join('+'),
          ...(classes ? { classes } : {}),
          ...(h > 0 ? { heavy: { ratio: h } } : {}),
          ...(w > 0 ? { window: { ratio: w } } : {}),
        });
      }
    }
  }
  out.push(FULL);
  return out;
}

export const fastgen: CachePolicy = {
  name: 'fastgen',
  summary: "FastGen: each head's profiled choice among special → +punct → +frequent → +local → full",
  options: [
    { key: 'variant', kind: 'choice', choices: ['lattice', 'paper'], default: 'lattice', help: "paper: the published hybrid chain; lattice: each head's cheapest of a grid of windows and heavy-hitter shares" },
    { key: 'recovery', kind: 'fraction', default: 0.95, help: 'attention recovery threshold T' },
    { key: 'localRatio', kind: 'fraction0', default: 0.3, help: 'r_l: local window as a fraction of the prompt (lattice: the largest, of the current length)' },
    { key: 'frequentRatio', kind: 'fraction0', default: 0.3, help: 'r_f: heavy hitters as a fraction of the current length (lattice: the largest)' },
    { key: 'gqa', kind: 'choice', choices: ['mean', 'min'], help: "grouped-query heads: a KV head's recovery is the mean or min over its query heads (default min; paper: mean)" },
    { key: 'exclude', kind: 'list', choices: HYBRID_ORDER, default: [], help: 'basic policies left out of the hybrid set (ablation)' },
    { key: 'profileFrom', kind: 'fraction0', help: `lattice: profile on the prompt's rows from this fraction on (default ${DEFAULT_PROFILE_FROM}; the paper: all rows)` },
    { key: 'margin', kind: 'fraction0', help: `lattice: share of T's missing attention held back for the drift from prompt to decoding: a head must recover 1 − (1 − T)(1 − margin) on the prompt (default ${DEFAULT_MARGIN})` },
    { key: 'minFrequent', kind: 'fraction0', help: `lattice: smallest heavy-hitter share of any pruned head, of the current length (default ${DEFAULT_MIN_FREQUENT}; 0 allows window-only heads)` },
  ],
  complete(o) {
    if (o.variant === 'paper') {
      for (const key of ['profileFrom', 'margin', 'minFrequent']) {
        if (o[key] !== undefined) throw new InvalidOptionError(`cache.${key} applies to the lattice variant, not the paper's`, `cache.${key}`);
      }
    }
    // min over a KV head's query heads: with the lattice it keeps the promised recovery while decoding on GQA models
    // (docs/results.md); the paper's default, mean, as the paper's variant.
    return { ...o, gqa: o.gqa ?? (o.variant === 'paper' ? 'mean' : 'min') };
  },
  adaptive: true,
  baseline: false,
  start: (o, shape) => new FastgenSequence(o as FastgenOptions, shape),
  keptTokens: () => undefined,
  label: (o) => `fastgen${o.variant === 'paper' ? '-paper' : ''} T=${o.recovery}`,
};

class FastgenSequence implements SequencePolicy {
  readonly evicts = true;
  decideMs = 0;
  /** Per layer: profiles of its KV heads, once its first pass went through. */
  readonly profiles: HeadProfile[][] = [];
  private readonly heads: HeadPolicy[];
  private readonly profiled: boolean[];
  /** The candidate plan of the last prompt length profiled (every layer of a prompt shares it). */
  private planned?: { n: number; plan: CandidatePlan };

  constructor(
    private readonly o: FastgenOptions,
    private readonly shape: KvShape,
  ) {
    this.heads = new Array<HeadPolicy>(shape.nLayers * shape.nKvHeads).fill(FULL);
    this.profiled = new Array<boolean>(shape.nLayers).fill(false);
  }

  head(layer: number, kvHead: number): HeadPolicy {
    return this.heads[layer * this.shape.nKvHeads + kvHead];
  }

  needs(layer: number, n: number, startPos: number): LayerNeeds {
    const { nKvHeads } = this.shape;
    if (!this.profiled[layer]) {
      if (startPos !== 0) throw new Error('internal: FastGen profiles the first pass, which must start from an empty cache');
      // The profile gives the prompt's scores (column sums), so the pass adds none itself.
      return { scores: new Array<boolean>(nKvHeads).fill(false), stats: { fromRow: this.fromRow(n), bands: this.plan(n).bands } };
    }
    const scores: boolean[] = [];
    for (let h = 0; h < nKvHeads; h++) scores.push(usesScores(this.head(layer, h)));
    return { scores, stats: null };
  }

  afterAttention(kv: PolicyTarget, pass: LayerPass): void {
    const { layer, n, startPos } = pass;
    const current = startPos + n - 1;
    if (this.profiled[layer]) {
      for (let h = 0; h < this.shape.nKvHeads; h++) kv.apply(layer, h, this.head(layer, h), current);
      return;
    }
    if (!pass.stats) throw new Error('internal: the backend did not collect the attention statistics FastGen profiles from');
    const t0 = performance.now();
    this.profiled[layer] = true;
    const plan = this.plan(n);
    this.profiles[layer] = [];
    for (let h = 0; h < this.shape.nKvHeads; h++) this.profiles[layer][h] = this.profileHead(kv, layer, h, n, pass.stats, plan);
    this.decideMs += performance.now() - t0;
  }

  fork(): SequencePolicy {
    const copy = new FastgenSequence(this.o, this.shape);
    copy.heads.splice(0, this.heads.length, ...this.heads);
    copy.profiled.splice(0, this.profiled.length, ...this.profiled);
    copy.profiles.push(...this.profiles);
    copy.decideMs = this.decideMs;
    return copy;
  }

  /**
   * The first prompt row profiling looks at: every row for the paper; for the lattice the later rows, which decoding
   * resembles (an early row sees few keys, so any window recovers it; measured in docs/results.md: profiling the
   * later three quarters of the prompt keeps the promised recovery while decoding far better than all rows).
   * 0.25 against 0.5: better on stories15M, worse on stories260K (docs/results.md).
   */
  private fromRow(n: number): number {
    return this.o.variant === 'paper' ? 0 : Math.floor(n * (this.o.profileFrom ?? DEFAULT_PROFILE_FROM));
  }

  /** The recovery the lattice asks of the prompt so that T holds while decoding (see DEFAULT_MARGIN). */
  private promptTarget(): number {
    const T = this.o.recovery;
    return T >= 1 ? 1 : 1 - (1 - T) * (1 - (this.o.margin ?? DEFAULT_MARGIN));
  }

  /** The candidates and what profiling needs of them at this prompt length: the same for every layer and head. */
  private plan(promptLength: number): CandidatePlan {
    if (this.planned?.n === promptLength) return this.planned.plan;
    const { localRatio, frequentRatio, exclude } = this.o;
    const candidates = this.o.variant === 'paper'
      ? hybridCandidates({ promptLength, localRatio, frequentRatio, exclude })
      : latticeCandidates({ localRatio, frequentRatio, exclude, minFrequent: this.o.minFrequent ?? DEFAULT_MIN_FREQUENT });
    const plan = planCandidates(candidates, promptLength);
    this.planned = { n: promptLength, plan };
    return plan;
  }

  /** Profile one KV head of the n-token prompt from its query heads' statistics, then compress it. */
  private profileHead(kv: PolicyTarget, layer: number, h: number, n: number, stats: PromptAttentionStats, plan: CandidatePlan): HeadProfile {
    const { candidates } = plan;
    const { nHeads, nKvHeads } = this.shape;
    const st = kv.store(layer, h);
    const group = nHeads / nKvHeads;
    const m = st.length;
    // The KV head's cumulative attention: its query heads' column sums (what a scores-tracking pass adds).
    for (let g = 0; g < group; g++) {
      const col = stats[h * group + g].column;
      for (let s = 0; s < m; s++) st.scores[s] += col[s];
    }
    const { recoveries: perQuery, kept } = profileCandidates(plan, stats.slice(h * group, (h + 1) * group), n - this.fromRow(n), st);
    const recoveries = candidates.map((_, c) => {
      const vals = perQuery.map((r) => r[c]);
      return this.o.gqa === 'min' ? Math.min(...vals) : vals.reduce((a, b) => a + b, 0) / vals.length;
    });
    const chosen = candidates[this.o.variant === 'paper'
      ? chooseCandidate(recoveries, candidates, this.o.recovery)
      : chooseCheapest(recoveries, kept, this.promptTarget())];
    this.heads[layer * nKvHeads + h] = chosen;
    kv.apply(layer, h, chosen, n - 1);
    return {
      layer,
      kvHead: h,
      policy: chosen.name,
      recoveries: candidates.map((c, i) => ({ policy: c.name, recovery: recoveries[i] })),
      queryHeadRecoveries: perQuery,
      tokensKept: st.length,
      promptTokens: n,
    };
  }
}

/**
 * The candidate that keeps the fewest tokens among those whose recovery reaches T (ties: the earlier, i.e. the one
 * with fewer parts, which also tracks no scores when it can: when two candidates keep the same prompt tokens their
 * recoveries are equal but for rounding, which must not decide). `full` always qualifies; with T ≥ 1 only full does.
 */
export function chooseCheapest(recoveries: readonly number[], kept: readonly number[], threshold: number): number {
  const full = kept.length - 1; // candidates end with full
  let best = full;
  if (threshold >= 1) return best;
  for (let c = 0; c < full; c++) {
    if (recoveries[c] < threshold) continue;
    if (kept[c] < kept[best]) best = c;
  }
  return best;
}

/** The profiles of a sequence's FastGen policy ([] for any other policy). */
export function profilesOf(p: SequencePolicy): HeadProfile[][] {
  return p instanceof FastgenSequence ? p.profiles : [];
}
