"""The fenced reconciler on a 3-replica gantryd cluster with the fake driver (shared state file,
one journal per replica), driven by Debian's python3-grpcio.

Run: /usr/bin/python3 test_reconciler.py <group>
Groups: failover, lifetime.

Checks: sandboxes become READY; after the lease holder is SIGKILLed the next holder adopts what
exists and never creates a second copy; deleted sandboxes disappear from the store and the driver;
the journals show that no call of an older epoch was accepted after a newer epoch acted; a SIGTERM
releases the lease so another replica takes it at once; a sandbox past its lifetime is removed.
"""

import json
import os
import signal
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_gantryd as g  # noqa: E402
import test_resources as tr  # noqa: E402

import grpc  # noqa: E402
from gantry.v1 import cluster_pb2, sandboxes_pb2  # noqa: E402

S = sandboxes_pb2
LEASE_FLAGS = ["--lease-duration-ms", "1500", "--lease-renew-deadline-ms", "1000", "--lease-retry-ms", "200"]


class Env(tr.Env):
    def __init__(self, test):
        root = os.path.join(g.WORK, "fake-" + test._testMethodName)
        os.makedirs(root)
        self.state = os.path.join(root, "state.json")
        self.journals = root
        flags = ["--driver", "fake", "--driver-state-dir", self.state] + LEASE_FLAGS
        c = g.Cluster("rec-" + test._testMethodName, run_flags=flags)
        test.clusters.append(c)
        c.init()
        c.join(2)
        c.wait_roles(3, 0)
        c.wait_ready()
        self._setup(c)

    def lease(self, replica=None):
        alive = [i for i, r in enumerate(self.c.replicas) if r.proc.poll() is None]
        return self.call("pa", cluster_pb2, "Cluster", "GetLease", cluster_pb2.GetLeaseRequest(),
                         replica=replica if replica is not None else alive[0])

    def holder(self):
        name = self.lease().holder.split("/")[0]
        return [r for r in self.c.replicas if "replica-%d" % r.rid == name][0]

    def phases(self, ns="default"):
        alive = [i for i, r in enumerate(self.c.replicas) if r.proc.poll() is None][0]
        out = self.sb("pa", "List", S.ListSandboxesRequest(namespace=ns), replica=alive)
        return {s.meta.name: S.SandboxStatus.Phase.Name(s.status.phase) for s in out.sandboxes}

    def wait_phases(self, want, timeout=30):
        end = time.monotonic() + timeout
        got = None
        while time.monotonic() < end:
            try:
                got = self.phases()
                if got == want:
                    return got
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise AssertionError("phases %s, wanted %s" % (got, want))

    def driver_state(self):
        with open(self.state) as f:
            return json.load(f)


class Failover(g.GantrydTest):
    def test_holder_killed_then_terminated(self):
        e = Env(self)
        lease = e.lease()
        self.assertGreaterEqual(lease.epoch, 1)
        for i in range(5):
            e.sb("pa", "Create", S.CreateSandboxRequest(request_id="c%d" % i, sandbox=tr.sandbox("default", "s%d" % i)))
        e.wait_phases({"s%d" % i: "PHASE_READY" for i in range(5)})
        st = e.sb("pa", "Get", S.GetSandboxRequest(namespace="default", name="s0")).status
        self.assertEqual(st.driver, "fake")
        self.assertEqual(st.lease_epoch, lease.epoch)
        self.assertTrue(st.driver_handle)

        # SIGKILL the holder: another replica waits out the lease and adopts everything.
        victim = e.holder()
        t0 = time.monotonic()
        victim.kill()
        e.c.client.replicas = e.c.alive()
        for i in range(5, 8):
            for _ in range(200):
                try:
                    e.sb("pa", "Create", S.CreateSandboxRequest(request_id="c%d" % i, sandbox=tr.sandbox(
                        "default", "s%d" % i)), replica=[k for k, r in enumerate(e.c.replicas) if r.proc.poll() is None][0])
                    break
                except grpc.RpcError as err:
                    self.assertEqual(err.code(), grpc.StatusCode.UNAVAILABLE)
                    time.sleep(0.1)
        e.wait_phases({"s%d" % i: "PHASE_READY" for i in range(8)})
        took = (time.monotonic() - t0) * 1000
        new = e.lease()
        self.assertGreater(new.epoch, lease.epoch)
        state = e.driver_state()
        ids = [s["id"] for s in state["sandboxes"]]
        self.assertEqual(len(ids), 8, "a sandbox exists twice or is missing in the driver")
        self.assertEqual(len(set(ids)), 8)
        self.assertEqual(state["newest_epoch"], new.epoch)

        # Deletes reach the driver and the rows go.
        for i in range(3):
            e.sb("pa", "Delete", S.DeleteSandboxRequest(namespace="default", name="s%d" % i),
                 replica=[k for k, r in enumerate(e.c.replicas) if r.proc.poll() is None][0])
        e.wait_phases({"s%d" % i: "PHASE_READY" for i in range(3, 8)})
        self.assertEqual(len(e.driver_state()["sandboxes"]), 5)

        # SIGTERM of the holder releases the lease: the next one takes it without waiting it out.
        # (Bring the killed replica back first, so the cluster keeps its quorum.)
        victim.start()
        e.c.client.replicas = e.c.replicas
        e.c.wait_roles(3, 0)
        holder = e.holder()
        t1 = time.monotonic()
        holder.signal(signal.SIGTERM)
        g.clean_stop(self, holder.wait(timeout=60), holder)
        end = time.monotonic() + 10
        while True:
            cur = e.lease()
            if cur.epoch > new.epoch and cur.holder:
                break
            self.assertLess(time.monotonic(), end, "no new holder after a clean stop")
            time.sleep(0.05)
        handover = (time.monotonic() - t1) * 1000
        print("reconciler: SIGKILL of the holder -> all 8 sandboxes READY again in %.0f ms (lease 1.5 s); "
              "SIGTERM -> new holder in %.0f ms" % (took, handover))


