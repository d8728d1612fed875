import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidOptionError, FastgenError } from '../src/errors.js';
import { Xoshiro128StarStar, mulberry32, splitmix64, randomSeed } from '../src/generate/rng.js';
import { Sampler, argmax, validateSamplingOptions, type SamplingOptions } from '../src/generate/sampler.js';

// ---- helpers ------------------------------------------------------------------------------------------------------

// Test data comes from mulberry32, a different generator from the xoshiro128** under test.
const testRandom = mulberry32;

function randomLogits(n: number, seed: number, spread = 8): Float32Array {
  const r = testRandom(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    // roughly Gaussian, like real logits
    const g = r() + r() + r() + r() - 2;
    x[i] = g * spread;
  }
  return x;
}

function logitsFromProbs(p: number[]): Float32Array {
  return Float32Array.from(p, (v) => Math.log(v));
}

function softmax(x: ArrayLike<number>, T = 1): number[] {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) m = Math.max(m, x[i]);
  const e = Array.from({ length: x.length }, (_, i) => Math.exp((x[i] - m) / T));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function counts(s: Sampler, logits: Float32Array, draws: number, recent?: number[]): number[] {
  const c = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < draws; i++) c[s.sample(logits, recent)]++;
  return c;
}

/** Pearson χ² of observed counts against expected probabilities (cells with p = 0 must have no hits). */
function chiSquare(observed: number[], expected: number[]): { chi2: number; df: number } {
  const n = observed.reduce((a, b) => a + b, 0);
  let chi2 = 0;
  let df = -1;
  for (let i = 0; i < observed.length; i++) {
    if (expected[i] === 0) {
      assert.equal(observed[i], 0, `token ${i} has probability 0 but was drawn ${observed[i]} times`);
      continue;
    }
    const e = n * expected[i];
    chi2 += (observed[i] - e) ** 2 / e;
    df++;
  }
  return { chi2, df };
}

/** χ² critical values at p = 0.001 (the draws are seeded, so the test is deterministic; this bounds the error). */
const CHI2_001: Record<number, number> = { 1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32, 9: 27.88 };

function assertMatches(observed: number[], expected: number[]): void {
  const { chi2, df } = chiSquare(observed, expected);
  const crit = CHI2_001[df];
  assert.ok(crit !== undefined, `no critical value for df=${df}`);
  assert.ok(chi2 < crit, `χ²=${chi2.toFixed(2)} ≥ ${crit} (df=${df}); observed ${observed} vs expected ${expected.map((p) => p.toFixed(4))}`);
}

const orderCache = new WeakMap<Float32Array, number[]>();
/** Ids by logit descending, ties → lower id (cached per array; the tests never mutate logits). */
function sortedOrder(x: Float32Array): number[] {
  let o = orderCache.get(x);
  if (o === undefined) {
    o = Array.from(x.keys()).sort((a, b) => x[b] - x[a] || a - b);
    orderCache.set(x, o);
  }
  return o.slice();
}

/** Straightforward reference pipeline: full sort, HF semantics. Returns id → probability. */
function referenceDistribution(logits: Float32Array, o: SamplingOptions, recent: number[] = []): Map<number, number> {
  const opts = validateSamplingOptions(o);
  const x = Array.from(logits);
  const win = opts.repetitionWindow === Infinity ? recent : recent.slice(Math.max(0, recent.length - opts.repetitionWindow));
  if (opts.repetitionWindow > 0) {
    for (const id of new Set(win)) x[id] = Math.fround(x[id] < 0 ? x[id] * opts.repetitionPenalty : x[id] / opts.repetitionPenalty);
  }
  if (opts.temperature === 0 || opts.topK === 1) {
    let best = 0;
    for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
    return new Map([[best, 1]]);
  }
  let order = recent.length === 0 ? sortedOrder(logits) : x.map((_, i) => i).sort((a, b) => x[b] - x[a] || a - b);
  if (opts.topK > 0) order = order.slice(0, opts.topK);
  const p = softmax(order.map((i) => x[i]), opts.temperature);
  let keep = order.length;
  if (opts.topP < 1) {
    let before = 0;
    keep = 0;
    while (keep < order.length && before < opts.topP) before += p[keep++];
  }
  const pmax = p[0];
  const kept: Array<[number, number]> = [];
  for (let j = 0; j < keep; j++) if (p[j] >= opts.minP * pmax && p[j] > 0) kept.push([order[j], p[j]]);
  const s = kept.reduce((a, [, v]) => a + v, 0);
  return new Map(kept.map(([id, v]) => [id, v / s]));
}

