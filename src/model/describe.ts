/** Facts about a loaded model: sizes, memory per token. */
import type { ModelConfig, ModelWeights, Tensor } from './types.js';

/** Number of weights. Tied embeddings are one tensor used twice, so they count once. */
export function parameterCount(weights: ModelWeights): number {
  const seen = new Set<Tensor>();
  const add = (t: Tensor | undefined): void => {
    if (t !== undefined) seen.add(t);
  };
  add(weights.tokenEmbedding);
  add(weights.finalNorm);
  add(weights.lmHead);
  for (const l of weights.layers) {
    for (const t of [l.attnNorm, l.wq, l.wk, l.wv, l.wo, l.bq, l.bk, l.bv, l.qNorm, l.kNorm, l.ffnNorm, l.wGate, l.wDown, l.wUp]) add(t);
  }
  let n = 0;
  for (const t of seen) n += t.shape.reduce((a, b) => a * b, 1);
  return n;
}

/** Number of weights a config implies (what parameterCount counts once they are loaded). */
export function parameterCountOf(c: ModelConfig): number {
  const qDim = c.nHeads * c.headDim;
  const kvDim = c.nKvHeads * c.headDim;
  const perLayer =
    2 * c.dim + // attention and FFN norms
    2 * qDim * c.dim + // wq, wo
    2 * kvDim * c.dim + // wk, wv
    3 * c.hiddenDim * c.dim + // gate, up, down
    (c.qkvBias ? qDim + 2 * kvDim : 0) +
    (c.qkNorm ? 2 * c.headDim : 0);
  return c.vocabSize * c.dim * (c.tiedEmbeddings ? 1 : 2) + c.nLayers * perLayer + c.dim;
}

/** Bytes of K and V cache one token occupies across all layers (uncompressed), at `bytesPerElement` per value. */
export function kvBytesPerToken(config: ModelConfig, bytesPerElement = 4): number {
  return 2 * config.nLayers * config.nKvHeads * config.headDim * bytesPerElement;
}
