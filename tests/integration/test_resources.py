"""Tenant resources on a 3-replica gantryd cluster, driven by Debian's python3-grpcio.

Run: /usr/bin/python3 test_resources.py <group>
Groups: namespaces, sandboxes, quota (sandbox, GPU and lifetime quotas; GPUs on the fake driver),
idempotency, audit (and paging), watch, retention.

Uses test_gantryd.py's harness and test_identity.py's principals (a platform admin, an auditor,
a namespace admin and users of "default", a user of "team-b").
"""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_gantryd as g  # noqa: E402
import test_identity as ti  # noqa: E402

import grpc  # noqa: E402
from gantry.v1 import (audit_pb2, meta_pb2, namespaces_pb2, policies_pb2, principals_pb2,  # noqa: E402
                       providers_pb2, quotas_pb2, sandboxes_pb2, warmpools_pb2)

ROUNDS = int(os.environ.get("GANTRY_QUOTA_ROUNDS", "20"))
GPU_ROUNDS = int(os.environ.get("GANTRY_GPU_QUOTA_ROUNDS", "5"))
S = sandboxes_pb2
N = namespaces_pb2
Q = quotas_pb2


def sandbox(ns, name, **spec):
    spec.setdefault("image", "busybox:1.36")
    return S.Sandbox(meta=meta_pb2.ObjectMeta(namespace=ns, name=name), spec=S.SandboxSpec(**spec))


class Env(ti.Identity):
    def __init__(self, test, replicas=3):
        c = g.Cluster("res-" + test._testMethodName).init()
        test.clusters.append(c)
        c.join(replicas - 1)
        c.wait_roles(min(replicas, 3), max(0, replicas - 3))
        c.wait_ready()
        self._setup(c)

    def _setup(self, c):
        # Same principals as test_identity, but namespace team-b made through the API.
        self.c = c
        self.keys = {"pa": c.key}
        self.ids = {}
        self.call("pa", namespaces_pb2, "Namespaces", "Create", N.CreateNamespaceRequest(
            namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="team-b"))))
        specs = {"auditor": ("user", "AUDITOR", ""), "na": ("user", "NAMESPACE_ADMIN", "default"),
                 "user": ("user", "USER", "default"), "user2": ("user", "USER", "default"),
                 "other": ("user", "USER", "team-b")}
        from gantry.v1 import api_keys_pb2
        P = principals_pb2
        for role, (kind, brole, ns) in specs.items():
            p = self.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(
                principal=P.Principal(meta=meta_pb2.ObjectMeta(name="p-" + role),
                                      kind=getattr(P, "PRINCIPAL_KIND_" + kind.upper()))))
            self.ids[role] = p.meta.id
            self.call("pa", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
                binding=P.RoleBinding(principal_id=p.meta.id, role=getattr(P, "ROLE_" + brole), namespace=ns)))
            self.keys[role] = self.call("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
                principal_id=p.meta.id)).secret
        self.ids["pa"] = self.call("pa", principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest()).principal.meta.id

    def sb(self, role, method, req, replica=0):
        return self.call(role, sandboxes_pb2, "Sandboxes", method, req, replica=replica)


class FakeEnv(Env):
    """Env on the fake driver (one shared state file), which honours GPUs: the process driver, the
    default, refuses any GPU at admission. Short lease timings, so a reconciler acts soon."""

    def __init__(self, test, replicas=3):
        root = os.path.join(g.WORK, "fake-" + test._testMethodName)
        os.makedirs(root)
        flags = ["--driver", "fake", "--driver-state-dir", os.path.join(root, "state.json"), "--lease-duration-ms",
                 "1500", "--lease-renew-deadline-ms", "1000", "--lease-retry-ms", "200"]
        c = g.Cluster("resf-" + test._testMethodName, run_flags=flags)
        test.clusters.append(c)
        c.init()
        c.join(replicas - 1)
        c.wait_roles(min(replicas, 3), max(0, replicas - 3))
        c.wait_ready()
        self._setup(c)


def code_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


class Namespaces(g.GantrydTest):
    def test_namespaces(self):
        e = Env(self)
        ns = e.call("pa", namespaces_pb2, "Namespaces", "Create", N.CreateNamespaceRequest(
            namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="team-c", labels={"tier": "gold"}), description="C")))
        self.assertEqual(ns.phase, N.Namespace.PHASE_ACTIVE)
        self.assertEqual(dict(ns.meta.labels), {"tier": "gold"})
        self.assertGreater(ns.meta.resource_version, 0)
        for bad, what in (("Team_C", "namespace.meta.name"), ("x" * 64, "namespace.meta.name")):
            c, m = code_of(lambda: e.call("pa", namespaces_pb2, "Namespaces", "Create", N.CreateNamespaceRequest(
                namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name=bad)))))
            self.assertEqual(c, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(what, m)
        c, _ = code_of(lambda: e.call("pa", namespaces_pb2, "Namespaces", "Create", N.CreateNamespaceRequest(
            namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="team-c")))))
        self.assertEqual(c, grpc.StatusCode.ALREADY_EXISTS)
        # Lists: global roles see all; others the namespaces they hold a role in; selectors filter.
        names = [n.meta.name for n in e.call("pa", namespaces_pb2, "Namespaces", "List", N.ListNamespacesRequest()).namespaces]
        self.assertEqual(names, ["default", "team-b", "team-c"])
        names = [n.meta.name for n in e.call("user", namespaces_pb2, "Namespaces", "List", N.ListNamespacesRequest()).namespaces]
        self.assertEqual(names, ["default"])
        sel = N.ListNamespacesRequest(selector=meta_pb2.LabelSelector(match_labels={"tier": "gold"}))
        self.assertEqual([n.meta.name for n in e.call("auditor", namespaces_pb2, "Namespaces", "List", sel).namespaces],
                         ["team-c"])
        # Update with optimistic concurrency.
        c, _ = code_of(lambda: e.call("pa", namespaces_pb2, "Namespaces", "Update", N.UpdateNamespaceRequest(
            namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="team-c"), description="x"),
            expected_resource_version=ns.meta.resource_version + 99)))
        self.assertEqual(c, grpc.StatusCode.ABORTED)
        up = e.call("pa", namespaces_pb2, "Namespaces", "Update", N.UpdateNamespaceRequest(
            namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="team-c"), description="updated"),
            expected_resource_version=ns.meta.resource_version))
        self.assertEqual(up.description, "updated")
        # Two-phase delete: refused while a sandbox remains, TERMINATING meanwhile, gone after.
        e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=sandbox("team-c", "box1")))
        c, m = code_of(lambda: e.call("pa", namespaces_pb2, "Namespaces", "Delete", N.DeleteNamespaceRequest(
            name="team-c")))
        self.assertEqual(c, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("sandbox box1", m)
        got = e.call("pa", namespaces_pb2, "Namespaces", "Get", N.GetNamespaceRequest(name="team-c"))
        self.assertEqual(got.phase, N.Namespace.PHASE_TERMINATING)
        c, m = code_of(lambda: e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=sandbox("team-c", "box2"))))
        self.assertEqual(c, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("TERMINATING", m)
        e.sb("pa", "Delete", S.DeleteSandboxRequest(namespace="team-c", name="box1"))
        e.call("pa", namespaces_pb2, "Namespaces", "Delete", N.DeleteNamespaceRequest(name="team-c"))
        c, _ = code_of(lambda: e.call("pa", namespaces_pb2, "Namespaces", "Get", N.GetNamespaceRequest(name="team-c")))
        self.assertEqual(c, grpc.StatusCode.NOT_FOUND)
        c, m = code_of(lambda: e.call("pa", namespaces_pb2, "Namespaces", "Delete", N.DeleteNamespaceRequest(
            name="default")))
        self.assertEqual(c, grpc.StatusCode.FAILED_PRECONDITION)


class Sandboxes(g.GantrydTest):
    def test_sandboxes_ownership_and_shares(self):
        e = Env(self)
        a = e.sb("user", "Create", S.CreateSandboxRequest(sandbox=sandbox(
            "default", "mine", command=["sleep", "60"], env={"A": "1"}, gpu_count=0, lifetime_seconds=600),
            request_id="r1"))
        self.assertEqual(a.status.phase, S.SandboxStatus.PHASE_PROVISIONING)
        self.assertEqual(a.spec.owner_id, e.ids["user"])
        self.assertEqual(a.meta.created_by, e.ids["user"])
        self.assertGreater(a.status.expires_at_ms, 0)
        e.sb("user2", "Create", S.CreateSandboxRequest(sandbox=sandbox("default", "theirs")))
        # Bad input.
        for sbx, what in ((sandbox("default", "Bad_Name"), "sandbox.meta.name"),
                          (sandbox("default", "noimage", image=""), "sandbox.spec.image"),
                          (sandbox("default", "env", env={"1BAD": "x"}), "sandbox.spec.env"),
                          (sandbox("default", "gpus", gpu_count=1000), "gpu_count"),
                          (sandbox("default", "dc", driver_config={"process": "not json"}), "driver_config"),
                          (sandbox("default", "prov", providers=["nope"]), "provider"),
                          # The configured (process) driver's own rules, checked at admission:
                          (sandbox("default", "gpu1", gpu_count=1), "process driver refuses"),
                          (sandbox("default", "dck", driver_config={"process": '{"no_such_key": "x"}'}),
                           "process driver refuses")):
            c, m = code_of(lambda: e.sb("user", "Create", S.CreateSandboxRequest(sandbox=sbx)))
            self.assertIn(c, (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (what, m))
            self.assertIn(what, m)
        c, _ = code_of(lambda: e.sb("user", "Create", S.CreateSandboxRequest(sandbox=sandbox("default", "mine"))))
        self.assertEqual(c, grpc.StatusCode.ALREADY_EXISTS)
        # Users see their own; admins and auditors all; other namespaces nothing.
        names = lambda role, **kw: sorted(s.meta.name for s in e.sb(role, "List", S.ListSandboxesRequest(**kw)).sandboxes)
        self.assertEqual(names("user", namespace="default"), ["mine"])
        self.assertEqual(names("na", namespace="default"), ["mine", "theirs"])
        self.assertEqual(names("auditor"), ["mine", "theirs"])
        c, _ = code_of(lambda: e.sb("other", "List", S.ListSandboxesRequest(namespace="default")))
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED)
        c, _ = code_of(lambda: e.sb("user2", "Get", S.GetSandboxRequest(namespace="default", name="mine")))
        self.assertEqual(c, grpc.StatusCode.NOT_FOUND)
        # Share inside the namespace; the grantee reads but cannot delete; outsiders cannot be grantees.
        sh = e.sb("user", "Share", S.ShareSandboxRequest(namespace="default", name="mine",
                                                          grantee_principal_id=e.ids["user2"], access=S.SHARE_ACCESS_READ))
        self.assertEqual([x.grantee_principal_id for x in sh.shares], [e.ids["user2"]])
        self.assertEqual(e.sb("user2", "Get", S.GetSandboxRequest(namespace="default", name="mine")).meta.name, "mine")
        shared = e.sb("user2", "ListSharedWithMe", S.ListSharedWithMeRequest())
        self.assertEqual([s.meta.name for s in shared.sandboxes], ["mine"])
        # Each sandbox comes with the grantee's share of it, so the grantee sees what it allows.
        self.assertEqual([(x.sandbox_id, x.namespace, x.grantee_principal_id, x.access, x.created_by)
                          for x in shared.shares],
                         [(a.meta.id, "default", e.ids["user2"], S.SHARE_ACCESS_READ, e.ids["user"])])
        self.assertGreater(shared.shares[0].created_at_ms, 0)
        e.sb("user", "Share", S.ShareSandboxRequest(namespace="default", name="mine",
                                                    grantee_principal_id=e.ids["user2"], access=S.SHARE_ACCESS_EXEC))
        shared = e.sb("user2", "ListSharedWithMe", S.ListSharedWithMeRequest(), replica=1)
        self.assertEqual([x.access for x in shared.shares], [S.SHARE_ACCESS_EXEC])
        self.assertEqual(names("user2", namespace="default"), ["mine", "theirs"])
        c, m = code_of(lambda: e.sb("user2", "Delete", S.DeleteSandboxRequest(namespace="default", name="mine")))
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED)
        c, m = code_of(lambda: e.sb("user", "Share", S.ShareSandboxRequest(
            namespace="default", name="mine", grantee_principal_id=e.ids["other"], access=S.SHARE_ACCESS_READ)))
        self.assertEqual(c, grpc.StatusCode.FAILED_PRECONDITION)
        c, m = code_of(lambda: e.sb("user2", "Share", S.ShareSandboxRequest(
            namespace="default", name="mine", grantee_principal_id=e.ids["user2"], access=S.SHARE_ACCESS_EXEC)))
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED)
        e.sb("user", "Unshare", S.UnshareSandboxRequest(namespace="default", name="mine",
                                                        grantee_principal_id=e.ids["user2"]))
        c, _ = code_of(lambda: e.sb("user2", "Get", S.GetSandboxRequest(namespace="default", name="mine")))
        self.assertEqual(c, grpc.StatusCode.NOT_FOUND)
        # Delete with a stale version is ABORTED; then the owner deletes it.
        c, _ = code_of(lambda: e.sb("user", "Delete", S.DeleteSandboxRequest(
            namespace="default", name="mine", expected_resource_version=1)))
        self.assertEqual(c, grpc.StatusCode.ABORTED)
        d = e.sb("user", "Delete", S.DeleteSandboxRequest(namespace="default", name="mine"))
        self.assertEqual(d.status.phase, S.SandboxStatus.PHASE_DELETING)
        self.assertEqual(names("na", namespace="default"), ["theirs"])


    def test_shares_need_a_role_in_the_namespace(self):
        """A share gives access only while its grantee holds a role in the sandbox's namespace: once
        the grantee's binding is removed, ListSharedWithMe, Get, List and Watch stop showing the
        shared sandboxes (and their owner's environment) on every replica within the revocation
        bound (2 s, checked at 3 s), and List stops showing the grantee's own sandboxes there; the
        share stays and works again when the role comes back.
        ListSharedWithMe also says, per sandbox, whether the share is READ or EXEC."""
        e = Env(self)
        P = principals_pb2
        e.sb("user", "Create", S.CreateSandboxRequest(sandbox=sandbox("default", "envy", env={"TOKEN": "owner-only"})))
        e.sb("user", "Create", S.CreateSandboxRequest(sandbox=sandbox("default", "runny")))
        # The grantee's own sandbox there: ownership, like a share, counts only with a role in the
        # namespace (Get needs one), so List without a namespace must stop showing it too.
        e.sb("user2", "Create", S.CreateSandboxRequest(sandbox=sandbox("default", "mine2")))
        for name, access in (("envy", S.SHARE_ACCESS_READ), ("runny", S.SHARE_ACCESS_EXEC)):
            e.sb("user", "Share", S.ShareSandboxRequest(namespace="default", name=name,
                                                         grantee_principal_id=e.ids["user2"], access=access))
        for rep in range(3):
            got = e.sb("user2", "ListSharedWithMe", S.ListSharedWithMeRequest(), replica=rep)
            self.assertEqual([x.meta.name for x in got.sandboxes], ["envy", "runny"])
            self.assertEqual(dict(got.sandboxes[0].spec.env), {"TOKEN": "owner-only"})
            # The grantee sees what each share allows: shares[i] is the share of sandboxes[i].
            self.assertEqual([(x.sandbox_id, x.grantee_principal_id, x.access, x.namespace) for x in got.shares],
                             [(got.sandboxes[0].meta.id, e.ids["user2"], S.SHARE_ACCESS_READ, "default"),
                              (got.sandboxes[1].meta.id, e.ids["user2"], S.SHARE_ACCESS_EXEC, "default")])
            self.assertTrue(all(x.created_by == e.ids["user"] and x.created_at_ms > 0 for x in got.shares))
            e.sb("user2", "Get", S.GetSandboxRequest(namespace="default", name="envy"), replica=rep)
        got = e.sb("user2", "ListSharedWithMe", S.ListSharedWithMeRequest(page=meta_pb2.PageRequest(page_size=1)))
        self.assertEqual(([x.meta.name for x in got.sandboxes], len(got.shares)), (["envy"], 1))
        # A watch of the namespace by the grantee, on the third replica.
        watch = e.stub("gantry.v1.Sandboxes", "Watch", S.WatchSandboxesRequest, S.SandboxEvent, streaming=True,
                       replica=2)(S.WatchSandboxesRequest(namespace="default"),
                                  metadata=[("authorization", "Bearer " + e.keys["user2"])], timeout=60)
        self.assertEqual(next(watch).type, meta_pb2.EVENT_TYPE_ADDED)
        ended = []

        def drain():
            try:
                for _ in watch:
                    pass
                ended.append((grpc.StatusCode.OK, time.monotonic()))
            except grpc.RpcError as err:
                ended.append((err.code(), time.monotonic()))
        reader = threading.Thread(target=drain)
        reader.start()
        binding = [b for b in e.call("pa", principals_pb2, "Principals", "ListRoleBindings", P.ListRoleBindingsRequest(
            principal_id=e.ids["user2"])).bindings if b.namespace == "default"][0]
        e.call("pa", principals_pb2, "Principals", "DeleteRoleBinding", P.DeleteRoleBindingRequest(id=binding.meta.id))
        t0 = time.monotonic()
        pending = {0, 1, 2}
        while pending:
            for rep in sorted(pending):
                shared = e.sb("user2", "ListSharedWithMe", S.ListSharedWithMeRequest(), replica=rep)
                listed = e.sb("user2", "List", S.ListSandboxesRequest(), replica=rep)
                get = code_of(lambda: e.sb("user2", "Get", S.GetSandboxRequest(namespace="default", name="envy"),
                                           replica=rep))[0]
                if not shared.sandboxes and not shared.shares and not listed.sandboxes and get != grpc.StatusCode.OK:
                    self.assertIn(get, (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND))
                    pending.discard(rep)
            self.assertLess(time.monotonic() - t0, 3.0, "replicas %s still show shares of a namespace the grantee "
                            "left, 3 s after its binding was removed" % sorted(pending))
            time.sleep(0.05)
        bound = time.monotonic() - t0
        reader.join(timeout=10)
        self.assertEqual(len(ended), 1, "the watch still runs")
        self.assertEqual(ended[0][0], grpc.StatusCode.PERMISSION_DENIED)
        self.assertLess(ended[0][1] - t0, 3.0, "the watch ended %.1f s after the binding was removed" % (ended[0][1] - t0))
        # The share itself stays (its owner still sees and can remove it) and works again with a role.
        shares = e.sb("user", "Share", S.ShareSandboxRequest(namespace="default", name="envy",
                                                              grantee_principal_id=e.ids["na"],
                                                              access=S.SHARE_ACCESS_READ)).shares
        self.assertEqual(sorted(x.grantee_principal_id for x in shares), sorted([e.ids["user2"], e.ids["na"]]))
        c, m = code_of(lambda: e.sb("user", "Share", S.ShareSandboxRequest(  # new shares still need the role
            namespace="default", name="runny", grantee_principal_id=e.ids["user2"], access=S.SHARE_ACCESS_READ)))
        self.assertEqual(c, grpc.StatusCode.FAILED_PRECONDITION, m)
        e.call("pa", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
            binding=P.RoleBinding(principal_id=e.ids["user2"], role=P.ROLE_USER, namespace="default")))
        deadline = time.monotonic() + 5
        while not e.sb("user2", "ListSharedWithMe", S.ListSharedWithMeRequest()).sandboxes:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.1)
        print("shares: gone from ListSharedWithMe, Get, List and Watch on all 3 replicas %.2f s after the grantee's "
              "binding was removed; back with the role" % bound)


