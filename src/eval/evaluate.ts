/**
 * `fastgen eval` as a library call: build the prompts, run every configuration on every prompt (in this thread or in
 * worker threads, one prompt at a time per worker), summarise, and check the invariants.
 */
import { appendFileSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, platform } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { CACHE_POLICIES, resolveCacheOptions } from '../cache/policies/index.js';
import type { BaselineName } from './types.js';
import type { BackendName, WeightDtype } from '../backend/index.js';
import { InvalidOptionError } from '../errors.js';
import { loadModel, type Model } from '../generate/model.js';
import type { ProgressStream } from '../model/progress.js';
import { checkInvariants, controlSummary, summarize } from './aggregate.js';
import { EvalProgress } from './progress.js';
import { buildPrompts, checkMaxTokens, type EvalPrompt } from './prompts.js';
import { configSpecs, estimateCost, PromptEvaluator } from './runner.js';
import type { EvalReport, EvalSettings, PromptResult } from './types.js';

const DEFAULT_THRESHOLDS = [0.91, 0.93, 0.95, 0.98, 1];
const QUICK_THRESHOLDS = [0.91, 0.95, 1];

export interface EvalOptions {
  /** Model path (default: the embedded stories15M). */
  modelPath?: string;
  backend?: BackendName;
  dtype?: WeightDtype;
  /** Threads per model for backends that use them (wasm). Default: the backend's own with one job, else cores / jobs. */
  threads?: number;
  /** A model already loaded in this thread (tests); workers still load their own from modelPath. */
  model?: Model;
  quick?: boolean;
  thresholds?: number[];
  prompts?: number;
  maxTokens?: number;
  seed?: number;
  /** Worker threads (1 = run in this thread). Default: one per core, at most one per prompt. */
  jobs?: number;
  /** Folder with tinystories_sample.txt and tinyshakespeare.txt (default ../shared/data next to the repository). */
  dataDir?: string;
  controlPairs?: number;
  /** Judge samples per prompt and configuration (default 1). */
  samples?: number;
  ablation?: boolean;
  /** Uniform baselines to run at each FastGen point's memory (default: every registered baseline; [] for none). */
  baselines?: string[];
  /** Run the paper's variant beside the default at every T (default: yes, except --quick). */
  paper?: boolean;
  /** Options of the default FastGen variant in the sweep (validated by the policy), e.g. { margin: 0 }. */
  fastgen?: Record<string, number | string>;
  /** JSON-lines file of finished prompts: reused by a rerun with the same settings, deleted when the run completes. */
  checkpoint?: string;
  /** Progress output (default stderr); quiet turns it off. */
  stream?: ProgressStream;
  quiet?: boolean;
}

/** ../shared/data beside the repository (dist/src/eval → repository root is three levels up). */
export function defaultDataDir(): string {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  return join(process.env.FASTGEN_SHARED ?? join(root, '..', 'shared'), 'data');
}

export function resolveSettings(opts: EvalOptions, contextLength: number): EvalSettings & { prompts: number } {
  const quick = !!opts.quick;
  const thresholds = opts.thresholds ?? (quick ? QUICK_THRESHOLDS : DEFAULT_THRESHOLDS);
  if (thresholds.length === 0) throw new InvalidOptionError('--thresholds: give at least one value', '--thresholds');
  for (const T of thresholds) {
    if (!(T > 0 && T <= 1)) throw new InvalidOptionError(`--thresholds: each T must be in (0, 1], got ${T}`, '--thresholds');
  }
  const prompts = opts.prompts ?? (quick ? 2 : 20);
  if (!Number.isInteger(prompts) || prompts < 1) throw new InvalidOptionError(`--prompts must be a positive integer, got ${prompts}`, '--prompts');
  const maxTokens = opts.maxTokens ?? (quick ? 16 : 96);
  checkMaxTokens(contextLength, maxTokens);
  const controlPairs = opts.controlPairs ?? (quick ? 3 : 2);
  // Seeds per prompt i: judge samples seed + 1000·i + 100·j, control pairs seed + 1000·i + 50 + 2k (+1): more than 24
  // pairs would reach the second judge sample's seed.
  if (!Number.isInteger(controlPairs) || controlPairs < 0 || controlPairs > 24) {
    throw new InvalidOptionError(`--control must be an integer from 0 to 24, got ${controlPairs}`, '--control');
  }
  const samples = opts.samples ?? 1;
  if (!Number.isInteger(samples) || samples < 1) throw new InvalidOptionError(`--samples must be a positive integer, got ${samples}`, '--samples');
  const known = CACHE_POLICIES.filter((p) => p.baseline).map((p) => p.name as BaselineName);
  const baselines = opts.baselines ?? known;
  for (const b of baselines) {
    if (!known.includes(b as BaselineName)) throw new InvalidOptionError(`--baselines: '${b}' is not a baseline; choose from ${known.join(', ')} (or none)`, '--baselines');
  }
  const fastgen = opts.fastgen ?? {};
  for (const key of ['policy', 'recovery', 'variant', 'gqa', 'exclude']) {
    if (key in fastgen) throw new InvalidOptionError(`--set: ${key} is set by the evaluation itself`, '--set');
  }
  resolveCacheOptions({ policy: 'fastgen', ...fastgen });
  const seed = opts.seed ?? 1234;
  if (!Number.isSafeInteger(seed)) throw new InvalidOptionError(`--seed must be an integer, got ${seed}`, '--seed');
  return {
    thresholds: [...new Set(thresholds)].sort((a, b) => b - a),
    baselines: baselines as BaselineName[],
    paper: opts.paper ?? !quick,
    fastgen,
    ablation: opts.ablation ?? !quick,
    ablationT: 0.98,
    gqaMin: true,
    maxTokens,
    seed,
    controlPairs,
    samples,
    temperature: 0.6,
    topP: 0.9,
    prompts,
  };
}

