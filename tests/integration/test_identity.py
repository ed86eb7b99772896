"""Identity and authorization on a real gantryd cluster, driven by Debian's python3-grpcio.

Run: /usr/bin/python3 test_identity.py <group>
Groups: matrix, principals, revocation, oidc (OIDC tokens and client certificates), delegation, feedauth
(revocation driven by the change feed, issue 17), modellist (List from the model against the store).

matrix walks EVERY gantry.v1 RPC (enumerated from the protos' descriptors, so a new RPC is
covered the day it is added) against every role, on a 3-replica cluster calling each replica in
turn, and checks the gate's answer against the
expectation below, which is written from DESIGN.md section 4's role table, not from api/authz/authz.c.
A denied call must answer PERMISSION_DENIED; an allowed one must get past the gate (any other
status: OK, INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED for what is not built yet). A call without
credentials must answer UNAUTHENTICATED, except Cluster.Join, whose token is its credential.

The environment is test_gantryd.py's (GANTRYD, GANTRY_STORE, GANTRY_PROTO_DIR, ...).
"""

import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_gantryd as g  # noqa: E402  (generates the stubs, provides the cluster harness)

import grpc  # noqa: E402
from gantry.v1 import (api_keys_pb2, audit_pb2, cluster_pb2, events_pb2, meta_pb2, namespaces_pb2,  # noqa: E402
                       policies_pb2, principals_pb2, providers_pb2, quotas_pb2, sandboxes_pb2, usage_pb2,
                       warmpools_pb2)

MODULES = [cluster_pb2, namespaces_pb2, principals_pb2, api_keys_pb2, sandboxes_pb2, providers_pb2, policies_pb2,
           quotas_pb2, usage_pb2, audit_pb2, events_pb2, warmpools_pb2]
ROLES = ["pa", "auditor", "na", "user", "sa", "other"]
NS_READERS = {"pa", "auditor", "na", "user", "sa"}       # any role in "default", or global read
NS_ADMINS = {"pa", "na"}
SANDBOX_WRITERS = {"pa", "na", "user", "sa"}
ALL = set(ROLES)

# Where each RPC's namespace is (set to "default" in the request), and who may call it.
EXPECT = {
    "Cluster/ListMembers": (None, {"pa"}), "Cluster/GetLeader": (None, {"pa"}), "Cluster/GetLease": (None, {"pa"}),
    "Cluster/TransferLeadership": (None, {"pa"}), "Cluster/RemoveMember": (None, {"pa"}),
    "Cluster/Backup": (None, {"pa"}), "Cluster/CreateJoinToken": (None, {"pa"}), "Cluster/GetHealth": (None, {"pa"}),
    "Cluster/ListJoinTokens": (None, {"pa"}), "Cluster/RevokeJoinToken": (None, {"pa"}),
    "Cluster/Join": (None, ALL),
    "Namespaces/Create": (None, {"pa"}), "Namespaces/Update": (None, {"pa"}), "Namespaces/Delete": (None, {"pa"}),
    "Namespaces/Get": ("name", NS_READERS), "Namespaces/List": (None, ALL),
    "Principals/Create": ("namespace", NS_ADMINS), "Principals/Update": (None, {"pa"}),
    "Principals/Delete": (None, {"pa"}),
    "Principals/Get": (None, ALL), "Principals/List": (None, ALL), "Principals/WhoAmI": (None, ALL),
    "Principals/CreateRoleBinding": ("binding.namespace", NS_ADMINS),
    "Principals/DeleteRoleBinding": (None, NS_ADMINS), "Principals/ListRoleBindings": (None, ALL),
    "Principals/LinkIdentity": (None, {"pa"}), "Principals/UnlinkIdentity": (None, {"pa"}),
    "Principals/ListIdentities": (None, ALL),
    "ApiKeys/Create": (None, ALL - {"auditor"}), "ApiKeys/Get": (None, ALL), "ApiKeys/List": (None, ALL),
    "ApiKeys/Revoke": (None, ALL - {"auditor"}), "ApiKeys/Delete": (None, ALL - {"auditor"}),
    "Sandboxes/Create": ("sandbox.meta.namespace", SANDBOX_WRITERS), "Sandboxes/Get": ("namespace", NS_READERS),
    "Sandboxes/List": ("namespace", NS_READERS), "Sandboxes/Delete": ("namespace", SANDBOX_WRITERS),
    "Sandboxes/Share": ("namespace", SANDBOX_WRITERS), "Sandboxes/Unshare": ("namespace", SANDBOX_WRITERS),
    "Sandboxes/ListSharedWithMe": (None, ALL), "Sandboxes/Watch": ("namespace", NS_READERS),
    "Sandboxes/Logs": ("namespace", SANDBOX_WRITERS),  # never the auditor: a sandbox's output is not metadata
    "Sandboxes/Exec": ("start.namespace", SANDBOX_WRITERS),  # a bidi stream, authorized by its first message
    "Sandboxes/PortForward": ("start.namespace", SANDBOX_WRITERS),
    "Providers/Create": ("provider.meta.namespace", NS_ADMINS), "Providers/Update": ("provider.meta.namespace", NS_ADMINS),
    "Providers/Delete": ("namespace", NS_ADMINS), "Providers/Grant": ("namespace", NS_ADMINS),
    "Providers/RevokeGrant": ("namespace", NS_ADMINS), "Providers/Get": ("namespace", NS_READERS),
    "Providers/List": ("namespace", NS_READERS), "Providers/ListGrants": ("namespace", NS_READERS),
    "Policies/Get": ("namespace", NS_READERS), "Policies/GetEffective": ("namespace", NS_READERS),
    "Policies/Set": ("policy.meta.namespace", NS_ADMINS), "Policies/Delete": ("namespace", NS_ADMINS),
    "Egress/Decide": ("intent.namespace", NS_READERS),
    "Quotas/Get": ("namespace", NS_READERS), "Quotas/List": (None, {"pa", "auditor"}),
    "Quotas/Set": ("quota.meta.namespace", NS_ADMINS), "Quotas/Delete": ("namespace", NS_ADMINS),
    "Quotas/SetCeiling": (None, {"pa"}), "Quotas/DeleteCeiling": (None, {"pa"}),
    "Usage/Query": ("namespace", NS_READERS),
    "Audit/Query": ("namespace", {"pa", "auditor", "na"}), "Audit/Export": ("namespace", {"pa", "auditor", "na"}),
    "Events/Watch": ("namespace", NS_READERS),
    "WarmPools/Create": ("warm_pool.meta.namespace", NS_ADMINS), "WarmPools/Get": ("namespace", NS_READERS),
    "WarmPools/List": ("namespace", NS_READERS), "WarmPools/Update": ("namespace", NS_ADMINS),
    "WarmPools/Delete": ("namespace", NS_ADMINS),
}
# Calls that would change the cluster under the test's feet are sent with fields that make the
# handler refuse them after the gate (INVALID_ARGUMENT / NOT_FOUND).
STREAMING = {"Cluster/Backup", "Sandboxes/Watch", "Audit/Export", "Sandboxes/Logs", "Events/Watch"}
BIDI = {"Sandboxes/Exec", "Sandboxes/PortForward"}


def methods():
    for mod in MODULES:
        for svc in mod.DESCRIPTOR.services_by_name.values():
            for m in svc.methods:
                yield "%s/%s" % (svc.name, m.name), svc.full_name, m


def msg_class(desc):
    from google.protobuf import symbol_database
    return symbol_database.Default().GetSymbol(desc.full_name)


def set_path(msg, path, value):
    parts = path.split(".")
    for p in parts[:-1]:
        msg = getattr(msg, p)
    setattr(msg, parts[-1], value)


class Identity:
    """A 3-replica cluster with a principal per role and an API key for each."""

    def __init__(self, test, replica_flags=None):
        c = g.Cluster("id-" + test._testMethodName)
        c.replica_flags = replica_flags  # rid -> extra flags for that replica
        c.init()
        test.clusters.append(c)
        c.join(2)
        c.wait_ready()
        self.c = c
        self.turn = 0
        r1 = c.replicas[0]
        r1.store("exec", "INSERT INTO namespaces (id, name, phase, labels, annotations, created_by, resource_version, "
                 "created_at_ms, updated_at_ms, deletion_timestamp_ms) VALUES ('ns-team-b', 'team-b', 'ACTIVE', '{}', "
                 "'{}', 'test', 1, 0, 0, 0)")
        self.keys = {"pa": c.key}
        self.ids = {}
        specs = {"auditor": ("user", "AUDITOR", ""), "na": ("user", "NAMESPACE_ADMIN", "default"),
                 "user": ("user", "USER", "default"), "sa": ("service_account", "USER", "default"),
                 "other": ("user", "USER", "team-b")}
        for role, (kind, brole, ns) in specs.items():
            p = self.call("pa", principals_pb2, "Principals", "Create", principals_pb2.CreatePrincipalRequest(
                principal=principals_pb2.Principal(
                    meta=self.meta(name="p-" + role.replace("_", "-")),
                    kind=getattr(principals_pb2, "PRINCIPAL_KIND_" + kind.upper()))))
            self.ids[role] = p.meta.id
            self.call("pa", principals_pb2, "Principals", "CreateRoleBinding", principals_pb2.CreateRoleBindingRequest(
                binding=principals_pb2.RoleBinding(principal_id=p.meta.id, role=getattr(principals_pb2, "ROLE_" + brole),
                                                   namespace=ns)))
            k = self.call("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
                principal_id=p.meta.id, name="test"))
            self.keys[role] = k.secret
        who = self.call("pa", principals_pb2, "Principals", "WhoAmI", principals_pb2.WhoAmIRequest())
        self.ids["pa"] = who.principal.meta.id

    @staticmethod
    def meta(**kw):
        from gantry.v1 import meta_pb2
        return meta_pb2.ObjectMeta(**kw)

    def stub(self, service_full, method, req_cls, resp_cls, streaming=False, replica=0, bidi=False):
        ch = self.c.client.channel(self.c.replicas[replica])
        path = "/%s/%s" % (service_full, method)
        if bidi:
            return ch.stream_stream(path, request_serializer=req_cls.SerializeToString,
                                    response_deserializer=resp_cls.FromString)
        if streaming:
            return ch.unary_stream(path, request_serializer=req_cls.SerializeToString,
                                   response_deserializer=resp_cls.FromString)
        return ch.unary_unary(path, request_serializer=req_cls.SerializeToString,
                              response_deserializer=resp_cls.FromString)

    def call(self, role, mod, svc, method, req, replica=0, key=None):
        d = mod.DESCRIPTOR.services_by_name[svc].methods_by_name[method]
        resp_cls = msg_class(d.output_type)
        fn = self.stub(d.containing_service.full_name, method, type(req), resp_cls, replica=replica)
        md = [] if key == "" else [("authorization", "Bearer " + (key or self.keys[role]))]
        return fn(req, metadata=md, timeout=15)

    def code_of(self, role, name, full, m, ns_path, key=None):
        req_cls = msg_class(m.input_type)
        resp_cls = msg_class(m.output_type)
        req = req_cls()
        if ns_path:
            set_path(req, ns_path, "default")
        if name == "Principals/Get":
            req.id = self.ids.get(role, "nobody")
        if name == "Principals/CreateRoleBinding":
            req.binding.role = principals_pb2.ROLE_USER
            req.binding.principal_id = "no-such-principal"
        if name == "Principals/DeleteRoleBinding" or name.startswith("ApiKeys/") and name != "ApiKeys/Create":
            if hasattr(req, "id"):
                req.id = "no-such-id"
        if name == "Cluster/TransferLeadership":
            req.target_id = 999
        md = [] if key == "" else [("authorization", "Bearer " + (key or self.keys[role]))]
        self.turn = getattr(self, "turn", 0) + 1  # each call to the next replica in turn
        fn = self.stub(full, m.name, req_cls, resp_cls, streaming=name in STREAMING,
                       replica=self.turn % len(self.c.replicas), bidi=name in BIDI)
        try:
            out = fn(iter([req]) if name in BIDI else req, metadata=md, timeout=15)
            if name in ("Sandboxes/Watch", "Events/Watch"):
                next(out)  # a watch never ends by itself: its first message shows it got past the gate
                out.cancel()
            elif name in STREAMING or name in BIDI:
                for _ in out:
                    pass
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details()


