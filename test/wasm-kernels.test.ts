// Every WASM kernel against its plain-TS reference: the checks live in the kernel workbench
// (dev/kernels/wasm-checks.ts, one source of truth); each is one test here, with the pool's job-list checks on 2 threads.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { WasmRuntime } from '../src/backend/wasm/runtime.js';
import { WorkerPool } from '../src/backend/wasm/pool.js';
import { wasmChecks } from '../dev/kernels/wasm-checks.js';

const rt = await WasmRuntime.create();
const pool = await WorkerPool.create(rt, { threads: 2 });
after(() => pool.close());

for (const c of wasmChecks(rt, pool)) test(c.name, () => { c.run(); });

// The workbench's runner itself (not its timings): it must keep working, since docs/bench.md's decisions name its commands.
const runner = fileURLToPath(new URL('../dev/kernels/wasm-run.js', import.meta.url));
const wasmRun = (...args: string[]) => spawnSync(process.execPath, [runner, ...args], { encoding: 'utf8', timeout: 60_000 });

test('wasm-run matmul --json: one row per dtype, thread count and applicable variant, with median, spread and ratio', () => {
  const r = wasmRun('matmul', '--shape', '8x40', '--dtype', 'f32', '--dtype', 'q8_0', '--variant', '512k-quarter', '--variant', '160k-eighth',
    '--variant', 'f32-rows4', '--rounds', '1', '--json');
  assert.equal(r.status, 0, r.stderr);
  const rows = JSON.parse(r.stdout) as Record<string, string | number>[];
  const key = (x: Record<string, string | number>) => `${x.dtype} ${x.threads} ${x.variant}`;
  // One thread: chunk policies are one run; f32-rows4 only for f32.
  assert.deepEqual(rows.map(key), ['f32 1 512k-quarter', 'f32 1 f32-rows4', 'f32 2 512k-quarter', 'f32 2 160k-eighth', 'f32 2 f32-rows4',
    'q8_0 1 512k-quarter', 'q8_0 2 512k-quarter', 'q8_0 2 160k-eighth']);
  for (const x of rows) {
    assert.ok(Number(x.us) > 0 && /^\d+%$/.test(String(x.spread)) && /^(base|\d+\.\d{3}\??)$/.test(String(x.vsFirst)), JSON.stringify(x));
  }
});

test('wasm-run refuses an unknown variant or command with exit code 2 and names the choices', () => {
  const bad = wasmRun('matmul', '--variant', 'rows8');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /unknown variant 'rows8'; expected one of 512k-quarter, .*f16-rows4/);
  assert.equal(wasmRun('matvec').status, 2);
  assert.match(wasmRun('matmul', '--shape', '4096').stderr, /--shape wants ROWSxCOLS/);
});
