/**
 * Token classes for FastGen's `special` and `punct` policies, computed once per tokenizer.
 *
 * special: `tok.specialIds()` (BOS/EOS, added tokens flagged special, chat-template control markers).
 *
 * punct: vocabulary entries whose surface text is non-empty and made only of punctuation and whitespace, after undoing
 * the vocabulary's space/byte encoding:
 *  - SentencePiece '▁' -> ' ' (llama2.c files already hold real spaces);
 *  - byte-level BPE (GPT-2 byte-to-unicode): every character mapped back to its byte ('Ġ' -> ' ', 'Ċ' -> '\n',
 *    'ĉ' -> '\t', ...) and the bytes UTF-8 decoded; a token holding only part of a multi-byte character decodes to
 *    U+FFFD and is not punct;
 *  - byte tokens `<0xNN>`: the byte, when it is ASCII; a byte >= 0x80 is part of some multi-byte character: not punct.
 *
 * Character set (our choice, documented): a character is "punct" if it is
 *  - Unicode punctuation \p{P} (all of . , ; : ! ? ' " - ( ) [ ] { } … — “ ” « » 、 。 ...),
 *  - one of the ASCII symbols $ + < = > ^ ` | ~ (these are \p{S} in Unicode but are punctuation in C's ispunct and in
 *    the paper's sense: they structure text rather than carry content), or
 *  - whitespace \s (space, newline, tab, NBSP, ...): the paper groups newline/space tokens with punctuation, so a token
 *    that is only whitespace counts.
 * Other symbols (\p{S} beyond ASCII: emoji, ©, °, currency signs other than $, math signs) carry content and are NOT
 * punct; neither are digits or letters. Special tokens are never punct (they are in `special`). Empty strings are not
 * punct.
 */
import type { Tokenizer } from './types.js';

/** Per-token-id membership of the classes the cache's class policies keep (1 = member): one table per vocabulary. */
export interface TokenClasses {
  /** 1 where the id is a special token. Length vocabSize. */
  special: Uint8Array;
  /** 1 where the id is a punctuation/whitespace token (never a special one). Length vocabSize. */
  punct: Uint8Array;
}

export type SpaceScheme = 'byte-level' | 'sentencepiece' | 'none';

const cache = new WeakMap<Tokenizer, TokenClasses>();

const PUNCT_RE = /^[\p{P}\s$+<=>^`|~]+$/u;
const BYTE_TOKEN_RE = /^<0x([0-9A-Fa-f]{2})>$/;

/** True when `s` is non-empty and only punctuation / ASCII symbols $+<=>^`|~ / whitespace (see the file comment). */
export function isPunctText(s: string): boolean {
  return s.length > 0 && PUNCT_RE.test(s);
}

let byteDecoderTable: Map<string, number> | undefined;

/** GPT-2's bytes_to_unicode, inverted: the character a byte-level vocabulary uses -> the byte. */
function byteLevelDecoder(): ReadonlyMap<string, number> {
  if (byteDecoderTable) return byteDecoderTable;
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  byteDecoderTable = new Map(bs.map((b, i) => [String.fromCharCode(cs[i]!), b]));
  return byteDecoderTable;
}

const utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/**
 * The text a vocabulary entry stands for, with the space/byte encoding undone (see the file comment). Returns '' for
 * byte tokens >= 0x80 (a fragment of a character).
 */
export function tokenSurface(raw: string, scheme: SpaceScheme): string {
  const m = BYTE_TOKEN_RE.exec(raw);
  if (m) {
    const b = parseInt(m[1]!, 16);
    return b < 0x80 ? String.fromCharCode(b) : '';
  }
  if (scheme === 'byte-level') {
    const table = byteLevelDecoder();
    const bytes = new Uint8Array(raw.length);
    let i = 0;
    for (const ch of raw) {
      const b = table.get(ch);
      if (b === undefined) return raw; // not byte-level encoded (e.g. an added token): take it literally
      bytes[i++] = b;
    }
    return utf8.decode(bytes.subarray(0, i));
  }
  if (scheme === 'sentencepiece') return raw.replaceAll('\u2581', ' ');
  return raw;
}

/** The tokenizer's space scheme: its own `spaceScheme` if it declares one, else a guess from the vocabulary. */
export function spaceSchemeOf(tok: Tokenizer): SpaceScheme {
  const declared = (tok as { spaceScheme?: unknown }).spaceScheme;
  if (declared === 'byte-level' || declared === 'sentencepiece' || declared === 'none') return declared;
  let g = 0;
  let sp = 0;
  for (let id = 0; id < tok.vocabSize; id++) {
    const s = tok.tokenString(id);
    if (s.startsWith('\u0120')) g++;
    if (s.includes('\u2581')) sp++;
  }
  if (sp > g) return 'sentencepiece';
  if (g > 0) return 'byte-level';
  return 'none';
}

/** special / punct membership per id, computed once per tokenizer (cached). */
export function computeTokenClasses(tok: Tokenizer): TokenClasses {
  const hit = cache.get(tok);
  if (hit) return hit;
  const n = tok.vocabSize;
  const special = new Uint8Array(n);
  const punct = new Uint8Array(n);
  for (const id of tok.specialIds()) if (id >= 0 && id < n) special[id] = 1;
  const scheme = spaceSchemeOf(tok);
  for (let id = 0; id < n; id++) {
    if (special[id]) continue;
    if (isPunctText(tokenSurface(tok.tokenString(id), scheme))) punct[id] = 1;
  }
  const classes = { special, punct };
  cache.set(tok, classes);
  return classes;
}
