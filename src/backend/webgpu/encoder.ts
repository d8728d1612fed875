/**
 * Recording a step's dispatches into ONE command buffer. Each dispatch gets a 256-byte slot of one uniform buffer for
 * its parameters (written with one writeBuffer per step); bind groups are cached by (pipeline, slot, buffers), so a
 * decode step that repeats the previous step's shape creates none.
 */
import { FastgenError } from '../../errors.js';
import type { GpuContext } from './device.js';

/** A storage binding: a whole buffer or a range of it. */
export type Binding = GPUBuffer | { buffer: GPUBuffer; offset: number; size: number };

/** Marks a parameter as f32 (the others are u32). */
export class F32 {
  constructor(readonly v: number) {}
}
export const f32 = (v: number): F32 => new F32(v);
export type Param = number | F32;

const SLOT_BYTES = 256;


/** Workgroup grid for `count` workgroups: at most 65535 per dimension (the kernels flatten x + y · 65535). */
export function grid(count: number): [number, number] {
  const x = Math.max(1, Math.min(count, 65535));
  return [x, Math.max(1, Math.ceil(count / 65535))];
}

interface Op {
  pipeline: GPUComputePipeline;
  /** What the bind group binds: the pipeline, then (binding, buffer, offset, size) per entry (−1: whole buffer). */
  sig: (GPUBuffer | number | GPUComputePipeline)[];
  /** The previous step's group for this slot, when it binds the same. */
  group?: GPUBindGroup;
  key: string;
  slot: number;
  x: number;
  y: number;
  z: number;
}

/** Compiles and caches pipelines; creates buffers with clear out-of-memory errors. */
export class GpuDevice {
  readonly device: GPUDevice;
  private readonly pipelines = new Map<string, GPUComputePipeline>();

  constructor(readonly ctx: GpuContext) {
    this.device = ctx.device;
  }

  /** The pipeline for `key`, compiled from source() on first use. */
  pipeline(key: string, source: () => string): GPUComputePipeline {
    let p = this.pipelines.get(key);
    if (!p) {
      const module = this.device.createShaderModule({ code: source(), label: key });
      p = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: key });
      this.pipelines.set(key, p);
    }
    return p;
  }

  /** A storage buffer of `bytes` (rounded up to 4), optionally filled. Out of memory → GPU_OUT_OF_MEMORY. */
  async buffer(bytes: number, what: string, data?: ArrayBufferView, usage = 0): Promise<GPUBuffer> {
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    if (size > this.ctx.maxBuffer) {
      throw new FastgenError('GPU_OUT_OF_MEMORY', `${what}: one buffer of ${size} bytes exceeds the adapter's ${this.ctx.maxBuffer}-byte limit`);
    }
    this.device.pushErrorScope('out-of-memory');
    const buf = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC | usage,
      label: what,
    });
    const err = await this.device.popErrorScope();
    if (err) {
      throw new FastgenError('GPU_OUT_OF_MEMORY',
        `the GPU could not allocate ${size} bytes for ${what}: ${err.message}. Use a smaller model, --dtype q8_0/f16, or a smaller KV budget.`);
    }
    if (data) this.device.queue.writeBuffer(buf, 0, data.buffer, data.byteOffset, data.byteLength);
    return buf;
  }

  /** A buffer the CPU maps to read results back. */
  readback(bytes: number, what: string): GPUBuffer {
    return this.device.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: what });
  }
}

/** A growable storage buffer, recreated larger (contents dropped) when a pass needs more. */
export class GrowableBuffer {
  buf?: GPUBuffer;
  private bytes = 0;
  constructor(private readonly gpu: GpuDevice, private readonly what: string) {}
  async ensure(bytes: number): Promise<GPUBuffer> {
    if (!this.buf || bytes > this.bytes) {
      this.buf?.destroy();
      this.bytes = Math.max(bytes, Math.ceil(this.bytes * 1.5), 256);
      this.buf = await this.gpu.buffer(this.bytes, this.what);
    }
    return this.buf;
  }
}

