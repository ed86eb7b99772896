#!/usr/bin/env node
// Validates the manifests rendered from the gantry chart (deploy/helm/check.sh runs it).
//
// Three layers, each reported per object as "<Kind>/<name>: <problem>":
//   1. Kubernetes schemas: every object goes through the kubernetes-models class of its apiVersion
//      and kind (types, required fields, enums, formats). A kind the chart is not known to render is
//      an error.
//   2. Unknown fields: kubernetes-models' validate() accepts fields the API server would reject
//      (strict field validation), so the objects are also compiled by TypeScript as literals of the
//      models' interfaces, whose excess-property check names every unknown or misspelt field.
//   3. The chart's own contract: the StatefulSet, its Services and probes fit together, gantryd.json
//      holds only keys gantryd knows (the table in docs/configuration.md), the start script parses,
//      the peer port is open to replicas only, RBAC is the least the namespace mode needs, and the
//      admission policies (the namespace guard, the scale-down guard) decide as intended: their CEL
//      is evaluated (@bufbuild/cel) against the requests they must allow and deny.
//
// Usage, one manifest:
//   node validate.js --config-doc docs/configuration.md --manifest FILE [--replicas N]
//     [--mode managed|operator|shared|none] [--namespaces a,b] [--existing-secret NAME]...
//     [--token-review true] [--secret-refs ns/name,ns/name]
// or several in one run (TypeScript is loaded and the models compiled once):
//   node validate.js --config-doc docs/configuration.md --jobs FILE
// where FILE is a JSON array of {label, manifest, replicas, mode, namespaces, existingSecrets,
// tokenReview, secretRefs}.
// Per manifest it prints its warnings and errors, "pod-template-sha256 <label>: <hex>" (check.sh
// compares renders that differ only in replicaCount) and "validate <label>: ..."; it exits 1 if
// any manifest has an error.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const crypto = require('crypto');
const { spawnSync } = require('child_process');
const YAML = require('yaml');
const ts = require('typescript');
const cel = require('@bufbuild/cel');

function parseArgs(argv) {
  const one = { label: 'manifest', replicas: 3, mode: 'managed', namespaces: [], existingSecrets: [],
    tokenReview: false, secretRefs: [] };
  let jobsFile;
  let configDoc;
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    switch (k) {
      case '--config-doc': configDoc = v; i++; break;
      case '--jobs': jobsFile = v; i++; break;
      case '--manifest': one.manifest = v; i++; break;
      case '--replicas': one.replicas = Number(v); i++; break;
      case '--mode': one.mode = v; i++; break;
      case '--namespaces': one.namespaces = v ? v.split(',') : []; i++; break;
      case '--existing-secret': one.existingSecrets.push(v); i++; break;
      case '--token-review': one.tokenReview = v === 'true'; i++; break;
      case '--secret-refs': one.secretRefs = v ? v.split(',') : []; i++; break;
      default: throw new Error(`unknown argument ${k}`);
    }
  }
  if (!configDoc || !(jobsFile || one.manifest)) throw new Error('--config-doc and --manifest or --jobs are required');
  const jobs = jobsFile ? JSON.parse(fs.readFileSync(jobsFile, 'utf8')) : [one];
  for (const j of jobs) {
    j.replicas = Number(j.replicas || 3);
    j.mode = j.mode || 'managed';
    j.namespaces = j.namespaces || [];
    j.existingSecrets = j.existingSecrets || [];
    j.tokenReview = !!j.tokenReview;
    j.secretRefs = j.secretRefs || [];
  }
  return { configDoc, jobs };
}

const opts = parseArgs(process.argv.slice(2));

// One report per manifest.
function newReport(job) {
  const r = { job, errors: [], warnings: [], objects: [], typed: [], hash: 'none' };
  const where = (o) => (o ? `${o.kind}/${o.metadata && o.metadata.name}` : 'manifest');
  r.err = (o, msg) => r.errors.push(`${where(o)}: ${msg}`);
  r.warn = (o, msg) => r.warnings.push(`${where(o)}: ${msg}`);
  return r;
}

// The kubernetes-models module of each apiVersion/kind the chart renders.
const MODELS = {
  'v1/ConfigMap': 'kubernetes-models/v1/ConfigMap',
  'v1/Secret': 'kubernetes-models/v1/Secret',
  'v1/Service': 'kubernetes-models/v1/Service',
  'v1/ServiceAccount': 'kubernetes-models/v1/ServiceAccount',
  'apps/v1/StatefulSet': 'kubernetes-models/apps/v1/StatefulSet',
  'policy/v1/PodDisruptionBudget': 'kubernetes-models/policy/v1/PodDisruptionBudget',
  'networking.k8s.io/v1/NetworkPolicy': 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy',
  'rbac.authorization.k8s.io/v1/Role': 'kubernetes-models/rbac.authorization.k8s.io/v1/Role',
  'rbac.authorization.k8s.io/v1/RoleBinding': 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding',
  'rbac.authorization.k8s.io/v1/ClusterRole': 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole',
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding':
    'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding',
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy':
    'kubernetes-models/admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy',
  'admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding':
    'kubernetes-models/admissionregistration.k8s.io/v1/ValidatingAdmissionPolicyBinding',
  'monitoring.coreos.com/v1/ServiceMonitor':
    '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor',
};
const CLUSTER_SCOPED = new Set(['ClusterRole', 'ClusterRoleBinding', 'ValidatingAdmissionPolicy',
  'ValidatingAdmissionPolicyBinding']);

