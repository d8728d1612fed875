/**
 * The browser page end to end: `fastgen web` serves it, Debian's headless Chromium (driven by playwright-core) runs
 * greedy generations on the wasm backend (Web Workers over one shared memory) and on the WebGPU backend
 * (navigator.gpu), and the text must equal the Node CLI's for the same settings; the KV figures and the policy grid
 * must appear and change while it generates; a file that is not a model must be reported in plain words.
 *
 * Skips with a message when Chromium is absent (FASTGEN_CHROMIUM, else /usr/bin/chromium); fails instead when CI is
 * set (.ci/run installs it). stories260K comes from ../shared and is skipped without it.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { chromium, type Browser, type Page } from 'playwright-core';
import { REPO_ROOT, sharedPath, SKIP_SHARED } from './shared-fixtures.js';

const CHROMIUM = process.env.FASTGEN_CHROMIUM ?? '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);
if (!HAVE_CHROMIUM && process.env.CI) throw new Error(`CI is set but ${CHROMIUM} is missing (.ci/run installs Debian's chromium)`);
const SKIP = HAVE_CHROMIUM ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium, or set FASTGEN_CHROMIUM): browser tests skipped`;

const CLI = join(REPO_ROOT, 'bin', 'fastgen.js');
const STORIES260K = sharedPath('models', 'stories260K', 'stories260K.bin');
const TOK512 = sharedPath('models', 'stories260K', 'tok512.bin');
/** Generous: the machine is small and shared, and SwiftShader's WebGPU is slow. */
const GENERATION_MS = 240_000;

let server: ChildProcess | undefined;
let baseUrl = '';
let browser: Browser | undefined;

before(async () => {
  if (SKIP) return;
  server = spawn(process.execPath, [CLI, 'web', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  server.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  baseUrl = await new Promise<string>((resolve, reject) => {
    let out = '';
    server!.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /open (http:\/\/\S+\/)/.exec(out);
      if (m) resolve(m[1]!);
    });
    server!.once('exit', (code) => reject(new Error(`fastgen web exited (${code}): ${stderr}`)));
  });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    // WebGPU in headless Chromium on a machine without a GPU: a software adapter.
    args: ['--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-angle=vulkan', '--use-vulkan=native'],
    env: { ...process.env, VK_DRIVER_FILES: process.env.VK_DRIVER_FILES ?? '/usr/share/vulkan/icd.d/lvp_icd.json' },
  });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
});

/** The Node CLI's greedy text for the same settings. */
async function cliText(args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'generate', '--json', ...args], { maxBuffer: 1 << 24 });
  return (JSON.parse(stdout) as { text: string }).text;
}

interface Settings {
  prompt: string;
  maxTokens: number;
  cache: string;
  recovery?: number;
  backend: 'wasm' | 'webgpu';
}

function query(s: Settings, extra = ''): string {
  const p = new URLSearchParams({ prompt: s.prompt, max_tokens: String(s.maxTokens), temperature: '0', cache: s.cache, backend: s.backend });
  if (s.recovery !== undefined) p.set('recovery', String(s.recovery));
  return `${baseUrl}?${p}${extra}`;
}

function cliArgs(s: Settings, model?: string): string[] {
  return [
    ...(model ? ['--model', model] : []),
    '--max-tokens', String(s.maxTokens), '--temperature', '0', '--cache', s.cache,
    ...(s.recovery !== undefined ? ['--recovery', String(s.recovery)] : []),
    s.prompt,
  ];
}

async function newPage(t: TestContext): Promise<Page> {
  const context = await browser!.newContext({ viewport: { width: 1366, height: 768 } });
  t.after(() => context.close());
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  t.after(() => assert.deepEqual(errors, [], 'no uncaught errors in the page'));
  return page;
}

async function waitLoaded(page: Page, name: string): Promise<void> {
  await page.waitForFunction(
    (n) => (document.body.dataset.model === 'yes' && document.getElementById('model-name')!.textContent === n) || document.body.dataset.state === 'failed',
    name,
    { timeout: GENERATION_MS },
  );
  const error = await page.locator('#error').isVisible() ? await page.textContent('#error') : '';
  assert.equal(error, '', `the model ${name} loads without an error`);
  assert.equal(await page.evaluate(() => document.body.dataset.state), 'ready');
}

