/**
 * deploy/k8s: every manifest against Kubernetes' and the Gateway API's published schemas (kubernetes-models), with
 * unknown fields refused; the endpoint picker's configuration against its v1.5.0 fields; the validator itself
 * refusing broken copies; and the pieces agreeing with each other and with the server: the pool selects the
 * Deployment's pods on its port, readiness is /health, the grace period covers the preStop wait and fastgen's
 * --shutdown-timeout, and the metric names the endpoint picker reads are ones fastgen's /metrics exposes.
 * The InferencePool CRD is not in this repository: set FASTGEN_INFERENCEPOOL_CRD to its YAML to check it too.
 */
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { crdChecks, eppConfigs, EPP_PLUGIN_TYPES, K8S_DIR, loadDocs, validateAll, type Doc } from '../dev/k8s/validate.js';
import { ServerMetrics, type GaugeSnapshot } from '../src/server/metrics.js';

const docs = loadDocs();
const find = (kind: string, name: string): any => {
  const d = docs.find((x) => x.kind === kind && x.name === name);
  assert.ok(d, `${kind}/${name} in deploy/k8s`);
  return d.body;
};

/** Broken copies the validator must refuse: [file, text, check, error]. */
function brokenCopies(): [string, string, string, RegExp][] {
  const text = readFileSync(join(K8S_DIR, 'fastgen.yaml'), 'utf8');
  const pool = readFileSync(join(K8S_DIR, 'inference-pool.yaml'), 'utf8');
  return [
    ['typo.yaml', text.replace('readinessProbe:', 'readinesProbe:'), 'fields', /readinesProbe/],
    ['type.yaml', text.replace('containerPort: 8000', 'containerPort: "8000"'), 'schema', /containerPort must be integer/],
    ['missing.yaml', text.replace(/\n  selector:\n    matchLabels:\n      app: fastgen\n  strategy:/, '\n  strategy:'), 'schema', /required property 'selector'|required property selector/],
    ['epp.yaml', pool.replace('kvUsageSpec:', 'kvUsageSpecs:'), 'epp-config', /kvUsageSpecs/],
  ];
}

