/**
 * A model folder at a URL (in a page: a model served next to it, or any CORS-enabled host). Each file is fetched
 * once, whole, into memory (a URL folder remembers its files, so that inspecting and then loading a model downloads
 * it once); a 404 means "no such file". Folders at a URL cannot be listed.
 */
import { ModelLoadError } from '../errors.js';
import { bytesSource, type ModelFolder } from './files.js';

/** Progress of a download: bytes so far, bytes in all (0 when the server does not say), which file. */
export type DownloadProgress = (loaded: number, total: number, file: string) => void;

/** Fetch `url` whole, reporting progress; undefined on 404. */
export async function fetchBytes(url: string, onProgress?: DownloadProgress): Promise<Uint8Array | undefined> {
  let res: Response;
  try {
    res = await fetch(url);
  } catch (err) {
    throw new ModelLoadError('MODEL_NOT_FOUND', `cannot fetch ${url}: ${(err as Error).message} (offline, a wrong address, or a host that does not allow this page to read it: CORS)`, url, { cause: err });
  }
  if (res.status === 404) return undefined;
  if (!res.ok) throw new ModelLoadError('MODEL_NOT_FOUND', `fetching ${url} answered HTTP ${res.status} ${res.statusText}`, url);
  const total = Number(res.headers.get('content-length') ?? 0);
  if (res.body === null) return new Uint8Array(await res.arrayBuffer());
  let out = new Uint8Array(total > 0 ? total : 1 << 20);
  let done = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done: end, value } = await reader.read();
    if (end) break;
    if (done + value.byteLength > out.byteLength) {
      const bigger = new Uint8Array(Math.max(out.byteLength * 2, done + value.byteLength));
      bigger.set(out.subarray(0, done));
      out = bigger;
    }
    out.set(value, done);
    done += value.byteLength;
    onProgress?.(done, total, url);
  }
  return done === out.byteLength ? out : out.slice(0, done);
}

/** The folder at `base` (a URL ending in '/'). */
export function urlFolder(base: string, onProgress?: DownloadProgress): ModelFolder {
  const dir = base.endsWith('/') ? base : `${base}/`;
  const files = new Map<string, Promise<Uint8Array | undefined>>();
  const where = (file: string): string => new URL(file, dir).href;
  return {
    name: dir.slice(0, -1),
    where,
    list: async () => undefined,
    async open(file) {
      let bytes = files.get(file);
      if (bytes === undefined) {
        bytes = fetchBytes(where(file), onProgress);
        files.set(file, bytes);
        bytes.catch(() => files.delete(file));
      }
      const b = await bytes;
      return b === undefined ? undefined : bytesSource(b, where(file));
    },
  };
}