/** Watch the KV figures and the grid while generating: one snapshot per change of the "KV held of full" text. */
async function recordKv(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as unknown as { kvSnapshots: { full: string; held: string; kept: number; cells: number; policies: string[] }[] };
    w.kvSnapshots = [];
    new MutationObserver(() => {
      const cells = Array.from(document.querySelectorAll<HTMLElement>('#grid .cell'));
      w.kvSnapshots.push({
        full: document.getElementById('kv-full')!.textContent!,
        held: document.getElementById('kv-held')!.textContent!,
        kept: cells.reduce((s, c) => s + Number(c.dataset.kept), 0),
        cells: cells.length,
        policies: [...new Set(cells.map((c) => c.dataset.policy!))],
      });
    }).observe(document.getElementById('kv-full')!, { childList: true, characterData: true, subtree: true });
  });
}

async function generate(page: Page): Promise<string> {
  await page.click('#run');
  await page.waitForFunction(
    () => document.getElementById('status')!.textContent!.startsWith('done') || !document.getElementById('error')!.hidden,
    null,
    { timeout: GENERATION_MS },
  );
  const error = (await page.locator('#error').isVisible()) ? await page.textContent('#error') : '';
  assert.equal(error, '', 'the generation ends without an error');
  return (await page.textContent('#output-text')) ?? '';
}

async function backendOf(page: Page): Promise<string> {
  return page.evaluate(() => document.body.dataset.backend ?? '');
}

for (const backend of ['wasm', 'webgpu'] as const) {
  test(`stories15M (served by fastgen web) on ${backend} in the page: the CLI's greedy text, live KV figures and policy grid`, { skip: SKIP }, async (t) => {
    // SwiftShader's WebGPU decodes stories15M at well under a token per second here: fewer tokens there.
    const s: Settings = { prompt: 'Once upon a time', maxTokens: backend === 'webgpu' ? 6 : 32, cache: 'fastgen', recovery: 0.9, backend };
    const expected = cliText(cliArgs(s));
    const page = await newPage(t);
    await page.goto(query(s));
    await waitLoaded(page, 'stories15M');
    assert.equal(await backendOf(page), backend);
    assert.match((await page.textContent('#backend-why'))!, backend === 'wasm' ? /backend=wasm: WebAssembly SIMD on \d threads, one shared memory/ : /backend=webgpu: WGSL kernels on \S/);
    await recordKv(page);
    const text = await generate(page);
    assert.equal(text, await expected, 'the page generates what the Node CLI generates');
    assert.ok(text.length > 5);

    const snaps = await page.evaluate(() => (window as unknown as { kvSnapshots: { full: string; held: string; kept: number; cells: number; policies: string[] }[] }).kvSnapshots);
    assert.ok(snaps.length >= s.maxTokens, `a KV update per token (${snaps.length})`);
    assert.equal(snaps[0]!.cells, 6 * 6, 'a 6 layers × 6 KV heads grid');
    assert.ok(new Set(snaps.map((x) => x.full)).size >= 2, 'the full-cache figure grows with the sequence');
    assert.ok(snaps.at(-1)!.kept > snaps[0]!.kept, 'heads hold more tokens as the sequence grows');
    assert.ok(snaps[0]!.policies.some((p) => p !== 'full'), `FastGen chose cheaper policies than full for some heads (${snaps[0]!.policies.join(', ')})`);
    const saved = Number((await page.textContent('#kv-saved'))!.replace('%', '').trim());
    assert.ok(saved > 10 && saved < 100, `FastGen saves part of the cache (${saved} %)`);
    assert.ok(Number(await page.textContent('#tok-s')) > 0, 'tok/s is shown');
    if (backend === 'wasm') await page.screenshot({ path: join(tmpdir(), 'fastgen-web-test.png') });
  });

  test(`stories260K opened from local files on ${backend} in the page: the CLI's greedy text, full cache vs fastgen`, { skip: SKIP || SKIP_SHARED }, async (t) => {
    const s: Settings = { prompt: 'Once upon a time', maxTokens: 40, cache: 'fastgen', recovery: 0.9, backend };
    const expected = cliText(cliArgs(s, STORIES260K));
    const page = await newPage(t);
    await page.goto(query(s));
    await page.waitForFunction(() => document.body.dataset.state !== 'loading', null, { timeout: GENERATION_MS });
    await page.setInputFiles('#open-files', [STORIES260K, TOK512]);
    await waitLoaded(page, 'stories260K');
    assert.equal(await backendOf(page), backend);
    assert.match((await page.textContent('#model-info'))!, /5 layers × 8 heads \(4 KV heads\)/);
    await recordKv(page);
    assert.equal(await generate(page), await expected, 'the page generates what the Node CLI generates');
    const fastgenPolicies = await page.evaluate(() => Array.from(document.querySelectorAll<HTMLElement>('#grid .cell')).map((c) => c.dataset.policy));
    assert.equal(fastgenPolicies.length, 5 * 4, 'a 5 layers × 4 KV heads grid');

    // The same run with a full cache: every head 'full', nothing saved, and still the CLI's text.
    const full: Settings = { ...s, cache: 'full', recovery: undefined };
    await page.selectOption('#cache', 'full');
    assert.equal(await generate(page), await cliText(cliArgs(full, STORIES260K)));
    const fullPolicies = await page.evaluate(() => [...new Set(Array.from(document.querySelectorAll<HTMLElement>('#grid .cell')).map((c) => c.dataset.policy))]);
    assert.deepEqual(fullPolicies, ['full']);
    assert.equal((await page.textContent('#kv-saved'))!.trim(), '0.0 %');
    assert.match(page.url(), /cache=full/, 'the address follows the settings, so the run can be shared');
  });
}

