#!/usr/bin/python3
"""Jepsen-style fault injection against a real gantryd cluster (docs/reliability.md).

Run as root: /usr/bin/python3 tests/jepsen/jepsen.py --gantryd BUILD/server/gantryd --time 120
It re-executes itself under `unshare -n` (a private network namespace: its own loopback, its own
iptables), starts 3 replicas on 127.0.0.11-13 (replica N on 127.0.0.(10+N)), runs the workloads
(register, set, quota, watch; the lease/reconciler checker reads the fake driver's journals) while
a nemesis schedule injects faults, heals everything, and checks the history. Results go to
--results (history.jsonl, nemesis.jsonl, verdicts.json, replica logs); one line per checker is
printed; the exit status is 1 if any checker found an anomaly (2 for a harness failure, 77 when a
private network namespace cannot be made).

Partitions: every replica runs with its own group id (1000 + N). A partition between replicas A
and B drops, in the namespace's OUTPUT chain, every packet a process of group A sends to B's
address and the reverse (iptables -m owner --gid-owner), so connections either way are cut
while the harness's clients (group 0) still reach everyone. Clocks: every replica runs under
libfaketime with its own control file (FAKETIME_TIMESTAMP_FILE, wall clock only:
FAKETIME_DONT_FAKE_MONOTONIC=1, since the lease relies on monotonic clocks by design).
"""

import argparse
import glob
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import checkers  # noqa: E402

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
LEASE_FLAGS = ["--lease-duration-ms", "1500", "--lease-renew-deadline-ms", "1000", "--lease-retry-ms", "200"]
NEMESES = ["partition-halves", "partition-leader", "partition-bridge", "kill", "pause", "clock", "transfer",
           "member"]
# Not in "all": short SIGSTOPs of the dqlite leader (0.3-1.2 s, shorter than the clients'
# deadlines), so writes in flight on it fail after their body ran and their replies still reach
# the clients. Used to expose the ack-before-commit planted bug.
EXTRA_NEMESES = ["pause-leader"]
RETRYABLE = None  # grpc status codes whose outcome is unknown; set after grpc is imported
T0 = time.monotonic()


def now():
    return time.monotonic() - T0


def log(msg):
    sys.stdout.write("[%7.2f] %s\n" % (now(), msg))
    sys.stdout.flush()


# ---------------------------------------------------------------- namespace

def enter_namespace(argv):
    """Re-execute under `unshare -n` unless already inside; bring lo up with the replicas' addresses."""
    if os.environ.get("GANTRY_JEPSEN_NETNS") != "1":
        if os.geteuid() != 0:
            print("jepsen: needs root for a private network namespace and iptables; SKIP")
            sys.exit(77)
        env = dict(os.environ, GANTRY_JEPSEN_NETNS="1")
        try:
            os.execvpe("unshare", ["unshare", "-n", sys.executable, os.path.abspath(__file__)] + argv, env)
        except OSError as e:
            print("jepsen: unshare -n: %s; SKIP" % e)
            sys.exit(77)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for n in range(1, 40):
        subprocess.run(["ip", "addr", "add", "127.0.0.%d/8" % (10 + n), "dev", "lo"], capture_output=True)
    out = subprocess.run(["iptables", "-w", "-F", "OUTPUT"], capture_output=True)
    if out.returncode != 0:
        print("jepsen: iptables unusable in the namespace (%s); SKIP" % out.stderr.decode().strip())
        sys.exit(77)


# ---------------------------------------------------------------- replicas

class Replica:
    def __init__(self, h, rid):
        self.h, self.rid = h, rid
        self.ip = "127.0.0.%d" % (10 + rid)
        self.api, self.peer, self.admin = self.ip + ":7000", self.ip + ":7001", self.ip + ":7002"
        self.dir = os.path.join(h.work, "r%d" % rid)
        self.log = os.path.join(h.results, "replica-%d.log" % rid)
        self.journal = os.path.join(h.results, "journal-%d.jsonl" % rid)
        self.clock = os.path.join(h.work, "clock-%d" % rid)
        self.cores = os.path.join(h.results, "cores-%d" % rid)
        self.gid = 1000 + rid
        self.proc = None
        self.paused = False
        self.removed = False
        self.expected_down = False  # stopped by the harness (a crash is a process gone otherwise)
        self.exits = []
        with open(self.clock, "w") as f:
            f.write("+0\n")

    def flags(self):
        return ["--replica-id", str(self.rid), "--data-dir", self.dir, "--api-address", self.api,
                "--peer-address", self.peer, "--admin-address", self.admin, "--latency-ms", "10",
                "--roles-grace-ms", "2000"]

    def env(self):
        env = dict(os.environ)
        if self.h.faketime:
            env.update(LD_PRELOAD=FAKETIME_LIB, FAKETIME_TIMESTAMP_FILE=self.clock, FAKETIME_DONT_FAKE_MONOTONIC="1",
                       FAKETIME_CACHE_DURATION="1", FAKETIME_DONT_RESET="1")
            # An AddressSanitizer build wants its runtime first; libfaketime only wraps clock calls.
            asan = env.get("ASAN_OPTIONS", "")
            env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
        return env

    def run_flags(self):
        return self.flags() + ["--driver", "fake", "--driver-state-dir", self.h.state, "--driver-journal",
                               self.journal, "--write-batch-linger-ms", str(self.h.args.linger_ms)] + LEASE_FLAGS

    def start(self, join=None, token=None, timeout=60):
        env = self.env()
        args = [self.h.gantryd] + self.run_flags()
        if join:
            args += ["--join", join]
            env["GANTRY_JOIN_TOKEN"] = token
        logf = open(self.log, "ab")
        self.log_start = logf.tell()  # where this process's output begins (the log spans restarts)
        gid = self.gid
        os.makedirs(self.cores, exist_ok=True)

        def child():
            os.setgid(gid)
            resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

        # Core files (kernel.core_pattern permitting) land in the replica's cores directory.
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=logf, env=env, preexec_fn=child,
                                     cwd=self.cores)
        logf.close()
        self.paused = False
        self.expected_down = False
        got = []
        t = threading.Thread(target=lambda: got.append(self.proc.stdout.readline().decode()), daemon=True)
        t.start()
        t.join(timeout)
        if not got or not got[0].startswith("READY"):
            raise RuntimeError("replica %d did not start: %r\n%s" % (self.rid, got, self.tail()))
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def holds_ca_key(self):
        return os.path.exists(os.path.join(self.dir, "secrets", "ca-key.pem"))

    def this_run(self):
        """What the current (or last) process wrote to the log."""
        try:
            with open(self.log, "rb") as f:
                f.seek(getattr(self, "log_start", 0))
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def tail(self, n=20):
        try:
            with open(self.log, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def kill(self):
        self.expected_down = True
        if self.alive():
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.exits.append(self.proc.wait())
        self.paused = False

    def set_clock(self, spec):
        tmp = self.clock + ".tmp"
        with open(tmp, "w") as f:
            f.write(spec + "\n")
        os.rename(tmp, self.clock)


# ---------------------------------------------------------------- gRPC

class Api:
    def __init__(self, h):
        import grpc
        self.grpc = grpc
        self.h = h
        self.channels = {}
        self.lock = threading.Lock()

    def channel(self, r):
        grpc = self.grpc
        with self.lock:
            if r.api not in self.channels:
                creds = grpc.ssl_channel_credentials(root_certificates=self.h.ca)
                self.channels[r.api] = grpc.secure_channel(r.api, creds, options=[
                    ("grpc.ssl_target_name_override", "localhost"), ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)])
            return self.channels[r.api]

    def call(self, r, service, method, req, resp_cls, timeout=3.0):
        fn = self.channel(r).unary_unary("/gantry.v1.%s/%s" % (service, method),
                                         request_serializer=req.SerializeToString,
                                         response_deserializer=resp_cls.FromString)
        return fn(req, metadata=[("authorization", "Bearer " + self.h.key)], timeout=timeout)

    def call_trailers(self, r, service, method, req, resp_cls, timeout=3.0):
        """call, and the reply's trailing metadata as a dict."""
        fn = self.channel(r).unary_unary("/gantry.v1.%s/%s" % (service, method),
                                         request_serializer=req.SerializeToString,
                                         response_deserializer=resp_cls.FromString)
        resp, c = fn.with_call(req, metadata=[("authorization", "Bearer " + self.h.key)], timeout=timeout)
        return resp, dict(c.trailing_metadata() or ())

    def stream(self, r, service, method, req, resp_cls, timeout=None):
        fn = self.channel(r).unary_stream("/gantry.v1.%s/%s" % (service, method),
                                          request_serializer=req.SerializeToString,
                                          response_deserializer=resp_cls.FromString)
        return fn(req, metadata=[("authorization", "Bearer " + self.h.key)], timeout=timeout)


