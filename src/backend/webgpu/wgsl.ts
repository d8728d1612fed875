/**
 * The WGSL kernels of the WebGPU backend, as source builders. Conventions shared by all of them:
 *   - binding 0 is a uniform block of parameters (struct P), one 256-byte slot per dispatch (see encoder.ts);
 *   - activations live in ONE f32 storage buffer `act` at offsets (x, q, k, v, …): one read_write binding per kernel,
 *     so a kernel may read and write different regions of it without aliasing two bindings;
 *   - weights are `array<u32>` words: f32 bit patterns, two packed halves (widened with unpack2x16float: never
 *     shader-f16, which the NVIDIA Vulkan adapter lacks), or q8_0 (4 int8 per word, rows padded to 32-value blocks,
 *     one f32 scale per block in a second buffer: the wasm backend's layout);
 *   - more than 65535 workgroups go to a second grid dimension: workgroup index = wid.x + wid.y · 65535.
 * Every kernel has a plain-TS reference in dev/kernels/ (checked on random inputs with odd sizes).
 */

export type WeightKind = 'f32' | 'f16' | 'q8_0';

/** Grid columns used by every kernel that flattens a large index space (see the file comment). */
export const GRID_X = 65535;

/** `fn wload(row, col) -> f32` and `fn wword(row, i) -> u32` over bindings `w` (and `wd` for q8_0 scales). */
function weightAccess(kind: WeightKind): string {
  switch (kind) {
    case 'f32':
      return `fn wload(row: u32, col: u32) -> f32 { return bitcast<f32>(w[row * p.rowWords + col]); }`;
    case 'f16':
      return `fn wload(row: u32, col: u32) -> f32 { return unpack2x16float(w[row * p.rowWords + (col >> 1u)])[col & 1u]; }`;
    case 'q8_0':
      return `fn wload(row: u32, col: u32) -> f32 {
  let q = extractBits(bitcast<i32>(w[row * p.rowWords + (col >> 2u)]), (col & 3u) * 8u, 8u);
  return wd[row * (p.rowWords >> 3u) + (col >> 5u)] * f32(q);
}`;
  }
}

const WEIGHT_BINDINGS = `@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read> wd: array<f32>;`;

/** Embedding rows: act[outOff + t·dim + c] = W[token[t], c] for the tokens of this weight part [rowLo, rowHi). */
export function embedWgsl(kind: WeightKind): string {
  return `
struct P { T: u32, dim: u32, rowWords: u32, outOff: u32, tokOff: u32, rowLo: u32, rowHi: u32, _p: u32 };
@group(0) @binding(0) var<uniform> p: P;
${WEIGHT_BINDINGS}
@group(0) @binding(4) var<storage, read> pbuf: array<u32>;
${weightAccess(kind)}
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  _ = &wd; // declared for every kind: keeps the binding in the auto layout
  let c = g.x;
  let t = g.y;
  if (c >= p.dim || t >= p.T) { return; }
  let tok = pbuf[p.tokOff + t];
  if (tok < p.rowLo || tok >= p.rowHi) { return; }
  act[p.outOff + t * p.dim + c] = wload(tok - p.rowLo, c);
}`;
}

/**
 * What the matrix × vector kernel does to its input on the way in (fusing the dispatch before it):
 *   'norm': x ⊙ g / rms(x) — RMSNorm with weight g (binding 4), each token's Σx² summed in the same loop over x;
 *   'swiglu': silu(x[c]) · x[upOff + c] — the gate and up halves of the fused gate|up rows (upOff in `_a`).
 */
export type MatvecInput = 'plain' | 'norm' | 'swiglu';

/**
 * Matrix × a few vectors (decode): out[t, r] (+)= Σ_c W[r, c] · x[t, c] for t < T, r < rows.
 * One workgroup of WG threads (256 by default) per R rows; the threads stride over the row's words (coalesced), each
 * keeping R × TB partial sums (TB tokens at a time; a workgroup re-reads its rows, from cache, for each block of TB),
 * reduced with subgroupAdd and then across subgroups. `input` fuses the RMSNorm or SwiGLU before it (MatvecInput).
 */
