// Entry point of the kernel module (compiled by scripts/build-wasm.mjs to dist/src/backend/wasm/kernels.wasm).
// All kernels take byte pointers into the one imported shared memory, which the JS runtime owns and allocates;
// nothing here allocates, and the module has no data segments, so each thread can instantiate it on the same memory.

export { matmul_f32, matmul_f16, matmul_f32_flat } from './matmul_float';
export { quantize_q8_0, quantize_q8_act, dequantize_q8_0, matmul_q8_0, matmul_q8_0_r1t4, matmul_q8_0_ld, matmul_q8_0_f32 } from './q8';
export { f32_to_f16, f16_to_f32 } from './f16';
export { rmsnorm, rope, softmax, swiglu, add, argmax, copy } from './elementwise';
export { attention, attention_rows, kv_write } from './attention';
export { run_jobs, plan_jobs } from './jobs';
export { matmul_f16_rows4, matmul_f32_rows4 } from './variants';
export { sample_split, sample_partition, sample_walk } from './sample';

/** First byte after the module's static data; the JS arena starts above it. */
export function heap_base(): usize {
  return __heap_base;
}
