/**
 * `fastgen eval`: FastGen's quality against KV-cache compression, with the uniform baselines at matched memory.
 * See src/eval/ for what is measured and how; `fastgen eval --help` for the flags.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { BACKEND_NAMES, WEIGHT_DTYPES, type BackendName, type WeightDtype } from '../backend/index.js';
import { InvalidOptionError } from '../errors.js';
import { runEvaluation, type EvalOptions } from '../eval/evaluate.js';
import { mergeSection, mergeSummary, readOrSkeleton, renderMarkdownSection, renderText, reportJson, summaryRows, type FigurePaths } from '../eval/report.js';
import { policiesByLayerSvg, qualityVsKvSvg, recoverySvg } from '../eval/svg.js';

export const EVAL_USAGE = `usage: fastgen eval [options]

Sweeps FastGen's recovery threshold T and runs every uniform baseline (local, frequent, local+frequent, sink+local)
at the KV ratio each FastGen point reached, on the same prompts and seeds. Per point: KV pruned %, teacher-forced
perplexity and KL(full ‖ compressed), greedy agreement (matched prefix, ROUGE-L), likelihood-judge win rate against
the full cache (50 % = lossless) with its full-vs-full control, decode-time attention recovery vs the promised T,
profiling time share; the paper's ablation (T = 0.98) and, for grouped-query models, gqa mean vs min.

options:
  -m, --model PATH       llama2.c .bin or Hugging Face folder (default: embedded stories15M)
  --backend NAME         ${BACKEND_NAMES.join(' | ')} (default: the engine's default)   --dtype f32|f16|q8_0
  --quick                small run for CI: T ∈ {0.91, 0.95, 1}, 2 prompts × 16 tokens, no ablation
  --thresholds LIST      comma-separated T values (default 0.91,0.93,0.95,0.98,1)
  --prompts N            number of prompts (default 20; --quick 2)
  -n, --max-tokens N     tokens generated per prompt (default 96; --quick 16)
  -j, --jobs N           worker threads, one prompt each at a time (default: one per core)
  --threads N            threads per model for multi-threaded backends (default: cores / jobs)
  --seed N               base seed for prompts and sampling (default 1234)
  --samples N            judge samples per prompt and configuration, seeds differ (default 1)
  --control N            full-vs-full control pairs per prompt (default 2; --quick 3)
  --no-ablation          skip the ablation
  --data DIR             folder with tinystories_sample.txt and tinyshakespeare.txt (default ../shared/data)
  --json                 print the whole report as JSON instead of tables
  --out FILE             also write the JSON report to FILE
  --checkpoint FILE      save each finished prompt to FILE; a rerun with the same settings resumes from it
  --svg-dir DIR          write figures: <model>-quality-vs-kv.svg, -policies-by-layer.svg, -recovery.svg
  --markdown FILE        insert/replace this model's section in a Markdown file (e.g. docs/results.md)

Progress and ETA go to stderr. Exit status 3 when an invariant fails (T = 1 must equal the full cache, pruning must
not shrink as T falls, the judge's control must land near 50 %).`;

function parseList(s: string, flag: string): number[] {
  const out = s.split(',').map((x) => x.trim()).filter((x) => x.length > 0).map(Number);
  if (out.length === 0 || out.some((x) => !Number.isFinite(x))) throw new InvalidOptionError(`${flag} expects comma-separated numbers, got '${s}'`, flag);
  return out;
}

function int(s: string | undefined, flag: string): number | undefined {
  if (s === undefined) return undefined;
  const x = Number(s);
  if (s.trim() === '' || !Number.isInteger(x)) throw new InvalidOptionError(`${flag} expects an integer, got '${s}'`, flag);
  return x;
}

/** `io.stdout` receives the tables or JSON (default process.stdout); progress and errors go to stderr. */
export async function evalCommand(args: string[], io: { stdout?: { write(s: string): unknown } } = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const { values } = parseArgs({
    args,
    allowPositionals: false,
    options: {
      model: { type: 'string', short: 'm' },
      backend: { type: 'string' },
      dtype: { type: 'string' },
      quick: { type: 'boolean' },
      json: { type: 'boolean' },
      thresholds: { type: 'string' },
      prompts: { type: 'string' },
      'max-tokens': { type: 'string', short: 'n' },
      jobs: { type: 'string', short: 'j' },
      threads: { type: 'string' },
      seed: { type: 'string' },
      control: { type: 'string' },
      samples: { type: 'string' },
      'no-ablation': { type: 'boolean' },
      data: { type: 'string' },
      'svg-dir': { type: 'string' },
      out: { type: 'string' },
      checkpoint: { type: 'string' },
      markdown: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    stdout.write(EVAL_USAGE + '\n');
    return 0;
  }
  if (values.backend !== undefined && !(BACKEND_NAMES as readonly string[]).includes(values.backend)) {
    throw new InvalidOptionError(`unknown backend '${values.backend}'; available: ${BACKEND_NAMES.join(', ')}`, '--backend');
  }
  if (values.dtype !== undefined && !(WEIGHT_DTYPES as readonly string[]).includes(values.dtype)) {
    throw new InvalidOptionError(`unknown dtype '${values.dtype}'; expected one of ${WEIGHT_DTYPES.join(', ')}`, '--dtype');
  }
  const jobs = int(values.jobs, '--jobs');
  if (jobs !== undefined && jobs < 1) throw new InvalidOptionError(`--jobs must be ≥ 1, got ${jobs}`, '--jobs');
  const opts: EvalOptions = {
    modelPath: values.model,
    backend: values.backend as BackendName | undefined,
    dtype: values.dtype as WeightDtype | undefined,
    quick: !!values.quick,
    thresholds: values.thresholds !== undefined ? parseList(values.thresholds, '--thresholds') : undefined,
    prompts: int(values.prompts, '--prompts'),
    maxTokens: int(values['max-tokens'], '--max-tokens'),
    jobs,
    threads: int(values.threads, '--threads'),
    seed: int(values.seed, '--seed'),
    controlPairs: int(values.control, '--control'),
    samples: int(values.samples, '--samples'),
    ablation: values['no-ablation'] ? false : undefined,
    dataDir: values.data,
    checkpoint: values.checkpoint,
  };

  const report = await runEvaluation(opts);

  if (values.out) {
    mkdirSync(dirname(values.out), { recursive: true });
    writeFileSync(values.out, reportJson(report));
  }
  const figures: Record<keyof FigurePaths, string> | undefined = values['svg-dir']
    ? {
        quality: join(values['svg-dir'], `${report.model.name}-quality-vs-kv.svg`),
        policies: join(values['svg-dir'], `${report.model.name}-policies-by-layer.svg`),
        recovery: join(values['svg-dir'], `${report.model.name}-recovery.svg`),
      }
    : undefined;
  if (figures) {
    mkdirSync(values['svg-dir']!, { recursive: true });
    writeFileSync(figures.quality, qualityVsKvSvg(report));
    writeFileSync(figures.policies, policiesByLayerSvg(report));
    writeFileSync(figures.recovery, recoverySvg(report));
  }
  if (values.markdown) {
    const file = values.markdown;
    const rel = (p: string) => relative(dirname(file), p).split('\\').join('/');
    const links: FigurePaths = figures ? { quality: rel(figures.quality), policies: rel(figures.policies), recovery: rel(figures.recovery) } : {};
    const section = renderMarkdownSection(report, links, `fastgen eval ${args.join(' ')}`);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, mergeSummary(mergeSection(readOrSkeleton(file), report.model.name, section), report.model.name, summaryRows(report)));
  }

  if (values.json) stdout.write(reportJson(report));
  else stdout.write(renderText(report) + '\n');

  const failed = report.invariants.filter((i) => !i.ok);
  if (failed.length) {
    for (const f of failed) console.error(`fastgen eval: invariant failed: ${f.name}: ${f.detail}`);
    return 3;
  }
  return 0;
}
