/**
 * `fastgen bench --synthetic`: the command's shape (rows, exact KV bytes, the memory-budget run through the admission
 * rule), the policy mix, and its errors. On lavapipe with a stories15M-shaped synthetic model; no assertion on speed.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { assignMix, parseHeadPolicy, parsePolicyMix, splitOf, type GpuBenchRow } from '../src/cli/bench-gpu.js';
import { parseTest } from '../src/cli/bench.js';
import { SYNTHETIC_CONFIGS } from '../src/backend/webgpu/synthetic.js';
import { gpuOrSkip } from './webgpu-helpers.js';
import { REPO_ROOT } from './shared-fixtures.js';

const BIN = join(REPO_ROOT, 'bin', 'fastgen.js');
const run = (args: string[]) => spawnSync(process.execPath, [BIN, 'bench', ...args], { encoding: 'utf8', timeout: 300_000 });

test('bench tests: batch before or after the depth, as llama-bench writes them', () => {
  assert.deepEqual(parseTest('tg128 x8 @ d4096', Infinity), { kind: 'tg', n: 128, depth: 4096, batch: 8, label: 'tg128 @ d4096 x8' });
  assert.deepEqual(parseTest('tg128@d4096x8', Infinity), parseTest('tg128x8@d4096', Infinity));
  assert.throws(() => parseTest('tg128x2@d10x3', Infinity), /cannot read/);
});

test('policy mix: names parse to head policies; shares become head counts (largest remainder) spread over layers', () => {
  assert.deepEqual(parseHeadPolicy('special+punct+frequent@0.2+local@0.3'), { name: 'special+punct+frequent@0.2+local@0.3', classes: 3, heavy: { ratio: 0.2 }, window: { ratio: 0.3 } });
  assert.deepEqual(parseHeadPolicy('sink@4+local@0.1'), { name: 'sink@4+local@0.1', sinks: 4, window: { ratio: 0.1 } });
  assert.throws(() => parseHeadPolicy('local'), /needs a ratio in \(0, 1\]/);
  assert.throws(() => parseHeadPolicy('local@2'), /needs a ratio/);
  assert.throws(() => parseHeadPolicy('window@0.2'), /cannot read the head policy 'window@0.2'/);
  const mix = parsePolicyMix('full=2,local@0.25=1,special+frequent@0.1=1');
  assert.deepEqual(mix.shares.map((s) => s.share), [0.5, 0.25, 0.25]);
  const heads = assignMix(mix, 6, 7); // 42 heads: 21 / 10.5 / 10.5 → 21 / 11 / 10 or 21 / 10 / 11
  const count = (name: string) => heads.filter((p) => p.name === name).length;
  assert.equal(heads.length, 42);
  assert.equal(count('full'), 21);
  assert.equal(count('local@0.25') + count('special+frequent@0.1'), 21);
  assert.ok(Math.abs(count('local@0.25') - count('special+frequent@0.1')) === 1);
  assert.ok(new Set(heads.slice(0, 7).map((p) => p.name)).size > 1 || new Set(heads.slice(7, 14).map((p) => p.name)).size > 1, 'shuffled, not in blocks');
  const def = parsePolicyMix(undefined);
  assert.equal(def.spec, 'stories15m-t0.95');
  assert.ok(Math.abs(def.shares.reduce((s, x) => s + x.share, 0) - 1) < 1e-12);
  assert.match(def.source, /real profile/);
  assert.throws(() => parsePolicyMix('full=0.5,local@0.3'), /is not policy=share/);
  assert.throws(() => parsePolicyMix('full=-1'), /must be a positive number/);
});

test('step split: dispatches grouped into weights, attention, cache policy and the rest', () => {
  const s = splitOf([{ key: 'matvec-f16-r4-wg256-sg', ns: 2e6 }, { key: 'attention-1-2-16-128-64', ns: 1e6 }, { key: 'attncombine-1', ns: 5e5 },
    { key: 'evict-1', ns: 3e5 }, { key: 'rmsnorm', ns: 1e5 }, { key: 'embed-f16', ns: 1e5 }]);
  assert.deepEqual(s, { weightsMs: 2.1, attentionMs: 1.5, policyMs: 0.3, otherMs: 0.1, dispatches: 6 });
});

test('bench --synthetic: bad combinations are usage errors (exit 2) before anything loads', () => {
  const cases: [string[], RegExp][] = [
    [['--synthetic', 'llama9-70b'], /--synthetic/],
    [['--synthetic', 'stories15M', '--backend', 'wasm'], /--backend must be webgpu/],
    [['--synthetic', 'stories15M', '-m', 'x.bin'], /--model does not apply/],
    [['--synthetic', 'stories15M', '--cache', 'snapkv'], /snapkv selects from the prompt's attention/],
    [['--synthetic', 'stories15M', '--policy-mix', 'full=1,local=1'], /'local' needs a ratio/],
    [['--policy-mix', 'full=1'], /--policy-mix applies to --synthetic runs only/],
    [['--kv-budget', '1GiB'], /--kv-budget applies to --synthetic runs only/],
    [['--synthetic', 'stories15M', '--budget-tests', 'tg4@d8x2'], /--budget-tests needs --kv-budget/],
    [['--synthetic', 'stories15M', '--tests', 'gen16'], /synthetic runs measure ppN and tgN tests/],
    [['--synthetic', 'stories15M', '--kv-budget', '1MiB', '--budget-tests', 'tg4x2'], /'tg4 x2' is not a tgN@dDxB test/],
    [['--synthetic', 'stories15M', '--kv-dtype', 'f16', '--kv-dtype', 'f32'], /--kv-dtype takes one KV dtype per synthetic run/],
    [['--synthetic', 'stories15M', '--matvec', 'vrows4-fast'], /--matvec unknown matrix variant 'vrows4-fast'/],
    [['--matvec', 'default'], /--matvec applies to --synthetic runs only/],
  ];
  for (const [args, msg] of cases) {
    const r = run(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg);
    assert.doesNotMatch(r.stderr, /    at /);
  }
});

test('bench --synthetic on the GPU: rows per cache × test with exact KV bytes; a depth beyond the context is refused; the budget run admits by the server rule', { timeout: 600_000 }, async (t) => {
  if (!(await gpuOrSkip(t))) return;
  const c = SYNTHETIC_CONFIGS.stories15M;
  const tooDeep = run(['--synthetic', 'stories15M', '--tests', 'tg4@d300', '-r', '1', '--cache', 'full']);
  assert.equal(tooDeep.status, 1, tooDeep.stderr);
  assert.match(tooDeep.stderr, /does not fit synthetic stories15M's 256-token context; raise --context/);

  const r = run(['--synthetic', 'stories15M', '--dtype', 'f16', '--tests', 'tg2x2@d20,pp8', '--cache', 'full', '--cache', 'fastgen',
    '--policy-mix', 'full=1,local@0.25=1', '-r', '1', '--kv-budget', '800KiB', '--json']);
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { rows: GpuBenchRow[]; notes: string[] };
  const main = j.rows.filter((x) => !x.budget);
  assert.deepEqual(main.map((x) => `${x.cache} | ${x.test}`), [
    'full | tg2 @ d20 x2', 'full | pp8', 'fastgen mix full=1,local@0.25=1 | tg2 @ d20 x2', 'fastgen mix full=1,local@0.25=1 | pp8',
  ]);
  const perToken = c.nLayers * c.nKvHeads * 2 * c.headDim * 4;
  // 20 filled + 2 decoded tokens; pp8: 8 prompt tokens.
  assert.equal(main[0].kvBytesPerRow, 22 * perToken);
  assert.equal(main[1].kvBytesPerRow, 8 * perToken);
  // Half the heads keep everything, half a window of ⌈0.25 × 22⌉ = 6 tokens.
  assert.equal(main[2].kvBytesPerRow, (22 + 6) / 2 * perToken);
  for (const x of main) {
    assert.ok(x.tokensPerSecond > 0 && x.stepMs > 0, JSON.stringify(x));
    assert.equal(x.samples.length, 1);
    assert.ok(x.weightBytes > 0 && x.kvGpuBytes >= x.kvPageBytesPerRow);
  }
  assert.ok(main[0].split && main[0].split.dispatches > 0 && main[0].split.weightsMs > 0, 'the tg rows carry a split of one timed step');
  assert.ok(main[2].split!.policyMs > 0, 'the evicting mix spends GPU time in the policy kernels');
  assert.ok(j.notes.some((n) => /filled into the cache/.test(n)) && j.notes.some((n) => /random weights have no attention pattern/.test(n)));

  // 800 KiB = 133 pages of 6 KiB (16 tokens × 48 × 2 (K, V) × 4 B). Full: a sequence of 22 tokens reserves 2 pages in each of
  // 36 heads (72), so a second one does not fit. The mix keeps (22 + 6) / 44 of a full cache: 36 × ⌈14 / 16⌉ = 36
  // pages reserved; the first holds 54 after its fill (18 heads × 2 + 18 × 1), the second's prefill (72) fits the 79 left.
  const budget = j.rows.filter((x) => x.budget);
  assert.deepEqual(budget.map((x) => x.cache), ['full', 'fastgen mix full=1,local@0.25=1']);
  const [full, mix] = budget.map((x) => x.budget!);
  assert.equal(full.budgetPages, 133);
  assert.equal(full.offered, 2);
  assert.equal(full.admitted, 1);
  assert.equal(full.reservedPages, 72);
  assert.equal(mix.admitted, 2);
  assert.equal(mix.reservedPages, 72);
  assert.equal(mix.peakPages, 108);
  assert.ok(budget.every((x) => x.tokensPerSecond > 0 && x.budget!.error === undefined));

  // The default mix's heavy hitters can fall inside the window: one step then evicts far more slots than it adds
  // (its eviction report once had room for 2n + 8 of them only, and this run failed).
  const d = run(['--synthetic', 'stories15M', '--tests', 'tg4x2@d64', '--cache', 'fastgen', '-r', '1', '--json']);
  assert.equal(d.status, 0, d.stderr);
  const dr = JSON.parse(d.stdout).rows[0] as GpuBenchRow;
  assert.ok(dr.kvBytesPerRow > 0 && dr.kvBytesPerRow < 68 * perToken, `${dr.kvBytesPerRow}`);

  // An f16 cache: the rows say so, and hold half the bytes of the f32 rows above; the CPU's prepare is part of encode.
  // (With the matrix × vector kernel reading x as vec4f: the run names the variant it used.)
  const h = run(['--synthetic', 'stories15M', '--kv-dtype', 'f16', '--tests', 'tg2x2@d20', '--cache', 'full', '-r', '1', '--matvec', 'default-xv', '--json']);
  assert.equal(h.status, 0, h.stderr);
  assert.ok(JSON.parse(h.stdout).notes.some((n: string) => /variant 'default-xv' \(--matvec\)/.test(n)));
  const hr = JSON.parse(h.stdout).rows[0] as GpuBenchRow;
  assert.equal(hr.cache, 'full (f16 KV)');
  assert.equal(hr.kvBytesPerRow, (22 * perToken) / 2);
  assert.ok(hr.cpuPrepareMs !== undefined && hr.cpuPrepareMs >= 0 && hr.cpuPrepareMs <= hr.cpuEncodeMs, JSON.stringify(hr));
});
