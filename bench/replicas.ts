/**
 * Throughput of fastgen replicas behind HAProxy (deploy/haproxy/haproxy.cfg) on this machine: the same streaming load
 * (`fastgen loadtest`'s workload, FastGen cache) against 1, 2 and 3 replicas of one thread each, and against one
 * replica with two threads (the default: the same two cores in one process). A benchmark, not a test.
 *
 *   node dist/bench/replicas.js [--model PATH] [-c 12] [-n 36] [--reps 3] [--max-tokens 32-64] [--json]
 *
 * Rounds run round-robin over the configurations (each round starts its replicas afresh), so that noise on a shared
 * machine hits every row alike; a row whose spread exceeds 20 % of its mean is marked (!).
 */
import { runLoadtest, type PhaseReport } from '../src/cli/loadtest.js';
import { parseRange } from '../src/server/util.js';
import { findHaproxy, startHaproxy, startReplica, type Replica } from '../dev/replicas/cluster.js';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';

/** Clock ticks per second of /proc/<pid>/stat's CPU times. */
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/**
 * CPU seconds (user + system) a process has used so far, from /proc (Linux). Unlike wall time, barely moved by other
 * work on a shared machine: what a configuration costs per token.
 */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime (fields 14 and 15 of the line)
}

interface Config {
  replicas: number;
  threads: number;
}

interface Row extends Config {
  tokPerS: number[];
  reqPerS: number[];
  ttftP50: number[];
  latencyP50: number[];
  /** CPU seconds the replicas used per 1000 generated tokens. */
  cpuPer1k: number[];
  failed: number;
}

function arg(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  if (i < 0) return undefined;
  const v = argv[i + 1];
  if (v === undefined || v.startsWith('-')) throw new Error(`${name} needs a value`);
  return v;
}

