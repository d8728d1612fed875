/**
 * Each WASM kernel against its plain-TS reference (src/backend/cpu-ref/math.ts, src/backend/wasm/reference-extra.ts)
 * on random inputs, with sizes that are not multiples of the vector width (4) or the q8 block (32). One source of
 * truth: the workbench (dev/kernels/wasm-run.ts check) and `npm test` (test/wasm-kernels.test.ts) both run these.
 * Tolerances: f32 results may differ from the f64 references only by f32 rounding, so |got − want| ≤ 1e-5 · Σ|terms|
 * (the sum of absolute values of what was added: relative error is meaningless where a sum cancels to ~0).
 * Quantization and half conversion are compared bit for bit.
 *
 * A check throws (node:assert) at its first mismatch; runWasmChecks turns that into a CheckResult whose maxError is
 * the worst |err| / allowed error seen (so tolerance is 1), the shape of the WebGPU workbench's results.
 */
import assert from 'node:assert/strict';
import { WasmRuntime, type Ptr } from '../../src/backend/wasm/runtime.js';
import { MATMUL_CHUNK_POLICIES, DEFAULT_MATMUL_CHUNK, type WorkerPool } from '../../src/backend/wasm/pool.js';
import { matmul, rmsnorm, ropeRotateHalf, softmax, swiglu } from '../../src/backend/cpu-ref/math.js';
import * as ref from '../../src/backend/wasm/reference-extra.js';
import { q8ActBytes, q8Blocks, kvPageBytes, kvKeyOffset, kvValueOffset } from '../../src/backend/wasm/layout.js';
import { mulberry32 } from '../../src/generate/rng.js';
import { EXP_TABLES, expNeg64 } from '../../src/generate/sampler.js';
import { SamplingKernel } from '../../src/backend/wasm/sampling.js';
import { f16ToF32, f32ToF16 } from '../../src/half.js';
import type { CheckResult } from './checks.js'; // a type only: nothing of the WebGPU side is loaded

/** The result shape both workbenches report. */
export type { CheckResult };

export interface WasmCheck {
  name: string;
  /** Throws at the first mismatch; returns the worst |err| / allowed error of the tolerance checks. */
  run(): number;
}

/**
 * The checks, bound to a runtime. With a pool (threads ≥ 2), also the job-list checks: each matmul chunk policy and
 * kernel variant run through the dynamic schedule equals the single-thread kernel bit for bit.
 */
