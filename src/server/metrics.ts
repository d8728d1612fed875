/**
 * Prometheus text exposition (format 0.0.4) for the server: counters and histograms updated as requests go, gauges
 * read from the scheduler and the page pool when /metrics is scraped. No dependencies.
 */

type Labels = Record<string, string>;

function labelText(l: Labels | undefined): string {
  if (!l) return '';
  const parts = Object.entries(l).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

function num(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Number.POSITIVE_INFINITY) return '+Inf';
  if (v === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(v);
}

class Counter {
  private readonly values = new Map<string, { labels?: Labels; value: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  inc(by = 1, labels?: Labels): void {
    const k = labelText(labels);
    const e = this.values.get(k) ?? { labels, value: 0 };
    e.value += by;
    this.values.set(k, e);
  }
  get(labels?: Labels): number {
    return this.values.get(labelText(labels))?.value ?? 0;
  }
  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`);
    if (this.values.size === 0) out.push(`${this.name} 0`);
    for (const { labels, value } of this.values.values()) out.push(`${this.name}${labelText(labels)} ${num(value)}`);
  }
}

export class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
  ) {
    this.counts = new Array(buckets.length).fill(0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]) this.counts[i]++;
  }
  get total(): number {
    return this.count;
  }
  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`);
    this.buckets.forEach((b, i) => out.push(`${this.name}_bucket{le="${num(b)}"} ${this.counts[i]}`));
    out.push(`${this.name}_bucket{le="+Inf"} ${this.count}`, `${this.name}_sum ${num(this.sum)}`, `${this.name}_count ${this.count}`);
  }
}

function gauge(out: string[], name: string, help: string, samples: { labels?: Labels; value: number }[] | number): void {
  out.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`);
  if (typeof samples === 'number') out.push(`${name} ${num(samples)}`);
  else for (const s of samples) out.push(`${name}${labelText(s.labels)} ${num(s.value)}`);
}

/** What the scheduler and pool report at scrape time. */
export interface GaugeSnapshot {
  modelName: string;
  running: number;
  waiting: number;
  peakRunning: number;
  kvPagesUsed: number;
  kvPagesTotal: number;
  kvPageBytes: number;
  kvBudgetBytes: number;
  kvPeakPagesUsed: number;
  /** Bytes of K/V actually held for kept tokens by running requests. */
  kvTokenBytes: number;
  /** What a full cache would hold for the running requests. */
  kvFullBytes: number;
  /** (layer, KV head) pairs of running requests on each policy. */
  headsPerPolicy: Record<string, number>;
  /** Running requests per cache policy. */
  runningPerPolicy: Record<string, number>;
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160];

export class ServerMetrics {
  readonly requests = new Counter('fastgen_requests_total', 'Finished generation requests, by finish reason (stop, length, aborted, error).');
  readonly rejected = new Counter('fastgen_requests_rejected_total', 'Requests refused before running, by reason (invalid, queue_full, shutting_down, loading).');
  readonly promptTokens = new Counter('fastgen_prompt_tokens_total', 'Prompt tokens of admitted requests.');
  readonly generationTokens = new Counter('fastgen_generation_tokens_total', 'Generated tokens.');
  readonly preemptions = new Counter('fastgen_preemptions_total', 'Running requests preempted (pages released, request requeued) because KV memory ran short.');
  readonly steps = new Counter('fastgen_scheduler_steps_total', 'Scheduler steps (one batched forward each).');
  readonly batchedSequences = new Counter('fastgen_scheduler_batched_sequences_total', 'Sum over steps of the sequences in the step (divide by steps for the mean batch size).');
  readonly headsProfiled = new Counter('fastgen_kv_heads_profiled_total', 'FastGen: (layer, KV head) pairs given each policy at profiling, over all requests.');
  readonly ttft = new Histogram('fastgen_time_to_first_token_seconds', 'Time from arrival to the first generated token.', LATENCY_BUCKETS);
  readonly e2e = new Histogram('fastgen_e2e_request_latency_seconds', 'Time from arrival to the end of the request.', LATENCY_BUCKETS);
  readonly queueTime = new Histogram('fastgen_request_queue_time_seconds', 'Time a request waited before it was first admitted.', LATENCY_BUCKETS);
  readonly itl = new Histogram('fastgen_inter_token_latency_seconds', 'Mean time between generated tokens, per request.', LATENCY_BUCKETS);
  readonly peakKv = new Histogram('fastgen_request_kv_peak_bytes', 'Peak K/V bytes held per finished request.', [
    16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864, 268435456, 1073741824,
  ]);

  render(g: GaugeSnapshot | undefined): string {
    const out: string[] = [];
    if (g) {
      gauge(out, 'fastgen_model_info', 'The served model (value 1).', [{ labels: { model: g.modelName }, value: 1 }]);
      gauge(out, 'fastgen_requests_running', 'Requests in the running batch.', g.running);
      gauge(out, 'fastgen_requests_waiting', 'Requests waiting for admission (KV memory).', g.waiting);
      gauge(out, 'fastgen_requests_running_peak', 'Highest number of requests running at once since start.', g.peakRunning);
      gauge(
        out,
        'fastgen_requests_running_by_policy',
        'Running requests per cache policy.',
        Object.entries(g.runningPerPolicy).map(([policy, value]) => ({ labels: { policy }, value })),
      );
      gauge(out, 'fastgen_kv_bytes_used', 'KV pool bytes in use (whole pages).', g.kvPagesUsed * g.kvPageBytes);
      gauge(out, 'fastgen_kv_bytes_budget', 'KV pool byte budget.', g.kvBudgetBytes);
      gauge(out, 'fastgen_kv_pages_used', 'KV pool pages in use.', g.kvPagesUsed);
      gauge(out, 'fastgen_kv_pages_total', 'KV pool pages the budget allows.', g.kvPagesTotal);
      gauge(out, 'fastgen_kv_pages_used_peak', 'Highest number of KV pages in use since start.', g.kvPeakPagesUsed);
      gauge(out, 'fastgen_kv_usage_ratio', 'Fraction of the KV budget in use.', g.kvPagesTotal > 0 && Number.isFinite(g.kvPagesTotal) ? g.kvPagesUsed / g.kvPagesTotal : 0);
      gauge(out, 'fastgen_kv_token_bytes', 'K/V bytes held for kept tokens by running requests.', g.kvTokenBytes);
      gauge(out, 'fastgen_kv_full_bytes', 'K/V bytes a full cache would hold for the running requests.', g.kvFullBytes);
      gauge(out, 'fastgen_kv_pruned_ratio', 'Running requests: 1 − kept K/V bytes / full-cache bytes.', g.kvFullBytes > 0 ? 1 - g.kvTokenBytes / g.kvFullBytes : 0);
      gauge(
        out,
        'fastgen_kv_heads',
        'Running requests: (layer, KV head) pairs on each cache policy.',
        Object.entries(g.headsPerPolicy).map(([policy, value]) => ({ labels: { policy }, value })),
      );
    }
    for (const c of [this.requests, this.rejected, this.promptTokens, this.generationTokens, this.preemptions, this.steps, this.batchedSequences, this.headsProfiled]) c.render(out);
    for (const h of [this.ttft, this.e2e, this.queueTime, this.itl, this.peakKv]) h.render(out);
    return out.join('\n') + '\n';
  }
}

/** Parse Prometheus text into { 'name{labels}': value } (enough for tests and the load tester). */
export function parsePrometheus(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}
