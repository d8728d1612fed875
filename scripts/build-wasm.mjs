#!/usr/bin/env node
// Compile the AssemblyScript kernels (kernels/*.ts) to dist/src/backend/wasm/kernels.wasm, next to the compiled
// runtime.js that loads it (runtime.ts resolves it relative to import.meta.url). Run by `npm run build` before tsc.
//
//   node scripts/build-wasm.mjs [--force] [--wat] [--names]
//     --force  rebuild even if the wasm is newer than every source
//     --wat    also write build/kernels.wat (text form, for reading what Binaryen/asc produced)
//     --names  keep the function names (asc --debug, same optimization): `node --cpu-prof` then shows the kernels by
//              name (kernels/q8/matmul_q8_0, kernels/jobs/runDynamic, ...) instead of wasm-function[N]. For profiling
//              only; the next `npm run build` puts the plain module back (the named one is dated 1970).
//
// Flags: SIMD128 + threads (atomics, shared memory); the memory is imported from JS (env.memory) and shared, so the
// worker threads instantiate the same module on the same memory; maximum 65536 pages = 4 GiB (wasm32's limit; the
// runtime picks its own, smaller or equal, maximum). Stub runtime, no assertions: the kernels never allocate.
import { readdirSync, statSync, mkdirSync, existsSync, utimesSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join, relative } from 'node:path';
import asc from 'assemblyscript/asc';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = join(root, 'kernels');
const outFile = join(root, 'dist', 'src', 'backend', 'wasm', 'kernels.wasm');
const watFile = join(root, 'build', 'kernels.wat');
const force = process.argv.includes('--force');
const wat = process.argv.includes('--wat');
const names = process.argv.includes('--names');

const sources = readdirSync(srcDir).filter((f) => f.endsWith('.ts')).map((f) => join(srcDir, f));
const newestInput = Math.max(statSync(fileURLToPath(import.meta.url)).mtimeMs, ...sources.map((f) => statSync(f).mtimeMs));
if (!force && !wat && !names && existsSync(outFile) && statSync(outFile).mtimeMs >= newestInput) {
  console.log(`build-wasm: ${relative(root, outFile)} is up to date`);
  process.exit(0);
}

mkdirSync(dirname(outFile), { recursive: true });
const args = [
  join(srcDir, 'index.ts'),
  '--outFile', outFile,
  '-O3', '--noAssert', '--runtime', 'stub',
  '--enable', 'simd', '--enable', 'threads',
  '--importMemory', '--sharedMemory', '--initialMemory', '1', '--maximumMemory', '65536',
];
if (names) args.push('--debug');
if (wat) {
  mkdirSync(dirname(watFile), { recursive: true });
  args.push('--textFile', watFile);
}
const t0 = performance.now();
const { error, stderr } = await asc.main(args, { stdout: process.stdout, stderr: process.stderr });
if (error) {
  console.error(`build-wasm: asc failed: ${error.message}`);
  if (stderr) console.error(stderr.toString());
  process.exit(1);
}
if (names) utimesSync(outFile, 0, 0); // older than every source: the next plain build replaces it
console.log(`build-wasm: wrote ${relative(root, outFile)}${names ? ' with function names' : ''} (${statSync(outFile).size} bytes) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
