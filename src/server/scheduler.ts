/**
 * Continuous batching over the shared KV page pool.
 *
 * Requests wait in a bounded FIFO queue and join the running batch at step boundaries. One step is one
 * `backend.forward` over every running request: a newly admitted one pushes its prompt (prefill, its own forward item),
 * the others their last sampled token (decode). Requests leave the batch as soon as they finish or are cancelled, and
 * their pages go back to the pool before the next step.
 *
 * Admission is by KV memory, in pages of the pool:
 *   - `full` reserves its worst case, ceil((prompt + max_tokens) / pageTokens) pages for each (layer, KV head);
 *   - `fastgen` reserves an estimate: before profiling, the worst case scaled by the fraction of tokens FastGen
 *     keeps (calibrated at startup, then learned from the requests that finish), in whole pages per head; after
 *     profiling, from the pages it actually holds, each head projected to the end of the request at its keep rate;
 *   - uniform baselines: their per-head budget.
 *   A request is admitted when its reservation plus the growth the running requests still expect fits the budget, and
 *   its prefill (the whole prompt at full size, before FastGen compresses it) fits in the pages free right now.
 * Every step then re-checks the real need: the pages the step can allocate (one per head whose last page is full, the
 * whole prompt for a prefill) must be free, else the youngest request is preempted — its pages released, the request
 * requeued and later replayed from its prompt with the same seed, so its text is unchanged and nothing already sent to
 * the client is sent twice. The pool therefore never runs out in the middle of a forward pass.
 *
 * Isolation: bad input is refused at submit (before it touches the pool); a failing sampler affects only its request;
 * if a batched forward throws, every request of that batch is restarted and from then on run in a forward of its own,
 * so only the request that fails again is failed.
 */
import { cachePolicy, resolveCacheOptions, type CacheOptions, type ResolvedCacheOptions } from '../cache/policies/index.js';
import type { PagePool } from '../cache/page-pool.js';
import type { SequenceKv } from '../cache/sequence-kv.js';
import { KvPoolExhaustedError } from '../errors.js';
import type { Model } from '../generate/model.js';
import { GenerationRequest, type GenerateOptions, type GenerateResult } from '../generate/request.js';
import { step, type StepOutcome } from '../generate/step.js';
import type { GaugeSnapshot, ServerMetrics } from './metrics.js';

export interface SchedulerOptions {
  /** Most requests in the running batch (default 64). */
  maxRunning?: number;
  /**
   * Most requests waiting for admission beyond the free running slots; beyond it, submit throws
   * SchedulerRejectError('queue_full') (default 256). 0 = no waiting room: a request is taken only while a running
   * slot is free.
   */
  maxWaiting?: number;
  /** KV budget the scheduler admits against (default: the pool's budget; it may only be lower). */
  kvBudgetBytes?: number;
  /** Cache options for requests that give none (merged under a request's own). Default { policy: 'fastgen' }. */
  defaultCache?: CacheOptions;
  /**
   * Initial estimate of the fraction of a full cache's tokens a FastGen request keeps, for admitting requests not yet
   * profiled (default 1, i.e. the full worst case). It is then learned from finished FastGen requests.
   */
  fastgenPrior?: number;
  metrics?: ServerMetrics;
  log?: (line: string) => void;
}

export type RejectReason = 'queue_full' | 'shutting_down' | 'too_large';

/** A request refused at submit time (queue full → 429, shutting down → 503, can never fit the KV budget → 400). */
/**
 * Tokens admission reserves per (layer, KV head) for a request that will reach `finalLength` tokens: what its policy
 * keeps at that length (CachePolicy.keptTokens) plus the step's new token, which sits in the cache during the step's
 * attention before the policy evicts. A profiled policy's share is not known before its prompt: `prior`, the fraction
 * learned from finished requests.
 */
export function reservedTokensPerHead(cache: ResolvedCacheOptions, promptLength: number, finalLength: number, prior: number): number {
  const kept = cachePolicy(cache.policy).keptTokens(cache, finalLength, promptLength);
  return kept === undefined ? Math.ceil(prior * finalLength) : Math.min(finalLength, kept + 1);
}

