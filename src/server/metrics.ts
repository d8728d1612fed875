/**
 * The server's Prometheus metrics, through prom-client (one registry per server, with prom-client's default process
 * and Node.js metrics). Counters and histograms move as requests go; gauges are read from the scheduler and the page
 * pool when /metrics is scraped. Besides the fastgen_* names, what routers and dashboards built for vLLM read is
 * exposed under vLLM's names, labelled with model_name: the gauges vllm:num_requests_running,
 * vllm:num_requests_waiting, vllm:kv_cache_usage_perc, and (mirrors of the fastgen_* series) the token and request
 * counters and the time-to-first-token, end-to-end and queue-time histograms.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { CapacityReport } from './capacity.js';

/** What the scheduler and pool report at scrape time. */
export interface GaugeSnapshot {
  modelName: string;
  running: number;
  waiting: number;
  maxRunning: number;
  peakRunning: number;
  /** Pages admission expects the running requests to hold at their end (never less than they hold now). */
  kvPagesReserved: number;
  /** Admission's estimate of the fraction of a full cache's tokens a FastGen request keeps (before it is profiled). */
  fastgenKeptRatio: number;
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
  /** The KV budget's capacity measured at startup (capacity.ts), when known. */
  capacity?: CapacityReport;
}

/**
 * How loaded a replica is, for load balancers: GET /health's `load` and the HAProxy agent's weight. `kv_usage` is the
 * budget's pages in use, `kv_reserved_usage` what admission has promised the running requests at their end (FastGen's
 * projected sizes): the second is what decides whether the next request is admitted or waits. `full` says that a new
 * request would wait here now.
 */
export interface LoadFigure {
  running: number;
  waiting: number;
  max_running: number;
  kv_bytes_used: number;
  kv_bytes_reserved: number;
  kv_bytes_budget: number | null;
  kv_usage: number;
  kv_reserved_usage: number;
  full: boolean;
}

export function loadFigure(g: GaugeSnapshot): LoadFigure {
  const bounded = Number.isFinite(g.kvPagesTotal) && g.kvPagesTotal > 0;
  const ratio = (pages: number) => (bounded ? Math.min(1, pages / g.kvPagesTotal) : 0);
  const reservedUsage = ratio(g.kvPagesReserved);
  return {
    running: g.running,
    waiting: g.waiting,
    max_running: g.maxRunning,
    kv_bytes_used: g.kvPagesUsed * g.kvPageBytes,
    kv_bytes_reserved: g.kvPagesReserved * g.kvPageBytes,
    kv_bytes_budget: Number.isFinite(g.kvBudgetBytes) ? g.kvBudgetBytes : null,
    kv_usage: ratio(g.kvPagesUsed),
    kv_reserved_usage: reservedUsage,
    full: g.waiting > 0 || g.running >= g.maxRunning || reservedUsage >= 1,
  };
}

/**
 * The weight, in percent, a replica asks a load balancer for (HAProxy's agent check): its free share of the KV budget
 * by admission's reservation, 1 % when it is full (never 0: that is HAProxy's "drain", kept for shutting down).
 */
export function loadWeightPercent(l: LoadFigure): number {
  if (l.full) return 1;
  const free = 1 - Math.max(l.kv_usage, l.kv_reserved_usage, l.running / l.max_running);
  return Math.max(1, Math.min(100, Math.round(free * 100)));
}

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160];

export class ServerMetrics {
  readonly registry = new Registry();
  /** Read at scrape time; undefined until the model is loaded. */
  source: (() => GaugeSnapshot | undefined) | undefined;

  private readonly counter = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
    new Counter<L>({ name, help, labelNames, registers: [this.registry] });
  private readonly histogram = (name: string, help: string, buckets: number[]) => new Histogram({ name, help, buckets, registers: [this.registry] });

