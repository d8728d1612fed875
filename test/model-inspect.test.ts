/**
 * What is checked from headers before any weight is read (inspect, memory fit, context bound), and what is checked
 * on the weights (NaN/Inf), plus loud chat-template errors and progress over the whole load.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, mkdtempSync, openSync, readFileSync, symlinkSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FastgenError } from '../src/errors.js';
import { loadModel } from '../src/generate/model.js';
import { inspectCheckpoint } from '../src/model/load-checkpoint.js';
import { REPO_ROOT, SKIP_SHARED, sharedPath } from './shared-fixtures.js';

const BIN = join(REPO_ROOT, 'bin', 'fastgen.js');
function run(args: string[], input = '') {
  const r = spawnSync(process.execPath, [BIN, ...args], { input, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/**
 * A Hugging Face llama folder of about 1.1 B parameters whose weights file is sparse (a hole of the right size): its
 * headers are real, its weights are never there to be read.
 */
function sparseBigModel(): string {
  const dir = mkdtempSync(join(tmpdir(), 'fastgen-big-'));
  const [d, h, L, V, heads, kvHeads] = [2048, 5632, 22, 32000, 32, 4]; // TinyLlama-1.1B's shape
  const kv = (d / heads) * kvHeads;
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({ model_type: 'llama', hidden_size: d, intermediate_size: h, num_hidden_layers: L, num_attention_heads: heads, num_key_value_heads: kvHeads, vocab_size: V, max_position_embeddings: 2048, rms_norm_eps: 1e-5, tie_word_embeddings: false, torch_dtype: 'float32' }),
  );
  const tensors: [string, number[]][] = [['model.embed_tokens.weight', [V, d]], ['model.norm.weight', [d]], ['lm_head.weight', [V, d]]];
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    tensors.push([`${p}input_layernorm.weight`, [d]], [`${p}post_attention_layernorm.weight`, [d]], [`${p}self_attn.q_proj.weight`, [d, d]], [`${p}self_attn.k_proj.weight`, [kv, d]],
      [`${p}self_attn.v_proj.weight`, [kv, d]], [`${p}self_attn.o_proj.weight`, [d, d]], [`${p}mlp.gate_proj.weight`, [h, d]], [`${p}mlp.up_proj.weight`, [h, d]], [`${p}mlp.down_proj.weight`, [d, h]]);
  }
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, shape] of tensors) {
    const bytes = 4 * shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const file = join(dir, 'model.safetensors');
  const fd = openSync(file, 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeSync(fd, len);
  writeSync(fd, json);
  closeSync(fd);
  truncateSync(file, 8 + json.length + offset);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) symlinkSync(sharedPath('fixtures/tokenizer-bpe512', f), join(dir, f));
  return dir;
}

/** A copy of an hf-tiny fixture (with the BPE tokenizer) whose files can be edited. */
function tinyCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'fastgen-tiny-'));
  for (const f of ['config.json', 'generation_config.json', 'model.safetensors']) copyFileSync(sharedPath('fixtures/hf-tiny/llama3-gqa-f32', f), join(dir, f));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(sharedPath('fixtures/tokenizer-bpe512', f), join(dir, f));
  return dir;
}

test('inspect reads headers only: a 1.1 B model whose weights are a hole is described, with a memory estimate per dtype', { skip: SKIP_SHARED }, () => {
  const dir = sparseBigModel();
  const info = run(['inspect', '-m', dir, '--json', '--context', '1024', '--batch', '2']);
  assert.equal(info.code, 0, info.err);
  const d = JSON.parse(info.out);
  assert.equal(d.parameters, 1_100_048_384);
  assert.equal(d.estimate.context, 1024);
  assert.equal(d.estimate.batch, 2);
  const row = (dtype: string) => d.estimate.rows.find((r: { dtype: string }) => r.dtype === dtype);
  assert.equal(row('f32').weightBytes, 4 * d.parameters);
  // KV: 2 (K and V) × 22 layers × 4 KV heads × 64 dims × 4 bytes per token, for 2 × 1024 tokens.
  assert.equal(row('f32').kvBytes, 2 * 22 * 4 * 64 * 4 * 2048);
  assert.equal(row('f32').fitsWasm, false);
  assert.equal(row('f16').fitsWasm, true);
  assert.equal(row('q8_0').fitsWasm, true);
  assert.equal(d.fits, false);
  const text = run(['inspect', '-m', dir]);
  assert.match(text.out, /\| f32 +\| .*\| no +\|/);
  assert.match(text.out, /What fits: --dtype f16 .*--dtype q8_0/);
});