test('a file that is not a model is reported in plain words, and the page stays usable', { skip: SKIP }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'fastgen-web-'));
  const junk = join(dir, 'notes.bin');
  await writeFile(junk, 'these are my shopping notes, not a checkpoint\n'.repeat(10));
  const page = await newPage(t);
  await page.goto(`${baseUrl}?backend=wasm&max_tokens=4&cache=full&temperature=0`);
  await waitLoaded(page, 'stories15M');
  await page.setInputFiles('#open-files', [junk]);
  await page.waitForFunction(() => !document.getElementById('error')!.hidden, null, { timeout: GENERATION_MS });
  assert.equal(await page.getAttribute('#error', 'data-code'), 'NOT_A_MODEL');
  assert.equal(await page.textContent('#error-title'), 'Not a model');
  assert.match((await page.textContent('#error-message'))!, /notes\.bin does not look like a llama2\.c checkpoint/);
  // Nothing was replaced: stories15M is still loaded and still generates.
  assert.equal(await page.textContent('#model-name'), 'stories15M');
  assert.equal(await page.evaluate(() => document.body.dataset.state), 'ready');
  assert.equal(await generate(page), await cliText(['--max-tokens', '4', '--temperature', '0', 'Once upon a time']));

  // An address with a cache policy that does not exist says so, in words, too.
  await page.goto(`${baseUrl}?cache=everything&backend=wasm`);
  assert.match((await page.textContent('#error-message'))!, /cache=everything is not a cache policy/);
});

test('once loaded, the page works offline: its service worker serves the page, the engine and the model', { skip: SKIP }, async (t) => {
  const page = await newPage(t);
  await page.goto(`${baseUrl}?backend=wasm&max_tokens=4&cache=full&temperature=0`);
  await waitLoaded(page, 'stories15M');
  // Installed (and so its copies made) before it is active.
  const ready = await page.evaluate(() =>
    Promise.race([navigator.serviceWorker.ready.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 60_000))]),
  );
  assert.ok(ready, 'the page registered a service worker that became active');
  await page.context().setOffline(true);
  assert.equal(await page.evaluate(() => navigator.onLine), false);
  await page.reload();
  await waitLoaded(page, 'stories15M');
  assert.equal(await page.evaluate(() => crossOriginIsolated), true, 'the cached page keeps its COOP/COEP headers');
  assert.equal(await generate(page), await cliText(['--max-tokens', '4', '--temperature', '0', 'Once upon a time']));
});

test('fastgen web serves the page cross-origin isolated, and the default model\'s bytes', { skip: SKIP }, async () => {
  const page = await fetch(baseUrl);
  assert.equal(page.headers.get('cross-origin-opener-policy'), 'same-origin');
  assert.equal(page.headers.get('cross-origin-embedder-policy'), 'require-corp');
  assert.match(await page.text(), /<title>fastgen/);
  const model = await fetch(`${baseUrl}models/stories15M/stories15M.bin`, { method: 'HEAD' });
  assert.equal(model.headers.get('content-length'), '60816028');
  assert.equal((await fetch(`${baseUrl}../../etc/passwd`)).status, 404);
  assert.equal((await fetch(`${baseUrl}index.html`, { method: 'POST' })).status, 405);
});
