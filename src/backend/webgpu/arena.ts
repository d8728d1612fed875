/**
 * The KV arena of the WebGPU backend: the page pool's pages live in GPU buffers. The PagePool (src/cache) allocates
 * and frees page ids exactly as on the CPU backends, so byte accounting is unchanged; this arena only makes sure that
 * every page id the pool created has storage on the GPU, and keeps each sequence's page tables there.
 *
 * GPU state per arena:
 *   kv parts   f32 or f16 pages (page layout of page-pool.ts; halves packed two per u32), at most one storage binding each: page p is in part
 *              ⌊p / pagesPerPart⌋; the last part grows (by copying) as the pool creates pages
 *   meta       u32 per (page, row): position | token classes << 30;   scores: f32 per (page, row)
 *   tables     u32 [sequence slot][layer][kvHead][maxPages]: each head's page ids, mirrored from HeadStore.pages
 * The CPU views (`floats`, `halves`) are empty: HeadStores never touch K/V on this backend. They keep per-slot
 * metadata on the CPU until the GPU first evicts from a head; from then on `meta` alone holds it (HeadStore.keepFirst,
 * readSlotMeta).
 */
import { FastgenError } from '../../errors.js';
import type { KvArena, PagePool } from '../../cache/page-pool.js';
import type { SequenceKv } from '../../cache/sequence-kv.js';
import type { HeadStore } from '../../cache/head-store.js';
import { GrowableBuffer, StepEncoder, type GpuDevice } from './encoder.js';
import { readU32 } from './io.js';
import { GpuOps } from './ops.js';
import { maxKvParts, type CacheShape } from './wgsl-cache.js';

export class GpuKvArena implements KvArena {
  readonly floats = new Float32Array(0);
  readonly halves = new Uint16Array(0);
  readonly baseByteOffset = 0;
  /** 4-byte words the pool asked for (createdPages × words per page). */
  private words = 0;

  kv: GPUBuffer[] = [];
  meta?: GPUBuffer;
  scores?: GPUBuffer;
  tables?: GPUBuffer;
  /** Pages with storage on the GPU. */
  private capacityPages = 0;
  private pagesPerPart = 0;
  private pageTokens = 0;
  private headDim = 0;
  private maxPages = 0;
  private seqSlots = 0;
  private readonly slotOf = new Map<SequenceKv, number>();
  /** Per slot, per (layer, kvHead): the store whose pages the GPU table holds (its pagesSynced says how many). */
  private shadow: (HeadStore | undefined)[][] = [];
  /** Page copies (src, dst) asked for by fork(), done at the next sync, before the next pass. */
  private pendingCopies: number[] = [];
  private ops?: GpuOps;
  /** The page-table patches of a pass (slots()), and the encoder that applies them. */
  private readonly patchBuf: GrowableBuffer;
  private patchEncoder?: StepEncoder;
  /** K/V in f16 (two halves per u32 word) rather than f32. */
  private half = false;

  constructor(private readonly gpu: GpuDevice, private readonly shapeOf: { nLayers: number; nKvHeads: number; maxSeqLen: number }) {
    this.patchBuf = new GrowableBuffer(gpu, 'KV page-table patches');
  }

  ensureFloats(count: number): void {
    this.words = Math.max(this.words, count);
  }

  /**
   * fork(): the copy's pages get the original's K/V, slot metadata and scores on the GPU. The pages may not have GPU
   * storage yet, so the copies wait for the next sync(), which runs before any pass is encoded: queue order puts them
   * ahead of every later kernel, and a source page freed meanwhile is not written before they run.
   */
  copyPages(pairs: readonly number[]): void {
    this.pendingCopies.push(...pairs);
  }

  /** Run the pending page copies (one copy-pages kernel for all). */
  private async runCopies(): Promise<void> {
    const q = this.pendingCopies;
    if (q.length === 0) return;
    this.pendingCopies = [];
    const pairs = await this.gpu.buffer(q.length * 4, 'fork page pairs', Uint32Array.from(q));
    const enc = new StepEncoder(this.gpu);
    (this.ops ??= new GpuOps(this.gpu)).copyPages(enc, this.shape(), { meta: this.meta!, scores: this.scores!, kv: this.kv }, pairs, q.length / 2);
    enc.submit();
    pairs.destroy();
  }

