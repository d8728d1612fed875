/**
 * The WASM SIMD backend: the same transformer as cpu-ref, run by the kernels in kernels/ on every core.
 *
 * Memory (one shared WebAssembly.Memory, bump-allocated in this order):
 *   weights (f32, f16 or q8_0)  |  rope tables  |  activation scratch for R rows  |  per-step attention scratch
 *   |  job lists  |  the KV page arena (last, so it can grow in place)
 * The KV pages of every sequence live in that arena: the cache's HeadStores write keys and values straight into wasm
 * memory, and the attention kernel reads them through each head's page table.
 *
 * One forward pass stacks the new tokens of every sequence in the batch into one [R, dim] activation matrix, so each
 * weight matrix is streamed once per step for all sequences. Per layer there is one dispatch to the threads:
 *   [attention(l) for every sequence and head] → Wo, residual, FFN, residual → norm, QKV, RoPE of layer l+1
 * and between dispatches the JS side appends the new keys/values to the cache and lets the cache policy profile or
 * evict (the policy logic is shared with every backend; see src/cache).
 */
import { InvalidOptionError } from '../../errors.js';
import type { KvArena } from '../../cache/page-pool.js';
import type { HeadAttentionStats } from '../../cache/recovery.js';
import { tensorToF32 } from '../../model/describe.js';
import type { LoadedCheckpoint, ModelConfig, Tensor } from '../../model/types.js';
import { ropeInvFreq } from '../cpu-ref/rope.js';
import type { Backend, ForwardItem } from '../types.js';
import { JobList } from './jobs.js';
import { WorkerPool } from './pool.js';
import { WasmRuntime, type Ptr, type Q8Matrix } from './runtime.js';
import { q8ActBytes, q8Blocks, SPLIT, TAIL } from './layout.js';

/** Up to this many rows, small ops ride as TAIL records of the phase before them instead of a phase of their own. */
const TAIL_ROWS = 4;

export type WasmWeightDtype = 'f32' | 'f16' | 'q8_0';

/** A weight matrix [rows, cols] in wasm memory, in the backend's dtype. */
type Matrix = { kind: 'f32' | 'f16'; ptr: Ptr; rows: number; cols: number } | { kind: 'q8_0'; q: Q8Matrix; rows: number; cols: number };

interface Layer {
  attnNorm: Ptr;
  ffnNorm: Ptr;
  wq: Matrix;
  wk: Matrix;
  wv: Matrix;
  wo: Matrix;
  wGate: Matrix;
  wUp: Matrix;
  wDown: Matrix;
  bq?: Ptr;
  bk?: Ptr;
  bv?: Ptr;
  qNorm?: Ptr;
  kNorm?: Ptr;
}

/** The KV arena inside wasm memory. It grows in place while it is the last allocation, else it moves to the end. */
class WasmKvArena implements KvArena {
  floats: Float32Array;
  halves: Uint16Array;
  private base: Ptr;
  private capacityBytes: number;

  constructor(private readonly rt: WasmRuntime) {
    this.base = rt.alloc(0, 64);
    this.capacityBytes = 0;
    this.floats = rt.f32(this.base, 0);
    this.halves = rt.u16(this.base, 0);
  }

  get baseByteOffset(): number {
    return this.base;
  }

  ensureFloats(count: number): void {
    const need = count * 4;
    if (need <= this.capacityBytes) return;
    const end = this.base + this.capacityBytes;
    if (this.rt.mark() === end && this.rt.alloc(need - this.capacityBytes, 16) === end) {
      // extended in place (pages are multiples of 16 bytes, so the arena's end stays aligned)
    } else {
      // Someone allocated after us: move to the end (kernels address pages relative to the current base).
      const grown = Math.max(need, Math.ceil(this.capacityBytes * 1.5));
      const next = this.rt.alloc(grown, 64);
      this.rt.u8(next, this.capacityBytes).set(this.rt.u8(this.base, this.capacityBytes));
      this.base = next;
      this.capacityBytes = grown;
      this.refreshViews();
      return;
    }
    this.capacityBytes = need;
    this.refreshViews();
  }

  private refreshViews(): void {
    this.floats = this.rt.f32(this.base, this.capacityBytes / 4);
    this.halves = this.rt.u16(this.base, this.capacityBytes / 2);
  }
}