export function matvecWgsl(kind: WeightKind, R: number, subgroups: boolean, WG = 256, TB = 4, input: MatvecInput = 'plain'): string {
  const norm = input === 'norm';
  // Per token: R dot products, plus Σx² when normalising.
  const accN = R * TB + (norm ? TB : 0);
  // Generated unrolled: one scalar accumulator per (row, token), no dynamically indexed arrays (which compilers
  // spill to memory: 50× slower on lavapipe).
  const rows = [...Array(R).keys()];
  const toks = [...Array(TB).keys()];
  const acc = (r: number, t: number) => `a${r}_${t}`;
  // Per word wi: widen each row's word once, then multiply it into every token's x.
  const load = {
    f32: (r: number) => `let w${r} = select(0.0, bitcast<f32>(w[(r0 + ${r}u) * p.rowWords + wi]), r0 + ${r}u < p.rows);`,
    f16: (r: number) => `let w${r} = select(vec2f(0.0), unpack2x16float(w[(r0 + ${r}u) * p.rowWords + wi]), r0 + ${r}u < p.rows);`,
    q8_0: (r: number) => `var w${r} = vec4f(0.0);
      if (r0 + ${r}u < p.rows) {
        let word = bitcast<i32>(w[(r0 + ${r}u) * p.rowWords + wi]);
        w${r} = wd[(r0 + ${r}u) * (p.rowWords >> 3u) + (wi >> 3u)]
          * vec4f(f32(extractBits(word, 0u, 8u)), f32(extractBits(word, 8u, 8u)), f32(extractBits(word, 16u, 8u)), f32(extractBits(word, 24u, 8u)));
      }`,
  }[kind];
  // Values per word (1, 2 or 4 columns), and x's element j of the word as a raw load (0 past the columns).
  const per = { f32: 1, f16: 2, q8_0: 4 }[kind];
  const vecT = { 1: 'f32', 2: 'vec2f', 4: 'vec4f' }[per]!;
  const elem = (t: number, j: number, off = '') =>
    `select(0.0, act[p.xOff + (t0 + ${t}u) * p.xStride + ${per}u * wi + ${j}u${off}], ${per}u * wi + ${j}u < p.cols)`;
  // Every element guarded, f32 too: rows are padded to 16 bytes (rowWordsOf), so wi may pass the last column.
  const raw = (t: number, off = '') => (per === 1 ? elem(t, 0, off) : `${vecT}(${[...Array(per).keys()].map((j) => elem(t, j, off)).join(', ')})`);
  const gel = (j: number) => `select(0.0, g[${per}u * wi + ${j}u], ${per}u * wi + ${j}u < p.cols)`;
  const gvec = per === 1 ? gel(0) : `${vecT}(${[...Array(per).keys()].map(gel).join(', ')})`;
  const xload = (t: number) => {
    if (input === 'swiglu') {
      return `let xg${t} = ${raw(t)};
        let x${t} = xg${t} / (1.0 + exp(-xg${t})) * ${raw(t, ' + p.upOff')};`;
    }
    if (norm) {
      return `let xr${t} = ${raw(t)};
        ss${t} += ${per === 1 ? `xr${t} * xr${t}` : `dot(xr${t}, xr${t})`};
        let x${t} = xr${t} * ${gvec};`;
    }
    return `let x${t} = ${raw(t)};`;
  };
  const mul = kind === 'f32' ? (r: number, t: number) => `w${r} * x${t}` : (r: number, t: number) => `dot(w${r}, x${t})`;
  const body = `${rows.map(load).join('\n      ')}
      ${toks.map((t) => `if (${t}u < tn) {
        ${xload(t)}
        ${rows.map((r) => `${acc(r, t)} += ${mul(r, t)};`).join(' ')}
      }`).join('\n      ')}`;
  // Accumulators in reduction order: (row, token) pairs, then each token's Σx².
  const names = [...rows.flatMap((r) => toks.map((t) => acc(r, t))), ...(norm ? toks.map((t) => `ss${t}`) : [])];
  const reduce = subgroups
    ? `${names.map((a, i) => `{ let s = subgroupAdd(${a}); if (sgi == 0u) { red[${i * (WG / 4)}u + lid.x / sgs] = s; } }`).join('\n    ')}
    workgroupBarrier();
    if (lid.x < ${accN}u) {
      var s = 0.0;
      for (var j = 0u; j < ${WG}u / sgs; j++) { s += red[lid.x * ${WG / 4}u + j]; }
      final_[lid.x] = s;
    }`
    : `${names.map((a, i) => `red[lid.x * ${accN}u + ${i}u] = ${a};`).join(' ')}
    workgroupBarrier();
    if (lid.x < ${accN}u) {
      var s = 0.0;
      for (var j = 0u; j < ${WG}u; j++) { s += red[j * ${accN}u + lid.x]; }
      final_[lid.x] = s;
    }`;
  const scale = norm ? ` * inverseSqrt(final_[${R * TB}u + lid.x % ${TB}u] / f32(p.cols) + p.eps)` : '';
  return `${subgroups ? 'enable subgroups;' : ''}
struct P { T: u32, rows: u32, cols: u32, rowWords: u32, xOff: u32, xStride: u32, outOff: u32, outStride: u32, accumulate: u32, rowBase: u32, upOff: u32, eps: f32 };
@group(0) @binding(0) var<uniform> p: P;
${WEIGHT_BINDINGS}
${norm ? '@group(0) @binding(4) var<storage, read> g: array<f32>;' : ''}
var<workgroup> red: array<f32, ${subgroups ? accN * (WG / 4) : accN * WG}>;
var<workgroup> final_: array<f32, ${accN}>;
@compute @workgroup_size(${WG}) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u
  ${subgroups ? ', @builtin(subgroup_invocation_id) sgi: u32, @builtin(subgroup_size) sgs: u32' : ''}) {
  _ = &wd;
  let r0 = (wid.x + wid.y * ${GRID_X}u) * ${R}u;
  if (r0 >= p.rows) { return; }
  for (var t0 = 0u; t0 < p.T; t0 += ${TB}u) {
    let tn = min(${TB}u, p.T - t0);
    ${names.map((a) => `var ${a} = 0.0;`).join(' ')}
    for (var wi = lid.x; wi < p.rowWords; wi += ${WG}u) {
      ${body}
    }
    ${reduce}
    workgroupBarrier();
    if (lid.x < ${R * TB}u) {
      let r = lid.x / ${TB}u;
      let t = t0 + lid.x % ${TB}u;
      if (r0 + r < p.rows && t < p.T) {
        let o = p.outOff + t * p.outStride + p.rowBase + r0 + r;
        act[o] = select(0.0, act[o], p.accumulate != 0u) + final_[lid.x]${scale};
      }
    }
    workgroupBarrier();
  }
}`;
}

