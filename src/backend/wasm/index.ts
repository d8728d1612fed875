/** The WASM SIMD backend's kernel library: runtime (memory, arena, kernels), job lists, worker pool, layouts. */
export { WasmRuntime, loadKernelModule, ropeTables } from './runtime.js';
export type { Ptr, KernelExports, Q8Matrix, AttentionArgs, RuntimeOptions } from './runtime.js';
export { JobList } from './jobs.js';
export { WorkerPool } from './pool.js';
export type { PoolOptions } from './pool.js';
export * from './layout.js';
