/**
 * The model as the engine sees it, independent of the file format it came from.
 *
 * Convention: every loader returns weights in the Hugging Face layout — row-major [out, in] matrices, q/k rows in the
 * rotate-half RoPE order. llama2.c checkpoints (interleaved RoPE pairs) are permuted at load time so that one RoPE
 * kernel serves every model.
 */
/** Longest context fastgen accepts (2^24 tokens): per-position tables (RoPE, attention scratch) grow with it. */
export const MAX_CONTEXT = 1 << 24;

export type Architecture = 'llama' | 'mistral' | 'qwen2' | 'qwen3';

export type DType = 'f32' | 'f16' | 'bf16';

export interface RopeScaling {
  /** 'llama3' frequency-dependent scaling, or 'linear' position interpolation. */
  type: 'llama3' | 'linear';
  factor: number;
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositionEmbeddings?: number;
}

export interface ModelConfig {
  architecture: Architecture;
  /** Human-readable name: folder name or 'stories15M'. */
  name: string;
  dim: number; // hidden size
  hiddenDim: number; // FFN intermediate size
  nLayers: number;
  nHeads: number; // query heads
  nKvHeads: number; // key/value heads (GQA when < nHeads)
  headDim: number; // usually dim / nHeads; explicit for qwen3
  vocabSize: number;
  maxSeqLen: number; // context length
  normEps: number;
  ropeTheta: number;
  ropeScaling?: RopeScaling;
  tiedEmbeddings: boolean;
  qkvBias: boolean; // qwen2
  qkNorm: boolean; // qwen3: RMSNorm over each head's q and k before RoPE
  /**
   * Compatibility knob, off by default: round the RoPE inverse frequencies to this dtype. Hugging Face models that
   * were cast to bf16/f16 (`model.half()`) round their non-persistent `inv_freq` buffer too, and keep the rounded
   * table after `.float()`; set this to reproduce logits computed that way. The correct table is f32.
   */
  ropeInvFreqDtype?: DType;
  /** dtype the weights were stored in on disk. */
  sourceDtype: DType;
  bosTokenId?: number;
  eosTokenIds: number[];
}

/** A dense tensor, row-major. `data` holds raw values in `dtype` (f16/bf16 as uint16 bit patterns). */
export interface Tensor {
  dtype: DType;
  shape: number[];
  data: Float32Array | Uint16Array;
}

export interface LayerWeights {
  attnNorm: Tensor; // [dim]
  wq: Tensor; // [nHeads*headDim, dim]
  wk: Tensor; // [nKvHeads*headDim, dim]
  wv: Tensor; // [nKvHeads*headDim, dim]
  wo: Tensor; // [dim, nHeads*headDim]
  bq?: Tensor; // [nHeads*headDim]   (qwen2)
  bk?: Tensor; // [nKvHeads*headDim] (qwen2)
  bv?: Tensor; // [nKvHeads*headDim] (qwen2)
  qNorm?: Tensor; // [headDim] (qwen3)
  kNorm?: Tensor; // [headDim] (qwen3)
  ffnNorm: Tensor; // [dim]
  wGate: Tensor; // [hiddenDim, dim]  (llama2.c w1)
  wDown: Tensor; // [dim, hiddenDim]  (llama2.c w2)
  wUp: Tensor; // [hiddenDim, dim]    (llama2.c w3)
}

export interface ModelWeights {
  tokenEmbedding: Tensor; // [vocabSize, dim]
  layers: LayerWeights[];
  finalNorm: Tensor; // [dim]
  lmHead: Tensor; // [vocabSize, dim]; the same object as tokenEmbedding when tied
}

export interface LoadedCheckpoint {
  config: ModelConfig;
  weights: ModelWeights;
  /** Where it came from, for `inspect` and error messages. */
  source: { kind: 'llama2c' | 'hf' | 'default'; path: string };
}