/** Values of each weight kind in one 16-byte word (vec4<u32>) of a row. */
const VALUES_PER_VEC4: Record<WeightKind, number> = { f32: 4, f16: 8, q8_0: 16 };

/**
 * Matrix × a few vectors, reading weights as 16-byte words: out[t, r] (+)= Σ_c W[r, c] · x[t, c] for t < T, r < rows.
 * The row stride p.rowWords must be a multiple of 4 (ops.ts pads rows at upload). w is bound as array<vec4<u32>>:
 * one load brings 4 f32 (bitcast), 8 halves (unpack2x16float) or 16 int8 of a q8_0 block (a block of 32 is 2 words;
 * its scale wd[row · blocks + word / 2]). One workgroup of WG threads per R rows; thread i reads words i, i + WG, …
 * of each of its R rows (R independent 16-byte loads in flight, adjacent threads adjacent words: coalesced) and
 * keeps R × TB sums: ALL the pass's tokens (up to TB) at once, so each weight word is read from memory once per pass
 * (T > TB loops over blocks of TB, re-reading the rows). Tokens past T are clamped to the last one (branch-free
 * loads; their sums are dropped). Reduction: subgroupAdd, one partial per subgroup in workgroup memory (sized by the
 * adapter's smallest subgroup, sgMin), summed by one thread per (row, token). Needs subgroups.
 * `ragged`: cols is not a multiple of the word's values, so x (and g) past cols read as 0 (the padding's weights are
 * finite, random ones included, and 0 · finite = 0); otherwise x is read unguarded.
 * x is read with scalar loads from `act` (one f32 array for every region of activations; see the file comment): a
 * thread's 4–16 consecutive floats, 16–64 bytes from its neighbour's, so a warp-wide load touches 4–16 cache lines
 * for 128 useful bytes. `stage` instead copies each iteration's x (TB tokens × WG words' columns, with the SwiGLU
 * applied) into workgroup memory with coalesced loads (adjacent threads, adjacent floats), then each thread reads its
 * columns as vec4f, laid out [token][chunk k][thread] so a warp's reads are contiguous. It costs two barriers per
 * iteration and TB · WG · values-per-word floats of workgroup memory (GpuOps shrinks WG to fit).
 * (A second, vec4f binding of `act` is not an option: Dawn rejects aliased writable storage bindings.)
 * `xvec` binds `act` itself as array<vec4f>: each chunk of x is one 16-byte load (a quarter of the load instructions
 * of the scalar path, which bound the kernel from 8 tokens on), and each output is written as one component of its
 * vec4f. It needs x's offset, stride and the SwiGLU's upOff in whole vec4f, no ragged columns and no staging; the
 * norm weight g is then read as vec4f too.
 */
