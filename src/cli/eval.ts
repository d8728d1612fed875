/**
 * `fastgen eval`: FastGen's quality against KV-cache compression, with the uniform baselines at matched memory.
 * See src/eval/ for what is measured and how; `fastgen eval --help` for the flags.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { defaultDataDir, runEvaluation, type EvalOptions } from '../eval/evaluate.js';
import { OOD_FILE, STORIES_FILE } from '../eval/prompts.js';
import { modelOptions, newCommand, numberArg, option, parseCommand, UsageError } from './args.js';
import { mergeSection, mergeSummary, readOrSkeleton, renderMarkdownSection, renderText, reportJson, summaryRows, type FigurePaths } from '../eval/report.js';
import { policiesByLayerSvg, qualityVsKvSvg, recoverySvg } from '../eval/svg.js';

export function evalCli() {
  const cmd = newCommand(
    'fastgen eval',
    `Sweeps FastGen's recovery threshold T and runs every uniform baseline (local, frequent, local+frequent, sink+local)
at the KV ratio each FastGen point reached, on the same prompts and seeds. Per point: KV pruned %, teacher-forced
perplexity and KL(full ‖ compressed), greedy agreement (matched prefix, ROUGE-L), likelihood-judge win rate against
the full cache (50 % = lossless) with its full-vs-full control, decode-time attention recovery vs the promised T,
profiling time share; the paper's ablation (T = 0.98) and, for grouped-query models, gqa mean vs min.`,
  );
  modelOptions(cmd, { tokenizer: false, kvBudget: false, kvDtype: false });
  cmd
    .addOption(option('--quick', 'small run for CI: T ∈ {0.91, 0.95, 1}, 2 prompts × 16 tokens, no ablation'))
    .addOption(option('--thresholds <list>', 'comma-separated T values (default 0.91,0.93,0.95,0.98,1)', (v) => parseList(v, '--thresholds')))
    .addOption(option('--prompts <n>', 'number of prompts (default 20; --quick 2)', numberArg('--prompts', { integer: true, min: 1 })))
    .addOption(option('-n, --max-tokens <n>', 'tokens generated per prompt (default 96; --quick 16)', numberArg('--max-tokens', { integer: true, min: 1 })))
    .addOption(option('-j, --jobs <n>', 'worker threads, one prompt each at a time (default: one per core)', numberArg('--jobs', { integer: true, min: 1 })))
    .addOption(option('--seed <n>', 'base seed for prompts and sampling (default 1234)', numberArg('--seed', { integer: true })))
    .addOption(option('--samples <n>', 'judge samples per prompt and configuration, seeds differ (default 1)', numberArg('--samples', { integer: true, min: 1 })))
    .addOption(option('--control <n>', 'full-vs-full control pairs per prompt (default 2; --quick 3)', numberArg('--control', { integer: true, min: 0 })))
    .addOption(option('--no-ablation', 'skip the ablation'))
    .addOption(option('--baselines <list>', "comma-separated uniform baselines to run at FastGen's memory, or 'none' (default: all)", parseNames))
    .addOption(option('--no-paper', "skip the paper's variant beside the default"))
    .addOption(option('--set <options>', 'options of the default FastGen variant in the sweep, e.g. margin=0,minFrequent=0 (see fastgen generate --help)', parseSettings))
    .addOption(option('--data <dir>', `folder with tinystories_sample.txt and tinyshakespeare.txt, or any folder of .txt files (passages at blank lines; default: ${DEFAULT_DATA_HINT})`))
    .addOption(option('--json', 'print the whole report as JSON instead of tables'))
    .addOption(option('--out <file>', 'also write the JSON report to FILE'))
    .addOption(option('--checkpoint <file>', 'save each finished prompt to FILE; a rerun with the same settings resumes from it'))
    .addOption(option('--svg-dir <dir>', 'write figures: <model>-quality-vs-kv.svg, -policies-by-layer.svg, -recovery.svg'))
    .addOption(option('--markdown <file>', "insert/replace this model's section in a Markdown file (e.g. docs/results.md)"));
  cmd.addHelpText(
    'after',
    `
Progress and ETA go to stderr. Exit status 3 when an invariant fails (T = 1 must equal the full cache, pruning must
not shrink as T falls, the judge's control must land near 50 %).`,
  );
  return cmd;
}

const DEFAULT_DATA_HINT = '$FASTGEN_SHARED/data, else ../shared/data beside a clone of the repository';

/** Without --data, say what the data is and where it goes before anything loads (an installed copy has none). */
function checkDefaultData(): void {
  const dir = defaultDataDir();
  if (existsSync(join(dir, STORIES_FILE)) && existsSync(join(dir, OOD_FILE))) return;
  throw new UsageError(
    `eval needs its evaluation text and found none in ${dir}. Pass --data DIR, a folder with ${STORIES_FILE} (TinyStories ` +
      `stories separated by <|endoftext|>) and ${OOD_FILE} (Tiny Shakespeare, the out-of-domain prompts); in a clone of ` +
      `the fastgen repository they are in ../shared/data, or set FASTGEN_SHARED to the folder that holds data/.`,
    '--data',
  );
}

