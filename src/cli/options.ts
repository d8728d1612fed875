/** Flags shared by the commands that load a model and generate. */
import { InvalidOptionError } from '../errors.js';
import { allCacheOptions, CACHE_POLICIES, resolveCacheOptions, type CacheOptions } from '../cache/policies/index.js';
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

/** --cache and one flag per cache-policy option of the registry (key in kebab-case: localRatio → --local-ratio). */
const CACHE_OPTION_FLAGS = allCacheOptions().map(({ spec, policies }) => ({ flag: kebabCase(spec.key), spec, policies }));
export const cacheFlags: Record<string, { type: 'string'; multiple?: boolean }> = Object.fromEntries([
  ['cache', { type: 'string' }],
  ...CACHE_OPTION_FLAGS.map(({ flag, spec }) => [flag, spec.kind === 'list' ? { type: 'string', multiple: true } : { type: 'string' }]),
]);

function kebabCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** The cache flags' help lines, from the registry. */
export function cacheFlagsHelp(indent = '  '): string {
  const lines = [`${indent}--cache POLICY          ${CACHE_POLICIES.map((p) => p.name).join(' | ')}`];
  for (const { flag, spec, policies } of CACHE_OPTION_FLAGS) {
    const dflt = spec.default !== undefined && !(Array.isArray(spec.default) && spec.default.length === 0) ? ` (default ${spec.default})` : '';
    lines.push(`${indent}--${flag.padEnd(22)}${spec.help}${dflt} [${policies.join(', ')}]`);
  }
  return lines.join('\n');
}

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

/**
 * The cache options given on the command line, or undefined when none was. A policy option without --cache implies
 * the (first) policy that takes it: --recovery 0.9 alone means FastGen. Options are validated by the registry, with
 * errors naming the flag.
 */
export function cacheOptions(v: Values): CacheOptions | undefined {
  const given = CACHE_OPTION_FLAGS.filter(({ flag }) => v[flag] !== undefined);
  if (v.cache === undefined && given.length === 0) return undefined;
  const policy = (v.cache as string | undefined) ?? given[0].policies[0];
  const o: Record<string, unknown> = { policy };
  for (const { flag, spec } of given) {
    if (spec.kind === 'choice') o[spec.key] = v[flag];
    else if (spec.kind === 'list') o[spec.key] = (v[flag] as string[]).flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);
    else o[spec.key] = num(v, flag, spec.kind === 'count' || spec.kind === 'count0');
  }
  try {
    resolveCacheOptions(o as CacheOptions);
  } catch (e) {
    // Name the flag the user typed, not the library's field.
    if (e instanceof InvalidOptionError && e.where?.startsWith('cache.')) {
      const key = e.where.slice(6);
      const flag = key === 'policy' ? 'cache' : kebabCase(key);
      throw new InvalidOptionError(e.message.replaceAll(`cache.${key}`, `--${flag}`).replace(`'${key}'`, `--${flag}`), `--${flag}`);
    }
    throw e;
  }
  return o as CacheOptions;
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
