/**
 * Validate deploy/k8s/*.yaml without a cluster.
 *
 *   node dist/dev/k8s/validate.js [--crd CRD.yaml ...] [--json] [FILE.yaml ...]
 *
 * Each document is checked three ways, where a schema exists:
 *   schema  kubernetes-models (Kubernetes' OpenAPI schemas compiled to ajv validators: types, required fields, formats)
 *           and @kubernetes-models/gateway-api for Gateway API kinds;
 *   fields  unknown fields, which those schemas let through (like `kubectl apply --validate=strict` or kubeconform
 *           -strict): the document is type-checked by TypeScript as an object literal of the same package's
 *           interface, whose excess-property check names every field the API does not have;
 *   crd     custom resources against the openAPIV3Schema of a CRD given with --crd (e.g. the InferencePool CRD from
 *           the Gateway API Inference Extension's release), with additionalProperties: false added to every object
 *           that declares its properties. Its CEL rules (x-kubernetes-validations) are not evaluated.
 * The endpoint picker's configuration, embedded in a ConfigMap, has no published schema: its fields are checked
 * against an interface transcribed from the v1.5.0 Go types (apix/config/v1alpha1), with the same excess-property
 * check. A kind without any schema is reported as such, never as valid.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { Ajv } from 'ajv';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from '../replicas/cluster.js';

export const K8S_DIR = join(REPO_ROOT, 'deploy', 'k8s');

export interface Doc {
  file: string;
  index: number;
  kind: string;
  apiVersion: string;
  name: string;
  body: Record<string, unknown>;
}

export interface Check {
  doc: Doc;
  check: 'schema' | 'fields' | 'crd' | 'epp-config';
  ok: boolean;
  errors: string[];
}

/** Every YAML document of the files (default: deploy/k8s/*.yaml). */
export function loadDocs(files = readdirSync(K8S_DIR).filter((f) => f.endsWith('.yaml')).map((f) => join(K8S_DIR, f))): Doc[] {
  const docs: Doc[] = [];
  for (const file of files) {
    parseAllDocuments(readFileSync(file, 'utf8')).forEach((d, index) => {
      if (d.errors.length) throw new Error(`${file}: document ${index + 1}: ${d.errors[0].message}`);
      const body = d.toJSON() as Record<string, unknown> | null;
      if (!body) return;
      const meta = (body.metadata ?? {}) as { name?: string };
      docs.push({ file, index, kind: String(body.kind), apiVersion: String(body.apiVersion), name: meta.name ?? '?', body });
    });
  }
  return docs;
}

/** The kubernetes-models module (import path, interface) of a kind, when the packages have it. */
function modelOf(apiVersion: string, kind: string): { module: string; iface: string } | undefined {
  const core: Record<string, string> = {
    v1: 'kubernetes-models/v1',
    'apps/v1': 'kubernetes-models/apps/v1',
    'rbac.authorization.k8s.io/v1': 'kubernetes-models/rbac.authorization.k8s.io/v1',
    'gateway.networking.k8s.io/v1': '@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1',
  };
  const base = core[apiVersion];
  return base ? { module: `${base}/${kind}`, iface: `I${kind}` } : undefined;
}

interface Validatable {
  validate(): void;
}

/** kubernetes-models' schema validation (types, required fields, formats). */
export async function schemaCheck(doc: Doc): Promise<Check | undefined> {
  const m = modelOf(doc.apiVersion, doc.kind);
  if (!m) return undefined;
  let Model: new (data: unknown) => Validatable;
  try {
    Model = (await import(m.module))[doc.kind];
  } catch {
    return undefined;
  }
  try {
    new Model(doc.body).validate();
    return { doc, check: 'schema', ok: true, errors: [] };
  } catch (e) {
    return { doc, check: 'schema', ok: false, errors: [(e as Error).message] };
  }
}

/** The endpoint picker's configuration (apix/config/v1alpha1, v1.5.0), transcribed for the excess-property check. */
const EPP_CONFIG_TYPES = `
interface PluginSpec { name?: string; type: string; parameters?: unknown }
interface EngineConfig {
  name: string; queuedRequestsSpec: string; runningRequestsSpec: string; kvUsageSpec: string; loraSpec: string;
  cacheInfoSpec: string; cacheBlockSizeLabelName?: string; cacheNumBlocksLabelName?: string;
  cacheBlockSizeSpec?: string; cacheNumBlocksSpec?: string;
}
interface CoreMetricsExtractorParams { engineLabelKey?: string; defaultEngine?: string; engineConfigs?: EngineConfig[] }
interface MetricsDataSourceParams { scheme?: string; path?: string; insecureSkipVerify?: boolean }
interface EndpointPickerConfig {
  apiVersion: 'inference.networking.x-k8s.io/v1alpha1';
  kind: 'EndpointPickerConfig';
  featureGates?: string[];
  plugins: PluginSpec[];
  schedulingProfiles: { name: string; plugins: { pluginRef: string; weight?: number }[] }[];
  saturationDetector?: { pluginRef?: string };
  dataLayer?: { sources: { pluginRef: string; extractors: { pluginRef: string }[] }[] };
  flowControl?: Record<string, unknown>;
  parser?: { pluginRef: string };
}
`;

