/**
 * WebGPU in Node: Dawn's bindings from the npm package `webgpu`. In browser bundles dawn-web.ts replaces this file
 * (the package's "browser" field): a page has navigator.gpu or no WebGPU at all.
 */

/** Dawn's GPU object: created once, referenced forever (Dawn crashes when it is collected). */
let dawnGpu: GPU | undefined;

/** The GPU entry point where there is no navigator.gpu; throws with what is missing. */
export async function fallbackGpu(): Promise<GPU> {
  if (dawnGpu) return dawnGpu;
  let mod: { create(flags: string[]): GPU; globals: object };
  try {
    mod = (await import('webgpu')) as typeof mod;
  } catch (e) {
    throw new Error(`the npm package 'webgpu' (Dawn for Node) could not be loaded: ${(e as Error).message}. Run npm install.`, { cause: e });
  }
  // The GPU* constants (GPUBufferUsage, GPUShaderStage, …) that WebGPU code expects as globals.
  for (const [k, v] of Object.entries(mod.globals)) if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  // Timestamps unquantized: the benchmark's step split (bench --synthetic) times single dispatches of a few µs, which
  // Dawn's default 100 µs quantization would round away; only its profiling pass reads them.
  dawnGpu = mod.create(['disable-dawn-features=timestamp_quantization']);
  return dawnGpu;
}
