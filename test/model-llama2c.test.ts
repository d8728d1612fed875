import assert from 'node:assert/strict';
import { readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadCheckpoint } from '../src/model/load-checkpoint.js';
import { permuteInterleavedToHalf } from '../src/model/llama2c.js';
import { parameterCount } from '../src/model/describe.js';
import { expectLoadError, llama2cOffsets, makeLlama2c, seededRandom, sharedOrSkip, tempDir, type Llama2cShape } from './model-helpers.js';

test('stories260K loads with GQA config and finds tok512.bin', async (t) => {
  const shared = sharedOrSkip(t);
  if (!shared) return;
  const file = join(shared, 'models/stories260K/stories260K.bin');
  for (const path of [file, join(shared, 'models/stories260K')]) {
    const m = await loadCheckpoint(path);
    const c = m.config;
    assert.deepEqual(
      [c.name, c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKvHeads, c.headDim, c.vocabSize, c.maxSeqLen, c.tiedEmbeddings],
      ['stories260K', 64, 172, 5, 8, 4, 8, 512, 512, true],
    );
    assert.deepEqual(m.source, { kind: 'llama2c', path: file });
    assert.equal(parameterCount(m.weights), 260_032);
    assert.deepEqual(m.weights.layers[0]!.wk.shape, [32, 64]);
    assert.ok(m.tokenizer?.kind === 'llama2c');
    assert.equal(m.tokenizer.path, join(shared, 'models/stories260K/tok512.bin'));
    assert.deepEqual(m.tokenizer.bytes, new Uint8Array(await readFile(m.tokenizer.path)));
  }
});

/** The permutation by its definition: per head, row j <- old row 2j, row hd/2 + j <- old row 2j + 1. */
function permuteByDefinition(src: Float32Array, nHeads: number, hd: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let h = 0; h < nHeads; h++) {
    for (let j = 0; j < hd / 2; j++) {
      for (let c = 0; c < cols; c++) {
        out[(h * hd + j) * cols + c] = src[(h * hd + 2 * j) * cols + c]!;
        out[(h * hd + hd / 2 + j) * cols + c] = src[(h * hd + 2 * j + 1) * cols + c]!;
      }
    }
  }
  return out;
}

test('RoPE row permutation matches its definition on a random matrix', () => {
  const rnd = seededRandom(7);
  for (const [nHeads, hd, cols] of [[3, 8, 5], [1, 2, 1], [4, 6, 7]] as const) {
    const m = new Float32Array(nHeads * hd * cols).map(() => rnd());
    const want = permuteByDefinition(m, nHeads, hd, cols);
    assert.deepEqual(permuteInterleavedToHalf(m.slice(), nHeads, hd, cols), want);
  }
});

test('RoPE permutation turns interleaved-pair rotation into rotate-half rotation', () => {
  // Rotating q's interleaved pairs and then permuting must equal permuting and then rotating (j, j + hd/2) pairs.
  const hd = 8;
  const rnd = seededRandom(3);
  const q = new Float32Array(hd).map(() => rnd());
  const theta = (i: number): number => 0.7 / 10000 ** ((2 * i) / hd);
  const interleaved = q.slice();
  for (let i = 0; i < hd / 2; i++) {
    const [a, b] = [q[2 * i]!, q[2 * i + 1]!];
    interleaved[2 * i] = a * Math.cos(theta(i)) - b * Math.sin(theta(i));
    interleaved[2 * i + 1] = a * Math.sin(theta(i)) + b * Math.cos(theta(i));
  }
  const half = permuteInterleavedToHalf(q.slice(), 1, hd, 1);
  const rotated = half.slice();
  for (let i = 0; i < hd / 2; i++) {
    const [a, b] = [half[i]!, half[i + hd / 2]!];
    rotated[i] = a * Math.cos(theta(i)) - b * Math.sin(theta(i));
    rotated[i + hd / 2] = a * Math.sin(theta(i)) + b * Math.cos(theta(i));
  }
  assert.deepEqual(rotated, permuteInterleavedToHalf(interleaved, 1, hd, 1));
});

const SHAPE: Llama2cShape = { dim: 16, hiddenDim: 24, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 20, seqLen: 8, shared: false };

