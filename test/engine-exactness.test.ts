import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createBackend } from '../src/backend/index.js';
import type { Backend } from '../src/backend/types.js';
import { PagePool } from '../src/cache/page-pool.js';
import { resolveCacheOptions, type CacheOptions } from '../src/cache/policies/index.js';
import { SequenceKv } from '../src/cache/sequence-kv.js';
import { loadCheckpoint } from '../src/model/load-checkpoint.js';
import { argmax } from '../src/generate/sampler.js';
import { HF_TINY, readJson, relErr, SKIP_SHARED, sharedPath } from './shared-fixtures.js';


function sequence(backend: Backend, cache?: CacheOptions): SequenceKv {
  const c = backend.config;
  const pool = new PagePool({ headDim: c.headDim, arena: backend.createArena() });
  const none = new Uint8Array(c.vocabSize);
  return new SequenceKv(pool, c, resolveCacheOptions(cache), { special: none, punct: none });
}

/** Greedy continuation from `prompt` by prefill + token-by-token decode over the KV cache. */
async function greedy(backend: Backend, prompt: number[], steps: number): Promise<number[]> {
  const kv = sequence(backend);
  const out = prompt.slice();
  let [logits] = await backend.forward([{ kv, tokens: prompt, logits: 'last' }]);
  for (let i = 0; i < steps; i++) {
    const next = argmax(logits);
    out.push(next);
    if (i + 1 < steps) [logits] = await backend.forward([{ kv, tokens: [next], logits: 'last' }]);
  }
  kv.release();
  return out;
}

for (const backendName of ['cpu-ref', 'wasm']) {
for (const name of ['stories15M', 'stories260K']) {
  test(`${backendName} ${name}: last logits within 1e-4 and greedy continuation token-identical to HF`, { skip: SKIP_SHARED }, async () => {
    const ref = readJson(`fixtures/reference/${name}-reference.json`);
    const ckpt = await loadCheckpoint(name === 'stories15M' ? undefined : sharedPath('models/stories260K/stories260K.bin'));
    const backend = await createBackend(ckpt, { backend: backendName });
    const kv = sequence(backend);
    const [logits] = await backend.forward([{ kv, tokens: ref.input_ids, logits: 'last' }]);
    const err = relErr(logits, ref.last_logits);
    assert.ok(err < 1e-4, `relative logits error ${err}`);
    const steps = ref.greedy_ids.length - ref.input_ids.length;
    const ids = await greedy(backend, ref.input_ids, steps);
    assert.deepEqual(ids, ref.greedy_ids);
    backend.dispose();
  });
}

for (const name of HF_TINY) {
  test(`${backendName} hf-tiny/${name}: logits at 21..23 within 1e-4, greedy_from_first_8 exact`, { skip: SKIP_SHARED }, async () => {
    const ref = readJson(`fixtures/hf-tiny/${name}/reference.json`);
    const ckpt = await loadCheckpoint(sharedPath(`fixtures/hf-tiny/${name}`));
    // The bf16/f16 references were computed by a model cast to half precision and back, which rounded its RoPE
    // inv_freq table (a known transformers pitfall); with the correct f32 table the logits differ by ~2e-4 relative.
    // Reproduce their computation through the engine's compatibility knob; the default stays the correct f32 table.
    if (ckpt.config.sourceDtype !== 'f32') ckpt.config.ropeInvFreqDtype = ckpt.config.sourceDtype;
    const backend = await createBackend(ckpt, { backend: backendName });
    const kv = sequence(backend);
    const [all] = await backend.forward([{ kv, tokens: ref.input_ids, logits: 'all' }]);
    const V = ckpt.config.vocabSize;
    ref.logits_positions.forEach((p: number, i: number) => {
      const err = relErr(all.subarray(p * V, (p + 1) * V), ref.logits[i]);
      assert.ok(err < 1e-4, `position ${p}: relative error ${err}`);
    });
    const first8 = ref.greedy_from_first_8.slice(0, 8);
    const ids = await greedy(backend, first8, ref.greedy_from_first_8.length - 8);
    assert.deepEqual(ids, ref.greedy_from_first_8);
    backend.dispose();
  });
}
}