  readonly requests = this.counter('fastgen_requests_total', 'Finished generation requests, by finish reason (stop, length, aborted, error).', ['finish_reason']);
  readonly rejected = this.counter(
    'fastgen_requests_rejected_total',
    'Requests refused before running, by reason (invalid, queue_full, shutting_down, loading, unauthorized, forbidden, timeout, too_many_connections).',
    ['reason'],
  );
  readonly promptTokens = this.counter('fastgen_prompt_tokens_total', 'Prompt tokens of admitted requests.');
  readonly generationTokens = this.counter('fastgen_generation_tokens_total', 'Generated tokens.');
  readonly preemptions = this.counter('fastgen_preemptions_total', 'Running requests preempted (pages released, request requeued) because KV memory ran short.');
  readonly steps = this.counter('fastgen_scheduler_steps_total', 'Scheduler steps (one batched forward each).');
  readonly batchedSequences = this.counter('fastgen_scheduler_batched_sequences_total', 'Sum over steps of the sequences in the step (divide by steps for the mean batch size).');
  readonly headsProfiled = this.counter('fastgen_kv_heads_profiled_total', 'FastGen: (layer, KV head) pairs given each policy at profiling, over all requests.', ['policy']);
  readonly ttft = this.histogram('fastgen_time_to_first_token_seconds', 'Time from arrival to the first generated token.', LATENCY_BUCKETS);
  readonly e2e = this.histogram('fastgen_e2e_request_latency_seconds', 'Time from arrival to the end of the request.', LATENCY_BUCKETS);
  readonly queueTime = this.histogram('fastgen_request_queue_time_seconds', 'Time a request waited before it was first admitted.', LATENCY_BUCKETS);
  readonly itl = this.histogram('fastgen_inter_token_latency_seconds', 'Mean time between generated tokens, per request.', LATENCY_BUCKETS);
  readonly peakKv = this.histogram('fastgen_request_kv_peak_bytes', 'Peak K/V bytes held per finished request.', [
    16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864, 268435456, 1073741824,
  ]);

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    const gauge = (name: string, help: string, read: (g: GaugeSnapshot) => number | [Record<string, string>, number][], labelNames: string[] = []) =>
      new Gauge({
        name,
        help,
        labelNames,
        registers: [this.registry],
        collect: ((self: ServerMetrics) =>
          function (this: Gauge) {
            this.reset();
            const g = self.source?.();
            if (!g) return;
            const v = read(g);
            if (typeof v === 'number') this.set(v);
            else for (const [labels, value] of v) this.set(labels, value);
          })(this),
      });
    const usage = (g: GaugeSnapshot) => (g.kvPagesTotal > 0 && Number.isFinite(g.kvPagesTotal) ? g.kvPagesUsed / g.kvPagesTotal : 0);
    const perModel = (read: (g: GaugeSnapshot) => number) => (g: GaugeSnapshot): [Record<string, string>, number][] => [[{ model_name: g.modelName }, read(g)]];
    gauge('fastgen_model_info', 'The served model (value 1).', (g) => [[{ model: g.modelName }, 1]], ['model']);
    gauge('fastgen_requests_running', 'Requests in the running batch.', (g) => g.running);
    gauge('fastgen_requests_waiting', 'Requests waiting for admission (KV memory).', (g) => g.waiting);
    gauge('fastgen_requests_running_peak', 'Highest number of requests running at once since start.', (g) => g.peakRunning);
    gauge('fastgen_requests_running_by_policy', 'Running requests per cache policy.', (g) => Object.entries(g.runningPerPolicy).map(([policy, n]) => [{ policy }, n]), ['policy']);
    gauge('fastgen_kv_bytes_used', 'KV pool bytes in use (whole pages).', (g) => g.kvPagesUsed * g.kvPageBytes);
    gauge('fastgen_kv_bytes_budget', 'KV pool byte budget.', (g) => g.kvBudgetBytes);
    gauge('fastgen_kv_pages_used', 'KV pool pages in use.', (g) => g.kvPagesUsed);
    gauge('fastgen_kv_pages_total', 'KV pool pages the budget allows.', (g) => g.kvPagesTotal);
    gauge('fastgen_kv_pages_used_peak', 'Highest number of KV pages in use since start.', (g) => g.kvPeakPagesUsed);
    gauge('fastgen_kv_usage_ratio', 'Fraction of the KV budget in use.', usage);
    gauge('fastgen_kv_token_bytes', 'K/V bytes held for kept tokens by running requests.', (g) => g.kvTokenBytes);
    gauge('fastgen_kv_full_bytes', 'K/V bytes a full cache would hold for the running requests.', (g) => g.kvFullBytes);
    gauge('fastgen_kv_pruned_ratio', 'Running requests: 1 − kept K/V bytes / full-cache bytes.', (g) => (g.kvFullBytes > 0 ? 1 - g.kvTokenBytes / g.kvFullBytes : 0));
    gauge('fastgen_kv_bytes_reserved', 'KV bytes admission has reserved for running requests: what each is expected to hold at its end (FastGen: projected from its kept tokens).', (g) => g.kvPagesReserved * g.kvPageBytes);
    gauge('fastgen_kv_kept_ratio_estimate', "Admission's estimate of the fraction of a full cache's tokens a FastGen request keeps (calibrated at startup, then learned from finished requests).", (g) => g.fastgenKeptRatio);
    const capacity = (read: (c: CapacityReport) => [number, number | undefined]) => (g: GaugeSnapshot): [Record<string, string>, number][] => {
      if (!g.capacity || !Number.isFinite(g.capacity.budgetPages)) return [];
      const [full, fastgen] = read(g.capacity);
      return fastgen === undefined ? [[{ cache: 'full' }, full]] : [[{ cache: 'full' }, full], [{ cache: 'fastgen' }, fastgen]];
    };
    gauge('fastgen_kv_capacity_tokens', 'Tokens the KV budget holds: with a full cache, and as FastGen is expected to compress them (measured at startup on a calibration prompt).', capacity((c) => [c.full.tokens, c.fastgen?.tokens]), ['cache']);
    gauge('fastgen_kv_max_concurrency', 'Requests of the full context length the KV budget holds at once: with a full cache, and as expected with FastGen.', capacity((c) => [c.full.maxConcurrency, c.fastgen?.maxConcurrency]), ['cache']);
    gauge('fastgen_kv_heads', 'Running requests: (layer, KV head) pairs on each cache policy.', (g) => Object.entries(g.headsPerPolicy).map(([policy, n]) => [{ policy }, n]), ['policy']);
    // vLLM's names, for dashboards and routers made for vLLM.
    gauge('vllm:num_requests_running', 'Number of requests in model execution batches (vLLM name).', perModel((g) => g.running), ['model_name']);
    gauge('vllm:num_requests_waiting', 'Number of requests waiting to be processed (vLLM name).', perModel((g) => g.waiting), ['model_name']);
    gauge('vllm:kv_cache_usage_perc', 'KV-cache usage: 1 means 100 percent usage (vLLM name).', perModel(usage), ['model_name']);
    this.mirror(this.promptTokens, 'vllm:prompt_tokens_total', 'Number of prefill tokens processed (vLLM name).');
    this.mirror(this.generationTokens, 'vllm:generation_tokens_total', 'Number of generation tokens processed (vLLM name).');
    this.mirror(this.preemptions, 'vllm:num_preemptions_total', 'Cumulative number of preemptions (vLLM name).');
    this.mirror(this.ttft, 'vllm:time_to_first_token_seconds', 'Histogram of time to first token in seconds (vLLM name).');
    this.mirror(this.e2e, 'vllm:e2e_request_latency_seconds', 'Histogram of end to end request latency in seconds (vLLM name).');
    this.mirror(this.queueTime, 'vllm:request_queue_time_seconds', 'Histogram of time spent waiting in the queue in seconds (vLLM name).');
    // vLLM counts finished requests by finished_reason stop / length / abort (a failed request is not a success).
    const reasons: Record<string, string> = { stop: 'stop', length: 'length', aborted: 'abort' };
    this.mirror(this.requests, 'vllm:request_success_total', 'Count of successfully processed requests (vLLM name).', (labels) => {
      const r = reasons[String(labels.finish_reason)];
      return r === undefined ? undefined : { finished_reason: r };
    });
  }

  /**
   * Expose `metric` also under vLLM's `name`, labelled with model_name: the same observations, read at scrape time.
   * `relabel` maps a sample's labels (undefined: leave the sample out).
   */
  private mirror(
    metric: Counter<string> | Histogram<string>,
    name: string,
    help: string,
    relabel: (labels: Partial<Record<string, string | number>>) => Partial<Record<string, string | number>> | undefined = (l) => l,
  ): void {
    const type = metric instanceof Counter ? 'counter' : 'histogram';
    const twin = {
      name,
      help,
      type,
      get: async () => {
        const m = await metric.get();
        const modelName = this.source?.()?.modelName;
        const values = [];
        for (const v of modelName === undefined ? [] : m.values) {
          const labels = relabel(v.labels);
          if (!labels) continue;
          const metricName = (v as { metricName?: string }).metricName?.replace(m.name, name);
          values.push({ ...v, ...(metricName ? { metricName } : {}), labels: { ...labels, model_name: modelName } });
        }
        return { name, help, type, aggregator: m.aggregator, values };
      },
    };
    this.registry.registerMetric(twin as unknown as Counter<string>);
  }

  /** The Prometheus text exposition. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
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
