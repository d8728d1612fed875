// The worker pool: job lists give the same bits on 2 (or 3) threads as on one, through both the spinning and the
// sleeping hand-off paths; errors on either thread surface as exceptions and leave the pool usable; close() and
// forgotten pools both let the process exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { WasmRuntime, type Ptr } from '../src/backend/wasm/runtime.js';
import { WorkerPool } from '../src/backend/wasm/pool.js';
import type { JobList } from '../src/backend/wasm/jobs.js';
import { kvPageBytes, q8ActBytes, q8Blocks } from '../src/backend/wasm/layout.js';

const rt = await WasmRuntime.create();

let seed = 99;
function random(): number {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed / 4294967296 - 0.5;
}
const randomF32 = (n: number): Float32Array => Float32Array.from({ length: n }, random);

/**
 * A small transformer layer over T tokens as one job list, touching every op with awkward sizes (dim 44, head 22,
 * hidden 100, pages of 3 tokens). It starts by copying its input, so every run computes the same thing.
 * Returns the list and the output regions to compare.
 */
function layerList(): { list: JobList; outputs: [Ptr, number][] } {
  const T = 5, dim = 44, heads = 2, hd = 22, hidden = 100, pageTokens = 3;
  const x0 = rt.putF32(randomF32(T * dim)), x = rt.alloc(T * dim * 4), xn = rt.alloc(T * dim * 4);
  const norm = rt.putF32(randomF32(dim).map((v) => v + 1));
  const wq = rt.putF32(randomF32(dim * dim)), wk = rt.toF16(randomF32(dim * dim));
  const wv = rt.quantizeQ8(randomF32(dim * dim), dim, dim), wo = rt.quantizeQ8(randomF32(dim * dim), dim, dim);
  const w1 = rt.putF32(randomF32(hidden * dim)), w3 = rt.putF32(randomF32(hidden * dim)), w2 = rt.putF32(randomF32(dim * hidden));
  const q = rt.alloc(T * dim * 4), k = rt.alloc(T * dim * 4), v = rt.alloc(T * dim * 4), att = rt.alloc(T * dim * 4), o = rt.alloc(T * dim * 4);
  const xq = rt.alloc(q8ActBytes(T, dim)), xd = rt.alloc(T * q8Blocks(dim) * 4);
  const g = rt.alloc(T * hidden * 4), u = rt.alloc(T * hidden * 4);
  const invFreq = Float32Array.from({ length: hd / 2 }, (_, j) => 1 / Math.pow(10000, (2 * j) / hd));
  const tables = rt.putRopeTables(invFreq, 16);
  const pos = rt.putI32([3, 4, 5, 6, 7]);
  const nPages = 2 * heads;
  const pool = rt.alloc(nPages * kvPageBytes(pageTokens, hd));
  const pageTables = [rt.putI32([3, 0]), rt.putI32([1, 2])];
  const positions = rt.putI32([3, 4, 5, 6, 7]);
  const probs = rt.alloc(heads * T * T * 4);
  const accum = rt.alloc(heads * T * 4);
  const result = rt.alloc(16);

  const L = rt.jobList(128);
  L.copy(x, x0, T * dim * 4, 0);
  L.copy(accum, x0, heads * T * 4, 1); // accumulators start from arbitrary values
  L.barrier();
  L.rmsnorm(xn, x, norm, T, dim, 1e-5);
  L.barrier();
  L.matmulF32(q, xn, wq, T, dim, dim);
  L.matmulF16(k, xn, wk, T, dim, dim);
  L.quantizeQ8Act(xq, xd, xn, T, dim);
  L.barrier();
  L.matmulQ8(v, xq, xd, wv, T);
  L.rope(q, T, heads, hd, tables, pos);
  L.rope(k, T, heads, hd, tables, pos);
  L.barrier();
  for (let h = 0; h < heads; h++) {
    for (let t = 0; t < T; t++) L.kvWrite(pool, pageTables[h], t, k + (t * dim + h * hd) * 4, v + (t * dim + h * hd) * 4, pageTokens, hd, h);
  }
  L.barrier();
  for (let h = 0; h < heads; h++) {
    for (let t = 0; t < T; t++) {
      L.attention({ out: att + (t * dim + h * hd) * 4, probs: probs + (h * T + t) * T * 4, q: q + (t * dim + h * hd) * 4, pool,
        pageTable: pageTables[h], nSlots: T, pageTokens, headDim: hd, scale: 1 / Math.sqrt(hd), positions, queryPos: 3 + t,
        accum: accum + h * T * 4 }, (h + 1) % 2); // one head per thread: the accum rows are per head
    }
  }
  L.barrier();
  L.matmulQ8F32(o, att, wo, T);
  L.barrier();
  L.add(x, o, T * dim);
  L.barrier();
  L.rmsnorm(xn, x, norm, T, dim, 1e-5);
  L.barrier();
  L.matmulF32(g, xn, w1, T, hidden, dim);
  L.matmulF32(u, xn, w3, T, hidden, dim);
  L.barrier();
  L.swiglu(g, u, T * hidden);
  L.barrier();
  L.matmulF32(o, g, w2, T, dim, hidden);
  L.barrier();
  L.add(x, o, T * dim);
  L.barrier();
  L.argmax(result, x + (T - 1) * dim * 4, dim, 1);
  L.copy(att, x, T * dim * 4, 0);
  L.barrier();
  L.softmax(att + (T - 1) * dim * 4, dim);
  const outputs: [Ptr, number][] = [[x, T * dim], [q, T * dim], [k, T * dim], [v, T * dim], [att, T * dim], [g, T * hidden],
    [probs, heads * T * T], [accum, heads * T], [pool, (nPages * kvPageBytes(pageTokens, hd)) / 4], [result, 1]];
  return { list: L, outputs };
}

