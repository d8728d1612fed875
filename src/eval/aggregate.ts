/** Summaries over prompts and the invariants every run must satisfy, whatever the model. */
import { mean, quantile, wilsonInterval, winRate, type JudgeOutcome } from './metrics.js';
import type { PromptCategory } from './prompts.js';
import { policyFamily } from '../cache/head-policy.js';
import type { ConfigResult, ConfigSpec, EvalReport, Invariant, PointSummary, PromptResult } from './types.js';

export function summarize(specs: readonly ConfigSpec[], prompts: readonly PromptResult[]): PointSummary[] {
  let fullNll = 0;
  let fullTokens = 0;
  for (const p of prompts) {
    fullNll += p.full.nllSum;
    fullTokens += p.full.tokens;
  }
  const fullPpl = Math.exp(fullNll / Math.max(1, fullTokens));
  return specs.map((spec) => {
    const rows: { p: PromptResult; r: ConfigResult }[] = [];
    for (const p of prompts) {
      const r = p.configs.find((c) => c.key === spec.key);
      if (r) rows.push({ p, r });
    }
    const rs = rows.map((x) => x.r);
    const sum = (f: (r: ConfigResult) => number) => rs.reduce((a, r) => a + f(r), 0);
    const tokens = sum((r) => r.tf.tokens);
    const achieved = rs.flatMap((r) => r.recovery.achieved);
    const point: PointSummary = {
      key: spec.key,
      group: spec.group,
      method: spec.method,
      T: spec.T,
      gqa: spec.gqa,
      exclude: spec.exclude,
      prompts: rs.length,
      kvBytes: mean(rs.map((r) => r.tf.kvBytes)),
      fullKvBytes: mean(rs.map((r) => r.tf.fullKvBytes)),
      pruned: 1 - sum((r) => r.tf.kvBytes) / Math.max(1, sum((r) => r.tf.fullKvBytes)),
      prunedSampled: mean(rs.map((r) => r.sample.pruned)),
      ppl: Math.exp(sum((r) => r.tf.nllSum) / Math.max(1, tokens)),
      fullPpl,
      kl: sum((r) => r.tf.klSum) / Math.max(1, tokens),
      klMax: Math.max(0, ...rs.map((r) => r.tf.klMax)),
      greedyPrefix: mean(rs.map((r) => r.greedy.prefix)),
      greedyPrefixFraction: mean(rows.map(({ p, r }) => r.greedy.prefix / Math.max(1, p.full.greedyTokens))),
      rougeL: mean(rs.map((r) => r.greedy.rougeL)),
      greedyIdentical: mean(rs.map((r) => (r.greedy.identical ? 1 : 0))),
      win: winRate(rs.flatMap((r) => r.sample.outcomes)),
      recoveryAchieved: mean(achieved),
      recoveryP10: quantile(achieved, 0.1),
    };
    if (spec.method === 'fastgen') {
      const promised = rs.flatMap((r) => r.recovery.promised ?? []);
      point.recoveryPromised = mean(promised);
      // 1e-6: at T = 1 the kept mass is 1 up to float rounding of the row sums.
      point.headsAtOrAboveT = mean(achieved.map((a) => (a >= spec.T - 1e-6 ? 1 : 0)));
      const byPolicy = new Map<string, { heads: number; promised: number; achieved: number }>();
      const nLayers = rs[0]?.policies?.length ?? 0;
      const layerCounts: Record<string, number>[] = Array.from({ length: nLayers }, () => ({}));
      const headsPerPolicy: Record<string, number> = {};
      for (const r of rs) {
        const pol = r.policies ?? [];
        const perLayer = pol[0]?.length ?? 0;
        pol.forEach((heads, l) =>
          heads.forEach((chosen, h) => {
            // By family: the lattice's sizes (frequent@0.1) would make one series per size.
            const name = policyFamily(chosen);
            const i = l * perLayer + h;
            const e = byPolicy.get(name) ?? { heads: 0, promised: 0, achieved: 0 };
            e.heads++;
            e.promised += r.recovery.promised?.[i] ?? 1;
            e.achieved += r.recovery.achieved[i];
            byPolicy.set(name, e);
            layerCounts[l][name] = (layerCounts[l][name] ?? 0) + 1;
            headsPerPolicy[name] = (headsPerPolicy[name] ?? 0) + 1;
          }),
        );
      }
      point.recoveryByPolicy = [...byPolicy.entries()].map(([policy, e]) => ({
        policy,
        heads: e.heads,
        promised: e.promised / e.heads,
        achieved: e.achieved / e.heads,
      }));
      point.policyShareByLayer = layerCounts.map((counts) => {
        const total = Object.values(counts).reduce((a, b) => a + b, 0);
        return Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, v / Math.max(1, total)]));
      });
      point.headsPerPolicy = headsPerPolicy;
      const prof = sum((r) => r.sample.profileMs);
      point.profileMs = prof / Math.max(1, rs.length);
      point.profileShare = prof / Math.max(1e-9, sum((r) => r.sample.prefillMs + r.sample.decodeMs));
    }
    const byCategory: PointSummary['byCategory'] = {};
    const cats = new Set(rows.map((x) => x.p.prompt.category));
    for (const cat of cats) {
      const sub = rows.filter((x) => x.p.prompt.category === cat).map((x) => x.r);
      const t = sub.reduce((a, r) => a + r.tf.tokens, 0);
      byCategory[cat as PromptCategory] = {
        prompts: sub.length,
        pruned: 1 - sub.reduce((a, r) => a + r.tf.kvBytes, 0) / Math.max(1, sub.reduce((a, r) => a + r.tf.fullKvBytes, 0)),
        winRate: winRate(sub.flatMap((r) => r.sample.outcomes)).rate,
        kl: sub.reduce((a, r) => a + r.tf.klSum, 0) / Math.max(1, t),
      };
    }
    point.byCategory = byCategory;
    return point;
  });
}