// gantryd's configuration keys, from the generated table in docs/configuration.md.
const configDoc = fs.readFileSync(opts.configDoc, 'utf8');
const configKeys = new Set([...configDoc.matchAll(/^\| `([a-z0-9_]+)`/gm)].map((m) => m[1]));
if (configKeys.size < 10) throw new Error(`found only ${configKeys.size} keys in ${opts.configDoc}`);
// Keys the chart sets that gantryd is gaining with the cluster and driver issues; until they are in
// the table they are reported as warnings, not errors.
const PENDING_KEYS = new Set(['peer_advertise_address', 'cert_sans', 'join_ca_file', 'driver',
  'k8s_namespace_mode', 'k8s_namespaces', 'k8s_shared_namespace']);

// ---- Parse: YAML 1.1 like the API server's decoder (so 0440 is octal and "yes" a bool), duplicate
// keys rejected. Then 1: every object through its kubernetes-models class.
function parseAndCheckSchemas(r) {
  const { err } = r;
  const args = r.job;
  const text = fs.readFileSync(args.manifest, 'utf8');
  const objects = r.objects;
  for (const doc of YAML.parseAllDocuments(text, { version: '1.1', uniqueKeys: true })) {
    for (const e of doc.errors) err(null, `YAML: ${e.message}`);
    const o = doc.toJS();
    if (o === null || o === undefined) continue;
    if (typeof o !== 'object' || Array.isArray(o)) {
      err(null, `a document is not an object: ${JSON.stringify(o).slice(0, 80)}`);
      continue;
    }
    objects.push(o);
  }
  if (objects.length === 0) err(null, 'no objects rendered');

  const typed = r.typed; // [object, module] for the TypeScript pass
  for (const o of objects) {
    const key = `${o.apiVersion}/${o.kind}`;
    const mod = MODELS[key];
    if (!mod) {
      err(o, `unexpected apiVersion/kind ${key}: add it to validate.js if the chart now renders it`);
      continue;
    }
    const Model = require(mod)[o.kind];
    try {
      new Model(JSON.parse(JSON.stringify(o))).validate();
    } catch (e) {
      err(o, `schema: ${e.message}`);
    }
    typed.push([o, mod]);
  }
}

