/**
 * The WASM SIMD backend: the same transformer as cpu-ref, run by the kernels in kernels/ on a pool of threads (2 by
 * default, `threads` up to MAX_THREADS).
 *
 * Memory (one shared WebAssembly.Memory, bump-allocated in this order):
 *   weights (f32, f16 or q8_0)  |  rope tables  |  activation scratch for R rows  |  per-step attention scratch
 *   |  job lists  |  the KV page arena (last, so it can grow in place)
 * The KV pages of every sequence live in that arena: the cache's HeadStores write keys and values straight into wasm
 * memory, and the attention kernel reads them through each head's page table.
 *
 * One forward pass stacks the new tokens of every sequence in the batch into one [R, dim] activation matrix, so each
 * weight matrix is streamed once per step for all sequences, and the whole pass is ONE dispatch to the threads:
 *   for each layer: norm, QKV, RoPE → the new keys/values into their cache slots → attention of every sequence and
 *   head → Wo + residual → FFN + residual;   then the final norm and the classifier.
 * The JS side reserves the new tokens' slots in every head (pages, positions) before it. The cache policy (fold
 * attention scores, profile or evict: src/cache, shared with every backend) runs for layer l at a hook right after
 * layer l's attention: the main thread leaves the list for JS while the worker goes on with the FFN, since nothing
 * later in the pass reads layer l's cache; it then rejoins. The policy work thus overlaps the weight streaming, and
 * the threads never wait for JS. (A layer's eviction only matters to that layer's next attention.)
 */
import { InvalidOptionError } from '../../errors.js';
import type { KvArena } from '../../cache/page-pool.js';
import type { HeadAttentionStats } from '../../cache/policies/types.js';
import { tensorToF32 } from '../../model/tensor.js';
import type { LoadedCheckpoint, ModelConfig, Tensor } from '../../model/types.js';
import { ropeInvFreq } from '../../model/rope.js';
import type { Backend, ForwardItem } from '../types.js';
import { splitBatch } from '../batch.js';
import { JobList } from './jobs.js';
import { WorkerPool } from './pool.js';
import { WasmRuntime, type Ptr, type Q8Matrix } from './runtime.js';
import { q8ActBytes, q8Blocks, q8ScaleBytes, q8WeightBytes, SPLIT, TAIL } from './layout.js';

/** The arguments of a KV-write record and an attention-rows record that a kept decode list patches (JobList). */
const KV_WRITE_POOL = 0;
const KV_WRITE_SLOT = 2;
const ATTENTION_FIRST_SLOTS = 5;
const ATTENTION_POOL = 6;

/**
 * Pages of room beyond the current ones that a kept decode list's page tables get, before rounding up to whole 64-byte
 * lines (16 pages): a new list every 64–256 steps with 16-token pages, instead of tables for the whole context per head
 * and sequence.
 */
const KEPT_TABLE_HEADROOM = 4;

/** Up to this many rows, small ops ride as TAIL records of the phase before them instead of a phase of their own. */
const TAIL_ROWS = 4;
/** A prompt's attention rows per job record: enough records for the threads to share, few enough to list. */
const ATTENTION_ROW_BLOCK = 16;

const NO_QUERIES = new Float32Array(0);

/** Where one forward pass keeps its per-sequence bookkeeping in wasm memory (pointers into the pass scratch). */
interface PassItem {
  /** [layer][kvHead]: the head's page table (i32). */
  tables: Ptr[][];
  /** [layer][kvHead]: the head's attention-score accumulator (f32 [slots]), 0 when the policy does not track scores. */
  accums: Ptr[][];
  /** [layer]: the statistics the policy asked for (per query head: column then each band's sums, f32 [slots] each), or 0. */
  stats: Ptr[];
  /** [layer]: their band distances ... */
  bands: (readonly number[])[];
  /** [layer]: ... as the kernel's descriptor (i32 [K, stride bytes, w_0 …]), 0 when there are none ... */
  bandDescs: Ptr[];
  /** [layer]: ... and the first row of the pass they sum over. */
  fromRows: number[];
  /** [layer][kvHead]: slots the head held before this pass; its n new tokens follow them. */
  older: number[][];
  /** Pointer to page 0 of the sequence's pool. */
  poolBase: Ptr;
  kvHalf: boolean;
  pageTokens: number;
}

