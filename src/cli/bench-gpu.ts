/**
 * `fastgen bench --synthetic <shape>`: the WebGPU backend's speed on random weights of a real model's shape, built on
 * the GPU (no checkpoint), in llama-bench's shape plus what a GPU run needs to be read: batch and context depth, weight
 * and KV memory, where a step's GPU time goes, and a memory-budget run through the server's admission rule.
 *
 * Depth without a prefill: `tgN @ dD` fills D tokens into each sequence's cache with WebGpuBackend.fillContext (the
 * same pool, pages and byte counts; pseudo-random K/V; no attention runs), so a row's step time is measured at that
 * depth without a D-row prompt pass. Random weights have no attention pattern worth profiling, so the `fastgen` rows
 * give the heads FastGen policies from a mix (--policy-mix; default: the mix a real profile chose, see DEFAULT_MIX),
 * applied to the filled context as FastGen applies its choice to a prompt, then evicting every step by those rules.
 * Steps sample greedily on the GPU (4 bytes back per sequence): the backend's fastest decode loop.
 */
import { PagePool, type KvDtype } from '../cache/page-pool.js';
import { maxKept, PUNCT, SPECIAL, type HeadPolicy } from '../cache/head-policy.js';
import { assignedHeads } from '../cache/policies/assigned.js';
import { resolveCacheOptions, cacheLabel, type ResolvedCacheOptions } from '../cache/policies/index.js';
import { SequenceKv } from '../cache/sequence-kv.js';
import { FastgenError } from '../errors.js';
import { formatBytes, table } from '../format.js';
import type { WebGpuBackend } from '../backend/webgpu/backend.js';
import type { WeightKind } from '../backend/webgpu/wgsl.js';
import { mulberry32 } from '../generate/rng.js';
import type { ModelConfig } from '../model/types.js';
import { parameterCountOf } from '../model/describe.js';
import { admits, newPages, projectedPages, reservedTokensPerHead } from '../server/scheduler.js';
import { UsageError } from './args.js';

// ---------------------------------------------------------------------------------------------------------------
// Policy mixes

export interface PolicyMix {
  /** As given (or the default's name). */
  spec: string;
  /** Where the proportions come from, for the report. */
  source: string;
  shares: { policy: HeadPolicy; share: number }[];
}

/**
 * The mix FastGen (lattice, T = 0.95) chose for stories15M's 36 heads on the first 256 tokens of
 * ../shared/data/tinystories_sample.txt (`fastgen profile --truncate`, 2026-12-02): counts per policy.
 */
const PROFILE_STORIES15M: [string, number][] = [
  ['full', 3], ['special+local@0.1', 1], ['special+local@0.2', 5], ['special+local@0.3', 3],
  ['special+frequent@0.05+local@0.1', 1], ['special+frequent@0.05+local@0.2', 1], ['special+frequent@0.05+local@0.3', 2],
  ['special+frequent@0.1+local@0.2', 2], ['special+frequent@0.1+local@0.3', 3], ['special+frequent@0.2+local@0.1', 1],
  ['special+frequent@0.2+local@0.3', 3], ['special+frequent@0.3+local@0.3', 3], ['special+punct+frequent@0.1+local@0.3', 2],
  ['special+punct+frequent@0.2+local@0.3', 1], ['special+punct+frequent@0.3+local@0.3', 5],
];
export const DEFAULT_MIX_NAME = 'stories15m-t0.95';

/**
 * A FastGen head policy from its display name: parts joined by '+', each `special`, `punct`, `frequent@r` (heavy
 * hitters, r of the current length), `local@r` (window, r of the current length, as the lattice's), `sink@n`; or `full`.
 */
