/** The OpenAI-compatible server: continuous batching over the shared KV pool, FastGen-aware admission. */
export { FastgenServer, startServer, toUsage, type ServerOptions, type ServerState } from './http.js';
export { Scheduler, SchedulerRejectError, JobFailedError, Job, type SchedulerOptions, type SubmitOptions, type JobResult } from './scheduler.js';
export { ServerMetrics, parsePrometheus, loadFigure, loadWeightPercent, type GaugeSnapshot, type LoadFigure } from './metrics.js';
export { HaproxyAgent, agentReply, AgentListenError, type AgentState } from './haproxy-agent.js';
export * from './logprobs.js';
export { measureCapacity, formatCapacity, type CapacityReport } from './capacity.js';
export * from './openai-types.js';