export function controlSummary(prompts: readonly PromptResult[]): EvalReport['control'] {
  const outcomes: JudgeOutcome[] = prompts.flatMap((p) => p.full.control.map((c) => c.outcome));
  const w = winRate(outcomes);
  const [lo99, hi99] = wilsonInterval(w.rate, w.n, 2.576);
  return { ...w, lo99, hi99 };
}

const pct = (x: number) => `${(x * 100).toFixed(2)} %`;

/** What must hold on any model: T = 1 is the full cache; pruning grows as T falls; the judge's control is unbiased. */
export function checkInvariants(specs: readonly ConfigSpec[], points: readonly PointSummary[], prompts: readonly PromptResult[], control: EvalReport['control']): Invariant[] {
  const out: Invariant[] = [];
  const one = specs.find((s) => s.group === 'sweep' && s.T === 1);
  if (one) {
    const rs = prompts.map((p) => ({ p, r: p.configs.find((c) => c.key === one.key)! })).filter((x) => x.r);
    const prunedMax = Math.max(0, ...rs.map((x) => Math.max(x.r.tf.pruned, x.r.sample.pruned)));
    out.push({
      name: 'T = 1 prunes nothing',
      ok: rs.length > 0 && rs.every((x) => x.r.tf.kvBytes === x.r.tf.fullKvBytes && x.r.sample.pruned === 0),
      detail: `largest pruned share at T = 1: ${pct(prunedMax)} over ${rs.length} prompts (teacher-forced and sampled runs)`,
    });
    const bad = rs.filter(
      (x) => x.r.tf.klSum !== 0 || x.r.tf.nllSum !== x.p.full.nllSum || !x.r.greedy.identical || x.r.sample.outcomes.some((o) => o !== 'tie') ||
        x.r.sample.scores.some((s, j) => s !== x.p.full.samples[j].score),
    );
    out.push({
      name: 'T = 1 matches the full cache exactly',
      ok: rs.length > 0 && bad.length === 0,
      detail:
        bad.length === 0
          ? `KL = 0, same NLL, identical greedy and sampled outputs on all ${rs.length} prompts`
          : `differs on ${bad.length} of ${rs.length} prompts (first: ${bad[0].p.prompt.source}; KL sum ${bad[0].r.tf.klSum})`,
    });
  }
  for (const group of ['sweep', 'gqa-alt'] as const) {
    const series = points.filter((p) => p.group === group).sort((a, b) => b.T - a.T);
    if (series.length < 2) continue;
    let ok = true;
    for (let i = 1; i < series.length; i++) if (series[i].pruned < series[i - 1].pruned) ok = false;
    // Per prompt too (informational: frequent-policy heads can keep a handful more tokens at a lower T when their
    // attention scores diverge, so only the mean is asserted).
    let promptViolations = 0;
    for (const p of prompts) {
      const byT = series.map((s) => p.configs.find((c) => c.key === s.key)).filter((c): c is ConfigResult => !!c);
      for (let i = 1; i < byT.length; i++) if (byT[i].tf.pruned < byT[i - 1].tf.pruned - 1e-12) promptViolations++;
    }
    out.push({
      name: `pruning never decreases as T falls${group === 'gqa-alt' ? ' (gqa mean)' : ''}`,
      ok,
      detail: `${series.map((s) => `T ${s.T}: ${pct(s.pruned)}`).join(', ')}; per-prompt inversions: ${promptViolations}`,
    });
  }
  if (control.n > 0) {
    out.push({
      name: 'full-vs-full control lands near 50 %',
      ok: control.lo99 <= 0.5 && 0.5 <= control.hi99,
      detail: `control win rate ${pct(control.rate)} over ${control.n} pairs (${control.wins} W / ${control.ties} T / ${control.losses} L), 99 % interval ${pct(control.lo99)} – ${pct(control.hi99)}`,
    });
  }
  return out;
}
