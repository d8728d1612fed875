/**
 * `fastgen bench`: throughput in llama-bench's shape —
 *   model | size | params | backend | threads | dtype | cache | test | t/s (mean ± sd over repetitions).
 * Tests: ppN (prefill N tokens), tgN (decode N tokens after one), tgN @ dD (decode after a D-token context),
 * tgN xB (B sequences decoded together in one batch; t/s counts all of them).
 * A benchmark command, never a timed test: compare ratios measured in one run on the same machine.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { FastgenError } from '../errors.js';
import { cacheLabel, cachePolicy, resolveCacheOptions, type CacheOptions, type CachePolicyName } from '../cache/policies/index.js';
import { loadModel, type Model } from '../generate/model.js';
import { argmax } from '../generate/sampler.js';
import { formatBytes, table } from './format.js';
import { locateDefaultPackage, parsePreloadFiles } from '../model/default-model.js';
import { num } from './options.js';
import { benchSvg } from './bench-svg.js';

export interface BenchRow {
  model: string;
  sizeBytes: number;
  params: number;
  backend: string;
  threads: number;
  dtype: string;
  cache: string;
  test: string;
  tokensPerSecond: number;
  stddev: number;
  samples: number[];
}

/** One row of the table: what it measures, and one repetition of it (tokens per second). */
interface BenchCase {
  row: Omit<BenchRow, 'tokensPerSecond' | 'stddev' | 'samples'>;
  run: (rep: number) => Promise<number>;
}

interface TestSpec {
  kind: 'pp' | 'tg';
  n: number;
  depth: number;
  batch: number;
  label: string;
}

export function parseTest(s: string, contextLength: number): TestSpec {
  const m = /^(pp|tg)(\d+)(?:@d(\d+))?(?:x(\d+))?$/.exec(s.replace(/\s+/g, ''));
  if (!m) throw new FastgenError('INVALID_OPTION', `--tests: cannot read '${s}'; write e.g. pp128, tg128, tg128@d200, tg64x4`, '--tests');
  const kind = m[1] as 'pp' | 'tg';
  let n = Number(m[2]);
  const depth = Number(m[3] ?? 0);
  const batch = Number(m[4] ?? 1);
  if (n < 1 || batch < 1) throw new FastgenError('INVALID_OPTION', `--tests: '${s}' needs at least one token and one sequence`, '--tests');
  // Clamp to the context and say so in the label rather than silently running something else.
  const room = contextLength - depth - (kind === 'tg' ? 1 : 0);
  if (room < 1) throw new FastgenError('INVALID_OPTION', `--tests: '${s}' does not fit the model's ${contextLength}-token context`, '--tests');
  if (n > room) n = room;
  const label = `${kind}${n}${depth ? ` @ d${depth}` : ''}${batch > 1 ? ` x${batch}` : ''}`;
  return { kind, n, depth, batch, label };
}

function meanSd(xs: number[]): [number, number] {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : 0;
  return [mean, sd];
}

/** Deterministic filler tokens (ids drawn from the vocabulary, skipping the first few special ids). */
function fillerTokens(model: Model, n: number, seed: number): number[] {
  const out: number[] = [];
  let s = seed >>> 0 || 1;
  const V = model.tokenizer.vocabSize;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(3 + (s % Math.max(1, V - 3)));
  }
  if (model.config.bosTokenId !== undefined && n > 0) out[0] = model.config.bosTokenId;
  return out;
}

/** One repetition of a test; returns tokens per second. */
async function runOnce(model: Model, spec: TestSpec, cache: CacheOptions, rep: number): Promise<number> {
  const seqs = Array.from({ length: spec.batch }, () => model.newSequence(cache));
  try {
    if (spec.kind === 'pp') {
      const items = seqs.map((kv, b) => ({ kv, tokens: fillerTokens(model, spec.n, rep * 31 + b + 1), logits: 'last' as const }));
      const t0 = performance.now();
      await model.backend.forward(items);
      return (spec.n * spec.batch * 1000) / (performance.now() - t0);
    }
    // Context first (not timed), then decode greedily one token per step for every sequence at once.
    const ctx = Math.max(1, spec.depth);
    const first = await model.backend.forward(seqs.map((kv, b) => ({ kv, tokens: fillerTokens(model, ctx, rep * 31 + b + 7), logits: 'last' as const })));
    let next = first.map((l) => argmax(l));
    const outs = seqs.map(() => new Float32Array(model.config.vocabSize));
    const t0 = performance.now();
    for (let i = 0; i < spec.n; i++) {
      const logits = await model.backend.forward(seqs.map((kv, b) => ({ kv, tokens: [next[b]], logits: 'last' as const, out: outs[b] })));
      next = logits.map((l) => argmax(l));
    }
    return (spec.n * spec.batch * 1000) / (performance.now() - t0);
  } finally {
    for (const s of seqs) s.release();
  }
}

