/**
 * Worker pool: threads − 1 workers plus the calling (main) thread run job lists together on the runtime's shared
 * memory. Each worker instantiates the same compiled module on the same memory (worker.ts).
 *
 * Dispatch protocol (control block in the shared memory, offsets in layout.ts CTRL):
 *   main:   plan_jobs writes the list's phase counters under a new tag; store LIST/COUNT, then SEQ = tag; notify
 *           only if a worker sleeps (SLEEPERS > 0); run the list itself; when its last phase is complete, CUR_RUN = 0.
 *   worker: wait for SEQ to change (spin first, then Atomics.wait), run the list under that tag, go back to waiting.
 * Within a list the threads claim chunks of work dynamically (kernels/jobs.ts), so the main thread never waits for
 * a worker that is not running: it does that share itself. A worker that arrives late (asleep, or descheduled on
 * a busy machine) finds less or nothing to do; one still walking a finished list sees the next list's tag and
 * leaves. A wake-up through Atomics.wait/notify costs ~45 µs here, so workers spin for a while (spinMicros) first.
 * Errors: a failing thread sets ABORT, and every thread abandons the list at its next wait or claim; run() then
 * throws on the main thread, with the worker's message if it was a worker.
 */
import type { PoolThread } from './host.js';
import { host } from './host-node.js';
import { CTRL, CTRL_BYTES, MAX_PHASES } from './layout.js';
import type { JobList } from './jobs.js';
import type { Ptr, WasmRuntime } from './runtime.js';

export interface PoolOptions {
  /** Threads including the calling one (default 2; 1 = no workers, lists run inline). */
  threads?: number;
  /**
   * How long an idle worker spins before it sleeps, in µs (default 50: covers the JS between a token's dispatches).
   * Spinning longer helps only on an idle machine; on a busy one the spinning steals the core the main thread needs
   * (measured with load ~3.5 on 2 cores, q8_0 decode: 200 µs → ~560 tok/s, 50 µs → ~690, 0 → ~730).
   */
  spinMicros?: number;
  /** Spin iterations of a wasm phase wait before it sleeps (default 20000, roughly 20-40 µs; a chunk is ≤ ~10 µs). */
  barrierSpin?: number;
  /** How matmul rows are cut into chunks (default MATMUL_CHUNK_POLICIES[DEFAULT_MATMUL_CHUNK]). */
  matmulChunk?: MatmulChunkPolicy;
}

/** A matmul chunk holds at most maxBytes of weight rows (fewer rows when several tokens share them) and 1/split of the rows. */
export interface MatmulChunkPolicy {
  maxBytes: number;
  split: number;
}

/**
 * The chunk policies behind measured decisions (kernels/jobs.ts chunkLen has the numbers), by name, so the workbench
 * can re-run them: `node dist/dev/kernels/wasm-run.js model --variant NAME ...`.
 */
export const MATMUL_CHUNK_POLICIES = {
  '512k-quarter': { maxBytes: 512 * 1024, split: 4 }, // shipped
  '512k-eighth': { maxBytes: 512 * 1024, split: 8 }, //  before b7af145
  '160k-eighth': { maxBytes: 160 * 1024, split: 8 }, //  before 729635c
  '512k-half': { maxBytes: 512 * 1024, split: 2 }, //    measured worse than a quarter
} as const satisfies Record<string, MatmulChunkPolicy>;
export type MatmulChunkName = keyof typeof MATMUL_CHUNK_POLICIES;
export const DEFAULT_MATMUL_CHUNK: MatmulChunkName = '512k-quarter';

/** What a worker receives (worker.ts). */
export interface WorkerInit {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  ctrl: Ptr;
  tid: number;
  threads: number;
  spinMicros: number;
}

const W = (byteOffset: number): number => byteOffset >> 2; // Int32Array index of a CTRL offset

function writeChunkPolicy(ctrl: Int32Array, p: MatmulChunkPolicy): void {
  if (!(Number.isInteger(p.maxBytes) && p.maxBytes > 0 && Number.isInteger(p.split) && p.split > 0)) {
    throw new RangeError(`matmulChunk: maxBytes and split must be positive integers (got ${p.maxBytes}, ${p.split})`);
  }
  ctrl[W(CTRL.CHUNK_BYTES)] = p.maxBytes;
  ctrl[W(CTRL.CHUNK_SPLIT)] = p.split;
}
/** run_jobs returns HOOK_RC + r at hook record r (kernels/jobs.ts HOOK_BASE). */
const HOOK_RC = 2;

export class WorkerPool {
  readonly threads: number;
  private readonly rt: WasmRuntime;
  private readonly ctrlPtr: Ptr;
  private readonly ctrl: Int32Array;
  private readonly workers: PoolThread[];
  private readonly exited: Promise<void>[];
  private readonly spinMicros: number;
  private closed = false;
  private tag = 0;

