/**
 * KV capacity at startup, like vLLM's "# GPU blocks / Maximum concurrency" lines: how many tokens the KV budget holds
 * with a full cache and, measured on a calibration prompt, about how many with FastGen, and the concurrency each allows.
 */
import type { CacheOptions } from '../cache/policies/index.js';
import type { Model } from '../generate/model.js';
import { formatBytes } from './util.js';

/** In-domain calibration text for the stories models (any model works; it is only a typical prompt). */
export const CALIBRATION_TEXT =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine with her dog, Max. ' +
  'One day, Lily and Max went to the park. They saw a big tree with red apples. Lily wanted an apple, but the tree was ' +
  'too tall. "Max, can you help me?" she asked. Max barked and ran around the tree. Then a kind old man came by. He ' +
  'picked an apple and gave it to Lily. "Thank you!" said Lily. She shared the apple with Max, and they were very happy. ' +
  'When the sun went down, they walked home together. Lily told her mom about the kind man and the apple. Her mom ' +
  'smiled and said, "It is good to share and to be kind." Lily went to bed with a big smile on her face.';

export interface CapacityReport {
  budgetBytes: number;
  pageBytes: number;
  pageTokens: number;
  budgetPages: number;
  /** (layer, KV head) pairs: every token of a full cache takes one slot in each. */
  heads: number;
  contextLength: number;
  fullBytesPerToken: number;
  full: { tokens: number; maxConcurrency: number };
  fastgen?: {
    recovery: number;
    calibrationTokens: number;
    /** Fraction of a full cache's pages FastGen kept on the calibration prompt. */
    keptPageRatio: number;
    /** Fraction of a full cache's bytes (kept tokens) it kept. */
    keptByteRatio: number;
    headsPerPolicy: Record<string, number>;
    tokens: number;
    maxConcurrency: number;
  };
  calibrationError?: string;
}

export async function measureCapacity(model: Model, budgetBytes: number, cache: CacheOptions | undefined, calibrate = true): Promise<CapacityReport> {
  const c = model.config;
  const pool = model.pool;
  const heads = c.nLayers * c.nKvHeads;
  const budget = Math.min(budgetBytes, pool.budgetBytes);
  const budgetPages = Number.isFinite(budget) ? Math.floor(budget / pool.pageBytes) : Number.POSITIVE_INFINITY;
  const pagesPerRequest = heads * Math.ceil(c.maxSeqLen / pool.pageTokens);
  const report: CapacityReport = {
    budgetBytes: budget,
    pageBytes: pool.pageBytes,
    pageTokens: pool.pageTokens,
    budgetPages,
    heads,
    contextLength: c.maxSeqLen,
    fullBytesPerToken: heads * c.headDim * 2 * pool.elementBytes,
    full: { tokens: Math.floor(budgetPages / heads) * pool.pageTokens, maxConcurrency: budgetPages / pagesPerRequest },
  };
  if (!calibrate) return report;
  try {
    const ids = model.encode(CALIBRATION_TEXT);
    const n = Math.max(2, Math.min(ids.length, Math.floor(c.maxSeqLen / 2), 128));
    const prompt = ids.slice(0, n);
    const prof = await model.profile(prompt, { cache: { ...cache, policy: 'fastgen' } });
    let kept = 0;
    for (const layer of prof.layers) for (const h of layer) kept += Math.ceil(h.tokensKept / pool.pageTokens);
    const full = heads * Math.ceil(n / pool.pageTokens);
    const ratio = kept / full;
    report.fastgen = {
      recovery: prof.recovery,
      calibrationTokens: n,
      keptPageRatio: ratio,
      keptByteRatio: 1 - prof.prunedRatio,
      headsPerPolicy: prof.headsPerPolicy,
      tokens: Math.floor(report.full.tokens / ratio),
      maxConcurrency: report.full.maxConcurrency / ratio,
    };
  } catch (e) {
    report.calibrationError = e instanceof Error ? e.message : String(e);
  }
  return report;
}

function count(n: number, digits = 1): string {
  if (!Number.isFinite(n)) return 'unlimited';
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(digits);
}

export function formatCapacity(r: CapacityReport): string[] {
  const lines = [
    `KV cache budget: ${formatBytes(r.budgetBytes)} = ${count(r.budgetPages)} pages (${formatBytes(r.pageBytes)}: ${r.pageTokens} tokens of one ` +
      `(layer, KV head); a token needs one slot in each of the ${r.heads} pairs)`,
    `full cache: ${formatBytes(r.fullBytesPerToken)} per token → KV budget of ${count(r.full.tokens)} tokens; ` +
      `maximum concurrency for ${r.contextLength} tokens per request: ${count(r.full.maxConcurrency, 2)}x`,
  ];
  if (r.fastgen) {
    const f = r.fastgen;
    const pol = Object.entries(f.headsPerPolicy)
      .sort((a, b) => b[1] - a[1])
      .map(([p, n]) => `${p}: ${n}`)
      .join(', ');
    lines.push(
      `FastGen (recovery ${f.recovery}): on a ${f.calibrationTokens}-token calibration prompt it keeps ${(f.keptPageRatio * 100).toFixed(0)}% of the pages ` +
        `(${(f.keptByteRatio * 100).toFixed(0)}% of the bytes; heads ${pol}) → expected KV budget of ~${count(f.tokens)} tokens; ` +
        `expected maximum concurrency for ${r.contextLength} tokens per request: ~${count(f.maxConcurrency, 2)}x (${(1 / f.keptPageRatio).toFixed(2)}× full)`,
    );
  } else if (r.calibrationError) {
    lines.push(`FastGen calibration skipped: ${r.calibrationError}`);
  }
  return lines;
}
