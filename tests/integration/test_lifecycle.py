"""Sandbox lifecycle events for platform controllers (docs/platform-controller.md, "Lifecycle
events"), on a 3-replica gantryd cluster with the process driver, driven by Debian's python3-grpcio.

Run: /usr/bin/python3 test_lifecycle.py <group>
Groups:
  webhook  one cluster with the CloudEvents webhook pointed at a receiver in this process: a Watch
           shows provisioning -> ready -> deleting -> deleted for a sandbox and provisioning ->
           failed (with the reason) for one whose command does not exist; the receiver answers 500
           to the first two attempts of every event, then 200: every event arrives in revision
           order, with a stable id, the right type, subject and data, and a signature that verifies;
           the receiver goes away for a while: failed attempts, backoff, then delivery; the receiver
           answers 500 while the lease holder is SIGKILLed with events pending: the next holder
           delivers them (the same ids), nothing is lost.
  drop     (fake driver, one replica, an https receiver with its own CA) an event that failed
           lifecycle_webhook_max_attempts times is given up with an audit event, and the next one
           is delivered.
  config   bad webhook settings are refused at start with a message naming the key.
"""

import hashlib
import hmac
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_gantryd as g  # noqa: E402
import test_reconciler as trc  # noqa: E402
import test_resources as tr  # noqa: E402

import grpc  # noqa: E402
from gantry.v1 import meta_pb2, sandboxes_pb2  # noqa: E402

S = sandboxes_pb2
PHASE = S.SandboxStatus


def lifecycle_state(ev):
    """The mapping of docs/platform-controller.md, from a Watch event."""
    if ev.type == meta_pb2.EVENT_TYPE_DELETED:
        return "deleted"
    return {PHASE.PHASE_PROVISIONING: "provisioning", PHASE.PHASE_READY: "ready", PHASE.PHASE_ERROR: "failed",
            PHASE.PHASE_DELETING: "deleting", PHASE.PHASE_STOPPED: "stopped"}.get(ev.sandbox.status.phase)


def transitions(states):
    out = []
    for s in states:
        if s is not None and (not out or out[-1] != s):
            out.append(s)
    return out