/**
 * A decode pass's job list, kept for the next step of the same shape (see forwardBatch): where each head's page table
 * lives, and the records whose arguments change from step to step (the KV writes' and attention's slot counts, the
 * arena's address).
 */
interface KeptDecode extends PassRecords {
  /** The pass's shape: per item its logits mode, KV dtype and page size. */
  key: string;
  list: JobList;
  scratch: Ptr;
  /** Page-table capacity of every head, in pages. */
  tablePages: number;
  plan: PassItem[];
}

/**
 * The records of one pass whose per-step arguments a kept decode list patches, [item][layer][kvHead]: each head's
 * KV-write record and its attention records.
 */
interface PassRecords {
  kvWrites: number[][][];
  attention: number[][][];
}

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
  /** Progress of converting and uploading the weights (f32 bytes done of the total). */
  onProgress?: (done: number, total: number, what: string) => void;
}

/** The wasm32 address space: one WebAssembly.Memory holds at most 4 GiB. */
export const WASM_MEMORY_LIMIT = 4 * 1024 ** 3;

/**
 * WebAssembly memory the backend allocates for this model, before any KV page: the weight matrices in `dtype`
 * (the token embedding stays in JS), norms and biases, RoPE tables, activations for `maxRows` rows, attention scratch.
 * The same arithmetic as the constructor's allocations, so that a model that cannot fit is refused before loading.
 */
export function wasmMemoryBytes(c: ModelConfig, dtype: WasmWeightDtype, threads = 2, maxRows = Math.min(c.maxSeqLen, 1024)): number {
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  const matrix = (rows: number, cols: number) =>
    dtype === 'q8_0' ? q8WeightBytes(rows, cols) + q8ScaleBytes(rows, cols) : rows * cols * (dtype === 'f16' ? 2 : 4);
  const perLayer =
    matrix(qDim, c.dim) + 2 * matrix(kvDim, c.dim) + matrix(c.dim, qDim) + 2 * matrix(c.hiddenDim, c.dim) + matrix(c.dim, c.hiddenDim) +
    4 * (2 * c.dim + (c.qkvBias ? qDim + 2 * kvDim : 0) + (c.qkNorm ? 2 * c.headDim : 0));
  const R = maxRows;
  const widest = Math.max(c.dim, qDim, c.hiddenDim);
  const seqPad = Math.ceil((c.maxSeqLen + 16) / 16) * 16;
  return (
    matrix(c.vocabSize, c.dim) + 4 * c.dim + c.nLayers * perLayer +
    2 * 4 * c.maxSeqLen * (c.headDim / 2) + // RoPE cos and sin
    4 * R * (2 * c.dim + Math.max(c.dim, qDim) + 2 * qDim + 2 * kvDim + 2 * c.hiddenDim + c.vocabSize + 1) +
    q8ActBytes(R, widest) + 4 * R * q8Blocks(widest) +
    4 * threads * seqPad + 4 * c.nLayers * c.nKvHeads * (Math.ceil(seqPad / 16) + seqPad) +
    (16 << 20) // job lists, staging buffers for conversion, the runtime's own data
  );
}

