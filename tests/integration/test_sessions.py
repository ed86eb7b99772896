"""Sandboxes.Logs on a 3-replica gantryd cluster with the process driver (real bubblewrap sandboxes),
every call through a replica that does not hold the lease (the sandboxes' processes were started by
the holder's gantryd), driven by Debian's python3-grpcio and the gantry CLI.

Run: /usr/bin/python3 test_sessions.py logs

Checks: tail and since select what they promise; follow delivers output as the process writes it;
a follow ends OK when the process's output ends and NOT_FOUND ("was deleted") when the sandbox is
deleted; a slow reader of a fast writer keeps every replica's memory bounded; who may read (owner,
read share, namespace admin) and who may not (auditor, another namespace's user, a revoked key);
bad input gets INVALID_ARGUMENT / NOT_FOUND with a message; every session is in the audit trail
attributed to its principal, with its bytes; `gantry sandbox logs --tail` prints the lines.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_gantryd as g  # noqa: E402
import test_reconciler as rec  # noqa: E402
import test_resources as tr  # noqa: E402

import grpc  # noqa: E402
from gantry.v1 import api_keys_pb2, audit_pb2, sandboxes_pb2  # noqa: E402

S = sandboxes_pb2


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


class Logs(g.GantrydTest):
    def setUp(self):
        super().setUp()
        if shutil.which("bwrap") is None:
            self.skipTest("bubblewrap is not installed")
        state = tempfile.mkdtemp(prefix="gantry-sess-")
        os.chmod(state, 0o711)  # the sandboxes' uid traverses it
        self.addCleanup(shutil.rmtree, state, True)
        self.state = state
        c = g.Cluster("sess-" + self._testMethodName,
                      run_flags=["--driver", "process", "--driver-state-dir", os.path.join(state, "sandboxes")]
                      + rec.LEASE_FLAGS)
        self.clusters.append(c)
        c.init()
        c.join(2)
        c.wait_roles(3, 0)
        c.wait_ready()
        e = rec.Env.__new__(rec.Env)
        e.state = None
        tr.Env._setup(e, c)
        self.e = e

    def logs_stub(self, replica):
        ch = self.e.c.client.channel(self.e.c.replicas[replica])
        return ch.unary_stream("/gantry.v1.Sandboxes/Logs", request_serializer=S.LogsRequest.SerializeToString,
                               response_deserializer=S.LogChunk.FromString)

    def logs(self, role, replica, key=None, timeout=15, **req):
        """(status code, details, bytes) of a Logs call that is read to its end."""
        req.setdefault("namespace", "default")
        md = [("authorization", "Bearer " + (key or self.e.keys[role]))]
        data = b""
        try:
            for ch in self.logs_stub(replica)(S.LogsRequest(**req), metadata=md, timeout=timeout):
                data += ch.data
        except grpc.RpcError as err:
            return err.code(), err.details(), data
        return grpc.StatusCode.OK, "", data

    def test_logs(self):
        e = self.e
        holder = e.holder()
        f = [i for i, r in enumerate(e.c.replicas) if r is not holder][0]  # a replica without the lease
        # A process that writes five lines at once, then one line every 0.2 s.
        talker = ("for i in 1 2 3 4 5; do echo early$i; done; i=0; "
                  "while :; do i=$((i+1)); echo late$i; sleep 0.2; done")
        e.sb("user", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "talker",
                                                                          command=["sh", "-c", talker])), replica=f)
        e.sb("user", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "once",
                                                                          command=["sh", "-c", "echo done"])),
             replica=f)
        e.wait_phases({"talker": "PHASE_READY", "once": "PHASE_STOPPED"})

        def lines(data):
            return data.decode().splitlines()

        deadline = time.monotonic() + 20
        while True:
            code, msg, data = self.logs("user", f, name="talker")
            self.assertEqual(code, grpc.StatusCode.OK, msg)
            if "late3" in lines(data):
                break
            if time.monotonic() > deadline:
                print(subprocess.run(["ls", "-laR", self.state], capture_output=True).stdout.decode())
            self.assertLess(time.monotonic(), deadline, "no output: %r" % data)
            time.sleep(0.2)
        self.assertEqual(lines(data)[:6], ["early1", "early2", "early3", "early4", "early5", "late1"])

        # tail: the last N lines only, the newest ones.
        code, msg, data = self.logs("user", f, name="talker", tail_lines=2)
        self.assertEqual(code, grpc.StatusCode.OK, msg)
        got = lines(data)
        self.assertEqual(len(got), 2, got)
        a, b = (int(x[4:]) for x in got)
        self.assertEqual(b, a + 1)
        self.assertGreaterEqual(b, 3)  # the newest: late3 was seen before
        # since: nothing the driver received before the time given, and less than everything.
        since = int(time.time() * 1000)
        time.sleep(0.7)
        md = [("authorization", "Bearer " + e.keys["user"])]
        chunks = list(self.logs_stub(f)(S.LogsRequest(namespace="default", name="talker", since_ms=since),
                                        metadata=md, timeout=15))
        got = lines(b"".join(c.data for c in chunks))
        self.assertTrue(got and all(x.startswith("late") for x in got), got)
        self.assertTrue(all(c.time_ms >= since for c in chunks))
        code, msg, everything = self.logs("user", f, name="talker")
        self.assertLess(len(got), len(lines(everything)) - 5)
        self.assertIn(got[0], lines(everything))

        # follow: new lines arrive as the process writes them; the stream stays open for the delete.
        follow = self.logs_stub(f)(S.LogsRequest(namespace="default", name="talker", follow=True, tail_lines=1),
                                   metadata=md, timeout=120)
        seen, times = [], []
        buf = b""
        for ch in follow:
            buf += ch.data
            times.append(ch.time_ms)
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                seen.append(line.decode())
            if len(seen) >= 4:
                break
        nums = [int(x[4:]) for x in seen]
        self.assertEqual(nums, list(range(nums[0], nums[0] + 4)), seen)
        self.assertGreater(times[-1], times[0])  # written over time, not all at once
        follow_end = {}

        def drain_follow():
            try:
                for _ in follow:
                    pass
                follow_end["code"] = grpc.StatusCode.OK
            except grpc.RpcError as err:
                follow_end["code"], follow_end["msg"] = err.code(), err.details()
        t = threading.Thread(target=drain_follow)
        t.start()

        # A follow of a process whose output ended: everything, then OK.
        code, msg, data = self.logs("user", f, name="once", follow=True)
        self.assertEqual((code, data), (grpc.StatusCode.OK, b"done\n"), msg)

        # Who may read.
        e.sb("user", "Share", S.ShareSandboxRequest(namespace="default", name="talker",
                                                    grantee_principal_id=e.ids["user2"],
                                                    access=S.SHARE_ACCESS_READ), replica=f)
        for role in ("user2", "na", "pa"):
            code, msg, data = self.logs(role, f, name="talker", tail_lines=1)
            self.assertEqual(code, grpc.StatusCode.OK, "%s: %s" % (role, msg))
            self.assertTrue(data.startswith(b"late"), data)
        for role in ("auditor", "other"):
            code, msg, _ = self.logs(role, f, name="talker")
            self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED, "%s: %s" % (role, msg))
            self.assertTrue(msg)
        k = e.call("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
            principal_id=e.ids["user"], name="revoked"))
        e.call("pa", api_keys_pb2, "ApiKeys", "Revoke", api_keys_pb2.RevokeApiKeyRequest(id=k.key.meta.id))
        deadline = time.monotonic() + 10  # revocation reaches every replica within the cache's bound
        while True:
            code, msg, _ = self.logs("user", f, key=k.secret, name="talker")
            if code == grpc.StatusCode.UNAUTHENTICATED or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, msg)

        # Bad input.
        for req, want, what in ((dict(name="nope"), grpc.StatusCode.NOT_FOUND, "does not exist"),
                                (dict(name=""), grpc.StatusCode.INVALID_ARGUMENT, "name is required"),
                                (dict(name="talker", tail_lines=-1), grpc.StatusCode.INVALID_ARGUMENT, "tail_lines"),
                                (dict(name="talker", since_ms=-5), grpc.StatusCode.INVALID_ARGUMENT, "since_ms")):
            code, msg, _ = self.logs("user", f, **req)
            self.assertEqual(code, want, "%s: %s" % (req, msg))
            self.assertIn(what, msg)

        # A fast writer and a slow reader: the serving replica waits for its client instead of
        # buffering; no replica's memory grows with the volume.
        pids = [r.proc.pid for r in e.c.replicas]
        rss0 = [rss_kb(p) for p in pids]
        e.sb("user", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "flood", command=[
            "sh", "-c", "sleep 2; i=0; while [ $i -lt 300 ]; do head -c 65536 /dev/zero | tr '\\0' x; "
                        "i=$((i+1)); done; echo; echo END; sleep 600"])), replica=f)
        e.wait_phases({"talker": "PHASE_READY", "once": "PHASE_STOPPED", "flood": "PHASE_READY"})
        got, peak = 0, 0
        stream = self.logs_stub(f)(S.LogsRequest(namespace="default", name="flood", follow=True), metadata=md,
                                   timeout=120)
        tail = b""
        slow_until = time.monotonic() + 4
        for ch in stream:
            got += len(ch.data)
            tail = (tail + ch.data)[-16:]
            if time.monotonic() < slow_until:
                time.sleep(0.05)  # a slow reader for the first seconds, while the process writes
                peak = max(peak, max(rss_kb(p) - r0 for p, r0 in zip(pids, rss0)))
            if tail.endswith(b"END\n"):
                stream.cancel()
                break
        grown = max(rss_kb(p) - r0 for p, r0 in zip(pids, rss0))
        self.assertGreaterEqual(got, 4 << 20)
        with open("/proc/%d/maps" % pids[0]) as fh:
            asan = "libasan" in fh.read()  # its quarantine keeps freed memory: RSS says nothing there
        if not asan:
            # Without the bound the serving replica queues what it reads, about 20 MB here.
            self.assertLess(max(peak, grown), 10 << 10, "a replica's RSS grew %d KiB" % max(peak, grown))

        # The CLI through the same replica.
        ca = os.path.join(e.c.replicas[0].dir, "tls", "ca.pem")
        tok = os.path.join(e.c.root, "user.token")
        with open(tok, "w") as fh:
            fh.write(e.keys["user"])
        out = subprocess.run([os.environ["GANTRY_CLI"], "--endpoint", e.c.replicas[f].api, "--ca", ca,
                              "--token-file", tok, "sandbox", "logs", "talker", "--tail", "3"],
                             capture_output=True, timeout=30, env={"HOME": e.c.root, "PATH": "/usr/bin:/bin"})
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        self.assertEqual(len(out.stdout.decode().splitlines()), 3, out.stdout)

        # Deleting the sandbox ends its follower with a clear status.
        e.sb("user", "Delete", S.DeleteSandboxRequest(namespace="default", name="talker"), replica=f)
        t.join(30)
        self.assertFalse(t.is_alive(), "the follow did not end after the delete")
        self.assertEqual(follow_end.get("code"), grpc.StatusCode.NOT_FOUND, follow_end)
        self.assertIn("was deleted", follow_end.get("msg", ""))

        # Every session is audited with its principal, start and end, bytes sent.
        deadline = time.monotonic() + 10
        while True:
            ev = e.call("pa", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(
                namespace="default", api_operation="/gantry.v1.Sandboxes/Logs")).events
            ended = [x for x in ev if "logs session ended" in x.status_detail]
            if any("was deleted" in x.status_detail for x in ended) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        started = [x for x in ev if "logs session started" in x.status_detail]
        self.assertTrue(started and ended)
        self.assertTrue(all(x.actor_principal_id for x in ev))
        self.assertIn(e.ids["user2"], {x.actor_principal_id for x in started})
        deleted = [x for x in ended if "was deleted" in x.status_detail]
        self.assertEqual(len(deleted), 1, [x.status_detail for x in ended])
        self.assertEqual(deleted[0].actor_principal_id, e.ids["user"])
        self.assertEqual(deleted[0].resource_name, "talker")
        self.assertRegex(deleted[0].status_detail, r"[1-9]\d* bytes sent")
        print("logs through replica %d (not the lease holder): tail, since, follow, end of output, delete; %d sessions "
              "audited; a slow reader of %d bytes kept every replica's RSS growth at %d KiB at most"
              % (e.c.replicas[f].rid, len(started), got, max(peak, grown)))


if __name__ == "__main__":
    groups = {"logs": Logs}
    if len(sys.argv) < 2 or sys.argv[1] not in groups:
        print("usage: test_sessions.py {%s}" % "|".join(groups))
        sys.exit(2)
    suite = unittest.TestLoader().loadTestsFromTestCase(groups[sys.argv[1]])
    sys.exit(0 if unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful() else 1)
