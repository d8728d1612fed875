/**
 * The one argument parser of every `fastgen` command (commander underneath): option declarations shared by the
 * commands, the number / size / choice parsers, and the mapping of errors to messages and exit codes.
 *
 * Exit codes, the same for every command: 0 ok; 1 the command failed (a model that does not load, a prompt too long);
 * 2 bad usage (an unknown or malformed flag, a value out of range: found before any model is loaded); 3 an evaluation
 * invariant failed; 70 an internal error (a bug: please report it with FASTGEN_DEBUG=1's stack trace).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { BACKEND_NAMES, MAX_THREADS, WEIGHT_DTYPES } from '../backend/index.js';
import { allCacheOptions, CACHE_POLICY_NAMES, resolveCacheOptions, type CacheOptions, type OptionSpec } from '../cache/policies/index.js';
import { FastgenError, InvalidOptionError } from '../errors.js';
import { parseSize } from '../format.js';
import type { LoadModelOptions } from '../generate/model.js';
import { validateGenerateOptions, type GenerateOptions } from '../generate/request.js';
import { validateSamplingOptions } from '../generate/sampler.js';
import { terminalProgress } from '../model/progress.js';

export const EXIT = { ok: 0, failed: 1, usage: 2, invariant: 3, internal: 70 } as const;

/** The command line is wrong: exit 2, with the message and a pointer to the command's --help. */
export class UsageError extends InvalidOptionError {
  constructor(message: string, flag?: string) {
    super(message, flag);
    this.name = 'UsageError';
  }
}

export function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Value parsers (each throws a UsageError that names the flag as the user typed it)

export interface NumberRange {
  integer?: boolean;
  min?: number;
  max?: number;
  /** The value must be strictly greater than this. */
  above?: number;
}

export function parseNumber(value: string, flag: string, range: NumberRange = {}): number {
  const x = Number(value);
  if (value.trim() === '' || !Number.isFinite(x) || (range.integer && !Number.isInteger(x))) {
    throw new UsageError(`${flag} expects ${range.integer ? 'an integer' : 'a number'}, got '${value}'`, flag);
  }
  const { min, max, above } = range;
  if ((min !== undefined && x < min) || (max !== undefined && x > max) || (above !== undefined && x <= above)) {
    const lo = above !== undefined ? `> ${above}` : min !== undefined ? `≥ ${min}` : '';
    const want = lo && max !== undefined ? `${lo} and ≤ ${max}` : lo || `≤ ${max}`;
    throw new UsageError(`${flag} must be ${want}, got ${value}`, flag);
  }
  return x;
}

/** A commander argument parser for a number flag. */
export const numberArg = (flag: string, range?: NumberRange) => (v: string) => parseNumber(v, flag, range);

export function parseChoice<T extends string>(value: string, flag: string, choices: readonly T[], noun: string): T {
  if (!(choices as readonly string[]).includes(value)) {
    throw new UsageError(`${flag}: unknown ${noun} '${value}'; expected one of: ${choices.join(', ')}`, flag);
  }
  return value as T;
}

export const choiceArg =
  <T extends string>(flag: string, choices: readonly T[], noun: string) =>
  (v: string) =>
    parseChoice(v, flag, choices, noun);

export const sizeArg = (flag: string) => (v: string) => parseSize(v, flag);

/** A file the command will write: its folder must exist (checked now, not after the model has loaded and run). */
export const outputFileArg = (flag: string) => (v: string) => {
  const dir = dirname(resolve(v));
  if (!existsSync(dir)) throw new UsageError(`${flag}: the folder ${dir} does not exist; create it first or write elsewhere`, flag);
  if (existsSync(v) && statSync(v).isDirectory()) throw new UsageError(`${flag}: ${v} is a folder; give a file name`, flag);
  return v;
};

/** Repeatable flag: every value, in order (each through `parse` when given). */
export const repeatable =
  <T = string>(parse?: (v: string) => T) =>
  (v: string, previous: T[] | undefined): T[] => [...(previous ?? []), parse ? parse(v) : (v as unknown as T)];

export function option(flags: string, help: string, parse?: (value: string, previous: any) => unknown): Option {
  const o = new Option(flags, help);
  if (parse) o.argParser(parse);
  return o;
}

// ---------------------------------------------------------------------------------------------------------------
// Options shared by commands

