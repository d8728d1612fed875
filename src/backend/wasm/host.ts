/**
 * What the wasm backend needs from its host, the two things Node and a page do differently: compiling kernels.wasm
 * and starting the pool's threads. host-node.ts serves Node (fs, worker_threads); host-web.ts serves a page (fetch,
 * Web Workers) and replaces it in browser bundles through the package's "browser" field.
 */
import type { WorkerInit } from './pool.js';

/** A started pool thread. */
export interface PoolThread {
  /** Resolves when the thread has left its loop (after the pool's QUIT). */
  readonly exited: Promise<void>;
  /** Whether an idle thread may keep the process alive (Node); nothing in a page. */
  ref(): void;
  unref(): void;
  terminate(): Promise<void>;
}

export interface WasmHost {
  /** Compile kernels.wasm at `url` (once per process: the caller caches). */
  compileKernels(url: URL): Promise<WebAssembly.Module>;
  /** Start one pool thread and resolve once it runs its loop. */
  startThread(init: WorkerInit): Promise<PoolThread>;
}
