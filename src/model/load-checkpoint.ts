/**
 * The one entry point for loading a model: a path (in Node; a URL in a page) or an already found `ModelInput` (files
 * picked in a page, a URL folder) goes through the same loaders (model-input.ts).
 */
import { locateModel } from './locate.js';
import { inspectModelInput, loadModelInput, type CheckpointInfo, type ModelInput, type TokenizerSource } from './model-input.js';
import type { LoadedCheckpoint } from './types.js';

export { DEFAULT_MODEL_NAME, type CheckpointInfo, type ModelInput, type TokenizerSource } from './model-input.js';

export interface LoadOptions {
  onProgress?: (loadedBytes: number, totalBytes: number, what: string) => void;
  /** Use this tokenizer instead of the one found next to the model: a llama2.c .bin, a tokenizer.json, or a folder. */
  tokenizerPath?: string;
}

/** A path, the default model (undefined), or files already found. */
export type ModelLocation = string | undefined | ModelInput;

/** The files a location names (files already found are taken as they are). */
export function findModel(where: ModelLocation, tokenizerPath?: string): Promise<ModelInput> {
  return typeof where === 'object' ? Promise.resolve(where) : locateModel(where, { tokenizer: tokenizerPath });
}

/**
 * Describe a model without loading its weights: quick even for a model too large for this machine, so that `inspect`
 * and the checks that come before loading (tokenizer fit, memory) cost seconds, not the minute a load takes.
 */
export async function inspectCheckpoint(where?: ModelLocation, opts: Pick<LoadOptions, 'tokenizerPath'> = {}): Promise<CheckpointInfo> {
  return inspectModelInput(await findModel(where, opts.tokenizerPath));
}

export async function loadCheckpoint(where?: ModelLocation, opts: LoadOptions = {}): Promise<LoadedCheckpoint & { tokenizer: TokenizerSource | undefined }> {
  return loadModelInput(await findModel(where, opts.tokenizerPath), opts.onProgress);
}
