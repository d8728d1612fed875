/**
 * The WebGPU backend's operations: each records one or more dispatches of a WGSL kernel (wgsl.ts, wgsl-cache.ts)
 * onto a StepEncoder. The backend strings them into a forward pass; the kernel workbench (dev/kernels) runs them one
 * at a time against their plain-TS references. Weight matrices are uploaded here, split by rows into parts of at most
 * one storage binding each.
 */
import { FastgenError } from '../../errors.js';
import { f32ToF16 } from '../../half.js';
import { quantizeQ8_0 } from '../wasm/reference-extra.js';
import { f32, grid, StepEncoder, type Binding, type GpuDevice } from './encoder.js';
import {
  addWgsl, argmaxWgsl, biasWgsl, embedWgsl, gatherRowsWgsl, matmulVec4Wgsl, matmulWgsl, matvecVec4Wgsl, matvecWgsl, randomWordsWgsl, ropeWgsl, rmsnormWgsl, swigluWgsl,
  type WeightKind,
} from './wgsl.js';
import { sampleWgsl } from './wgsl-sample.js';
import {
  applyMovesWgsl, attentionCombineWgsl, attentionVec4Fits, attentionVec4Wgsl, patchTablesWgsl, attentionStatsWgsl, attentionWgsl, ATTENTION_CHUNK, copyPagesWgsl, evictWgsl, kvFillWgsl, kvWriteWgsl, setScoresWgsl, type CacheShape,
} from './wgsl-cache.js';

/** The step a matrix product fuses before it (GpuOps.matmul). */
export type MatmulInput = { norm: GPUBuffer; eps: number; scratchOff: number } | { upOff: number };

/** One row range of a weight matrix in its own buffer(s). */
export interface MatrixPart {
  rowLo: number;
  rows: number;
  w: GPUBuffer;
  /** q8_0 block scales (f32 [rows][blocks]); a 16-byte placeholder for the other kinds. */
  d: GPUBuffer;
}

/** A weight matrix [rows, cols] on the GPU: u32 words per row (rowWords), in parts of at most maxBinding bytes. */
export interface GpuMatrix {
  kind: WeightKind;
  rows: number;
  cols: number;
  rowWords: number;
  parts: MatrixPart[];
  bytes: number;
}

/**
 * u32 words per row of a [·, cols] matrix in this kind: a multiple of 4 (16-byte rows) for the vec4 matrix × vector
 * kernel (matvecVec4Wgsl). f32 rows pad to 4 values, f16 to 8, q8_0's to whole 32-value blocks (8 words). The padding
 * is zero when uploaded and random (finite) in randomMatrix; the kernels never let it meet a nonzero x. Only odd
 * shapes pad (stories260K's 172 columns: 86 → 88 words); every 7B matrix's cols is a multiple of 32.
 */
export function rowWordsOf(kind: WeightKind, cols: number): number {
  if (kind === 'f32') return Math.ceil(cols / 4) * 4;
  if (kind === 'f16') return Math.ceil(cols / 8) * 4;
  return Math.ceil(cols / 32) * 8;
}

/** Encode rows [r0, r1) of an f32 matrix into the kind's words (rowWordsOf per row; q8_0 also its scales). */
export function encodeRows(kind: WeightKind, data: Float32Array, cols: number, r0: number, r1: number): { words: Uint32Array; scales?: Float32Array } {
  const rows = r1 - r0;
  const src = data.subarray(r0 * cols, r1 * cols);
  const rw = rowWordsOf(kind, cols);
  if (kind === 'f32') {
    const out = new Float32Array(rows * rw);
    for (let r = 0; r < rows; r++) out.set(src.subarray(r * cols, (r + 1) * cols), r * rw);
    return { words: new Uint32Array(out.buffer) };
  }
  if (kind === 'f16') {
    const halves = new Uint16Array(rows * rw * 2);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) halves[r * rw * 2 + c] = f32ToF16(src[r * cols + c]);
    return { words: new Uint32Array(halves.buffer) };
  }
  const q = quantizeQ8_0(src, rows, cols);
  return { words: new Uint32Array(q.qs.buffer, q.qs.byteOffset, rows * rw), scales: q.d };
}

/**
 * GpuOps's matrix × vector kernel until told otherwise (GpuOps.setMatvecVariant): `vrows4` with 8 rows a workgroup
 * for passes of 2–8 tokens (matvecRowsByTokens).
 */
export const DEFAULT_MATVEC_VARIANT = 'default';