class Chaos(g.GantrydTest):
    """100 sandboxes created and deleted through all replicas while the lease holder is SIGKILLed
    and, later, SIGSTOPped; then the driver and the journals are checked."""

    def test_kill_and_pause_the_holder_under_load(self):
        import concurrent.futures
        import random
        root = os.path.join(g.WORK, "chaosfiles-" + self._testMethodName)
        os.makedirs(root)
        state = os.path.join(root, "state.json")
        c = g.Cluster("chaos-" + self._testMethodName,
                      run_flags=["--driver", "fake", "--driver-state-dir", state] + LEASE_FLAGS)
        c.replica_flags = lambda rid: ["--driver-journal", os.path.join(root, "journal-%d.jsonl" % rid)]
        self.clusters.append(c)
        c.init()
        c.join(2)
        c.wait_roles(3, 0)
        c.wait_ready()
        e = Env.__new__(Env)
        e.state = state
        tr.Env._setup(e, c)
        rnd = random.Random(7)

        def alive():
            return [i for i, r in enumerate(c.replicas) if r.proc.poll() is None and not getattr(r, "paused", False)]

        def op(i):
            """Create sandbox i, and delete every third one, through whichever replica answers."""
            name = "c%d" % i
            reqs = [("Create", S.CreateSandboxRequest(request_id="create-%d" % i, sandbox=tr.sandbox("default", name)))]
            if i % 3 == 0:
                reqs.append(("Delete", S.DeleteSandboxRequest(request_id="delete-%d" % i, namespace="default",
                                                              name=name)))
            for method, req in reqs:
                for _ in range(400):
                    try:
                        e.sb("pa", method, req, replica=rnd.choice(alive()))
                        break
                    except grpc.RpcError as err:
                        if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                            raise
                        time.sleep(0.05)
                else:
                    raise AssertionError("%s %s never acknowledged" % (method, name))
            return name

        with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(op, i) for i in range(100)]
            time.sleep(0.8)
            killed = e.holder()
            killed.kill()
            time.sleep(3.0)
            killed.start()
            time.sleep(1.0)
            paused = e.holder()
            paused.paused = True
            paused.signal(signal.SIGSTOP)
            time.sleep(4.0)  # past the renew deadline: another replica takes over
            paused.signal(signal.SIGCONT)
            paused.paused = False
            for f in futures:
                f.result()
        want = {"c%d" % i for i in range(100) if i % 3 != 0}
        e.wait_phases({n: "PHASE_READY" for n in want}, timeout=60)
        # Every live sandbox exactly once in the driver, nothing else.
        deadline = time.monotonic() + 30
        while True:
            names = sorted(s["name"] for s in e.driver_state()["sandboxes"])
            if names == sorted(want) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        self.assertEqual(names, sorted(want))
        # The journals: no call accepted from an epoch older than one already accepted, and each
        # epoch acting from one replica only.
        calls = []
        for rid in (1, 2, 3):
            path = os.path.join(root, "journal-%d.jsonl" % rid)
            if os.path.exists(path):
                with open(path) as f:
                    calls += [dict(json.loads(line), replica=rid) for line in f if line.strip()]
        accepted = sorted((x for x in calls if x["result"] != "GERR_STALE"), key=lambda x: x["t_ms"])
        newest, owners, stale_refused = 0, {}, 0
        for x in accepted:
            self.assertGreaterEqual(x["epoch"], newest, "a call of epoch %d was accepted after epoch %d acted: %s"
                                    % (x["epoch"], newest, x))
            newest = max(newest, x["epoch"])
            owners.setdefault(x["epoch"], set()).add(x["replica"])
        for epoch, who in owners.items():
            self.assertEqual(len(who), 1, "epoch %d acted from replicas %s" % (epoch, sorted(who)))
        stale_refused = sum(1 for x in calls if x["result"] == "GERR_STALE")
        self.assertGreaterEqual(len(owners), 3, "expected at least three holders (start, after kill, after pause)")
        print("chaos: 100 creates and 34 deletes through all replicas; holder SIGKILLed then SIGSTOPped; %d driver "
              "calls accepted under epochs %s, %d stale calls refused; every live sandbox once in the driver"
              % (len(accepted), sorted(owners), stale_refused))


