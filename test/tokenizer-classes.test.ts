import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { computeTokenClasses, isPunctText, spaceSchemeOf, tokenSurface } from '../src/tokenizer/token-classes.js';
import type { StreamDecoder, Tokenizer } from '../src/tokenizer/types.js';

function fakeTokenizer(vocab: string[], special: number[], spaceScheme?: string): Tokenizer {
  const t = {
    kind: 'hf' as const,
    vocabSize: vocab.length,
    bosId: special[0],
    eosIds: special.slice(1),
    hasChatTemplate: false,
    encode: (): number[] => [],
    decode: (): string => '',
    tokenString: (id: number): string => vocab[id]!,
    specialIds: (): ReadonlySet<number> => new Set(special),
    applyChatTemplate: (): string => '',
    encodeChat: (): number[] => [],
    streamDecoder: (): StreamDecoder => ({ push: () => '', flush: () => '' }),
  };
  return spaceScheme ? Object.assign(t, { spaceScheme }) : t;
}

test('isPunctText: punctuation, ASCII symbols and whitespace only', () => {
  for (const s of ['.', ',', ' .', '."', '...', '\n', ' ', '\t\n', '—', '“', '”', '«»', '。', '、', '!?', '$', '+', '<', '=', '>', '^', '`', '|', '~', '(', ')', '[', ']', '{', '}', '@', '#', '%', '&', '*', '/', '\\', '_', '-', '\u00a0'])
    assert.equal(isPunctText(s), true, JSON.stringify(s));
  for (const s of ['', 'a', 'a.', ' the', '0', '.5', '🙂', '©', '°', '€', '\ufffd', 'Ġ', '▁'])
    assert.equal(isPunctText(s), false, JSON.stringify(s));
});

test('tokenSurface undoes byte-level, SentencePiece and byte-token encodings', () => {
  assert.equal(tokenSurface('Ġ', 'byte-level'), ' ');
  assert.equal(tokenSurface('Ċ', 'byte-level'), '\n');
  assert.equal(tokenSurface('ĉ', 'byte-level'), '\t');
  assert.equal(tokenSurface('ĠĠ', 'byte-level'), '  ');
  assert.equal(tokenSurface('Ġthe', 'byte-level'), ' the');
  assert.equal(tokenSurface('âĢĶ', 'byte-level'), '—');
  assert.equal(tokenSurface('Ġâ', 'byte-level'), ' \ufffd');
  assert.equal(tokenSurface('▁.', 'sentencepiece'), ' .');
  assert.equal(tokenSurface('<0x0A>', 'sentencepiece'), '\n');
  assert.equal(tokenSurface('<0x2C>', 'byte-level'), ',');
  assert.equal(tokenSurface('<0xE2>', 'sentencepiece'), '');
});

test('computeTokenClasses: byte-level vocabulary', () => {
  const vocab = ['<|begin_of_text|>', '<|eot_id|>', 'Ġ,', '.', 'Ċ', 'ĊĊ', 'Ġthe', 'Ġ', 'a.', 'âĢĶ', 'Ġâ', '', 'Ġ"', 'ðŁĻĤ'];
  const t = fakeTokenizer(vocab, [0, 1], 'byte-level');
  const c = computeTokenClasses(t);
  const punct = vocab.filter((_, i) => c.punct[i]);
  assert.deepEqual(punct, ['Ġ,', '.', 'Ċ', 'ĊĊ', 'Ġ', 'âĢĶ', 'Ġ"']);
  assert.deepEqual([...c.special], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(computeTokenClasses(t), c, 'cached');
});

test('computeTokenClasses: SentencePiece vocabulary; scheme guessed when undeclared', () => {
  const vocab = ['<unk>', '<s>', '</s>', '<0x0A>', '<0x2E>', '<0xE2>', '▁.', ',', '."', '▁the', 'a.', '▁', '▁▁', ')', '▁(', '▁–'];
  const t = fakeTokenizer(vocab, [1, 2, 0]);
  assert.equal(spaceSchemeOf(t), 'sentencepiece');
  const c = computeTokenClasses(t);
  assert.deepEqual(vocab.filter((_, i) => c.punct[i]), ['<0x0A>', '<0x2E>', '▁.', ',', '."', '▁', '▁▁', ')', '▁(', '▁–']);
  assert.deepEqual([c.special[0], c.special[1], c.special[2]], [1, 1, 1]);
  assert.equal(spaceSchemeOf(fakeTokenizer(['Ġthe', 'Ġa', 'b'], [])), 'byte-level');
});
