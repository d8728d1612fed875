import { KvPoolExhaustedError } from '../errors.js';
import { DEFAULT_PAGE_TOKENS, pageBytes, pageElements } from './page-layout.js';

/**
 * A pool of fixed-size KV pages shared by every sequence, layer and KV head.
 *
 * One page holds `pageTokens` tokens of ONE (layer, KV head), laid out as page-layout.ts says.
 * Storage grows in slabs on demand, up to the byte budget, so the process only holds memory that was asked for;
 * a page freed by one sequence goes on the free list and is the next one handed out, to any sequence.
 *
 * The storage itself is supplied by the backend through a `KvArena` (a JS Float32Array for the reference backend,
 * a region of WebAssembly memory for the wasm backend), so kernels can read pages where they lie.
 */
export interface KvArena {
  /** The current f32 view of the arena. Re-read it after `ensureFloats`: growing may replace the view. */
  readonly floats: Float32Array;
  /** The same bytes as raw 16-bit halves (for an f16 KV cache). */
  readonly halves: Uint16Array;
  /** Make room for at least `count` 4-byte words (may reallocate; contents are preserved). */
  ensureFloats(count: number): void;
  /** Byte offset of the arena inside the backend's memory (0 for a plain array). */
  readonly baseByteOffset: number;
  /**
   * An arena whose K/V the CPU cannot read (a GPU's): copy whole pages there, (src, dst) page id pairs, with whatever
   * per-row data the backend keeps beside them. fork() then copies slot metadata on the CPU and pages through this.
   */
  copyPages?(pairs: readonly number[]): void;
  /**
   * An arena that keeps each slot's metadata beside its K/V and evicts there (a GPU's): that metadata read back, a u32
   * per (page, row): position | token classes << 30. For the stores it compacted itself (HeadStore.metaStale).
   */
  readSlotMeta?(pool: PagePool): Promise<Uint32Array>;
}

/** A plain growable JS arena: used by the reference backend and in tests. */
export class JsArena implements KvArena {
  floats = new Float32Array(0);
  halves = new Uint16Array(0);
  readonly baseByteOffset = 0;
  ensureFloats(count: number): void {
    if (count <= this.floats.length) return;
    const grown = new Float32Array(Math.max(count, Math.ceil(this.floats.length * 1.5)));
    grown.set(this.floats);
    this.floats = grown;
    this.halves = new Uint16Array(grown.buffer);
  }
}

export type KvDtype = 'f32' | 'f16';

export interface PagePoolOptions {
  headDim: number;
  /** Tokens per page (default 16). */
  pageTokens?: number;
  /** Upper bound on page bytes; default: unlimited. */
  budgetBytes?: number;
  /** Pages added to the arena each time it must grow (default 64). */
  slabPages?: number;
  /** Element type of the stored keys and values (default f32). */
  kvDtype?: KvDtype;
  arena?: KvArena;
}

export class PagePool {
  readonly headDim: number;
  readonly pageTokens: number;
  readonly kvDtype: KvDtype;
  /** Bytes per stored K or V element: 4 (f32) or 2 (f16). */
  readonly elementBytes: number;
  /** Elements (of kvDtype) in one page: K and V. */
  readonly pageElements: number;
  /** 4-byte words in one page. */
  private readonly pageWords: number;
  readonly pageBytes: number;
  readonly budgetBytes: number;
  readonly maxPages: number;
  readonly arena: KvArena;
  private readonly slabPages: number;
  /** Pages that exist in the arena (allocated storage). */
  private createdPages = 0;
  private readonly freeList: number[] = [];
  private inUse = 0;
  /** Highest number of pages simultaneously in use, for reports. */
  peakPagesInUse = 0;

  constructor(opts: PagePoolOptions) {
    this.headDim = opts.headDim;
    this.pageTokens = opts.pageTokens ?? DEFAULT_PAGE_TOKENS;
    this.kvDtype = opts.kvDtype ?? 'f32';
    this.elementBytes = this.kvDtype === 'f16' ? 2 : 4;
    this.pageElements = pageElements(this.pageTokens, this.headDim);
    this.pageBytes = pageBytes(this.pageTokens, this.headDim, this.elementBytes);
    // Keep pages 4-byte aligned so both views address them.
    this.pageWords = Math.ceil(this.pageBytes / 4);
    this.budgetBytes = opts.budgetBytes ?? Number.POSITIVE_INFINITY;
    this.maxPages = Math.floor(this.budgetBytes / this.pageBytes);
    this.slabPages = opts.slabPages ?? 64;
    this.arena = opts.arena ?? new JsArena();
  }

  get pagesInUse(): number {
    return this.inUse;
  }
  /** Pages that can still be handed out without exceeding the budget. */
  get pagesFree(): number {
    return Number.isFinite(this.maxPages) ? this.maxPages - this.inUse : Number.POSITIVE_INFINITY;
  }
  get bytesInUse(): number {
    return this.inUse * this.pageBytes;
  }
  /** Bytes of storage the arena holds for pages (grows in slabs, never beyond the budget). */
  get bytesReserved(): number {
    return this.createdPages * this.pageBytes;
  }

  /** Element offset of page `id` within the arena's view for the KV dtype (`floats` for f32, `halves` for f16). */
  pageOffset(id: number): number {
    return this.kvDtype === 'f16' ? id * this.pageWords * 2 : id * this.pageWords;
  }

  canAllocate(pages: number): boolean {
    return this.inUse + pages <= this.maxPages;
  }

  allocate(): number {
    if (this.inUse >= this.maxPages) {
      throw new KvPoolExhaustedError(
        `KV page pool exhausted: needed 1 more page of ${this.pageBytes} bytes, but all ${this.maxPages} pages ` +
          `(${this.budgetBytes} bytes budget) are in use. Raise the KV budget, lower max tokens, or use a compressing cache policy.`,
        this.pageBytes,
        0,
      );
    }
    let id = this.freeList.pop();
    if (id === undefined) {
      const grow = Math.min(this.slabPages, Number.isFinite(this.maxPages) ? this.maxPages - this.createdPages : this.slabPages);
      this.arena.ensureFloats((this.createdPages + grow) * this.pageWords);
      // Hand out the new slab lowest id first: push in reverse so pop() yields createdPages.
      for (let p = this.createdPages + grow - 1; p > this.createdPages; p--) this.freeList.push(p);
      id = this.createdPages;
      this.createdPages += grow;
    }
    this.inUse++;
    if (this.inUse > this.peakPagesInUse) this.peakPagesInUse = this.inUse;
    return id;
  }

  free(id: number): void {
    if (id < 0 || id >= this.createdPages) throw new Error(`internal: freeing page ${id} that was never allocated`);
    this.inUse--;
    this.freeList.push(id);
  }

  /** Throw a clear error if `pages` more pages cannot be had (used for admission before starting work). */
  reserveCheck(pages: number): void {
    if (!this.canAllocate(pages)) {
      const needed = pages * this.pageBytes;
      const free = this.pagesFree * this.pageBytes;
      throw new KvPoolExhaustedError(
        `KV page pool cannot serve ${pages} pages (${needed} bytes); only ${this.pagesFree} pages (${free} bytes) of the ` +
          `${this.budgetBytes}-byte budget are free. Raise the KV budget or shorten the request.`,
        needed,
        free,
      );
    }
  }
}
