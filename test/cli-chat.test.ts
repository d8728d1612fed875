/** `fastgen chat` keeps going when the conversation outgrows the context: the oldest turns go, and it says so. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { fitConversation } from '../src/cli/generate.js';
import { loadModel } from '../src/generate/model.js';
import type { ChatMessage } from '../src/tokenizer/types.js';
import { REPO_ROOT, SKIP_SHARED, sharedPath } from './shared-fixtures.js';

const M260 = () => sharedPath('models/stories260K/stories260K.bin');
const LINE = 'Tom and Lily went to the park to play with a big red ball and they laughed all day long. '.repeat(4).trim();

test('fitConversation drops the oldest user/assistant pairs, keeps the system message, and then fits', { skip: SKIP_SHARED }, async () => {
  const m = await loadModel(M260());
  try {
    const messages: ChatMessage[] = [{ role: 'system', content: 'Be kind.' }];
    for (let i = 0; i < 6; i++) messages.push({ role: 'user', content: `${i} ${LINE}` }, { role: 'assistant', content: `reply ${i}` });
    messages.push({ role: 'user', content: `last ${LINE}` });
    const before = m.encodeChat(messages).length;
    assert.ok(before + 64 > m.config.maxSeqLen, `the test conversation must overflow (${before} tokens)`);
    const dropped = fitConversation(m, messages, 64);
    assert.ok(dropped > 0 && dropped % 2 === 0, String(dropped));
    assert.ok(m.encodeChat(messages).length + 64 <= m.config.maxSeqLen);
    assert.equal(messages[0].role, 'system');
    assert.equal(messages[1].role, 'user');
    assert.ok(messages.at(-1)!.content.startsWith('last '));
    // Already fitting: nothing goes.
    assert.equal(fitConversation(m, messages, 64), 0);
  } finally {
    m.dispose();
  }
});

test('chat through many long turns on a 512-token model: every turn answered, the trimming reported', { skip: SKIP_SHARED }, () => {
  const input = Array.from({ length: 8 }, (_, i) => `${i} ${LINE}`).join('\n') + '\n';
  const r = spawnSync(process.execPath, [join(REPO_ROOT, 'bin', 'fastgen.js'), 'chat', '-m', M260(), '-n', '8', '-t', '0'], { input, encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal((r.stderr.match(/decode: \d+ tokens/g) ?? []).length, 8);
  assert.match(r.stderr, /context full: dropped the \d+ oldest messages to make room; 512-token context/);
  assert.doesNotMatch(r.stderr, /error/i);
});