function assertSameDistribution(s: Sampler, logits: Float32Array, o: SamplingOptions, recent?: number[], what = ''): void {
  const got = s.distribution(logits, recent);
  const want = referenceDistribution(logits, o, recent);
  assert.equal(got.ids.length, want.size, `${what}: kept ${got.ids.length} tokens, reference keeps ${want.size}`);
  for (let j = 0; j < got.ids.length; j++) {
    const p = want.get(got.ids[j]);
    assert.ok(p !== undefined, `${what}: token ${got.ids[j]} kept but not in the reference`);
    assert.ok(Math.abs(p - got.probs[j]) <= 1e-9 + 1e-6 * p, `${what}: token ${got.ids[j]} p=${got.probs[j]} vs ${p}`);
  }
}

// ---- RNG --------------------------------------------------------------------------------------------------------

describe('rng', () => {
  test('splitmix64 matches the reference implementation', () => {
    let s = 1234567n;
    const out: bigint[] = [];
    for (let i = 0; i < 5; i++) {
      let o: bigint;
      [s, o] = splitmix64(s);
      out.push(o);
    }
    assert.deepEqual(out, [6457827717110365317n, 3203168211198807973n, 9817491932198370423n, 4593380528125082431n, 16408922859458223821n]);
  });

  test('xoshiro128** matches the reference implementation', () => {
    const r = new Xoshiro128StarStar(0);
    r.setState([1, 2, 3, 4]);
    const got = Array.from({ length: 8 }, () => r.nextUint32());
    assert.deepEqual(got, [11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849]);
  });

  test('seeding via splitmix64 is fixed (cross-platform vectors from the C reference)', () => {
    const vectors: Array<[number, number[]]> = [
      [0, [3737715805, 2584255861, 2876756834, 3286328325, 1553311962, 1625202774]],
      [42, [1776835114, 4165204688, 17111135, 2317295270, 2792088233, 2554630222]],
      [-1, [477689756, 2493998634, 555695776, 607808419, 61340979, 301466976]],
    ];
    for (const [seed, want] of vectors) {
      const r = new Xoshiro128StarStar(seed);
      assert.deepEqual(Array.from({ length: want.length }, () => r.nextUint32()), want, `seed ${seed}`);
    }
  });

  test('nextFloat is uniform in [0, 1) with 53 bits', () => {
    const r = new Xoshiro128StarStar(7);
    const bins = new Array<number>(10).fill(0);
    let fractional = false;
    const N = 100_000;
    for (let i = 0; i < N; i++) {
      const u = r.nextFloat();
      assert.ok(u >= 0 && u < 1);
      if ((u * 2 ** 32) % 1 !== 0) fractional = true; // more than 32 bits of resolution
      bins[Math.floor(u * 10)]++;
    }
    assert.ok(fractional);
    assertMatches(bins, new Array<number>(10).fill(0.1));
  });

  test('state snapshot / clone reproduce the sequence', () => {
    const a = new Xoshiro128StarStar(99);
    a.nextUint32();
    const b = a.clone();
    const st = a.getState();
    const seqA = [a.nextUint32(), a.nextUint32()];
    assert.deepEqual([b.nextUint32(), b.nextUint32()], seqA);
    a.setState(st);
    assert.deepEqual([a.nextUint32(), a.nextUint32()], seqA);
  });

  test('bad seeds throw InvalidOptionError; randomSeed is a safe integer', () => {
    for (const bad of [1.5, NaN, Infinity, 2 ** 53]) assert.throws(() => new Xoshiro128StarStar(bad), InvalidOptionError);
    const s = randomSeed();
    assert.ok(Number.isSafeInteger(s) && s >= 0);
    assert.notEqual(randomSeed(), randomSeed());
  });
});