class Matrix(g.GantrydTest):
    def test_every_rpc_against_every_role(self):
        ident = Identity(self)
        seen = set()
        failures = []
        counts = {"allowed": 0, "denied": 0}
        for name, full, m in methods():
            self.assertIn(name, EXPECT, "no expectation for %s: add it to EXPECT (and to api/authz/authz.c)" % name)
            seen.add(name)
            ns_path, allowed = EXPECT[name]
            code, msg = ident.code_of("pa", name, full, m, ns_path, key="")
            want_unauth = name != "Cluster/Join"
            if want_unauth and code != grpc.StatusCode.UNAUTHENTICATED:
                failures.append("%s without credentials: %s %s" % (name, code, msg))
            for role in ROLES:
                code, msg = ident.code_of(role, name, full, m, ns_path)
                if role in allowed:
                    counts["allowed"] += 1
                    bad = code == grpc.StatusCode.PERMISSION_DENIED or (
                        code == grpc.StatusCode.UNAUTHENTICATED and name != "Cluster/Join")
                    if bad:
                        failures.append("%s as %s: expected to pass the gate, got %s: %s" % (name, role, code, msg))
                else:
                    counts["denied"] += 1
                    if code != grpc.StatusCode.PERMISSION_DENIED:
                        failures.append("%s as %s: expected PERMISSION_DENIED, got %s: %s" % (name, role, code, msg))
                    elif not msg:
                        failures.append("%s as %s: PERMISSION_DENIED without a message" % (name, role))
        self.assertEqual(set(EXPECT) - seen, set(), "expectations for RPCs that do not exist")
        failures += self.ownership(ident)
        self.assertEqual(failures, [], "\n".join(failures))
        # Past the gate, a well-formed WarmPool needs a driver that manages pools (this cluster runs
        # the process driver): FAILED_PRECONDITION, nothing stored.
        W = warmpools_pb2
        with self.assertRaises(grpc.RpcError) as cm:
            ident.call("pa", W, "WarmPools", "Create", W.CreateWarmPoolRequest(warm_pool=W.WarmPool(
                meta=meta_pb2.ObjectMeta(namespace="default", name="warm"), template="agent", replicas=1)))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.FAILED_PRECONDITION, cm.exception.details())
        self.assertIn("does not manage warm pools", cm.exception.details())
        self.assertEqual(list(ident.call("pa", W, "WarmPools", "List", W.ListWarmPoolsRequest(
            namespace="default")).warm_pools), [])
        print("matrix: %d RPCs x %d roles: %d allowed, %d denied, all as expected" % (len(seen), len(ROLES),
                                                                                    counts["allowed"], counts["denied"]))


    def ownership(self, ident):
        """Every sandbox RPC that names one sandbox, for its owner, a read-share holder, an
        exec-share holder and a stranger, all holding the user role in its namespace, and for
        the namespace admin: allowed (OK) or refused (PERMISSION_DENIED, or NOT_FOUND where
        a read must not confirm that someone else's sandbox exists)."""
        S, P = sandboxes_pb2, principals_pb2
        for who in ("reader", "runner", "stranger"):
            p = ident.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(
                principal=P.Principal(meta=ident.meta(name="p-" + who), kind=P.PRINCIPAL_KIND_USER)))
            ident.ids[who] = p.meta.id
            ident.call("pa", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
                binding=P.RoleBinding(principal_id=p.meta.id, role=P.ROLE_USER, namespace="default")))
            ident.keys[who] = ident.call("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
                principal_id=p.meta.id)).secret
        ok, denied, hidden = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND
        # (call, owner, reader, runner, stranger, namespace admin); each row on a fresh sandbox.
        # Logs and Exec count as allowed when they get past the ownership check: OK, or
        # FAILED_PRECONDITION when the sandbox is not running (this cluster's sandboxes may never run).
        # A read share may read logs but not exec.
        rows = [("Get", ok, ok, ok, hidden, ok), ("Delete", ok, denied, denied, denied, ok),
                ("Share", ok, denied, denied, denied, ok), ("Unshare", ok, denied, denied, denied, ok),
                ("ListSharedWithMe", ok, ok, ok, ok, ok), ("Logs", ok, ok, ok, hidden, ok),
                ("Exec", ok, denied, ok, hidden, ok), ("PortForward", ok, denied, ok, hidden, ok)]
        failures = []
        n = 0
        for method, *want in rows:
            for role, expect in zip(("user", "reader", "runner", "stranger", "na"), want):
                n += 1
                name = "own-%d" % n
                ident.call("user", sandboxes_pb2, "Sandboxes", "Create", S.CreateSandboxRequest(sandbox=S.Sandbox(
                    meta=ident.meta(name=name, namespace="default"), spec=S.SandboxSpec(image="busybox"))))
                for grantee, access in (("reader", S.SHARE_ACCESS_READ), ("runner", S.SHARE_ACCESS_EXEC)):
                    ident.call("user", sandboxes_pb2, "Sandboxes", "Share", S.ShareSandboxRequest(
                        namespace="default", name=name, grantee_principal_id=ident.ids[grantee], access=access))
                req = {"Get": S.GetSandboxRequest(namespace="default", name=name),
                       "Delete": S.DeleteSandboxRequest(namespace="default", name=name),
                       "Share": S.ShareSandboxRequest(namespace="default", name=name,
                                                      grantee_principal_id=ident.ids["stranger"],
                                                      access=S.SHARE_ACCESS_READ),
                       "Unshare": S.UnshareSandboxRequest(namespace="default", name=name,
                                                          grantee_principal_id=ident.ids["reader"]),
                       "ListSharedWithMe": S.ListSharedWithMeRequest(namespace="default"),
                       "Logs": S.LogsRequest(namespace="default", name=name),
                       "Exec": S.ExecRequest(start=S.ExecStart(namespace="default", name=name, command=["true"]),
                                             close_stdin=True),
                       "PortForward": S.PortForwardRequest(start=S.PortForwardStart(namespace="default", name=name,
                                                                                    port=1))}[method]
                try:
                    if method in ("Logs", "Exec", "PortForward"):
                        if method == "Logs":
                            fn = ident.stub("gantry.v1.Sandboxes", "Logs", S.LogsRequest, S.LogChunk, streaming=True,
                                            replica=n % len(ident.c.replicas))
                        elif method == "Exec":
                            fn = ident.stub("gantry.v1.Sandboxes", "Exec", S.ExecRequest, S.ExecResponse, bidi=True,
                                            replica=n % len(ident.c.replicas))
                            req = iter([req])
                        else:
                            fn = ident.stub("gantry.v1.Sandboxes", "PortForward", S.PortForwardRequest,
                                            S.PortForwardResponse, bidi=True, replica=n % len(ident.c.replicas))
                            req = iter([req])
                        try:
                            list(fn(req, metadata=[("authorization", "Bearer " + ident.keys[role])], timeout=15))
                        except grpc.RpcError as e:
                            if e.code() != grpc.StatusCode.FAILED_PRECONDITION:
                                raise
                        code = ok
                    else:
                        out = ident.call(role, sandboxes_pb2, "Sandboxes", method, req,
                                         replica=n % len(ident.c.replicas))
                    code = ok
                    if method == "ListSharedWithMe":
                        names = {x.meta.name for x in out.sandboxes}
                        if (name in names) != (role in ("reader", "runner")):
                            failures.append("ListSharedWithMe as %s: %s listed=%s" % (role, name, name in names))
                except grpc.RpcError as e:
                    code = e.code()
                if code != expect:
                    failures.append("Sandboxes/%s as %s: expected %s, got %s" % (method, role, expect, code))
        print("ownership: %d sandbox calls for owner, read share, exec share, stranger and namespace admin" % n)
        return failures


class Principals(g.GantrydTest):
    def test_principals_bindings_and_keys(self):
        ident = Identity(self)
        P = principals_pb2

        def code(fn):
            with self.assertRaises(grpc.RpcError) as cm:
                fn()
            return cm.exception.code(), cm.exception.details()

        # Bad input: clear statuses.
        c, m = code(lambda: ident.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(
            principal=P.Principal(meta=ident.meta(name="Bad_Name"), kind=P.PRINCIPAL_KIND_USER))))
        self.assertEqual(c, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("principal.meta.name", m)
        c, _ = code(lambda: ident.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(
            principal=P.Principal(meta=ident.meta(name="p-user"), kind=P.PRINCIPAL_KIND_USER))))
        self.assertEqual(c, grpc.StatusCode.ALREADY_EXISTS)
        c, m = code(lambda: ident.call("pa", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
            binding=P.RoleBinding(principal_id=ident.ids["user"], role=P.ROLE_AUDITOR, namespace="default"))))
        self.assertEqual(c, grpc.StatusCode.INVALID_ARGUMENT)
        c, m = code(lambda: ident.call("pa", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
            binding=P.RoleBinding(principal_id=ident.ids["user"], role=P.ROLE_USER, namespace="nope"))))
        self.assertEqual(c, grpc.StatusCode.NOT_FOUND)
        # A namespace admin binds users in their namespace, nothing else.
        b = ident.call("na", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
            binding=P.RoleBinding(principal_id=ident.ids["other"], role=P.ROLE_USER, namespace="default")))
        self.assertEqual(b.namespace, "default")
        for role, ns in ((P.ROLE_NAMESPACE_ADMIN, "default"), (P.ROLE_NAMESPACE_ADMIN, "team-b"),
                         (P.ROLE_PLATFORM_ADMIN, ""), (P.ROLE_AUDITOR, ""), (P.ROLE_USER, "team-b")):
            c, m = code(lambda: ident.call("na", principals_pb2, "Principals", "CreateRoleBinding",
                                           P.CreateRoleBindingRequest(binding=P.RoleBinding(
                                               principal_id=ident.ids["na"], role=role, namespace=ns))))
            self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED, (role, ns))
            self.assertIn("platform_admin", m)
        r = ident.call("na", principals_pb2, "Principals", "DeleteRoleBinding", P.DeleteRoleBindingRequest(id=b.meta.id))
        self.assertEqual(r.id, b.meta.id)
        # WhoAmI shows the caller and its bindings.
        w = ident.call("user", principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest())
        self.assertEqual(w.principal.meta.name, "p-user")
        self.assertEqual([(x.role, x.namespace) for x in w.bindings], [(P.ROLE_USER, "default")])
        # Users see only themselves in lists; admins page through everyone.
        lst = ident.call("user", principals_pb2, "Principals", "List", P.ListPrincipalsRequest())
        self.assertEqual([p.meta.name for p in lst.principals], ["p-user"])
        names, token = [], ""
        while True:
            from gantry.v1 import meta_pb2
            page = ident.call("pa", principals_pb2, "Principals", "List", P.ListPrincipalsRequest(
                page=meta_pb2.PageRequest(page_size=2, page_token=token)))
            names += [p.meta.name for p in page.principals]
            token = page.next_page_token
            if not token:
                break
        self.assertEqual(sorted(names), sorted(["admin", "p-auditor", "p-na", "p-user", "p-sa", "p-other"]))
        # Optimistic concurrency.
        p = ident.call("pa", principals_pb2, "Principals", "Get", P.GetPrincipalRequest(id="p-sa"))
        c, m = code(lambda: ident.call("pa", principals_pb2, "Principals", "Update", P.UpdatePrincipalRequest(
            principal=P.Principal(meta=ident.meta(id=p.meta.id), display_name="x"),
            expected_resource_version=p.meta.resource_version + 1000)))
        self.assertEqual(c, grpc.StatusCode.ABORTED)
        u = ident.call("pa", principals_pb2, "Principals", "Update", P.UpdatePrincipalRequest(
            principal=P.Principal(meta=ident.meta(id=p.meta.id), display_name="robot"),
            expected_resource_version=p.meta.resource_version))
        self.assertEqual(u.display_name, "robot")
        self.assertGreater(u.meta.resource_version, p.meta.resource_version)
        # The last platform admin cannot lock the cluster out.
        c, m = code(lambda: ident.call("pa", principals_pb2, "Principals", "Delete", P.DeletePrincipalRequest(
            id=ident.ids["pa"])))
        self.assertEqual(c, grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("platform_admin", m)
        # API keys: secret once, listed without it, users see only their own; auditors cannot create.
        k = ident.call("user", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(name="laptop"))
        self.assertTrue(k.secret.startswith("gtk_" + k.key.meta.id))
        self.assertEqual(k.key.prefix, "gtk_" + k.key.meta.id)
        listed = ident.call("user", api_keys_pb2, "ApiKeys", "List", api_keys_pb2.ListApiKeysRequest())
        self.assertEqual(sorted(x.principal_id for x in listed.keys), [ident.ids["user"]] * 2)
        self.assertNotIn(k.secret.encode(), listed.SerializeToString())
        c, _ = code(lambda: ident.call("user", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
            principal_id=ident.ids["na"])))
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED)
        c, _ = code(lambda: ident.call("auditor", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest()))
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED)
        c, _ = code(lambda: ident.call("user", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
            expires_at_ms=1000)))
        self.assertEqual(c, grpc.StatusCode.INVALID_ARGUMENT)
        # Retries under a request_id return the first answer, except the key's secret, which is
        # never stored (not even in the idempotency record).
        req = api_keys_pb2.CreateApiKeyRequest(request_id="key-once", name="ci")
        first = ident.call("user", api_keys_pb2, "ApiKeys", "Create", req)
        again = ident.call("user", api_keys_pb2, "ApiKeys", "Create", req, replica=1)
        self.assertTrue(first.secret)
        self.assertEqual((again.key.meta.id, again.secret), (first.key.meta.id, ""))
        stored = ident.c.replicas[0].store("query", "SELECT hex(response) FROM idempotency")
        self.assertNotIn(first.secret.encode().hex().upper(), stored)
        b1 = ident.call("pa", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
            request_id="bind-once", binding=P.RoleBinding(principal_id=ident.ids["other"], role=P.ROLE_USER,
                                                          namespace="default")))
        b2 = ident.call("pa", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
            request_id="bind-once", binding=P.RoleBinding(principal_id=ident.ids["other"], role=P.ROLE_USER,
                                                          namespace="default")), replica=1)
        self.assertEqual(b1, b2)
        # Every identity write is audited, the refused ones too.
        from gantry.v1 import audit_pb2 as A
        from gantry.v1 import meta_pb2
        deadline = time.monotonic() + 5
        while True:  # failures are audited in a transaction of their own, just after the answer
            ops = [(e.api_operation, e.status) for e in ident.call("auditor", audit_pb2, "Audit", "Query",
                   A.QueryAuditRequest(page=meta_pb2.PageRequest(page_size=500))).events]
            if any(o == "/gantry.v1.Principals/Delete" for o, _ in ops) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for method in ("Principals/Create", "Principals/Update", "Principals/CreateRoleBinding",
                       "Principals/DeleteRoleBinding", "ApiKeys/Create"):
            self.assertIn("/gantry.v1." + method, {o for o, _ in ops}, method)
        self.assertTrue(any(o == "/gantry.v1.Principals/Delete" and st != "Success" for o, st in ops),
                        "the refused delete of the last platform_admin is audited")
        # A disabled principal's keys stop working.
        ident.call("pa", principals_pb2, "Principals", "Update", P.UpdatePrincipalRequest(
            principal=P.Principal(meta=ident.meta(id=ident.ids["sa"]), disabled=True)))
        time.sleep(2.5)
        c, m = code(lambda: ident.call("sa", principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest()))
        self.assertEqual(c, grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("disabled", m)


class Onboarding(g.GantrydTest):
    def test_namespace_admin_onboards_users_and_sets_quota_within_the_ceiling(self):
        """A namespace_admin creates users bound in its namespace, issues and revokes the API keys of
        the principals bound only there as users, and sets the namespace's quota within the ceiling
        a platform_admin set; nothing beyond (docs/security.md, docs/resources.md)."""
        from gantry.v1 import meta_pb2
        ident = Identity(self)
        P, K, Q, S = principals_pb2, api_keys_pb2, quotas_pb2, sandboxes_pb2

        def code(fn):
            try:
                fn()
            except grpc.RpcError as e:
                return e.code(), e.details()
            return grpc.StatusCode.OK, ""

        def create(role, name, ns="default", kind=P.PRINCIPAL_KIND_USER, **kw):
            return ident.call(role, principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(
                namespace=ns, principal=P.Principal(meta=ident.meta(name=name), kind=kind, **kw)))

        def bindings(pid):
            return [(b.role, b.namespace) for b in ident.call("pa", principals_pb2, "Principals", "ListRoleBindings",
                                                              P.ListRoleBindingsRequest(principal_id=pid)).bindings]

        def key_for(role, pid, replica=0):
            return ident.call(role, api_keys_pb2, "ApiKeys", "Create", K.CreateApiKeyRequest(principal_id=pid,
                                                                                           name="onboard"),
                              replica=replica)

        # Onboarding: a user bound in the admin's namespace with the user role, in one call.
        newbie = create("na", "newbie", oidc_issuer="corp", oidc_subject="newbie@corp")
        self.assertEqual(bindings(newbie.meta.id), [(P.ROLE_USER, "default")])
        self.assertEqual(newbie.meta.created_by, ident.ids["na"])
        for role, name, ns, kind, text in (("na", "x1", "team-b", P.PRINCIPAL_KIND_USER, "team-b"),
                                           ("na", "x2", "", P.PRINCIPAL_KIND_USER, "namespace"),
                                           ("na", "x3", "default", P.PRINCIPAL_KIND_SERVICE_ACCOUNT, "service"),
                                           ("user", "x4", "default", P.PRINCIPAL_KIND_USER, "platform_admin"),
                                           ("auditor", "x5", "default", P.PRINCIPAL_KIND_USER, "platform_admin")):
            c, m = code(lambda: create(role, name, ns, kind))
            self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED, (role, name, m))
            self.assertIn(text, m)
        c, m = code(lambda: create("pa", "x6", "no-such-ns"))
        self.assertEqual(c, grpc.StatusCode.NOT_FOUND, m)
        self.assertEqual(bindings(create("pa", "loner", "").meta.id), [])
        listed = {p.meta.name for p in ident.call("pa", principals_pb2, "Principals", "List",
                                                  P.ListPrincipalsRequest()).principals}
        self.assertFalse({"x1", "x2", "x3", "x4", "x5", "x6"} & listed, "a refused create stored a principal")

        # API keys of the principals it manages: bound only as users in namespaces it administers.
        k = key_for("na", newbie.meta.id, replica=1)
        who = ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), key=k.secret)
        self.assertEqual((who.principal.meta.id, [(b.role, b.namespace) for b in who.bindings]),
                         (newbie.meta.id, [(P.ROLE_USER, "default")]))
        self.assertEqual(k.key.meta.created_by, ident.ids["na"])
        got = ident.call("na", api_keys_pb2, "ApiKeys", "List", K.ListApiKeysRequest(principal_id=newbie.meta.id))
        self.assertEqual([x.meta.id for x in got.keys], [k.key.meta.id])
        self.assertEqual(ident.call("na", api_keys_pb2, "ApiKeys", "Get", K.GetApiKeyRequest(id=k.key.meta.id)).principal_id,
                         newbie.meta.id)
        key_for("na", ident.ids["user"])  # a user of default the platform admin made: managed too
        for target in ("other", "pa", "auditor"):  # bound elsewhere, or globally
            c, m = code(lambda: key_for("na", ident.ids[target]))
            self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED, (target, m))
            c, m = code(lambda: ident.call("na", api_keys_pb2, "ApiKeys", "List", K.ListApiKeysRequest(
                principal_id=ident.ids[target])))
            self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED, (target, m))
        c, m = code(lambda: key_for("na", ident.call("pa", principals_pb2, "Principals", "Get", P.GetPrincipalRequest(
            id="loner")).meta.id))
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED, m)
        self.assertIn("no role binding", m)
        c, m = code(lambda: key_for("user", newbie.meta.id))  # a plain user manages nobody
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED, m)
        other_key = ident.call("pa", api_keys_pb2, "ApiKeys", "Create", K.CreateApiKeyRequest(principal_id=ident.ids["other"]))
        c, m = code(lambda: ident.call("na", api_keys_pb2, "ApiKeys", "Get", K.GetApiKeyRequest(id=other_key.key.meta.id)))
        self.assertEqual(c, grpc.StatusCode.NOT_FOUND, m)  # not even confirmed to exist
        c, m = code(lambda: ident.call("na", api_keys_pb2, "ApiKeys", "Revoke", K.RevokeApiKeyRequest(
            id=other_key.key.meta.id)))
        self.assertEqual(c, grpc.StatusCode.NOT_FOUND, m)

        # The keys it issued keep the user from growing past what the admin could grant: another
        # binding is refused while they live, and allowed once they are revoked.
        for role, ns in ((P.ROLE_USER, "team-b"), (P.ROLE_AUDITOR, ""), (P.ROLE_NAMESPACE_ADMIN, "default")):
            c, m = code(lambda: ident.call("pa", principals_pb2, "Principals", "CreateRoleBinding",
                                           P.CreateRoleBindingRequest(binding=P.RoleBinding(
                                               principal_id=newbie.meta.id, role=role, namespace=ns))))
            self.assertEqual(c, grpc.StatusCode.FAILED_PRECONDITION, (role, ns, m))
            self.assertIn(k.key.meta.id, m)
        ident.call("na", api_keys_pb2, "ApiKeys", "Revoke", K.RevokeApiKeyRequest(id=k.key.meta.id), replica=2)
        t0 = time.monotonic()
        while True:  # the revocation reaches every replica within the bound
            c, m = code(lambda: ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(),
                                           key=k.secret, replica=1))
            if c == grpc.StatusCode.UNAUTHENTICATED:
                break
            self.assertLess(time.monotonic() - t0, 3.0, "a key revoked by the namespace admin still worked")
            time.sleep(0.1)
        ident.call("pa", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
            binding=P.RoleBinding(principal_id=newbie.meta.id, role=P.ROLE_USER, namespace="team-b")))
        c, m = code(lambda: key_for("na", newbie.meta.id))
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED, m)
        self.assertIn("team-b", m)

        # Quotas: only under a ceiling, and within it; the ceiling is enforced on its own, hard.
        def set_quota(role, ns="default", **kw):
            kw.setdefault("mode", Q.QUOTA_MODE_HARD)
            return ident.call(role, quotas_pb2, "Quotas", "Set", Q.SetQuotaRequest(quota=Q.Quota(
                meta=ident.meta(namespace=ns), **kw)))

        def set_ceiling(role, ns="default", **kw):
            return ident.call(role, quotas_pb2, "Quotas", "SetCeiling", Q.SetQuotaCeilingRequest(ceiling=Q.QuotaCeiling(
                meta=ident.meta(namespace=ns), **kw)))

        c, m = code(lambda: set_quota("na", max_concurrent_sandboxes=3))
        self.assertEqual(c, grpc.StatusCode.FAILED_PRECONDITION, m)
        self.assertIn("no quota ceiling", m)
        c, m = code(lambda: set_ceiling("na", max_concurrent_sandboxes=50))
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED, m)
        set_ceiling("pa", max_concurrent_sandboxes=5, max_lifetime_seconds=3600)
        q = set_quota("na", max_concurrent_sandboxes=3, max_lifetime_seconds=600, mode=Q.QUOTA_MODE_SOFT)
        self.assertEqual((q.max_concurrent_sandboxes, q.max_lifetime_seconds), (3, 600))
        for kw, field in ((dict(max_concurrent_sandboxes=6, max_lifetime_seconds=600), "max_concurrent_sandboxes 6"),
                          (dict(max_concurrent_sandboxes=0, max_lifetime_seconds=600), "(unlimited)"),
                          (dict(max_concurrent_sandboxes=5, max_lifetime_seconds=7200), "max_lifetime_seconds")):
            c, m = code(lambda: set_quota("na", **kw))
            self.assertEqual(c, grpc.StatusCode.FAILED_PRECONDITION, (kw, m))
            self.assertIn(field, m)
            self.assertIn("ceiling", m)
        c, m = code(lambda: set_quota("na", ns="team-b", max_concurrent_sandboxes=1))
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED, m)
        c, m = code(lambda: set_quota("user", max_concurrent_sandboxes=1))
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED, m)
        got = ident.call("user", quotas_pb2, "Quotas", "Get", Q.GetQuotaRequest(namespace="default"))
        self.assertEqual((got.quota.max_concurrent_sandboxes, got.ceiling.max_concurrent_sandboxes,
                          got.ceiling.max_lifetime_seconds), (3, 5, 3600))
        self.assertIn("default", [x.usage.namespace for x in ident.call("pa", quotas_pb2, "Quotas", "List",
                                                                           Q.ListQuotasRequest()).quotas])
        # The platform admin lowers the ceiling under the quota: the ceiling wins, hard, though the
        # quota is soft.
        set_ceiling("pa", max_concurrent_sandboxes=2, max_lifetime_seconds=3600)
        made = []
        for i in range(3):
            c, m = code(lambda: made.append(ident.call("user", sandboxes_pb2, "Sandboxes", "Create",
                                                       S.CreateSandboxRequest(sandbox=S.Sandbox(
                                                           meta=ident.meta(name="cap-%d" % i, namespace="default"),
                                                           spec=S.SandboxSpec(image="busybox"))))))
            if i < 2:
                self.assertEqual(c, grpc.StatusCode.OK, m)
            else:
                self.assertEqual(c, grpc.StatusCode.RESOURCE_EXHAUSTED, m)
                self.assertIn("quota ceiling of namespace \"default\": at most 2 concurrent sandboxes", m)
        self.assertEqual([x.spec.lifetime_seconds for x in made], [600, 600], "the quota's lifetime is the default")
        c, m = code(lambda: ident.call("user", sandboxes_pb2, "Sandboxes", "Create", S.CreateSandboxRequest(
            sandbox=S.Sandbox(meta=ident.meta(name="long", namespace="default"),
                              spec=S.SandboxSpec(image="busybox", lifetime_seconds=4000)))))
        self.assertEqual(c, grpc.StatusCode.RESOURCE_EXHAUSTED, m)
        self.assertIn("ceiling", m)
        for x in made:
            ident.call("user", sandboxes_pb2, "Sandboxes", "Delete", S.DeleteSandboxRequest(namespace="default",
                                                                                          name=x.meta.name))
        # Removing the quota leaves the ceiling; without a ceiling the quota is the platform admin's.
        ident.call("na", quotas_pb2, "Quotas", "Delete", Q.DeleteQuotaRequest(namespace="default"))
        got = ident.call("na", quotas_pb2, "Quotas", "Get", Q.GetQuotaRequest(namespace="default"))
        self.assertFalse(got.HasField("quota"))
        self.assertEqual(got.ceiling.max_concurrent_sandboxes, 2)
        c, m = code(lambda: set_quota("pa", max_concurrent_sandboxes=1))  # a quota fits its ceiling, whoever sets it
        self.assertEqual(c, grpc.StatusCode.FAILED_PRECONDITION, m)
        set_quota("pa", max_concurrent_sandboxes=1, max_lifetime_seconds=600)
        ident.call("pa", quotas_pb2, "Quotas", "DeleteCeiling", Q.DeleteQuotaCeilingRequest(namespace="default"))
        for fn in (lambda: set_quota("na", max_concurrent_sandboxes=1),
                   lambda: ident.call("na", quotas_pb2, "Quotas", "Delete", Q.DeleteQuotaRequest(namespace="default"))):
            c, m = code(fn)
            self.assertEqual(c, grpc.StatusCode.FAILED_PRECONDITION, m)
        set_quota("pa", max_concurrent_sandboxes=100)  # no ceiling: the platform admin's own
        # WhoAmI says what the namespace admin may now do, and where.
        perms = {(p.method, p.namespace): p.condition for p in ident.call(
            "na", principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest()).permissions}
        self.assertIn(("/gantry.v1.Principals/Create", "default"), perms)
        self.assertIn(("/gantry.v1.Quotas/Set", "default"), perms)
        self.assertIn("ceiling", perms[("/gantry.v1.Quotas/Set", "default")])
        self.assertIn("administer", perms[("/gantry.v1.ApiKeys/Create", "")])
        self.assertNotIn(("/gantry.v1.Quotas/SetCeiling", ""), perms)
        print("onboarding: a namespace admin created a user in its namespace, issued and revoked its key, "
              "set the quota within the ceiling; every step beyond refused")