export function matvecVec4Wgsl(kind: WeightKind, R: number, TB: number, WG: number, sgMin: number, input: MatvecInput = 'plain', ragged = false,
  stage = false, xvec = false): string {
  if (xvec && (ragged || stage)) throw new Error('internal: the vec4f x path reads whole, unstaged vec4f');
  const norm = input === 'norm';
  const per = VALUES_PER_VEC4[kind];
  const quarters = [...Array(per / 4).keys()]; // vec4f chunks of a word: columns c + 4k … c + 4k + 3
  const rows = [...Array(R).keys()];
  const toks = [...Array(TB).keys()];
  const accN = R * TB + (norm ? TB : 0);
  const NS = Math.ceil(WG / sgMin); // partials per accumulator: at most one per subgroup
  const acc = (r: number, t: number) => `a${r}_${t}`;
  // Four consecutive f32 of `arr` from index `at` (+ j), 0 past p.cols when ragged; with xvec, `at` is a sum of
  // multiples of 4 and the four are one vec4f.
  const four = (arr: string, at: string, k: number) => xvec ? `${arr}[(${at}) / 4u + ${k}u]` : `vec4f(${[0, 1, 2, 3].map((j) => {
    const i = `${at} + ${4 * k + j}u`;
    return ragged ? `select(0.0, ${arr}[${i}], c + ${4 * k + j}u < p.cols)` : `${arr}[${i}]`;
  }).join(', ')})`;
  // Chunk k of row r's word as 4 f32 (q8_0: times the block scale s_r).
  const unpack = {
    f32: (r: number) => `bitcast<vec4f>(q${r})`,
    f16: (r: number, k: number) => `vec4f(unpack2x16float(q${r}[${2 * k}]), unpack2x16float(q${r}[${2 * k + 1}]))`,
    q8_0: (r: number, k: number) => {
      const word = `bitcast<i32>(q${r}[${k}])`;
      return `s${r} * vec4f(${[0, 8, 16, 24].map((b) => `f32(extractBits(${word}, ${b}u, 8u))`).join(', ')})`;
    },
  }[kind];
  const NQ = per / 4;
  // x chunk k of token t, after the fused input step.
  const xload = (t: number, k: number) => {
    if (stage) {
      // Staged: SwiGLU applied and columns past p.cols zeroed on the way in.
      const x = `xs[${(t * NQ + k) * WG}u + lid.x]`;
      return norm ? `let x0 = ${x};
          ss${t} += dot(x0, x0);
          let x = x0 * g${k};` : `let x = ${x};`;
    }
    if (input === 'swiglu') {
      return `let xg = ${four('act', `xr${t} + c`, k)};
          let x = xg / (1.0 + exp(-xg)) * ${four('act', `xr${t} + p.upOff + c`, k)};`;
    }
    if (norm) {
      return `let xr = ${four('act', `xr${t} + c`, k)};
          ss${t} += dot(xr, xr);
          let x = xr * g${k};`;
    }
    return `let x = ${four('act', `xr${t} + c`, k)};`;
  };
  const body = `let c = vi * ${per}u;
      ${rows.map((r) => `let q${r} = w[rb${r} + vi];`).join(' ')}
      ${kind === 'q8_0' ? rows.map((r) => `let s${r} = wd[sb${r} + (vi >> 1u)];`).join(' ') : ''}
      ${quarters.map((k) => `{
        ${norm ? `let g${k} = ${four('g', 'c', k)};` : ''}
        ${rows.map((r) => `let w${r} = ${unpack(r, k)};`).join('\n        ')}
        ${toks.map((t) => `{
          ${xload(t, k)}
          ${rows.map((r) => `${acc(r, t)} += dot(w${r}, x);`).join(' ')}
        }`).join('\n        ')}
      }`).join('\n      ')}`;
  const names = [...rows.flatMap((r) => toks.map((t) => acc(r, t))), ...(norm ? toks.map((t) => `ss${t}`) : [])];
  const scale = norm ? ` * inverseSqrt(final_[${R * TB}u + i % ${TB}u] / f32(p.cols) + p.eps)` : '';
  // The word loop: every thread strides over the row's words; staged, the whole workgroup walks the iterations
  // together (barriers), copying the iteration's x first: column e of token t's WG · per columns goes to
  // xs[(t · NQ + (e mod per) / 4) · WG + e / per], component e mod 4 (thread e / per reads it as its chunk).
  const span = WG * per;
  const xval = (at: string) => (input === 'swiglu'
    ? `let xg = act[${at}]; v = xg / (1.0 + exp(-xg)) * act[${at} + p.upOff];`
    : `v = act[${at}];`);
  const loop = stage
    ? `for (var base = 0u; base < rv; base += ${WG}u) {
      for (var e = lid.x; e < ${TB * span}u; e += ${WG}u) {
        let t = e / ${span}u;
        let col = base * ${per}u + e % ${span}u;
        var v = 0.0;
        if (col < p.cols) { ${xval(`p.xOff + min(t0 + t, p.T - 1u) * p.xStride + col`)} }
        let f = e % ${per}u;
        xs[(t * ${NQ}u + f / 4u) * ${WG}u + (e % ${span}u) / ${per}u][f % 4u] = v;
      }
      workgroupBarrier();
      let vi = base + lid.x;
      if (vi < rv) {
        ${body}
      }
      workgroupBarrier();
    }`
    : `for (var vi = lid.x; vi < rv; vi += ${WG}u) {
      ${body}
    }`;
  return `enable subgroups;
struct P { T: u32, rows: u32, cols: u32, rowWords: u32, xOff: u32, xStride: u32, outOff: u32, outStride: u32, accumulate: u32, rowBase: u32, upOff: u32, eps: f32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> act: array<${xvec ? 'vec4f' : 'f32'}>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> wd: array<f32>;
${norm ? `@group(0) @binding(4) var<storage, read> g: array<${xvec ? 'vec4f' : 'f32'}>;` : ''}
var<workgroup> red: array<f32, ${accN * NS}>;
var<workgroup> final_: array<f32, ${accN}>;
${stage ? `var<workgroup> xs: array<vec4f, ${TB * NQ * WG}>;` : ''}
@compute @workgroup_size(${WG}) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u,
  @builtin(subgroup_invocation_id) sgi: u32, @builtin(subgroup_size) sgs: u32) {
  _ = &wd;
  let r0 = (wid.x + wid.y * ${GRID_X}u) * ${R}u;
  if (r0 >= p.rows) { return; }
  let rv = p.rowWords >> 2u; // 16-byte words per row
  // Rows past the matrix (a partial last workgroup) re-read its last row; their sums are dropped.
  ${rows.map((r) => `let rb${r} = min(r0 + ${r}u, p.rows - 1u) * rv;`).join(' ')}
  ${kind === 'q8_0' ? rows.map((r) => `let sb${r} = min(r0 + ${r}u, p.rows - 1u) * (p.rowWords >> 3u);`).join(' ') : ''}
  let sg = lid.x / sgs;
  for (var t0 = 0u; t0 < p.T; t0 += ${TB}u) {
    ${toks.map((t) => `let xr${t} = p.xOff + min(t0 + ${t}u, p.T - 1u) * p.xStride;`).join(' ')}
    ${names.map((a) => `var ${a} = 0.0;`).join(' ')}
    ${loop}
    ${names.map((a, i) => `{ let s = subgroupAdd(${a}); if (sgi == 0u) { red[${i * NS}u + sg] = s; } }`).join('\n    ')}
    workgroupBarrier();
    for (var i = lid.x; i < ${accN}u; i += ${WG}u) {
      var s = 0.0;
      for (var j = 0u; j < (${WG}u + sgs - 1u) / sgs; j++) { s += red[i * ${NS}u + j]; }
      final_[i] = s;
    }
    workgroupBarrier();
    for (var i = lid.x; i < ${R * TB}u; i += ${WG}u) {
      let r = i / ${TB}u;
      let t = t0 + i % ${TB}u;
      if (r0 + r < p.rows && t < p.T) {
        let o = p.outOff + t * p.outStride + p.rowBase + r0 + r;
        ${xvec ? 'act[o >> 2u][o & 3u] = select(0.0, act[o >> 2u][o & 3u], p.accumulate != 0u)' : 'act[o] = select(0.0, act[o], p.accumulate != 0u)'} + final_[i]${scale};
      }
    }
    workgroupBarrier();
  }
}`;
}