type MatvecFields = Pick<GpuOps, 'matvecKernel' | 'matvecRows' | 'matvecRowsByTokens' | 'matvecThreads' | 'matvecTokens' | 'matvecVec4Tokens'
  | 'matvecSubgroups' | 'matvecStageX' | 'matvecVecX'>;

/**
 * A workbench variant name: 'tiled' or 'tiled4' (the tiled kernels); `rowsN` (word kernel, N rows per workgroup) or
 * `vrowsN` (vec4 kernel), or 'default' (`vrows4` with 8 rows a workgroup for passes of 2–8 tokens), each with optional
 * suffixes `-wgN` (threads per workgroup, default by row length), `-tbN` (tokens per block; word 4, vec4 16), `-xs`
 * (vec4: x staged through workgroup memory), `-xv` (vec4: x read as vec4f) and `-nosg` (no subgroupAdd: the word
 * kernel). Throws INVALID_OPTION for any other name (checked before a GPU is touched: bench's --matvec).
 */
export function parseMatvecVariant(name: string): { path: 'tiled'; tiledVec4: boolean } | { path: 'matvec'; fields: MatvecFields } {
  if (name === 'tiled' || name === 'tiled4') return { path: 'tiled', tiledVec4: name === 'tiled4' };
  const parts = name.split('-');
  const byTokens = parts[0] === DEFAULT_MATVEC_VARIANT;
  const m = /^(v?)rows(\d+)$/.exec(byTokens ? 'vrows4' : parts[0]);
  const num = (prefix: string) => {
    const p = parts.find((x) => x.startsWith(prefix));
    return p === undefined ? undefined : Number(p.slice(prefix.length));
  };
  const bad = parts.slice(1).filter((x) => !/^(wg\d+|tb\d+|nosg|xs|xv)$/.test(x));
  if (!m || bad.length) {
    throw new FastgenError('INVALID_OPTION', `unknown matrix variant '${name}': expected default, tiled, tiled4, rowsN or vrowsN with -wgN, -tbN, -xs, -xv, -nosg`);
  }
  const vec4 = m[1] === 'v';
  return {
    path: 'matvec',
    fields: {
      matvecKernel: vec4 ? 'vec4' : 'word',
      matvecRows: Number(m[2]),
      matvecRowsByTokens: byTokens,
      matvecThreads: num('wg') ?? 0,
      matvecTokens: vec4 ? 4 : (num('tb') ?? 4),
      matvecVec4Tokens: vec4 ? (num('tb') ?? 16) : 16,
      matvecSubgroups: !parts.includes('nosg'),
      matvecStageX: parts.includes('xs'),
      matvecVecX: parts.includes('xv'),
    },
  };
}

/** Values of a kind in one u32 word. */
const VALUES_PER_WORD: Record<WeightKind, number> = { f32: 1, f16: 2, q8_0: 4 };