class Revocation(g.GantrydTest):
    def test_revoked_and_expired_keys_stop_on_every_replica(self):
        ident = Identity(self)
        P = principals_pb2
        k = ident.call("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
            principal_id=ident.ids["user"]))
        # Warm the other replica's cache, then revoke on the first and poll the second.
        ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), replica=1, key=k.secret)
        t0 = time.monotonic()
        ident.call("pa", api_keys_pb2, "ApiKeys", "Revoke", api_keys_pb2.RevokeApiKeyRequest(id=k.key.meta.id))
        while True:
            try:
                ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), replica=1, key=k.secret)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.UNAUTHENTICATED)
                self.assertIn("revoked", e.details())
                break
            self.assertLess(time.monotonic() - t0, 3.0, "a revoked key still worked after 3 s")
            time.sleep(0.05)
        bound = (time.monotonic() - t0) * 1000
        # Expiry: a key that expires in 1.5 s works, then stops on every replica.
        exp = ident.call("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
            principal_id=ident.ids["user"], expires_at_ms=int(time.time() * 1000) + 1500))
        ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), replica=1, key=exp.secret)
        time.sleep(1.7)
        for rep in (0, 1):
            with self.assertRaises(grpc.RpcError) as cm:
                ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), replica=rep, key=exp.secret)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            self.assertIn("expired", cm.exception.details())
        # Failed attempts from one source (issue 15, item 7): a bad credential presented again is refused
        # without a check; many different bad ones put the source over its limit (RESOURCE_EXHAUSTED for
        # credentials this replica has not verified); a credential it verified recently still works from
        # that source, in the middle of the attack and after it.
        good = ident.keys["user"]
        ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), replica=1, key=good)
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        bads = [good[:-6] + letters[i % 26] + letters[i // 26] + good[-4:] for i in range(1, 31)]
        bads = [b for b in bads if b != good][:25]
        codes, messages = [], []
        for i, bad in enumerate(bads):
            for attempt in range(2 if i == 0 else 1):
                try:
                    ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), replica=1, key=bad)
                except grpc.RpcError as e:
                    codes.append(e.code())
                    messages.append(e.details())
            if i == 12:  # mid-attack, the known credential is served
                ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), replica=1, key=good)
        self.assertEqual(codes[0], grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("does not match", messages[0])
        self.assertEqual(codes[1], grpc.StatusCode.UNAUTHENTICATED)  # the same bad key again: not checked
        self.assertIn("refused less than", messages[1])
        self.assertEqual(codes[-1], grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("too many failed authentication attempts", messages[-1])
        # Refused at admission, for whatever status, is a failed authentication (class 3002), like the
        # refusals that came before it: an auditor counting refused logons finds them all in one class.
        deadline, details = time.monotonic() + 10, []
        while time.monotonic() < deadline:
            rows = ident.call("auditor", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(
                class_uid=3002, status="Failure", page=meta_pb2.PageRequest(page_size=500)), replica=0).events
            details = [json.loads(x.ocsf_json).get("status_detail", "") for x in rows
                       if x.api_operation == "/gantry.v1.Principals/WhoAmI"]
            if any("too many failed authentication attempts" in d for d in details):
                break
            time.sleep(0.2)
        self.assertTrue(any("too many failed authentication attempts" in d for d in details), details)
        who = ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), replica=1, key=good)
        self.assertEqual(who.principal.meta.id, ident.ids["user"])
        print("revocation reached the other replica after %.0f ms (bound: 2000 ms cache)" % bound)

    def test_a_watch_ends_with_its_credential(self):
        """A watch outlives the authentication of its call, not its credential: revoking the API key
        it was opened with, or the key expiring, ends it with UNAUTHENTICATED on the replica that
        serves it within the revocation bound; a watch on another key of the same principal goes on."""
        S = sandboxes_pb2
        ident = Identity(self)

        def key(**kw):
            return ident.call("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
                principal_id=ident.ids["user"], **kw))

        def watch(secret):
            out = ident.stub("gantry.v1.Sandboxes", "Watch", S.WatchSandboxesRequest, S.SandboxEvent, streaming=True,
                             replica=1)(S.WatchSandboxesRequest(namespace="default"),
                                        metadata=[("authorization", "Bearer " + secret)], timeout=60)
            ended = []

            def drain():
                try:
                    for _ in out:
                        pass
                    ended.append((grpc.StatusCode.OK, "", time.monotonic()))
                except grpc.RpcError as err:
                    ended.append((err.code(), err.details(), time.monotonic()))
            t = threading.Thread(target=drain, daemon=True)
            t.start()
            return out, ended, t

        revoked, kept = key(), key()
        w1, ended1, t1 = watch(revoked.secret)
        w2, ended2, t2 = watch(kept.secret)
        time.sleep(0.5)
        # Each credential is checked again every second, from the serving replica's change-feed
        # models (the key, the principal, its bindings) and its sandboxes model's shares: no store read.
        r = ident.c.replicas[1]
        before = [r.metric(m) or 0 for m in ("gantry_authn_store_rechecks_total", "gantry_authn_model_answers_total")]
        time.sleep(2.2)
        self.assertEqual((r.metric("gantry_authn_store_rechecks_total") or 0) - before[0], 0,
                         "a watch's credential was checked against the store")
        self.assertGreaterEqual((r.metric("gantry_authn_model_answers_total") or 0) - before[1], 2)
        self.assertEqual((ended1, ended2), ([], []), "a watch ended by itself")
        t0 = time.monotonic()
        ident.call("pa", api_keys_pb2, "ApiKeys", "Revoke", api_keys_pb2.RevokeApiKeyRequest(id=revoked.key.meta.id))
        t1.join(timeout=10)
        self.assertEqual(len(ended1), 1, "the watch of a revoked key still runs")
        self.assertEqual(ended1[0][0], grpc.StatusCode.UNAUTHENTICATED, ended1)
        self.assertIn("API key was revoked", ended1[0][1])
        self.assertLess(ended1[0][2] - t0, 3.0)
        self.assertEqual(ended2, [], "the watch of another key ended too")
        w2.cancel()
        # A key that expires while its watch runs.
        exp = key(expires_at_ms=int(time.time() * 1000) + 1500)
        w3, ended3, t3 = watch(exp.secret)
        t3.join(timeout=10)
        self.assertEqual(len(ended3), 1, "the watch of an expired key still runs")
        self.assertEqual(ended3[0][0], grpc.StatusCode.UNAUTHENTICATED, ended3)
        self.assertIn("credential expired", ended3[0][1])
        print("a watch ended %.1f s after its key was revoked; one on an expiring key ended at expiry"
              % (ended1[0][2] - t0))


