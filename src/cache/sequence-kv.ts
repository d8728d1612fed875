import { HeadStore } from './head-store.js';
import type { PagePool } from './page-pool.js';
import { applyPolicy, type TokenClasses } from './evict.js';
import {
  FULL_POLICY,
  hybridCandidates,
  isFull,
  uniformPolicy,
  usesScores,
  type HeadPolicy,
  type ResolvedCacheOptions,
} from './policy.js';
import { bandDistance, chooseCandidate, recoveryFromStats, type HeadAttentionStats } from './recovery.js';

/** FastGen's profiling statistics of one layer's first pass, indexed by query head (see SequenceKv.profilingBand). */
export type PromptAttentionStats = readonly HeadAttentionStats[];

export interface KvShape {
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
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

export interface KvStats {
  /** Tokens in the sequence (positions seen). */
  sequenceTokens: number;
  /** Bytes of K/V held for kept tokens: Σ over (layer, KV head) of tokens kept × 2 × headDim × 4. */
  kvBytes: number;
  /** Bytes a full cache would hold for the same tokens. */
  fullKvBytes: number;
  /** 1 − kvBytes / fullKvBytes. */
  prunedRatio: number;
  /** Bytes of the pool pages this sequence holds (kept tokens rounded up to whole pages). */
  pageBytes: number;
  pages: number;
  /** Kept tokens, [layer][kvHead]. */
  keptTokens: number[][];
  /** Number of (layer, KV head) pairs on each policy. */
  headsPerPolicy: Record<string, number>;
}

/**
 * The KV cache of one sequence: a HeadStore per (layer, KV head) and the policy each head follows.
 *
 * The backend drives it during a forward pass: append each layer's new keys/values, add attention probabilities to
 * the scores of heads that need them, then `finishLayer`: profile + compress at the end of the first pass (the prompt),
 * evict on later ones. For FastGen's first pass the backend collects per-query-head attention statistics instead of
 * scores (`profilingBand`, `PromptAttentionStats`), from which the profile follows without recomputing attention.
 */
export class SequenceKv {
  readonly shape: KvShape;
  readonly pool: PagePool;
  readonly options: ResolvedCacheOptions;
  readonly classes: TokenClasses;
  /** [layer * nKvHeads + kvHead] */
  readonly stores: HeadStore[];
  readonly policies: HeadPolicy[];
  /** Tokens seen so far; also the position of the next token. */
  length = 0;
  /** Per-layer profile results (FastGen), filled at the end of the first prefill. */
  readonly profiles: HeadProfile[][] = [];
  profileMs = 0;
  private readonly prefilled: boolean[];
  private keepScratch = new Uint8Array(64);
  private released = false;

  constructor(pool: PagePool, shape: KvShape, options: ResolvedCacheOptions, classes: TokenClasses) {
    if (pool.headDim !== shape.headDim) throw new Error(`internal: pool head dim ${pool.headDim} ≠ model head dim ${shape.headDim}`);
    this.pool = pool;
    this.shape = shape;
    this.options = options;
    this.classes = classes;
    const count = shape.nLayers * shape.nKvHeads;
    this.stores = Array.from({ length: count }, () => new HeadStore(pool, classes));
    const initial = options.policy === 'fastgen' ? FULL_POLICY : uniformPolicy(options);
    this.policies = Array.from({ length: count }, () => initial);
    this.prefilled = new Array(shape.nLayers).fill(false);
  }

  store(layer: number, kvHead: number): HeadStore {
    return this.stores[layer * this.shape.nKvHeads + kvHead];
  }
  policy(layer: number, kvHead: number): HeadPolicy {
    return this.policies[layer * this.shape.nKvHeads + kvHead];
  }

  /**
   * Whether attention probabilities must be added to this head's scores in the current pass. Not during FastGen's
   * profiling pass: there the scores come from the collected column sums (see profilingBand).
   */
  tracksScores(layer: number, kvHead: number): boolean {
    if (this.options.policy === 'fastgen' && !this.prefilled[layer]) return false;
    return usesScores(this.policy(layer, kvHead));
  }

  /**
   * If this pass over `layer` profiles the heads (FastGen's first pass, over a prompt of promptLength tokens from an
   * empty cache, so slot s holds position s): the band distance w for the statistics the backend must collect for
   * every query head qh, over the pass's rows i and the KV head's slots s:
   *   column[qh][s] = Σ_i A[i, s]        band[qh][s] = Σ_{i : i − s ≤ w} A[i, s]   (w = -1: no band, leave it 0)
   * to hand to finishLayer. Otherwise null.
   */
  profilingBand(layer: number, promptLength: number): number | null {
    if (this.options.policy !== 'fastgen' || this.prefilled[layer]) return null;
    return bandDistance(this.candidates(promptLength), promptLength);
  }

