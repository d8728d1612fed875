/**
 * llama2.c checkpoints, "legacy" (version 0) export format, as read by Karpathy's run.c:
 *
 *   7 x int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 *              (vocab_size < 0 means the classifier is NOT tied and is stored at the very end)
 *   f32 tensors, each stacked over layers where it is per-layer:
 *     token_embedding [vocab, dim]
 *     rms_att [L, dim]
 *     wq [L, dim, dim]   wk [L, kvDim, dim]   wv [L, kvDim, dim]   wo [L, dim, dim]
 *     rms_ffn [L, dim]
 *     w1 [L, hidden, dim]   w2 [L, dim, hidden]   w3 [L, hidden, dim]
 *     rms_final [dim]
 *     freq_cis_real [seq_len, head/2]   freq_cis_imag [seq_len, head/2]   (unused: we compute RoPE ourselves)
 *     wcls [vocab, dim]  (only when untied)
 *
 * The file is read strictly front to back, so the same code serves a standalone .bin file and a byte range inside
 * another file (the default model lives inside an Emscripten bundle), and can hash every byte on the way through.
 */
import { ModelLoadError } from '../errors.js';
import { bytesOf, CHUNK_BYTES, readExactly } from './binary-io.js';
import type { ByteSource, ModelFolder } from './files.js';
import { MAX_CONTEXT, type LayerWeights, type LoadedCheckpoint, type ModelConfig, type ModelWeights, type Tensor } from './types.js';

const LLAMA2C_HEADER_BYTES = 28;
/** First uint32 of llama2.c's newer (version 1/2) export format: "ak42". */
const LLAMA2C_V1_MAGIC = 0x616b3432;

export interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  /** True when vocab_size was positive: the classifier reuses the token embedding. */
  sharedClassifier: boolean;
  seqLen: number;
}

export type ProgressFn = (loadedBytes: number, totalBytes: number, what: string) => void;

/** An incremental hash (Node's crypto.Hash fits): the default model's bytes are checked against a known sha256. */
export interface Checksum {
  expectedSha256: string;
  hasher(): { update(bytes: Uint8Array): unknown; digest(encoding: 'hex'): string };
}

/** Parse and sanity-check the 28-byte header. Implausible values mean "this is not a llama2.c checkpoint". */
function parseLlama2cHeader(bytes: Uint8Array, path: string): Llama2cHeader {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, LLAMA2C_HEADER_BYTES);
  if (dv.getUint32(0, true) === LLAMA2C_V1_MAGIC) {
    throw new ModelLoadError(
      'UNSUPPORTED_MODEL',
      `${path} is a llama2.c version 1/2 export (magic "ak42"); fastgen reads the legacy format: re-export it with llama2.c's export.py --version 0`,
      path,
    );
  }
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, rawVocab, seqLen] = Array.from({ length: 7 }, (_, i) => dv.getInt32(i * 4, true)) as [
    number, number, number, number, number, number, number,
  ];
  const h: Llama2cHeader = {
    dim, hiddenDim, nLayers, nHeads, nKvHeads, seqLen,
    vocabSize: Math.abs(rawVocab),
    sharedClassifier: rawVocab > 0,
  };
  const problems: string[] = [];
  if (!(dim > 0 && hiddenDim > 0 && nLayers > 0 && nHeads > 0 && nKvHeads > 0 && seqLen > 0 && rawVocab !== 0)) {
    problems.push('sizes must be positive');
  } else {
    if (dim % nHeads !== 0) problems.push(`dim ${dim} is not a multiple of n_heads ${nHeads}`);
    else if ((dim / nHeads) % 2 !== 0) problems.push(`head size ${dim / nHeads} is odd (RoPE needs pairs)`);
    if (nKvHeads > nHeads || nHeads % nKvHeads !== 0) problems.push(`n_heads ${nHeads} is not a multiple of n_kv_heads ${nKvHeads}`);
    if (seqLen > MAX_CONTEXT) problems.push(`seq_len ${seqLen} is beyond the ${MAX_CONTEXT}-token context fastgen supports`);
  }
  if (problems.length > 0) {
    throw new ModelLoadError(
      'NOT_A_MODEL',
      `${path} does not look like a llama2.c checkpoint: its header (dim=${dim}, hidden_dim=${hiddenDim}, n_layers=${nLayers}, ` +
        `n_heads=${nHeads}, n_kv_heads=${nKvHeads}, vocab_size=${rawVocab}, seq_len=${seqLen}) is invalid (${problems.join('; ')}). ` +
        'Expected a llama2.c legacy .bin checkpoint or a Hugging Face folder (config.json + model.safetensors).',
      path,
    );
  }
  return h;
}

/** Total byte size a checkpoint with this header must have, header included. */
function llama2cExpectedBytes(h: Llama2cHeader): number {
  const headDim = h.dim / h.nHeads;
  const kvDim = h.nKvHeads * headDim;
  const perLayer = 2 * h.dim + 2 * h.dim * h.dim + 2 * kvDim * h.dim + 3 * h.hiddenDim * h.dim;
  const floats =
    h.vocabSize * h.dim + // token embedding
    h.nLayers * perLayer +
    h.dim + // rms_final
    h.seqLen * headDim + // freq_cis_real + freq_cis_imag, seq_len * head/2 each
    (h.sharedClassifier ? 0 : h.vocabSize * h.dim);
  return LLAMA2C_HEADER_BYTES + 4 * floats;
}