// ---- argmax / greedy --------------------------------------------------------------------------------------------

describe('argmax and greedy', () => {
  test('argmax: first index of the max, NaN wins like torch', () => {
    assert.equal(argmax(Float32Array.of(1, 3, 2)), 1);
    assert.equal(argmax(Float32Array.of(3, 1, 3)), 0);
    assert.equal(argmax(Float32Array.of(-Infinity, -Infinity)), 0);
    assert.equal(argmax(Float32Array.of(-5, -Infinity, -4)), 2);
    assert.equal(argmax(Float32Array.of(1, NaN, 5, NaN)), 1);
    assert.equal(argmax(Float32Array.of(NaN, 1)), 0);
    assert.equal(argmax(Float32Array.of(Infinity, 1, -Infinity, 2, Infinity)), 0);
  });

  test('argmax: the fast four-lane path agrees with a plain scan (odd lengths, ties, NaN, ±∞)', () => {
    const plain = (x: Float32Array) => {
      let best = 0;
      for (let i = 0; i < x.length; i++) {
        if (x[i] !== x[i]) return i;
        if (x[i] > x[best]) best = i;
      }
      return best;
    };
    let s = 12345;
    const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    for (let trial = 0; trial < 2000; trial++) {
      const n = 1 + Math.floor(rand() * 37);
      const x = Float32Array.from({ length: n }, () => Math.floor(rand() * 7) - 3); // many ties
      const special = rand();
      if (special < 0.1) x[Math.floor(rand() * n)] = NaN;
      else if (special < 0.2) x[Math.floor(rand() * n)] = Infinity;
      else if (special < 0.3) x.fill(-Infinity);
      assert.equal(argmax(x), plain(x), `[${Array.from(x)}]`);
    }
    assert.throws(() => argmax(new Float32Array(0)), RangeError);
  });

  test('temperature 0 and topK 1 are exactly argmax', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const x = randomLogits(32000, seed);
      const before = x.slice();
      assert.equal(new Sampler({ temperature: 0 }, 32000).sample(x), argmax(x));
      assert.equal(new Sampler({ topK: 1, temperature: 1.3 }, 32000).sample(x), argmax(x));
      assert.deepEqual(x, before, 'logits must not be modified');
    }
    const tied = Float32Array.of(0, 5, 1, 5);
    assert.equal(new Sampler({ temperature: 0 }, 4).sample(tied), 1);
  });

  test('a vanishing temperature behaves as greedy', () => {
    const x = randomLogits(100, 3);
    for (const temperature of [1e-320, 1e-308]) assert.equal(new Sampler({ temperature, seed: 1 }, 100).sample(x), argmax(x));
    const s = new Sampler({ temperature: 1e-6, seed: 1 }, 100);
    for (let i = 0; i < 20; i++) assert.equal(s.sample(x), argmax(x));
  });
});

// ---- determinism ------------------------------------------------------------------------------------------------

