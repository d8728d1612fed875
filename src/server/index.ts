/** The OpenAI-compatible server: continuous batching over the shared KV pool, FastGen-aware admission. */
export { FastgenServer, startServer, toUsage, type ServerOptions, type ServerState } from './http.js';
export { Scheduler, SchedulerRejectError, JobFailedError, Job, type SchedulerOptions, type SubmitOptions, type JobResult } from './scheduler.js';
export { ServerMetrics, parsePrometheus, type GaugeSnapshot } from './metrics.js';
export * from './logprobs.js';
export { measureCapacity, formatCapacity, type CapacityReport } from './capacity.js';
export * from './openai-types.js';
