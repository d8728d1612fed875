/**
 * Shared helpers for the model loader tests: locating ../shared, temp folders, an independent safetensors writer and
 * reader (so corrupt files can be produced without going through the code under test), and a llama2.c writer.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { FastgenError, type FastgenErrorCode } from '../src/errors.js';
import { mulberry32 } from '../src/generate/rng.js';

/** The compiled test runs from dist/test/, so the repository root is two levels up. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const SHARED = resolve(REPO_ROOT, '../shared');

/** The ../shared folder, or undefined after marking the test skipped (it is absent on a user's machine). */
export function sharedOrSkip(t: TestContext): string | undefined {
  if (existsSync(SHARED)) return SHARED;
  t.skip(`../shared not found: ${SHARED} holds the test models and fixtures; this test needs it`);
  return undefined;
}

export const HF_TINY = ['llama3-gqa-f32', 'llama3-gqa-f32-legacy-config', 'qwen2-bias-tied-bf16', 'mistral-mqa-f16', 'qwen3-qknorm-f32'] as const;

/** A fresh temp folder removed when the test ends. */
export async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'fastgen-model-test-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Copy a folder's files (not its permissions: ../shared is read-only, the copies must be editable). */
export async function copyFolder(src: string, dst: string): Promise<string> {
  await mkdir(dst, { recursive: true });
  for (const name of await readdir(src)) await writeFile(join(dst, name), await readFile(join(src, name)));
  return dst;
}

/** Assert that `p` rejects with a FastgenError of `code` whose message contains every `mention`. */
export async function expectLoadError(p: Promise<unknown>, code: FastgenErrorCode, mentions: (string | RegExp)[] = []): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof FastgenError, `expected a FastgenError, got ${String(err)}`);
    assert.equal(err.code, code, `wrong code; message: ${err.message}`);
    for (const m of mentions) {
      if (typeof m === 'string') assert.ok(err.message.includes(m), `message should mention ${JSON.stringify(m)}: ${err.message}`);
      else assert.match(err.message, m);
    }
    return true;
  });
}

// ---------------------------------------------------------------------------------------------------------------
// safetensors, written and read independently of src/model/safetensors.ts

export interface RawHeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export interface RawSafetensors {
  header: Record<string, RawHeaderEntry>;
  metadata?: unknown;
  /** The data section. */
  data: Uint8Array;
}

export async function readRawSafetensors(path: string): Promise<RawSafetensors> {
  const bytes = new Uint8Array(await readFile(path));
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const json = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, unknown>;
  const { __metadata__: metadata, ...header } = json;
  return { header: header as Record<string, RawHeaderEntry>, metadata, data: bytes.subarray(8 + n) };
}

/** Bytes of one tensor from a raw file. */
export function rawTensorBytes(raw: RawSafetensors, name: string): Uint8Array {
  const [b, e] = raw.header[name]!.data_offsets;
  return raw.data.subarray(b, e);
}

/** Write header + data verbatim (offsets are not recomputed: use this to write deliberately broken files). */
export async function writeRawSafetensors(path: string, header: Record<string, unknown>, data: Uint8Array): Promise<void> {
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8); // the reference writer pads the header to 8-byte alignment
  const headerBytes = new TextEncoder().encode(json);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(headerBytes.byteLength), true);
  await writeFile(path, Buffer.concat([len, headerBytes, data]));
}

/** Write a well-formed safetensors file holding `tensors` (in order), computing the offsets. */
export async function writeSafetensors(
  path: string,
  tensors: { name: string; dtype: string; shape: number[]; bytes: Uint8Array }[],
): Promise<void> {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.byteLength] };
    offset += t.bytes.byteLength;
  }
  await writeRawSafetensors(path, header, Buffer.concat(tensors.map((t) => t.bytes)));
}

/** Rewrite a safetensors file after editing its header; the data section is kept as is. */
export async function editSafetensorsHeader(path: string, edit: (header: Record<string, RawHeaderEntry>) => void): Promise<void> {
  const raw = await readRawSafetensors(path);
  edit(raw.header);
  await writeRawSafetensors(path, { __metadata__: raw.metadata, ...raw.header }, raw.data);
}

export async function editJson(path: string, edit: (json: Record<string, unknown>) => void): Promise<void> {
  const json = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  edit(json);
  await writeFile(path, JSON.stringify(json, null, 2));
}

// ---------------------------------------------------------------------------------------------------------------
// llama2.c checkpoints

/** Deterministic pseudo-random numbers in [-1, 1) (mulberry32). */
export function seededRandom(seed: number): () => number {
  const r = mulberry32(seed);
  return () => r() * 2 - 1;
}

export interface Llama2cShape {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  shared: boolean;
}

/** Float offsets of each section of a llama2.c body (after the 28-byte header), per run.c. */
export function llama2cOffsets(s: Llama2cShape): Record<string, number> {
  const hd = s.dim / s.nHeads;
  const kv = s.nKvHeads * hd;
  const sizes: [string, number][] = [
    ['emb', s.vocabSize * s.dim],
    ['rmsAtt', s.nLayers * s.dim],
    ['wq', s.nLayers * s.dim * s.dim],
    ['wk', s.nLayers * kv * s.dim],
    ['wv', s.nLayers * kv * s.dim],
    ['wo', s.nLayers * s.dim * s.dim],
    ['rmsFfn', s.nLayers * s.dim],
    ['w1', s.nLayers * s.hiddenDim * s.dim],
    ['w2', s.nLayers * s.dim * s.hiddenDim],
    ['w3', s.nLayers * s.hiddenDim * s.dim],
    ['rmsFinal', s.dim],
    ['freqCis', s.seqLen * hd],
    ['wcls', s.shared ? 0 : s.vocabSize * s.dim],
  ];
  const out: Record<string, number> = {};
  let o = 0;
  for (const [k, n] of sizes) {
    out[k] = o;
    o += n;
  }
  out.end = o;
  return out;
}

/** A complete llama2.c legacy checkpoint with random weights; returns the file bytes and the float body. */
export function makeLlama2c(s: Llama2cShape, seed = 1): { bytes: Uint8Array; body: Float32Array } {
  const body = new Float32Array(llama2cOffsets(s).end!);
  const rnd = seededRandom(seed);
  for (let i = 0; i < body.length; i++) body[i] = rnd();
  const header = new Int32Array([s.dim, s.hiddenDim, s.nLayers, s.nHeads, s.nKvHeads, s.shared ? s.vocabSize : -s.vocabSize, s.seqLen]);
  const bytes = new Uint8Array(28 + body.byteLength);
  bytes.set(new Uint8Array(header.buffer), 0);
  bytes.set(new Uint8Array(body.buffer), 28);
  return { bytes, body };
}
