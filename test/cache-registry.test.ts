/**
 * The policy registry as users meet it: every registered policy keeps the number of tokens per head its
 * documentation gives (ratio and budget forms), admission reserves exactly that; options are checked against the
 * policy that takes them; an f16 cache forks exactly; an exhausted pool is a typed error through Model.generate.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CACHE_POLICIES, CACHE_POLICY_NAMES, cachePolicy, resolveCacheOptions, type CacheOptions } from '../src/cache/policies/index.js';
import { FastgenError } from '../src/errors.js';
import { loadModel } from '../src/generate/model.js';
import { reservedTokensPerHead } from '../src/server/scheduler.js';

const PROMPT = 'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her big red ball.';

/** What README's policy table promises one head keeps at length L (prompt P), independently of the code. */
function documented(o: CacheOptions, L: number, P: number): { min: number; max: number } {
  const size = (len: number) => o.budget ?? Math.ceil(o.ratio! * len);
  switch (o.policy) {
    case 'local':
    case 'frequent':
      return exact(Math.min(L, size(L)));
    case 'local+frequent': {
      // half recent, half heavy hitters; the two may overlap
      const half = o.budget !== undefined ? Math.max(1, Math.floor(o.budget / 2)) : Math.ceil((o.ratio! / 2) * L);
      return { min: Math.min(L, half), max: Math.min(L, 2 * half) };
    }
    case 'sink+local': {
      const sinks = o.sinkTokens ?? 4;
      return exact(Math.min(L, o.budget !== undefined ? Math.max(sinks + 1, o.budget) : sinks + Math.ceil(o.ratio! * L)));
    }
    case 'snapkv':
      return exact(Math.min(P, size(P)) + (L - P));
    default:
      throw new Error(`no documented size for ${o.policy}`);
  }
}
const exact = (n: number) => ({ min: n, max: n });

test('every sized policy keeps its documented tokens per head (ratio and budget forms), and admission reserves that + 1', async () => {
  const model = await loadModel(undefined, { backend: 'wasm' });
  const P = model.encode(PROMPT).length;
  const sized = CACHE_POLICIES.filter((p) => !p.adaptive && p.name !== 'full');
  assert.deepEqual(sized.map((p) => p.name).sort(), ['frequent', 'local', 'local+frequent', 'sink+local', 'snapkv']);
  let checked = 0;
  for (const p of sized) {
    for (const size of [{ ratio: 0.3 }, { budget: 12 }, { ratio: 0.55 }]) {
      const cache = { policy: p.name, ...size } as CacheOptions;
      const r = await model.complete(PROMPT, { maxTokens: 24, temperature: 0, ignoreEos: true, cache });
      const L = r.kv.sequenceTokens;
      const want = documented(cache, L, P);
      const resolved = resolveCacheOptions(cache);
      const promised = p.keptTokens(resolved, L, P)!;
      assert.equal(promised, want.max, `${p.name} ${JSON.stringify(size)}: keptTokens(${L}) = ${promised}, documented ${want.max}`);
      for (const layer of r.kv.keptTokens) {
        for (const kept of layer) {
          assert.ok(kept >= want.min && kept <= want.max, `${p.name} ${JSON.stringify(size)}: a head keeps ${kept} of ${L}, documented ${want.min}–${want.max}`);
          checked++;
        }
      }
      // Admission: the policy's promise at the final length, plus the step's token before eviction.
      const finalLength = P + 24;
      assert.equal(reservedTokensPerHead(resolved, P, finalLength, 1), Math.min(finalLength, p.keptTokens(resolved, finalLength, P)! + 1));
      assert.equal(model.pool.pagesInUse, 0);
    }
  }
  assert.ok(checked > 400);
  model.dispose();
});

test('cache options: defaults filled from the policy; an option of another policy, an unknown one, a bad value: clear errors', () => {
  assert.deepEqual(resolveCacheOptions({ policy: 'fastgen' }), { policy: 'fastgen', variant: 'lattice', recovery: 0.95, localRatio: 0.3, frequentRatio: 0.3, gqa: 'min', exclude: [] });
  assert.equal(resolveCacheOptions({ policy: 'fastgen', variant: 'paper' }).gqa, 'mean');
  assert.deepEqual(resolveCacheOptions({ policy: 'sink+local', budget: 10 }), { policy: 'sink+local', ratio: 0.5, budget: 10, sinkTokens: 4 });
  assert.deepEqual(resolveCacheOptions(undefined), { policy: 'full' });
  const fails = (o: unknown, re: RegExp, where: string) =>
    assert.throws(() => resolveCacheOptions(o as CacheOptions), (e: unknown) => e instanceof FastgenError && e.code === 'INVALID_OPTION' && re.test(e.message) && e.where === where);
  fails({ policy: 'local', recovery: 0.9 }, /applies to fastgen, not to policy 'local'/, 'cache.recovery');
  fails({ policy: 'fastgen', bogus: 1 }, /unknown cache option 'bogus'/, 'cache.bogus');
  fails({ policy: 'fastgen', constructor: 1 }, /unknown cache option 'constructor'/, 'cache.constructor');
  fails({ policy: 'nope' }, /unknown cache policy 'nope'.*snapkv/, 'cache.policy');
  fails({ policy: 'fastgen', recovery: 0 }, /cache.recovery must be a number in \(0, 1\]/, 'cache.recovery');
  fails({ policy: 'local', budget: 2.5 }, /cache.budget must be an integer ≥ 1/, 'cache.budget');
  fails({ policy: 'fastgen', gqa: 'max' }, /cache.gqa must be one of mean, min/, 'cache.gqa');
  fails({ policy: 'fastgen', exclude: ['local', 'x'] }, /cache.exclude must be a list of/, 'cache.exclude');
  fails({ policy: 'snapkv', poolKernel: 4 }, /poolKernel must be odd/, 'cache.poolKernel');
  fails({ policy: 'fastgen', variant: 'paper', profileFrom: 0.5 }, /applies to the lattice variant/, 'cache.profileFrom');
  // The registry and the type's name list agree, and every policy has a label and a summary.
  assert.deepEqual(CACHE_POLICIES.map((p) => p.name), [...CACHE_POLICY_NAMES]);
  for (const name of CACHE_POLICY_NAMES) {
    const p = cachePolicy(name);
    assert.ok(p.summary.length > 10 && p.label(resolveCacheOptions({ policy: name })).startsWith(name));
  }
});

