/**
 * Reference numerics in plain TypeScript. Each function reads like the formula it computes; shapes are in comments.
 * The fast backends (WASM SIMD, WGSL) are tested against these on random inputs.
 * All arithmetic is f32 storage with f64 accumulation in JS (JS numbers are doubles), rounded on store.
 */

/** out[r] = Σ_c w[r, c] · x[c]        w: [rows, cols] row-major, x: [cols], out: [rows] */
export function matvec(out: Float32Array, w: Float32Array, x: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    const base = r * cols;
    for (let c = 0; c < cols; c++) sum += w[base + c] * x[c];
    out[r] = sum;
  }
}

/** out[t, r] = Σ_c w[r, c] · x[t, c]     x: [tokens, cols], w: [rows, cols], out: [tokens, rows] */
export function matmul(out: Float32Array, x: Float32Array, w: Float32Array, tokens: number, rows: number, cols: number): void {
  for (let t = 0; t < tokens; t++) {
    const xt = x.subarray(t * cols, (t + 1) * cols);
    const ot = out.subarray(t * rows, (t + 1) * rows);
    matvec(ot, w, xt, rows, cols);
  }
}

/** out = x / sqrt(mean(x²) + eps) ⊙ weight        x, weight, out: [n] (out may alias x) */
export function rmsnorm(out: Float32Array, x: Float32Array, weight: Float32Array, eps: number): void {
  const n = weight.length;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[i] * x[i];
  const scale = 1 / Math.sqrt(ss / n + eps);
  for (let i = 0; i < n; i++) out[i] = x[i] * scale * weight[i];
}

/** In place: x = softmax(x[0..n)) */
export function softmax(x: Float32Array, n = x.length): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[i] > max) max = x[i];
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(x[i] - max);
    x[i] = e;
    sum += e;
  }
  for (let i = 0; i < n; i++) x[i] /= sum;
}

/** SwiGLU: gate = silu(gate) ⊙ up       gate, up: [n] */
export function swiglu(gate: Float32Array, up: Float32Array, n = gate.length): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    gate[i] = (g / (1 + Math.exp(-g))) * up[i];
  }
}

/** x += y */
export function addInPlace(x: Float32Array, y: Float32Array, n = x.length): void {
  for (let i = 0; i < n; i++) x[i] += y[i];
}

/**
 * Rotary position embedding, rotate-half layout (Hugging Face convention), in place on one head vector.
 * For j < d/2: (x[j], x[j + d/2]) is rotated by angle pos · invFreq[j].     x: [headDim], invFreq: [headDim/2]
 */
export function ropeRotateHalf(x: Float32Array, offset: number, headDim: number, pos: number, invFreq: Float32Array): void {
  const half = headDim >> 1;
  for (let j = 0; j < half; j++) {
    const angle = pos * invFreq[j];
    const cos = Math.cos(angle);
    const sin = Math.sin(angle);
    const a = x[offset + j];
    const b = x[offset + j + half];
    x[offset + j] = a * cos - b * sin;
    x[offset + j + half] = b * cos + a * sin;
  }
}

/** dot(a[aOff..aOff+n), b[bOff..bOff+n)) */
export function dot(a: Float32Array, aOff: number, b: Float32Array, bOff: number, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[aOff + i] * b[bOff + i];
  return s;
}

/**
 * One query row's causal attention probabilities over m stored keys (f64):
 *   probs[s] = softmax_s(scale · q·K[s]) over the slots with positions[s] ≤ pos (at least one), 0 for the others.
 * q[qOff .. qOff+headDim); key s at keys[keyOff[s] ..].
 */
export function causalAttentionRow(probs: Float64Array, q: Float32Array, qOff: number, keys: Float32Array, keyOff: Int32Array,
  positions: Int32Array, pos: number, m: number, headDim: number, scale: number): void {
  let max = -Infinity;
  for (let s = 0; s < m; s++) {
    if (positions[s] > pos) {
      probs[s] = -Infinity;
      continue;
    }
    let d = 0;
    const ko = keyOff[s];
    for (let i = 0; i < headDim; i++) d += q[qOff + i] * keys[ko + i];
    probs[s] = d * scale;
    if (probs[s] > max) max = probs[s];
  }
  let sum = 0;
  for (let s = 0; s < m; s++) {
    const e = probs[s] === -Infinity ? 0 : Math.exp(probs[s] - max);
    probs[s] = e;
    sum += e;
  }
  for (let s = 0; s < m; s++) probs[s] /= sum;
}