describe('deploy/k8s manifests', () => {
  // One validation of the real documents and the broken copies together (the field check compiles them once).
  const broken = brokenCopies();
  const dir = mkdtempSync(join(tmpdir(), 'fastgen-k8s-'));
  const brokenDocs = broken.flatMap(([file, body]) => {
    writeFileSync(join(dir, file), body);
    return loadDocs([join(dir, file)]);
  });
  const result = validateAll([...docs, ...brokenDocs]);

  test('every document passes its schema and has no unknown field', async () => {
    const all = await result;
    const checks = all.checks.filter((c) => docs.includes(c.doc));
    const unchecked = all.unchecked.filter((d) => docs.includes(d));
    const failed = checks.filter((c) => !c.ok).map((c) => `${c.check} ${c.doc.kind}/${c.doc.name}: ${c.errors.join('; ')}`);
    assert.deepEqual(failed, []);
    for (const kind of ['Deployment', 'Service', 'HTTPRoute', 'ConfigMap', 'ServiceAccount', 'Role', 'RoleBinding']) {
      assert.ok(checks.some((c) => c.doc.kind === kind && c.check === 'schema' && c.ok), `${kind} was schema-checked`);
      assert.ok(checks.some((c) => c.doc.kind === kind && c.check === 'fields' && c.ok), `${kind} was field-checked`);
    }
    assert.ok(checks.some((c) => c.check === 'epp-config' && c.ok), 'the EPP configuration was checked');
    // Only the custom resource has no schema here (its CRD is not vendored).
    assert.deepEqual(unchecked.map((d) => d.kind), ['InferencePool']);
    const crd = process.env.FASTGEN_INFERENCEPOOL_CRD;
    if (crd) {
      const c = crdChecks(docs, [crd]);
      assert.equal(c.length, 1);
      assert.deepEqual(c[0].errors, []);
    }
  });

  test('the validator refuses broken copies: an unknown field, a wrong type, a missing field, a misnamed EPP field', async () => {
    const { checks } = await result;
    for (const [file, , check, error] of broken) {
      const bad = checks.filter((c) => c.doc.file === join(dir, file) && !c.ok);
      assert.ok(bad.some((c) => c.check === check && c.errors.some((e) => error.test(e))), `${file}: ${JSON.stringify(bad.map((c) => [c.check, c.errors]))}`);
    }
  });

  test('the pieces agree: pool → pods and port, readiness, preStop and grace, picker service and config', () => {
    const dep = find('Deployment', 'fastgen');
    const pod = dep.spec.template;
    const c = pod.spec.containers[0];
    const poolDoc = find('InferencePool', 'fastgen');
    const pool = poolDoc.spec;
    for (const [k, v] of Object.entries(pool.selector.matchLabels)) assert.equal(pod.metadata.labels[k], v, `the pool selects the pods by ${k}`);
    const port = c.ports.find((p: any) => p.name === 'http').containerPort;
    assert.deepEqual(pool.targetPorts, [{ number: port }]);
    assert.ok(c.args.includes(`--port=${port}`) && c.args.includes('--host=0.0.0.0'), 'fastgen listens on the pod port on every interface');
    assert.equal(c.readinessProbe.httpGet.path, '/health');
    // Grace: the preStop wait plus the server's own shutdown timeout, with room to flush the last responses.
    const preStopMs = Number(/setTimeout\(\(\) => \{\}, (\d+)\)/.exec(c.lifecycle.preStop.exec.command.join(' '))?.[1]);
    const shutdownS = Number(c.args.find((a: string) => a.startsWith('--shutdown-timeout='))?.split('=')[1]);
    assert.ok(preStopMs > 0 && shutdownS > 0, 'a preStop wait and --shutdown-timeout');
    assert.ok(pod.spec.terminationGracePeriodSeconds >= preStopMs / 1000 + shutdownS + 5, `grace ${pod.spec.terminationGracePeriodSeconds} s`);
    // The picker: its Service and port, its pool, its config file from the ConfigMap.
    const eppSvc = find('Service', pool.endpointPickerRef.name).spec;
    assert.ok(eppSvc.ports.some((p: any) => p.port === pool.endpointPickerRef.port.number));
    const epp = find('Deployment', pool.endpointPickerRef.name).spec.template.spec;
    const args: string[] = epp.containers[0].args;
    assert.ok(args.includes(`--pool-name=${poolDoc.metadata.name}`), 'the picker serves this pool');
    const cfgFile = args.find((a) => a.startsWith('--config-file='))!.split('=')[1];
    const mount = epp.containers[0].volumeMounts[0];
    const cm = find('ConfigMap', epp.volumes.find((v: any) => v.name === mount.name).configMap.name);
    assert.ok(cfgFile.startsWith(`${mount.mountPath}/`) && cm.data[cfgFile.slice(mount.mountPath.length + 1)], `${cfgFile} is in the ConfigMap`);
    assert.equal(find('Role', 'fastgen-epp').rules.some((r: any) => r.resources.includes('inferencepools')), true);
    const rb = find('RoleBinding', 'fastgen-epp');
    assert.equal(rb.subjects[0].name, epp.serviceAccountName);
    assert.ok(rb.subjects[0].namespace, 'a ServiceAccount subject needs its namespace');
    const route = find('HTTPRoute', 'fastgen').spec.rules[0].backendRefs[0];
    assert.deepEqual(route, { group: 'inference.networking.k8s.io', kind: 'InferencePool', name: 'fastgen' });
  });

  test("the endpoint picker reads metric names fastgen's /metrics exposes, with plugins v1.5.0 has", async () => {
    const [{ config }] = eppConfigs(docs as Doc[]) as { config: any }[];
    for (const p of config.plugins) assert.ok(EPP_PLUGIN_TYPES.includes(p.type), `plugin type ${p.type}`);
    const refs = new Set<string>(config.plugins.map((p: any) => p.name ?? p.type));
    for (const prof of config.schedulingProfiles) for (const p of prof.plugins) assert.ok(refs.has(p.pluginRef), `profile plugin ${p.pluginRef} is declared`);
    const extractor = config.plugins.find((p: any) => p.type === 'core-metrics-extractor').parameters;
    const engine = extractor.engineConfigs.find((e: any) => e.name === extractor.defaultEngine);
    assert.ok(engine, 'the default engine is configured');
    const metrics = new ServerMetrics();
    const snap: GaugeSnapshot = {
      modelName: 'm', running: 1, waiting: 2, maxRunning: 8, peakRunning: 1, kvPagesReserved: 4, fastgenKeptRatio: 0.5,
      kvPagesUsed: 3, kvPagesTotal: 10, kvPageBytes: 1024, kvBudgetBytes: 10_240, kvPeakPagesUsed: 3, kvTokenBytes: 0, kvFullBytes: 0,
      headsPerPolicy: {}, runningPerPolicy: {},
    };
    metrics.source = () => snap;
    const text = await metrics.render();
    const value = (name: string) => {
      const line = text.split('\n').find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
      assert.ok(line, `fastgen exposes ${name}`);
      assert.match(text, new RegExp(`# TYPE ${name} gauge`), `${name} is a gauge`);
      return Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    assert.equal(value(engine.queuedRequestsSpec), 2);
    assert.equal(value(engine.runningRequestsSpec), 1);
    assert.equal(value(engine.kvUsageSpec), 0.3, 'KV usage is a fraction in [0, 1], as the picker expects');
    assert.equal(engine.loraSpec, '', 'no LoRA metric to look for');
  });
});
