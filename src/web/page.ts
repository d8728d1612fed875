/**
 * The page (main thread): settings from the URL and the form, the engine worker (engine-worker.ts) driven through
 * protocol.ts, streamed plain text, tok/s, the KV bytes held against a full cache, and the layer × KV-head grid of the
 * policies each head holds its cache with. Bundled as fastgen-page.js by scripts/build-web.mjs.
 */
import { CACHE_POLICY_NAMES } from '../cache/policies/index.js';
import { policyFamily } from '../cache/head-policy.js';
import { formatBytes } from '../format.js';
import type { BackendRequest, EngineEvent, EngineRequest, GenerateSettings, HeadCell, KvNow, ModelSourceSpec, PlainError } from './protocol.js';

/** The model `fastgen web` serves; a page served elsewhere opens another one by URL or from files. */
const DEFAULT_MODEL_URL = 'models/stories15M/stories15M.bin';

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (el === null) throw new Error(`page: #${id} is missing`);
  return el as T;
};

const ui = {
  prompt: $<HTMLTextAreaElement>('prompt'),
  maxTokens: $<HTMLInputElement>('max-tokens'),
  temperature: $<HTMLInputElement>('temperature'),
  seed: $<HTMLInputElement>('seed'),
  cache: $<HTMLSelectElement>('cache'),
  knob: $<HTMLInputElement>('knob'),
  knobLabel: $('knob-label'),
  knobValue: $('knob-value'),
  backendSelect: $<HTMLSelectElement>('backend-select'),
  run: $<HTMLButtonElement>('run'),
  share: $<HTMLAnchorElement>('share'),
  openUrl: $<HTMLInputElement>('open-url'),
  openUrlGo: $<HTMLButtonElement>('open-url-go'),
  openFiles: $<HTMLInputElement>('open-files'),
  openFolder: $<HTMLInputElement>('open-folder'),
  modelName: $('model-name'),
  modelInfo: $('model-info'),
  backend: $('backend'),
  backendWhy: $('backend-why'),
  status: $('status'),
  progress: $<HTMLProgressElement>('progress'),
  output: $('output'),
  outputPrompt: $('output-prompt'),
  outputText: $('output-text'),
  tokS: $('tok-s'),
  tokens: $('tokens'),
  kvHeld: $('kv-held'),
  kvFull: $('kv-full'),
  kvSaved: $('kv-saved'),
  kvBar: $('kv-bar-held'),
  grid: $('grid'),
  gridCaption: $('grid-caption'),
  explain: $('explain'),
  legend: $('legend'),
  error: $('error'),
  errorTitle: $('error-title'),
  errorMessage: $('error-message'),
  notice: $('notice'),
};

type State = 'loading' | 'ready' | 'generating' | 'failed';
function setState(s: State, text: string): void {
  document.body.dataset.state = s;
  ui.status.textContent = text;
  ui.run.textContent = s === 'generating' ? 'Stop' : 'Generate';
  ui.run.disabled = s === 'loading' || (s === 'failed' && document.body.dataset.model !== 'yes');
}

function showError(e: PlainError | undefined): void {
  ui.error.hidden = e === undefined;
  ui.error.dataset.code = e?.code ?? '';
  ui.errorTitle.textContent = e?.title ?? '';
  ui.errorMessage.textContent = e?.message ?? '';
}

// ---------------------------------------------------------------------------------------------------------------
// Settings: the URL sets them (a run can be shared as a link), the form changes them and rewrites the URL.

for (const name of CACHE_POLICY_NAMES) ui.cache.add(new Option(name, name));
ui.cache.value = 'fastgen'; // what the page is for; ?cache=full compares

const params = new URLSearchParams(location.search);
const fromUrl = (key: string, el: HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement): void => {
  const v = params.get(key);
  if (v !== null) el.value = v;
};
fromUrl('prompt', ui.prompt);
fromUrl('max_tokens', ui.maxTokens);
fromUrl('temperature', ui.temperature);
fromUrl('seed', ui.seed);
fromUrl('cache', ui.cache);
fromUrl('backend', ui.backendSelect);
/** A setting in the address that the form cannot take, said once the page has started. */
let urlProblem: PlainError | undefined;
if (params.get('cache') !== null && ui.cache.value !== params.get('cache')) {
  urlProblem = { code: 'INVALID_OPTION', title: 'Invalid setting', message: `cache=${params.get('cache')} is not a cache policy; expected one of ${CACHE_POLICY_NAMES.join(', ')}` };
  ui.cache.value = 'fastgen';
}

