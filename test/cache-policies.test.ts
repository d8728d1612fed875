/** The per-head cache on real models: exactness at T = 1, what each policy holds, byte accounting, page reuse. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HeadStore } from '../src/cache/head-store.js';
import { PagePool } from '../src/cache/page-pool.js';
import { SPECIAL, type HeadPolicy } from '../src/cache/head-policy.js';
import { assignedHeads } from '../src/cache/policies/assigned.js';
import { CACHE_POLICY_NAMES, resolveCacheOptions, type CacheOptions } from '../src/cache/policies/index.js';
import { SequenceKv } from '../src/cache/sequence-kv.js';
import { loadModel, type Model } from '../src/generate/model.js';
import { SKIP_SHARED, sharedPath } from './shared-fixtures.js';

const STORIES260K = () => sharedPath('models/stories260K/stories260K.bin');

// Every backend implements the same cache interface and must pass the same tests.
for (const backend of ['cpu-ref', 'wasm'] as const) {
let m260: Model | undefined;
async function stories260K(): Promise<Model> {
  return (m260 ??= await loadModel(STORIES260K(), { backend }));
}

for (const which of ['stories15M', 'stories260K']) {
  test(`${backend} ${which}: T = 1 and policy full are token-identical to the plain full cache`, { skip: SKIP_SHARED }, async () => {
    const model = which === 'stories15M' ? await loadModel(undefined, { backend }) : await stories260K();
    const prompt = 'Once upon a time, there was a little dog. He liked to run.';
    const opts = { temperature: 0, maxTokens: which === 'stories15M' ? 40 : 120 };
    const plain = await model.complete(prompt, opts);
    const full = await model.complete(prompt, { ...opts, cache: { policy: 'full' } });
    const t1 = await model.complete(prompt, { ...opts, cache: { policy: 'fastgen', recovery: 1 } });
    assert.deepEqual(full.tokens, plain.tokens);
    assert.deepEqual(t1.tokens, plain.tokens);
    assert.equal(t1.kv.prunedRatio, 0);
    assert.deepEqual(t1.kv.headsPerPolicy, { full: model.config.nLayers * model.config.nKvHeads });
    // Sampled generation with a seed too.
    const s1 = await model.complete(prompt, { temperature: 0.8, seed: 7, maxTokens: 30 });
    const s2 = await model.complete(prompt, { temperature: 0.8, seed: 7, maxTokens: 30, cache: { policy: 'fastgen', recovery: 1 } });
    assert.deepEqual(s2.tokens, s1.tokens);
    if (which === 'stories15M') model.dispose();
  });
}

/**
 * Drive one sequence through prefill + greedy decode with hand-assigned head policies, checking after every step
 * what each head holds. Returns nothing; asserts inside.
 */