describe('seeding', () => {
  const V = 32000;
  const x = randomLogits(V, 11, 3);
  const seqOf = (o: SamplingOptions, n = 100): number[] => {
    const s = new Sampler(o, V);
    return Array.from({ length: n }, () => s.sample(x));
  };

  test('same seed → same outputs, for every pipeline', () => {
    for (const o of [{}, { topK: 50 }, { topP: 0.9 }, { minP: 0.05 }, { topK: 100, topP: 0.95, minP: 0.01, temperature: 0.7 }]) {
      assert.deepEqual(seqOf({ ...o, seed: 1234 }), seqOf({ ...o, seed: 1234 }), JSON.stringify(o));
    }
  });

  test('different seeds → different outputs', () => {
    assert.notDeepEqual(seqOf({ seed: 1 }), seqOf({ seed: 2 }));
    assert.notDeepEqual(seqOf({ seed: 0 }), seqOf({ seed: -1 }));
  });

  test('no seed → a random one, reported on the sampler', () => {
    const a = new Sampler({}, V);
    const b = new Sampler({}, V);
    assert.ok(Number.isSafeInteger(a.seed));
    assert.equal(a.options.seed, a.seed);
    assert.notEqual(a.seed, b.seed);
    // replaying the reported seed reproduces the run
    const c = new Sampler({ seed: a.seed }, V);
    for (let i = 0; i < 50; i++) assert.equal(a.sample(x), c.sample(x));
  });
});

// ---- distribution -----------------------------------------------------------------------------------------------

describe('sampling distribution', () => {
  const probs = [0.35, 0.25, 0.15, 0.12, 0.08, 0.05];
  const x = logitsFromProbs(probs);

  for (const T of [1, 0.7, 1.8]) {
    test(`empirical frequencies match softmax(logits / ${T}) (χ²)`, () => {
      const s = new Sampler({ temperature: T, seed: 100 + T * 10 }, x.length);
      assertMatches(counts(s, x, 60_000), softmax(x, T));
    });
  }

  test('probabilities equal softmax(logits / T) to 1e-12', () => {
    const x = randomLogits(1000, 17, 6);
    for (const temperature of [0.25, 1, 3]) {
      const d = new Sampler({ temperature }, 1000).distribution(x);
      const want = softmax(x, temperature);
      let seen = 0;
      d.ids.forEach((id, j) => {
        assert.ok(Math.abs(d.probs[j] - want[id]) <= 1e-12 * want[id] + 1e-300, `T=${temperature} token ${id}`);
        seen++;
      });
      assert.equal(seen, want.filter((p) => p > 0).length);
    }
  });

  test('top-k frequencies match the renormalised top k', () => {
    const s = new Sampler({ topK: 3, temperature: 1.2, seed: 5 }, x.length);
    const p = softmax(Array.from(x).slice(0, 3), 1.2);
    assertMatches(counts(s, x, 40_000), [...p, 0, 0, 0]);
  });

  test('−Infinity logits are never drawn', () => {
    const m = Float32Array.of(0, -Infinity, 1, -Infinity, 0.5);
    const s = new Sampler({ seed: 3 }, 5);
    const c = counts(s, m, 20_000);
    assertMatches(c, softmax(m));
  });

  test('recentTokens may be a typed array', () => {
    const x = Float32Array.of(2.0, 1.9);
    assert.equal(new Sampler({ temperature: 0, repetitionPenalty: 1.5 }, 2).sample(x, Int32Array.of(0)), 1);
  });

  test('bad logits and token ids are rejected', () => {
    const s = new Sampler({ seed: 1, repetitionPenalty: 1.2 }, 4);
    assert.throws(() => s.sample(new Float32Array(3)), RangeError);
    assert.throws(() => s.sample(Float32Array.of(0, NaN, 0, 0)), /NaN/);
    assert.throws(() => s.sample(Float32Array.of(0, Infinity, 0, 0)), /Infinity/);
    assert.throws(() => s.sample(new Float32Array(4).fill(-Infinity)), (e: unknown) => e instanceof FastgenError && e.code === 'NON_FINITE_LOGITS');
    assert.throws(() => s.sample(new Float32Array(4), [4]), /recentTokens/);
    assert.throws(() => s.sample(new Float32Array(4), [-1]), /recentTokens/);
    assert.throws(() => s.sample(new Float32Array(4), [1.5]), /recentTokens/);
  });

  test('non-finite logits are a NON_FINITE_LOGITS error when sampling and when greedy, never a token', () => {
    const isNonFinite = (e: unknown) => e instanceof FastgenError && e.code === 'NON_FINITE_LOGITS';
    for (const opts of [{ seed: 1 }, { temperature: 0 }, { topK: 1 }, { seed: 1, topK: 2, topP: 0.5 }]) {
      const s = new Sampler(opts, 4);
      assert.throws(() => s.sample(Float32Array.of(0, NaN, 0, 0)), isNonFinite, JSON.stringify(opts));
      assert.throws(() => s.sample(Float32Array.of(0, Infinity, 0, 0)), isNonFinite, JSON.stringify(opts));
      assert.throws(() => s.sample(new Float32Array(4).fill(-Infinity)), isNonFinite, JSON.stringify(opts));
    }
  });
});