function int(argv: string[], name: string, dflt: number): number {
  const v = arg(argv, name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got '${v}'`);
  return n;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const spread = (xs: number[]) => (xs.length > 1 ? (Math.max(...xs) - Math.min(...xs)) / mean(xs) : 0);

async function runOnce(c: Config, o: { model?: string; clients: number; requests: number; maxTokens: [number, number]; seed: number }): Promise<{ phase: PhaseReport; cpuS: number }> {
  const replicas: Replica[] = [];
  let lb: Awaited<ReturnType<typeof startHaproxy>> | undefined;
  try {
    const args = [...(o.model ? ['--model', o.model] : []), '--threads', String(c.threads), '--kv-budget', '256MiB', '-q'];
    replicas.push(...(await Promise.all(Array.from({ length: c.replicas }, (_, i) => startReplica(`r${i + 1}`, args)))));
    lb = await startHaproxy(replicas);
    const cpu0 = replicas.reduce((a, r) => a + cpuSeconds(r.pid), 0);
    const report = await runLoadtest({
      url: lb.url,
      clients: o.clients,
      requests: o.requests,
      promptTokens: [24, 96],
      maxTokens: o.maxTokens,
      caches: ['fastgen'],
      recovery: 0.95,
      temperature: 0.8,
      seed: o.seed,
      timeoutMs: 600_000,
    });
    const cpuS = replicas.reduce((a, r) => a + cpuSeconds(r.pid), 0) - cpu0;
    return { phase: report.phases[0], cpuS };
  } finally {
    await Promise.all([...replicas.map((r) => r.stop(5000)), lb?.stop(5000)]);
  }
}

async function main(argv: string[]): Promise<number> {
  if (!findHaproxy()) {
    process.stderr.write('replicas bench: haproxy is not installed (Debian: apt-get install haproxy)\n');
    return 1;
  }
  const o = {
    model: arg(argv, '--model'),
    clients: int(argv, '-c', 12),
    requests: int(argv, '-n', 36),
    maxTokens: parseRange(arg(argv, '--max-tokens') ?? '32-64', '--max-tokens'),
    seed: 1,
  };
  const reps = int(argv, '--reps', 3);
  const json = argv.includes('--json');
  const configs: Config[] = [
    { replicas: 1, threads: 2 },
    { replicas: 1, threads: 1 },
    { replicas: 2, threads: 1 },
    { replicas: 3, threads: 1 },
  ];
  const rows: Row[] = configs.map((c) => ({ ...c, tokPerS: [], reqPerS: [], ttftP50: [], latencyP50: [], cpuPer1k: [], failed: 0 }));
  for (let r = 0; r < reps; r++) {
    for (const row of rows) {
      process.stderr.write(`round ${r + 1}/${reps}: ${row.replicas} replica(s) × ${row.threads} thread(s) ...`);
      const { phase: p, cpuS } = await runOnce(row, o);
      row.tokPerS.push(p.generatedTokensPerS);
      row.reqPerS.push(p.requestsPerS);
      row.ttftP50.push(p.ttftS.p50);
      row.latencyP50.push(p.latencyS.p50);
      row.cpuPer1k.push((cpuS / p.generatedTokens) * 1000);
      row.failed += p.failed;
      process.stderr.write(` ${p.generatedTokensPerS.toFixed(1)} tok/s, ${row.cpuPer1k.at(-1)!.toFixed(1)} CPU s / 1k tokens\n`);
    }
  }
  const base = mean(rows[1].tokPerS);
  const noisy = (row: Row) => spread(row.tokPerS) > 0.2;
  const noisyCpu = (row: Row) => spread(row.cpuPer1k) > 0.2;
  if (json) {
    process.stdout.write(JSON.stringify({ cores: cpus().length, ...o, reps, rows }, null, 2) + '\n');
    return 0;
  }
  const lines = [
    `| replicas × threads | generated tok/s (mean of ${reps}) | spread | vs 1 × 1 | CPU s / 1k tokens | spread | vs 1 × 1 | requests/s | TTFT p50 (s) | latency p50 (s) | failed |`,
    '|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const row of rows) {
    const ratio = noisy(row) || noisy(rows[1]) ? 'n/m' : `${(mean(row.tokPerS) / base).toFixed(2)}×`;
    const cpuRatio = noisyCpu(row) || noisyCpu(rows[1]) ? 'n/m' : `${(mean(row.cpuPer1k) / mean(rows[1].cpuPer1k)).toFixed(2)}×`;
    lines.push(
      `| ${row.replicas} × ${row.threads} | ${mean(row.tokPerS).toFixed(1)}${noisy(row) ? ' (!)' : ''} | ${(spread(row.tokPerS) * 100).toFixed(0)} % | ${ratio} | ` +
        `${mean(row.cpuPer1k).toFixed(1)}${noisyCpu(row) ? ' (!)' : ''} | ${(spread(row.cpuPer1k) * 100).toFixed(0)} % | ${cpuRatio} | ` +
        `${mean(row.reqPerS).toFixed(2)} | ${mean(row.ttftP50).toFixed(2)} | ${mean(row.latencyP50).toFixed(2)} | ${row.failed} |`,
    );
  }
  process.stdout.write(
    `${lines.join('\n')}\n\n${cpus().length} CPUs; ${o.clients} streaming clients, ${o.requests} requests per run, prompts 24–96 tokens, ` +
      `${o.maxTokens[0]}–${o.maxTokens[1]} generated tokens each (EOS ignored), FastGen cache (T = 0.95), ${o.model ?? 'stories15M'}, through HAProxy ` +
      `(deploy/haproxy/haproxy.cfg). CPU s / 1k tokens: user + system time of the replica processes during the run (from /proc), ` +
      `per 1000 generated tokens. (!): spread over 20 % of the mean; its ratio is not meaningful (n/m).\n`,
  );
  return rows.some((r) => r.failed > 0) ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (e) => {
    process.stderr.write(`replicas bench: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
