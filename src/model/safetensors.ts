/**
 * A safetensors reader, written against the format spec (https://github.com/huggingface/safetensors):
 *
 *   [8 bytes: u64 little-endian N][N bytes: UTF-8 JSON header][data section]
 *
 * The header maps tensor names to { dtype, shape, data_offsets: [begin, end] } with offsets relative to the start of the
 * data section, plus an optional "__metadata__" string map. We validate the whole header up front (offsets inside the
 * file, no overlaps, byte sizes consistent with dtype x shape) so that a damaged file fails with a message naming the
 * tensor before any large read starts.
 */
import { ModelLoadError } from '../errors.js';
import { elementCount, formatShape, readExactly, readTensor, type BytesRead } from './binary-io.js';
import type { ByteSource } from './files.js';
import type { DType, Tensor } from './types.js';

/** Element sizes of every dtype the safetensors spec defines; only F32/F16/BF16 can be loaded. */
const SAFETENSORS_DTYPE_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};

const LOADABLE: Record<string, DType> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

/** The spec caps the header at 100 MB; anything larger is a damaged length field, not a real header. */
const MAX_HEADER_BYTES = 100_000_000;

export interface SafetensorsEntry {
  name: string;
  /** The dtype string as written in the file (e.g. 'BF16'). */
  dtype: string;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

export interface SafetensorsFile {
  path: string;
  fileSize: number;
  /** Absolute offset of the data section (8 + header length). */
  dataStart: number;
  tensors: Map<string, SafetensorsEntry>;
  metadata?: Record<string, unknown>;
}

function corrupt(path: string, detail: string): ModelLoadError {
  return new ModelLoadError(
    'CORRUPT_MODEL',
    `${path} is not a valid safetensors file: ${detail}. Re-download or re-save the model.`,
    path,
  );
}

function isNonNegInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

/** Read and validate the header of an open safetensors file. */
export async function readSafetensorsHeader(src: ByteSource): Promise<SafetensorsFile> {
  const { name: path, size: fileSize } = src;
  if (fileSize < 8) throw corrupt(path, `the file is only ${fileSize} bytes long (the 8-byte header length is missing)`);
  const lenBytes = new Uint8Array(8);
  await readExactly(src, lenBytes, 0);
  const headerLen = new DataView(lenBytes.buffer).getBigUint64(0, true);
  if (headerLen > BigInt(fileSize - 8)) {
    throw corrupt(path, `the header length field says ${headerLen} bytes, past the end of the ${fileSize}-byte file (truncated?)`);
  }
  if (headerLen > BigInt(MAX_HEADER_BYTES)) throw corrupt(path, `the header length field says ${headerLen} bytes (the limit is 100 MB)`);
  const n = Number(headerLen);
  const headerBytes = new Uint8Array(n);
  await readExactly(src, headerBytes, 8);

  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (err) {
    throw corrupt(path, `the JSON header does not parse (${(err as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw corrupt(path, 'the JSON header is not an object');
  }

  const dataStart = 8 + n;
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, SafetensorsEntry>();
  let metadata: Record<string, unknown> | undefined;
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw === 'object' && raw !== null) metadata = raw as Record<string, unknown>;
      continue;
    }
    tensors.set(name, parseEntry(name, raw, path, dataStart, dataSize));
  }
  checkNoOverlaps([...tensors.values()], path);
  return { path, fileSize, dataStart, tensors, metadata };
}

function parseEntry(name: string, raw: unknown, path: string, dataStart: number, dataSize: number): SafetensorsEntry {
  if (typeof raw !== 'object' || raw === null) throw corrupt(path, `entry "${name}" is not an object`);
  const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
  if (typeof dtype !== 'string') throw corrupt(path, `tensor "${name}" has no dtype string`);
  if (!Array.isArray(shape) || !shape.every(isNonNegInt)) throw corrupt(path, `tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => typeof o === 'number' && Number.isSafeInteger(o))) {
    throw corrupt(path, `tensor "${name}" has invalid data_offsets ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin < 0) {
    throw corrupt(path, `tensor "${name}" data_offsets [${begin}, ${end}] start before the data section (they would overlap the header)`);
  }
  if (end < begin) throw corrupt(path, `tensor "${name}" data_offsets [${begin}, ${end}] end before they begin`);
  if (end > dataSize) {
    throw corrupt(
      path,
      `tensor "${name}" data_offsets [${begin}, ${end}] reach past the end of the data section (${dataSize} bytes; the file is truncated or the header is damaged)`,
    );
  }
  // Unknown dtype strings are only an error if the tensor is actually needed (see tensorDtype); for known ones, the
  // byte range must hold exactly shape x element size.
  const elemBytes = SAFETENSORS_DTYPE_BYTES[dtype];
  if (elemBytes !== undefined && (end - begin) !== elementCount(shape as number[]) * elemBytes) {
    throw corrupt(
      path,
      `tensor "${name}" is ${dtype} ${formatShape(shape as number[])} = ${elementCount(shape as number[]) * elemBytes} bytes, but its data_offsets span ${end - begin} bytes`,
    );
  }
  return { name, dtype, shape: shape as number[], begin: dataStart + begin, end: dataStart + end };
}

function checkNoOverlaps(entries: SafetensorsEntry[], path: string): void {
  const sorted = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.begin < prev.end) throw corrupt(path, `tensors "${prev.name}" and "${cur.name}" overlap in the data section`);
  }
}

/** The engine dtype of an entry, or a clear error naming the tensor when we cannot load it. */
export function tensorDtype(entry: SafetensorsEntry, path: string): DType {
  const dt = LOADABLE[entry.dtype];
  if (dt !== undefined) return dt;
  if (entry.dtype in SAFETENSORS_DTYPE_BYTES) {
    throw new ModelLoadError(
      'UNSUPPORTED_MODEL',
      `tensor "${entry.name}" in ${path} has dtype ${entry.dtype}; fastgen loads F32, F16 and BF16 weights (quantized or integer checkpoints are not supported)`,
      path,
    );
  }
  throw corrupt(path, `tensor "${entry.name}" has unknown dtype "${entry.dtype}"`);
}

/** Read one tensor's raw values (f16/bf16 stay as uint16 bit patterns). */
export function readSafetensor(src: ByteSource, file: SafetensorsFile, entry: SafetensorsEntry, onBytes?: BytesRead): Promise<Tensor> {
  return readTensor(src, entry.begin, tensorDtype(entry, file.path), [...entry.shape], onBytes);
}
