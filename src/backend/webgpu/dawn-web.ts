/** WebGPU in a page (replaces dawn.ts in browser bundles): without navigator.gpu there is no other way in. */
export async function fallbackGpu(): Promise<GPU> {
  throw new Error(
    'this browser offers no WebGPU (navigator.gpu is missing): it needs a browser with WebGPU enabled, on https or ' +
      'localhost (Chrome/Edge 113+, or a flag such as --enable-unsafe-webgpu), and a supported GPU or driver',
  );
}