  private candidates(promptLength: number): HeadPolicy[] {
    return hybridCandidates({
      promptLength,
      localRatio: this.options.localRatio,
      frequentRatio: this.options.frequentRatio,
      exclude: this.options.exclude,
    });
  }

  /**
   * Reserve the slots of n new tokens (positions startPos…) in every KV head of one layer, for a backend whose
   * kernels write the keys and values themselves: into the last n slots of each head's store.
   */
  reserveLayer(layer: number, n: number, startPos: number, tokens: ArrayLike<number>): void {
    if (this.released) throw new Error('internal: sequence cache used after release');
    for (let h = 0; h < this.shape.nKvHeads; h++) {
      const st = this.store(layer, h);
      for (let t = 0; t < n; t++) st.reserve(startPos + t, tokens[t]);
    }
  }

  /** Whether finishLayer's queries are looked at (by a subclass); backends that keep no per-layer queries ask. */
  get wantsQueries(): boolean {
    return false;
  }

  /**
   * Append n new tokens' keys and values for one layer.
   * k, v: [n, nKvHeads × headDim] (k after RoPE), rows `stride` floats apart.
   */
  appendLayer(layer: number, k: Float32Array, v: Float32Array, stride: number, n: number, startPos: number, tokens: ArrayLike<number>): void {
    if (this.released) throw new Error('internal: sequence cache used after release');
    const { nKvHeads, headDim } = this.shape;
    for (let h = 0; h < nKvHeads; h++) {
      const st = this.store(layer, h);
      for (let t = 0; t < n; t++) st.append(k, t * stride + h * headDim, v, t * stride + h * headDim, startPos + t, tokens[t]);
    }
  }

  /**
   * After a layer's attention. The first pass is the prompt: FastGen profiles every KV head from the statistics the
   * backend collected (see profilingBand), chooses its policy and compresses the prompt's cache; uniform baselines
   * compress with their policy. Later passes evict.
   * q: [n, nHeads × headDim] after RoPE (rows `qStride` apart), the queries at positions startPos..startPos+n−1
   * (the cache itself does not need them; subclasses such as the evaluator's tap look at them).
   * stats: FastGen's first pass only, indexed by query head.
   */
  finishLayer(layer: number, q: Float32Array, qStride: number, n: number, startPos: number, stats?: PromptAttentionStats): void {
    if (this.prefilled[layer]) {
      this.finishDecode(layer, startPos + n - 1);
      return;
    }
    this.prefilled[layer] = true;
    const seqLength = startPos + n;
    const current = seqLength - 1;
    if (this.options.policy === 'fastgen') {
      if (!stats) throw new Error('internal: the backend did not collect the attention statistics FastGen profiles from');
      if (startPos !== 0) throw new Error('internal: FastGen profiles the first pass, which must start from an empty cache');
      const t0 = performance.now();
      this.profiles[layer] = [];
      const candidates = this.candidates(n);
      for (let h = 0; h < this.shape.nKvHeads; h++) this.profiles[layer][h] = this.profileHead(layer, h, n, stats, candidates);
      this.profileMs += performance.now() - t0;
      return;
    }
    for (let h = 0; h < this.shape.nKvHeads; h++) this.evict(layer, h, current, seqLength);
  }

  /** After a decode step's attention for one layer: apply every head's policy. `current` = the new token's position. */
  finishDecode(layer: number, current: number): void {
    for (let h = 0; h < this.shape.nKvHeads; h++) this.evict(layer, h, current, current + 1);
  }

  /** Record that n tokens went through the model (called once per forward pass, after the last layer). */
  advance(n: number): void {
    this.length += n;
  }

  private evict(layer: number, h: number, current: number, seqLength: number): void {
    const policy = this.policy(layer, h);
    if (isFull(policy)) return;
    const st = this.store(layer, h);
    if (this.keepScratch.length < st.length) this.keepScratch = new Uint8Array(st.length * 2);
    applyPolicy(st, policy, current, seqLength, this.keepScratch);
  }