test('a synthetic untied GQA llama2.c checkpoint loads tensor by tensor, with q/k rows permuted', async (t) => {
  const dir = await tempDir(t);
  const { bytes, body } = makeLlama2c(SHAPE, 11);
  const path = join(dir, 'tiny-model.bin');
  await writeFile(path, bytes);
  const m = await loadCheckpoint(path);
  assert.equal(m.config.name, 'tiny-model');
  assert.equal(m.config.tiedEmbeddings, false);
  assert.equal(m.tokenizer, undefined, 'no tokenizer next to it');
  const off = llama2cOffsets(SHAPE);
  const { dim, hiddenDim, nHeads, nKvHeads } = SHAPE;
  const hd = dim / nHeads;
  const kv = nKvHeads * hd;
  const slice = (start: number, n: number): Float32Array => body.slice(start, start + n);
  const w = m.weights;
  assert.notEqual(w.lmHead, w.tokenEmbedding);
  assert.deepEqual(w.tokenEmbedding.data, slice(off.emb!, 20 * dim));
  assert.deepEqual(w.lmHead.data, slice(off.wcls!, 20 * dim));
  assert.deepEqual(w.finalNorm.data, slice(off.rmsFinal!, dim));
  const l1 = w.layers[1]!;
  assert.deepEqual(l1.attnNorm.data, slice(off.rmsAtt! + dim, dim));
  assert.deepEqual(l1.wq.data, permuteByDefinition(slice(off.wq! + dim * dim, dim * dim), nHeads, hd, dim));
  assert.deepEqual(l1.wk.data, permuteByDefinition(slice(off.wk! + kv * dim, kv * dim), nKvHeads, hd, dim));
  assert.deepEqual(l1.wv.data, slice(off.wv! + kv * dim, kv * dim), 'v is not permuted');
  assert.deepEqual(l1.wo.data, slice(off.wo! + dim * dim, dim * dim));
  assert.deepEqual(l1.wGate.data, slice(off.w1! + hiddenDim * dim, hiddenDim * dim));
  assert.deepEqual(l1.wDown.data, slice(off.w2! + dim * hiddenDim, dim * hiddenDim));
  assert.deepEqual(l1.wUp.data, slice(off.w3! + hiddenDim * dim, hiddenDim * dim));
  assert.deepEqual(l1.wDown.shape, [dim, hiddenDim]);
});

test('llama2.c tokenizer lookup: tokenizer.bin first, else a single tok*.bin, else none; tokenizerPath overrides', async (t) => {
  const dir = await tempDir(t);
  const model = join(dir, 'm.bin');
  await writeFile(model, makeLlama2c({ ...SHAPE, shared: true }).bytes);
  await writeFile(join(dir, 'tok20.bin'), 'A');
  assert.equal((await loadCheckpoint(model)).tokenizer?.kind, 'llama2c');
  assert.deepEqual(await tokPath(model), join(dir, 'tok20.bin'));
  await writeFile(join(dir, 'tok30.bin'), 'B');
  assert.equal((await loadCheckpoint(model)).tokenizer, undefined, 'two tok*.bin: ambiguous');
  await writeFile(join(dir, 'tokenizer.bin'), 'C');
  assert.deepEqual(await tokPath(model), join(dir, 'tokenizer.bin'));
  const chosen = await loadCheckpoint(model, { tokenizerPath: join(dir, 'tok30.bin') });
  assert.ok(chosen.tokenizer?.kind === 'llama2c');
  assert.deepEqual(chosen.tokenizer.bytes, new TextEncoder().encode('B'));
  await expectLoadError(loadCheckpoint(model, { tokenizerPath: join(dir, 'nope.bin') }), 'TOKENIZER_ERROR', ['nope.bin']);
});

async function tokPath(model: string): Promise<string | undefined> {
  const tok = (await loadCheckpoint(model)).tokenizer;
  return tok?.kind === 'llama2c' ? tok.path : undefined;
}

test('a llama2.c file whose size disagrees with its header is CORRUPT_MODEL naming the file', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'short.bin');
  const { bytes } = makeLlama2c(SHAPE);
  await writeFile(path, bytes);
  await truncate(path, bytes.byteLength - 4);
  await expectLoadError(loadCheckpoint(path), 'CORRUPT_MODEL', [path, 'truncated', `${bytes.byteLength} bytes`]);
  const long = join(dir, 'long.bin');
  await writeFile(long, Buffer.concat([bytes, new Uint8Array(8)]));
  await expectLoadError(loadCheckpoint(long), 'CORRUPT_MODEL', [long]);
});

test('the real stories260K file, truncated, is CORRUPT_MODEL', async (t) => {
  const shared = sharedOrSkip(t);
  if (!shared) return;
  const path = join(await tempDir(t), 'stories260K.bin');
  const bytes = await readFile(join(shared, 'models/stories260K/stories260K.bin'));
  await writeFile(path, bytes.subarray(0, 500_000));
  await expectLoadError(loadCheckpoint(path), 'CORRUPT_MODEL', [path, '500000 bytes', '1056540 bytes']);
});

test('files that are not llama2.c checkpoints are NOT_A_MODEL; v1 exports are UNSUPPORTED_MODEL', async (t) => {
  const dir = await tempDir(t);
  const tiny = join(dir, 'tiny.bin');
  await writeFile(tiny, 'hello');
  await expectLoadError(loadCheckpoint(tiny), 'NOT_A_MODEL', [tiny, 'llama2.c']);
  const text = join(dir, 'notes.txt');
  await writeFile(text, 'this is a text file, certainly not a model checkpoint');
  await expectLoadError(loadCheckpoint(text), 'NOT_A_MODEL', [text, 'header']);
  const v1 = join(dir, 'v1.bin');
  const header = new Uint8Array(256);
  new DataView(header.buffer).setUint32(0, 0x616b3432, true);
  await writeFile(v1, header);
  await expectLoadError(loadCheckpoint(v1), 'UNSUPPORTED_MODEL', [v1, '--version 0']);
});
