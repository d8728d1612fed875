import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseHfConfig } from '../src/model/hf.js';
import { loadCheckpoint, type TokenizerSource } from '../src/model/load-checkpoint.js';
import type { LoadedCheckpoint, Tensor } from '../src/model/types.js';
import {
  copyFolder, editJson, expectLoadError, HF_TINY, rawTensorBytes, readRawSafetensors, sharedOrSkip, tempDir, writeSafetensors,
} from './model-helpers.js';

test('every hf-tiny fixture loads with the right config and tensors', async (t) => {
  const shared = sharedOrSkip(t);
  if (!shared) return;
  const expected = {
    'llama3-gqa-f32': { architecture: 'llama', nKvHeads: 2, headDim: 16, dtype: 'f32', tied: false, bias: false, qkNorm: false, theta: 500000 },
    'llama3-gqa-f32-legacy-config': { architecture: 'llama', nKvHeads: 2, headDim: 16, dtype: 'f32', tied: false, bias: false, qkNorm: false, theta: 500000 },
    'qwen2-bias-tied-bf16': { architecture: 'qwen2', nKvHeads: 2, headDim: 16, dtype: 'bf16', tied: true, bias: true, qkNorm: false, theta: 1e6 },
    'mistral-mqa-f16': { architecture: 'mistral', nKvHeads: 1, headDim: 16, dtype: 'f16', tied: false, bias: false, qkNorm: false, theta: 10000 },
    'qwen3-qknorm-f32': { architecture: 'qwen3', nKvHeads: 2, headDim: 32, dtype: 'f32', tied: true, bias: false, qkNorm: true, theta: 1e6 },
  } as const;
  for (const name of HF_TINY) {
    const dir = join(shared, 'fixtures/hf-tiny', name);
    const e = expected[name];
    const { config: c, weights: w, source } = await loadCheckpoint(dir);
    assert.deepEqual(source, { kind: 'hf', path: dir });
    assert.deepEqual(
      [c.name, c.architecture, c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKvHeads, c.headDim, c.vocabSize, c.maxSeqLen],
      [name, e.architecture, 64, 160, 2, 4, e.nKvHeads, e.headDim, 512, 512],
      name,
    );
    assert.deepEqual([c.sourceDtype, c.tiedEmbeddings, c.qkvBias, c.qkNorm, c.ropeTheta, c.normEps], [e.dtype, e.tied, e.bias, e.qkNorm, e.theta, 1e-6], name);
    assert.deepEqual([c.bosTokenId, c.eosTokenIds], [0, [1]], name);
    assert.equal(w.layers.length, 2);
    const l = w.layers[1]!;
    assert.deepEqual(l.wq.shape, [4 * e.headDim, 64], name);
    assert.deepEqual(l.wk.shape, [e.nKvHeads * e.headDim, 64], name);
    assert.deepEqual(l.wo.shape, [64, 4 * e.headDim], name);
    assert.equal(l.wq.dtype, e.dtype);
    assert.ok(e.dtype === 'f32' ? l.wq.data instanceof Float32Array : l.wq.data instanceof Uint16Array, `${name}: raw ${e.dtype} kept`);
    assert.equal(w.lmHead === w.tokenEmbedding, e.tied, `${name}: tied lmHead is the embedding object`);
    assert.equal(l.bq !== undefined && l.bk !== undefined && l.bv !== undefined, e.bias, name);
    if (e.bias) assert.deepEqual([l.bq!.shape, l.bk!.shape, l.bv!.shape], [[64], [32], [32]]);
    assert.equal(l.qNorm !== undefined && l.kNorm !== undefined, e.qkNorm, name);
    if (e.qkNorm) assert.deepEqual([l.qNorm!.shape, l.kNorm!.shape], [[32], [32]]);
    assert.equal('bq' in l, e.bias, `${name}: absent optional tensors are absent keys`);
    if (name.startsWith('llama3')) {
      assert.deepEqual(c.ropeScaling, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 }, name);
    } else {
      assert.equal(c.ropeScaling, undefined, name);
    }
  }
});

test('both llama3 config styles give the same config and the same tensors', async (t) => {
  const shared = sharedOrSkip(t);
  if (!shared) return;
  const modern = await loadCheckpoint(join(shared, 'fixtures/hf-tiny/llama3-gqa-f32'));
  const legacy = await loadCheckpoint(join(shared, 'fixtures/hf-tiny/llama3-gqa-f32-legacy-config'));
  assert.deepEqual({ ...legacy.config, name: '' }, { ...modern.config, name: '' });
  assertSameWeights(legacy, modern);
});