// ---- top-k ------------------------------------------------------------------------------------------------------

describe('top-k', () => {
  test('never returns a token outside the k best', () => {
    const V = 32000;
    for (const k of [2, 5, 40, 1000]) {
      const x = randomLogits(V, k, 2); // flat-ish, so the tail would be drawn often without top-k
      const best = new Set(sortedOrder(x).slice(0, k));
      const s = new Sampler({ topK: k, temperature: 1.5, seed: k }, V);
      const seen = new Set<number>();
      for (let i = 0; i < 1000; i++) {
        const t = s.sample(x);
        assert.ok(best.has(t), `k=${k}: token ${t} is not among the ${k} best`);
        seen.add(t);
      }
      assert.ok(seen.size >= Math.min(k, 30) * 0.5, `k=${k}: only ${seen.size} distinct tokens drawn`);
    }
  });

  test('ties at the k-th place go to the lower ids, exactly k kept', () => {
    const x = Float32Array.of(1, 3, 2, 2, 2, 0);
    const s = new Sampler({ topK: 3, seed: 1 }, 6);
    const d = s.distribution(x);
    assert.deepEqual(Array.from(d.ids), [1, 2, 3]);
  });

  test('adversarial order (ascending logits) still selects correctly', () => {
    const V = 5000;
    const x = Float32Array.from({ length: V }, (_, i) => i / 100);
    const s = new Sampler({ topK: 7, seed: 1 }, V);
    assert.deepEqual(Array.from(s.distribution(x).ids), [4999, 4998, 4997, 4996, 4995, 4994, 4993]);
  });

  test('large k (histogram selection) with ties at the boundary equals the reference', () => {
    const V = 32000;
    const r = testRandom(8);
    const q = Float32Array.from({ length: V }, () => Math.round(r() * 40) / 8); // ~800 tokens per value
    for (const k of [65, 100, 1000, 31999]) {
      const o = { topK: k, seed: k };
      assertSameDistribution(new Sampler(o, V), q, o, undefined, `ties k=${k}`);
    }
  });

  test('topK ≥ vocab size is off', () => {
    const x = randomLogits(10, 1);
    assertSameDistribution(new Sampler({ topK: 10, seed: 1 }, 10), x, {}, undefined, 'k=V');
    assertSameDistribution(new Sampler({ topK: 50, seed: 1 }, 10), x, {}, undefined, 'k>V');
  });
});

// ---- top-p ------------------------------------------------------------------------------------------------------

