/** Small helpers for the server and its CLI commands (sizes, durations, percentiles, a seeded RNG). */
import { InvalidOptionError } from '../errors.js';

export { formatBytes, parseSize } from '../format.js';

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