export function wasmChecks(rt: WasmRuntime, pool?: WorkerPool): WasmCheck[] {
  const checks: { name: string; run: () => void }[] = [];
  const check = (name: string, run: () => void): void => { checks.push({ name, run }); };
  let worst = 0;
  let rand = mulberry32(12345);

  // ---- helpers -------------------------------------------------------------------------------------------------

  function randomF32(n: number, scale = 1): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (rand() * 2 - 1) * scale;
    return a;
  }
  const abs = (a: Float32Array): Float32Array => a.map(Math.abs);

  /** |got[i] − want[i]| ≤ tol · bound[i] (+ a denormal-sized floor), with a readable message on failure. */
  function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, bound: ArrayLike<number> | number, label: string, tol = 1e-5): void {
    assert.equal(got.length, want.length, `${label}: length`);
    for (let i = 0; i < want.length; i++) {
      const b = typeof bound === 'number' ? bound : bound[i];
      const err = Math.abs(got[i] - want[i]);
      worst = Math.max(worst, err / (tol * b + 1e-30));
      if (!(err <= tol * b + 1e-30)) assert.fail(`${label}: [${i}] got ${got[i]}, want ${want[i]} (|err| ${err.toExponential(2)} > ${tol} × ${b.toExponential(2)})`);
    }
  }

  function bitsEqual(got: ArrayLike<number>, want: ArrayLike<number>, label: string): void {
    assert.equal(got.length, want.length, `${label}: length`);
    for (let i = 0; i < want.length; i++) {
      if (!Object.is(got[i], want[i])) assert.fail(`${label}: [${i}] got ${got[i]}, want ${want[i]}`);
    }
  }

  /** Run fn with arena scratch that is released afterwards. */
  function scoped<T>(fn: () => T): T {
    const m = rt.mark();
    try {
      return fn();
    } finally {
      rt.reset(m);
    }
  }

  const COLS = [1, 3, 4, 5, 33, 288, 299]; // 299 = 16·18 + 8 + 3: every step size of the row loops
  const ROWS = [1, 7, 768];
  const TOKENS = [1, 3, 17];

  // ---- matmuls -------------------------------------------------------------------------------------------------

  /** Run a matmul kernel on rows [r0, r1) into a NaN-filled out; check those rows and that the others were not touched. */
  function checkMatmul(label: string, T: number, rows: number, cols: number, W: Float32Array, x: Float32Array,
    run: (out: Ptr, r0: number, r1: number) => void): void {
    const want = new Float32Array(T * rows);
    const bound = new Float32Array(T * rows);
    matmul(want, x, W, T, rows, cols);
    matmul(bound, abs(x), abs(W), T, rows, cols);
    scoped(() => {
      const out = rt.alloc(T * rows * 4);
      // Whole range, then an odd sub-range (as a thread would get) on a fresh NaN-filled output.
      rt.f32(out, T * rows).fill(NaN);
      run(out, 0, rows);
      assertClose(rt.f32(out, T * rows), want, bound, `${label} T=${T} rows=${rows} cols=${cols}`);
      const r0 = Math.min(rows, 1), r1 = Math.max(r0, rows - 2);
      rt.f32(out, T * rows).fill(NaN);
      run(out, r0, r1);
      const got = rt.f32(out, T * rows);
      for (let t = 0; t < T; t++) {
        for (let r = 0; r < rows; r++) {
          const i = t * rows + r;
          if (r >= r0 && r < r1) assertClose([got[i]], [want[i]], [bound[i]], `${label} sub-range [${t},${r}]`);
          else assert.ok(Number.isNaN(got[i]), `${label}: row ${r} outside [${r0},${r1}) was written`);
        }
      }
    });
  }

  check('matmul f32 matches the reference (decode and prefill shapes, odd sizes, row sub-ranges)', () => {
    for (const cols of COLS) for (const rows of ROWS) {
      const W = randomF32(rows * cols);
      for (const T of TOKENS) {
        const x = randomF32(T * cols);
        scoped(() => {
          const w = rt.putF32(W), xp = rt.putF32(x);
          checkMatmul('f32', T, rows, cols, W, x, (out, r0, r1) => rt.matmulF32(out, xp, w, T, rows, cols, r0, r1));
        });
      }
    }
  });

  check('matmul f16 matches the reference on the dequantized weights', () => {
    for (const cols of COLS) for (const rows of ROWS) {
      // Mix of magnitudes so that subnormal halves (|w| < 6.1e-5) occur too.
      const W32 = randomF32(rows * cols).map((v, i) => (i % 7 === 0 ? v * 1e-4 : v));
      const bits = Uint16Array.from(W32, ref.f32ToF16);
      const W = Float32Array.from(bits, ref.f16ToF32);
      for (const T of TOKENS) {
        const x = randomF32(T * cols);
        scoped(() => {
          const w = rt.putU16(bits), xp = rt.putF32(x);
          checkMatmul('f16', T, rows, cols, W, x, (out, r0, r1) => rt.matmulF16(out, xp, w, T, rows, cols, r0, r1));
        });
      }
    }
  });

  check('matmul f16 decode with activations beyond 2^15 matches the reference (no range assumption on x)', () => {
    // Guards the half widening: a rescaling trick (x·2^112 against w·2^-112) would overflow for |x| ≥ 2^15.
    const rows = 9, cols = 37;
    const bits = Uint16Array.from(randomF32(rows * cols), ref.f32ToF16);
    const W = Float32Array.from(bits, ref.f16ToF32);
    const x = randomF32(cols, 100);
    x[5] = 40000;
    const want = new Float32Array(rows), bound = new Float32Array(rows);
    matmul(want, x, W, 1, rows, cols);
    matmul(bound, abs(x), abs(W), 1, rows, cols);
    scoped(() => {
      const out = rt.alloc(rows * 4);
      rt.matmulF16(out, rt.putF32(x), rt.putU16(bits), 1, rows, cols);
      assertClose(rt.f32(out, rows), want, bound, 'f16 with large activations');
    });
  });

  check('q8_0 weight and activation quantization are bit-exact with the reference', () => {
    for (const cols of COLS) for (const rows of [1, 7, 40]) {
      const W = randomF32(rows * cols, 3);
      if (cols >= 32) W.fill(0, 0, 32); // an all-zero block: d = 0, q = 0
      if (cols >= 64 || (cols >= 33 && rows > 1)) {
        // A block with amax = 127 (d = 1, 1/d = 1) and exact .5 ties: nearest-even must give 2, -2, 4, 0.
        const at = cols >= 64 ? 32 : cols;
        W.set([127, 2.5, -2.5, 3.5, 0.5], at);
        for (let c = at + 5; c < Math.min(at + 32, W.length); c++) W[c] = 1;
      }
      const want = ref.quantizeQ8_0(W, rows, cols);
      scoped(() => {
        const q = rt.quantizeQ8(W, rows, cols);
        bitsEqual(rt.i8(q.qs, want.qs.length), want.qs, `q8 qs rows=${rows} cols=${cols}`);
        bitsEqual(rt.f32(q.d, want.d.length), want.d, `q8 d rows=${rows} cols=${cols}`);
        // Same from a pointer into wasm memory, and the dequantizer.
        const q2 = rt.quantizeQ8(rt.putF32(W), rows, cols);
        bitsEqual(rt.i8(q2.qs, want.qs.length), want.qs, 'q8 qs (from Ptr)');
        const deq = rt.alloc(rows * cols * 4);
        rt.dequantizeQ8(deq, q);
        bitsEqual(rt.f32(deq, rows * cols), ref.dequantizeQ8_0(want.qs, want.d, rows, cols), 'q8 dequantize');
      });
      const x = randomF32(3 * cols, 5);
      const wantX = ref.quantizeQ8Act(x, 3, cols);
      scoped(() => {
        const xq = rt.alloc(q8ActBytes(3, cols)), xd = rt.alloc(3 * q8Blocks(cols) * 4);
        rt.quantizeQ8Act(xq, xd, rt.putF32(x), 3, cols);
        bitsEqual(rt.i16(xq, wantX.q.length), wantX.q, `q8 act q cols=${cols}`);
        bitsEqual(rt.f32(xd, wantX.d.length), wantX.d, `q8 act d cols=${cols}`);
      });
    }
    assert.deepEqual([2.5, -2.5, 3.5, 0.5, 1.5, -0.5].map(ref.roundHalfEven), [2, -2, 4, 0, 2, -0]);
  });

  check('matmul q8_0 × q8 activations matches the integer-block reference', () => {
    for (const cols of COLS) for (const rows of ROWS) for (const T of TOKENS) {
      const W = randomF32(rows * cols);
      const x = randomF32(T * cols);
      const wq = ref.quantizeQ8_0(W, rows, cols);
      const xq = ref.quantizeQ8Act(x, T, cols);
      const want = new Float32Array(T * rows);
      const bound = new Float32Array(T * rows);
      ref.matmulQ8_0(want, xq.q, xq.d, wq.qs, wq.d, T, rows, cols);
      ref.matmulQ8_0(bound, xq.q.map(Math.abs), xq.d, wq.qs.map(Math.abs), wq.d, T, rows, cols);
      scoped(() => {
        const w = rt.quantizeQ8(W, rows, cols);
        const xqp = rt.alloc(q8ActBytes(T, cols)), xdp = rt.alloc(T * q8Blocks(cols) * 4);
        rt.quantizeQ8Act(xqp, xdp, rt.putF32(x), T, cols);
        const out = rt.alloc(T * rows * 4);
        rt.f32(out, T * rows).fill(NaN);
        rt.matmulQ8(out, xqp, xdp, w, T);
        assertClose(rt.f32(out, T * rows), want, bound, `q8 T=${T} rows=${rows} cols=${cols}`);
        // The one-row prefill variant (workbench) does the same per-token arithmetic: equal bit for bit, row sub-ranges too.
        const alt = rt.alloc(T * rows * 4);
        rt.f32(alt, T * rows).fill(NaN);
        const mid = rows >> 1;
        rt.exports.matmul_q8_0_r1t4(alt, xqp, xdp, w.qs, w.d, T, rows, cols, 0, mid);
        rt.exports.matmul_q8_0_r1t4(alt, xqp, xdp, w.qs, w.d, T, rows, cols, mid, rows);
        bitsEqual(rt.f32(alt, T * rows), rt.f32(out, T * rows), `q8 r1t4 T=${T} rows=${rows} cols=${cols}`);
        // So does the load8x8_s widening variant (q8-ld).
        rt.f32(alt, T * rows).fill(NaN);
        rt.exports.matmul_q8_0_ld(alt, xqp, xdp, w.qs, w.d, T, rows, cols, 0, mid);
        rt.exports.matmul_q8_0_ld(alt, xqp, xdp, w.qs, w.d, T, rows, cols, mid, rows);
        bitsEqual(rt.f32(alt, T * rows), rt.f32(out, T * rows), `q8 ld T=${T} rows=${rows} cols=${cols}`);
      });
    }
  });

  check('matmul q8_0 × f32 activations (dequantize on the fly) matches the reference on dequantized weights', () => {
    for (const cols of COLS) for (const rows of ROWS) for (const T of [1, 3]) {
      const W32 = randomF32(rows * cols);
      const wq = ref.quantizeQ8_0(W32, rows, cols);
      const W = ref.dequantizeQ8_0(wq.qs, wq.d, rows, cols);
      const x = randomF32(T * cols);
      scoped(() => {
        const w = rt.quantizeQ8(W32, rows, cols);
        const xp = rt.putF32(x);
        checkMatmul('q8×f32', T, rows, cols, W, x, (out, r0, r1) => rt.matmulQ8F32(out, xp, w, T, r0, r1));
      });
    }
  });

  // ---- f16 conversion ----------------------------------------------------------------------------------------------

  check('f16 → f32 is exact for all 65536 halves (inf and NaN included)', () => {
    scoped(() => {
      const src = rt.putU16(Uint16Array.from({ length: 65536 }, (_, i) => i));
      const dst = rt.alloc(65536 * 4);
      rt.f16ToF32(dst, src, 65536);
      const got = rt.f32(dst, 65536);
      const gotBits = new Uint32Array(got.slice().buffer);
      for (let h = 0; h < 65536; h++) {
        const want = ref.f16ToF32(h);
        if (Number.isNaN(want)) {
          // NaN: sign and payload carried over, exponent all ones.
          assert.equal(gotBits[h], (((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13)) >>> 0, `NaN half ${h}`);
        } else if (!Object.is(got[h], want)) {
          assert.fail(`half 0x${h.toString(16)}: got ${got[h]}, want ${want}`);
        }
      }
      // The odd tail (n % 4 ≠ 0) takes the scalar path.
      rt.f16ToF32(dst, src + 2 * 0x3c00, 3);
      assert.deepEqual([...rt.f32(dst, 3)], [1, ref.f16ToF32(0x3c01), ref.f16ToF32(0x3c02)]);
    });
  });

  check('f32 → f16 rounds to nearest even, bit-exact with the reference', () => {
    const specials = [0, -0, 1, -1, 65504, 65519.99, 65520, -65520, 1e9, Infinity, -Infinity, NaN, 2 ** -14, 2 ** -24,
      2 ** -25, 2 ** -25 * 1.0001, 2 ** -26, 3 * 2 ** -25, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 6.1e-5, 1e-8, 0.1, 1 / 3];
    const values = new Float32Array([...specials, ...randomF32(4000, 10), ...randomF32(2000, 1e-4), ...randomF32(1000, 70000)]);
    scoped(() => {
      const src = rt.putF32(values);
      const dst = rt.alloc(values.length * 2);
      rt.f32ToF16(dst, src, values.length);
      const got = rt.u16(dst, values.length);
      for (let i = 0; i < values.length; i++) {
        const v = values[i];
        assert.equal(got[i], ref.f32ToF16(v), `f32ToF16(${v})`);
        // Independent check: no other half is nearer (ties: the even one).
        const h = got[i];
        if (Number.isFinite(ref.f16ToF32(h)) && (h & 0x7fff) !== 0x7bff) {
          const err = Math.abs(ref.f16ToF32(h) - v);
          for (const nb of [h - 1, h + 1]) {
            if ((nb & 0x7c00) === 0x7c00 || nb < 0 || ((nb ^ h) & 0x8000) !== 0) continue;
            const e2 = Math.abs(ref.f16ToF32(nb) - v);
            assert.ok(err < e2 || (err === e2 && (h & 1) === 0), `f32ToF16(${v}) = 0x${h.toString(16)} is not the nearest half`);
          }
        }
      }
    });
    // Every finite half survives a round trip.
    for (let h = 0; h < 65536; h++) if ((h & 0x7c00) !== 0x7c00) assert.equal(ref.f32ToF16(ref.f16ToF32(h)), h);
  });

  // ---- small kernels -----------------------------------------------------------------------------------------------

  check('rmsnorm matches the reference (several rows, odd lengths, in place)', () => {
    for (const n of [1, 3, 288, 291]) for (const T of [1, 3]) {
      const x = randomF32(T * n, 4), w = randomF32(n);
      const want = new Float32Array(T * n);
      for (let t = 0; t < T; t++) rmsnorm(want.subarray(t * n, (t + 1) * n), x.subarray(t * n, (t + 1) * n), w, 1e-5);
      scoped(() => {
        const xp = rt.putF32(x), wp = rt.putF32(w), out = rt.alloc(T * n * 4);
        rt.rmsnorm(out, xp, wp, T, n, 1e-5);
        assertClose(rt.f32(out, T * n), want, abs(want), `rmsnorm n=${n} T=${T}`);
        rt.rmsnorm(xp, xp, wp, T, n, 1e-5); // aliasing
        assertClose(rt.f32(xp, T * n), want, abs(want), `rmsnorm in place n=${n}`);
      });
    }
  });

  check('rope (rotate-half, cos/sin tables) matches ropeRotateHalf', () => {
    for (const headDim of [48, 6, 10, 64]) for (const nHeads of [1, 6]) {
      const half = headDim / 2;
      const invFreq = Float32Array.from({ length: half }, (_, j) => Math.fround(1 / Math.pow(10000, (2 * j) / headDim)));
      const T = 3;
      const positions = [0, 7, 999];
      const x = randomF32(T * nHeads * headDim);
      const want = x.slice();
      for (let t = 0; t < T; t++) for (let h = 0; h < nHeads; h++) ropeRotateHalf(want, (t * nHeads + h) * headDim, headDim, positions[t], invFreq);
      const bound = new Float32Array(x.length);
      for (let b = 0; b < x.length; b += headDim) {
        for (let j = 0; j < half; j++) bound[b + j] = bound[b + j + half] = Math.abs(x[b + j]) + Math.abs(x[b + j + half]);
      }
      scoped(() => {
        const tables = rt.putRopeTables(invFreq, 1000);
        const xp = rt.putF32(x);
        rt.rope(xp, T, nHeads, headDim, tables, rt.putI32(positions));
        assertClose(rt.f32(xp, x.length), want, bound, `rope headDim=${headDim} heads=${nHeads}`);
      });
    }
  });

  check('softmax matches the reference (-inf entries get 0, large ranges, odd lengths)', () => {
    for (const n of [1, 3, 5, 288, 32000]) {
      const x = randomF32(n, 30);
      if (n > 3) { x[1] = -Infinity; x[n - 1] = -Infinity; x[2] = 60; }
      const want = x.slice();
      softmax(want);
      scoped(() => {
        const p = rt.putF32(x);
        rt.softmax(p, n);
        const got = rt.f32(p, n);
        assertClose(got, want, want.map((v) => Math.abs(v) + 1e-38), `softmax n=${n}`);
        if (n > 3) assert.equal(got[1], 0);
      });
    }
  });

  check('swiglu matches the reference', () => {
    for (const n of [1, 3, 768, 771]) {
      const g = randomF32(n, 20), u = randomF32(n, 2);
      g[0] = -100; // e^-g saturates: silu ≈ 0
      const want = g.slice();
      swiglu(want, u);
      scoped(() => {
        const gp = rt.putF32(g), up = rt.putF32(u);
        rt.swiglu(gp, up, n);
        assertClose(rt.f32(gp, n), want, want.map((v) => Math.abs(v) + 1e-35), `swiglu n=${n}`);
      });
    }
  });

  check('sample split / partition / walk: near ids and weights bit-exact with the sampler, far mass to 1e-6, its bound within 2× (odd sizes)', () => {
    const kern = new SamplingKernel(rt.module);
    const f = Math.fround;
    for (const V of [1, 3, 5, 17, 1001, 32003]) for (const invT of [1.25, 0.5]) {
      const x = randomF32(V, 30);
      const cut = 16;
      const sP = 64 * invT;
      const n = kern.split(x, invT, cut, V, sP, true, EXP_TABLES);
      let m = -Infinity;
      for (const v of x) m = Math.max(m, v);
      // reference: the same f32 classification, the sampler's f64 weights, exact far sums (Math.exp)
      const ids: number[] = [];
      const gaps: number[] = [];
      const mass = new Float64Array(32 * 64 + 1);
      let gap = 0;
      let near = 0;
      for (let i = 0; i < V; i++) {
        const y = f(f(x[i] - m) * f(invT));
        if (y >= -cut) {
          ids.push(i);
          gaps.push(gap);
          gap = 0;
          const t = (m - x[i]) * sP;
          const w = expNeg64(t);
          near += w;
          mass[t < 2048 ? t | 0 : 2048] += w;
          assert.ok(Object.is(kern.w[i], w), `sample w[${i}] V=${V}: ${kern.w[i]} vs ${w}`);
        } else {
          gap += Math.exp(y);
        }
      }
      assert.equal(n, ids.length, `sample near count V=${V} invT=${invT}`);
      bitsEqual(kern.ids.subarray(0, n), ids, `sample ids V=${V}`);
      assert.ok(Object.is(kern.max, m) && Object.is(kern.near, near), `sample max / near sum V=${V}`);
      bitsEqual(kern.mass, mass, `sample histogram V=${V}`);
      assertClose([...kern.gaps.subarray(0, n), kern.tail], [...gaps, gap], [...gaps, gap].map((g) => g + 1e-30), `sample far gaps V=${V}`, 1e-6);
      // partition at the bucket of the median near id, and the walk, against the same loops in JS
      const B = n > 0 ? Math.floor((m - x[ids[n >> 1]]) * sP) : 0;
      const r = kern.partition(sP, B);
      const bucket = (i: number) => Math.min(2048, Math.floor((m - x[i]) * sP));
      bitsEqual(kern.keep.subarray(0, r), ids.filter((i) => bucket(i) < B), `sample partition keep V=${V}`);
      bitsEqual(kern.edge.subarray(0, kern.edgeCount), ids.filter((i) => bucket(i) === B), `sample partition edge V=${V}`);
      const total = kern.near + kern.gaps.subarray(0, n).reduce((a, b) => a + b, 0) + kern.tail;
      for (const u of [0, 0.3, 0.999]) {
        let acc = 0;
        let want = -1;
        for (let j = 0; j < n && want < 0; j++) {
          acc += kern.gaps[j];
          if (u * total < acc) break;
          acc += kern.w[ids[j]];
          if (u * total < acc) want = ids[j];
        }
        assert.equal(kern.walk(u * total), want, `sample walk u=${u} V=${V}`);
      }
      // far = 'bound': the same near tokens, weights and histogram; tail an upper bound of the far mass the exact mode
      // sums (what the sampler would use) within 2.01× of it, gaps 0. far = 'none': the same near tokens, tail and gaps 0.
      const exactFar = kern.gaps.subarray(0, n).reduce((a, b) => a + b, 0) + kern.tail; // the kernel's exact far mass
      const wExact = Float64Array.from(ids, (i) => kern.w[i]);
      for (const mode of ['bound', 'none'] as const) {
        assert.equal(kern.split(x, invT, cut, V, sP, true, EXP_TABLES, mode), n, `sample near count (${mode}) V=${V}`);
        bitsEqual(kern.ids.subarray(0, n), ids, `sample ids (${mode}) V=${V}`);
        bitsEqual(Float64Array.from(ids, (i) => kern.w[i]), wExact, `sample weights (${mode}) V=${V}`);
        bitsEqual(kern.mass, mass, `sample histogram (${mode}) V=${V}`);
        assert.ok(kern.gaps.subarray(0, n).every((g) => g === 0), `sample gaps (${mode}) V=${V}`);
        if (mode === 'none') assert.equal(kern.tail, 0, `sample tail (none) V=${V}`);
        else assert.ok(kern.tail >= exactFar && kern.tail <= 2.01 * exactFar + 1e-300, `sample far bound V=${V} invT=${invT}: ${kern.tail} for ${exactFar}`);
      }
    }
    // a NaN anywhere, +Infinity, or all −Infinity: -1 (the sampler's exact path reports them); too many near: -1
    const y = randomF32(37);
    y[20] = NaN;
    assert.equal(kern.split(y, 1, 16, 37, 64, false, EXP_TABLES), -1);
    y[20] = Infinity;
    assert.equal(kern.split(y, 1, 16, 37, 64, false, EXP_TABLES), -1);
    assert.equal(kern.split(new Float32Array(9).fill(-Infinity), 1, 16, 9, 64, false, EXP_TABLES), -1);
    assert.equal(kern.split(new Float32Array(64), 1, 16, 10, 64, false, EXP_TABLES), -1);
    // a maximum of zero: +0 as soon as one +0 is there (Math.max's), −0 when every zero is −0
    const z = new Float32Array(41).fill(-30);
    z[2] = -0;
    z[30] = 0;
    assert.ok(kern.split(z, 1, 16, 41, 64, false, EXP_TABLES) === 2 && Object.is(kern.max, 0), 'sample max of −0 and +0');
    z[30] = -0;
    assert.ok(kern.split(z, 1, 16, 41, 64, false, EXP_TABLES) === 2 && Object.is(kern.max, -0), 'sample max of −0 only');
  });

  check('add is exact; argmax picks the first maximum, and the first NaN wins as in the sampler', () => {
    for (const n of [1, 3, 17, 32000]) {
      const x = randomF32(n), y = randomF32(n);
      scoped(() => {
        const xp = rt.putF32(x), yp = rt.putF32(y);
        rt.add(xp, yp, n);
        bitsEqual(rt.f32(xp, n), x.map((v, i) => v + y[i]), `add n=${n}`);
      });
    }
    const cases: number[][] = [
      [1], [-Infinity, -Infinity], [NaN, 1, 2, NaN, 2, 0], [0, 5, 1, 5, 5, 5, 5, 5, 2], [-3, -2, -1, -1.5, -1, -7, -1],
      [NaN, NaN, NaN, NaN, NaN], [...randomF32(32003)],
    ];
    const big = randomF32(1001);
    big[998] = 2;
    big[601] = 2; // tie between lanes: the first index wins
    cases.push([...big]);
    for (const c of cases) {
      scoped(() => {
        const p = rt.putF32(c);
        assert.equal(rt.argmax(p, c.length), ref.argmax(Float32Array.from(c)), `argmax of ${c.length}: ${c.slice(0, 9)}`);
      });
    }
  });

  // ---- attention ---------------------------------------------------------------------------------------------------

  check('paged attention matches the reference: f32 and f16 pages, page table, causal limit, probabilities, accumulation, band', () => {
    for (const kvHalf of [false, true]) for (const headDim of [48, 6]) for (const pageTokens of [16, 5]) for (const nSlots of [1, 3, 16, 37]) {
      const nPages = Math.ceil(nSlots / pageTokens) + 3;
      const pageFloats = kvPageBytes(pageTokens, headDim) / 4; // elements per page, whatever their size
      // An f16 cache holds rounded values: the reference attends over exactly those.
      const halves = Uint16Array.from(randomF32(nPages * pageFloats, 2), (x) => f32ToF16(x));
      const pool = kvHalf ? Float32Array.from(halves, (h) => f16ToF32(h)) : randomF32(nPages * pageFloats, 2);
      // Pages in a scrambled order, and slot positions not in slot order (as after eviction).
      const pageTable = Int32Array.from({ length: Math.ceil(nSlots / pageTokens) }, (_, i) => (i * 5 + 2) % nPages);
      assert.equal(new Set(pageTable).size, pageTable.length);
      const positions = Int32Array.from({ length: nSlots }, (_, s) => (s * 7) % (nSlots + 3));
      const q = randomF32(headDim, 2);
      const scale = 1 / Math.sqrt(headDim);
      for (const causal of [false, true]) {
        const queryPos = causal ? Math.floor(nSlots / 2) : 0;
        const want = ref.pagedAttention(q, pool, pageTable, nSlots, pageTokens, headDim, scale, causal ? positions : undefined, queryPos);
        scoped(() => {
          let poolP = rt.putF32(pool);
          if (kvHalf) {
            poolP = rt.alloc(halves.length * 2);
            rt.u16(poolP, halves.length).set(halves);
          }
          const tableP = rt.putI32(pageTable), posP = rt.putI32(positions), qP = rt.putF32(q);
          const out = rt.alloc(headDim * 4), probs = rt.alloc(nSlots * 4);
          const accum = rt.putF32(new Float32Array(nSlots).fill(0.25));
          const band = rt.putF32(new Float32Array(nSlots).fill(0.5));
          const bandFrom = Math.floor(nSlots / 3);
          rt.attention({ out, probs, q: qP, pool: poolP, pageTable: tableP, nSlots, pageTokens, headDim, scale,
            positions: causal ? posP : 0, queryPos, accum, band, bandFrom, kvHalf });
          const label = `attention ${kvHalf ? 'f16' : 'f32'} hd=${headDim} page=${pageTokens} n=${nSlots} causal=${causal}`;
          const gotProbs = rt.f32(probs, nSlots);
          assertClose(gotProbs, want.probs, want.probs.map((p) => p + 1e-38), `${label} probs`);
          for (let s = 0; s < nSlots; s++) if (want.probs[s] === 0 && causal && positions[s] > queryPos) assert.equal(gotProbs[s], 0);
          // Bound for out: Σ p·|v| per dimension.
          const vBound = new Float32Array(headDim);
          for (let s = 0; s < nSlots; s++) {
            const v = pageTable[Math.floor(s / pageTokens)] * pageFloats + (pageTokens + (s % pageTokens)) * headDim;
            for (let d = 0; d < headDim; d++) vBound[d] += want.probs[s] * Math.abs(pool[v + d]);
          }
          assertClose(rt.f32(out, headDim), want.out, vBound, `${label} out`);
          assertClose(rt.f32(accum, nSlots), want.probs.map((p) => p + 0.25), 1, `${label} accum`);
          assertClose(rt.f32(band, nSlots), want.probs.map((p, s) => (s >= bandFrom ? p : 0) + 0.5), 1, `${label} band`);
        });
      }
    }
  });

  check('attention_rows = attention row by row over growing slot prefixes (accumulator, several bands, f32 and f16 pages)', () => {
    const cases: [number, number, number, number, number[]][] = [[48, 16, 0, 37, [3, 9, 40]], [6, 5, 7, 4, [0]], [10, 3, 2, 1, []]];
    for (const kvHalf of [false, true]) for (const [headDim, pageTokens, older, rows, widths] of cases) {
      const nSlots = older + rows;
      const nPages = Math.ceil(nSlots / pageTokens) + 2;
      const E = kvHalf ? 2 : 4;
      const pageElems = kvPageBytes(pageTokens, headDim, E) / E;
      const halves = Uint16Array.from(randomF32(nPages * pageElems, 2), (x) => f32ToF16(x));
      const pool = kvHalf ? Float32Array.from(halves, (h) => f16ToF32(h)) : randomF32(nPages * pageElems, 2);
      const pageTable = Int32Array.from({ length: Math.ceil(nSlots / pageTokens) }, (_, i) => (i * 3 + 1) % nPages);
      const qDim = headDim * 3; // rows of a [rows, 3 heads] query matrix: this head's rows are qDim floats apart
      const q = randomF32(rows * qDim, 2);
      const scale = 1 / Math.sqrt(headDim);
      scoped(() => {
        let poolP: Ptr;
        if (kvHalf) {
          poolP = rt.alloc(halves.length * 2);
          rt.u16(poolP, halves.length).set(halves);
        } else poolP = rt.putF32(pool);
        const qP = rt.putF32(q), out = rt.putF32(new Float32Array(rows * qDim).fill(7)), tableP = rt.putI32(pageTable);
        const probs = rt.alloc(nSlots * 4);
        const K = widths.length;
        const accum = rt.putF32(new Float32Array(nSlots)), band = rt.putF32(new Float32Array(K * nSlots + 1));
        const desc = rt.putI32(Int32Array.from([K, nSlots * 4, ...widths]));
        rt.exports.attention_rows(out, probs, qP, qDim * 4, rows, older, poolP, tableP, pageTokens, headDim, scale, accum,
          K ? band : 0, desc, kvHalf ? 1 : 0);
        const wantAccum = new Float32Array(nSlots);
        const wantBand = new Float32Array(K * nSlots + 1);
        const got = rt.f32(out, rows * qDim);
        for (let j = 0; j < rows; j++) {
          const want = ref.pagedAttention(q.subarray(j * qDim, j * qDim + headDim), pool, pageTable, older + j + 1, pageTokens, headDim, scale);
          assertClose(got.subarray(j * qDim, j * qDim + headDim), want.out, 10, `row ${j} out`);
          assert.ok(got.subarray(j * qDim + headDim, (j + 1) * qDim).every((x) => x === 7), 'other heads untouched');
          want.probs.forEach((p, s) => {
            wantAccum[s] += p;
            widths.forEach((w, k) => {
              if (older + j - s <= w) wantBand[k * nSlots + s] += p;
            });
          });
        }
        const label = `${kvHalf ? 'f16' : 'f32'} d=${headDim} page=${pageTokens} older=${older} rows=${rows} w=${widths}`;
        assertClose(rt.f32(accum, nSlots), wantAccum, 1, `${label} accum`);
        // Each band's sums in its own row of the buffer; the float past them untouched.
        assertClose(rt.f32(band, K * nSlots + 1), wantBand, 1, `${label} bands`);
      });
    }
  });

  check('kv_write of several rows: strided sources into consecutive slots across pages, f32 copies and f16 halves', () => {
    const headDim = 5, pageTokens = 3, rows = 4, stride = 2 * headDim; // rows of a [rows, 2 kv heads] matrix
    for (const kvHalf of [false, true]) {
      scoped(() => {
        const E = kvHalf ? 2 : 4;
        const pool = rt.alloc(3 * kvPageBytes(pageTokens, headDim, E));
        const table = rt.putI32([2, 0]);
        const k = randomF32(rows * stride, 3), v = randomF32(rows * stride, 3);
        rt.kvWrite(pool, table, 1, rt.putF32(k), rt.putF32(v), pageTokens, headDim, rows, stride * 4, kvHalf); // slots 1..4
        for (let j = 0; j < rows; j++) {
          const slot = 1 + j;
          const page = pool + [2, 0][Math.floor(slot / pageTokens)] * kvPageBytes(pageTokens, headDim, E);
          const row = slot % pageTokens;
          const kAt = page + kvKeyOffset(row, headDim, E), vAt = page + kvValueOffset(row, pageTokens, headDim, E);
          const wantK = k.subarray(j * stride, j * stride + headDim), wantV = v.subarray(j * stride, j * stride + headDim);
          if (kvHalf) {
            assert.deepEqual(Array.from(rt.u16(kAt, headDim)), Array.from(wantK, (x) => f32ToF16(x)), `key ${j}`);
            assert.deepEqual(Array.from(rt.u16(vAt, headDim)), Array.from(wantV, (x) => f32ToF16(x)), `value ${j}`);
          } else {
            bitsEqual(rt.f32(kAt, headDim), wantK, `key ${j}`);
            bitsEqual(rt.f32(vAt, headDim), wantV, `value ${j}`);
          }
        }
      });
    }
  });

  check('attention with every slot masked gives zeros; kv_write stores at the documented layout', () => {
    const headDim = 6, pageTokens = 4, nSlots = 6;
    scoped(() => {
      const pool = rt.alloc(3 * kvPageBytes(pageTokens, headDim));
      rt.f32(pool, 3 * kvPageBytes(pageTokens, headDim) / 4).fill(1);
      const table = rt.putI32([2, 0]);
      const out = rt.alloc(headDim * 4), probs = rt.putF32(new Float32Array(nSlots).fill(7));
      rt.attention({ out, probs, q: rt.putF32(randomF32(headDim)), pool, pageTable: table, nSlots, pageTokens, headDim,
        scale: 1, positions: rt.putI32([5, 6, 7, 8, 9, 10]), queryPos: 4 });
      bitsEqual(rt.f32(out, headDim), new Float32Array(headDim), 'masked out');
      bitsEqual(rt.f32(probs, nSlots), new Float32Array(nSlots), 'masked probs');

      const k = randomF32(headDim), v = randomF32(headDim);
      rt.kvWrite(pool, table, 5, rt.putF32(k), rt.putF32(v), pageTokens, headDim); // slot 5 → page table[1] = 0, row 1
      const page0 = pool;
      bitsEqual(rt.f32(page0 + kvKeyOffset(1, headDim), headDim), k, 'kv_write key');
      bitsEqual(rt.f32(page0 + kvValueOffset(1, pageTokens, headDim), headDim), v, 'kv_write value');
      rt.kvWrite(pool, table, 2, rt.putF32(v), rt.putF32(k), pageTokens, headDim); // slot 2 → page 2, row 2
      bitsEqual(rt.f32(pool + 2 * kvPageBytes(pageTokens, headDim) + kvKeyOffset(2, headDim), headDim), v, 'kv_write key page 2');
    });
  });

  // ---- variants and the threaded schedule ------------------------------------------------------------------------

  check('matmul f32 rows4 (workbench variant) matches the reference (odd sizes, row sub-ranges)', () => {
    for (const cols of COLS) for (const rows of ROWS) {
      const W = randomF32(rows * cols), x = randomF32(cols);
      scoped(() => {
        const w = rt.putF32(W), xp = rt.putF32(x);
        checkMatmul('f32 rows4', 1, rows, cols, W, x, (out, r0, r1) => rt.exports.matmul_f32_rows4(out, xp, w, 1, rows, cols, r0, r1));
      });
    }
  });

  check('matmul f32 prefill in token blocks equals the unblocked kernel (f32-flat) bit for bit, row sub-ranges too', () => {
    // Blocks of max(4, 16 KB / row bytes & ~3) tokens: 12 at 288 columns, 4 from 1,025 columns; T beyond a block, odd.
    for (const [T, rows, cols] of [[37, 33, 288], [130, 19, 291], [9, 7, 1030], [6, 5, 4100], [13, 64, 37]] as const) {
      const W = randomF32(rows * cols), x = randomF32(T * cols);
      scoped(() => {
        const w = rt.putF32(W), xp = rt.putF32(x);
        const a = rt.alloc(T * rows * 4), b = rt.alloc(T * rows * 4);
        rt.f32(a, T * rows).fill(NaN);
        rt.f32(b, T * rows).fill(NaN);
        const mid = rows >> 1;
        rt.exports.matmul_f32(a, xp, w, T, rows, cols, 0, mid);
        rt.exports.matmul_f32(a, xp, w, T, rows, cols, mid, rows);
        rt.exports.matmul_f32_flat(b, xp, w, T, rows, cols, 0, rows);
        bitsEqual(rt.f32(a, T * rows), rt.f32(b, T * rows), `f32 blocked vs flat T=${T} rows=${rows} cols=${cols}`);
      });
    }
  });

  check('matmul f16 rows4 (workbench variant) matches the reference, large activations included', () => {
    for (const cols of COLS) for (const rows of ROWS) {
      const bits = Uint16Array.from(randomF32(rows * cols), ref.f32ToF16);
      const W = Float32Array.from(bits, ref.f16ToF32);
      for (const big of [false, true]) {
        const x = randomF32(cols, big ? 100 : 1);
        if (big) x[0] = 40000; // |x| ≥ 2^15: the unscaled path
        scoped(() => {
          const w = rt.putU16(bits), xp = rt.putF32(x);
          checkMatmul('f16 rows4', 1, rows, cols, W, x, (out, r0, r1) => rt.exports.matmul_f16_rows4(out, xp, w, 1, rows, cols, r0, r1));
        });
      }
    }
  });

  if (pool && pool.threads > 1) {
    check('matmul job lists on the pool equal the single-thread kernels bit for bit, under every chunk policy', () => {
      const shapes: [number, number, number][] = [[1, 771, 299], [1, 4099, 64], [5, 1030, 288], [17, 33, 33]];
      for (const [T, rows, cols] of shapes) {
        const W = randomF32(rows * cols), x = randomF32(T * cols);
        scoped(() => {
          const w32 = rt.putF32(W), w16 = rt.toF16(w32, rows * cols), wq = rt.quantizeQ8(w32, rows, cols), xp = rt.putF32(x);
          const xq = rt.alloc(q8ActBytes(T, cols)), xd = rt.alloc(T * q8Blocks(cols) * 4);
          rt.quantizeQ8Act(xq, xd, xp, T, cols);
          const kinds: [string, (l: ReturnType<WasmRuntime['jobList']>, out: Ptr) => void][] = [
            ['f32', (l, out) => l.matmulF32(out, xp, w32, T, rows, cols)],
            ['f32 rows4', (l, out) => l.matmulF32(out, xp, w32, T, rows, cols, undefined, 0, 'rows4')],
            ['f32 flat', (l, out) => l.matmulF32(out, xp, w32, T, rows, cols, undefined, 0, 'flat')],
            ['f16', (l, out) => l.matmulF16(out, xp, w16, T, rows, cols)],
            ['f16 rows4', (l, out) => l.matmulF16(out, xp, w16, T, rows, cols, undefined, 0, 'rows4')],
            ['q8_0', (l, out) => l.matmulQ8(out, xq, xd, wq, T)],
            ['q8_0 r1t4', (l, out) => l.matmulQ8(out, xq, xd, wq, T, undefined, 0, 'r1t4')],
            ['q8_0 ld', (l, out) => l.matmulQ8(out, xq, xd, wq, T, undefined, 0, 'ld')],
            ['q8_0×f32', (l, out) => l.matmulQ8F32(out, xp, wq, T)],
          ];
          for (const [kind, push] of kinds) {
            const want = rt.alloc(T * rows * 4), got = rt.alloc(T * rows * 4);
            const one = rt.jobList(1);
            push(one, want);
            rt.runList(one);
            for (const [name, policy] of Object.entries(MATMUL_CHUNK_POLICIES)) {
              pool.setMatmulChunk(policy);
              rt.f32(got, T * rows).fill(NaN);
              const list = rt.jobList(1);
              push(list, got);
              pool.run(list);
              bitsEqual(rt.f32(got, T * rows), rt.f32(want, T * rows), `${kind} T=${T} ${rows}x${cols} chunks ${name}`);
            }
          }
        });
      }
      pool.setMatmulChunk(MATMUL_CHUNK_POLICIES[DEFAULT_MATMUL_CHUNK]);
    });
  }

  // Each check draws from its own seed, so one can run alone (--only) on the inputs it sees in the full run.
  return checks.map((c, i) => ({
    name: c.name,
    run: () => {
      worst = 0;
      rand = mulberry32(12345 + i);
      c.run();
      return worst;
    },
  }));
}

/** Run the checks (all, or those whose name contains `only`) and report each as a CheckResult. */
export function runWasmChecks(rt: WasmRuntime, options: { pool?: WorkerPool; only?: string } = {}): CheckResult[] {
  const results: CheckResult[] = [];
  for (const c of wasmChecks(rt, options.pool)) {
    if (options.only && !c.name.includes(options.only)) continue;
    try {
      results.push({ name: c.name, maxError: c.run(), tolerance: 1, ok: true });
    } catch (err) {
      results.push({ name: c.name, maxError: Infinity, tolerance: 1, ok: false, detail: err instanceof Error ? err.message : String(err) });
    }
  }
  return results;
}