class Quota(g.GantrydTest):
    def test_hard_quota_under_concurrency(self):
        e = Env(self)
        e.call("pa", quotas_pb2, "Quotas", "Set", Q.SetQuotaRequest(quota=Q.Quota(
            meta=meta_pb2.ObjectMeta(namespace="team-b"), max_concurrent_sandboxes=10, mode=Q.QUOTA_MODE_HARD)))
        # One channel per replica per worker thread is plenty; calls spread over the 3 replicas.
        for rnd in range(ROUNDS):
            def create(i):
                try:
                    e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=sandbox("team-b", "q%d-%d" % (rnd, i))),
                         replica=i % 3)
                    return "ok"
                except grpc.RpcError as err:
                    if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        self.assertIn("at most 10 concurrent sandboxes", err.details())
                        return "quota"
                    return "%s: %s" % (err.code(), err.details())
            with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
                results = list(pool.map(create, range(64)))
            self.assertEqual(results.count("ok"), 10, results)
            self.assertEqual(results.count("quota"), 54, results)
            listed = e.sb("pa", "List", S.ListSandboxesRequest(namespace="team-b"))
            self.assertEqual(len(listed.sandboxes), 10)
            usage = e.call("pa", quotas_pb2, "Quotas", "Get", Q.GetQuotaRequest(namespace="team-b")).usage
            self.assertEqual(usage.sandboxes, 10)
            for s in listed.sandboxes:
                e.sb("pa", "Delete", S.DeleteSandboxRequest(namespace="team-b", name=s.meta.name))
            self.assertEqual(e.call("pa", quotas_pb2, "Quotas", "Get",
                                    Q.GetQuotaRequest(namespace="team-b")).usage.sandboxes, 0)
        # Soft quota: allowed, and the audit event carries the warning.
        e.call("pa", quotas_pb2, "Quotas", "Set", Q.SetQuotaRequest(quota=Q.Quota(
            meta=meta_pb2.ObjectMeta(namespace="team-b"), max_concurrent_sandboxes=1, mode=Q.QUOTA_MODE_SOFT)))
        t0 = int(time.time() * 1000) - 1000
        for i in range(2):
            e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=sandbox("team-b", "soft%d" % i)))
        ev = e.call("pa", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(
            start_ms=t0, api_operation="/gantry.v1.Sandboxes/Create", namespace="team-b",
            page=meta_pb2.PageRequest(page_size=1000))).events
        # By name: the repeats of the last round's refusals are written when their audit window
        # closes (docs/security.md, "Denials in the audit trail"), possibly after these two.
        ev = [x for x in ev if x.resource_name in ("soft0", "soft1")]
        self.assertEqual([(x.resource_name, x.status) for x in ev], [("soft0", "Success"), ("soft1", "Success")])
        self.assertNotIn("soft quota", ev[0].status_detail)
        self.assertIn("soft quota", ev[1].status_detail)
        print("quota: %d rounds of 64 concurrent creates over 3 replicas against a hard quota of 10: "
              "exactly 10 created each time" % ROUNDS)


    def test_gpu_and_lifetime_quotas(self):
        """GPU quotas hold under concurrency (N+k concurrent creates asking for GPUs: exactly those
        that fit succeed, whichever replicas receive them), soft GPU quotas warn, and lifetime
        quotas cap what a sandbox may ask for, give the default, and end sandboxes on time."""
        e = FakeEnv(self)
        ns = "team-b"

        def set_quota(**kw):
            e.call("pa", quotas_pb2, "Quotas", "Set", Q.SetQuotaRequest(quota=Q.Quota(
                meta=meta_pb2.ObjectMeta(namespace=ns), **kw)))

        def usage():
            return e.call("pa", quotas_pb2, "Quotas", "Get", Q.GetQuotaRequest(namespace=ns)).usage

        def create(name, replica=0, **spec):
            try:
                return e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=sandbox(ns, name, **spec)), replica=replica)
            except grpc.RpcError as err:
                return err

        def drain():
            """Delete every sandbox of the namespace; the reconciler frees their GPUs."""
            for x in e.sb("pa", "List", S.ListSandboxesRequest(namespace=ns)).sandboxes:
                e.sb("pa", "Delete", S.DeleteSandboxRequest(namespace=ns, name=x.meta.name))
            deadline = time.monotonic() + 60
            while True:
                u, left = usage(), e.sb("pa", "List", S.ListSandboxesRequest(namespace=ns)).sandboxes
                if (u.sandboxes, u.gpus, len(left)) == (0, 0, 0):
                    return
                self.assertLess(time.monotonic(), deadline, "quota not released: %s, %d left" % (u, len(left)))
                time.sleep(0.2)

        set_quota(max_gpus=8, mode=Q.QUOTA_MODE_HARD)
        n = 0
        for rnd in range(GPU_ROUNDS):
            for ask, fit in ((2, 4), (3, 2)):  # 8 GPUs: four of 2, or two of 3
                def one(i):
                    got = create("g%d-%d-%d" % (rnd, ask, i), replica=i % 3, gpu_count=ask)
                    if not isinstance(got, grpc.RpcError):
                        return "ok"
                    if got.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 8 GPUs in use" in got.details():
                        return "quota"
                    return "%s: %s" % (got.code(), got.details())
                with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
                    results = list(pool.map(one, range(fit + 12)))
                n += len(results)
                self.assertEqual((results.count("ok"), results.count("quota")), (fit, 12), results)
                self.assertEqual((usage().gpus, usage().sandboxes), (fit * ask, fit))
                listed = e.sb("pa", "List", S.ListSandboxesRequest(namespace=ns)).sandboxes
                self.assertEqual(sorted(x.spec.gpu_count for x in listed), [ask] * fit)
                if ask == 3:  # two GPUs are left: a create of 2 fits, then nothing does
                    self.assertFalse(isinstance(create("rest-%d" % rnd, gpu_count=2), grpc.RpcError))
                    err = create("over-%d" % rnd, replica=1, gpu_count=1)
                    self.assertIsInstance(err, grpc.RpcError, "a ninth GPU was admitted")
                    self.assertEqual(err.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
                    self.assertIn("at most 8 GPUs in use (8 in use, 1 asked)", err.details())
                drain()
        # A soft GPU quota lets the create through and records the warning in its audit event.
        set_quota(max_gpus=2, mode=Q.QUOTA_MODE_SOFT)
        t0 = int(time.time() * 1000) - 1000
        self.assertFalse(isinstance(create("soft-gpu", gpu_count=3), grpc.RpcError))
        self.assertEqual(usage().gpus, 3)
        ev = e.call("pa", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(
            start_ms=t0, api_operation="/gantry.v1.Sandboxes/Create", namespace=ns,
            page=meta_pb2.PageRequest(page_size=1000))).events
        ev = [x for x in ev if x.resource_name == "soft-gpu"]  # not the GPU refusals' late repeat rows
        self.assertEqual([x.status for x in ev], ["Success"])
        self.assertIn("soft quota of namespace \"team-b\": at most 2 GPUs in use (0 in use, 3 asked)",
                      ev[0].status_detail)
        drain()
        # Lifetime: the quota's maximum caps what a sandbox asks for and is its default.
        set_quota(max_lifetime_seconds=600, mode=Q.QUOTA_MODE_HARD)
        err = create("too-long", lifetime_seconds=601)
        self.assertIsInstance(err, grpc.RpcError, "a lifetime over the hard quota was admitted")
        self.assertEqual(err.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("lifetime at most 600 s (601 asked)", err.details())
        self.assertEqual(create("just-right", lifetime_seconds=600).spec.lifetime_seconds, 600)
        dflt = create("default-life")
        self.assertEqual(dflt.spec.lifetime_seconds, 600)
        self.assertAlmostEqual(dflt.status.expires_at_ms - dflt.meta.created_at_ms, 600000, delta=2000)
        set_quota(max_lifetime_seconds=600, mode=Q.QUOTA_MODE_SOFT)
        self.assertEqual(create("soft-long", lifetime_seconds=900).spec.lifetime_seconds, 900)
        drain()
        # ... and the reconciler ends a sandbox when the lifetime the quota gave it is over.
        set_quota(max_lifetime_seconds=2, mode=Q.QUOTA_MODE_HARD)
        short = create("short")
        self.assertEqual(short.spec.lifetime_seconds, 2)
        deadline = time.monotonic() + 30
        while e.sb("pa", "List", S.ListSandboxesRequest(namespace=ns)).sandboxes or usage().sandboxes:
            self.assertLess(time.monotonic(), deadline, "a sandbox outlived the lifetime its quota gave it")
            time.sleep(0.2)
        print("quota: %d rounds of concurrent GPU creates over 3 replicas against 8 GPUs (%d calls): exactly those "
              "that fit each time; soft GPU warning; lifetime capped, defaulted and enforced" % (GPU_ROUNDS, n))


class Idempotency(g.GantrydTest):
    def test_request_id_replays_on_any_replica(self):
        e = Env(self)
        req = S.CreateSandboxRequest(request_id="once-1", sandbox=sandbox("default", "idem"))
        first = e.sb("user", "Create", req, replica=0)
        again = e.sb("user", "Create", req, replica=2)
        self.assertEqual(first.SerializeToString(), again.SerializeToString())
        self.assertEqual(len(e.sb("na", "List", S.ListSandboxesRequest(namespace="default")).sandboxes), 1)
        # The same id by another principal is a different request; by the same principal for
        # another method it is refused.
        c, _ = code_of(lambda: e.sb("user2", "Create", req))
        self.assertEqual(c, grpc.StatusCode.ALREADY_EXISTS)
        c, m = code_of(lambda: e.sb("user", "Delete", S.DeleteSandboxRequest(request_id="once-1", namespace="default",
                                                                            name="idem")))
        self.assertEqual(c, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("already used", m)
        # After the leader dies, a retry through another replica still replays.
        victim = e.c.leader()
        victim.kill()
        e.c.client.replicas = e.c.alive()
        alive = [i for i, r in enumerate(e.c.replicas) if r.proc.poll() is None]
        deadline = time.monotonic() + 30
        while True:
            try:
                again = e.sb("user", "Create", req, replica=alive[0])
                break
            except grpc.RpcError as err:
                self.assertEqual(err.code(), grpc.StatusCode.UNAVAILABLE)
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.1)
        self.assertEqual(first.SerializeToString(), again.SerializeToString())


class Audit(g.GantrydTest):
    def test_every_acknowledged_mutation_is_audited_across_a_leader_kill(self):
        e = Env(self)
        acked = []
        stop = threading.Event()

        def load(tag):
            i = 0
            while not stop.is_set():
                i += 1
                rid = "%s-%d" % (tag, i)
                name = "a-%s-%d" % (tag, i)
                for _ in range(100):
                    try:
                        e.sb("pa", "Create", S.CreateSandboxRequest(request_id=rid, sandbox=sandbox("default", name)),
                             replica=[r for r, x in enumerate(e.c.replicas) if x.proc.poll() is None][i % 2])
                        acked.append(rid)
                        break
                    except grpc.RpcError as err:
                        if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                            raise
                        time.sleep(0.05)
        threads = [threading.Thread(target=load, args=(t,)) for t in ("x", "y")]
        for t in threads:
            t.start()
        time.sleep(1.0)
        e.c.leader().kill()
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join()
        # Export everything through a surviving replica and check the acknowledged writes.
        alive = [i for i, r in enumerate(e.c.replicas) if r.proc.poll() is None][0]
        fn = e.stub("gantry.v1.Audit", "Export", audit_pb2.ExportAuditRequest, audit_pb2.ExportAuditChunk, streaming=True,
                    replica=alive)
        lines = []
        for chunk in fn(audit_pb2.ExportAuditRequest(), metadata=[("authorization", "Bearer " + e.keys["pa"])],
                        timeout=60):
            lines += chunk.jsonl.decode().splitlines()
        events = [json.loads(x) for x in lines]
        for ev in events:
            for field in ("class_uid", "time", "actor", "api", "resources", "status"):
                self.assertIn(field, ev)
            self.assertIn("operation", ev["api"])
            self.assertIn("request", ev["api"])
        created = {ev["api"]["request"]["uid"] for ev in events
                   if ev["api"]["operation"] == "/gantry.v1.Sandboxes/Create" and ev["status"] == "Success"}
        missing = [r for r in acked if r not in created]
        self.assertEqual(missing, [], "acknowledged creates without an audit event")
        self.assertGreater(len(acked), 10)
        denied = [ev for ev in events if ev["status"] == "Failure" and ev["class_uid"] == 6003]
        # A denied call is audited too.
        code_of(lambda: e.sb("other", "List", S.ListSandboxesRequest(namespace="default"), replica=alive))
        deadline = time.monotonic() + 10  # refusals reach the trail through the audit sink (about 1 s)
        while True:
            q = e.call("auditor", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(
                actor_principal_id=e.ids["other"], page=meta_pb2.PageRequest(page_size=100)), replica=alive)
            found = any(x.status == "Failure" and "needs a role" in x.status_detail for x in q.events)
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertTrue(found)
        failed = e.call("auditor", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(
            status="Failure", page=meta_pb2.PageRequest(page_size=500)), replica=alive)
        self.assertTrue(failed.events)
        self.assertEqual({x.status for x in failed.events}, {"Failure"})
        self.assertEqual(code_of(lambda: e.call("auditor", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(
            status="failed"), replica=alive))[0], grpc.StatusCode.INVALID_ARGUMENT)
        print("audit: %d acknowledged creates across a leader kill, all with their audit event; %d events exported, "
              "%d denials before" % (len(acked), len(events), len(denied)))


def page_fields(mod):
    """(service, method, request class) of every RPC of @mod whose request pages (a `page` field)."""
    for svc in mod.DESCRIPTOR.services_by_name.values():
        for m in svc.methods:
            if "page" in m.input_type.fields_by_name:
                yield svc.name, m.name, ti.msg_class(m.input_type)


class Paging(g.GantrydTest):
    def test_page_sizes_are_clamped_and_tokens_checked(self):
        e = Env(self, replicas=1)
        r1 = e.c.replicas[0]
        # 600 audit events at once (more than a page may hold), besides those of the setup.
        r1.store("exec", "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600) "
                 "INSERT INTO audit (time_ms, class_uid, activity_id, actor_id, actor_name, actor_kind, operation, "
                 "namespace, resource_type, resource_id, resource_name, status, status_code, message, source, "
                 "request_id, replica_id, gateway_id, revision) SELECT 1000 + i, 6003, 1, 'x', 'x', 'user', 'bulk', "
                 "'', '', '', '', 'Success', 0, '', '', '', 1, 'gantry', 0 FROM n")
        total = int(r1.store("query", "SELECT count(*) FROM audit").split()[-1])
        self.assertGreater(total, 600)
        query = lambda **kw: e.call("auditor", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(**kw))
        # A page size above the documented maximum (500) is clamped: the client gets a token and pages.
        first = query(page=meta_pb2.PageRequest(page_size=100000))
        self.assertEqual(len(first.events), 500)
        self.assertTrue(first.next_page_token)
        seen, token, pages = len(first.events), first.next_page_token, 1
        while token:
            page = query(page=meta_pb2.PageRequest(page_size=100000, page_token=token))
            self.assertLessEqual(len(page.events), 500)
            seen, token, pages = seen + len(page.events), page.next_page_token, pages + 1
        self.assertGreaterEqual(seen, total)  # the setup's refusals may add a few meanwhile
        self.assertEqual(query(page=meta_pb2.PageRequest(page_size=7)).next_page_token != "", True)
        # Malformed tokens: refused before any query, without echoing them.
        for bad in ("garbage", "-1", "0", "1e9", "99999999999999999999", "A" * 100 * 1024):
            c, m = code_of(lambda: query(page=meta_pb2.PageRequest(page_token=bad)))
            self.assertEqual(c, grpc.StatusCode.INVALID_ARGUMENT, (bad[:20], m))
            self.assertIn("page.page_token", m)
            self.assertNotIn(bad[:50], m)
        # Quotas.List pages like every list.
        for ns in ("default", "team-b"):
            e.call("pa", quotas_pb2, "Quotas", "Set", Q.SetQuotaRequest(quota=Q.Quota(
                meta=meta_pb2.ObjectMeta(namespace=ns), max_concurrent_sandboxes=5, mode=Q.QUOTA_MODE_HARD)))
        q1 = e.call("pa", quotas_pb2, "Quotas", "List", Q.ListQuotasRequest(page=meta_pb2.PageRequest(page_size=1)))
        self.assertEqual([x.usage.namespace for x in q1.quotas], ["default"])
        q2 = e.call("pa", quotas_pb2, "Quotas", "List", Q.ListQuotasRequest(page=meta_pb2.PageRequest(
            page_size=1, page_token=q1.next_page_token)))
        self.assertEqual(([x.usage.namespace for x in q2.quotas], q2.next_page_token), (["team-b"], ""))
        # Every call that pages (found from the protos, so a new one is covered): a garbage token
        # is INVALID_ARGUMENT, and a walk with pages of one item never has its own tokens refused.
        for i in range(3):
            e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=sandbox("default", "pg%d" % i)))
        from gantry.v1 import api_keys_pb2, cluster_pb2, providers_pb2, usage_pb2, warmpools_pb2
        checked = []
        for mod in (cluster_pb2, namespaces_pb2, principals_pb2, api_keys_pb2, sandboxes_pb2, providers_pb2, quotas_pb2,
                    usage_pb2, audit_pb2, warmpools_pb2):
            for svc, method, cls in page_fields(mod):
                def req(**page):
                    r = cls(page=meta_pb2.PageRequest(**page))
                    if "namespace" in cls.DESCRIPTOR.fields_by_name and svc in ("Providers", "WarmPools"):
                        r.namespace = "default"
                    return r
                c, m = code_of(lambda: e.call("pa", mod, svc, method, req(page_token="not a token!")))
                self.assertEqual(c, grpc.StatusCode.INVALID_ARGUMENT, (svc, method, m))
                if svc == "Usage":  # answers in one reply: no token issued, none taken
                    checked.append("%s/%s" % (svc, method))
                    continue
                token = ""
                for _ in range(5):  # a few pages: each token this list issued is taken back
                    token = e.call("pa", mod, svc, method, req(page_size=1, page_token=token)).next_page_token
                    if not token:
                        break
                checked.append("%s/%s" % (svc, method))
        self.assertIn("Quotas/List", checked)
        print("paging: Audit.Query clamped to 500 per page over %d events (%d pages); malformed tokens refused "
              "by %d paging calls: %s" % (total, pages, len(checked), ", ".join(checked)))


