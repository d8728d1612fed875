/**
 * `fastgen bench`: throughput in llama-bench's shape —
 *   model | size | params | backend | threads | dtype | cache | test | t/s (mean ± sd over repetitions).
 * Tests: ppN (prefill N tokens), tgN (decode N tokens after one), tgN @ dD (decode after a D-token context),
 * tgN xB (B sequences decoded together in one batch; t/s counts all of them); genN and sampleN decode N tokens through
 * Model.generate() as a user streams them (greedy, and temperature 0.8 with top-p 0.9), wall clock included.
 * A benchmark command, never a timed test: compare ratios measured in one run on the same machine.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { FastgenError } from '../errors.js';
import { BACKEND_NAMES, MAX_THREADS, WEIGHT_DTYPES } from '../backend/index.js';
import { CACHE_POLICY_NAMES, cacheLabel, cachePolicy, resolveCacheOptions, type CacheOptions, type CachePolicyName } from '../cache/policies/index.js';
import { loadModel, type Model } from '../generate/model.js';
import type { GenerationRequest } from '../generate/request.js';
import { step } from '../generate/step.js';
import { formatBytes, table } from '../format.js';
import { locateDefaultPackage, parsePreloadFiles } from '../model/default-model.js';
import { choiceArg, newCommand, numberArg, option, outputFileArg, repeatable, runCommand, sizeArg, UsageError } from './args.js';
import { benchSvg } from './bench-svg.js';
import { formatGpuRows, parsePolicyMix, runGpuBench, type GpuTestSpec } from './bench-gpu.js';
import { SYNTHETIC_CONFIGS } from '../backend/webgpu/synthetic.js';
import { parseMatvecVariant } from '../backend/webgpu/ops.js';
import type { WeightKind } from '../backend/webgpu/wgsl.js';

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
  kind: 'pp' | 'tg' | 'gen' | 'sample';
  n: number;
  depth: number;
  batch: number;
  label: string;
}

export function parseTest(s: string, contextLength: number): TestSpec {
  // The batch may come before or after the depth: tg128x8@d4096 or tg128@d4096x8 (llama-bench writes `tg128 @ d4096`).
  const m = /^(pp|tg|gen|sample)(\d+)(?:x(\d+))?(?:@d(\d+))?(?:x(\d+))?$/.exec(s.replace(/\s+/g, ''));
  if (!m || (m[3] !== undefined && m[5] !== undefined)) {
    throw new UsageError(`--tests: cannot read '${s}'; write e.g. pp128, tg128, tg128@d200, tg64x4, tg128x8@d4096, gen128, sample128`, '--tests');
  }
  const kind = m[1] as TestSpec['kind'];
  let n = Number(m[2]);
  const depth = Number(m[4] ?? 0);
  const batch = Number(m[3] ?? m[5] ?? 1);
  if (n < 1 || batch < 1) throw new UsageError(`--tests: '${s}' needs at least one token and one sequence`, '--tests');
  if ((kind === 'gen' || kind === 'sample') && batch > 1) throw new UsageError(`--tests: '${s}': generate() runs one sequence`, '--tests');
  // Clamp to the context and say so in the label rather than silently running something else.
  const room = contextLength - depth - (kind === 'pp' ? 0 : 1);
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

/**
 * One repetition of a test; returns tokens per second. Requests go through the engine's own generation step (greedy,
 * EOS ignored, so every row decodes exactly its token count).
 */
async function runOnce(model: Model, spec: TestSpec, cache: CacheOptions, rep: number): Promise<number> {
  if (spec.kind === 'gen' || spec.kind === 'sample') return generateOnce(model, spec, cache, rep);
  const request = (prompt: number[], maxTokens: number) => model.createRequest(prompt, { cache, maxTokens, temperature: 0, ignoreEos: true });
  const reqs: GenerationRequest[] = [];
  try {
    if (spec.kind === 'pp') {
      for (let b = 0; b < spec.batch; b++) reqs.push(request(fillerTokens(model, spec.n, rep * 31 + b + 1), 1));
      const t0 = performance.now();
      await stepAll(model, reqs);
      return (spec.n * spec.batch * 1000) / (performance.now() - t0);
    }
    // Context first (not timed), then one token per step for every sequence at once.
    const ctx = Math.max(1, spec.depth);
    for (let b = 0; b < spec.batch; b++) reqs.push(request(fillerTokens(model, ctx, rep * 31 + b + 7), spec.n + 1));
    await stepAll(model, reqs);
    const t0 = performance.now();
    while (reqs.some((r) => !r.done)) await stepAll(model, reqs);
    const ms = performance.now() - t0;
    const decoded = reqs.reduce((sum, r) => sum + r.generated.length - 1, 0);
    return (decoded * 1000) / ms;
  } finally {
    for (const r of reqs) r.kv.release();
  }
}