/**
 * Matrix × many vectors (prefill): out[t, r] (+)= Σ_c W[r, c] · x[t, c]. Tiles of 32 tokens × 64 rows, 32 columns at
 * a time through workgroup memory (weights widened to f32 as they are loaded); each of 256 threads computes 2 × 4.
 */
export function matmulWgsl(kind: WeightKind): string {
  return `
struct P { T: u32, rows: u32, cols: u32, rowWords: u32, xOff: u32, xStride: u32, outOff: u32, outStride: u32, accumulate: u32, rowBase: u32, _a: u32, _b: u32 };
@group(0) @binding(0) var<uniform> p: P;
${WEIGHT_BINDINGS}
${weightAccess(kind)}
const TM = 32u; const TN = 64u; const TK = 32u;
var<workgroup> xs: array<f32, ${32 * 33}>;
var<workgroup> ws: array<f32, ${64 * 33}>;
@compute @workgroup_size(256) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  _ = &wd;
  let n0 = wid.x * TN;
  let m0 = wid.y * TM;
  let tx = lid.x % 16u; // rows tx, tx+16, tx+32, tx+48
  let ty = lid.x / 16u; // tokens ty, ty+16
  var acc: array<f32, 8>;
  for (var k0 = 0u; k0 < p.cols; k0 += TK) {
    for (var i = lid.x; i < TM * TK; i += 256u) {
      let m = i / TK; let k = i % TK;
      var v = 0.0;
      if (m0 + m < p.T && k0 + k < p.cols) { v = act[p.xOff + (m0 + m) * p.xStride + k0 + k]; }
      xs[m * 33u + k] = v;
    }
    for (var i = lid.x; i < TN * TK; i += 256u) {
      let n = i / TK; let k = i % TK;
      var v = 0.0;
      if (n0 + n < p.rows && k0 + k < p.cols) { v = wload(n0 + n, k0 + k); }
      ws[n * 33u + k] = v;
    }
    workgroupBarrier();
    for (var k = 0u; k < TK; k++) {
      let a0 = xs[ty * 33u + k];
      let a1 = xs[(ty + 16u) * 33u + k];
      for (var j = 0u; j < 4u; j++) {
        let b = ws[(tx + 16u * j) * 33u + k];
        acc[j] += a0 * b;
        acc[4u + j] += a1 * b;
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 2u; i++) {
    let m = m0 + ty + 16u * i;
    if (m >= p.T) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + tx + 16u * j;
      if (n >= p.rows) { continue; }
      let o = p.outOff + m * p.outStride + p.rowBase + n;
      act[o] = select(0.0, act[o], p.accumulate != 0u) + acc[i * 4u + j];
    }
  }
}`;
}

