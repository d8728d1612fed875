/**
 * Getting a WebGPU device: `navigator.gpu` in a browser, Dawn's bindings (npm `webgpu`, dawn.ts) in Node. Both run
 * the same WGSL.
 */
import { FastgenError } from '../../errors.js';
import { fallbackGpu } from './dawn.js';

export class GpuUnavailableError extends FastgenError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('GPU_UNAVAILABLE', message, 'backend', options);
    this.name = 'GpuUnavailableError';
  }
}

/** What the backend and the kernels need to know about the device. */
export interface GpuContext {
  device: GPUDevice;
  /** Adapter description for reports: vendor, architecture, device, driver. */
  adapterName: string;
  /** Largest storage binding: weights and pools are split into parts no larger than this. */
  maxBinding: number;
  maxBuffer: number;
  /** Whether `subgroups` is enabled (the reductions use subgroupAdd when it is). */
  subgroups: boolean;
  /**
   * The smallest subgroup the adapter may run (NVIDIA 32, lavapipe 8; 4 when the adapter does not say): sizes the
   * workgroup memory of reductions that keep one partial per subgroup.
   */
  subgroupMinSize: number;
  /** Bytes of workgroup memory one workgroup may use (the device is created with the adapter's limit). */
  maxWorkgroupStorage: number;
  /** Storage buffers one kernel may bind (the KV cache's parts are bound side by side). */
  maxStorageBuffers: number;
  /** Whether `timestamp-query` is enabled (the benchmark's per-dispatch GPU times). */
  timestamps: boolean;
}

const INSTALL_HINT =
  'No WebGPU adapter was found. On Linux install a Vulkan driver: the GPU vendor\'s (NVIDIA, AMD, Intel), or Mesa\'s ' +
  'software rasteriser lavapipe (Debian 12: `apt-get install -t bookworm-backports mesa-vulkan-drivers`, then ' +
  '`export VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.json`; Debian 12\'s own Mesa 22 is too old for Dawn). ' +
  'In a browser, use one with WebGPU enabled. Or use --backend wasm.';

let contextPromise: Promise<GpuContext> | undefined;

async function gpuEntry(): Promise<GPU> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  try {
    return await fallbackGpu();
  } catch (e) {
    throw new GpuUnavailableError(`${(e as Error).message}. Or use the wasm backend.`, { cause: e });
  }
}

/**
 * The process's WebGPU device (one per process, shared by every model on this backend). Throws GpuUnavailableError
 * with what to install when there is no adapter.
 */
export function gpuContext(): Promise<GpuContext> {
  contextPromise ??= openContext();
  // A failed attempt is not cached: the user may fix the environment and retry in the same process.
  contextPromise.catch(() => { contextPromise = undefined; });
  return contextPromise;
}

async function openContext(): Promise<GpuContext> {
  const gpu = await gpuEntry();
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new GpuUnavailableError(INSTALL_HINT);
  const lim = adapter.limits;
  // Never shader-f16: the NVIDIA Vulkan adapter does not offer it; halves are read as packed u32 everywhere.
  const subgroups = adapter.features.has('subgroups');
  const requiredFeatures: GPUFeatureName[] = subgroups ? ['subgroups' as GPUFeatureName] : [];
  if (adapter.features.has('timestamp-query')) requiredFeatures.push('timestamp-query');
  const device = await adapter.requestDevice({
    requiredFeatures,
    requiredLimits: {
      maxStorageBufferBindingSize: lim.maxStorageBufferBindingSize,
      maxBufferSize: lim.maxBufferSize,
      maxStorageBuffersPerShaderStage: lim.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: lim.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: lim.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: lim.maxComputeWorkgroupSizeX,
    },
  });
  device.lost.then((info) => {
    if (info.reason !== 'destroyed') console.error(`fastgen: the WebGPU device was lost: ${info.message}`);
  });
  const info = adapter.info;
  const adapterName = [info.vendor, info.architecture, info.device, info.description].filter((s) => s).join(' / ') || 'unknown adapter';
  return {
    device,
    adapterName,
    // Bindings must be multiples of 4 bytes: 2 GiB − 4 on the NVIDIA adapter.
    maxBinding: Math.floor(lim.maxStorageBufferBindingSize / 4) * 4,
    maxBuffer: lim.maxBufferSize,
    subgroups,
    subgroupMinSize: Math.max(1, info.subgroupMinSize ?? 4),
    maxWorkgroupStorage: lim.maxComputeWorkgroupStorageSize,
    maxStorageBuffers: lim.maxStorageBuffersPerShaderStage,
    timestamps: requiredFeatures.includes('timestamp-query'),
  };
}

/** For tests and tools: the context, or null with the reason when no adapter exists (never throws for that). */
export async function tryGpuContext(): Promise<{ ctx: GpuContext | null; reason?: string }> {
  try {
    return { ctx: await gpuContext() };
  } catch (e) {
    if (e instanceof GpuUnavailableError) return { ctx: null, reason: e.message };
    throw e;
  }
}
