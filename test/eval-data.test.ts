/** `fastgen eval --data DIR` with any folder of .txt files: the documented prompt set, and clear errors. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FastgenError } from '../src/errors.js';
import { buildPrompts } from '../src/eval/prompts.js';
import { loadModel } from '../src/generate/model.js';

const paragraph = (topic: string, i: number) =>
  `The ${topic} number ${i} was quiet. Nobody knew why the ${topic} had come back, but everyone was glad of it, and they talked about it for days.`;

test('a folder of .txt files: prompts take turns over the files, medium and long alternate, references follow the prompt', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fastgen-data-'));
  try {
    writeFileSync(join(dir, 'a.txt'), Array.from({ length: 60 }, (_, i) => paragraph('river', i)).join('\n\n'));
    writeFileSync(join(dir, 'b.txt'), Array.from({ length: 60 }, (_, i) => paragraph('mountain', i)).join('\n\n'));
    writeFileSync(join(dir, 'notes.md'), 'not a .txt file');
    const model = await loadModel(undefined, { backend: 'cpu-ref' });
    const G = 24;
    const prompts = await buildPrompts(model, { count: 6, maxTokens: G, dataDir: dir, seed: 1 });
    assert.deepEqual(prompts.map((p) => p.category), ['text', 'text-long', 'text', 'text-long', 'text', 'text-long']);
    assert.deepEqual(prompts.map((p) => p.source.split(' ')[0]), ['a.txt', 'b.txt', 'a.txt', 'b.txt', 'a.txt', 'b.txt']);
    const longP = model.config.maxSeqLen - G - 4;
    for (const p of prompts) {
      assert.equal(p.ids.length, p.category === 'text' ? 64 : longP);
      assert.equal(p.reference.length, G);
      // The reference is the text that follows the prompt.
      const text = model.tokenizer.decode([...p.ids, ...p.reference], { skipSpecial: true });
      assert.match(text, p.source.startsWith('a.txt') ? /river/ : /mountain/);
    }
    assert.equal(new Set(prompts.map((p) => p.ids.join(','))).size, 6, 'every prompt differs');

    rmSync(join(dir, 'a.txt'));
    rmSync(join(dir, 'b.txt'));
    await assert.rejects(buildPrompts(model, { count: 2, maxTokens: G, dataDir: dir, seed: 1 }), (e: unknown) =>
      e instanceof FastgenError && e.code === 'INVALID_OPTION' && /holds no non-empty \.txt file/.test(e.message));
    writeFileSync(join(dir, 'short.txt'), 'Too short.');
    await assert.rejects(buildPrompts(model, { count: 2, maxTokens: G, dataDir: dir, seed: 1 }), /short\.txt is too short/);
    await assert.rejects(buildPrompts(model, { count: 2, maxTokens: G, dataDir: join(dir, 'missing'), seed: 1 }), /eval data not found/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