/**
 * Matrix × many vectors (prefill), weights read as 16-byte words: out[t, r] (+)= Σ_c W[r, c] · x[t, c]. Tiles of 64
 * tokens × 64 rows, 32 columns at a time through workgroup memory as vec4f ([token or row][column / 4], rows 9 vec4f
 * apart so that 8 threads' vec4 reads hit distinct banks); each of 256 threads computes 4 tokens × 4 rows
 * (ty + 16i, tx + 16j) from 8 vec4f reads per 4 columns (64 FMAs). A tile's weights are one 16-byte load per thread
 * in f16 (64 rows × 4 words), two in f32, one per two threads in q8_0 (a block = 2 words, with its scale); x's tile,
 * 8 coalesced scalar loads per thread. Rows must be 16-byte aligned (rowWordsOf); words past the row (a ragged last
 * tile) read as 0, x past cols as 0. Batch rows are not fused with RMSNorm/SwiGLU (GpuOps applies those first).
 */
export function matmulVec4Wgsl(kind: WeightKind): string {
  const per = VALUES_PER_VEC4[kind];
  const wpr = 32 / per; // 16-byte words of a row in one 32-column tile: f32 8, f16 4, q8_0 2
  const unpackTo = {
    f32: (dst: string) => `ws[${dst}] = bitcast<vec4f>(q);`,
    f16: (dst: string) => `ws[${dst}] = vec4f(unpack2x16float(q.x), unpack2x16float(q.y));
        ws[${dst} + 1u] = vec4f(unpack2x16float(q.z), unpack2x16float(q.w));`,
    q8_0: (dst: string) => [0, 1, 2, 3].map((c) => `ws[${dst} + ${c}u] = s * vec4f(${[0, 8, 16, 24].map((b) => `f32(extractBits(bitcast<i32>(q[${c}]), ${b}u, 8u))`).join(', ')});`).join('\n        '),
  }[kind];
  const wtile = `for (var e = lid.x; e < ${64 * wpr}u; e += 256u) {
      let n = e / ${wpr}u;
      let wq = e % ${wpr}u;
      let word = k0 / ${per}u + wq;
      var q = vec4u(0u);
      ${kind === 'q8_0' ? 'var s = 0.0;' : ''}
      if (n0 + n < p.rows && word < rv) {
        q = w[(n0 + n) * rv + word];
        ${kind === 'q8_0' ? 's = wd[(n0 + n) * (p.rowWords >> 3u) + k0 / 32u];' : ''}
      }
      ${unpackTo(`n * 9u + wq * ${per / 4}u`)}
    }`;
  const I = [0, 1, 2, 3];
  return `
struct P { T: u32, rows: u32, cols: u32, rowWords: u32, xOff: u32, xStride: u32, outOff: u32, outStride: u32, accumulate: u32, rowBase: u32, _a: u32, _b: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> wd: array<f32>;
var<workgroup> xs: array<vec4f, ${64 * 9}>;
var<workgroup> ws: array<vec4f, ${64 * 9}>;
@compute @workgroup_size(256) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  _ = &wd;
  let n0 = wid.x * 64u;
  let m0 = wid.y * 64u;
  let tx = lid.x % 16u; // rows tx + 16j
  let ty = lid.x / 16u; // tokens ty + 16i
  let rv = p.rowWords >> 2u;
  ${I.flatMap((i) => I.map((j) => `var a${i}${j} = 0.0;`)).join(' ')}
  for (var k0 = 0u; k0 < p.cols; k0 += 32u) {
    for (var e = lid.x; e < 2048u; e += 256u) {
      let m = e >> 5u;
      let k = e & 31u;
      var v = 0.0;
      if (m0 + m < p.T && k0 + k < p.cols) { v = act[p.xOff + (m0 + m) * p.xStride + k0 + k]; }
      xs[m * 9u + (k >> 2u)][k & 3u] = v;
    }
    ${wtile}
    workgroupBarrier();
    for (var kk = 0u; kk < 8u; kk++) {
      ${I.map((i) => `let x${i} = xs[(ty + ${16 * i}u) * 9u + kk];`).join(' ')}
      ${I.map((j) => `let w${j} = ws[(tx + ${16 * j}u) * 9u + kk];`).join(' ')}
      ${I.flatMap((i) => I.map((j) => `a${i}${j} += dot(x${i}, w${j});`)).join(' ')}
    }
    workgroupBarrier();
  }
  ${I.flatMap((i) => I.map((j) => `{
    let m = m0 + ty + ${16 * i}u;
    let n = n0 + tx + ${16 * j}u;
    if (m < p.T && n < p.rows) {
      let o = p.outOff + m * p.outStride + p.rowBase + n;
      act[o] = select(0.0, act[o], p.accumulate != 0u) + a${i}${j};
    }
  }`)).join('\n  ')}
}`;
}

