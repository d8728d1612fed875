import { JsArena, type KvArena } from '../../cache/page-pool.js';
import type { HeadStore } from '../../cache/head-store.js';
import type { HeadAttentionStats, LayerNeeds, PromptAttentionStats } from '../../cache/policies/types.js';
import type { SequenceKv } from '../../cache/sequence-kv.js';
import { tensorToF32 } from '../../model/tensor.js';
import type { LoadedCheckpoint, ModelConfig, Tensor } from '../../model/types.js';
import type { Backend, ForwardItem } from '../types.js';
import { addInPlace, causalAttentionRow, matmul, rmsnorm, ropeRotateHalf, swiglu } from './math.js';
import { ropeInvFreq } from '../../model/rope.js';

/**
 * The cache's K/V as f32 for the reference attention: the arena itself for an f32 cache; for an f16 cache a decoded
 * copy laid out [slot][K | V] (headDim each).
 */
function kvFloats(kv: SequenceKv, st: HeadStore): Float32Array {
  if (kv.pool.kvDtype === 'f32') return kv.pool.arena.floats;
  const hd = st.headDim;
  const out = new Float32Array(st.length * 2 * hd);
  for (let s = 0; s < st.length; s++) {
    st.readKey(s, out, s * 2 * hd);
    st.readValue(s, out, s * 2 * hd + hd);
  }
  return out;
}

/** f32 copies of one layer's weights. */
interface RefLayer {
  attnNorm: Float32Array;
  wq: Float32Array;
  wk: Float32Array;
  wv: Float32Array;
  wo: Float32Array;
  bq?: Float32Array;
  bk?: Float32Array;
  bv?: Float32Array;
  qNorm?: Float32Array;
  kNorm?: Float32Array;
  ffnNorm: Float32Array;
  wGate: Float32Array;
  wUp: Float32Array;
  wDown: Float32Array;
}

/**
 * The reference backend: the transformer written plainly in TypeScript, one function per block, f32 throughout.
 * Everything faster is tested against this.
 */
export class CpuRefBackend implements Backend {
  readonly name = 'cpu-ref';
  readonly weightDtype = 'f32';
  readonly config: ModelConfig;
  private readonly embedding: Float32Array; // [vocab, dim]
  private readonly lmHead: Float32Array; // [vocab, dim]
  private readonly finalNorm: Float32Array; // [dim]
  private readonly layers: RefLayer[];
  private readonly invFreq: Float32Array; // [headDim / 2]

  constructor(ckpt: LoadedCheckpoint) {
    this.config = ckpt.config;
    const f = (t: Tensor) => tensorToF32(t);
    const w = ckpt.weights;
    this.embedding = f(w.tokenEmbedding);
    this.lmHead = w.lmHead === w.tokenEmbedding ? this.embedding : f(w.lmHead);
    this.finalNorm = f(w.finalNorm);
    this.layers = w.layers.map((l) => ({
      attnNorm: f(l.attnNorm),
      wq: f(l.wq),
      wk: f(l.wk),
      wv: f(l.wv),
      wo: f(l.wo),
      bq: l.bq && f(l.bq),
      bk: l.bk && f(l.bk),
      bv: l.bv && f(l.bv),
      qNorm: l.qNorm && f(l.qNorm),
      kNorm: l.kNorm && f(l.kNorm),
      ffnNorm: f(l.ffnNorm),
      wGate: f(l.wGate),
      wUp: f(l.wUp),
      wDown: f(l.wDown),
    }));
    this.invFreq = ropeInvFreq(this.config);
  }

  createArena(): KvArena {
    return new JsArena();
  }

  async forward(items: readonly ForwardItem[]): Promise<Float32Array[]> {
    return items.map((it) => {
      const logits = this.forwardOne(it.kv, it.tokens, it.logits);
      if (!it.out) return logits;
      const view = it.out.subarray(0, logits.length);
      view.set(logits);
      return view;
    });
  }