/** One step's dispatches, submitted as one command buffer. */
export class StepEncoder {
  private paramBytes: ArrayBuffer;
  private u32: Uint32Array;
  private f32v: Float32Array;
  private uniform: GPUBuffer;
  private uniformSlots: number;
  /** Per parameter slot: the last bind group created there and what it binds. */
  private lastSig: { sig: Op['sig']; group: GPUBindGroup }[] = [];
  private ops: Op[] = [];
  /** Slots used by this step's flushed dispatches (see flush). */
  private slotBase = 0;
  /**
   * Set before a submit to time it (the next submit only): every dispatch then gets a compute pass of its own with
   * timestamps at both ends (slower than the one-pass step, so only for a benchmark's split of where the GPU time
   * goes). Without timestamp-query the submit runs untimed and lastProfile is left unset.
   */
  profile = false;
  /** The last profiled submit's dispatches: key and GPU nanoseconds each, once the GPU has finished. */
  lastProfile?: Promise<{ key: string; ns: number }[]>;

  constructor(private readonly gpu: GpuDevice, slots = 1024) {
    this.paramBytes = new ArrayBuffer(slots * SLOT_BYTES);
    this.u32 = new Uint32Array(this.paramBytes);
    this.f32v = new Float32Array(this.paramBytes);
    this.uniformSlots = slots;
    this.uniform = this.newUniform(slots);
  }

  /** Dispatches recorded in this step (flushed ones included). */
  get count(): number {
    return this.slotBase + this.ops.length;
  }

  /**
   * Submit what is recorded so far as a command buffer of its own and go on recording the same step: the GPU starts on
   * the first layers while the CPU records the next (a 7B step's recording took as long as half its GPU time, run 3).
   * Slots keep counting across flushes, so a step shaped like the last one still reuses every bind group. No-op while
   * profiling (the timed submit must see the whole step).
   */
  flush(): void {
    if (this.profile || this.ops.length === 0) return;
    this.encodeAndSubmit();
    this.slotBase += this.ops.length;
    this.ops = [];
  }

  /** Record one dispatch: storage bindings 1.. in order (or at explicit binding numbers), parameters, grid. */
  dispatch(pipeline: GPUComputePipeline, key: string, bindings: (Binding | [number, Binding])[], params: Param[], x: number, y = 1, z = 1): void {
    const slot = this.slotBase + this.ops.length;
    if ((slot + 1) * SLOT_BYTES > this.paramBytes.byteLength) {
      const bytes = new ArrayBuffer(this.paramBytes.byteLength * 2);
      new Uint8Array(bytes).set(new Uint8Array(this.paramBytes));
      this.paramBytes = bytes;
      this.u32 = new Uint32Array(bytes);
      this.f32v = new Float32Array(bytes);
    }
    const base = (slot * SLOT_BYTES) / 4;
    this.u32.fill(0, base, base + SLOT_BYTES / 4);
    params.forEach((v, i) => {
      if (v instanceof F32) this.f32v[base + i] = v.v;
      else this.u32[base + i] = v >>> 0;
    });
    // The bind group of this slot in the previous step is reused when the same pipeline binds the same buffers: a
    // decode step shaped like the last one then builds no key and creates no group.
    const sig: Op['sig'] = [pipeline];
    for (let i = 0; i < bindings.length; i++) {
      const b = bindings[i];
      const [n, r] = Array.isArray(b) ? b : [i + 1, b];
      if (r instanceof GPUBuffer) sig.push(n, r, -1, -1);
      else sig.push(n, r.buffer, r.offset, r.size);
    }
    const last = this.lastSig[slot];
    let group: GPUBindGroup | undefined;
    if (last && last.sig.length === sig.length && last.sig.every((v, i) => v === sig[i])) group = last.group;
    this.ops.push({ pipeline, sig, group, slot, x, y, z, key });
  }

