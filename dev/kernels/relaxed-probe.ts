/**
 * How much relaxed SIMD would buy prefill (#17): kernels/probes/relaxed.ts against the shipped kernels, in one module
 * compiled here with relaxed SIMD enabled, on stories15M's matrix shapes with 128 tokens, one thread, round-robin.
 *
 *   node --experimental-wasm-relaxed-simd dist/dev/kernels/relaxed-probe.js [--rounds 9]     (Node 20; plain node ≥ 22)
 *
 * Checks: the q8_0 × q7 kernel against the exact integer sum of its own quantized operands (JS), on its first call and
 * after the timing, and the fused f32 kernel against the shipped one (within f32 rounding). In Node 20.20 (V8 11.3) the
 * first call of the q7 kernel on the first shape came out wrong (relative error ~4) while the same call after tier-up,
 * or with --no-liftoff, is right: V8's baseline compiler mis-handles the relaxed dot product there (the feature is
 * behind a flag in that version). Exit status 1 when a check after the timing fails. Then per shape: µs per matmul, G multiply-adds/s, ratio.
 * Not a variant of the engine: the engine has no relaxed-SIMD build (Node 20 needs the flag); this says whether one
 * is worth making.
 */
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import asc from 'assemblyscript/asc';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '9' } } });
const rounds = Number(values.rounds);
const source = fileURLToPath(new URL('../../../kernels/probes/relaxed.ts', import.meta.url));

let binary: Uint8Array<ArrayBuffer> | undefined;
const { error, stderr } = await asc.main([source, '--outFile', 'probe.wasm', '-O3', '--noAssert', '--runtime', 'stub',
  '--enable', 'simd', '--enable', 'relaxed-simd', '--importMemory', '--initialMemory', '1', '--maximumMemory', '4096'], {
  writeFile: (name: string, contents: string | Uint8Array) => { if (name.endsWith('.wasm') && typeof contents !== 'string') binary = new Uint8Array(contents); },
});
if (error || !binary) {
  console.error(`relaxed-probe: asc failed: ${error?.message ?? 'no output'}\n${stderr?.toString() ?? ''}`);
  process.exit(1);
}
if (!WebAssembly.validate(binary)) {
  console.error('relaxed-probe: this engine has no relaxed SIMD (Node 20: run with --experimental-wasm-relaxed-simd)');
  process.exit(2);
}
const memory = new WebAssembly.Memory({ initial: 2048, maximum: 4096 });
const k = new WebAssembly.Instance(new WebAssembly.Module(binary), { env: { memory } }).exports as unknown as Record<string, (...a: number[]) => number>;

let top = 1 << 20; // above the module's data and stack
const alloc = (bytes: number): number => { const p = top; top += Math.ceil(bytes / 64) * 64; return p; };
let seed = 12345;
const rand = (): number => ((seed = (Math.imul(seed, 1664525) + 1013904223) | 0) / 2 ** 31);
const f32 = (p: number, n: number) => new Float32Array(memory.buffer, p, n);