class Watch(g.GantrydTest):
    def test_watch_from_a_follower_across_a_leader_kill(self):
        e = Env(self)
        leader = e.c.leader()
        follower = [i for i, r in enumerate(e.c.replicas) if r is not leader][0]
        start = e.sb("pa", "List", S.ListSandboxesRequest(namespace="default")).revision
        fn = e.stub("gantry.v1.Sandboxes", "Watch", S.WatchSandboxesRequest, S.SandboxEvent, streaming=True,
                    replica=follower)
        seen = []
        stream = fn(S.WatchSandboxesRequest(namespace="default", since_revision=start),
                    metadata=[("authorization", "Bearer " + e.keys["pa"])], timeout=120)

        def reader():
            try:
                for ev in stream:
                    if ev.type != meta_pb2.EVENT_TYPE_BOOKMARK:
                        seen.append((ev.revision, ev.type, ev.sandbox.meta.name or ev.sandbox.meta.id))
            except grpc.RpcError:
                pass
        t = threading.Thread(target=reader)
        t.start()
        made = []
        for i in range(10):
            made.append(e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=sandbox("default", "w%d" % i)),
                             replica=follower))
        leader.kill()
        e.c.client.replicas = e.c.alive()
        for i in range(10, 20):
            for _ in range(300):
                try:
                    made.append(e.sb("pa", "Create", S.CreateSandboxRequest(
                        request_id="w%d" % i, sandbox=sandbox("default", "w%d" % i)), replica=follower))
                    break
                except grpc.RpcError as err:
                    self.assertEqual(err.code(), grpc.StatusCode.UNAVAILABLE)
                    time.sleep(0.1)
        added = lambda: [x for x in seen if x[1] == meta_pb2.EVENT_TYPE_ADDED]
        deadline = time.monotonic() + 20
        while len(added()) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        stream.cancel()
        t.join()
        # Every change once, in revision order: the creates and the reconciler's status changes.
        revisions = [r for r, _, _ in seen]
        self.assertEqual(revisions, sorted(revisions), "events out of order")
        self.assertEqual(len(revisions), len(set(revisions)), "an event delivered twice")
        self.assertEqual([n for _, _, n in added()], ["w%d" % i for i in range(20)])
        self.assertEqual([r for r, _, _ in added()], [m.meta.resource_version for m in made])
        print("watch from a follower: 20 creates, a leader SIGKILL between them, each seen once and in order")