/**
 * Pool pages a started request is expected to hold at `finalLength` tokens: each head projected to the end at its own
 * keep rate so far, never beyond one slot per token (admission's reservation for a request that has run).
 */
export function projectedPages(kv: Pick<SequenceKv, 'seqLength' | 'stores'>, finalLength: number, pageTokens: number): number {
  const n = kv.seqLength;
  const remaining = Math.max(0, finalLength - n);
  let pages = 0;
  for (const st of kv.stores) {
    const projected = Math.min(finalLength, st.length + remaining, Math.ceil((st.length * finalLength) / n));
    pages += Math.ceil(projected / pageTokens);
  }
  return pages;
}

/** Pages a forward of n more tokens allocates: one per head whose last page fills up (the whole prompt's, from empty). */
export function newPages(kv: Pick<SequenceKv, 'stores'>, n: number, pageTokens: number): number {
  let pages = 0;
  for (const st of kv.stores) pages += Math.ceil((st.length + n) / pageTokens) - Math.ceil(st.length / pageTokens);
  return pages;
}

/**
 * The admission rule: a request joins when its reservation plus the growth the running requests still expect fits the
 * free pages, and its prefill plus the pages this step allocates for the others fits them right now.
 */
export function admits(a: { need: number; growth: number; prefill: number; stepNeeds: number; free: number }): boolean {
  return a.need + a.growth <= a.free && a.prefill + a.stepNeeds <= a.free;
}

export class SchedulerRejectError extends Error {
  constructor(
    readonly reason: RejectReason,
    message: string,
  ) {
    super(message);
    this.name = 'SchedulerRejectError';
  }
}

/** A request that failed while running (its own failure; the others carry on). */
export class JobFailedError extends Error {
  constructor(message: string, cause?: unknown) {
    super(message, { cause });
    this.name = 'JobFailedError';
  }
}

export interface SubmitOptions extends GenerateOptions {
  /** Called with each new piece of text, in order (never twice for the same text, even across preemptions). */
  onText?: (text: string, job: Job) => void;
  /**
   * Called once per job when it is first admitted into the running batch (not again after a preemption). Until then
   * the request has produced nothing: the server holds back a stream's response headers until this moment, so that a
   * request that dies in the queue (a replica killed, shut down) has sent no byte and a load balancer may retry it.
   */
  onStart?: (job: Job) => void;
}

export interface JobResult extends GenerateResult {
  jobId: number;
  /** Times the request was preempted for lack of memory and replayed. */
  preemptions: number;
  /** Most pool pages the request held after a step. */
  peakPages: number;
  queueMs: number;
  /** Arrival → first sampled token. */
  ttftMs: number;
  latencyMs: number;
  /** 'client' when cancelled by the caller, 'shutdown' when the server cancelled it while closing. */
  cancelled?: 'client' | 'shutdown';
}

type JobState = 'waiting' | 'running' | 'done';

export class Job {
  readonly id: number;
  readonly arrival = performance.now();
  readonly promptIds: readonly number[];
  readonly maxTokens: number;
  readonly cache: ResolvedCacheOptions;
  readonly result: Promise<JobResult>;
  state: JobState = 'waiting';
  /** The current attempt (replaced when the job is preempted and replayed). */
  req: GenerationRequest;
  admittedAt: number | undefined;
  firstTokenAt: number | undefined;
  /** Characters of text already delivered through onText. */
  sent = 0;
  /** Generated tokens already counted in the metrics. */
  counted = 0;
  preemptions = 0;
  peakPages = 0;
  /** Run in a forward of its own (after a batched forward failed). */
  isolated = false;
  failures = 0;
  cancelled: 'client' | 'shutdown' | undefined;
  /** Choices 2..n of an `n > 1` request: they fork this job's cache after its prefill instead of prefilling again. */
  followers: Job[] = [];
  /** For a follower: the job whose prefill it waits to fork. */
  leader: Job | undefined;
  resolve!: (r: JobResult) => void;
  reject!: (e: unknown) => void;