/** Plugin types the v1.5.0 endpoint picker registers (cmd/epp/runner/runner.go) that this configuration may use. */
export const EPP_PLUGIN_TYPES = ['queue-scorer', 'kv-cache-utilization-scorer', 'prefix-cache-scorer', 'running-requests-size-scorer', 'max-score-picker', 'metrics-data-source', 'core-metrics-extractor'];

/** The EndpointPickerConfig documents embedded in ConfigMaps (by their `kind`). */
export function eppConfigs(docs: readonly Doc[]): { doc: Doc; key: string; config: Record<string, unknown> }[] {
  const out = [];
  for (const doc of docs) {
    if (doc.kind !== 'ConfigMap') continue;
    for (const [key, text] of Object.entries((doc.body.data ?? {}) as Record<string, string>)) {
      for (const d of parseAllDocuments(text)) {
        const config = d.toJSON() as Record<string, unknown> | null;
        if (config?.kind === 'EndpointPickerConfig') out.push({ doc, key, config });
      }
    }
  }
  return out;
}

/**
 * Unknown fields: every document with an interface is type-checked by TypeScript as an object literal of it, in one
 * program (a virtual file at the repository root, so that node_modules resolves).
 */
export function fieldChecks(docs: readonly Doc[]): Check[] {
  const lines: string[] = [];
  const owners: { doc: Doc; check: Check['check']; from: number; to: number }[] = [];
  const add = (doc: Doc, check: Check['check'], type: string, value: unknown, prelude?: string) => {
    if (prelude) lines.push(prelude);
    const from = lines.length;
    lines.push(`export const doc${owners.length}: ${type} = ${JSON.stringify(value, null, 2)};`.split('\n').join('\n'));
    const to = lines.join('\n').split('\n').length;
    owners.push({ doc, check, from: lines.slice(0, from).join('\n').split('\n').length, to });
  };
  for (const doc of docs) {
    const m = modelOf(doc.apiVersion, doc.kind);
    if (!m) continue;
    add(doc, 'fields', `import('${m.module}').${m.iface}`, doc.body);
  }
  const epp = eppConfigs(docs);
  if (epp.length) lines.push(EPP_CONFIG_TYPES);
  for (const { doc, config } of epp) {
    // The plugins' parameters are checked by their own types.
    const plugins = (config.plugins as { type: string; parameters?: unknown }[]) ?? [];
    add(doc, 'epp-config', 'EndpointPickerConfig', { ...config, plugins: plugins.map(({ parameters, ...p }) => p) });
    for (const p of plugins) {
      if (p.parameters === undefined) continue;
      const type = p.type === 'core-metrics-extractor' ? 'CoreMetricsExtractorParams' : p.type === 'metrics-data-source' ? 'MetricsDataSourceParams' : undefined;
      if (type) add(doc, 'epp-config', type, p.parameters);
    }
  }
  const file = join(REPO_ROOT, '__k8s_field_check__.ts');
  const source = lines.join('\n');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) => (resolve(name) === file ? ts.createSourceFile(name, source, lang) : getSourceFile(name, lang, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => resolve(name) === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  const diags = ts.getPreEmitDiagnostics(program).filter((d) => d.file && resolve(d.file.fileName) === file);
  const checks = new Map<number, Check>();
  owners.forEach((o, i) => checks.set(i, { doc: o.doc, check: o.check, ok: true, errors: [] }));
  for (const d of diags) {
    const line = d.file!.getLineAndCharacterOfPosition(d.start ?? 0).line + 1;
    const i = owners.findIndex((o) => line > o.from && line <= o.to);
    const c = i >= 0 ? checks.get(i)! : undefined;
    const text = `line ${line - (i >= 0 ? owners[i].from : 0)}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`;
    if (!c) throw new Error(`the field check itself failed: ${text}`);
    c.ok = false;
    c.errors.push(text);
  }
  // One check per document and kind of check.
  const merged = new Map<string, Check>();
  for (const c of checks.values()) {
    const key = `${c.doc.file}#${c.doc.index}#${c.check}`;
    const m = merged.get(key);
    if (m) {
      m.ok &&= c.ok;
      m.errors.push(...c.errors);
    } else merged.set(key, { ...c, errors: [...c.errors] });
  }
  return [...merged.values()];
}

/** A CRD's schema for ajv: unknown fields refused where the CRD lists an object's properties; Kubernetes' x- keys dropped. */
function strictSchema(s: unknown): unknown {
  if (Array.isArray(s)) return s.map(strictSchema);
  if (!s || typeof s !== 'object') return s;
  const o: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s)) if (!k.startsWith('x-kubernetes-')) o[k] = strictSchema(v);
  const preserve = (s as Record<string, unknown>)['x-kubernetes-preserve-unknown-fields'] === true;
  if (o.type === 'object' && o.properties && o.additionalProperties === undefined && !preserve) o.additionalProperties = false;
  return o;
}

