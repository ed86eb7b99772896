"""The write path (docs/architecture.md "The write path"): forwarding to the replica beside the
dqlite leader, group commit with one SAVEPOINT per call, and settlement of unknown outcomes.

Run: /usr/bin/python3 test_write_path.py <group>
Groups: batch (conflicting calls in one batch, each answered on its own), kill (leader SIGKILL under
64 concurrent creates through every replica: nothing acknowledged lost, nothing run twice).
"""

import concurrent.futures
import json
import os
import re
import sys
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_gantryd as g  # noqa: E402
import test_resources as tr  # noqa: E402

import grpc  # noqa: E402
from gantry.v1 import audit_pb2, meta_pb2, quotas_pb2, sandboxes_pb2  # noqa: E402

S = sandboxes_pb2
Q = quotas_pb2
KILL_CLIENTS = int(os.environ.get("GANTRY_WRITE_KILL_CLIENTS", "64"))


def metric(replica, name):
    with urllib.request.urlopen("http://%s/metrics" % replica.admin, timeout=5) as r:
        text = r.read().decode()
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    return int(m.group(1)) if m else 0


def cluster_metric(c, name):
    return sum(metric(r, name) for r in c.alive())


class LingerEnv(tr.Env):
    """A cluster whose writer lingers, so calls sent together share one batch; no reconciler, whose
    status writes would make batches of their own."""

    def __init__(self, test, linger_ms):
        c = g.Cluster("wp-" + test._testMethodName,
                      run_flags=["--write-batch-linger-ms", str(linger_ms), "--driver", "none"])
        test.clusters.append(c)
        c.init()
        c.join(2)
        c.wait_roles(3, 0)
        c.wait_ready()
        self._setup(c)


