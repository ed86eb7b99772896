"""Hostile load on a gantryd replica (issue 15): floods without credentials or with bad credentials
must not take the replica's service away from legitimate clients, nor drive its write path.

Run: /usr/bin/python3 test_overload.py <group>
Groups: flood.

Each test sends a bounded load (h2load from nghttp2-client, over TLS) for a bounded time, while a
legitimate client with an API key keeps calling, and checks that:
  - every legitimate call succeeds, with a stated latency bound during and right after the flood;
  - a write right after the flood is acknowledged within a stated bound (nothing queued behind it);
  - the flood reaches the audit trail as a handful of aggregated rows whose counts add up, not as one
    row (and one transaction) per refused call;
  - the replica's RSS comes back to within a stated margin of where it started.
Latencies are from a shared 2-core machine running the flooder on the same cores, so the bounds are
loose on purpose; they are far below what the replica did before the fix (no answer for minutes).
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_gantryd as g  # noqa: E402
import test_resources as tr  # noqa: E402

import grpc  # noqa: E402
from gantry.v1 import audit_pb2, meta_pb2, namespaces_pb2, sandboxes_pb2  # noqa: E402

FLOOD_SECONDS = int(os.environ.get("GANTRY_FLOOD_SECONDS", "8"))
# Bounds for the legitimate client (see the module comment).
LEGIT_P90_MS = 1000
LEGIT_MAX_MS = 5000
WRITE_AFTER_MS = 3000
RSS_MARGIN_MB = 64


def sanitized(binary):
    """An AddressSanitizer build keeps freed memory in quarantine (256 MB by default), so its RSS
    after a flood says nothing about what gantryd keeps; its leak check at exit does."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def grpc_body(msg):
    data = msg.SerializeToString()
    return b"\x00" + len(data).to_bytes(4, "big") + data


