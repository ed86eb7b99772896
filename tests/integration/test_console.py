"""Seeing the cluster (issue 22): /metrics, the operator console and `gantry cluster top`, on a 3-replica
gantryd cluster driven by Debian's python3-grpcio.

Run: /usr/bin/python3 test_console.py <group>
Groups:
  metrics   every replica's /metrics: each family documented in docs/metrics.md with its type (and
            each documented family served), the per-namespace series equal to what the API reports,
            the bound on namespaces, and no sandbox name, principal or secret in any label
  console   the console over HTTP: static files, sign-in with an API key, the data endpoint and its
            live stream, what each role sees, the leadership drill, bad input refused without effect
  top       `gantry cluster top --once`: members, leader, lease, sandboxes per namespace
  browser   the console in Debian's Chromium driven by playwright-core (tests/console/console.mjs):
            sign in, three members and the leader, the leader killed and the new one shown within
            2 s, a sandbox created through the CLI appearing, a user of one namespace not seeing
            another's sandboxes; screenshots to GANTRY_CONSOLE_SHOTS when set

Uses test_gantryd.py's harness and test_resources.py's principals (a platform admin, an auditor, a
namespace admin and users of "default", a user of "team-b").
"""

import http.client
import json
import os
import re
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_gantryd as g  # noqa: E402
import test_resources as tr  # noqa: E402

import grpc  # noqa: E402
from gantry.v1 import (audit_pb2, meta_pb2, namespaces_pb2, providers_pb2, quotas_pb2,  # noqa: E402
                       sandboxes_pb2)

S = sandboxes_pb2
N = namespaces_pb2
Q = quotas_pb2
SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GANTRY = os.environ.get("GANTRY", "")
PHASES = ["PROVISIONING", "READY", "ERROR", "DELETING", "STOPPED", "UNKNOWN"]
PHASE_NAMES = {getattr(S.SandboxStatus, "PHASE_" + p): p for p in PHASES}
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Env(tr.Env):
    """test_resources' principals on a fake-driver cluster (GPUs, quick READY) with the console on, the
    per-namespace gauges refreshed every 300 ms and at most 4 namespaces with series of their own."""

    def __init__(self, test, replicas=3, extra=()):
        root = os.path.join(g.WORK, "console-" + test._testMethodName)
        os.makedirs(root)
        flags = ["--driver", "fake", "--driver-state-dir", os.path.join(root, "state.json"), "--lease-duration-ms",
                 "1500", "--lease-renew-deadline-ms", "1000", "--lease-retry-ms", "200", "--console",
                 "--metrics-namespace-interval-ms", "300", "--metrics-namespace-max", "4"] + list(extra)
        c = g.Cluster("con-" + test._testMethodName, run_flags=flags)
        test.clusters.append(c)
        c.init()
        c.join(replicas - 1)
        c.wait_roles(min(replicas, 3), max(0, replicas - 3))
        c.wait_ready()
        self._setup(c)
        self.ca = os.path.join(c.replicas[0].dir, "tls", "ca.pem")

    def ns(self, name):
        self.call("pa", namespaces_pb2, "Namespaces", "Create", N.CreateNamespaceRequest(
            namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name=name))))

    def create(self, role, ns, name, replica=0, **spec):
        return self.sb(role, "Create", S.CreateSandboxRequest(sandbox=tr.sandbox(ns, name, **spec)), replica=replica)

    def listed(self, ns=""):
        return self.sb("pa", "List", S.ListSandboxesRequest(namespace=ns)).sandboxes


def scrape(replica):
    with urllib.request.urlopen("http://%s/metrics" % replica.admin, timeout=5) as r:
        return r.read().decode()


def parse(text):
    """{family: type}, [(name, {label: value}, value)]"""
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            assert m, "not a sample line: %r" % line
            labels = dict(LABEL.findall(m.group(3) or ""))
            samples.append((m.group(1), labels, float(m.group(4))))
    return types, samples


def value(samples, name, **labels):
    for n, ls, v in samples:
        if n == name and all(ls.get(k) == x for k, x in labels.items()):
            return v
    return None


