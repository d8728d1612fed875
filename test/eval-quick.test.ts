/**
 * `fastgen eval --quick` on stories260K (grouped-query, fast on the reference backend): the invariants that must hold
 * whatever the model, the evaluator's building blocks against the engine, and the CLI's outputs.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { evalCommand } from '../src/cli/eval.js';
import { checkpointFingerprint, resolveSettings, runEvaluation } from '../src/eval/evaluate.js';
import { buildPrompts } from '../src/eval/prompts.js';
import { continueSequence } from '../src/eval/runner.js';
import { TappedSequenceKv } from '../src/eval/tapped-kv.js';
import type { EvalReport } from '../src/eval/types.js';
import { loadModel, type Model } from '../src/generate/model.js';
import { Sampler } from '../src/generate/sampler.js';

// Compiled to dist/test/: the repository root is two levels up, ../shared beside it.
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SHARED = process.env.FASTGEN_SHARED ?? join(ROOT, '..', 'shared');
const MODEL = join(SHARED, 'models', 'stories260K', 'stories260K.bin');
const DATA = join(SHARED, 'data');
const SKIP = existsSync(MODEL) && existsSync(join(DATA, 'tinystories_sample.txt')) ? false : `stories260K or eval data not found under ${SHARED}: eval tests skipped`;

// The reference backend: the evaluation's invariants are about the cache, and cpu-ref is the backend every other is
// checked against (the cache tests run the same invariants on every backend).
const BACKEND = 'cpu-ref' as const;
let modelPromise: Promise<Model> | undefined;
const model = () => (modelPromise ??= loadModel(MODEL, { backend: BACKEND }));

let quick: Promise<EvalReport> | undefined;
const quickReport = async () => (quick ??= runEvaluation({ model: await model(), modelPath: MODEL, backend: BACKEND, quick: true, jobs: 1, quiet: true, dataDir: DATA }));

for (const backend of ['cpu-ref', 'wasm'] as const) test(`${backend}: a forked FastGen cache decodes bit for bit like the original, and the tap sees the store before eviction`, { skip: SKIP }, async () => {
  const m = backend === BACKEND ? await model() : await loadModel(MODEL, { backend });
  const prompt = m.encode('Once upon a time, there was a little girl named Lily. She loved to play outside.');
  const cache = { policy: 'fastgen' as const, recovery: 0.9 };
  const a = TappedSequenceKv.create(m, cache);
  const b = m.newSequence(cache);
  try {
    const [la] = await m.backend.forward([{ kv: a, tokens: prompt, logits: 'last' }]);
    const [lb] = await m.backend.forward([{ kv: b, tokens: prompt, logits: 'last' }]);
    assert.deepEqual(la, lb);
    const f = a.fork();
    // A head whose policy evicts: the tap must see its store with the step's new token and nothing evicted yet.
    const evicting: [number, number][] = [];
    for (let l = 0; l < m.config.nLayers; l++) for (let h = 0; h < m.config.nKvHeads; h++) if (!f.headPolicy(l, h).full) evicting.push([l, h]);
    assert.ok(evicting.length > 0, 'at T = 0.9 some head compresses');
    const [L, H] = evicting[0];
    let before = -1;
    let seen = -1;
    let evictedAfterTap = 0;
    f.tap = (layer, kv) => {
      if (layer === L) seen = kv.store(L, H).length;
    };
    try {
      let tok = 1000 % m.config.vocabSize;
      for (let i = 0; i < 12; i++) {
        before = f.store(L, H).length;
        const [lf] = await m.backend.forward([{ kv: f, tokens: [tok], logits: 'last' }]);
        assert.equal(seen, before + 1, 'the tap sees the new token in the store, before the policy evicts');
        if (f.store(L, H).length < seen) evictedAfterTap++;
        const [lb2] = await m.backend.forward([{ kv: b, tokens: [tok], logits: 'last' }]);
        assert.deepEqual(lf, lb2, `step ${i}`);
        tok = new Sampler({ temperature: 0 }, m.config.vocabSize).sample(lf);
      }
      assert.ok(evictedAfterTap > 0, 'the policy evicted after the tap looked');
      assert.deepEqual(f.stats(), b.stats());
      // The original is untouched by the fork's decoding.
      assert.equal(a.seqLength, prompt.length);
    } finally {
      f.release();
    }
  } finally {
    a.release();
    b.release();
    if (backend !== BACKEND) m.dispose();
  }
});

test('the evaluator’s decoding loop reproduces model.complete (full and FastGen caches, greedy and sampled)', { skip: SKIP }, async () => {
  const m = await model();
  const ids = m.encode('Tom had a red ball. He threw it to his dog.');
  for (const cache of [{ policy: 'full' as const }, { policy: 'fastgen' as const, recovery: 0.93 }]) {
    for (const sampling of [{ temperature: 0 }, { temperature: 0.6, topP: 0.9, seed: 77 }]) {
      const ref = await m.complete(ids, { ...sampling, maxTokens: 40, cache });
      const kv = TappedSequenceKv.create(m, cache);
      try {
        const [last] = await m.backend.forward([{ kv, tokens: ids, logits: 'last' }]);
        const fork = kv.fork();
        const got = await continueSequence(m, fork, last, sampling.temperature ? sampling : null, 40);
        assert.deepEqual(got.tokens, ref.tokens, `${cache.policy} ${JSON.stringify(sampling)}`);
        assert.equal(fork.stats().kvBytes, ref.kv.kvBytes);
        fork.release();
      } finally {
        kv.release();
      }
    }
  }
});

test('prompts: deterministic, every category, reference continuations of the asked length, long ones fill the context', { skip: SKIP }, async () => {
  const m = await model();
  const opts = { count: 8, maxTokens: 32, dataDir: DATA, seed: 5 };
  const a = await buildPrompts(m, opts);
  const b = await buildPrompts(m, opts);
  assert.deepEqual(a, b);
  assert.deepEqual(new Set(a.map((p) => p.category)), new Set(['story', 'ood', 'story-long', 'ood-long']));
  for (const p of a) {
    assert.equal(p.reference.length, 32, p.id);
    assert.equal(p.ids[0], m.tokenizer.bosId, p.id);
    assert.ok(p.ids.length + p.reference.length <= m.config.maxSeqLen, p.id);
    if (p.category.endsWith('long')) assert.equal(p.ids.length + p.reference.length, m.config.maxSeqLen - 4);
  }
  // More story prompts than the sample has cut points come from seeded full-cache generations.
  const many = await buildPrompts(m, { count: 40, maxTokens: 32, dataDir: DATA, seed: 5 });
  assert.ok(many.some((p) => p.source.startsWith('full-cache generation')));
  assert.equal(new Set(many.map((p) => p.ids.join(','))).size, 40, 'prompts are distinct');
});

test('--quick: T = 1 is the full cache, pruning grows as T falls, the control lands near 50 %', { skip: SKIP }, async () => {
  const r = await quickReport();
  for (const inv of r.invariants) assert.ok(inv.ok, `${inv.name}: ${inv.detail}`);
  assert.deepEqual(
    r.invariants.map((i) => i.name),
    [
      'T = 1 prunes nothing',
      'T = 1 matches the full cache exactly',
      'pruning never decreases as T falls',
      'pruning never decreases as T falls (gqa mean)',
      'full-vs-full control lands near 50 %',
    ],
  );
  const one = r.points.find((p) => p.key === 'fastgen@1')!;
  assert.equal(one.pruned, 0);
  assert.equal(one.kl, 0);
  assert.equal(one.win.rate, 0.5);
  assert.equal(one.greedyIdentical, 1);
  assert.ok(Math.abs(one.recoveryAchieved - 1) < 1e-6);
  // Every lower T prunes something on this model, and every baseline ran at (nearly) the same memory on each prompt,
  // unless even ratio 1 keeps less than FastGen (local+frequent's halves overlap: at ratio 1 it holds ~80 %).
  for (const f of r.points.filter((p) => p.group === 'sweep' && p.T < 1)) {
    assert.ok(f.pruned > 0.05, `T ${f.T} prunes ${f.pruned}`);
    assert.ok(f.recoveryPromised! >= f.T, 'profiling keeps at least T of the prompt attention');
    for (const b of r.points.filter((p) => p.group === 'baseline' && p.T === f.T)) assert.ok(b.kl > 0);
  }
  let matched = 0;
  for (const pr of r.prompts) {
    for (const c of pr.configs.filter((x) => x.target !== undefined)) {
      const got = c.tf.kvBytes / c.tf.fullKvBytes;
      const atCeiling = c.ratio === 1 && got < c.target!;
      assert.ok(Math.abs(got - c.target!) < 0.03 || atCeiling, `${pr.prompt.id} ${c.key}: KV ratio ${got} for a target of ${c.target}`);
      if (!atCeiling) matched++;
    }
  }
  assert.ok(matched > 0);
  // GQA model: the mean series is there, and min (the default, the sweep) is at least as conservative as mean.
  const alts = r.points.filter((p) => p.group === 'gqa-alt');
  assert.ok(alts.length > 0);
  for (const mean of alts) {
    const min = r.points.find((p) => p.key === `fastgen@${mean.T}`)!;
    assert.equal(min.gqa, 'min');
    assert.ok(mean.recoveryPromised! >= mean.T);
    assert.ok(min.pruned <= mean.pruned + 0.02, `min ${min.pruned} vs mean ${mean.pruned}`);
  }
  assert.ok(r.control.n >= 6);
  assert.equal(r.model.attention, 'grouped-query');
});

test('worker threads give the same numbers as one thread', { skip: SKIP }, async () => {
  const r1 = await quickReport();
  const r2 = await runEvaluation({ modelPath: MODEL, backend: BACKEND, quick: true, jobs: 2, quiet: true, dataDir: DATA });
  const strip = (r: EvalReport) =>
    r.prompts.map((p) => ({ ...p, ms: 0, configs: p.configs.map((c) => ({ ...c, sample: { ...c.sample, prefillMs: 0, decodeMs: 0, profileMs: 0 } })) }));
  assert.deepEqual(strip(r2), strip(r1));
  assert.equal(r2.settings.jobs, 2);
});

test('fastgen eval --quick --json writes the report, figures and a Markdown section, exit 0', { skip: SKIP }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fastgen-eval-'));
  let out = '';
  const stdout = { write: (s: string) => (out += s) };
  try {
    const code = await evalCommand(
      ['--quick', '--json', '-m', MODEL, '--backend', BACKEND, '--data', DATA, '-j', '1', '--out', join(dir, 'r.json'), '--svg-dir', join(dir, 'fig'), '--markdown', join(dir, 'results.md')],
      { stdout },
    );
    assert.equal(code, 0);
    const printed = JSON.parse(out) as EvalReport;
    const saved = JSON.parse(readFileSync(join(dir, 'r.json'), 'utf8')) as EvalReport;
    assert.deepEqual(saved.points, printed.points);
    assert.equal(printed.model.name, 'stories260K');
    for (const f of ['quality-vs-kv', 'policies-by-layer', 'recovery']) {
      const svg = readFileSync(join(dir, 'fig', `stories260K-${f}.svg`), 'utf8');
      assert.match(svg, /^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"/);
      assert.ok(svg.trimEnd().endsWith('</svg>'));
    }
    const md = readFileSync(join(dir, 'results.md'), 'utf8');
    assert.match(md, /<!-- eval:stories260K:begin/);
    assert.match(md, /\|\s+T \|/);
    assert.match(md, /\(fig\/stories260K-quality-vs-kv\.svg\)/);
    await assert.rejects(evalCommand(['--thresholds', '0.9,1.5', '-m', MODEL, '--backend', BACKEND]), /each T must be in \(0, 1\]/);
    await assert.rejects(evalCommand(['--backend', 'nope']), /unknown backend/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--checkpoint: finished prompts are reused by a rerun with the same settings, and the file goes when done', { skip: SKIP }, async () => {
  const m = await model();
  const full = await quickReport();
  const dir = mkdtempSync(join(tmpdir(), 'fastgen-eval-ckpt-'));
  const file = join(dir, 'ckpt.jsonl');
  try {
    const settings = resolveSettings({ quick: true }, m.config.maxSeqLen);
    const prompts = await buildPrompts(m, { count: settings.prompts, maxTokens: settings.maxTokens, dataDir: DATA, seed: settings.seed });
    const fp = checkpointFingerprint(m, settings, prompts);
    // Prompt 1 finished before the stop; a line from other settings and a torn last line are ignored.
    writeFileSync(
      file,
      JSON.stringify({ fingerprint: 'other settings', index: 0, result: full.prompts[1] }) +
        '\n' +
        JSON.stringify({ fingerprint: fp, index: 1, result: full.prompts[1] }) +
        '\n{"fingerprint": "torn',
    );
    const r = await runEvaluation({ model: m, modelPath: MODEL, backend: BACKEND, quick: true, jobs: 1, quiet: true, dataDir: DATA, checkpoint: file });
    assert.equal(r.resumedPrompts, 1);
    assert.deepEqual(r.points.map((p) => [p.key, p.pruned, p.kl, p.win.rate]), full.points.map((p) => [p.key, p.pruned, p.kl, p.win.rate]));
    assert.ok(!existsSync(file), 'checkpoint removed after a complete run');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