class Receiver:
    """A CloudEvents receiver: records every POST (time, headers, body, the answer it gave).
    mode: "flaky" (500 to the first two attempts of each event id, then 200), "ok", "fail" (500)."""

    def __init__(self, tls=None):
        self.tls = tls  # an ssl.SSLContext: serve https
        self.lock = threading.Lock()
        self.posts = []
        self.attempts = {}
        self.mode = "flaky"
        self.port = g.free_port()
        self.server = None
        self.start()

    def start(self):
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    eid = json.loads(body).get("id")
                except ValueError:
                    eid = None
                with rec.lock:
                    n = rec.attempts.get(eid, 0) + 1
                    rec.attempts[eid] = n
                    code = {"ok": 200, "fail": 500}.get(rec.mode, 500 if n <= 2 else 200)
                    rec.posts.append({"t": time.monotonic(), "headers": dict(self.headers), "body": body,
                                      "code": code, "id": eid})
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def delivered(self):
        """The events answered 200, parsed, in arrival order."""
        with self.lock:
            return [(json.loads(p["body"]), p) for p in self.posts if p["code"] == 200]

    def wait(self, test, pred, what, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred(self.delivered()):
                return
            time.sleep(0.1)
        test.fail("receiver: %s not seen; delivered: %s" % (
            what, [(e["type"], e["subject"], e["id"]) for e, _ in self.delivered()]))


def states_of(events, name):
    return [e["type"].rsplit(".", 1)[1] for e in events if e["subject"] == "default/" + name]


class Webhook(g.GantrydTest):
    def test_webhook_and_watch(self):
        if shutil.which("bwrap") is None:
            self.skipTest("bubblewrap is not installed")
        t0 = time.monotonic()
        state = tempfile.mkdtemp(prefix="gantry-life-")
        os.chmod(state, 0o711)
        self.addCleanup(shutil.rmtree, state, True)
        rec = Receiver()
        self.addCleanup(rec.stop)
        secret = os.urandom(24).hex()
        sfile = os.path.join(state, "hook.secret")
        fd = os.open(sfile, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, secret.encode() + b"\n")
        os.close(fd)
        c = g.Cluster("life-" + self._testMethodName, run_flags=[
            "--driver", "process", "--driver-state-dir", os.path.join(state, "sandboxes"),
            "--lifecycle-webhook-url", "http://127.0.0.1:%d/hook" % rec.port,
            "--lifecycle-webhook-secret-file", sfile, "--lifecycle-webhook-backoff-ms", "100",
            "--lifecycle-webhook-backoff-max-ms", "400", "--lifecycle-webhook-timeout-ms", "2000",
            "--lifecycle-webhook-max-attempts", "1000"] + trc.LEASE_FLAGS)
        self.clusters.append(c)
        c.init()
        c.join(2)
        c.wait_roles(3, 0)
        c.wait_ready()
        e = trc.Env.__new__(trc.Env)
        e.state = None
        tr.Env._setup(e, c)
        # One replica delivers: the lease holder, once it has its cursor.
        end = time.monotonic() + 30
        while [r.metric("gantry_lifecycle_webhook_active") for r in c.replicas].count(1.0) != 1:
            self.assertLess(time.monotonic(), end, "no replica delivers lifecycle events")
            time.sleep(0.1)
        holder = e.holder()
        self.assertEqual(holder.metric("gantry_lifecycle_webhook_active"), 1.0)
        gateway = g.query(holder, "SELECT value FROM cluster_meta WHERE key = 'gateway_id'")[0].strip()

        # A Watch from a replica that does not hold the lease.
        follower = [i for i, r in enumerate(c.replicas) if r is not holder][0]
        start = e.sb("pa", "List", S.ListSandboxesRequest(namespace="default"), replica=follower).revision
        fn = e.stub("gantry.v1.Sandboxes", "Watch", S.WatchSandboxesRequest, S.SandboxEvent, streaming=True,
                    replica=follower)
        stream = fn(S.WatchSandboxesRequest(namespace="default", since_revision=start),
                    metadata=[("authorization", "Bearer " + e.keys["pa"])], timeout=120)
        watched = []

        def reader():
            try:
                for ev in stream:
                    if ev.type != meta_pb2.EVENT_TYPE_BOOKMARK:
                        watched.append(ev)
            except grpc.RpcError:
                pass
        wt = threading.Thread(target=reader)
        wt.start()

        e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "p1", command=["sleep", "600"])),
             replica=follower)
        e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "bad",
                                                                       command=["no-such-command"])),
             replica=follower)
        e.wait_phases({"p1": "PHASE_READY", "bad": "PHASE_ERROR"})
        e.sb("pa", "Delete", S.DeleteSandboxRequest(namespace="default", name="p1"), replica=follower)
        e.sb("pa", "Delete", S.DeleteSandboxRequest(namespace="default", name="bad"), replica=follower)
        e.wait_phases({})
        end = time.monotonic() + 10
        while len([w for w in watched if w.type == meta_pb2.EVENT_TYPE_DELETED]) < 2:
            self.assertLess(time.monotonic(), end, "the Watch did not show both deletions")
            time.sleep(0.1)
        stream.cancel()
        wt.join()
        # A DELETED event names the sandbox by id (its row is gone): match by id.
        ids = {w.sandbox.meta.name: w.sandbox.meta.id for w in watched if w.sandbox.meta.name}
        by_name = {n: [w for w in watched if w.sandbox.meta.id == i] for n, i in ids.items()}
        self.assertEqual(transitions(lifecycle_state(w) for w in by_name["p1"]),
                         ["provisioning", "ready", "deleting", "deleted"])
        # The process driver reports READY as soon as the sandbox runs; a command that cannot start
        # fails right after, so "bad" may pass through ready on its way to failed.
        self.assertEqual([x for x in transitions(lifecycle_state(w) for w in by_name["bad"]) if x != "ready"],
                         ["provisioning", "failed", "deleting", "deleted"])
        failed = [w for w in by_name["bad"] if lifecycle_state(w) == "failed"][0]
        self.assertIn("no-such-command", failed.sandbox.status.conditions[0].message)

        # The webhook: the same transitions, each event after two 500s.
        rec.wait(self, lambda d: "deleted" in states_of([x for x, _ in d], "p1") and
                 "deleted" in states_of([x for x, _ in d], "bad"), "both deletions")
        got = rec.delivered()
        events = [x for x, _ in got]
        self.assertEqual(states_of(events, "p1"), ["provisioning", "ready", "deleting", "deleted"])
        self.assertEqual([x for x in states_of(events, "bad") if x != "ready"],
                         ["provisioning", "failed", "deleting", "deleted"])
        revs = [x["gantryrevision"] for x in events]
        self.assertEqual(revs, sorted(revs), "delivered out of revision order")
        self.assertEqual(len(set(x["id"] for x in events)), len(events), "an event delivered twice")
        with rec.lock:
            for x in events:
                tries = [p for p in rec.posts if p["id"] == x["id"]]
                self.assertEqual([p["code"] for p in tries], [500, 500, 200], x["id"])
                self.assertEqual(len(set(p["body"] for p in tries)), 1, "a retry changed the event")
                self.assertGreater(tries[1]["t"] - tries[0]["t"], 0.08, "no backoff between attempts")
        for x, p in got:
            self.assertEqual(x["specversion"], "1.0")
            self.assertEqual(x["source"], gateway)
            self.assertEqual(x["id"], "%s-%d" % (gateway, x["gantryrevision"]))
            self.assertTrue(x["type"].startswith("io.gantry.sandbox."))
            self.assertEqual(x["data"]["state"], x["type"].rsplit(".", 1)[1])
            self.assertTrue(p["headers"]["Content-Type"].startswith("application/cloudevents+json"))
            mac = hmac.new(secret.encode(), p["body"], hashlib.sha256).hexdigest()
            self.assertEqual(p["headers"].get("X-Gantry-Signature"), "sha256=" + mac)
            self.assertNotIn("env", x["data"])
            self.assertNotIn(secret, p["body"].decode())
        fail_ev = [x for x in events if x["type"] == "io.gantry.sandbox.failed"][0]
        self.assertEqual(fail_ev["subject"], "default/bad")
        self.assertEqual(fail_ev["data"]["phase"], "ERROR")
        self.assertIn("no-such-command", fail_ev["data"]["message"])
        ready_ev = [x for x in events if x["type"] == "io.gantry.sandbox.ready"][0]
        self.assertEqual(ready_ev["data"]["name"], "p1")
        self.assertEqual(ready_ev["data"]["image"], "busybox:1.36")
        # Another replica's signature check: a body changed in transit does not verify.
        self.assertNotEqual(hmac.new(secret.encode(), got[0][1]["body"] + b" ", hashlib.sha256).hexdigest(),
                            got[0][1]["headers"]["X-Gantry-Signature"][7:])
        print("watch and webhook: p1 provisioning -> ready -> deleting -> deleted, bad -> failed (%s); %d events "
              "after two 500s each, in order, signed" % (fail_ev["data"]["message"], len(events)))

        # The receiver goes away: attempts fail, back off, and the events arrive once it is back.
        rec.mode = "ok"
        rec.stop()
        failed0 = holder.metric("gantry_lifecycle_webhook_failed_attempts_total")
        e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "p2", command=["sleep", "600"])),
             replica=follower)
        e.wait_phases({"p2": "PHASE_READY"})
        down = time.monotonic()
        end = down + 15
        while holder.metric("gantry_lifecycle_webhook_failed_attempts_total") < failed0 + 3:
            self.assertLess(time.monotonic(), end, holder.tail())
            time.sleep(0.1)
        self.assertGreater(holder.metric("gantry_lifecycle_webhook_pending"), 0)
        time.sleep(1.0)
        attempts_1s = holder.metric("gantry_lifecycle_webhook_failed_attempts_total") - failed0
        # Without backoff this would be hundreds (connection refused is instant); with a 400 ms
        # cap it is about (elapsed / 0.4) + 3.
        self.assertLess(attempts_1s, (time.monotonic() - down) / 0.4 + 6, "no backoff while the receiver is down")
        rec.start()
        rec.wait(self, lambda d: "ready" in states_of([x for x, _ in d], "p2"), "p2 ready after the receiver came back")
        self.assertEqual(states_of([x for x, _ in rec.delivered()], "p2"), ["provisioning", "ready"])

        # The lease holder dies with events pending: the next one delivers them, same ids.
        rec.mode = "fail"
        with rec.lock:
            seen_before = len(rec.posts)
        e.sb("pa", "Delete", S.DeleteSandboxRequest(namespace="default", name="p2"), replica=follower)
        end = time.monotonic() + 15
        while True:
            with rec.lock:
                pending = [p["id"] for p in rec.posts[seen_before:]]
            if pending:
                break
            self.assertLess(time.monotonic(), end, "no attempt for p2's deletion")
            time.sleep(0.05)
        old_id = pending[0]
        holder.kill()
        c.client.replicas = c.alive()
        rec.mode = "ok"
        rec.wait(self, lambda d: "deleted" in states_of([x for x, _ in d], "p2"), "p2 deleted from the next holder")
        nxt = e.holder()
        self.assertIsNot(nxt, holder)
        self.assertEqual(nxt.metric("gantry_lifecycle_webhook_active"), 1.0)
        events = [x for x, _ in rec.delivered()]
        self.assertIn(old_id, [x["id"] for x in events], "the attempted event came back with another id")
        p2 = states_of(events, "p2")
        self.assertEqual(transitions(p2), ["provisioning", "ready", "deleting", "deleted"])
        for r in c.alive():
            self.assertEqual(r.metric('gantry_lifecycle_webhook_dropped_total{reason="attempts"}'), 0.0)
        # Never the secret in a log.
        for r in c.replicas:
            with open(r.log, "rb") as f:
                self.assertNotIn(secret.encode(), f.read())
        print("webhook: receiver down -> %d failed attempts in %.1f s, then delivered; holder SIGKILLed with %s "
              "pending -> delivered by replica %d with the same id; %.1f s in all" % (
                  attempts_1s, time.monotonic() - down, old_id, nxt.rid, time.monotonic() - t0))