export function parseHeadPolicy(name: string, flag = '--policy-mix'): HeadPolicy {
  if (name === 'full') return { name, full: true };
  let p: { classes?: number; heavy?: HeadPolicy['heavy']; window?: HeadPolicy['window']; sinks?: number } = {};
  for (const part of name.split('+')) {
    const [kind, arg] = part.split('@');
    const num = arg === undefined ? NaN : Number(arg);
    const ratio = () => {
      if (!(num > 0 && num <= 1)) throw new UsageError(`${flag}: '${part}' needs a ratio in (0, 1], e.g. ${kind}@0.3`, flag);
      return { ratio: num };
    };
    if (kind === 'special' && arg === undefined) p = { ...p, classes: (p.classes ?? 0) | SPECIAL };
    else if (kind === 'punct' && arg === undefined) p = { ...p, classes: (p.classes ?? 0) | PUNCT };
    else if (kind === 'frequent') p = { ...p, heavy: ratio() };
    else if (kind === 'local') p = { ...p, window: ratio() };
    else if (kind === 'sink' && Number.isInteger(num) && num > 0) p = { ...p, sinks: num };
    else throw new UsageError(`${flag}: cannot read the head policy '${part}' in '${name}'; parts are special, punct, frequent@r, local@r, sink@n, or full`, flag);
  }
  return { name, ...p };
}

/** `--policy-mix`: the default's name, or `policy=share,…` (shares are normalised; a policy name as parseHeadPolicy reads). */
export function parsePolicyMix(spec: string | undefined): PolicyMix {
  const flag = '--policy-mix';
  if (spec === undefined || spec === DEFAULT_MIX_NAME) {
    const total = PROFILE_STORIES15M.reduce((s, [, n]) => s + n, 0);
    return {
      spec: DEFAULT_MIX_NAME,
      source: 'FastGen lattice T=0.95 on stories15M (36 heads, a 256-token TinyStories prompt): the proportions a real profile chose',
      shares: PROFILE_STORIES15M.map(([n, c]) => ({ policy: parseHeadPolicy(n, flag), share: c / total })),
    };
  }
  const shares = spec.split(',').filter(Boolean).map((item) => {
    const at = item.lastIndexOf('=');
    if (at < 0) throw new UsageError(`${flag}: '${item}' is not policy=share (e.g. full=0.5,local@0.3=0.5), and '${spec}' is not the built-in '${DEFAULT_MIX_NAME}'`, flag);
    const share = Number(item.slice(at + 1));
    if (!(share > 0 && Number.isFinite(share))) throw new UsageError(`${flag}: the share of '${item.slice(0, at)}' must be a positive number, got '${item.slice(at + 1)}'`, flag);
    return { policy: parseHeadPolicy(item.slice(0, at), flag), share };
  });
  if (shares.length === 0) throw new UsageError(`${flag}: no policy in '${spec}'`, flag);
  const total = shares.reduce((s, x) => s + x.share, 0);
  return { spec, source: 'given on the command line', shares: shares.map((x) => ({ ...x, share: x.share / total })) };
}

/**
 * Every (layer, KV head) of a model gets a policy of the mix: counts by largest remainder, placed in a seeded shuffle
 * (so policies spread over layers). Index layer · nKvHeads + kvHead.
 */