export async function runEvaluation(opts: EvalOptions = {}): Promise<EvalReport> {
  const t0 = Date.now();
  const model = opts.model ?? (await loadModel(opts.modelPath, { backend: opts.backend, dtype: opts.dtype, threads: opts.threads }));
  try {
    const c = model.config;
    const settings = resolveSettings(opts, c.maxSeqLen);
    const stream = opts.stream ?? process.stderr;
    const quiet = !!opts.quiet;
    if (!quiet && !stream.isTTY) stream.write(`eval: ${c.name} on ${model.backend.name}: building ${settings.prompts} prompts\n`);
    const prompts = await buildPrompts(model, {
      count: settings.prompts,
      maxTokens: settings.maxTokens,
      dataDir: opts.dataDir ?? defaultDataDir(),
      seed: settings.seed,
    });
    const specs = configSpecs(settings, c.nHeads, c.nKvHeads);
    const costs = prompts.map((p) => estimateCost(p.ids.length, p.reference.length, settings));
    const total = costs.reduce((a, x) => a + x.full + specs.length * x.config, 0);
    const jobs = Math.max(1, Math.min(opts.jobs ?? availableParallelism(), prompts.length));
    const progress = new EvalProgress(total, prompts.length, `eval ${c.name}`, stream, quiet);
    if (!quiet && !stream.isTTY) {
      stream.write(`eval: ${prompts.length} prompts × ${specs.length} cache configurations + full, ${settings.maxTokens} tokens each, ${jobs} job(s)\n`);
    }

    // Checkpoint: finished prompts are appended to a JSON-lines file as they complete; a rerun with the same file,
    // model and settings reuses them and runs only the rest (long cpu-ref evaluations survive being stopped).
    const results: PromptResult[] = new Array(prompts.length);
    const fingerprint = checkpointFingerprint(model, settings, prompts);
    const resumed = opts.checkpoint ? readCheckpoint(opts.checkpoint, fingerprint, prompts.length) : new Map<number, PromptResult>();
    for (const [i, r] of resumed) {
      results[i] = r;
      progress.add(costs[i].full + specs.length * costs[i].config);
      progress.promptDone(`${prompts[i].id}, from checkpoint`);
    }
    const todo = prompts.map((_, i) => i).filter((i) => !resumed.has(i));
    const onResult = (i: number, r: PromptResult) => {
      results[i] = r;
      if (opts.checkpoint) appendFileSync(opts.checkpoint, JSON.stringify({ fingerprint, index: i, result: r }) + '\n');
    };
    try {
      if (todo.length) {
        const workers = Math.min(jobs, todo.length);
        if (workers <= 1) await runInThread(model, settings, prompts, todo, progress, onResult);
        else await runInWorkers(opts, settings, prompts, todo, workers, progress, onResult);
      }
    } finally {
      progress.finish();
    }
    if (opts.checkpoint && existsSync(opts.checkpoint)) rmSync(opts.checkpoint);

    const points = summarize(specs, results);
    const control = controlSummary(results);
    const invariants = checkInvariants(specs, points, results, control);
    const fullPpl = points[0]?.fullPpl ?? NaN;
    const cpuList = cpus();
    return {
      version: 1,
      model: {
        name: c.name,
        path: model.source.path,
        nLayers: c.nLayers,
        nHeads: c.nHeads,
        nKvHeads: c.nKvHeads,
        headDim: c.headDim,
        contextLength: c.maxSeqLen,
        parameters: model.parameters,
        attention: c.nKvHeads === c.nHeads ? 'multi-head' : c.nKvHeads === 1 ? 'multi-query' : 'grouped-query',
      },
      backend: model.backend.name,
      settings: { ...settings, quick: !!opts.quick, jobs },
      machine: {
        date: new Date().toISOString(),
        cpu: cpuList[0]?.model?.trim() ?? 'unknown',
        cores: availableParallelism(),
        node: process.version,
        platform: `${platform()} ${process.arch}`,
      },
      wallMs: Date.now() - t0,
      resumedPrompts: resumed.size,
      control,
      fullPpl,
      points,
      invariants,
      prompts: results,
    };
  } finally {
    if (!opts.model) model.dispose();
  }
}

