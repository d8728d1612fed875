import { InvalidOptionError } from '../errors.js';
import type { LoadedCheckpoint } from '../model/types.js';
import { CpuRefBackend } from './cpu-ref/backend.js';
import type { Backend } from './types.js';
import { WASM_MEMORY_LIMIT, WasmBackend, wasmMemoryBytes } from './wasm/backend.js';
import { kvBytesPerToken, parameterCountOf } from '../model/describe.js';
import type { ModelConfig } from '../model/types.js';

export const BACKEND_NAMES = ['cpu-ref', 'wasm', 'webgpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export const WEIGHT_DTYPES = ['f32', 'f16', 'q8_0'] as const;
export type WeightDtype = (typeof WEIGHT_DTYPES)[number];
/** Most worker threads a backend may start: far above any useful count, low enough that a typo cannot exhaust the machine. */
export const MAX_THREADS = 64;

/**
 * Refuse, before any weight is read, a model that cannot fit the backend: on wasm, the weights in their dtype plus
 * one full-context sequence's KV cache must fit the 4 GiB of a WebAssembly memory. The message says which dtypes fit.
 */
export function checkModelFits(config: ModelConfig, opts: { backend?: string; dtype?: string; threads?: number; kvDtype?: 'f32' | 'f16' }): void {
  if ((opts.backend ?? 'wasm') !== 'wasm') return;
  const kv = kvBytesPerToken(config, opts.kvDtype === 'f16' ? 2 : 4) * config.maxSeqLen;
  const need = (dtype: WeightDtype) => wasmMemoryBytes(config, dtype, opts.threads ?? 2) + kv;
  const dtype = (opts.dtype ?? 'f32') as WeightDtype;
  if (need(dtype) <= WASM_MEMORY_LIMIT) return;
  const fits = WEIGHT_DTYPES.filter((d) => need(d) <= WASM_MEMORY_LIMIT);
  const gib = (b: number) => `${(b / 1024 ** 3).toFixed(1)} GiB`;
  throw new InvalidOptionError(
    `${config.name} (${(parameterCountOf(config) / 1e9).toFixed(2)} B parameters, ${config.maxSeqLen}-token context) needs about ` +
      `${gib(need(dtype))} of WebAssembly memory in ${dtype} on the wasm backend, over the 4 GiB a wasm32 memory can hold. ` +
      (fits.length > 0
        ? `What fits: ${fits.map((d) => `--dtype ${d} (about ${gib(need(d))})`).join(', ')}.`
        : `No weight dtype fits (q8_0 needs about ${gib(need('q8_0'))}); this model is too large for the wasm backend.`) +
      // A GPU backend keeps its weights outside the wasm memory.
      ((BACKEND_NAMES as readonly string[]).includes('webgpu') ? ' Or use --backend webgpu, which holds the weights on the GPU.' : ''),
    'dtype',
  );
}

/** The backend options, checked without a model (so that a typo fails before anything is read). */
export function checkBackendOptions(opts: { backend?: string; dtype?: string; threads?: number }): void {
  const name = opts.backend ?? 'wasm';
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
}

export async function createBackend(
  ckpt: LoadedCheckpoint,
  opts: { backend?: string; dtype?: string; threads?: number; onProgress?: (done: number, total: number, what: string) => void },
): Promise<Backend> {
  checkBackendOptions(opts);
  const name = opts.backend ?? 'wasm'; // the fast path by default; cpu-ref is the readable reference
  const dtype = opts.dtype ?? 'f32';
  if (name === 'wasm') return WasmBackend.create(ckpt, { dtype: dtype as WeightDtype, threads: opts.threads, onProgress: opts.onProgress });
  if (name === 'webgpu') {
    // Loaded on demand: Dawn's native module is only needed by those who ask for the GPU.
    const { WebGpuBackend } = await import('./webgpu/backend.js');
    return WebGpuBackend.create(ckpt, { dtype: dtype as WeightDtype });
  }
  return new CpuRefBackend(ckpt);
}