  /** Every page's slot metadata, after the pending page copies (tests and inspection: never per token). */
  async readSlotMeta(pool: PagePool): Promise<Uint32Array> {
    await this.sync(pool);
    if (!this.meta) return new Uint32Array(0);
    return readU32(this.gpu, this.meta, 0, this.meta.size / 4);
  }

  /** Compile-time shape of the cache kernels for the current storage. */
  shape(): CacheShape {
    return { parts: this.kv.length, pagesPerPart: this.pagesPerPart, pageTokens: this.pageTokens, headDim: this.headDim, half: this.half };
  }

  /** Bytes of GPU memory this arena holds now: KV pages (allocated ahead of the pool's use), slot metadata, scores, tables. */
  get gpuBytes(): number {
    return this.kv.reduce((n, b) => n + b.size, 0) + (this.meta?.size ?? 0) + (this.scores?.size ?? 0) + (this.tables?.size ?? 0);
  }

  /** Free the GPU memory (the pool must hold no page any more: a benchmark's throw-away pool). */
  destroy(): void {
    for (const b of [...this.kv, this.meta, this.scores, this.tables]) b?.destroy();
    this.kv = [];
    this.meta = this.scores = this.tables = undefined;
    this.capacityPages = 0;
    this.seqSlots = 0;
    this.slotOf.clear();
    this.shadow = [];
  }

  get tableStride(): number {
    return this.maxPages;
  }

  /** Give every page the pool created storage on the GPU (growing the buffers); called before each pass. */
  async sync(pool: PagePool): Promise<void> {
    if (this.pageTokens === 0) {
      if (pool.kvDtype === 'f16' && pool.headDim % 2 !== 0) {
        throw new FastgenError('INVALID_OPTION', `an f16 KV cache on the webgpu backend packs two halves per word and needs an even head dim; this model's is ${pool.headDim} (use --kv-dtype f32)`, 'kvDtype');
      }
      this.half = pool.kvDtype === 'f16';
      this.pageTokens = pool.pageTokens;
      this.headDim = pool.headDim;
      this.pagesPerPart = Math.floor(this.gpu.ctx.maxBinding / pool.pageBytes);
      this.maxPages = Math.ceil(this.shapeOf.maxSeqLen / pool.pageTokens) + 1;
    }
    const pageWords = pool.pageBytes / 4;
    const needed = Math.ceil(this.words / pageWords);
    if (needed <= this.capacityPages) return this.runCopies();
    const maxParts = maxKvParts(this.gpu.ctx.maxStorageBuffers);
    if (Math.ceil(needed / this.pagesPerPart) > maxParts) {
      throw new FastgenError('GPU_OUT_OF_MEMORY', `the KV cache would need ${needed} pages (${needed * pool.pageBytes} bytes), more than the ${maxParts} storage bindings of ${this.pagesPerPart * pool.pageBytes} bytes this backend binds; set a KV budget (--kv-budget) or use a compressing cache policy`);
    }
    // Grow ahead by half of what is held (at least 4096 pages), within what the kernels can bind: a growth copies the
    // last KV part and the slot metadata, and waits for the GPU, so it must come seldom. With at most 4096 pages more,
    // a 7B batch of 8 (8192 heads, a new page each every 16 tokens) grew every ~8 steps (H200 run of 10:24).
    const grown = Math.min(Math.max(needed + 4096, Math.ceil(this.capacityPages * 1.5)), maxParts * this.pagesPerPart);
    const parts = Math.ceil(grown / this.pagesPerPart);
    const enc = this.gpu.device.createCommandEncoder();
    const next: GPUBuffer[] = [];
    for (let i = 0; i < parts; i++) {
      const pages = i < parts - 1 ? this.pagesPerPart : grown - i * this.pagesPerPart;
      const old = this.kv[i];
      const oldPages = old ? Math.min(this.pagesPerPart, this.capacityPages - i * this.pagesPerPart) : 0;
      if (old && oldPages === pages) { next.push(old); continue; }
      const buf = await this.gpu.buffer(pages * pool.pageBytes, `KV cache part ${i} (${pages} pages)`);
      if (old) enc.copyBufferToBuffer(old, 0, buf, 0, oldPages * pool.pageBytes);
      next.push(buf);
    }
    const rows = grown * this.pageTokens * 4;
    const meta = await this.gpu.buffer(rows, 'KV slot metadata');
    const scores = await this.gpu.buffer(rows, 'KV slot scores');
    if (this.meta && this.scores) {
      const oldRows = this.capacityPages * this.pageTokens * 4;
      enc.copyBufferToBuffer(this.meta, 0, meta, 0, oldRows);
      enc.copyBufferToBuffer(this.scores, 0, scores, 0, oldRows);
    }
    this.gpu.device.queue.submit([enc.finish()]);
    for (const b of this.kv) if (!next.includes(b)) b.destroy();
    this.meta?.destroy();
    this.scores?.destroy();
    this.kv = next;
    this.meta = meta;
    this.scores = scores;
    this.capacityPages = grown;
    await this.runCopies();
  }

