import type { TestContext } from 'node:test';
import { tryGpuContext, type GpuContext } from '../src/backend/webgpu/device.js';

/**
 * The WebGPU context, or null after marking the test skipped when this machine has no adapter (a user's machine
 * without Vulkan). In CI (`CI` set) a missing adapter is a failure: .ci/run installs lavapipe so that these run.
 */
export async function gpuOrSkip(t: TestContext): Promise<GpuContext | null> {
  const { ctx, reason } = await tryGpuContext();
  if (ctx) return ctx;
  if (process.env.CI) throw new Error(`CI is set but no WebGPU adapter was found (.ci/run installs lavapipe): ${reason}`);
  t.skip(`no WebGPU adapter: ${reason}`);
  return null;
}