describe('top-p', () => {
  // probabilities 0.5, 0.25, 0.15, 0.07, 0.03, placed at scrambled ids
  const ids = [3, 0, 4, 1, 2];
  const p = [0.5, 0.25, 0.15, 0.07, 0.03];
  const x = new Float32Array(5);
  ids.forEach((id, j) => (x[id] = Math.log(p[j])));

  test('hand-computed nucleus', () => {
    // mass before each token (by rank): 0, .5, .75, .90, .97 — kept iff before < topP
    const cases: Array<[number, number[]]> = [
      [0.3, [3]],
      [0.6, [3, 0]],
      [0.8, [3, 0, 4]],
      [0.92, [3, 0, 4, 1]],
      [0.99, [3, 0, 4, 1, 2]],
    ];
    for (const [topP, want] of cases) {
      const s = new Sampler({ topP, seed: 9 }, 5);
      const d = s.distribution(x);
      assert.deepEqual(Array.from(d.ids), want, `topP=${topP}`);
      const mass = want.reduce((a, _, j) => a + p[j], 0);
      want.forEach((_, j) => assert.ok(Math.abs(d.probs[j] - p[j] / mass) < 1e-6, `topP=${topP} prob ${j}`));
    }
  });

  test('exact boundary: a token whose preceding mass equals topP is dropped', () => {
    // four equal logits: mass before each is 0, .25, .5, .75 (exact); HF keeps cum_asc > 1 − topP → 2 tokens
    assert.deepEqual(Array.from(new Sampler({ topP: 0.5 }, 4).distribution(new Float32Array(4)).ids), [0, 1]);
    assert.deepEqual(Array.from(new Sampler({ topP: 0.75 }, 4).distribution(new Float32Array(4)).ids), [0, 1, 2]);
  });

  test('draws exclude the tail and match the renormalised nucleus', () => {
    const s = new Sampler({ topP: 0.8, seed: 77 }, 5);
    const c = counts(s, x, 30_000);
    const expected = new Array<number>(5).fill(0);
    expected[3] = 0.5 / 0.9;
    expected[0] = 0.25 / 0.9;
    expected[4] = 0.15 / 0.9;
    assertMatches(c, expected);
  });

  test('large vocabulary (histogram path) equals a full-sort reference', () => {
    const V = 32000;
    let seed = 0;
    for (const spread of [0.3, 3, 10]) {
      for (const temperature of [0.5, 1, 2]) {
        const x = randomLogits(V, ++seed, spread);
        for (const topP of spread === 10 && temperature === 1 ? [0.1, 0.9, 0.999999] : [0.3, 0.9]) {
          const o = { topP, temperature, seed };
          assertSameDistribution(new Sampler(o, V), x, o, undefined, JSON.stringify({ spread, ...o }));
        }
      }
    }
  });

  test('heavy ties and identical logits', () => {
    const V = 20000;
    const r = testRandom(5);
    const q = Float32Array.from({ length: V }, () => Math.round(r() * 8) / 4); // 9 distinct values
    for (const topP of [0.05, 0.3, 0.77]) assertSameDistribution(new Sampler({ topP }, V), q, { topP }, undefined, `ties topP=${topP}`);
    const flat = new Float32Array(V);
    const d = new Sampler({ topP: 0.5 }, V).distribution(flat);
    assert.equal(d.ids.length, V / 2);
    assert.deepEqual(Array.from(d.ids.subarray(0, 3)), [0, 1, 2]);
  });
});

test('vocabulary ≥ 2^21 (comparator-sort fallback) filters correctly', () => {
  // sparse: 3000 finite logits at high ids, the rest −Infinity (probability 0, so the reference can ignore them)
  const V = 2 ** 21 + 100;
  const r = testRandom(21);
  const x = new Float32Array(V).fill(-Infinity);
  const at = new Set<number>();
  while (at.size < 3000) at.add(V - 1 - Math.floor(r() * 200_000));
  const ids = [...at].sort((a, b) => a - b);
  const small = Float32Array.from(ids, () => Math.round(r() * 64) / 8); // with ties
  ids.forEach((id, j) => (x[id] = small[j]));
  for (const o of [{ topK: 500, topP: 0.9 }, { topP: 0.8 }, { topK: 40, minP: 0.1 }, { topK: 2000, temperature: 0.5 }] as SamplingOptions[]) {
    const got = new Sampler(o, V).distribution(x);
    const want = referenceDistribution(small, o);
    assert.equal(got.ids.length, want.size, JSON.stringify(o));
    for (let j = 0; j < got.ids.length; j++) {
      const p = want.get(ids.indexOf(got.ids[j]));
      assert.ok(p !== undefined && Math.abs(p - got.probs[j]) < 1e-9, `${JSON.stringify(o)}: token ${got.ids[j]}`);
    }
  }
});