  /** Profile one KV head of the n-token prompt from its query heads' statistics, then compress it. */
  private profileHead(layer: number, h: number, n: number, stats: PromptAttentionStats, candidates: HeadPolicy[]): HeadProfile {
    const { nHeads, nKvHeads } = this.shape;
    const st = this.store(layer, h);
    const group = nHeads / nKvHeads;
    const m = st.length;
    // The KV head's cumulative attention: its query heads' column sums (what a scores-tracking pass adds).
    for (let g = 0; g < group; g++) {
      const col = stats[h * group + g].column;
      for (let s = 0; s < m; s++) st.scores[s] += col[s];
    }
    const perQuery: number[][] = [];
    for (let g = 0; g < group; g++) {
      perQuery.push(recoveryFromStats(candidates, stats[h * group + g], n, st));
    }
    const recoveries = candidates.map((_, c) => {
      const vals = perQuery.map((r) => r[c]);
      return this.options.gqa === 'min' ? Math.min(...vals) : vals.reduce((a, b) => a + b, 0) / vals.length;
    });
    const chosen = chooseCandidate(recoveries, candidates, this.options.recovery);
    this.policies[layer * nKvHeads + h] = candidates[chosen];
    this.evict(layer, h, n - 1, n);
    return {
      layer,
      kvHead: h,
      policy: candidates[chosen].name,
      recoveries: candidates.map((c, i) => ({ policy: c.name, recovery: recoveries[i] })),
      queryHeadRecoveries: perQuery,
      tokensKept: st.length,
      promptTokens: n,
    };
  }

  /** Bytes of K/V held for kept tokens (cheap: no per-head report is built). */
  kvBytes(): number {
    let kept = 0;
    for (const st of this.stores) kept += st.length;
    return kept * 2 * this.shape.headDim * this.pool.elementBytes;
  }

  /** Bytes a full cache would hold for the tokens seen so far. */
  fullKvBytes(): number {
    return this.length * this.shape.nLayers * this.shape.nKvHeads * 2 * this.shape.headDim * this.pool.elementBytes;
  }

  stats(): KvStats {
    const { nLayers, nKvHeads, headDim } = this.shape;
    const perToken = 2 * headDim * this.pool.elementBytes;
    let kept = 0;
    let pages = 0;
    const keptTokens: number[][] = [];
    const headsPerPolicy: Record<string, number> = {};
    for (let l = 0; l < nLayers; l++) {
      keptTokens.push([]);
      for (let h = 0; h < nKvHeads; h++) {
        const st = this.store(l, h);
        kept += st.length;
        pages += st.pages.length;
        keptTokens[l].push(st.length);
        const name = this.policy(l, h).name;
        headsPerPolicy[name] = (headsPerPolicy[name] ?? 0) + 1;
      }
    }
    const kvBytes = kept * perToken;
    const fullKvBytes = this.fullKvBytes();
    return {
      sequenceTokens: this.length,
      kvBytes,
      fullKvBytes,
      prunedRatio: fullKvBytes ? 1 - kvBytes / fullKvBytes : 0,
      pageBytes: pages * this.pool.pageBytes,
      pages,
      keptTokens,
      headsPerPolicy,
    };
  }

  /**
   * An independent copy of this cache after its prompt: the same kept slots in the same order (attention then sums in
   * the same order, so the copy behaves bit for bit like the original), positions, token ids, scores, policies,
   * profiles and pass state. Lets several continuations share one compressed prefill without recomputing it.
   */
  fork(): SequenceKv {
    return this.copyInto(new SequenceKv(this.pool, this.shape, this.options, this.classes));
  }

  /** fork()'s work, for subclasses that fork into their own type. */
  protected copyInto<T extends SequenceKv>(copy: T): T {
    if (this.released) throw new Error('internal: fork() of a released sequence cache');
    const hd = this.shape.headDim;
    const kBuf = new Float32Array(hd);
    const vBuf = new Float32Array(hd);
    for (let i = 0; i < this.stores.length; i++) {
      const src = this.stores[i];
      const dst = copy.stores[i];
      for (let s = 0; s < src.length; s++) {
        // Through f32 scratch (exact for an f16 cache too): appending may grow the arena and replace its views.
        src.readKey(s, kBuf);
        src.readValue(s, vBuf);
        dst.append(kBuf, 0, vBuf, 0, src.positions[s], src.tokenIds[s], src.scores[s]);
      }
      copy.policies[i] = this.policies[i];
    }
    for (let l = 0; l < this.prefilled.length; l++) copy.prefilled[l] = this.prefilled[l];
    copy.length = this.length;
    copy.profiles.push(...this.profiles);
    copy.profileMs = this.profileMs;
    return copy;
  }

  /** Return every page to the pool. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const st of this.stores) st.release();
  }
}
