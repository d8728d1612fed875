/**
 * Bad input, one case per test: each builds a damaged copy of a fixture in a temp folder and checks the error code and
 * that the message names the file (and tensor or field) at fault.
 */
import assert from 'node:assert/strict';
import { open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { loadCheckpoint } from '../src/model/load-checkpoint.js';
import {
  copyFolder, editJson, editSafetensorsHeader, expectLoadError, rawTensorBytes, readRawSafetensors, sharedOrSkip, tempDir, writeSafetensors,
} from './model-helpers.js';

/** An editable copy of an hf-tiny fixture, or undefined when ../shared is absent (the test is then skipped). */
async function fixtureCopy(t: TestContext, name = 'llama3-gqa-f32'): Promise<string | undefined> {
  const shared = sharedOrSkip(t);
  if (!shared) return undefined;
  return copyFolder(join(shared, 'fixtures/hf-tiny', name), join(await tempDir(t), name));
}

test('a path that does not exist is MODEL_NOT_FOUND', async (t) => {
  const missing = join(await tempDir(t), 'no-such-model');
  await expectLoadError(loadCheckpoint(missing), 'MODEL_NOT_FOUND', [missing]);
});

test('folders that are not models are NOT_A_MODEL and say what was expected', async (t) => {
  const dir = await tempDir(t);
  await expectLoadError(loadCheckpoint(dir), 'NOT_A_MODEL', [dir, 'empty', 'config.json', 'llama2.c']);
  await writeFile(join(dir, 'README.md'), 'hi');
  await writeFile(join(dir, 'model.safetensors'), 'x');
  await expectLoadError(loadCheckpoint(dir), 'NOT_A_MODEL', ['README.md', 'model.safetensors', 'config.json']);
  await writeFile(join(dir, 'a.bin'), 'x');
  await writeFile(join(dir, 'b.bin'), 'x');
  await expectLoadError(loadCheckpoint(dir), 'NOT_A_MODEL', ['a.bin, b.bin']);
  await expectLoadError(loadCheckpoint(join(dir, 'model.safetensors')), 'NOT_A_MODEL', ['no config.json']);
  const gguf = join(dir, 'model.gguf');
  await writeFile(gguf, 'GGUF');
  await expectLoadError(loadCheckpoint(gguf), 'UNSUPPORTED_MODEL', [gguf, 'GGUF']);
});

test('config.json without safetensors weights: NOT_A_MODEL, or UNSUPPORTED_MODEL for PyTorch .bin', async (t) => {
  const dir = await fixtureCopy(t);
  if (!dir) return;
  await rm(join(dir, 'model.safetensors'));
  await expectLoadError(loadCheckpoint(dir), 'NOT_A_MODEL', [dir, 'model.safetensors']);
  await writeFile(join(dir, 'pytorch_model.bin'), 'x');
  await expectLoadError(loadCheckpoint(dir), 'UNSUPPORTED_MODEL', ['safetensors']);
});

test('config.json that is not valid JSON is CONFIG_ERROR naming the file', async (t) => {
  const dir = await fixtureCopy(t);
  if (!dir) return;
  await writeFile(join(dir, 'config.json'), '{"model_type": "llama",');
  await expectLoadError(loadCheckpoint(dir), 'CONFIG_ERROR', [join(dir, 'config.json'), 'not valid JSON']);
});

test('an unsupported model_type is UNSUPPORTED_MODEL listing the supported ones', async (t) => {
  const dir = await fixtureCopy(t);
  if (!dir) return;
  await editJson(join(dir, 'config.json'), (j) => (j.model_type = 'gpt_neox'));
  await expectLoadError(loadCheckpoint(dir), 'UNSUPPORTED_MODEL', [join(dir, 'config.json'), '"gpt_neox"', 'llama, mistral, qwen2, qwen3']);
});

test('an unsupported RoPE type is UNSUPPORTED_MODEL naming the field', async (t) => {
  const dir = await fixtureCopy(t);
  if (!dir) return;
  await editJson(join(dir, 'config.json'), (j) => ((j.rope_parameters as Record<string, unknown>).rope_type = 'yarn'));
  await expectLoadError(loadCheckpoint(dir), 'UNSUPPORTED_MODEL', ['"yarn"', 'rope_parameters']);
});

test('a truncated safetensors file is CORRUPT_MODEL naming the file and a tensor', async (t) => {
  const dir = await fixtureCopy(t);
  if (!dir) return;
  const file = join(dir, 'model.safetensors');
  await truncate(file, 300_000);
  await expectLoadError(loadCheckpoint(dir), 'CORRUPT_MODEL', [file, 'past the end', 'truncated']);
});

test('a header length past the end of the file is CORRUPT_MODEL', async (t) => {
  const dir = await fixtureCopy(t);
  if (!dir) return;
  const file = join(dir, 'model.safetensors');
  const fh = await open(file, 'r+');
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, 10_000_000n, true);
  await fh.write(len, 0, 8, 0);
  await fh.close();
  await expectLoadError(loadCheckpoint(dir), 'CORRUPT_MODEL', [file, 'header length', '10000000']);
  await truncate(file, 5);
  await expectLoadError(loadCheckpoint(dir), 'CORRUPT_MODEL', [file, '5 bytes']);
});

test('a damaged JSON header is CORRUPT_MODEL', async (t) => {
  const dir = await fixtureCopy(t);
  if (!dir) return;
  const file = join(dir, 'model.safetensors');
  const bytes = await readFile(file);
  bytes[8] = 0x5b; // '{' -> '['
  await writeFile(file, bytes);
  await expectLoadError(loadCheckpoint(dir), 'CORRUPT_MODEL', [file, 'JSON']);
});