// ---- min-p ------------------------------------------------------------------------------------------------------

describe('min-p', () => {
  const p = [0.5, 0.25, 0.15, 0.07, 0.03];
  const x = logitsFromProbs(p);

  test('hand-computed threshold: p < minP · p_max is dropped', () => {
    const cases: Array<[number, number[]]> = [
      [0.6, [0]], // threshold 0.3
      [0.2, [0, 1, 2]], // threshold 0.1
      [0.1, [0, 1, 2, 3]], // threshold 0.05
      [0.05, [0, 1, 2, 3, 4]], // threshold 0.025
    ];
    for (const [minP, want] of cases) {
      const d = new Sampler({ minP, seed: 1 }, 5).distribution(x);
      assert.deepEqual(Array.from(d.ids), want, `minP=${minP}`);
    }
  });

  test('min-p applies to the tempered distribution', () => {
    // T = 2 flattens: p ∝ sqrt(p) → ratios to max: 1, .707, .548, .374, .245
    const d = new Sampler({ minP: 0.3, temperature: 2, seed: 1 }, 5).distribution(x);
    assert.deepEqual(Array.from(d.ids), [0, 1, 2, 3]);
  });

  test('draws never go below the threshold', () => {
    const s = new Sampler({ minP: 0.2, seed: 4 }, 5);
    const c = counts(s, x, 30_000);
    assertMatches(c, [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0, 0]);
  });
});

// ---- combined pipeline ------------------------------------------------------------------------------------------

describe('combined pipeline', () => {
  test('penalty → temperature → top-k → top-p → min-p equals the reference', () => {
    const V = 32000;
    const r = testRandom(42);
    for (let t = 0; t < 24; t++) {
      const x = randomLogits(V, 1000 + t, 1 + 5 * r());
      const recent = Array.from({ length: 64 }, () => Math.floor(r() * V));
      const o: SamplingOptions = {
        temperature: 0.3 + 1.5 * r(),
        topK: [0, 20, 600, 5000][t % 4],
        topP: [1, 0.9, 0.5][t % 3],
        minP: [0, 0.05][t % 2],
        repetitionPenalty: [1, 1.3, 0.8][t % 3],
        repetitionWindow: [Infinity, 16][t % 2],
        seed: t,
      };
      assertSameDistribution(new Sampler(o, V), x, o, recent, JSON.stringify(o));
    }
  });
});

// ---- repetition penalty -----------------------------------------------------------------------------------------

describe('repetition penalty', () => {
  test('changes the argmax on a constructed example (positive logit divided)', () => {
    const x = Float32Array.of(2.0, 1.9, -1, 0.5);
    assert.equal(new Sampler({ temperature: 0 }, 4).sample(x, [0]), 0);
    assert.equal(new Sampler({ temperature: 0, repetitionPenalty: 1.5 }, 4).sample(x, [0]), 1); // 2/1.5 = 1.33 < 1.9
    assert.deepEqual(x, Float32Array.of(2.0, 1.9, -1, 0.5), 'logits must not be modified');
  });

  test('negative logits are multiplied', () => {
    const x = Float32Array.of(-0.5, -0.6);
    assert.equal(new Sampler({ temperature: 0, repetitionPenalty: 2 }, 2).sample(x, [0]), 1); // -1.0 < -0.6
    // penalty < 1 encourages: -0.6 · 0.5 = -0.3 > -0.5
    assert.equal(new Sampler({ temperature: 0, repetitionPenalty: 0.5 }, 2).sample(x, [1]), 1);
  });

  test('each distinct token is penalised once, however often it occurs', () => {
    const x = Float32Array.of(2.0, 1.0);
    // once: 1.33 > 1.0; three times would be 0.59
    assert.equal(new Sampler({ temperature: 0, repetitionPenalty: 1.5 }, 2).sample(x, [0, 0, 0]), 0);
  });

  test('only the last repetitionWindow tokens count', () => {
    const x = Float32Array.of(2.0, 1.9, -1, 0.5);
    assert.equal(new Sampler({ temperature: 0, repetitionPenalty: 1.5, repetitionWindow: 2 }, 4).sample(x, [0, 3, 3]), 0);
    assert.equal(new Sampler({ temperature: 0, repetitionPenalty: 1.5, repetitionWindow: 3 }, 4).sample(x, [0, 3, 3]), 1);
    assert.equal(new Sampler({ temperature: 0, repetitionPenalty: 1.5, repetitionWindow: 0 }, 4).sample(x, [0]), 0);
  });

  test('penalised probabilities in sampling mode', () => {
    const x = Float32Array.of(1, 1, 1);
    const d = new Sampler({ repetitionPenalty: 2, seed: 1 }, 3).distribution(x, [2]);
    const want = softmax([1, 1, 0.5]);
    assert.deepEqual(Array.from(d.ids), [0, 1, 2]);
    d.probs.forEach((pr, j) => assert.ok(Math.abs(pr - want[j]) < 1e-9));
  });
});

