/**
 * A pool thread in a page: a module Web Worker (bundled as fastgen-wasm-worker.js) that receives its init — the
 * compiled module and the shared memory — in its first message, runs the loop (worker-loop.ts) until the pool quits,
 * then says so and closes.
 */
import type { WorkerInit } from './pool.js';
import { runPoolThread } from './worker-loop.js';

const scope = globalThis as unknown as { onmessage: ((e: MessageEvent) => void) | null; postMessage(m: unknown): void; close(): void };
scope.onmessage = (e: MessageEvent) => {
  scope.onmessage = null;
  runPoolThread(e.data as WorkerInit, () => scope.postMessage('ready'));
  scope.postMessage('exited');
  scope.close();
};