  /**
   * Encode everything recorded since the last submit in one compute pass, then `after` (copies to readback buffers),
   * and submit.
   */
  submit(after?: (enc: GPUCommandEncoder) => void): void {
    this.encodeAndSubmit(after);
    this.slotBase = 0;
    this.ops = [];
  }

  private encodeAndSubmit(after?: (enc: GPUCommandEncoder) => void): void {
    const dev = this.gpu.device;
    const end = this.slotBase + this.ops.length;
    if (end > this.uniformSlots) {
      // Earlier flushes of this step hold groups of the old buffer: it is released once their work is done.
      this.uniform.destroy();
      this.uniformSlots = this.paramBytes.byteLength / SLOT_BYTES;
      this.uniform = this.newUniform(this.uniformSlots);
      this.lastSig = []; // their groups point at the old uniform buffer
      for (const op of this.ops) op.group = undefined;
    }
    if (this.ops.length > 0) dev.queue.writeBuffer(this.uniform, this.slotBase * SLOT_BYTES, this.paramBytes, this.slotBase * SLOT_BYTES, this.ops.length * SLOT_BYTES);
    const enc = dev.createCommandEncoder();
    const timed = this.profile && this.gpu.ctx.timestamps && this.ops.length > 0;
    const readTimes = timed ? this.encodeTimed(enc) : undefined;
    if (!timed && this.ops.length > 0) {
      const pass = enc.beginComputePass();
      for (const op of this.ops) {
        pass.setPipeline(op.pipeline);
        pass.setBindGroup(0, this.bindGroup(op));
        pass.dispatchWorkgroups(op.x, op.y, op.z);
      }
      pass.end();
    }
    after?.(enc);
    dev.queue.submit([enc.finish()]);
    if (readTimes) this.lastProfile = readTimes();
    if (timed) this.profile = false;
  }

  /** Each dispatch in its own pass between two timestamps; returns the read of the times, to start after the submit. */
  private encodeTimed(enc: GPUCommandEncoder): () => Promise<{ key: string; ns: number }[]> {
    const dev = this.gpu.device;
    const n = this.ops.length;
    const querySet = dev.createQuerySet({ type: 'timestamp', count: 2 * n });
    const resolve = dev.createBuffer({ size: 16 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const back = dev.createBuffer({ size: 16 * n, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.ops.forEach((op, i) => {
      const pass = enc.beginComputePass({ timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      pass.setPipeline(op.pipeline);
      pass.setBindGroup(0, this.bindGroup(op));
      pass.dispatchWorkgroups(op.x, op.y, op.z);
      pass.end();
    });
    enc.resolveQuerySet(querySet, 0, 2 * n, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, back, 0, 16 * n);
    const keys = this.ops.map((op) => op.key);
    return async () => {
      await back.mapAsync(GPUMapMode.READ);
      const t = new BigUint64Array(back.getMappedRange().slice(0));
      back.unmap();
      for (const b of [back, resolve]) b.destroy();
      querySet.destroy();
      return keys.map((key, i) => ({ key, ns: t[2 * i + 1] > t[2 * i] ? Number(t[2 * i + 1] - t[2 * i]) : 0 }));
    };
  }

  private bindGroup(op: Op): GPUBindGroup {
    if (op.group) return op.group;
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: this.uniform, offset: op.slot * SLOT_BYTES, size: SLOT_BYTES } }];
    for (let i = 1; i < op.sig.length; i += 4) {
      const buffer = op.sig[i + 1] as GPUBuffer;
      const offset = op.sig[i + 2] as number;
      entries.push({ binding: op.sig[i] as number, resource: offset < 0 ? { buffer } : { buffer, offset, size: op.sig[i + 3] as number } });
    }
    const group = this.gpu.device.createBindGroup({ layout: op.pipeline.getBindGroupLayout(0), entries, label: op.key });
    this.lastSig[op.slot] = { sig: op.sig, group };
    return group;
  }

  private newUniform(slots: number): GPUBuffer {
    return this.gpu.device.createBuffer({ size: slots * SLOT_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'params' });
  }
}
