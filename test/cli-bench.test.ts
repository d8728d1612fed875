/**
 * `fastgen bench`: the table's plumbing (rows per combination, labels, --json shape, errors) and the llama2.c ratio
 * arithmetic. No assertion on speed: benchmarks are not timed tests.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { generateComparison, llama2cComparison, parseTest, type BenchRow } from '../src/cli/bench.js';
import { REPO_ROOT, SKIP_SHARED, sharedPath } from './shared-fixtures.js';

const BIN = join(REPO_ROOT, 'bin', 'fastgen.js');
const run = (args: string[]) => spawnSync(process.execPath, [BIN, 'bench', ...args], { encoding: 'utf8', timeout: 120_000 });

test('bench --json: one row per model × dtype × KV dtype × cache × test, each with its samples; --svg draws one bar per row', { skip: SKIP_SHARED }, () => {
  const svg = join(mkdtempSync(join(tmpdir(), 'fastgen-bench-')), 'bench.svg');
  const r = run(['-m', sharedPath('models/stories260K/stories260K.bin'), '--dtype', 'f32', '--dtype', 'q8_0', '--kv-dtype', 'f32',
    '--kv-dtype', 'f16', '--cache', 'full', '--cache', 'fastgen', '--tests', 'pp8,tg4@d5', '-r', '2', '--json', '--svg', svg]);
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.rows.length, 2 * 2 * 2 * 2);
  for (const row of j.rows) {
    assert.equal(row.backend, 'wasm');
    assert.equal(row.samples.length, 2);
    assert.ok(row.samples.every((x: number) => x > 0 && Number.isFinite(x)));
    assert.ok(['pp8', 'tg4 @ d5'].includes(row.test), row.test);
  }
  const caches = new Set(j.rows.map((x: BenchRow) => x.cache));
  assert.deepEqual([...caches].sort(), ['fastgen T=0.95', 'fastgen T=0.95 (f16 KV)', 'full', 'full (f16 KV)']);
  assert.deepEqual([...new Set(j.rows.map((x: BenchRow) => x.dtype))].sort(), ['f32', 'q8_0']);
  assert.deepEqual(j.versusLlama2c, []);
  const figure = readFileSync(svg, 'utf8');
  assert.match(figure, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.equal(figure.match(/<rect /g)?.length, j.rows.length);
  assert.match(figure, /decode, tokens\/s/);
  assert.match(figure, /prefill, tokens\/s/);
  assert.ok(figure.trimEnd().endsWith('</svg>'));
});

test('bench: bad test names (bad usage, exit 2) and a broken --llama2c (exit 1) are clear errors, no stack trace', () => {
  const a = run(['--tests', 'pp', '-r', '1']);
  assert.equal(a.status, 2);
  assert.doesNotMatch(a.stderr, /    at /);
  assert.match(a.stderr, /--tests: cannot read 'pp'/);
  const b = run(['--llama2c', '/nonexistent/run', '--tests', 'tg2', '-r', '1', '--cache', 'full']);
  assert.equal(b.status, 1);
  assert.match(b.stderr, /--llama2c/);
  assert.throws(() => parseTest('tg10@d300', 256), /does not fit the model's 256-token context/);
  assert.equal(parseTest('tg300', 256).label, 'tg255'); // clamped to the context, and the label says so
});

test('llama2.c comparison: decode rows with its thread count, against its fastest-thread row', () => {
  const row = (backend: string, threads: number, test: string, tps: number): BenchRow =>
    ({ model: 'm', sizeBytes: 1, params: 1, backend, threads, dtype: 'f32', cache: 'full', test, tokensPerSecond: tps, stddev: 0, samples: [tps] });
  const v = llama2cComparison([
    row('wasm', 2, 'tg128', 600), row('wasm', 2, 'pp128', 4000), row('wasm', 2, 'tg64 x4', 900), row('wasm', 1, 'tg128', 350),
    row('llama2.c run', 1, 'tg255', 300), row('llama2.c run', 2, 'tg255', 500),
  ]);
  assert.deepEqual(v.map((x) => [x.row, x.ratio, x.llama2cThreads]), [['wasm f32 full tg128', 1.2, 2]]);
  assert.deepEqual(llama2cComparison([row('wasm', 2, 'tg128', 600)]), []);
});

test('llama2.c comparison: a collapsed reference row is not picked, and a ratio with an unstable row is not meaningful', () => {
  const row = (backend: string, threads: number, test: string, tps: number, sd: number): BenchRow =>
    ({ model: 'm', sizeBytes: 1, params: 1, backend, threads, dtype: 'f32', cache: 'full', test, tokensPerSecond: tps, stddev: sd, samples: [tps] });
  // 2 threads collapsed on a loaded machine (25.7 ± 18.6): the stable 1-thread row is the reference.
  const v = llama2cComparison([row('wasm', 1, 'tg128', 350, 5), row('wasm', 2, 'tg128', 600, 10), row('llama2.c run', 1, 'tg255', 300, 6), row('llama2.c run', 2, 'tg255', 25.7, 18.6)]);
  assert.deepEqual(v.map((x) => [x.row, x.llama2cThreads, x.meaningful]), [['wasm f32 full tg128', 1, true]]);
  assert.ok(Math.abs(v[0].ratio - 350 / 300) < 1e-12);
  // Our row unstable: the ratio is reported, marked not meaningful.
  const w = llama2cComparison([row('wasm', 2, 'tg128', 600, 200), row('llama2.c run', 2, 'tg255', 500, 5)]);
  assert.equal(w[0].meaningful, false);
  // Every reference row unstable: the one with most threads, and nothing is meaningful.
  const u = llama2cComparison([row('wasm', 2, 'tg128', 600, 5), row('llama2.c run', 1, 'tg255', 300, 100), row('llama2.c run', 2, 'tg255', 500, 200)]);
  assert.deepEqual(u.map((x) => [x.llama2cThreads, x.meaningful]), [[2, false]]);
});

test('bench says when it clamps a test to the context, before measuring anything long', { skip: SKIP_SHARED }, () => {
  const r = run(['-m', sharedPath('models/stories260K/stories260K.bin'), '--tests', 'pp600', '-r', '1', '--cache', 'full', '--json']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /bench: pp600 runs as pp512: stories260K's context is 512 tokens/);
  const j = JSON.parse(r.stdout);
  assert.deepEqual(j.notes, ["pp600 runs as pp512: stories260K's context is 512 tokens"]);
  assert.equal(j.rows[0].test, 'pp512');
  assert.equal(typeof j.rows[0].unstable, 'boolean');
});

test('generate() rows: genN / sampleN parse, and each is compared with its own tgN row from the same rounds', () => {
  assert.equal(parseTest('gen128', 256).label, 'gen128');
  assert.equal(parseTest('sample64@d100', 256).label, 'sample64 @ d100');
  assert.equal(parseTest('gen300', 256).label, 'gen255');
  assert.throws(() => parseTest('gen8x2', 256), /generate\(\) runs one sequence/);
  const row = (dtype: string, test: string, tps: number, sd = 1): BenchRow =>
    ({ model: 'm', sizeBytes: 1, params: 1, backend: 'wasm', threads: 2, dtype, cache: 'full', test, tokensPerSecond: tps, stddev: sd, samples: [tps] });
  const v = generateComparison([
    row('f32', 'tg128', 600), row('f32', 'gen128', 570), row('f32', 'sample128', 300, 100),
    row('q8_0', 'tg128', 1000), row('q8_0', 'gen128', 950), row('q8_0', 'gen64', 900), row('f32', 'tg128 @ d200', 500), row('f32', 'gen128 @ d200', 450),
  ]);
  assert.deepEqual(v.map((c) => [c.row, c.decodeRow, Math.round(c.ratio * 100), c.meaningful]), [
    ['wasm f32 full gen128', 'tg128', 95, true],
    ['wasm f32 full sample128', 'tg128', 50, false],
    ['wasm q8_0 full gen128', 'tg128', 95, true],
    ['wasm f32 full gen128 @ d200', 'tg128 @ d200', 90, true],
  ]);
});
