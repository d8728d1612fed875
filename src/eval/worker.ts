/** Worker thread for `fastgen eval --jobs N`: loads its own copy of the model and evaluates one prompt at a time. */
import { parentPort, workerData } from 'node:worker_threads';
import type { BackendName, WeightDtype } from '../backend/index.js';
import { loadModel } from '../generate/model.js';
import { PromptEvaluator } from './runner.js';
import type { EvalSettings } from './types.js';

interface Data {
  modelPath?: string;
  backend?: BackendName;
  dtype?: WeightDtype;
  threads?: number;
  settings: EvalSettings;
}

const port = parentPort;
if (!port) throw new Error('eval worker must run in a worker thread');

const data = workerData as Data;
try {
  const model = await loadModel(data.modelPath, { backend: data.backend, dtype: data.dtype, threads: data.threads });
  const evaluator = new PromptEvaluator(model, data.settings);
  port.on('message', (m: { type: 'run'; index: number; prompt: Parameters<PromptEvaluator['run']>[0] }) => {
    evaluator
      .run(m.prompt, m.index, (cost) => port.postMessage({ type: 'progress', cost }))
      .then((result) => port.postMessage({ type: 'result', index: m.index, result }))
      .catch((e: { message?: string; code?: string }) => port.postMessage({ type: 'error', message: e?.message ?? String(e), code: e?.code }));
  });
  port.postMessage({ type: 'ready' });
} catch (e) {
  const err = e as { message?: string; code?: string };
  port.postMessage({ type: 'error', message: err?.message ?? String(e), code: err?.code });
}
