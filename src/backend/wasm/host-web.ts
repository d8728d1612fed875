/**
 * The wasm backend's host in a page: kernels.wasm is fetched and compiled by the browser (which optimizes as it sees
 * fit); threads are module Web Workers running the bundle's fastgen-wasm-worker.js, which sits next to the engine's
 * bundle (scripts/build-web.mjs). The shared memory crosses to them by postMessage, which needs a cross-origin
 * isolated page (COOP/COEP).
 */
import type { PoolThread, WasmHost } from './host.js';
import type { WorkerInit } from './pool.js';

/** The pool thread's bundle, a sibling of the bundle this module is part of. */
const WORKER_URL = new URL('./fastgen-wasm-worker.js', import.meta.url);

export const host: WasmHost = {
  async compileKernels(url) {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`${url.href}: HTTP ${res.status}`);
    return WebAssembly.compile(await res.arrayBuffer());
  },

  async startThread(init: WorkerInit): Promise<PoolThread> {
    if (!globalThis.crossOriginIsolated) {
      throw new Error('the page is not cross-origin isolated, so its threads cannot share memory: serve it with COOP/COEP headers (fastgen web does), or use one thread');
    }
    const w = new Worker(WORKER_URL, { type: 'module', name: `fastgen wasm ${init.tid}` });
    let exit!: () => void;
    const exited = new Promise<void>((resolve) => (exit = resolve));
    await new Promise<void>((resolve, reject) => {
      w.onmessage = (e: MessageEvent) => {
        if (e.data === 'ready') resolve();
        else if (e.data === 'exited') exit();
      };
      w.onerror = (e) => reject(new Error(`WASM worker ${init.tid} failed to start: ${e.message || 'no message (was the worker bundle found?)'}`));
      w.postMessage(init);
    });
    w.onerror = null;
    return { exited, ref() {}, unref() {}, terminate: async () => w.terminate() };
  },
};
