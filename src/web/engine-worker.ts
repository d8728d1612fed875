/**
 * The engine in a page: a dedicated worker that loads the model and runs generations, posting progress, every token,
 * the KV bytes held and the per-head policy grid to the page (protocol.ts). It is a worker because the wasm backend's
 * calling thread waits on Atomics while the pool threads work, which a page's main thread may not do; the UI stays
 * responsive as a bonus. Bundled as fastgen-engine.js by scripts/build-web.mjs.
 */
import { gpuContext } from '../backend/webgpu/device.js';
import { FastgenError } from '../errors.js';
import { loadModel, type Model } from '../generate/model.js';
import type { GenerationRequest } from '../generate/request.js';
import { step } from '../generate/step.js';
import { blobFolder } from '../model/files.js';
import { locateModel } from '../model/locate.js';
import { detectModelFolder, inspectModelInput, type ModelInput } from '../model/model-input.js';
import type { BackendChoice, BackendRequest, EngineEvent, EngineRequest, GenerateSettings, KvNow, ModelSourceSpec, PlainError } from './protocol.js';

interface WorkerScope {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(m: unknown): void;
  crossOriginIsolated: boolean;
  navigator: { gpu?: GPU; hardwareConcurrency?: number };
}
const scope = globalThis as unknown as WorkerScope;
const post = (e: EngineEvent): void => scope.postMessage(e);

let model: Model | undefined;
let running: AbortController | undefined;
/** Loads and generations run one at a time, in the order asked. */
let queue: Promise<void> = Promise.resolve();

scope.onmessage = (e: MessageEvent) => {
  const m = e.data as EngineRequest;
  if (m.type === 'stop') {
    running?.abort(); // seen between two tokens: the loop yields to the event loop after each
    return;
  }
  queue = queue.then(() => (m.type === 'load' ? load(m.source, m.backend) : generate(m.id, m.settings)));
};

/** WebGPU when an adapter answers, else the wasm SIMD kernels on threads, else (not isolated) the TypeScript reference. */
async function chooseBackend(asked: BackendRequest): Promise<BackendChoice & { threads?: number }> {
  let why = '';
  if (asked === 'cpu-ref') return { name: 'cpu-ref', why: 'backend=cpu-ref: the plain-TypeScript reference (slow, for checking)' };
  if (asked === 'webgpu' || asked === 'auto') {
    if (scope.navigator.gpu === undefined) {
      why = 'no WebGPU in this browser (navigator.gpu is missing)';
    } else {
      try {
        const ctx = await gpuContext();
        return { name: 'webgpu', why: `${asked === 'auto' ? 'a WebGPU adapter answered' : 'backend=webgpu'}: WGSL kernels on ${ctx.adapterName}` };
      } catch (err) {
        why = `WebGPU found no adapter (${(err as Error).message.split('. ')[0]})`;
      }
    }
    if (asked === 'webgpu') throw new FastgenError('GPU_UNAVAILABLE', `${why}. Choose the wasm backend instead.`, 'backend');
  } else {
    why = 'backend=wasm';
  }
  if (scope.crossOriginIsolated) {
    const threads = Math.max(1, Math.min(4, scope.navigator.hardwareConcurrency ?? 2));
    return { name: 'wasm', why: `${why}: WebAssembly SIMD on ${threads} threads, one shared memory (cross-origin isolated)`, threads };
  }
  if (asked === 'wasm') {
    throw new FastgenError(
      'INVALID_OPTION',
      'the page is not cross-origin isolated, so the wasm threads cannot share memory: serve it with the COOP/COEP headers (fastgen web does) or choose the reference backend',
      'backend',
    );
  }
  return { name: 'cpu-ref', why: `${why}; the page is not cross-origin isolated (no shared memory for wasm threads): the plain-TypeScript reference runs, slowly` };
}

async function findInput(source: ModelSourceSpec): Promise<ModelInput> {
  if (source.kind === 'files') {
    if (source.files.length === 0) throw new FastgenError('MODEL_NOT_FOUND', 'no files were picked');
    return detectModelFolder(blobFolder(source.files.map((f) => ({ name: f.name, blob: f })), source.label));
  }
  return locateModel(source.url, {
    tokenizer: source.tokenizerUrl,
    onDownload: (loaded, total, what) => post({ type: 'progress', phase: 'download', loaded, total, what }),
  });
}

async function load(source: ModelSourceSpec, asked: BackendRequest): Promise<void> {
  try {
    const choice = await chooseBackend(asked);
    const input = await findInput(source);
    // A file that is not a model fails here, from its headers, while the model in use stays loaded.
    await inspectModelInput(input);
    model?.dispose();
    model = undefined;
    const m = await loadModel(input, {
      backend: choice.name,
      threads: choice.threads,
      onProgress: (loaded, total, what) => post({ type: 'progress', phase: 'load', loaded, total, what }),
    });
    model = m;
    const c = m.config;
    post({
      type: 'loaded',
      model: {
        name: c.name, architecture: c.architecture, parameters: m.parameters, nLayers: c.nLayers, nHeads: c.nHeads, nKvHeads: c.nKvHeads,
        maxSeqLen: c.maxSeqLen, vocabSize: c.vocabSize, source: m.source.path, loadMs: m.loadMs,
      },
      backend: { name: choice.name, why: choice.why },
    });
  } catch (err) {
    post({ type: 'error', during: 'load', error: plainError(err), stillLoaded: model?.config.name });
  }
}

