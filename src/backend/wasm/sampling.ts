/**
 * The sampler's SIMD pass over the vocabulary (kernels/sample.ts), on an instance of the kernel module of its own:
 * a small memory that only the calling thread uses, so any backend's logits (wasm, WebGPU, the reference) can be
 * split, and sampling never touches the wasm backend's memory or threads.
 *
 * `prepareSamplingKernel()` compiles (or reuses) the kernel module; after it settles, `samplingKernel()` returns the
 * kernel synchronously, as the sampler needs. Where the module cannot be had, the sampler keeps its exact JS path.
 */
import { loadKernelModule, type KernelExports } from './runtime.js';

const PAGE = 65536;
/** The sampler's exp tables (f64 e^−k for k < 746, e^(−j/64) for j < 64) and its histogram (2049 buckets). */
const TABLE_FLOATS = 746 + 64;
const BUCKETS = 32 * 64 + 1;
/** kernels/sample.ts farExp4's constants (simd.ts exp4's), each splat over four lanes, followed by 127 << 23. */
const FAR_CONSTANTS = [-87.33654, 1.44269504088896341, 12582912.0, 0.693359375, -2.1219444e-4, 1.98756915e-4, 1.3981999507e-3,
  8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1, 1.0];
const CONSTANT_BYTES = (FAR_CONSTANTS.length + 1) * 16;
/**
 * What split() computes of the far tokens' mass (kernels/sample.ts): 'exact' (gaps and tail), 'bound' (tail is an upper
 * bound of the total, at most ~2× it; gaps are 0) or 'none' (both 0).
 */
export type FarMass = 'exact' | 'bound' | 'none';
const FAR_CODE: Record<FarMass, number> = { none: 0, exact: 1, bound: 2 };

/** The memory's ceiling: 64 MiB, vocabularies up to ~2 M tokens (the sampler's packed sort keys stop at 2^21). */
const MAX_PAGES = 1024;

const align64 = (n: number): number => Math.ceil(n / 64) * 64;

export class SamplingKernel {
  /**
   * After split(): the maximum logit, the far mass after the last near token (with far = 'bound': an upper bound of
   * the whole far mass), the near tokens' summed weight.
   */
  max = 0;
  tail = 0;
  near = 0;
  /** After split(): near ids (id order), far gaps before each, weights by id (near ids only), the mass histogram. */
  ids = new Int32Array(0);
  gaps = new Float64Array(0);
  w = new Float64Array(0);
  mass = new Float64Array(0);
  /** After partition(): the ids below the edge bucket (id order) and those in it; edgeCount of them. */
  keep = new Int32Array(0);
  edge = new Int32Array(0);
  edgeCount = 0;
  /** Splits that returned near tokens (tests check that the near path really ran). */
  splits = 0;
  private readonly exports: KernelExports;
  private readonly memory: WebAssembly.Memory;
  private readonly base: number;
  private capacity = 0;
  private count = 0;
  private tables: Float64Array | undefined;
  private logits = new Float32Array(0);
  private out: DataView;
  private p = { tab: 0, mass: 0, x: 0, ids: 0, gaps: 0, w: 0, keep: 0, edge: 0 };

  constructor(module: WebAssembly.Module) {
    this.memory = new WebAssembly.Memory({ initial: 1, maximum: MAX_PAGES, shared: true });
    this.exports = new WebAssembly.Instance(module, { env: { memory: this.memory } }).exports as unknown as KernelExports;
    this.base = align64(Math.max(1024, this.exports.heap_base()));
    this.out = new DataView(this.memory.buffer, this.base, 64);
  }

  /** Whether a vocabulary of this size fits the kernel's memory. */
  fits(vocabSize: number): boolean {
    return this.layout(vocabSize).end <= MAX_PAGES * PAGE;
  }