export class GpuOps {
  /**
   * The matrix × few-vectors kernel: 'vec4' (matvecVec4Wgsl: 16-byte weight loads, all of a pass's tokens at once;
   * needs subgroups and 16-byte rows) or 'word' (matvecWgsl: one u32 word per load, tokens in blocks of
   * matvecTokens). The workbench's `vrowsN…` variants are vec4, `rowsN…` word.
   */
  matvecKernel: 'vec4' | 'word' = 'vec4';
  /** Rows per workgroup of the matrix × vector kernel (the workbench's `rows1|rows2|rows4|rows8` / `vrowsN` variants). */
  matvecRows = 4;
  /** The vec4 kernel takes 8 rows a workgroup for passes of 2–8 tokens (see matmul); only in the `default` variant. */
  matvecRowsByTokens = false;
  /**
   * Tokens per block (variant suffix `-tb8`, …): the word kernel re-reads its rows once per block of this many; the
   * vec4 kernel takes the pass's token count rounded up to a power of two, at most this many, in one block.
   */
  matvecTokens = 4;
  /** The vec4 kernel's most tokens per block (its `-tbN` suffix): 16 keeps batch ≤ 16 to one read of each weight. */
  matvecVec4Tokens = 16;
  /**
   * Token rows from which a matrix product takes the tiled kernel instead of the matrix × vector one (workbench:
   * `run.js matmul --tokens N --variant vrows4 --variant tiled`). Up to 32 rows the matrix × vector kernels read
   * each weight once per block of tokens; the tiled kernel's 64-row tiles leave most of the GPU idle there
   * (7B batch 16: 152 ms a step through it in H200 run 3).
   */
  tiledFromRows = 33;
  /**
   * The tiled kernel: matmulVec4Wgsl (64 × 64 tiles, 16-byte weight loads, 4 × 4 per thread; workbench variant
   * `tiled4`) or matmulWgsl (32 × 64 tiles, one weight value per load; `tiled`, the measured default until the H200
   * crossover says otherwise).
   */
  tiledVec4 = false;
  /**
   * Threads per workgroup of the matrix × vector kernel (variants `…-wg32`, `…-wg64`, …); 0 = by row length: short
   * rows (stories15M's 288 columns) waste most of 256 threads on the reduction.
   */
  matvecThreads = 0;
  /**
   * The vec4 kernel stages x through workgroup memory (variant suffix `-xs`: matvecVec4Wgsl's `stage`), with fewer
   * threads per workgroup where TB tokens' columns would not fit; otherwise each thread loads its x directly.
   */
  matvecStageX = false;
  /**
   * The vec4 kernel reads x as vec4f, binding `act` as array<vec4f> (variant suffix `-xv`: matvecVec4Wgsl's `xvec`)
   * wherever x's offset, stride and SwiGLU offset are whole vec4f and the columns fill whole words; otherwise scalar.
   */
  matvecVecX = false;
  /** Reduce with subgroupAdd when the device has subgroups (variant suffix `-nosg`: the word kernel, through workgroup memory). */
  matvecSubgroups = true;
  /**
   * The attention kernel: 'vec4' reads K/V 16 bytes a load (attentionVec4Wgsl; heads of whole 16-byte words), 'scalar'
   * an element a load (the workbench's attention `--variant`).
   */
  attentionVariant: 'vec4' | 'scalar' = 'vec4';
  /** Slots per attention workgroup (split-K chunk; the workbench's attention `--chunk`). */
  attentionChunk = ATTENTION_CHUNK;
  /** The pipeline key of the last GpuOps.matmul (which kernel a variant ran: the workbench and the checks show it). */
  lastMatmulKey = '';
  private readonly placeholder: Promise<GPUBuffer>;
  /** Records the random-weight fills of synthetic models (randomMatrix). */
  private fillEncoder?: StepEncoder;

  constructor(readonly gpu: GpuDevice) {
    this.setMatvecVariant(DEFAULT_MATVEC_VARIANT);
    this.placeholder = gpu.buffer(16, 'placeholder');
  }

  /**
   * Set the matrix × vector kernel from a workbench variant name (parseMatvecVariant) and say which path
   * GpuOps.matmul should take. Fields not named return to their defaults; the tiled variants leave them as they are.
   */
  setMatvecVariant(name: string): 'matvec' | 'tiled' {
    const v = parseMatvecVariant(name);
    this.matvecRowsByTokens = false;
    this.tiledVec4 = v.path === 'tiled' && v.tiledVec4;
    if (v.path === 'tiled') return 'tiled';
    Object.assign(this, v.fields);
    return 'matvec';
  }

  /** Upload an f32 matrix [rows, cols] as `kind`, split at the storage-binding limit. */
  async uploadMatrix(data: Float32Array, rows: number, cols: number, kind: WeightKind, what: string): Promise<GpuMatrix> {
    const rowWords = rowWordsOf(kind, cols);
    const rowBytes = rowWords * 4;
    const perPart = Math.floor(this.gpu.ctx.maxBinding / rowBytes);
    if (perPart < 1) throw new FastgenError('UNSUPPORTED_MODEL', `${what}: one row of ${rowBytes} bytes exceeds the GPU's storage binding limit`);
    const parts: MatrixPart[] = [];
    let bytes = 0;
    for (let r0 = 0; r0 < rows; r0 += perPart) {
      const r1 = Math.min(rows, r0 + perPart);
      const enc = encodeRows(kind, data, cols, r0, r1);
      const w = await this.gpu.buffer(enc.words.byteLength, what, enc.words);
      const d = enc.scales ? await this.gpu.buffer(enc.scales.byteLength, `${what} scales`, enc.scales) : await this.placeholder;
      bytes += enc.words.byteLength + (enc.scales?.byteLength ?? 0);
      parts.push({ rowLo: r0, rows: r1 - r0, w, d });
    }
    return { kind, rows, cols, rowWords, parts, bytes };
  }