test(`${backend} stories260K: special / local / frequent heads hold exactly what their policy says, every step`, { skip: SKIP_SHARED }, async () => {
  const model = await stories260K();
  const { nLayers, nKvHeads, nHeads } = model.config;
  const group = nHeads / nKvHeads;
  const promptText = 'Lily said, "Look! A big dog." Tom ran, and ran. Then they sat.';
  const prompt = model.encode(promptText);
  const n = prompt.length;
  const special: HeadPolicy = { name: 'special', classes: SPECIAL };
  const local: HeadPolicy = { name: 'local', window: { tokens: 6 } }; // distances 0..5
  const frequent: HeadPolicy = { name: 'frequent', heavy: { ratio: 0.3 } };
  const full: HeadPolicy = { name: 'full', full: true };
  const plan = [special, local, frequent, full];
  const c = model.config;
  const shape = { nLayers, nHeads: c.nHeads, nKvHeads, headDim: c.headDim };
  const kv = new SequenceKv(model.pool, shape, resolveCacheOptions({ policy: 'full' }), model.classes,
    assignedHeads(shape, (l, h) => plan[(l * nKvHeads + h) % plan.length]));

  // Snapshot every frequent head's (position, score) just before eviction, to recompute its top set independently.
  const snapshots = new Map<HeadStore, { positions: number[]; scores: number[]; scoreSum: number }>();
  const origApply = kv.apply.bind(kv);
  kv.apply = (layer: number, h: number, policy: HeadPolicy, current: number) => {
    const st = kv.store(layer, h);
    const positions = Array.from(st.positions.subarray(0, st.length));
    const scores = Array.from(st.scores.subarray(0, st.length));
    snapshots.set(st, { positions, scores, scoreSum: scores.reduce((a, b) => a + b, 0) });
    origApply(layer, h, policy, current);
  };
  const specialIds = model.tokenizer.specialIds();
  const seq = prompt.slice();
  let [logits] = await model.backend.forward([{ kv, tokens: prompt, logits: 'last' }]);
  const prevSum = new Map<HeadStore, number>();
  for (let step = 0; step < 40; step++) {
    const len = kv.seqLength;
    const current = len - 1;
    for (let l = 0; l < nLayers; l++) {
      for (let h = 0; h < nKvHeads; h++) {
        const st = kv.store(l, h);
        const policy = kv.headPolicy(l, h);
        const held = new Set(Array.from(st.positions.subarray(0, st.length)));
        if (policy === special) {
          const want = new Set(seq.map((t, p) => (specialIds.has(t) ? p : -1)).filter((p) => p >= 0));
          assert.deepEqual([...held].sort((a, b) => a - b), [...want].sort((a, b) => a - b), `layer ${l} head ${h} special`);
          for (let s = 0; s < st.length; s++) assert.ok(specialIds.has(st.tokenIds[s]));
        } else if (policy === local) {
          const want = new Set(seq.map((_, p) => p).filter((p) => current - p <= 5));
          assert.deepEqual([...held].sort((a, b) => a - b), [...want].sort((a, b) => a - b), `layer ${l} head ${h} local`);
        } else if (policy === frequent) {
          const budget = Math.ceil(0.3 * len);
          assert.equal(st.length, Math.min(budget, len), `layer ${l} head ${h} frequent size`);
          const snap = snapshots.get(st);
          if (snap) {
            // Recompute: the kept tokens are the top-budget by cumulative attention among those held before eviction.
            const order = snap.positions.map((p, i) => ({ p, s: snap.scores[i] })).sort((a, b) => b.s - a.s || a.p - b.p);
            const want = new Set(order.slice(0, budget).map((x) => x.p));
            assert.deepEqual([...held].sort((a, b) => a - b), [...want].sort((a, b) => a - b), `layer ${l} head ${h} frequent set`);
            // Each decode step adds one attention distribution per query head of the group to the scores.
            const before = prevSum.get(st);
            if (before !== undefined) assert.ok(Math.abs(snap.scoreSum - before - group) < 1e-4, `score mass grew by ${snap.scoreSum - before}, expected ${group}`);
          }
          prevSum.set(st, Array.from(st.scores.subarray(0, st.length)).reduce((a, b) => a + b, 0));
          // Scores stored with each kept slot are the ones it had before compaction.
          if (snap) for (let s = 0; s < st.length; s++) assert.equal(st.scores[s], snap.scores[snap.positions.indexOf(st.positions[s])]);
        } else {
          assert.equal(st.length, len);
        }
      }
    }
    const next = argmaxOf(logits);
    seq.push(next);
    [logits] = await model.backend.forward([{ kv, tokens: [next], logits: 'last' }]);
  }
  assert.ok(n > 10);
  kv.release();
  assert.equal(model.pool.pagesInUse, 0);
});

