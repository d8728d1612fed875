/** Text and Markdown renderings of an evaluation report. */
import { existsSync, readFileSync } from 'node:fs';
import { formatBytes, table } from '../format.js';
import type { EvalReport, PointSummary } from './types.js';

const pct = (x: number, d = 1) => (Number.isFinite(x) ? `${(100 * x).toFixed(d)}` : 'n/a');
const num = (x: number, d = 3) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const kl = (x: number) => (!Number.isFinite(x) ? 'n/a' : x === 0 ? '0' : x < 0.001 ? x.toExponential(1) : x.toFixed(4));

function winCell(p: PointSummary): string {
  return `${pct(p.win.rate)} [${pct(p.win.lo95, 0)}–${pct(p.win.hi95, 0)}]`;
}

function sweep(r: EvalReport): PointSummary[] {
  return r.points.filter((p) => p.group === 'sweep').sort((a, b) => b.T - a.T);
}

function label(p: PointSummary): string {
  if (p.group === 'ablation') return `without ${p.exclude?.join(', ')}`;
  if (p.group === 'gqa-alt') return 'fastgen (gqa mean)';
  if (p.group === 'paper') return 'fastgen (paper)';
  return p.method;
}

function headline(r: EvalReport): string {
  const m = r.model;
  const s = r.settings;
  return (
    `${m.name}: ${m.attention}, ${m.nLayers} layers × ${m.nHeads} query / ${m.nKvHeads} KV heads, context ${m.contextLength}; ` +
    `backend ${r.backend}; ${s.prompts} prompts × ${s.maxTokens} tokens; seed ${s.seed}${s.quick ? '; --quick' : ''}; ` +
    `${(r.wallMs / 1000).toFixed(0)} s on ${r.machine.cpu} (${r.machine.cores} cores, ${s.jobs} jobs), ${r.machine.date.slice(0, 10)}`
  );
}

interface Tables {
  table1: string;
  baselines: string;
  ablation?: string;
  gqa?: string;
  categories: string;
  recovery: string;
}

