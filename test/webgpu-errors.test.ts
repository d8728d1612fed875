/**
 * The webgpu backend's errors say what happened and what to do: no adapter (what to install), out of GPU memory (how
 * much was asked, what the limit allows), an unsupported dtype — typed codes, no stack traces.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { PagePool } from '../src/cache/page-pool.js';
import { GpuKvArena } from '../src/backend/webgpu/arena.js';
import { GpuDevice } from '../src/backend/webgpu/encoder.js';
import { GpuOps } from '../src/backend/webgpu/ops.js';
import { loadModel } from '../src/generate/model.js';
import { REPO_ROOT, SKIP_SHARED, sharedPath } from './shared-fixtures.js';
import { gpuOrSkip } from './webgpu-helpers.js';

const MODEL = sharedPath('models/stories260K/stories260K.bin');

test('webgpu without an adapter: the CLI and the library say what to install (GPU_UNAVAILABLE), no stack trace', { skip: SKIP_SHARED }, () => {
  const env = { ...process.env, VK_DRIVER_FILES: '/nonexistent/vulkan_icd.json', VK_ICD_FILENAMES: '/nonexistent/vulkan_icd.json' };
  const cli = spawnSync(process.execPath, [`${REPO_ROOT}/bin/fastgen.js`, 'generate', '--model', MODEL, '--backend', 'webgpu', '--max-tokens', '2', 'Hi'], { env, encoding: 'utf8', timeout: 60_000 });
  assert.notEqual(cli.status, 0, 'a failure exit status');
  assert.match(cli.stderr, /fastgen generate: error: No WebGPU adapter was found\. On Linux install a Vulkan driver.*mesa-vulkan-drivers.*VK_DRIVER_FILES.*--backend wasm/s);
  assert.doesNotMatch(cli.stderr, /\n\s+at .*\.js:\d+/, 'no JavaScript stack trace');
  const lib = spawnSync(process.execPath, ['--input-type=module', '-e', `
    import { loadModel } from ${JSON.stringify(`${REPO_ROOT}/dist/src/generate/model.js`)};
    try { await loadModel(${JSON.stringify(MODEL)}, { backend: 'webgpu' }); console.log('loaded'); } catch (e) { console.log(e.code); }`], { env, encoding: 'utf8', timeout: 60_000 });
  assert.equal(lib.stdout.trim(), 'GPU_UNAVAILABLE');
});

test('webgpu out of memory: a buffer beyond the adapter\'s limit, a matrix row beyond a binding, a KV cache beyond the bindings the kernels can take — each says how much was asked and what is allowed', async (t) => {
  const ctx = await gpuOrSkip(t);
  if (!ctx) return;
  const gpu = new GpuDevice(ctx);
  await assert.rejects(gpu.buffer(ctx.maxBuffer + 4096, 'a test buffer'), (e: Error & { code?: string }) =>
    e.code === 'GPU_OUT_OF_MEMORY' && e.message.includes(`a test buffer: one buffer of ${Math.ceil((ctx.maxBuffer + 4096) / 16) * 16} bytes exceeds the adapter's ${ctx.maxBuffer}-byte limit`));
  // A device whose bindings hold 4 KiB: a 2048-column f32 row (8 KiB) cannot be bound, and the KV bindings (as many as the device allows the kernels) fill fast.
  const small = new GpuDevice({ ...ctx, maxBinding: 4096 });
  await assert.rejects(new GpuOps(small).uploadMatrix(new Float32Array(2 * 2048), 2, 2048, 'f32', 'layers.0.wq'), (e: Error & { code?: string }) =>
    e.code === 'UNSUPPORTED_MODEL' && /layers\.0\.wq: one row of 8192 bytes exceeds the GPU's storage binding limit/.test(e.message));
  const arena = new GpuKvArena(small, { nLayers: 1, nKvHeads: 1, maxSeqLen: 4096 });
  const pool = new PagePool({ headDim: 8, pageTokens: 16, arena });
  for (let i = 0; i < 64; i++) pool.allocate();
  await assert.rejects(arena.sync(pool), (e: Error & { code?: string }) =>
    e.code === 'GPU_OUT_OF_MEMORY' && /the KV cache would need \d+ pages \(\d+ bytes\), more than the \d+ storage bindings of 4096 bytes.*--kv-budget/.test(e.message));
});

test('webgpu dtypes: unknown weight or KV dtypes are refused before loading; an f16 KV cache needs an even head dim', async (t) => {
  await assert.rejects(loadModel(MODEL, { backend: 'webgpu', dtype: 'bf16' as 'f16' }), (e: Error & { code?: string }) =>
    e.code === 'INVALID_OPTION' && /unknown dtype 'bf16'; expected one of f32, f16, q8_0/.test(e.message));
  await assert.rejects(loadModel(MODEL, { backend: 'webgpu', kvDtype: 'q8_0' as 'f16' }), (e: Error & { code?: string }) =>
    e.code === 'INVALID_OPTION' && /kvDtype must be 'f32' or 'f16'/.test(e.message));
  const ctx = await gpuOrSkip(t);
  if (!ctx) return;
  const arena = new GpuKvArena(new GpuDevice(ctx), { nLayers: 1, nKvHeads: 1, maxSeqLen: 64 });
  const pool = new PagePool({ headDim: 5, pageTokens: 16, kvDtype: 'f16', arena });
  pool.allocate();
  await assert.rejects(arena.sync(pool), (e: Error & { code?: string }) => e.code === 'INVALID_OPTION' && /needs an even head dim; this model's is 5/.test(e.message));
});