  /**
   * A matrix of random weights of the right shape, generated straight into the kind's words (no f32 copy): for speed
   * runs of models too large to ship (issue 13's synthetic models). Values are of magnitude ~1/√cols.
   */
  async randomMatrix(rows: number, cols: number, kind: WeightKind, seed: number, what: string): Promise<GpuMatrix> {
    const rowWords = rowWordsOf(kind, cols);
    const perPart = Math.floor(this.gpu.ctx.maxBinding / (rowWords * 4));
    const parts: MatrixPart[] = [];
    const scale = 1 / Math.sqrt(cols);
    // Random sign and mantissa bits under a fixed exponent near log2(scale): magnitudes in [scale/2, 2·scale).
    const e = Math.round(Math.log2(scale)) - 1;
    const fill = {
      f32: { mask: 0x807fffff, bits: (e + 127) << 23 },
      f16: { mask: 0x83ff83ff, bits: ((e + 15) << 10) | ((e + 15) << 26) },
      q8_0: { mask: 0xffffffff, bits: 0 },
    }[kind];
    const enc = (this.fillEncoder ??= new StepEncoder(this.gpu));
    const pl = this.gpu.pipeline('random-words', () => randomWordsWgsl);
    const words = (buf: GPUBuffer, count: number, mask: number, bits: number, salt: number) =>
      enc.dispatch(pl, 'random-words', [buf], [count, (Math.imul(seed, 0x9e3779b9) + salt) >>> 0, mask >>> 0, bits >>> 0], ...grid(Math.ceil(count / 256)));
    let bytes = 0;
    for (let r0 = 0; r0 < rows; r0 += perPart) {
      const n = Math.min(perPart, rows - r0);
      const w = await this.gpu.buffer(n * rowWords * 4, what);
      words(w, n * rowWords, fill.mask, fill.bits, r0);
      let d = await this.placeholder;
      if (kind === 'q8_0') {
        const blocks = n * (rowWords / 8);
        d = await this.gpu.buffer(blocks * 4, `${what} scales`);
        words(d, blocks, 0, new Uint32Array(Float32Array.of(scale / 64).buffer)[0], 0);
        bytes += blocks * 4;
      }
      enc.submit();
      bytes += n * rowWords * 4;
      parts.push({ rowLo: r0, rows: n, w, d });
    }
    return { kind, rows, cols, rowWords, parts, bytes };
  }

  /** act[outOff + t·dim …] = embedding rows of pass[tokOff + t], t < T. */
  embed(enc: StepEncoder, act: GPUBuffer, pass: GPUBuffer, m: GpuMatrix, T: number, tokOff: number, outOff: number): void {
    const pl = this.gpu.pipeline(`embed-${m.kind}`, () => embedWgsl(m.kind));
    for (const part of m.parts) {
      enc.dispatch(pl, `embed-${m.kind}`, [act, part.w, part.d, pass],
        [T, m.cols, m.rowWords, outOff, tokOff, part.rowLo, part.rowLo + part.rows], Math.ceil(m.cols / 64), T);
    }
  }