/** Elementwise kernels over `act`. One thread per element of a flattened index space (see GRID_X). */
const FLAT = `let i = (wid.x + wid.y * ${GRID_X}u) * 64u + lid.x;`;

/**
 * RMSNorm of `rows` vectors of n: out[r] = x[r] / sqrt(mean(x[r]²) + eps) ⊙ weight. One workgroup per row. Rows come
 * in groups of G (row r at off + ⌊r / G⌋ · stride + (r mod G) · n): G = 1 for the layer norms (one row per token),
 * G = heads for q/k norm (the heads of a token inside its fused q|k|v row). out may equal x.
 */
export const rmsnormWgsl = `
struct P { rows: u32, n: u32, inOff: u32, inStride: u32, outOff: u32, outStride: u32, eps: f32, G: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
var<workgroup> red: array<f32, 256>;
@compute @workgroup_size(256) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let row = wid.x + wid.y * ${GRID_X}u;
  if (row >= p.rows) { return; }
  let xin = p.inOff + (row / p.G) * p.inStride + (row % p.G) * p.n;
  var ss = 0.0;
  for (var i = lid.x; i < p.n; i += 256u) { let v = act[xin + i]; ss += v * v; }
  red[lid.x] = ss;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (lid.x < s) { red[lid.x] += red[lid.x + s]; }
    workgroupBarrier();
  }
  let scale = 1.0 / sqrt(red[0] / f32(p.n) + p.eps);
  let xout = p.outOff + (row / p.G) * p.outStride + (row % p.G) * p.n;
  for (var i = lid.x; i < p.n; i += 256u) { act[xout + i] = act[xin + i] * scale * weight[i]; }
}`;

/**
 * RoPE, rotate-half, in place on T rows of nHeads heads: (x[j], x[j + d/2]) rotated by the angle of the row's
 * position, from cos/sin tables [position, d/2] computed on the CPU exactly as cpu-ref/rope.ts's frequencies.
 * Positions: pbuf[posOff + t] (low 30 bits; the top bits are token classes).
 */
export const ropeWgsl = `
struct P { T: u32, nHeads: u32, hd: u32, off: u32, rowStride: u32, posOff: u32, _a: u32, _b: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@group(0) @binding(2) var<storage, read> cosT: array<f32>;
@group(0) @binding(3) var<storage, read> sinT: array<f32>;
@group(0) @binding(4) var<storage, read> pbuf: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  ${FLAT}
  let half = p.hd / 2u;
  if (i >= p.T * p.nHeads * half) { return; }
  let j = i % half;
  let h = (i / half) % p.nHeads;
  let t = i / (half * p.nHeads);
  let pos = pbuf[p.posOff + t] & 0x3fffffffu;
  let base = p.off + t * p.rowStride + h * p.hd;
  let a = act[base + j];
  let b = act[base + j + half];
  let c = cosT[pos * half + j];
  let s = sinT[pos * half + j];
  act[base + j] = a * c - b * s;
  act[base + j + half] = b * c + a * s;
}`;