  constructor(
    id: number,
    req: GenerationRequest,
    readonly genOptions: GenerateOptions,
    readonly onText: ((text: string, job: Job) => void) | undefined,
    private readonly scheduler: Scheduler,
    readonly onStart?: (job: Job) => void,
  ) {
    this.id = id;
    this.req = req;
    this.promptIds = req.promptIds;
    this.maxTokens = genOptions.maxTokens ?? 256;
    this.cache = req.kv.options;
    this.result = new Promise<JobResult>((res, rej) => {
      this.resolve = res;
      this.reject = rej;
    });
    this.result.catch(() => {});
  }

  get policy(): string {
    return this.cache.policy;
  }

  /** With the logprobs option: one entry per generated token (the current attempt's). */
  get logprobs() {
    return this.req.logprobs;
  }

  /** Stop generating; the pages go back to the pool at the next step boundary (at once when still waiting). */
  cancel(reason: 'client' | 'shutdown' = 'client'): void {
    this.scheduler.cancel(this, reason);
  }
}

const PRIOR_WINDOW = 32;

export class Scheduler {
  readonly model: Model;
  readonly pool: PagePool;
  readonly maxRunning: number;
  readonly maxWaiting: number;
  readonly budgetBytes: number;
  readonly budgetPages: number;
  readonly defaultCache: CacheOptions;
  readonly running: Job[] = [];
  readonly waiting: Job[] = [];
  peakRunning = 0;
  peakWaiting = 0;
  peakPagesUsed = 0;
  /** Steps run so far. */
  steps = 0;
  /** Choices of `n > 1` requests that started from a fork of their first choice's prefill. */
  forkedChoices = 0;
  private readonly metrics: ServerMetrics | undefined;
  private readonly log: (line: string) => void;
  private nextId = 1;
  private loopActive = false;
  private closed = false;
  private idleWaiters: (() => void)[] = [];
  private readonly heads: number;
  private fastgenObserved: number[] = [];
  private fastgenPriorValue: number;

  constructor(model: Model, opts: SchedulerOptions = {}) {
    this.model = model;
    this.pool = model.pool;
    this.maxRunning = opts.maxRunning ?? 64;
    this.maxWaiting = opts.maxWaiting ?? 256;
    if (!(this.maxRunning >= 1)) throw new RangeError('maxRunning must be ≥ 1');
    if (!(this.maxWaiting >= 0)) throw new RangeError('maxWaiting must be ≥ 0');
    this.budgetBytes = Math.min(opts.kvBudgetBytes ?? Number.POSITIVE_INFINITY, this.pool.budgetBytes);
    this.budgetPages = Number.isFinite(this.budgetBytes) ? Math.floor(this.budgetBytes / this.pool.pageBytes) : Number.POSITIVE_INFINITY;
    this.defaultCache = opts.defaultCache ?? { policy: 'fastgen' };
    resolveCacheOptions(this.defaultCache);
    this.metrics = opts.metrics;
    this.log = opts.log ?? (() => {});
    this.heads = model.config.nLayers * model.config.nKvHeads;
    this.fastgenPriorValue = clamp(opts.fastgenPrior ?? 1, 0.02, 1);
  }

  /** Current estimate of the fraction of full-cache tokens a FastGen request keeps (used before it is profiled). */
  get fastgenPrior(): number {
    return this.fastgenPriorValue;
  }

  get idle(): boolean {
    return this.running.length === 0 && this.waiting.length === 0;
  }

  get accepting(): boolean {
    return !this.closed;
  }

  /** Pages a request of `promptTokens` needs at once for its prefill (every head at full size). */
  prefillPages(promptTokens: number): number {
    return this.heads * Math.ceil(promptTokens / this.pool.pageTokens);
  }

  /**
   * Queue a request. Validates everything first (throws the engine's typed errors for bad options, or
   * SchedulerRejectError), so a refused request never touches the pool or another request.
   */
  submit(promptIds: readonly number[], opts: SubmitOptions = {}): Job {
    return this.submitChoices(promptIds, opts, 1)[0];
  }

