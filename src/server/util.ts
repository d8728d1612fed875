/** Small helpers for the server and its CLI commands (sizes, durations, percentiles, a seeded RNG). */
import { InvalidOptionError } from '../errors.js';

/** Parse '512MiB', '1GiB', '100MB', '64k', '4096' (bytes). Binary units: KiB/MiB/GiB and K/M/G; decimal: KB/MB/GB. */
export function parseSize(s: string, flag = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib|k|m|g|t)?\s*$/i.exec(s);
  if (!m) throw new InvalidOptionError(`${flag}: cannot read size '${s}'; write e.g. 512MiB, 1GiB or 100MB`, flag);
  const unit = (m[2] ?? 'b').toLowerCase();
  const mult: Record<string, number> = {
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
  const v = Math.floor(parseFloat(m[1]) * mult[unit]);
  if (v <= 0) throw new InvalidOptionError(`${flag}: size must be positive, got '${s}'`, flag);
  return v;
}

export { formatBytes } from '../format-bytes.js';

/** Nearest-rank percentile (p in [0, 100]) of unsorted values; NaN for none. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const s = values.slice().sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))];
}

export { mulberry32 } from '../generate/rng.js';

/** Parse an integer range 'a-b', 'a:b' or a single 'n'. */
export function parseRange(s: string, flag: string): [number, number] {
  const m = /^\s*(\d+)\s*(?:[-:]\s*(\d+))?\s*$/.exec(s);
  if (!m) throw new InvalidOptionError(`${flag} expects N or MIN-MAX (integers), got '${s}'`, flag);
  const a = Number(m[1]);
  const b = m[2] === undefined ? a : Number(m[2]);
  if (a < 1 || b < a) throw new InvalidOptionError(`${flag}: need 1 ≤ MIN ≤ MAX, got '${s}'`, flag);
  return [a, b];
}

/** A number flag: undefined when absent; InvalidOptionError when it does not parse or is out of range. */
export function numFlag(v: string | undefined, flag: string, opts: { integer?: boolean; min?: number; max?: number } = {}): number | undefined {
  if (v === undefined) return undefined;
  const x = Number(v);
  if (v.trim() === '' || !Number.isFinite(x) || (opts.integer && !Number.isInteger(x))) {
    throw new InvalidOptionError(`--${flag} expects ${opts.integer ? 'an integer' : 'a number'}, got '${v}'`, `--${flag}`);
  }
  if ((opts.min !== undefined && x < opts.min) || (opts.max !== undefined && x > opts.max)) {
    throw new InvalidOptionError(`--${flag} must be in [${opts.min ?? '-∞'}, ${opts.max ?? '∞'}], got ${v}`, `--${flag}`);
  }
  return x;
}
