/** markKept: the one-pass union of components and the frequent top-B selection against a sort-based reference. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { markKept } from '../src/cache/evict.js';
import { HeadStore } from '../src/cache/head-store.js';
import { PagePool } from '../src/cache/page-pool.js';
import { keepRule, PUNCT, SPECIAL, type HeadPolicy } from '../src/cache/head-policy.js';
import { mulberry32 } from '../src/generate/rng.js';

test('frequent keeps the top B by (score desc, position asc), ties included, for random stores and budgets', () => {
  const rand = mulberry32(7);
  const pool = new PagePool({ headDim: 2 });
  const zero = new Float32Array(2);
  for (let trial = 0; trial < 500; trial++) {
    const n = 1 + Math.floor(rand() * 90);
    const st = new HeadStore(pool);
    // Few distinct scores, so ties are common; positions distinct but not in slot order (as after evictions).
    const levels = 1 + Math.floor(rand() * 6);
    const order = Array.from({ length: n }, (_, i) => i).sort(() => rand() - 0.5);
    for (let s = 0; s < n; s++) st.append(zero, 0, zero, 0, order[s] * 3, 5, Math.floor(rand() * levels) / levels);
    const budget = Math.floor(rand() * (n + 3));
    const policy: HeadPolicy = { name: 'frequent', heavy: { tokens: budget } };
    const keep = new Uint8Array(n);
    const kept = markKept(st, keepRule(policy, 10_000), 10_000, keep);
    const want = new Set(Array.from({ length: n }, (_, s) => s)
      .sort((a, b) => st.scores[b] - st.scores[a] || st.positions[a] - st.positions[b])
      .slice(0, budget));
    assert.equal(kept, want.size, `n=${n} budget=${budget}`);
    for (let s = 0; s < n; s++) assert.equal(keep[s], want.has(s) ? 1 : 0, `n=${n} budget=${budget} slot ${s}`);
    st.release();
  }
  assert.equal(pool.pagesInUse, 0);
});

test('rule parts unite: special, punct, local span, sink and frequent in one pass', () => {
  const pool = new PagePool({ headDim: 2 });
  const zero = new Float32Array(2);
  const classes = { special: Uint8Array.from([0, 1, 0, 0]), punct: Uint8Array.from([0, 0, 1, 0]) };
  const st = new HeadStore(pool, classes);
  // positions 0..19, tokens: 1 special at position 4, 2 punct at 9, 3 elsewhere; scores peak at position 12.
  for (let p = 0; p < 20; p++) st.append(zero, 0, zero, 0, p, p === 4 ? 1 : p === 9 ? 2 : 3, p === 12 ? 1 : 0.01 * p);
  const policy: HeadPolicy = {
    name: 'all',
    classes: SPECIAL | PUNCT,
    window: { tokens: 3 },
    sinks: 2,
    heavy: { tokens: 2 },
  };
  const keep = new Uint8Array(20);
  const kept = markKept(st, keepRule(policy, 20), 19, keep);
  // sink 0,1 · special 4 · punct 9 · frequent 12 and 19 (0.19 is the next best score) · local 17,18,19
  const want = [0, 1, 4, 9, 12, 17, 18, 19];
  assert.deepEqual(Array.from(keep).flatMap((k, s) => (k ? [s] : [])), want);
  assert.equal(kept, want.length);
  st.release();
});

test('a head the device compacted (keepFirst): pages past the kept slots go back, metadata is stale, the CPU cannot evict from it', () => {
  // An arena with no CPU view of K/V, as a GPU's: slot metadata is all the CPU moves.
  const arena = { floats: new Float32Array(0), halves: new Uint16Array(0), baseByteOffset: 0, ensureFloats() {} };
  const pool = new PagePool({ headDim: 8, pageTokens: 4, arena });
  const st = new HeadStore(pool);
  for (let p = 0; p < 10; p++) st.reserve(p, 100 + p);
  assert.equal(st.pages.length, 3);
  st.pagesSynced = 3;
  st.keepFirst(5);
  assert.equal(st.length, 5);
  assert.equal(st.pages.length, 2, 'ceil(5 / 4) pages stay');
  assert.equal(pool.pagesInUse, 2);
  assert.equal(st.pagesSynced, 2, 'the page-table mirror forgets the freed page');
  assert.equal(st.metaStale, true);
  // Reserving on a stale head takes pages as before but writes no metadata.
  const before = Array.from(st.positions.subarray(0, 8));
  for (let p = 10; p < 13; p++) st.reserve(p, 0);
  assert.equal(st.length, 8);
  assert.equal(st.pages.length, 2);
  st.reserve(13, 0);
  assert.equal(st.pages.length, 3);
  assert.deepEqual(Array.from(st.positions.subarray(0, 8)), before);
  assert.throws(() => st.evict(0), /device holds/);
  assert.throws(() => st.keepFirst(10), /keeping 10 of 9/);
  st.keepFirst(0);
  assert.equal(st.pages.length, 0);
  st.release();
  assert.equal(st.metaStale, false, 'a released store starts over with its own metadata');
  assert.equal(pool.pagesInUse, 0);
});
