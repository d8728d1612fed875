/** Flags shared by the commands that load a model and generate. */
import { InvalidOptionError } from '../errors.js';
import type { CacheOptions } from '../cache/policy.js';
import type { LoadModelOptions } from '../generate/model.js';
import type { GenerateOptions } from '../generate/request.js';
import { terminalProgress } from '../model/progress.js';
import { parseSize } from './format.js';

export const modelFlags = {
  model: { type: 'string', short: 'm' },
  tokenizer: { type: 'string' },
  backend: { type: 'string' },
  dtype: { type: 'string' },
  'kv-budget': { type: 'string' },
  'kv-dtype': { type: 'string' },
  threads: { type: 'string' },
} as const;

export const samplingFlags = {
  'max-tokens': { type: 'string', short: 'n' },
  temperature: { type: 'string', short: 't' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'min-p': { type: 'string' },
  'repeat-penalty': { type: 'string' },
  seed: { type: 'string', short: 's' },
  stop: { type: 'string', multiple: true },
  truncate: { type: 'boolean' },
  'ignore-eos': { type: 'boolean' },
} as const;

export const cacheFlags = {
  cache: { type: 'string' },
  recovery: { type: 'string' },
  'local-ratio': { type: 'string' },
  'frequent-ratio': { type: 'string' },
  gqa: { type: 'string' },
  ratio: { type: 'string' },
  budget: { type: 'string' },
} as const;

type Values = Record<string, string | boolean | string[] | undefined>;

export function num(v: Values, flag: string, integer = false): number | undefined {
  const s = v[flag];
  if (s === undefined) return undefined;
  const x = Number(s);
  if (typeof s !== 'string' || s.trim() === '' || !Number.isFinite(x) || (integer && !Number.isInteger(x))) {
    throw new InvalidOptionError(`--${flag} expects ${integer ? 'an integer' : 'a number'}, got '${s}'`, `--${flag}`);
  }
  return x;
}

export function loadOptions(v: Values): LoadModelOptions {
  return {
    backend: v.backend as LoadModelOptions['backend'],
    dtype: v.dtype as LoadModelOptions['dtype'],
    tokenizerPath: v.tokenizer as string | undefined,
    kvBudgetBytes: v['kv-budget'] ? parseSize(v['kv-budget'] as string, '--kv-budget') : undefined,
    kvDtype: v['kv-dtype'] as LoadModelOptions['kvDtype'],
    threads: num(v, 'threads', true),
    onProgress: terminalProgress('loading'),
  };
}

export function cacheOptions(v: Values): CacheOptions | undefined {
  if (v.cache === undefined && v.recovery === undefined) return undefined;
  return {
    policy: ((v.cache as string | undefined) ?? 'fastgen') as CacheOptions['policy'],
    recovery: num(v, 'recovery'),
    localRatio: num(v, 'local-ratio'),
    frequentRatio: num(v, 'frequent-ratio'),
    gqa: v.gqa as CacheOptions['gqa'],
    ratio: num(v, 'ratio'),
    budget: num(v, 'budget', true),
  };
}

export function generateOptions(v: Values): GenerateOptions {
  return {
    maxTokens: num(v, 'max-tokens', true),
    temperature: num(v, 'temperature'),
    topK: num(v, 'top-k', true),
    topP: num(v, 'top-p'),
    minP: num(v, 'min-p'),
    repetitionPenalty: num(v, 'repeat-penalty'),
    seed: num(v, 'seed', true),
    stop: v.stop as string[] | undefined,
    truncatePrompt: v.truncate as boolean | undefined,
    ignoreEos: v['ignore-eos'] as boolean | undefined,
    cache: cacheOptions(v),
  };
}

/**
 * A command's arguments parsed by `parse`: a bad option is printed with the usage (returns exit code 2), --help prints
 * the usage (returns 0); otherwise the parsed options.
 */
export function parseCommandArgs<T extends { help: boolean }>(command: string, args: string[], parse: (args: string[]) => T, usage: string): T | number {
  let o: T;
  try {
    o = parse(args);
  } catch (e) {
    process.stderr.write(`fastgen ${command}: ${e instanceof Error ? e.message : String(e)}\n\n${usage}\n`);
    return 2;
  }
  if (o.help) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  return o;
}