def gen_stubs(proto_dir, protoc, out):
    os.makedirs(out, exist_ok=True)
    protos = [os.path.relpath(p, proto_dir) for p in glob.glob(os.path.join(proto_dir, "gantry", "v1", "*.proto"))]
    subprocess.run([protoc, "-I" + proto_dir, "--python_out=" + out] + protos, check=True, timeout=120)
    sys.path.insert(0, out)


# ---------------------------------------------------------------- the harness

class Harness:
    def __init__(self, args):
        self.args = args
        self.gantryd = os.path.abspath(args.gantryd)
        self.results = os.path.abspath(args.results)
        if os.path.exists(self.results):
            shutil.rmtree(self.results)
        os.makedirs(self.results)
        self.work = tempfile.mkdtemp(prefix="gantry-jepsen-", dir=args.work)
        self.state = os.path.join(self.work, "driver-state.json")
        self.faketime = os.path.exists(FAKETIME_LIB) and not args.no_faketime
        self.replicas = {}
        self.next_rid = 1
        self.rnd = random.Random(args.seed)
        self.stop = threading.Event()
        self.hist_lock = threading.Lock()
        self.history = []
        self.nemesis_log = []
        self.epochs_seen = set()
        self.batch_seen = {}  # (replica id, pid) -> the last batch-size histogram scraped from it
        self.leader_now = None  # the dqlite leader's id as leader_observer last saw it
        self.quota_obs = []
        self.set_pending, self.set_verified = [], {}
        self.members_lock = threading.RLock()
        gen_stubs(args.proto_dir, args.protoc, os.path.join(self.work, "py"))
        global RETRYABLE
        import grpc
        from gantry.v1 import (cluster_pb2, meta_pb2, namespaces_pb2, quotas_pb2, sandboxes_pb2)
        self.grpc = grpc
        self.C, self.M, self.N, self.Q, self.S = cluster_pb2, meta_pb2, namespaces_pb2, quotas_pb2, sandboxes_pb2
        RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN,
                     grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED)

    # --- records

    def record(self, kind, **kv):
        with self.hist_lock:
            self.history.append(dict(kv, workload=kind))

    def nemesis(self, what, **kv):
        e = dict(kv, t=now(), what=what)
        self.nemesis_log.append(e)
        log("nemesis: %s %s" % (what, json.dumps(kv, sort_keys=True)))

    # --- cluster

    def members(self):
        with self.members_lock:
            return [r for r in self.replicas.values() if not r.removed]

    def up(self):
        return [r for r in self.members() if r.alive() and not r.paused]

    def pick(self):
        up = self.up()
        return self.rnd.choice(up) if up else None

    def boot(self):
        r1 = Replica(self, 1)
        out = subprocess.run([self.gantryd, "init"] + r1.flags(), capture_output=True, timeout=120,
                             env=r1.env(), preexec_fn=lambda: os.setgid(r1.gid))
        if out.returncode != 0:
            raise RuntimeError("init failed: " + out.stderr.decode())
        self.key = [w for w in out.stdout.decode().split() if w.startswith("gtk_")][0]
        self.ca = open(os.path.join(r1.dir, "tls", "ca.pem"), "rb").read()
        self.api = Api(self)
        self.replicas[1] = r1.start()
        self.next_rid = 2
        for _ in range(self.args.replicas - 1):
            self.add_replica()
        self.wait_healthy(60)

    def call(self, service, method, req, resp_cls, replica=None, timeout=3.0, attempts=60, retry_on=None):
        """A call retried across replicas on UNAVAILABLE (for setup, checks and nemeses, not workloads)."""
        last = None
        for i in range(attempts):
            r = replica or self.pick()
            if r is None:
                time.sleep(0.2)
                continue
            try:
                return self.api.call(r, service, method, req, resp_cls, timeout=timeout)
            except self.grpc.RpcError as e:
                if e.code() not in RETRYABLE + tuple(retry_on or ()):
                    raise
                last = e
                time.sleep(0.1 + 0.05 * i)
        raise RuntimeError("%s/%s never answered: %s" % (service, method, last))

    def add_replica(self):
        # ABORTED: the token was made but its answer lost in a leader change (docs/architecture.md,
        # "Settlement"): make another.
        tok = self.call("Cluster", "CreateJoinToken", self.C.CreateJoinTokenRequest(uses=1),
                        self.C.JoinToken, retry_on=(self.grpc.StatusCode.ABORTED,)).token
        if not tok:
            raise RuntimeError("CreateJoinToken answered OK without a token")
        rid = self.next_rid
        self.next_rid += 1
        # Through a replica that can sign the joiner's certificate when one runs (another one would
        # relay the join to it).
        holders = [r for r in self.members() if r.alive() and not r.paused and r.holds_ca_key()]
        via = holders[0] if holders else self.pick()
        r = Replica(self, rid)
        with self.members_lock:
            self.replicas[rid] = r
        r.start(join=via.api, token=tok)
        return r

    def wait_healthy(self, timeout):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            try:
                ms = self.call("Cluster", "ListMembers", self.C.ListMembersRequest(), self.C.ListMembersResponse,
                               attempts=3).members
                voters = sum(m.role == self.C.MEMBER_ROLE_VOTER for m in ms)
                want = min(3, len(self.members()))
                last = [(m.id, m.role, m.reachable) for m in ms]
                if voters == want and len(ms) == len(self.members()) and all(m.reachable for m in ms):
                    return True
            except (self.grpc.RpcError, RuntimeError) as e:
                last = str(e)
            time.sleep(0.3)
        log("cluster not healthy after %ds: %s" % (timeout, last))
        return False

    def leader(self):
        try:
            rid = self.call("Cluster", "GetLeader", self.C.GetLeaderRequest(), self.C.GetLeaderResponse,
                            attempts=5).leader.id
            return self.replicas.get(rid)
        except (self.grpc.RpcError, RuntimeError):
            return None

    def lease_holder(self):
        try:
            lease = self.call("Cluster", "GetLease", self.C.GetLeaseRequest(), self.C.Lease, attempts=5)
        except (self.grpc.RpcError, RuntimeError):
            return None
        self.epochs_seen.add(lease.epoch)
        name = lease.holder.split("/")[0]
        for r in self.members():
            if name == "replica-%d" % r.rid:
                return r
        return None

    # --- setup of the objects the workloads use

    def setup_objects(self):
        N, M, Q = self.N, self.M, self.Q
        for ns in ["set", "quota"] + ["reg%d" % k for k in range(self.args.keys)]:
            labels = {"v": "0"} if ns.startswith("reg") else {}
            self.call("Namespaces", "Create", N.CreateNamespaceRequest(
                request_id="setup-" + ns, namespace=N.Namespace(meta=M.ObjectMeta(name=ns, labels=labels))),
                N.Namespace)
        self.call("Quotas", "Set", Q.SetQuotaRequest(request_id="setup-quota-limit", quota=Q.Quota(
            meta=M.ObjectMeta(namespace="quota"), max_concurrent_sandboxes=self.args.quota,
            mode=Q.QUOTA_MODE_HARD)), Q.Quota)
        self.since = self.call("Sandboxes", "List", self.S.ListSandboxesRequest(), self.S.ListSandboxesResponse).revision

    # ---------------------------------------------------------------- workloads

    def op_call(self, r, service, method, req, resp_cls, timeout=2.0):
        return self.api.call(r, service, method, req, resp_cls, timeout=timeout)

    def register_worker(self, proc):
        N, M = self.N, self.M
        rnd = random.Random(self.args.seed * 1000 + proc)
        seq = 0
        while not self.stop.is_set():
            key = "reg%d" % rnd.randrange(self.args.keys)
            r = self.pick()
            if r is None:
                time.sleep(0.1)
                continue
            t = now()
            lead = self.leader_now
            try:
                # Linearizable (no read option): answered from the replica's namespaces model after a
                # read index, on followers and leader alike; x-gantry-revision says the model answered.
                ns, tr = self.api.call_trailers(r, "Namespaces", "Get", N.GetNamespaceRequest(name=key), N.Namespace,
                                                timeout=2.0)
                cur, rv = ns.meta.labels.get("v", ""), ns.meta.resource_version
                self.record("register", proc=proc, key=key, f="read", value=cur, type="ok", invoke=t, complete=now(),
                            replica=r.rid, model="x-gantry-revision" in tr,
                            read_revision=int(tr.get("x-gantry-revision", "0")),
                            follower=None if lead is None else lead != r.rid)
            except self.grpc.RpcError as e:
                self.record("register", proc=proc, key=key, f="read", value=None, type="info", invoke=t,
                            complete=now(), replica=r.rid, error=e.code().name)
                time.sleep(0.05)
                continue
            if rnd.random() < 0.5:
                seq += 1
                new = "%d-%d" % (proc, seq)
                t = now()
                req = N.UpdateNamespaceRequest(request_id="reg-%d-%d" % (proc, seq), namespace=N.Namespace(
                    meta=M.ObjectMeta(name=key, labels={"v": new})), expected_resource_version=rv)
                try:
                    self.op_call(r, "Namespaces", "Update", req, N.Namespace)
                    typ, err = "ok", None
                except self.grpc.RpcError as e:
                    typ = "fail" if e.code() == self.grpc.StatusCode.ABORTED else "info"
                    err = e.code().name
                self.record("register", proc=proc, key=key, f="cas", value=[cur, new], type=typ, invoke=t,
                            complete=now(), replica=r.rid, error=err)
            time.sleep(rnd.uniform(0, 0.05))

    def sandbox(self, ns, name, labels):
        S, M = self.S, self.M
        return S.Sandbox(meta=M.ObjectMeta(namespace=ns, name=name, labels=labels),
                         spec=S.SandboxSpec(image="busybox:1.36"))

    def set_worker(self, proc, counter):
        """Create sandboxes in namespace "set", each under one request id; a retry (the outcome of
        the previous attempt unknown) uses a new name, so only idempotency keeps it from applying
        twice. The op number is a label."""
        S = self.S
        rnd = random.Random(self.args.seed * 2000 + proc)
        while not self.stop.is_set():
            with counter[1]:
                counter[0] += 1
                op = counter[0]
            t = now()
            res = dict(proc=proc, op=op, invoke=t, type="info", attempts=0)
            end = time.monotonic() + 15
            while time.monotonic() < end and not self.stop.is_set():
                r = self.pick()
                if r is None:
                    time.sleep(0.1)
                    continue
                res["attempts"] += 1
                req = S.CreateSandboxRequest(request_id="set-%d" % op, sandbox=self.sandbox(
                    "set", "s%d-a%d" % (op, res["attempts"]), {"op": str(op)}))
                try:
                    sb = self.op_call(r, "Sandboxes", "Create", req, S.Sandbox, timeout=1.5)
                    res.update(type="ok", id=sb.meta.id, revision=sb.meta.resource_version, name=sb.meta.name)
                    break
                except self.grpc.RpcError as e:
                    res["error"] = e.code().name
                    if e.code() not in RETRYABLE:
                        res["type"] = "fail"
                        break
                    time.sleep(0.1)
            res["complete"] = now()
            self.record("set", **res)
            if res["type"] == "ok":
                with self.hist_lock:
                    self.set_pending.append(res)
            time.sleep(rnd.uniform(0.05, 0.3) * self.args.pace)

    def set_verifier(self, part, parts):
        """Acknowledged set elements older than --set-keep seconds are read back by name and then
        deleted, so the driver's state (and each reconciler pass) stays small in long runs; the
        rest are checked against the final list. A watch still sees every creation, so an op
        applied twice shows up even after the harness deleted the copy it knew of."""
        S = self.S
        while not self.stop.is_set():
            with self.hist_lock:
                due = [x for x in self.set_pending
                       if x["op"] % parts == part and now() - x["complete"] >= self.args.set_keep]
            for x in due:
                if self.stop.is_set():
                    return
                r = self.pick()
                if r is None:
                    break
                try:
                    got = self.op_call(r, "Sandboxes", "Get", S.GetSandboxRequest(namespace="set", name=x["name"]),
                                       S.Sandbox)
                    self.set_verified[x["op"]] = got.meta.id
                except self.grpc.RpcError as e:
                    if e.code() != self.grpc.StatusCode.NOT_FOUND:
                        continue  # unknown: try again later
                    self.set_verified[x["op"]] = None
                with self.hist_lock:
                    self.set_pending.remove(x)
                if self.set_verified[x["op"]] is None:
                    continue
                for _ in range(100):
                    r = self.pick()
                    if r is None:
                        time.sleep(0.2)
                        continue
                    try:
                        self.op_call(r, "Sandboxes", "Delete", S.DeleteSandboxRequest(
                            request_id="set-del-%d" % x["op"], namespace="set", name=x["name"]), S.Sandbox)
                        break
                    except self.grpc.RpcError as e:
                        if e.code() == self.grpc.StatusCode.NOT_FOUND or e.code() not in RETRYABLE:
                            break
                        time.sleep(0.1)
            time.sleep(0.5)

    def quota_worker(self, proc):
        S = self.S
        rnd = random.Random(self.args.seed * 3000 + proc)
        n = 0
        while not self.stop.is_set():
            n += 1
            name = "q%d-%d" % (proc, n)
            t = now()
            res = dict(proc=proc, name=name, invoke=t, type="info")
            end = time.monotonic() + 10
            while time.monotonic() < end and not self.stop.is_set():
                r = self.pick()
                if r is None:
                    time.sleep(0.1)
                    continue
                try:
                    sb = self.op_call(r, "Sandboxes", "Create", S.CreateSandboxRequest(
                        request_id="quota-" + name, sandbox=self.sandbox("quota", name, {})), S.Sandbox)
                    res.update(type="ok", ack=now(), id=sb.meta.id, revision=sb.meta.resource_version)
                    break
                except self.grpc.RpcError as e:
                    res["error"] = e.code().name
                    if e.code() not in RETRYABLE:
                        res["type"] = "fail"
                        break
                    time.sleep(0.1)
            if res["type"] == "fail":
                res["complete"] = now()
                self.record("quota", **res)
                time.sleep(rnd.uniform(0.05, 0.3))
                continue
            if res["type"] == "ok":
                time.sleep(rnd.uniform(0.1, 1.0))
            # Delete it (also after an unknown outcome: it may exist and would hold the quota).
            res["delete_invoke"] = now()
            deleted = False
            while not deleted:
                r = self.pick()
                if r is None:
                    time.sleep(0.1)
                    continue
                try:
                    self.op_call(r, "Sandboxes", "Delete", S.DeleteSandboxRequest(
                        request_id="quota-del-" + name, namespace="quota", name=name), S.Sandbox)
                    deleted = True
                except self.grpc.RpcError as e:
                    if e.code() == self.grpc.StatusCode.NOT_FOUND:
                        deleted = True
                    elif e.code() not in RETRYABLE:
                        res["delete_error"] = e.code().name
                        break
                    else:
                        time.sleep(0.1)
            res["complete"] = now()
            self.record("quota", **res)

    def quota_observer(self):
        S, Q = self.S, self.Q
        while not self.stop.is_set():
            r = self.pick()
            if r is not None:
                try:
                    t = now()
                    q = self.op_call(r, "Quotas", "Get", Q.GetQuotaRequest(namespace="quota"), Q.GetQuotaResponse)
                    self.quota_obs.append((t, "usage.sandboxes@%d" % r.rid, q.usage.sandboxes))
                    lst = self.op_call(r, "Sandboxes", "List", S.ListSandboxesRequest(namespace="quota"),
                                       S.ListSandboxesResponse)
                    live = sum(1 for s in lst.sandboxes if s.status.phase != S.SandboxStatus.PHASE_DELETING)
                    self.quota_obs.append((now(), "listed-not-deleting@%d" % r.rid, live))
                except self.grpc.RpcError:
                    pass
            time.sleep(0.25)

    def watcher(self, r, events):
        """One Watch stream on replica r from self.since, resumed after every break from the last
        revision it delivered."""
        S = self.S
        last = self.since
        while not self.stop_watch.is_set() and not r.removed:
            if not r.alive() or r.paused:
                time.sleep(0.2)
                continue
            try:
                st = self.api.stream(r, "Sandboxes", "Watch", S.WatchSandboxesRequest(since_revision=last),
                                     S.SandboxEvent)
                r.watch_call = st
                for ev in st:
                    typ = self.M.EventType.Name(ev.type).replace("EVENT_TYPE_", "")
                    e = {"revision": ev.revision, "type": typ, "t": now()}
                    if typ != "BOOKMARK":
                        e.update(id=ev.sandbox.meta.id, rv=ev.sandbox.meta.resource_version,
                                 epoch=ev.sandbox.status.lease_epoch, name=ev.sandbox.meta.name,
                                 ns=ev.sandbox.meta.namespace)
                    events.append(e)
                    last = max(last, ev.revision)
                    if self.stop_watch.is_set():
                        break
            except self.grpc.RpcError:
                pass
            except Exception as e:  # noqa: BLE001 - a watcher must keep going; the checker judges
                events.append({"type": "ERROR", "revision": last, "error": repr(e), "t": now()})
            time.sleep(0.2)
        st = getattr(r, "watch_call", None)
        if st is not None:
            st.cancel()

    def leader_observer(self):
        """The dqlite leader's id, sampled every 0.5 s, so a register read records whether it went to a
        follower (as of the last sample: a leader change since can make one read's label wrong)."""
        while not self.stop.is_set():
            lead = self.leader()
            self.leader_now = lead.rid if lead is not None else None
            time.sleep(0.5)

    def reads_verdict(self, reg):
        """The register reads must have been answered from the models of followers and of the leader
        (the linearizability of those reads is the register verdict's)."""
        ok = [h for h in reg if h["f"] == "read" and h["type"] == "ok"]
        model = [h for h in ok if h.get("model")]
        fol = [h for h in model if h.get("follower") is True]
        lead = [h for h in model if h.get("follower") is False]
        by = {}
        for h in model:
            by[h["replica"]] = by.get(h["replica"], 0) + 1
        anomalies = []
        if not fol:
            anomalies.append({"reads": "no register read was answered from a follower's model"})
        if not lead:
            anomalies.append({"reads": "no register read was answered from the leader's model"})
        return checkers.verdict("reads", anomalies, "%d ok register reads, %d from a model (%d on followers, %d on the leader, by replica %s)"
                % (len(ok), len(model), len(fol), len(lead), json.dumps(by, sort_keys=True)))

    def lease_observer(self):
        while not self.stop.is_set():
            self.lease_holder()
            time.sleep(0.5)

    def scrape_batches(self):
        """Each live replica's gantry_write_batch_size histogram, kept per process (a restart resets it)."""
        import urllib.request
        for r in self.members():
            if not r.alive():
                continue
            try:
                with urllib.request.urlopen("http://%s/metrics" % r.admin, timeout=2) as resp:
                    text = resp.read().decode()
            except OSError:
                continue
            hist = {}
            for line in text.splitlines():
                if line.startswith("gantry_write_batch_size_bucket{le=\""):
                    le, v = line[len("gantry_write_batch_size_bucket{le=\""):].split("\"} ")
                    hist[le] = int(v)
                elif line.startswith("gantry_write_batch_size_sum ") or line.startswith("gantry_write_batch_size_count "):
                    k, v = line.split()
                    hist[k.rsplit("_", 1)[1]] = int(v)
            if hist:
                self.batch_seen[(r.rid, r.proc.pid)] = hist

    def batch_observer(self):
        while not self.stop.is_set():
            self.scrape_batches()
            time.sleep(1.0)

    def batching_verdict(self):
        """The checkers above judged histories written in batches of many calls: fail if no
        transaction carried more than one call (the run would say nothing about batching)."""
        total = sum(h.get("count", 0) for h in self.batch_seen.values())
        calls = sum(h.get("sum", 0) for h in self.batch_seen.values())
        single = sum(h.get("1", 0) for h in self.batch_seen.values())
        over8 = sum(h.get("+Inf", 0) - h.get("8", 0) for h in self.batch_seen.values())
        anomalies = [] if total - single > 0 else [{"batching": "no write transaction carried more than one call"}]
        return checkers.verdict("batching", anomalies, "%d write transactions carried %d calls (mean %.1f); %d with "
                                "several calls, %d with more than 8 (linger %d ms)" % (
                                    total, calls, calls / total if total else 0, total - single, over8,
                                    self.args.linger_ms))

    # ---------------------------------------------------------------- nemeses

    def iptables(self, *args):
        subprocess.run(["iptables", "-w"] + list(args), check=True, capture_output=True)

    def cut(self, a, b):
        for x, y in ((a, b), (b, a)):
            self.iptables("-A", "OUTPUT", "-m", "owner", "--gid-owner", str(x.gid), "-d", y.ip, "-j", "DROP")

    def partition(self, groups, bridge=None):
        """Cut every pair of members in different groups; a bridge member keeps both sides."""
        for i, ga in enumerate(groups):
            for gb in groups[i + 1:]:
                for a in ga:
                    for b in gb:
                        self.cut(a, b)

    def heal_net(self):
        self.iptables("-F", "OUTPUT")

    def run_nemesis(self, kind, hold):
        ms = [r for r in self.members() if r.alive()]
        if kind.startswith("partition"):
            if len(ms) < 3:
                return False
            if kind == "partition-halves":
                self.rnd.shuffle(ms)
                minority, majority = ms[:len(ms) // 2], ms[len(ms) // 2:]
                self.partition([minority, majority])
                self.nemesis("partition-halves", minority=[r.rid for r in minority],
                             majority=[r.rid for r in majority])
            elif kind == "partition-leader":
                lead = self.leader() or self.rnd.choice(ms)
                rest = [r for r in ms if r is not lead]
                self.partition([[lead], rest])
                self.nemesis("partition-leader", isolated=lead.rid)
            else:
                self.rnd.shuffle(ms)
                bridge, left, right = ms[0], ms[1:1 + (len(ms) - 1) // 2], ms[1 + (len(ms) - 1) // 2:]
                self.partition([left, right])
                self.nemesis("partition-bridge", bridge=bridge.rid, left=[r.rid for r in left],
                             right=[r.rid for r in right])
            time.sleep(hold)
            self.heal_net()
            self.nemesis("heal-network")
            return True
        if kind == "kill":
            victim = (self.lease_holder() if self.rnd.random() < 0.5 else None) or self.rnd.choice(ms)
            victim.kill()
            self.nemesis("kill", replica=victim.rid, signal="SIGKILL")
            time.sleep(hold)
            victim.start()
            self.nemesis("restart", replica=victim.rid)
            return True
        if kind == "pause":
            victim = (self.lease_holder() if self.rnd.random() < 0.7 else None) or self.rnd.choice(ms)
            victim.paused = True
            victim.signal(signal.SIGSTOP)
            self.nemesis("pause", replica=victim.rid, signal="SIGSTOP")
            time.sleep(hold)
            victim.signal(signal.SIGCONT)
            victim.paused = False
            self.nemesis("resume", replica=victim.rid, signal="SIGCONT")
            return True
        if kind == "pause-leader":
            victim = self.leader()
            if victim is None or not victim.alive():
                return False
            hold = self.rnd.uniform(0.3, 1.2)
            victim.paused = True
            victim.signal(signal.SIGSTOP)
            self.nemesis("pause-leader", replica=victim.rid, seconds=round(hold, 2))
            time.sleep(hold)
            victim.signal(signal.SIGCONT)
            victim.paused = False
            self.nemesis("resume", replica=victim.rid, signal="SIGCONT")
            return True
        if kind == "clock":
            if not self.faketime:
                return False
            victim = (self.lease_holder() if self.rnd.random() < 0.5 else None) or self.rnd.choice(ms)
            spec = self.rnd.choice(["+%d" % self.rnd.randint(5, 600), "-%d" % self.rnd.randint(5, 600),
                                    "+0 x1.5", "-30 x0.5", "+3600", "-3600"])
            victim.set_clock(spec)
            self.nemesis("clock", replica=victim.rid, faketime=spec)
            time.sleep(hold)
            victim.set_clock("+0")
            self.nemesis("clock-reset", replica=victim.rid)
            return True
        if kind == "transfer":
            # A voter chosen at random, recently partitioned or restarted ones included. Leadership
            # goes only to a caught-up voter (docs/reliability.md, "Leadership transfers"): the
            # gateway waits up to 10 s for it and otherwise answers UNAVAILABLE saying how far
            # behind it is; keep asking for up to 30 s. A transfer that never happened does not
            # count as injected.
            try:
                members = self.call("Cluster", "ListMembers", self.C.ListMembersRequest(),
                                    self.C.ListMembersResponse).members
            except (self.grpc.RpcError, RuntimeError) as e:
                self.nemesis("transfer-leadership-failed", error=str(e)[:200])
                return False
            voters = [m.id for m in members if m.role == self.C.MEMBER_ROLE_VOTER and not m.leader]
            if not voters:
                return False
            target = self.rnd.choice(voters)
            deadline = time.monotonic() + 30
            refused = 0
            while True:
                try:
                    resp = self.call("Cluster", "TransferLeadership",
                                     self.C.TransferLeadershipRequest(target_id=target),
                                     self.C.TransferLeadershipResponse, attempts=10, timeout=20)
                    self.nemesis("transfer-leadership", target=target, new_leader=resp.leader.id,
                                 refused_before=refused)
                    break
                except (self.grpc.RpcError, RuntimeError) as e:
                    if time.monotonic() < deadline and "try again" in str(e):
                        refused += 1
                        time.sleep(0.5)
                        continue
                    self.nemesis("transfer-leadership-failed", target=target, error=str(e)[:200])
                    return False
            time.sleep(hold / 2)
            return True
        if kind == "member":
            if len(ms) < 3:
                return False
            lead = self.leader()
            # Never a replica that holds the cluster CA key: a joined replica does not get it
            # (docs/security.md, "Cluster secrets"), so removing the last holder would leave a cluster
            # no replica can join; replacing one is the operator's job (copy the key first).
            others = [r for r in ms if r is not lead and not r.holds_ca_key()]
            if not others:
                return False
            victim = self.rnd.choice(others)
            victim.expected_down = True
            victim.signal(signal.SIGTERM)
            try:
                rc = victim.proc.wait(timeout=30)
                victim.exits.append(rc)
                if rc != 0:
                    self.record_crash(victim, rc, on_sigterm=True)  # the SIGTERM handover is planned
            except subprocess.TimeoutExpired:
                victim.kill()
                self.nemesis("sigterm-timeout", replica=victim.rid)
            try:
                try:
                    self.call("Cluster", "RemoveMember", self.C.RemoveMemberRequest(
                        id=victim.rid, request_id="remove-%d-%d" % (victim.rid, len(self.nemesis_log))),
                        self.C.RemoveMemberResponse, attempts=40, timeout=10,
                        retry_on=(self.grpc.StatusCode.FAILED_PRECONDITION,))
                except self.grpc.RpcError as e:
                    # A retry after a lost reply finds the member already gone: that is success.
                    if e.code() != self.grpc.StatusCode.NOT_FOUND:
                        raise
                    ms = self.call("Cluster", "ListMembers", self.C.ListMembersRequest(),
                                   self.C.ListMembersResponse).members
                    if any(m.id == victim.rid for m in ms):
                        raise
            except (self.grpc.RpcError, RuntimeError) as e:
                # Not removed: bring it back as it was, and say so.
                self.nemesis("remove-member-failed", replica=victim.rid, error=str(e)[:200])
                victim.start()
                return True
            with self.members_lock:
                victim.removed = True
            shutil.rmtree(victim.dir, ignore_errors=True)
            self.nemesis("remove-member", replica=victim.rid)
            time.sleep(hold / 2)
            new = self.add_replica()
            self.nemesis("add-member", replica=new.rid, replacing=victim.rid)
            self.start_watcher(new)
            return True
        raise ValueError(kind)

    def check_crashes(self):
        """A replica gone without the harness stopping it crashed: record it, start it again."""
        for r in self.members():
            if r.proc is not None and not r.alive() and not r.expected_down:
                rc = r.proc.returncode
                r.exits.append(rc)
                self.record_crash(r, rc)
                try:
                    r.start()
                except RuntimeError as e:
                    self.nemesis("restart-failed", replica=r.rid, error=str(e)[:300])

    def record_crash(self, r, rc, on_sigterm=False):
        """A crash with its backtrace (from a core dump, or AddressSanitizer's report)."""
        cores = sorted(os.listdir(r.cores)) if os.path.isdir(r.cores) else []
        bt = self.backtrace(os.path.join(r.cores, cores[-1])) if cores else checkers.asan_backtrace(r.this_run())
        if cores:
            os.rename(os.path.join(r.cores, cores[-1]), os.path.join(r.cores, "%s.%d" % (cores[-1], len(self.crashes))))
        self.crashes.append({"replica": r.rid, "exit": rc, "t": now(), "log": r.tail(40 if on_sigterm else 15),
                             "core": bool(cores), "backtrace": bt, "on_sigterm": on_sigterm,
                             "after": [e for e in self.nemesis_log if e["t"] > now() - 15]})
        self.nemesis("CRASH", replica=r.rid, exit=rc, on_sigterm=on_sigterm)

    def backtrace(self, core):
        try:
            out = subprocess.run(["gdb", "-batch", "-ex", "bt 12", self.gantryd, core], capture_output=True,
                                 timeout=120).stdout.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired) as e:
            return "gdb: %s" % e
        return "\n".join(line for line in out.splitlines() if line.startswith("#"))

    def heal_all(self):
        self.check_crashes()
        self.heal_net()
        for r in self.members():
            r.set_clock("+0")
            if r.paused:
                r.signal(signal.SIGCONT)
                r.paused = False
            if not r.alive():
                r.start()
        self.nemesis("heal-all")

    def nemesis_loop(self, kinds, end_at):
        order = list(kinds)
        self.rnd.shuffle(order)
        i = 0
        time.sleep(self.args.quiet)
        while now() < end_at - 2:
            kind = order[i] if i < len(order) else self.rnd.choice(kinds)
            i += 1
            hold = self.rnd.uniform(self.args.hold_min, self.args.hold_max)
            try:
                if not self.run_nemesis(kind, hold):
                    continue
                self.nemesis_counts[kind] = self.nemesis_counts.get(kind, 0) + 1
            except Exception as e:  # noqa: BLE001 - log it, heal, keep the schedule going
                self.nemesis("nemesis-error", kind=kind, error=repr(e)[:300])
                traceback.print_exc()
                self.heal_all()
                self.nemesis_errors += 1
            self.check_crashes()
            time.sleep(min(self.args.quiet, max(0, end_at - now())))

    def transfer_loop(self, end_at):
        """--transfer-every S: leadership transfers to random voters every S seconds (with jitter),
        beside the main schedule, so targets include voters just restarted, partitioned or paused
        by the other nemeses."""
        rnd = random.Random(self.args.seed * 7 + 1)
        while now() < end_at - 2:
            time.sleep(rnd.uniform(0.5, 1.5) * self.args.transfer_every)
            if now() >= end_at - 2:
                break
            try:
                if self.run_nemesis("transfer", 0):
                    with self.members_lock:
                        self.nemesis_counts["transfer"] = self.nemesis_counts.get("transfer", 0) + 1
            except Exception as e:  # noqa: BLE001 - keep going; the checkers judge
                self.nemesis("nemesis-error", kind="transfer", error=repr(e)[:300])

    def start_watcher(self, r):
        events = []
        self.watch_events["replica-%d" % r.rid] = events
        t = threading.Thread(target=self.watcher, args=(r, events), daemon=True)
        t.start()
        self.watch_threads.append(t)

    # ---------------------------------------------------------------- the run

    def run(self):
        args = self.args
        log("booting %d replicas (gantryd %s, faketime %s)" % (args.replicas, self.gantryd,
                                                               "on" if self.faketime else "off"))
        self.boot()
        self.setup_objects()
        log("cluster up; watch from revision %d" % self.since)
        self.watch_events, self.watch_threads = {}, []
        self.stop_watch = threading.Event()
        for r in self.members():
            self.start_watcher(r)
        threads = []
        counter = [0, threading.Lock()]
        for p in range(args.register_clients):
            threads.append(threading.Thread(target=self.register_worker, args=(p,), daemon=True))
        for p in range(args.set_clients):
            threads.append(threading.Thread(target=self.set_worker, args=(100 + p, counter), daemon=True))
        for p in range(args.quota_clients):
            threads.append(threading.Thread(target=self.quota_worker, args=(200 + p,), daemon=True))
        threads.append(threading.Thread(target=self.quota_observer, daemon=True))
        if args.set_keep > 0:
            for part in range(2):
                threads.append(threading.Thread(target=self.set_verifier, args=(part, 2), daemon=True))
        threads.append(threading.Thread(target=self.lease_observer, daemon=True))
        threads.append(threading.Thread(target=self.leader_observer, daemon=True))
        threads.append(threading.Thread(target=self.batch_observer, daemon=True))
        for t in threads:
            t.start()
        self.nemesis_counts, self.nemesis_errors, self.crashes = {}, 0, []
        t_start = now()
        kinds = ([k for k in NEMESES + EXTRA_NEMESES if k in args.nemesis.split(",")] if args.nemesis != "all"
                 else list(NEMESES))
        if not kinds:
            raise RuntimeError("no known nemesis in --nemesis %s" % args.nemesis)
        transfers = None
        if args.transfer_every > 0:
            transfers = threading.Thread(target=self.transfer_loop, args=(t_start + args.time,), daemon=True)
            transfers.start()
        self.nemesis_loop(kinds, t_start + args.time)
        if transfers is not None:
            transfers.join(60)
        self.heal_all()
        healthy = self.wait_healthy(120)
        log("healed (%s); letting clients finish" % ("healthy" if healthy else "NOT healthy"))
        time.sleep(3)
        self.stop.set()
        for t in threads:
            t.join(60)
        run_seconds = now() - t_start
        return self.final(run_seconds, kinds, healthy)

    def final(self, run_seconds, kinds, healthy):
        S = self.S
        # Quiesce: every live sandbox converged in the driver, the watches caught up.
        final_list, deadline = None, time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                final_list = self.call("Sandboxes", "List", S.ListSandboxesRequest(page=self.M.PageRequest(
                    page_size=0)), S.ListSandboxesResponse, timeout=10)
                items = self.list_all()
                desired = {s.meta.id for s in items if s.status.phase != S.SandboxStatus.PHASE_DELETING}
                deleting = [s for s in items if s.status.phase == S.SandboxStatus.PHASE_DELETING]
                driver = self.driver_items()
                if not deleting and desired == {d["id"] for d in driver}:
                    break
            except (self.grpc.RpcError, RuntimeError, ValueError, OSError):
                pass
            time.sleep(1)
        items = self.list_all()
        final_revision = max([self.call("Sandboxes", "List", S.ListSandboxesRequest(namespace="set"),
                                        S.ListSandboxesResponse).revision])
        deadline = time.monotonic() + 30
        live = ["replica-%d" % r.rid for r in self.members() if r.alive()]
        while time.monotonic() < deadline:
            reached = {n: max([e["revision"] for e in self.watch_events[n]] or [0]) for n in live}
            if all(v >= final_revision for v in reached.values()):
                break
            time.sleep(0.5)
        self.stop_watch.set()
        driver = self.driver_items()
        self.lease_holder()
        self.check_crashes()
        self.scrape_batches()
        stops = self.stop_replicas()

        hist = self.history
        reg = [h for h in hist if h["workload"] == "register"]
        sets = [h for h in hist if h["workload"] == "set"]
        quota = [h for h in hist if h["workload"] == "quota"]
        final_set = [{"id": s.meta.id, "name": s.meta.name, "op": int(s.meta.labels.get("op", "-1"))}
                     for s in items if s.meta.namespace == "set"]
        lifetimes = [(h["ack"], h.get("delete_invoke", checkers.INF)) for h in quota if h["type"] == "ok"]
        journals = {r.rid: r.journal for r in self.replicas.values()}
        calls = checkers.read_journals(journals)
        store_ids = [s.meta.id for s in items if s.status.phase != S.SandboxStatus.PHASE_DELETING]
        acked = [(h["revision"], h["id"]) for h in sets + quota if h["type"] == "ok"]
        watched = set()
        for evs in self.watch_events.values():
            for e in evs:
                if e["type"] == "ADDED" and e.get("ns") == "set" and e["name"].startswith("s"):
                    watched.add((int(e["name"][1:].split("-")[0]), e["id"]))
        t_check = time.monotonic()
        verdicts = [
            checkers.check_register(reg),
            self.reads_verdict(reg),
            checkers.check_set(sets, final_set, self.set_verified, watched),
            checkers.check_quota(self.args.quota, lifetimes, self.quota_obs),
            checkers.check_lease(calls, store_ids, driver, self.epochs_seen),
            checkers.check_watch(self.watch_events, self.since, final_revision, acked, must_reach=live),
            self.replicas_verdict(stops),
            self.engine_verdict(),
            self.batching_verdict(),
        ]
        check_s = time.monotonic() - t_check
        summary = {"run_seconds": round(run_seconds, 1), "nemeses": self.nemesis_counts,
                   "nemesis_events": len(self.nemesis_log), "nemesis_errors": self.nemesis_errors,
                   "healthy_after_heal": healthy, "operations": len(hist),
                   "by_workload": {k: len([h for h in hist if h["workload"] == k]) for k in ("register", "set", "quota")},
                   "driver_calls": len(calls), "watch_events": sum(len(v) for v in self.watch_events.values()),
                   "check_seconds": round(check_s, 1), "seed": self.args.seed, "faketime": self.faketime,
                   "replica_exits": {r.rid: r.exits for r in self.replicas.values()},
                   "verdicts": verdicts}
        with open(os.path.join(self.results, "history.jsonl"), "w") as f:
            for h in hist:
                f.write(json.dumps(h, sort_keys=True) + "\n")
        with open(os.path.join(self.results, "nemesis.jsonl"), "w") as f:
            for e in self.nemesis_log:
                f.write(json.dumps(e, sort_keys=True) + "\n")
        with open(os.path.join(self.results, "watch.json"), "w") as f:
            json.dump(self.watch_events, f)
        with open(os.path.join(self.results, "quota-observations.json"), "w") as f:
            json.dump(self.quota_obs, f)
        with open(os.path.join(self.results, "verdicts.json"), "w") as f:
            json.dump(summary, f, indent=1, sort_keys=True)
        missing = [k for k in kinds if not self.nemesis_counts.get(k)]
        print("jepsen: %.0f s of faults, %d operations (%s), %d nemesis events %s, %d driver calls, %d watch events" % (
            run_seconds, len(hist), ", ".join("%s %d" % kv for kv in summary["by_workload"].items()),
            len(self.nemesis_log), json.dumps(self.nemesis_counts, sort_keys=True), len(calls),
            summary["watch_events"]))
        bad = 0
        for v in verdicts:
            print("%-8s %s  %s" % (v["name"], "PASS" if v["valid"] else "FAIL", v["summary"]))
            if not v["valid"]:
                bad += 1
                for a in v["anomalies"][:3]:
                    print("         anomaly: %s" % json.dumps(a, sort_keys=True, default=str)[:400])
        if missing and self.args.require_all:
            print("harness  FAIL  nemeses never injected: %s" % missing)
            bad += 1
        if not healthy:
            print("harness  FAIL  the cluster did not become healthy after healing")
            bad += 1
        print("results in %s" % self.results)
        return 1 if bad else 0

    def stop_replicas(self):
        """SIGTERM every live replica; their exit statuses (0 expected)."""
        for r in self.members():
            if r.alive():
                r.expected_down = True
                r.signal(signal.SIGTERM)
        out = {}
        for r in self.members():
            if r.proc is not None and r.proc.returncode is None:
                try:
                    out[r.rid] = r.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    r.kill()
                    out[r.rid] = "did not stop within 60 s"
        return out

    def replicas_verdict(self, stops):
        """No replica crashed during the run, and each stopped cleanly (exit 0) on SIGTERM at the
        end. Every crash is an anomaly with its backtrace, except one that is provably dqlite's
        (checkers.dqlite_thread_crash: on dqlite's own thread, no frame of ours) and followed an
        unplanned leadership loss: those go to the engine verdict. One within 15 s of a planned
        transfer (the transfer nemesis, a handover) stays here: that path is Gantry's to make safe."""
        anomalies, self.engine_crashes = [], []
        for c in self.crashes:
            planned = any(e["what"] in ("transfer-leadership", "remove-member") for e in c.get("after", []))
            planned = planned or c.get("on_sigterm") or "handover: transferring leadership" in c.get("log", "")
            if checkers.dqlite_thread_crash(c["exit"], c["backtrace"]) and not planned:
                self.engine_crashes.append(c)
                continue
            anomalies.append({"crash": c, "planned_transfer_before": planned})
        for rid, rc in sorted(stops.items()):
            if rc != 0:
                anomalies.append({"replica": rid, "exit_on_sigterm": rc, "log": self.replicas[rid].tail(80)[-1500:]})
        return checkers.verdict("replicas", anomalies, "%d replicas over the run, %d crashes (%d of them dqlite's after "
                                "an unplanned leadership loss, judged by the engine verdict), exits on SIGTERM %s" % (
                                    len(self.replicas), len(self.crashes), len(self.engine_crashes),
                                    json.dumps({str(k): v for k, v in stops.items()})))

    def engine_verdict(self):
        """dqlite 1.11's own crashes after an unplanned leadership loss (a kill, a pause, a
        partition), which Gantry cannot prevent (docs/reliability.md). Failing unless the run
        was started with --accept-engine-crashes; either way each one is listed."""
        n = len(self.engine_crashes)
        summary = "%d crash%s on dqlite's own thread after an unplanned leadership loss%s" % (
            n, "" if n == 1 else "es", " (accepted: --accept-engine-crashes)" if n and self.args.accept_engine_crashes
            else "")
        anomalies = [] if self.args.accept_engine_crashes else [{"engine_crash": c} for c in self.engine_crashes]
        v = checkers.verdict("engine", anomalies, summary)
        v["crashes"] = self.engine_crashes
        return v

    def list_all(self):
        S = self.S
        out, token = [], ""
        while True:
            resp = self.call("Sandboxes", "List", S.ListSandboxesRequest(page=self.M.PageRequest(
                page_size=500, page_token=token)), S.ListSandboxesResponse, timeout=10)
            out += list(resp.sandboxes)
            token = resp.next_page_token
            if not token:
                return out

    def driver_items(self):
        with open(self.state) as f:
            return json.load(f)["sandboxes"]

    def shutdown(self):
        self.stop.set()
        if hasattr(self, "stop_watch"):
            self.stop_watch.set()
        try:
            self.heal_net()
        except (subprocess.CalledProcessError, OSError):
            pass
        for r in self.replicas.values():
            if r.alive():
                if r.paused:
                    r.signal(signal.SIGCONT)
                r.signal(signal.SIGTERM)
        for r in self.replicas.values():
            if r.proc is not None:
                try:
                    r.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    r.kill()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--gantryd", default=os.environ.get("GANTRYD", ""))
    p.add_argument("--proto-dir", default=os.environ.get("GANTRY_PROTO_DIR",
                                                         os.path.join(HERE, "..", "..", "api", "proto")))
    p.add_argument("--protoc", default=os.environ.get("GANTRY_PROTOC", "protoc"))
    p.add_argument("--results", default="jepsen-results")
    p.add_argument("--work", default=None, help="scratch parent directory (default: the system's)")
    p.add_argument("--time", type=float, default=60, help="seconds of faults (then heal and check)")
    p.add_argument("--nemesis", default="all", help="all (%s) or a comma-separated list of those and %s" % (
        ",".join(NEMESES), ",".join(EXTRA_NEMESES)))
    p.add_argument("--require-all", action="store_true", help="fail unless every chosen nemesis ran at least once")
    p.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--keys", type=int, default=3, help="register keys")
    p.add_argument("--register-clients", type=int, default=4)
    p.add_argument("--set-clients", type=int, default=2)
    p.add_argument("--quota-clients", type=int, default=4)
    p.add_argument("--quota", type=int, default=2, help="hard quota of namespace quota")
    p.add_argument("--transfer-every", type=float, default=0,
                   help="also transfer leadership to a random voter about every S seconds, beside the schedule")
    p.add_argument("--accept-engine-crashes", action="store_true",
                   help="pass the engine verdict despite dqlite's own crashes after unplanned leadership losses "
                        "(they are still listed)")
    p.add_argument("--linger-ms", type=int, default=20,
                   help="gantryd's write_batch_linger_ms, so concurrent calls share transactions")
    p.add_argument("--pace", type=float, default=1.0, help="multiplies the set clients' think time")
    p.add_argument("--set-keep", type=float, default=10.0,
                   help="seconds after which an acknowledged set element is read back and deleted (0: never)")
    p.add_argument("--hold-min", type=float, default=2.0)
    p.add_argument("--hold-max", type=float, default=6.0)
    p.add_argument("--quiet", type=float, default=3.0, help="seconds between faults")
    p.add_argument("--no-faketime", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (data dirs)")
    args = p.parse_args()
    if not args.gantryd:
        p.error("--gantryd (or GANTRYD) is required")
    enter_namespace(sys.argv[1:])
    h = Harness(args)
    rc = 2
    try:
        rc = h.run()
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        for r in h.replicas.values():
            print("--- replica %d log tail\n%s" % (r.rid, r.tail()))
        rc = 2
    finally:
        h.shutdown()
    sys.exit(rc)


if __name__ == "__main__":
    main()