  static async create(rt: WasmRuntime, options: PoolOptions = {}): Promise<WorkerPool> {
    const threads = Math.max(1, Math.floor(options.threads ?? 2));
    const spinMicros = options.spinMicros ?? 50;
    const ctrlPtr = rt.alloc(CTRL_BYTES, 64);
    rt.u8(ctrlPtr, CTRL_BYTES).fill(0);
    rt.i32(ctrlPtr + CTRL.SPIN, 1)[0] = options.barrierSpin ?? 20_000;
    writeChunkPolicy(rt.i32(ctrlPtr, CTRL_BYTES / 4), options.matmulChunk ?? MATMUL_CHUNK_POLICIES[DEFAULT_MATMUL_CHUNK]);
    const started = await Promise.allSettled(
      Array.from({ length: threads - 1 }, (_, i) =>
        host.startThread({ module: rt.module, memory: rt.memory, ctrl: ctrlPtr, tid: i + 1, threads, spinMicros }),
      ),
    );
    const workers = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed !== undefined) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw failed.reason;
    }
    return new WorkerPool(rt, ctrlPtr, threads, workers, spinMicros);
  }

  private constructor(rt: WasmRuntime, ctrlPtr: Ptr, threads: number, workers: PoolThread[], spinMicros: number) {
    this.rt = rt;
    this.ctrlPtr = ctrlPtr;
    this.ctrl = rt.i32(ctrlPtr, CTRL_BYTES / 4);
    this.threads = threads;
    this.workers = workers;
    this.spinMicros = spinMicros;
    this.exited = workers.map((w) => w.exited);
    // A forgotten pool must not keep the process alive; close() re-refs them while it waits for their exit.
    for (const w of workers) w.unref();
  }

  /** Change the matmul chunk policy for the next lists (the workbench's A/B; not while a list runs). */
  setMatmulChunk(policy: MatmulChunkPolicy): void {
    writeChunkPolicy(this.ctrl, policy);
  }

  /**
   * Run a job list on all threads; returns when all of it is done. Throws if any thread failed. At each hook record
   * (JobList.hook) the calling thread runs onHook(id) while the workers go on, then rejoins.
   */
  run(list: JobList, onHook?: (id: number) => void): void {
    if (this.closed) throw new Error('WorkerPool is closed');
    const hook = (rc: number): number => {
      const r = rc - HOOK_RC;
      if (!onHook) throw new Error('internal: a job list with hooks needs onHook');
      onHook(list.arg(r, 0));
      return r;
    };
    if (this.workers.length === 0) {
      for (let after = -1; ;) {
        const rc = this.rt.exports.run_jobs(list.ptr, list.length, 0, 1, 0, 0, after);
        if (rc === 0) return;
        if (rc < HOOK_RC) throw new Error('job list aborted');
        after = hook(rc);
      }
    }
    const c = this.ctrl;
    const tag = (this.tag = (this.tag % 65535) + 1); // 1..65535: the phase counters keep it in 16 bits
    const phases = this.rt.exports.plan_jobs(list.ptr, list.length, this.threads, this.ctrlPtr, tag);
    if (phases < 0) throw new RangeError(`job list has more than ${MAX_PHASES - 1} barriers`);
    Atomics.store(c, W(CTRL.ERROR), 0);
    Atomics.store(c, W(CTRL.LIST), list.ptr);
    Atomics.store(c, W(CTRL.COUNT), list.length);
    Atomics.store(c, W(CTRL.SEQ), tag);
    if (Atomics.load(c, W(CTRL.SLEEPERS)) > 0) Atomics.notify(c, W(CTRL.SEQ));

    let failure: unknown;
    try {
      for (let after = -1; ;) {
        const rc = this.rt.exports.run_jobs(list.ptr, list.length, 0, this.threads, this.ctrlPtr, tag, after);
        if (rc < HOOK_RC) {
          if (rc !== 0) failure = null;
          break;
        }
        after = hook(rc);
      }
    } catch (err) {
      failure = err;
      this.abort();
    }
    // Complete (or abandoned): from here on no thread starts a pinned op of this list, so it may be rewritten.
    Atomics.store(c, W(CTRL.CUR_RUN), 0);

    if (failure !== undefined || Atomics.load(c, W(CTRL.ABORT)) !== 0) {
      // A failing worker publishes its message before it sets ABORT, which is what ended our wait.
      const errLen = Atomics.load(c, W(CTRL.ERROR));
      const message = errLen > 0 ? new TextDecoder().decode(this.rt.u8(this.ctrlPtr + CTRL.MESSAGE, errLen).slice()) : '';
      // Retire the list before clearing ABORT: a worker that has not looked at ABORT yet may still wait in one of
      // its phases. Counters under tag 0 belong to no dispatch, so such a worker sees a foreign list and leaves.
      for (let p = 0; p < phases; p++) {
        const at = W(CTRL.PHASES + 32 * p);
        Atomics.store(c, at, 0);
        Atomics.store(c, at + 1, 0);
        Atomics.notify(c, at + 1);
      }
      Atomics.store(c, W(CTRL.ERROR), 0);
      Atomics.store(c, W(CTRL.ABORT), 0);
      if (failure) throw failure;
      throw new Error(`WASM worker failed: ${message || 'job list aborted'}`);
    }
  }

  /**
   * A heads-up that a list follows soon: wake the sleeping workers now, so that they spin (spinMicros) instead of
   * sleeping when it is dispatched — a wake-up takes ~45 µs here, longer than the JS that prepares a decode step.
   */
  wake(): void {
    if (this.workers.length > 0 && Atomics.load(this.ctrl, W(CTRL.SLEEPERS)) > 0) Atomics.notify(this.ctrl, W(CTRL.SEQ));
  }

  /** Stop the workers and wait for them to exit. Further run() calls throw. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.workers) w.ref(); // keep the event loop alive until they have exited
    Atomics.store(this.ctrl, W(CTRL.QUIT), 1);
    Atomics.store(this.ctrl, W(CTRL.SEQ), -1); // neither a tag nor the initial 0: wakes every worker
    Atomics.notify(this.ctrl, W(CTRL.SEQ));
    await Promise.all(this.exited);
    await Promise.all(this.workers.map((w) => w.terminate())); // a Web Worker stays until terminated
  }

  /** Make every thread abandon the current list: waits and claims return at once and report the abort. */
  private abort(): void {
    Atomics.store(this.ctrl, W(CTRL.ABORT), 1);
  }
}