  /**
   * Queue `n` choices of one prompt (OpenAI's `n`): choice i samples with seed + i. The first prefills; the others
   * fork its compressed cache after the prefill and sample their first token from the same logits — the same tokens
   * each would produce alone with its seed. A choice that cannot fork (no free slot or pages) prefills on its own.
   */
  submitChoices(promptIds: readonly number[], opts: SubmitOptions, n: number): Job[] {
    if (this.closed) throw new SchedulerRejectError('shutting_down', 'the server is shutting down and takes no new requests');
    const { onText, onStart, ...gen } = opts;
    // The server's options fill in what a request leaves out, for the same policy only: a request that names another
    // policy takes that policy's defaults, not options meant for the server's.
    const own = gen.cache ?? {};
    const cache: CacheOptions = own.policy === undefined || own.policy === (this.defaultCache.policy ?? 'full') ? { ...this.defaultCache, ...own } : own;
    const seed = gen.seed ?? Math.floor(Math.random() * 2 ** 31);
    const reqs: GenerationRequest[] = [];
    const options: GenerateOptions[] = [];
    const releaseAll = () => reqs.forEach((r) => r.kv.release());
    try {
      for (let i = 0; i < n; i++) {
        // A fixed seed makes a replay after preemption produce exactly the same tokens.
        options.push({ ...gen, cache, signal: undefined, seed: seed + i, maxTokens: gen.maxTokens ?? 256 });
        reqs.push(this.model.createRequest(promptIds, options[i])); // throws InvalidOptionError / ContextOverflowError
      }
    } catch (e) {
      releaseAll();
      throw e;
    }
    const promptLength = reqs[0].promptIds.length;
    const need = this.prefillPages(promptLength);
    if (need > this.budgetPages) {
      releaseAll();
      throw new SchedulerRejectError(
        'too_large',
        `the prompt (${promptLength} tokens) needs ${need} KV pages (${need * this.pool.pageBytes} bytes) for its prefill, ` +
          `but the whole KV budget is ${this.budgetPages} pages (${this.budgetBytes} bytes); shorten the prompt or raise --kv-budget`,
      );
    }
    // The waiting room is what is left after the free running slots: with maxWaiting 0 an idle server still runs.
    const room = this.maxWaiting + Math.max(0, this.maxRunning - this.running.length) - this.waiting.length;
    if (n > room) {
      releaseAll();
      throw new SchedulerRejectError(
        'queue_full',
        `the server is at capacity: ${this.running.length} requests running and ${this.waiting.length} waiting (queue limit ${this.maxWaiting}` +
          `${n > 1 ? `; this request asks for ${n} choices` : ''}); retry later`,
      );
    }
    // Submitted with ids: truncation (if any) is already applied, and a replay must not truncate again.
    const jobs = reqs.map((req, i) => new Job(this.nextId++, req, { ...options[i], truncatePrompt: false }, onText, this, onStart));
    this.waiting.push(jobs[0]);
    for (const f of jobs.slice(1)) f.leader = jobs[0];
    jobs[0].followers = jobs.slice(1);
    if (this.waiting.length > this.peakWaiting) this.peakWaiting = this.waiting.length;
    this.kick();
    return jobs;
  }

  cancel(job: Job, reason: 'client' | 'shutdown'): void {
    if (job.state === 'done' || job.cancelled) return;
    job.cancelled = reason;
    if (job.state === 'waiting') {
      this.finishJob(job);
      return;
    }
    // Running: its pages are released at the next step boundary (never in the middle of a forward).
    this.kick();
  }