function parseNames(s: string): string[] {
  const out = s.split(',').map((x) => x.trim()).filter((x) => x.length > 0);
  return out.length === 1 && out[0] === 'none' ? [] : out;
}

function parseSettings(s: string): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  for (const part of s.split(',').map((x) => x.trim()).filter(Boolean)) {
    const m = /^([A-Za-z]+)=(.+)$/.exec(part);
    if (!m) throw new UsageError(`--set expects key=value pairs separated by commas, got '${part}'`, '--set');
    out[m[1]] = Number.isFinite(Number(m[2])) ? Number(m[2]) : m[2];
  }
  return out;
}

function parseList(s: string, flag: string): number[] {
  const out = s.split(',').map((x) => x.trim()).filter((x) => x.length > 0).map(Number);
  if (out.length === 0 || out.some((x) => !Number.isFinite(x))) throw new UsageError(`${flag} expects comma-separated numbers, got '${s}'`, flag);
  return out;
}

/** `io.stdout` receives the tables or JSON (default process.stdout); progress and errors go to stderr. */
export async function evalCommand(args: string[], io: { stdout?: { write(s: string): unknown } } = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const parsed = parseCommand(evalCli(), args);
  if (parsed === null) return 0;
  const values = parsed.opts;
  const opts: EvalOptions = {
    modelPath: values.model,
    backend: values.backend,
    dtype: values.dtype,
    quick: !!values.quick,
    thresholds: values.thresholds,
    prompts: values.prompts,
    maxTokens: values.maxTokens,
    jobs: values.jobs,
    threads: values.threads,
    seed: values.seed,
    controlPairs: values.control,
    samples: values.samples,
    ablation: values.ablation === false ? false : undefined,
    baselines: values.baselines,
    paper: values.paper === false ? false : undefined,
    fastgen: values.set,
    dataDir: values.data,
    checkpoint: values.checkpoint,
  };

  if (opts.dataDir === undefined) checkDefaultData();
  const report = await runEvaluation(opts);

  if (values.out) {
    mkdirSync(dirname(values.out), { recursive: true });
    writeFileSync(values.out, reportJson(report));
  }
  const figures: Record<keyof FigurePaths, string> | undefined = values.svgDir
    ? {
        quality: join(values.svgDir, `${report.model.name}-quality-vs-kv.svg`),
        policies: join(values.svgDir, `${report.model.name}-policies-by-layer.svg`),
        recovery: join(values.svgDir, `${report.model.name}-recovery.svg`),
      }
    : undefined;
  if (figures) {
    mkdirSync(values.svgDir!, { recursive: true });
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
