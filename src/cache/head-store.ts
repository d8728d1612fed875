import type { PagePool } from './page-pool.js';
import type { TokenClasses } from '../tokenizer/token-classes.js';
import { PUNCT, SPECIAL } from './head-policy.js';
import { keyOffsetInPage, valueOffsetInPage } from './page-layout.js';
import { f16Table, f32ToF16 } from '../half.js';

/**
 * The kept tokens of one (sequence, layer, KV head): keys (after RoPE) and values in pool pages, plus per-slot
 * metadata — original position, token id and cumulative attention score.
 *
 * Slots are dense: slot s lives in page pages[s / pageTokens] at row s % pageTokens. Evicting a slot moves the last
 * slot into the hole (attention does not care about order), so the store never has gaps and a page that empties at the
 * tail goes straight back to the pool.
 */
export class HeadStore {
  readonly pool: PagePool;
  readonly headDim: number;
  /** Page ids, in slot order. Changed only at the tail, by reserve/evict/release. */
  readonly pages: number[] = [];
  /**
   * How many of `pages`, from the front, a GPU arena's mirror of this head's page table still holds as they are: the
   * arena sets it to pages.length after writing the table, and popping a page lowers it (pages change only at the
   * tail), so the next write starts there instead of comparing whole tables.
   */
  pagesSynced = 0;
  length = 0;
  /**
   * The per-slot metadata below no longer describes the slots: the device compacted this head itself (keepFirst) and
   * holds each slot's position, classes and score beside its K/V; SequenceKv.slotPositions reads them back from the
   * arena. Reserving then writes no metadata, and the CPU can no longer evict from this head.
   */
  metaStale = false;
  positions: Int32Array;
  tokenIds: Int32Array;
  /** Cumulative attention received (summed over the KV head's query heads); used by `frequent`. */
  scores: Float32Array;
  /**
   * Per slot: the token's classes as bits (SPECIAL, PUNCT). Eviction tests them every decode step; a per-slot copy
   * reads sequentially, where the per-vocabulary tables cost a cache miss per slot once the weights went through.
   */
  classBits: Uint8Array;
  private readonly classes: TokenClasses | undefined;

  /** classes: how to classify tokens for `special`/`punct` (none: no token is either). */
  constructor(pool: PagePool, classes?: TokenClasses, initialCapacity = 16) {
    this.pool = pool;
    this.classes = classes;
    this.headDim = pool.headDim;
    this.positions = new Int32Array(initialCapacity);
    this.tokenIds = new Int32Array(initialCapacity);
    this.scores = new Float32Array(initialCapacity);
    this.classBits = new Uint8Array(initialCapacity);
  }

  /**
   * Element offset of slot s's key in the arena view of the KV dtype (`arena.floats` for f32, `arena.halves` for
   * f16); its value is at keyOffset + pageTokens × headDim.
   */
  keyOffset(slot: number): number {
    const pt = this.pool.pageTokens;
    const page = this.pages[(slot / pt) | 0];
    return this.pool.pageOffset(page) + keyOffsetInPage(slot % pt, this.headDim);
  }
  valueOffset(slot: number): number {
    return this.pool.pageOffset(this.pages[Math.floor(slot / this.pool.pageTokens)]) + valueOffsetInPage(slot % this.pool.pageTokens, this.pool.pageTokens, this.headDim);
  }

  /** Bytes of K and V actually held for the kept tokens. */
  get bytes(): number {
    return this.length * 2 * this.headDim * this.pool.elementBytes;
  }

  /** Copy slot s's key (or value) into out[outOff..] as f32, whatever the KV dtype. */
  readKey(slot: number, out: Float32Array, outOff = 0): void {
    this.readAt(this.keyOffset(slot), out, outOff);
  }
  readValue(slot: number, out: Float32Array, outOff = 0): void {
    this.readAt(this.valueOffset(slot), out, outOff);
  }
  private readAt(off: number, out: Float32Array, outOff: number): void {
    const d = this.headDim;
    if (this.pool.kvDtype === 'f16') {
      const h = this.pool.arena.halves;
      const table = f16Table();
      for (let i = 0; i < d; i++) out[outOff + i] = table[h[off + i]];
    } else {
      out.set(this.pool.arena.floats.subarray(off, off + d), outOff);
    }
  }

  /**
   * Append one token's slot — page, position, token id, score — without its key and value, which the caller writes
   * into the slot's page (a backend whose kernels write K/V where they compute them). Returns the new slot.
   */
  reserve(position: number, tokenId: number, score = 0): number {
    const slot = this.length;
    if (slot % this.pool.pageTokens === 0) {
      this.pages.push(this.pool.allocate());
    }
    if (this.metaStale) {
      this.length = slot + 1;
      return slot;
    }
    if (slot >= this.positions.length) this.growMeta(slot + 1);
    this.positions[slot] = position;
    this.tokenIds[slot] = tokenId;
    this.scores[slot] = score;
    this.classBits[slot] = this.classes ? this.classes.special[tokenId] * SPECIAL | this.classes.punct[tokenId] * PUNCT : 0;
    this.length = slot + 1;
    return slot;
  }

