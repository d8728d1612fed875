/**
 * A pool thread's loop (see pool.ts for the protocol), the same in a worker_thread (worker.ts) and a Web Worker
 * (worker-web.ts): instantiate the kernel module on the shared memory, then loop: wait for the next job list (spin,
 * then sleep), help run it (claiming chunks, kernels/jobs.ts). Never returns to its event loop until told to quit, so
 * it needs no message handlers.
 */
import { CTRL, CTRL_MESSAGE_BYTES } from './layout.js';
import type { KernelExports } from './runtime.js';
import type { WorkerInit } from './pool.js';

const W = (byteOffset: number): number => byteOffset >> 2;

/** Run the thread's loop until the pool says QUIT; `ready` is called once it waits for its first list. */
export function runPoolThread(init: WorkerInit, ready: () => void): void {
  const instance = new WebAssembly.Instance(init.module, { env: { memory: init.memory } });
  const kernels = instance.exports as unknown as KernelExports;
  const ctrl = new Int32Array(init.memory.buffer, init.ctrl, CTRL.MESSAGE / 4);
  let seen = Atomics.load(ctrl, W(CTRL.SEQ));
  ready();
  for (;;) {
    seen = nextSeq(ctrl, init, seen);
    if (Atomics.load(ctrl, W(CTRL.QUIT)) !== 0) break;
    try {
      // LIST and COUNT were stored before SEQ. If a newer list replaced them meanwhile, its counters carry another
      // tag than `seen`, so this thread claims nothing of it and returns to wait.
      kernels.run_jobs(Atomics.load(ctrl, W(CTRL.LIST)), Atomics.load(ctrl, W(CTRL.COUNT)), init.tid, init.threads, init.ctrl, seen, -1);
    } catch (err) {
      fail(ctrl, init, err);
    }
  }
}

/**
 * Wait until SEQ differs from `seen`; returns the new value. Spin for spinMicros, then sleep. Woken without a new list
 * (the main thread's heads-up, WorkerPool.wake, or the wait's timeout), spin again before sleeping: the list follows.
 */
function nextSeq(ctrl: Int32Array, init: WorkerInit, seen: number): number {
  const i = W(CTRL.SEQ);
  for (;;) {
    const deadline = performance.now() + init.spinMicros / 1000;
    for (let k = 1; ; k++) {
      const s = Atomics.load(ctrl, i);
      if (s !== seen) return s;
      if ((k & 255) === 0 && performance.now() > deadline) break;
    }
    // Sleep. The main thread notifies if SLEEPERS > 0 after bumping SEQ; if it bumped before we registered,
    // Atomics.wait sees SEQ ≠ seen and returns at once. The timeout only bounds how long a dead main thread is waited on.
    Atomics.add(ctrl, W(CTRL.SLEEPERS), 1);
    Atomics.wait(ctrl, i, seen, 1000);
    Atomics.sub(ctrl, W(CTRL.SLEEPERS), 1);
  }
}

/** Record the first error's message for the main thread, then make everyone abandon the list. */
function fail(ctrl: Int32Array, init: WorkerInit, err: unknown): void {
  const text = `worker ${init.tid}: ${err instanceof Error ? err.message : String(err)}`;
  const bytes = new TextEncoder().encode(text).subarray(0, CTRL_MESSAGE_BYTES);
  if (Atomics.compareExchange(ctrl, W(CTRL.ERROR), 0, -1) === 0) {
    new Uint8Array(init.memory.buffer, init.ctrl + CTRL.MESSAGE, bytes.length).set(bytes);
    Atomics.store(ctrl, W(CTRL.ERROR), bytes.length);
  }
  Atomics.store(ctrl, W(CTRL.ABORT), 1);
}