function llama2cConfig(h: Llama2cHeader, name: string): ModelConfig {
  return {
    architecture: 'llama',
    name,
    dim: h.dim,
    hiddenDim: h.hiddenDim,
    nLayers: h.nLayers,
    nHeads: h.nHeads,
    nKvHeads: h.nKvHeads,
    headDim: h.dim / h.nHeads,
    vocabSize: h.vocabSize,
    maxSeqLen: h.seqLen,
    normEps: 1e-5,
    ropeTheta: 10000,
    tiedEmbeddings: h.sharedClassifier,
    qkvBias: false,
    qkNorm: false,
    sourceDtype: 'f32',
    bosTokenId: 1,
    eosTokenIds: [2, 1], // run.c stops at BOS too: it delimits stories
  };
}

/**
 * Reorder the rows of a q or k projection ([nHeads*headDim, cols], row-major) from llama2.c's interleaved RoPE layout
 * (pairs (2j, 2j+1) rotate together) to the rotate-half layout (pairs (j, j + headDim/2)), in place. Same as the
 * `permute` in Hugging Face's convert_llama_weights_to_hf.py: per head, view the rows as [headDim/2, 2] and transpose,
 *   new[h*hd + j] = old[h*hd + 2j],   new[h*hd + hd/2 + j] = old[h*hd + 2j + 1].
 */
export function permuteInterleavedToHalf(data: Float32Array, nHeads: number, headDim: number, cols: number): Float32Array {
  const half = headDim / 2;
  const headSize = headDim * cols;
  const scratch = new Float32Array(headSize);
  for (let h = 0; h < nHeads; h++) {
    const base = h * headSize;
    scratch.set(data.subarray(base, base + headSize));
    for (let j = 0; j < half; j++) {
      data.set(scratch.subarray(2 * j * cols, (2 * j + 1) * cols), base + j * cols);
      data.set(scratch.subarray((2 * j + 1) * cols, (2 * j + 2) * cols), base + (half + j) * cols);
    }
  }
  return data;
}

/** Reads a byte range front to back, optionally hashing every byte (header and skipped tables included). */
class SequentialReader {
  private position = 0;
  constructor(
    private readonly src: ByteSource,
    private readonly hash: ReturnType<Checksum['hasher']> | undefined,
    private readonly onProgress: ProgressFn | undefined,
  ) {}

  get loaded(): number {
    return this.position;
  }

  async bytes(n: number, what: string): Promise<Uint8Array> {
    const out = new Uint8Array(n);
    await this.fill(out, what);
    return out;
  }

  async f32(shape: number[], what: string): Promise<Tensor> {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    await this.fill(bytesOf(data), what);
    return { dtype: 'f32', shape, data };
  }

  /** Step over bytes we do not keep; when hashing they still have to be read. */
  async skip(n: number, what: string): Promise<void> {
    if (this.hash === undefined) {
      this.position += n;
      this.onProgress?.(this.loaded, this.src.size, what);
      return;
    }
    const scratch = new Uint8Array(Math.min(n, CHUNK_BYTES));
    for (let left = n; left > 0; left -= scratch.byteLength) {
      await this.fill(scratch.subarray(0, Math.min(left, scratch.byteLength)), what);
    }
  }

  private async fill(dest: Uint8Array, what: string): Promise<void> {
    let done = 0;
    await readExactly(this.src, dest, this.position, (n) => {
      done += n;
      this.onProgress?.(this.loaded + done, this.src.size, what);
    });
    this.hash?.update(dest);
    this.position += dest.byteLength;
  }
}

/**
 * Read a whole llama2.c checkpoint. With a `checksum`, every byte is hashed on the way through and a mismatch raises
 * CHECKSUM_MISMATCH before any weights are returned.
 */