/** x[t, i] += bias[i] for T rows of n (rows `stride` apart). */
export const biasWgsl = `
struct P { T: u32, n: u32, off: u32, stride: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  ${FLAT}
  if (i >= p.T * p.n) { return; }
  let t = i / p.n;
  let c = i % p.n;
  act[p.off + t * p.stride + c] += bias[c];
}`;

/** SwiGLU over T rows of n: gate = silu(gate) · up, gate and up at gateOff/upOff + t · stride (the fused gate|up rows). */
export const swigluWgsl = `
struct P { T: u32, n: u32, gateOff: u32, upOff: u32, stride: u32, _a: u32, _b: u32, _c: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  ${FLAT}
  if (i >= p.T * p.n) { return; }
  let o = (i / p.n) * p.stride + i % p.n;
  let g = act[p.gateOff + o];
  act[p.gateOff + o] = g / (1.0 + exp(-g)) * act[p.upOff + o];
}`;

/** x[i] += y[i] over n elements (the residual add, where it is not fused into a matmul). */
export const addWgsl = `
struct P { n: u32, xOff: u32, yOff: u32, _p: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  ${FLAT}
  if (i >= p.n) { return; }
  act[p.xOff + i] += act[p.yOff + i];
}`;

/** Copy rows: dst[j] = src[pbuf[listOff + j]] for `count` rows of n (gathers the rows whose logits are wanted). */
export const gatherRowsWgsl = `
struct P { count: u32, n: u32, srcOff: u32, dstOff: u32, listOff: u32, _a: u32, _b: u32, _c: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> act: array<f32>;
@group(0) @binding(2) var<storage, read> pbuf: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  ${FLAT}
  if (i >= p.count * p.n) { return; }
  let j = i / p.n;
  let c = i % p.n;
  act[p.dstOff + j * p.n + c] = act[p.srcOff + pbuf[p.listOff + j] * p.n + c];
}`;

/**
 * Greedy sampling: tokens[outOff + r] = the index of the largest logit of row r, one workgroup per row, by the rule of
 * src/argmax.ts: ties → the lowest index, and a NaN counts as larger than everything (the first NaN wins). The step
 * then reads back 4 bytes per sequence instead of a vocabulary of floats.
 */
export const argmaxWgsl = `
struct P { rows: u32, n: u32, inOff: u32, outOff: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> tokens: array<u32>;
const NONE = 0xffffffffu;
var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;
var<workgroup> bn: array<u32, 256>;
@compute @workgroup_size(256) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let row = wid.x;
  if (row >= p.rows) { return; }
  var best = 0.0;
  var at = NONE;
  var nan = NONE;
  for (var i = lid.x; i < p.n; i += 256u) {
    let bits = bitcast<u32>(logits[p.inOff + row * p.n + i]);
    // NaN by its bits (a compiler may fold v != v away).
    if ((bits & 0x7fffffffu) > 0x7f800000u) { nan = min(nan, i); continue; }
    let v = bitcast<f32>(bits);
    if (at == NONE || v > best) { best = v; at = i; }
  }
  bv[lid.x] = best;
  bi[lid.x] = at;
  bn[lid.x] = nan;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (lid.x < s) {
      bn[lid.x] = min(bn[lid.x], bn[lid.x + s]);
      let v = bv[lid.x + s];
      let j = bi[lid.x + s];
      if (j != NONE && (bi[lid.x] == NONE || v > bv[lid.x] || (v == bv[lid.x] && j < bi[lid.x]))) { bv[lid.x] = v; bi[lid.x] = j; }
    }
    workgroupBarrier();
  }
  if (lid.x == 0u) { tokens[p.outOff + row] = select(select(bi[0], 0u, bi[0] == NONE), bn[0], bn[0] != NONE); }
}`;

/**
 * Random words for synthetic weights, generated on the GPU (a 7B model's 13.5 GB took a minute to generate in JS):
 * words[i] = (hash(seed, i) & mask) | bits — random sign and mantissa under a fixed exponent (f32, f16 pairs), or all
 * random bits (q8_0's int8s, mask 0xffffffff, bits 0); or the constant `bits` (mask 0: q8_0's block scales).
 */
export const randomWordsWgsl = `
struct P { count: u32, seed: u32, mask: u32, bits: u32 };
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> words: array<u32>;
fn hash(x0: u32) -> u32 {
  var x = x0;
  x ^= x >> 16u; x *= 0x7feb352du;
  x ^= x >> 15u; x *= 0x846ca68bu;
  x ^= x >> 16u;
  return x;
}
@compute @workgroup_size(256) fn main(@builtin(local_invocation_id) lid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let i = (wid.x + wid.y * ${GRID_X}u) * 256u + lid.x;
  if (i >= p.count) { return; }
  words[i] = (hash(hash(i) ^ p.seed) & p.mask) | p.bits;
}`;