/** What a sampleN row samples with: a common chat-style setting (seeded, so every round draws the same tokens). */
const SAMPLED = { temperature: 0.8, topP: 0.9 } as const;

/**
 * One repetition through Model.generate(), as a user streams it: the whole loop by wall clock (text decoding,
 * streaming, the event-loop turn between tokens, bookkeeping), less the prompt's step as generate() reports it.
 */
async function generateOnce(model: Model, spec: TestSpec, cache: CacheOptions, rep: number): Promise<number> {
  const sampling = spec.kind === 'sample' ? { ...SAMPLED, seed: rep + 1 } : { temperature: 0 };
  const generation = model.generate(fillerTokens(model, Math.max(1, spec.depth), rep * 31 + 7), { cache, maxTokens: spec.n + 1, ignoreEos: true, ...sampling });
  const t0 = performance.now();
  for await (const piece of generation) void piece;
  const ms = performance.now() - t0;
  const r = await generation.result;
  return ((r.generatedTokens - 1) * 1000) / (ms - r.timings.prefillMs);
}

async function stepAll(model: Model, reqs: GenerationRequest[]): Promise<void> {
  for (const o of await step(model.backend, reqs)) if (o.error !== undefined) throw o.error;
}

export function benchCli() {
  const cmd = newCommand('fastgen bench', 'Throughput in llama-bench\'s shape: every combination of the repeated options is measured.');
  cmd
    .addOption(option('-m, --model <path>', 'model to measure; repeatable (default: the embedded stories15M)', repeatable()))
    .addOption(option('--backend <name>', `compute backend; repeatable: ${BACKEND_NAMES.join(', ')} (default wasm)`, repeatable(choiceArg('--backend', BACKEND_NAMES, 'backend'))))
    .addOption(option('--dtype <dtype>', `weight dtype; repeatable: ${WEIGHT_DTYPES.join(', ')} (default f32)`, repeatable(choiceArg('--dtype', WEIGHT_DTYPES, 'dtype'))))
    .addOption(option('--kv-dtype <dtype>', 'KV cache element type; repeatable: f32, f16 (default f32)', repeatable(choiceArg('--kv-dtype', ['f32', 'f16'] as const, 'KV dtype'))))
    .addOption(option('--cache <policy>', `cache policy; repeatable: ${CACHE_POLICY_NAMES.join(', ')} (default: full and fastgen)`, repeatable(choiceArg('--cache', CACHE_POLICY_NAMES, 'cache policy'))))
    .addOption(option('--recovery <t>', 'FastGen recovery threshold in (0, 1] (default 0.95)', numberArg('--recovery', { above: 0, max: 1 })))
    .addOption(option('--tests <list>', 'comma-separated tests: ppN (prefill N), tgN (decode N), tgN@dD (after a D-token context), tgNxB (B sequences in one batch), genN / sampleN (decode N through generate(), greedy / T=0.8 top-p 0.9) (default pp128,tg128,gen128,sample128,tg128@d200)'))
    .addOption(option('-r, --repetitions <n>', 'measured rounds, after one warm-up round (default 3)', numberArg('--repetitions', { integer: true, min: 1 })))
    .addOption(option('--threads <n>', `worker threads of the wasm backend, 1 to ${MAX_THREADS} (default 2; llama2.c: 1 and 2)`, numberArg('--threads', { integer: true, min: 1, max: MAX_THREADS })))
    .addOption(option('--synthetic <shape>', `webgpu: random weights of a real model's shape built on the GPU, no file; repeatable: ${Object.keys(SYNTHETIC_CONFIGS).join(', ')}`, repeatable(choiceArg('--synthetic', Object.keys(SYNTHETIC_CONFIGS), 'synthetic shape'))))
    .addOption(option('--policy-mix <spec>', "--synthetic: FastGen's per-head policies for the fastgen rows, as policy=share,… (e.g. full=0.4,local@0.3=0.3,special+frequent@0.1+local@0.2=0.3) or 'stories15m-t0.95' (default: the mix FastGen chose on stories15M at T=0.95)"))
    .addOption(option('--matvec <variant>', "--synthetic: the matrix × few-vectors kernel, a workbench variant name (run.js matvec; default: 'default')"))
    .addOption(option('--context <n>', "--synthetic: the model's context length (default: the shape's; deeper tests need more)", numberArg('--context', { integer: true, min: 2, max: 1 << 20 })))
    .addOption(option('--kv-budget <size>', '--synthetic: also a memory-budget run per tg test: with this KV budget, how many of its xB sequences the server\'s admission admits under each cache, and their throughput', sizeArg('--kv-budget')))
    .addOption(option('--budget-tests <list>', '--kv-budget: the tests of the memory-budget run, tgN@dDxB (B sequences offered) (default: the tg tests with a depth)'))
    .addOption(option('--json', 'print the rows (with every sample) as JSON'))
    .addOption(option('--svg <file>', 'also draw the table as bars', outputFileArg('--svg')))
    .addOption(option('--llama2c <run>', "a compiled llama2.c `run` (legacy format, e.g. gcc -Ofast -march=native -fopenmp run.c), measured on the default model in the same rounds as a tg255 row, with each decode row's ratio to it"));
  cmd.addHelpText(
    'after',
    `
Repetitions run round-robin over all rows (llama2.c included), each round starting one row later, so machine noise
hits every row alike: compare ratios within one run. A row whose spread (sd / mean) exceeds ${UNSTABLE_CV * 100} % is flagged,
and ratios involving it are marked as not meaningful. A test longer than a model's context is clamped to it, and
bench says so.`,
  );
  return cmd;
}