function argmaxOf(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

test(`${backend} stories260K: bytes in use = Σ tokens kept × bytes per token, before and after every eviction`, { skip: SKIP_SHARED }, async () => {
  const model = await stories260K();
  const perToken = 2 * model.config.headDim * 4;
  const origEvict = HeadStore.prototype.evict;
  const live = new Set<SequenceKv>();
  let checks = 0;
  const check = () => {
    let kept = 0;
    let pages = 0;
    for (const kv of live) {
      const st = kv.stats();
      const sum = kv.stores.reduce((a, s) => a + s.length, 0);
      assert.equal(st.kvBytes, sum * perToken);
      assert.equal(st.pages, kv.stores.reduce((a, s) => a + Math.ceil(s.length / model.pool.pageTokens), 0));
      kept += sum;
      pages += st.pages;
    }
    assert.equal(model.pool.pagesInUse, pages, 'pool pages in use = pages held by live sequences');
    assert.ok(kept * perToken <= model.pool.bytesInUse);
    checks++;
  };
  HeadStore.prototype.evict = function (slot: number) {
    check();
    origEvict.call(this, slot);
    check();
  };
  try {
    for (const cache of [{ policy: 'fastgen' as const, recovery: 0.9 }, { policy: 'sink+local' as const, budget: 8 }, { policy: 'frequent' as const, ratio: 0.4 }]) {
      const req = model.createRequest('Tom had a red ball. He threw it, and it flew far!', { temperature: 0, maxTokens: 30, cache });
      live.add(req.kv);
      while (!req.done) {
        const [logits] = await model.backend.forward([{ kv: req.kv, tokens: req.input(), logits: 'last' }]);
        req.accept(logits);
        check();
      }
      const st = req.kv.stats();
      assert.ok(st.prunedRatio > 0, `${cache.policy} pruned something`);
      req.kv.release();
      live.delete(req.kv);
      check();
    }
  } finally {
    HeadStore.prototype.evict = origEvict;
  }
  assert.ok(checks > 100);
});

// Every policy of the registry, many times; 1000 generations on the fast backend, 100 on the reference.
const generations = backend === 'wasm' ? 1000 : 100;
test(`${backend} stories260K: after ${generations} generations the pool is empty again, and freed pages are reused`, { skip: SKIP_SHARED }, async () => {
  const model = await loadModel(STORIES260K(), { kvBudgetBytes: 2 << 20, backend });
  const caches = CACHE_POLICY_NAMES.map((policy): CacheOptions => (policy === 'fastgen' ? { policy, recovery: 0.9 } : { policy }));
  const prompts = ['Once upon a time', 'The cat sat.', 'Lily and Tom went to the park, and they played!'];
  let reserved = 0;
  for (let i = 0; i < generations; i++) {
    const r = await model.complete(prompts[i % prompts.length], {
      maxTokens: 3 + (i % 5),
      seed: i,
      cache: caches[i % caches.length],
    });
    assert.ok(r.generatedTokens >= 1);
    assert.equal(model.pool.pagesInUse, 0, `generation ${i} left pages behind`);
    if (i === 10) reserved = model.pool.bytesReserved;
  }
  // Pages freed by earlier sequences served the later ones: the arena stopped growing after the first few.
  assert.equal(model.pool.bytesReserved, reserved);
  // Two sequences alive at once: the second takes the pages the first gave back.
  const a = model.newSequence();
  await model.backend.forward([{ kv: a, tokens: model.encode('Hello there, friend.'), logits: 'none' }]);
  const pagesA = new Set(a.stores.flatMap((s) => s.pages));
  a.release();
  const b = model.newSequence();
  await model.backend.forward([{ kv: b, tokens: model.encode('Hello there, friend.'), logits: 'none' }]);
  const pagesB = new Set(b.stores.flatMap((s) => s.pages));
  assert.deepEqual([...pagesB].sort((x, y) => x - y), [...pagesA].sort((x, y) => x - y));
  b.release();
  assert.equal(model.pool.pagesInUse, 0);
});

}

test('the pool reports how much was needed when it cannot serve', () => {
  const pool = new PagePool({ headDim: 4, pageTokens: 2, budgetBytes: 2 * 2 * 2 * 4 * 4 });
  assert.equal(pool.maxPages, 2);
  pool.allocate();
  pool.allocate();
  assert.throws(() => pool.allocate(), (e: any) => e.code === 'KV_POOL_EXHAUSTED' && /needed 1 more page of 64 bytes/.test(e.message));
  assert.throws(() => pool.reserveCheck(3), (e: any) => e.neededBytes === 192 && /cannot serve 3 pages/.test(e.message));
});