for (const backend of ['cpu-ref', 'wasm'] as const) {
  test(`${backend}: fork() of an f16 cache decodes bit for bit like the original`, async () => {
    const model = await loadModel(undefined, { backend, kvDtype: 'f16' });
    const kv = model.newSequence({ policy: 'fastgen', recovery: 0.9 });
    const out = new Float32Array(model.config.vocabSize);
    await model.backend.forward([{ kv, tokens: model.encode(PROMPT), logits: 'last', out }]);
    const copy = kv.fork();
    assert.deepEqual(copy.stats(), kv.stats());
    let tok = 1000;
    for (let i = 0; i < 8; i++) {
      const [a] = await model.backend.forward([{ kv, tokens: [tok], logits: 'last' }]);
      const [b] = await model.backend.forward([{ kv: copy, tokens: [tok], logits: 'last' }]);
      assert.deepEqual(b, a, `step ${i}`);
      tok = a.indexOf(Math.max(...a));
    }
    assert.deepEqual(copy.stats(), kv.stats());
    assert.ok(kv.stats().prunedRatio > 0, 'the forked cache is a compressed one');
    kv.release();
    copy.release();
    assert.equal(model.pool.pagesInUse, 0);
    model.dispose();
  });
}

test('an exhausted KV pool through Model.generate: KV_POOL_EXHAUSTED with what to do, every page returned', async () => {
  const model = await loadModel(undefined, { backend: 'wasm', kvBudgetBytes: 64 << 10 });
  await assert.rejects(model.complete(PROMPT, { maxTokens: 8 }), (e: unknown) => {
    assert.ok(e instanceof FastgenError && e.code === 'KV_POOL_EXHAUSTED', String(e));
    assert.match(e.message, /KV page pool.*Raise the KV budget/s);
    return true;
  });
  assert.equal(model.pool.pagesInUse, 0);
  model.dispose();
});

test('fastgen lattice: margin asks the prompt for 1 − (1 − T)(1 − margin); minFrequent leaves no window-only head', async () => {
  const fails = (o: unknown, where: string) =>
    assert.throws(() => resolveCacheOptions(o as CacheOptions), (e: unknown) => e instanceof FastgenError && /applies to the lattice variant/.test(e.message) && e.where === where);
  fails({ policy: 'fastgen', variant: 'paper', margin: 0.2 }, 'cache.margin');
  fails({ policy: 'fastgen', variant: 'paper', minFrequent: 0.1 }, 'cache.minFrequent');

  const model = await loadModel(undefined, { backend: 'wasm' });
  const ids = model.encode(PROMPT + ' One day, Lily saw a big dog in the park. The dog was brown and had a long tail.');
  const chosen = async (o: CacheOptions) => {
    const kv = model.newSequence(o);
    try {
      await model.backend.forward([{ kv, tokens: ids, logits: 'last' }]);
      return kv.profiles.flat().map((p) => p.policy);
    } finally {
      kv.release();
    }
  };
  const withMargin = await chosen({ policy: 'fastgen', recovery: 0.9, margin: 0.5 });
  assert.deepEqual(withMargin, await chosen({ policy: 'fastgen', recovery: 0.95, margin: 0 }));
  assert.notDeepEqual(withMargin, await chosen({ policy: 'fastgen', recovery: 0.9, margin: 0 }), 'the margin must change some choice on this prompt');
  // The default keeps heavy hitters in every pruned head; minFrequent 0 lets window-only candidates through.
  const heavyless = (names: string[]) => names.filter((n) => n !== 'full' && !n.includes('frequent')).length;
  assert.equal(heavyless(await chosen({ policy: 'fastgen', recovery: 0.85 })), 0);
  assert.ok(heavyless(await chosen({ policy: 'fastgen', recovery: 0.85, minFrequent: 0, margin: 0 })) > 0, 'some head should pick a window-only policy at T = 0.85 without the floor');
  model.dispose();
});
