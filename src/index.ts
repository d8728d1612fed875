// The public library surface of fastgen.
export * from './errors.js';
export type * from './model/types.js';
export type * from './tokenizer/types.js';
export { loadModel, Model, Generation, type LoadModelOptions, type ProfileReport } from './generate/model.js';
export type { GenerateOptions, GenerateResult, GenerateTimings, KvReport, StopReason } from './generate/request.js';
export { GenerationRequest } from './generate/request.js';
export { Sampler, argmax, validateSamplingOptions, type SamplingOptions } from './generate/sampler.js';
export { Xoshiro128StarStar } from './generate/rng.js';
export { loadCheckpoint, DEFAULT_MODEL_NAME } from './model/load-checkpoint.js';
// Models from bytes rather than paths (as the browser page loads them): loadModel(await detectModelFolder(folder)).
export { blobFolder, bytesSource, type ByteSource, type ModelFolder } from './model/files.js';
export { urlFolder } from './model/url-files.js';
export { detectModelFolder, type ModelInput } from './model/model-input.js';
export { loadTokenizer } from './tokenizer/load-tokenizer.js';
export { computeTokenClasses } from './tokenizer/token-classes.js';
export { PagePool, JsArena, type KvArena, type KvDtype } from './cache/page-pool.js';
export { HeadStore } from './cache/head-store.js';
export { SequenceKv, type HeadProfile, type KvStats } from './cache/sequence-kv.js';
export {
  CACHE_POLICIES,
  CACHE_POLICY_NAMES,
  cachePolicy,
  hybridCandidates,
  resolveCacheOptions,
  type CacheOptions,
  type CachePolicy,
  type CachePolicyName,
  type SequencePolicy,
  type ResolvedCacheOptions,
} from './cache/policies/index.js';
export { keepRule, type HeadPolicy, type KeepRule, type Amount } from './cache/head-policy.js';
export type { Backend, ForwardItem } from './backend/types.js';
export { createBackend, BACKEND_NAMES } from './backend/index.js';
export * from './server/index.js';