export async function readLlama2cCheckpoint(
  src: ByteSource,
  opts: { name: string; checksum?: Checksum; onProgress?: ProgressFn },
): Promise<{ config: ModelConfig; weights: ModelWeights }> {
  const { name: path, size: length } = src;
  if (length < LLAMA2C_HEADER_BYTES) {
    throw new ModelLoadError(
      'NOT_A_MODEL',
      `${path} is ${length} bytes, too small to be a llama2.c checkpoint (the header alone is 28 bytes). ` +
        'Expected a llama2.c legacy .bin checkpoint or a Hugging Face folder (config.json + model.safetensors).',
      path,
    );
  }
  const hash = opts.checksum?.hasher();
  const r = new SequentialReader(src, hash, opts.onProgress);
  const header = parseLlama2cHeader(await r.bytes(LLAMA2C_HEADER_BYTES, 'header'), path);
  const expected = llama2cExpectedBytes(header);
  if (expected !== length) {
    throw new ModelLoadError(
      'CORRUPT_MODEL',
      `${path} is ${length} bytes, but its llama2.c header (dim=${header.dim}, hidden_dim=${header.hiddenDim}, n_layers=${header.nLayers}, ` +
        `n_heads=${header.nHeads}, n_kv_heads=${header.nKvHeads}, vocab_size=${header.vocabSize}${header.sharedClassifier ? '' : ' untied'}, ` +
        `seq_len=${header.seqLen}) implies ${expected} bytes. The file is ${expected > length ? 'truncated' : 'longer than expected (not a legacy-format export?)'}; re-download or re-export it.`,
      path,
    );
  }

  const { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen } = header;
  const headDim = dim / nHeads;
  const kvDim = nKvHeads * headDim;
  // Each stacked [L, ...] tensor is read layer by layer into its own array.
  const perLayer = async (shape: number[], what: string): Promise<Tensor[]> => {
    const out: Tensor[] = [];
    for (let l = 0; l < nLayers; l++) out.push(await r.f32(shape, `${what}[${l}]`));
    return out;
  };

  const tokenEmbedding = await r.f32([vocabSize, dim], 'token_embedding');
  const rmsAtt = await perLayer([dim], 'rms_att');
  const wq = await perLayer([nHeads * headDim, dim], 'wq');
  const wk = await perLayer([kvDim, dim], 'wk');
  const wv = await perLayer([kvDim, dim], 'wv');
  const wo = await perLayer([dim, nHeads * headDim], 'wo');
  const rmsFfn = await perLayer([dim], 'rms_ffn');
  const w1 = await perLayer([hiddenDim, dim], 'w1');
  const w2 = await perLayer([dim, hiddenDim], 'w2');
  const w3 = await perLayer([hiddenDim, dim], 'w3');
  const finalNorm = await r.f32([dim], 'rms_final');
  await r.skip(seqLen * headDim * 4, 'freq_cis'); // real and imag tables, seq_len * head/2 floats each
  const lmHead = header.sharedClassifier ? tokenEmbedding : await r.f32([vocabSize, dim], 'wcls');

  if (hash !== undefined) {
    const actual = hash.digest('hex');
    if (actual !== opts.checksum?.expectedSha256) {
      throw new ModelLoadError(
        'CHECKSUM_MISMATCH',
        `the model bytes in ${path} have sha256 ${actual}, expected ${opts.checksum?.expectedSha256}; the file is damaged or a different version, reinstall it`,
        path,
      );
    }
  }

  for (let l = 0; l < nLayers; l++) {
    permuteInterleavedToHalf(wq[l]!.data as Float32Array, nHeads, headDim, dim);
    permuteInterleavedToHalf(wk[l]!.data as Float32Array, nKvHeads, headDim, dim);
  }
  const layers: LayerWeights[] = Array.from({ length: nLayers }, (_, l) => ({
    attnNorm: rmsAtt[l]!,
    wq: wq[l]!,
    wk: wk[l]!,
    wv: wv[l]!,
    wo: wo[l]!,
    ffnNorm: rmsFfn[l]!,
    wGate: w1[l]!,
    wDown: w2[l]!,
    wUp: w3[l]!,
  }));
  opts.onProgress?.(length, length, 'done');
  return { config: llama2cConfig(header, opts.name), weights: { tokenEmbedding, layers, finalNorm, lmHead } };
}

/** A llama2.c checkpoint's config from its 28-byte header, checked against the size of the file: no weights are read. */
export async function readLlama2cConfig(src: ByteSource, name: string): Promise<ModelConfig> {
  const { name: path, size: length } = src;
  if (length < LLAMA2C_HEADER_BYTES) {
    throw new ModelLoadError('NOT_A_MODEL', `${path} is ${length} bytes, too small to be a llama2.c checkpoint (the header alone is 28 bytes)`, path);
  }
  const bytes = new Uint8Array(LLAMA2C_HEADER_BYTES);
  await readExactly(src, bytes, 0);
  const header = parseLlama2cHeader(bytes, path);
  if (llama2cExpectedBytes(header) !== length) {
    throw new ModelLoadError('CORRUPT_MODEL', `${path} is ${length} bytes, but its llama2.c header implies ${llama2cExpectedBytes(header)}; re-download or re-export it`, path);
  }
  return llama2cConfig(header, name);
}

const TOKENIZER_FILE = /^tok.*\.bin$/i;

/** True for file names that are llama2.c tokenizers rather than checkpoints (tokenizer.bin, tok512.bin, ...). */
export function looksLikeLlama2cTokenizerName(fileName: string): boolean {
  return TOKENIZER_FILE.test(fileName);
}

/** `tokenizer.bin` next to the checkpoint, else the only `tok*.bin` in its folder, else undefined. */
export async function findLlama2cTokenizer(folder: ModelFolder, modelFile: string): Promise<string | undefined> {
  const names = await folder.list();
  if (names === undefined) return 'tokenizer.bin'; // a URL folder cannot be listed: llama2.c's usual name
  if (names.includes('tokenizer.bin')) return 'tokenizer.bin';
  const candidates = names.filter((n) => TOKENIZER_FILE.test(n) && n !== modelFile);
  return candidates.length === 1 ? candidates[0] : undefined;
}