const snapshot = (outputs: [Ptr, number][]): Float32Array[] => outputs.map(([p, n]) => rt.f32(p, n).slice());
function assertSameBits(got: Float32Array[], want: Float32Array[], label: string): void {
  for (let i = 0; i < want.length; i++) {
    assert.deepEqual(new Uint32Array(got[i].buffer), new Uint32Array(want[i].buffer), `${label}: output ${i} differs`);
  }
}

const layer = layerList();
rt.runList(layer.list);
const single = snapshot(layer.outputs);

test('the reference layer is not degenerate', () => {
  for (const out of single) assert.ok(out.every(Number.isFinite), 'finite');
  assert.ok(single[6].some((p) => p === 0) && single[6].some((p) => p > 0), 'causal masking left zeros and non-zeros');
});

test('2 threads give the same bits as 1, over many dispatches (spinning hand-off)', async () => {
  const pool = await WorkerPool.create(rt, { threads: 2 });
  try {
    for (let i = 0; i < 200; i++) {
      pool.run(layer.list);
      if (i % 50 === 0) assertSameBits(snapshot(layer.outputs), single, `run ${i}`);
    }
    assertSameBits(snapshot(layer.outputs), single, 'last run');
  } finally {
    await pool.close();
  }
});

test('the sleeping hand-off (no spinning at all) and 3 threads give the same bits', async () => {
  for (const options of [{ threads: 2, spinMicros: 0, barrierSpin: 0 }, { threads: 3 }]) {
    const pool = await WorkerPool.create(rt, options);
    try {
      for (let i = 0; i < 30; i++) pool.run(layer.list);
      assertSameBits(snapshot(layer.outputs), single, JSON.stringify(options));
    } finally {
      await pool.close();
    }
  }
});

test('a failing op on either thread throws from run(), releases the barrier, and the pool keeps working', async () => {
  // Without spinning, the healthy thread is asleep in the barrier when the failure has to wake it.
  for (const options of [{ threads: 2 }, { threads: 2, spinMicros: 0, barrierSpin: 0 }]) await failAndRecover(options);
});

async function failAndRecover(options: { threads: number; spinMicros?: number; barrierSpin?: number }): Promise<void> {
  const pool = await WorkerPool.create(rt, options);
  try {
    const src = rt.alloc(64);
    const beyond = rt.memory.buffer.byteLength + (1 << 20); // outside the memory: the copy traps
    for (const failingThread of [1, 0]) {
      const bad = rt.jobList(4);
      bad.copy(beyond, src, 64, failingThread);
      bad.barrier(); // the healthy thread waits here until the failure releases it
      bad.copy(src, src, 64);
      assert.throws(() => pool.run(bad), (err: Error) => {
        assert.match(err.message, /out of bounds/);
        if (failingThread === 1) assert.match(err.message, /worker 1/);
        return true;
      });
      pool.run(layer.list);
      assertSameBits(snapshot(layer.outputs), single, `after a failure on thread ${failingThread}`);
    }
  } finally {
    await pool.close();
  }
  assert.throws(() => pool.run(layer.list), /closed/);
  await pool.close(); // twice is fine
}

