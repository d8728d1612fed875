import assert from 'node:assert/strict';
import { test } from 'node:test';
import { kvBytesPerToken, parameterCount } from '../src/model/describe.js';
import { tensorToF32 } from '../src/model/tensor.js';
import { bf16ToF32, f16ToF32 } from '../src/half.js';
import type { LayerWeights, ModelConfig, ModelWeights, Tensor } from '../src/model/types.js';

test('f16ToF32 decodes known half-precision values exactly', () => {
  const cases: [number, number][] = [
    [0x0000, 0],
    [0x3c00, 1],
    [0xc000, -2],
    [0x3555, 0.333251953125],
    [0x7bff, 65504], // largest finite
    [0x0400, 2 ** -14], // smallest normal
    [0x0001, 2 ** -24], // smallest subnormal
    [0x03ff, 1023 * 2 ** -24], // largest subnormal
    [0x8001, -(2 ** -24)],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ];
  for (const [bits, value] of cases) assert.equal(f16ToF32(bits), value, `0x${bits.toString(16)}`);
  assert.ok(Object.is(f16ToF32(0x8000), -0), 'negative zero keeps its sign');
  assert.ok(Number.isNaN(f16ToF32(0x7e00)));
  assert.ok(Number.isNaN(f16ToF32(0xfc01)));
});

test('bf16ToF32 decodes known bfloat16 values exactly', () => {
  const cases: [number, number][] = [
    [0x0000, 0],
    [0x3f80, 1],
    [0xc000, -2],
    [0x3eab, 0.333984375],
    [0x7f7f, 3.3895313892515355e38], // largest finite
    [0x0080, 2 ** -126], // smallest normal
    [0x0001, 2 ** -133], // smallest subnormal
    [0x7f80, Infinity],
    [0xff80, -Infinity],
  ];
  for (const [bits, value] of cases) assert.equal(bf16ToF32(bits), value, `0x${bits.toString(16)}`);
  assert.ok(Object.is(bf16ToF32(0x8000), -0));
  assert.ok(Number.isNaN(bf16ToF32(0x7fc0)));
});

test('tensorToF32 matches the scalar decoders for every 16-bit pattern, and returns f32 data as is', () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  for (const [dtype, decode] of [['f16', f16ToF32], ['bf16', bf16ToF32]] as const) {
    const out = tensorToF32({ dtype, shape: [65536], data: all });
    for (let i = 0; i < 65536; i++) {
      const want = Math.fround(decode(i));
      assert.ok(Object.is(out[i], want) || (Number.isNaN(out[i]!) && Number.isNaN(want)), `${dtype} 0x${i.toString(16)}: ${out[i]} vs ${want}`);
    }
  }
  const f32 = new Float32Array([1, 2, 3]);
  assert.equal(tensorToF32({ dtype: 'f32', shape: [3], data: f32 }), f32);
});

function tensor(...shape: number[]): Tensor {
  return { dtype: 'f32', shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) };
}

function tinyWeights(tied: boolean): ModelWeights {
  const layer = (): LayerWeights => ({
    attnNorm: tensor(8), wq: tensor(8, 8), wk: tensor(4, 8), wv: tensor(4, 8), wo: tensor(8, 8),
    ffnNorm: tensor(8), wGate: tensor(16, 8), wDown: tensor(8, 16), wUp: tensor(16, 8),
  });
  const tokenEmbedding = tensor(10, 8);
  return { tokenEmbedding, layers: [layer(), layer()], finalNorm: tensor(8), lmHead: tied ? tokenEmbedding : tensor(10, 8) };
}

test('parameterCount counts tied embeddings once', () => {
  const perLayer = 8 + 64 + 32 + 32 + 64 + 8 + 3 * 128;
  assert.equal(parameterCount(tinyWeights(true)), 80 + 2 * perLayer + 8);
  assert.equal(parameterCount(tinyWeights(false)), 80 + 2 * perLayer + 8 + 80);
});

test('kvBytesPerToken = 2 * layers * kvHeads * headDim * bytes', () => {
  const config = { nLayers: 6, nKvHeads: 6, headDim: 48 } as ModelConfig;
  assert.equal(kvBytesPerToken(config), 2 * 6 * 6 * 48 * 4);
  assert.equal(kvBytesPerToken(config, 2), 2 * 6 * 6 * 48 * 2);
});
