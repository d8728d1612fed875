/** The command line as a user meets it: clean stdout, timings on stderr, clear errors with non-zero exits. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT, SKIP_SHARED, sharedPath } from './shared-fixtures.js';

const BIN = join(REPO_ROOT, 'bin', 'fastgen.js');
function run(args: string[], input?: string) {
  const r = spawnSync(process.execPath, [BIN, ...args], { input, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const M260 = () => sharedPath('models/stories260K/stories260K.bin');

test('generate: text on stdout, timings on stderr; prompt from stdin; --json', { skip: SKIP_SHARED }, () => {
  const a = run(['generate', '--model', M260(), '--max-tokens', '12', '--temperature', '0', 'Once upon a time']);
  assert.equal(a.code, 0, a.err);
  assert.ok(a.out.startsWith('Once upon a time'));
  assert.match(a.err, /prefill: \d+ tokens .* tok\/s\); decode: 12 tokens/);
  const b = run(['generate', '--model', M260(), '-n', '12', '-t', '0'], 'Once upon a time\n');
  assert.equal(b.out, a.out);
  const j = run(['generate', '--model', M260(), '-n', '5', '--seed', '3', '--cache', 'fastgen', '--recovery', '0.9', '--json', 'Hello']);
  assert.equal(j.code, 0, j.err);
  const r = JSON.parse(j.out);
  assert.equal(r.generatedTokens, 5);
  assert.equal(r.kv.policy, 'fastgen');
  assert.ok(r.kv.fullKvBytes > r.kv.kvBytes);
});

test('generate --cache fastgen ends with a KV summary line', { skip: SKIP_SHARED }, () => {
  const a = run(['generate', '--model', M260(), '-n', '20', '-t', '0', '--cache', 'fastgen', '--recovery', '0.9', 'Lily saw a big dog. The dog was happy!']);
  assert.equal(a.code, 0, a.err);
  assert.match(a.err, /kv: fastgen .* of .* full \([\d.]+ % pruned\), peak .*; heads .*; profiling [\d.]+ ms/);
});

test('inspect and profile (grid, --json, --svg)', { skip: SKIP_SHARED }, () => {
  const i = run(['inspect', '--model', M260(), '--json']);
  assert.equal(i.code, 0, i.err);
  const d = JSON.parse(i.out);
  assert.equal(d.kvHeads, 4);
  assert.equal(d.kvBytesPerToken, 2 * 5 * 4 * 8 * 4);
  assert.match(d.attention, /GQA/);
  const dir = mkdtempSync(join(tmpdir(), 'fastgen-cli-'));
  const svg = join(dir, 'p.svg');
  const p = run(['profile', '--model', M260(), '--recovery', '0.9', '--svg', svg, 'Once upon a time, Lily had a cat.']);
  assert.equal(p.code, 0, p.err);
  assert.match(p.out, /layer  0/);
  assert.match(readFileSync(svg, 'utf8'), /^<svg[\s\S]*layer 4[\s\S]*<\/svg>$/);
  const pj = JSON.parse(run(['profile', '--model', M260(), '--json', 'Once upon a time']).out);
  assert.equal(pj.layers.length, 5);
  assert.ok(pj.layers[0][0].recoveries.length >= 5);
});

test('bad input: specific message, non-zero exit, no stack trace', { skip: SKIP_SHARED }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'fastgen-bad-'));
  mkdirSync(join(dir, 'empty'));
  const weird = join(dir, 'weird');
  mkdirSync(weird);
  writeFileSync(join(weird, 'config.json'), JSON.stringify({ model_type: 'gpt2' }));
  const cases: [string[], RegExp][] = [
    [['generate', '--model', join(dir, 'missing'), 'hi'], /does not exist|not found|no such/i],
    [['generate', '--model', join(dir, 'empty'), 'hi'], /not a model|no model/i],
    [['inspect', '--model', weird], /gpt2[\s\S]*llama/],
    [['generate', '--model', M260(), '--temperature', '-2', 'hi'], /temperature/],
    [['generate', '--model', M260(), '--top-p', 'abc', 'hi'], /--top-p expects a number/],
    [['generate', '--model', M260(), '--cache', 'bogus', 'hi'], /unknown cache policy 'bogus'/],
    [['generate', '--model', M260(), '-n', '1', 'word '.repeat(600)], /context is 512/],
    [['generate', '--bogus-flag'], /unknown option/i],
    [['frobnicate'], /unknown command/],
  ];
  for (const [args, re] of cases) {
    const r = run(args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.err, re, args.join(' '));
    assert.doesNotMatch(r.err, /\n\s+at .*\(.*:\d+:\d+\)/, 'no stack trace');
  }
  const ok = run(['generate', '--model', M260(), '-n', '1', '--truncate', 'word '.repeat(600)]);
  assert.equal(ok.code, 0, ok.err);
});

test('chat reads one turn per line from piped stdin', { skip: SKIP_SHARED }, () => {
  const r = run(['chat', '--model', M260(), '-n', '6', '-t', '0'], 'Once upon a time\nThe dog\n');
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out.trim().split('\n').length, 2);
  assert.equal((r.err.match(/decode: 6 tokens/g) ?? []).length, 2);
});