  /**
   * out[t, r] (+)= Σ_c W[r, c] · x[t, c]: x at act[xOff + t·xStride], out at act[outOff + t·outStride]. A few rows
   * (decode) use the matrix × vector kernel, more (prefill) the tiled one. `input` fuses the step before: x ← RMSNorm(x)
   * with weight `norm` (the tiled path normalises into act[scratchOff …] first), or x ← silu(x) · x[upOff …] (SwiGLU;
   * the tiled path applies it in place first).
   */
  matmul(enc: StepEncoder, act: GPUBuffer, m: GpuMatrix, T: number, xOff: number, xStride: number, outOff: number, outStride: number,
    accumulate = false, variant?: 'matvec' | 'tiled', input?: MatmulInput): void {
    const tiled = variant ? variant === 'tiled' : T >= this.tiledFromRows;
    if (tiled && input && 'norm' in input) {
      this.rmsnorm(enc, act, input.norm, T, m.cols, xOff, xStride, input.scratchOff, m.cols, input.eps);
      [xOff, xStride] = [input.scratchOff, m.cols];
    } else if (tiled && input && 'upOff' in input) {
      this.swiglu(enc, act, T, m.cols, xOff, xOff + input.upOff, xStride);
    }
    const mode = tiled || !input ? 'plain' : 'norm' in input ? 'norm' : 'swiglu';
    const sg = this.gpu.ctx.subgroups && this.matvecSubgroups;
    const vec4 = !tiled && sg && this.matvecKernel === 'vec4' && m.rowWords % 4 === 0;
    // Rows per workgroup by the pass's tokens (H200 run 5, 7B weights a step, f16 / q8_0): 8 rows for 2–8 tokens
    // (8 tokens: 14.9 vs 20.3 ms / 20.5 vs 34.5 ms with 4), matvecRows (4) for one token and for 9–16.
    const R = vec4 && this.matvecRowsByTokens && T >= 2 && T <= 8 ? 8 : this.matvecRows;
    let key: string;
    let pl: GPUComputePipeline;
    const tiled4 = tiled && this.tiledVec4 && m.rowWords % 4 === 0;
    if (tiled) {
      key = `matmul${tiled4 ? '4' : ''}-${m.kind}`;
      pl = this.gpu.pipeline(key, () => (tiled4 ? matmulVec4Wgsl(m.kind) : matmulWgsl(m.kind)));
    } else if (vec4) {
      // One block for the whole pass up to matvecVec4Tokens (powers of two: few pipelines, ≤ 2× the FMAs of T).
      const TB = Math.min(this.matvecVec4Tokens, 2 ** Math.ceil(Math.log2(T)));
      const rv = m.rowWords / 4;
      // 128 threads for long rows: on the H200 (f16, one token) 4.36 ms of weights a 7B step against 5.00 with 256
      // (docs/webgpu.md); q8_0 within 5 % either way.
      let WG = this.matvecThreads || (rv <= 64 ? 32 : rv <= 256 ? 64 : 128);
      const ragged = m.rowWords * VALUES_PER_WORD[m.kind] !== m.cols;
      // Staged x: TB tokens × WG threads × 4–16 floats of workgroup memory, beside the reduction's partials.
      const accN = R * TB + (mode === 'norm' ? TB : 0);
      const shared = (wg: number) => 4 * (TB * 4 * VALUES_PER_WORD[m.kind] * wg + accN * (Math.ceil(wg / this.gpu.ctx.subgroupMinSize) + 1));
      let stage = this.matvecStageX;
      while (stage && shared(WG) > this.gpu.ctx.maxWorkgroupStorage && WG > 8) WG /= 2;
      stage &&= shared(WG) <= this.gpu.ctx.maxWorkgroupStorage;
      const upOff = input && 'upOff' in input ? input.upOff : 0;
      const xvec = this.matvecVecX && !stage && !ragged && xOff % 4 === 0 && xStride % 4 === 0 && upOff % 4 === 0;
      key = `matvec4-${m.kind}-r${R}-tb${TB}-wg${WG}-${mode}${ragged ? '-ragged' : ''}${stage ? '-xs' : ''}${xvec ? '-xv' : ''}`;
      pl = this.gpu.pipeline(key, () => matvecVec4Wgsl(m.kind, R, TB, WG, this.gpu.ctx.subgroupMinSize, mode, ragged, stage, xvec));
    } else {
      const TB = this.matvecTokens;
      const WG = this.matvecThreads || (m.rowWords <= 256 ? 32 : m.rowWords <= 1024 ? 64 : 256);
      key = `matvec-${m.kind}-r${R}-tb${TB}-wg${WG}${sg ? '-sg' : ''}-${mode}`;
      pl = this.gpu.pipeline(key, () => matvecWgsl(m.kind, R, sg, WG, TB, mode));
    }
    this.lastMatmulKey = key;
    for (const part of m.parts) {
      const params = [T, part.rows, m.cols, m.rowWords, xOff, xStride, outOff, outStride, accumulate ? 1 : 0, part.rowLo,
        input && 'upOff' in input ? input.upOff : 0, f32(input && 'norm' in input ? input.eps : 0)];
      const binds: Binding[] = [act, part.w, part.d];
      if (mode === 'norm') binds.push((input as { norm: GPUBuffer }).norm);
      if (tiled) enc.dispatch(pl, key, binds, params, Math.ceil(part.rows / 64), Math.ceil(T / (tiled4 ? 64 : 32)));
      else enc.dispatch(pl, key, binds, params, ...grid(Math.ceil(part.rows / R)));
    }
  }

  /**
   * rows vectors of n: act[outOff + r·outStride …] = rmsnorm(act[inOff + r·inStride …]) ⊙ weight; with G > 1, rows in
   * groups of G vectors side by side (q/k norm: the heads of one token's row).
   */
  rmsnorm(enc: StepEncoder, act: GPUBuffer, weight: GPUBuffer, rows: number, n: number, inOff: number, inStride: number,
    outOff: number, outStride: number, eps: number, G = 1): void {
    enc.dispatch(this.gpu.pipeline('rmsnorm', () => rmsnormWgsl), 'rmsnorm', [act, weight],
      [rows, n, inOff, inStride, outOff, outStride, f32(eps), G], ...grid(rows));
  }

