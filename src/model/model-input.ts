/**
 * A model's files once found, on any platform, and the one loader that reads them. What a path means (Node:
 * locate.ts) or a URL or picked files mean (in a page: locate-web.ts, blobFolder) ends here, as a `ModelInput`:
 *
 *   a folder with config.json          -> Hugging Face checkpoint (safetensors, single file or sharded)
 *   a folder with exactly one model .bin (tokenizers excluded) -> that llama2.c checkpoint, with tokenizer.bin or the
 *                                          only tok*.bin beside it
 *   a llama2.c .bin in a folder        -> that checkpoint (the default model is a byte range of a bundle)
 *
 * Every loader returns weights in the Hugging Face layout (see types.ts). All failures are ModelLoadErrors /
 * TokenizerErrors with a code, the offending file, and what to do about it.
 */
import { ModelLoadError } from '../errors.js';
import type { TokenizerSource } from '../tokenizer/load-tokenizer.js';
import { assertLittleEndianHost } from './binary-io.js';
import { parameterCountOf } from './describe.js';
import { readFolderFile, stem, type ByteSource, type ModelFolder } from './files.js';
import { inspectHfFolder, loadHfFolder } from './hf.js';
import { findLlama2cTokenizer, looksLikeLlama2cTokenizerName, readLlama2cCheckpoint, readLlama2cConfig, type Checksum, type ProgressFn } from './llama2c.js';
import type { LoadedCheckpoint, ModelConfig } from './types.js';

export type { TokenizerSource };

export const DEFAULT_MODEL_NAME = 'stories15M';

export const EXPECTED =
  'Expected a Hugging Face model folder (config.json + model.safetensors or model.safetensors.index.json), ' +
  `a llama2.c legacy .bin checkpoint, or no path for the default model (${DEFAULT_MODEL_NAME}).`;

/** A checkpoint's files: an HF folder, or one llama2.c file (opened when read; the default model checks its sha256). */
export type CheckpointFiles =
  | { kind: 'hf'; folder: ModelFolder }
  | { kind: 'llama2c'; name: string; source: LoadedCheckpoint['source']; open(): Promise<ByteSource>; checksum?: Checksum };

/** What the loaders read: the checkpoint and, when one was found, its tokenizer. */
export interface ModelInput {
  checkpoint: CheckpointFiles;
  tokenizer: TokenizerSource | undefined;
}

/** What a checkpoint is, read from its headers only (config, safetensors headers, llama2.c header): no weights. */
export interface CheckpointInfo {
  config: ModelConfig;
  source: LoadedCheckpoint['source'];
  /** Bytes of the weights as stored. */
  weightBytes: number;
  parameters: number;
  tokenizer: TokenizerSource | undefined;
}

/** The llama2.c checkpoint `file` of `folder`. */
export function llama2cInFolder(folder: ModelFolder, file: string): CheckpointFiles {
  const path = folder.where(file);
  return {
    kind: 'llama2c',
    name: stem(file),
    source: { kind: 'llama2c', path },
    async open() {
      const src = await folder.open(file);
      if (src === undefined) throw new ModelLoadError('MODEL_NOT_FOUND', `model file ${path} does not exist`, path);
      return src;
    },
  };
}

/** tokenizer.bin or the only tok*.bin beside a llama2.c checkpoint, read; undefined when there is none. */
export async function llama2cTokenizerIn(folder: ModelFolder, modelFile: string): Promise<TokenizerSource | undefined> {
  const file = await findLlama2cTokenizer(folder, modelFile);
  if (file === undefined) return undefined;
  const bytes = await readFolderFile(folder, file);
  return bytes === undefined ? undefined : { kind: 'llama2c', bytes, path: folder.where(file) };
}

/** tokenizer.json in an HF folder, if it is there. */
export async function hfTokenizerIn(folder: ModelFolder): Promise<TokenizerSource | undefined> {
  const src = await folder.open('tokenizer.json');
  if (src === undefined) return undefined;
  await src.close();
  return { kind: 'hf', folder };
}

/**
 * What model a folder holds: config.json makes it a Hugging Face folder; without one it is a model only if it holds
 * exactly one llama2.c checkpoint.
 */
export async function detectModelFolder(folder: ModelFolder): Promise<ModelInput> {
  const config = await folder.open('config.json');
  if (config !== undefined) {
    await config.close();
    return { checkpoint: { kind: 'hf', folder }, tokenizer: await hfTokenizerIn(folder) };
  }
  const dir = folder.name;
  const names = await folder.list();
  if (names === undefined) {
    throw new ModelLoadError('NOT_A_MODEL', `${folder.where('config.json')} was not found: ${dir} is not a Hugging Face model folder. ${EXPECTED}`, dir);
  }
  const checkpoints = names.filter((n) => n.endsWith('.bin') && !looksLikeLlama2cTokenizerName(n));
  if (checkpoints.length === 1) {
    const file = checkpoints[0]!;
    return { checkpoint: llama2cInFolder(folder, file), tokenizer: await llama2cTokenizerIn(folder, file) };
  }
  const gguf = names.find((n) => n.endsWith('.gguf'));
  if (gguf !== undefined) throw ggufError(folder.where(gguf));
  const found =
    checkpoints.length > 1
      ? `it has several .bin files (${checkpoints.join(', ')}); pass the one to load`
      : names.length === 0
        ? 'it is empty'
        : `it has no config.json and no llama2.c .bin (found: ${names.slice(0, 10).join(', ')}${names.length > 10 ? ', ...' : ''})`;
  throw new ModelLoadError('NOT_A_MODEL', `${dir} is not a model folder: ${found}. ${EXPECTED}`, dir);
}

export function ggufError(path: string): ModelLoadError {
  return new ModelLoadError('UNSUPPORTED_MODEL', `${path} is a GGUF file, which fastgen does not read. ${EXPECTED}`, path);
}

/** Describe a checkpoint from its headers: quick even for a model too large for this machine. */
export async function inspectModelInput(input: ModelInput): Promise<CheckpointInfo> {
  assertLittleEndianHost();
  const c = input.checkpoint;
  if (c.kind === 'hf') {
    const info = await inspectHfFolder(c.folder);
    return { ...info, parameters: parameterCountOf(info.config), tokenizer: input.tokenizer };
  }
  const src = await c.open();
  try {
    const config = await readLlama2cConfig(src, c.name);
    return { config, source: c.source, weightBytes: src.size, parameters: parameterCountOf(config), tokenizer: input.tokenizer };
  } finally {
    await src.close();
  }
}

/** Read a checkpoint's weights. */
export async function loadModelInput(
  input: ModelInput,
  onProgress?: ProgressFn,
): Promise<LoadedCheckpoint & { tokenizer: TokenizerSource | undefined }> {
  assertLittleEndianHost();
  const c = input.checkpoint;
  if (c.kind === 'hf') return { ...(await loadHfFolder(c.folder, onProgress)), tokenizer: input.tokenizer };
  const src = await c.open();
  try {
    const { config, weights } = await readLlama2cCheckpoint(src, { name: c.name, checksum: c.checksum, onProgress });
    return { config, weights, source: c.source, tokenizer: input.tokenizer };
  } finally {
    await src.close();
  }
}
