import { HeadStore } from './head-store.js';
import type { PagePool } from './page-pool.js';
import { applyRule } from './evict.js';
import type { TokenClasses } from '../tokenizer/token-classes.js';
import { keepRule, type HeadPolicy } from './head-policy.js';
import { cachePolicy, profilesOf, type HeadProfile, type ResolvedCacheOptions } from './policies/index.js';
import type { KvShape, LayerNeeds, PolicyTarget, PromptAttentionStats, SequencePolicy } from './policies/types.js';

export type { KvShape, HeadProfile, PromptAttentionStats };

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
 * The KV cache of one sequence: a HeadStore per (layer, KV head), and the sequence's cache policy, which decides what
 * each head keeps (src/cache/policies). SequenceKv owns storage, byte counts and fork; it never decides.
 *
 * A backend drives it through one forward pass, per layer:
 *   1. `appendLayer` the new keys/values (or `reserveLayer` their slots and write them with its own kernels);
 *   2. `needs(layer, n)`: which heads' slot scores to add attention probabilities to, which column/band sums to collect;
 *   3. after the layer's attention, `finishLayer` with those sums: the policy profiles/selects and evicts;
 * and `advance(n)` after the pass.
 */
export class SequenceKv implements PolicyTarget {
  readonly shape: KvShape;
  readonly pool: PagePool;
  readonly options: ResolvedCacheOptions;
  readonly classes: TokenClasses;
  /** [layer * nKvHeads + kvHead] */
  readonly stores: HeadStore[];
  readonly policy: SequencePolicy;
  /**
   * Tokens that went through the model so far (the sequence's length, whatever the heads keep); also the position of
   * the next token. A head's kept tokens are its store's `length`.
   */
  seqLength = 0;
  private keepScratch = new Uint8Array(64);
  private released = false;

  constructor(pool: PagePool, shape: KvShape, options: ResolvedCacheOptions, classes: TokenClasses, policy?: SequencePolicy) {
    if (pool.headDim !== shape.headDim) throw new Error(`internal: pool head dim ${pool.headDim} ≠ model head dim ${shape.headDim}`);
    this.pool = pool;
    this.shape = shape;
    this.options = options;
    this.classes = classes;
    this.stores = Array.from({ length: shape.nLayers * shape.nKvHeads }, () => new HeadStore(pool, classes));
    this.policy = policy ?? cachePolicy(options.policy).start(options, shape);
  }

  store(layer: number, kvHead: number): HeadStore {
    return this.stores[layer * this.shape.nKvHeads + kvHead];
  }

  /** The policy head (layer, kvHead) follows now. */
  headPolicy(layer: number, kvHead: number): HeadPolicy {
    return this.policy.head(layer, kvHead);
  }

  /** FastGen's per-layer profiles (empty for other policies). */
  get profiles(): HeadProfile[][] {
    return profilesOf(this.policy);
  }

  /** Milliseconds the policy spent deciding (FastGen's profiling). */
  get profileMs(): number {
    return this.policy.decideMs;
  }

  /** What the backend must collect during this pass's attention over `layer` (n new tokens). */
  needs(layer: number, n: number): LayerNeeds {
    return this.policy.needs(layer, n, this.seqLength);
  }

  /** Whether a policy may evict after attention (false: backends can skip the per-layer hook). */
  get evicts(): boolean {
    return this.policy.evicts;
  }