  /**
   * The sequences' table slots (assigned on first sight; slots of sequences that hold no page any more are reused),
   * with every head's page table brought up to date on the GPU.
   */
  async slots(seqs: readonly SequenceKv[]): Promise<number[]> {
    const { nLayers, nKvHeads } = this.shapeOf;
    const heads = nLayers * nKvHeads;
    const out: number[] = [];
    const patches: number[] = [];
    for (const kv of seqs) {
      let slot = this.slotOf.get(kv);
      if (slot === undefined) {
        slot = this.freeSlot(seqs);
        if (slot === undefined) {
          await this.growSlots(Math.max(4, this.seqSlots * 2));
          slot = this.freeSlot(seqs)!;
        }
        this.slotOf.set(kv, slot);
        this.shadow[slot] = new Array<HeadStore | undefined>(heads);
      }
      out.push(slot);
      const shadows = this.shadow[slot];
      for (let i = 0; i < heads; i++) {
        const st = kv.stores[i];
        const pages = st.pages;
        // The same store (a slot may pass to another sequence), and every page it holds already in the table.
        const mirrored = shadows[i] === st;
        if (mirrored && st.pagesSynced === pages.length) continue;
        if (pages.length > this.maxPages) throw new Error(`internal: ${pages.length} pages in one head, the table holds ${this.maxPages}`);
        const at = (slot * heads + i) * this.maxPages;
        for (let j = mirrored ? st.pagesSynced : 0; j < pages.length; j++) patches.push(at + j, pages[j]);
        st.pagesSynced = pages.length;
        shadows[i] = st;
      }
    }
    // Changed table entries as (index, page) pairs, applied by one kernel: a decode step changes one entry in the
    // heads whose tail page came or went (one in pageTokens of them, every step: thousands of writeBuffer calls at a
    // 7B batch of 8, where this is one upload and one dispatch).
    if (patches.length > 0) {
      const list = await this.patchBuf.ensure(patches.length * 4);
      this.gpu.device.queue.writeBuffer(list, 0, Uint32Array.from(patches));
      const enc = (this.patchEncoder ??= new StepEncoder(this.gpu));
      (this.ops ??= new GpuOps(this.gpu)).patchTables(enc, this.tables!, list, patches.length / 2);
      enc.submit();
    }
    return out;
  }

  private freeSlot(busy: readonly SequenceKv[]): number | undefined {
    const used = new Set(this.slotOf.values());
    for (let s = 0; s < this.seqSlots; s++) if (!used.has(s)) return s;
    // A sequence that holds no page (released, or not started) gives its slot up, unless it is in this pass.
    for (const [kv, s] of this.slotOf) {
      if (busy.includes(kv)) continue;
      if (kv.stores.every((st) => st.pages.length === 0)) {
        this.slotOf.delete(kv);
        return s;
      }
    }
    return undefined;
  }

  private async growSlots(slots: number): Promise<void> {
    const { nLayers, nKvHeads } = this.shapeOf;
    const bytes = slots * nLayers * nKvHeads * this.maxPages * 4;
    const tables = await this.gpu.buffer(bytes, 'KV page tables');
    if (this.tables) {
      const enc = this.gpu.device.createCommandEncoder();
      enc.copyBufferToBuffer(this.tables, 0, tables, 0, this.seqSlots * nLayers * nKvHeads * this.maxPages * 4);
      this.gpu.device.queue.submit([enc.finish()]);
      this.tables.destroy();
    }
    this.tables = tables;
    this.seqSlots = slots;
  }
}
