/** The page's errors in plain words (src/web/plain-error.ts): each kind of failure gets its title; nothing is lost. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { GpuUnavailableError } from '../src/backend/webgpu/device.js';
import { InvalidOptionError, ModelLoadError } from '../src/errors.js';
import { plainError } from '../src/web/plain-error.js';

test('failures become a title in plain words and the full message', () => {
  const cases: [unknown, string, string][] = [
    [new GpuUnavailableError('this browser offers no WebGPU'), 'GPU_UNAVAILABLE', 'No WebGPU'],
    [new ModelLoadError('NOT_A_MODEL', 'notes.bin does not look like a llama2.c checkpoint'), 'NOT_A_MODEL', 'Not a model'],
    [new ModelLoadError('CORRUPT_MODEL', 'x.bin is 10 bytes, but its header implies 20'), 'CORRUPT_MODEL', 'Not a model (damaged or incomplete)'],
    [new InvalidOptionError('maxTokens must be a non-negative integer', 'maxTokens'), 'INVALID_OPTION', 'Invalid setting'],
    // Out of memory, however it surfaces: a failed allocation while loading, the wasm memory's limit, a typed array.
    [new ModelLoadError('CORRUPT_MODEL', 'out of memory while allocating a [32000, 4096] f32 tensor from model.bin'), 'OUT_OF_MEMORY', 'Out of memory'],
    [new RangeError('WASM memory exhausted: need 5000000000 bytes, maximum is 4294967296'), 'OUT_OF_MEMORY', 'Out of memory'],
    [new RangeError('Array buffer allocation failed'), 'OUT_OF_MEMORY', 'Out of memory'],
    [new RangeError('WebAssembly.Memory.grow(): Maximum memory size exceeded'), 'OUT_OF_MEMORY', 'Out of memory'],
    [new TypeError('x is not a function'), 'INTERNAL', 'Internal error'],
    ['a string', 'INTERNAL', 'Internal error'],
  ];
  for (const [err, code, title] of cases) {
    const p = plainError(err);
    assert.deepEqual([p.code, p.title], [code, title], String(err));
    assert.ok(p.message.includes(err instanceof Error ? err.message : String(err)), 'the original message is kept');
  }
  assert.match(plainError(new RangeError('Array buffer allocation failed')).message, /smaller model/);
  // A RangeError that is not about memory is not called out of memory.
  assert.equal(plainError(new RangeError('offset is out of bounds')).code, 'INTERNAL');
});
