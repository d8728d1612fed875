/** Small formatting helpers shared by CLI commands. */
import { FastgenError } from '../errors.js';

export { formatBytes } from '../format-bytes.js';

/** Parse '512MiB', '1GiB', '100MB', '4096' (bytes). */
export function parseSize(s: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|k|m|g)?\s*$/i.exec(s);
  if (!m) throw new FastgenError('INVALID_OPTION', `${flag}: cannot read size '${s}'; write e.g. 512MiB, 1GiB or 100MB`, flag);
  const unit = (m[2] ?? 'b').toLowerCase();
  const mult: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, k: 1024, kib: 1024, m: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gib: 1024 ** 3 };
  return Math.floor(parseFloat(m[1]) * mult[unit]);
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

/** ANSI colour when the stream is a terminal and NO_COLOR is unset. */
export function colorizer(stream: { isTTY?: boolean }): (code: number, s: string) => string {
  const on = !!stream.isTTY && !process.env.NO_COLOR;
  return (code, s) => (on ? `\x1b[${code}m${s}\x1b[0m` : s);
}