def b64url(data):
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


KUBE_ISSUER = "https://kubernetes.default.svc.cluster.local"
TR_ISSUER = "https://kube-tr.test"  # a cluster issuer gantryd verifies by TokenReview only (no JWKS)


def projected_claims(ns, sa, pod="ctrl-0"):
    """The claims a Kubernetes API server puts in a projected ServiceAccount token (besides iss,
    sub, aud, iat, exp): nbf and the kubernetes.io object references."""
    return {"nbf": int(time.time()) - 5,
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": "7e1f0c1a-0d4b-4c8e-9f7a-1"},
                              "pod": {"name": pod, "uid": "0b9d2c3e-6a1f-4f55-8e11-2"}}}


class OidcFixture:
    """A 1-replica cluster trusting three OIDC issuers, from JWKS files written here with keys
    generated here: "corp" (RS256), "partner" (ES256) and "kube" (RS256, the issuer of a
    Kubernetes cluster's projected ServiceAccount tokens)."""

    def __init__(self, test, extra_flags=(), kube=None, more=(), replicas=1):
        import json
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        pub = self.rsa.public_key().public_numbers()
        ecpub = self.ec.public_key().public_numbers()
        root = os.path.join(g.WORK, "oidc-files-" + test._testMethodName)
        os.makedirs(root)
        jwks = {
            "corp": {"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig",
                               "n": b64url(pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")),
                               "e": b64url(pub.e.to_bytes(3, "big"))}]},
            "partner": {"keys": [{"kty": "EC", "kid": "p1", "alg": "ES256", "use": "sig", "crv": "P-256",
                                  "x": b64url(ecpub.x.to_bytes(32, "big")),
                                  "y": b64url(ecpub.y.to_bytes(32, "big"))}]}}
        issuers = []
        for name, keys in jwks.items():
            path = os.path.join(root, name + ".jwks.json")
            with open(path, "w") as f:
                json.dump(keys, f)
            issuers.append({"name": name, "issuer": "https://%s.test" % name, "audiences": ["gantry"],
                            "jwks_file": path})
        issuers.append({"name": "kube", "issuer": KUBE_ISSUER, "audiences": ["gantry"],
                        "jwks_file": os.path.join(root, "corp.jwks.json")})
        issuers[-1].update(kube or {})
        # (An issuer verified by TokenReview only has no JWKS.)
        issuers += [dict(i) if i.get("verify") == "token_review" else dict(i, jwks_file=os.path.join(root, "corp.jwks.json"))
                    for i in more]
        cfg = os.path.join(root, "issuers.json")
        with open(cfg, "w") as f:
            json.dump({"oidc_issuers": issuers}, f)
        self.c = g.Cluster("oidc-" + test._testMethodName, run_flags=["--oidc-issuers-file", cfg] + list(extra_flags)).init()
        test.clusters.append(self.c)
        if replicas > 1:
            self.c.join(replicas - 1)
        self.c.wait_ready()
        self.ident = Identity.__new__(Identity)
        self.ident.c, self.ident.keys, self.ident.ids = self.c, {"pa": self.c.key}, {}

    def token(self, sub, exp_in=300, alg=None, aud="gantry", issuer="corp", iss=None, nbf_in=None, sign=True,
              kid=None, hmac_secret=None, extra=None):
        import hashlib
        import hmac
        import json
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
        rsa = issuer in ("corp", "kube")
        alg = alg or ("RS256" if rsa else "ES256")
        now = int(time.time())
        header = b64url(json.dumps({"alg": alg, "kid": kid or ("k1" if rsa else "p1"),
                                    "typ": "JWT"}).encode())
        claims = {"iss": iss or (KUBE_ISSUER if issuer == "kube" else "https://%s.test" % issuer), "aud": aud,
                  "sub": sub, "iat": now, "exp": now + exp_in}
        claims.update(extra or {})
        if nbf_in is not None:
            claims["nbf"] = now + nbf_in
        payload = b64url(json.dumps(claims).encode())
        signing = (header + "." + payload).encode()
        sig = b""
        if hmac_secret is not None:
            sig = hmac.new(hmac_secret, signing, hashlib.sha256).digest()
        elif sign and alg == "RS256":
            sig = self.rsa.sign(signing, padding.PKCS1v15(), hashes.SHA256())
        elif sign and alg == "ES256":
            r, s_ = utils.decode_dss_signature(self.ec.sign(signing, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s_.to_bytes(32, "big")
        return header + "." + payload + "." + b64url(sig)


class Oidc(g.GantrydTest):
    def test_oidc_tokens_authenticate_registered_principals(self):
        from cryptography.hazmat.primitives import serialization
        oidc = OidcFixture(self)
        ident, P = oidc.ident, principals_pb2
        for name, issuer in (("alice", "corp"), ("bob", "partner")):
            p = ident.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(principal=P.Principal(
                meta=Identity.meta(name=name), kind=P.PRINCIPAL_KIND_USER, oidc_issuer=issuer, oidc_subject=name)))
            ident.call("pa", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
                binding=P.RoleBinding(principal_id=p.meta.id, role=P.ROLE_USER, namespace="default")))
        who = ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), key=oidc.token("alice"))
        self.assertEqual(who.principal.meta.name, "alice")
        self.assertEqual([(b.role, b.namespace) for b in who.bindings], [(P.ROLE_USER, "default")])
        who = ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(),
                         key=oidc.token("bob", issuer="partner"))
        self.assertEqual(who.principal.meta.name, "bob", "ES256 from the second issuer")
        # Within the leeway (60 s) an expired token still passes; beyond it, not.
        ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), key=oidc.token("alice", exp_in=-20))
        rsa_pem = oidc.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)
        for bad, why in ((oidc.token("alice", exp_in=-600), "expired"),
                         (oidc.token("alice", alg="none", sign=False), "none"),
                         (oidc.token("alice", alg="HS256", hmac_secret=rsa_pem), "hs256"),
                         (oidc.token("alice", sign=False), "signature"),
                         (oidc.token("alice", nbf_in=600), "not"),
                         (oidc.token("alice", iss="https://evil.test"), "issuer"),
                         (oidc.token("alice", aud="other"), "audience"),
                         (oidc.token("alice", kid="unknown"), "unknown key id"),
                         (oidc.token("alice", issuer="partner"), "no principal is registered"),
                         (oidc.token("bob"), "no principal is registered")):
            with self.assertRaises(grpc.RpcError) as cm:
                ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), key=bad)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED, why)
            self.assertIn(why, cm.exception.details().lower() if why != "none" else cm.exception.details(), why)


    def test_platform_controller_with_a_projected_service_account_token(self):
        """A platform controller's service account authenticates without a long-lived key: with the
        projected ServiceAccount token its pod gets from Kubernetes, verified as an OIDC token of the
        cluster's issuer, its subject (system:serviceaccount:NS:NAME) registered on the principal; the
        delegation scope bounds what it may do, as for a key."""
        oidc = OidcFixture(self)
        ident, P, S = oidc.ident, principals_pb2, sandboxes_pb2
        subject = "system:serviceaccount:platform:sandbox-controller"
        ctrl = ident.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(principal=P.Principal(
            meta=Identity.meta(name="sandbox-controller"), kind=P.PRINCIPAL_KIND_SERVICE_ACCOUNT, oidc_issuer="kube",
            oidc_subject=subject)))
        self.assertEqual((ctrl.oidc_issuer, ctrl.oidc_subject), ("kube", subject))
        ident.call("pa", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
            binding=P.RoleBinding(principal_id=ctrl.meta.id, role=P.ROLE_USER,
                                  delegation=P.DelegationScope(namespace_patterns=["team-*"]))))
        for ns in ("team-a", "ops"):
            ident.call("pa", namespaces_pb2, "Namespaces", "Create", namespaces_pb2.CreateNamespaceRequest(
                namespace=namespaces_pb2.Namespace(meta=meta_pb2.ObjectMeta(name=ns))))
        tok = oidc.token(subject, issuer="kube", exp_in=3600, extra=projected_claims("platform", "sandbox-controller"))
        who = ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), key=tok)
        self.assertEqual((who.principal.meta.id, who.authenticated_via), (ctrl.meta.id, "oidc"))

        def create(name, ns, key=tok):
            return ident.call(None, sandboxes_pb2, "Sandboxes", "Create", S.CreateSandboxRequest(sandbox=S.Sandbox(
                meta=meta_pb2.ObjectMeta(name=name, namespace=ns), spec=S.SandboxSpec(image="busybox"))), key=key)

        sb = create("agent-1", "team-a")
        self.assertEqual((sb.meta.namespace, sb.meta.created_by), ("team-a", ctrl.meta.id))
        with self.assertRaises(grpc.RpcError) as cm:  # outside its delegation scope
            create("agent-2", "ops")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("ops", cm.exception.details())
        # Another service account of the cluster, the same one in another namespace, or a token for
        # another audience: not this principal.
        for bad, why in ((oidc.token("system:serviceaccount:platform:other", issuer="kube"), "no principal"),
                         (oidc.token("system:serviceaccount:team-a:sandbox-controller", issuer="kube"), "no principal"),
                         (oidc.token(subject, issuer="kube", aud="https://kubernetes.default.svc"), "audience"),
                         (oidc.token(subject, issuer="kube", exp_in=-600), "expired")):
            with self.assertRaises(grpc.RpcError) as cm:
                create("agent-x", "team-a", key=bad)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED, why)
            self.assertIn(why, cm.exception.details())
        # Its client certificate name can be linked to it too (links work for service accounts).
        link = ident.call("pa", principals_pb2, "Principals", "LinkIdentity", P.LinkIdentityRequest(
            identity=P.ExternalIdentity(principal_id="sandbox-controller", issuer="mtls", subject="sandbox-controller")))
        self.assertEqual(link.principal_id, ctrl.meta.id)