export function modelOptions(cmd: Command, which: { tokenizer?: boolean; kvBudget?: boolean; dtype?: boolean; kvDtype?: boolean } = {}): Command {
  cmd.addOption(option('-m, --model <path>', 'llama2.c .bin or Hugging Face folder (default: the embedded stories15M)'));
  if (which.tokenizer !== false) cmd.addOption(option('--tokenizer <path>', 'tokenizer file when it is not next to the model'));
  cmd.addOption(option('--backend <name>', `compute backend: ${BACKEND_NAMES.join(', ')} (default wasm)`, choiceArg('--backend', BACKEND_NAMES, 'backend')));
  if (which.dtype !== false) cmd.addOption(option('--dtype <dtype>', `weight dtype of the wasm kernels: ${WEIGHT_DTYPES.join(', ')} (default f32)`, choiceArg('--dtype', WEIGHT_DTYPES, 'dtype')));
  if (which.kvDtype !== false) cmd.addOption(option('--kv-dtype <dtype>', 'KV cache element type: f32 or f16 (half the bytes) (default f32)', choiceArg('--kv-dtype', ['f32', 'f16'] as const, 'KV dtype')));
  if (which.kvBudget !== false) cmd.addOption(option('--kv-budget <size>', 'byte budget of the KV page pool, e.g. 512MiB, 1GiB, 100MB (default: unlimited)', sizeArg('--kv-budget')));
  cmd.addOption(option('--threads <n>', `worker threads of the wasm backend, 1 to ${MAX_THREADS} (default 2)`, numberArg('--threads', { integer: true, min: 1, max: MAX_THREADS })));
  return cmd;
}

export function samplingOptions(cmd: Command): Command {
  return cmd
    .addOption(option('-n, --max-tokens <n>', 'tokens to generate at most (default 256; also stops at a full context)', numberArg('--max-tokens', { integer: true, min: 0 })))
    .addOption(option('-t, --temperature <t>', 'sampling temperature, 0 = greedy (default 1)', numberArg('--temperature')))
    .addOption(option('--top-k <k>', 'keep the k most likely tokens, 0 = off (default 0)', numberArg('--top-k', { integer: true })))
    .addOption(option('--top-p <p>', 'nucleus sampling mass in (0, 1], 1 = off (default 1)', numberArg('--top-p')))
    .addOption(option('--min-p <p>', 'drop tokens below p × the most likely one, in [0, 1) (default 0)', numberArg('--min-p')))
    .addOption(option('--repeat-penalty <r>', 'CTRL repetition penalty, > 0, 1 = off (default 1)', numberArg('--repeat-penalty')))
    .addOption(option('-s, --seed <n>', 'random seed (default: a fresh one)', numberArg('--seed', { integer: true })))
    .addOption(option('--stop <text>', 'stop when this text appears; repeatable', repeatable()))
    .addOption(option('--truncate', 'keep the last tokens of a prompt longer than the context instead of failing'))
    .addOption(option('--ignore-eos', 'keep generating past the end-of-text token'));
}

/** One flag per cache-policy option of the registry, named after its key (localRatio → --local-ratio). */
const CACHE_OPTION_FLAGS = allCacheOptions().map(({ spec, policies }) => ({ spec, policies, flag: `--${kebabCase(spec.key)}`, prop: spec.key }));

function kebabCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

function cacheOptionParser(spec: OptionSpec, flag: string): (v: string, previous: any) => unknown {
  switch (spec.kind) {
    case 'fraction':
    case 'fraction0':
      return numberArg(flag);
    case 'count':
    case 'count0':
      return numberArg(flag, { integer: true });
    case 'choice':
      return choiceArg(flag, spec.choices!, 'value');
    case 'list':
      // Repeatable and comma-separated: --exclude punct --exclude local, or --exclude punct,local.
      return (v: string, previous: string[] | undefined) => [
        ...(previous ?? []),
        ...v.split(',').map((x) => x.trim()).filter(Boolean).map((x) => parseChoice(x, flag, spec.choices!, 'value')),
      ];
  }
}

/** `--cache` and the options of every registered policy, with each option's help, default and policies. */
export function cacheOptions(cmd: Command, which: { policy?: boolean; defaultPolicy?: string } = {}): Command {
  if (which.policy !== false) {
    cmd.addOption(option('--cache <policy>', `KV cache policy: ${CACHE_POLICY_NAMES.join(', ')} (default ${which.defaultPolicy ?? 'full'}; given only a policy's options, that policy)`));
  }
  for (const { spec, policies, flag } of CACHE_OPTION_FLAGS) {
    const value = spec.kind === 'list' ? 'list' : spec.kind === 'choice' ? spec.choices!.join('|') : spec.kind.startsWith('count') ? 'n' : 'r';
    const dflt = spec.default !== undefined && !(Array.isArray(spec.default) && spec.default.length === 0) ? ` (default ${spec.default})` : '';
    const help = spec.help.startsWith(`${policies[0]}: `) ? spec.help.slice(policies[0].length + 2) : spec.help;
    cmd.addOption(option(`${flag} <${value}>`, `${policies.join(', ')}: ${help}${dflt}`, cacheOptionParser(spec, flag)));
  }
  return cmd;
}

type Opts = Record<string, any>;

export function toLoadOptions(o: Opts): LoadModelOptions {
  return {
    backend: o.backend,
    dtype: o.dtype,
    tokenizerPath: o.tokenizer,
    kvBudgetBytes: o.kvBudget,
    kvDtype: o.kvDtype,
    threads: o.threads,
    onProgress: terminalProgress('loading'),
  };
}

/**
 * The cache options the flags ask for, checked now; undefined when none was given (the library's default). A policy
 * option without --cache implies the (first) policy that takes it: --recovery 0.9 alone means FastGen.
 */