function assertSameWeights(a: LoadedCheckpoint, b: LoadedCheckpoint): void {
  const same = (x: Tensor | undefined, y: Tensor | undefined, what: string): void => {
    assert.equal(x?.dtype, y?.dtype, what);
    assert.deepEqual(x?.shape, y?.shape, what);
    assert.deepEqual(x?.data, y?.data, what);
  };
  same(a.weights.tokenEmbedding, b.weights.tokenEmbedding, 'embedding');
  same(a.weights.finalNorm, b.weights.finalNorm, 'final norm');
  same(a.weights.lmHead, b.weights.lmHead, 'lm head');
  assert.equal(a.weights.lmHead === a.weights.tokenEmbedding, b.weights.lmHead === b.weights.tokenEmbedding);
  a.weights.layers.forEach((la, i) => {
    const lb = b.weights.layers[i]!;
    for (const key of new Set([...Object.keys(la), ...Object.keys(lb)]) as Set<keyof typeof la>) same(la[key], lb[key], `layer ${i} ${key}`);
  });
}

/** Split a fixture's tensors across two shards (alternating) plus model.safetensors.index.json. */
async function shardFixture(src: string, dst: string): Promise<void> {
  await copyFolder(src, dst);
  const raw = await readRawSafetensors(join(dst, 'model.safetensors'));
  await rm(join(dst, 'model.safetensors'));
  const names = Object.keys(raw.header).sort();
  const shards = [names.filter((_, i) => i % 2 === 0), names.filter((_, i) => i % 2 === 1)];
  const weightMap: Record<string, string> = {};
  for (const [i, shard] of shards.entries()) {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    await writeSafetensors(
      join(dst, file),
      shard.map((name) => ({ name, dtype: raw.header[name]!.dtype, shape: raw.header[name]!.shape, bytes: rawTensorBytes(raw, name) })),
    );
    for (const name of shard) weightMap[name] = file;
  }
  await writeFile(join(dst, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: raw.data.byteLength }, weight_map: weightMap }));
}

test('sharded checkpoints (index + two files) load the same tensors as the single file', async (t) => {
  const shared = sharedOrSkip(t);
  if (!shared) return;
  const tmp = await tempDir(t);
  for (const name of ['qwen2-bias-tied-bf16', 'llama3-gqa-f32', 'qwen3-qknorm-f32']) {
    const src = join(shared, 'fixtures/hf-tiny', name);
    const dst = join(tmp, name);
    await shardFixture(src, dst);
    const sharded = await loadCheckpoint(dst);
    const single = await loadCheckpoint(src);
    assert.deepEqual(sharded.config, single.config);
    assertSameWeights(sharded, single);
  }
});

test('a missing shard or a tensor the index misplaces is CORRUPT_MODEL naming the file', async (t) => {
  const shared = sharedOrSkip(t);
  if (!shared) return;
  const tmp = await tempDir(t);
  const dir = join(tmp, 'm');
  await shardFixture(join(shared, 'fixtures/hf-tiny/llama3-gqa-f32'), dir);
  await editJson(join(dir, 'model.safetensors.index.json'), (j) => {
    (j.weight_map as Record<string, string>)['model.norm.weight'] = 'model-00003-of-00002.safetensors';
  });
  await expectLoadError(loadCheckpoint(dir), 'CORRUPT_MODEL', ['model-00003-of-00002.safetensors', 'missing']);
  // point a tensor at the other shard, which exists but does not hold it
  const fresh = join(tmp, 'fresh');
  await shardFixture(join(shared, 'fixtures/hf-tiny/llama3-gqa-f32'), fresh);
  await editJson(join(fresh, 'model.safetensors.index.json'), (j) => {
    const map = j.weight_map as Record<string, string>;
    map['model.norm.weight'] = map['model.norm.weight']!.includes('00001') ? 'model-00002-of-00002.safetensors' : 'model-00001-of-00002.safetensors';
  });
  await expectLoadError(loadCheckpoint(fresh), 'CORRUPT_MODEL', ['model.norm.weight', 'no such tensor']);
});

test('eos ids from generation_config.json are merged with config.json', async (t) => {
  const shared = sharedOrSkip(t);
  if (!shared) return;
  const dir = await copyFolder(join(shared, 'fixtures/hf-tiny/qwen2-bias-tied-bf16'), join(await tempDir(t), 'm'));
  await editJson(join(dir, 'config.json'), (j) => (j.eos_token_id = [1, 7]));
  await editJson(join(dir, 'generation_config.json'), (j) => (j.eos_token_id = [7, 9]));
  assert.deepEqual((await loadCheckpoint(dir)).config.eosTokenIds, [1, 7, 9]);
});

