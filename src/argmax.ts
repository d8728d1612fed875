/**
 * The one argmax: greedy decoding (the sampler), the wasm kernel's reference and the WebGPU kernel's check all use it,
 * so every path agrees on ties (the lowest index) and on NaN (the first NaN wins, as in torch.argmax on CPU: a NaN
 * logit shows up instead of hiding behind a finite one).
 */

/**
 * Index of the largest value; ties → the lowest index. Like torch.argmax on CPU, a NaN counts as larger than
 * everything (the first NaN wins). Throws RangeError on an empty array.
 */
export function argmax(logits: Float32Array): number {
  const n = logits.length;
  if (n === 0) throw new RangeError('argmax of an empty array');
  // Fast path, run every decode step: four independent running maxima (no loop-carried compare chain: ~1.5× faster
  // over a 32000-token vocabulary), then the first index holding the maximum. A NaN anywhere turns the sum into NaN
  // (as does ∞ − ∞), and then the exact scan below decides.
  let m0 = -Infinity;
  let m1 = -Infinity;
  let m2 = -Infinity;
  let m3 = -Infinity;
  let sum = 0;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    const a = logits[i];
    const b = logits[i + 1];
    const c = logits[i + 2];
    const d = logits[i + 3];
    sum += a + b + c + d;
    if (a > m0) m0 = a;
    if (b > m1) m1 = b;
    if (c > m2) m2 = c;
    if (d > m3) m3 = d;
  }
  for (; i < n; i++) {
    sum += logits[i];
    if (logits[i] > m0) m0 = logits[i];
  }
  if (sum === sum) {
    const max = Math.max(m0, m1, m2, m3);
    if (max > -Infinity) return logits.indexOf(max);
  }
  return argmaxExact(logits);
}

/** The plain scan: the first NaN wins, else the first maximum. */
function argmaxExact(logits: Float32Array): number {
  let best = 0;
  let max = logits[0];
  if (max !== max) return 0;
  for (let i = 1; i < logits.length; i++) {
    const v = logits[i];
    if (v > max) {
      max = v;
      best = i;
    } else if (v !== v) {
      return i;
    }
  }
  return best;
}
