/**
 * Sampling semantics pinned (#17): seeded runs draw the same tokens as the sampler before the SIMD near path, and the
 * same tokens as a plain reference sampler (full sort, Math.exp) — on the whole-vocabulary JS path and on the near
 * path of the sampling kernel, which must really run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mulberry32, Xoshiro128StarStar } from '../src/generate/rng.js';
import { Sampler, argmax, type SamplingOptions } from '../src/generate/sampler.js';
import { prepareSamplingKernel, samplingKernel } from '../src/backend/wasm/sampling.js';

const V = 32000;

/** Roughly Gaussian logits (sum of four uniforms), spread as given: 12 and 20 are peaked like a model's, 3 is flat. */
function logits(seed: number, spread: number): Float32Array {
  const r = mulberry32(seed);
  const x = new Float32Array(V);
  for (let i = 0; i < V; i++) x[i] = (r() + r() + r() + r() - 2) * spread;
  return x;
}
const SETS = [logits(11, 12), logits(12, 20), logits(13, 3)];
const RECENT = Array.from({ length: 40 }, (_, i) => (i * 797) % V);
const CONFIGS: SamplingOptions[] = [
  { temperature: 1 }, { temperature: 0.8, topP: 0.9 }, { temperature: 1.5, topP: 0.95 }, { temperature: 0.7, minP: 0.05 },
  { temperature: 1, topP: 0.5, minP: 0.1 }, { temperature: 0.8, topK: 40 }, { temperature: 0.9, topK: 100, topP: 0.9 },
  { temperature: 1, repetitionPenalty: 1.3 },
];

/**
 * What the sampler drew before #17 (commit fe21691's sampler.ts), per config: seeds 1, 2, 3, each sampler drawing 10
 * tokens from each of SETS in turn, with RECENT as the recent tokens.
 */
