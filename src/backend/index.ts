import { InvalidOptionError } from '../errors.js';
import type { LoadedCheckpoint } from '../model/types.js';
import { CpuRefBackend } from './cpu-ref/backend.js';
import type { Backend } from './types.js';
import { WasmBackend } from './wasm/backend.js';

export const BACKEND_NAMES = ['cpu-ref', 'wasm'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export const WEIGHT_DTYPES = ['f32', 'f16', 'q8_0'] as const;
export type WeightDtype = (typeof WEIGHT_DTYPES)[number];
/** Most worker threads a backend may start: far above any useful count, low enough that a typo cannot exhaust the machine. */
export const MAX_THREADS = 64;

export async function createBackend(ckpt: LoadedCheckpoint, opts: { backend?: string; dtype?: string; threads?: number }): Promise<Backend> {
  const name = opts.backend ?? 'wasm'; // the fast path by default; cpu-ref is the readable reference
  if (!(BACKEND_NAMES as readonly string[]).includes(name)) {
    throw new InvalidOptionError(`unknown backend '${name}'; available: ${BACKEND_NAMES.join(', ')}`, 'backend');
  }
  const dtype = opts.dtype ?? 'f32';
  if (!(WEIGHT_DTYPES as readonly string[]).includes(dtype)) {
    throw new InvalidOptionError(`unknown dtype '${dtype}'; expected one of ${WEIGHT_DTYPES.join(', ')}`, 'dtype');
  }
  if (name === 'cpu-ref' && dtype !== 'f32' && opts.dtype !== undefined) {
    throw new InvalidOptionError(`the cpu-ref backend computes in f32 only; use --backend wasm for ${dtype}`, 'dtype');
  }
  if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1 && opts.threads <= MAX_THREADS)) {
    throw new InvalidOptionError(`threads must be an integer from 1 to ${MAX_THREADS}, got ${opts.threads} (more threads than cores only slows decoding)`, 'threads');
  }
  if (name === 'wasm') return WasmBackend.create(ckpt, { dtype: dtype as WeightDtype, threads: opts.threads });
  return new CpuRefBackend(ckpt);
}
