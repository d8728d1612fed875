/** Sizes and tables for people: byte counts both ways and llama-bench-style text tables (CLI, eval reports, server logs). */
import { InvalidOptionError } from './errors.js';

/** Human-readable byte counts in binary units (KiB, MiB, …). */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return 'unlimited';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
};

/** Parse '512MiB', '1GiB', '100MB', '64k', '4096' (bytes). Binary units: KiB/MiB/GiB/TiB and K/M/G/T; decimal: KB/MB/GB/TB. */
export function parseSize(s: string, flag = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib|k|m|g|t)?\s*$/i.exec(s);
  if (!m) throw new InvalidOptionError(`${flag}: cannot read size '${s}'; write e.g. 512MiB, 1GiB or 100MB`, flag);
  const v = Math.floor(parseFloat(m[1]) * SIZE_UNITS[(m[2] ?? 'b').toLowerCase()]);
  if (v <= 0) throw new InvalidOptionError(`${flag}: size must be positive, got '${s}'`, flag);
  return v;
}

/** A plain text table, markdown-pipe style like llama-bench. */
export function table(headers: string[], rows: (string | number)[][], align?: ('l' | 'r')[]): string {
  const cells = rows.map((r) => r.map(String));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const pad = (s: string, i: number) => ((align?.[i] ?? 'l') === 'r' ? s.padStart(widths[i]) : s.padEnd(widths[i]));
  const line = (r: string[]) => `| ${r.map((c, i) => pad(c, i)).join(' | ')} |`;
  const sep = `| ${widths.map((w, i) => ((align?.[i] ?? 'l') === 'r' ? '-'.repeat(w - 1) + ':' : '-'.repeat(w))).join(' | ')} |`;
  return [line(headers), sep, ...cells.map(line)].join('\n');
}