const BEFORE: number[][] = [
  [10641,3970,5724,30563,21516,11004,30111,10641,8648,7531,6969,8830,6969,8830,10700,6316,27881,23643,8830,8830,4244,11857,29467,19641,12881,8399,27374,25043,13724,29949,8648,3739,30563,20585,3739,1888,14596,3037,30563,25437,17834,27180,27180,14140,6969,10584,27180,8830,6969,7528,17831,18800,25917,23054,4390,12544,3975,24830,1192,302,12955,21516,21516,30563,30429,25437,8981,11004,27201,27855,8563,28954,16908,20617,28954,8830,7903,27180,6969,20617,26515,18502,14638,29301,28646,9499,18858,3178,25275,17256],
  [11244,6262,7531,30563,21902,11645,30563,11004,8981,8705,6969,8830,6969,8830,8830,6969,27180,20617,8830,8830,4193,11606,29453,19458,12823,8151,27343,25101,13546,29949,8981,3739,30563,21516,3970,1888,20002,3603,30563,30203,8830,20617,27180,8830,6969,8830,27180,8830,6969,6969,17797,18688,25937,23009,4346,12457,3936,24901,1164,265,15034,25437,25437,30563,30563,30203,9362,12955,30429,30563,8830,28954,8830,8830,28954,8830,8563,20617,6969,8830,26540,18400,14516,29290,28640,9295,18700,3012,25283,17113],
  [10641,3970,5293,29159,21032,10970,26859,10589,7716,7526,6969,16908,6969,8830,18255,6316,28042,27180,9890,16301,4300,12020,29485,19798,12941,8542,27383,24961,13861,29969,7716,3739,30468,18228,3861,1888,14259,3037,30203,24074,21213,27180,28042,19928,6969,18255,27180,9890,6969,8563,17888,18925,25899,23072,4423,12646,4017,24773,1215,343,12955,21320,21443,30563,28373,23978,8981,11244,25360,25437,8830,28954,20617,22503,28954,8830,8563,27180,6969,21915,26509,18606,14756,29316,28666,9653,18994,3301,25199,17336],
  [12955,6262,7531,30563,30203,12955,30563,12955,8981,8981,6969,8830,6969,8830,8830,6969,27180,8830,8830,8830,4044,11006,29278,19256,12175,7896,27285,25146,13222,29755,8981,3739,30563,25437,6262,1888,21516,3715,30563,30563,8830,8830,20617,8830,6969,8830,8830,8830,6969,6969,17394,18310,25899,22412,4193,11533,3691,24995,1143,237,21516,30203,30429,30563,30563,30563,10178,21032,30563,30563,8830,27180,8830,8830,27180,8830,6969,8830,6969,8830,26509,18157,14261,29055,28598,9046,18321,2867,25283,16488],
  [11004,3715,7531,30563,27855,12955,30563,11004,8981,8981,6969,8830,6969,8830,8830,6969,6316,6316,8830,8830,4106,11489,29536,19347,12740,8098,27416,25278,13378,29922,8981,3715,30563,21516,3715,1888,21516,1888,30563,30563,8830,6316,6316,8830,8830,8830,6316,8830,6969,8830,17693,18502,26026,23125,4241,12393,3730,25141,1131,239,21516,30203,30203,30563,30563,30563,9111,12955,30563,30563,8830,6316,8830,8830,6316,8830,8830,6316,6969,8830,26645,18296,14377,29357,28669,9189,18522,2867,25431,16737],
  [21516,21902,10178,12955,30203,21516,20147,21516,7531,944,6316,8830,6316,8830,8830,28954,6969,6969,8830,8830,6405,15244,6202,9046,18700,15258,28030,23125,9803,6202,7531,30429,1888,30563,14259,8215,30563,3036,12955,11004,8830,6969,6969,8830,6316,8830,6969,8830,6316,16908,1740,9046,10256,19256,13874,18700,6405,23125,23404,17816,30563,30203,30203,1888,18228,25437,27855,21516,8981,8981,20617,6969,8830,8830,6969,8830,16908,6969,6316,8830,10256,1740,6474,6202,25283,2880,9046,56,8750,4992],
  [12955,30563,30563,15034,9552,7531,11244,12955,21516,21516,8830,6316,8830,6969,6316,8830,8563,20617,6969,6969,19786,10843,30713,27223,11533,23125,7927,2867,6405,7559,21516,30563,12305,27855,30563,30563,30203,30563,11600,21032,27180,28954,8563,6316,8830,6316,28954,6969,8830,8830,18995,14135,18280,19261,19786,11533,19430,25715,19256,9046,10178,29450,29450,11645,18228,21032,8981,7531,20147,10641,8830,21915,6316,27180,21915,6969,8830,28954,8830,27180,435,16737,56,12856,18157,1299,14135,12954,10705,10604],
  [10641,3970,5724,30563,21516,11004,30111,10641,8648,7531,6969,8830,6969,8830,10700,6316,27881,23643,8830,8830,4242,11857,29477,19654,12865,8387,27381,25043,13714,29950,8648,3739,30563,20585,3739,1888,14596,3037,30563,25437,17834,27180,27180,14140,6969,10584,27180,8830,6969,7528,17831,18810,25923,23062,4387,12536,3971,24831,1189,302,12955,21516,21516,30563,30429,25437,8981,11004,27201,27855,8563,28954,16908,20617,28954,8830,7903,27180,6969,20617,26523,18502,14631,29301,28646,9495,18872,3165,25275,17262]
];

function draws(c: SamplingOptions): number[] {
  const out: number[] = [];
  for (let seed = 1; seed <= 3; seed++) {
    const s = new Sampler({ ...c, seed }, V);
    for (const x of SETS) for (let d = 0; d < 10; d++) out.push(s.sample(x, RECENT));
  }
  return out;
}

/**
 * The plain reference: the whole vocabulary sorted by logit (ties → lower id), Math.exp weights, the filters in the
 * sampler's documented order, then one uniform per draw walked over the kept tokens in the sampler's draw order — id
 * order, except after top-p: the tokens more than one 1/64-nat histogram bucket above the nucleus' last bucket in id
 * order, then that bucket's kept tokens in rank order. (No top-k: its draw order is its heap's; BEFORE pins it.)
 */
