/**
 * The page's service worker: it makes the page work offline once it has been loaded. At install it keeps the page,
 * the bundles, kernels.wasm and the default model's bytes; after that, same-origin GETs go to the network first and are kept in a cache on the way
 * through, so an update is seen at once and, offline, the last copy answers; cross-origin model files (opened by URL)
 * are taken from the cache first, since a model at a URL does not change and may be gigabytes. Cached responses keep
 * their COOP/COEP headers, so the offline page is still cross-origin isolated. Bundled as sw.js.
 */
interface FetchEvent extends Event {
  request: Request;
  respondWith(r: Promise<Response>): void;
}
interface ExtendableEvent extends Event {
  waitUntil(p: Promise<unknown>): void;
}
const sw = globalThis as unknown as {
  addEventListener(type: 'install' | 'activate', f: (e: ExtendableEvent) => void): void;
  addEventListener(type: 'fetch', f: (e: FetchEvent) => void): void;
  skipWaiting(): Promise<void>;
  clients: { claim(): Promise<void> };
  location: Location;
};

const CACHE = 'fastgen-web-1';

/**
 * Kept at install, so that the first visit is enough: the page starts fetching before this worker controls it. The
 * default model is there when `fastgen web` serves the page; elsewhere its absence is no failure.
 */
const SHELL = [
  './', 'index.html', 'style.css', 'fastgen-page.js', 'fastgen-engine.js', 'fastgen-wasm-worker.js', 'kernels.wasm',
  'models/stories15M/stories15M.bin', 'models/stories15M/tokenizer.bin',
];

sw.addEventListener('install', (e) =>
  e.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await Promise.all(SHELL.map((f) => cache.add(new URL(f, sw.location.href)).catch(() => undefined)));
      await sw.skipWaiting();
    })(),
  ),
);
sw.addEventListener('activate', (e) => e.waitUntil(sw.clients.claim()));
sw.addEventListener('fetch', (e) => {
  const req = e.request;
  if (req.method !== 'GET' || req.headers.has('range')) return;
  const sameOrigin = new URL(req.url).origin === sw.location.origin;
  e.respondWith(sameOrigin ? networkFirst(req) : cacheFirst(req));
});

async function keep(req: Request, res: Response): Promise<void> {
  if (res.ok && (res.type === 'basic' || res.type === 'cors')) await (await caches.open(CACHE)).put(req, res);
}

async function networkFirst(req: Request): Promise<Response> {
  try {
    const res = await fetch(req);
    await keep(req, res.clone());
    return res;
  } catch (err) {
    // The page's own address carries its settings (?prompt=…): any copy of the page will do.
    const hit = await caches.match(req, { ignoreSearch: req.mode === 'navigate' });
    if (hit !== undefined) return hit;
    throw err;
  }
}

async function cacheFirst(req: Request): Promise<Response> {
  const hit = await caches.match(req);
  if (hit !== undefined) return hit;
  const res = await fetch(req);
  await keep(req, res.clone());
  return res;
}
