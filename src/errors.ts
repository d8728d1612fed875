/**
 * Typed errors. Every error a user can cause carries a stable `code`, says what was wrong, where (file / field),
 * and what to do. The CLI prints `message` without a stack trace and exits non-zero; the server maps them to 400s.
 */
export type FastgenErrorCode =
  | 'MODEL_NOT_FOUND' // path does not exist
  | 'NOT_A_MODEL' // folder/file exists but is not a recognisable model
  | 'UNSUPPORTED_MODEL' // model_type or feature we do not implement
  | 'CORRUPT_MODEL' // truncated / malformed weights
  | 'CONFIG_ERROR' // config.json missing or bad field
  | 'TOKENIZER_ERROR' // tokenizer missing, corrupt, or does not fit the model
  | 'CHECKSUM_MISMATCH'
  | 'CONTEXT_OVERFLOW' // prompt (plus generation) longer than the context
  | 'INVALID_OPTION' // sampling / cache / CLI option out of range
  | 'KV_POOL_EXHAUSTED' // page pool cannot serve an allocation
  | 'GPU_UNAVAILABLE' // no WebGPU adapter (the message says what to install)
  | 'GPU_OUT_OF_MEMORY' // the GPU could not hold what was asked (the message says how much)
  | 'NON_FINITE_LOGITS' // the logits to sample from hold NaN / +Infinity, or nothing but −Infinity
  | 'ABORTED';

export class FastgenError extends Error {
  readonly code: FastgenErrorCode;
  /** The file or field the problem is in, when there is one. */
  readonly where?: string;
  constructor(code: FastgenErrorCode, message: string, where?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FastgenError';
    this.code = code;
    this.where = where;
  }
}

export class ModelLoadError extends FastgenError {
  constructor(code: FastgenErrorCode, message: string, where?: string, options?: { cause?: unknown }) {
    super(code, message, where, options);
    this.name = 'ModelLoadError';
  }
}

export class TokenizerError extends FastgenError {
  constructor(message: string, where?: string, options?: { cause?: unknown }) {
    super('TOKENIZER_ERROR', message, where, options);
    this.name = 'TokenizerError';
  }
}

export class InvalidOptionError extends FastgenError {
  constructor(message: string, where?: string) {
    super('INVALID_OPTION', message, where);
    this.name = 'InvalidOptionError';
  }
}

export class ContextOverflowError extends FastgenError {
  constructor(message: string) {
    super('CONTEXT_OVERFLOW', message);
    this.name = 'ContextOverflowError';
  }
}

export class KvPoolExhaustedError extends FastgenError {
  readonly neededBytes: number;
  readonly freeBytes: number;
  constructor(message: string, neededBytes: number, freeBytes: number) {
    super('KV_POOL_EXHAUSTED', message);
    this.name = 'KvPoolExhaustedError';
    this.neededBytes = neededBytes;
    this.freeBytes = freeBytes;
  }
}

/** The logits of a step cannot be sampled (NaN, +Infinity, or all −Infinity): a numerical failure, never a token. */
export class NonFiniteLogitsError extends FastgenError {
  constructor(message: string) {
    super('NON_FINITE_LOGITS', message);
    this.name = 'NonFiniteLogitsError';
  }
}

export class AbortedError extends FastgenError {
  constructor(message = 'generation was cancelled') {
    super('ABORTED', message);
    this.name = 'AbortedError';
  }
}
