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
import { chooseCandidate, RecoveryAccumulator } from './recovery.js';

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
 * the scores of heads that need them, then `finishLayer`: profile + compress at the end of the first pass (the prompt), evict on later ones.
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
    this.stores = Array.from({ length: count }, () => new HeadStore(pool));
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

  /** Whether attention probabilities must be added to this head's scores in the current pass. */
  tracksScores(layer: number, kvHead: number): boolean {
    // During the prompt, FastGen needs the column sums to profile; a uniform policy only if it ranks heavy hitters.
    if (!this.prefilled[layer]) return this.options.policy === 'fastgen' || usesScores(this.policy(layer, kvHead));
    return usesScores(this.policy(layer, kvHead));
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
   * After a layer's attention. The first pass is the prompt: FastGen: profile every KV head from the layer's queries, choose its policy, and
   * compress the prompt's cache. Uniform baselines: compress with their policy.
   * q: [n, nHeads × headDim] after RoPE (rows `qStride` apart), the prompt's queries at positions startPos..startPos+n−1.
   */
  finishLayer(layer: number, q: Float32Array, qStride: number, n: number, startPos: number): void {
    if (this.prefilled[layer]) {
      this.finishDecode(layer, startPos + n - 1);
      return;
    }
    this.prefilled[layer] = true;
    const seqLength = startPos + n;
    const current = seqLength - 1;
    if (this.options.policy === 'fastgen') {
      const t0 = performance.now();
      this.profiles[layer] = [];
      for (let h = 0; h < this.shape.nKvHeads; h++) {
        this.profiles[layer][h] = this.profileHead(layer, h, q, qStride, n, startPos);
      }
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
    applyPolicy(st, policy, this.classes, current, seqLength, this.keepScratch);
  }

  private profileHead(layer: number, h: number, q: Float32Array, qStride: number, n: number, startPos: number): HeadProfile {
    const { nHeads, nKvHeads, headDim } = this.shape;
    const st = this.store(layer, h);
    const promptTokens = startPos + n;
    const candidates = hybridCandidates({
      promptLength: promptTokens,
      localRatio: this.options.localRatio,
      frequentRatio: this.options.frequentRatio,
      exclude: this.options.exclude,
    });
    const group = nHeads / nKvHeads;
    const m = st.length;
    // Keys as f32, one row per slot (decoded from halves for an f16 cache).
    const keys = new Float32Array(m * headDim);
    for (let s = 0; s < m; s++) st.readKey(s, keys, s * headDim);
    const scale = 1 / Math.sqrt(headDim);
    const row = new Float64Array(m);
    const perQuery: number[][] = [];
    for (let g = 0; g < group; g++) {
      const qh = h * group + g;
      const acc = new RecoveryAccumulator(candidates, st.tokenIds, st.positions, st.scores, this.classes, m);
      for (let t = 0; t < n; t++) {
        // A[t, :] = softmax(q_t · K / √d) over the keys this row can see (causal by position).
        const pos = startPos + t;
        const qOff = t * qStride + qh * headDim;
        let max = -Infinity;
        for (let s = 0; s < m; s++) {
          if (st.positions[s] > pos) {
            row[s] = -Infinity;
            continue;
          }
          // Four partial sums: the profiling pass is n² · d per head, the bulk of FastGen's overhead.
          const ko = s * headDim;
          let d0 = 0;
          let d1 = 0;
          let d2 = 0;
          let d3 = 0;
          let i = 0;
          for (; i + 4 <= headDim; i += 4) {
            d0 += q[qOff + i] * keys[ko + i];
            d1 += q[qOff + i + 1] * keys[ko + i + 1];
            d2 += q[qOff + i + 2] * keys[ko + i + 2];
            d3 += q[qOff + i + 3] * keys[ko + i + 3];
          }
          for (; i < headDim; i++) d0 += q[qOff + i] * keys[ko + i];
          row[s] = (d0 + d1 + (d2 + d3)) * scale;
          if (row[s] > max) max = row[s];
        }
        let sum = 0;
        for (let s = 0; s < m; s++) {
          const e = row[s] === -Infinity ? 0 : Math.exp(row[s] - max);
          row[s] = e;
          sum += e;
        }
        for (let s = 0; s < m; s++) row[s] /= sum;
        acc.addRow(row, pos, m);
      }
      perQuery.push(acc.result());
    }
    const recoveries = candidates.map((_, c) => {
      const vals = perQuery.map((r) => r[c]);
      return this.options.gqa === 'min' ? Math.min(...vals) : vals.reduce((a, b) => a + b, 0) / vals.length;
    });
    const chosen = chooseCandidate(recoveries, candidates, this.options.recovery);
    this.policies[layer * nKvHeads + h] = candidates[chosen];
    this.evict(layer, h, promptTokens - 1, promptTokens);
    return {
      layer,
      kvHead: h,
      policy: candidates[chosen].name,
      recoveries: candidates.map((c, i) => ({ policy: c.name, recovery: recoveries[i] })),
      queryHeadRecoveries: perQuery,
      tokensKept: st.length,
      promptTokens,
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

  /** Return every page to the pool. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const st of this.stores) st.release();
  }
}