  dispose(): void {}

  /** Push n tokens of one sequence through the model; returns the requested logits. */
  private forwardOne(kv: SequenceKv, tokens: readonly number[], want: ForwardItem['logits']): Float32Array {
    const { dim, vocabSize } = this.config;
    const n = tokens.length;
    const start = kv.seqLength;
    // x: [n, dim] — the residual stream
    const x = new Float32Array(n * dim);
    for (let t = 0; t < n; t++) x.set(this.embedding.subarray(tokens[t] * dim, (tokens[t] + 1) * dim), t * dim);

    for (let l = 0; l < this.layers.length; l++) {
      this.attentionBlock(l, x, n, start, kv, tokens);
      this.ffnBlock(l, x, n);
    }
    kv.advance(n);

    if (want === 'none') return new Float32Array(0);
    const first = want === 'last' ? n - 1 : 0;
    const rows = n - first;
    const normed = new Float32Array(rows * dim);
    for (let t = 0; t < rows; t++) {
      rmsnorm(normed.subarray(t * dim, (t + 1) * dim), x.subarray((first + t) * dim, (first + t + 1) * dim), this.finalNorm, this.config.normEps);
    }
    const logits = new Float32Array(rows * vocabSize); // [rows, vocab]
    matmul(logits, normed, this.lmHead, rows, vocabSize, dim);
    return logits;
  }

  /** x += Wo · attention(RoPE(Wq·norm(x)), cache ∪ RoPE(Wk·norm(x)), Wv·norm(x)) */
  private attentionBlock(l: number, x: Float32Array, n: number, start: number, kv: SequenceKv, tokens: readonly number[]): void {
    const c = this.config;
    const L = this.layers[l];
    const hd = c.headDim;
    const qDim = c.nHeads * hd;
    const kvDim = c.nKvHeads * hd;
    const xb = new Float32Array(n * c.dim); // [n, dim]
    for (let t = 0; t < n; t++) rmsnorm(xb.subarray(t * c.dim, (t + 1) * c.dim), x.subarray(t * c.dim, (t + 1) * c.dim), L.attnNorm, c.normEps);

    const q = new Float32Array(n * qDim); // [n, nHeads × hd]
    const k = new Float32Array(n * kvDim); // [n, nKvHeads × hd]
    const v = new Float32Array(n * kvDim);
    matmul(q, xb, L.wq, n, qDim, c.dim);
    matmul(k, xb, L.wk, n, kvDim, c.dim);
    matmul(v, xb, L.wv, n, kvDim, c.dim);
    if (L.bq) for (let t = 0; t < n; t++) addInPlace(q.subarray(t * qDim), L.bq, qDim);
    if (L.bk) for (let t = 0; t < n; t++) addInPlace(k.subarray(t * kvDim), L.bk, kvDim);
    if (L.bv) for (let t = 0; t < n; t++) addInPlace(v.subarray(t * kvDim), L.bv, kvDim);

    for (let t = 0; t < n; t++) {
      const pos = start + t;
      for (let h = 0; h < c.nHeads; h++) {
        const off = t * qDim + h * hd;
        if (L.qNorm) rmsnorm(q.subarray(off, off + hd), q.subarray(off, off + hd), L.qNorm, c.normEps);
        ropeRotateHalf(q, off, hd, pos, this.invFreq);
      }
      for (let h = 0; h < c.nKvHeads; h++) {
        const off = t * kvDim + h * hd;
        if (L.kNorm) rmsnorm(k.subarray(off, off + hd), k.subarray(off, off + hd), L.kNorm, c.normEps);
        ropeRotateHalf(k, off, hd, pos, this.invFreq);
      }
    }

    kv.appendLayer(l, k, v, kvDim, n, start, tokens);
    const att = new Float32Array(n * qDim); // [n, nHeads × hd]
    const stats = this.attend(l, q, att, n, start, kv, kv.needs(l, n));
    kv.finishLayer(l, q, qDim, n, start, stats);

    const o = new Float32Array(n * c.dim);
    matmul(o, att, L.wo, n, c.dim, qDim);
    addInPlace(x, o, n * c.dim);
  }