  /** RoPE in place over T rows × nHeads heads at act[off + t·rowStride + h·hd], positions from pass[posOff + t]. */
  rope(enc: StepEncoder, act: GPUBuffer, tables: { cos: GPUBuffer; sin: GPUBuffer }, pass: GPUBuffer, T: number, nHeads: number,
    hd: number, off: number, rowStride: number, posOff: number): void {
    enc.dispatch(this.gpu.pipeline('rope', () => ropeWgsl), 'rope', [act, tables.cos, tables.sin, pass],
      [T, nHeads, hd, off, rowStride, posOff], ...grid(Math.ceil((T * nHeads * (hd / 2)) / 64)));
  }

  bias(enc: StepEncoder, act: GPUBuffer, bias: GPUBuffer, T: number, n: number, off: number, stride: number): void {
    enc.dispatch(this.gpu.pipeline('bias', () => biasWgsl), 'bias', [act, bias], [T, n, off, stride], ...grid(Math.ceil((T * n) / 64)));
  }

  /** SwiGLU over T rows of n (gate and up at gateOff/upOff + t · stride). */
  swiglu(enc: StepEncoder, act: GPUBuffer, T: number, n: number, gateOff: number, upOff: number, stride = n): void {
    enc.dispatch(this.gpu.pipeline('swiglu', () => swigluWgsl), 'swiglu', [act], [T, n, gateOff, upOff, stride], ...grid(Math.ceil((T * n) / 64)));
  }

  add(enc: StepEncoder, act: GPUBuffer, n: number, xOff: number, yOff: number): void {
    enc.dispatch(this.gpu.pipeline('add', () => addWgsl), 'add', [act], [n, xOff, yOff], ...grid(Math.ceil(n / 64)));
  }

  gatherRows(enc: StepEncoder, act: GPUBuffer, pass: GPUBuffer, count: number, n: number, srcOff: number, dstOff: number, listOff: number): void {
    enc.dispatch(this.gpu.pipeline('gather', () => gatherRowsWgsl), 'gather', [act, pass],
      [count, n, srcOff, dstOff, listOff], ...grid(Math.ceil((count * n) / 64)));
  }

  argmax(enc: StepEncoder, logits: Binding, tokens: GPUBuffer, rows: number, n: number, inOff: number, outOff: number): void {
    enc.dispatch(this.gpu.pipeline('argmax', () => argmaxWgsl), 'argmax', [logits, tokens], [rows, n, inOff, outOff], rows);
  }

  /**
   * Sample `rows` tokens (wgsl-sample.ts): row j reads logits row par[parOff + 8j] of n floats from inOff, writes
   * (token, status) to tokens[outOff + 2j].
   */
  sample(enc: StepEncoder, logits: Binding, tokens: GPUBuffer, params: Binding, rows: number, n: number, inOff: number, outOff: number, parOff: number): void {
    enc.dispatch(this.gpu.pipeline('sample', () => sampleWgsl), 'sample', [logits, tokens, params], [rows, n, inOff, outOff, parOff], rows);
  }

  // ---- the paged cache -----------------------------------------------------------------------------------------

  private cacheKey(name: string, c: CacheShape): string {
    return `${name}-${c.parts}-${c.pagesPerPart}-${c.pageTokens}-${c.headDim}${c.half ? '-f16' : ''}`;
  }

  /** Parameters of the cache kernels (struct P of wgsl-cache.ts), by name; the rest 0. */
  static cacheParams(v: Partial<Record<CacheParam, number>> & { scale?: number }): (number | ReturnType<typeof f32>)[] {
    const out: (number | ReturnType<typeof f32>)[] = CACHE_PARAM_ORDER.map((k) => v[k] ?? 0);
    out[CACHE_PARAM_ORDER.indexOf('scale')] = f32(v.scale ?? 0);
    return out;
  }

  kvWrite(enc: StepEncoder, c: CacheShape, b: CacheBuffers, p: Parameters<typeof GpuOps.cacheParams>[0], T: number, nKvHeads: number): void {
    const key = this.cacheKey('kvwrite', c);
    enc.dispatch(this.gpu.pipeline(key, () => kvWriteWgsl(c)), key,
      [b.act, b.pass, b.tables, b.meta, b.scores, ...kvBindings(b.kv)], GpuOps.cacheParams(p), ...grid(Math.ceil((T * nKvHeads * c.headDim) / 64)));
  }