// ---- 2. Unknown fields, through TypeScript's excess-property check on object literals.
function checkFields(reports) {
  // Inside the tools directory, so that the imports resolve to its node_modules.
  const toolsDir = path.resolve(path.dirname(require.resolve('kubernetes-models/package.json')), '..', '..');
  const dir = fs.mkdtempSync(path.join(toolsDir, 'validate-'));
  const file = path.join(dir, 'manifests.ts');
  const lines = [];
  const owner = []; // line index -> [object, report]
  const imported = new Set();
  const typed = [];
  for (const r of reports) for (const [o, mod] of r.typed) typed.push([o, mod, r]);
  for (const [o, mod] of typed) {
    if (!imported.has(mod)) {
      lines.push(`import type { I${o.kind} } from ${JSON.stringify(mod)};`);
      owner.push(null);
      imported.add(mod);
    }
  }
  typed.forEach(([o, , r], i) => {
    const body = JSON.stringify(o, null, 1).split('\n');
    body[0] = `export const o${i}: I${o.kind} = ${body[0]}`;
    body[body.length - 1] += ';';
    for (const l of body) {
      lines.push(l);
      owner.push([o, r]);
    }
  });
  fs.writeFileSync(file, lines.join('\n') + '\n');
  const options = {
    noEmit: true, strict: true, skipLibCheck: true, types: [],
    module: ts.ModuleKind.CommonJS, moduleResolution: ts.ModuleResolutionKind.Node10,
    target: ts.ScriptTarget.ES2020, typeRoots: [],
  };
  const program = ts.createProgram([file], options);
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    if (d.file && d.file.fileName === program.getSourceFile(file).fileName) {
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      const [o, r] = owner[line] || [null, reports[0]];
      r.err(o, `field check: ${msg.slice(0, 300)} (at: ${lines[line].trim().slice(0, 100)})`);
    } else {
      reports[0].err(null, `field check: ${msg.slice(0, 300)}`);
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

// ---- 3. The chart's contract, per manifest.
function checkContract(r) {
  const { err, warn, objects } = r;
  const args = r.job;
  const byKind = (k) => objects.filter((o) => o.kind === k);
  const find = (k, name) => objects.find((o) => o.kind === k && o.metadata.name === name);
  const subset = (small, big) => Object.entries(small || {}).every(([k, v]) => big && big[k] === v);
  const sameMap = (a, b) => subset(a, b) && subset(b, a);
  const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
  const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

  // Names, namespaces, labels, uniqueness.
  {
    const seen = new Set();
    for (const o of objects) {
      const m = o.metadata || {};
      const id = `${o.kind}/${m.namespace || ''}/${m.name}`;
      if (seen.has(id)) err(o, 'rendered twice');
      seen.add(id);
      if (!m.name || m.name.length > 253 || !DNS_SUBDOMAIN.test(m.name)) err(o, `bad name ${m.name}`);
      if (o.kind === 'Service' && (m.name.length > 63 || !DNS_LABEL.test(m.name))) {
        err(o, 'a Service name must be a DNS label of at most 63 characters');
      }
      if (CLUSTER_SCOPED.has(o.kind) && m.namespace) err(o, 'cluster-scoped object with a namespace');
      if (!CLUSTER_SCOPED.has(o.kind) && !m.namespace) {
        err(o, 'no metadata.namespace (helm template | kubectl apply would put it in the wrong place)');
      }
      for (const [k, v] of Object.entries(m.labels || {})) {
        if (typeof v !== 'string' || v.length > 63 || !/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/.test(v)) {
          err(o, `label ${k} has an invalid value ${JSON.stringify(v)}`);
        }
      }
    }
  }

  const stss = byKind('StatefulSet');
  if (stss.length !== 1) err(null, `expected one StatefulSet, found ${stss.length}`);
  for (const sts of stss) {
    const full = sts.metadata.name;
    const spec = sts.spec;
    const tpl = spec.template;
    const pod = tpl.spec;
    const podLabels = tpl.metadata.labels || {};
    r.hash = crypto.createHash('sha256').update(JSON.stringify(tpl)).digest('hex');

    if (spec.replicas !== args.replicas) err(sts, `replicas ${spec.replicas}, expected ${args.replicas}`);
    if (spec.replicas % 2 !== 1 || spec.replicas < 3) err(sts, 'replicas must be odd and at least 3');
    if (`${full}-${args.replicas - 1}`.length > 63) err(sts, 'pod names would be longer than 63 characters');
    if (!subset(spec.selector.matchLabels, podLabels)) err(sts, 'selector does not match the pod labels');
    if (!spec.updateStrategy || spec.updateStrategy.type !== 'RollingUpdate') err(sts, 'updateStrategy must be RollingUpdate');
    if (pod.enableServiceLinks !== false) err(sts, 'enableServiceLinks must be false (GANTRY_* service link variables)');
    if (!(pod.terminationGracePeriodSeconds >= 30)) err(sts, 'terminationGracePeriodSeconds below 30: SIGTERM needs time to hand leadership over');
    const anti = ((pod.affinity || {}).podAntiAffinity) || {};
    const antiTerms = [...(anti.requiredDuringSchedulingIgnoredDuringExecution || []),
      ...(anti.preferredDuringSchedulingIgnoredDuringExecution || []).map((p) => p.podAffinityTerm)];
    if (!antiTerms.some((t) => t.topologyKey === 'kubernetes.io/hostname' && subset(t.labelSelector.matchLabels, podLabels))) {
      err(sts, 'no pod anti-affinity across nodes');
    }

    // The headless Service the StatefulSet names.
    const hl = find('Service', spec.serviceName);
    if (!hl) err(sts, `serviceName ${spec.serviceName} is not rendered`);
    else {
      if (hl.spec.clusterIP !== 'None') err(hl, 'the StatefulSet service must be headless');
      if (hl.spec.publishNotReadyAddresses !== true) err(hl, 'must publish not-ready addresses (joins need them)');
    }

    // Container, ports, probes.
    const c = pod.containers.find((x) => x.name === 'gantryd');
    if (!c) {
      err(sts, 'no container gantryd');
      continue;
    }
    const ports = Object.fromEntries((c.ports || []).map((p) => [p.name, p.containerPort]));
    for (const p of ['api', 'peer', 'admin']) if (!ports[p]) err(sts, `container port ${p} missing`);
    const probe = (name, p, want) => {
      const g = p && p.httpGet;
      if (!g || g.path !== want || (g.port !== 'admin' && g.port !== ports.admin)) {
        err(sts, `${name} must be GET ${want} on the admin port`);
      }
    };
    probe('livenessProbe', c.livenessProbe, '/healthz');
    probe('readinessProbe', c.readinessProbe, '/readyz');
    probe('startupProbe', c.startupProbe, '/healthz');

    // Volumes: every mount has a volume; ConfigMaps and Secrets exist (or are named as existing).
    const vols = new Map((pod.volumes || []).map((v) => [v.name, v]));
    for (const t of spec.volumeClaimTemplates || []) vols.set(t.metadata.name, { pvc: true });
    if (!(spec.volumeClaimTemplates || []).length) err(sts, 'no volumeClaimTemplates: each replica needs its own volume');
    for (const m of c.volumeMounts || []) if (!vols.has(m.name)) err(sts, `volumeMount ${m.name} has no volume`);
    for (const v of pod.volumes || []) {
      if (v.configMap && !find('ConfigMap', v.configMap.name)) err(sts, `volume ${v.name}: ConfigMap ${v.configMap.name} is not rendered`);
      if (v.secret && !find('Secret', v.secret.secretName) && !args.existingSecrets.includes(v.secret.secretName)) {
        err(sts, `volume ${v.name}: Secret ${v.secret.secretName} is neither rendered nor an expected existing Secret`);
      }
    }

    // Environment: GANTRY_* names must be gantryd keys (it rejects near-misses, and ignores the rest).
    const env = c.env || [];
    const envNames = new Set();
    for (const e of env) {
      if (envNames.has(e.name)) err(sts, `env ${e.name} given twice`);
      envNames.add(e.name);
      if (!e.name.startsWith('GANTRY_')) continue;
      const key = e.name.slice('GANTRY_'.length).toLowerCase();
      if (key === 'join_token') err(sts, 'the join token must come from join_token_file, not the pod spec');
      else if (PENDING_KEYS.has(key) && !configKeys.has(key)) warn(sts, `env ${e.name}: ${key} is not in ${opts.configDoc} yet`);
      else if (!configKeys.has(key)) err(sts, `env ${e.name}: ${key} is not a gantryd configuration key`);
    }
    const modeEnv = (env.find((e) => e.name === 'GANTRY_K8S_NAMESPACE_MODE') || {}).value;
    if ((args.mode === 'none' ? undefined : args.mode) !== modeEnv) {
      err(sts, `GANTRY_K8S_NAMESPACE_MODE is ${modeEnv}, expected ${args.mode}`);
    }
    if (pod.automountServiceAccountToken !== (args.mode !== 'none' || args.tokenReview)) {
      err(sts, 'automountServiceAccountToken must be true exactly when the Kubernetes driver runs or rbac.tokenReview is on');
    }

    // The configuration and the start script.
    const cm = find('ConfigMap', `${full}-config`);
    if (!cm) err(sts, `ConfigMap ${full}-config is not rendered`);
    else {
      let cfg = {};
      try {
        cfg = JSON.parse(cm.data['gantryd.json']);
      } catch (e) {
        err(cm, `gantryd.json: ${e.message}`);
      }
      for (const k of Object.keys(cfg)) {
        if (!configKeys.has(k)) err(cm, `gantryd.json: "${k}" is not a gantryd key (gantryd rejects unknown keys)`);
      }
      for (const [k, want] of [['api_address', ports.api], ['peer_address', ports.peer], ['admin_address', ports.admin]]) {
        if (cfg[k] !== `0.0.0.0:${want}`) err(cm, `gantryd.json: ${k} is ${cfg[k]}, expected 0.0.0.0:${want}`);
      }
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-script-'));
      for (const f of ['start.sh', 'start.env']) {
        if (!cm.data[f]) {
          err(cm, `${f} missing`);
          continue;
        }
        fs.writeFileSync(path.join(dir, f), cm.data[f]);
        const r = spawnSync('bash', ['-n', path.join(dir, f)], { encoding: 'utf8' });
        if (r.status !== 0) err(cm, `${f} does not parse: ${r.stderr.trim()}`);
      }
      fs.rmSync(dir, { recursive: true, force: true });
      // Every upper-case variable the script reads is set by start.env, the pod, or the script.
      const script = cm.data['start.sh'] || '';
      const settings = new Set([...(cm.data['start.env'] || '').matchAll(/^([A-Z_][A-Z0-9_]*)=/gm)].map((m) => m[1]));
      const assigned = new Set([...script.matchAll(/(?:^|\s|export )([A-Z_][A-Z0-9_]*)=/gm)].map((m) => m[1]));
      for (const m of script.matchAll(/\$\{?([A-Z_][A-Z0-9_]*)/g)) {
        const v = m[1];
        if (settings.has(v) || assigned.has(v) || envNames.has(v) || v === 'SECONDS') continue;
        err(cm, `start.sh reads $${v}, which neither start.env, the script nor the pod sets`);
      }
      if (!find('ConfigMap', `${full}-bootstrap`)) err(sts, `ConfigMap ${full}-bootstrap is not rendered`);
      const cs = (tpl.metadata.annotations || {})['checksum/config'];
      if (!/^[0-9a-f]{64}$/.test(cs || '')) err(sts, 'no checksum/config annotation: config changes would not roll the pods');
    }

    // Services select these pods, on ports the container has.
    for (const s of byKind('Service')) {
      if (!subset(spec.selector.matchLabels, s.spec.selector)) err(s, 'does not select the StatefulSet\'s pods');
      if (!subset(s.spec.selector, { ...podLabels, 'statefulset.kubernetes.io/pod-name': s.spec.selector['statefulset.kubernetes.io/pod-name'] })) {
        err(s, 'selects labels the pods do not have');
      }
      for (const p of s.spec.ports) {
        if (typeof p.targetPort === 'string' && !(p.targetPort in ports)) err(s, `targetPort ${p.targetPort} is not a container port`);
      }
    }
    if (!find('Service', full)) err(sts, `no client Service ${full}`);
    // One peer Service per ordinal: the stable IPv4 peer address.
    const peerSvcs = byKind('Service').filter((s) => /-peer-\d+$/.test(s.metadata.name));
    if (peerSvcs.length !== args.replicas) err(sts, `${peerSvcs.length} peer Services for ${args.replicas} replicas`);
    for (let i = 0; i < args.replicas; i++) {
      const s = find('Service', `${full}-peer-${i}`);
      if (!s) {
        err(sts, `peer Service ${full}-peer-${i} missing`);
        continue;
      }
      if (s.spec.selector['statefulset.kubernetes.io/pod-name'] !== `${full}-${i}`) err(s, 'must select exactly its ordinal\'s pod');
      if (s.spec.clusterIP === 'None' || (s.spec.type || 'ClusterIP') !== 'ClusterIP') err(s, 'must be a ClusterIP Service (its IP is the peer address)');
      if (s.spec.ipFamilyPolicy !== 'SingleStack' || JSON.stringify(s.spec.ipFamilies) !== '["IPv4"]') err(s, 'must be IPv4 single-stack (dqlite dials IPv4)');
      if (s.spec.publishNotReadyAddresses !== true) err(s, 'must publish not-ready addresses (a restarting member is not ready)');
      if (s.spec.ports.length !== 1 || s.spec.ports[0].targetPort !== 'peer') err(s, 'must forward the peer port only');
    }

    // Quorum during disruptions.
    const pdbs = byKind('PodDisruptionBudget');
    if (pdbs.length !== 1) err(null, `expected one PodDisruptionBudget, found ${pdbs.length}`);
    for (const p of pdbs) {
      if (p.spec.maxUnavailable !== 1) err(p, 'maxUnavailable must be 1 (quorum of 3 voters)');
      if (!sameMap(p.spec.selector.matchLabels, spec.selector.matchLabels)) err(p, 'selector differs from the StatefulSet\'s');
    }

    // Peer traffic from replicas only.
    const nps = byKind('NetworkPolicy');
    if (nps.length !== 1) err(null, `expected one NetworkPolicy, found ${nps.length}`);
    for (const np of nps) {
      if (!sameMap(np.spec.podSelector.matchLabels, spec.selector.matchLabels)) err(np, 'podSelector differs from the StatefulSet selector');
      let peerRules = 0;
      for (const r of np.spec.ingress || []) {
        if (!r.ports || r.ports.length === 0) {
          err(np, 'an ingress rule without ports opens every port, the peer port included');
          continue;
        }
        if (!r.ports.some((p) => p.port === ports.peer || p.port === 'peer')) continue;
        peerRules++;
        const from = r.from || [];
        const onlyReplicas = from.length > 0 && from.every((f) => !f.ipBlock && !f.namespaceSelector && f.podSelector &&
          sameMap(f.podSelector.matchLabels, spec.selector.matchLabels));
        if (!onlyReplicas) err(np, 'the peer port must be open to this release\'s replicas only');
      }
      if (peerRules !== 1) err(np, `expected one rule for the peer port, found ${peerRules}`);
    }

    // Secrets the chart generates.
    for (const s of byKind('Secret')) {
      const d = Object.fromEntries(Object.entries(s.data || {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
      if (s.type === 'kubernetes.io/tls') {
        if (!/^-----BEGIN CERTIFICATE-----/.test(d['tls.crt'] || '') || !/^-----BEGIN (RSA |EC )?PRIVATE KEY-----/.test(d['tls.key'] || '')) {
          err(s, 'tls.crt / tls.key are not PEM');
        }
      }
      if ('token' in d && !/^gjt_[0-9a-f]{16}_[0-9a-f]{32}$/.test(d.token)) err(s, 'the join token is not gjt_<16 hex>_<32 hex>');
    }

    // ServiceMonitor: scrapes the admin port through the headless Service.
    for (const sm of byKind('ServiceMonitor')) {
      const target = byKind('Service').filter((s) => subset(sm.spec.selector.matchLabels, s.metadata.labels));
      if (target.length !== 1 || target[0].metadata.name !== spec.serviceName) err(sm, 'must select exactly the headless Service');
      else if (!sm.spec.endpoints.every((e) => target[0].spec.ports.some((p) => p.name === e.port))) err(sm, 'endpoint port not on the Service');
    }
  }

  // RBAC: the least each namespace mode needs.
  {
    const sas = byKind('ServiceAccount');
    // rbac.tokenReview's ClusterRole and rbac.referencedSecrets' Roles (and their bindings) are
    // checked on their own below; the namespace modes' checks look at the driver's objects only.
    const isTokenReview = (o) => o.metadata.name.endsWith('-tokenreview');
    const isSecretRefs = (o) => o.metadata.name.endsWith('-secret-refs');
    const extra = (o) => isTokenReview(o) || isSecretRefs(o);
    const allRoles = byKind('Role');
    const allCroles = byKind('ClusterRole');
    const allRbs = byKind('RoleBinding');
    const allCrbs = byKind('ClusterRoleBinding');
    const roles = allRoles.filter((o) => !extra(o));
    const croles = allCroles.filter((o) => !extra(o));
    const rbs = allRbs.filter((o) => !extra(o));
    const crbs = allCrbs.filter((o) => !extra(o));
    for (const r of [...allRoles, ...allCroles]) {
      for (const rule of r.rules || []) {
        for (const f of ['apiGroups', 'resources', 'verbs']) {
          if ((rule[f] || []).includes('*')) err(r, `wildcard in ${f}`);
        }
        for (const v of ['escalate', 'bind', 'impersonate']) if ((rule.verbs || []).includes(v)) err(r, `verb ${v}`);
      }
    }
    for (const b of [...allRbs, ...allCrbs]) {
      for (const s of b.subjects || []) {
        if (s.kind !== 'ServiceAccount' || !sas.some((a) => a.metadata.name === s.name && a.metadata.namespace === s.namespace)) {
          err(b, `subject ${s.kind} ${s.namespace}/${s.name} is not the chart's ServiceAccount`);
        }
      }
      const target = b.roleRef.kind === 'ClusterRole' ? find('ClusterRole', b.roleRef.name)
        : allRoles.find((r) => r.metadata.name === b.roleRef.name && r.metadata.namespace === b.metadata.namespace);
      if (!target) err(b, `roleRef ${b.roleRef.kind} ${b.roleRef.name} is not rendered`);
    }
    const grantsNamespaceCreate = (r) => (r.rules || []).some((x) => (x.resources || []).includes('namespaces') && (x.verbs || []).includes('create'));
    // The kubernetes driver's own needs (drivers/k8s.c), granted where its sandboxes live: the
    // agent-sandbox Sandbox objects, listed and watched for its cache.
    const grants = (r, group, resource, verb) => (r.rules || []).some((x) => (x.apiGroups || []).includes(group) &&
      (x.resources || []).includes(resource) && (x.verbs || []).includes(verb));
    const driverNeeds = [['agents.x-k8s.io', 'sandboxes', ['get', 'list', 'watch', 'create', 'delete']]];
    // Each sandbox's credentials Secret: written (create, replace) and deleted, never read.
    const secretNeeds = ['', 'secrets', ['create', 'update', 'delete']];
    const guarded = byKind('ValidatingAdmissionPolicy').some((v) => v.metadata.name.endsWith('-driver-guard'));
    const needsDriver = (r, needs) => {
      if (!r) return;
      const missing = needs.flatMap(([g, res, verbs]) => verbs.filter((v) => !grants(r, g, res, v))
        .map((v) => `${v} on ${res}${g ? '.' + g : ''}`));
      if (missing.length) err(r, `the kubernetes driver is not granted ${missing.join(', ')}`);
    };
    // Secrets are read only in the release namespace, by name.
    const sts0 = byKind('StatefulSet')[0];
    const releaseNs = sts0 ? sts0.metadata.namespace : '';
    const full = sts0 ? sts0.metadata.name : '';
    const gw = sts0 ? (sts0.metadata.annotations || {})['gantry/gateway-id'] : '';
    for (const r of [...roles, ...allCroles]) {
      for (const x of r.rules || []) {
        if (!(x.resources || []).includes('secrets')) continue;
        const reads = (x.verbs || []).filter((v) => ['get', 'list', 'watch'].includes(v));
        if (reads.length && (r.kind !== 'Role' || r.metadata.namespace !== releaseNs || !(x.resourceNames || []).length)) {
          err(r, `grants ${reads.join(',')} on secrets beyond named Secrets in the release namespace`);
        }
      }
    }
    // The fence: a Role in the release namespace, reads and updates by name.
    let home = null;
    if (args.mode !== 'none') {
      home = roles.find((r) => r.metadata.name === `${full}-driver-home` && r.metadata.namespace === releaseNs);
      const fence = `gantry-fence-${gw}`;
      if (!home) err(null, `no Role ${full}-driver-home in the release namespace for the driver's fence`);
      else {
        if (!grants(home, '', 'configmaps', 'create')) err(home, 'the driver cannot create its fence ConfigMap');
        const named = (home.rules || []).filter((x) => (x.resources || []).includes('configmaps') &&
          ['get', 'update'].every((v) => (x.verbs || []).includes(v)));
        if (!named.length || !named.every((x) => JSON.stringify(x.resourceNames) === JSON.stringify([fence]))) {
          err(home, `get and update on configmaps must be limited to ${fence}`);
        }
        if (!rbs.some((b) => b.roleRef.kind === 'Role' && b.roleRef.name === home.metadata.name &&
          b.metadata.namespace === releaseNs)) {
          err(home, 'not bound');
        }
      }
    }
    const others = roles.filter((r) => r !== home);
    const otherRbs = rbs.filter((b) => !home || b.roleRef.name !== home.metadata.name || b.roleRef.kind !== 'Role');
    for (const r of [...others, ...croles]) {
      if ((r.rules || []).some((x) => (x.resources || []).includes('configmaps'))) {
        err(r, 'grants ConfigMap rights outside the release namespace\'s fence Role');
      }
    }
    switch (args.mode) {
      case 'none':
        if (roles.length + croles.length + rbs.length + crbs.length) err(null, 'RBAC rendered without the Kubernetes driver');
        break;
      case 'managed':
        if (others.length || otherRbs.length) err(null, 'managed mode needs no Role or RoleBinding besides the fence\'s');
        if (croles.length !== 1 || !grantsNamespaceCreate(croles[0])) err(null, 'managed mode needs one ClusterRole that creates namespaces');
        if (crbs.length !== 1) err(null, 'managed mode needs one ClusterRoleBinding');
        needsDriver(croles[0], [...driverNeeds, ['', 'namespaces', ['get', 'create', 'delete', 'patch']],
          ['networking.k8s.io', 'networkpolicies', ['create']], ...(guarded ? [secretNeeds] : [])]);
        // Without the guard, a write on secrets would hold in every namespace (kube-system included).
        if (!guarded && croles[0] && (croles[0].rules || []).some((x) => (x.resources || []).includes('secrets'))) {
          err(croles[0], 'grants rights on secrets in every namespace without the namespace guard');
        }
        break;
      case 'operator': {
        if (others.length) err(null, 'operator mode binds a ClusterRole per namespace; no Role expected besides the fence\'s');
        if (croles.some(grantsNamespaceCreate)) err(null, 'operator mode must not create namespaces');
        const nsRole = croles.find((r) => r.rules.every((x) => x.resources.includes('namespaces')));
        if (!nsRole || JSON.stringify([...nsRole.rules[0].resourceNames].sort()) !== JSON.stringify([...args.namespaces].sort()) ||
          JSON.stringify(nsRole.rules[0].verbs) !== '["get"]') {
          err(null, 'operator mode: namespaces may only be read, by name, from the allowlist');
        }
        if (crbs.length !== 1 || !nsRole || crbs[0].roleRef.name !== nsRole.metadata.name) {
          err(null, 'operator mode: the only ClusterRoleBinding is the one that reads the allowlisted namespaces');
        }
        const sandboxRole = croles.find((r) => r !== nsRole);
        if (!sandboxRole || !otherRbs.every((b) => b.roleRef.name === sandboxRole.metadata.name)) {
          err(null, 'operator mode: the RoleBindings bind the ClusterRole with the sandbox rules');
        }
        needsDriver(sandboxRole, [...driverNeeds, secretNeeds]);
        const bound = otherRbs.map((b) => b.metadata.namespace).sort();
        if (JSON.stringify(bound) !== JSON.stringify([...args.namespaces].sort())) {
          err(null, `operator mode: RoleBindings in ${bound.join(',')}, expected exactly ${args.namespaces.join(',')}`);
        }
        break;
      }
      case 'shared':
        if (croles.length || crbs.length) err(null, 'shared mode must not render cluster-wide RBAC');
        if (others.length !== 1 || otherRbs.length !== 1) err(null, 'shared mode needs one Role and one RoleBinding besides the fence\'s');
        else if (args.namespaces.length && others[0].metadata.namespace !== args.namespaces[0]) {
          err(others[0], `Role in ${others[0].metadata.namespace}, expected ${args.namespaces[0]}`);
        }
        if (others.length && others[0].metadata.namespace === releaseNs) err(others[0], 'sandboxes in the release namespace');
        needsDriver(others[0], [...driverNeeds, secretNeeds]);
        break;
      default:
        err(null, `unknown --mode ${args.mode}`);
    }

    // rbac.tokenReview: one ClusterRole with create on tokenreviews and nothing else, bound; or none.
    const trRoles = allCroles.filter(isTokenReview);
    const trBindings = allCrbs.filter(isTokenReview);
    if (args.tokenReview) {
      const want = JSON.stringify([{ apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] }]);
      if (trRoles.length !== 1 || JSON.stringify(trRoles[0].rules) !== want) {
        err(trRoles[0] || null, `rbac.tokenReview: expected one ClusterRole with exactly ${want}`);
      }
      if (trBindings.length !== 1 || !trRoles[0] || trBindings[0].roleRef.name !== trRoles[0].metadata.name) {
        err(null, 'rbac.tokenReview: the tokenreviews ClusterRole is not bound');
      }
    } else if (trRoles.length || trBindings.length || allRoles.some(isTokenReview) || allRbs.some(isTokenReview)) {
      err(null, 'tokenreviews RBAC rendered without rbac.tokenReview');
    }
    // rbac.referencedSecrets: get on exactly the listed Secrets, by name, one Role per namespace,
    // each bound there; or none.
    const refRoles = allRoles.filter(isSecretRefs);
    const refBindings = allRbs.filter(isSecretRefs);
    if (allCroles.some(isSecretRefs) || allCrbs.some(isSecretRefs)) err(null, 'referenced Secrets through cluster-wide RBAC');
    const granted = [];
    for (const r of refRoles) {
      for (const x of r.rules || []) {
        if (JSON.stringify(x.apiGroups) !== '[""]' || JSON.stringify(x.resources) !== '["secrets"]' ||
          JSON.stringify(x.verbs) !== '["get"]' || !(x.resourceNames || []).length) {
          err(r, `referenced Secrets: a rule other than get on named secrets: ${JSON.stringify(x)}`);
        }
        for (const n of x.resourceNames || []) granted.push(`${r.metadata.namespace}/${n}`);
      }
      if (!refBindings.some((b) => b.metadata.namespace === r.metadata.namespace && b.roleRef.kind === 'Role' &&
        b.roleRef.name === r.metadata.name)) {
        err(r, 'referenced Secrets: the Role is not bound');
      }
    }
    if (refBindings.length !== refRoles.length) err(null, 'referenced Secrets: a RoleBinding per Role expected');
    if (JSON.stringify(granted.sort()) !== JSON.stringify([...args.secretRefs].sort())) {
      err(null, `referenced Secrets: get granted on ${granted.join(',') || 'nothing'}, expected ${args.secretRefs.join(',') || 'nothing'}`);
    }

    // The admission policies, evaluated: what they must allow and deny.
    const ints = (v) => (typeof v === 'number' && Number.isInteger(v) ? BigInt(v)
      : Array.isArray(v) ? v.map(ints)
        : v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, ints(x)])) : v);
    // Admitted: every match condition holds and every validation holds (null: not matched).
    const admit = (vap, vars) => {
      const env = ints(vars);
      for (const m of vap.spec.matchConditions || []) if (cel.run(m.expression, env) !== true) return null;
      return (vap.spec.validations || []).every((v) => cel.run(v.expression, env) === true);
    };
    const expectAdmit = (vap, what, vars, want) => {
      let got;
      try {
        got = admit(vap, vars);
      } catch (e) {
        err(vap, `${what}: CEL error ${e.message}`);
        return;
      }
      if (got !== want) err(vap, `${what}: ${want === null ? 'must not match' : want ? 'must be allowed' : 'must be denied'}, got ${got}`);
    };
    const sa = sas[0] ? `system:serviceaccount:${sas[0].metadata.namespace}:${sas[0].metadata.name}` : '';
    for (const vap of byKind('ValidatingAdmissionPolicy')) {
      const bind = byKind('ValidatingAdmissionPolicyBinding').find((b) => b.spec.policyName === vap.metadata.name);
      if (!bind || JSON.stringify(bind.spec.validationActions) !== '["Deny"]') err(vap, 'not bound with validationActions [Deny]');
      if (vap.metadata.name.endsWith('-driver-guard')) {
        const req = (resource, ns, name, user = sa) => ({ request: { resource: { resource }, namespace: ns, userInfo: { username: user } },
          object: { metadata: { name } }, oldObject: null });
        const prefix = `openshell-${gw}-`;
        expectAdmit(vap, 'the driver making a managed namespace', req('namespaces', '', `${prefix}team`), true);
        expectAdmit(vap, 'the driver making any other namespace', req('namespaces', '', 'kube-public'), false);
        expectAdmit(vap, 'the driver writing in a managed namespace', req('sandboxes', `${prefix}team`, 'web'), true);
        expectAdmit(vap, 'the driver writing a credentials Secret in a managed namespace',
          req('secrets', `${prefix}team`, `gantry-credentials-${gw}-x`), true);
        expectAdmit(vap, 'the driver writing its fence', req('configmaps', releaseNs, `gantry-fence-${gw}`), true);
        expectAdmit(vap, 'the driver writing another ConfigMap of the release', req('configmaps', releaseNs, `${full}-config`), false);
        expectAdmit(vap, 'the driver writing a Secret elsewhere', req('secrets', 'kube-system', 'x'), false);
        expectAdmit(vap, 'someone else\'s writes', req('secrets', 'kube-system', 'x', 'system:admin'), null);
      } else if (vap.metadata.name.endsWith('-scale-guard')) {
        const sts = (n, ann) => ({ metadata: { name: full, namespace: releaseNs, ...(ann ? { annotations: ann } : {}) }, spec: { replicas: n } });
        const req = (sub, from, to, ann, name = full) => ({ request: { namespace: releaseNs, name, subResource: sub },
          oldObject: sts(from, {}), object: sts(to, ann) });
        expectAdmit(vap, 'scaling up 3 -> 5', req('', 3, 5, {}), true);
        expectAdmit(vap, 'an update that keeps 5', req('', 5, 5, {}), true);
        expectAdmit(vap, '5 -> 3 without the members removed', req('', 5, 3, {}), false);
        expectAdmit(vap, '5 -> 3 with ordinals 3-4 removed', req('', 5, 3, { 'gantry/removed-ordinals': '3-4' }), true);
        expectAdmit(vap, '5 -> 3 naming other ordinals', req('', 5, 3, { 'gantry/removed-ordinals': '4-5' }), false);
        expectAdmit(vap, '7 -> 3 in one step', req('', 7, 3, { 'gantry/removed-ordinals': '3-6' }), false);
        expectAdmit(vap, 'kubectl scale 5 -> 3', req('scale', 5, 3, undefined), false);
        expectAdmit(vap, 'kubectl scale 3 -> 5', req('scale', 3, 5, undefined), true);
        expectAdmit(vap, 'another StatefulSet', req('', 5, 1, {}, 'other'), null);
      } else {
        err(vap, 'an admission policy the validator does not know');
      }
    }
  }

}

const reports = opts.jobs.map(newReport);
for (const r of reports) parseAndCheckSchemas(r);
checkFields(reports);
for (const r of reports) checkContract(r);

let failed = 0;
for (const r of reports) {
  const label = r.job.label;
  for (const w of r.warnings) console.log(`warning ${label}: ${w}`);
  for (const e of r.errors) console.log(`error ${label}: ${e}`);
  console.log(`pod-template-sha256 ${label}: ${r.hash}`);
  const kinds = [...new Set(r.objects.map((o) => o.kind))].sort().join(', ');
  console.log(`validate ${label}: ${r.objects.length} objects (${kinds}), ${r.errors.length} errors, ${r.warnings.length} warnings`);
  if (r.errors.length) failed++;
}
console.log(`validate: ${reports.length} manifests, ${failed} with errors`);
process.exit(failed ? 1 : 0);