export function assignMix(mix: PolicyMix, nLayers: number, nKvHeads: number, seed = 1): HeadPolicy[] {
  const heads = nLayers * nKvHeads;
  const exact = mix.shares.map((s) => s.share * heads);
  const counts = exact.map(Math.floor);
  const order = exact.map((x, i) => [x - Math.floor(x), i] as const).sort((a, b) => b[0] - a[0]);
  for (let k = 0; counts.reduce((a, b) => a + b, 0) < heads; k++) counts[order[k % order.length][1]]++;
  const out: HeadPolicy[] = [];
  counts.forEach((n, i) => { for (let j = 0; j < n; j++) out.push(mix.shares[i].policy); });
  const r = mulberry32(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// The runs

export interface GpuTestSpec {
  kind: 'pp' | 'tg';
  n: number;
  depth: number;
  batch: number;
  label: string;
}

/** Where a step's GPU time went (one step timed dispatch by dispatch), in ms. */
export interface StepSplit {
  /** Matrix × vector / matrix products and the embedding: reading weights. */
  weightsMs: number;
  /** Cache writes and attention (chunks and their combination). */
  attentionMs: number;
  /** The cache policy: score accumulation, eviction, compaction. */
  policyMs: number;
  /** Norms, RoPE, SwiGLU, sampling, the rest. */
  otherMs: number;
  dispatches: number;
}

export interface GpuBenchRow {
  model: string;
  params: number;
  backend: 'webgpu';
  adapter: string;
  dtype: WeightKind;
  cache: string;
  test: string;
  batch: number;
  depth: number;
  tokensPerSecond: number;
  stddev: number;
  samples: number[];
  /** Median decode step (tg) or the prefill pass (pp), ms, over every measured round. */
  stepMs: number;
  weightBytes: number;
  /** K/V bytes each sequence keeps at the end (exact, from the pool's accounting), and the pages it holds. */
  kvBytesPerRow: number;
  kvPageBytesPerRow: number;
  /** GPU memory of the cache arena after the row (pages allocated ahead of use, tables, slot metadata). */
  kvGpuBytes: number;
  /** Averages over the measured steps: CPU until submit, waiting for the GPU and the readback. */
  cpuEncodeMs: number;
  /** Of cpuEncodeMs: before the first dispatch is recorded (slots, page tables, KV growth, bookkeeping). */
  cpuPrepareMs?: number;
  gpuWaitMs: number;
  /** CPU time after the readback: replaying the GPU's evictions on the per-slot metadata. */
  cpuAfterMs: number;
  split?: StepSplit;
  /** Why the row could not run (e.g. its KV cache does not fit the GPU): then it has no samples. */
  error?: string;
  /** The memory-budget run: sequences offered, admitted by the admission rule, and what they held. */
  budget?: { budgetBytes: number; offered: number; admitted: number; reservedPages: number; peakPages: number; budgetPages: number; prior: number; error?: string };
}

export interface GpuBenchOptions {
  shapes: string[];
  configs: Record<string, ModelConfig>;
  dtypes: WeightKind[];
  /** 'full', 'fastgen' (the mix) or a uniform registry policy. */
  caches: string[];
  tests: GpuTestSpec[];
  reps: number;
  mix: PolicyMix;
  kvBudgetBytes?: number;
  /** Tests of the memory-budget run (default: the tg tests with a depth). */
  budgetTests?: GpuTestSpec[];
  context?: number;
  /** Element type of every pool's K/V (default f32). */
  kvDtype?: KvDtype;
  log: (line: string) => void;
  create: (config: ModelConfig, dtype: WeightKind) => Promise<WebGpuBackend>;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
function meanSd(xs: number[]): [number, number] {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return [mean, xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / (xs.length - 1)) : 0];
}

export function splitOf(dispatches: { key: string; ns: number }[]): StepSplit {
  const s: StepSplit = { weightsMs: 0, attentionMs: 0, policyMs: 0, otherMs: 0, dispatches: dispatches.length };
  for (const d of dispatches) {
    const ms = d.ns / 1e6;
    if (/^(matvec|matmul|embed)/.test(d.key)) s.weightsMs += ms;
    else if (/^(kvwrite|attention|attncombine)/.test(d.key)) s.attentionMs += ms;
    else if (/^(attnstats|evict|moves|setscores)/.test(d.key)) s.policyMs += ms;
    else s.otherMs += ms;
  }
  return s;
}

/** One (model, dtype) under test: its backend and the pool its runs share. */
interface Loaded {
  backend: WebGpuBackend;
  config: ModelConfig;
  pool: PagePool;
  dtype: WeightKind;
}

class Runner {
  constructor(private readonly o: GpuBenchOptions) {}

  sequence(m: Loaded, pool: PagePool, cache: string, heads: HeadPolicy[] | undefined): SequenceKv {
    const c = m.config;
    const shape = { nLayers: c.nLayers, nHeads: c.nHeads, nKvHeads: c.nKvHeads, headDim: c.headDim };
    const none = new Uint8Array(c.vocabSize);
    const classes = { special: none, punct: none };
    if (cache === 'fastgen') return new SequenceKv(pool, shape, this.cacheOptions(cache), classes, assignedHeads(shape, (l, h) => heads![l * c.nKvHeads + h]));
    return new SequenceKv(pool, shape, this.cacheOptions(cache), classes);
  }

  cacheOptions(cache: string): ResolvedCacheOptions {
    return resolveCacheOptions({ policy: cache as 'full' });
  }

  label(cache: string): string {
    const kv = this.o.kvDtype === 'f16' ? ' (f16 KV)' : '';
    return (cache === 'fastgen' ? `fastgen mix ${this.o.mix.spec}` : cacheLabel(this.cacheOptions(cache))) + kv;
  }

  /** Start every sequence: fill its context (depth), or a one-token prompt. Returns each one's next token. */
  async start(m: Loaded, kvs: SequenceKv[], depth: number, seed: number): Promise<number[]> {
    if (depth > 0) {
      await m.backend.fillContext(kvs.map((kv) => ({ kv, depth })), seed);
      return kvs.map((_, i) => 3 + ((seed + i) % (m.config.vocabSize - 3)));
    }
    return m.backend.forwardGreedy(kvs.map((kv) => ({ kv, tokens: [m.config.bosTokenId ?? 1] })));
  }

  /** One repetition: tokens per second, the step times, and (when asked) one more step timed per dispatch. */
  async once(m: Loaded, t: GpuTestSpec, cache: string, heads: HeadPolicy[] | undefined, rep: number, profile: boolean) {
    const b = m.backend;
    const kvs = Array.from({ length: t.batch }, () => this.sequence(m, m.pool, cache, heads));
    const times: number[] = [];
    let encode = 0;
    let prepare = 0;
    let wait = 0;
    let after = 0;
    let split: StepSplit | undefined;
    try {
      let tps: number;
      if (t.kind === 'pp') {
        if (t.depth > 0) await b.fillContext(kvs.map((kv) => ({ kv, depth: t.depth })), rep + 1);
        const prompt = Array.from({ length: t.n }, (_, i) => 3 + ((i * 7919 + rep) % (m.config.vocabSize - 3)));
        const t0 = performance.now();
        await b.forwardGreedy(kvs.map((kv) => ({ kv, tokens: prompt })));
        times.push(performance.now() - t0);
        encode = b.lastPass.encodeMs;
        prepare = b.lastPass.prepareMs;
        wait = b.lastPass.waitMs;
        tps = (t.n * t.batch * 1000) / times[0];
      } else {
        let next = await this.start(m, kvs, t.depth, rep + 1);
        const steps = profile ? t.n - 1 : t.n;
        for (let s = 0; s < steps; s++) {
          const t0 = performance.now();
          next = await b.forwardGreedy(kvs.map((kv, i) => ({ kv, tokens: [next[i]] })));
          times.push(performance.now() - t0);
          encode += b.lastPass.encodeMs / steps;
          prepare += b.lastPass.prepareMs / steps;
          wait += b.lastPass.waitMs / steps;
          after += b.lastPass.afterMs / steps;
        }
        if (profile) {
          const r = await b.timedPass(() => b.forwardGreedy(kvs.map((kv, i) => ({ kv, tokens: [next[i]] }))));
          if (r.dispatches) split = splitOf(r.dispatches);
        }
        tps = (t.batch * times.length * 1000) / times.reduce((a, x) => a + x, 0);
      }
      const kvBytes = kvs.reduce((s, kv) => s + kv.kvBytes(), 0) / t.batch;
      const pageBytes = kvs.reduce((s, kv) => s + kv.stores.reduce((n, st) => n + st.pages.length, 0), 0) * m.pool.pageBytes / t.batch;
      return { tps, times, encode, prepare, wait, after, split, kvBytes, pageBytes };
    } finally {
      for (const kv of kvs) kv.release();
    }
  }

  /**
   * The memory-budget run of one tg test: sequences of depth + n tokens are offered one by one and admitted by the
   * server's rule (scheduler.ts: reservedTokensPerHead before a request starts, projectedPages after, admits()),
   * each admitted one filled at once (its prompt), then all admitted decode n steps together in a pool with that
   * budget (which refuses any page beyond it).
   */
  async budgetRun(m: Loaded, t: GpuTestSpec, cache: string, heads: HeadPolicy[] | undefined, budgetBytes: number) {
    const c = m.config;
    const pool = new PagePool({ headDim: c.headDim, kvDtype: this.o.kvDtype, arena: m.backend.createArena(), budgetBytes });
    const pt = pool.pageTokens;
    const nHeads = c.nLayers * c.nKvHeads;
    const budgetPages = Math.floor(budgetBytes / pool.pageBytes);
    const final = t.depth + t.n;
    const opts = cache === 'fastgen' ? resolveCacheOptions({ policy: 'fastgen' }) : this.cacheOptions(cache);
    // FastGen's reservation before a request starts is the kept share the server learned from finished requests:
    // here, what the mix keeps of a sequence of the final length (one calibration fill, released).
    let prior = 1;
    if (cache === 'fastgen') {
      const probe = this.sequence(m, new PagePool({ headDim: c.headDim, kvDtype: this.o.kvDtype, arena: m.backend.createArena() }), cache, heads);
      for (let l = 0; l < c.nLayers; l++) {
        probe.reserveLayer(l, final, 0, new Array(final).fill(3));
        probe.policy.afterAttention(probe, { layer: l, n: final, startPos: 0 });
      }
      prior = probe.stores.reduce((s, st) => s + st.length, 0) / (nHeads * final);
      probe.release();
    }
    const kvs: SequenceKv[] = [];
    let reserved = 0;
    let peak = 0;
    let error: string | undefined;
    let tps = 0;
    const times: number[] = [];
    try {
      for (let j = 0; j < t.batch; j++) {
        let growth = 0;
        let stepNeeds = 0;
        for (const kv of kvs) {
          const held = kv.stores.reduce((n, st) => n + st.pages.length, 0);
          growth += Math.max(0, projectedPages(kv, final, pt) - held);
          stepNeeds += newPages(kv, 1, pt);
        }
        const need = nHeads * Math.ceil(reservedTokensPerHead(opts, t.depth, final, prior) / pt);
        const prefill = nHeads * Math.ceil(t.depth / pt);
        if (!admits({ need, growth, prefill, stepNeeds, free: budgetPages - pool.pagesInUse })) break;
        const kv = this.sequence(m, pool, cache, heads);
        kvs.push(kv);
        await m.backend.fillContext([{ kv, depth: t.depth }], j + 1);
        reserved += need;
      }
      peak = pool.pagesInUse;
      if (kvs.length > 0) {
        let next = kvs.map((_, i) => 3 + i);
        for (let s = 0; s < t.n; s++) {
          const t0 = performance.now();
          next = await m.backend.forwardGreedy(kvs.map((kv, i) => ({ kv, tokens: [next[i]] })));
          times.push(performance.now() - t0);
          peak = Math.max(peak, pool.pagesInUse);
        }
        tps = (kvs.length * times.length * 1000) / times.reduce((a, x) => a + x, 0);
      }
    } catch (e) {
      if (!(e instanceof FastgenError) || e.code !== 'KV_POOL_EXHAUSTED') throw e;
      error = `${e.message} (after ${times.length} of ${t.n} steps)`;
    } finally {
      for (const kv of kvs) kv.release();
      m.backend.destroyArena(pool.arena);
    }
    return { tps, times, admitted: kvs.length, reserved, peak, budgetPages, prior, error };
  }
}

/** Run every (shape, dtype, cache, test) in round-robin repetitions; memory-budget rows after them. */
export async function runGpuBench(o: GpuBenchOptions): Promise<{ rows: GpuBenchRow[]; notes: string[] }> {
  const runner = new Runner(o);
  const rows: GpuBenchRow[] = [];
  const notes: string[] = [];
  if (o.tests.some((t) => t.depth > 0)) {
    notes.push('@ dD: the context is filled into the cache (pseudo-random K/V through the same pool and page tables, bytes counted exactly), not prefilled');
  }
  if (o.caches.includes('fastgen')) {
    const kept = o.mix.shares.map((s) => `${s.policy.name} ${(s.share * 100).toFixed(1)}%`).join(', ');
    notes.push(`fastgen rows: random weights have no attention pattern to profile, so heads get policies from the mix '${o.mix.spec}' (${o.mix.source}): ${kept}; windows and heavy-hitter shares follow the current length; the synthetic vocabulary has no special or punctuation tokens`);
  }
  for (const shape of o.shapes) {
    const base = o.configs[shape];
    const config: ModelConfig = o.context ? { ...base, maxSeqLen: o.context } : base;
    for (const dtype of o.dtypes) {
      o.log(`loading ${shape} ${dtype} (random weights on the GPU)…`);
      const backend = await o.create(config, dtype);
      const m: Loaded = { backend, config, dtype, pool: new PagePool({ headDim: config.headDim, kvDtype: o.kvDtype, arena: backend.createArena() }) };
      const heads = assignMix(o.mix, config.nLayers, config.nKvHeads);
      const cases = o.caches.flatMap((cache) => o.tests.map((t) => ({ cache, t, samples: [] as number[], times: [] as number[], encode: [] as number[], prepare: [] as number[], wait: [] as number[], after: [] as number[], split: undefined as StepSplit | undefined, kvBytes: 0, pageBytes: 0, error: undefined as string | undefined })));
      for (const cs of cases) {
        if (cs.t.depth + cs.t.n + (cs.t.kind === 'tg' ? 1 : 0) > config.maxSeqLen) {
          throw new FastgenError('INVALID_OPTION', `--tests: '${cs.t.label}' does not fit ${config.name}'s ${config.maxSeqLen}-token context; raise --context`, '--tests');
        }
      }
      for (let r = 0; r <= o.reps; r++) {
        for (let j = 0; j < cases.length; j++) {
          const cs = cases[(j + r) % cases.length];
          if (cs.error) continue;
          // Round 0 warms up (pipelines, arena growth) and times one step dispatch by dispatch for the split.
          let res: Awaited<ReturnType<Runner['once']>>;
          try {
            res = await runner.once(m, cs.t, cs.cache, heads, r, r === 0 && cs.t.kind === 'tg');
          } catch (e) {
            // A row whose cache does not fit is a result (full vs FastGen at depth), not the end of the run.
            if (!(e instanceof FastgenError) || !['GPU_OUT_OF_MEMORY', 'KV_POOL_EXHAUSTED'].includes(e.code)) throw e;
            cs.error = e.message;
            // The pool created page ids for the failed row; a fresh pool (and arena) lets later rows size their own.
            backend.destroyArena(m.pool.arena);
            m.pool = new PagePool({ headDim: config.headDim, kvDtype: o.kvDtype, arena: backend.createArena() });
            o.log(`  ${runner.label(cs.cache)} ${cs.t.label}: ${e.message}`);
            continue;
          }
          if (r === 0) { cs.split = res.split; continue; }
          cs.samples.push(res.tps);
          cs.times.push(...res.times);
          cs.encode.push(res.encode);
          cs.prepare.push(res.prepare);
          cs.wait.push(res.wait);
          cs.after.push(res.after);
          cs.kvBytes = res.kvBytes;
          cs.pageBytes = res.pageBytes;
        }
        o.log(`  ${shape} ${dtype}: round ${r === 0 ? 'warm-up' : `${r}/${o.reps}`} done`);
      }
      const common = { model: config.name, params: parameterCountOf(config), backend: 'webgpu' as const, adapter: backend.adapterName, dtype, weightBytes: backend.weightBytes };
      for (const cs of cases) {
        if (cs.error) {
          rows.push({
            ...common, cache: runner.label(cs.cache), test: cs.t.label, batch: cs.t.batch, depth: cs.t.depth, tokensPerSecond: 0, stddev: 0, samples: [],
            stepMs: 0, kvBytesPerRow: 0, kvPageBytesPerRow: 0, kvGpuBytes: backend.arenaBytes(m.pool.arena), cpuEncodeMs: 0, gpuWaitMs: 0, cpuAfterMs: 0, error: cs.error,
          });
          continue;
        }
        const [mean, sd] = meanSd(cs.samples);
        rows.push({
          ...common, cache: runner.label(cs.cache), test: cs.t.label, batch: cs.t.batch, depth: cs.t.depth, tokensPerSecond: mean, stddev: sd,
          samples: cs.samples, stepMs: median(cs.times), kvBytesPerRow: cs.kvBytes, kvPageBytesPerRow: cs.pageBytes,
          kvGpuBytes: backend.arenaBytes(m.pool.arena), cpuEncodeMs: median(cs.encode), cpuPrepareMs: median(cs.prepare), gpuWaitMs: median(cs.wait), cpuAfterMs: median(cs.after), split: cs.split,
        });
      }
      if (o.kvBudgetBytes !== undefined) {
        for (const t of (o.budgetTests ?? o.tests).filter((x) => x.kind === 'tg' && x.depth > 0)) {
          for (const cache of o.caches) {
            o.log(`  budget ${formatBytes(o.kvBudgetBytes)}: ${runner.label(cache)} ${t.label}…`);
            const r = await runner.budgetRun(m, t, cache, heads, o.kvBudgetBytes);
            rows.push({
              ...common, cache: runner.label(cache), test: `${t.label} in ${formatBytes(o.kvBudgetBytes)}`, batch: r.admitted, depth: t.depth,
              tokensPerSecond: r.tps, stddev: 0, samples: [r.tps], stepMs: r.times.length ? median(r.times) : 0, kvBytesPerRow: 0, kvPageBytesPerRow: 0,
              kvGpuBytes: 0, cpuEncodeMs: 0, gpuWaitMs: 0, cpuAfterMs: 0,
              budget: { budgetBytes: o.kvBudgetBytes, offered: t.batch, admitted: r.admitted, reservedPages: r.reserved, peakPages: r.peak, budgetPages: r.budgetPages, prior: r.prior, error: r.error },
            });
          }
        }
      }
    }
  }
  if (o.kvBudgetBytes !== undefined) {
    if (!(o.budgetTests ?? o.tests).some((x) => x.kind === 'tg' && x.depth > 0)) notes.push('--kv-budget: no tg test with a depth (tgN@dD xB), so no budget run');
    notes.push('budget rows: sequences offered one by one (x = how many), admitted by the server\'s rule (src/server/scheduler.ts: reservedTokensPerHead, projectedPages, admits), filled, then decoded together in a pool of that budget; FastGen\'s reservation before a request starts uses the kept share the server would have learned (here measured on one filled sequence of the final length)');
  }
  return { rows, notes };
}

const ms = (x: number) => x.toFixed(2);

export function formatGpuRows(rows: GpuBenchRow[], notes: string[]): string {
  const main = rows.filter((r) => !r.budget);
  const out = [table(
    ['model', 'params', 'dtype', 'cache', 'test', 't/s', 'ms/step', 'weights', 'KV/row', 'GPU: weights / attn / policy / other ms', 'CPU encode (prepare) / wait / after ms'],
    main.map((r) => r.error ? [r.model, `${(r.params / 1e9).toFixed(2)} B`, r.dtype, r.cache, r.test, `did not run: ${r.error.slice(0, 90)}`, '', '', '', '', ''] : [
      r.model, `${(r.params / 1e9).toFixed(2)} B`, r.dtype, r.cache, r.test, `${r.tokensPerSecond.toFixed(1)} ± ${r.stddev.toFixed(1)}`, ms(r.stepMs),
      formatBytes(r.weightBytes), formatBytes(r.kvBytesPerRow),
      r.split ? `${ms(r.split.weightsMs)} / ${ms(r.split.attentionMs)} / ${ms(r.split.policyMs)} / ${ms(r.split.otherMs)} (${r.split.dispatches})` : '—',
      `${ms(r.cpuEncodeMs)} (${ms(r.cpuPrepareMs ?? 0)}) / ${ms(r.gpuWaitMs)} / ${ms(r.cpuAfterMs)}`,
    ]),
    ['l', 'r', 'l', 'l', 'l', 'r', 'r', 'r', 'r', 'r', 'r'],
  )];
  const budget = rows.filter((r) => r.budget);
  if (budget.length > 0) {
    out.push('', table(
      ['model', 'dtype', 'cache', 'test', 'offered', 'admitted', 'pages reserved / used / budget', 't/s'],
      budget.map((r) => [r.model, r.dtype, r.cache, r.test, r.budget!.offered, r.budget!.admitted,
        `${r.budget!.reservedPages} / ${r.budget!.peakPages} / ${r.budget!.budgetPages}`, r.budget!.error ? `failed: ${r.budget!.error}` : r.tokensPerSecond.toFixed(1)]),
      ['l', 'l', 'l', 'l', 'r', 'r', 'r', 'r'],
    ));
  }
  for (const n of notes) out.push(`note: ${n}`);
  return out.join('\n');
}