class Batch(g.GantrydTest):
    def test_conflicting_calls_in_one_batch(self):
        """Quota N with N+k creates, two creates of one name, a delete with a stale resource_version
        and a create that fails a check made in the store, all in one transaction: each caller gets
        its own answer, and only the calls that succeeded changed anything. A create of a name taken
        before the batch, in the namespace whose quota the batch fills, is ALREADY_EXISTS whatever
        its place in the batch (the later creates of a namespace take its facts from the batch's
        memo and the name from the INSERT: docs/architecture.md, "The write path")."""
        e = LingerEnv(self, 400)
        N, K = 3, 4
        e.call("pa", quotas_pb2, "Quotas", "Set", Q.SetQuotaRequest(quota=Q.Quota(
            meta=meta_pb2.ObjectMeta(namespace="team-b"), max_concurrent_sandboxes=N + 1, mode=Q.QUOTA_MODE_HARD)))
        e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("team-b", "pre")))
        victim = e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "victim")))
        stale_rv = victim.meta.resource_version - 1
        calls = [("quota-%d" % i, "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("team-b", "q%d" % i)))
                 for i in range(N + K)]
        calls += [("dup-%d" % i, "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "dup")))
                  for i in range(2)]
        calls.append(("stale", "Delete", S.DeleteSandboxRequest(namespace="default", name="victim",
                                                                 expected_resource_version=stale_rv)))
        calls.append(("owner", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox(
            "default", "orphan", owner_id="00000000-0000-4000-8000-000000000000"))))
        calls.append(("plain", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "plain"))))
        calls += [("taken-%d" % i, "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("team-b", "pre")))
                  for i in range(3)]
        for _ in range(5):  # the batch is a matter of timing: retry the whole round if it split
            for ns, names in (("team-b", ["q%d" % i for i in range(N + K)]), ("default", ["dup", "orphan", "plain"])):
                for n in names:
                    tr.code_of(lambda: e.sb("pa", "Delete", S.DeleteSandboxRequest(namespace=ns, name=n)))
                    self.wait_gone(e, ns, n)
            b0 = cluster_metric(e.c, "gantry_write_batches_total")
            r0 = cluster_metric(e.c, "gantry_write_batched_requests_total")
            start = threading.Barrier(len(calls))

            def one(i):
                tag, method, req = calls[i]
                start.wait()
                code, msg = tr.code_of(lambda: e.sb("pa", method, req, replica=i % 3))
                return tag, code, msg
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(calls)) as pool:
                results = list(pool.map(one, range(len(calls))))
            batches = cluster_metric(e.c, "gantry_write_batches_total") - b0
            requests = cluster_metric(e.c, "gantry_write_batched_requests_total") - r0
            if batches == 1:
                break
            print("the calls took %d batches; again" % batches)
        # One transaction carried them all (the audit sink's rows for the refusals may ride along).
        self.assertEqual(batches, 1, "the calls did not share one batch: %s" % results)
        self.assertGreaterEqual(requests, len(calls))
        got = {tag: (code, msg) for tag, code, msg in results}
        quota = [got["quota-%d" % i][0] for i in range(N + K)]
        self.assertEqual(quota.count(grpc.StatusCode.OK), N, got)
        self.assertEqual(quota.count(grpc.StatusCode.RESOURCE_EXHAUSTED), K, got)
        self.assertEqual(sorted([got["dup-0"][0], got["dup-1"][0]], key=str),
                         sorted([grpc.StatusCode.OK, grpc.StatusCode.ALREADY_EXISTS], key=str), got)
        self.assertEqual(got["stale"][0], grpc.StatusCode.ABORTED, got)
        self.assertIn("not the expected %d" % stale_rv, got["stale"][1])
        self.assertEqual(got["owner"][0], grpc.StatusCode.FAILED_PRECONDITION, got)
        self.assertIn("is not an enabled principal", got["owner"][1])
        self.assertEqual(got["plain"][0], grpc.StatusCode.OK, got)
        for i in range(3):
            self.assertEqual(got["taken-%d" % i][0], grpc.StatusCode.ALREADY_EXISTS, got)
        # Only the successes changed anything: N sandboxes (and "pre") charged to team-b, the victim not deleted,
        # one "dup", no "orphan", and one change event per success.
        usage = e.call("pa", quotas_pb2, "Quotas", "Get", Q.GetQuotaRequest(namespace="team-b")).usage
        self.assertEqual(usage.sandboxes, N + 1)
        self.assertEqual(len(e.sb("pa", "List", S.ListSandboxesRequest(namespace="team-b")).sandboxes), N + 1)
        names = sorted(x.meta.name for x in e.sb("pa", "List", S.ListSandboxesRequest(namespace="default")).sandboxes)
        self.assertEqual(names, ["dup", "plain", "victim"])
        v = e.sb("pa", "Get", S.GetSandboxRequest(namespace="default", name="victim"))
        self.assertEqual(v.meta.deletion_timestamp_ms, 0, "the stale delete started a deletion")
        print("batch: %d conflicting calls in one transaction: %d of %d creates within quota %d, one of two "
              "\"dup\", stale delete ABORTED, unknown owner FAILED_PRECONDITION, a taken name ALREADY_EXISTS" %
              (len(calls), N, N + K, N))

    def wait_gone(self, e, ns, name):
        deadline = time.monotonic() + 30
        while tr.code_of(lambda: e.sb("pa", "Get", S.GetSandboxRequest(namespace=ns, name=name)))[0] == \
                grpc.StatusCode.OK:
            self.assertLess(time.monotonic(), deadline, "%s/%s was not deleted" % (ns, name))
            time.sleep(0.1)