class WatchFanout(g.GantrydTest):
    """Watches are served from each replica's change feed: no thread and no store connection per
    watcher, and a client that does not read is cut instead of growing the replica's memory."""

    def open_watches(self, c, r, n, per_channel=40, options=()):
        """@n watches of namespace default from the current state on replica @r, each read by its own
        thread into a list; returns (lists, streams, channels, threads)."""
        creds = grpc.ssl_channel_credentials(root_certificates=c.client.ca)
        chans, streams, seen, threads = [], [], [], []
        md = [("authorization", "Bearer " + c.key)]
        for i in range(n):
            if i % per_channel == 0:
                chans.append(grpc.secure_channel(r.api, creds, options=[
                    ("grpc.ssl_target_name_override", "localhost")] + list(options)))
            fn = chans[-1].unary_stream("/gantry.v1.Sandboxes/Watch",
                                        request_serializer=S.WatchSandboxesRequest.SerializeToString,
                                        response_deserializer=S.SandboxEvent.FromString)
            streams.append(fn(S.WatchSandboxesRequest(namespace="default"), metadata=md, timeout=300))
            seen.append([])
        return seen, streams, chans, threads

    def read_all(self, seen, streams, threads, first_bookmark):
        for lst, st in zip(seen, streams):
            def reader(lst=lst, st=st):
                try:
                    for ev in st:
                        if ev.type == meta_pb2.EVENT_TYPE_BOOKMARK:
                            first_bookmark.release()
                        else:
                            lst.append((ev.revision, ev.type, ev.sandbox.meta.name))
                except grpc.RpcError:
                    pass
            t = threading.Thread(target=reader, daemon=True)
            t.start()
            threads.append(t)

    def wait_watches(self, r, n):
        deadline = time.monotonic() + 30
        while r.metric("gantry_sandbox_watches") != n and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(r.metric("gantry_sandbox_watches"), n)

    def threads_of(self, r):
        with open("/proc/%d/status" % r.proc.pid) as f:
            return int([x for x in f if x.startswith("Threads:")][0].split()[1])

    def test_many_watchers_one_poller_and_a_slow_one_is_cut(self):
        c = g.Cluster("fan-" + self._testMethodName, run_flags=["--driver", "none"]).init()
        self.clusters.append(c)
        c.join(2)
        c.wait_roles(3, 0)
        c.wait_ready()
        leader = c.leader()
        f = [r for r in c.replicas if r is not leader][0]
        md = [("authorization", "Bearer " + c.key)]
        create = c.client.channel(leader).unary_unary(
            "/gantry.v1.Sandboxes/Create", request_serializer=S.CreateSandboxRequest.SerializeToString,
            response_deserializer=S.Sandbox.FromString)

        def feed_polls(seconds):
            a = f.metric("gantry_feed_polls_total")
            time.sleep(seconds)
            return f.metric("gantry_feed_polls_total") - a

        # 5 watchers, then 300 on the follower: its feed polls the leader as often either way,
        # and the watchers cost it no thread each.
        sem = threading.Semaphore(0)
        few = self.open_watches(c, f, 5)
        self.read_all(few[0], few[1], few[3], sem)
        for _ in range(5):
            self.assertTrue(sem.acquire(timeout=30), "a watch never caught up")
        polls_few = feed_polls(2.0)
        threads_few = self.threads_of(f)
        for st in few[1]:
            st.cancel()
        seen, streams, chans, threads = self.open_watches(c, f, 300)
        self.read_all(seen, streams, threads, sem)
        for _ in range(300):
            self.assertTrue(sem.acquire(timeout=60), "a watch never caught up")
        self.wait_watches(f, 300)
        polls_many = feed_polls(2.0)
        threads_many = self.threads_of(f)
        self.assertLessEqual(polls_many, polls_few * 1.5 + 3, "the feed polls more with more watchers")
        self.assertLess(threads_many - threads_few, 30, "threads grew with the watchers")
        # A burst of 200 creates through the leader: every watcher gets each exactly once, in order.
        made = [create(S.CreateSandboxRequest(sandbox=sandbox("default", "fan%d" % i)), metadata=md, timeout=15)
                for i in range(200)]
        want = [(m.meta.resource_version, meta_pb2.EVENT_TYPE_ADDED, m.meta.name) for m in made]
        deadline = time.monotonic() + 60
        while min(len(x) for x in seen) < 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        for st in streams:
            st.cancel()
        for t in threads:
            t.join(10)
        for ch in chans + few[2]:
            ch.close()
        bad = [i for i, x in enumerate(seen) if x != want]
        self.assertEqual(bad, [], "watchers that did not get the burst exactly once in order (first: %s)" %
                         (seen[bad[0]][:5] if bad else None))
        print("fan-out: 300 watchers on a follower each got all 200 creates once and in order; feed polls in 2 s: "
              "%d with 5 watchers, %d with 300; threads %d -> %d" % (polls_few, polls_many, threads_few, threads_many))

        # A watcher that never reads (a small fixed HTTP/2 window) is cut once more than 1 MiB waits
        # for it; a reading watcher beside it gets everything.
        slow = self.open_watches(c, f, 1, options=[("grpc.http2.bdp_probe", 0)])
        fast = self.open_watches(c, f, 1)
        self.read_all(fast[0], fast[1], fast[3], sem)
        self.wait_watches(f, 2)
        big = {"PAD%d" % k: "x" * 8000 for k in range(4)}
        made = [create(S.CreateSandboxRequest(sandbox=sandbox("default", "big%d" % i, env=big)), metadata=md,
                       timeout=15) for i in range(60)]
        deadline = time.monotonic() + 60
        bigs = lambda: [n for _, _, n in fast[0][0] if n.startswith("big")]
        while len(bigs()) < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(bigs(), ["big%d" % i for i in range(60)])
        got = []
        with self.assertRaises(grpc.RpcError) as cm:
            for ev in slow[1][0]:
                got.append(ev)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED, cm.exception.details())
        self.assertIn("the watch fell behind at revision", cm.exception.details())
        resume = int(cm.exception.details().split("watch again from revision ")[1].split()[0])
        revs = [ev.revision for ev in got if ev.type != meta_pb2.EVENT_TYPE_BOOKMARK]
        self.assertLess(len([r for r in revs if r > made[0].meta.resource_version - 1]), 60, "not cut")
        self.assertLessEqual(max(revs), resume, "the resume revision is before an event delivered")
        # Resuming from there delivers the rest, each once.
        again = c.client.channel(f).unary_stream(
            "/gantry.v1.Sandboxes/Watch", request_serializer=S.WatchSandboxesRequest.SerializeToString,
            response_deserializer=S.SandboxEvent.FromString)(
            S.WatchSandboxesRequest(namespace="default", since_revision=resume), metadata=md, timeout=30)
        rest = []
        for ev in again:
            if ev.type == meta_pb2.EVENT_TYPE_BOOKMARK:
                break
            rest.append(ev.sandbox.meta.name)
        again.cancel()
        delivered = [ev.sandbox.meta.name for ev in got if ev.type != meta_pb2.EVENT_TYPE_BOOKMARK and
                     ev.sandbox.meta.name.startswith("big")]
        self.assertEqual(delivered + rest, ["big%d" % i for i in range(60)])
        fast[1][0].cancel()
        for ch in slow[2] + fast[2]:
            ch.close()
        print("slow watcher: cut with RESOURCE_EXHAUSTED after %d of 60 large events, resumed from revision %d "
              "with the other %d; the reading watcher got all 60" % (len(delivered), resume, len(rest)))

        # A new watch whose first list is larger than the bound (the 60 large sandboxes, about 2 MB),
        # opened by a client that does not read for a second: the list is allowed on top of the
        # bound, so the watch is not cut; it gets every sandbox and stays open.
        late = self.open_watches(c, f, 1, options=[("grpc.http2.bdp_probe", 0)])
        time.sleep(1.0)
        names = []
        for ev in late[1][0]:
            if ev.type == meta_pb2.EVENT_TYPE_BOOKMARK:
                break
            names.append(ev.sandbox.meta.name)
        self.assertEqual(sorted(n for n in names if n.startswith("big")), sorted("big%d" % i for i in range(60)))
        create(S.CreateSandboxRequest(sandbox=sandbox("default", "after-late")), metadata=md, timeout=15)
        for ev in late[1][0]:  # still open: the next change arrives (a cut watch would raise here)
            if ev.type != meta_pb2.EVENT_TYPE_BOOKMARK and ev.sandbox.meta.name == "after-late":
                break
        late[1][0].cancel()
        for ch in late[2]:
            ch.close()
        print("a first list of %d sandboxes (60 of them about 32 KB) to a client that waited 1 s: delivered whole, "
              "not cut" % len(names))

    def test_get_through_another_replica_sees_the_write(self):
        """Get is answered from the replica's model after a read index: a sandbox created (or
        deleted) through one replica is at once seen (or gone) by a Get through another, whole."""
        c = g.Cluster("ryw-" + self._testMethodName, run_flags=["--driver", "none"]).init()
        self.clusters.append(c)
        c.join(2)
        c.wait_roles(3, 0)
        c.wait_ready()
        md = [("authorization", "Bearer " + c.key)]

        def call(r, method, req, resp):
            return c.client.channel(r).unary_unary("/gantry.v1.Sandboxes/" + method,
                                                   request_serializer=type(req).SerializeToString,
                                                   response_deserializer=resp.FromString)(req, metadata=md, timeout=15)
        gets = lambda: sum(r.metric("gantry_sandbox_model_gets_total") for r in c.replicas)
        before = gets()
        n = 60
        for i in range(n):
            a, b = c.replicas[i % 3], c.replicas[(i + 1) % 3]
            made = call(a, "Create", S.CreateSandboxRequest(sandbox=S.Sandbox(
                meta=meta_pb2.ObjectMeta(namespace="default", name="ryw%d" % i, labels={"i": str(i)}),
                spec=S.SandboxSpec(image="busybox:1.36", env={"K": "v%d" % i}))), S.Sandbox)
            got = call(b, "Get", S.GetSandboxRequest(namespace="default", name="ryw%d" % i), S.Sandbox)
            self.assertEqual(got, made, "replica %d did not see the create through replica %d" % (b.rid, a.rid))
            call(a, "Delete", S.DeleteSandboxRequest(namespace="default", name="ryw%d" % i), S.Sandbox)
            with self.assertRaises(grpc.RpcError) as cm:
                call(b, "Get", S.GetSandboxRequest(namespace="default", name="ryw%d" % i), S.Sandbox)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertGreaterEqual(gets() - before, 2 * n, "Gets were not answered from the model")
        # A watch from a revision the cluster has not reached is refused with a clear status.
        with self.assertRaises(grpc.RpcError) as cm:
            next(c.client.channel(c.replicas[1]).unary_stream(
                "/gantry.v1.Sandboxes/Watch", request_serializer=S.WatchSandboxesRequest.SerializeToString,
                response_deserializer=S.SandboxEvent.FromString)(
                S.WatchSandboxesRequest(namespace="default", since_revision=10 ** 12), metadata=md, timeout=15))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.OUT_OF_RANGE)
        self.assertIn("is in the future (the cluster is at", cm.exception.details())
        print("read-your-writes: %d creates and deletes through one replica, each seen at once by a Get "
              "through another (from its model)" % n)

    def test_a_share_reaches_a_running_watch(self):
        """A sandbox shared with a principal while that principal's watch runs arrives on the watch
        at the share's own event (MODIFIED, the row unchanged), on every replica: the hub patches
        the grantee's share set before it fans the event out, instead of waiting for the sandbox's
        next change (which, for a settled sandbox, may never come)."""
        e = FakeEnv(self)
        made = e.sb("user", "Create", S.CreateSandboxRequest(sandbox=sandbox("default", "later")))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = e.sb("user", "Get", S.GetSandboxRequest(namespace="default", name="later"))
            if got.meta.resource_version != made.meta.resource_version and got.status.phase == \
                    S.SandboxStatus.PHASE_READY:
                break
            time.sleep(0.1)
        self.assertEqual(got.status.phase, S.SandboxStatus.PHASE_READY, "the reconciler never ran it")
        streams = []
        for rep in range(3):
            st = e.stub("gantry.v1.Sandboxes", "Watch", S.WatchSandboxesRequest, S.SandboxEvent, streaming=True,
                        replica=rep)(S.WatchSandboxesRequest(namespace="default"),
                                     metadata=[("authorization", "Bearer " + e.keys["user2"])], timeout=20)
            ev = next(st)
            while ev.type != meta_pb2.EVENT_TYPE_BOOKMARK:
                self.assertNotEqual(ev.sandbox.meta.name, "later", "not shared yet, but listed")
                ev = next(st)
            streams.append(st)
        e.sb("user", "Share", S.ShareSandboxRequest(namespace="default", name="later",
                                                     grantee_principal_id=e.ids["user2"], access=S.SHARE_ACCESS_READ))
        for rep, st in enumerate(streams):
            for ev in st:  # a watch that never gets it ends with DEADLINE_EXCEEDED: the test fails
                if ev.type != meta_pb2.EVENT_TYPE_BOOKMARK and ev.sandbox.meta.name == "later":
                    break
            st.cancel()
            self.assertEqual(ev.type, meta_pb2.EVENT_TYPE_MODIFIED, "replica %d" % rep)
            # The row did not change: this is the share's event, not a later change of the sandbox.
            self.assertEqual(ev.sandbox.meta.resource_version, got.meta.resource_version, "replica %d" % rep)
        print("share: reached the grantee's running watch on all 3 replicas at the share's event")

    def test_first_list_after_a_status_change_keeps_labels(self):
        """The reconciler's status events carry no labels or creation metadata; the replica's model
        keeps them from the sandbox's earlier state, so a new watch's first list (from memory) still
        shows them and a label selector still matches, as a list from the store would."""
        e = FakeEnv(self)
        made = e.sb("pa", "Create", S.CreateSandboxRequest(sandbox=S.Sandbox(
            meta=meta_pb2.ObjectMeta(namespace="default", name="lab", labels={"app": "x"}),
            spec=S.SandboxSpec(image="busybox:1.36"))))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = e.sb("pa", "Get", S.GetSandboxRequest(namespace="default", name="lab"))
            if got.meta.resource_version != made.meta.resource_version and got.status.phase == \
                    S.SandboxStatus.PHASE_READY:
                break
            time.sleep(0.1)
        self.assertEqual(got.status.phase, S.SandboxStatus.PHASE_READY, "the reconciler never ran it")
        for rep in range(3):
            stream = e.stub("gantry.v1.Sandboxes", "Watch", S.WatchSandboxesRequest, S.SandboxEvent,
                            streaming=True, replica=rep)(
                S.WatchSandboxesRequest(namespace="default", selector=meta_pb2.LabelSelector(match_labels={"app": "x"})),
                metadata=[("authorization", "Bearer " + e.keys["pa"])], timeout=30)
            ev = next(stream)
            stream.cancel()
            self.assertEqual(ev.type, meta_pb2.EVENT_TYPE_ADDED, "replica %d: the selector missed it" % rep)
            self.assertEqual(dict(ev.sandbox.meta.labels), {"app": "x"})
            self.assertEqual(ev.sandbox.meta.created_at_ms, got.meta.created_at_ms)
            self.assertEqual(ev.sandbox.meta.created_by, got.meta.created_by)
            self.assertGreaterEqual(ev.sandbox.meta.resource_version, got.meta.resource_version)
            self.assertEqual(ev.sandbox.status.phase, S.SandboxStatus.PHASE_READY)


