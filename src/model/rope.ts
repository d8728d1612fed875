import type { ModelConfig } from './types.js';

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
  applyScaling(inv, config);
  if (config.ropeInvFreqDtype === 'bf16' || config.ropeInvFreqDtype === 'f16') {
    for (let j = 0; j < half; j++) inv[j] = roundToHalf(inv[j], config.ropeInvFreqDtype);
  }
  return inv;
}

/** Round an f32 value to bf16 or f16 precision (round to nearest even) and back. */
function roundToHalf(x: number, dtype: 'bf16' | 'f16'): number {
  if (dtype === 'bf16') {
    const u = new Uint32Array(new Float32Array([x]).buffer)[0];
    const rounded = (u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000;
    return new Float32Array(new Uint32Array([rounded >>> 0]).buffer)[0];
  }
  // f16: 11 significant bits for normal numbers (ignores the f16 subnormal range, far below RoPE frequencies of use).
  if (x === 0 || !Number.isFinite(x)) return x;
  const e = Math.floor(Math.log2(Math.abs(x)));
  const q = 2 ** (e - 10);
  const m = x / q;
  const r = Math.round(m);
  const even = Math.abs(m - Math.trunc(m)) === 0.5 ? 2 * Math.round(m / 2) : r;
  return Math.fround(even * q);
}

function applyScaling(inv: Float32Array, config: ModelConfig): void {
  const half = inv.length;
  const s = config.ropeScaling;
  if (!s) return;
  if (s.type === 'linear') {
    for (let j = 0; j < half; j++) inv[j] = inv[j] / s.factor;
    return;
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
}