function referenceDraws(c: SamplingOptions): number[] {
  const T = c.temperature ?? 1;
  const topP = c.topP ?? 1;
  const minP = c.minP ?? 0;
  const out: number[] = [];
  for (let seed = 1; seed <= 3; seed++) {
    const rng = new Xoshiro128StarStar(seed);
    for (const x of SETS) {
      let m = -Infinity;
      for (const v of x) m = Math.max(m, v);
      const w = Array.from(x, (v) => Math.exp((v - m) / T));
      const order = Array.from(x.keys()).sort((a, b) => x[b] - x[a] || a - b);
      let kept = order; // the nucleus, in rank order
      if (topP < 1) {
        const z = w.reduce((a, b) => a + b, 0);
        let before = 0;
        let n = 0;
        while (n < order.length && before < topP * z) before += w[order[n++]];
        kept = order.slice(0, n);
      }
      let walk: number[];
      if (topP < 1) {
        const bucket = (i: number) => Math.floor((m - x[i]) * (64 / T));
        const edge = bucket(kept[kept.length - 1]);
        walk = [...kept.filter((i) => bucket(i) < edge).sort((a, b) => a - b), ...kept.filter((i) => bucket(i) === edge)];
      } else {
        walk = kept.slice().sort((a, b) => a - b);
      }
      if (minP > 0) walk = walk.filter((i) => w[i] >= minP);
      const total = walk.reduce((a, i) => a + w[i], 0);
      for (let d = 0; d < 10; d++) {
        const target = rng.nextFloat() * total;
        let acc = 0;
        let id = walk[walk.length - 1];
        for (const i of walk) {
          acc += w[i];
          if (target < acc) {
            id = i;
            break;
          }
        }
        out.push(id);
      }
    }
  }
  return out;
}

const PLAIN = CONFIGS.filter((c) => c.topK === undefined && c.repetitionPenalty === undefined);

test('whole-vocabulary path: seeded draws equal those before #17 and the plain reference', () => {
  assert.equal(samplingKernel(), undefined, 'this test must run before the sampling kernel is prepared');
  CONFIGS.forEach((c, k) => assert.deepEqual(draws(c), BEFORE[k], `before #17: ${JSON.stringify(c)}`));
  for (const c of PLAIN) assert.deepEqual(draws(c), referenceDraws(c), `reference: ${JSON.stringify(c)}`);
});

test('near path (sampling kernel): the same draws, and it really runs', async () => {
  const kern = await prepareSamplingKernel();
  assert.ok(kern, 'the sampling kernel loads (npm run build)');
  CONFIGS.forEach((c, k) => assert.deepEqual(draws(c), BEFORE[k], `before #17: ${JSON.stringify(c)}`));
  for (const c of PLAIN) assert.deepEqual(draws(c), referenceDraws(c), `reference: ${JSON.stringify(c)}`);
  // The kernel really split: every draw from the peaked sets without top-k (the flat set may bail out to JS).
  for (const c of CONFIGS.filter((o) => o.topK === undefined && (o.temperature ?? 1) <= 1)) {
    const s = new Sampler({ ...c, seed: 5 }, V);
    const before: number = kern.splits;
    for (let d = 0; d < 10; d++) s.sample(SETS[d % 2], RECENT);
    assert.equal(kern.splits - before, 10, `near path for ${JSON.stringify(c)}`);
  }
});

test('near path: NaN and infinite logits are still reported, not sampled', async () => {
  await prepareSamplingKernel();
  const s = new Sampler({ temperature: 0.8, topP: 0.9, seed: 1 }, V);
  for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
    const x = SETS[0].slice();
    x[777] = bad;
    assert.throws(() => s.sample(x), { code: 'NON_FINITE_LOGITS' });
  }
  assert.throws(() => s.sample(new Float32Array(V).fill(Number.NEGATIVE_INFINITY)), { code: 'NON_FINITE_LOGITS' });
});

test('greedy through the kernel: exactly argmax (ties → the lower id), NaN and all −∞ still rejected', async () => {
  const kern = await prepareSamplingKernel();
  assert.ok(kern);
  const s = new Sampler({ temperature: 0 }, V);
  for (const x of SETS) assert.equal(s.sample(x), argmax(x));
  const tie = SETS[1].slice();
  const top = argmax(tie);
  tie[V - 3] = tie[top];
  tie[5] = tie[top];
  assert.equal(s.sample(tie), 5);
  const odd = new Sampler({ temperature: 0 }, 1001);
  const x = SETS[0].subarray(0, 1001);
  assert.equal(odd.sample(x), argmax(x));
  const nan = SETS[0].slice();
  nan[9] = Number.NaN;
  assert.throws(() => s.sample(nan), { code: 'NON_FINITE_LOGITS' });
  assert.throws(() => s.sample(new Float32Array(V).fill(Number.NEGATIVE_INFINITY)), { code: 'NON_FINITE_LOGITS' });
});
