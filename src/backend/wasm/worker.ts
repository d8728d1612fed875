/** A pool thread in Node: a worker_thread that runs the loop (worker-loop.ts) on the init it was started with. */
import { parentPort, workerData } from 'node:worker_threads';
import type { WorkerInit } from './pool.js';
import { runPoolThread } from './worker-loop.js';

runPoolThread(workerData as WorkerInit, () => parentPort!.postMessage('ready'));
