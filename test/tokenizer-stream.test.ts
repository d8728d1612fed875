import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { createStreamDecoder } from '../src/tokenizer/stream.js';

const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });
/** A byte tokenizer: id = byte. */
const byteDecode = (ids: readonly number[]): string => utf8.decode(Uint8Array.from(ids));

function streamAll(decode: (ids: readonly number[]) => string, ids: readonly number[], context?: number[]): string[] {
  const sd = createStreamDecoder(decode, { context });
  const out = ids.map((id) => sd.push(id));
  out.push(sd.flush());
  return out;
}

test('byte tokens: every code point held until complete; concatenation = decode(all)', () => {
  const text = 'a\u00e9\u20ac\ud83d\ude42\u65e5\ufeffz 👩‍💻🇫🇷';
  const ids = [...new TextEncoder().encode(text)];
  const pieces = streamAll(byteDecode, ids);
  assert.equal(pieces.join(''), text);
  for (const p of pieces) assert.ok(!p.includes('\ufffd'));
  // '€' = E2 82 AC: two empty pushes, then the character.
  const euro = streamAll(byteDecode, [0xe2, 0x82, 0xac]);
  assert.deepEqual(euro, ['', '', '€', '']);
});

test('long random streams keep a bounded window and stay exact', () => {
  let s = 7;
  const rnd = (): number => ((s = (s * 1103515245 + 12345) >>> 0), s / 2 ** 32);
  let text = '';
  for (let i = 0; i < 5000; i++) text += String.fromCodePoint(rnd() < 0.5 ? 0x20 + Math.floor(rnd() * 90) : 0xa0 + Math.floor(rnd() * 0x1f000) % 0xd700);
  const ids = [...new TextEncoder().encode(text)];
  assert.equal(streamAll(byteDecode, ids).join(''), text);
});

test('invalid bytes: emitted once later text arrives, or on flush', () => {
  assert.deepEqual(streamAll(byteDecode, [0x61, 0xff, 0x62]), ['a', '', '\ufffdb', '']);
  assert.deepEqual(streamAll(byteDecode, [0x61, 0xf0, 0x9f]), ['a', '', '', '\ufffd']);
});

test('decoders that strip a leading space at the start of a sequence (SentencePiece Strip)', () => {
  // Tokens are words with a leading space; decode strips the first space of the whole sequence.
  const vocab = [' Once', ' upon', ' a', ' time', ','];
  const decode = (ids: readonly number[]): string => ids.map((i) => vocab[i]).join('').replace(/^ /, '');
  const ids = [0, 1, 2, 3, 4];
  assert.equal(streamAll(decode, ids).join(''), decode(ids));
  // With context (the prompt), the continuation keeps its spaces exactly as inside the whole sequence.
  assert.equal(streamAll(decode, [2, 3, 4], [0, 1]).join(''), ' a time,');
});
