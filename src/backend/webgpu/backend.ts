/**
 * The WebGPU backend: the same transformer as cpu-ref, as WGSL kernels (wgsl.ts, wgsl-cache.ts) on one GPU device,
 * in Node through Dawn (npm `webgpu`) or in a browser.
 *
 * A forward pass stacks the new tokens of every sequence of the batch into T rows and records the whole pass —
 * embedding, every layer, the cache writes, attention, the cache policies' statistics and eviction, the classifier —
 * into ONE command buffer; then one readback brings the logits (or token ids), the eviction reports and, on FastGen's
 * prompt pass, the profiling statistics.
 *
 * The cache: the pool's pages are GPU buffers (arena.ts); each head's HeadStore on the CPU holds its pages and length,
 * exactly as on the CPU backends, so byte counts are exact, and its per-slot metadata (positions, token ids, classes)
 * until the GPU first evicts from it. Policies run as keep rules (head-policy.ts) executed by the eviction kernel
 * after the pass's last layer, on the slot metadata the GPU keeps beside each page; the kernel reports each head's new
 * length and the CPU keeps that many slots (HeadStore.keepFirst), returning emptied pages to the pool. FastGen's
 * profile is chosen on the CPU from the column and band sums the statistics kernel collected during the prompt's
 * attention (one readback per prompt); the CPU compresses its metadata (still its own: nothing was evicted on the GPU
 * before) and the GPU applies the same moves.
 */
import { FastgenError, InvalidOptionError } from '../../errors.js';
import type { KvArena } from '../../cache/page-pool.js';
import { keepRule, type HeadPolicy } from '../../cache/head-policy.js';
import type { HeadAttentionStats, LayerNeeds, PolicyTarget } from '../../cache/policies/types.js';
import type { SequenceKv } from '../../cache/sequence-kv.js';
import { tensorToF32 } from '../../model/tensor.js';
import type { LoadedCheckpoint, ModelConfig, Tensor } from '../../model/types.js';
import { ropeInvFreq } from '../../model/rope.js';
import { ropeTables } from '../wasm/runtime.js';
import type { Backend, ForwardItem } from '../types.js';
import { splitBatch } from '../batch.js';
import { GpuKvArena } from './arena.js';
import { gpuContext } from './device.js';
import { GpuDevice, GrowableBuffer, StepEncoder } from './encoder.js';
import { GpuOps, type CacheBuffers, type GpuMatrix } from './ops.js';
import { MAX_BANDS } from './wgsl-cache.js';
import { sampleParams, sampleStatusError } from './wgsl-sample.js';
import type { WeightKind } from './wgsl.js';

export type WebGpuWeightDtype = WeightKind;

export interface WebGpuBackendOptions {
  dtype?: WebGpuWeightDtype;
  /** Most token rows one pass holds (default: the context length, at most 512). Larger batches are split. */
  maxRows?: number;
  /** Most sequences one pass holds (default 64). */
  maxItems?: number;
  /** Layers recorded per command buffer of a pass (default 4): the GPU runs the first while the CPU records the rest. */
  flushLayers?: number;
}

interface Layer {
  attnNorm: GPUBuffer;
  ffnNorm: GPUBuffer;
  /** Wq, Wk, Wv stacked: one matrix × vector reads the normed input once for all three. */
  wqkv: GpuMatrix;
  wo: GpuMatrix;
  /** Wgate, Wup stacked. */
  wGateUp: GpuMatrix;
  wDown: GpuMatrix;
  /** bq | bk | bv (zeros where a model has none of one). */
  bqkv?: GPUBuffer;
  qNorm?: GPUBuffer;
  kNorm?: GPUBuffer;
}

/** Offsets (in f32 elements) of the activation regions inside the one `act` buffer. */
interface ActLayout {
  x: number;
  xb: number;
  /** [R, qDim + 2·kvDim]: q | k | v of each row (the fused projection's output). */
  qkv: number;
  /** [R, qDim + 2·kvDim]: attention output (only its first qDim columns), the qkv row stride kept. */
  att: number;
  /** [R, 2·hidden]: gate | up of each row. */
  hb: number;
  lrows: number;
  logits: number;
  total: number;
}

/** Growable u32 list for the per-pass bookkeeping buffer. */
class U32List {
  data = new Uint32Array(1024);
  length = 0;
  /** Reserve n words; returns their offset. */
  take(n: number): number {
    this.reserve(n);
    const at = this.length;
    this.length += n;
    this.data.fill(0, at, this.length);
    return at;
  }
  /** Capacity for `n` more words without zeroing them (for writers that fill every word). */
  reserve(n: number): void {
    if (this.length + n > this.data.length) {
      const grown = new Uint32Array(Math.max(this.length + n, this.data.length * 2));
      grown.set(this.data.subarray(0, this.length));
      this.data = grown;
    }
  }
  push(...v: number[]): number {
    const at = this.take(v.length);
    this.data.set(v, at);
    return at;
  }
}

/**
 * Words of one eviction entry (evictWgsl's layout, its last word the item's index in the pass, for the CPU's replay):
 * seqSlot, kvHead, n (slots before), classMask, window, current, sinks, heavy, reportOff, layer, workOff, item.
 */
export const EVICT_WORDS = 12;

/**
 * The CPU's side of a pass's evictions: each evicting head keeps the first slots the GPU's compaction left it
 * (evictWgsl's report: new length first), its pages past them go back to the pool, and its per-slot metadata stays on
 * the GPU only (HeadStore.keepFirst). Entries are EVICT_WORDS each in `ed`. A 7B batch of 8 replays ~7500 heads a
 * step: moving each head's metadata on the CPU as well cost 0.5–1.7 µs a head in cache misses
 * (dev/cache/replay-bench.ts), this a length and now and then a page.
 */
