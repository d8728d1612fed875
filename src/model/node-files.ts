/**
 * Model files on disk (Node only): a folder is a directory, a file is read through a FileHandle in bounded chunks,
 * straight into the arrays that keep the weights. File-system errors become ModelLoadErrors that name the file.
 */
import { open, readdir, readFile, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { join } from 'node:path';
import { asLoadError, isFsError } from './binary-io.js';
import type { ByteSource, ModelFolder } from './files.js';

export async function statOrNull(path: string): Promise<Stats | null> {
  try {
    return await stat(path);
  } catch (err) {
    if (isFsError(err) && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) return null;
    throw asLoadError(err, path, 'checking the path');
  }
}

/** Read a small file (config, tokenizer) whole. */
export async function readSmallFile(path: string, doing: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(path));
  } catch (err) {
    throw asLoadError(err, path, doing);
  }
}

/** Open a file on disk for reading at any position. */
export async function openFile(path: string): Promise<ByteSource> {
  const size = (await statOrNull(path))?.size ?? 0;
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw asLoadError(err, path, 'opening it');
  }
  return {
    name: path,
    size,
    async read(dest, position) {
      try {
        return (await fh.read(dest, 0, dest.byteLength, position)).bytesRead;
      } catch (err) {
        throw asLoadError(err, path, `reading bytes ${position}..${position + dest.byteLength}`);
      }
    },
    close: () => fh.close(),
  };
}

/** A directory as a model folder. */
export function nodeFolder(dir: string): ModelFolder {
  return {
    name: dir,
    where: (file) => join(dir, file),
    async list() {
      try {
        return (await readdir(dir)).sort();
      } catch (err) {
        throw asLoadError(err, dir, 'listing the folder');
      }
    },
    async open(file) {
      const path = join(dir, file);
      return (await statOrNull(path))?.isFile() ? openFile(path) : undefined;
    },
  };
}