export class WasmBackend implements Backend {
  readonly name = 'wasm';
  readonly config: ModelConfig;
  readonly weightDtype: WasmWeightDtype;
  readonly threads: number;
  private readonly rt: WasmRuntime;
  private readonly workers: WorkerPool;
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
  /** Queries [R, qDim] of the layer being computed (the pass scratch holds every layer's when a cache wants them). */
  private readonly q: Ptr;
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
  private readonly probs: Ptr; // per thread: f32 [seqPad]
  /** Per-pass bookkeeping (page tables, score accumulators, profiling statistics); grows when a pass needs more. */
  private scratch: { ptr: Ptr; bytes: number };
  /** Longest sequence rounded up to whole SIMD blocks: the length of each thread's probability scratch. */
  private readonly seqPad: number;
  private list: JobList;
  /** The last decode pass's list, reused while the passes keep its shape (null: build the next one). */
  private kept: KeptDecode | null = null;
  /** Off: rebuild every pass's list (the workbench's and the tests' reference for the kept list). */
  keepDecodeLists = true;
  /** Wake the workers at the start of forward() (off: the workbench's no-wake variant). */
  wakeAhead = true;
  /** Passes that ran a kept decode list (tests: that the reuse happens). */
  keptPasses = 0;
  /** Progress of the upload, while the constructor runs. */
  private uploaded: (elements: number) => void = () => {};
  static async create(ckpt: LoadedCheckpoint, opts: WasmBackendOptions = {}): Promise<WasmBackend> {
    const rt = await WasmRuntime.create({ initialBytes: 64 << 20 });
    const pool = await WorkerPool.create(rt, { threads: opts.threads ?? 2 });
    return new WasmBackend(ckpt, rt, pool, opts);
  }

  private constructor(ckpt: LoadedCheckpoint, rt: WasmRuntime, pool: WorkerPool, opts: WasmBackendOptions) {
    const c = (this.config = ckpt.config);
    this.rt = rt;
    this.workers = pool;
    this.threads = pool.threads;
    this.weightDtype = opts.dtype ?? 'f32';
    const w = ckpt.weights;
    const vec = (t: Tensor) => rt.putF32(tensorToF32(t));
    // Progress over the matrices (everything else is small): converting to the kernels' dtype and uploading.
    const total = 4 * (c.vocabSize * c.dim + c.nLayers * (2 * c.nHeads * c.headDim * c.dim + 2 * c.nKvHeads * c.headDim * c.dim + 3 * c.hiddenDim * c.dim));
    let done = 0;
    const what = this.weightDtype === 'f32' ? 'uploading the weights' : `converting the weights to ${this.weightDtype}`;
    this.uploaded = (n: number) => {
      done += 4 * n;
      opts.onProgress?.(Math.min(done, total), total, what);
    };
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
    this.q = f32s(R * qDim);
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
    // Enough for one sequence at full context: page tables and score accumulators of every head.
    const scratchBytes = c.nLayers * c.nKvHeads * (Math.ceil(seqPad / 16) + seqPad) * 4;
    this.scratch = { ptr: rt.alloc(scratchBytes, 64), bytes: scratchBytes };
    // A decode step of a few sequences: attention records per (sequence, query head), a few dozen ops per layer.
    this.list = rt.jobList(c.nLayers * (4 * c.nHeads + 4 * c.nKvHeads + 64) + 64);
  }

  /** Upload an f32 matrix in the backend's weight dtype. */
  private matrix(data: Float32Array, rows: number, cols: number): Matrix {
    this.uploaded(rows * cols);
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
    // Between two tokens (sampling, streaming, the event loop) the workers may have gone to sleep: wake them while
    // this thread prepares the pass.
    if (this.wakeAhead) this.workers.wake();
    // Split the batch so that every part fits the scratch buffers.
    return splitBatch(items, 'wasm', this.maxItems, this.maxRows).flatMap((part) => this.forwardBatch(part));
  }

  dispose(): void {
    void this.workers.close();
  }