/** The slider is fastgen's recovery T, or the fraction of the sequence a uniform baseline keeps. */
const knobs = { recovery: params.get('recovery') ?? '0.95', ratio: params.get('ratio') ?? '0.5' };
function knobKey(): 'recovery' | 'ratio' | undefined {
  return ui.cache.value === 'fastgen' ? 'recovery' : ui.cache.value === 'full' ? undefined : 'ratio';
}
function syncKnob(): void {
  const key = knobKey();
  ui.knob.disabled = key === undefined;
  ui.knobLabel.textContent = key === 'recovery' ? 'T (attention recovered)' : key === 'ratio' ? 'ratio kept' : 'no knob (full cache)';
  if (key !== undefined) ui.knob.value = knobs[key];
  ui.knobValue.textContent = key !== undefined ? Number(ui.knob.value).toFixed(2) : '–';
}
syncKnob();

function settings(): GenerateSettings {
  const key = knobKey();
  const knob = Number(ui.knob.value);
  return {
    prompt: ui.prompt.value,
    maxTokens: Number(ui.maxTokens.value),
    temperature: Number(ui.temperature.value),
    seed: Number(ui.seed.value),
    cache: { policy: ui.cache.value as (typeof CACHE_POLICY_NAMES)[number], ...(key === 'recovery' ? { recovery: knob } : key === 'ratio' ? { ratio: knob } : {}) },
  };
}

function writeUrl(): void {
  const p = new URLSearchParams(location.search);
  const key = knobKey();
  p.set('prompt', ui.prompt.value);
  p.set('max_tokens', ui.maxTokens.value);
  p.set('temperature', ui.temperature.value);
  p.set('seed', ui.seed.value);
  p.set('cache', ui.cache.value);
  p.delete('recovery');
  p.delete('ratio');
  if (key !== undefined) p.set(key, ui.knob.value);
  p.delete('autorun');
  history.replaceState(null, '', `?${p}`);
  const link = new URL(location.href);
  link.searchParams.set('autorun', '1');
  ui.share.href = link.href;
}

for (const el of [ui.prompt, ui.maxTokens, ui.temperature, ui.seed]) el.addEventListener('change', writeUrl);
ui.cache.addEventListener('change', () => {
  syncKnob();
  writeUrl();
});
ui.knob.addEventListener('input', () => {
  const key = knobKey();
  if (key !== undefined) knobs[key] = ui.knob.value;
  ui.knobValue.textContent = Number(ui.knob.value).toFixed(2);
});
ui.knob.addEventListener('change', writeUrl);

// ---------------------------------------------------------------------------------------------------------------
// The engine

if (!crossOriginIsolated) {
  ui.notice.hidden = false;
  ui.notice.textContent =
    'This page is not cross-origin isolated (it was served without the COOP/COEP headers that `fastgen web` sends), ' +
    'so the WebAssembly threads cannot share memory: without WebGPU, the slow TypeScript reference runs.';
}

const engine = new Worker(new URL('./fastgen-engine.js', import.meta.url), { type: 'module', name: 'fastgen engine' });
const send = (m: EngineRequest): void => engine.postMessage(m);
engine.onerror = (e) => {
  showError({ code: 'INTERNAL', title: 'The engine did not start', message: e.message || 'fastgen-engine.js failed to load (is the page served by fastgen web?)' });
  setState('failed', 'engine failed');
};

let generationId = 0;
let text = '';
let lastSource: ModelSourceSpec | undefined;

/** What the header said before an open that may fail (a failed open leaves the model in use as it was). */
let shown = { name: '', info: '' };

function open(source: ModelSourceSpec): void {
  lastSource = source;
  showError(undefined);
  shown = { name: ui.modelName.textContent ?? '', info: ui.modelInfo.textContent ?? '' };
  ui.modelName.textContent = source.kind === 'url' ? source.url : source.label;
  ui.modelInfo.textContent = 'opening…';
  setState('loading', 'opening the model…');
  ui.progress.hidden = false;
  ui.progress.removeAttribute('value');
  send({ type: 'load', source, backend: ui.backendSelect.value as BackendRequest });
}

function run(): void {
  if (document.body.dataset.state === 'generating') {
    send({ type: 'stop' });
    return;
  }
  writeUrl();
  showError(undefined);
  text = '';
  ui.outputPrompt.textContent = ui.prompt.value;
  ui.outputText.textContent = '';
  ui.tokS.textContent = '–';
  ui.tokens.textContent = '–';
  setState('generating', 'prefilling the prompt…');
  const s = settings();
  ui.explain.textContent = explanation(s);
  send({ type: 'generate', id: ++generationId, settings: s });
}