// ---- validation -------------------------------------------------------------------------------------------------

describe('option validation', () => {
  test('defaults', () => {
    assert.deepEqual(validateSamplingOptions({}), {
      temperature: 1,
      topK: 0,
      topP: 1,
      minP: 0,
      repetitionPenalty: 1,
      repetitionWindow: Infinity,
      seed: undefined,
    });
  });

  test('valid edge values are accepted', () => {
    for (const o of [
      { temperature: 0 },
      { topK: 0 },
      { topK: 1 },
      { topP: 1 },
      { topP: 1e-9 },
      { minP: 0 },
      { minP: 0.999 },
      { repetitionPenalty: 1e-3 },
      { repetitionWindow: 0 },
      { repetitionWindow: Infinity },
      { seed: 0 },
      { seed: -5 },
      { seed: Number.MAX_SAFE_INTEGER },
    ] as SamplingOptions[]) {
      assert.doesNotThrow(() => validateSamplingOptions(o), JSON.stringify(o));
    }
  });

  const invalid: Array<[keyof SamplingOptions, unknown[]]> = [
    ['temperature', [-0.1, NaN, Infinity, -Infinity, '1']],
    ['topK', [-1, 2.5, NaN, Infinity, '40']],
    ['topP', [0, -0.5, 1.01, NaN, Infinity, '0.9']],
    ['minP', [-0.01, 1, 1.5, NaN, true]],
    ['repetitionPenalty', [0, -1, NaN, Infinity, 1e-300, 1e-4, 1e4]],
    ['repetitionWindow', [-1, 1.5, NaN, -Infinity]],
    ['seed', [1.5, NaN, Infinity, 2 ** 53, -(2 ** 53), '42']],
  ];
  for (const [option, values] of invalid) {
    test(`invalid ${option} throws InvalidOptionError naming it`, () => {
      for (const v of values) {
        const o = { [option]: v } as SamplingOptions;
        for (const f of [() => validateSamplingOptions(o), () => new Sampler(o, 10)]) {
          assert.throws(
            f,
            (e: unknown) =>
              e instanceof InvalidOptionError &&
              e instanceof FastgenError &&
              e.code === 'INVALID_OPTION' &&
              e.where === option &&
              e.message.includes(option),
            `${option} = ${String(v)}`,
          );
        }
      }
    });
  }

  test('the message states the valid range', () => {
    assert.throws(() => validateSamplingOptions({ topP: 1.5 }), /topP must be in \(0, 1\].*got 1\.5/);
    assert.throws(() => validateSamplingOptions({ minP: 1 }), /minP must be in \[0, 1\)/);
    assert.throws(() => validateSamplingOptions({ temperature: -1 }), /temperature must be a finite number ≥ 0/);
  });

  test('bad vocabSize throws InvalidOptionError', () => {
    for (const v of [0, -1, 1.5, NaN]) assert.throws(() => new Sampler({}, v), InvalidOptionError);
  });
});