interface Case { rows: number; cols: number; T: number }
const cases: Case[] = [{ rows: 288, cols: 288, T: 128 }, { rows: 768, cols: 288, T: 128 }, { rows: 288, cols: 768, T: 128 }];
const rowsOut: string[] = [];
let ok = true;
for (const { rows, cols, T } of cases) {
  const nb = Math.ceil(cols / 32);
  const W = alloc(rows * cols * 4), X = alloc(T * cols * 4);
  f32(W, rows * cols).forEach((_, i, a) => { a[i] = rand() * 0.05; });
  f32(X, T * cols).forEach((_, i, a) => { a[i] = rand(); });
  const wq = alloc(rows * nb * 32), wd = alloc(rows * nb * 4), wsum = alloc(rows * nb * 4);
  k.quantize_q8_0(wq, wd, W, rows, cols, 0, rows);
  k.q8_block_sums(wsum, wq, rows, cols);
  const xq = alloc(T * nb * 64), xd = alloc(T * nb * 4), xu = alloc(T * nb * 32), xd7 = alloc(T * nb * 4);
  k.quantize_q8_act(xq, xd, X, T, cols);
  k.quantize_q7_act(xu, xd7, X, T, cols);
  const out = [alloc(T * rows * 4), alloc(T * rows * 4), alloc(T * rows * 4), alloc(T * rows * 4)];
  // Check q8 × q7 against the exact sum of its operands: on the first call (V8's baseline tier, Liftoff, in Node 20)
  // and after the timing (optimized code).
  const wq8 = new Int8Array(memory.buffer, wq, rows * nb * 32), xu8 = new Uint8Array(memory.buffer, xu, T * nb * 32);
  const wdv = f32(wd, rows * nb), xdv = f32(xd7, T * nb);
  const checkQ7 = (): number => {
    f32(out[1], T * rows).fill(NaN);
    k.matmul_q8_q7(out[1], xu, xd7, wq, wd, wsum, T, rows, cols);
    const got = f32(out[1], T * rows);
    let worst = 0;
    for (let t = 0; t < T; t += 7) for (let r = 0; r < rows; r += 5) {
      let want = 0, mag = 0;
      for (let b = 0; b < nb; b++) {
        let s = 0, sa = 0;
        for (let c = 0; c < 32; c++) { const p = wq8[(r * nb + b) * 32 + c] * (xu8[(t * nb + b) * 32 + c] - 64); s += p; sa += Math.abs(p); }
        want += wdv[r * nb + b] * xdv[t * nb + b] * s;
        mag += Math.abs(wdv[r * nb + b] * xdv[t * nb + b]) * sa;
      }
      worst = Math.max(worst, Math.abs(got[t * rows + r] - want) / (mag + 1e-30));
    }
    return worst;
  };
  const firstCall = checkQ7();
  // Check the fused f32 kernel against the shipped one.
  k.matmul_f32(out[2], X, W, T, rows, cols, 0, rows);
  k.matmul_f32_madd(out[3], X, W, T, rows, cols);
  let worstF = 0;
  const a = f32(out[2], T * rows), b = f32(out[3], T * rows);
  for (let i = 0; i < a.length; i++) worstF = Math.max(worstF, Math.abs(a[i] - b[i]) / (Math.abs(a[i]) + 1e-3));
  const fns: [string, () => void][] = [
    ['q8_0 × q8 (shipped)', () => k.matmul_q8_0(out[0], xq, xd, wq, wd, T, rows, cols, 0, rows)],
    ['q8_0 × q7 relaxed dot', () => k.matmul_q8_q7(out[1], xu, xd7, wq, wd, wsum, T, rows, cols)],
    ['f32 (shipped)', () => k.matmul_f32(out[2], X, W, T, rows, cols, 0, rows)],
    ['f32 relaxed madd', () => k.matmul_f32_madd(out[3], X, W, T, rows, cols)],
  ];
  const samples = fns.map(() => [] as number[]);
  for (const [, fn] of fns) fn();
  for (let r = 0; r < rounds; r++) fns.forEach(([, fn], i) => {
    const t0 = performance.now();
    for (let n = 0; n < 20; n++) fn();
    samples[i].push((performance.now() - t0) / 20);
  });
  const worst = checkQ7();
  if (!(worst < 1e-5) || !(worstF < 1e-3)) ok = false;
  const med = samples.map((s) => s.sort((x, y) => x - y)[s.length >> 1]);
  const spread = samples.map((s, i) => (s[s.length - 1] - s[0]) / med[i]);
  fns.forEach(([name], i) => {
    const base = i < 2 ? med[0] : med[2];
    rowsOut.push(`| ${rows}x${cols} | ${T} | ${name} | ${(med[i] * 1000).toFixed(1)} | ${((rows * cols * T) / med[i] / 1e6).toFixed(1)} | ${(spread[i] * 100).toFixed(0)}% | ${(med[i] / base).toFixed(3)} |`);
  });
  rowsOut.push(`| ${rows}x${cols} | ${T} | checks (relative): q7 vs its exact sum ${worst.toExponential(1)} (first call ${firstCall.toExponential(1)}), madd vs shipped ${worstF.toExponential(1)} | | | | |`);
}
console.log('| shape | tokens | kernel | us | G mul-add/s | spread | vs shipped |');
console.log('| ----- | -----: | ------ | -: | ----------: | -----: | ---------: |');
for (const r of rowsOut) console.log(r);
process.exit(ok ? 0 : 1);