class Process(g.GantrydTest):
    """The process driver through gantryd: a real bubblewrap process tree, adopted by the next
    holder without a restart, stopped on delete and at the end of its lifetime."""

    def test_process_sandboxes(self):
        import shutil
        import tempfile
        if shutil.which("bwrap") is None:
            self.skipTest("bubblewrap is not installed")
        state = tempfile.mkdtemp(prefix="gantry-proc-")
        os.chmod(state, 0o711)  # the sandboxes' uid traverses it
        self.addCleanup(shutil.rmtree, state, True)
        c = g.Cluster("proc-" + self._testMethodName,
                      run_flags=["--driver", "process", "--driver-state-dir", os.path.join(state, "sandboxes")]
                      + LEASE_FLAGS)
        self.clusters.append(c)
        c.init()
        c.join(2)
        c.wait_roles(3, 0)
        c.wait_ready()
        e = Env.__new__(Env)
        e.state = None
        tr.Env._setup(e, c)

        def pid_of(handle):
            return int(handle.split(":")[1].split("@")[0])  # "bwrap:<pid>@<start time>"

        def alive(pid):
            return os.path.exists("/proc/%d" % pid)

        def status(name):
            k = [i for i, r in enumerate(c.replicas) if r.proc.poll() is None][0]
            return e.sb("pa", "Get", S.GetSandboxRequest(namespace="default", name=name), replica=k).status

        e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "p1", command=["sleep", "600"])))
        e.wait_phases({"p1": "PHASE_READY"})
        first = status("p1")
        pid = pid_of(first.driver_handle)
        self.assertTrue(alive(pid))
        # The holder dies; the next one adopts the running sandbox without restarting it.
        holder = e.holder()
        holder.kill()
        e.c.client.replicas = e.c.alive()
        old_epoch = first.lease_epoch
        deadline = time.monotonic() + 30
        while True:
            try:
                if e.lease().epoch > old_epoch:
                    break
            except grpc.RpcError:
                pass
            self.assertLess(time.monotonic(), deadline, "no new lease holder")
            time.sleep(0.2)
        time.sleep(1.5)  # its resync has run (it starts right after taking the lease)
        self.assertEqual(status("p1").driver_handle, first.driver_handle)
        self.assertTrue(alive(pid), "the new holder restarted the sandbox")
        # Delete stops the whole tree.
        k = [i for i, r in enumerate(c.replicas) if r.proc.poll() is None][0]
        e.sb("pa", "Delete", S.DeleteSandboxRequest(namespace="default", name="p1"), replica=k)
        deadline = time.monotonic() + 20
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(alive(pid), "the sandbox still runs after delete")
        # A lifetime ends it too.
        e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "p2", command=["sleep", "600"],
                                                                        lifetime_seconds=3)), replica=k)
        e.wait_phases({"p2": "PHASE_READY"})
        pid2 = pid_of(status("p2").driver_handle)
        e.wait_phases({}, timeout=20)
        deadline = time.monotonic() + 10
        while alive(pid2) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(alive(pid2), "the sandbox still runs after its lifetime")
        print("process driver: READY as pid %d, adopted by the next holder without a restart, stopped on delete and "
              "at the end of its lifetime" % pid)