class TokenReview(g.GantrydTest):
    def test_projected_token_checked_with_tokenreview(self):
        """An issuer with token_review: a projected-token-shaped JWT that passes the JWKS checks
        authenticates only while the API server's TokenReview says yes. Once the fake API server is
        told its ServiceAccount is deleted, the same unexpired token is refused on every replica
        within the documented bound (TokenReview cache 1 s, under the 2 s revocation bound); a
        TokenReview that cannot be done (API server down, gantryd's own token refused) is
        UNAVAILABLE, never UNAUTHENTICATED and never a success. gantryd reviews with a token that
        has exactly the RBAC the Helm chart renders for rbac.tokenReview (the fixture
        tests/drivers/rbac/tokenreview-gw-tr.json, kept equal to the chart by helm_check); a token
        with the chart's RBAC without it is refused (403). Deleting the pod a token is bound to
        also cuts that token off.

        A second Kubernetes issuer, "kube-tr", has verify "token_review" and no JWKS at all: the
        fake API server is given the cluster's signing key (as a real one checks its own tokens),
        so a token it signed is accepted while a forged one (another key) is refused by the API
        server and so by gantryd; an unsigned one, an expired one, or one without the
        kubernetes.io claims is refused locally; its deleted ServiceAccount and the API server
        down behave as above."""
        from test_reconciler import KubeApi
        rbac_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "drivers", "rbac")
        root = os.path.join(g.WORK, "kubeapi-tokens-" + self._testMethodName)
        os.makedirs(root)
        chart, plain, wrong = (os.path.join(root, n) for n in ("chart-token", "plain-token", "wrong-token"))
        for path, text in ((chart, "chart-tokenreview-token"), (plain, "chart-without-tokenreview"),
                           (wrong, "not-the-token")):
            with open(path, "w") as f:
                f.write(text + "\n")
        api = KubeApi(self, "--identity", chart + "=" + os.path.join(rbac_dir, "tokenreview-gw-tr.json"),
                      "--identity", plain + "=" + os.path.join(rbac_dir, "managed-gw-b.json"))
        base = "https://127.0.0.1:%d" % api.port
        review = {"token_review": True, "token_review_url": base, "ca_file": api.cert, "bearer_token_file": chart}
        oidc = OidcFixture(self, kube=review, replicas=2, more=[
            dict(review, name="kube2", issuer="https://kube2.test", audiences=["gantry"], bearer_token_file=wrong),
            dict(review, name="kube3", issuer="https://kube3.test", audiences=["gantry"], bearer_token_file=plain),
            dict(review, name="kube-tr", issuer=TR_ISSUER, audiences=["gantry"], verify="token_review")])
        ident, P = oidc.ident, principals_pb2
        subject = "system:serviceaccount:platform:sandbox-controller"
        ctrl = ident.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(principal=P.Principal(
            meta=Identity.meta(name="sandbox-controller"), kind=P.PRINCIPAL_KIND_SERVICE_ACCOUNT, oidc_issuer="kube",
            oidc_subject=subject)))
        tok = oidc.token(subject, issuer="kube", exp_in=3600, extra=projected_claims("platform", "sandbox-controller"))

        def whoami(replica, key=tok):
            return ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), key=key,
                              replica=replica)

        def refused(replica, key=tok):
            with self.assertRaises(grpc.RpcError) as cm:
                whoami(replica, key)
            return cm.exception.code(), cm.exception.details()

        for r in (0, 1):
            self.assertEqual(whoami(r).principal.meta.id, ctrl.meta.id)
        # The API server was asked, with gantryd's token (the chart's RBAC), for the audience configured.
        code, stats = api.request("GET", "/_fake/stats")
        self.assertGreaterEqual(stats["requests"].get("system:serviceaccount:gantry-tr:gantry-tr", 0), 2, stats)
        # Another audience: the JWKS checks refuse it before any TokenReview.
        code, why = refused(0, oidc.token(subject, issuer="kube", aud="https://kubernetes.default.svc"))
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("audience", why)

        # verify "token_review" (kube-tr, no JWKS): the API server checks the signature with the
        # cluster's key; gantryd never saw that key.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        pem = oidc.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        self.assertEqual(api.request("POST", "/_fake/tokenreview-key", {"pem": pem})[0], 200)
        tr_sub = "system:serviceaccount:platform:tr-controller"
        tr = ident.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(principal=P.Principal(
            meta=Identity.meta(name="tr-controller"), kind=P.PRINCIPAL_KIND_SERVICE_ACCOUNT, oidc_issuer="kube-tr",
            oidc_subject=tr_sub)))

        def tr_token(sub=tr_sub, sa="tr-controller", key=None, **kw):
            saved = oidc.rsa
            oidc.rsa = key or saved
            try:
                return oidc.token(sub, issuer="kube", iss=TR_ISSUER, **dict(dict(
                    exp_in=3600, extra=projected_claims("platform", sa)), **kw))
            finally:
                oidc.rsa = saved

        tr_tok = tr_token()
        for r in (0, 1):
            self.assertEqual(whoami(r, tr_tok).principal.meta.id, tr.meta.id)
        forged = tr_token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
        for bad, why in ((forged, "cryptographic primitive"),  # the API server's refusal
                         (tr_token(sign=False), "unsigned"),
                         (tr_token(alg="none", sign=False), "none"),
                         (tr_token(exp_in=-600), "expired"),
                         (tr_token(aud="https://kubernetes.default.svc"), "audience"),
                         (tr_token(extra={}), "kubernetes.io")):
            code, details = refused(0, bad)
            self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, (why, details))
            self.assertIn(why, details)

        # The ServiceAccount is deleted: the unexpired token stops working on every replica.
        for sa in ("sandbox-controller", "tr-controller"):
            code, out = api.request("POST", "/_fake/serviceaccount", {"namespace": "platform", "name": sa, "deleted": True})
            self.assertEqual(code, 200, out)
        t0 = time.monotonic()
        for r, key in ((0, tok), (1, tok), (0, tr_tok), (1, tr_tok)):
            while True:
                try:
                    whoami(r, key)
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), grpc.StatusCode.UNAUTHENTICATED)
                    self.assertIn("not found", e.details())
                    self.assertIn("TokenReview", e.details())
                    self.assertNotIn(key.split(".")[1], e.details())
                    break
                self.assertLess(time.monotonic() - t0, 2.0, "replica %d still accepted the token after 2 s" % r)
                time.sleep(0.05)
        # A token of a ServiceAccount the API server still knows keeps working meanwhile.
        other = "system:serviceaccount:platform:other-controller"
        ident.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(principal=P.Principal(
            meta=Identity.meta(name="other-controller"), kind=P.PRINCIPAL_KIND_SERVICE_ACCOUNT, oidc_issuer="kube",
            oidc_subject=other)))
        other_tok = oidc.token(other, issuer="kube", extra=projected_claims("platform", "other-controller"))
        bound_tok = oidc.token(other, issuer="kube", extra=projected_claims("platform", "other-controller",
                                                                            pod="other-1"))
        for r in (0, 1):
            self.assertEqual(whoami(r, other_tok).principal.meta.name, "other-controller")
            self.assertEqual(whoami(r, bound_tok).principal.meta.name, "other-controller")
        # The pod bound_tok is bound to is deleted: that token stops working on every replica, the
        # same ServiceAccount's token bound to another pod does not.
        code, out = api.request("POST", "/_fake/boundpod", {"namespace": "platform", "name": "other-1", "deleted": True})
        self.assertEqual(code, 200, out)
        t0 = time.monotonic()
        for r in (0, 1):
            while True:
                try:
                    whoami(r, bound_tok)
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), grpc.StatusCode.UNAUTHENTICATED)
                    self.assertIn("has been invalidated", e.details())
                    break
                self.assertLess(time.monotonic() - t0, 2.0, "replica %d still accepted the token after 2 s" % r)
                time.sleep(0.05)
            self.assertEqual(whoami(r, other_tok).principal.meta.name, "other-controller")

        # gantryd's own bearer token is refused by the API server: UNAVAILABLE, saying so.
        ident.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(principal=P.Principal(
            meta=Identity.meta(name="ctrl2"), kind=P.PRINCIPAL_KIND_SERVICE_ACCOUNT, oidc_issuer="kube2",
            oidc_subject=subject)))
        code, why = refused(0, oidc.token(subject, issuer="kube", iss="https://kube2.test"))
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, why)
        self.assertIn("HTTP status 401", why)
        # ... or allowed everything the chart grants the driver but not TokenReviews (no
        # rbac.tokenReview): 403.
        ident.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(principal=P.Principal(
            meta=Identity.meta(name="ctrl3"), kind=P.PRINCIPAL_KIND_SERVICE_ACCOUNT, oidc_issuer="kube3",
            oidc_subject=subject)))
        code, why = refused(0, oidc.token(subject, issuer="kube", iss="https://kube3.test"))
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, why)
        self.assertIn("HTTP status 403", why)

        # The API server is down: UNAVAILABLE with a clear message, on both replicas.
        api.stop()
        time.sleep(1.1)  # past the cache of the last positive answer
        for r in (0, 1):
            code, why = refused(r, other_tok)
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, why)
            self.assertIn("cannot check the token with the API server of issuer kube", why)
            self.assertNotIn(other_tok.split(".")[1], why)
            # ... and for the issuer without JWKS: UNAVAILABLE, never accepted.
            code, why = refused(r, tr_token(sub="system:serviceaccount:platform:tr-other", sa="tr-other"))
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, why)
            self.assertIn("cannot check the token with the API server of issuer kube-tr", why)


class Mtls(g.GantrydTest):
    def test_client_certificates_map_to_principals(self):
        import subprocess
        root = os.path.join(g.WORK, "mtls-files-" + self._testMethodName)
        os.makedirs(root)

        def openssl(*args):
            subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=root)

        for ca in ("ca", "rogue"):  # the configured client CA, and another one
            openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                    ca + ".key", "-out", ca + ".crt", "-days", "2", "-subj", "/CN=" + ca)
        for name, ca in (("carol-laptop", "ca"), ("dave", "ca"), ("carol-rogue", "rogue")):
            openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", name + ".key",
                    "-out", name + ".csr", "-subj", "/CN=" + name.replace("-rogue", "-laptop"))
            openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
                    "-CAcreateserial", "-out", name + ".crt", "-days", "2")
        c = g.Cluster("mtls-" + self._testMethodName,
                      run_flags=["--api-tls-client-ca", os.path.join(root, "ca.crt")]).init()
        self.clusters.append(c)
        c.wait_ready()
        ident = Identity.__new__(Identity)
        ident.c, ident.keys, ident.ids = c, {"pa": c.key}, {}
        P = principals_pb2
        carol = ident.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(principal=P.Principal(
            meta=Identity.meta(name="carol"), kind=P.PRINCIPAL_KIND_USER, oidc_issuer="mtls",
            oidc_subject="carol-laptop")))

        def whoami(name):
            read = lambda f: open(os.path.join(root, f), "rb").read()  # noqa: E731
            creds = grpc.ssl_channel_credentials(root_certificates=c.client.ca, private_key=read(name + ".key"),
                                                 certificate_chain=read(name + ".crt"))
            ch = grpc.secure_channel(c.replicas[0].api, creds,
                                     options=[("grpc.ssl_target_name_override", "localhost")])
            try:
                return ch.unary_unary("/gantry.v1.Principals/WhoAmI",
                                      request_serializer=P.WhoAmIRequest.SerializeToString,
                                      response_deserializer=P.WhoAmIResponse.FromString)(P.WhoAmIRequest(), timeout=15)
            finally:
                ch.close()

        w = whoami("carol-laptop")
        self.assertEqual((w.principal.meta.id, w.authenticated_via), (carol.meta.id, "mtls"))
        with self.assertRaises(grpc.RpcError) as cm:  # a valid certificate nobody is mapped to
            whoami("dave")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("dave", cm.exception.details())
        with self.assertRaises(grpc.RpcError) as cm:  # the same name from another CA never gets in
            whoami("carol-rogue")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        # Linking maps a second certificate name to the same principal.
        ident.call("pa", principals_pb2, "Principals", "LinkIdentity", P.LinkIdentityRequest(
            identity=P.ExternalIdentity(principal_id="carol", issuer="mtls", subject="dave")))
        self.assertEqual(whoami("dave").principal.meta.id, carol.meta.id)
        # Once the feed has them, both names are found in the principals and links models, not by
        # a store query per call (docs/security.md).
        time.sleep(0.3)
        answered = c.replicas[0].metric("gantry_authn_model_answers_total") or 0
        for name in ("carol-laptop", "dave"):
            self.assertEqual(whoami(name).principal.meta.id, carol.meta.id)
        self.assertGreaterEqual((c.replicas[0].metric("gantry_authn_model_answers_total") or 0) - answered, 2)


class Delegation(g.GantrydTest):
    def test_delegated_service_account_stays_in_scope(self):
        ident = Identity(self)
        P, S = principals_pb2, sandboxes_pb2
        r1 = ident.c.replicas[0]
        for ns in ("team-c", "ops"):
            r1.store("exec", "INSERT INTO namespaces (id, name, phase, labels, annotations, created_by, "
                     "resource_version, created_at_ms, updated_at_ms, deletion_timestamp_ms) VALUES ('ns-%s', '%s', "
                     "'ACTIVE', '{}', '{}', 'test', 1, 0, 0, 0)" % (ns, ns))

        def code(fn):
            with self.assertRaises(grpc.RpcError) as cm:
                fn()
            return cm.exception.code(), cm.exception.details()

        def principal(name, kind):
            p = ident.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(
                principal=P.Principal(meta=ident.meta(name=name), kind=kind)))
            ident.ids[name] = p.meta.id
            ident.keys[name] = ident.call("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
                principal_id=p.meta.id)).secret
            return p.meta.id

        def bind(role_key, pid, role, ns="", scope=None):
            b = P.RoleBinding(principal_id=pid, role=role, namespace=ns)
            if scope is not None:
                b.delegation.CopyFrom(scope)
            return ident.call(role_key, principals_pb2, "Principals", "CreateRoleBinding",
                              P.CreateRoleBindingRequest(binding=b))

        ctrl = principal("ctrl", P.PRINCIPAL_KIND_SERVICE_ACCOUNT)
        narrow = principal("narrow", P.PRINCIPAL_KIND_SERVICE_ACCOUNT)
        scope = P.DelegationScope(namespace_patterns=["team-*"], allowed_driver_config_keys=["kubernetes.node_selector"],
                                  allowed_node_selectors=["pool=agents"], allowed_credential_sources=["gh-*"],
                                  create_on_behalf_of_owner=True)
        # Only a platform admin grants a scope; only to a service account, for user or
        # namespace_admin, with patterns and no namespace of its own; bad input changes nothing.
        for who, pid, role, ns, sc, want in (
                ("na", ctrl, P.ROLE_USER, "", scope, grpc.StatusCode.PERMISSION_DENIED),
                ("pa", ident.ids["user"], P.ROLE_USER, "", scope, grpc.StatusCode.INVALID_ARGUMENT),
                ("pa", ctrl, P.ROLE_USER, "default", scope, grpc.StatusCode.INVALID_ARGUMENT),
                ("pa", ctrl, P.ROLE_AUDITOR, "", scope, grpc.StatusCode.INVALID_ARGUMENT),
                ("pa", ctrl, P.ROLE_USER, "", P.DelegationScope(create_on_behalf_of_owner=True),
                 grpc.StatusCode.INVALID_ARGUMENT),
                ("pa", ctrl, P.ROLE_USER, "", P.DelegationScope(namespace_patterns=["Team A"]),
                 grpc.StatusCode.INVALID_ARGUMENT),
                ("pa", ctrl, P.ROLE_USER, "", P.DelegationScope(namespace_patterns=["x"] * 9),
                 grpc.StatusCode.INVALID_ARGUMENT)):
            c, m = code(lambda: bind(who, pid, role, ns, sc))
            self.assertEqual(c, want, (who, role, ns, m))
            self.assertTrue(m)
        listed = ident.call("pa", principals_pb2, "Principals", "ListRoleBindings", P.ListRoleBindingsRequest(
            principal_id=ctrl))
        self.assertEqual(len(listed.bindings), 0, "a refused binding was stored")
        b = bind("pa", ctrl, P.ROLE_USER, "", scope)
        self.assertEqual(list(b.delegation.namespace_patterns), ["team-*"])
        self.assertTrue(b.delegation.create_on_behalf_of_owner)
        bind("pa", narrow, P.ROLE_USER, "", P.DelegationScope(namespace_patterns=["team-c"]))
        # The owner it acts for: a user of team-b ("other").
        def create(key, name, ns="team-b", driver_config=None, providers=(), owner=""):
            return ident.call(key, sandboxes_pb2, "Sandboxes", "Create", S.CreateSandboxRequest(sandbox=S.Sandbox(
                meta=ident.meta(name=name, namespace=ns),
                spec=S.SandboxSpec(image="busybox", driver_config=driver_config or {}, providers=list(providers),
                                   owner_id=owner))), replica=1)

        sb = create("ctrl", "d1", driver_config={"kubernetes": '{"node_selector": "pool=agents"}'})
        self.assertEqual(sb.meta.namespace, "team-b")
        self.assertEqual(sb.spec.owner_id, ctrl)
        sb = create("ctrl", "d2", owner=ident.ids["other"])
        self.assertEqual(sb.spec.owner_id, ident.ids["other"])
        self.assertEqual(sb.meta.created_by, ctrl)
        # The owner sees it as theirs.
        got = ident.call("other", sandboxes_pb2, "Sandboxes", "Get", S.GetSandboxRequest(namespace="team-b", name="d2"))
        self.assertEqual(got.meta.name, "d2")
        for args, want, text in (
                (dict(name="x1", ns="default"), grpc.StatusCode.PERMISSION_DENIED, "default"),
                (dict(name="x2", ns="ops"), grpc.StatusCode.PERMISSION_DENIED, "ops"),
                (dict(name="x3", driver_config={"kubernetes": '{"tolerations": []}'}),
                 grpc.StatusCode.PERMISSION_DENIED, "kubernetes.tolerations"),
                (dict(name="x4", providers=["aws-prod"]), grpc.StatusCode.PERMISSION_DENIED, "aws-prod"),
                (dict(name="x5", providers=["gh-bot"]), grpc.StatusCode.NOT_FOUND, "gh-bot"),
                (dict(name="x6", owner=ident.ids["user"]), grpc.StatusCode.FAILED_PRECONDITION, "owner_id")):
            c, m = code(lambda: create("ctrl", **args))
            self.assertEqual(c, want, (args, m))
            self.assertIn(text, m)
        # Without create_on_behalf_of_owner, or without any scope, acting for another owner is denied.
        c, m = code(lambda: create("narrow", "y1", ns="team-c", owner=ident.ids["other"]))
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("on behalf", m)
        c, m = code(lambda: create("narrow", "y2", ns="team-b"))
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED)
        c, m = code(lambda: create("user", "y3", ns="default", owner=ident.ids["other"]))
        self.assertEqual(c, grpc.StatusCode.PERMISSION_DENIED)
        self.assertIn("delegation", m)
        self.assertEqual(create("narrow", "y4", ns="team-c").meta.namespace, "team-c")
        # WhoAmI: bindings with their scope and the effective permissions.
        w = ident.call("ctrl", principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest())
        self.assertEqual(w.authenticated_via, "api_key")
        self.assertEqual([list(x.delegation.namespace_patterns) for x in w.bindings], [["team-*"]])
        perms = {(p.method, p.namespace) for p in w.permissions}
        self.assertIn(("/gantry.v1.Sandboxes/Create", "team-*"), perms)
        self.assertNotIn("/gantry.v1.Cluster/ListMembers", {m for m, _ in perms})
        self.assertNotIn(("/gantry.v1.Sandboxes/Create", "default"), perms)
        w = ident.call("pa", principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest())
        self.assertIn(("/gantry.v1.Cluster/ListMembers", ""), {(p.method, p.namespace) for p in w.permissions})
        w = ident.call("user", principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest())
        conds = {p.method: p.condition for p in w.permissions if p.namespace == "default"}
        self.assertIn("own", conds["/gantry.v1.Sandboxes/Delete"])
        self.assertNotIn("/gantry.v1.Namespaces/Create", conds)
        # Revoking the delegated binding ends it on every replica within the cache bound.
        ident.call("pa", principals_pb2, "Principals", "DeleteRoleBinding", P.DeleteRoleBindingRequest(id=b.meta.id))
        t0 = time.monotonic()
        while True:
            try:
                create("ctrl", "late-%d" % int((time.monotonic() - t0) * 1000))
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.PERMISSION_DENIED)
                break
            self.assertLess(time.monotonic() - t0, 3.0, "a revoked delegation still worked after 3 s")
            time.sleep(0.1)
        # Deleting a principal removes its shares and grants with it.
        bind("pa", narrow, P.ROLE_USER, "team-b")
        ident.call("other", sandboxes_pb2, "Sandboxes", "Share", S.ShareSandboxRequest(
            namespace="team-b", name="d2", grantee_principal_id=narrow, access=S.SHARE_ACCESS_READ))
        r1.store("exec", "INSERT INTO provider_grants (provider_id, namespace, principal_id, created_by, "
                 "created_at_ms) VALUES ('prov-x', 'team-b', '%s', 'test', 0)" % narrow)
        ident.call("pa", principals_pb2, "Principals", "Delete", P.DeletePrincipalRequest(id=narrow))
        for table, column in (("provider_grants", "principal_id"), ("shares", "grantee_id")):
            left = r1.store("query", "SELECT count(*) FROM %s WHERE %s = '%s'" % (table, column, narrow))
            self.assertEqual(left.strip().splitlines()[-1].strip(), "0", (table, left))

    def test_linked_identities(self):
        oidc = OidcFixture(self)
        ident, P = oidc.ident, principals_pb2
        alice = ident.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(principal=P.Principal(
            meta=Identity.meta(name="alice"), kind=P.PRINCIPAL_KIND_USER, oidc_issuer="corp", oidc_subject="alice")))
        ident.call("pa", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
            binding=P.RoleBinding(principal_id=alice.meta.id, role=P.ROLE_USER, namespace="default")))
        partner = oidc.token("a.smith@partner", issuer="partner")
        with self.assertRaises(grpc.RpcError) as cm:
            ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), key=partner)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAUTHENTICATED, "two issuers are two principals")
        link = P.ExternalIdentity(principal_id="alice", issuer="partner", subject="a.smith@partner")
        for bad in (P.ExternalIdentity(principal_id="alice", issuer="Partner IdP", subject="x"),
                    P.ExternalIdentity(principal_id="alice", issuer="partner", subject=""),
                    P.ExternalIdentity(issuer="partner", subject="x")):
            with self.assertRaises(grpc.RpcError) as cm:
                ident.call("pa", principals_pb2, "Principals", "LinkIdentity", P.LinkIdentityRequest(identity=bad))
            self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        with self.assertRaises(grpc.RpcError) as cm:
            ident.call("pa", principals_pb2, "Principals", "LinkIdentity", P.LinkIdentityRequest(
                identity=P.ExternalIdentity(principal_id="nobody", issuer="partner", subject="x")))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        got = ident.call("pa", principals_pb2, "Principals", "LinkIdentity", P.LinkIdentityRequest(
            request_id="link-1", identity=link))
        self.assertEqual(got.principal_id, alice.meta.id)
        again = ident.call("pa", principals_pb2, "Principals", "LinkIdentity", P.LinkIdentityRequest(
            request_id="link-1", identity=link))
        self.assertEqual(again, got, "a retry under the same request_id returns the first answer")
        with self.assertRaises(grpc.RpcError) as cm:
            ident.call("pa", principals_pb2, "Principals", "LinkIdentity", P.LinkIdentityRequest(identity=link))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.ALREADY_EXISTS)
        with self.assertRaises(grpc.RpcError) as cm:  # alice's own pair cannot be linked elsewhere
            ident.call("pa", principals_pb2, "Principals", "LinkIdentity", P.LinkIdentityRequest(
                identity=P.ExternalIdentity(principal_id="admin", issuer="corp", subject="alice")))
        self.assertIn(cm.exception.code(), (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION))
        who = ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), key=partner, replica=0)
        self.assertEqual(who.principal.meta.id, alice.meta.id)
        self.assertEqual(who.authenticated_via, "oidc")
        mine = ident.call(None, principals_pb2, "Principals", "ListIdentities", P.ListIdentitiesRequest(),
                          key=oidc.token("alice"))
        self.assertEqual([(x.issuer, x.subject) for x in mine.identities], [("partner", "a.smith@partner")])
        # The link is audited like every write.
        from gantry.v1 import audit_pb2 as A
        events = ident.call("pa", audit_pb2, "Audit", "Query", A.QueryAuditRequest())
        self.assertIn("LinkIdentity", " ".join(e.api_operation for e in events.events))
        ident.call("pa", principals_pb2, "Principals", "UnlinkIdentity", P.UnlinkIdentityRequest(
            issuer="partner", subject="a.smith@partner"))
        t0 = time.monotonic()
        while True:
            try:
                ident.call(None, principals_pb2, "Principals", "WhoAmI", P.WhoAmIRequest(), key=partner)
            except grpc.RpcError as e:
                self.assertEqual(e.code(), grpc.StatusCode.UNAUTHENTICATED)
                break
            self.assertLess(time.monotonic() - t0, 3.0, "an unlinked identity still worked after 3 s")
            time.sleep(0.1)