export function replayEvictions(ed: Uint32Array, nEvicts: number, reports: Uint32Array, items: readonly ForwardItem[], H: number): void {
  for (let j = 0; j < nEvicts; j++) {
    const e = j * EVICT_WORDS;
    const ro = ed[e + 8];
    if (reports[ro + 1] === 0) continue;
    const n = ed[e + 2];
    const st = items[ed[e + 11]].kv.stores[ed[e + 9] * H + ed[e + 1]];
    if (st.length !== n) throw new Error(`internal: eviction report for a head of ${n} slots, the CPU holds ${st.length}`);
    if (reports[ro] + reports[ro + 1] !== n) throw new Error(`internal: the GPU kept ${reports[ro]} and evicted ${reports[ro + 1]} of ${n} slots`);
    st.keepFirst(reports[ro]);
  }
}

/** A pass over one layer of one sequence that collects statistics for the policy to decide from on the CPU. */
interface StatsPass {
  item: number;
  layer: number;
  /** Where its statistics start in the stats buffer (f32 words). */
  at: number;
  n: number;
  /** Band distances summed (per query head: column, then one array per band). */
  bands: number;
}

const NO_QUERIES = new Float32Array(0);

/** Where the weights come from: a checkpoint, or random numbers of the right shape (synthetic models). */
interface WeightSource {
  /** name: 'tokenEmbedding', 'lmHead' or 'layers.<i>.<field of LayerWeights>'. */
  matrix(ops: GpuOps, name: string, rows: number, cols: number, kind: WeightKind): Promise<GpuMatrix>;
  /** A norm weight or bias as f32, or undefined when the model has none. */
  vector(name: string): Float32Array | undefined;
  tied: boolean;
}

