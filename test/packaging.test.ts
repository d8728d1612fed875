/** What `npm pack` ships: the command, the compiled library and its kernels, sources for the source maps; no tests, benchmarks or CI. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { REPO_ROOT } from './shared-fixtures.js';

test('the package tarball holds bin, dist/src (with the wasm kernels), dist/web (the browser page) and src, and nothing of test, bench, docs or .ci', () => {
  const r = spawnSync('npm', ['pack', '--dry-run', '--ignore-scripts', '--json'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000, shell: process.platform === 'win32' });
  assert.equal(r.status, 0, r.stderr);
  const files: string[] = JSON.parse(r.stdout)[0].files.map((f: { path: string }) => f.path);
  for (const must of ['bin/fastgen.js', 'dist/src/cli/main.js', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/backend/wasm/kernels.wasm', 'dist/web/index.html', 'dist/web/fastgen-engine.js', 'dist/web/kernels.wasm', 'README.md', 'package.json']) {
    assert.ok(files.includes(must), `ships ${must}`);
  }
  const tops = new Set(files.map((f) => f.split('/')[0]));
  assert.deepEqual([...tops].sort(), ['README.md', 'bin', 'dist', 'package.json', 'src']);
  assert.ok(files.every((f) => !f.startsWith('dist/test/') && !f.startsWith('dist/bench/')), 'no compiled tests or benchmarks');
});
