/**
 * Seeded pseudo-random numbers for sampling.
 *
 * Generator: xoshiro128** 1.1 (Blackman & Vigna), 128-bit state, 32-bit outputs, period 2^128 − 1.
 * Seeding:   the seed (any JS safe integer, negative allowed) is taken as a 64-bit two's-complement value and fed
 *            to splitmix64; its first two outputs fill the state as words [lo(a), hi(a), lo(b), hi(b)].
 * Floats:    nextFloat() takes two outputs and returns a 53-bit uniform in [0, 1).
 *
 * Everything is 32-bit integer arithmetic (Math.imul, >>>) except the one-off seeding (BigInt), so the same seed
 * gives the same sequence on every platform and engine.
 */
import { InvalidOptionError } from '../errors.js';

const MASK64 = (1n << 64n) - 1n;

/** splitmix64 step: advances `state` by the golden gamma and returns [newState, output]. */
export function splitmix64(state: bigint): [next: bigint, output: bigint] {
  const next = (state + 0x9e3779b97f4a7c15n) & MASK64;
  let z = next;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return [next, z ^ (z >> 31n)];
}

/** A fresh seed from the platform CSPRNG (Web Crypto, available in Node ≥ 19 and browsers): a non-negative safe integer. */
export function randomSeed(): number {
  const w = new Uint32Array(2);
  globalThis.crypto.getRandomValues(w);
  return (w[0] & 0x1fffff) * 0x100000000 + w[1]; // 21 + 32 = 53 bits
}

function checkSeed(seed: number): void {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) {
    throw new InvalidOptionError(
      `seed must be a safe integer (between ${Number.MIN_SAFE_INTEGER} and ${Number.MAX_SAFE_INTEGER}), got ${String(seed)}`,
      'seed',
    );
  }
}

export class Xoshiro128StarStar {
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  /** @param seed any safe integer; omitted → a random seed from crypto (see `randomSeed`). */
  constructor(seed: number = randomSeed()) {
    this.seed(seed);
  }

  /** Re-seeds in place (splitmix64 expansion, see file header). */
  seed(seed: number): void {
    checkSeed(seed);
    let st = BigInt.asUintN(64, BigInt(seed));
    let a: bigint;
    let b: bigint;
    [st, a] = splitmix64(st);
    [st, b] = splitmix64(st);
    this.s0 = Number(a & 0xffffffffn) | 0;
    this.s1 = Number(a >> 32n) | 0;
    this.s2 = Number(b & 0xffffffffn) | 0;
    this.s3 = Number(b >> 32n) | 0;
    // The all-zero state is the one fixed point; splitmix64 output pairs never produce it in practice, but be total.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Next raw output, an unsigned 32-bit integer. */
  nextUint32(): number {
    const s0 = this.s0;
    const s1 = this.s1;
    let s2 = this.s2;
    let s3 = this.s3;
    const x = Math.imul(s1, 5);
    const result = Math.imul((x << 7) | (x >>> 25), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    this.s1 = s1 ^ s2;
    this.s0 = s0 ^ s3;
    this.s2 = s2 ^ t;
    this.s3 = (s3 << 11) | (s3 >>> 21);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits (consumes two outputs). */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992; // (hi·2^26 + lo) / 2^53
  }

  /** Snapshot of the 128-bit state as four uint32 words (for checkpointing a generation). */
  getState(): Uint32Array {
    return Uint32Array.of(this.s0, this.s1, this.s2, this.s3);
  }

  /** Restores a state from `getState()`. */
  setState(state: ArrayLike<number>): void {
    if (state.length !== 4) throw new RangeError(`xoshiro128** state has 4 words, got ${state.length}`);
    const [a, b, c, d] = [state[0] | 0, state[1] | 0, state[2] | 0, state[3] | 0];
    if ((a | b | c | d) === 0) throw new RangeError('xoshiro128** state must not be all zero');
    this.s0 = a;
    this.s1 = b;
    this.s2 = c;
    this.s3 = d;
  }

  /** Independent copy with the same state. */
  clone(): Xoshiro128StarStar {
    const r = new Xoshiro128StarStar(0);
    r.setState(this.getState());
    return r;
  }
}

/**
 * mulberry32: a tiny deterministic generator in [0, 1) for workloads and test data (not for sampling, which uses
 * xoshiro128** above). One definition for the load test and the test suites.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