export function benchCommand(args: string[]): Promise<number> {
  return runCommand(benchCli(), args, (p) => bench(p.opts));
}

async function bench(v: Record<string, any>): Promise<number> {
  if (v.synthetic) return benchSynthetic(v);
  for (const flag of ['policyMix', 'context', 'kvBudget', 'budgetTests', 'matvec'] as const) {
    if (v[flag] !== undefined) throw new UsageError(`--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} applies to --synthetic runs only`, `--${flag}`);
  }
  const reps: number = v.repetitions ?? 3;
  const recovery: number = v.recovery ?? 0.95;
  const threads: number | undefined = v.threads;
  const models: (string | undefined)[] = v.model ?? [undefined];
  const backends: (string | undefined)[] = v.backend ?? [undefined];
  const dtypes: (string | undefined)[] = v.dtype ?? [undefined];
  const kvDtypes: ('f32' | 'f16')[] = v.kvDtype ?? ['f32'];
  // Each policy with its defaults (and --recovery where it takes one).
  const caches = ((v.cache ?? ['full', 'fastgen']) as CachePolicyName[]).map((policy) =>
    resolveCacheOptions(cachePolicy(policy).options.some((o) => o.key === 'recovery') ? { policy, recovery } : { policy }));
  const testNames: string[] = (v.tests ?? 'pp128,tg128,gen128,sample128,tg128@d200').split(',').filter(Boolean);
  // Test names are checked before any model loads (their fit to each model's context after).
  for (const t of testNames) parseTest(t, Number.POSITIVE_INFINITY);
  if (v.llama2c !== undefined) checkRunnable(v.llama2c);
  const notes: string[] = [];
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
          specs.forEach((spec, i) => {
            const asked = parseTest(testNames[i], Number.POSITIVE_INFINITY);
            if (spec.n !== asked.n) {
              const note = `${asked.label} runs as ${spec.label}: ${model.config.name}'s context is ${model.config.maxSeqLen} tokens`;
              if (!notes.includes(note)) notes.push(note);
            }
          });
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
    for (const n of notes) process.stderr.write(`bench: ${n}\n`);
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
  const throughGenerate = generateComparison(rows);
  if (v.svg) writeFileSync(v.svg as string, benchSvg(rows, machineLine()));
  if (v.json) {
    const flagged = rows.map((r) => ({ ...r, unstable: unstable(r) }));
    console.log(JSON.stringify({ date: new Date().toISOString(), machine: machineLine(), notes, rows: flagged, versusLlama2c: versus, generateVsDecode: throughGenerate }, null, 2));
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
        `${r.tokensPerSecond.toFixed(2)} ± ${r.stddev.toFixed(2)}${unstable(r) ? ' (!)' : ''}`,
      ]),
      ['l', 'r', 'r', 'l', 'r', 'l', 'l', 'l', 'r'],
    ),
  );
  if (rows.some(unstable)) console.log(`\n(!) spread over ${UNSTABLE_CV * 100} % of the mean: the machine was busy; ratios with this row are not meaningful, rerun`);
  for (const n of notes) console.log(`note: ${n}`);
  if (throughGenerate.length > 0) {
    console.log('\nthrough generate() vs the engine\'s decode (same rounds):');
    for (const c of throughGenerate) console.log(`  ${c.row}: ${c.ratio.toFixed(2)}× ${c.decodeRow}${c.meaningful ? '' : '  (not meaningful: spread too large)'}`);
  }
  if (versus.length > 0) {
    const base = versus[0];
    console.log(`\ndecode vs llama2.c run with ${base.llama2cThreads} threads (${base.llama2cTokensPerSecond.toFixed(1)} t/s, same rounds):`);
    for (const c of versus) console.log(`  ${c.row}: ${c.ratio.toFixed(2)}×${c.meaningful ? '' : '  (not meaningful: spread too large)'}`);
  }
  console.log(`\n${machineLine()}`);
  return 0;
}

