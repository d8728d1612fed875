/**
 * Low-level reading shared by the loaders, on any platform (a ByteSource is a file on disk, a picked file or fetched
 * bytes: files.ts).
 *
 * Weights are read straight from the source into the typed array that will hold them for the model's lifetime: the
 * array is allocated first (so it is aligned for its element type, whatever the offset in the file), and its bytes are
 * filled in bounded chunks. No intermediate buffer holds a whole tensor or a whole file.
 */
import { FastgenError, ModelLoadError } from '../errors.js';
import type { ByteSource } from './files.js';
import type { DType, Tensor } from './types.js';

/** One read() call moves at most this much (Node's fs.read is limited to 2 GiB per call, and smaller chunks give smoother progress). */
export const CHUNK_BYTES = 16 << 20;

/** Called with the number of bytes just read. */
export type BytesRead = (n: number) => void;

/** Typed arrays view bytes in platform order; every checkpoint format we read is little-endian. */
export function assertLittleEndianHost(): void {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new ModelLoadError('UNSUPPORTED_MODEL', 'fastgen reads little-endian weight files and needs a little-endian CPU');
  }
}

/** Node's fs errors (ENOENT, EACCES, EISDIR, ...) carry a string `code` and a `syscall`. */
export function isFsError(err: unknown): err is Error & { code: string; syscall: string } {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'string' && 'syscall' in err;
}

/**
 * Turn an error from the file system (or a failed allocation) into a ModelLoadError that says which file and what to do.
 * FastgenErrors and anything else not recognised pass through untouched.
 */
export function asLoadError(err: unknown, path: string, doing: string): unknown {
  if (err instanceof FastgenError) return err;
  if (isFsError(err)) {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') {
      return new ModelLoadError('MODEL_NOT_FOUND', `${path} does not exist (while ${doing}). Check the path.`, path, { cause: err });
    }
    return new ModelLoadError('CORRUPT_MODEL', `cannot read ${path} while ${doing}: ${err.message}`, path, { cause: err });
  }
  if (err instanceof RangeError && /allocat|Invalid typed array length|Array buffer/i.test(err.message)) {
    return new ModelLoadError(
      'CORRUPT_MODEL',
      `out of memory while ${doing} from ${path} (${err.message}); the model may be too large for this machine`,
      path,
      { cause: err },
    );
  }
  return err;
}

/** Fill `dest` completely from `src` at `position`. A short read means the file is shorter than its header promised. */
export async function readExactly(src: ByteSource, dest: Uint8Array, position: number, onBytes?: BytesRead): Promise<void> {
  const path = src.name;
  let done = 0;
  while (done < dest.byteLength) {
    const want = Math.min(dest.byteLength - done, CHUNK_BYTES);
    let bytesRead: number;
    try {
      bytesRead = await src.read(dest.subarray(done, done + want), position + done);
    } catch (err) {
      throw asLoadError(err, path, `reading bytes ${position + done}..${position + done + want}`);
    }
    if (bytesRead === 0) {
      throw new ModelLoadError(
        'CORRUPT_MODEL',
        `${path} ended at byte ${position + done}, but ${dest.byteLength - done} more bytes were expected there; the file is truncated (re-download or re-export it)`,
        path,
      );
    }
    done += bytesRead;
    onBytes?.(bytesRead);
  }
}

export function bytesOf(a: Float32Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function bytesPerElement(dtype: DType): number {
  return dtype === 'f32' ? 4 : 2;
}

/** Allocate a tensor of `dtype`/`shape` and read its raw bytes from `src` at `position`. */
export async function readTensor(src: ByteSource, position: number, dtype: DType, shape: number[], onBytes?: BytesRead): Promise<Tensor> {
  const path = src.name;
  const n = elementCount(shape);
  let data: Float32Array | Uint16Array;
  try {
    data = dtype === 'f32' ? new Float32Array(n) : new Uint16Array(n);
  } catch (err) {
    throw asLoadError(err, path, `allocating a [${shape.join(', ')}] ${dtype} tensor`);
  }
  await readExactly(src, bytesOf(data), position, onBytes);
  return { dtype, shape, data };
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