export interface WasmBackendOptions {
  dtype?: WasmWeightDtype;
  /** Threads including the calling one (default 2). */
  threads?: number;
  /** Most token rows one forward pass holds (default: the context length, at most 1024). Larger batches are split. */
  maxRows?: number;
  /** Most sequences one forward pass holds (default 64). Larger batches are split. */
  maxItems?: number;
}

export class WasmBackend implements Backend {
  readonly name = 'wasm';
  readonly config: ModelConfig;
  readonly weightDtype: WasmWeightDtype;
  readonly threads: number;
  private readonly rt: WasmRuntime;
  private readonly pool: WorkerPool;
  private readonly embedding: Float32Array; // [vocab, dim] (JS copy for row lookups)
  private readonly lmHead: Matrix;
  private readonly finalNorm: Ptr;
  private readonly layers: Layer[];
  private readonly rope: { cos: Ptr; sin: Ptr };
  private readonly maxRows: number;
  private readonly maxItems: number;
  // activation scratch, [maxRows, ·] f32
  private readonly x: Ptr;
  private readonly xb: Ptr;
  /** Queries, double-buffered by layer parity: layer l+1's QKV runs in the dispatch that holds layer l's attention, and the cache profiles layer l from its queries afterwards. */
  private readonly qBuf: [Ptr, Ptr];
  private readonly k: Ptr;
  private readonly v: Ptr;
  private readonly att: Ptr;
  private readonly hb: Ptr;
  private readonly hb2: Ptr;
  private readonly xq: Ptr; // q8 activations
  private readonly xd: Ptr;
  private readonly pos: Ptr; // i32 [maxRows]
  private readonly logitRows: Ptr; // [maxRows, dim]
  private readonly logits: Ptr; // [maxRows, vocab]
  // attention scratch
  private readonly probs: Ptr; // per thread: f32 [maxSeq]
  private readonly headScratch: Ptr; // per (item, kv head): page table, accum
  /** FastGen's profiling statistics: per profiling item, per query head, column then band sums over its slots. */
  private readonly profStats: Ptr;
  /** Where item i's statistics start in profStats during the current pass (-1: the item does not profile). */
  private profAt: number[] = [];
  /** Longest sequence rounded up to whole SIMD blocks: the length of every per-head scratch vector. */
  private readonly seqPad: number;
  private readonly list: JobList;
  static async create(ckpt: LoadedCheckpoint, opts: WasmBackendOptions = {}): Promise<WasmBackend> {
    const rt = await WasmRuntime.create({ initialBytes: 64 << 20 });
    const pool = await WorkerPool.create(rt, { threads: opts.threads ?? 2 });
    return new WasmBackend(ckpt, rt, pool, opts);
  }

  private constructor(ckpt: LoadedCheckpoint, rt: WasmRuntime, pool: WorkerPool, opts: WasmBackendOptions) {
    const c = (this.config = ckpt.config);
    this.rt = rt;
    this.pool = pool;
    this.threads = pool.threads;
    this.weightDtype = opts.dtype ?? 'f32';
    const w = ckpt.weights;
    const vec = (t: Tensor) => rt.putF32(tensorToF32(t));
    this.embedding = tensorToF32(w.tokenEmbedding);
    this.lmHead = this.matrix(w.lmHead === w.tokenEmbedding ? this.embedding : tensorToF32(w.lmHead), c.vocabSize, c.dim);
    this.finalNorm = vec(w.finalNorm);
    const qDim = c.nHeads * c.headDim;
    const kvDim = c.nKvHeads * c.headDim;
    this.layers = w.layers.map((l) => ({
      attnNorm: vec(l.attnNorm),
      ffnNorm: vec(l.ffnNorm),
      wq: this.matrix(tensorToF32(l.wq), qDim, c.dim),
      wk: this.matrix(tensorToF32(l.wk), kvDim, c.dim),
      wv: this.matrix(tensorToF32(l.wv), kvDim, c.dim),
      wo: this.matrix(tensorToF32(l.wo), c.dim, qDim),
      wGate: this.matrix(tensorToF32(l.wGate), c.hiddenDim, c.dim),
      wUp: this.matrix(tensorToF32(l.wUp), c.hiddenDim, c.dim),
      wDown: this.matrix(tensorToF32(l.wDown), c.dim, c.hiddenDim),
      bq: l.bq && vec(l.bq),
      bk: l.bk && vec(l.bk),
      bv: l.bv && vec(l.bv),
      qNorm: l.qNorm && vec(l.qNorm),
      kNorm: l.kNorm && vec(l.kNorm),
    }));
    this.rope = rt.putRopeTables(ropeInvFreq(c), c.maxSeqLen);

    const R = (this.maxRows = opts.maxRows ?? Math.min(c.maxSeqLen, 1024));
    this.maxItems = opts.maxItems ?? 64;
    const f32s = (n: number) => rt.alloc(n * 4, 64);
    this.x = f32s(R * c.dim);
    this.xb = f32s(R * Math.max(c.dim, qDim));
    this.qBuf = [f32s(R * qDim), f32s(R * qDim)];
    this.k = f32s(R * kvDim);
    this.v = f32s(R * kvDim);
    this.att = f32s(R * qDim);
    this.hb = f32s(R * c.hiddenDim);
    this.hb2 = f32s(R * c.hiddenDim);
    const widest = Math.max(c.dim, qDim, c.hiddenDim);
    this.xq = rt.alloc(q8ActBytes(R, widest), 64);
    this.xd = rt.alloc(R * q8Blocks(widest) * 4, 64);
    this.pos = rt.alloc(R * 4, 64);
    this.logitRows = f32s(R * c.dim);
    this.logits = f32s(R * c.vocabSize);
    const seqPad = (this.seqPad = Math.ceil((c.maxSeqLen + 16) / 16) * 16); // kernels store whole SIMD vectors
    this.probs = f32s(this.threads * seqPad);
    // per (item, kv head): page table i32 [seqPad], then attention-score accumulator f32 [seqPad]
    this.headScratch = f32s(this.maxItems * c.nKvHeads * 2 * seqPad);
    // A profiling pass is a prompt from an empty cache, so its items' slots add up to at most R.
    this.profStats = f32s(2 * c.nHeads * R);
    // Attention records: one per (row, query head); plus per layer a few dozen ops and per-row bias adds.
    const perLayer = R * c.nHeads + 6 * R + 64;
    this.list = rt.jobList(perLayer + 64);
  }

