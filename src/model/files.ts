/**
 * Where a model's bytes come from, for every platform: the loaders read a `ByteSource` (random access to one file's
 * bytes) inside a `ModelFolder` (the files a model is made of). In Node these are files on disk (node-files.ts); in a
 * page they are files the user picked (`Blob`s) or URLs fetched over HTTP (url-files.ts). The loaders never know
 * which.
 */

/** Random access to the bytes of one file. */
export interface ByteSource {
  /** Names the bytes in messages: a path, a URL, or a picked file's name. */
  readonly name: string;
  readonly size: number;
  /** Read up to `dest.byteLength` bytes at `position` into `dest`; returns how many (0 only past the end). */
  read(dest: Uint8Array, position: number): Promise<number>;
  close(): Promise<void>;
}

/** The files of one model: a folder on disk, the files picked in a page, or a URL prefix. */
export interface ModelFolder {
  /** The folder itself, in messages (a path, a URL, or a label); its last part names the model. */
  readonly name: string;
  /** Where `file` is, in messages. */
  where(file: string): string;
  /** Its files' names, or undefined where a folder cannot be listed (a URL). */
  list(): Promise<string[] | undefined>;
  /** Open one of its files; undefined when there is no such file. */
  open(file: string): Promise<ByteSource | undefined>;
}

/** The last part of a path or URL, without a trailing slash: the name of a model folder or file. */
export function baseName(path: string): string {
  const parts = path.replace(/[\\/]+$/, '').split(/[\\/]/);
  return parts[parts.length - 1] ?? path;
}

/** `name` without its extension ('stories15M.bin' → 'stories15M'). */
export function stem(name: string): string {
  const b = baseName(name);
  const dot = b.lastIndexOf('.');
  return dot > 0 ? b.slice(0, dot) : b;
}

/** Bytes already in memory (a fetched body, a test's buffer). */
export function bytesSource(bytes: Uint8Array, name: string): ByteSource {
  return {
    name,
    size: bytes.byteLength,
    async read(dest, position) {
      const n = Math.max(0, Math.min(dest.byteLength, bytes.byteLength - position));
      dest.set(bytes.subarray(position, position + n));
      return n;
    },
    async close() {},
  };
}

/** A `Blob` or `File` (a file picked in a page): read in slices, never whole. */
export function blobSource(blob: Blob, name: string): ByteSource {
  return {
    name,
    size: blob.size,
    async read(dest, position) {
      const end = Math.min(blob.size, position + dest.byteLength);
      if (end <= position) return 0;
      const part = new Uint8Array(await blob.slice(position, end).arrayBuffer());
      dest.set(part);
      return part.byteLength;
    },
    async close() {},
  };
}

/** `length` bytes of `inner` from `start` on, as a file of its own (the default model lives inside a bundle). */
export function sliceSource(inner: ByteSource, start: number, length: number, name: string): ByteSource {
  return {
    name,
    size: length,
    read(dest, position) {
      const n = Math.max(0, Math.min(dest.byteLength, length - position));
      return n === 0 ? Promise.resolve(0) : inner.read(dest.subarray(0, n), start + position);
    },
    close: () => inner.close(),
  };
}

/** Files picked in a page (an `<input type=file multiple>`, a drop): a flat folder of Blobs by name. */
export function blobFolder(files: readonly { name: string; blob: Blob }[], name: string): ModelFolder {
  const byName = new Map(files.map((f) => [baseName(f.name), f.blob]));
  return {
    name,
    where: (file) => file,
    list: async () => [...byName.keys()].sort(),
    open: async (file) => {
      const blob = byName.get(file);
      return blob === undefined ? undefined : blobSource(blob, file);
    },
  };
}

/** Read a whole (small) file: a config, a tokenizer. */
export async function readAll(src: ByteSource): Promise<Uint8Array> {
  const out = new Uint8Array(src.size);
  let done = 0;
  while (done < out.byteLength) {
    const n = await src.read(out.subarray(done), done);
    if (n === 0) break;
    done += n;
  }
  return done === out.byteLength ? out : out.slice(0, done);
}

/** Open, read whole and close one file of a folder; undefined when it is not there. */
export async function readFolderFile(folder: ModelFolder, file: string): Promise<Uint8Array | undefined> {
  const src = await folder.open(file);
  if (src === undefined) return undefined;
  try {
    return await readAll(src);
  } finally {
    await src.close();
  }
}