/** Custom resources against the CRDs given (by group, version and kind). */
export function crdChecks(docs: readonly Doc[], crdFiles: readonly string[]): Check[] {
  const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
  const schemas = new Map<string, ReturnType<Ajv['compile']>>();
  for (const f of crdFiles) {
    for (const d of parseAllDocuments(readFileSync(f, 'utf8'))) {
      const crd = d.toJSON() as { kind?: string; spec?: { group: string; names: { kind: string }; versions: { name: string; schema?: { openAPIV3Schema: unknown } }[] } };
      if (crd?.kind !== 'CustomResourceDefinition' || !crd.spec) throw new Error(`${f}: not a CustomResourceDefinition`);
      for (const v of crd.spec.versions) {
        if (v.schema) schemas.set(`${crd.spec.group}/${v.name}/${crd.spec.names.kind}`, ajv.compile(strictSchema(v.schema.openAPIV3Schema) as object));
      }
    }
  }
  const out: Check[] = [];
  for (const doc of docs) {
    const validate = schemas.get(`${doc.apiVersion}/${doc.kind}`);
    if (!validate) continue;
    const ok = validate(doc.body) as boolean;
    out.push({ doc, check: 'crd', ok, errors: ok ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}${e.params && 'additionalProperty' in e.params ? ` '${String(e.params.additionalProperty)}'` : ''}`) });
  }
  return out;
}

export async function validateAll(docs: readonly Doc[], crdFiles: readonly string[] = []): Promise<{ checks: Check[]; unchecked: Doc[] }> {
  const checks: Check[] = [];
  for (const d of docs) {
    const c = await schemaCheck(d);
    if (c) checks.push(c);
  }
  checks.push(...fieldChecks(docs), ...crdChecks(docs, crdFiles));
  const unchecked = docs.filter((d) => !checks.some((c) => c.doc === d && c.check !== 'epp-config'));
  return { checks, unchecked };
}

async function main(argv: string[]): Promise<number> {
  const crds: string[] = [];
  const files: string[] = [];
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--crd') {
      if (argv[i + 1] === undefined) throw new Error('--crd needs a file');
      crds.push(argv[++i]);
    } else if (argv[i] === '--json') json = true;
    else if (argv[i].startsWith('-')) {
      process.stderr.write(`validate: unknown option ${argv[i]} (use --crd FILE, --json, then manifest files)\n`);
      return 2;
    } else files.push(argv[i]);
  }
  const docs = loadDocs(files.length ? files : undefined);
  const { checks, unchecked } = await validateAll(docs, crds);
  const name = (d: Doc) => `${d.file.startsWith(REPO_ROOT + '/') ? relative(REPO_ROOT, d.file) : d.file} ${d.kind}/${d.name}`;
  if (json) {
    process.stdout.write(JSON.stringify({ checks: checks.map((c) => ({ document: name(c.doc), check: c.check, ok: c.ok, errors: c.errors })), unchecked: unchecked.map(name) }, null, 2) + '\n');
  } else {
    for (const c of checks) process.stdout.write(`${c.ok ? 'ok  ' : 'FAIL'} ${c.check.padEnd(10)} ${name(c.doc)}${c.errors.map((e) => `\n       ${e}`).join('')}\n`);
    for (const d of unchecked) process.stdout.write(`--   no schema  ${name(d)} (give its CRD with --crd)\n`);
  }
  return checks.every((c) => c.ok) ? 0 : 1;
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  main(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (e) => {
      process.stderr.write(`validate: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