  /** Upload an f32 matrix in the backend's weight dtype. */
  private matrix(data: Float32Array, rows: number, cols: number): Matrix {
    if (this.weightDtype === 'q8_0') return { kind: 'q8_0', q: this.rt.quantizeQ8(data, rows, cols), rows, cols };
    if (this.weightDtype === 'f16') return { kind: 'f16', ptr: this.rt.toF16(data), rows, cols };
    return { kind: 'f32', ptr: this.rt.putF32(data), rows, cols };
  }

  /**
   * Ops that must follow everything pushed so far in the current phase, in order. When T is small they are TAIL
   * records of that phase (run by whichever thread finishes its last chunk: a phase boundary costs more than a
   * T=1 rmsnorm); otherwise each gets a phase of its own, split over the threads. The caller ends the phase.
   */
  private follow(list: JobList, T: number, ...ops: ((owner: number) => void)[]): void {
    for (const op of ops) {
      if (T <= TAIL_ROWS) op(TAIL);
      else {
        list.barrier();
        op(SPLIT);
      }
    }
  }

  /** The q8 activation quantization of x[T, cols], when the weights are q8_0, as an op for follow(). */
  private quantizeFor(list: JobList, x: Ptr, T: number, cols: number): ((owner: number) => void)[] {
    if (this.weightDtype !== 'q8_0') return [];
    return [(o) => list.quantizeQ8Act(this.xq, this.xd, x, T, cols, o)];
  }

  /**
   * out[T, rows] = x[T, cols] · Wᵀ (and resid += out when resid ≠ 0). For q8_0 weights, x must have been quantized
   * into xq/xd (quantizeFor) in an earlier phase.
   */
  private pushMatmul(list: JobList, out: Ptr, x: Ptr, m: Matrix, T: number, resid: Ptr = 0): void {
    if (m.kind === 'q8_0') list.matmulQ8(out, this.xq, this.xd, m.q, T, SPLIT, resid);
    else if (m.kind === 'f32') list.matmulF32(out, x, m.ptr, T, m.rows, m.cols, SPLIT, resid);
    else list.matmulF16(out, x, m.ptr, T, m.rows, m.cols, SPLIT, resid);
  }

  /** Several arenas may coexist: one that must grow while not last moves itself to the end (leaving a hole). */
  createArena(): KvArena {
    return new WasmKvArena(this.rt);
  }

