import { InvalidOptionError } from '../errors.js';
import type { ForwardItem } from './types.js';

/**
 * Split a forward pass's items into consecutive parts that fit a backend's scratch: at most maxItems sequences and
 * maxRows new tokens each (and, where `together` says so, items that may share a pass). A single prompt longer than
 * maxRows is a clear error.
 */
export function splitBatch(items: readonly ForwardItem[], backend: string, maxItems: number, maxRows: number,
  together: (a: ForwardItem, b: ForwardItem) => boolean = () => true): ForwardItem[][] {
  const parts: ForwardItem[][] = [];
  let start = 0;
  while (start < items.length) {
    let rows = 0;
    let end = start;
    while (end < items.length && end - start < maxItems && rows + items[end].tokens.length <= maxRows && together(items[start], items[end])) {
      rows += items[end].tokens.length;
      end++;
    }
    if (end === start) {
      throw new InvalidOptionError(`the ${backend} backend processes at most ${maxRows} tokens in one pass, got a prompt of ${items[start].tokens.length}; shorten it`, 'prompt');
    }
    parts.push(items.slice(start, end));
    start = end;
  }
  return parts;
}
