/**
 * The one argument parser: every command's --help lists every flag it accepts, typos get a suggestion, errors name
 * the flag as typed, exit codes are the same everywhere, and argument errors never load a model first (each case
 * below also points --model at a path that does not exist: the answer must be about the flag, not the model).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { benchCli } from '../src/cli/bench.js';
import { evalCli } from '../src/cli/eval.js';
import { chatCli, generateCli } from '../src/cli/generate.js';
import { inspectCli } from '../src/cli/inspect.js';
import { loadtestCli } from '../src/cli/loadtest.js';
import { profileCli } from '../src/cli/profile.js';
import { serveCli } from '../src/cli/serve.js';
import { parseNumber, UsageError } from '../src/cli/args.js';
import { parseSize } from '../src/format.js';
import { REPO_ROOT } from './shared-fixtures.js';

const BIN = join(REPO_ROOT, 'bin', 'fastgen.js');
function run(args: string[], input = '') {
  const r = spawnSync(process.execPath, [BIN, ...args], { input, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const NO_MODEL = '/nonexistent/fastgen-model.bin';

test('every command: --help prints every flag the command accepts, exit 0', () => {
  const commands = { generate: generateCli, chat: chatCli, inspect: inspectCli, profile: profileCli, eval: evalCli, bench: benchCli, serve: serveCli, loadtest: loadtestCli };
  for (const [name, define] of Object.entries(commands)) {
    const r = run([name, '--help']);
    assert.equal(r.code, 0, name);
    assert.match(r.out, new RegExp(`^Usage: fastgen ${name} `), name);
    const flags = define().options.map((o) => o.long!);
    assert.ok(flags.length > 1, name);
    for (const f of flags) assert.ok(r.out.includes(f), `${name} --help lists ${f}`);
  }
  const g = run(['generate', '--help']).out;
  for (const f of ['--top-k', '--min-p', '--repeat-penalty', '--ignore-eos', '--truncate', '--kv-dtype', '--threads', '--local-ratio', '--budget', '--json']) assert.ok(g.includes(f), f);
  assert.equal(run(['help', 'generate']).out, g);
});

test('--version, no command, unknown commands and flags: did-you-mean, exit 2, no stack trace', () => {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8'));
  const v = run(['--version']);
  assert.equal(v.code, 0);
  assert.equal(v.out.trim(), pkg.version);
  const none = run([]);
  assert.equal(none.code, 2);
  assert.match(none.err, /Usage: fastgen <command>/);
  const cases: [string[], RegExp][] = [
    [['genrate'], /unknown command 'genrate' \(did you mean generate\?\)/],
    [['generate', '--top-pp', '0.9', '-m', NO_MODEL], /unknown option '--top-pp' \(did you mean --top-p\?\)/],
    [['serve', '--max-queu', '3', '-m', NO_MODEL], /did you mean --max-queue\?/],
    [['bench', '--test', 'pp8', '-m', NO_MODEL], /did you mean --tests\?/],
    [['inspect', 'stray', '-m', NO_MODEL], /too many arguments/],
  ];
  for (const [args, re] of cases) {
    const r = run(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.err, re, args.join(' '));
    assert.doesNotMatch(r.err, /\n\s+at /, 'no stack trace');
  }
});

test('bad values: the message names the flag as typed (not topP / cache.recovery), exit 2, before any model loads', () => {
  const cases: [string[], RegExp][] = [
    [['generate', '--top-p', '2', 'hi'], /--top-p must be in \(0, 1\]/],
    [['generate', '--repeat-penalty', '0', 'hi'], /--repeat-penalty must be/],
    [['generate', '--min-p', '1', 'hi'], /--min-p must be in \[0, 1\)/],
    [['chat', '--recovery', '1.5'], /--recovery must be a number in \(0, 1\]/],
    [['generate', '--local-ratio', '-1', 'hi'], /--local-ratio must be/],
    [['generate', '--cache', 'local', '--budget', '0', 'hi'], /--budget must be an integer ≥ 1/],
    [['generate', '--cache', 'local', '--recovery', '0.9', 'hi'], /--recovery applies to fastgen, not to policy 'local'/],
    [['generate', '--max-tokens', '1.5', 'hi'], /--max-tokens expects an integer, got '1.5'/],
    [['generate', '--kv-budget', 'lots', 'hi'], /--kv-budget: cannot read size 'lots'/],
    [['generate', '--threads', '1000', 'hi'], /--threads must be ≥ 1 and ≤ 64, got 1000/],
    [['generate', '--backend', 'gpu', 'hi'], /--backend: unknown backend 'gpu'; expected one of: cpu-ref, wasm/],
    [['generate', '--gqa', 'max', 'hi'], /--gqa: unknown value 'max'; expected one of: mean, min/],
    [['profile', '--svg', '/nonexistent-dir/p.svg', 'hi'], /--svg: the folder \/nonexistent-dir does not exist/],
    [['bench', '--tests', 'pp8,xx'], /--tests: cannot read 'xx'/],
    [['bench', '--svg', '/nonexistent-dir/b.svg'], /--svg: the folder/],
    [['serve', '--port', '99999'], /--port must be ≥ 0 and ≤ 65535/],
    [['serve', '--kv-budget', '0'], /--kv-budget: size must be positive/],
    [['loadtest', '--cache', 'full,magic'], /--cache: unknown cache policy 'magic'/],
    [['eval', '--thresholds', '0.9,x'], /--thresholds expects comma-separated numbers/],
  ];
  for (const [args, re] of cases) {
    const r = run([...args, '-m', NO_MODEL]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
    assert.match(r.err, re, args.join(' '));
    assert.doesNotMatch(r.err, /topP|minP|repetitionPenalty|cache\.|does not exist\. Expected/, args.join(' '));
    assert.match(r.err, new RegExp(`Run 'fastgen ${args[0]} --help'`));
  }
  // A command line that is right but a model that is not: exit 1 (the command failed), not 2.
  const m = run(['generate', '-m', NO_MODEL, 'hi']);
  assert.equal(m.code, 1);
  assert.match(m.err, /does not exist/);
});

test('one number parser and one size parser for every flag', () => {
  assert.equal(parseNumber('0.5', '--x'), 0.5);
  assert.equal(parseNumber('3', '--n', { integer: true, min: 1 }), 3);
  assert.throws(() => parseNumber('', '--x'), (e: UsageError) => e instanceof UsageError && /--x expects a number/.test(e.message));
  assert.throws(() => parseNumber('1e400', '--x'), /expects a number/);
  assert.throws(() => parseNumber('0', '--t', { above: 0, max: 1 }), /--t must be > 0 and ≤ 1, got 0/);
  assert.equal(parseSize('512MiB'), 512 * 1024 ** 2);
  assert.equal(parseSize('1.5GiB'), 1.5 * 1024 ** 3);
  assert.equal(parseSize('2TB'), 2e12);
  // generate and serve read --kv-budget through the same parser.
  for (const cmd of ['generate', 'serve']) {
    const r = run([cmd, '--kv-budget', '64kk', '-m', NO_MODEL]);
    assert.equal(r.code, 2);
    assert.match(r.err, /--kv-budget: cannot read size '64kk'; write e.g. 512MiB/);
  }
});

test('eval without --data where there is none (an installed copy) says what data it needs and where it goes', () => {
  const r = spawnSync(process.execPath, [BIN, 'eval', '--quick', '-m', NO_MODEL], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, FASTGEN_SHARED: '/nonexistent-shared' } });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /eval needs its evaluation text and found none in \/nonexistent-shared\/data\. Pass --data DIR, a folder with tinystories_sample\.txt .* and tinyshakespeare\.txt/);
  assert.doesNotMatch(r.stderr, /node_modules/);
});