test('a model that cannot fit the wasm backend in its dtype is refused before loading, naming the dtypes that fit', { skip: SKIP_SHARED }, async () => {
  const dir = sparseBigModel();
  await assert.rejects(loadModel(dir), (e: FastgenError) => e.code === 'INVALID_OPTION' && /over the 4 GiB a wasm32 memory can hold/.test(e.message) && /--dtype f16/.test(e.message));
  const r = run(['generate', '-m', dir, '-n', '1', 'hi']);
  assert.equal(r.code, 1);
  assert.match(r.err, /needs about [\d.]+ GiB of WebAssembly memory in f32.*What fits: --dtype f16 \(about [\d.]+ GiB\), --dtype q8_0/);
  assert.doesNotMatch(r.err, /internal error/);
});

test('a tokenizer that does not fit the model fails at load, before the weights (or the memory check) are reached', { skip: SKIP_SHARED }, async () => {
  const dir = sparseBigModel();
  await assert.rejects(
    loadModel(dir, { tokenizerPath: sharedPath('models/stories260K/tok512.bin') }),
    (e: FastgenError) => e.code === 'TOKENIZER_ERROR' && /has 512 tokens but the model's vocabulary has 32000/.test(e.message),
  );
});

test('NaN or infinite weights, an absurd context, a broken chat template: each a specific error, never an internal one', { skip: SKIP_SHARED }, async () => {
  const nan = tinyCopy();
  const file = join(nan, 'model.safetensors');
  const bytes = readFileSync(file);
  const hlen = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + hlen).toString('utf8'));
  const [start] = header['model.layers.1.mlp.up_proj.weight'].data_offsets;
  bytes.writeFloatLE(Number.NaN, 8 + hlen + start + 12);
  writeFileSync(file, bytes);
  await assert.rejects(loadModel(nan), (e: FastgenError) => e.code === 'CORRUPT_MODEL' && /layer 1 wUp weights .* contain a NaN or infinite value \(element 3\)/.test(e.message));
  const r = run(['generate', '-m', nan, 'hi']);
  assert.equal(r.code, 1);
  assert.match(r.err, /NaN or infinite/);

  const long = tinyCopy();
  const cfg = JSON.parse(readFileSync(join(long, 'config.json'), 'utf8'));
  writeFileSync(join(long, 'config.json'), JSON.stringify({ ...cfg, max_position_embeddings: 1e9 }));
  const l = run(['inspect', '-m', long]);
  assert.equal(l.code, 1);
  assert.match(l.err, /max_position_embeddings.*1000000000.*16777216-token context/);

  const tpl = tinyCopy();
  const tc = JSON.parse(readFileSync(join(tpl, 'tokenizer_config.json'), 'utf8'));
  writeFileSync(join(tpl, 'tokenizer_config.json'), JSON.stringify({ ...tc, chat_template: '{% for m in messages %}{{ m.content }' }));
  const m = await loadModel(tpl);
  try {
    assert.throws(() => m.chat([{ role: 'user', content: 'hi' }]), (e: FastgenError) => e.code === 'TOKENIZER_ERROR' && /chat template .* cannot be parsed/.test(e.message));
  } finally {
    m.dispose();
  }
  const c = run(['chat', '-m', tpl], 'hi\n');
  assert.equal(c.code, 1);
  assert.match(c.err, /chat template .* cannot be parsed/);
});

test('inspectCheckpoint agrees with a full load; progress covers reading and then converting the weights', { skip: SKIP_SHARED }, async () => {
  const path = sharedPath('models/stories260K/stories260K.bin');
  const info = await inspectCheckpoint(path);
  const phases: string[] = [];
  let last = { done: 0, total: 0 };
  const m = await loadModel(path, {
    dtype: 'q8_0',
    onProgress: (done, total, what) => {
      const phase = what.startsWith('converting') ? 'convert' : 'read';
      if (phases.at(-1) !== phase) phases.push(phase);
      last = { done, total };
    },
  });
  try {
    assert.equal(info.parameters, m.parameters);
    assert.deepEqual(info.config, m.config);
    assert.deepEqual(phases, ['read', 'convert']);
    assert.equal(last.done, last.total);
  } finally {
    m.dispose();
  }
});