  /**
   * Reserve the slots of n new tokens (positions startPos…) in every KV head of one layer, for a backend whose
   * kernels write the keys and values themselves: into the last n slots of each head's store.
   */
  reserveLayer(layer: number, n: number, startPos: number, tokens: ArrayLike<number>): void {
    if (this.released) throw new Error('internal: sequence cache used after release');
    for (let h = 0; h < this.shape.nKvHeads; h++) {
      const st = this.store(layer, h);
      st.reserveCapacity(st.length + n);
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
   * After a layer's attention over n new tokens at positions startPos…: the policy decides and evicts.
   * q: [n, nHeads × headDim] after RoPE (rows `qStride` apart), the pass's queries (the cache itself does not need
   * them; subclasses such as the evaluator's tap look at them). stats: what needs() asked for, by query head.
   */
  finishLayer(layer: number, q: Float32Array, qStride: number, n: number, startPos: number, stats?: PromptAttentionStats): void {
    this.policy.afterAttention(this, { layer, n, startPos, stats });
  }

  /** Evict from one head every token `policy` does not keep when the newest token is at `current` (the CPU executor). */
  apply(layer: number, kvHead: number, policy: HeadPolicy, current: number): void {
    if (policy.full) return;
    const st = this.store(layer, kvHead);
    if (this.keepScratch.length < st.length) this.keepScratch = new Uint8Array(st.length * 2);
    applyRule(st, keepRule(policy, current + 1), current, this.keepScratch);
  }

  /** Record that n tokens went through the model (called once per forward pass, after the last layer). */
  advance(n: number): void {
    this.seqLength += n;
  }

  /** Bytes of K/V held for kept tokens (cheap: no per-head report is built). */
  kvBytes(): number {
    let kept = 0;
    for (const st of this.stores) kept += st.length;
    return kept * 2 * this.shape.headDim * this.pool.elementBytes;
  }

  /** Bytes a full cache would hold for the tokens seen so far. */
  fullKvBytes(): number {
    return this.seqLength * this.shape.nLayers * this.shape.nKvHeads * 2 * this.shape.headDim * this.pool.elementBytes;
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
        const name = this.headPolicy(l, h).name;
        headsPerPolicy[name] = (headsPerPolicy[name] ?? 0) + 1;
      }
    }
    const kvBytes = kept * perToken;
    const fullKvBytes = this.fullKvBytes();
    return {
      sequenceTokens: this.seqLength,
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
   * the same order, so the copy behaves bit for bit like the original), positions, token ids, scores, and a fork of
   * the policy's state (per-head choices, profiles). Lets several continuations share one compressed prefill without recomputing it.
   */
  fork(): SequenceKv {
    const copy = new SequenceKv(this.pool, this.shape, this.options, this.classes, this.policy.fork());
    try {
      return this.copyInto(copy);
    } catch (e) {
      copy.release(); // the pool ran short mid-copy: give back what the copy took
      throw e;
    }
  }

  /** fork()'s work, for subclasses that fork into their own type. */
  protected copyInto<T extends SequenceKv>(copy: T): T {
    if (this.released) throw new Error('internal: fork() of a released sequence cache');
    const hd = this.shape.headDim;
    const kBuf = new Float32Array(hd);
    const vBuf = new Float32Array(hd);
    const arena = this.pool.arena;
    // Dense slots in the same order: the copy's page j holds exactly the rows of the original's page j.
    const pairs: number[] = [];
    for (let i = 0; i < this.stores.length; i++) {
      const src = this.stores[i];
      const dst = copy.stores[i];
      if (arena.copyPages) {
        // The arena copies each page's slot metadata too: a head the device compacted stays so in the copy.
        dst.metaStale = src.metaStale;
        for (let s = 0; s < src.length; s++) dst.reserve(src.positions[s], src.tokenIds[s], src.scores[s]);
        src.pages.forEach((p, j) => pairs.push(p, dst.pages[j]));
        continue;
      }
      for (let s = 0; s < src.length; s++) {
        // Through f32 scratch (exact for an f16 cache too): appending may grow the arena and replace its views.
        src.readKey(s, kBuf);
        src.readValue(s, vBuf);
        dst.append(kBuf, 0, vBuf, 0, src.positions[s], src.tokenIds[s], src.scores[s]);
      }
    }
    if (pairs.length > 0) arena.copyPages!(pairs);
    copy.seqLength = this.seqLength;
    return copy;
  }

  /**
   * Every head's kept positions in slot order, [layer × nKvHeads + kvHead][slot]: from the CPU's metadata, or read
   * back from the arena for heads the device compacted itself (HeadStore.metaStale).
   */
  async slotPositions(): Promise<number[][]> {
    const stale = this.stores.some((st) => st.metaStale);
    if (stale && !this.pool.arena.readSlotMeta) throw new Error('internal: a head\'s slot metadata is stale and its arena cannot read it back');
    const meta = stale ? await this.pool.arena.readSlotMeta!(this.pool) : undefined;
    const pt = this.pool.pageTokens;
    return this.stores.map((st) => {
      if (!st.metaStale) return Array.from(st.positions.subarray(0, st.length));
      return Array.from({ length: st.length }, (_, s) => meta![st.pages[Math.floor(s / pt)] * pt + (s % pt)] & 0x3fffffff);
    });
  }

  /** Return every page to the pool. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const st of this.stores) st.release();
  }
}
