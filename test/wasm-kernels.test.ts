// Every WASM kernel against its plain-TS reference: the checks live in the kernel workbench
// (dev/kernels/wasm-checks.ts, one source of truth); each is one test here, with the pool's job-list checks on 2 threads.
import { test, after } from 'node:test';
import { WasmRuntime } from '../src/backend/wasm/runtime.js';
import { WorkerPool } from '../src/backend/wasm/pool.js';
import { wasmChecks } from '../dev/kernels/wasm-checks.js';

const rt = await WasmRuntime.create();
const pool = await WorkerPool.create(rt, { threads: 2 });
after(() => pool.close());

for (const c of wasmChecks(rt, pool)) test(c.name, () => { c.run(); });