export async function benchCommand(args: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args,
    options: {
      model: { type: 'string', short: 'm', multiple: true },
      backend: { type: 'string', multiple: true },
      dtype: { type: 'string', multiple: true },
      'kv-dtype': { type: 'string', multiple: true },
      cache: { type: 'string', multiple: true },
      recovery: { type: 'string' },
      tests: { type: 'string' },
      repetitions: { type: 'string', short: 'r' },
      threads: { type: 'string' },
      json: { type: 'boolean' },
      svg: { type: 'string' },
      llama2c: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) {
    console.log(`usage: fastgen bench [-m PATH]... [--backend NAME]... [--dtype f32|f16|q8_0]... [--kv-dtype f32|f16]...
       [--cache full|fastgen|...]...
       [--recovery T] [--tests pp128,tg128,tg128@d200,tg64x4] [-r N] [--threads N] [--json] [--svg FILE]
       [--llama2c RUN_BINARY]
Every combination of the repeated options is measured; repetitions run round-robin over all rows, so machine noise
hits every row alike. --llama2c runs a compiled llama2.c \`run\` (legacy format, e.g. gcc -Ofast -march=native
-fopenmp run.c) on the default model in the same rounds, as a tg255 row (256 steps from BOS), and prints each decode
row's ratio to it. Defaults: the default model, the default backend, f32, --cache full and fastgen, tests
pp128,tg128,tg128@d200, 3 repetitions (plus one warm-up round). --svg FILE also draws the table as bars.`);
    return 0;
  }
  const reps = num(v, 'repetitions', true) ?? 3;
  const recovery = num(v, 'recovery') ?? 0.95;
  const threads = num(v, 'threads', true);
  const models = v.model ?? [undefined];
  const backends = v.backend ?? [undefined];
  const dtypes = v.dtype ?? [undefined];
  const kvDtypes = (v['kv-dtype'] ?? ['f32']) as ('f32' | 'f16')[];
  // Each policy with its defaults (and --recovery where it takes one), checked before any model loads.
  const caches = (v.cache ?? ['full', 'fastgen']).map((policy) =>
    resolveCacheOptions(cachePolicy(policy).options.some((o) => o.key === 'recovery') ? { policy: policy as CachePolicyName, recovery } : { policy: policy as CachePolicyName }));
  const testNames = (v.tests ?? 'pp128,tg128,tg128@d200').split(',').filter(Boolean);
  // Every row is a case; repetitions run round-robin over all cases (llama2.c included), so that a noisy stretch of
  // a shared machine hits every row alike and the ratios between rows stay meaningful.
  const cases: BenchCase[] = [];
  const loaded: Model[] = [];
  let rows: BenchRow[] = [];
  try {
    for (const path of models) {
      for (const backend of backends) {
        for (const dtype of dtypes) for (const kvDtype of kvDtypes) {
          const model = await loadModel(path, { backend: backend as never, dtype: dtype as never, threads, kvDtype });
          loaded.push(model);
          const kvLabel = kvDtype === 'f32' ? '' : ` (${kvDtype} KV)`;
          const specs = testNames.map((t) => parseTest(t, model.config.maxSeqLen));
          for (const cache of caches) {
            for (const spec of specs) {
              cases.push({
                row: {
                  model: model.config.name,
                  sizeBytes: weightBytes(model),
                  params: model.parameters,
                  backend: model.backend.name,
                  threads: (model.backend as { threads?: number }).threads ?? 1,
                  dtype: model.backend.weightDtype,
                  cache: cacheLabel(cache) + kvLabel,
                  test: spec.label,
                },
                run: (rep) => runOnce(model, spec, cache, rep),
              });
            }
          }
        }
      }
    }
    if (v.llama2c) cases.push(...llama2cCases(v.llama2c as string, threads));
    const samples: number[][] = cases.map(() => []);
    for (let r = 0; r <= reps; r++) {
      // Each round starts one case later, so no row always runs right after the same neighbour (e.g. llama2.c).
      for (let j = 0; j < cases.length; j++) {
        const i = (j + r) % cases.length;
        const tps = await cases[i].run(r); // round 0 warms up: JIT, page pool growth, the page cache for llama2.c
        if (r > 0) samples[i].push(tps);
      }
      if (!v.json) process.stderr.write(`  round ${r === 0 ? 'warm-up' : `${r}/${reps}`} done\n`);
    }
    rows = cases.map((c, i) => {
      const [mean, sd] = meanSd(samples[i]);
      return { ...c.row, tokensPerSecond: mean, stddev: sd, samples: samples[i] };
    });
  } finally {
    for (const m of loaded) m.dispose();
  }
  const versus = llama2cComparison(rows);
  if (v.svg) writeFileSync(v.svg as string, benchSvg(rows, machineLine()));
  if (v.json) {
    console.log(JSON.stringify({ date: new Date().toISOString(), machine: machineLine(), rows, versusLlama2c: versus }, null, 2));
    return 0;
  }
  console.log(
    table(
      ['model', 'size', 'params', 'backend', 'threads', 'dtype', 'cache', 'test', 't/s'],
      rows.map((r) => [
        r.model,
        formatBytes(r.sizeBytes),
        `${(r.params / 1e6).toFixed(2)} M`,
        r.backend,
        r.threads,
        r.dtype,
        r.cache,
        r.test,
        `${r.tokensPerSecond.toFixed(2)} ± ${r.stddev.toFixed(2)}`,
      ]),
      ['l', 'r', 'r', 'l', 'r', 'l', 'l', 'l', 'r'],
    ),
  );
  if (versus.length > 0) {
    const base = versus[0];
    console.log(`\ndecode vs llama2.c run with ${base.llama2cThreads} threads (${base.llama2cTokensPerSecond.toFixed(1)} t/s, same rounds):`);
    for (const c of versus) console.log(`  ${c.row}: ${c.ratio.toFixed(2)}×`);
  }
  console.log(`\n${machineLine()}`);
  return 0;
}

