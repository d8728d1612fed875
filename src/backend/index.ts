import { InvalidOptionError } from '../errors.js';
import type { LoadedCheckpoint } from '../model/types.js';
import { CpuRefBackend } from './cpu-ref/backend.js';
import type { Backend } from './types.js';
import { WasmBackend } from './wasm/backend.js';

export const BACKEND_NAMES = ['cpu-ref', 'wasm', 'webgpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];
export const WEIGHT_DTYPES = ['f32', 'f16', 'q8_0'] as const;
export type WeightDtype = (typeof WEIGHT_DTYPES)[number];

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
  if (name === 'wasm') return WasmBackend.create(ckpt, { dtype: dtype as WeightDtype, threads: opts.threads });
  if (name === 'webgpu') {
    // Loaded on demand: Dawn's native module is only needed by those who ask for the GPU.
    const { WebGpuBackend } = await import('./webgpu/backend.js');
    return WebGpuBackend.create(ckpt, { dtype: dtype as WeightDtype });
  }
  return new CpuRefBackend(ckpt);
}
