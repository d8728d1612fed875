/** The wasm backend's host in Node: kernels.wasm from disk, compiled optimized up front; threads are worker_threads. */
import { readFile } from 'node:fs/promises';
import v8 from 'node:v8';
import { Worker } from 'node:worker_threads';
import type { PoolThread, WasmHost } from './host.js';
import type { WorkerInit } from './pool.js';

export const host: WasmHost = {
  async compileKernels(url) {
    return compileOptimized(await readFile(url));
  },

  async startThread(init: WorkerInit): Promise<PoolThread> {
    const w = new Worker(new URL('./worker.js', import.meta.url), { workerData: init, execArgv: workerExecArgv() });
    const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
    try {
      await new Promise<void>((resolve, reject) => {
        w.once('message', () => resolve());
        w.once('error', reject);
        w.once('exit', (code) => reject(new Error(`WASM worker ${init.tid} exited during start-up (code ${code})`)));
      });
    } catch (err) {
      await w.terminate();
      throw err;
    }
    return { exited, ref: () => w.ref(), unref: () => w.unref(), terminate: async () => void (await w.terminate()) };
  },
};

/**
 * V8 normally compiles wasm lazily with its baseline compiler (Liftoff) and tiers hot functions up to TurboFan
 * later; measured here, a matmul stays ~4× slower for its first 50+ calls. So the flags are switched for this one
 * compile to get optimized code for every kernel up front (~50 ms), and switched back for any other module.
 */
function compileOptimized(bytes: Uint8Array): WebAssembly.Module {
  let flagsSet = false;
  try {
    v8.setFlagsFromString('--no-liftoff');
    v8.setFlagsFromString('--no-wasm-lazy-compilation');
    flagsSet = true;
  } catch {
    // A Node that refuses flag changes still works, just with V8's usual tier-up.
  }
  try {
    return new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>); // synchronous, so no other compile sees the flags
  } finally {
    if (flagsSet) {
      v8.setFlagsFromString('--liftoff');
      v8.setFlagsFromString('--wasm-lazy-compilation');
    }
  }
}

/**
 * The parent's Node options minus those that only make sense for the main script: workers inherit execArgv, and a
 * worker started by `node --input-type=module -e ...` fails on --input-type.
 */
function workerExecArgv(): string[] {
  const out: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-e' || a === '--eval' || a === '-p' || a === '--print') {
      i++; // and its code argument
      continue;
    }
    if (a.startsWith('--input-type') || a.startsWith('--eval=') || a.startsWith('--print=')) continue;
    out.push(a);
  }
  return out;
}
