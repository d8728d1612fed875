/**
 * fastgen replicas behind HAProxy on this machine, as real processes: `fastgen serve` children on ephemeral ports and
 * `haproxy` running deploy/haproxy/haproxy.cfg (its addresses set through the environment). Used by the HAProxy test
 * and by the replica benchmark (bench/replicas.ts); loopback only.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Compiled into dist/dev/replicas/: the repository root is three levels up. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const HAPROXY_CFG = join(REPO_ROOT, 'deploy', 'haproxy', 'haproxy.cfg');
const BIN = join(REPO_ROOT, 'bin', 'fastgen.js');

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A child process with its output kept (for error messages) and its exit as a promise. */
class Child {
  readonly lines: string[] = [];
  readonly exited: Promise<Exit>;
  exit: Exit | undefined;

  constructor(readonly proc: ChildProcess, readonly name: string) {
    const keep = (chunk: Buffer) => {
      for (const l of chunk.toString().split('\n')) if (l) this.lines.push(l);
      if (this.lines.length > 2000) this.lines.splice(0, this.lines.length - 2000);
    };
    proc.stdout?.on('data', keep);
    proc.stderr?.on('data', keep);
    this.exited = new Promise((r) =>
      proc.once('exit', (code, signal) => {
        this.exit = { code, signal };
        r(this.exit);
      }),
    );
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  kill(signal: NodeJS.Signals): void {
    if (this.running) this.proc.kill(signal);
  }

  /** The last lines of its output, for a failure message. */
  tail(n = 30): string {
    return `--- ${this.name} (pid ${this.pid}) ---\n${this.lines.slice(-n).join('\n')}`;
  }

  /** SIGTERM, then SIGKILL if it is still there after `graceMs`. */
  async stop(graceMs = 5000): Promise<Exit> {
    if (!this.running) return this.exit!;
    this.kill('SIGTERM');
    const t = setTimeout(() => this.kill('SIGKILL'), graceMs);
    const e = await this.exited;
    clearTimeout(t);
    return e;
  }
}

export class Replica extends Child {
  /** Known once the replica has reported its ports. */
  url = '';
  port = 0;
  agentPort = 0;
}

export class Haproxy extends Child {
  constructor(
    proc: ChildProcess,
    readonly url: string,
    readonly statsUrl: string,
  ) {
    super(proc, 'haproxy');
  }

  /** The stats page's CSV: one row per proxy/server, keyed by column name. */
  async stats(): Promise<Record<string, string>[]> {
    const text = await (await fetch(`${this.statsUrl}/;csv`)).text();
    const [head, ...rows] = text.trim().split('\n');
    const cols = head.replace(/^# /, '').split(',');
    return rows.map((r) => Object.fromEntries(r.split(',').map((v, i) => [cols[i], v])));
  }

  /** The backend's server rows, by server name. */
  async servers(backend = 'fastgen_replicas'): Promise<Map<string, Record<string, string>>> {
    const rows = await this.stats();
    return new Map(rows.filter((r) => r.pxname === backend && r.svname !== 'BACKEND' && r.svname !== 'FRONTEND').map((r) => [r.svname, r]));
  }
}

/** The haproxy binary, if installed (PATH, then Debian's /usr/sbin). */
export function findHaproxy(): string | undefined {
  const which = spawnSync('sh', ['-c', 'command -v haproxy'], { encoding: 'utf8' });
  const found = which.status === 0 ? which.stdout.trim() : '';
  if (found) return found;
  return ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy'].find((p) => existsSync(p));
}

export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => res(port));
    });
  });
}

/** Poll `probe` (a failed probe counts as not yet) until it gives a value, the child exits, or time is up. */
export async function until<T>(what: string, timeoutMs: number, child: Child, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (!child.running) throw new Error(`${what}: it exited (${child.exit!.signal ?? `code ${child.exit!.code}`})\n${child.tail()}`);
    if (Date.now() > deadline) throw new Error(`${what} within ${timeoutMs / 1000} s\n${child.tail()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Start `fastgen serve` on an ephemeral port with its HAProxy agent on another; resolves when GET /health is 200.
 * `args` are more serve flags (--model, --threads, --kv-budget, ...).
 */
export async function startReplica(name: string, args: string[], timeoutMs = 60_000): Promise<Replica> {
  const proc = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--agent-port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const r = new Replica(proc, name);
  const ports = await until(
    `${name}: fastgen serve did not report its ports`,
    timeoutMs,
    r,
    async () => {
      const text = r.lines.join('\n');
      const http = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(text);
      const agent = /HAProxy agent check on [^\s:]+:(\d+)/.exec(text);
      return http && agent ? { port: Number(http[1]), agent: Number(agent[1]) } : undefined;
    },
  ).catch((e) => {
    r.kill('SIGKILL');
    throw e;
  });
  r.port = ports.port;
  r.agentPort = ports.agent;
  r.url = `http://127.0.0.1:${ports.port}`;
  await until(
    `${name}: GET /health did not say 200`,
    timeoutMs,
    r,
    async () => ((await fetch(`${r.url}/health`)).status === 200 ? true : undefined),
  ).catch((e) => {
    r.kill('SIGKILL');
    throw e;
  });
  return r;
}

/**
 * HAProxy with deploy/haproxy/haproxy.cfg in front of `replicas` (the file's first replicas.length `server` lines; it
 * has three); resolves when every replica is UP in HAProxy's stats.
 */
export async function startHaproxy(replicas: readonly Replica[], timeoutMs = 30_000): Promise<Haproxy> {
  const bin = findHaproxy();
  if (!bin) throw new Error('haproxy is not installed (Debian: apt-get install haproxy)');
  let cfg = HAPROXY_CFG;
  const servers = readFileSync(cfg, 'utf8').split('\n').filter((l) => /^\s*server r\d+ /.test(l)).length;
  if (replicas.length > servers) throw new Error(`${cfg} has ${servers} server lines; ${replicas.length} replicas need as many`);
  if (replicas.length < servers) {
    // Fewer replicas: the same file without the extra server lines.
    const dir = mkdtempSync(join(tmpdir(), 'fastgen-haproxy-'));
    cfg = join(dir, 'haproxy.cfg');
    const keep = (l: string) => {
      const m = /^\s*server r(\d+) /.exec(l);
      return !m || Number(m[1]) <= replicas.length;
    };
    writeFileSync(cfg, readFileSync(HAPROXY_CFG, 'utf8').split('\n').filter(keep).join('\n'));
  }
  const lb = await freePort();
  const stats = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, FASTGEN_LB_BIND: `127.0.0.1:${lb}`, FASTGEN_STATS_BIND: `127.0.0.1:${stats}` };
  replicas.forEach((r, i) => {
    env[`FASTGEN_REPLICA_${i + 1}`] = `127.0.0.1:${r.port}`;
    env[`FASTGEN_AGENT_${i + 1}`] = String(r.agentPort);
  });
  const proc = spawn(bin, ['-db', '-f', cfg], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const h = new Haproxy(proc, `http://127.0.0.1:${lb}`, `http://127.0.0.1:${stats}`);
  await until(
    'haproxy did not report every replica UP',
    timeoutMs,
    h,
    async () => {
      const s = await h.servers();
      return s.size === replicas.length && [...s.values()].every((r) => r.status === 'UP') ? true : undefined;
    },
  ).catch((e) => {
    h.kill('SIGKILL');
    throw e;
  });
  return h;
}
