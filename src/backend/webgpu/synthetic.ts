import type { ModelConfig } from '../../model/types.js';

const base = { architecture: 'llama', normEps: 1e-5, tiedEmbeddings: false, qkvBias: false, qkNorm: false, sourceDtype: 'f16', eosTokenIds: [2], bosTokenId: 1 } as const;

/** Real model shapes for speed runs with random weights (WebGpuBackend.createSynthetic). */
export const SYNTHETIC_CONFIGS: Record<string, ModelConfig> = {
  stories15M: { ...base, name: 'synthetic stories15M', dim: 288, hiddenDim: 768, nLayers: 6, nHeads: 6, nKvHeads: 6, headDim: 48, vocabSize: 32000, maxSeqLen: 256, ropeTheta: 10000, tiedEmbeddings: true, eosTokenIds: [2] },
  /** Llama-2-7B's layer count and heads with small matrices: the per-step CPU cost of a 7B pass, on any device. */
  'llama2-7b-thin': { ...base, name: 'synthetic llama2-7b-thin', dim: 512, hiddenDim: 1024, nLayers: 32, nHeads: 32, nKvHeads: 32, headDim: 16, vocabSize: 32000, maxSeqLen: 4096, ropeTheta: 10000, eosTokenIds: [2] },
  'llama2-7b': { ...base, name: 'synthetic llama2-7b', dim: 4096, hiddenDim: 11008, nLayers: 32, nHeads: 32, nKvHeads: 32, headDim: 128, vocabSize: 32000, maxSeqLen: 4096, ropeTheta: 10000, eosTokenIds: [2] },
  'llama3-8b': {
    ...base, name: 'synthetic llama3-8b', dim: 4096, hiddenDim: 14336, nLayers: 32, nHeads: 32, nKvHeads: 8, headDim: 128, vocabSize: 128256, maxSeqLen: 8192,
    ropeTheta: 500000, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 }, eosTokenIds: [128001],
  },
};