  async forward(items: readonly ForwardItem[]): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    // Split the batch so that every part fits the scratch buffers.
    let start = 0;
    while (start < items.length) {
      let rows = 0;
      let end = start;
      while (end < items.length && end - start < this.maxItems && rows + items[end].tokens.length <= this.maxRows) {
        rows += items[end].tokens.length;
        end++;
      }
      if (end === start) {
        throw new InvalidOptionError(
          `the wasm backend processes at most ${this.maxRows} tokens in one pass, got a prompt of ${items[start].tokens.length}; shorten it`,
          'prompt',
        );
      }
      out.push(...this.forwardBatch(items.slice(start, end)));
      start = end;
    }
    return out;
  }

  dispose(): void {
    void this.pool.close();
  }

  private forwardBatch(items: readonly ForwardItem[]): Float32Array[] {
    const c = this.config;
    const rt = this.rt;
    const hd = c.headDim;
    const qDim = c.nHeads * hd;
    const kvDim = c.nKvHeads * hd;
    const group = c.nHeads / c.nKvHeads;
    for (const it of items) {
      if (it.kv.pool.arena instanceof WasmKvArena === false) throw new Error('internal: sequence cache is not in this backend’s wasm arena');
      if (it.kv.length + it.tokens.length > c.maxSeqLen) {
        throw new InvalidOptionError(`sequence would exceed the model's ${c.maxSeqLen}-token context`, 'tokens');
      }
    }
    // Row layout: item i's tokens occupy rows [rowStart[i], rowStart[i] + n_i).
    const rowStart: number[] = [];
    let T = 0;
    for (const it of items) {
      rowStart.push(T);
      T += it.tokens.length;
    }
    const starts = items.map((it) => it.kv.length);
    // Embeddings and positions.
    const xv = rt.f32(this.x, T * c.dim);
    const pv = rt.i32(this.pos, T);
    items.forEach((it, i) => {
      it.tokens.forEach((tok, t) => {
        const r = rowStart[i] + t;
        xv.set(this.embedding.subarray(tok * c.dim, (tok + 1) * c.dim), r * c.dim);
        pv[r] = starts[i] + t;
      });
    });

    // Rows whose logits are wanted.
    const wanted: number[] = [];
    items.forEach((it, i) => {
      if (it.logits === 'last') wanted.push(rowStart[i] + it.tokens.length - 1);
      else if (it.logits === 'all') for (let t = 0; t < it.tokens.length; t++) wanted.push(rowStart[i] + t);
    });

    // One dispatch per layer boundary: [attention(l-1) → FFN(l-1)] → [norm, QKV, RoPE of l]; the last one also holds
    // the final norm and the classifier. Between dispatches the new keys/values go into the cache.
    const list = this.list;
    const scale = 1 / Math.sqrt(hd);
    for (let l = 0; l <= c.nLayers; l++) {
      list.clear();
      if (l > 0) this.pushAttentionAndFfn(list, l - 1, items, rowStart, starts, T, scale, group);
      if (l < c.nLayers) this.pushQkv(list, l, T);
      else if (wanted.length > 0) this.pushLogits(list, wanted);
      this.pool.run(list);
      if (l > 0) this.afterAttention(l - 1, items, rowStart, starts);
      if (l < c.nLayers) {
        // New keys/values into the cache: the arena is wasm memory, so this writes the pages the kernels read.
        const kvK = rt.f32(this.k, T * kvDim);
        const kvV = rt.f32(this.v, T * kvDim);
        items.forEach((it, i) => {
          const r0 = rowStart[i];
          it.kv.appendLayer(l, kvK.subarray(r0 * kvDim), kvV.subarray(r0 * kvDim), kvDim, it.tokens.length, starts[i], it.tokens);
        });
      }
    }
    for (const it of items) it.kv.advance(it.tokens.length);

    const results: Float32Array[] = items.map(() => new Float32Array(0));
    if (wanted.length === 0) return results;
    const all = rt.f32(this.logits, wanted.length * c.vocabSize);
    let j = 0;
    items.forEach((it, i) => {
      const n = it.logits === 'last' ? 1 : it.logits === 'all' ? it.tokens.length : 0;
      // Into the caller's buffer if it gave one, else a new array (set, not slice: slicing a view of shared memory is
      // ~20× slower here, 115 vs 5 µs for 32000 floats).
      const size = n * c.vocabSize;
      if (it.out && it.out.length < size) throw new Error(`internal: logits buffer of ${it.out.length} floats for ${size}`);
      results[i] = it.out ? it.out.subarray(0, size) : new Float32Array(size);
      results[i].set(all.subarray(j * c.vocabSize, j * c.vocabSize + size));
      j += n;
    });
    return results;
  }

  /** After the last layer's FFN: final norm of the wanted rows, then one classifier pass for all of them. */
  private pushLogits(list: JobList, wanted: number[]): void {
    const c = this.config;
    const n = wanted.length;
    this.follow(list, n,
      (o) => wanted.forEach((row, j) => list.copy(this.logitRows + j * c.dim * 4, this.x + row * c.dim * 4, c.dim * 4, o)),
      (o) => list.rmsnorm(this.logitRows, this.logitRows, this.finalNorm, n, c.dim, c.normEps, o),
      ...this.quantizeFor(list, this.logitRows, n, c.dim));
    list.barrier();
    this.pushMatmul(list, this.logits, this.logitRows, this.lmHead, n);
  }

  /** norm → q, k, v (+ bias, q/k norm) → RoPE, for all T rows of layer l. */
  private pushQkv(list: JobList, l: number, T: number): void {
    const c = this.config;
    const L = this.layers[l];
    const hd = c.headDim;
    const qDim = c.nHeads * hd;
    const kvDim = c.nKvHeads * hd;
    // The norm follows the previous layer's FFN (the phase pushed before, if any).
    this.follow(list, T, (o) => list.rmsnorm(this.xb, this.x, L.attnNorm, T, c.dim, c.normEps, o), ...this.quantizeFor(list, this.xb, T, c.dim));
    list.barrier();
    const q = this.qBuf[l & 1];
    this.pushMatmul(list, q, this.xb, L.wq, T);
    this.pushMatmul(list, this.k, this.xb, L.wk, T);
    this.pushMatmul(list, this.v, this.xb, L.wv, T);
    if (L.bq || L.bk || L.bv) {
      list.barrier();
      for (let t = 0; t < T; t++) {
        if (L.bq) list.add(q + t * qDim * 4, L.bq, qDim);
        if (L.bk) list.add(this.k + t * kvDim * 4, L.bk, kvDim);
        if (L.bv) list.add(this.v + t * kvDim * 4, L.bv, kvDim);
      }
    }
    if (L.qNorm || L.kNorm) {
      list.barrier();
      if (L.qNorm) list.rmsnorm(q, q, L.qNorm, T * c.nHeads, hd, c.normEps);
      if (L.kNorm) list.rmsnorm(this.k, this.k, L.kNorm, T * c.nKvHeads, hd, c.normEps);
    }
    // q and k RoPE are independent: one follow-up step (tails for small T).
    if (T <= TAIL_ROWS) {
      list.rope(q, T, c.nHeads, hd, this.rope, this.pos, TAIL);
      list.rope(this.k, T, c.nKvHeads, hd, this.rope, this.pos, TAIL);
    } else {
      list.barrier();
      list.rope(q, T, c.nHeads, hd, this.rope, this.pos);
      list.rope(this.k, T, c.nKvHeads, hd, this.rope, this.pos);
    }
  }

  private pageTablePtr(item: number, kvHead: number): Ptr {
    return this.headScratch + (item * this.config.nKvHeads + kvHead) * 2 * this.seqPad * 4;
  }
  private accumPtr(item: number, kvHead: number): Ptr {
    return this.pageTablePtr(item, kvHead) + this.seqPad * 4;
  }

  /**
   * Attention of every row over its sequence's cache for layer l, then Wo + residual and the FFN block.
   * All query heads of one KV head run on the same thread, so they can accumulate that head's attention scores in
   * one buffer without races.
   */
  private pushAttentionAndFfn(list: JobList, l: number, items: readonly ForwardItem[], rowStart: number[], starts: number[], T: number, scale: number, group: number): void {
    const c = this.config;
    const rt = this.rt;
    const L = this.layers[l];
    const hd = c.headDim;
    const qDim = c.nHeads * hd;
    const seqPad = this.seqPad;
    let profTop = 0;
    items.forEach((it, i) => {
      const kv = it.kv;
      const n = it.tokens.length;
      const poolBase = kv.pool.arena.baseByteOffset;
      const pt = kv.pool.pageTokens;
      const kvHalf = kv.pool.kvDtype === 'f16';
      const band = kv.profilingBand(l, starts[i] + n);
      this.profAt[i] = band === null ? -1 : profTop;
      if (band !== null) {
        rt.f32(this.profStats + profTop * 4, 2 * c.nHeads * n).fill(0);
        profTop += 2 * c.nHeads * n;
      }
      for (let h = 0; h < c.nKvHeads; h++) {
        const st = kv.store(l, h);
        const m = st.length;
        const table = this.pageTablePtr(i, h);
        const accum = this.accumPtr(i, h);
        rt.i32(table, st.pages.length).set(st.pages);
        // The n new tokens were appended at the tail in order, after every older slot: row t sees exactly the
        // slot prefix [0, m − n + t], so the causal limit is a slot count and no position mask is needed.
        const older = m - n;
        if (band !== null && older !== 0) throw new Error('internal: FastGen profiles a prompt from an empty cache');
        const track = kv.tracksScores(l, h);
        if (track) rt.f32(accum, seqPad).fill(0);
        for (let g = 0; g < group; g++) {
          const qh = h * group + g;
          // Profiling: this query head's column and band sums (slot s = position s: the prompt from an empty cache).
          const column = band === null ? 0 : this.profStats + (this.profAt[i] + 2 * qh * m) * 4;
          // Rows that add into the same accumulator run as one group (in order, on one thread); otherwise every
          // (row, head) is its own chunk for whichever thread is free.
          const owner = track ? JobList.group(i * c.nKvHeads + h) : column ? JobList.group(this.maxItems * c.nKvHeads + i * c.nHeads + qh) : SPLIT;
          for (let t = 0; t < n; t++) {
            const r = rowStart[i] + t;
            list.attention(
              {
                out: this.att + (r * qDim + qh * hd) * 4,
                probs: this.probs,
                probsStride: seqPad * 4, // per-thread scratch
                q: this.qBuf[l & 1] + (r * qDim + qh * hd) * 4,
                pool: poolBase,
                pageTable: table,
                nSlots: older + t + 1,
                pageTokens: pt,
                headDim: hd,
                scale,
                positions: 0,
                queryPos: starts[i] + t,
                accum: track ? accum : column,
                band: band !== null && band >= 0 ? column + m * 4 : 0,
                bandFrom: older + t - (band ?? 0),
                kvHalf,
              },
              owner,
            );
          }
        }
      }
    });
    // Wo with the residual add fused (x += att·Woᵀ chunk by chunk), then the FFN norm; gate/up; SwiGLU; down (+x).
    this.follow(list, T, ...this.quantizeFor(list, this.att, T, qDim));
    list.barrier();
    this.pushMatmul(list, this.xb, this.att, L.wo, T, this.x);
    this.follow(list, T, (o) => list.rmsnorm(this.xb, this.x, L.ffnNorm, T, c.dim, c.normEps, o), ...this.quantizeFor(list, this.xb, T, c.dim));
    list.barrier();
    this.pushMatmul(list, this.hb, this.xb, L.wGate, T);
    this.pushMatmul(list, this.hb2, this.xb, L.wUp, T);
    this.follow(list, T, (o) => list.swiglu(this.hb, this.hb2, T * c.hiddenDim, o), ...this.quantizeFor(list, this.hb, T, c.hiddenDim));
    list.barrier();
    this.pushMatmul(list, this.xb, this.hb, L.wDown, T, this.x);
  }

  /** Fold the kernels' attention sums into the heads' scores, then let the cache policy profile or evict. */
  private afterAttention(l: number, items: readonly ForwardItem[], rowStart: number[], starts: number[]): void {
    const c = this.config;
    const qDim = c.nHeads * c.headDim;
    const seqPad = this.seqPad;
    items.forEach((it, i) => {
      const kv = it.kv;
      for (let h = 0; h < c.nKvHeads; h++) {
        if (!kv.tracksScores(l, h)) continue;
        const st = kv.store(l, h);
        const acc = this.rt.f32(this.accumPtr(i, h), st.length);
        for (let s = 0; s < st.length; s++) st.scores[s] += acc[s];
      }
      const q = this.rt.f32(this.qBuf[l & 1] + rowStart[i] * qDim * 4, it.tokens.length * qDim);
      let stats: HeadAttentionStats[] | undefined;
      if (this.profAt[i] >= 0) {
        const m = it.tokens.length;
        stats = [];
        for (let qh = 0; qh < c.nHeads; qh++) {
          const at = this.profStats + (this.profAt[i] + 2 * qh * m) * 4;
          stats.push({ column: this.rt.f32(at, m), band: this.rt.f32(at + m * 4, m) });
        }
      }
      kv.finishLayer(l, q, qDim, it.tokens.length, starts[i], stats);
    });
  }
}

