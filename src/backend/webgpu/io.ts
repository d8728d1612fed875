import type { GpuDevice } from './encoder.js';

/** Copy `bytes` of `src` from `offset` back to the CPU (tests, the workbench, one-off reads: never per token). */
export async function readBuffer(gpu: GpuDevice, src: GPUBuffer, offset: number, bytes: number): Promise<ArrayBuffer> {
  const size = Math.ceil(bytes / 4) * 4;
  const staging = gpu.readback(size, 'readback');
  const enc = gpu.device.createCommandEncoder();
  enc.copyBufferToBuffer(src, offset, staging, 0, size);
  gpu.device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = staging.getMappedRange().slice(0, bytes);
  staging.unmap();
  staging.destroy();
  return out;
}

export async function readF32(gpu: GpuDevice, src: GPUBuffer, offsetFloats: number, count: number): Promise<Float32Array> {
  return new Float32Array(await readBuffer(gpu, src, offsetFloats * 4, count * 4));
}

export async function readU32(gpu: GpuDevice, src: GPUBuffer, offsetWords: number, count: number): Promise<Uint32Array> {
  return new Uint32Array(await readBuffer(gpu, src, offsetWords * 4, count * 4));
}