/** What the grid shows for these settings, in a sentence. */
function explanation(s: GenerateSettings): string {
  const c = s.cache;
  if (c.policy === 'fastgen') {
    return `FastGen profiled every head once, at the end of the prompt, and gave it the cheapest policy that still recovers ` +
      `T = ${c.recovery?.toFixed(2)} of its attention; the pages it does not keep are freed.`;
  }
  if (c.policy === 'full') return 'A full cache: every head keeps every token (the baseline FastGen is measured against).';
  return `A uniform baseline: every head keeps the same share (${c.ratio?.toFixed(2)}) of the sequence by the ${c.policy} rule.`;
}

let autorun = params.get('autorun') === '1';

engine.onmessage = (e: MessageEvent) => {
  const m = e.data as EngineEvent;
  switch (m.type) {
    case 'progress': {
      ui.progress.hidden = false;
      if (m.total > 0) {
        ui.progress.max = m.total;
        ui.progress.value = m.loaded;
      }
      const mb = (n: number) => (n / 1e6).toFixed(1);
      ui.status.textContent = `${m.phase === 'download' ? 'downloading' : 'loading'} ${mb(m.loaded)}${m.total > 0 ? ` / ${mb(m.total)}` : ''} MB`;
      break;
    }
    case 'loaded': {
      document.body.dataset.model = 'yes';
      document.body.dataset.backend = m.backend.name;
      ui.progress.hidden = true;
      const c = m.model;
      ui.modelName.textContent = c.name;
      ui.modelInfo.textContent =
        `${c.architecture}, ${(c.parameters / 1e6).toFixed(1)} M parameters, ${c.nLayers} layers × ${c.nHeads} heads` +
        `${c.nKvHeads !== c.nHeads ? ` (${c.nKvHeads} KV heads)` : ''}, context ${c.maxSeqLen}; loaded in ${(c.loadMs / 1000).toFixed(1)} s`;
      ui.backend.textContent = m.backend.name;
      ui.backendWhy.textContent = m.backend.why;
      setState('ready', 'ready');
      if (autorun) {
        autorun = false;
        run();
      }
      break;
    }
    case 'prefilled':
      ui.status.textContent = `prompt: ${m.promptTokens} tokens in ${m.prefillMs.toFixed(0)} ms${m.profileMs > 0 ? ` (FastGen profiling ${m.profileMs.toFixed(0)} ms)` : ''}; generating…`;
      showKv(m.kv);
      break;
    case 'token':
      if (m.id !== generationId) break;
      text += m.piece;
      ui.outputText.textContent = text;
      ui.output.scrollTop = ui.output.scrollHeight;
      ui.tokens.textContent = String(m.generated);
      if (m.decodeTokensPerSecond > 0) ui.tokS.textContent = m.decodeTokensPerSecond.toFixed(1);
      showKv(m.kv);
      break;
    case 'done':
      if (m.id !== generationId) break;
      ui.outputText.textContent = m.text;
      ui.tokens.textContent = String(m.generated);
      ui.tokS.textContent = m.decodeTokensPerSecond.toFixed(1);
      showKv(m.kv);
      setState('ready', `done: ${m.stopReason === 'length' ? 'max tokens reached' : m.stopReason === 'eos' ? 'end of text' : m.stopReason}; prompt ${m.promptTokens} tokens at ${m.prefillTokensPerSecond.toFixed(0)} tok/s`);
      break;
    case 'error':
      ui.progress.hidden = true;
      showError(m.error);
      if (m.during === 'load') {
        document.body.dataset.model = m.stillLoaded !== undefined ? 'yes' : 'no';
        if (m.stillLoaded !== undefined) {
          ui.modelName.textContent = shown.name;
          ui.modelInfo.textContent = shown.info;
          setState('ready', `that did not open; ${m.stillLoaded} is still loaded`);
        } else {
          ui.modelInfo.textContent = '';
          setState('failed', 'the model did not open');
        }
      } else {
        setState(document.body.dataset.model === 'yes' ? 'ready' : 'failed', 'the generation failed');
      }
      break;
  }
};

// ---------------------------------------------------------------------------------------------------------------
// KV bytes and the policy grid

/** Colours of the paper's chain, then of any other family (the lattice's), in order of first appearance. */
const CHAIN_COLORS: Record<string, string> = {
  special: '#2c7bb6',
  'special+punct': '#00a6ca',
  'special+punct+frequent': '#90d743',
  'special+punct+frequent+local': '#fdae61',
  full: '#d7191c',
};
const OTHER_COLORS = ['#762a83', '#1b7837', '#bf812d', '#c51b7d', '#35978f', '#9970ab', '#5aae61', '#8c510a', '#4d9221', '#c2a5cf'];
const familyColors = new Map<string, string>(Object.entries(CHAIN_COLORS));
function colorOf(family: string): string {
  let c = familyColors.get(family);
  if (c === undefined) {
    c = OTHER_COLORS[(familyColors.size - Object.keys(CHAIN_COLORS).length) % OTHER_COLORS.length]!;
    familyColors.set(family, c);
  }
  return c;
}