class FeedAuth(g.GantrydTest):
    def test_revocation_driven_by_the_change_feed_on_every_replica(self):
        """Issue 17: the authentication cache is invalidated by the change feed's events, so its
        entries outlive the 2 s bound while the feed is live (fewer store reads), and a revoked key,
        a disabled principal and a removed binding are still refused on all 3 replicas within 2 s."""
        ident = Identity(self)
        P, K, S = principals_pb2, api_keys_pb2, sandboxes_pb2
        reps = range(len(ident.c.replicas))

        def whoami(key, rep):
            return ident.call(None, P, "Principals", "WhoAmI", P.WhoAmIRequest(), replica=rep, key=key)

        def series(rep, name):
            return ident.c.replicas[rep].metric(name) or 0.0

        k = ident.call("pa", K, "ApiKeys", "Create", K.CreateApiKeyRequest(principal_id=ident.ids["user"]))
        for rep in reps:
            whoami(k.secret, rep)  # warm every replica's cache
        before = [(series(r, "gantry_authn_fetches_total"), series(r, "gantry_authn_long_hits_total")) for r in reps]
        t_end = time.monotonic() + 4.5  # more than two 2 s periods: a timer-only cache reads the store again
        while time.monotonic() < t_end:
            for rep in reps:
                whoami(k.secret, rep)
            time.sleep(0.2)
        for rep in reps:
            fetched = series(rep, "gantry_authn_fetches_total") - before[rep][0]
            long_hits = series(rep, "gantry_authn_long_hits_total") - before[rep][1]
            # a 2 s TTL refetches the key and the principal at least twice each in 4.5 s (>= 4 reads)
            self.assertLess(fetched, 4, "replica %d read the store %d times for a cached key" % (rep, fetched))
            self.assertGreater(long_hits, 0, "replica %d never kept an entry past 2 s" % rep)

        # Decided from the models: a RoleBinding event drops every cached principal on every
        # replica, and the calls after it take their principals and bindings from the replica's
        # principals and bindings models, not the store (the keys' hashes stay cached: only a
        # rehash's event drops them). The new binding is in force on every replica.
        for rep in reps:
            for role in ("user", "sa", "other"):
                whoami(ident.keys[role], rep)
        b = ident.call("pa", P, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
            binding=P.RoleBinding(principal_id=ident.ids["other"], role=P.ROLE_USER, namespace="default")))
        time.sleep(0.5)  # the event has reached every replica's models (the feed polls every 100 ms)
        before = [(series(r, "gantry_authn_fetches_total"), series(r, "gantry_authn_model_answers_total"))
                  for r in reps]
        for rep in reps:
            for role in ("user", "sa", "other"):
                whoami(ident.keys[role], rep)
            ident.call("other", S, "Sandboxes", "List", S.ListSandboxesRequest(namespace="default"), replica=rep)
        for rep in reps:
            fetched = series(rep, "gantry_authn_fetches_total") - before[rep][0]
            answered = series(rep, "gantry_authn_model_answers_total") - before[rep][1]
            self.assertEqual(fetched, 0, "replica %d read the store for principals the models hold" % rep)
            self.assertGreaterEqual(answered, 6, "replica %d: %d lookups from the models" % (rep, answered))
        ident.call("pa", P, "Principals", "DeleteRoleBinding", P.DeleteRoleBindingRequest(id=b.meta.id))

        # Read-your-writes for grants: a principal already in every replica's models gets a binding
        # and a key through one replica and calls through the others at once. Its first call on a
        # replica fills it from the models after a read index, so the binding is in force there,
        # though the feed has had no time to bring it.
        for i in range(6):
            pid = ident.call("pa", P, "Principals", "Create", P.CreatePrincipalRequest(principal=P.Principal(
                meta=ident.meta(name="ryw-%d" % i), kind=P.PRINCIPAL_KIND_USER)), replica=i % 3).meta.id
            time.sleep(0.3)  # the principal, without bindings, is in every replica's models
            ident.call("pa", P, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
                binding=P.RoleBinding(principal_id=pid, role=P.ROLE_USER, namespace="default")), replica=i % 3)
            key = ident.call("pa", K, "ApiKeys", "Create", K.CreateApiKeyRequest(principal_id=pid),
                             replica=i % 3).secret
            for rep in ((i + 1) % 3, (i + 2) % 3):
                ident.call(None, S, "Sandboxes", "List", S.ListSandboxesRequest(namespace="default"), replica=rep,
                           key=key)

        def refused_everywhere(what, attempt, code):
            """Poll every replica until @attempt fails with @code; returns the ms each took."""
            t0, took = time.monotonic(), {}
            while len(took) < len(reps):
                for rep in reps:
                    if rep in took:
                        continue
                    try:
                        attempt(rep)
                    except grpc.RpcError as e:
                        self.assertEqual(e.code(), code, e.details())
                        took[rep] = (time.monotonic() - t0) * 1000
                self.assertLess(time.monotonic() - t0, 2.0, "%s still served after 2 s: %s" % (what, took))
                time.sleep(0.02)
            return [round(took[r]) for r in reps]

        # A revoked key (its cache entries are well past 2 s old: only the event can drop them).
        for rep in reps:
            whoami(k.secret, rep)
        ident.call("pa", K, "ApiKeys", "Revoke", K.RevokeApiKeyRequest(id=k.key.meta.id))
        key_ms = refused_everywhere("a revoked key", lambda rep: whoami(k.secret, rep),
                                    grpc.StatusCode.UNAUTHENTICATED)
        # A disabled principal.
        for rep in reps:
            whoami(ident.keys["sa"], rep)
        time.sleep(2.5)
        for rep in reps:
            whoami(ident.keys["sa"], rep)  # served from entries older than 2 s
        ident.call("pa", P, "Principals", "Update", P.UpdatePrincipalRequest(
            principal=P.Principal(meta=ident.meta(id=ident.ids["sa"]), disabled=True)))
        disabled_ms = refused_everywhere("a disabled principal", lambda rep: whoami(ident.keys["sa"], rep),
                                         grpc.StatusCode.UNAUTHENTICATED)
        # A removed binding: the user's only binding, in "default".
        def list_default(rep):
            return ident.call("user", S, "Sandboxes", "List", S.ListSandboxesRequest(namespace="default"), replica=rep)
        for rep in reps:
            list_default(rep)
        time.sleep(2.5)
        for rep in reps:
            list_default(rep)
        bindings = ident.call("pa", P, "Principals", "ListRoleBindings",
                              P.ListRoleBindingsRequest(principal_id=ident.ids["user"])).bindings
        self.assertEqual(len(bindings), 1)
        ident.call("pa", P, "Principals", "DeleteRoleBinding", P.DeleteRoleBindingRequest(id=bindings[0].meta.id))
        binding_ms = refused_everywhere("a removed binding", list_default, grpc.StatusCode.PERMISSION_DENIED)
        print("refused on replicas 1..3 after (ms): revoked key %s, disabled principal %s, removed binding %s "
              "(bound 2000)" % (key_ms, disabled_ms, binding_ms))


