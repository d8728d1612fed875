/**
 * End-to-end decode/prefill timing of the wasm backend through Backend.forward, the way `fastgen bench` drives it
 * (greedy decode, one token per forward), but with best-of-N per configuration so a shared machine's noise shows
 * as spread rather than as a lower mean.
 *   npm run build && node dist/bench/decode.js [--dtype=f32,q8_0] [--cache=full,fastgen] [--n=128] [--reps=5]
 *     [--depth=1] [--pp=128] [--threads=2]
 * Prints tok/s best and median for each configuration (decode: n tokens after a `depth`-token context).
 */
import { loadModel } from '../src/generate/model.js';
import { argmax } from '../src/generate/sampler.js';
import type { CacheOptions } from '../src/cache/policies/index.js';

const arg = (name: string, def: string): string => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? def;
const dtypes = arg('dtype', 'f32,q8_0').split(',');
const caches = arg('cache', 'full').split(',') as CacheOptions['policy'][];
const N = Number(arg('n', '128'));
const reps = Number(arg('reps', '5'));
const depth = Number(arg('depth', '1'));
const pp = Number(arg('pp', '0'));
const threads = Number(arg('threads', '2'));

function tokens(n: number, seed: number): number[] {
  const out: number[] = [1];
  let s = seed;
  while (out.length < n) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(3 + (s % 31000));
  }
  return out;
}

const stat = (xs: number[]) => {
  const s = [...xs].sort((a, b) => b - a);
  return `best ${s[0].toFixed(1).padStart(7)}  median ${s[s.length >> 1].toFixed(1).padStart(7)}`;
};

for (const dtype of dtypes) {
  const model = await loadModel(undefined, { backend: 'wasm', dtype: dtype as never, threads });
  for (const policy of caches) {
    const cache: CacheOptions = { policy, recovery: 0.95 };
    const tg: number[] = [];
    const ppr: number[] = [];
    for (let r = 0; r <= reps; r++) {
      if (pp > 0) {
        const kv = model.newSequence(cache);
        const t0 = performance.now();
        await model.backend.forward([{ kv, tokens: tokens(pp, r + 1), logits: 'last' }]);
        if (r > 0) ppr.push((pp * 1000) / (performance.now() - t0));
        kv.release();
      }
      const kv = model.newSequence(cache);
      let next = argmax((await model.backend.forward([{ kv, tokens: tokens(depth, r + 7), logits: 'last' }]))[0]);
      const t0 = performance.now();
      for (let i = 0; i < N; i++) next = argmax((await model.backend.forward([{ kv, tokens: [next], logits: 'last' }]))[0]);
      if (r > 0) tg.push((N * 1000) / (performance.now() - t0));
      kv.release();
    }
    if (pp > 0) console.log(`${dtype.padEnd(5)} ${policy!.padEnd(8)} pp${pp}: ${stat(ppr)}`);
    console.log(`${dtype.padEnd(5)} ${policy!.padEnd(8)} tg${N}@d${depth}: ${stat(tg)}`);
  }
  model.dispose();
}