function showKv(kv: KvNow): void {
  ui.kvHeld.textContent = formatBytes(kv.kvBytes);
  ui.kvFull.textContent = formatBytes(kv.fullKvBytes);
  const saved = kv.fullKvBytes > 0 ? 1 - kv.kvBytes / kv.fullKvBytes : 0;
  ui.kvSaved.textContent = `${(saved * 100).toFixed(1)} %`;
  ui.kvBar.style.width = `${kv.fullKvBytes > 0 ? (100 * kv.kvBytes) / kv.fullKvBytes : 0}%`;
  drawGrid(kv.grid, kv.sequenceTokens);
}

function drawGrid(grid: HeadCell[][], sequenceTokens: number): void {
  const heads = grid[0]?.length ?? 0;
  ui.grid.style.gridTemplateColumns = `3.2em repeat(${heads}, minmax(1.6em, 1fr))`;
  const counts = new Map<string, number>();
  const cells: HTMLElement[] = [];
  const label = (t: string, cls: string): HTMLElement => {
    const el = document.createElement('div');
    el.className = cls;
    el.textContent = t;
    return el;
  };
  cells.push(label('', 'corner'));
  for (let h = 0; h < heads; h++) cells.push(label(`h${h}`, 'col-label'));
  grid.forEach((row, l) => {
    cells.push(label(`L${l}`, 'row-label'));
    row.forEach((cell, h) => {
      const family = policyFamily(cell.policy);
      counts.set(family, (counts.get(family) ?? 0) + 1);
      const share = sequenceTokens > 0 ? cell.kept / sequenceTokens : 0;
      const el = label(String(cell.kept), 'cell');
      el.dataset.policy = cell.policy;
      el.dataset.kept = String(cell.kept);
      el.style.setProperty('--c', colorOf(family));
      el.style.setProperty('--share', `${(share * 100).toFixed(1)}%`);
      el.title =
        `layer ${l}, KV head ${h}: ${cell.policy}` +
        (cell.recovery !== undefined ? `, recovers ${(cell.recovery * 100).toFixed(1)} % of its attention` : '') +
        `; holds ${cell.kept} of ${sequenceTokens} tokens`;
      cells.push(el);
    });
  });
  ui.grid.replaceChildren(...cells);
  ui.gridCaption.textContent = `${grid.length} layers × ${heads} KV heads; each cell: the tokens that head holds now (of ${sequenceTokens}), filled by its share`;
  ui.legend.replaceChildren(
    ...[...counts].map(([family, n]) => {
      const item = document.createElement('span');
      item.className = 'legend-item';
      const swatch = document.createElement('i');
      swatch.style.background = colorOf(family);
      item.append(swatch, `${family} (${n})`);
      return item;
    }),
  );
}

// ---------------------------------------------------------------------------------------------------------------
// Opening models

ui.run.addEventListener('click', run);
ui.prompt.addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) run();
});
ui.openUrlGo.addEventListener('click', () => {
  const url = ui.openUrl.value.trim();
  if (url !== '') open({ kind: 'url', url });
});
const openPicked = (input: HTMLInputElement): void => {
  const files = Array.from(input.files ?? []);
  if (files.length === 0) return;
  const folder = files[0]!.webkitRelativePath.split('/')[0];
  open({ kind: 'files', files, label: folder || files.map((f) => f.name).join(', ') });
  input.value = '';
};
ui.openFiles.addEventListener('change', () => openPicked(ui.openFiles));
ui.openFolder.addEventListener('change', () => openPicked(ui.openFolder));
ui.backendSelect.addEventListener('change', () => {
  const p = new URLSearchParams(location.search);
  p.set('backend', ui.backendSelect.value);
  history.replaceState(null, '', `?${p}`);
  open(lastSource ?? { kind: 'url', url: params.get('model') ?? DEFAULT_MODEL_URL });
});

writeUrl();
open({ kind: 'url', url: params.get('model') ?? DEFAULT_MODEL_URL });
if (urlProblem !== undefined) showError(urlProblem);

// Works offline once loaded: the service worker keeps the page, the engine and the model bytes it fetched.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register(new URL('./sw.js', import.meta.url)).catch((err: unknown) => {
    console.warn(`fastgen: no offline copy (${(err as Error).message})`);
  });
}