class ModelList(g.GantrydTest):
    maxDiff = None

    def check_principal_models(self, ident):
        """Issue 17: Principals.Get and List, ListRoleBindings and ApiKeys.Get and List from the models of
        replicas 1 and 2 are the store path's replies (replica 3, --model-reads=false) byte for byte
        (but ApiKey.last_used_at_ms, written without a change event: the models refresh it), for
        several roles, filters and page sizes, found or NOT_FOUND; a model Get carries x-gantry-revision;
        writes through one replica are read at once through another: a key created, revoked or deleted,
        a binding created or removed, a principal deleted with its keys and bindings (which have no
        events of their own), a namespace deleted with its bindings."""
        P, K, M = principals_pb2, api_keys_pb2, meta_pb2
        t0 = time.time()

        def code_of(fn):
            try:
                fn()
            except grpc.RpcError as e:
                return e.code(), e.details()
            return grpc.StatusCode.OK, ""

        def raw(role, svc, method, req, replica):
            ch = ident.c.client.channel(ident.c.replicas[replica])
            fn = ch.unary_unary("/gantry.v1.%s/%s" % (svc, method), request_serializer=type(req).SerializeToString,
                                response_deserializer=lambda b: b)
            try:
                body, call = fn.with_call(req, metadata=[("authorization", "Bearer " + ident.keys[role])],
                                          timeout=15)
                return body, dict(call.trailing_metadata() or ())
            except grpc.RpcError as e:
                return (e.code(), e.details()), {}

        def no_last_used(cls, body):  # keys' last_used_at_ms cleared, and a List's revision
            m = cls.FromString(body)
            for k in (m.keys if hasattr(m, "keys") else [m]):
                k.last_used_at_ms = 0
            if hasattr(m, "revision"):
                m.revision = 0
            return m.SerializeToString()

        def varint(n):
            out = b""
            while True:
                b, n = n & 0x7F, n >> 7
                out += bytes([b | (0x80 if n else 0)])
                if not n:
                    return out

        def norm(cls, body):  # a List reply without its revision (field 3, or 2, last on the wire)
            if cls is K.ListApiKeysResponse:
                return no_last_used(cls, body)
            rev = cls.FromString(body).revision
            self.assertGreater(rev, 0)
            tail = (b"\x10" if cls is P.ListIdentitiesResponse else b"\x18") + varint(rev)
            self.assertTrue(body.endswith(tail))
            return body[:-len(tail)]

        def pages(role, replica, svc, method, cls, size, **filt):
            out, token = [], ""
            for _ in range(60):
                req = getattr(P if svc == "Principals" else K, cls.__name__.replace("Response", "Request"))(
                    page=M.PageRequest(page_size=size, page_token=token), **filt)
                body, _ = raw(role, svc, method, req, replica)
                if isinstance(body, tuple):
                    return out + [body]
                out.append(norm(cls, body))
                token = cls.FromString(body).next_page_token
                if not token:
                    return out
            self.fail("a list that never ends")

        # Data written through every replica: principals of both kinds (an SA named like a user:
        # Get by name prefers the user, as the store does), bindings, keys; then a principal
        # updated, a key revoked, a binding removed.
        ids = {}
        for i in range(4):
            kind = P.PRINCIPAL_KIND_SERVICE_ACCOUNT if i % 2 else P.PRINCIPAL_KIND_USER
            p = ident.call("pa", P, "Principals", "Create", P.CreatePrincipalRequest(principal=P.Principal(
                meta=ident.meta(name="pm-%d" % i), kind=kind, display_name="d%d" % i, email="pm%d@x" % i),
                namespace="default" if i < 3 else ""), replica=i % 3)
            ids[i] = p.meta.id
            if i % 2 == 0:
                ident.call("pa", P, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
                    binding=P.RoleBinding(principal_id=p.meta.id, role=P.ROLE_USER, namespace="team-b")),
                    replica=(i + 1) % 3)
            for j in range(2):
                ident.call("pa", K, "ApiKeys", "Create", K.CreateApiKeyRequest(principal_id=p.meta.id, name="k%d" % j),
                           replica=(i + j) % 3)
        twins = [ident.call("pa", P, "Principals", "Create", P.CreatePrincipalRequest(principal=P.Principal(
            meta=ident.meta(name=name), kind=P.PRINCIPAL_KIND_SERVICE_ACCOUNT)), replica=1).meta.id
            for name in ("p-user", "p-na", "p-other", "p-auditor")]
        ident.call("pa", P, "Principals", "Update", P.UpdatePrincipalRequest(principal=P.Principal(
            meta=ident.meta(id=ids[0]), display_name="renamed", disabled=True)), replica=2)
        k1 = ident.call("pa", K, "ApiKeys", "List", K.ListApiKeysRequest(principal_id=ids[1])).keys
        ident.call("pa", K, "ApiKeys", "Revoke", K.RevokeApiKeyRequest(id=k1[0].meta.id), replica=1)
        b2 = [b for b in ident.call("pa", P, "Principals", "ListRoleBindings", P.ListRoleBindingsRequest(
            principal_id=ids[2])).bindings if b.namespace == "team-b"][0]
        ident.call("pa", P, "Principals", "DeleteRoleBinding", P.DeleteRoleBindingRequest(id=b2.meta.id), replica=0)
        own_key = ident.call("user", K, "ApiKeys", "List", K.ListApiKeysRequest()).keys[0].meta.id
        for pid, issuer, sub in ((ids[0], "corp", "a"), (ids[0], "mtls", "cn-0"), (ident.ids["user"], "corp", "u"),
                                 (ids[0], "corp", "a-b")):
            ident.call("pa", P, "Principals", "LinkIdentity", P.LinkIdentityRequest(identity=P.ExternalIdentity(
                principal_id=pid, issuer=issuer, subject=sub)), replica=len(sub) % 3)

        reads_metric = "gantry_principal_model_reads_total"
        before = [ident.c.replicas[i].metric(reads_metric) or 0 for i in range(3)]
        compared = 0

        def same(what, a, b, c):
            self.assertEqual(a, c, what + ("replica 1",))
            self.assertEqual(b, c, what + ("replica 2",))

        for role in ("pa", "auditor", "na", "user", "sa"):
            combos = [("Principals", "List", P.ListPrincipalsResponse, dict(kind=k, namespace=ns))
                      for k in (0, P.PRINCIPAL_KIND_USER, P.PRINCIPAL_KIND_SERVICE_ACCOUNT)
                      for ns in ("", "default", "team-b")]
            combos += [("Principals", "ListRoleBindings", P.ListRoleBindingsResponse, dict(principal_id=pid, namespace=ns))
                       for pid in ("", ids[0], ident.ids["user"]) for ns in ("", "team-b")]
            combos += [("ApiKeys", "List", K.ListApiKeysResponse, dict(principal_id=pid))
                       for pid in ("", ids[1], ident.ids["user"])]
            for svc, method, cls, filt in combos:
                for size in (2, 0) if role in ("pa", "na", "user") else (0,):
                    got = [pages(role, r, svc, method, cls, size, **filt) for r in range(3)]
                    same((role, method, filt, size), *got)
                    compared += len(got[2])
        for svc, method, cls, filt in (("Principals", "List", P.ListPrincipalsResponse, {}),
                                       ("Principals", "ListRoleBindings", P.ListRoleBindingsResponse, {}),
                                       ("ApiKeys", "List", K.ListApiKeysResponse, {})):
            got = [pages("pa", r, svc, method, cls, 1, **filt) for r in range(3)]
            self.assertGreater(len(got[2]), 8)
            same(("pa", method, "page size 1"), *got)
            compared += len(got[2])
        for role in ("pa", "na", "user"):
            for pid in ("", ids[0], "pm-0", ident.ids["user"], "p-user", "nobody"):
                got = [raw(role, "Principals", "ListIdentities", P.ListIdentitiesRequest(principal_id=pid), r)[0]
                       for r in range(3)]
                same((role, "ListIdentities", pid), *[b if isinstance(b, tuple) else norm(P.ListIdentitiesResponse, b)
                                                      for b in got])
                compared += 1
        all_keys = [k.meta.id for k in ident.call("pa", K, "ApiKeys", "List", K.ListApiKeysRequest()).keys]
        gets = found = 0
        for role in ("pa", "na", "user", "other"):
            for pid in [ids[0], ids[1], "pm-2", ident.ids["user"], "nobody", "p-user", "p-na", "p-other",
                        "p-auditor"] + twins[:2]:
                got = [raw(role, "Principals", "Get", P.GetPrincipalRequest(id=pid), r) for r in range(3)]
                same((role, "Principals.Get", pid), *[b for b, _ in got])
                for b, tr in got[:2]:
                    if not isinstance(b, tuple):
                        self.assertGreaterEqual(int(tr.get("x-gantry-revision", "0")),
                                                P.Principal.FromString(b).meta.resource_version)
                self.assertNotIn("x-gantry-revision", got[2][1])
                gets += 1
                found += not isinstance(got[2][0], tuple)
            for kid in [own_key, k1[0].meta.id, "0" * 32, all_keys[0], all_keys[-1]]:
                got = [raw(role, "ApiKeys", "Get", K.GetApiKeyRequest(id=kid), r)[0] for r in range(3)]
                same((role, "ApiKeys.Get", kid), *[b if isinstance(b, tuple) else no_last_used(K.ApiKey, b)
                                                  for b in got])
                gets += 1
                found += not isinstance(got[2], tuple)
        self.assertGreater(found, gets // 3)
        self.assertLess(found, gets)
        # WhoAmI from the principals and bindings models: the store path's reply byte for byte
        # (principal, bindings in id order, permissions, how the caller authenticated).
        mid = [ident.c.replicas[i].metric(reads_metric) or 0 for i in range(2)]
        for role in ("pa", "auditor", "na", "user", "sa", "other"):
            got = [raw(role, "Principals", "WhoAmI", P.WhoAmIRequest(), r)[0] for r in range(3)]
            self.assertNotIsInstance(got[2], tuple, (role, "WhoAmI"))
            self.assertGreater(len(P.WhoAmIResponse.FromString(got[2]).bindings), 0, role)
            same((role, "WhoAmI"), *got)
            compared += 1
        for i in range(2):
            self.assertEqual((ident.c.replicas[i].metric(reads_metric) or 0) - mid[i], 6,
                             "WhoAmI from replica %d's models" % i)
        after = [ident.c.replicas[i].metric(reads_metric) or 0 for i in range(3)]
        self.assertGreater(after[0] - before[0], compared // 3)
        self.assertGreater(after[1] - before[1], compared // 3)
        self.assertEqual(after[2], 0, "the --model-reads=false replica answered from a model")
        print("principal models vs store: %d list pages and %d Gets compared (%.1f s)"
              % (compared, gets, time.time() - t0))

        # Read-your-writes and revocation, alternating the replicas: each write through one
        # replica is seen by the next linearizable read through the other model replica.
        t1 = time.time()
        uid = ident.ids["user"]
        for i in range(4):
            w, r = i % 2, (i + 1) % 2
            key = ident.call("pa", K, "ApiKeys", "Create", K.CreateApiKeyRequest(principal_id=uid, name="ryw%d" % i),
                             replica=w).key
            got = ident.call("pa", K, "ApiKeys", "Get", K.GetApiKeyRequest(id=key.meta.id), replica=r)
            self.assertEqual(got, key, i)
            self.assertIn(key.meta.id, [k.meta.id for k in ident.call("user", K, "ApiKeys", "List",
                                                                      K.ListApiKeysRequest(), replica=r).keys])
            ident.call("pa", K, "ApiKeys", "Revoke", K.RevokeApiKeyRequest(id=key.meta.id), replica=w)
            self.assertTrue(ident.call("user", K, "ApiKeys", "Get", K.GetApiKeyRequest(id=key.meta.id),
                                       replica=r).revoked, ("revoked key not revoked", i))
            ident.call("pa", K, "ApiKeys", "Delete", K.RevokeApiKeyRequest(id=key.meta.id), replica=r)
            self.assertEqual(code_of(lambda: ident.call("pa", K, "ApiKeys", "Get", K.GetApiKeyRequest(
                id=key.meta.id), replica=w))[0], grpc.StatusCode.NOT_FOUND, ("deleted key still there", i))
            b = ident.call("pa", P, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
                binding=P.RoleBinding(principal_id=uid, role=P.ROLE_USER, namespace="team-b")), replica=w)
            self.assertIn(b, ident.call("user", P, "Principals", "ListRoleBindings", P.ListRoleBindingsRequest(),
                                        replica=r).bindings, i)
            ident.call("pa", P, "Principals", "DeleteRoleBinding", P.DeleteRoleBindingRequest(id=b.meta.id),
                       replica=r)
            link = P.ExternalIdentity(principal_id=uid, issuer="corp", subject="ryw-%d" % i)
            ident.call("pa", P, "Principals", "LinkIdentity", P.LinkIdentityRequest(identity=link), replica=w)
            self.assertIn(("corp", "ryw-%d" % i), [(x.issuer, x.subject) for x in ident.call(
                "user", P, "Principals", "ListIdentities", P.ListIdentitiesRequest(), replica=r).identities], i)
            ident.call("pa", P, "Principals", "UnlinkIdentity", P.UnlinkIdentityRequest(
                issuer="corp", subject="ryw-%d" % i), replica=r)
            self.assertNotIn(("corp", "ryw-%d" % i), [(x.issuer, x.subject) for x in ident.call(
                "user", P, "Principals", "ListIdentities", P.ListIdentitiesRequest(), replica=w).identities],
                ("unlinked identity still listed", i))
            self.assertNotIn(b.meta.id, [x.meta.id for x in ident.call("user", P, "Principals", "ListRoleBindings",
                                                                      P.ListRoleBindingsRequest(), replica=w).bindings],
                             ("removed binding still listed", i))
        # A caller held to itself whose name is also another principal's (the service account
        # "p-user" beside the user "p-user") lists its own links, never the other's, on the model
        # replicas and on the store replica alike.
        twin_key = ident.call("pa", K, "ApiKeys", "Create", K.CreateApiKeyRequest(
            principal_id=twins[0], name="twin")).secret
        ident.call("pa", P, "Principals", "LinkIdentity", P.LinkIdentityRequest(
            identity=P.ExternalIdentity(principal_id=uid, issuer="corp", subject="twin-probe")))
        for r in range(3):
            self.assertIn(("corp", "twin-probe"), [(x.issuer, x.subject) for x in ident.call(
                "pa", P, "Principals", "ListIdentities", P.ListIdentitiesRequest(principal_id="p-user"),
                replica=r).identities], r)
            self.assertEqual([], list(ident.call(None, P, "Principals", "ListIdentities", P.ListIdentitiesRequest(
                principal_id="p-user"), replica=r, key=twin_key).identities), ("another's links listed", r))
        ident.call("pa", P, "Principals", "UnlinkIdentity", P.UnlinkIdentityRequest(issuer="corp", subject="twin-probe"))
        # A principal deleted: its keys and bindings go with it (no events of their own).
        gone_keys = [k.meta.id for k in ident.call("pa", K, "ApiKeys", "List", K.ListApiKeysRequest(
            principal_id=ids[2])).keys]
        self.assertEqual(len(gone_keys), 2)
        ident.call("pa", P, "Principals", "Delete", P.DeletePrincipalRequest(id=ids[2]), replica=1)
        for r in (0, 1):
            self.assertEqual(code_of(lambda: ident.call("pa", P, "Principals", "Get", P.GetPrincipalRequest(
                id=ids[2]), replica=r))[0], grpc.StatusCode.NOT_FOUND, r)
            self.assertEqual(list(ident.call("pa", P, "Principals", "ListRoleBindings", P.ListRoleBindingsRequest(
                principal_id=ids[2]), replica=r).bindings), [], r)
            self.assertEqual(list(ident.call("pa", K, "ApiKeys", "List", K.ListApiKeysRequest(
                principal_id=ids[2]), replica=r).keys), [], r)
            for kid in gone_keys:
                self.assertEqual(code_of(lambda: ident.call("pa", K, "ApiKeys", "Get", K.GetApiKeyRequest(
                    id=kid), replica=r))[0], grpc.StatusCode.NOT_FOUND, (r, kid))
        # A namespace deleted: its bindings go with it (no events of their own).
        ident.call("pa", namespaces_pb2, "Namespaces", "Create", namespaces_pb2.CreateNamespaceRequest(
            namespace=namespaces_pb2.Namespace(meta=ident.meta(name="pm-ns"))), replica=0)
        nb = ident.call("pa", P, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
            binding=P.RoleBinding(principal_id=ids[0], role=P.ROLE_USER, namespace="pm-ns")), replica=1)
        self.assertEqual([x.meta.id for x in ident.call("pa", P, "Principals", "ListRoleBindings",
                                                        P.ListRoleBindingsRequest(namespace="pm-ns"), replica=0).bindings],
                         [nb.meta.id])
        ident.call("pa", namespaces_pb2, "Namespaces", "Delete", namespaces_pb2.DeleteNamespaceRequest(name="pm-ns"),
                   replica=1)
        for r in (0, 1):
            self.assertEqual(list(ident.call("pa", P, "Principals", "ListRoleBindings", P.ListRoleBindingsRequest(
                namespace="pm-ns"), replica=r).bindings), [], r)
            self.assertEqual(list(ident.call("pa", P, "Principals", "List", P.ListPrincipalsRequest(
                namespace="pm-ns"), replica=r).principals), [], r)
        # Read options: min_revision from a write's revision answers at once; both options at once
        # are INVALID_ARGUMENT on every replica, as a revision far ahead is OUT_OF_RANGE.
        upd = ident.call("pa", P, "Principals", "Update", P.UpdatePrincipalRequest(principal=P.Principal(
            meta=ident.meta(id=ids[0]), display_name="again")), replica=2)
        for r in range(3):
            got = ident.call("pa", P, "Principals", "Get", P.GetPrincipalRequest(
                id=ids[0], read=M.ReadOptions(min_revision=upd.meta.resource_version)), replica=r)
            self.assertEqual(got.display_name, "again", r)
            lst = ident.call("pa", P, "Principals", "List", P.ListPrincipalsRequest(
                read=M.ReadOptions(max_staleness_ms=60000)), replica=r)
            self.assertGreater(lst.revision, 0)
            for svc, method, req in (("Principals", "Get", P.GetPrincipalRequest(id=ids[0])),
                                     ("Principals", "List", P.ListPrincipalsRequest()),
                                     ("Principals", "ListRoleBindings", P.ListRoleBindingsRequest()),
                                     ("Principals", "ListIdentities", P.ListIdentitiesRequest()),
                                     ("ApiKeys", "Get", K.GetApiKeyRequest(id=own_key)),
                                     ("ApiKeys", "List", K.ListApiKeysRequest())):
                req.read.CopyFrom(M.ReadOptions(min_revision=5, max_staleness_ms=10))
                code, why = raw("pa", svc, method, req, r)[0]
                self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, (svc, method, r))
                self.assertIn("exclude each other", why)
                req.read.CopyFrom(M.ReadOptions(min_revision=lst.revision + 10 ** 9))
                code, why = raw("pa", svc, method, req, r)[0]
                self.assertEqual(code, grpc.StatusCode.OUT_OF_RANGE, (svc, method, r, why))
        print("principal models: read-your-writes, revocation and cascades through two replicas (%.1f s; "
              "%.1f s in all)" % (time.time() - t1, time.time() - t0))

    def check_last_used_refreshed(self, ident):
        """Issue 17: ApiKey.last_used_at_ms is written by authentication without a change event (at
        most once a minute per key and replica): the keys models reload it (every 10 s), never ahead
        of the store's. Run at the end of the test, so a reload has happened since the key was used."""
        K = api_keys_pb2
        pa_key = ident.call("pa", K, "ApiKeys", "List", K.ListApiKeysRequest(principal_id=ident.ids["pa"])).keys[0]
        t0 = time.time()
        deadline = t0 + 15
        while True:
            seen = [ident.call("pa", K, "ApiKeys", "Get", K.GetApiKeyRequest(id=pa_key.meta.id), replica=r)
                    .last_used_at_ms for r in (0, 1)]
            stored = ident.call("pa", K, "ApiKeys", "Get", K.GetApiKeyRequest(id=pa_key.meta.id),
                                replica=2).last_used_at_ms
            self.assertTrue(all(s <= stored for s in seen), (seen, stored))
            if all(seen) or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertTrue(all(seen), "the models never refreshed last_used_at_ms: %s (store %d)" % (seen, stored))
        print("last_used_at_ms from both models after %.1f s" % (time.time() - t0))

    def test_list_from_the_model_pages_like_the_store(self):
        """Issue 17: Sandboxes.List from the replica's model (replica 1) returns the same pages, tokens,
        order, selector matches and visibility as the store path (replica 3 runs with
        --model-reads=false), for every role; a write through one replica is in the next List through
        another. Get too, with the shares from the model: no store request per read through a share
        (gantry_store_requests_total), an acknowledged Unshare refused to the next linearizable Get on
        every model replica, and the per-namespace index after deletes that empty a namespace."""
        # No driver: nothing changes the sandboxes between the two lists being compared.
        ident = Identity(self, replica_flags=lambda rid: ["--driver", "none"] + (
            ["--model-reads=false"] if rid == 3 else []))
        self.check_principal_models(ident)
        S = sandboxes_pb2
        r1 = ident.c.replicas[0]
        # "team" sorts before "team-b" as a namespace but "team/x" after "team-b/x" as a key.
        r1.store("exec", "INSERT INTO namespaces (id, name, phase, labels, annotations, created_by, resource_version, "
                 "created_at_ms, updated_at_ms, deletion_timestamp_ms) VALUES ('ns-team', 'team', 'ACTIVE', '{}', "
                 "'{}', 'test', 1, 0, 0, 0)")

        def create(role, ns, name, tier, replica=0):
            return ident.call(role, S, "Sandboxes", "Create", S.CreateSandboxRequest(sandbox=S.Sandbox(
                meta=ident.meta(name=name, namespace=ns, labels={"tier": tier}), spec=S.SandboxSpec(image="busybox"))),
                replica=replica)

        for i in range(4):
            create("user", "default", "u-%d" % i, "ab"[i % 2])
            create("sa", "default", "s-%d" % i, "ab"[i // 2])
        for i in range(3):
            create("pa", "team", "x-%d" % i, "a")
            create("other", "team-b", "x-%d" % i, "ab"[i % 2])
        create("pa", "team-b", "p-0", "b")
        for name in ("u-0", "u-3"):
            ident.call("user", S, "Sandboxes", "Share", S.ShareSandboxRequest(
                namespace="default", name=name, grantee_principal_id=ident.ids["sa"], access=S.SHARE_ACCESS_READ))

        def pages(role, replica, ns, owner, sel, size):
            out, token = [], ""
            for _ in range(100):
                try:
                    req = S.ListSandboxesRequest(namespace=ns, owner_id=owner,
                                                 page=meta_pb2.PageRequest(page_size=size, page_token=token))
                    if sel:
                        req.selector.match_labels.update(sel)
                    r = ident.call(role, S, "Sandboxes", "List", req, replica=replica)
                except grpc.RpcError as e:
                    return out + [("error", e.code(), e.details())]
                out.append(([str(x) for x in r.sandboxes], r.next_page_token))
                self.assertGreater(r.revision, 0)
                token = r.next_page_token
                if not token:
                    return out
            self.fail("a list that never ends")

        before = ident.c.replicas[0].metric("gantry_sandbox_model_lists_total") or 0
        compared = 0
        for role in ROLES:
            for ns in ("", "default", "team", "team-b"):
                for owner in ("", ident.ids["user"]) if ns in ("", "default") else ("",):
                    for sel in (None, {"tier": "a"}):
                        for size in (1, 3, 0):
                            model = pages(role, 0, ns, owner, sel, size)
                            store = pages(role, 2, ns, owner, sel, size)
                            self.assertEqual(model, store, (role, ns, owner, sel, size))
                            compared += len(model)
        # ListSharedWithMe: the same pages from the model and from the store.
        ident.call("other", S, "Sandboxes", "Share", S.ShareSandboxRequest(
            namespace="team-b", name="x-1", grantee_principal_id=ident.ids["pa"], access=S.SHARE_ACCESS_EXEC))

        def shared_pages(role, replica, ns, size):
            out, token = [], ""
            for _ in range(100):
                r = ident.call(role, S, "Sandboxes", "ListSharedWithMe", S.ListSharedWithMeRequest(
                    namespace=ns, page=meta_pb2.PageRequest(page_size=size, page_token=token)), replica=replica)
                out.append(([str(x) for x in r.sandboxes], [str(x) for x in r.shares], r.next_page_token))
                token = r.next_page_token
                if not token:
                    return out
            self.fail("a list that never ends")

        shared_seen = 0
        for role in ROLES:
            for ns in ("", "default", "team-b"):
                for size in (1, 0):
                    model = shared_pages(role, 0, ns, size)
                    self.assertEqual(model, shared_pages(role, 2, ns, size), ("shared", role, ns, size))
                    compared += len(model)
                    shared_seen += sum(len(p[0]) for p in model)
        self.assertGreater(shared_seen, 0, "no share was listed: the comparison proved nothing")
        lists = (ident.c.replicas[0].metric("gantry_sandbox_model_lists_total") or 0) - before
        self.assertGreater(lists, compared // 2, "replica 1 did not answer from its model")
        self.assertEqual(ident.c.replicas[2].metric("gantry_sandbox_model_lists_total") or 0, 0)
        # Read-your-writes across replicas: create through replica 2, list through replica 1 at once.
        for i in range(20):
            create("user", "default", "ryw-%d" % i, "c", replica=1)
            names = [x.meta.name for x in ident.call("user", S, "Sandboxes", "List", S.ListSandboxesRequest(
                namespace="default", selector=meta_pb2.LabelSelector(match_labels={"tier": "c"})), replica=0).sandboxes]
            self.assertIn("ryw-%d" % i, names)
        print("List from the model matched the store path on %d pages (%d model lists)" % (compared, lists))

        # Get: the model's answer (shares from the model's own rows) is the store path's, for every
        # role and sandbox, found or NOT_FOUND.
        names = [("default", "u-%d" % i) for i in range(4)] + [("default", "s-%d" % i) for i in range(4)] + \
            [("team", "x-%d" % i) for i in range(3)] + [("team-b", "x-%d" % i) for i in range(3)] + \
            [("team-b", "p-0"), ("default", "nope")]

        def get(role, replica, ns, name, **read):
            try:
                req = S.GetSandboxRequest(namespace=ns, name=name)
                if read:
                    req.read.CopyFrom(meta_pb2.ReadOptions(**read))
                return str(ident.call(role, S, "Sandboxes", "Get", req, replica=replica))
            except grpc.RpcError as e:
                return ("error", e.code(), e.details())

        gets_before = ident.c.replicas[0].metric("gantry_sandbox_model_gets_total") or 0
        found = handled = 0
        for role in ROLES:
            for ns, name in names:
                model = get(role, 0, ns, name)
                self.assertEqual(model, get(role, 2, ns, name), ("get", role, ns, name))
                found += not isinstance(model, tuple)
                # PERMISSION_DENIED is the gate's (no role there): the handler never runs.
                handled += not isinstance(model, tuple) or model[1] != grpc.StatusCode.PERMISSION_DENIED
        self.assertGreater(found, 20)
        self.assertEqual((ident.c.replicas[0].metric("gantry_sandbox_model_gets_total") or 0) - gets_before,
                         handled, "replica 1 did not answer every Get from its model")
        self.assertIn("u-0", get("sa", 0, "default", "u-0"), "a share did not give read access")
        self.assertEqual(get("sa", 0, "default", "u-1")[1], grpc.StatusCode.NOT_FOUND)

        # No store query per read: stale Gets and Lists through a share (neither admin nor owner)
        # and ListSharedWithMe (one read index per call, nothing else) on replica 1. Before the
        # shares were in the model each Get and List read them from the store.
        def store_requests():
            return ident.c.replicas[0].metric("gantry_store_requests_total") or 0

        n = 100
        before = store_requests()
        for _ in range(n):
            self.assertNotIsInstance(get("sa", 0, "default", "u-0", max_staleness_ms=60000), tuple)
        for _ in range(n):
            r = ident.call("sa", S, "Sandboxes", "List", S.ListSandboxesRequest(
                namespace="default", owner_id=ident.ids["user"], read=meta_pb2.ReadOptions(max_staleness_ms=60000)))
            self.assertEqual([x.meta.name for x in r.sandboxes], ["u-0", "u-3"])
        stale = store_requests() - before
        before = store_requests()
        for _ in range(n // 2):
            r = ident.call("sa", S, "Sandboxes", "ListSharedWithMe", S.ListSharedWithMeRequest())
            self.assertEqual(sorted(x.meta.name for x in r.sandboxes), ["u-0", "u-3"])
        shared = store_requests() - before
        print("store requests of replica 1: %d for %d stale Gets and %d stale Lists through a share, %d for %d "
              "ListSharedWithMe" % (stale, n, n, shared, n // 2))
        self.assertLess(stale, n // 2, "stale reads through a share queried the store")
        self.assertLess(shared, n // 2 * 3 // 2, "ListSharedWithMe queried the store beyond its read index")

        # Revocation: an acknowledged Unshare through one replica is refused to the next
        # linearizable Get through any model replica, and a Share shows at once; ListSharedWithMe
        # follows. Alternate replicas for the writes.
        for i in range(6):
            ident.call("user", S, "Sandboxes", "Unshare", S.UnshareSandboxRequest(
                namespace="default", name="u-0", grantee_principal_id=ident.ids["sa"]), replica=i % 2)
            for rep in (0, 1):
                self.assertEqual(get("sa", rep, "default", "u-0")[1], grpc.StatusCode.NOT_FOUND, (i, rep))
                r = ident.call("sa", S, "Sandboxes", "ListSharedWithMe", S.ListSharedWithMeRequest(), replica=rep)
                self.assertEqual([x.meta.name for x in r.sandboxes], ["u-3"], (i, rep))
            ident.call("user", S, "Sandboxes", "Share", S.ShareSandboxRequest(
                namespace="default", name="u-0", grantee_principal_id=ident.ids["sa"],
                access=S.SHARE_ACCESS_EXEC if i % 2 else S.SHARE_ACCESS_READ), replica=(i + 1) % 2)
            for rep in (0, 1):
                self.assertNotIsInstance(get("sa", rep, "default", "u-0"), tuple, (i, rep))
                r = ident.call("sa", S, "Sandboxes", "ListSharedWithMe", S.ListSharedWithMeRequest(), replica=rep)
                self.assertEqual([(x.meta.name, y.access) for x, y in zip(r.sandboxes, r.shares)][0],
                                 ("u-0", S.SHARE_ACCESS_EXEC if i % 2 else S.SHARE_ACCESS_READ), (i, rep))

        # The per-namespace index after deletes: a namespace emptied and one thinned page like the
        # store (the deletes are applied to the index, and an emptied namespace leaves it).
        for ns, name in [("team", "x-1")] + [("team-b", "x-%d" % i) for i in range(3)] + [("team-b", "p-0")]:
            ident.call("pa", S, "Sandboxes", "Delete", S.DeleteSandboxRequest(namespace=ns, name=name))
        for role in ("pa", "user", "other"):
            for ns in ("", "team", "team-b"):
                for size in (1, 0):
                    self.assertEqual(pages(role, 0, ns, "", None, size), pages(role, 2, ns, "", None, size),
                                     ("after deletes", role, ns, size))
        self.check_last_used_refreshed(ident)


# ctest group -> test classes ("oidc" covers every external identity: OIDC tokens and certificates).
GROUPS = {"matrix": [Matrix], "principals": [Principals, Onboarding], "revocation": [Revocation],
          "oidc": [Oidc, Mtls], "tokenreview": [TokenReview],
          "delegation": [Delegation], "feedauth": [FeedAuth], "modellist": [ModelList]}

if __name__ == "__main__":
    group = sys.argv[1] if len(sys.argv) > 1 else "all"
    suite = unittest.TestSuite()
    for name, classes in GROUPS.items():
        for cls in classes if group in ("all", name) else []:
            suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    ok = unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful()
    sys.exit(0 if ok else 1)