test('a folder with tokenizer.json is its own tokenizer source; tokenizerPath can point at another', async (t) => {
  const shared = sharedOrSkip(t);
  if (!shared) return;
  const dir = await copyFolder(join(shared, 'fixtures/hf-tiny/llama3-gqa-f32'), join(await tempDir(t), 'm'));
  assert.equal((await loadCheckpoint(dir)).tokenizer, undefined);
  await writeFile(join(dir, 'tokenizer.json'), '{}');
  const hfFolderOf = (tok: TokenizerSource | undefined) => (tok?.kind === 'hf' ? tok.folder.name : tok);
  assert.equal(hfFolderOf((await loadCheckpoint(dir)).tokenizer), dir);
  const bpe = join(shared, 'fixtures/tokenizer-bpe512');
  assert.equal(hfFolderOf((await loadCheckpoint(dir, { tokenizerPath: bpe })).tokenizer), bpe);
  assert.equal(hfFolderOf((await loadCheckpoint(dir, { tokenizerPath: join(bpe, 'tokenizer.json') })).tokenizer), bpe);
  // the config or weights file itself also names the folder
  assert.equal((await loadCheckpoint(join(dir, 'config.json'))).source.path, dir);
  assert.equal((await loadCheckpoint(join(dir, 'model.safetensors'))).source.path, dir);
});

const BASE = {
  model_type: 'llama', hidden_size: 64, intermediate_size: 160, num_hidden_layers: 2, num_attention_heads: 4,
  vocab_size: 512, max_position_embeddings: 512, rms_norm_eps: 1e-5,
};

test('config parsing: defaults, linear RoPE scaling, GQA default, sliding window caps the context', () => {
  const c = parseHfConfig({ ...BASE, rope_scaling: { type: 'linear', factor: 2 } }, undefined, 'x', 'config.json').config;
  assert.deepEqual([c.nKvHeads, c.headDim, c.ropeTheta, c.tiedEmbeddings, c.qkvBias, c.bosTokenId, c.eosTokenIds], [4, 16, 10000, false, false, undefined, []]);
  assert.deepEqual(c.ropeScaling, { type: 'linear', factor: 2 });
  const p = parseHfConfig({ ...BASE, rope_parameters: { rope_type: 'linear', rope_theta: 5e5, factor: 4 } }, undefined, 'x', 'config.json').config;
  assert.deepEqual([p.ropeTheta, p.ropeScaling], [5e5, { type: 'linear', factor: 4 }]);
  const biased = parseHfConfig({ ...BASE, attention_bias: true }, undefined, 'x', 'config.json');
  assert.deepEqual([biased.config.qkvBias, biased.oProjBias], [true, true]);
  const mistral = parseHfConfig({ ...BASE, model_type: 'mistral', sliding_window: 128 }, undefined, 'x', 'config.json').config;
  assert.equal(mistral.maxSeqLen, 128);
  const qwen2 = parseHfConfig({ ...BASE, model_type: 'qwen2', sliding_window: 128, use_sliding_window: false }, undefined, 'x', 'config.json').config;
  assert.deepEqual([qwen2.maxSeqLen, qwen2.qkvBias], [512, true]);
});

test('config errors name the field: unsupported RoPE types, bad values, unsupported features', async () => {
  const parse = (cfg: Record<string, unknown>): unknown => parseHfConfig(cfg, undefined, 'x', '/m/config.json');
  const check = async (cfg: Record<string, unknown>, code: 'UNSUPPORTED_MODEL' | 'CONFIG_ERROR', mentions: string[]): Promise<void> =>
    expectLoadError((async () => parse(cfg))(), code, ['/m/config.json', ...mentions]);
  await check({ ...BASE, rope_scaling: { rope_type: 'yarn', factor: 4 } }, 'UNSUPPORTED_MODEL', ['"yarn"', 'rope_scaling', 'llama3']);
  await check({ ...BASE, rope_parameters: { rope_type: 'dynamic', factor: 4 } }, 'UNSUPPORTED_MODEL', ['"dynamic"', 'rope_parameters']);
  await check({ ...BASE, rope_scaling: { rope_type: 'llama3', factor: 8 } }, 'CONFIG_ERROR', ['low_freq_factor']);
  await check({ ...BASE, hidden_size: 'big' }, 'CONFIG_ERROR', ['hidden_size', '"big"']);
  await check({ ...BASE, num_hidden_layers: undefined }, 'CONFIG_ERROR', ['num_hidden_layers', 'missing']);
  await check({ ...BASE, num_key_value_heads: 3 }, 'CONFIG_ERROR', ['num_key_value_heads']);
  await check({ ...BASE, hidden_act: 'gelu' }, 'UNSUPPORTED_MODEL', ['hidden_act']);
  await check({ ...BASE, model_type: undefined }, 'CONFIG_ERROR', ['model_type']);
  await check({ ...BASE, model_type: 'gpt2' }, 'UNSUPPORTED_MODEL', ['"gpt2"', 'llama, mistral, qwen2, qwen3']);
});