/** `bench --synthetic`: the WebGPU backend on random weights of real shapes (bench-gpu.ts). */
async function benchSynthetic(v: Record<string, any>): Promise<number> {
  const bad = (flag: string, why: string): never => { throw new UsageError(`--synthetic: ${flag} ${why}`, flag); };
  if (v.model) bad('--model', 'does not apply (the weights are random, of the named shape)');
  if (v.backend && v.backend.some((b: string) => b !== 'webgpu')) bad('--backend', 'must be webgpu (synthetic models are built on the GPU)');
  if (v.kvDtype && new Set(v.kvDtype).size > 1) bad('--kv-dtype', 'takes one KV dtype per synthetic run (every row shares the weights; run again for the other)');
  if (v.llama2c) bad('--llama2c', 'compares the default model on the CPU; run it without --synthetic');
  if (v.threads) bad('--threads', 'applies to the wasm backend');
  if (v.svg) bad('--svg', 'is not drawn for synthetic runs; use --json (scripts/gpu-bench.sh plots it)');
  const caches: string[] = v.cache ?? ['full', 'fastgen'];
  for (const c of caches) if (c === 'snapkv') bad('--cache', 'snapkv selects from the prompt\'s attention, which random weights and a filled context do not have');
  const mix = parsePolicyMix(v.policyMix);
  const testNames: string[] = (v.tests ?? 'pp512,tg128,tg128@d2048').split(',').filter(Boolean);
  // ppN and tgN (with depth and batch) only: genN / sampleN time generate() on a real model.
  const gpuTest = (t: TestSpec): GpuTestSpec => {
    if (t.kind !== 'pp' && t.kind !== 'tg') bad('--tests', `'${t.label}': synthetic runs measure ppN and tgN tests (generate() needs a real model and tokenizer)`);
    return t as GpuTestSpec;
  };
  const tests = testNames.map((t) => gpuTest(parseTest(t, Number.POSITIVE_INFINITY)));
  const dtypes = (v.dtype ?? ['f16']) as WeightKind[];
  if (v.budgetTests !== undefined && v.kvBudget === undefined) bad('--budget-tests', 'needs --kv-budget');
  const budgetTests = v.budgetTests === undefined ? undefined : (v.budgetTests as string).split(',').filter(Boolean).map((t) => gpuTest(parseTest(t, Number.POSITIVE_INFINITY)));
  for (const t of budgetTests ?? []) if (t.kind !== 'tg' || t.depth === 0) bad('--budget-tests', `'${t.label}' is not a tgN@dDxB test (a budget run decodes sequences of a given depth)`);
  const log = (line: string) => { if (!v.json) process.stderr.write(`${line}\n`); };
  const matvec: string | undefined = v.matvec;
  if (matvec !== undefined) {
    try { parseMatvecVariant(matvec); } catch (e) { bad('--matvec', (e as Error).message); }
  }
  const { WebGpuBackend } = await import('../backend/webgpu/backend.js');
  const { rows, notes } = await runGpuBench({
    shapes: v.synthetic, configs: SYNTHETIC_CONFIGS, dtypes, caches, tests, reps: v.repetitions ?? 3, mix, kvBudgetBytes: v.kvBudget, budgetTests, context: v.context, log,
    kvDtype: v.kvDtype?.[0],
    create: async (config, dtype) => {
      const backend = await WebGpuBackend.createSynthetic(config, { dtype });
      if (matvec !== undefined) backend.ops.setMatvecVariant(matvec);
      return backend;
    },
  });
  if (matvec !== undefined) notes.push(`matrix × few-vectors kernel: variant '${matvec}' (--matvec)`);
  if (v.json) {
    console.log(JSON.stringify({ date: new Date().toISOString(), machine: machineLine(), adapter: rows[0]?.adapter, notes, policyMix: mix, rows }, null, 2));
  } else {
    console.log(formatGpuRows(rows, notes));
    console.log(`\n${rows[0]?.adapter ?? ''} · ${machineLine()}`);
  }
  return 0;
}