class Drop(g.GantrydTest):
    def test_given_up_after_max_attempts_and_audited(self):
        """lifecycle_webhook_max_attempts failures of one event: it is dropped with an audit event
        and the next one is sent (fake driver, one replica, https with lifecycle_webhook_ca_file)."""
        import ssl
        root = os.path.join(g.WORK, "drop-state")
        os.makedirs(root)

        def openssl(*args):
            subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=root)
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
                "-out", "ca.crt", "-days", "2", "-subj", "/CN=hook-ca")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "srv.key", "-out",
                "srv.csr", "-subj", "/CN=receiver")
        with open(os.path.join(root, "san.ext"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
                "srv.crt", "-days", "2", "-extfile", "san.ext")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(root, "srv.crt"), os.path.join(root, "srv.key"))
        rec = Receiver(tls=ctx)
        self.addCleanup(rec.stop)
        rec.mode = "fail"
        c = g.Cluster("life-" + self._testMethodName, run_flags=[
            "--driver", "fake", "--driver-state-dir", os.path.join(root, "state.json"),
            "--lifecycle-webhook-url", "https://127.0.0.1:%d/hook" % rec.port,
            "--lifecycle-webhook-ca-file", os.path.join(root, "ca.crt"), "--lifecycle-webhook-backoff-ms", "50",
            "--lifecycle-webhook-backoff-max-ms", "100", "--lifecycle-webhook-max-attempts", "2"] + trc.LEASE_FLAGS)
        self.clusters.append(c)
        c.init()
        r = c.replicas[0]
        end = time.monotonic() + 30
        while r.metric("gantry_lifecycle_webhook_active") != 1.0:
            self.assertLess(time.monotonic(), end, r.tail())
            time.sleep(0.1)
        e = trc.Env.__new__(trc.Env)
        e.state = None
        tr.Env._setup(e, c)
        e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "d1")))
        e.wait_phases({"d1": "PHASE_READY"})
        dropped = 'gantry_lifecycle_webhook_dropped_total{reason="attempts"}'
        while r.metric(dropped) < 2:  # provisioning and ready, each after 2 attempts
            self.assertLess(time.monotonic(), end, r.tail())
            time.sleep(0.1)
        rec.mode = "ok"
        e.sb("pa", "Delete", S.DeleteSandboxRequest(namespace="default", name="d1"))
        rec.wait(self, lambda d: "deleted" in states_of([x for x, _ in d], "d1"), "d1 deleted after the drops")
        with rec.lock:
            tries = {}
            for p in rec.posts:
                tries.setdefault(p["id"], []).append(p["code"])
        first_two = [i for i, codes in tries.items() if codes == [500, 500]]
        self.assertGreaterEqual(len(first_two), 2, tries)
        rows = g.query(r, "SELECT message FROM audit WHERE operation = 'lifecycle_webhook/deliver'")
        msgs = [m for m in rows if m]
        self.assertGreaterEqual(len(msgs), 2, rows)
        for i in first_two:
            self.assertTrue(any(("lifecycle event %s " % i) in m and "dropped after 2 failed attempts: HTTP 500" in m
                                for m in msgs), (i, msgs))
        self.assertEqual(states_of([x for x, _ in rec.delivered()], "d1")[-1], "deleted")
        print("webhook drop (https): %d events given up after 2 attempts each, audited; the next ones delivered" %
              len(first_two))