  /**
   * out[t, h] = Σ_s softmax_s(q[t,h] · K_s / √hd) V_s over the slots s of KV head h / group with position ≤ start + t.
   * Adds the probabilities to the slot scores of the heads the policy asks for, and collects the column and band sums
   * it asks for (see StatsRequest), returned by query head.
   */
  private attend(l: number, q: Float32Array, out: Float32Array, n: number, start: number, kv: SequenceKv, needs: LayerNeeds): PromptAttentionStats | undefined {
    const c = this.config;
    const hd = c.headDim;
    const qDim = c.nHeads * hd;
    const group = c.nHeads / c.nKvHeads;
    const scale = 1 / Math.sqrt(hd);
    const want = needs.stats;
    const stats: HeadAttentionStats[] = [];
    for (let kvh = 0; kvh < c.nKvHeads; kvh++) {
      const st = kv.store(l, kvh);
      const m = st.length;
      // f32 cache: read the arena directly; f16 cache: decode halves once per head into a scratch copy.
      const floats = kvFloats(kv, st);
      const valueShift = kv.pool.kvDtype === 'f16' ? hd : kv.pool.pageTokens * hd;
      const keyOff = new Int32Array(m);
      for (let s = 0; s < m; s++) keyOff[s] = kv.pool.kvDtype === 'f16' ? s * 2 * hd : st.keyOffset(s);
      const track = needs.scores[kvh];
      const probs = new Float64Array(m);
      for (let g = 0; g < group; g++) {
        const h = kvh * group + g;
        const column = new Float64Array(want === null ? 0 : m);
        const bandSums = (want?.bands ?? []).map(() => new Float64Array(m));
        stats.push({ column, bands: bandSums });
        for (let t = 0; t < n; t++) {
          const pos = start + t;
          const qOff = t * qDim + h * hd;
          causalAttentionRow(probs, q, qOff, floats, keyOff, st.positions, pos, m, hd, scale);
          for (let s = 0; s < m; s++) {
            const p = probs[s];
            if (p === 0) continue;
            if (track) st.scores[s] += p;
            if (want !== null && t >= want.fromRow) {
              column[s] += p;
              for (let k = 0; k < bandSums.length; k++) if (pos - st.positions[s] <= want.bands[k]) bandSums[k][s] += p;
            }
            const vo = keyOff[s] + valueShift;
            for (let i = 0; i < hd; i++) out[qOff + i] += p * floats[vo + i];
          }
        }
      }
    }
    return want === null ? undefined : stats;
  }

  /** x += Wdown · (silu(Wgate · norm(x)) ⊙ Wup · norm(x)) */
  private ffnBlock(l: number, x: Float32Array, n: number): void {
    const c = this.config;
    const L = this.layers[l];
    const xb = new Float32Array(n * c.dim);
    for (let t = 0; t < n; t++) rmsnorm(xb.subarray(t * c.dim, (t + 1) * c.dim), x.subarray(t * c.dim, (t + 1) * c.dim), L.ffnNorm, c.normEps);
    const gate = new Float32Array(n * c.hiddenDim); // [n, hidden]
    const up = new Float32Array(n * c.hiddenDim);
    matmul(gate, xb, L.wGate, n, c.hiddenDim, c.dim);
    matmul(up, xb, L.wUp, n, c.hiddenDim, c.dim);
    swiglu(gate, up, n * c.hiddenDim);
    const down = new Float32Array(n * c.dim);
    matmul(down, gate, L.wDown, n, c.dim, c.hiddenDim);
    addInPlace(x, down, n * c.dim);
  }
}