async function generate(id: number, s: GenerateSettings): Promise<void> {
  if (model === undefined) {
    post({ type: 'error', id, during: 'generate', error: { code: 'NO_MODEL', title: 'No model', message: 'no model is loaded: open one first' } });
    return;
  }
  const m = model;
  running = new AbortController();
  let req: GenerationRequest | undefined;
  try {
    req = m.createRequest(s.prompt, { maxTokens: s.maxTokens, temperature: s.temperature, seed: s.seed, cache: s.cache, signal: running.signal });
    let peak = 0;
    let generated = 0;
    let firstTokenAt = 0;
    const t0 = performance.now();
    while (!req.done) {
      const [o] = await step(m.backend, [req]);
      if (o!.error !== undefined) throw o!.error;
      const kv = kvNow(req, (peak = Math.max(peak, req.kv.kvBytes())));
      if (generated === 0) {
        firstTokenAt = performance.now();
        post({ type: 'prefilled', id, promptTokens: req.promptIds.length, prefillMs: firstTokenAt - t0, profileMs: req.kv.profileMs, kv });
      }
      generated++;
      const decodeTokensPerSecond = generated > 1 ? ((generated - 1) * 1000) / (performance.now() - firstTokenAt) : 0;
      post({ type: 'token', id, piece: o!.piece, generated, decodeTokensPerSecond, kv });
      await nextTurn(); // lets a 'stop' message in
    }
    const r = req.result();
    post({
      type: 'done', id, stopReason: r.stopReason, text: r.text, generated: r.generatedTokens, promptTokens: r.promptTokens,
      prefillTokensPerSecond: r.timings.prefillTokensPerSecond, decodeTokensPerSecond: r.timings.decodeTokensPerSecond, kv: kvNow(req, peak),
    });
  } catch (err) {
    post({ type: 'error', id, during: 'generate', error: plainError(err) });
  } finally {
    req?.kv.release();
    running = undefined;
  }
}

/** The cache right now: bytes held against a full cache's, and every (layer, KV head)'s policy and kept tokens. */
function kvNow(req: GenerationRequest, peakKvBytes: number): KvNow {
  const kv = req.kv;
  const st = kv.stats();
  const profiles = kv.profiles;
  const grid = st.keptTokens.map((heads, l) =>
    heads.map((kept, h) => {
      const profile = profiles[l]?.[h];
      const recovery = profile?.recoveries.find((r) => r.policy === profile.policy)?.recovery;
      return { policy: kv.headPolicy(l, h).name, kept, ...(recovery !== undefined ? { recovery } : {}) };
    }),
  );
  return { sequenceTokens: st.sequenceTokens, kvBytes: st.kvBytes, fullKvBytes: st.fullKvBytes, peakKvBytes, grid };
}

/** One macrotask turn (a MessageChannel round trip: setTimeout(0) is clamped to 4 ms). */
const channel = new MessageChannel();
const waiting: (() => void)[] = [];
channel.port1.onmessage = () => waiting.shift()?.();
function nextTurn(): Promise<void> {
  return new Promise((resolve) => {
    waiting.push(resolve);
    channel.port2.postMessage(0);
  });
}

const TITLES: Partial<Record<string, string>> = {
  GPU_UNAVAILABLE: 'No WebGPU',
  NOT_A_MODEL: 'Not a model',
  CORRUPT_MODEL: 'Not a model (damaged or incomplete)',
  UNSUPPORTED_MODEL: 'A model this engine does not support',
  CONFIG_ERROR: 'Not a model (bad config.json)',
  CHECKSUM_MISMATCH: 'Damaged model file',
  MODEL_NOT_FOUND: 'Model not found',
  TOKENIZER_ERROR: 'Tokenizer problem',
  CONTEXT_OVERFLOW: 'Prompt too long',
  INVALID_OPTION: 'Invalid setting',
  KV_POOL_EXHAUSTED: 'Out of memory',
};

const OUT_OF_MEMORY = /out of memory|allocat|Array buffer|typed array length|Memory\.grow|maximum memory/i;

/** Any failure, in plain words for the page. */
export function plainError(err: unknown): PlainError {
  const message = err instanceof Error ? err.message : String(err);
  if (OUT_OF_MEMORY.test(message) && (err instanceof RangeError || /out of memory/i.test(message))) {
    return {
      code: 'OUT_OF_MEMORY',
      title: 'Out of memory',
      message: `the model does not fit in the memory this tab may use (${message}). Try a smaller model, the other backend, or close other tabs.`,
    };
  }
  if (err instanceof FastgenError) return { code: err.code, title: TITLES[err.code] ?? 'Error', message };
  return { code: 'INTERNAL', title: 'Internal error', message };
}
