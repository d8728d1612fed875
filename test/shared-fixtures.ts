/** Where ../shared is, for tests that need its models and fixtures (they skip when it is absent, as on users' machines). */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// Compiled tests live in dist/test/: the repository root is two levels up.
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SHARED = process.env.FASTGEN_SHARED ?? join(REPO_ROOT, '..', 'shared');
export const HAVE_SHARED = existsSync(join(SHARED, 'fixtures'));
export const SKIP_SHARED = HAVE_SHARED ? false : `../shared not found at ${SHARED}: fixture tests skipped`;

export function sharedPath(...parts: string[]): string {
  return join(SHARED, ...parts);
}

export function readJson<T = any>(...parts: string[]): T {
  return JSON.parse(readFileSync(sharedPath(...parts), 'utf8')) as T;
}

export const HF_TINY = ['llama3-gqa-f32', 'llama3-gqa-f32-legacy-config', 'qwen2-bias-tied-bf16', 'mistral-mqa-f16', 'qwen3-qknorm-f32'];

/** max |a − b| / max |b| — the relative error measure. */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}