/** A row's spread (sample sd / mean) above which a ratio to or from it says more about the machine than the code. */
const UNSTABLE_CV = 0.2;

function unstable(r: Pick<BenchRow, 'tokensPerSecond' | 'stddev'>): boolean {
  return !(r.tokensPerSecond > 0) || r.stddev / r.tokensPerSecond > UNSTABLE_CV;
}

/**
 * Each single-sequence decode row of ours with llama2.c's thread count, as a ratio to llama2.c's run: the row with
 * the most threads among those whose spread is small (a collapsed row, e.g. 25 ± 18 t/s on a loaded machine, would
 * make any ratio meaningless); only when every llama2.c row is unstable the one with the most threads, and then no
 * ratio is meaningful. Ratios of means over the same interleaved rounds.
 */
export function llama2cComparison(rows: BenchRow[]): { row: string; ratio: number; llama2cThreads: number; llama2cTokensPerSecond: number; meaningful: boolean }[] {
  const refs = rows.filter((r) => r.backend === 'llama2.c run');
  if (refs.length === 0) return [];
  const stable = refs.filter((r) => !unstable(r));
  const ref = (stable.length > 0 ? stable : refs).reduce((a, b) => (b.threads > a.threads ? b : a));
  return rows
    .filter((r) => r.backend !== 'llama2.c run' && r.test.startsWith('tg') && !r.test.includes(' x') && r.threads === ref.threads)
    .map((r) => ({
      row: `${r.backend} ${r.dtype} ${r.cache} ${r.test}`,
      ratio: r.tokensPerSecond / ref.tokensPerSecond,
      llama2cThreads: ref.threads,
      llama2cTokensPerSecond: ref.tokensPerSecond,
      meaningful: !unstable(r) && !unstable(ref),
    }));
}

/**
 * Each genN / sampleN row as a ratio to the tgN row of the same model, backend, threads, dtype, cache and context:
 * what a user streaming from Model.generate() gets of the engine's decode rate, from the same interleaved rounds.
 */
export function generateComparison(rows: BenchRow[]): { row: string; decodeRow: string; ratio: number; meaningful: boolean }[] {
  const key = (r: BenchRow, test: string) => [r.model, r.backend, r.threads, r.dtype, r.cache, test].join('|');
  const decode = new Map(rows.filter((r) => r.test.startsWith('tg')).map((r) => [key(r, r.test), r]));
  return rows.flatMap((r) => {
    const m = /^(gen|sample)(.*)$/.exec(r.test);
    const base = m ? decode.get(key(r, `tg${m[2]}`)) : undefined;
    if (!m || !base) return [];
    return [{
      row: `${r.backend} ${r.dtype} ${r.cache} ${r.test}`,
      decodeRow: base.test,
      ratio: r.tokensPerSecond / base.tokensPerSecond,
      meaningful: !unstable(r) && !unstable(base),
    }];
  });
}

/** The --llama2c binary must exist and be executable (checked before any model loads). */
function checkRunnable(bin: string): void {
  try {
    accessSync(bin, constants.X_OK);
    if (!statSync(bin).isFile()) throw new Error('not a file');
  } catch {
    throw new FastgenError('INVALID_OPTION', `--llama2c: ${bin} is not an executable file; build llama2.c's run (e.g. gcc -Ofast -march=native -fopenmp run.c -lm -o run) and pass its path`, '--llama2c');
  }
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
