/**
 * What the WebGPU backend's CPU replay of a step's evictions (replayEvictions) costs per head, with the caches warm and
 * after streaming a buffer through them (as the step's other work does between the replay and the previous step's
 * reserve). Real SequenceKv / HeadStore objects over a pool whose arena has no CPU view, like the GPU arena's: the
 * replay then moves slot metadata only.
 *
 *   node dist/dev/cache/replay-bench.js [--batch 8] [--layers 32] [--heads 32] [--slots 700] [--flush-mb 0,64] [--steps 60]
 *
 * Each step: every head reserves its new token's slot, then (optionally) `flush-mb` MiB are read, then the replay
 * of one evicted slot per head (the GPU's report: the new length, one evicted) is timed. Prints the median ns per head for each flush size.
 */
import { parseArgs } from 'node:util';
import { PagePool, type KvArena } from '../../src/cache/page-pool.js';
import { SequenceKv } from '../../src/cache/sequence-kv.js';
import { resolveCacheOptions } from '../../src/cache/policies/index.js';
import { EVICT_WORDS, replayEvictions } from '../../src/backend/webgpu/backend.js';
import type { ForwardItem } from '../../src/backend/types.js';

const { values } = parseArgs({
  options: {
    batch: { type: 'string', default: '8' }, layers: { type: 'string', default: '32' }, heads: { type: 'string', default: '32' },
    slots: { type: 'string', default: '700' }, 'flush-mb': { type: 'string', default: '0,64' }, steps: { type: 'string', default: '60' },
  },
});
const [B, L, H, slots, steps] = [values.batch, values.layers, values.heads, values.slots, values.steps].map(Number);
const flushes = values['flush-mb'].split(',').map(Number);

// A GPU arena's CPU side: no view of the K/V bytes.
const noView: KvArena = { floats: new Float32Array(0), halves: new Uint16Array(0), baseByteOffset: 0, ensureFloats() {} };
const shape = { nLayers: L, nHeads: H, nKvHeads: H, headDim: 128 };
const none = new Uint8Array(16);

for (const mb of flushes) {
  const pool = new PagePool({ headDim: 128, kvDtype: 'f16', arena: noView });
  const items: ForwardItem[] = Array.from({ length: B }, () => ({
    kv: new SequenceKv(pool, shape, resolveCacheOptions({ policy: 'full' }), { special: none, punct: none }), tokens: [3], logits: 'none',
  }));
  for (const it of items) for (let l = 0; l < L; l++) it.kv.reserveLayer(l, slots, 0, new Array(slots).fill(3));
  // One eviction entry per head (the layout the backend writes) and a report evicting one slot of each.
  const nEvicts = B * L * H;
  const ed = new Uint32Array(nEvicts * EVICT_WORDS);
  const reportWords = 2;
  const reports = new Uint32Array(nEvicts * reportWords);
  let j = 0;
  for (let l = 0; l < L; l++) for (let i = 0; i < B; i++) for (let h = 0; h < H; h++, j++) {
    const e = j * EVICT_WORDS;
    ed.set([0, h, slots + 1, 0, 0, 0, 0, 0, j * reportWords, l, 0, i], e);
    reports.set([slots, 1], j * reportWords);
  }
  const flush = new Float64Array((mb * 1024 * 1024) / 8);
  let sink = 0;
  const times: number[] = [];
  for (let s = 0; s < steps; s++) {
    items.forEach((it, i) => { for (let l = 0; l < L; l++) it.kv.reserveLayer(l, 1, slots + s, it.tokens); });
    for (let k = 0; k < flush.length; k += 8) sink += flush[k];
    const t0 = performance.now();
    replayEvictions(ed, nEvicts, reports, items, H);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const med = times[times.length >> 1];
  console.log(`replay of ${nEvicts} heads (${slots} slots each), ${mb} MiB read between steps: median ${med.toFixed(2)} ms = ${((med * 1e6) / nEvicts).toFixed(0)} ns a head`);
  if (Number.isNaN(sink)) console.log('');
}