def documented():
    out = {}
    with open(os.path.join(SOURCE, "docs", "metrics.md")) as f:
        for line in f:
            m = re.match(r"^\| `([a-z_][a-z0-9_]*)` \| (counter|gauge|histogram) \|", line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def wait_for(what, fn, timeout=30, step=0.1):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            ok, last = fn()
            if ok:
                return last
        except (AssertionError, OSError, grpc.RpcError, urllib.error.URLError) as e:
            last = e
        time.sleep(step)
    raise AssertionError("%s: not within %ds (last: %s)" % (what, timeout, last))


class Metrics(g.GantrydTest):
    def test_per_namespace_series_match_the_api_and_stay_bounded(self):
        e = Env(self)
        from gantry.v1 import api_keys_pb2  # noqa: F401
        # Namespaces: default, team-b (Env), team-a, team-m tracked (4 = the bound), zz-over summed under _other.
        for name in ("team-a", "team-m", "zz-over"):
            e.ns(name)
        e.call("pa", quotas_pb2, "Quotas", "Set", Q.SetQuotaRequest(quota=Q.Quota(
            meta=meta_pb2.ObjectMeta(namespace="team-a"), max_concurrent_sandboxes=5, max_gpus=4,
            mode=Q.QUOTA_MODE_HARD)))
        e.call("pa", quotas_pb2, "Quotas", "SetCeiling", Q.SetQuotaCeilingRequest(ceiling=Q.QuotaCeiling(
            meta=meta_pb2.ObjectMeta(namespace="team-a"), max_concurrent_sandboxes=3)))
        # A planted provider secret, and sandbox names that must never become labels.
        secret = "s3cr3t-value-never-in-metrics-%d" % os.getpid()
        e.call("pa", providers_pb2, "Providers", "Create", providers_pb2.CreateProviderRequest(
            provider=providers_pb2.Provider(meta=meta_pb2.ObjectMeta(namespace="team-a", name="llm"), type="openai"),
            secret={"api_key": secret}))
        names = {"team-a": ["sbname-alpha-1", "sbname-alpha-2"], "team-b": ["sbname-bravo-1"],
                 "default": ["sbname-dflt-1", "sbname-dflt-2", "sbname-dflt-3"], "zz-over": ["sbname-over-1"]}
        # Wait until every replica's refresh has seen the namespaces, so the calls below are counted
        # under their own names (a namespace newer than the last refresh is counted as _other).
        wait_for("namespaces known on every replica", lambda: (all(
            value(parse(scrape(r))[1], "gantry_namespaces") == 5 for r in e.c.replicas), None))
        creates = {}
        for i, (ns, sbs) in enumerate(sorted(names.items())):
            for j, name in enumerate(sbs):
                role = "other" if ns == "team-b" else "pa"
                e.create(role, ns, name, replica=(i + j) % 3, gpu_count=1 + j % 2)
                creates[ns] = creates.get(ns, 0) + 1
        # Refusals: the team-b user lists default (denied) three times, through replica 1.
        for _ in range(3):
            code, _ = tr.code_of(lambda: e.sb("other", "List", S.ListSandboxesRequest(namespace="default"),
                                              replica=1))
            self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED)
        # A create over the ceiling of team-a (3 sandboxes) fails: an error, not a denial.
        e.create("pa", "team-a", "sbname-alpha-3")
        code, _ = tr.code_of(lambda: e.create("pa", "team-a", "sbname-alpha-4", replica=2))
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        names["team-a"].append("sbname-alpha-3")
        creates["team-a"] += 2

        # The API's view, once the fake driver made everything READY.
        def all_ready():
            sbs = e.listed()
            return len(sbs) == sum(len(v) for v in names.values()) and all(
                PHASE_NAMES[s.status.phase] == "READY" for s in sbs), len(sbs)
        wait_for("every sandbox READY", all_ready, timeout=60, step=0.2)
        api = {}
        for s in e.listed():
            row = api.setdefault(s.meta.namespace, {"phases": dict.fromkeys(PHASES, 0), "gpus": 0})
            row["phases"][PHASE_NAMES[s.status.phase]] += 1
            row["gpus"] += s.spec.gpu_count if PHASE_NAMES[s.status.phase] == "READY" else 0

        def quota(ns):
            return e.call("pa", quotas_pb2, "Quotas", "Get", Q.GetQuotaRequest(namespace=ns))

        tracked = ["default", "team-a", "team-b", "team-m"]

        def matches(r):
            types, samples = parse(scrape(r))
            for ns in tracked:
                want = api.get(ns, {"phases": dict.fromkeys(PHASES, 0), "gpus": 0})
                for p in PHASES:
                    got = value(samples, "gantry_namespace_sandboxes", namespace=ns, phase=p)
                    assert got == want["phases"][p], "%s %s %s: %s != %s" % (r.rid, ns, p, got, want["phases"][p])
                got = value(samples, "gantry_namespace_gpus_in_use", namespace=ns)
                assert got == want["gpus"], "%s %s gpus: %s != %s" % (r.rid, ns, got, want["gpus"])
                q = quota(ns)
                for res_, used in (("sandboxes", q.usage.sandboxes), ("gpus", q.usage.gpus)):
                    got = value(samples, "gantry_namespace_quota_used", namespace=ns, resource=res_)
                    assert got == used, "%s %s used %s: %s != %s" % (r.rid, ns, res_, got, used)
            # The bound: zz-over has no series of its own; its sandbox is under _other.
            assert value(samples, "gantry_namespace_sandboxes", namespace="zz-over", phase="READY") is None
            assert value(samples, "gantry_namespace_sandboxes", namespace="_other", phase="READY") == 1
            assert value(samples, "gantry_namespace_series_overflow") == 1
            # team-a: quota 5 sandboxes and 4 GPUs, ceiling 3 sandboxes: the tighter of each.
            assert value(samples, "gantry_namespace_quota_limit", namespace="team-a", resource="sandboxes") == 3
            assert value(samples, "gantry_namespace_quota_limit", namespace="team-a", resource="gpus") == 4
            assert value(samples, "gantry_namespace_quota_limit", namespace="default", resource="sandboxes") is None
            return True, None

        for r in e.c.replicas:
            wait_for("replica %d's per-namespace gauges equal the API's" % r.rid, lambda: matches(r))

        # Call counters: summed over replicas, each create and denial counted once, where it was sent.
        def counters():
            tot = {}
            for r in e.c.replicas:
                for n, ls, v in parse(scrape(r))[1]:
                    if n.startswith("gantry_namespace_api_"):
                        key = (n, ls.get("namespace"), ls.get("method"))
                        tot[key] = tot.get(key, 0) + v
            return tot
        tot = counters()
        for ns in ("default", "team-a", "team-b"):
            self.assertEqual(tot.get(("gantry_namespace_api_calls_total", ns, "Sandboxes/Create")), creates[ns], tot)
        self.assertEqual(tot.get(("gantry_namespace_api_calls_total", "_other", "Sandboxes/Create")), 1, tot)
        self.assertEqual(tot.get(("gantry_namespace_api_errors_total", "team-a", "Sandboxes/Create")), 1, tot)
        self.assertEqual(tot.get(("gantry_namespace_api_denied_total", "default", None)), 3, tot)
        self.assertEqual(tot.get(("gantry_namespace_api_errors_total", "default", "Sandboxes/List")), 3, tot)
        self.assertIsNone(tot.get(("gantry_namespace_api_calls_total", "zz-over", "Sandboxes/Create")), tot)

        # Audit events: k more creates in team-m raise its counter by k on every replica, as the audit
        # trail shows k more events there.
        def audit_counts():
            return [value(parse(scrape(r))[1], "gantry_namespace_audit_events_total", namespace="team-m")
                    for r in e.c.replicas]
        before = audit_counts()
        t0 = int(time.time() * 1000) - 1
        for k in range(4):
            e.create("pa", "team-m", "sbname-mike-%d" % k, replica=k % 3)
        events = e.call("pa", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(
            namespace="team-m", start_ms=t0)).events
        self.assertEqual(len(events), 4)
        wait_for("audit counters +4", lambda: (audit_counts() == [b + 4 for b in before], audit_counts()))

        # Every family served is documented with its type, and every documented one is served.
        docs = documented()
        served = {}
        all_labels = []
        bodies = []
        for r in e.c.replicas:
            body = scrape(r)
            bodies.append(body)
            types, samples = parse(body)
            served.update(types)
            all_labels += [(n, k, v) for n, ls, _ in samples for k, v in ls.items()]
        for name, kind in served.items():
            self.assertIn(name, docs, "%s is served but not in docs/metrics.md" % name)
            self.assertEqual(docs[name], kind, "%s: served as %s, documented as %s" % (name, kind, docs[name]))
        for name in docs:
            self.assertIn(name, served, "%s is in docs/metrics.md but no replica serves it" % name)
        # No sandbox name, principal, key or secret anywhere: not as a label, not in the text at all.
        forbidden = [n for v in names.values() for n in v] + ["sbname-mike-0", "p-user", "p-other", "p-auditor"]
        forbidden += list(e.keys.values()) + [secret] + list(e.ids.values())
        for n, k, v in all_labels:
            self.assertNotIn(v, forbidden, "%s has label %s=%r" % (n, k, v))
        for body in bodies:
            for x in forbidden:
                self.assertNotIn(x, body)
            for key in e.keys.values():
                self.assertNotIn(key.split("_")[1], body)  # not even the key id
        label_values = {k: set() for _, k, _ in all_labels}
        for _, k, v in all_labels:
            label_values[k].add(v)
        self.assertLessEqual(label_values["namespace"], {"default", "team-a", "team-b", "team-m", "_other",
                                                         "_cluster"})
        print("metrics: %d families on every replica, documented; per-namespace gauges equal the API's on 3 "
              "replicas; calls, errors, denials and audit events counted once; zz-over under _other" % len(served))


GROUPS = {
    "metrics": [Metrics],
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in GROUPS:
        print("usage: test_console.py %s" % "|".join(GROUPS), file=sys.stderr)
        sys.exit(2)
    suite = unittest.TestSuite()
    for cls in GROUPS[sys.argv[1]]:
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)
