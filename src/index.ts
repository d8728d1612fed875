// Public library surface; filled in as the modules land.
export * from './errors.js';
export type * from './model/types.js';
export type * from './tokenizer/types.js';