  /**
   * Split `logits` at `cut` nats below the maximum, at temperature 1/invT (kernels/sample.ts): t = (max − x)·sP,
   * weights from `tables` (the sampler's, copied once), the histogram when `hist`, the far mass as `far` asks.
   * Returns the near count, or -1 when
   * a logit is NaN or the maximum is not finite, or when more than maxNear tokens are near.
   */
  split(logits: Float32Array, invT: number, cut: number, maxNear: number, sP: number, hist: boolean, tables: Float64Array,
    far: FarMass = 'exact'): number {
    const n = logits.length;
    if (n > this.capacity) this.grow(n);
    if (tables !== this.tables) {
      if (tables.length !== TABLE_FLOATS) throw new RangeError(`internal: sampling tables of ${tables.length} floats, expected ${TABLE_FLOATS}`);
      new Float64Array(this.memory.buffer, this.p.tab, TABLE_FLOATS).set(tables);
      const c = new Float32Array(this.memory.buffer, this.p.tab + TABLE_FLOATS * 8, FAR_CONSTANTS.length * 4);
      FAR_CONSTANTS.forEach((v, k) => c.fill(v, 4 * k, 4 * k + 4));
      new Int32Array(c.buffer, c.byteOffset + FAR_CONSTANTS.length * 16, 4).fill(127 << 23);
      this.tables = tables;
    }
    this.logits.set(logits);
    const p = this.p;
    const count = this.exports.sample_split(p.x, n, invT, cut, maxNear, sP, hist ? 1 : 0, FAR_CODE[far], p.ids, p.gaps, p.w, p.mass, p.tab, this.base);
    this.count = Math.max(0, count);
    if (count < 0) return -1;
    this.splits++;
    this.tail = this.out.getFloat64(0, true);
    this.near = this.out.getFloat64(8, true);
    this.max = this.out.getFloat32(16, true);
    return count;
  }

  /** argmax(logits) (src/argmax.ts's semantics: the first NaN, else the first maximum; the kernel is checked against it). */
  argmax(logits: Float32Array): number {
    const n = logits.length;
    if (n > this.capacity) this.grow(n);
    this.logits.set(logits);
    return this.exports.argmax(this.p.x, n);
  }

  /** The nucleus split of the last split()'s near tokens at bucket B (t as in split); returns how many are below it. */
  partition(sP: number, B: number): number {
    const p = this.p;
    const r = this.exports.sample_partition(p.x, p.ids, this.count, this.max, sP, B, p.keep, p.edge, this.base);
    this.edgeCount = this.out.getInt32(24, true);
    return r;
  }

  /** The near id where the cumulative mass of the last split (far gaps included, id order) exceeds target, or -1. */
  walk(target: number): number {
    const p = this.p;
    return this.exports.sample_walk(p.ids, p.gaps, p.w, this.count, target);
  }

  private layout(n: number): typeof this.p & { end: number } {
    const tab = this.base + 64;
    const mass = tab + align64(TABLE_FLOATS * 8 + CONSTANT_BYTES);
    const x = mass + align64(BUCKETS * 8);
    const ids = x + align64(n * 4);
    const gaps = ids + align64(n * 4);
    const w = gaps + align64(n * 8);
    const keep = w + align64(n * 8);
    const edge = keep + align64(n * 4);
    return { tab, mass, x, ids, gaps, w, keep, edge, end: edge + align64(n * 4) };
  }

  private grow(n: number): void {
    if (!this.fits(n)) throw new RangeError(`internal: a ${n}-token vocabulary does not fit the sampling kernel's memory`);
    const { end, ...p } = this.layout(n);
    if (end > this.memory.buffer.byteLength) this.memory.grow(Math.ceil((end - this.memory.buffer.byteLength) / PAGE));
    // Moving the regions loses the tables: copied again at the next split.
    this.tables = undefined;
    this.capacity = n;
    this.p = p;
    const buf = this.memory.buffer;
    this.logits = new Float32Array(buf, p.x, n);
    this.ids = new Int32Array(buf, p.ids, n);
    this.gaps = new Float64Array(buf, p.gaps, n);
    this.w = new Float64Array(buf, p.w, n);
    this.mass = new Float64Array(buf, p.mass, BUCKETS);
    this.keep = new Int32Array(buf, p.keep, n);
    this.edge = new Int32Array(buf, p.edge, n);
    this.out = new DataView(buf, this.base, 64);
  }
}

let kernel: SamplingKernel | undefined;
let preparing: Promise<SamplingKernel | undefined> | undefined;
let enabled = true;

/** Compile the kernel module if no backend did yet, and make the sampling kernel available; never rejects. */
export function prepareSamplingKernel(): Promise<SamplingKernel | undefined> {
  return (preparing ??= loadKernelModule().then(
    (module) => (kernel = new SamplingKernel(module)),
    () => undefined,
  ));
}

/** The sampling kernel, once prepareSamplingKernel() has settled (else undefined: the sampler's JS path). */
export function samplingKernel(): SamplingKernel | undefined {
  return enabled ? kernel : undefined;
}

/** Switch the sampler's use of the kernel (the workbench's A/B of the two paths, and their tests); on by default. */
export function useSamplingKernel(on: boolean): void {
  enabled = on;
}