AMBIGUOUS = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class Kill(g.GantrydTest):
    def test_leader_sigkill_under_concurrent_creates(self):
        """64 clients create through all three replicas, half with request ids; the replica beside
        the dqlite leader is SIGKILLed. Every acknowledged create exists exactly once (one Success in
        the audit trail, one charge in the quota usage); a create whose outcome was unknown and was
        retried exists once; no call answered with a definite failure changed anything."""
        e = tr.Env(self)
        stop = threading.Event()
        outcomes = {}  # name -> (final code, ambiguous attempts before, request id)
        lock = threading.Lock()

        def alive():
            return [i for i, r in enumerate(e.c.replicas) if r.proc.poll() is None]

        def client(k):
            i = 0
            while not stop.is_set():
                i += 1
                name = "k%d-%d" % (k, i)
                rid = "rid-%s" % name if k % 2 == 0 else ""
                req = S.CreateSandboxRequest(request_id=rid, sandbox=tr.sandbox("default", name))
                ambiguous = 0
                for attempt in range(200):
                    targets = alive()
                    code, _ = tr.code_of(lambda: e.sb("pa", "Create", req, replica=targets[(k + attempt) % len(targets)]))
                    if code not in AMBIGUOUS:
                        break
                    ambiguous += 1
                    time.sleep(0.05)
                with lock:
                    outcomes[name] = (code, ambiguous, rid)
        with concurrent.futures.ThreadPoolExecutor(max_workers=KILL_CLIENTS) as pool:
            futures = [pool.submit(client, k) for k in range(KILL_CLIENTS)]
            time.sleep(2.0)
            victim = e.c.leader()
            victim.kill()
            time.sleep(4.0)
            stop.set()
            for f in futures:
                f.result()
        acked = {n for n, (code, _, _) in outcomes.items() if code == grpc.StatusCode.OK}
        # Without a request id, a retry of a create that had committed is refused as a duplicate:
        # fine only after an ambiguous attempt.
        dup_after_unknown = {n for n, (code, amb, rid) in outcomes.items()
                             if code == grpc.StatusCode.ALREADY_EXISTS and amb > 0 and not rid}
        failed = {n: code for n, (code, _, _) in outcomes.items()
                  if code != grpc.StatusCode.OK and n not in dup_after_unknown}
        retried = {n for n, (_, amb, _) in outcomes.items() if amb > 0}
        self.assertGreater(len(acked), 100, "too few creates to say anything")
        # What the cluster holds, through a survivor.
        survivor = alive()[0]
        listed, token = [], ""
        while True:
            page = e.sb("pa", "List", S.ListSandboxesRequest(namespace="default", page=meta_pb2.PageRequest(
                page_size=500, page_token=token)), replica=survivor)
            listed += [x.meta.name for x in page.sandboxes]
            token = page.next_page_token
            if not token:
                break
        self.assertEqual(len(listed), len(set(listed)))
        listed = set(listed)
        self.assertEqual(sorted(acked - listed), [], "acknowledged creates lost")
        self.assertEqual(sorted(dup_after_unknown - listed), [], "a duplicate refusal for a create that never ran")
        self.assertEqual(sorted(set(failed) & listed), [], "calls answered with a failure that changed something")
        usage = e.call("pa", quotas_pb2, "Quotas", "Get", Q.GetQuotaRequest(namespace="default"),
                       replica=survivor).usage
        self.assertEqual(usage.sandboxes, len(listed), "the quota charge differs from the sandboxes")
        # Exactly once: one successful Create per sandbox in the audit trail.
        fn = e.stub("gantry.v1.Audit", "Export", audit_pb2.ExportAuditRequest, audit_pb2.ExportAuditChunk,
                    streaming=True, replica=survivor)
        creates = {}
        for chunk in fn(audit_pb2.ExportAuditRequest(), metadata=[("authorization", "Bearer " + e.keys["pa"])],
                        timeout=120):
            for line in chunk.jsonl.decode().splitlines():
                ev = json.loads(line)
                if ev["api"]["operation"] == "/gantry.v1.Sandboxes/Create" and ev["status"] == "Success":
                    for res in ev.get("resources", []):
                        creates[res.get("name")] = creates.get(res.get("name"), 0) + 1
        twice = {n: k for n, k in creates.items() if k > 1}
        self.assertEqual(twice, {}, "creates that ran more than once")
        self.assertEqual(sorted(listed - set(creates)), [], "sandboxes without their audited create")
        print("kill: %d clients, %d creates acknowledged (%d with request ids), %d retried after an unknown outcome "
              "(%d of them refused as duplicates of their own commit), %d definite failures; every acknowledged "
              "create once in store, quota and audit" % (
                  KILL_CLIENTS, len(acked), sum(1 for n in acked if outcomes[n][2]), len(retried),
                  len(dup_after_unknown), len(failed)))


GROUPS = {"batch": [Batch], "kill": [Kill]}

if __name__ == "__main__":
    group = sys.argv.pop(1) if len(sys.argv) > 1 else "batch"
    suite = unittest.TestSuite()
    for cls in GROUPS[group]:
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    sys.exit(0 if unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful() else 1)