  private forwardBatch(items: readonly ForwardItem[]): Float32Array[] {
    const c = this.config;
    const rt = this.rt;
    for (const it of items) {
      if (it.kv.pool.arena instanceof WasmKvArena === false) throw new Error('internal: sequence cache is not in this backend’s wasm arena');
      if (it.kv.seqLength + it.tokens.length > c.maxSeqLen) {
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
    const starts = items.map((it) => it.kv.seqLength);
    // Embeddings and positions.
    const heap = rt.heap();
    items.forEach((it, i) => {
      it.tokens.forEach((tok, t) => {
        const r = rowStart[i] + t;
        heap.f32.set(this.embedding.subarray(tok * c.dim, (tok + 1) * c.dim), (this.x >> 2) + r * c.dim);
        heap.i32[(this.pos >> 2) + r] = starts[i] + t;
      });
    });
    // Rows whose logits are wanted.
    const wanted: number[] = [];
    items.forEach((it, i) => {
      if (it.logits === 'last') wanted.push(rowStart[i] + it.tokens.length - 1);
      else if (it.logits === 'all') for (let t = 0; t < it.tokens.length; t++) wanted.push(rowStart[i] + t);
    });

    // Before: the new tokens' slots in every (layer, KV head), which the kernels fill; the pass's bookkeeping.
    items.forEach((it, i) => {
      for (let l = 0; l < c.nLayers; l++) it.kv.reserveLayer(l, it.tokens.length, starts[i], it.tokens);
    });
    const queries = items.some((it) => it.kv.wantsQueries);
    const hooked = items.some((it) => it.kv.evicts);

    // A decode step of the same shape as the last one (same items count, one token each, a cache that neither evicts
    // nor asks for scores or statistics) reuses the last list: only each head's page table, slot count and the arena's
    // address change, patched in place. Building the list costs the main thread more than a step of stories15M's
    // layers in JS on a cold cache, while the workers wait (docs/bench.md).
    const key = this.keepDecodeLists && !hooked && !queries && T === items.length ? this.decodeKey(items) : null;
    let kept = key === null ? null : this.reuseDecode(key, items);
    let plan: PassItem[];
    let layerQ: (l: number) => Ptr;
    if (kept) {
      this.keptPasses++;
      plan = kept.plan;
      layerQ = () => this.q;
    } else {
      // A decode list that may be kept gives every head's page table room for a few more pages (at most the whole
      // context), so that the next steps' tables fit where this one's are; a head that outgrows it gets a new list.
      const tablePages = key === null ? 0 : this.keptTablePages(items);
      ({ plan, layerQ } = this.planPass(items, starts, T, queries, tablePages));
      const list = this.list;
      list.clear();
      const rec: PassRecords | undefined = key === null ? undefined : { kvWrites: [], attention: [] };
      const scale = 1 / Math.sqrt(c.headDim);
      for (let l = 0; l < c.nLayers; l++) {
        const q = layerQ(l);
        this.pushQkv(list, l, T, q);
        this.pushKvWrites(list, l, items, rowStart, plan, T, rec);
        this.pushAttention(list, l, items, rowStart, plan, q, scale, rec);
        this.pushFfn(list, l, T, hooked);
      }
      if (wanted.length > 0) this.pushLogits(list, wanted);
      kept = this.kept = key === null ? null : { key, list, scratch: this.scratch.ptr, tablePages, plan, ...rec! };
    }

    // The pass: one dispatch. Compressing caches are finished layer by layer inside it: right after a layer's
    // attention, a hook hands this thread back to JS to fold that layer's scores and run its policy (profile or
    // evict) while the worker goes on with the FFN (nothing later in the pass reads that layer's cache), so the
    // policy work overlaps the weight streaming instead of following it. Full caches have nothing to do there.
    const finish = (l: number) => items.forEach((it, i) => this.finishLayer(l, it, plan[i], rowStart[i], starts[i], layerQ));
    this.workers.run(this.list, finish);
    if (!hooked) for (let l = 0; l < c.nLayers; l++) finish(l);
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

  /**
   * The shape of a decode pass whose list can be kept for the next step, or null: every item decodes one token with a
   * cache that wants no attention scores or statistics at any layer.
   */
  private decodeKey(items: readonly ForwardItem[]): string | null {
    let key = `${items.length}`;
    for (const it of items) {
      if (it.tokens.length !== 1) return null;
      for (let l = 0; l < this.config.nLayers; l++) {
        const needs = it.kv.needs(l, 1);
        if (needs.stats || needs.scores.some((s) => s)) return null;
      }
      key += `|${it.logits}:${it.kv.pool.kvDtype}:${it.kv.pool.pageTokens}`;
    }
    return key;
  }

  /**
   * Page-table room per head for a decode list to keep: the most pages any head holds now plus headroom (at most the
   * whole context), in whole 64-byte lines as planPass lays the tables out.
   */
  private keptTablePages(items: readonly ForwardItem[]): number {
    const c = this.config;
    let most = 0;
    for (const it of items) {
      let pages = 0;
      for (let l = 0; l < c.nLayers; l++) for (let h = 0; h < c.nKvHeads; h++) pages = Math.max(pages, it.kv.store(l, h).pages.length);
      most = Math.max(most, Math.min(Math.ceil(c.maxSeqLen / it.kv.pool.pageTokens), pages + KEPT_TABLE_HEADROOM));
    }
    return Math.ceil(most / 16) * 16;
  }

  /**
   * The kept decode list patched for this step (page tables, slot counts, arena addresses), or null when there is
   * none of this shape (or a table outgrew its room): then the caller builds one.
   */
  private reuseDecode(key: string, items: readonly ForwardItem[]): KeptDecode | null {
    const k = this.kept;
    if (!k || k.key !== key || k.list !== this.list || k.scratch !== this.scratch.ptr) return null;
    const c = this.config;
    const group = c.nHeads / c.nKvHeads;
    for (const it of items) {
      for (let l = 0; l < c.nLayers; l++) {
        for (let h = 0; h < c.nKvHeads; h++) if (it.kv.store(l, h).pages.length > k.tablePages) return null;
      }
    }
    const heap = this.rt.heap();
    const list = k.list;
    items.forEach((it, i) => {
      const p = k.plan[i];
      // The arena may have moved while the slots were reserved: its address is read after the reservations.
      const poolBase = (p.poolBase = it.kv.pool.arena.baseByteOffset);
      for (let l = 0; l < c.nLayers; l++) {
        for (let h = 0; h < c.nKvHeads; h++) {
          const st = it.kv.store(l, h);
          heap.i32.set(st.pages, p.tables[l][h] >> 2);
          const older = (p.older[l][h] = st.length - 1);
          const w = k.kvWrites[i][l][h];
          list.setArg(w, KV_WRITE_POOL, poolBase);
          list.setArg(w, KV_WRITE_SLOT, older);
          for (let g = 0; g < group; g++) {
            const a = k.attention[i][l][h * group + g];
            list.setArg(a, ATTENTION_FIRST_SLOTS, older);
            list.setArg(a, ATTENTION_POOL, poolBase);
          }
        }
      }
    });
    return k;
  }

  /**
   * Lay out this pass's bookkeeping in the scratch (grown if needed) and fill it: page tables of every head, zeroed
   * score accumulators for the heads whose policy tracks scores, zeroed profiling statistics for FastGen's prompt pass.
   * Also sizes the job list. tablePages > 0: every head's page table gets room for that many pages (a decode list to
   * keep). Returns per item where things are, and each layer's query buffer.
   */
  private planPass(items: readonly ForwardItem[], starts: number[], T: number, queries: boolean, tablePages = 0):
    { plan: PassItem[]; layerQ: (l: number) => Ptr } {
    const c = this.config;
    let bytes = 0;
    const take = (n4: number): number => {
      const at = bytes;
      bytes += Math.ceil((n4 * 4) / 64) * 64; // 64-byte aligned regions: threads write accumulators of different heads
      return at;
    };
    let records = 64;
    const plan: PassItem[] = items.map((it, i) => {
      const kv = it.kv;
      const n = it.tokens.length;
      const p: PassItem = { tables: [], accums: [], stats: [], bands: [], bandDescs: [], fromRows: [], older: [], poolBase: 0, kvHalf: kv.pool.kvDtype === 'f16', pageTokens: kv.pool.pageTokens };
      for (let l = 0; l < c.nLayers; l++) {
        const needs = kv.needs(l, n);
        p.tables.push([]);
        p.accums.push([]);
        p.older.push([]);
        for (let h = 0; h < c.nKvHeads; h++) {
          const st = kv.store(l, h);
          p.older[l].push(st.length - n); // the slots were reserved already
          p.tables[l].push(take(Math.max(tablePages, st.pages.length)));
          p.accums[l].push(needs.scores[h] ? take(st.length) : -1);
        }
        if (needs.stats && p.older[l][0] !== 0) throw new Error('internal: attention statistics are collected on a pass from an empty cache');
        const bands = needs.stats?.bands ?? [];
        p.stats.push(needs.stats ? take((1 + bands.length) * c.nHeads * n) : -1);
        p.bands.push(bands);
        p.bandDescs.push(bands.length ? take(2 + bands.length) : -1);
        p.fromRows.push(needs.stats?.fromRow ?? 0);
        records += c.nHeads * (Math.ceil(n / ATTENTION_ROW_BLOCK) + 1) + c.nKvHeads + 3 * (n <= TAIL_ROWS ? 0 : 1);
      }
      return p;
    });
    const qAt = queries ? take(c.nLayers * T * c.nHeads * c.headDim) : -1;
    records += c.nLayers * 49 + T; // the ops of each layer; one copy per row whose logits are wanted
    if (bytes > this.scratch.bytes) {
      const grown = Math.max(bytes, Math.ceil(this.scratch.bytes * 1.5));
      this.scratch = { ptr: this.rt.alloc(grown, 64), bytes: grown };
    }
    if (records > this.list.capacity) this.list = this.rt.jobList(Math.max(records, Math.ceil(this.list.capacity * 1.5)));
    // Offsets → pointers, and the contents (after every allocation: the heap views must cover them).
    const base = this.scratch.ptr;
    const heap = this.rt.heap();
    items.forEach((it, i) => {
      const p = plan[i];
      const kv = it.kv;
      for (let l = 0; l < c.nLayers; l++) {
        for (let h = 0; h < c.nKvHeads; h++) {
          const st = kv.store(l, h);
          p.tables[l][h] += base;
          heap.i32.set(st.pages, p.tables[l][h] >> 2);
          if (p.accums[l][h] < 0) p.accums[l][h] = 0;
          else {
            p.accums[l][h] += base;
            heap.f32.fill(0, p.accums[l][h] >> 2, (p.accums[l][h] >> 2) + st.length);
          }
        }
        const n = it.tokens.length;
        if (p.stats[l] < 0) p.stats[l] = 0;
        else {
          p.stats[l] += base;
          heap.f32.fill(0, p.stats[l] >> 2, (p.stats[l] >> 2) + (1 + p.bands[l].length) * c.nHeads * n);
        }
        if (p.bandDescs[l] < 0) p.bandDescs[l] = 0;
        else {
          p.bandDescs[l] += base;
          heap.i32.set([p.bands[l].length, n * 4, ...p.bands[l]], p.bandDescs[l] >> 2);
        }
      }
      // The arena may have moved while the slots were reserved: its address is read last.
      p.poolBase = kv.pool.arena.baseByteOffset;
    });
    const qDim = c.nHeads * c.headDim;
    return { plan, layerQ: (l) => (qAt < 0 ? this.q : base + qAt + l * T * qDim * 4) };
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

  /** norm → q, k, v (+ bias, q/k norm) → RoPE, for all T rows of layer l; the queries go to q. */
  private pushQkv(list: JobList, l: number, T: number, q: Ptr): void {
    const c = this.config;
    const L = this.layers[l];
    const hd = c.headDim;
    const qDim = c.nHeads * hd;
    const kvDim = c.nKvHeads * hd;
    // The norm follows the previous layer's FFN (the phase pushed before, if any).
    this.follow(list, T, (o) => list.rmsnorm(this.xb, this.x, L.attnNorm, T, c.dim, c.normEps, o), ...this.quantizeFor(list, this.xb, T, c.dim));
    list.barrier();
    this.pushMatmul(list, q, this.xb, L.wq, T);
    this.pushMatmul(list, this.k, this.xb, L.wk, T);
    this.pushMatmul(list, this.v, this.xb, L.wv, T);
    if (L.bq || L.bk || L.bv) {
      list.barrier();
      if (L.bq) list.addRows(q, L.bq, T, qDim);
      if (L.bk) list.addRows(this.k, L.bk, T, kvDim);
      if (L.bv) list.addRows(this.v, L.bv, T, kvDim);
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

  /** Layer l's new keys and values (after RoPE) into the slots reserved for them, every sequence and KV head. */
  private pushKvWrites(list: JobList, l: number, items: readonly ForwardItem[], rowStart: number[], plan: PassItem[], T: number,
    rec?: PassRecords): void {
    const c = this.config;
    const hd = c.headDim;
    const kvDim = c.nKvHeads * hd;
    // Small steps: TAIL records after the RoPE tails of the same phase; else a phase of their own.
    const owner = T <= TAIL_ROWS ? TAIL : SPLIT;
    if (owner === SPLIT) list.barrier();
    items.forEach((it, i) => {
      const p = plan[i];
      const records = rec && ((rec.kvWrites[i] ??= [])[l] = [] as number[]);
      for (let h = 0; h < c.nKvHeads; h++) {
        const off = (rowStart[i] * kvDim + h * hd) * 4;
        const r = list.kvWrite(p.poolBase, p.tables[l][h], p.older[l][h], this.k + off, this.v + off, p.pageTokens, hd, owner,
          it.tokens.length, kvDim * 4, p.kvHalf);
        records?.push(r);
      }
    });
  }

  /**
   * Attention of every row over its sequence's cache for layer l. The n new tokens sit at the tail of each head's
   * slots, after every older one, so row t sees exactly the slot prefix [0, older + t] and needs no position mask.
   * All query heads of one KV head that accumulate into one buffer run as one group (in order, on one thread).
   */
  private pushAttention(list: JobList, l: number, items: readonly ForwardItem[], rowStart: number[], plan: PassItem[], q: Ptr, scale: number,
    rec?: PassRecords): void {
    const c = this.config;
    const hd = c.headDim;
    const qDim = c.nHeads * hd;
    const group = c.nHeads / c.nKvHeads;
    list.barrier();
    items.forEach((it, i) => {
      const p = plan[i];
      const n = it.tokens.length;
      // A kept decode list's records: one per query head (one row each).
      const records = rec && ((rec.attention[i] ??= [])[l] = [] as number[]);
      for (let h = 0; h < c.nKvHeads; h++) {
        const accum = p.accums[l][h];
        for (let g = 0; g < group; g++) {
          const qh = h * group + g;
          // Statistics: this query head's column sums (as its accumulator), then its band sums.
          const column = p.stats[l] ? p.stats[l] + (1 + p.bands[l].length) * qh * n * 4 : 0;
          const owner = accum ? JobList.group(i * c.nKvHeads + h)
            : column ? JobList.group(this.maxItems * c.nKvHeads + i * c.nHeads + qh) : SPLIT;
          // Row blocks; the statistics sum over rows ≥ fromRow only, so a block never straddles it.
          const from = column ? p.fromRows[l] : 0;
          for (let t0 = 0; t0 < n;) {
            const t1 = Math.min(t0 + ATTENTION_ROW_BLOCK, n, t0 < from ? from : n);
            const sums = t0 >= from ? column : 0;
            const off = ((rowStart[i] + t0) * qDim + qh * hd) * 4;
            const r = list.attentionRows({
              out: this.att + off,
              probs: this.probs,
              probsStride: this.seqPad * 4, // per-thread scratch
              q: q + off,
              rowStride: qDim * 4,
              rows: t1 - t0,
              firstSlots: p.older[l][h] + t0,
              pool: p.poolBase,
              pageTable: p.tables[l][h],
              pageTokens: p.pageTokens,
              headDim: hd,
              scale,
              accum: accum || sums,
              band: sums && p.bandDescs[l] ? sums + n * 4 : 0,
              bands: p.bandDescs[l],
              kvHalf: p.kvHalf,
            }, owner);
            records?.push(r);
            t0 = t1;
          }
        }
      }
    });
  }

  /**
   * Wo with the residual add fused (x += att·Woᵀ chunk by chunk), then the FFN norm; gate/up; SwiGLU; down (+x).
   * hook: the Wo phase opens with layer l's hook (see forwardBatch).
   */
  private pushFfn(list: JobList, l: number, T: number, hook: boolean): void {
    const c = this.config;
    const L = this.layers[l];
    const qDim = c.nHeads * c.headDim;
    this.follow(list, T, ...this.quantizeFor(list, this.att, T, qDim));
    list.barrier();
    if (hook) list.hook(l);
    this.pushMatmul(list, this.xb, this.att, L.wo, T, this.x);
    this.follow(list, T, (o) => list.rmsnorm(this.xb, this.x, L.ffnNorm, T, c.dim, c.normEps, o), ...this.quantizeFor(list, this.xb, T, c.dim));
    list.barrier();
    this.pushMatmul(list, this.hb, this.xb, L.wGate, T);
    this.pushMatmul(list, this.hb2, this.xb, L.wUp, T);
    this.follow(list, T, (o) => list.swiglu(this.hb, this.hb2, T * c.hiddenDim, o), ...this.quantizeFor(list, this.hb, T, c.hiddenDim));
    list.barrier();
    this.pushMatmul(list, this.xb, this.hb, L.wDown, T, this.x);
  }

  /** Per layer: fold the kernels' attention sums into the heads' scores, then let the cache policy profile or evict. */
  /** Fold layer l's attention sums into the heads' scores, then let the cache policy profile or evict that layer. */
  private finishLayer(l: number, it: ForwardItem, p: PassItem, row0: number, start: number, layerQ: (l: number) => Ptr): void {
    const c = this.config;
    const kv = it.kv;
    const n = it.tokens.length;
    const qDim = c.nHeads * c.headDim;
    const heap = this.rt.heap();
    for (let h = 0; h < c.nKvHeads; h++) {
      const acc = p.accums[l][h];
      if (!acc) continue;
      const st = kv.store(l, h);
      const a = acc >> 2;
      for (let s = 0; s < st.length; s++) st.scores[s] += heap.f32[a + s];
    }
    let stats: HeadAttentionStats[] | undefined;
    if (p.stats[l]) {
      stats = [];
      const K = p.bands[l].length;
      for (let qh = 0; qh < c.nHeads; qh++) {
        const at = (p.stats[l] >> 2) + (1 + K) * qh * n;
        const bands = Array.from({ length: K }, (_, k) => heap.f32.subarray(at + (1 + k) * n, at + (2 + k) * n));
        stats.push({ column: heap.f32.subarray(at, at + n), bands });
      }
    }
    const q = kv.wantsQueries ? this.rt.f32(layerQ(l) + row0 * qDim * 4, n * qDim) : NO_QUERIES;
    kv.finishLayer(l, q, qDim, n, start, stats);
  }
}