  /**
   * Attention of T rows over at most maxSlots slots each: chunk partials (split-K), then their combination; the rows'
   * max and sum go to b.ml for the statistics kernel. b.part must hold T · nHeads · ⌈maxSlots / chunk⌉ · (hd + 2) floats.
   */
  attention(enc: StepEncoder, c: CacheShape, b: CacheBuffers, p: Parameters<typeof GpuOps.cacheParams>[0], T: number, nHeads: number, maxSlots: number): void {
    const nChunks = Math.max(1, Math.ceil(maxSlots / this.attentionChunk));
    const params = GpuOps.cacheParams({ ...p, nChunks });
    if (this.attentionVariant === 'vec4' && attentionVec4Fits(c)) {
      const key = `${this.cacheKey('attention4', c)}-${this.attentionChunk}`;
      enc.dispatch(this.gpu.pipeline(key, () => attentionVec4Wgsl(c, this.attentionChunk)), key,
        [b.act, b.pass, b.tables, b.part, b.ml, b.raw, ...kvBindings(b.kv)], params, nHeads, T, nChunks);
      // One chunk: the kernel wrote the output and the rows' max and sum itself.
      if (nChunks === 1) return;
    } else {
      const key = `${this.cacheKey('attention', c)}-${this.attentionChunk}`;
      enc.dispatch(this.gpu.pipeline(key, () => attentionWgsl(c, this.attentionChunk)), key,
        [b.act, b.pass, b.tables, b.part, ...kvBindings(b.kv)], params, nHeads, T, nChunks);
    }
    const ckey = this.cacheKey('attncombine', c);
    enc.dispatch(this.gpu.pipeline(ckey, () => attentionCombineWgsl(c)), ckey, [b.act, b.part, b.ml], params, nHeads, T);
  }

  /**
   * Whether the attention kernel keeps its scores for the statistics kernel (which then reads K only through them),
   * and the floats that takes for T rows over at most maxSlots slots.
   */
  keepsRawScores(c: CacheShape): boolean {
    return this.attentionVariant === 'vec4' && attentionVec4Fits(c);
  }
  rawFloats(T: number, nHeads: number, maxSlots: number): number {
    return T * nHeads * maxSlots;
  }

  /** Floats of attention partials for T rows over at most maxSlots slots. */
  attentionPartFloats(T: number, nHeads: number, headDim: number, maxSlots: number): number {
    return T * nHeads * Math.max(1, Math.ceil(maxSlots / this.attentionChunk)) * (headDim + 2);
  }

  attentionStats(enc: StepEncoder, c: CacheShape, b: CacheBuffers, p: Parameters<typeof GpuOps.cacheParams>[0], maxSlots: number, items: number, nKvHeads: number): void {
    const fromRaw = (p.rawStride ?? 0) > 0;
    const key = `${this.cacheKey('attnstats', c)}${fromRaw ? '-raw' : ''}`;
    enc.dispatch(this.gpu.pipeline(key, () => attentionStatsWgsl(c, fromRaw)), key,
      [b.act, b.pass, b.tables, b.ml, b.scores, b.stats, ...(fromRaw ? [b.raw] : kvBindings(b.kv))], GpuOps.cacheParams(p), Math.ceil(maxSlots / 64), items * nKvHeads);
  }


  /** Eviction entries (12 words each from p.entryOff; any layers), at most 65535 per dispatch. */
  evict(enc: StepEncoder, c: CacheShape, b: CacheBuffers, p: Parameters<typeof GpuOps.cacheParams>[0], entries: number): void {
    const key = this.cacheKey('evict', c);
    for (let at = 0; at < entries; at += 65535) {
      enc.dispatch(this.gpu.pipeline(key, () => evictWgsl(c)), key,
        [b.pass, b.tables, b.meta, b.scores, b.work, b.report], GpuOps.cacheParams({ ...p, entryOff: (p.entryOff ?? 0) + 12 * at }), Math.min(65535, entries - at));
    }
  }

