import type { ModelConfig } from '../../model/types.js';

/**
 * Inverse frequencies θ_j = base^(-2j/d), with the model's RoPE scaling applied (HF `_compute_llama3_parameters`,
 * linear interpolation). Computed in f64 and rounded once, as PyTorch computes them in f32 from an f32 arange:
 * exactness against the references depends on matching that rounding.
 */
export function ropeInvFreq(config: ModelConfig): Float32Array {
  const d = config.headDim;
  const half = d >> 1;
  const inv = new Float32Array(half);
  for (let j = 0; j < half; j++) {
    // PyTorch: 1.0 / (base ** (torch.arange(0, d, 2).float() / d))
    const exponent = Math.fround((2 * j) / d);
    inv[j] = 1 / Math.fround(Math.pow(config.ropeTheta, exponent));
  }
  const s = config.ropeScaling;
  if (!s) return inv;
  if (s.type === 'linear') {
    for (let j = 0; j < half; j++) inv[j] = inv[j] / s.factor;
    return inv;
  }
  // llama3: long wavelengths are slowed by `factor`, short ones kept, a smooth blend in between.
  const low = s.lowFreqFactor ?? 1;
  const high = s.highFreqFactor ?? 4;
  const oldCtx = s.originalMaxPositionEmbeddings ?? 8192;
  const lowFreqWavelen = oldCtx / low;
  const highFreqWavelen = oldCtx / high;
  for (let j = 0; j < half; j++) {
    const wavelen = (2 * Math.PI) / inv[j];
    if (wavelen < highFreqWavelen) continue;
    if (wavelen > lowFreqWavelen) {
      inv[j] = inv[j] / s.factor;
    } else {
      const smooth = (oldCtx / wavelen - low) / (high - low);
      inv[j] = (1 - smooth) * (inv[j] / s.factor) + smooth * inv[j];
    }
  }
  return inv;
}
