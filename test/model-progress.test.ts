import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadCheckpoint } from '../src/model/load-checkpoint.js';
import { terminalProgress, type ProgressStream } from '../src/model/progress.js';
import { HF_TINY, sharedOrSkip } from './model-helpers.js';

function fakeStream(isTTY: boolean): ProgressStream & { out: string[] } {
  const out: string[] = [];
  return { isTTY, columns: 100, out, write: (s: string) => out.push(s) };
}

test('terminalProgress draws nothing when the stream is not a terminal', () => {
  const s = fakeStream(false);
  const cb = terminalProgress('loading', s);
  cb(0, 100, 'a');
  cb(100, 100, 'done');
  assert.deepEqual(s.out, []);
});

test('terminalProgress draws one rewritten line and ends it once when complete', () => {
  const s = fakeStream(true);
  const cb = terminalProgress('loading', s);
  cb(25, 100, 'tensor.a');
  cb(50, 100, 'tensor.b'); // within the redraw interval: skipped
  cb(100, 100, 'tensor.c');
  cb(100, 100, 'done'); // the end reported twice draws once
  assert.equal(s.out.length, 2);
  assert.match(s.out[0]!, /^\rloading \[#+-+\]  25% 0\.0\/0\.0 MB tensor\.a\x1b\[K$/);
  assert.match(s.out[1]!, /^\rloading \[#+\] 100% .*\n$/);
  assert.ok(s.out.every((line) => line.split('\n')[0]!.length <= 100 + 4), 'fits the terminal width');
});

test('loaders report monotonic progress that ends at the total', async (t) => {
  const shared = sharedOrSkip(t);
  if (!shared) return;
  for (const path of [join(shared, 'models/stories260K'), ...HF_TINY.map((n) => join(shared, 'fixtures/hf-tiny', n))]) {
    const calls: [number, number, string][] = [];
    await loadCheckpoint(path, { onProgress: (done, total, what) => calls.push([done, total, what]) });
    assert.ok(calls.length > 3, path);
    const total = calls[0]![1];
    assert.ok(calls.every(([done, tot], i) => tot === total && done <= total && (i === 0 || done >= calls[i - 1]![0])), `${path}: monotonic`);
    assert.equal(calls.at(-1)![0], total, path);
    assert.ok(calls.some(([, , what]) => what.includes('embed') || what.includes('token_embedding')), `${path}: names tensors`);
  }
});