class Lifetime(g.GantrydTest):
    def test_sandbox_past_its_lifetime_is_removed(self):
        e = Env(self)
        e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "short", lifetime_seconds=2)))
        e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("default", "long", lifetime_seconds=3600)))
        e.wait_phases({"short": "PHASE_READY", "long": "PHASE_READY"})
        e.wait_phases({"long": "PHASE_READY"}, timeout=15)  # removed when its lifetime ends
        self.assertEqual([s["name"] for s in e.driver_state()["sandboxes"]], ["long"])
        # Usage: one record per run, the ended one closed, totals grouped by owner and namespace.
        from gantry.v1 import usage_pb2
        u = e.call("pa", usage_pb2, "Usage", "Query", usage_pb2.QueryUsageRequest(
            namespace="default", group_by=["namespace", "owner"]))
        recs = {r.sandbox_id: r for r in u.records}
        self.assertEqual(len(recs), 2)
        ended = [r for r in u.records if r.end_ms != 0]
        self.assertEqual(len(ended), 1)
        self.assertGreaterEqual(ended[0].sandbox_seconds, 1)
        self.assertEqual(len(u.totals), 1)
        self.assertEqual(dict(u.totals[0].group), {"namespace": "default", "owner": e.ids["pa"]})
        self.assertEqual(u.totals[0].sandbox_seconds, sum(r.sandbox_seconds for r in u.records))
        with self.assertRaises(grpc.RpcError) as cm:
            e.call("pa", usage_pb2, "Usage", "Query", usage_pb2.QueryUsageRequest(group_by=["colour"]))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(grpc.RpcError) as cm:
            e.call("other", usage_pb2, "Usage", "Query", usage_pb2.QueryUsageRequest(namespace="default"))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED)


class Kubernetes(g.GantrydTest):
    def test_gantryd_drives_the_kubernetes_driver(self):
        import subprocess
        root = os.path.join(g.WORK, "kubeapi-" + self._testMethodName)
        os.makedirs(root)
        cert, key, token = (os.path.join(root, n) for n in ("api.crt", "api.key", "token"))
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        with open(token, "w") as f:
            f.write("sekret-token\n")
        api = subprocess.Popen(["/usr/bin/python3", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                                 "drivers", "fake_kube_apiserver.py"),
                                "--cert", cert, "--key", key, "--token-file", token], stdout=subprocess.PIPE)
        try:
            port = int(api.stdout.readline().split()[1])
            flags = ["--driver", "kubernetes", "--k8s-server", "https://127.0.0.1:%d" % port, "--k8s-token-file",
                     token, "--k8s-ca-file", cert, "--k8s-namespace-mode", "managed"] + LEASE_FLAGS
            c = g.Cluster("k8s-" + self._testMethodName, run_flags=flags)
            self.clusters.append(c)
            c.init(extra=["--gateway-id", "gw-test"])
            c.wait_ready()
            e = Env.__new__(Env)
            e.state = None
            tr.Env._setup(e, c)
            e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox("team-b", "pod1")))
            end = time.monotonic() + 30
            while True:
                got = e.sb("pa", "Get", S.GetSandboxRequest(namespace="team-b", name="pod1")).status
                if got.phase == S.SandboxStatus.PHASE_READY or time.monotonic() > end:
                    break
                time.sleep(0.2)
            self.assertEqual(S.SandboxStatus.Phase.Name(got.phase), "PHASE_READY")
            self.assertEqual(got.driver, "kubernetes")
            self.assertIn("openshell-gw-test-team-b", got.driver_handle)
            e.sb("pa", "Delete", S.DeleteSandboxRequest(namespace="team-b", name="pod1"))
            end = time.monotonic() + 30
            while e.sb("pa", "List", S.ListSandboxesRequest(namespace="team-b")).sandboxes:
                self.assertLess(time.monotonic(), end, "the sandbox was not removed")
                time.sleep(0.2)
        finally:
            api.kill()
            api.wait()


GROUPS = {"failover": Failover, "chaos": Chaos, "process": Process, "lifetime": Lifetime, "kubernetes": Kubernetes}

if __name__ == "__main__":
    group = sys.argv[1] if len(sys.argv) > 1 else "all"
    suite = unittest.TestSuite()
    for name, cls in GROUPS.items():
        if group in ("all", name):
            suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    ok = unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful()
    sys.exit(0 if ok else 1)