class Retention(g.GantrydTest):
    def test_old_audit_events_are_deleted(self):
        c = g.Cluster("ret-" + self._testMethodName,
                      run_flags=["--audit-retention-hours", "1", "--retention-interval-s", "1"]).init()
        self.clusters.append(c)
        c.wait_ready()
        r1 = c.replicas[0]
        old_ms = int(time.time() * 1000) - 2 * 3600 * 1000
        r1.store("exec", "INSERT INTO audit (time_ms, class_uid, activity_id, actor_id, actor_name, actor_kind, "
                 "operation, namespace, resource_type, resource_id, resource_name, status, status_code, message, "
                 "source, request_id, replica_id, gateway_id, revision) VALUES (%d, 6003, 1, 'x', 'x', 'user', 'old', "
                 "'', '', '', '', 'Success', 0, '', '', '', 1, 'gantry', 0)" % old_ms)
        c.token()  # a fresh event that must stay
        deadline = time.monotonic() + 30
        while True:
            rows = g.query(r1, "SELECT operation FROM audit ORDER BY seq")
            if "old" not in rows or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertNotIn("old", rows)
        self.assertIn("/gantry.v1.Cluster/CreateJoinToken", rows)

    def test_old_change_events_end_stale_watches(self):
        c = g.Cluster("evret-" + self._testMethodName,
                      run_flags=["--event-retention-s", "2", "--retention-interval-s", "1"]).init()
        self.clusters.append(c)
        c.wait_ready()
        r1 = c.replicas[0]
        for _ in range(3):
            c.token()  # writes: change events
        head = int(r1.store("query", "SELECT revision FROM cluster_revision").split()[-1])
        deadline = time.monotonic() + 30
        while True:
            out = r1.store("query", "SELECT value FROM cluster_meta WHERE key = 'events_compacted_revision'").split()
            if (len(out) > 1 and int(out[-1]) >= head) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertGreaterEqual(int(out[-1]), head, "change events were not pruned")
        self.assertEqual(r1.store("query", "SELECT count(*) FROM events WHERE revision <= %d" % head).split()[-1], "0")
        md = [("authorization", "Bearer " + c.key)]
        watch = c.client.channel(c.replicas[0]).unary_stream(
            "/gantry.v1.Sandboxes/Watch", request_serializer=S.WatchSandboxesRequest.SerializeToString,
            response_deserializer=S.SandboxEvent.FromString)
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in watch(S.WatchSandboxesRequest(namespace="default", since_revision=1), metadata=md, timeout=20):
                pass
        self.assertEqual(cm.exception.code(), grpc.StatusCode.OUT_OF_RANGE)
        self.assertIn("list again", cm.exception.details())
        # From the current state (since_revision 0), or from the head, a watch works.
        stream = watch(S.WatchSandboxesRequest(namespace="default"), metadata=md, timeout=20)
        self.assertEqual(next(stream).type, meta_pb2.EVENT_TYPE_BOOKMARK)
        stream.cancel()