def metrics(replica):
    with urllib.request.urlopen("http://%s/metrics" % replica.admin, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


class Flood(g.GantrydTest):
    def h2load(self, replica, path, body, headers, seconds):
        work = tempfile.mkdtemp(prefix="flood-")
        try:
            with open(os.path.join(work, "body"), "wb") as f:
                f.write(body)
            args = ["h2load", "-D", str(seconds), "-c", "4", "-m", "32", "-t", "1",
                    "-d", os.path.join(work, "body"), "-H", "content-type: application/grpc", "-H", "te: trailers"]
            for h in headers:
                args += ["-H", h]
            args.append("https://%s%s" % (replica.api, path))
            out = subprocess.run(args, capture_output=True, timeout=seconds + 60)
            text = out.stdout.decode(errors="replace")
            m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", text)
            self.assertIsNotNone(m, "h2load printed no summary:\n" + text + out.stderr.decode(errors="replace"))
            return int(m.group(3)), text
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def legit_loop(self, e, stop, lat, errors):
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                e.sb("user", "List", sandboxes_pb2.ListSandboxesRequest(namespace="default"))
                lat.append((time.monotonic() - t0) * 1000)
            except grpc.RpcError as err:
                errors.append("%s: %s" % (err.code(), err.details()))
            time.sleep(0.05)

    def flood_once(self, e, replica, headers, label):
        lat, errors = [], []
        stop = threading.Event()
        # Warm up: the legitimate credential is verified, and the baseline is measured.
        for _ in range(20):
            e.sb("user", "List", sandboxes_pb2.ListSandboxesRequest(namespace="default"))
        rss0 = rss_mb(replica.proc.pid)
        t = threading.Thread(target=self.legit_loop, args=(e, stop, lat, errors))
        t.start()
        body = grpc_body(sandboxes_pb2.ListSandboxesRequest(namespace="default"))
        try:
            done, text = self.h2load(replica, "/gantry.v1.Sandboxes/List", body, headers, FLOOD_SECONDS)
        finally:
            stop.set()
            t.join()
        # A write right after the flood.
        t0 = time.monotonic()
        e.call("pa", namespaces_pb2, "Namespaces", "Create", namespaces_pb2.CreateNamespaceRequest(
            namespace=namespaces_pb2.Namespace(meta=meta_pb2.ObjectMeta(name="after-" + label))), replica=0)
        write_ms = (time.monotonic() - t0) * 1000
        lat.sort()
        p90 = lat[int(len(lat) * 0.9)] if lat else float("inf")
        print("%s: %d flood calls answered in %d s; legitimate calls: %d, p50 %.1f ms, p90 %.1f ms, max %.1f ms; "
              "write after the flood %.0f ms" % (label, done, FLOOD_SECONDS, len(lat), lat[len(lat) // 2] if lat else -1,
                                                p90, lat[-1] if lat else -1, write_ms))
        self.assertEqual(errors, [], "legitimate calls failed during the flood")
        self.assertGreater(done, 1000, "the flood was too small to prove anything:\n" + text)
        self.assertGreater(len(lat), FLOOD_SECONDS * 4)
        self.assertLess(p90, LEGIT_P90_MS)
        self.assertLess(lat[-1], LEGIT_MAX_MS)
        self.assertLess(write_ms, WRITE_AFTER_MS)
        m = metrics(replica)
        self.assertLess(m.get("gantry_write_queue_depth", 0), 10)
        # RSS back within a margin (after the connections closed and a moment passed).
        end = time.monotonic() + 10
        while rss_mb(replica.proc.pid) > rss0 + RSS_MARGIN_MB and time.monotonic() < end:
            time.sleep(0.2)
        rss1 = rss_mb(replica.proc.pid)
        print("%s: RSS %.0f MB before, %.0f MB after" % (label, rss0, rss1))
        if not sanitized(g.GANTRYD):
            self.assertLess(rss1, rss0 + RSS_MARGIN_MB)
        return done

    def audit_rows(self, e, since_ms, class_uid, expected):
        """Rows and the events they stand for (sum of counts), for refusals since @since_ms: polled until
        they account for @expected events, or the aggregation windows (10 s) must have closed."""
        import json
        deadline = time.monotonic() + 30
        rows, events = [], 0
        while time.monotonic() < deadline:
            q = e.call("auditor", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(
                start_ms=since_ms, class_uid=class_uid, status="Failure",
                page=meta_pb2.PageRequest(page_size=500)))
            rows = [x for x in q.events if x.api_operation == "/gantry.v1.Sandboxes/List"]
            events = sum(json.loads(x.ocsf_json).get("count", 1) for x in rows)
            if events >= expected:
                break
            time.sleep(0.5)
        return rows, events

    def test_floods_without_and_with_bad_credentials(self):
        e = tr.Env(self, replicas=1)
        replica = e.c.replicas[0]
        # 1. No credentials at all.
        t0 = int(time.time() * 1000)
        done = self.flood_once(e, replica, [], "no-credentials")
        rows, events = self.audit_rows(e, t0, 3002, done)
        print("no-credentials: %d audit rows stand for %d refused calls" % (len(rows), events))
        self.assertLessEqual(len(rows), 2 * (FLOOD_SECONDS // 10 + 2))
        self.assertGreaterEqual(events, done * 0.9)
        # 2. A bad API key, the same one every time (a leaked, revoked or mistyped key in a loop).
        bad = e.keys["user"][:-6] + "QQ" + e.keys["user"][-4:]
        t1 = int(time.time() * 1000)
        done = self.flood_once(e, replica, ["authorization: Bearer " + bad], "bad-key")
        rows, events = self.audit_rows(e, t1, 3002, done)
        print("bad-key: %d audit rows stand for %d refused calls" % (len(rows), events))
        # The refused key is checked again every refused_credential_ttl_ms (5 s): a few more distinct
        # events (the check's own refusal, then the cheap ones), still a handful of rows.
        self.assertLessEqual(len(rows), 6 * (FLOOD_SECONDS // 5 + 2))
        self.assertGreaterEqual(events, done * 0.9)


if __name__ == "__main__":
    groups = {"flood": Flood}
    if len(sys.argv) < 2 or sys.argv[1] not in groups:
        sys.exit("usage: test_overload.py %s" % "|".join(groups))
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(groups[sys.argv[1]])
    sys.exit(0 if unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful() else 1)