  /** Append one token; `k` and `v` are read from src at the given offsets. Returns the new slot. */
  append(src: Float32Array, kOff: number, vSrc: Float32Array, vOff: number, position: number, tokenId: number, score = 0): number {
    const slot = this.reserve(position, tokenId, score);
    const ko = this.keyOffset(slot);
    const vo = this.valueOffset(slot);
    const d = this.headDim;
    if (this.pool.kvDtype === 'f16') {
      const h = this.pool.arena.halves;
      for (let i = 0; i < d; i++) {
        h[ko + i] = f32ToF16(src[kOff + i]);
        h[vo + i] = f32ToF16(vSrc[vOff + i]);
      }
    } else {
      const floats = this.pool.arena.floats;
      for (let i = 0; i < d; i++) {
        floats[ko + i] = src[kOff + i];
        floats[vo + i] = vSrc[vOff + i];
      }
    }
    return slot;
  }

  /** Remove one slot: the last slot moves into it; a tail page that empties is returned to the pool. */
  evict(slot: number): void {
    const last = this.length - 1;
    if (slot < 0 || slot > last) throw new Error(`internal: evicting slot ${slot} of ${this.length}`);
    if (this.metaStale) throw new Error('internal: evicting on the CPU from a head whose slot metadata the device holds');
    if (slot !== last) {
      const view = this.pool.kvDtype === 'f16' ? this.pool.arena.halves : this.pool.arena.floats;
      // An arena without a CPU view (a GPU's) moves K/V with its own kernel; this is then a metadata move (a 7B batch
      // replays thousands of these a step).
      if (view.length > 0) {
        const d = this.headDim;
        const half = this.pool.pageTokens * d;
        const to = this.keyOffset(slot);
        const from = this.keyOffset(last);
        view.copyWithin(to, from, from + d);
        view.copyWithin(to + half, from + half, from + half + d);
      }
      this.positions[slot] = this.positions[last];
      this.tokenIds[slot] = this.tokenIds[last];
      this.scores[slot] = this.scores[last];
      this.classBits[slot] = this.classBits[last];
    }
    this.length = last;
    if (last % this.pool.pageTokens === 0) {
      this.pool.free(this.pages.pop()!);
      if (this.pages.length < this.pagesSynced) this.pagesSynced = this.pages.length;
    }
  }

  /**
   * The device evicted from this head and compacted it itself, keeping its first `kept` slots (a GPU arena keeps each
   * slot's position, classes and score beside its K/V and evicts there): return the pages past them and mark the
   * metadata here stale instead of replaying the moves. A 7B batch of 8 does this for ~7500 heads a step, and moving
   * four metadata arrays' slots cost 0.5–1.7 µs a head in cache misses (dev/cache/replay-bench.ts); this touches the
   * store and, every pageTokens slots, its page list.
   */
  keepFirst(kept: number): void {
    if (!(kept >= 0 && kept <= this.length)) throw new Error(`internal: keeping ${kept} of ${this.length} slots`);
    this.metaStale = true;
    this.length = kept;
    const pagesNeeded = Math.ceil(kept / this.pool.pageTokens);
    while (this.pages.length > pagesNeeded) this.pool.free(this.pages.pop()!);
    if (this.pages.length < this.pagesSynced) this.pagesSynced = this.pages.length;
  }

  /**
   * Keep only the slots for which keep[slot] is 1. Compacts in one pass (kept slots from the tail fill the holes),
   * then frees emptied pages.
   */
  retain(keep: Uint8Array): number {
    let removed = 0;
    // Walk from the end so that the slot moved into a hole has already been judged.
    for (let s = this.length - 1; s >= 0; s--) {
      if (!keep[s]) {
        const last = this.length - 1;
        // evict() moves `last` into s; carry its keep flag along.
        keep[s] = keep[last];
        this.evict(s);
        removed++;
      }
    }
    return removed;
  }

  /**
   * Room for `slots` slots' metadata without growing, plus a quarter: a prompt (or a filled context) of n tokens leaves
   * the arrays exactly full at a power of two, and the first decode step would then grow every head of the batch at
   * once (a 7B batch of 8 at 4096 tokens: a gigabyte copied in one step).
   */
  reserveCapacity(slots: number): void {
    if (!this.metaStale && slots > this.positions.length) this.growMeta(Math.ceil(slots * 1.25));
  }

  /** Return every page to the pool. */
  release(): void {
    for (const p of this.pages) this.pool.free(p);
    this.pages.length = 0;
    this.pagesSynced = 0;
    this.length = 0;
    this.metaStale = false;
  }

  private growMeta(min: number): void {
    const cap = Math.max(min, this.positions.length * 2);
    const grow = <T extends Int32Array | Float32Array | Uint8Array>(a: T, make: (n: number) => T): T => {
      const b = make(cap);
      b.set(a);
      return b;
    };
    this.positions = grow(this.positions, (n) => new Int32Array(n));
    this.tokenIds = grow(this.tokenIds, (n) => new Int32Array(n));
    this.scores = grow(this.scores, (n) => new Float32Array(n));
    this.classBits = grow(this.classBits, (n) => new Uint8Array(n));
  }
}