class ReadYourWritesUnderKills(g.GantrydTest):
    def test_reads_through_another_replica_see_acknowledged_writes_across_leader_kills(self):
        """Issue 17: a client creates a sandbox through one replica and, once it is acknowledged, Gets
        and Lists it through another (from that replica's model after a read index, or from the store
        when the model cannot answer), then deletes it and checks it is gone the same way, while the
        dqlite leader is SIGKILLed and restarted three times. A read may fail (UNAVAILABLE while
        there is no leader) and is retried through another replica; a read that succeeds must
        show every acknowledged write."""
        c = g.Cluster("rywk-" + self._testMethodName, run_flags=["--driver", "none"]).init()
        self.clusters.append(c)
        c.join(2)
        c.wait_roles(3, 0)
        c.wait_ready()
        md = [("authorization", "Bearer " + c.key)]
        stop = threading.Event()
        stats = {"acked": 0, "reads": 0, "read_errors": 0, "write_errors": 0, "after_kill": 0}
        violations = []
        kill_at = [0.0]

        def call(r, method, req, resp, timeout=10):
            return c.client.channel(r).unary_unary("/gantry.v1.Sandboxes/" + method,
                                                   request_serializer=type(req).SerializeToString,
                                                   response_deserializer=resp.FromString)(req, metadata=md,
                                                                                          timeout=timeout)

        def read_until(writer, check, what):
            """Run check(r) on replicas other than writer until one answers (30 s)."""
            end = time.monotonic() + 30
            while time.monotonic() < end and not stop.is_set():
                others = [r for r in c.alive() if r is not writer] or c.alive()
                r = others[stats["reads"] % len(others)]
                try:
                    ok = check(r)
                except grpc.RpcError as e:
                    if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        violations.append("%s through replica %d: %s %s" % (what, r.rid, e.code(), e.details()))
                        return
                    stats["read_errors"] += 1
                    time.sleep(0.05)
                    continue
                stats["reads"] += 1
                if kill_at[0] and time.monotonic() - kill_at[0] < 5:
                    stats["after_kill"] += 1
                if not ok:
                    violations.append("%s: replica %d did not see it" % (what, r.rid))
                return

        def names_listed(r, label):
            names, token = [], ""
            while True:
                resp = call(r, "List", S.ListSandboxesRequest(
                    namespace="default", selector=meta_pb2.LabelSelector(match_labels={"w": label}),
                    page=meta_pb2.PageRequest(page_token=token)), S.ListSandboxesResponse)
                names += [x.meta.name for x in resp.sandboxes]
                token = resp.next_page_token
                if not token:
                    return names

        def get_code(r, name):
            try:
                call(r, "Get", S.GetSandboxRequest(namespace="default", name=name), S.Sandbox)
                return grpc.StatusCode.OK
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    return e.code()
                raise

        def client():
            i = 0
            while not stop.is_set():
                i += 1
                name, label = "k%d" % i, "v%d" % i
                alive = c.alive()
                w = alive[i % len(alive)]
                try:
                    call(w, "Create", S.CreateSandboxRequest(request_id="rywk-%d" % i, sandbox=S.Sandbox(
                        meta=meta_pb2.ObjectMeta(namespace="default", name=name, labels={"w": label}),
                        spec=S.SandboxSpec(image="busybox:1.36"))), S.Sandbox)
                except grpc.RpcError:
                    stats["write_errors"] += 1  # not acknowledged: nothing to check
                    time.sleep(0.05)
                    continue
                stats["acked"] += 1
                read_until(w, lambda r: get_code(r, name) == grpc.StatusCode.OK, "Get of created " + name)
                read_until(w, lambda r: names_listed(r, label) == [name], "List of created " + name)
                try:
                    call(w, "Delete", S.DeleteSandboxRequest(namespace="default", name=name), S.Sandbox)
                except grpc.RpcError:
                    stats["write_errors"] += 1
                    continue
                read_until(w, lambda r: get_code(r, name) == grpc.StatusCode.NOT_FOUND, "Get of deleted " + name)
                read_until(w, lambda r: names_listed(r, label) == [], "List of deleted " + name)

        def model_reads(r):  # Gets and Lists the replica answered from its model since it started
            return sum(r.metric(m) or 0 for m in ("gantry_sandbox_model_gets_total", "gantry_sandbox_model_lists_total"))
        from_model = 0
        t = threading.Thread(target=client)
        t.start()
        try:
            for _ in range(3):
                time.sleep(1.5)
                victim = c.leader()
                from_model += model_reads(victim)
                kill_at[0] = time.monotonic()
                victim.kill()
                time.sleep(3)
                victim.start()
                c.wait_ready()
                c.leader()
            time.sleep(1)
        finally:
            stop.set()
            t.join(60)
        from_model += sum(model_reads(r) for r in c.alive())
        self.assertEqual(violations, [])
        self.assertGreater(stats["acked"], 20, stats)
        self.assertGreater(from_model, stats["reads"] // 4, "the reads were not answered from the models")
        self.assertGreater(stats["after_kill"], 0, "no read completed in the 5 s after a kill: %s" % stats)
        print("read-your-writes across 3 leader kills: %(acked)d acknowledged creates, %(reads)d reads through "
              "another replica (%(after_kill)d within 5 s of a kill), %(read_errors)d reads retried, "
              "%(write_errors)d writes not acknowledged" % stats
              + "; at least %d of the reads were answered from a replica's model" % from_model)

    def test_namespace_reads_through_another_replica_see_acknowledged_writes_across_leader_kills(self):
        """Issue 17: a client updates a namespace through one replica and, once acknowledged, Gets it
        through another (from that replica's namespaces model after a read index) and must see that
        update or a later one, while the dqlite leader is SIGKILLed and restarted three times; the
        same with min_revision set to the update's revision (no read index)."""
        c = g.Cluster("rywn-" + self._testMethodName, run_flags=["--driver", "none"]).init()
        self.clusters.append(c)
        c.join(2)
        c.wait_roles(3, 0)
        c.wait_ready()
        md = [("authorization", "Bearer " + c.key)]
        stop = threading.Event()
        stats = {"acked": 0, "reads": 0, "min_rev_reads": 0, "read_errors": 0, "write_errors": 0}
        violations = []

        def call(r, method, req, resp, timeout=10):
            return c.client.channel(r).unary_unary("/gantry.v1.Namespaces/" + method,
                                                   request_serializer=type(req).SerializeToString,
                                                   response_deserializer=resp.FromString)(req, metadata=md,
                                                                                          timeout=timeout)

        call(c.replicas[0], "Create", N.CreateNamespaceRequest(namespace=N.Namespace(
            meta=meta_pb2.ObjectMeta(name="rywn"))), N.Namespace)

        def client():
            i = 0
            while not stop.is_set():
                i += 1
                alive = c.alive()
                w = alive[i % len(alive)]
                try:
                    up = call(w, "Update", N.UpdateNamespaceRequest(request_id="rywn-%d" % i, namespace=N.Namespace(
                        meta=meta_pb2.ObjectMeta(name="rywn", labels={"w": str(i)}))), N.Namespace)
                except grpc.RpcError as e:
                    if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                        grpc.StatusCode.ABORTED):
                        violations.append("Update through replica %d: %s %s" % (w.rid, e.code(), e.details()))
                        return
                    stats["write_errors"] += 1
                    time.sleep(0.05)
                    continue
                stats["acked"] += 1
                rv = up.meta.resource_version
                for read in (None, meta_pb2.ReadOptions(min_revision=rv)):
                    end = time.monotonic() + 30
                    while time.monotonic() < end and not stop.is_set():
                        others = [r for r in c.alive() if r is not w] or c.alive()
                        r = others[(stats["reads"] + stats["read_errors"]) % len(others)]
                        try:
                            got = call(r, "Get", N.GetNamespaceRequest(name="rywn", read=read), N.Namespace)
                        except grpc.RpcError as e:
                            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                                violations.append("Get through replica %d: %s %s" % (r.rid, e.code(), e.details()))
                                return
                            stats["read_errors"] += 1
                            time.sleep(0.05)
                            continue
                        stats["reads"] += 1
                        stats["min_rev_reads"] += read is not None
                        if got.meta.resource_version < rv or int(got.meta.labels.get("w", "0")) < i:
                            violations.append("replica %d answered revision %d (w=%s) after update %d at %d" % (
                                r.rid, got.meta.resource_version, got.meta.labels.get("w"), i, rv))
                        break

        def model_reads(r):
            return r.metric("gantry_namespace_model_reads_total") or 0
        from_model = 0
        t = threading.Thread(target=client)
        t.start()
        try:
            for _ in range(3):
                time.sleep(1.5)
                victim = c.leader()
                from_model += model_reads(victim)
                victim.kill()
                time.sleep(3)
                victim.start()
                c.wait_ready()
                c.leader()
            time.sleep(1)
        finally:
            stop.set()
            t.join(60)
        from_model += sum(model_reads(r) for r in c.alive())
        self.assertEqual(violations, [])
        self.assertGreater(stats["acked"], 20, stats)
        self.assertGreater(from_model, stats["reads"] // 4, "the reads were not answered from the models")
        print("namespace read-your-writes across 3 leader kills: %s; at least %d reads from a model" % (
            stats, from_model))


class ReadsEnv(Env):
    """Env whose replica 3 reads the store (--model-reads=false): replicas 1 and 2 answer Get and List
    from their models, replica 3 from the leader, so their answers can be compared."""

    def __init__(self, test):
        c = g.Cluster("reads-" + test._testMethodName, run_flags=["--driver", "none"])
        c.replica_flags = lambda rid: ["--model-reads=false"] if rid == 3 else []
        test.clusters.append(c)
        c.init()
        c.join(2)
        c.wait_roles(3, 0)
        c.wait_ready()
        self._setup(c)

    def raw(self, role, svc, method, req, replica, timeout=15):
        """The reply's bytes as the replica sent them, and the trailing metadata."""
        ch = self.c.client.channel(self.c.replicas[replica])
        fn = ch.unary_unary("/gantry.v1.%s/%s" % (svc, method), request_serializer=type(req).SerializeToString,
                            response_deserializer=lambda b: b)
        body, call = fn.with_call(req, metadata=[("authorization", "Bearer " + self.keys[role])], timeout=timeout)
        return body, dict(call.trailing_metadata() or ())


def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def strip_revision(raw, cls):
    """A List reply's bytes without its revision (field 3, last on the wire), and that revision."""
    rev = cls.FromString(raw).revision
    if rev == 0:
        return raw, 0
    tail = b"\x18" + varint(rev)
    assert raw.endswith(tail), raw
    return raw[:-len(tail)], rev


def revision_of(trailers):
    return int(trailers.get("x-gantry-revision", "0"))


class NamespaceReads(g.GantrydTest):
    maxDiff = None

    def test_namespace_model_answers_like_the_store(self):
        """Issue 17: Namespaces.Get and List from the replicas' models (replicas 1 and 2) are the store
        path's replies (replica 3, --model-reads=false) byte for byte, for every role, page size and
        selector, after creates, updates and a delete; a model Get carries x-gantry-revision."""
        env = ReadsEnv(self)
        for i, tier in enumerate("abab"):
            env.call("pa", namespaces_pb2, "Namespaces", "Create", N.CreateNamespaceRequest(
                namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="nr-%d" % i, labels={"tier": tier, "i": str(i)}),
                                      description="d%d" % i)), replica=i % 3)
        env.call("pa", namespaces_pb2, "Namespaces", "Update", N.UpdateNamespaceRequest(
            namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="nr-1", labels={"tier": "a"}), description="new")),
            replica=1)
        env.call("pa", namespaces_pb2, "Namespaces", "Delete", N.DeleteNamespaceRequest(name="nr-3"), replica=2)
        before = [env.c.replicas[i].metric("gantry_namespace_model_reads_total") or 0 for i in range(3)]
        compared = 0
        for role in ("pa", "auditor", "na", "user", "other"):
            for sel in (None, {"tier": "a"}):
                for size in (1, 2, 0):
                    answers = []
                    for replica in range(3):
                        pages, token = [], ""
                        for _ in range(50):
                            req = N.ListNamespacesRequest(page=meta_pb2.PageRequest(page_size=size, page_token=token))
                            if sel:
                                req.selector.match_labels.update(sel)
                            raw, _ = env.raw(role, "Namespaces", "List", req, replica)
                            body, rev = strip_revision(raw, N.ListNamespacesResponse)
                            self.assertGreater(rev, 0)
                            pages.append(body)
                            token = N.ListNamespacesResponse.FromString(raw).next_page_token
                            if not token:
                                break
                        answers.append(pages)
                    self.assertEqual(answers[0], answers[2], (role, sel, size))
                    self.assertEqual(answers[1], answers[2], (role, sel, size))
                    compared += len(answers[2])
            for name in ("default", "team-b", "nr-0", "nr-1", "nr-3", "nope"):
                got = []
                for replica in range(3):
                    try:
                        raw, tr = env.raw(role, "Namespaces", "Get", N.GetNamespaceRequest(name=name), replica)
                        got.append(raw)
                        if replica < 2:
                            self.assertGreaterEqual(revision_of(tr), N.Namespace.FromString(raw).meta.resource_version)
                        else:
                            self.assertNotIn("x-gantry-revision", tr)
                    except grpc.RpcError as e:
                        got.append((e.code(), e.details()))
                self.assertEqual(got[0], got[2], (role, name))
                self.assertEqual(got[1], got[2], (role, name))
        after = [env.c.replicas[i].metric("gantry_namespace_model_reads_total") or 0 for i in range(3)]
        self.assertGreater(after[0] - before[0], compared // 3)
        self.assertGreater(after[1] - before[1], compared // 3)
        self.assertEqual(after[2], 0, "the --model-reads=false replica answered from its model")
        print("namespace model vs store: %d list pages compared byte for byte" % compared)
        self.kinds_like_the_store(env)
        self.quotas_like_the_store(env)

    def answers(self, env, role, svc, method, req):
        """The three replicas' answers to one call: the reply's bytes (a List's without its revision,
        every page of it) or the status and message; the trailers checked: a model replica's carry
        x-gantry-revision (at least the object's resource_version), the store replica's do not."""
        obj = {"Policies": policies_pb2.Policy, "Providers": providers_pb2.Provider,
               "WarmPools": warmpools_pb2.WarmPool}[svc]
        resp = {"Providers": providers_pb2.ListProvidersResponse,
                "WarmPools": warmpools_pb2.ListWarmPoolsResponse}.get(svc)
        got = []
        for replica in range(3):
            try:
                if method == "Get":
                    raw, tr = env.raw(role, svc, method, req, replica)
                    got.append(raw)
                    if replica < 2:
                        self.assertGreaterEqual(revision_of(tr), obj.FromString(raw).meta.resource_version,
                                                (role, svc, req, replica))
                    else:
                        self.assertNotIn("x-gantry-revision", tr)
                    continue
                pages, token = [], ""
                for _ in range(50):
                    req.page.page_token = token
                    raw, _ = env.raw(role, svc, method, req, replica)
                    body, rev = strip_revision(raw, resp)
                    self.assertGreater(rev, 0)
                    pages.append(body)
                    token = resp.FromString(raw).next_page_token
                    if not token:
                        break
                got.append(pages)
            except grpc.RpcError as e:
                got.append((e.code(), e.details()))
        return got

    def kinds_like_the_store(self, env):
        """Issue 17: Policies.Get, Providers.Get and List, WarmPools.Get and List from the models
        (replicas 1 and 2) are the store path's replies (replica 3) byte for byte, for every role,
        every page of every page size, objects found and not found, after creates, updates, deletes
        and a namespace deletion that removes rows without their own event; a write through one
        replica is seen at once by a linearizable Get through another."""
        W, Pv, Po = warmpools_pb2, providers_pb2, policies_pb2
        t0 = time.monotonic()
        metrics = ("gantry_policy_model_reads_total", "gantry_provider_model_reads_total",
                   "gantry_warm_pool_model_reads_total")
        before = [[env.c.replicas[i].metric(m) or 0 for m in metrics] for i in range(3)]
        env.call("pa", namespaces_pb2, "Namespaces", "Create", N.CreateNamespaceRequest(
            namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="kinds-gone"))))

        def set_policy(ns, lifetime, replica=0):
            return env.call("pa", Po, "Policies", "Set", Po.SetPolicyRequest(policy=Po.Policy(
                meta=meta_pb2.ObjectMeta(namespace=ns), max_lifetime_seconds=lifetime, allow_shares=True,
                allow_exec_shares=True, allowed_images=["busybox:*"] if ns else [])), replica=replica)
        set_policy("", 7200)
        set_policy("default", 600, replica=1)
        set_policy("kinds-gone", 300, replica=2)
        for i, ns in enumerate(["default"] * 5 + ["team-b"]):
            env.call("pa", Pv, "Providers", "Create", Pv.CreateProviderRequest(provider=Pv.Provider(
                meta=meta_pb2.ObjectMeta(namespace=ns, name="prov-%d" % i, labels={"i": str(i)}), type="generic",
                config={"url": "https://x%d.example" % i}), secret={"token": "sekret-%d" % i, "other": "v"}),
                replica=i % 3)
        env.call("pa", Pv, "Providers", "Update", Pv.UpdateProviderRequest(provider=Pv.Provider(
            meta=meta_pb2.ObjectMeta(namespace="default", name="prov-1"), type="generic", config={"url": "u"})),
            replica=1)
        env.call("pa", Pv, "Providers", "Delete", Pv.DeleteProviderRequest(namespace="default", name="prov-3"),
                 replica=2)

        # Warm pools need the kubernetes driver to be created (this cluster runs none): their rows and
        # change events are written as WarmPools.Create and the reconciler's status write do.
        def put_pool(i, ns, name, status=None):
            rev = int(env.c.replicas[0].store("query", "SELECT revision FROM cluster_revision").split()[-1]) + 1
            pid = "00000000-0000-4000-8000-%012d" % i
            pool = W.WarmPool(meta=meta_pb2.ObjectMeta(id=pid, namespace=ns, name=name, resource_version=rev,
                                                       created_by=env.ids["pa"], created_at_ms=1000 + i),
                              template="tpl-%d" % i, replicas=i % 4).SerializeToString()
            # The event before the revision: a feed poll between the statements sees neither or both.
            env.c.replicas[0].store(
                "exec", "INSERT INTO warm_pools (id, namespace, name, kube_namespace, template, replicas, pool, status, "
                "created_by, resource_version, created_at_ms, updated_at_ms) VALUES ('%s', '%s', '%s', '', 'tpl', 0, "
                "x'%s', x'%s', 'test', %d, 0, 0) ON CONFLICT (id) DO UPDATE SET pool = excluded.pool, status = "
                "excluded.status, resource_version = excluded.resource_version; INSERT INTO events (revision, kind, "
                "namespace, object_id, type, at_ms) SELECT revision + 1, 'WarmPool', '%s', '%s', '%s', 0 FROM "
                "cluster_revision WHERE id = 1; UPDATE cluster_revision SET revision = revision + 1 WHERE id = 1" % (
                    pid, ns, name, pool.hex(), (status or b"").hex(), rev, ns, pid,
                    "MODIFIED" if status else "ADDED"))
        for i in range(5):
            put_pool(i, "default", "pool-%d" % i)
        put_pool(5, "team-b", "pool-5")
        put_pool(6, "kinds-gone", "pool-6")
        put_pool(2, "default", "pool-2", W.WarmPoolStatus(ready_replicas=2, replicas=2,
                                                          last_error="x").SerializeToString())
        env.call("pa", W, "WarmPools", "Update", W.UpdateWarmPoolRequest(namespace="default", name="pool-1",
                                                                         replicas=3), replica=1)
        env.call("pa", W, "WarmPools", "Delete", W.DeleteWarmPoolRequest(namespace="default", name="pool-4"),
                 replica=2)
        # Its policy and warm pool go with the namespace, without an event of their own.
        env.call("pa", namespaces_pb2, "Namespaces", "Delete", N.DeleteNamespaceRequest(name="kinds-gone"))

        calls = [("Policies", "Get", Po.GetPolicyRequest(namespace=ns)) for ns in ("", "default", "team-b",
                                                                                  "kinds-gone", "nope")]
        for ns in ("default", "team-b", "kinds-gone"):
            for size in (1, 2, 0):
                calls.append(("Providers", "List", Pv.ListProvidersRequest(
                    namespace=ns, page=meta_pb2.PageRequest(page_size=size))))
                calls.append(("WarmPools", "List", W.ListWarmPoolsRequest(
                    namespace=ns, page=meta_pb2.PageRequest(page_size=size))))
        for ns, name in (("default", "prov-0"), ("default", "prov-1"), ("default", "prov-3"), ("team-b", "prov-5"),
                         ("default", "nope")):
            calls.append(("Providers", "Get", Pv.GetProviderRequest(namespace=ns, name=name)))
        for ns, name in (("default", "pool-0"), ("default", "pool-1"), ("default", "pool-2"), ("default", "pool-4"),
                         ("team-b", "pool-5"), ("kinds-gone", "pool-6")):
            calls.append(("WarmPools", "Get", W.GetWarmPoolRequest(namespace=ns, name=name)))
        outcomes = {}
        for role in ("pa", "auditor", "na", "user", "other"):
            for svc, method, req in calls:
                got = self.answers(env, role, svc, method, req)
                self.assertEqual(got[0], got[2], (role, svc, method, req))
                self.assertEqual(got[1], got[2], (role, svc, method, req))
                outcome = got[2][0] if isinstance(got[2], tuple) else "OK"
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        self.assertEqual(len(self.answers(env, "pa", "Providers", "List", Pv.ListProvidersRequest(
            namespace="default", page=meta_pb2.PageRequest(page_size=1)))[2]), 4)
        self.assertEqual(len(self.answers(env, "pa", "WarmPools", "List", W.ListWarmPoolsRequest(
            namespace="default", page=meta_pb2.PageRequest(page_size=1)))[2]), 4)
        for code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, "OK"):
            self.assertGreater(outcomes.get(code, 0), 0, outcomes)
        # The model never holds the secret: the providers' answers carry its key names only.
        for raw in self.answers(env, "pa", "Providers", "Get", Pv.GetProviderRequest(namespace="default",
                                                                                    name="prov-0"))[:2]:
            self.assertNotIn(b"sekret", raw)
            self.assertEqual(sorted(Pv.Provider.FromString(raw).secret_keys), ["other", "token"])

        # Read-your-writes: a write through one replica, then a linearizable Get through another.
        for i in range(6):
            w = i % 3
            r = 1 if w == 0 else 0  # a model replica other than the writer
            pol = set_policy("default", 500 - i, replica=w)
            got = Po.Policy.FromString(env.raw("pa", "Policies", "Get", Po.GetPolicyRequest(namespace="default"), r)[0])
            self.assertEqual((got.meta.resource_version, got.max_lifetime_seconds), (pol.meta.resource_version, 500 - i))
            prov = env.call("pa", Pv, "Providers", "Update", Pv.UpdateProviderRequest(provider=Pv.Provider(
                meta=meta_pb2.ObjectMeta(namespace="default", name="prov-2"), type="generic",
                config={"round": str(i)})), replica=w)
            got = Pv.Provider.FromString(env.raw("pa", "Providers", "Get", Pv.GetProviderRequest(
                namespace="default", name="prov-2"), r)[0])
            self.assertEqual((got.meta.resource_version, got.config["round"]), (prov.meta.resource_version, str(i)))
            pool = env.call("pa", W, "WarmPools", "Update", W.UpdateWarmPoolRequest(
                namespace="default", name="pool-0", replicas=i), replica=w)
            got = W.WarmPool.FromString(env.raw("pa", "WarmPools", "Get", W.GetWarmPoolRequest(
                namespace="default", name="pool-0"), r)[0])
            self.assertEqual((got.meta.resource_version, got.replicas), (pool.meta.resource_version, i))
        env.call("pa", Pv, "Providers", "Delete", Pv.DeleteProviderRequest(namespace="default", name="prov-2"),
                 replica=0)
        env.call("pa", W, "WarmPools", "Delete", W.DeleteWarmPoolRequest(namespace="default", name="pool-0"),
                 replica=0)
        env.call("pa", Po, "Policies", "Delete", Po.DeletePolicyRequest(namespace="default"), replica=0)
        for svc, req in (("Providers", Pv.GetProviderRequest(namespace="default", name="prov-2")),
                         ("WarmPools", W.GetWarmPoolRequest(namespace="default", name="pool-0")),
                         ("Policies", Po.GetPolicyRequest(namespace="default"))):
            with self.assertRaises(grpc.RpcError) as cm:
                env.raw("pa", svc, "Get", req, 1)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND, svc)
        after = [[env.c.replicas[i].metric(m) or 0 for m in metrics] for i in range(3)]
        for i, m in enumerate(metrics):
            self.assertGreater(after[0][i] - before[0][i], 10, m)
            self.assertGreater(after[1][i] - before[1][i], 10, m)
            self.assertEqual(after[2][i], 0, "the --model-reads=false replica answered from its model: " + m)
        # A model replica restarted loads every kind with its rows (one statement each), then applies
        # creates on top of what it loaded; its answers are still the store's.
        t1 = time.monotonic()
        victim = next(env.c.replicas[i] for i in (0, 1) if env.c.replicas[i] is not env.c.leader())
        victim.kill()
        victim.start()
        t2 = time.monotonic()
        for i in range(6, 8):
            set_policy("team-b", 100 + i, replica=i % 3)
            env.call("pa", Pv, "Providers", "Create", Pv.CreateProviderRequest(provider=Pv.Provider(
                meta=meta_pb2.ObjectMeta(namespace="default", name="prov-%d" % i), type="generic"),
                secret={"token": "t"}), replica=i % 3)
            put_pool(i + 10, "default", "pool-%d" % (i + 10))
        for svc, method, req in calls[:5] + calls[5:7] + calls[23:]:
            got = self.answers(env, "pa", svc, method, req)
            self.assertEqual(got[0], got[2], ("after a restart", svc, method, req))
            self.assertEqual(got[1], got[2], ("after a restart", svc, method, req))
        self.assertEqual(len(self.answers(env, "pa", "Providers", "List", Pv.ListProvidersRequest(
            namespace="default", page=meta_pb2.PageRequest(page_size=1)))[0]), 5)
        print("policies, providers, warm pools models vs store: %d calls x 5 roles compared (%s) in %.1f s, "
              "%.1f s of it the replica's restart and %.1f s the comparison after it"
              % (len(calls), {str(k): v for k, v in outcomes.items()}, time.monotonic() - t0, t2 - t1,
                 time.monotonic() - t2))

    def quota_answers(self, env, role, method, req):
        """The three replicas' answers to Quotas.Get (the bytes, with usage.revision, the read's
        revision, cleared after checking it) or every page of Quotas.List (without its revision), or
        the status and message."""
        got = []
        for replica in range(3):
            try:
                if method == "Get":
                    raw, tr = env.raw(role, "Quotas", "Get", req, replica)
                    q = Q.GetQuotaResponse.FromString(raw)
                    self.assertEqual(q.SerializeToString(), raw)  # canonical: clearing a field keeps the rest
                    self.assertGreater(q.usage.revision, 0)
                    if replica < 2:
                        self.assertEqual(revision_of(tr), q.usage.revision, (role, req, replica))
                    else:
                        self.assertNotIn("x-gantry-revision", tr)
                    q.usage.revision = 0
                    got.append(q.SerializeToString())
                    continue
                pages, token = [], ""
                for _ in range(50):
                    req.page.page_token = token
                    raw, _ = env.raw(role, "Quotas", "List", req, replica)
                    body, rev = strip_revision(raw, Q.ListQuotasResponse)
                    self.assertGreater(rev, 0)
                    pages.append(body)
                    token = Q.ListQuotasResponse.FromString(raw).next_page_token
                    if not token:
                        break
                got.append(pages)
            except grpc.RpcError as e:
                got.append((e.code(), e.details()))
        return got

    def quotas_like_the_store(self, env):
        """Issue 17: Quotas.Get and List from the quotas models (replicas 1 and 2) equal the store
        path's replies (replica 3) for five roles, every page of three page sizes, namespaces with a
        quota, a ceiling, both, neither, deleted and never made; the usage counters, which change
        with sandbox creates and deletes and no Quota event, are read-your-write across replicas:
        a linearizable Get and List through another replica show each create and delete at once."""
        t0 = time.monotonic()
        before = [env.c.replicas[i].metric("gantry_quota_model_reads_total") or 0 for i in range(3)]
        for name in ("q-gone", "q-none"):
            env.call("pa", namespaces_pb2, "Namespaces", "Create", N.CreateNamespaceRequest(
                namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name=name))))
        for i, ns in enumerate(("default", "team-b", "q-gone")):
            env.call("pa", Q, "Quotas", "SetCeiling", Q.SetQuotaCeilingRequest(ceiling=Q.QuotaCeiling(
                meta=meta_pb2.ObjectMeta(namespace=ns), max_concurrent_sandboxes=50 + i, max_gpus=4, max_lifetime_seconds=7200)), replica=i)
        env.call("pa", Q, "Quotas", "Set", Q.SetQuotaRequest(quota=Q.Quota(
            meta=meta_pb2.ObjectMeta(namespace="default"), max_concurrent_sandboxes=40, max_gpus=2, max_lifetime_seconds=3600,
            mode=Q.QUOTA_MODE_SOFT)), replica=1)
        for i, ns in enumerate(("default", "default", "default", "team-b", "q-gone")):
            env.sb("pa", "Create", S.CreateSandboxRequest(sandbox=sandbox(ns, "qm-%d" % i)), replica=i % 3)
        env.sb("pa", "Delete", S.DeleteSandboxRequest(namespace="default", name="qm-1"), replica=2)
        env.sb("pa", "Delete", S.DeleteSandboxRequest(namespace="q-gone", name="qm-4"), replica=1)
        env.call("pa", namespaces_pb2, "Namespaces", "Delete", N.DeleteNamespaceRequest(name="q-gone"), replica=2)
        calls = [("Get", Q.GetQuotaRequest(namespace=ns)) for ns in ("default", "team-b", "q-gone", "q-none", "nope")]
        calls += [("List", Q.ListQuotasRequest(page=meta_pb2.PageRequest(page_size=size))) for size in (1, 2, 0)]
        outcomes = {}
        for role in ("pa", "auditor", "na", "user", "other"):
            for method, req in calls:
                got = self.quota_answers(env, role, method, req)
                self.assertEqual(got[0], got[2], (role, method, req))
                self.assertEqual(got[1], got[2], (role, method, req))
                outcome = got[2][0] if isinstance(got[2], tuple) else "OK"
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED, "OK"):
            self.assertGreater(outcomes.get(code, 0), 0, outcomes)
        usage = Q.GetQuotaResponse.FromString(self.quota_answers(env, "pa", "Get", Q.GetQuotaRequest(
            namespace="default"))[0]).usage
        self.assertEqual(usage.sandboxes, 2)
        self.assertEqual(len(self.quota_answers(env, "pa", "List", Q.ListQuotasRequest(
            page=meta_pb2.PageRequest(page_size=1)))[0]), 2)  # default, team-b: q-gone went with its namespace

        # Read-your-writes of the usage: a create or delete through one replica, then a linearizable
        # Get and List through another (a model replica other than the writer).
        def used(r):
            g_ = Q.GetQuotaResponse.FromString(env.raw("pa", "Quotas", "Get", Q.GetQuotaRequest(namespace="team-b"),
                                                       r)[0]).usage.sandboxes
            lst = Q.ListQuotasResponse.FromString(env.raw("pa", "Quotas", "List", Q.ListQuotasRequest(), r)[0])
            return g_, [q.usage.sandboxes for q in lst.quotas if q.usage.namespace == "team-b"][0]
        n = 1
        for i in range(6):
            w = i % 3
            r = 1 if w == 0 else 0
            env.sb("pa", "Create", S.CreateSandboxRequest(sandbox=sandbox("team-b", "qr-%d" % i)), replica=w)
            n += 1
            self.assertEqual(used(r), (n, n), "create %d through replica %d, read through %d" % (i, w + 1, r + 1))
        for i in range(6):
            w = (i + 1) % 3
            r = 1 if w == 0 else 0
            env.sb("pa", "Delete", S.DeleteSandboxRequest(namespace="team-b", name="qr-%d" % i), replica=w)
            n -= 1
            self.assertEqual(used(r), (n, n), "delete %d through replica %d, read through %d" % (i, w + 1, r + 1))
        after = [env.c.replicas[i].metric("gantry_quota_model_reads_total") or 0 for i in range(3)]
        self.assertGreater(after[0] - before[0], 30)
        self.assertGreater(after[1] - before[1], 30)
        self.assertEqual(after[2], 0, "the --model-reads=false replica answered from its model")
        print("quotas model vs store: %d calls x 5 roles compared (%s), 12 usage read-your-writes, in %.1f s"
              % (len(calls), {str(k): v for k, v in outcomes.items()}, time.monotonic() - t0))

    def test_read_options(self):
        """min_revision waits for the model without the leader, and a revision the cluster has not
        reached is OUT_OF_RANGE within a poll, with the reason; max_staleness_ms answers at once from a live feed (no read index) and never misses
        a change committed more than the bound before the call; bad options are INVALID_ARGUMENT and
        change nothing; the same for Sandboxes.Get, List and ListSharedWithMe, whose linearizable read sees
        a share just made through another replica, Providers.List and WarmPools.List. The CLI's read
        flags and `gantry watch --selector`."""
        env = ReadsEnv(self)
        ns = env.call("pa", namespaces_pb2, "Namespaces", "Create", N.CreateNamespaceRequest(
            namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="ro", labels={"v": "0"}))))
        env.sb("pa", "Create", S.CreateSandboxRequest(sandbox=sandbox("default", "ro-sb")))
        RO = meta_pb2.ReadOptions

        def reqs(read):
            return [("Namespaces", "Get", N.GetNamespaceRequest(name="ro", read=read)),
                    ("Namespaces", "List", N.ListNamespacesRequest(read=read)),
                    ("Sandboxes", "Get", S.GetSandboxRequest(namespace="default", name="ro-sb", read=read)),
                    ("Sandboxes", "List", S.ListSandboxesRequest(namespace="default", read=read)),
                    ("Sandboxes", "ListSharedWithMe", S.ListSharedWithMeRequest(namespace="default", read=read)),
                    ("Providers", "List", providers_pb2.ListProvidersRequest(namespace="default", read=read)),
                    ("WarmPools", "List", warmpools_pb2.ListWarmPoolsRequest(namespace="default", read=read))]

        # Bad options: INVALID_ARGUMENT with the reason, on every replica; nothing changed.
        listed = env.call("pa", namespaces_pb2, "Namespaces", "List", N.ListNamespacesRequest(), replica=2).namespaces
        for read, why in ((RO(min_revision=1, max_staleness_ms=10), "exclude each other"),
                          (RO(max_staleness_ms=60001), "over the maximum")):
            for replica in range(3):
                for svc, method, req in reqs(read):
                    with self.assertRaises(grpc.RpcError) as cm:
                        env.raw("pa", svc, method, req, replica)
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, (svc, method))
                    self.assertIn(why, cm.exception.details())
        self.assertEqual(env.call("pa", namespaces_pb2, "Namespaces", "List", N.ListNamespacesRequest(),
                                  replica=2).namespaces, listed)

        # min_revision: a write's revision is seen through another replica without a read index.
        for i in range(5):
            up = env.call("pa", namespaces_pb2, "Namespaces", "Update", N.UpdateNamespaceRequest(
                namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="ro", labels={"v": str(i + 1)}))),
                replica=i % 3)
            r = up.meta.resource_version
            for replica in (0, 1):
                syncs = env.c.replicas[replica].metric("gantry_feed_syncs_total")
                raw, tr = env.raw("pa", "Namespaces", "Get", N.GetNamespaceRequest(name="ro", read=RO(min_revision=r)),
                                  replica)
                got = N.Namespace.FromString(raw)
                self.assertGreaterEqual(got.meta.resource_version, r)
                self.assertEqual(got.meta.labels["v"], str(i + 1))
                self.assertGreaterEqual(revision_of(tr), r)
                self.assertEqual(env.c.replicas[replica].metric("gantry_feed_syncs_total"), syncs)
                lst = N.ListNamespacesResponse.FromString(env.raw("pa", "Namespaces", "List", N.ListNamespacesRequest(
                    read=RO(min_revision=r)), replica)[0])
                self.assertGreaterEqual(lst.revision, r)
                self.assertEqual([x.meta.labels["v"] for x in lst.namespaces if x.meta.name == "ro"], [str(i + 1)])
        # A revision the cluster has not reached: OUT_OF_RANGE within a poll of the feed (no extra
        # leader read), with the reason, on every replica (the store replica too), not a worker held
        # until the deadline (it was DEADLINE_EXCEEDED after up to 5 s before; a review finding).
        far = r + 10 ** 9
        for replica in range(3):
            syncs = env.c.replicas[replica].metric("gantry_feed_syncs_total")
            for svc, method, req in reqs(RO(min_revision=far)):
                t0 = time.monotonic()
                with self.assertRaises(grpc.RpcError) as cm:
                    env.raw("pa", svc, method, req, replica, timeout=None)
                self.assertEqual(cm.exception.code(), grpc.StatusCode.OUT_OF_RANGE, (svc, method))
                self.assertIn("min_revision %d is ahead of the cluster's revision" % far, cm.exception.details())
                self.assertLess(time.monotonic() - t0, 1.5)
            self.assertEqual(env.c.replicas[replica].metric("gantry_feed_syncs_total"), syncs)

        # max_staleness_ms: no read index while the feed is live...
        for replica in (0, 1):
            syncs = env.c.replicas[replica].metric("gantry_feed_syncs_total")
            for _ in range(20):
                for svc, method, req in reqs(RO(max_staleness_ms=2000)):
                    env.raw("pa", svc, method, req, replica)
            self.assertEqual(env.c.replicas[replica].metric("gantry_feed_syncs_total"), syncs)
        # ... and a change committed longer than the bound before the call is always in the answer.
        for i in range(6):
            up = env.call("pa", namespaces_pb2, "Namespaces", "Update", N.UpdateNamespaceRequest(
                namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="ro", labels={"v": "s%d" % i}))),
                replica=i % 3)
            time.sleep(0.35)
            for replica in (0, 1):
                raw, tr = env.raw("pa", "Namespaces", "Get", N.GetNamespaceRequest(
                    name="ro", read=RO(max_staleness_ms=300)), replica)
                self.assertGreaterEqual(N.Namespace.FromString(raw).meta.resource_version, up.meta.resource_version)
                self.assertGreaterEqual(revision_of(tr), up.meta.resource_version)
        # A linearizable Get (no option) still answers from the model with a read index.
        syncs = env.c.replicas[0].metric("gantry_feed_syncs_total")
        env.raw("pa", "Namespaces", "Get", N.GetNamespaceRequest(name="ro"), 0)
        self.assertGreater(env.c.replicas[0].metric("gantry_feed_syncs_total"), syncs)

        # ListSharedWithMe: a share (or unshare) made through one replica is in the next linearizable
        # ListSharedWithMe through each other replica, with the revision the answer reflects; min_revision
        # set to that revision shows it without a read index; a stale read (B = 300 ms) 350 ms after the
        # change shows it, at a revision above the one before the change.
        env.sb("user", "Create", S.CreateSandboxRequest(sandbox=sandbox("default", "ro-shared")))

        def shared(replica, read=None):
            r = S.ListSharedWithMeResponse.FromString(env.raw("user2", "Sandboxes", "ListSharedWithMe",
                                                              S.ListSharedWithMeRequest(read=read), replica)[0])
            self.assertGreater(r.revision, 0)
            return [x.meta.name for x in r.sandboxes], r.revision
        for i in range(4):
            before = shared(i % 3)[1]
            if i % 2 == 0:
                env.sb("user", "Share", S.ShareSandboxRequest(namespace="default", name="ro-shared",
                                                              grantee_principal_id=env.ids["user2"],
                                                              access=S.SHARE_ACCESS_READ), replica=i % 3)
            else:
                env.sb("user", "Unshare", S.UnshareSandboxRequest(namespace="default", name="ro-shared",
                                                                  grantee_principal_id=env.ids["user2"]), replica=i % 3)
            want = ["ro-shared"] if i % 2 == 0 else []
            for replica in ((i + 1) % 3, (i + 2) % 3):
                names, rev = shared(replica)
                self.assertEqual(names, want, "replica %d, change %d through replica %d" % (replica, i, i % 3))
                self.assertGreater(rev, before)
                for other in (0, 1):
                    syncs = env.c.replicas[other].metric("gantry_feed_syncs_total")
                    self.assertEqual(shared(other, RO(min_revision=rev))[0], want)
                    self.assertEqual(env.c.replicas[other].metric("gantry_feed_syncs_total"), syncs)
            time.sleep(0.35)
            for replica in (0, 1):
                names, rev = shared(replica, RO(max_staleness_ms=300))
                self.assertEqual(names, want)
                self.assertGreater(rev, before)

        # The CLI (tools/gantry): the read flags on get and list of sandboxes and namespaces, the revision
        # on stderr with --show-revision, both flags a usage error (exit 2), a revision ahead OUT_OF_RANGE
        # (exit 1); `gantry watch namespace --selector` shows only the matching objects' events.
        ca = os.path.join(env.c.replicas[0].dir, "tls", "ca.pem")

        def cli(replica, *args, role="pa", code=0):
            p = subprocess.run([g.CLI, "--endpoint", env.c.replicas[replica].api, "--ca", ca] + list(args),
                               capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, GANTRY_TOKEN=env.keys[role], XDG_CONFIG_HOME=g.WORK))
            self.assertEqual(p.returncode, code, (args, p.stdout, p.stderr))
            return p

        def shown(p):
            return int(p.stderr.split("revision: ", 1)[1].split()[0])
        start = env.call("pa", namespaces_pb2, "Namespaces", "List", N.ListNamespacesRequest()).revision
        env.call("pa", namespaces_pb2, "Namespaces", "Update", N.UpdateNamespaceRequest(
            namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="team-b", labels={"v": "other"}))), replica=1)
        r = env.call("pa", namespaces_pb2, "Namespaces", "Update", N.UpdateNamespaceRequest(
            namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="ro", labels={"v": "cli"}))),
            replica=2).meta.resource_version
        syncs = env.c.replicas[0].metric("gantry_feed_syncs_total")
        p = cli(0, "-o", "json", "namespace", "get", "ro", "--min-revision", str(r), "--show-revision")
        self.assertEqual(json.loads(p.stdout)["meta"]["labels"], {"v": "cli"})
        self.assertGreaterEqual(shown(p), r)
        p = cli(0, "-o", "json", "sandbox", "get", "ro-sb", "--min-revision", str(r), "--show-revision")
        self.assertEqual(json.loads(p.stdout)["meta"]["name"], "ro-sb")
        self.assertGreaterEqual(shown(p), r)
        self.assertEqual(env.c.replicas[0].metric("gantry_feed_syncs_total"), syncs, "--min-revision: a read index")
        time.sleep(0.35)
        syncs = env.c.replicas[1].metric("gantry_feed_syncs_total")
        p = cli(1, "-o", "json", "namespace", "list", "--max-staleness", "300ms", "--show-revision")
        got = json.loads(p.stdout)
        self.assertEqual([x["meta"]["labels"] for x in got["namespaces"] if x["meta"]["name"] == "ro"], [{"v": "cli"}])
        self.assertEqual(shown(p), got["revision"])
        self.assertGreaterEqual(got["revision"], r)
        p = cli(1, "sandbox", "list", "--max-staleness", "2s", "--show-revision")
        self.assertIn("ro-sb", p.stdout)
        self.assertGreaterEqual(shown(p), r)
        p = cli(1, "-o", "json", "sandbox", "shared-with-me", "--max-staleness", "5000", role="user2")
        self.assertEqual([x["meta"]["name"] for x in json.loads(p.stdout)["sandboxes"]], [])
        self.assertEqual(env.c.replicas[1].metric("gantry_feed_syncs_total"), syncs, "--max-staleness: a read index")
        # Linearizable (no flag): from the model with a revision; from the store replica: none.
        self.assertGreaterEqual(shown(cli(0, "sandbox", "get", "ro-sb", "--show-revision")), r)
        self.assertIn("revision: none", cli(2, "namespace", "get", "ro", "--show-revision").stderr)
        for args in (("sandbox", "list", "--min-revision", "5", "--max-staleness", "1s"),
                     ("namespace", "get", "ro", "--max-staleness", "1s", "--min-revision", "5")):
            self.assertIn("exclude each other", cli(0, *args, code=2).stderr)
        self.assertIn("--max-staleness is a duration", cli(0, "namespace", "list", "--max-staleness", "2h", code=2).stderr)
        p = cli(0, "sandbox", "get", "ro-sb", "--min-revision", str(r + 10 ** 9), code=1)
        self.assertIn("OUT_OF_RANGE", p.stderr)
        self.assertIn("is ahead of the cluster's revision", p.stderr)
        # From `start`: team-b's change comes first, but only ro's carries v=cli.
        p = cli(1, "-o", "json", "watch", "namespace", "--selector", "v=cli", "--since", str(start), "--count", "1",
                "--timeout", "20")
        ev = [json.loads(x) for x in p.stdout.splitlines()]
        self.assertEqual([(x["revision"], x["namespace_object"]["meta"]["name"]) for x in ev], [(r, "ro")])
        p = cli(1, "-o", "json", "watch", "namespace", "--since", str(start), "--count", "1", "--timeout", "20")
        self.assertEqual([json.loads(x)["namespace_object"]["meta"]["name"] for x in p.stdout.splitlines()],
                         ["team-b"])
        print("read options: ListSharedWithMe saw 4 share changes at once through the other replicas; the CLI's "
              "read flags, --show-revision and watch --selector checked")

    def test_stale_reads_with_the_leader_paused(self):
        """Issue 17: a stale-ok read (max_staleness_ms B) never returns a revision older than its bound.
        After the last write and B ms more, stale reads go to the followers without pause for 1 s, then
        on while the dqlite leader is paused (SIGSTOP) for 5 s: every answer shows the last write
        (committed more than B ms before every read) and every model answer's x-gantry-revision is at
        least its revision. Some are answered from a model after the pause began (no leader needed);
        later ones fall back to a read index (fail, or wait for a new leader)."""
        env = ReadsEnv(self)
        B = 500
        last = 0
        for i in range(5):
            last = env.call("pa", namespaces_pb2, "Namespaces", "Update", N.UpdateNamespaceRequest(
                namespace=N.Namespace(meta=meta_pb2.ObjectMeta(name="team-b", labels={"v": str(i)}))),
                replica=i % 3).meta.resource_version
        time.sleep(B / 1000.0 + 0.2)
        leader = env.c.leader()
        readers = [i for i in (0, 1) if env.c.replicas[i] is not leader]
        stats = {"answered": 0, "model": 0, "model_paused": 0, "failed": 0}
        paused_at = [None]
        waiting = {}
        go = threading.Event()

        def burst():
            # 20 linearizable Gets at once on one follower while no read index can finish: each gives
            # its store client back while it waits (api/services/model_read.c), so all 20 wait in
            # the feed's read index together; holding them, only the pool's 8 would get that far.
            go.wait()
            if paused_at[0] is None:
                return
            time.sleep(0.3)
            r = env.c.replicas[readers[0]]
            before = r.metric("gantry_feed_syncs_total")
            with concurrent.futures.ThreadPoolExecutor(20) as ex:
                futs = [ex.submit(env.raw, "pa", "Namespaces", "Get", N.GetNamespaceRequest(name="team-b"),
                                  readers[0], 4) for _ in range(20)]
                time.sleep(1.5)
                waiting["n"] = r.metric("gantry_feed_syncs_total") - before
                for f in futs:
                    try:
                        f.result()
                    except grpc.RpcError:
                        pass  # answered by the store after the pause, or UNAVAILABLE/DEADLINE_EXCEEDED

        bt = threading.Thread(target=burst)
        bt.start()
        t0 = time.monotonic()
        n = 0
        try:
            while time.monotonic() < t0 + 6:
                if paused_at[0] is None and time.monotonic() >= t0 + 1:
                    leader.signal(signal.SIGSTOP)
                    paused_at[0] = time.monotonic()
                    go.set()
                replica = readers[n % len(readers)]
                n += 1
                sent = time.monotonic()
                try:
                    raw, tr = env.raw("pa", "Namespaces", "Get", N.GetNamespaceRequest(
                        name="team-b", read=meta_pb2.ReadOptions(max_staleness_ms=B)), replica, timeout=3)
                except grpc.RpcError as e:
                    self.assertIn(e.code(), (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED),
                                  e.details())
                    stats["failed"] += 1
                    continue
                stats["answered"] += 1
                got = N.Namespace.FromString(raw)
                self.assertGreaterEqual(got.meta.resource_version, last)
                self.assertEqual(got.meta.labels["v"], "4")
                if "x-gantry-revision" in tr:  # from the model (absent: the store answered, after the fallback)
                    self.assertGreaterEqual(revision_of(tr), last)
                    stats["model"] += 1
                    stats["model_paused"] += paused_at[0] is not None and sent >= paused_at[0]
                time.sleep(0.02)
        finally:
            if paused_at[0] is not None:
                leader.signal(signal.SIGCONT)
            go.set()  # burst() ends at once if the pause never began
            bt.join()
        self.assertIsNotNone(paused_at[0])
        self.assertGreaterEqual(waiting.get("n", 0), 16, "linearizable Gets in the read index at once, "
                                "with the leader paused (more than the store pool's 8)")
        self.assertGreater(stats["model_paused"], 0, "no stale read answered from a model with the leader paused: %s"
                           % stats)
        print("stale reads (bound %d ms), the leader paused after 1 s for 5 s: %s; %d linearizable Gets "
              "waiting in the read index at once" % (B, stats, waiting["n"]))

GROUPS = {"retention": [Retention], "namespaces": [Namespaces], "sandboxes": [Sandboxes], "quota": [Quota],
          "idempotency": [Idempotency], "audit": [Audit, Paging], "watch": [Watch],
          "fanout": [WatchFanout], "rywkill": [ReadYourWritesUnderKills], "reads": [NamespaceReads]}

if __name__ == "__main__":
    group = sys.argv[1] if len(sys.argv) > 1 else "all"
    suite = unittest.TestSuite()
    for name, classes in GROUPS.items():
        for cls in classes if group in ("all", name) else []:
            suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    ok = unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful()
    sys.exit(0 if ok else 1)