export function toCacheOptions(o: Opts, defaultPolicy?: string): CacheOptions | undefined {
  const given = CACHE_OPTION_FLAGS.filter(({ prop }) => o[prop] !== undefined);
  if (o.cache === undefined && given.length === 0 && defaultPolicy === undefined) return undefined;
  const policy = o.cache ?? (given.length > 0 ? given[0].policies[0] : defaultPolicy);
  const cache: Record<string, unknown> = { policy };
  for (const { prop } of given) cache[prop] = o[prop];
  inFlagTerms(() => resolveCacheOptions(cache as CacheOptions));
  return cache as CacheOptions;
}

/** Generation options from the sampling and cache flags, fully validated before any model is loaded. */
export function toGenerateOptions(o: Opts): GenerateOptions {
  const opts: GenerateOptions = {
    maxTokens: o.maxTokens,
    temperature: o.temperature,
    topK: o.topK,
    topP: o.topP,
    minP: o.minP,
    repetitionPenalty: o.repeatPenalty,
    seed: o.seed,
    stop: o.stop,
    truncatePrompt: o.truncate,
    ignoreEos: o.ignoreEos,
    cache: toCacheOptions(o),
  };
  inFlagTerms(() => {
    validateSamplingOptions(opts);
    validateGenerateOptions(opts);
  });
  return opts;
}

/** Library option names (an InvalidOptionError's `where`) → the flag a user typed. */
const FLAG_OF: Record<string, string> = {
  ...Object.fromEntries(CACHE_OPTION_FLAGS.map(({ spec, flag }) => [`cache.${spec.key}`, flag])),
  maxTokens: '--max-tokens',
  temperature: '--temperature',
  topK: '--top-k',
  topP: '--top-p',
  minP: '--min-p',
  repetitionPenalty: '--repeat-penalty',
  seed: '--seed',
  stop: '--stop',
  'cache.policy': '--cache',
  backend: '--backend',
  dtype: '--dtype',
  kvDtype: '--kv-dtype',
  threads: '--threads',
  tokenizer: '--tokenizer',
};

/** Run a library check, re-wording its errors in terms of the flags (topP → --top-p) as a usage error. */
function inFlagTerms<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof InvalidOptionError && !(e instanceof UsageError)) {
      const flag = e.where !== undefined ? FLAG_OF[e.where] : undefined;
      if (flag === undefined) throw new UsageError(e.message, e.where);
      const msg = e.message.includes(e.where!) ? e.message.replaceAll(e.where!, flag) : `${flag}: ${e.message}`;
      throw new UsageError(msg, flag);
    }
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Parsing and errors

/** A command configured for fastgen: errors thrown (not printed, no process.exit), help on stdout. */
export function newCommand(name: string, description: string): Command {
  const cmd = new Command(name)
    .description(description)
    .helpOption('-h, --help', 'show this help')
    .exitOverride()
    .configureOutput({ writeOut: (s) => process.stdout.write(s), writeErr: (s) => process.stderr.write(s), outputError: () => {} });
  cmd.showSuggestionAfterError(true);
  return cmd;
}

export interface Parsed {
  opts: Opts;
  args: string[];
}

/**
 * Parse a command's arguments. Returns null when --help was shown (exit 0); throws UsageError for anything wrong
 * with the command line. No model is loaded before this returns.
 */
export function parseCommand(cmd: Command, args: readonly string[]): Parsed | null {
  try {
    cmd.parse(args as string[], { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.exitCode === 0) return null;
      throw new UsageError(commanderMessage(e));
    }
    if (e instanceof InvalidOptionError && !(e instanceof UsageError)) throw new UsageError(e.message, e.where);
    throw e;
  }
  return { opts: cmd.opts(), args: cmd.args };
}

function commanderMessage(e: CommanderError): string {
  return e.message
    .replace(/^error: /, '')
    .replace(/\n\(Did you mean (.*)\?\)/, ' (did you mean $1?)')
    .trim();
}

/** Print an error the way every command does and return its exit code. */
export function reportError(e: unknown, command = 'fastgen'): number {
  if (e instanceof UsageError) {
    console.error(`${command}: error: ${e.message}\nRun '${command} --help' for its options.`);
    return EXIT.usage;
  }
  if (e instanceof FastgenError) {
    console.error(`${command}: error: ${e.message}`);
    return EXIT.failed;
  }
  const err = e as { message?: string };
  console.error(`${command}: internal error: ${err?.message ?? String(e)}`);
  if (process.env.FASTGEN_DEBUG) console.error(e);
  else console.error('(run again with FASTGEN_DEBUG=1 for the stack trace, and please report it)');
  return EXIT.internal;
}

/** Parse, then run: the shape of every command's entry point. */
export async function runCommand(cmd: Command, args: readonly string[], run: (p: Parsed) => Promise<number>): Promise<number> {
  const parsed = parseCommand(cmd, args);
  if (parsed === null) return EXIT.ok;
  return run(parsed);
}