  /** Stop taking requests; let the running and waiting ones finish for up to graceMs, then cancel what is left. */
  async drain(graceMs: number): Promise<void> {
    this.closed = true;
    if (this.idle) return;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.whenIdle().then(() => false),
      new Promise<boolean>((r) => {
        timer = setTimeout(() => r(true), Math.max(0, graceMs));
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      this.log(`shutdown: cancelling ${this.running.length} running and ${this.waiting.length} waiting requests`);
      for (const j of [...this.waiting]) j.cancel('shutdown');
      for (const j of [...this.running]) j.cancel('shutdown');
      await this.whenIdle();
    }
  }

  whenIdle(): Promise<void> {
    if (this.idle && !this.loopActive) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  snapshot(modelName: string): GaugeSnapshot {
    let kvTokenBytes = 0;
    let kvFullBytes = 0;
    const headsPerPolicy: Record<string, number> = {};
    const runningPerPolicy: Record<string, number> = {};
    let reserved = 0;
    for (const j of this.running) {
      reserved += this.reservation(j);
      runningPerPolicy[j.policy] = (runningPerPolicy[j.policy] ?? 0) + 1;
      if (j.req.kv.seqLength === 0) continue;
      const st = j.req.kv.stats();
      kvTokenBytes += st.kvBytes;
      kvFullBytes += st.fullKvBytes;
      for (const [p, n] of Object.entries(st.headsPerPolicy)) headsPerPolicy[p] = (headsPerPolicy[p] ?? 0) + n;
    }
    return {
      modelName,
      running: this.running.length,
      waiting: this.waiting.length,
      maxRunning: this.maxRunning,
      peakRunning: this.peakRunning,
      kvPagesReserved: reserved,
      fastgenKeptRatio: this.fastgenPriorValue,
      kvPagesUsed: this.pool.pagesInUse,
      kvPagesTotal: this.budgetPages,
      kvPageBytes: this.pool.pageBytes,
      kvBudgetBytes: this.budgetBytes,
      kvPeakPagesUsed: this.peakPagesUsed,
      kvTokenBytes,
      kvFullBytes,
      headsPerPolicy,
      runningPerPolicy,
    };
  }

  // ---------------------------------------------------------------------------------------------------------------
  // The loop

  private kick(): void {
    if (this.loopActive) return;
    this.loopActive = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    try {
      while (!this.idle) {
        await this.step();
        // Let the event loop deliver streamed text, take new requests and notice disconnects between steps.
        await new Promise<void>((r) => setImmediate(r));
      }
    } catch (e) {
      // A bug in the scheduler itself: fail what is in flight rather than hang it.
      this.log(`scheduler error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      for (const j of [...this.running, ...this.waiting]) this.finishJob(j, new JobFailedError(`internal scheduler error: ${String(e)}`, e));
    } finally {
      this.loopActive = false;
      if (!this.idle) this.kick();
      else {
        const w = this.idleWaiters;
        this.idleWaiters = [];
        for (const r of w) r();
      }
    }
  }

  /** One step: retire cancelled requests, admit, make sure this step's pages exist, run one batched forward. */
  private async step(): Promise<void> {
    for (const j of [...this.running]) if (j.cancelled) this.finishJob(j);
    this.admit();
    if (this.running.length === 0) return;
    this.ensureStepMemory();
    if (this.running.length === 0) return;
    if (this.running.length > this.peakRunning) this.peakRunning = this.running.length;

    const batch = this.running.slice();
    const groups: Job[][] = [];
    const shared = batch.filter((j) => !j.isolated);
    if (shared.length) groups.push(shared);
    for (const j of batch) if (j.isolated) groups.push([j]);

    this.steps++;
    this.metrics?.steps.inc();
    this.metrics?.batchedSequences.inc(batch.length);
    for (const group of groups) {
      const prefill = group.map((j) => j.req.kv.seqLength === 0);
      // A leader's prefill logits are copied to the choices that fork it: they must come back, even from a backend
      // that samples on its device.
      for (const j of group) j.req.keepLogits = j.followers.length > 0;
      let outcomes: StepOutcome[];
      try {
        outcomes = await step(this.model.backend, group.map((j) => j.req));
      } catch (e) {
        this.forwardFailed(group, e);
        continue;
      }
      for (let i = 0; i < group.length; i++) this.acceptOne(group[i], outcomes[i], prefill[i]);
    }
    if (this.pool.pagesInUse > this.peakPagesUsed) this.peakPagesUsed = this.pool.pagesInUse;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Memory accounting

  /** Pool pages a job holds now. */
  private held(j: Job): number {
    let n = 0;
    for (const st of j.req.kv.stores) n += st.pages.length;
    return n;
  }

  /** Pages the job's next forward can allocate: one per head whose last page is full, or its whole prompt for a prefill. */
  private stepNeed(j: Job): number {
    // A choice resumed from a forked prefill samples its first token without a forward pass.
    if (j.req.done || j.req.pendingLogits !== undefined) return 0;
    return newPages(j.req.kv, j.req.input().length, this.pool.pageTokens);
  }

  private finalLength(j: Job): number {
    return Math.min(this.model.config.maxSeqLen, j.promptIds.length + j.maxTokens);
  }

  /** Pages the job is expected to hold at its end (never less than it holds now). */
  private reservation(j: Job): number {
    const pt = this.pool.pageTokens;
    const finalLen = this.finalLength(j);
    const kv = j.req.kv;
    let pages = 0;
    if (kv.seqLength === 0) {
      pages = this.heads * Math.ceil(reservedTokensPerHead(j.cache, j.promptIds.length, finalLen, this.fastgenPriorValue) / pt);
    } else {
      pages = projectedPages(kv, finalLen, pt);
    }
    return Math.max(pages, this.held(j));
  }

  private freePages(): number {
    return this.budgetPages - this.pool.pagesInUse;
  }

  private admit(): void {
    while (this.waiting.length > 0 && this.running.length < this.maxRunning) {
      const j = this.waiting[0];
      if (j.cancelled) {
        this.finishJob(j);
        continue;
      }
      const free = this.freePages();
      let growth = 0;
      let stepNeeds = 0;
      for (const r of this.running) {
        growth += Math.max(0, this.reservation(r) - this.held(r));
        stepNeeds += this.stepNeed(r);
      }
      const need = this.reservation(j);
      const prefill = this.stepNeed(j);
      const fits = admits({ need, growth, prefill, stepNeeds, free });
      if (!fits) {
        if (this.running.length > 0) return; // FIFO: wait for memory to free up
        if (prefill > free) {
          // Nothing of ours runs, yet the prompt does not fit: someone else holds the pool's pages.
          this.waiting.shift();
          this.finishJob(
            j,
            new KvPoolExhaustedError(
              `KV memory is held outside the scheduler: the prompt needs ${prefill} pages but only ${Math.max(0, free)} are free`,
              prefill * this.pool.pageBytes,
              Math.max(0, free) * this.pool.pageBytes,
            ),
          );
          continue;
        }
        // Alone it may well fit (the reservation is an estimate); the step check stops it if it does not.
      }
      this.waiting.shift();
      this.startRunning(j);
    }
  }

  private startRunning(j: Job): void {
    j.state = 'running';
    if (j.admittedAt === undefined) {
      j.admittedAt = performance.now();
      this.metrics?.queueTime.observe((j.admittedAt - j.arrival) / 1000);
      this.metrics?.promptTokens.inc(j.promptIds.length);
      try {
        j.onStart?.(j);
      } catch (e) {
        this.log(`request ${j.id}: its start callback failed (${String(e)}); cancelling it`);
        j.cancelled = 'client';
      }
    }
    this.running.push(j);
  }

  /** Make sure this step's allocations cannot fail: preempt the youngest requests until they fit. */
  private ensureStepMemory(): void {
    for (;;) {
      let need = 0;
      for (const j of this.running) need += this.stepNeed(j);
      const free = this.freePages();
      if (need <= free) return;
      if (this.running.length === 1) {
        // A single request that outgrew the whole budget: end it like a full context.
        const j = this.running[0];
        this.log(`request ${j.id}: KV budget exhausted after ${j.req.generated.length} tokens; finishing it with finish_reason=length`);
        j.req.finish('length');
        if (j.req.text.length > j.sent) {
          const piece = j.req.text.slice(j.sent);
          j.sent = j.req.text.length;
          try {
            j.onText?.(piece, j);
          } catch {
            // the consumer is gone; the job ends here anyway
          }
        }
        this.finishJob(j);
        return;
      }
      let victim = this.running[0];
      for (const j of this.running) if (j.id > victim.id) victim = j;
      this.preempt(victim);
    }
  }

  /** Release the job's pages and put it back in the queue, to be replayed from its prompt. */
  private preempt(j: Job): void {
    this.removeRunning(j);
    j.preemptions++;
    this.metrics?.preemptions.inc();
    this.log(`request ${j.id}: preempted after ${j.req.generated.length} tokens (KV pool short: ${this.pool.pagesInUse}/${this.budgetPages} pages); requeued`);
    this.restart(j);
  }

  private restart(j: Job): void {
    j.req.kv.release();
    try {
      j.req = this.model.createRequest(j.promptIds, j.genOptions);
    } catch (e) {
      this.finishJob(j, new JobFailedError(`could not restart the request: ${String(e)}`, e));
      return;
    }
    this.enqueue(j);
  }

  /** Into the queue in arrival order, so it goes before requests that came after it. */
  private enqueue(j: Job): void {
    j.state = 'waiting';
    let i = 0;
    while (i < this.waiting.length && this.waiting[i].id < j.id) i++;
    this.waiting.splice(i, 0, j);
    if (this.waiting.length > this.peakWaiting) this.peakWaiting = this.waiting.length;
  }

  private forwardFailed(group: Job[], e: unknown): void {
    const msg = e instanceof Error ? e.message : String(e);
    if (group.length === 1) {
      const j = group[0];
      j.failures++;
      this.removeRunning(j);
      if (e instanceof KvPoolExhaustedError && j.failures < 3) {
        this.log(`request ${j.id}: KV pool ran out during its forward; restarting it`);
        this.restart(j);
      } else {
        this.log(`request ${j.id}: forward failed: ${msg}`);
        this.finishJob(j, new JobFailedError(`generation failed: ${msg}`, e));
      }
      return;
    }
    // We cannot tell which sequence failed and every cache in the batch may be half-updated: restart them all, each
    // in a forward of its own from now on, so that only the faulty one fails again.
    this.log(`batched forward of ${group.length} requests failed (${msg}); restarting them one by one`);
    for (const j of group) {
      this.removeRunning(j);
      j.isolated = true;
      this.restart(j);
    }
  }

  private acceptOne(j: Job, outcome: StepOutcome, prefill: boolean): void {
    if (j.state !== 'running') return;
    if (outcome.error !== undefined) {
      const e = outcome.error;
      this.removeRunning(j);
      this.finishJob(j, new JobFailedError(`sampling failed: ${e instanceof Error ? e.message : String(e)}`, e));
      return;
    }
    if (prefill) {
      if (cachePolicy(j.cache.policy).adaptive && this.metrics) {
        for (const [p, n] of Object.entries(j.req.kv.stats().headsPerPolicy)) this.metrics.headsProfiled.inc({ policy: p }, n);
      }
      if (j.followers.length) this.forkFollowers(j);
    }
    this.delivered(j);
  }

  /**
   * Choices 2..n start from a copy of the leader's compressed cache and sample their first token from its prefill
   * logits at the next step, with no forward pass of their own (GenerationRequest.resume); one that finds no free
   * running slot or pages for the copy is queued to prefill on its own.
   */
  private forkFollowers(leader: Job): void {
    const followers = leader.followers;
    leader.followers = [];
    // The leader's buffer is rewritten by its next step: each follower keeps a copy of the prefill's logits.
    const logits = leader.req.logitsBuffer(this.model.config.vocabSize);
    for (const f of followers) {
      if (f.state !== 'waiting') continue;
      f.leader = undefined;
      let kv: SequenceKv | undefined;
      if (this.running.length < this.maxRunning && this.held(leader) <= this.freePages()) {
        try {
          kv = leader.req.kv.fork();
        } catch {
          kv = undefined; // the pool is short after all: prefill on its own
        }
      }
      if (!kv) {
        this.enqueue(f);
        continue;
      }
      f.req.kv.release();
      this.forkedChoices++;
      f.req = GenerationRequest.resume(kv, logits.slice(), this.model.tokenizer, this.model.config.maxSeqLen, f.genOptions, leader.req.promptIds.slice());
      f.req.prefillMs = leader.req.prefillMs; // the shared prefill
      this.startRunning(f);
    }
  }

  /** After a token: time to first token, counters, peak pages, streamed text; retire the job when it is done. */
  private delivered(j: Job): void {
    const now = performance.now();
    if (j.firstTokenAt === undefined) {
      j.firstTokenAt = now;
      this.metrics?.ttft.observe((now - j.arrival) / 1000);
    }
    const g = j.req.generated.length;
    if (g > j.counted) {
      this.metrics?.generationTokens.inc(g - j.counted);
      j.counted = g;
    }
    const pages = this.held(j);
    if (pages > j.peakPages) j.peakPages = pages;
    if (j.req.text.length > j.sent) {
      const piece = j.req.text.slice(j.sent);
      j.sent = j.req.text.length;
      try {
        j.onText?.(piece, j);
      } catch (e) {
        this.log(`request ${j.id}: the consumer of its text failed (${String(e)}); cancelling it`);
        j.cancelled = 'client';
      }
    }
    if (j.req.done) this.finishJob(j);
  }

  /** Learn the fraction of a full cache's tokens FastGen requests keep at their peak, for admitting unprofiled ones. */
  private observeFastgen(r: GenerateResult): void {
    if (r.kv.peakFullKvBytes === 0) return;
    this.fastgenObserved.push(r.kv.peakKvBytes / r.kv.peakFullKvBytes);
    if (this.fastgenObserved.length > PRIOR_WINDOW) this.fastgenObserved.shift();
    const mean = this.fastgenObserved.reduce((a, b) => a + b, 0) / this.fastgenObserved.length;
    this.fastgenPriorValue = clamp(mean + 0.05, 0.02, 1);
  }

  private removeRunning(j: Job): void {
    const i = this.running.indexOf(j);
    if (i >= 0) this.running.splice(i, 1);
  }

  /** Take the job out of the scheduler, release its pages, settle its promise. Idempotent. */
  private finishJob(j: Job, error?: unknown): void {
    if (j.state === 'done') return;
    this.removeRunning(j);
    const wi = this.waiting.indexOf(j);
    if (wi >= 0) this.waiting.splice(wi, 1);
    j.state = 'done';
    // Choices still waiting to fork this job's prefill: cancelled with it (one client request), else on their own.
    const followers = j.followers;
    j.followers = [];
    for (const f of followers) {
      f.leader = undefined;
      if (j.cancelled) f.cancel(j.cancelled);
      else if (f.state === 'waiting') this.enqueue(f);
    }
    let result: GenerateResult | undefined;
    try {
      result = j.req.result();
    } catch (e) {
      error ??= e;
    }
    j.req.kv.release();
    const now = performance.now();
    const latency = (now - j.arrival) / 1000;
    if (error || !result) {
      this.metrics?.requests.inc({ finish_reason: 'error' });
      j.reject(error);
      return;
    }
    if (j.cancelled) result.stopReason = 'aborted';
    else if (cachePolicy(j.cache.policy).adaptive && result.generatedTokens > 0) this.observeFastgen(result);
    const reason = result.stopReason === 'eos' || result.stopReason === 'stop' ? 'stop' : result.stopReason === 'aborted' ? 'aborted' : 'length';
    if (this.metrics) {
      this.metrics.requests.inc({ finish_reason: reason });
      this.metrics.e2e.observe(latency);
      if (result.generatedTokens > 1 && j.firstTokenAt !== undefined) this.metrics.itl.observe((now - j.firstTokenAt) / 1000 / (result.generatedTokens - 1));
      this.metrics.peakKv.observe(result.kv.peakKvBytes);
    }
    j.resolve({
      ...result,
      jobId: j.id,
      preemptions: j.preemptions,
      peakPages: j.peakPages,
      queueMs: (j.admittedAt ?? now) - j.arrival,
      ttftMs: (j.firstTokenAt ?? now) - j.arrival,
      latencyMs: now - j.arrival,
      cancelled: j.cancelled,
    });
  }
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}
