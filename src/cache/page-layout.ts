/**
 * The one KV page layout, shared by the page pool, the head stores, the kernels' references and every backend.
 * A page holds `pageTokens` slots of ONE (layer, KV head), in elements of the KV dtype (f32, or f16 as raw halves):
 *
 *   element 0                      K: [pageTokens][headDim]
 *   element pageTokens·headDim     V: [pageTokens][headDim]
 *
 * A head's slot s lives in page pageTable[s / pageTokens], row s % pageTokens; slots need not be in position order.
 */
export const DEFAULT_PAGE_TOKENS = 16;

/** Elements (K and V) in one page. */
export const pageElements = (pageTokens: number, headDim: number): number => 2 * pageTokens * headDim;

/** Bytes of one page in elements of `elementBytes` (4: f32, 2: f16). */
export const pageBytes = (pageTokens: number, headDim: number, elementBytes = 4): number => pageElements(pageTokens, headDim) * elementBytes;

/** Element offset, within its page, of row `row`'s key ... */
export const keyOffsetInPage = (row: number, headDim: number): number => row * headDim;

/** ... and of its value. */
export const valueOffsetInPage = (row: number, pageTokens: number, headDim: number): number => (pageTokens + row) * headDim;
