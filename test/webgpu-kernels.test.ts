import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GpuDevice } from '../src/backend/webgpu/encoder.js';
import { GpuOps } from '../src/backend/webgpu/ops.js';
import { runAllChecks } from '../dev/kernels/checks.js';
import { gpuOrSkip } from './webgpu-helpers.js';

test('every WebGPU kernel matches its plain-TS reference on random inputs with odd sizes', async (t) => {
  const ctx = await gpuOrSkip(t);
  if (!ctx) return;
  const results = await runAllChecks(new GpuOps(new GpuDevice(ctx)));
  const failed = results.filter((r) => !r.ok);
  assert.deepEqual(failed.map((r) => `${r.name}: error ${r.maxError} > ${r.tolerance} ${r.detail ?? ''}`), []);
  assert.ok(results.length >= 20);
});