class Config(unittest.TestCase):
    def test_bad_settings_refused_at_start(self):
        root = tempfile.mkdtemp(prefix="life-cfg-", dir=g.WORK)
        x = g.Replica(root, 1)
        # Checked with the rest of the configuration (exit status 2, like every configuration error).
        for extra, why in ((["--lifecycle-webhook-url", "ftp://example.com/"], "not an http:// or https:// URL"),
                           (["--lifecycle-webhook-url", "http:///x"], "has no host"),
                           (["--lifecycle-webhook-url", "http://127.0.0.1:1/", "--driver", "none"], "driver \"none\""),
                           (["--lifecycle-webhook-secret-file", "/etc/hostname"], "lifecycle_webhook_url is not"),
                           (["--lifecycle-webhook-url", "http://127.0.0.1:1/", "--lifecycle-webhook-backoff-ms", "5000",
                             "--lifecycle-webhook-backoff-max-ms", "1000"], "lifecycle_webhook_backoff_max_ms")):
            out = subprocess.run([g.GANTRYD] + x.flags() + extra, capture_output=True, timeout=60)
            self.assertEqual(out.returncode, 2, out.stderr.decode())
            self.assertIn(why, out.stderr.decode())
        # The secret file is read at start (exit status 1, like an unreadable backup key).
        out = subprocess.run([g.GANTRYD, "init"] + x.flags(), capture_output=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        loose = os.path.join(root, "loose.secret")
        with open(loose, "w") as f:
            f.write("s3cret-value-never-shown\n")
        os.chmod(loose, 0o644)
        empty = os.path.join(root, "empty.secret")
        fd = os.open(empty, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        url = ["--lifecycle-webhook-url", "http://127.0.0.1:1/"]
        for extra, why in ((["--lifecycle-webhook-secret-file", os.path.join(root, "missing")],
                            "lifecycle_webhook_secret_file"),
                           (["--lifecycle-webhook-secret-file", loose], "chmod 600"),
                           (["--lifecycle-webhook-secret-file", empty], "empty"),
                           (["--lifecycle-webhook-ca-file", os.path.join(root, "missing-ca.pem")],
                            "lifecycle_webhook_ca_file")):
            out = subprocess.run([g.GANTRYD] + x.flags() + url + extra, capture_output=True, timeout=60)
            self.assertEqual(out.returncode, 1, out.stderr.decode())
            self.assertIn(why, out.stderr.decode())
            self.assertNotIn("s3cret-value-never-shown", out.stderr.decode())
        print("lifecycle webhook settings: 5 bad values refused by the configuration, 4 bad files at start")


GROUPS = {"webhook": Webhook, "drop": Drop, "config": Config}

if __name__ == "__main__":
    group = sys.argv[1] if len(sys.argv) > 1 else "all"
    suite = unittest.TestSuite()
    for name, cls in GROUPS.items():
        if group in ("all", name):
            suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    ok = unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful()
    sys.exit(0 if ok else 1)