test('hooks: the main thread runs JS at each hook while the others go on; results unchanged; a throwing hook aborts cleanly', async () => {
  // The layer list with a hook at its end: every thread count gives the bits one thread gives.
  const hooked = layerList();
  hooked.list.hook(7);
  let reference: Float32Array[] | undefined;
  for (const options of [{ threads: 1 }, { threads: 2 }, { threads: 2, spinMicros: 0, barrierSpin: 0 }]) {
    const label = JSON.stringify(options);
    const pool = await WorkerPool.create(rt, options);
    try {
      const seen: number[] = [];
      for (let i = 0; i < 20; i++) pool.run(hooked.list, (id) => seen.push(id));
      assert.deepEqual(seen, new Array(20).fill(7), `${label}: one call per run, with the hook's id`);
      reference ??= snapshot(hooked.outputs);
      assertSameBits(snapshot(hooked.outputs), reference, `${label}: same bits as one thread`);
      // Hooks between phases, in order; the work around them all done.
      const mid = rt.jobList(8);
      const a = rt.putF32([1, 2, 3, 4]), b = rt.putF32([10, 20, 30, 40]);
      mid.add(a, b, 4);
      mid.barrier();
      mid.hook(1);
      mid.add(a, b, 4);
      mid.barrier();
      mid.hook(2);
      mid.add(a, b, 4);
      const order: number[] = [];
      pool.run(mid, (id) => order.push(id));
      assert.deepEqual(order, [1, 2]);
      assert.deepEqual(Array.from(rt.f32(a, 4)), [31, 62, 93, 124]);
      // A throwing hook: run() rethrows it, the other threads abandon the list, the pool keeps working.
      assert.throws(() => pool.run(mid, (id) => { if (id === 2) throw new Error('hook failed'); }), /hook failed/);
      pool.run(layer.list);
      assertSameBits(snapshot(layer.outputs), single, `${label}: after a failing hook`);
      assert.throws(() => pool.run(mid), /needs onHook/);
    } finally {
      await pool.close();
    }
  }
});

test('a process that forgets to close its pool still exits by itself; one that closes exits too', () => {
  const url = (p: string): string => new URL(p, import.meta.url).href;
  for (const close of [false, true]) {
    const script = `
      import { WasmRuntime } from '${url('../src/backend/wasm/runtime.js')}';
      import { WorkerPool } from '${url('../src/backend/wasm/pool.js')}';
      const rt = await WasmRuntime.create();
      const pool = await WorkerPool.create(rt, { threads: 2 });
      const list = rt.jobList(2);
      const a = rt.putF32([1, 2, 3, 4]), b = rt.putF32([10, 20, 30, 40]);
      list.add(a, b, 4);
      pool.run(list);
      console.log(Array.from(rt.f32(a, 4)).join(','));
      ${close ? 'await pool.close();' : ''}`;
    const t0 = Date.now();
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.error, undefined, `child did not exit (close=${close}): ${r.error?.message}`);
    assert.equal(r.status, 0, `child failed (close=${close}): ${r.stderr}`);
    assert.equal(r.stdout.trim(), '11,22,33,44');
    assert.ok(Date.now() - t0 < 10_000, 'child took too long to exit');
  }
});

test('a prebuilt list replays with patched arguments (setArg), as a decode step would per token', async () => {
  const hd = 8, pageTokens = 4, nMax = 10;
  const pool = rt.alloc(3 * kvPageBytes(pageTokens, hd));
  rt.f32(pool, (3 * kvPageBytes(pageTokens, hd)) / 4).set(randomF32((3 * kvPageBytes(pageTokens, hd)) / 4));
  const table = rt.putI32([2, 0, 1]), q = rt.putF32(randomF32(hd)), out = rt.alloc(hd * 4), probs = rt.alloc(nMax * 4);
  const expected = rt.alloc(hd * 4), expectedProbs = rt.alloc(nMax * 4);
  const args = { out, probs, q, pool, pageTable: table, nSlots: 1, pageTokens, headDim: hd, scale: 0.5 };
  const list = rt.jobList(3);
  const at = list.attention(args);
  list.barrier(); // (the rmsnorm rewrites q, which the attention reads: any thread may run either)
  list.rmsnorm(q, q, q, 1, hd, 1e-5, 0); // a second op so the patched one is not the last
  const threads = await WorkerPool.create(rt, { threads: 2 });
  try {
    for (let n = 1; n <= nMax; n++) {
      const qBefore = rt.f32(q, hd).slice();
      list.setArg(at, 5, n); // nSlots
      list.setArg(at, 8, 0.25 + n / 100, true); // scale (an f32 argument)
      threads.run(list);
      const q2 = rt.putF32(qBefore);
      rt.attention({ ...args, q: q2, out: expected, probs: expectedProbs, nSlots: n, scale: Math.fround(0.25 + n / 100) });
      assertSameBits([rt.f32(out, hd).slice(), rt.f32(probs, n).slice()], [rt.f32(expected, hd).slice(), rt.f32(expectedProbs, n).slice()], `n=${n}`);
    }
  } finally {
    await threads.close();
  }
  assert.throws(() => list.setArg(3, 0, 1), RangeError);
});
