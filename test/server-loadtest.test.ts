/**
 * `fastgen loadtest` (full vs FastGen under one KV budget) and `fastgen serve` as a process: startup log, SIGTERM.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { formatReport, parseLoadtestArgs, runLoadtest } from '../src/cli/loadtest.js';
import { parseServeArgs } from '../src/cli/serve.js';
import { parseSize } from '../src/server/util.js';
import { sharedPath } from './shared-fixtures.js';

const MODEL = sharedPath('models/stories260K/stories260K.bin');
const SKIP = existsSync(MODEL) ? false : `${MODEL} not found (../shared is absent): loadtest tests skipped`;

test('sizes and flags parse', () => {
  assert.equal(parseSize('512MiB'), 512 * 1024 ** 2);
  assert.equal(parseSize('1GiB'), 1024 ** 3);
  assert.equal(parseSize('100MB'), 100e6);
  assert.equal(parseSize('64k'), 65536);
  assert.equal(parseSize('4096'), 4096);
  assert.throws(() => parseSize('lots'), /512MiB/);
  const s = parseServeArgs(['--port', '0', '--kv-budget', '1GiB', '--cache', 'fastgen', '--recovery', '0.9']);
  assert.equal(s.port, 0);
  assert.equal(s.budget, 1024 ** 3);
  assert.deepEqual(s.cache, { policy: 'fastgen', recovery: 0.9 });
  assert.equal(s.host, '127.0.0.1');
  assert.throws(() => parseServeArgs(['--recovery', '2']), /recovery/);
  assert.throws(() => parseServeArgs(['--cache', 'magic']), /magic/);
  assert.throws(() => parseServeArgs(['--port', '99999']), /port/);
  const l = parseLoadtestArgs(['--clients', '4', '--prompt-tokens', '8-32', '--json']);
  assert.equal(l.clients, 4);
  assert.equal(l.requests, 8);
  assert.deepEqual(l.promptTokens, [8, 32]);
  assert.deepEqual(l.caches, ['full', 'fastgen']);
  assert.equal(l.json, true);
});

describe('loadtest', { skip: SKIP }, () => {
  test('under a budget the full cache cannot fit for all clients, FastGen serves more at once; nothing lost, all well-formed', async () => {
    const report = await runLoadtest({
      modelPath: MODEL,
      clients: 8,
      requests: 12,
      promptTokens: [48, 96],
      maxTokens: [16, 40],
      caches: ['full', 'fastgen'],
      recovery: 0.95,
      temperature: 0.8,
      seed: 3,
      timeoutMs: 60_000,
    });
    const [full, fastgen] = report.phases;
    assert.equal(full.cache, 'full');
    assert.equal(fastgen.cache, 'fastgen');
    for (const p of report.phases) {
      assert.equal(p.ok, 12, `${p.cache}: every request completed well-formed: ${p.errors.join('; ')}`);
      assert.equal(p.failed, 0);
      assert.ok(p.peakKvPages <= report.budgetPages, `${p.cache}: KV within budget`);
      assert.ok(p.generatedTokens > 0 && p.ttftS.p50 > 0 && p.latencyS.p99 >= p.latencyS.p50);
    }
    assert.ok(report.fullCacheFitsAtOnce < report.clients, 'the budget cannot hold every client with a full cache');
    assert.ok(fastgen.peakRunning > full.peakRunning, `FastGen peak concurrency ${fastgen.peakRunning} > full ${full.peakRunning}`);
    assert.ok(fastgen.meanPrunedRatio > 0.2);
    assert.equal(full.meanPrunedRatio, 0);
    // Same seeds, same workload: FastGen's outputs differ from the full cache's only through compression; both runs
    // generated exactly the requested number of tokens.
    assert.equal(full.generatedTokens, fastgen.generatedTokens);
    const table = formatReport(report);
    assert.match(table, /\| full +\| +12\/12 \|/);
    assert.match(table, /FastGen vs full under the same budget/);
  });

  test('loadtest refuses a non-loopback --url', async () => {
    await assert.rejects(
      runLoadtest({ url: 'http://example.com:8080', clients: 1, requests: 1, promptTokens: [4, 4], maxTokens: [4, 4], caches: ['full'], recovery: 0.95, temperature: 0, seed: 1, timeoutMs: 1000 }),
      /loopback/,
    );
  });
});

describe('fastgen serve as a process', { skip: SKIP }, () => {
  test('logs the KV capacity like vLLM, serves, and on SIGTERM finishes the in-flight stream then exits 0', async () => {
    const serveJs = fileURLToPath(new URL('../src/cli/serve.js', import.meta.url));
    const script = `const { serveCommand } = await import(${JSON.stringify(serveJs)}); process.exitCode = await serveCommand(process.argv.slice(1));`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, '--', '--model', MODEL, '--port', '0', '--kv-budget', '2MiB'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      const deadline = Date.now() + 20_000;
      let url: string | undefined;
      while (!url) {
        if (Date.now() > deadline) throw new Error(`no listening line: ${stderr}`);
        url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr)?.[1];
        await new Promise((r) => setTimeout(r, 20));
      }
      while ((await fetch(`${url}/health`)).status !== 200) {
        if (Date.now() > deadline) throw new Error(`never healthy: ${stderr}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.match(stderr, /KV cache budget: 2\.00 MiB/);
      assert.match(stderr, /full cache: .* KV budget of [\d,]+ tokens; maximum concurrency for 512 tokens per request: [\d.]+x/);
      assert.match(stderr, /FastGen \(recovery 0\.95\).*expected KV budget of ~[\d,]+ tokens; expected maximum concurrency .*: ~[\d.]+x/);

      const res = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ model: 'stories260K', messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 150, ignore_eos: true, stream: true }),
      });
      const reader = res.body!.getReader();
      const dec = new TextDecoder();
      let text = '';
      while (!/"content":"[^"]/.test(text)) {
        const { value, done } = await reader.read();
        assert.ok(!done);
        text += dec.decode(value, { stream: true });
      }
      child.kill('SIGTERM');
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += dec.decode(value, { stream: true });
      }
      assert.match(text, /"finish_reason":"length"/, 'the in-flight request finished');
      assert.ok(text.endsWith('data: [DONE]\n\n'));
      assert.equal(await exited, 0);
      assert.match(stderr, /SIGTERM: graceful shutdown/);
      assert.match(stderr, /server closed/);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