  /**
   * Pseudo-random K/V, positions and zero scores into the listed heads' slots (kvFillWgsl's entries at p.entryOff, at
   * most maxSlots slots each); `seed` picks the values.
   */
  kvFill(enc: StepEncoder, c: CacheShape, b: Pick<CacheBuffers, 'pass' | 'tables' | 'meta' | 'scores' | 'kv'>, p: Parameters<typeof GpuOps.cacheParams>[0],
    entries: number, maxSlots: number, seed: number): void {
    const groups = Math.ceil((maxSlots * c.headDim) / 64);
    if (groups > 65535) throw new Error(`internal: kvFill of ${maxSlots} slots per head (at most ${Math.floor((65535 * 64) / c.headDim)})`);
    const key = this.cacheKey('kvfill', c);
    enc.dispatch(this.gpu.pipeline(key, () => kvFillWgsl(c)), key,
      [b.pass, b.tables, b.meta, b.scores, ...kvBindings(b.kv)], GpuOps.cacheParams({ ...p, scale: seed }), Math.max(1, groups), entries);
  }

  setScores(enc: StepEncoder, c: CacheShape, b: CacheBuffers, p: Parameters<typeof GpuOps.cacheParams>[0], entries: number): void {
    const key = this.cacheKey('setscores', c);
    enc.dispatch(this.gpu.pipeline(key, () => setScoresWgsl(c)), key, [b.pass, b.tables, b.scores, b.work], GpuOps.cacheParams(p), entries);
  }

  /** tables[list[2j]] = list[2j + 1] for j < count (the page-table entries a pass changed). */
  patchTables(enc: StepEncoder, tables: GPUBuffer, list: GPUBuffer, count: number): void {
    enc.dispatch(this.gpu.pipeline('patch-tables', () => patchTablesWgsl), 'patch-tables', [tables, list], [count], ...grid(Math.ceil(count / 64)));
  }

  /** Copy `count` whole pages ((src, dst) page id pairs in `pairs`): K/V, slot metadata, scores (fork()). */
  copyPages(enc: StepEncoder, c: CacheShape, b: Pick<CacheBuffers, 'meta' | 'scores' | 'kv'>, pairs: GPUBuffer, count: number): void {
    const key = this.cacheKey('copypages', c);
    enc.dispatch(this.gpu.pipeline(key, () => copyPagesWgsl(c)), key, [pairs, b.meta, b.scores, ...kvBindings(b.kv)], [count], ...grid(count));
  }

  /** Compaction entries (4 words each from p.entryOff; any layers), at most 65535 per dispatch. */
  applyMoves(enc: StepEncoder, c: CacheShape, b: CacheBuffers, p: Parameters<typeof GpuOps.cacheParams>[0], entries: number): void {
    const key = this.cacheKey('moves', c);
    for (let at = 0; at < entries; at += 65535) {
      enc.dispatch(this.gpu.pipeline(key, () => applyMovesWgsl(c)), key,
        [b.pass, b.tables, b.meta, b.scores, b.work, ...kvBindings(b.kv)], GpuOps.cacheParams({ ...p, entryOff: (p.entryOff ?? 0) + 4 * at }), Math.min(65535, entries - at));
    }
  }
}

/** The buffers the cache kernels bind. */
export interface CacheBuffers {
  act: GPUBuffer;
  pass: GPUBuffer;
  tables: GPUBuffer;
  meta: GPUBuffer;
  scores: GPUBuffer;
  /** Per (row, query head): the attention's final max and sum. */
  ml: GPUBuffer;
  /** FastGen's profiling statistics. */
  stats: GPUBuffer;
  /** Attention's chunk partials (split-K). */
  part: GPUBuffer;
  /** Attention scores kept for the statistics kernel (rawFloats; with p.rawStride > 0). */
  raw: GPUBuffer;
  /** Eviction scratch and compaction moves. */
  work: GPUBuffer;
  report: GPUBuffer;
  kv: GPUBuffer[];
}

function kvBindings(kv: GPUBuffer[]): [number, Binding][] {
  return kv.map((b, i): [number, Binding] => [10 + i, b]);
}

const CACHE_PARAM_ORDER = [
  'nLayers', 'layer', 'nHeads', 'nKvHeads',
  'maxPages', 'T', 'qOff', 'qStride',
  'kOff', 'vOff', 'kvStride', 'outOff',
  'rowItemOff', 'rowTOff', 'itemOff', 'olderOff',
  'rowMetaOff', 'mlOff', 'flagsOff', 'entryOff',
  'scale', 'nChunks', 'rawStride',
] as const;
export type CacheParam = (typeof CACHE_PARAM_ORDER)[number];
