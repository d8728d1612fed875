/** Metrics of `fastgen eval` on hand-computed examples, plus the report plumbing that needs no model. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkInvariants, controlSummary, summarize } from '../src/eval/aggregate.js';
import {
  judge,
  klDivergence,
  lcsLength,
  logProbOf,
  logSoftmax,
  matchedPrefix,
  perplexity,
  quantile,
  rougeL,
  wilsonInterval,
  winRate,
} from '../src/eval/metrics.js';
import { mergeSection, mergeSummary } from '../src/eval/report.js';
import { configSpecs } from '../src/eval/runner.js';
import type { ConfigResult, EvalSettings, PromptResult } from '../src/eval/types.js';

const close = (a: number, b: number, eps = 1e-9) => assert.ok(Math.abs(a - b) <= eps, `${a} ≉ ${b}`);

test('logSoftmax normalises and matches logProbOf', () => {
  const logits = [1, 2, 3, -1];
  const lp = logSoftmax(logits);
  close(lp.reduce((a, x) => a + Math.exp(x), 0), 1);
  // log p(2) = 3 − log(e + e² + e³ + e⁻¹)
  close(lp[2], 3 - Math.log(Math.E + Math.E ** 2 + Math.E ** 3 + Math.E ** -1));
  for (let i = 0; i < 4; i++) close(logProbOf(logits, i), lp[i]);
  // Shift invariance and no overflow on large logits.
  const big = logSoftmax([1001, 1002, 1003, 999]);
  for (let i = 0; i < 4; i++) close(big[i], lp[i], 1e-12);
});

test('KL(P ‖ Q) on a hand example, zero for identical, infinite where Q misses P', () => {
  const P = [Math.log(0.5), Math.log(0.5)];
  const Q = [Math.log(0.9), Math.log(0.1)];
  // 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1) = 0.5108256...
  close(klDivergence(P, Q), 0.5 * Math.log(0.5 / 0.9) + 0.5 * Math.log(5));
  close(klDivergence(P, Q), 0.5108256237659907, 1e-12);
  assert.equal(klDivergence(P, P), 0);
  // Not symmetric.
  assert.ok(Math.abs(klDivergence(Q, P) - klDivergence(P, Q)) > 0.01);
  // Terms with p = 0 contribute nothing; q = 0 under p > 0 is infinite.
  assert.equal(klDivergence([0, -Infinity], [0, Math.log(0.5)]), 0);
  assert.equal(klDivergence([Math.log(0.5), Math.log(0.5)], [0, -Infinity]), Infinity);
  assert.throws(() => klDivergence([0], [0, 0]), RangeError);
});

test('perplexity = exp(mean NLL)', () => {
  close(perplexity([Math.log(2), Math.log(8)]), 4);
  // A uniform model over V tokens has perplexity V.
  const V = 32000;
  close(perplexity(Array(10).fill(Math.log(V))), V, 1e-6);
  assert.equal(perplexity([]), 1);
});

test('matched prefix, LCS and ROUGE-L on hand examples', () => {
  assert.equal(matchedPrefix([1, 2, 3, 4], [1, 2, 9, 4]), 2);
  assert.equal(matchedPrefix([1, 2], [1, 2, 3]), 2);
  assert.equal(matchedPrefix([], [1]), 0);
  assert.equal(lcsLength([1, 2, 3, 4, 5], [1, 3, 5, 6]), 3);
  assert.equal(lcsLength([7, 8], [8, 7]), 1);
  const r = rougeL([1, 2, 3, 4, 5], [1, 3, 5, 6]);
  close(r.precision, 3 / 4);
  close(r.recall, 3 / 5);
  close(r.f1, (2 * 0.75 * 0.6) / 1.35);
  assert.deepEqual(rougeL([1, 2], [1, 2]), { precision: 1, recall: 1, f1: 1 });
  assert.deepEqual(rougeL([], []), { precision: 1, recall: 1, f1: 1 });
  assert.equal(rougeL([1, 2], []).f1, 0);
  assert.equal(rougeL([1, 2], [3, 4]).f1, 0);
});

test('likelihood judge: identical outputs tie whatever the scores; otherwise the higher mean log-prob wins', () => {
  assert.equal(judge({ tokens: [1, 2], score: -1 }, { tokens: [1, 2], score: -3 }), 'tie');
  assert.equal(judge({ tokens: [1, 2], score: -1 }, { tokens: [1, 3], score: -3 }), 'win');
  assert.equal(judge({ tokens: [1, 2], score: -4 }, { tokens: [1, 3], score: -3 }), 'loss');
  assert.equal(judge({ tokens: [1, 2], score: -3 }, { tokens: [1, 3], score: -3 }), 'tie');
  assert.equal(judge({ tokens: [1], score: -3 }, { tokens: [1, 2], score: -3 }), 'tie');
  assert.equal(judge({ tokens: [1], score: -2 }, { tokens: [1, 2], score: -3 }), 'win');
});

test('win rate counts ties as half, with a Wilson interval', () => {
  const w = winRate(['win', 'tie', 'loss', 'loss']);
  assert.deepEqual([w.wins, w.ties, w.losses, w.n], [1, 1, 2, 4]);
  close(w.rate, 1.5 / 4);
  assert.ok(w.lo95 < w.rate && w.rate < w.hi95);
  assert.equal(winRate(['tie', 'tie']).rate, 0.5);
  assert.ok(Number.isNaN(winRate([]).rate));
  // All wins over 2 pairs is still compatible with 50 % at 99 %; over 20 it is not.
  const [lo2] = wilsonInterval(1, 2, 2.576);
  assert.ok(lo2 < 0.5);
  const [lo20] = wilsonInterval(1, 20, 2.576);
  assert.ok(lo20 > 0.5);
  // Symmetric around one half.
  const [a, b] = wilsonInterval(0.3, 10, 1.96);
  const [c, d] = wilsonInterval(0.7, 10, 1.96);
  close(a, 1 - d, 1e-12);
  close(b, 1 - c, 1e-12);
  close(quantile([5, 1, 3], 0.5), 3);
  close(quantile([0, 10], 0.1), 1);
});

// ---- aggregation and invariants on synthetic results ----------------------------------------------------------

const settings: EvalSettings = {
  thresholds: [1, 0.95, 0.9],
  baselines: ['local'],
  paper: false,
  fastgen: {},
  ablation: false,
  ablationT: 0.98,
  gqaMin: false,
  maxTokens: 4,
  seed: 1,
  controlPairs: 2,
  samples: 1,
  temperature: 0.6,
  topP: 0.9,
};

function cfg(key: string, pruned: number, outcome: 'win' | 'tie' | 'loss', kl = pruned / 10): ConfigResult {
  const full = 1000;
  return {
    key,
    tf: { kvBytes: full * (1 - pruned), fullKvBytes: full, pruned, nllSum: 4 + kl, tokens: 4, klSum: kl * 4, klMax: kl },
    greedy: { tokens: 4, prefix: pruned === 0 ? 4 : 2, rougeL: pruned === 0 ? 1 : 0.5, identical: pruned === 0 },
    sample: { tokens: 4, eos: false, scores: [-1], outcomes: [outcome], pruned, prefillMs: 10, decodeMs: 30, profileMs: 1 },
    recovery: { achieved: [1 - pruned / 10, 1], promised: [1, 1] },
    policies: [['special', 'full']],
  };
}

function prompt(configs: ConfigResult[], control: ('win' | 'tie' | 'loss')[]): PromptResult {
  return {
    prompt: { id: 'p', category: 'story', source: 's', preview: '', promptTokens: 8, referenceTokens: 4 },
    full: { nllSum: 4, tokens: 4, greedyTokens: 4, samples: [{ tokens: 4, eos: false, score: -1 }], control: control.map((outcome) => ({ score: -1, tokens: 4, outcome })) },
    configs,
    ms: 1,
  };
}

test('summaries pool prompts; invariants pass on consistent results and catch violations', () => {
  const specs = configSpecs(settings, 6, 6);
  assert.deepEqual(
    specs.map((s) => s.key),
    ['fastgen@1', 'fastgen@0.95', 'local@0.95', 'fastgen@0.9', 'local@0.9'],
  );
  const ok = (p1: number) => [
    prompt([cfg('fastgen@1', 0, 'tie', 0), cfg('fastgen@0.95', p1, 'loss'), cfg('local@0.95', p1, 'loss'), cfg('fastgen@0.9', 0.5, 'win'), cfg('local@0.9', 0.5, 'loss')], ['win', 'loss']),
    prompt([cfg('fastgen@1', 0, 'tie', 0), cfg('fastgen@0.95', 0.3, 'tie'), cfg('local@0.95', 0.3, 'loss'), cfg('fastgen@0.9', 0.5, 'loss'), cfg('local@0.9', 0.5, 'loss')], ['tie', 'loss']),
  ];
  const prompts = ok(0.2);
  const points = summarize(specs, prompts);
  const f95 = points.find((p) => p.key === 'fastgen@0.95')!;
  close(f95.pruned, 0.25);
  close(f95.win.rate, 0.25); // loss + tie
  close(f95.kl, (0.02 * 4 + 0.03 * 4) / 8);
  assert.equal(f95.policyShareByLayer?.[0].special, 0.5);
  close(f95.profileShare!, 2 / 80);
  const control = controlSummary(prompts);
  close(control.rate, (1 + 0.5) / 4);
  const inv = checkInvariants(specs, points, prompts, control);
  assert.deepEqual(
    inv.map((i) => [i.name, i.ok]),
    [
      ['T = 1 prunes nothing', true],
      ['T = 1 matches the full cache exactly', true],
      ['pruning never decreases as T falls', true],
      ['full-vs-full control lands near 50 %', true],
    ],
  );
  // Pruning that shrinks as T falls is caught.
  const bad = ok(0.9);
  const inv2 = checkInvariants(specs, summarize(specs, bad), bad, control);
  assert.equal(inv2.find((i) => i.name.startsWith('pruning'))!.ok, false);
  // A T = 1 run that differs from full is caught.
  const diff = ok(0.2);
  diff[0].configs[0].tf.klSum = 1e-9;
  assert.equal(checkInvariants(specs, summarize(specs, diff), diff, control).find((i) => i.name.includes('exactly'))!.ok, false);
  // A biased control is caught.
  const biased = { ...control, lo99: 0.6, hi99: 0.9 };
  assert.equal(checkInvariants(specs, points, prompts, biased).find((i) => i.name.includes('control'))!.ok, false);
});

test('results.md sections are replaced in place, others kept', () => {
  const doc = '# Results\n\nintro\n\n<!-- eval:A:begin x -->\nold A\n<!-- eval:A:end -->\n\nmiddle\n';
  const withB = mergeSection(doc, 'B', '<!-- eval:B:begin -->\nB\n<!-- eval:B:end -->');
  assert.match(withB, /old A[\s\S]*middle[\s\S]*\nB\n/);
  const newA = mergeSection(withB, 'A', '<!-- eval:A:begin -->\nnew A\n<!-- eval:A:end -->');
  assert.ok(!newA.includes('old A'));
  assert.ok(newA.includes('new A') && newA.includes('intro') && newA.includes('middle') && newA.includes('\nB\n'));
  assert.ok(newA.indexOf('new A') < newA.indexOf('middle'));
});

test('the cross-model summary table keeps other models\' rows and replaces this model\'s', () => {
  let doc = '# Results\n\nintro\n\n<!-- eval:B:begin -->\nB\n<!-- eval:B:end -->\n';
  doc = mergeSummary(doc, 'B', ['| B | x | 1 |', '| B | y | 2 |']);
  assert.ok(doc.indexOf('eval:summary:begin') < doc.indexOf('eval:B:begin'), 'summary goes before the model sections');
  doc = mergeSummary(doc, 'A', ['| A | z | 3 |']);
  doc = mergeSummary(doc, 'B', ['| B | w | 4 |']);
  const rows = doc.split('\n').filter((l) => /^\| [AB] \|/.test(l));
  assert.deepEqual(rows, ['| A | z | 3 |', '| B | w | 4 |']);
  assert.equal(doc.match(/\| model \|/g)?.length, 1);
  assert.ok(doc.includes('intro') && doc.includes('\nB\n'));
});