/** The checkpoint tensors a stacked weight is made of: `layers.<i>.wqkv` → wq, wk, wv; wGateUp → wGate, wUp. */
function stacked(name: string): string[] {
  const at = name.slice(0, name.lastIndexOf('.'));
  const field = name.slice(at.length + 1);
  const parts = { wqkv: ['wq', 'wk', 'wv'], bqkv: ['bq', 'bk', 'bv'], wGateUp: ['wGate', 'wUp'] }[field];
  if (!parts) return [name];
  return parts.map((p) => `${at}.${p}`);
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** The tensor `layers.<i>.<field>` of a checkpoint (undefined for absent biases and norms). */
function layerTensor(layers: LoadedCheckpoint['weights']['layers'], name: string): Tensor {
  const [, i, field] = name.split('.');
  return (layers[Number(i)] as unknown as Record<string, Tensor>)[field];
}

export class WebGpuBackend implements Backend {
  readonly name = 'webgpu';
  readonly config: ModelConfig;
  readonly weightDtype: WebGpuWeightDtype;
  /** The adapter, for reports. */
  readonly adapterName: string;
  /** Bytes of weights uploaded. */
  readonly weightBytes: number;
  /**
   * Where the last pass's time went: dispatches recorded; CPU time until submit (encodeMs), of which preparing (slots,
   * page tables, KV storage growth, bookkeeping) before the first dispatch is recorded (prepareMs); time waiting for
   * the GPU and the readback; CPU time after it (replaying evictions, policy decisions).
   */
  lastPass = { dispatches: 0, encodeMs: 0, prepareMs: 0, waitMs: 0, afterMs: 0 };
  private readonly gpu: GpuDevice;
  /** The kernels (public for the workbench, which sets their measured variants). */
  readonly ops: GpuOps;
  private readonly enc: StepEncoder;
  private readonly maxRows: number;
  private readonly maxItems: number;
  /** See WebGpuBackendOptions.flushLayers (the decode benchmark's --flush-layers variant). */
  flushLayers: number;
  private readonly act: GPUBuffer;
  private readonly lay: ActLayout;
  private readonly ml: GPUBuffer;
  /** Greedy tokens of a pass (u32 per sequence). */
  private readonly tokensOut: GPUBuffer;
  private readonly passBuf: GrowableBuffer;
  private readonly stats: GrowableBuffer;
  private readonly part: GrowableBuffer;
  private readonly work: GrowableBuffer;
  private readonly report: GrowableBuffer;
  private readonly raw: GrowableBuffer;
  private staging?: { buf: GPUBuffer; bytes: number };
  private readonly list = new U32List();
  private readonly evictList = new U32List();

  static async create(ckpt: LoadedCheckpoint, opts: WebGpuBackendOptions = {}): Promise<WebGpuBackend> {
    const w = ckpt.weights;
    const c = ckpt.config;
    return WebGpuBackend.build(c, opts, {
      matrix: (ops, name, rows, cols, kind) => {
        const t = name === 'lmHead' ? w.lmHead : name === 'tokenEmbedding' ? w.tokenEmbedding : undefined;
        const data = t ? tensorToF32(t) : concat(stacked(name).map((n) => tensorToF32(layerTensor(w.layers, n))));
        return ops.uploadMatrix(data, rows, cols, kind, name);
      },
      vector: (name) => {
        if (name.endsWith('.bqkv')) {
          if (!c.qkvBias) return undefined;
          const sizes = [c.nHeads, c.nKvHeads, c.nKvHeads].map((h) => h * c.headDim);
          return concat(stacked(name).map((n, i) => (layerTensor(w.layers, n) ? tensorToF32(layerTensor(w.layers, n)) : new Float32Array(sizes[i]))));
        }
        const t = name === 'finalNorm' ? w.finalNorm : layerTensor(w.layers, name);
        return t && tensorToF32(t);
      },
      tied: w.lmHead === w.tokenEmbedding,
    });
  }

  /**
   * A model of `config`'s shape with random weights generated on the way to the GPU (no checkpoint, no CPU copy):
   * for speed measurements of models too large to ship. Norm weights are 1; its outputs mean nothing.
   */
  static async createSynthetic(config: ModelConfig, opts: WebGpuBackendOptions = {}, seed = 1): Promise<WebGpuBackend> {
    let n = seed;
    return WebGpuBackend.build(config, opts, {
      matrix: (ops, name, rows, cols, kind) => ops.randomMatrix(rows, cols, kind, n++, name),
      vector: (name) => {
        const field = name.split('.').pop();
        if (field === 'finalNorm' || field === 'attnNorm' || field === 'ffnNorm') return new Float32Array(config.dim).fill(1);
        if ((field === 'qNorm' || field === 'kNorm') && config.qkNorm) return new Float32Array(config.headDim).fill(1);
        if (config.qkvBias && field === 'bqkv') return new Float32Array((config.nHeads + 2 * config.nKvHeads) * config.headDim);
        return undefined;
      },
      tied: config.tiedEmbeddings,
    });
  }

  private static async build(c: ModelConfig, opts: WebGpuBackendOptions, src: WeightSource): Promise<WebGpuBackend> {
    const gpu = new GpuDevice(await gpuContext());
    const ops = new GpuOps(gpu);
    const kind = opts.dtype ?? 'f32';
    let bytes = 0;
    const mat = async (name: string, rows: number, cols: number) => {
      const m = await src.matrix(ops, name, rows, cols, kind);
      bytes += m.bytes;
      return m;
    };
    const vec = async (name: string) => {
      const f = src.vector(name);
      if (!f) return undefined;
      bytes += f.byteLength;
      return gpu.buffer(f.byteLength, name, f);
    };
    const need = async (name: string) => (await vec(name))!;
    const qDim = c.nHeads * c.headDim;
    const kvDim = c.nKvHeads * c.headDim;
    const embedding = await mat('tokenEmbedding', c.vocabSize, c.dim);
    const lmHead = src.tied ? embedding : await mat('lmHead', c.vocabSize, c.dim);
    const layers: Layer[] = [];
    for (let i = 0; i < c.nLayers; i++) {
      const at = `layers.${i}`;
      layers.push({
        attnNorm: await need(`${at}.attnNorm`),
        ffnNorm: await need(`${at}.ffnNorm`),
        wqkv: await mat(`${at}.wqkv`, qDim + 2 * kvDim, c.dim),
        wo: await mat(`${at}.wo`, c.dim, qDim),
        wGateUp: await mat(`${at}.wGateUp`, 2 * c.hiddenDim, c.dim),
        wDown: await mat(`${at}.wDown`, c.dim, c.hiddenDim),
        bqkv: await vec(`${at}.bqkv`),
        qNorm: await vec(`${at}.qNorm`),
        kNorm: await vec(`${at}.kNorm`),
      });
    }
    const finalNorm = await need('finalNorm');
    const t = ropeTables(ropeInvFreq(c), c.maxSeqLen);
    const rope = { cos: await gpu.buffer(t.cos.byteLength, 'rope cos', t.cos), sin: await gpu.buffer(t.sin.byteLength, 'rope sin', t.sin) };
    return new WebGpuBackend(c, gpu, ops, kind, { embedding, lmHead, layers, finalNorm, rope }, bytes, opts);
  }

  private constructor(config: ModelConfig, gpu: GpuDevice, ops: GpuOps, kind: WeightKind,
    private readonly w: { embedding: GpuMatrix; lmHead: GpuMatrix; layers: Layer[]; finalNorm: GPUBuffer; rope: { cos: GPUBuffer; sin: GPUBuffer } },
    weightBytes: number, opts: WebGpuBackendOptions) {
    this.config = config;
    this.gpu = gpu;
    this.ops = ops;
    this.weightDtype = kind;
    this.weightBytes = weightBytes;
    this.adapterName = gpu.ctx.adapterName;
    this.enc = new StepEncoder(gpu);
    const c = config;
    const qDim = c.nHeads * c.headDim;
    const kvDim = c.nKvHeads * c.headDim;
    // Rows per pass: as many as the activations (logits included) fit in one storage binding.
    const perRow = c.dim * 3 + Math.max(c.dim, qDim) + 2 * (qDim + 2 * kvDim) + 2 * c.hiddenDim + c.vocabSize;
    const fit = Math.floor(gpu.ctx.maxBinding / 4 / perRow);
    this.maxRows = Math.max(1, Math.min(opts.maxRows ?? Math.min(c.maxSeqLen, 512), fit));
    this.maxItems = opts.maxItems ?? 64;
    this.flushLayers = Math.max(1, opts.flushLayers ?? 4);
    const R = this.maxRows;
    let off = 0;
    const region = (n: number) => { const at = off; off += Math.ceil(n / 64) * 64; return at; };
    this.lay = {
      x: region(R * c.dim), xb: region(R * Math.max(c.dim, qDim)), qkv: region(R * (qDim + 2 * kvDim)), att: region(R * (qDim + 2 * kvDim)),
      hb: region(R * 2 * c.hiddenDim), lrows: region(R * c.dim), logits: region(R * c.vocabSize), total: 0,
    };
    this.lay.total = off;
    this.act = gpu.device.createBuffer({ size: off * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, label: 'activations' });
    this.ml = gpu.device.createBuffer({ size: R * c.nHeads * 2 * 4, usage: GPUBufferUsage.STORAGE, label: 'attention max/sum' });
    this.tokensOut = gpu.device.createBuffer({ size: Math.ceil(this.maxItems / 4) * 16 * 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, label: 'greedy tokens' });
    this.passBuf = new GrowableBuffer(gpu, 'pass bookkeeping');
    this.stats = new GrowableBuffer(gpu, 'profiling statistics');
    this.part = new GrowableBuffer(gpu, 'attention partials');
    this.work = new GrowableBuffer(gpu, 'eviction scratch');
    this.report = new GrowableBuffer(gpu, 'eviction reports');
    this.raw = new GrowableBuffer(gpu, 'attention scores');
  }

  /**
   * Run `pass` (one forward or forwardGreedy of decode shape) with its GPU time taken per dispatch: each dispatch in a
   * compute pass of its own between timestamps, so the sum leaves out the gaps between dispatches. For the
   * benchmark's split of a step (weights, attention, cache policy); undefined where the device has no timestamp-query.
   */
  async timedPass<T>(pass: () => Promise<T>): Promise<{ result: T; dispatches?: { key: string; ns: number }[] }> {
    this.enc.lastProfile = undefined;
    this.enc.profile = true;
    try {
      const result = await pass();
      return { result, dispatches: await this.enc.lastProfile };
    } finally {
      this.enc.profile = false;
    }
  }

  /**
   * Context without a prefill, for speed runs at depth (the benchmark's `@ dD`): `depth` filler tokens go into each
   * empty sequence's cache through the same pool, page tables and byte counts as a prompt pass, and one kernel writes
   * pseudo-random keys and values (and positions) into their slots — no attention runs. A sequence whose policy evicts
   * applies its keep rules once on the CPU first, as at the end of a prompt of that length (with zero scores), and
   * only the kept slots are written. A policy that decides from the prompt's attention statistics (fastgen, snapkv)
   * cannot start from a filled context: it is refused.
   */
  async fillContext(items: readonly { kv: SequenceKv; depth: number }[], seed = 1): Promise<void> {
    const c = this.config;
    if (items.length === 0) return;
    const arena = items[0].kv.pool.arena;
    if (!(arena instanceof GpuKvArena) || items.some((it) => it.kv.pool.arena !== arena)) throw new Error('internal: fillContext needs sequences of one GPU arena');
    for (const { kv, depth } of items) {
      if (kv.seqLength !== 0) throw new Error('internal: fillContext starts from an empty sequence');
      if (!Number.isInteger(depth) || depth < 1 || depth >= c.maxSeqLen) {
        throw new InvalidOptionError(`a context of ${depth} tokens does not fit the model's ${c.maxSeqLen}-token context with room to decode`, 'depth');
      }
      if (kv.needs(0, depth).stats) {
        throw new InvalidOptionError(`cache policy '${kv.options.policy}' decides from the prompt's attention, which a filled context does not have; give the heads their policies directly (a policy mix)`, 'cache');
      }
      const filler = Array.from({ length: depth }, (_, i) => 3 + ((i * 7919) % Math.max(1, c.vocabSize - 3)));
      for (let l = 0; l < c.nLayers; l++) {
        kv.reserveLayer(l, depth, 0, filler);
        if (kv.evicts) kv.policy.afterAttention(kv, { layer: l, n: depth, startPos: 0 });
      }
      kv.advance(depth);
    }
    await arena.sync(items[0].kv.pool);
    const seqSlots = await arena.slots(items.map((it) => it.kv));
    const shape = arena.shape();
    // Entries (8 words) after the position lists of heads whose slots do not hold positions 0, 1, 2, … in order.
    const P = new U32List();
    const entries: number[][] = [];
    let maxSlots = 0;
    items.forEach(({ kv }, i) => {
      for (let l = 0; l < c.nLayers; l++) {
        for (let h = 0; h < c.nKvHeads; h++) {
          const st = kv.store(l, h);
          const pos = st.positions.subarray(0, st.length);
          let identity = true;
          for (let s = 0; s < pos.length && identity; s++) identity = pos[s] === s;
          let posOff = 0xffffffff;
          if (!identity) { posOff = P.take(pos.length); P.data.set(pos, posOff); }
          entries.push([seqSlots[i], l, h, st.length, posOff, 0, 0, 0]);
          maxSlots = Math.max(maxSlots, st.length);
        }
      }
    });
    const entryOff = P.length;
    for (const e of entries) P.push(...e);
    const pass = await this.gpu.buffer(P.length * 4, 'context fill', P.data.subarray(0, P.length));
    const b = { pass, tables: arena.tables!, meta: arena.meta!, scores: arena.scores!, kv: arena.kv };
    for (let at = 0; at < entries.length; at += 65535) {
      const count = Math.min(65535, entries.length - at);
      this.ops.kvFill(this.enc, shape, b, { nLayers: c.nLayers, nKvHeads: c.nKvHeads, maxPages: arena.tableStride, entryOff: entryOff + 8 * at }, count, maxSlots, seed);
    }
    this.enc.submit();
    await this.gpu.device.queue.onSubmittedWorkDone();
    pass.destroy();
  }

  /** Bytes of GPU memory the arena of `pool` holds now (KV pages allocated ahead of use included, tables, metadata). */
  arenaBytes(arena: KvArena): number {
    return arena instanceof GpuKvArena ? arena.gpuBytes : 0;
  }

  /** Free an arena's GPU memory once its pool holds no page (a benchmark's throw-away pool). */
  destroyArena(arena: KvArena): void {
    if (arena instanceof GpuKvArena) arena.destroy();
  }

  createArena(): KvArena {
    return new GpuKvArena(this.gpu, { nLayers: this.config.nLayers, nKvHeads: this.config.nKvHeads, maxSeqLen: this.config.maxSeqLen });
  }

  dispose(): void {
    // Buffers are released with the device's garbage collection; the device itself is shared by the process.
  }

  async forward(items: readonly ForwardItem[]): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    // Parts that fit the activation buffer; sequences of one pass share one arena.
    for (const part of this.passes(items)) {
      out.push(...((await this.forwardBatch(part, 'logits')) as Float32Array[]));
    }
    return out;
  }

  /**
   * A forward pass that picks each sequence's next token greedily on the GPU (argmax of its last row's logits, the
   * first index of the maximum): the step reads back 4 bytes per sequence instead of a vocabulary of floats.
   */
  async forwardGreedy(items: readonly Omit<ForwardItem, 'logits' | 'out'>[]): Promise<number[]> {
    const out: number[] = [];
    const all = items.map((it) => ({ ...it, logits: 'last' as const }));
    for (const part of this.passes(all)) {
      out.push(...((await this.forwardBatch(part, 'greedy')) as number[]));
    }
    return out;
  }

  /**
   * A forward pass in which each item with `sample` gets its next token sampled on the GPU (wgsl-sample.ts, the rule
   * of src/generate/sample-rule.ts): 8 bytes back per such sequence instead of its logits; the others get logits.
   */
  async forwardSampled(items: readonly ForwardItem[]): Promise<(Float32Array | number | Error)[]> {
    const out: (Float32Array | number | Error)[] = [];
    for (const part of this.passes(items)) {
      out.push(...(await this.forwardBatch(part, 'sample')));
    }
    return out;
  }

  /**
   * The passes a batch runs as: consecutive items that fit the activations together (sharing one arena), and each
   * prompt longer than a pass's rows alone (a chunked prefill).
   */
  private passes(items: readonly ForwardItem[]): ForwardItem[][] {
    const out: ForwardItem[][] = [];
    let from = 0;
    const flush = (to: number) => {
      if (to > from) out.push(...splitBatch(items.slice(from, to), 'webgpu', this.maxItems, this.maxRows, (a, b) => a.kv.pool.arena === b.kv.pool.arena));
      from = to + 1;
    };
    items.forEach((it, i) => {
      if (it.tokens.length <= this.maxRows) return;
      if (it.logits === 'all') {
        throw new InvalidOptionError(`the webgpu backend returns every row's logits for at most ${this.maxRows} tokens in one pass, got ${it.tokens.length}; ask for fewer`, 'tokens');
      }
      flush(i);
      out.push([it]);
    });
    flush(items.length);
    return out;
  }

  /**
   * One pass. Mode 'logits': every item's wanted logits back. 'greedy': every item's argmax (forwardGreedy). 'sample':
   * the items with `sample` are sampled on the GPU, the others get their logits.
   */
  private async forwardBatch(items: readonly ForwardItem[], mode: 'logits' | 'greedy' | 'sample'): Promise<(Float32Array | number | Error)[]> {
    const greedy = mode === 'greedy';
    const t0 = performance.now();
    const c = this.config;
    const arena = items[0].kv.pool.arena;
    if (!(arena instanceof GpuKvArena)) throw new Error('internal: sequence cache is not in this backend’s GPU arena');
    for (const it of items) {
      if (it.kv.seqLength + it.tokens.length > c.maxSeqLen) throw new InvalidOptionError(`sequence would exceed the model's ${c.maxSeqLen}-token context`, 'tokens');
      for (const tok of it.tokens) if (!Number.isInteger(tok) || tok < 0 || tok >= c.vocabSize) throw new InvalidOptionError(`token id ${tok} is outside the vocabulary (0..${c.vocabSize - 1})`, 'tokens');
    }
    const L = c.nLayers;
    const H = c.nKvHeads;
    const hd = c.headDim;
    const qDim = c.nHeads * hd;
    const kvDim = H * hd;
    const qkvDim = qDim + 2 * kvDim;
    const starts = items.map((it) => it.kv.seqLength);
    const T = items.reduce((s, it) => s + it.tokens.length, 0);

    // The new tokens' slots in every (layer, KV head), on the CPU; then storage and page tables on the GPU.
    items.forEach((it, i) => { for (let l = 0; l < L; l++) it.kv.reserveLayer(l, it.tokens.length, starts[i], it.tokens); });
    await arena.sync(items[0].kv.pool);
    const seqSlots = await arena.slots(items.map((it) => it.kv));
    const shape = arena.shape();

    // The pass bookkeeping (see wgsl-cache.ts for the layout the kernels read).
    const P = this.list;
    P.length = 0;
    const tokOff = P.take(T);
    const rowMetaOff = P.take(T);
    const rowItemOff = P.take(T);
    const rowTOff = P.take(T);
    const itemOff = P.take(4 * items.length);
    const olderOff = P.take(items.length * L * H);
    const flagsOff = P.take(items.length * L * H * 4);
    const wanted: number[] = [];
    const sampledRows: number[] = [];
    const sampled = (it: ForwardItem) => mode === 'sample' && it.sample !== undefined;
    let row = 0;
    items.forEach((it, i) => {
      const cls = it.kv.classes;
      P.data.set([seqSlots[i], row, it.tokens.length, 0], itemOff + 4 * i);
      it.tokens.forEach((tok, t) => {
        P.data[tokOff + row] = tok;
        P.data[rowMetaOff + row] = ((starts[i] + t) | ((cls.special[tok] | (cls.punct[tok] << 1)) << 30)) >>> 0;
        P.data[rowItemOff + row] = i;
        P.data[rowTOff + row] = t;
        if (sampled(it)) {
          if (it.logits !== 'last') throw new Error('internal: a sampled item must ask for its last logits');
          if (t === it.tokens.length - 1) sampledRows.push(row);
        } else if (it.logits === 'all' || (it.logits === 'last' && t === it.tokens.length - 1)) wanted.push(row);
        row++;
      });
    });
    // Chunked prefill: a prompt longer than the activations' rows (alone in its pass) runs as consecutive chunks of
    // rows through every layer; the policy still sees one pass (its statistics accumulate across the chunks, its
    // evictions run after the last). Each chunk gets its own items entry: [seqSlot, rowStart, rows, first row's t].
    const chunks: { r0: number; rows: number; itemOff: number }[] = [];
    if (T <= this.maxRows) chunks.push({ r0: 0, rows: T, itemOff });
    else {
      if (items.length !== 1 || items[0].logits === 'all') throw new Error('internal: a chunked prefill is one sequence that wants at most its last logits');
      for (let r0 = 0; r0 < T; r0 += this.maxRows) {
        const rows = Math.min(this.maxRows, T - r0);
        chunks.push({ r0, rows, itemOff: P.push(seqSlots[0], 0, rows, r0) });
      }
    }
    const last = chunks[chunks.length - 1];
    // Logits rows first, then the rows sampled on the GPU, with the sampling kernel's parameters (rows of the last
    // chunk, counted from its first).
    for (let j = 0; j < wanted.length; j++) wanted[j] -= last.r0;
    for (let j = 0; j < sampledRows.length; j++) sampledRows[j] -= last.r0;
    const nLogits = wanted.length;
    wanted.push(...sampledRows);
    const wantedOff = P.push(...wanted);
    const sampleParOff = P.length;
    let sj = 0;
    for (const it of items) if (sampled(it)) P.push(...sampleParams(nLogits + sj++, it.sample!));

    // Per layer and sequence, what the cache policy needs: attention statistics (collected here, decided on the CPU
    // after the readback) or evictions, which the GPU executes. A pass without statistics cannot depend on this
    // pass's attention, so the policy's afterAttention runs now against a recorder: the heads it evicts, and by which
    // rule, become eviction kernel entries.
    let statsWords = 0;
    let workWords = 0;
    let reportWords = 0;
    const profiling: StatsPass[] = [];
    // Eviction entries, written straight into a typed list: a 7B batch of 8 has ~7500 evicting heads every step.
    const E = this.evictList;
    E.length = 0;
    const statsLayers = new Array<boolean>(L).fill(false);
    let maxSlots = 0;
    // Room for an entry per (sequence, layer, KV head): the recorder writes without zeroing (and grows only if a
    // policy applies a head twice).
    E.reserve(items.length * L * H * EVICT_WORDS);
    // One recorder per sequence for every layer: the heads its policy evicts become eviction kernel entries. This runs
    // for every evicting head of every step.
    const recorders = items.map((it, i): PolicyTarget => {
      const kv = it.kv;
      return {
        shape: kv.shape,
        store: (layer, h) => kv.store(layer, h),
        apply: (layer, h, policy, current) => {
          if (policy.full) return;
          const total = kv.stores[layer * H + h].length;
          const rule = keepRule(policy, current + 1);
          if (E.length + EVICT_WORDS > E.data.length) E.reserve(EVICT_WORDS); // a policy applying a head twice
          const at = E.length;
          E.length += EVICT_WORDS;
          const d = E.data;
          d[at] = seqSlots[i]; d[at + 1] = h; d[at + 2] = total; d[at + 3] = rule.classMask; d[at + 4] = rule.window;
          d[at + 5] = current; d[at + 6] = rule.sinks; d[at + 7] = rule.heavy; d[at + 8] = reportWords; d[at + 9] = layer;
          d[at + 10] = workWords; d[at + 11] = i;
          // Report: new length, evicted count (evictWgsl). Work: keep, score, pos, the moves, the evicted-slot bits.
          reportWords += 2;
          workWords += 4 * total + 1 + Math.ceil(total / 32);
        },
      };
    });
    for (let l = 0; l < L; l++) {
      items.forEach((it, i) => {
        const kv = it.kv;
        const n = it.tokens.length;
        const needs: LayerNeeds = kv.needs(l, n);
        const stats = needs.stats;
        const bands = stats?.bands ?? [];
        if (bands.length > MAX_BANDS) throw new Error(`internal: ${bands.length} band distances asked for; the statistics kernel sums at most ${MAX_BANDS}`);
        const bandsAt = P.take(2 + bands.length);
        P.data[bandsAt] = bands.length;
        P.data[bandsAt + 1] = n;
        for (let k = 0; k < bands.length; k++) P.data[bandsAt + 2 + k] = bands[k];
        // Per head: slots before this pass, and what its attention adds (flags 1: scores, 2: statistics). This loop
        // runs for every (sequence, layer, KV head) of every step: no allocation in it.
        const d = P.data;
        const statsFlag = stats ? 2 : 0;
        const fromRow = stats?.fromRow ?? 0;
        const head0 = (i * L + l) * H;
        for (let h = 0; h < H; h++) {
          const len = kv.stores[l * H + h].length;
          d[olderOff + head0 + h] = len - n;
          if (len > maxSlots) maxSlots = len;
          const flags = (needs.scores[h] ? 1 : 0) | statsFlag;
          if (flags === 0) continue; // P.take zero-filled the entry
          if (flags === 3) throw new Error('internal: the webgpu backend does not add scores on a pass that collects statistics');
          const f = flagsOff + (head0 + h) * 4;
          d[f] = flags;
          d[f + 1] = statsWords;
          d[f + 2] = bandsAt;
          d[f + 3] = fromRow;
          statsLayers[l] = true;
        }
        if (stats) {
          if (starts[i] !== 0) throw new Error('internal: attention statistics are collected on a pass from an empty cache');
          profiling.push({ item: i, layer: l, at: statsWords, n, bands: bands.length });
          statsWords += (1 + bands.length) * c.nHeads * n;
          return;
        }
        if (!kv.evicts) return;
        kv.policy.afterAttention(recorders[i], { layer: l, n, startPos: starts[i] });
      });
    }
    // Eviction entries (12 words) and their compaction entries (4 words), every layer's in one list: they run after
    // the last layer, as one dispatch each (a layer's cache is next read in the next pass, so evicting it after the
    // later layers' attention changes nothing; per layer, the few hundred heads of a batch left the GPU idle between
    // dispatches whose length was set by one workgroup's serial work).
    const nEvicts = E.length / EVICT_WORDS;
    const evictOff = P.take(E.length);
    P.data.set(E.data.subarray(0, E.length), evictOff);
    const movesOff = P.take(4 * nEvicts);
    // Each compaction entry: seqSlot, kvHead, where the eviction left its moves (workOff + 3n), layer.
    for (let j = 0, d = E.data, m = P.data; j < nEvicts; j++) {
      const e = j * EVICT_WORDS;
      const o = movesOff + 4 * j;
      m[o] = d[e];
      m[o + 1] = d[e + 1];
      m[o + 2] = d[e + 10] + 3 * d[e + 2];
      m[o + 3] = d[e + 9];
    }

    // Layers whose attention feeds the statistics kernel keep their scores for it (a row's slots at rawStride apart).
    const rawStride = statsLayers.some(Boolean) && this.ops.keepsRawScores(shape) ? maxSlots : 0;
    const pass = await this.passBuf.ensure(P.length * 4);
    const b: CacheBuffers = {
      act: this.act, pass, tables: arena.tables!, meta: arena.meta!, scores: arena.scores!, ml: this.ml,
      stats: await this.stats.ensure(Math.max(1, statsWords) * 4), part: await this.part.ensure(this.ops.attentionPartFloats(Math.max(...chunks.map((ch) => ch.rows)), c.nHeads, hd, maxSlots) * 4), work: await this.work.ensure(Math.max(1, workWords) * 4),
      report: await this.report.ensure(Math.max(1, reportWords) * 4), kv: arena.kv,
      raw: await this.raw.ensure(rawStride > 0 ? this.ops.rawFloats(Math.max(...chunks.map((ch) => ch.rows)), c.nHeads, rawStride) * 4 : 16),
    };
    this.gpu.device.queue.writeBuffer(pass, 0, P.data.buffer, 0, P.length * 4);

    // The pass.
    const tPrepared = performance.now();
    const enc = this.enc;
    const ops = this.ops;
    const A = this.act;
    const lay = this.lay;
    const eps = c.normEps;
    for (const ch of chunks) {
      if (ch !== chunks[0]) enc.submit(); // the previous chunk
      const T = ch.rows;
      const base = {
        nLayers: L, nHeads: c.nHeads, nKvHeads: H, maxPages: arena.tableStride, T, qOff: lay.qkv, qStride: qkvDim, kOff: lay.qkv + qDim,
        vOff: lay.qkv + qDim + kvDim, kvStride: qkvDim, outOff: lay.att, rowItemOff: rowItemOff + ch.r0, rowTOff: rowTOff + ch.r0, itemOff: ch.itemOff,
        olderOff, rowMetaOff: rowMetaOff + ch.r0, mlOff: 0, flagsOff, scale: 1 / Math.sqrt(hd),
      };
      ops.embed(enc, A, pass, this.w.embedding, T, tokOff + ch.r0, lay.x);
      for (let l = 0; l < L; l++) {
        const W = this.w.layers[l];
        // RMSNorm fused into the matrix product that reads its output (the tiled path normalises into xb first).
        ops.matmul(enc, A, W.wqkv, T, lay.x, c.dim, lay.qkv, qkvDim, false, undefined, { norm: W.attnNorm, eps, scratchOff: lay.xb });
        if (W.bqkv) ops.bias(enc, A, W.bqkv, T, qkvDim, lay.qkv, qkvDim);
        if (W.qNorm) ops.rmsnorm(enc, A, W.qNorm, T * c.nHeads, hd, lay.qkv, qkvDim, lay.qkv, qkvDim, eps, c.nHeads);
        if (W.kNorm) ops.rmsnorm(enc, A, W.kNorm, T * H, hd, lay.qkv + qDim, qkvDim, lay.qkv + qDim, qkvDim, eps, H);
        // q's and k's heads lie side by side in each row: one RoPE over nHeads + nKvHeads heads.
        ops.rope(enc, A, this.w.rope, pass, T, c.nHeads + H, hd, lay.qkv, qkvDim, rowMetaOff + ch.r0);
        const p = { ...base, layer: l, rawStride: statsLayers[l] ? rawStride : 0 };
        ops.kvWrite(enc, shape, b, p, T, H);
        ops.attention(enc, shape, b, p, T, c.nHeads, maxSlots);
        if (statsLayers[l]) ops.attentionStats(enc, shape, b, p, maxSlots, items.length, H);
        ops.matmul(enc, A, W.wo, T, lay.att, qkvDim, lay.x, c.dim, true);
        ops.matmul(enc, A, W.wGateUp, T, lay.x, c.dim, lay.hb, 2 * c.hiddenDim, false, undefined, { norm: W.ffnNorm, eps, scratchOff: lay.xb });
        // SwiGLU fused into Wdown's input.
        ops.matmul(enc, A, W.wDown, T, lay.hb, 2 * c.hiddenDim, lay.x, c.dim, true, undefined, { upOff: c.hiddenDim });
        // Let the GPU start on these layers while the next are recorded.
        if ((l + 1) % this.flushLayers === 0 && l + 1 < L) enc.flush();
      }
    }
    // Every layer's evictions, after the last chunk's last layer (see the entries above).
    if (nEvicts > 0) {
      const p = { nLayers: L, nHeads: c.nHeads, nKvHeads: H, maxPages: arena.tableStride };
      ops.evict(enc, shape, b, { ...p, entryOff: evictOff }, nEvicts);
      ops.applyMoves(enc, shape, b, { ...p, entryOff: movesOff }, nEvicts);
    }
    const nw = wanted.length;
    if (nw > 0) {
      ops.gatherRows(enc, A, pass, nw, c.dim, lay.x, lay.lrows, wantedOff);
      ops.matmul(enc, A, this.w.lmHead, nw, lay.lrows, c.dim, lay.logits, c.vocabSize, false, undefined, { norm: this.w.finalNorm, eps, scratchOff: lay.lrows });
      if (greedy) ops.argmax(enc, { buffer: A, offset: lay.logits * 4, size: nw * c.vocabSize * 4 }, this.tokensOut, nw, c.vocabSize, 0, 0);
      if (sampledRows.length > 0) {
        ops.sample(enc, { buffer: A, offset: lay.logits * 4, size: nw * c.vocabSize * 4 }, this.tokensOut, pass, sampledRows.length, c.vocabSize, 0, 0, sampleParOff);
      }
    }

    // One readback: logits (or the greedy tokens), the sampled tokens, eviction reports, statistics.
    const logitBytes = greedy ? Math.ceil(nw / 4) * 16 : nLogits * c.vocabSize * 4;
    const tokenBytes = Math.ceil(sampledRows.length / 2) * 16;
    const reportBytes = reportWords * 4;
    const statsBytes = statsWords * 4;
    // Where the reports start in the readback.
    const head = logitBytes + tokenBytes;
    const total = head + reportBytes + statsBytes;
    const staging = total > 0 ? this.stagingBuffer(total) : undefined;
    const dispatches = enc.count;
    enc.submit((ce) => {
      if (!staging) return;
      if (logitBytes) ce.copyBufferToBuffer(greedy ? this.tokensOut : A, greedy ? 0 : lay.logits * 4, staging, 0, logitBytes);
      if (tokenBytes) ce.copyBufferToBuffer(this.tokensOut, 0, staging, logitBytes, tokenBytes);
      if (reportBytes) ce.copyBufferToBuffer(b.report, 0, staging, head, reportBytes);
      if (statsBytes) ce.copyBufferToBuffer(b.stats, 0, staging, head + reportBytes, statsBytes);
    });
    const t1 = performance.now();
    let data: ArrayBuffer = new ArrayBuffer(0);
    if (staging) {
      try {
        await staging.mapAsync(GPUMapMode.READ, 0, total);
      } catch (e) {
        throw new FastgenError('GPU_UNAVAILABLE', `the GPU failed to finish a forward pass: ${(e as Error).message}`, 'backend', { cause: e });
      }
      data = staging.getMappedRange(0, total).slice(0);
      staging.unmap();
    }

    // The cache, on the CPU: replay the GPU's evictions; FastGen profiles and compresses, and the GPU follows.
    const t2 = performance.now();
    const reports = new Uint32Array(data, head, reportWords);
    replayEvictions(E.data, nEvicts, reports, items, H);
    if (profiling.length > 0) await this.decide(items, starts, profiling, new Float32Array(data, head + reportBytes, statsWords), arena, seqSlots, shape, b);
    items.forEach((it) => it.kv.advance(it.tokens.length));
    this.lastPass = { dispatches, encodeMs: t1 - t0, prepareMs: tPrepared - t0, waitMs: t2 - t1, afterMs: performance.now() - t2 };

    if (greedy) return Array.from(new Uint32Array(data, 0, nw));
    const results: (Float32Array | number | Error)[] = [];
    const logits = new Float32Array(data, 0, nLogits * c.vocabSize);
    const tokens = new Uint32Array(data, logitBytes, 2 * sampledRows.length);
    let j = 0;
    let k = 0;
    for (const it of items) {
      if (sampled(it)) {
        const status = tokens[2 * k + 1];
        results.push(status === 0 ? tokens[2 * k] : sampleStatusError(status));
        k++;
        continue;
      }
      const rows = it.logits === 'last' ? 1 : it.logits === 'all' ? it.tokens.length : 0;
      const size = rows * c.vocabSize;
      if (it.out && it.out.length < size) throw new Error(`internal: logits buffer of ${it.out.length} floats for ${size}`);
      const dst = it.out ? it.out.subarray(0, size) : new Float32Array(size);
      dst.set(logits.subarray(j * c.vocabSize, j * c.vocabSize + size));
      results.push(dst);
      j += rows;
    }
    return results;
  }

  /**
   * After the readback of a pass that collected statistics: the policy decides on the CPU (FastGen profiles, SnapKV
   * selects) and compresses the CPU-side metadata, exactly as on every backend; then the GPU follows: the same
   * compaction (slot positions are unique within a head, so the CPU's result says which old slot each kept slot came
   * from) and the scores the policy set.
   */
  private async decide(items: readonly ForwardItem[], starts: number[], passes: StatsPass[],
    stats: Float32Array, arena: GpuKvArena, seqSlots: number[], shape: ReturnType<GpuKvArena['shape']>, b: CacheBuffers): Promise<void> {
    const c = this.config;
    const qDim = c.nHeads * c.headDim;
    const work = new U32List();
    const moves: { layer: number; words: number[] }[] = [];
    const scores: { layer: number; words: number[] }[] = [];
    for (const pr of passes) {
      const kv = items[pr.item].kv;
      const perHead: HeadAttentionStats[] = [];
      for (let qh = 0; qh < c.nHeads; qh++) {
        const at = pr.at + qh * (1 + pr.bands) * pr.n;
        const bandSums = Array.from({ length: pr.bands }, (_, k) => stats.subarray(at + (1 + k) * pr.n, at + (2 + k) * pr.n));
        perHead.push({ column: stats.subarray(at, at + pr.n), bands: bandSums });
      }
      const before: Map<number, number>[] = [];
      for (let h = 0; h < c.nKvHeads; h++) {
        const st = kv.store(pr.layer, h);
        if (st.metaStale) throw new Error('internal: profiling a head whose slot metadata only the GPU holds');
        const m = new Map<number, number>();
        for (let s = 0; s < st.length; s++) m.set(st.positions[s], s);
        before.push(m);
      }
      kv.finishLayer(pr.layer, NO_QUERIES, qDim, pr.n, starts[pr.item], perHead);
      for (let h = 0; h < c.nKvHeads; h++) {
        const st = kv.store(pr.layer, h);
        const pairs: number[] = [];
        for (let d = 0; d < st.length; d++) {
          const src = before[h].get(st.positions[d])!;
          if (src !== d) pairs.push(d, src);
        }
        if (pairs.length > 0) moves.push({ layer: pr.layer, words: [seqSlots[pr.item], h, work.push(pairs.length / 2, ...pairs), pr.layer] });
        const at = work.take(st.length);
        work.data.set(new Uint32Array(st.scores.buffer, st.scores.byteOffset, st.length), at);
        scores.push({ layer: pr.layer, words: [seqSlots[pr.item], h, at, st.length] });
      }
    }
    const workBuf = await this.work.ensure(work.length * 4);
    this.gpu.device.queue.writeBuffer(workBuf, 0, work.data.buffer, 0, work.length * 4);
    const P = new U32List();
    const lists: [number, number, number, boolean][] = [];
    for (const [list, isMoves] of [[moves, true], [scores, false]] as const) {
      const byLayer = new Map<number, number[][]>();
      for (const e of list) byLayer.set(e.layer, [...(byLayer.get(e.layer) ?? []), e.words]);
      for (const [layer, entries] of byLayer) {
        lists.push([layer, P.length, entries.length, isMoves]);
        for (const wds of entries) P.push(...wds);
      }
    }
    if (lists.length === 0) return;
    const pass = await this.gpu.buffer(P.length * 4, 'compaction moves', P.data.subarray(0, P.length));
    const bb: CacheBuffers = { ...b, pass, work: workBuf };
    // Moves first (they carry stale scores along), then the scores.
    for (const [layer, off, count, isMoves] of lists) {
      const p = { nLayers: c.nLayers, layer, nHeads: c.nHeads, nKvHeads: c.nKvHeads, maxPages: arena.tableStride, entryOff: off };
      if (isMoves) this.ops.applyMoves(this.enc, shape, bb, p, count);
      else this.ops.setScores(this.enc, shape, bb, p, count);
    }
    this.enc.submit();
    pass.destroy();
  }

  private stagingBuffer(bytes: number): GPUBuffer {
    if (!this.staging || this.staging.bytes < bytes) {
      this.staging?.buf.destroy();
      const size = Math.max(bytes, Math.ceil((this.staging?.bytes ?? 0) * 1.5));
      this.staging = { buf: this.gpu.readback(size, 'step readback'), bytes: Math.ceil(size / 16) * 16 };
    }
    return this.staging.buf;
  }
}

