/**
 * What a model "path" names in a page: a URL (relative to the page). Replaces locate.ts in browser bundles (the
 * package's "browser" field); files the user picked skip this and go to detectModelFolder(blobFolder(...)).
 *
 *   .../folder/ (or no extension)      -> a Hugging Face folder (config.json, model.safetensors, tokenizer.json)
 *   .../config.json, *.safetensors     -> the Hugging Face folder it is in
 *   any other file                     -> llama2.c legacy checkpoint, with tokenizer.bin beside it
 */
import { ModelLoadError, TokenizerError } from '../errors.js';
import { detectModelFolder, ggufError, hfTokenizerIn, llama2cInFolder, llama2cTokenizerIn, type ModelInput, type TokenizerSource } from './model-input.js';
import type { LocateOptions } from './locate.js';
import { fetchBytes, urlFolder } from './url-files.js';

function absolute(url: string): string {
  const base = (globalThis as { location?: { href: string } }).location?.href;
  try {
    return new URL(url, base).href;
  } catch {
    throw new ModelLoadError('MODEL_NOT_FOUND', `${url} is not a URL`, url);
  }
}

/** The folder URL a file URL is in, and the file's name. */
function split(url: string): { dir: string; file: string } {
  const u = new URL(url);
  const cut = u.pathname.lastIndexOf('/') + 1;
  return { dir: `${u.origin}${u.pathname.slice(0, cut)}`, file: decodeURIComponent(u.pathname.slice(cut)) };
}

export async function locateModel(url: string | undefined, opts: LocateOptions = {}): Promise<ModelInput> {
  const { tokenizer: tokenizerUrl, onDownload } = opts;
  if (url === undefined || url === 'stories15M') {
    throw new ModelLoadError(
      'MODEL_NOT_FOUND',
      'in a browser the default model is not on disk: pass its URL (`fastgen web` serves it at models/stories15M/stories15M.bin)',
    );
  }
  const abs = absolute(url);
  const { dir, file } = split(abs);
  let input: ModelInput;
  if (file === '' || !file.includes('.')) {
    input = await detectModelFolder(urlFolder(abs, onDownload));
  } else if (file === 'config.json' || file.endsWith('.safetensors') || file.endsWith('.safetensors.index.json')) {
    const folder = urlFolder(dir, onDownload);
    input = { checkpoint: { kind: 'hf', folder }, tokenizer: await hfTokenizerIn(folder) };
  } else if (file.endsWith('.gguf')) {
    throw ggufError(abs);
  } else {
    const folder = urlFolder(dir, onDownload);
    input = { checkpoint: llama2cInFolder(folder, file), tokenizer: await llama2cTokenizerIn(folder, file) };
  }
  return tokenizerUrl !== undefined ? { ...input, tokenizer: await tokenizerAt(absolute(tokenizerUrl)) } : input;
}

/** An explicit tokenizer URL: a tokenizer.json (its folder's configs come along) or a llama2.c tokenizer .bin. */
async function tokenizerAt(url: string): Promise<TokenizerSource> {
  const { dir, file } = split(url);
  if (file.endsWith('.json')) {
    const hf = await hfTokenizerIn(urlFolder(dir));
    if (hf === undefined) throw new TokenizerError(`${url} was not found`, url);
    return hf;
  }
  const bytes = await fetchBytes(url);
  if (bytes === undefined) throw new TokenizerError(`${url} was not found`, url);
  return { kind: 'llama2c', bytes, path: url };
}