test('tensor offsets out of range, into the header, or overlapping are CORRUPT_MODEL naming the tensor', async (t) => {
  const dir = await fixtureCopy(t);
  if (!dir) return;
  const file = join(dir, 'model.safetensors');
  const original = await readFile(file);
  const cases: [(h: Record<string, { data_offsets: [number, number] }>) => void, string[]][] = [
    [(h) => (h['model.norm.weight']!.data_offsets = [607232, 700000]), ['"model.norm.weight"', 'past the end']],
    [(h) => (h['model.norm.weight']!.data_offsets = [-256, 0]), ['"model.norm.weight"', 'header']],
    [(h) => (h['model.norm.weight']!.data_offsets = [...h['model.layers.1.input_layernorm.weight']!.data_offsets]), ['overlap', 'model.norm.weight']],
  ];
  for (const [edit, mentions] of cases) {
    await writeFile(file, original);
    await editSafetensorsHeader(file, edit);
    await expectLoadError(loadCheckpoint(dir), 'CORRUPT_MODEL', [file, ...mentions]);
  }
});

test('dtypes: unknown is CORRUPT_MODEL, integer is UNSUPPORTED_MODEL, size mismatch is CORRUPT_MODEL; all name the tensor', async (t) => {
  const dir = await fixtureCopy(t);
  if (!dir) return;
  const file = join(dir, 'model.safetensors');
  const original = await readFile(file);
  const name = 'model.layers.0.self_attn.k_proj.weight';
  const cases: [string, 'CORRUPT_MODEL' | 'UNSUPPORTED_MODEL', string][] = [
    ['Q32', 'CORRUPT_MODEL', 'unknown dtype "Q32"'],
    ['I32', 'UNSUPPORTED_MODEL', 'dtype I32'],
    ['F16', 'CORRUPT_MODEL', 'span 8192 bytes'],
  ];
  for (const [dtype, code, detail] of cases) {
    await writeFile(file, original);
    await editSafetensorsHeader(file, (h) => (h[name]!.dtype = dtype));
    await expectLoadError(loadCheckpoint(dir), code, [file, `"${name}"`, detail]);
  }
});

test('a tensor shape that disagrees with config.json is CORRUPT_MODEL with both shapes and the file', async (t) => {
  const dir = await fixtureCopy(t);
  if (!dir) return;
  await editJson(join(dir, 'config.json'), (j) => (j.intermediate_size = 128));
  await expectLoadError(loadCheckpoint(dir), 'CORRUPT_MODEL', [
    '"model.layers.0.mlp.gate_proj.weight"', '[160, 64]', '[128, 64]', join(dir, 'model.safetensors'), 'config.json',
  ]);
});

test('a missing tensor is CORRUPT_MODEL naming it; a missing lm_head hints at tie_word_embeddings', async (t) => {
  const dir = await fixtureCopy(t);
  if (!dir) return;
  const file = join(dir, 'model.safetensors');
  const raw = await readRawSafetensors(file);
  const rewrite = (skip: string): Promise<void> =>
    writeSafetensors(
      file,
      Object.entries(raw.header)
        .filter(([n]) => n !== skip)
        .map(([n, e]) => ({ name: n, dtype: e.dtype, shape: e.shape, bytes: rawTensorBytes(raw, n) })),
    );
  await rewrite('model.layers.1.self_attn.v_proj.weight');
  await expectLoadError(loadCheckpoint(dir), 'CORRUPT_MODEL', ['"model.layers.1.self_attn.v_proj.weight"', 'missing', file]);
  await rewrite('lm_head.weight');
  await expectLoadError(loadCheckpoint(dir), 'CORRUPT_MODEL', ['"lm_head.weight"', 'tie_word_embeddings']);
});

test('attention_bias: zero o_proj biases are accepted, non-zero ones are UNSUPPORTED_MODEL', async (t) => {
  const dir = await fixtureCopy(t);
  if (!dir) return;
  const file = join(dir, 'model.safetensors');
  const raw = await readRawSafetensors(file);
  await editJson(join(dir, 'config.json'), (j) => (j.attention_bias = true));
  const withBiases = async (oBias: number): Promise<void> => {
    const tensors = Object.entries(raw.header).map(([n, e]) => ({ name: n, dtype: e.dtype, shape: e.shape, bytes: rawTensorBytes(raw, n) }));
    for (let l = 0; l < 2; l++) {
      for (const [proj, rows, value] of [['q', 64, 0.5], ['k', 32, 0.25], ['v', 32, 0], ['o', 64, oBias]] as const) {
        const bytes = new Uint8Array(new Float32Array(rows).fill(value).buffer);
        tensors.push({ name: `model.layers.${l}.self_attn.${proj}_proj.bias`, dtype: 'F32', shape: [rows], bytes });
      }
    }
    await writeSafetensors(file, tensors);
  };
  await withBiases(0);
  const m = await loadCheckpoint(dir);
  assert.equal(m.config.qkvBias, true);
  assert.deepEqual(m.weights.layers[1]!.bq!.data, new Float32Array(64).fill(0.5));
  await withBiases(0.1);
  await expectLoadError(loadCheckpoint(dir), 'UNSUPPORTED_MODEL', ['"model.layers.0.self_attn.o_proj.bias"', file]);
});