function tables(r: EvalReport, md: boolean): Tables {
  const fmtBytes = (b: number) => formatBytes(b);
  const sw = sweep(r);
  const table1 = table(
    ['T', 'full KV / seq', 'FastGen KV / seq', 'pruned %', 'win rate % [95% CI]', 'PPL (full ' + num(r.fullPpl, 2) + ')', 'KL nats/tok', 'greedy prefix', 'ROUGE-L', 'recovery achieved / promised %', 'heads ≥ T %', 'profiling % of gen time'],
    sw.map((p) => [
      String(p.T),
      fmtBytes(p.fullKvBytes),
      fmtBytes(p.kvBytes),
      pct(p.pruned),
      winCell(p),
      num(p.ppl, 2),
      kl(p.kl),
      `${num(p.greedyPrefix, 1)} (${pct(p.greedyPrefixFraction, 0)} %)`,
      num(p.rougeL, 2),
      `${pct(p.recoveryAchieved)} / ${pct(p.recoveryPromised ?? NaN)}`,
      pct(p.headsAtOrAboveT ?? NaN, 0),
      pct(p.profileShare ?? NaN, 1),
    ]),
    ['r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
  );
  const brows: string[][] = [];
  for (const f of sw) {
    if (f.T >= 1) continue;
    const group = [f, ...r.points.filter((p) => (p.group === 'paper' || p.group === 'baseline') && p.T === f.T)];
    for (const p of group) {
      brows.push([
        String(f.T),
        md && p === f ? `**${label(p)}**` : label(p),
        pct(p.pruned),
        winCell(p),
        num(p.ppl, 2),
        kl(p.kl),
        num(p.greedyPrefix, 1),
        num(p.rougeL, 2),
        pct(p.recoveryAchieved),
      ]);
    }
  }
  const baselines = table(['T matched', 'method', 'pruned %', 'win rate % [95% CI]', 'PPL', 'KL nats/tok', 'greedy prefix', 'ROUGE-L', 'recovery achieved %'], brows, [
    'r',
    'l',
    'r',
    'r',
    'r',
    'r',
    'r',
    'r',
    'r',
  ]);
  const abl = r.points.filter((p) => p.group === 'ablation');
  let ablation: string | undefined;
  if (abl.length) {
    const ref = sw.find((p) => p.T === abl[0].T && p.gqa !== 'min');
    const rows = [...(ref ? [ref] : []), ...abl].map((p) => [
      p.group === 'ablation' ? label(p) : 'full set',
      pct(p.pruned),
      winCell(p),
      num(p.ppl, 2),
      kl(p.kl),
      num(p.rougeL, 2),
      pct(p.recoveryAchieved),
    ]);
    ablation = table([`hybrid set at T = ${abl[0].T}`, 'pruned %', 'win rate % [95% CI]', 'PPL', 'KL nats/tok', 'ROUGE-L', 'recovery achieved %'], rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r']);
  }
  const mins = r.points.filter((p) => p.group === 'gqa-alt');
  let gqa: string | undefined;
  if (mins.length) {
    const rows: string[][] = [];
    for (const m of mins.sort((a, b) => b.T - a.T)) {
      const mean = sw.find((p) => p.T === m.T)!;
      for (const p of [mean, m]) {
        rows.push([String(p.T), p.gqa ?? 'mean', pct(p.pruned), winCell(p), kl(p.kl), num(p.rougeL, 2), pct(p.recoveryAchieved), pct(p.headsAtOrAboveT ?? NaN, 0)]);
      }
    }
    gqa = table(['T', 'gqa', 'pruned %', 'win rate % [95% CI]', 'KL nats/tok', 'ROUGE-L', 'recovery achieved %', 'heads ≥ T %'], rows, ['r', 'l', 'r', 'r', 'r', 'r', 'r', 'r']);
  }
  const crow: string[][] = [];
  for (const p of sw) {
    for (const [cat, v] of Object.entries(p.byCategory ?? {})) {
      if (!v) continue;
      crow.push([String(p.T), cat, String(v.prompts), pct(v.pruned), pct(v.winRate), kl(v.kl)]);
    }
  }
  const categories = table(['T', 'category', 'prompts', 'pruned %', 'win rate %', 'KL nats/tok'], crow, ['r', 'l', 'r', 'r', 'r', 'r']);
  const rrows: string[][] = [];
  for (const p of sw) {
    if (p.T >= 1) continue;
    for (const e of (p.recoveryByPolicy ?? []).slice().sort((a, b) => a.promised - b.promised)) {
      rrows.push([String(p.T), e.policy, String(e.heads), pct(e.promised, 2), pct(e.achieved, 2)]);
    }
  }
  const recovery = table(['T', 'chosen policy', '(prompt, head) pairs', 'promised %', 'achieved while decoding %'], rrows, ['r', 'l', 'r', 'r', 'r']);
  return { table1, baselines, ablation, gqa, categories, recovery };
}

/** Plain statements of where FastGen is beaten at equal memory, computed from the numbers. */
function findings(r: EvalReport): string[] {
  const out: string[] = [];
  for (const f of sweep(r)) {
    if (f.T >= 1) continue;
    const bs = r.points.filter((p) => p.group === 'baseline' && p.T === f.T);
    if (!bs.length) continue;
    const beatKl = bs.filter((b) => b.kl < f.kl);
    const beatWin = bs.filter((b) => b.win.rate > f.win.rate);
    const beatRouge = bs.filter((b) => b.rougeL > f.rougeL);
    const parts: string[] = [];
    parts.push(`T = ${f.T} (FastGen pruned ${pct(f.pruned)} %, KL ${kl(f.kl)}, win ${pct(f.win.rate)} %, ROUGE-L ${num(f.rougeL, 2)}):`);
    parts.push(beatKl.length ? `lower KL: ${beatKl.map((b) => `${b.method} ${kl(b.kl)} (pruned ${pct(b.pruned)} %)`).join(', ')};` : 'no baseline has lower KL;');
    parts.push(beatWin.length ? `higher win rate: ${beatWin.map((b) => `${b.method} ${pct(b.win.rate)} %`).join(', ')};` : 'no baseline has a higher win rate;');
    parts.push(beatRouge.length ? `higher ROUGE-L: ${beatRouge.map((b) => `${b.method} ${num(b.rougeL, 2)}`).join(', ')}.` : 'no baseline has a higher ROUGE-L.');
    out.push(parts.join(' '));
  }
  return out;
}

export function renderText(r: EvalReport): string {
  const t = tables(r, false);
  const lines: string[] = [];
  lines.push(`fastgen eval — ${headline(r)}`, '');
  lines.push('FastGen sweep (shaped like the paper\'s Table 1; win rate: likelihood judge, 50 % = indistinguishable from full)', t.table1, '');
  lines.push('Uniform baselines at FastGen\'s end-of-generation KV ratio, same prompts and seeds', t.baselines, '');
  if (t.ablation) lines.push('Ablation (paper\'s Table 4): one policy left out of the hybrid set', t.ablation, '');
  if (t.gqa) lines.push('Grouped-query attention: KV-head recovery as mean vs min over the query group', t.gqa, '');
  else lines.push(`GQA mean vs min: not applicable (${r.model.attention}: every KV head serves one query head, so mean = min)`, '');
  lines.push('By prompt category (FastGen)', t.categories, '');
  lines.push('Attention recovery by chosen policy: promised at profiling vs achieved while decoding', t.recovery, '');
  const c = r.control;
  lines.push(`Judge control (full vs full, other seeds): ${pct(c.rate)} % over ${c.n} pairs (${c.wins} W / ${c.ties} T / ${c.losses} L), 99 % interval ${pct(c.lo99)}–${pct(c.hi99)} %`, '');
  lines.push('Where FastGen is beaten at equal memory:', ...findings(r).map((s) => `  - ${s}`), '');
  lines.push('Invariants:', ...r.invariants.map((i) => `  ${i.ok ? 'ok  ' : 'FAIL'} ${i.name}: ${i.detail}`));
  return lines.join('\n');
}

export interface FigurePaths {
  quality?: string;
  policies?: string;
  recovery?: string;
}

/** A self-contained Markdown section for one model (between markers, so that results.md can hold several). */
export function renderMarkdownSection(r: EvalReport, figures: FigurePaths, command: string): string {
  const t = tables(r, true);
  const m = r.model;
  const L: string[] = [];
  L.push(`<!-- eval:${m.name}:begin (generated by \`fastgen eval\`; edits inside are overwritten) -->`);
  L.push(`### ${m.name} (${m.attention}${m.attention !== 'multi-head' ? `, ${m.nHeads} query heads share ${m.nKvHeads} KV heads` : ''})`, '');
  L.push(`${headline(r)}.`, '');
  L.push(`Regenerate: \`${command}\``, '');
  L.push('#### Table 1 shape: FastGen at each recovery threshold T', '');
  L.push(
    'KV sizes are per sequence at the end of the teacher-forced run (prompt + reference, f32, as stored), averaged over prompts; ' +
      'pruned % = 1 − Σ kept / Σ full bytes. Win rate: the likelihood judge (see above), ties ½, 50 % = lossless. ' +
      'PPL and KL are teacher-forced on the reference continuation with compression applied as decoding goes. ' +
      'Recovery: the full model\'s attention mass on the positions each compressed head still held, averaged over decode steps, heads and prompts, ' +
      'against what profiling promised for the chosen policy; "heads ≥ T" is the share of (prompt, head) pairs that kept T while decoding.',
    '',
  );
  L.push(t.table1, '');
  const c = r.control;
  L.push(
    `Judge control, full vs full with other seeds: **${pct(c.rate)} %** over ${c.n} pairs (${c.wins} W / ${c.ties} T / ${c.losses} L), 99 % interval ${pct(c.lo99)}–${pct(c.hi99)} %.`,
    '',
  );
  L.push('#### Baselines at equal memory', '');
  L.push(
    'Each uniform policy runs on the same prompt with `ratio` = the KV ratio FastGen reached on that prompt (sink+local: minus its 4 sinks; local+frequent: corrected up to twice and rerun when the ratio it ends with is more than a point off, as its two halves overlap); "pruned %" is what each actually reached.',
    '',
  );
  L.push(t.baselines, '');
  L.push('Where FastGen is beaten at equal memory (computed from the table):', '');
  for (const s of findings(r)) L.push(`- ${s}`);
  L.push('');
  if (t.ablation) L.push('#### Ablation (paper\'s Table 4)', '', t.ablation, '');
  if (t.gqa) L.push('#### Grouped-query attention: mean vs min over the query group', '', t.gqa, '');
  else L.push(`GQA mean vs min: not applicable to ${m.name} (multi-head: a KV head serves one query head, so mean = min).`, '');
  L.push('#### By prompt category', '', t.categories, '');
  L.push('#### Attention recovery by chosen policy', '', t.recovery, '');
  if (figures.quality || figures.policies || figures.recovery) {
    L.push('#### Figures', '');
    if (figures.quality) L.push(`![${m.name}: quality against KV budget](${figures.quality})`, '');
    if (figures.policies) L.push(`![${m.name}: policy share per layer](${figures.policies})`, '');
    if (figures.recovery) L.push(`![${m.name}: recovery promised vs achieved](${figures.recovery})`, '');
  }
  L.push('Invariants checked by this run:', '');
  for (const i of r.invariants) L.push(`- ${i.ok ? '✅' : '❌'} ${i.name}: ${i.detail}`);
  L.push('', `<!-- eval:${m.name}:end -->`);
  return L.join('\n');
}

/** Put `section` into the Markdown file's text, replacing the same model's earlier section (or appending it). */
export function mergeSection(existing: string, modelName: string, section: string): string {
  const begin = new RegExp(`<!-- eval:${escapeRe(modelName)}:begin[^>]*-->`);
  const end = `<!-- eval:${modelName}:end -->`;
  const b = existing.search(begin);
  const e = existing.indexOf(end);
  if (b >= 0 && e > b) return existing.slice(0, b) + section + existing.slice(e + end.length);
  return existing.replace(/\s*$/, '') + '\n\n' + section + '\n';
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

const SUMMARY_BEGIN = '<!-- eval:summary:begin (one row per model and T, updated by each `fastgen eval --markdown` run) -->';
const SUMMARY_END = '<!-- eval:summary:end -->';
const SUMMARY_HEAD = [
  '| model | attention | backend, prompts × tokens | full KV / seq | T | FastGen KV / seq | pruned % | win rate % [95% CI] | PPL full → FastGen | KL nats/tok | ROUGE-L |',
  '|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|',
];

/** The model's rows of the cross-model summary table (shaped like the paper's Table 1), one per T < 1. */
export function summaryRows(r: EvalReport): string[] {
  const m = r.model;
  return sweep(r)
    .filter((p) => p.T < 1)
    .map(
      (p) =>
        `| ${m.name} | ${m.attention} (${m.nHeads}q/${m.nKvHeads}kv) | ${r.backend}, ${r.settings.prompts} × ${r.settings.maxTokens} | ${formatBytes(p.fullKvBytes)} | ${p.T} | ${formatBytes(p.kvBytes)} | ${pct(p.pruned)} | ${winCell(p)} | ${num(p.fullPpl, 2)} → ${num(p.ppl, 2)} | ${kl(p.kl)} | ${num(p.rougeL, 2)} |`,
    );
}

/** Replace this model's rows in the summary table (created at the top of the generated part when missing). */
export function mergeSummary(existing: string, modelName: string, rows: string[]): string {
  const b = existing.indexOf(SUMMARY_BEGIN);
  const e = existing.indexOf(SUMMARY_END);
  let kept: string[] = [];
  if (b >= 0 && e > b) {
    kept = existing
      .slice(b + SUMMARY_BEGIN.length, e)
      .split('\n')
      .filter((l) => /^\| [^|]+ \|/.test(l) && !l.startsWith('| model |') && !l.startsWith('|---') && !l.startsWith(`| ${modelName} |`));
  }
  const block = [SUMMARY_BEGIN, ...SUMMARY_HEAD, ...[...kept, ...rows].sort((x, y) => x.split('|')[1].localeCompare(y.split('|')[1])), SUMMARY_END].join('\n');
  if (b >= 0 && e > b) return existing.slice(0, b) + block + existing.slice(e + SUMMARY_END.length);
  const firstSection = existing.search(/<!-- eval:(?!summary)[^:]+:begin/);
  if (firstSection >= 0) return existing.slice(0, firstSection) + block + '\n\n' + existing.slice(firstSection);
  return existing.replace(/\s*$/, '') + '\n\n' + block + '\n';
}

export function readOrSkeleton(file: string): string {
  if (existsSync(file)) return readFileSync(file, 'utf8');
  return '# FastGen evaluation results\n\nGenerated by `fastgen eval`; see `scripts/results.sh`.\n';
}

/**
 * JSON for reports: floats to 6 significant digits, arrays of plain values and small flat objects on one line, the rest indented — about a
 * third of JSON.stringify(…, null, 1) for a full evaluation, and still diffable.
 */
export function reportJson(value: unknown): string {
  const round = (v: unknown): unknown => (typeof v === 'number' && Number.isFinite(v) && !Number.isInteger(v) ? Number(v.toPrecision(6)) : v);
  const emit = (v: unknown, indent: string): string => {
    v = round(v);
    if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
    const inner = indent + ' ';
    if (Array.isArray(v)) {
      if (v.every((x) => x === null || typeof x !== 'object')) return `[${v.map((x) => JSON.stringify(round(x)) ?? 'null').join(',')}]`;
      return `[\n${v.map((x) => inner + emit(x, inner)).join(',\n')}\n${indent}]`;
    }
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    if (entries.length === 0) return '{}';
    const flat = (x: unknown) => x === null || typeof x !== 'object' || (Array.isArray(x) && x.every((y) => y === null || typeof y !== 'object'));
    if (entries.length <= 12 && entries.every(([, x]) => flat(x))) return `{ ${entries.map(([k, x]) => `${JSON.stringify(k)}: ${emit(x, inner)}`).join(', ')} }`;
    return `{\n${entries.map(([k, x]) => `${inner}${JSON.stringify(k)}: ${emit(x, inner)}`).join(',\n')}\n${indent}}`;
  };
  return emit(value, '') + '\n';
}
