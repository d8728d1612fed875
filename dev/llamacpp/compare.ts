/**
 * fastgen against llama.cpp on the default model, in interleaved rounds on one machine (scripts/llamacpp-bench.sh
 * builds llama-bench and the GGUF files first; run that, not this).
 *
 *   node dist/dev/llamacpp/compare.js --llama-bench BIN --gguf-f32 F --gguf-q8_0 F [--rounds 5] [--threads 2] [--json]
 *
 * Each round runs, per dtype (f32, q8_0), llama-bench (pp128 and tg128, one repetition) and `fastgen bench` (the same
 * tests with the full cache, plus pp128 with the FastGen cache — its profiling pass — and gen128 / sample128, decoding
 * through Model.generate() greedy and sampled; one repetition after its warm-up), alternating which goes first; the
 * ratio fastgen / llama.cpp is taken within the round, so a busy stretch of a shared machine hits both sides of a ratio
 * alike. The generate() rows are taken as ratios to fastgen's own tg128 of the same call. Per row: every round's ratio,
 * their mean and spread; a row whose ratios spread more than 20 % of their mean (or whose sides do) is flagged: on that
 * machine at that time the ratio means little. The 1-minute load average before and after every round is printed.
 */
import { spawnSync } from 'node:child_process';
import { loadavg, cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

const { values } = parseArgs({
  options: {
    'llama-bench': { type: 'string' }, 'gguf-f32': { type: 'string' }, 'gguf-q8_0': { type: 'string' },
    rounds: { type: 'string', default: '5' }, threads: { type: 'string', default: '2' }, json: { type: 'boolean', default: false },
  },
});
const bin = values['llama-bench'];
const ggufs: Record<string, string | undefined> = { f32: values['gguf-f32'], q8_0: values['gguf-q8_0'] };
const rounds = Number(values.rounds);
const threads = Number(values.threads);
if (!bin || !ggufs.f32 || !ggufs.q8_0 || !(rounds >= 1) || !(threads >= 1)) {
  console.error('usage: node dist/dev/llamacpp/compare.js --llama-bench BIN --gguf-f32 F --gguf-q8_0 F [--rounds N] [--threads N] [--json]');
  process.exit(2);
}
const FASTGEN = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..', 'bin', 'fastgen.js');
const TESTS = ['pp128', 'tg128'] as const;
type Test = (typeof TESTS)[number];
/** fastgen's own rows, each a ratio to its tg128 (generate()) or pp128 (the FastGen cache's prefill) of the same call. */
const OWN = [
  { row: 'gen128 / tg128', test: 'gen128', base: 'tg128' },
  { row: 'sample128 / tg128', test: 'sample128', base: 'tg128' },
  { row: 'pp128 fastgen cache / full', test: 'pp128 fastgen', base: 'pp128' },
] as const;
type Own = Record<Test | 'gen128' | 'sample128' | 'pp128 fastgen', number>;

/** ggml's CPU library that llama-bench loaded (it picks one per x86 level at run time), from its stderr. */
let cpuBackend = 'CPU library not reported';

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, timeout: 600_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}): ${(r.stderr ?? '').slice(-500)}`);
  const lib = /loaded CPU backend from \S*?(libggml-cpu-[\w-]+)\.so/.exec(r.stderr ?? '');
  if (lib) cpuBackend = lib[1];
  return r.stdout;
}

/** llama-bench's tokens/s for pp128 and tg128 (one repetition each). */
function llamacpp(dtype: string): Record<Test, number> {
  const rows = JSON.parse(run(bin!, ['-m', ggufs[dtype]!, '-p', '128', '-n', '128', '-t', String(threads), '-r', '1', '-o', 'json'])) as
    { n_prompt: number; n_gen: number; avg_ts: number }[];
  const pp = rows.find((r) => r.n_prompt === 128 && r.n_gen === 0);
  const tg = rows.find((r) => r.n_prompt === 0 && r.n_gen === 128);
  if (!pp || !tg) throw new Error('llama-bench did not report pp128 and tg128');
  return { pp128: pp.avg_ts, tg128: tg.avg_ts };
}

/**
 * fastgen bench's tokens/s (one repetition after its warm-up round): pp128, tg128, gen128 and sample128 with the full
 * cache, and pp128 with the FastGen cache (as 'pp128 fastgen').
 */
function fastgen(dtype: string): Own {
  const j = JSON.parse(run(process.execPath, [FASTGEN, 'bench', '--dtype', dtype, '--cache', 'full', '--cache', 'fastgen', '--tests', 'pp128,tg128,gen128,sample128',
    '--threads', String(threads), '-r', '1', '--json'])) as { rows: { test: string; cache: string; tokensPerSecond: number }[] };
  const get = (t: string, full = true) => j.rows.find((r) => r.test === t && (r.cache === 'full') === full)?.tokensPerSecond ?? Number.NaN;
  return { pp128: get('pp128'), tg128: get('tg128'), gen128: get('gen128'), sample128: get('sample128'), 'pp128 fastgen': get('pp128', false) };
}

const meanSd = (xs: number[]): [number, number] => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  return [m, xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1)) : 0];
};

const loadBefore = loadavg();
const samples: Record<string, { ours: number[]; theirs: number[]; ratio: number[] }> = {};
const own: Record<string, { ratio: number[] }> = {};
/** The 1-minute load average before and after each round. */
const loads: [number, number][] = [];
for (let r = 0; r < rounds; r++) {
  const before = loadavg()[0];
  for (const dtype of ['f32', 'q8_0']) {
    // alternate which side runs first
    const first = (r + (dtype === 'f32' ? 0 : 1)) % 2 === 0;
    let theirs: Record<Test, number>, ours: Own;
    if (first) {
      theirs = llamacpp(dtype);
      ours = fastgen(dtype);
    } else {
      ours = fastgen(dtype);
      theirs = llamacpp(dtype);
    }
    for (const t of TESTS) {
      const s = (samples[`${dtype} ${t}`] ??= { ours: [], theirs: [], ratio: [] });
      s.ours.push(ours[t]);
      s.theirs.push(theirs[t]);
      s.ratio.push(ours[t] / theirs[t]);
    }
    for (const o of OWN) (own[`${dtype} ${o.row}`] ??= { ratio: [] }).ratio.push(ours[o.test] / ours[o.base]);
  }
  loads.push([before, loadavg()[0]]);
  console.error(`  round ${r + 1}/${rounds} done (load ${before.toFixed(1)} before, ${loadavg()[0].toFixed(1)} after)`);
}
const loadAfter = loadavg();
const rows = Object.entries(samples).map(([row, s]) => {
  const [om, osd] = meanSd(s.ours);
  const [tm, tsd] = meanSd(s.theirs);
  const [rm, rsd] = meanSd(s.ratio);
  const flagged = rsd / rm > 0.2 || osd / om > 0.2 || tsd / tm > 0.2;
  return { row, fastgen: om, fastgenSd: osd, llamacpp: tm, llamacppSd: tsd, ratios: s.ratio, ratio: rm, ratioSd: rsd, flagged };
});
const ownRows = Object.entries(own).map(([row, s]) => {
  const [rm, rsd] = meanSd(s.ratio);
  return { row, ratios: s.ratio, ratio: rm, ratioSd: rsd, flagged: rsd / rm > 0.2 };
});
const machine = `${cpus()[0]?.model ?? 'unknown CPU'} · ${cpus().length} cores · load average ${loadBefore[0].toFixed(1)} before, ${loadAfter[0].toFixed(1)} after · llama.cpp's ${cpuBackend}`;
if (values.json) {
  console.log(JSON.stringify({ date: new Date().toISOString(), machine, threads, rounds, loads, rows, fastgenOwn: ownRows }, null, 2));
} else {
  console.log(`| dtype test | fastgen t/s | llama.cpp t/s | fastgen / llama.cpp per round | mean ratio |`);
  console.log(`| ---------- | ----------: | ------------: | ----------------------------- | ---------: |`);
  for (const r of rows) {
    console.log(`| ${r.row} | ${r.fastgen.toFixed(1)} ± ${r.fastgenSd.toFixed(1)} | ${r.llamacpp.toFixed(1)} ± ${r.llamacppSd.toFixed(1)} | ` +
      `${r.ratios.map((x) => x.toFixed(2)).join(' ')} | ${r.ratio.toFixed(2)} ± ${r.ratioSd.toFixed(2)}${r.flagged ? ' (!)' : ''} |`);
  }
  console.log(`\n| fastgen's own ratio (same call) | per round | mean ratio |`);
  console.log(`| ------------------------------- | --------- | ---------: |`);
  for (const r of ownRows) {
    console.log(`| ${r.row} | ${r.ratios.map((x) => x.toFixed(2)).join(' ')} | ${r.ratio.toFixed(2)} ± ${r.ratioSd.toFixed(2)}${r.flagged ? ' (!)' : ''} |`);
  }
  if (rows.some((r) => r.flagged) || ownRows.some((r) => r.flagged)) console.log('\n(!) spread over 20 % of the mean: the machine was too busy for this ratio to mean much');
  console.log(`\nload average (1 min) before → after each round: ${loads.map(([a, b]) => `${a.toFixed(1)}→${b.toFixed(1)}`).join(', ')}`);
  console.log(`\n${new Date().toISOString().slice(0, 16)} · ${machine} · ${threads} threads each`);
}