/**
 * Each single-sequence decode row of ours with llama2.c's thread count, as a ratio to llama2.c's run (the row with
 * the most threads). Ratios of means over the same interleaved rounds.
 */
export function llama2cComparison(rows: BenchRow[]): { row: string; ratio: number; llama2cThreads: number; llama2cTokensPerSecond: number }[] {
  const refs = rows.filter((r) => r.backend === 'llama2.c run');
  if (refs.length === 0) return [];
  const ref = refs.reduce((a, b) => (b.threads > a.threads ? b : a));
  return rows
    .filter((r) => r.backend !== 'llama2.c run' && r.test.startsWith('tg') && !r.test.includes(' x') && r.threads === ref.threads)
    .map((r) => ({
      row: `${r.backend} ${r.dtype} ${r.cache} ${r.test}`,
      ratio: r.tokensPerSecond / ref.tokensPerSecond,
      llama2cThreads: ref.threads,
      llama2cTokensPerSecond: ref.tokensPerSecond,
    }));
}

/**
 * llama2.c's run on stories15M (extracted from the same npm bundle), greedy, 256 steps, threads from OMP_NUM_THREADS.
 * It reports "achieved tok/s" over its whole loop (prompt-free generation from BOS), which we record as tg255.
 */
function llama2cCases(bin: string, threads: number | undefined): BenchCase[] {
  const pkg = locateDefaultPackage();
  const js = readFileSync(join(pkg, 'dist', 'llama2.js'), 'utf8');
  const files = parsePreloadFiles(js, 'llama2.js');
  const data = readFileSync(join(pkg, 'dist', 'llama2.data'));
  const dir = mkdtempSync(join(tmpdir(), 'fastgen-llama2c-'));
  for (const f of files) writeFileSync(join(dir, f.filename.replace(/^\//, '')), data.subarray(f.start, f.end));
  const modelFile = files.find((f) => f.filename === '/model.bin')!;
  return (threads ? [threads] : [1, 2]).map((t) => ({
    row: {
      model: 'stories15M',
      sizeBytes: modelFile.end - modelFile.start,
      params: 15191712,
      backend: 'llama2.c run',
      threads: t,
      dtype: 'f32',
      cache: 'full',
      test: 'tg255',
    },
    run: async () => {
      const res = spawnSync(bin, ['model.bin', '-t', '0', '-n', '256', '-s', '1'], {
        cwd: dir,
        encoding: 'utf8',
        env: { ...process.env, OMP_NUM_THREADS: String(t) },
        timeout: 120_000,
      });
      const m = /achieved tok\/s:\s*([\d.]+)/.exec(res.stderr ?? '');
      if (!m) throw new FastgenError('INVALID_OPTION', `--llama2c: ${bin} did not report "achieved tok/s" (exit ${res.status}): ${(res.stderr ?? '').slice(0, 200)}`, '--llama2c');
      return Number(m[1]);
    },
  }));
}

function weightBytes(model: Model): number {
  const per = { f32: 4, f16: 2, q8_0: 34 / 32 }[model.backend.weightDtype] ?? 4;
  return Math.round(model.parameters * per);
}

function machineLine(): string {
  const c = cpus();
  return `${new Date().toISOString().slice(0, 10)} · ${c[0]?.model ?? 'unknown CPU'} · ${c.length} cores · Node ${process.version}`;
}