/** What must match for a checkpointed prompt result to be reused: model, backend, settings and the prompts themselves. */
export function checkpointFingerprint(model: Model, settings: EvalSettings, prompts: EvalPrompt[]): string {
  return JSON.stringify({ model: model.source.path, backend: model.backend.name, weights: model.backend.weightDtype, settings, prompts });
}

/** Prompt results saved by an earlier run with the same fingerprint (other lines, e.g. from other settings, ignored). */
function readCheckpoint(file: string, fingerprint: string, count: number): Map<number, PromptResult> {
  const out = new Map<number, PromptResult>();
  if (!existsSync(file)) return out;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      const rec = JSON.parse(line) as { fingerprint: string; index: number; result: PromptResult };
      if (rec.fingerprint === fingerprint && Number.isInteger(rec.index) && rec.index >= 0 && rec.index < count) out.set(rec.index, rec.result);
    } catch {
      // a line cut short when the run was stopped
    }
  }
  return out;
}

type OnResult = (index: number, result: PromptResult) => void;

async function runInThread(model: Model, settings: EvalSettings, prompts: EvalPrompt[], todo: number[], progress: EvalProgress, onResult: OnResult): Promise<void> {
  const ev = new PromptEvaluator(model, settings);
  for (const i of todo) {
    onResult(i, await ev.run(prompts[i], i, (cost) => progress.add(cost)));
    progress.promptDone(prompts[i].id);
  }
}

type WorkerMessage =
  | { type: 'ready' }
  | { type: 'progress'; cost: number }
  | { type: 'result'; index: number; result: PromptResult }
  | { type: 'error'; message: string; code?: string };

async function runInWorkers(
  opts: EvalOptions,
  settings: EvalSettings,
  prompts: EvalPrompt[],
  todo: number[],
  jobs: number,
  progress: EvalProgress,
  onResult: OnResult,
): Promise<void> {
  let next = 0;
  let finished = 0;
  const workers: Worker[] = [];
  try {
    await new Promise<void>((resolvePool, rejectPool) => {
      let failed = false;
      const fail = (e: Error) => {
        if (failed) return;
        failed = true;
        rejectPool(e);
      };
      const dispatch = (w: Worker) => {
        if (next >= todo.length) return;
        const index = todo[next++];
        w.postMessage({ type: 'run', index, prompt: prompts[index] });
      };
      for (let j = 0; j < jobs; j++) {
        const w = new Worker(new URL('./worker.js', import.meta.url), {
          workerData: {
            modelPath: opts.modelPath,
            backend: opts.backend,
            dtype: opts.dtype,
            // Prompts already run in parallel: a multi-threaded backend gets its share of the cores, not all of them.
            threads: opts.threads ?? Math.max(1, Math.floor(availableParallelism() / jobs)),
            settings,
          },
        });
        workers.push(w);
        w.on('message', (m: WorkerMessage) => {
          if (m.type === 'ready') dispatch(w);
          else if (m.type === 'progress') progress.add(m.cost);
          else if (m.type === 'result') {
            onResult(m.index, m.result);
            finished++;
            progress.promptDone(prompts[m.index].id);
            if (finished === todo.length) resolvePool();
            else dispatch(w);
          } else if (m.type === 'error') {
            fail(m.code === 'INVALID_OPTION' ? new InvalidOptionError(m.message) : new Error(`eval worker: ${m.message}`));
          }
        });
        w.on('error', (e) => fail(e));
        w.on('exit', (code) => {
          if (finished < todo.length && code !== 0) fail(new Error(`eval worker exited with code ${code}`));
        });
      }
    });
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
