"""Providers and Policies on a real 3-replica gantryd cluster, driven by Debian's python3-grpcio.

Run: /usr/bin/python3 test_resources_providers.py <group>
Groups: providers, policies, leak, rotation, service_accounts.

  providers  every Providers call: success and bad input, grants, deletion refused while a sandbox
             lists the provider, idempotent retries, and encryption at rest (the providers table and
             every file of every replica's data directory hold no plaintext)
  policies   every Policies call: gateway and namespace policies, tightening refusals naming each
             loosening field, GetEffective, optimistic concurrency
  leak       a planted credential goes through every Providers call (and bad input, denials,
             retries); then every response, every replica's log, the audit table, the idempotency
             records and every replica's /metrics page are searched for it: it appears nowhere
  service_accounts  a sandbox's driver_config service_account against the policies' allow-lists (gateway,
             namespace; empty: none) and a delegated caller's scope; malformed names; nothing changes on refusal
  rotation   `gantryd rotate-provider-key` adds a key and re-encrypts every provider under it (old
             ciphertexts open, new writes on any replica use the new key); a sealed secret moved to
             another row does not open (AAD binding). Skipped while gantryd lacks the command.

The environment is test_gantryd.py's (GANTRYD, GANTRY_STORE, GANTRY_PROTO_DIR, ...).
"""

import base64
import glob
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_gantryd as g  # noqa: E402  (generates the stubs, provides the cluster harness)
import test_identity as ti  # noqa: E402  (the per-role principals and the call helper)

import grpc  # noqa: E402
from gantry.v1 import (api_keys_pb2, audit_pb2, meta_pb2, namespaces_pb2, policies_pb2, principals_pb2,  # noqa: E402
                       providers_pb2, sandboxes_pb2)

PV = providers_pb2
PO = policies_pb2
SC = grpc.StatusCode


class Env(ti.Identity):
    """A 3-replica cluster, namespace team-b, and a principal with an API key per role:
    pa (platform_admin), auditor, na (namespace_admin of default), user and sa (users of default),
    other (user of team-b)."""

    def __init__(self, test):  # noqa: D107  (deliberately not Identity.__init__: 3 replicas)
        c = g.Cluster("res-" + test._testMethodName).init()
        test.clusters.append(c)
        c.join(2)
        c.wait_ready()
        self.c = c
        self.keys = {"pa": c.key}
        self.ids = {}
        self.responses = []  # every response and error text, for the leak check
        self.call("pa", namespaces_pb2, "Namespaces", "Create", namespaces_pb2.CreateNamespaceRequest(
            namespace=namespaces_pb2.Namespace(meta=meta_pb2.ObjectMeta(name="team-b"))))
        specs = {"auditor": ("user", "AUDITOR", ""), "na": ("user", "NAMESPACE_ADMIN", "default"),
                 "user": ("user", "USER", "default"), "sa": ("service_account", "USER", "default"),
                 "other": ("user", "USER", "team-b")}
        for role, (kind, brole, ns) in specs.items():
            p = self.call("pa", principals_pb2, "Principals", "Create", principals_pb2.CreatePrincipalRequest(
                principal=principals_pb2.Principal(meta=meta_pb2.ObjectMeta(name="p-" + role),
                                                   kind=getattr(principals_pb2, "PRINCIPAL_KIND_" + kind.upper()))))
            self.ids[role] = p.meta.id
            self.call("pa", principals_pb2, "Principals", "CreateRoleBinding", principals_pb2.CreateRoleBindingRequest(
                binding=principals_pb2.RoleBinding(principal_id=p.meta.id, role=getattr(principals_pb2, "ROLE_" + brole),
                                                   namespace=ns)))
            self.keys[role] = self.call("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
                principal_id=p.meta.id, name="test")).secret

    def call(self, role, mod, svc, method, req, replica=0, key=None):
        try:
            resp = super().call(role, mod, svc, method, req, replica=replica % 3, key=key)
        except grpc.RpcError as e:
            self.responses.append(("%s/%s" % (svc, method), e.details() or ""))
            raise
        self.responses.append(("%s/%s" % (svc, method), resp.SerializeToString()))
        return resp

    def pv(self, role, method, req, replica=0):
        return self.call(role, providers_pb2, "Providers", method, req, replica=replica)

    def po(self, role, method, req, replica=0):
        return self.call(role, policies_pb2, "Policies", method, req, replica=replica)

    def query(self, sql):
        return self.c.replicas[0].store("query", sql)


def provider(name, ns="default", type_="openai", config=None, labels=None):
    return PV.Provider(meta=meta_pb2.ObjectMeta(name=name, namespace=ns, labels=labels or {}), type=type_,
                       config=config or {})


def insert_sandbox(env, name, providers, ns="default"):
    spec = sandboxes_pb2.SandboxSpec(image="busybox", providers=providers).SerializeToString().hex()
    env.c.replicas[0].store(
        "exec", "INSERT INTO sandboxes (id, namespace, name, owner_id, created_by, labels, annotations, spec, status, "
        "phase, gpus, resource_version, created_at_ms, updated_at_ms, deletion_timestamp_ms) VALUES ('sb-%s', '%s', "
        "'%s', 'x', 'x', '{}', '{}', x'%s', x'', 'PROVISIONING', 0, 1, 0, 0, 0)" % (name, ns, name, spec))


class Base(g.GantrydTest):
    def err(self, fn, code, *needles):
        with self.assertRaises(grpc.RpcError) as cm:
            fn()
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        for n in needles:
            self.assertIn(n, cm.exception.details() or "")
        return cm.exception.details() or ""


class Providers(Base):
    def test_providers_calls_grants_and_encryption_at_rest(self):
        env = Env(self)
        plain = "sk-test-" + secrets.token_hex(16)
        # Create: the reply names the secret's keys and the key id, never a value.
        p = env.pv("na", "Create", PV.CreateProviderRequest(
            provider=provider("openai", config={"base_url": "https://api.example.com"}, labels={"team": "a"}),
            secret={"API_KEY": plain, "ORG": "org-1"}))
        self.assertEqual((p.meta.name, p.meta.namespace, p.type), ("openai", "default", "openai"))
        self.assertEqual(list(p.secret_keys), ["API_KEY", "ORG"])
        self.assertEqual(p.key_id, "k1")
        self.assertEqual(dict(p.config), {"base_url": "https://api.example.com"})
        self.assertEqual(dict(p.meta.labels), {"team": "a"})
        self.assertTrue(p.meta.id and p.meta.resource_version > 0 and p.meta.created_by == env.ids["na"])
        self.assertNotIn(plain.encode(), p.SerializeToString())
        # Bad input: a clear status, and nothing changes.
        bad = [
            (PV.CreateProviderRequest(secret={"K": "v"}), SC.INVALID_ARGUMENT, "provider.meta.name"),
            (PV.CreateProviderRequest(provider=provider("Bad_Name"), secret={"K": "v"}), SC.INVALID_ARGUMENT,
             "provider.meta.name"),
            (PV.CreateProviderRequest(provider=provider("p2")), SC.INVALID_ARGUMENT, "secret is required"),
            (PV.CreateProviderRequest(provider=provider("p2", type_=""), secret={"K": "v"}), SC.INVALID_ARGUMENT,
             "provider.type"),
            (PV.CreateProviderRequest(provider=provider("p2", type_="Open AI"), secret={"K": "v"}),
             SC.INVALID_ARGUMENT, "provider.type"),
            (PV.CreateProviderRequest(provider=provider("p2"), secret={"bad key": "v"}), SC.INVALID_ARGUMENT,
             "secret: key 0"),
            (PV.CreateProviderRequest(provider=provider("p2"), secret={"K": ""}), SC.INVALID_ARGUMENT, "\"K\""),
            (PV.CreateProviderRequest(provider=provider("p2"), secret={"K": "x" * 20000}), SC.INVALID_ARGUMENT,
             "\"K\""),
            (PV.CreateProviderRequest(provider=provider("p2", config={"bad key": "v"}), secret={"K": "v"}),
             SC.INVALID_ARGUMENT, "provider.config"),
            (PV.CreateProviderRequest(provider=provider("p2", labels={"bad key": "v"}), secret={"K": "v"}),
             SC.INVALID_ARGUMENT, "provider.meta.labels"),
            (PV.CreateProviderRequest(provider=provider("openai"), secret={"K": "v"}), SC.ALREADY_EXISTS, "openai"),
            (PV.CreateProviderRequest(provider=provider("p2", ns="nope"), secret={"K": "v"}), SC.NOT_FOUND, "nope"),
        ]
        for req, code, needle in bad:
            self.err(lambda: env.pv("pa", "Create", req), code, needle)
        self.err(lambda: env.pv("user", "Create", PV.CreateProviderRequest(provider=provider("p2"), secret={"K": "v"})),
                 SC.PERMISSION_DENIED, "namespace_admin")
        self.err(lambda: env.pv("na", "Create", PV.CreateProviderRequest(provider=provider("p2", ns="team-b"),
                                                                         secret={"K": "v"})), SC.PERMISSION_DENIED)
        self.assertEqual(env.query("SELECT count(*) FROM providers").split("\n")[1], "1")
        # Idempotent retries, on another replica too: one provider.
        req = PV.CreateProviderRequest(request_id="rid-github", provider=provider("github", type_="github"),
                                       secret={"TOKEN": "ghp_" + secrets.token_hex(8)})
        a = env.pv("na", "Create", req, replica=1)
        b = env.pv("na", "Create", req, replica=2)
        self.assertEqual(a.meta.id, b.meta.id)
        env.pv("na", "Create", PV.CreateProviderRequest(provider=provider("zeta", type_="generic"), secret={"K": "v"}))
        # Get and List: readers of the namespace (the auditor too), never another namespace's users.
        for role in ("pa", "auditor", "na", "user", "sa"):
            got = env.pv(role, "Get", PV.GetProviderRequest(namespace="default", name="openai"), replica=2)
            self.assertEqual(got.meta.id, p.meta.id)
            self.assertEqual(list(got.secret_keys), ["API_KEY", "ORG"])
        self.err(lambda: env.pv("other", "Get", PV.GetProviderRequest(namespace="default", name="openai")),
                 SC.PERMISSION_DENIED)
        self.err(lambda: env.pv("na", "Get", PV.GetProviderRequest(namespace="default", name="nope")), SC.NOT_FOUND,
                 "nope")
        self.err(lambda: env.pv("na", "Get", PV.GetProviderRequest(namespace="default")), SC.INVALID_ARGUMENT, "name")
        self.err(lambda: env.pv("pa", "Get", PV.GetProviderRequest(name="openai")), SC.INVALID_ARGUMENT, "namespace")
        # Without its namespace the request is malformed for every caller, not a denial.
        self.err(lambda: env.pv("na", "Get", PV.GetProviderRequest(name="openai")), SC.INVALID_ARGUMENT,
                 "namespace is required")
        names, token = [], ""
        while True:
            page = env.pv("user", "List", PV.ListProvidersRequest(namespace="default", page=meta_pb2.PageRequest(
                page_size=2, page_token=token)), replica=1)
            self.assertLessEqual(len(page.providers), 2)
            names += [x.meta.name for x in page.providers]
            token = page.next_page_token
            if not token:
                break
        self.assertEqual(names, ["github", "openai", "zeta"])
        self.assertEqual(len(env.pv("pa", "List", PV.ListProvidersRequest(namespace="team-b")).providers), 0)
        self.err(lambda: env.pv("other", "List", PV.ListProvidersRequest(namespace="default")), SC.PERMISSION_DENIED)
        # Update: config and labels replaced, the secret kept when none is given.
        sealed = env.query("SELECT hex(secret) FROM providers WHERE name = 'openai'").split("\n")[1]
        u = env.pv("na", "Update", PV.UpdateProviderRequest(
            provider=provider("openai", config={"base_url": "https://b.example.com"}, type_=""),
            expected_resource_version=p.meta.resource_version), replica=1)
        self.assertGreater(u.meta.resource_version, p.meta.resource_version)
        self.assertEqual((u.type, dict(u.config), dict(u.meta.labels)), ("openai", {"base_url": "https://b.example.com"},
                                                                          {}))
        self.assertEqual(list(u.secret_keys), ["API_KEY", "ORG"])
        self.assertEqual(env.query("SELECT hex(secret) FROM providers WHERE name = 'openai'").split("\n")[1], sealed)
        u2 = env.pv("na", "Update", PV.UpdateProviderRequest(provider=provider("openai"), secret={"API_KEY": plain}))
        self.assertEqual(list(u2.secret_keys), ["API_KEY"])
        self.assertNotEqual(env.query("SELECT hex(secret) FROM providers WHERE name = 'openai'").split("\n")[1], sealed)
        self.err(lambda: env.pv("na", "Update", PV.UpdateProviderRequest(
            provider=provider("openai"), expected_resource_version=p.meta.resource_version)), SC.ABORTED,
            "resource_version")
        self.err(lambda: env.pv("na", "Update", PV.UpdateProviderRequest(provider=provider("nope"))), SC.NOT_FOUND)
        self.err(lambda: env.pv("na", "Update", PV.UpdateProviderRequest(provider=provider("openai"),
                                                                         secret={"K": ""})), SC.INVALID_ARGUMENT)
        self.err(lambda: env.pv("user", "Update", PV.UpdateProviderRequest(provider=provider("openai"))),
                 SC.PERMISSION_DENIED)
        # Grants: the principal needs a role in the namespace.
        gr = env.pv("na", "Grant", PV.GrantProviderRequest(namespace="default", name="openai",
                                                           principal_id=env.ids["user"]))
        self.assertEqual((gr.provider_id, gr.namespace, gr.principal_id, gr.created_by),
                         (p.meta.id, "default", env.ids["user"], env.ids["na"]))
        env.pv("na", "Grant", PV.GrantProviderRequest(namespace="default", name="openai", principal_id="p-sa"),
               replica=2)
        self.err(lambda: env.pv("na", "Grant", PV.GrantProviderRequest(namespace="default", name="openai",
                                                                       principal_id=env.ids["user"])),
                 SC.ALREADY_EXISTS)
        self.err(lambda: env.pv("na", "Grant", PV.GrantProviderRequest(namespace="default", name="openai",
                                                                       principal_id=env.ids["other"])),
                 SC.FAILED_PRECONDITION, "holds no role in namespace \"default\"")
        self.err(lambda: env.pv("na", "Grant", PV.GrantProviderRequest(namespace="default", name="openai",
                                                                       principal_id="nobody")), SC.NOT_FOUND, "nobody")
        self.err(lambda: env.pv("na", "Grant", PV.GrantProviderRequest(namespace="default", name="nope",
                                                                       principal_id=env.ids["user"])), SC.NOT_FOUND)
        self.err(lambda: env.pv("na", "Grant", PV.GrantProviderRequest(namespace="default", name="openai")),
                 SC.INVALID_ARGUMENT, "principal_id")
        self.err(lambda: env.pv("user", "Grant", PV.GrantProviderRequest(namespace="default", name="openai",
                                                                         principal_id=env.ids["user"])),
                 SC.PERMISSION_DENIED)
        gl = env.pv("auditor", "ListGrants", PV.ListProviderGrantsRequest(namespace="default", name="openai"))
        self.assertEqual(sorted(x.principal_id for x in gl.grants), sorted([env.ids["user"], env.ids["sa"]]))
        self.assertEqual(len(env.pv("na", "ListGrants", PV.ListProviderGrantsRequest(
            namespace="default", name="zeta")).grants), 0)
        self.err(lambda: env.pv("na", "ListGrants", PV.ListProviderGrantsRequest(namespace="default", name="nope")),
                 SC.NOT_FOUND)
        r = env.pv("na", "RevokeGrant", PV.RevokeProviderGrantRequest(namespace="default", name="openai",
                                                                      principal_id=env.ids["sa"]), replica=1)
        self.assertEqual(r.id, p.meta.id)
        self.err(lambda: env.pv("na", "RevokeGrant", PV.RevokeProviderGrantRequest(
            namespace="default", name="openai", principal_id=env.ids["sa"])), SC.NOT_FOUND, "no grant")
        # ListGrants from each replica's grants model after a read index: the revoke just made
        # through replica 2 is seen everywhere, every field as written.
        reads = [r.metric("gantry_provider_model_reads_total") or 0 for r in env.c.replicas]
        for rep in range(3):
            gl = env.pv("auditor", "ListGrants", PV.ListProviderGrantsRequest(namespace="default", name="openai"),
                        replica=rep)
            self.assertEqual([(x.provider_id, x.namespace, x.principal_id) for x in gl.grants],
                             [(p.meta.id, "default", env.ids["user"])], rep)
            self.assertTrue(gl.grants[0].created_by and gl.grants[0].created_at_ms > 0, gl)
            self.assertGreater(gl.revision, 0)
            self.assertEqual(len(env.pv("na", "ListGrants", PV.ListProviderGrantsRequest(
                namespace="default", name="zeta"), replica=rep).grants), 0)
            self.err(lambda: env.pv("na", "ListGrants", PV.ListProviderGrantsRequest(namespace="default",
                                                                                     name="nope"), replica=rep),
                     SC.NOT_FOUND)
            self.assertGreaterEqual((env.c.replicas[rep].metric("gantry_provider_model_reads_total") or 0)
                                    - reads[rep], 3, rep)
        self.err(lambda: env.pv("na", "RevokeGrant", PV.RevokeProviderGrantRequest(namespace="default",
                                                                                   name="openai")),
                 SC.INVALID_ARGUMENT)
        # Delete: refused while a sandbox lists the provider (the message names it).
        insert_sandbox(env, "sb-one", ["github", "openai"])
        self.err(lambda: env.pv("na", "Delete", PV.DeleteProviderRequest(namespace="default", name="openai")),
                 SC.FAILED_PRECONDITION, "sandbox \"sb-one\"")
        self.err(lambda: env.pv("na", "Delete", PV.DeleteProviderRequest(
            namespace="default", name="openai", expected_resource_version=1)), SC.ABORTED)
        env.c.replicas[0].store("exec", "DELETE FROM sandboxes WHERE name = 'sb-one'")
        self.err(lambda: env.pv("user", "Delete", PV.DeleteProviderRequest(namespace="default", name="openai")),
                 SC.PERMISSION_DENIED)
        self.err(lambda: env.pv("na", "Delete", PV.DeleteProviderRequest(namespace="default")), SC.INVALID_ARGUMENT)
        d = env.pv("na", "Delete", PV.DeleteProviderRequest(namespace="default", name="openai"), replica=2)
        self.assertEqual(d.id, p.meta.id)
        self.assertGreater(d.revision, 0)
        self.err(lambda: env.pv("na", "Get", PV.GetProviderRequest(namespace="default", name="openai")), SC.NOT_FOUND)
        self.err(lambda: env.pv("na", "Delete", PV.DeleteProviderRequest(namespace="default", name="openai")),
                 SC.NOT_FOUND)
        self.assertEqual(env.query("SELECT count(*) FROM provider_grants WHERE provider_id = '%s'" % p.meta.id)
                         .split("\n")[1], "0")
        # Encryption at rest: ciphertext in the table (1 + 12 + n + 16 bytes), under a ring key; no plaintext in
        # the table nor in any file of any replica's data directory (dqlite's log and snapshots included).
        env.pv("na", "Create", PV.CreateProviderRequest(provider=provider("atrest"), secret={"API_KEY": plain}))
        rows = env.query("SELECT * FROM providers WHERE name = 'atrest'")
        self.assertNotIn(plain, rows)
        self.assertNotIn(plain.encode().hex(), rows.lower())
        size, key_id = env.query("SELECT length(secret), key_id FROM providers WHERE name = 'atrest'").split(
            "\n")[1].split("\t")
        self.assertEqual((int(size), key_id), (1 + 12 + len("API_KEY") + 1 + len(plain) + 1 + 16, "k1"))
        ring = env.query("SELECT key FROM cluster_meta WHERE key LIKE 'provider_key/%'").split("\n")[1:]
        self.assertEqual([x for x in ring if x], ["provider_key/k1"])
        for rep in env.c.replicas:
            for path in glob.glob(os.path.join(rep.dir, "**"), recursive=True):
                if os.path.isfile(path):
                    with open(path, "rb") as f:
                        self.assertNotIn(plain.encode(), f.read(), path)
        print("providers: every call checked; the secret is ciphertext in the table and absent from %d data dirs"
              % len(env.c.replicas))


def pol(ns="", **kw):
    return PO.Policy(meta=meta_pb2.ObjectMeta(namespace=ns), **kw)


GATEWAY = dict(allowed_images=["registry.example.com/*", "docker.io/library/python:*"], allowed_drivers=["process",
               "kubernetes"], max_lifetime_seconds=3600, max_gpus_per_sandbox=2,
               allowed_driver_config_keys=["kubernetes.*", "process.env"], allow_shares=True, allow_exec_shares=False,
               egress_allow=["*.github.com:443", "pypi.org:80-443"])


class Policies(Base):
    def test_policies_tightening_and_effective(self):
        env = Env(self)
        # Nothing stored: Get is NOT_FOUND, GetEffective is the built-in default (everything allowed).
        self.err(lambda: env.po("user", "Get", PO.GetPolicyRequest()), SC.NOT_FOUND, "no gateway policy")
        self.err(lambda: env.po("user", "Get", PO.GetPolicyRequest(namespace="default")), SC.NOT_FOUND,
                 "no policy is set")
        reads = env.c.replicas[0].metric("gantry_policy_model_reads_total") or 0
        e = env.po("user", "GetEffective", PO.GetEffectivePolicyRequest(namespace="default"))
        self.assertEqual((list(e.allowed_images), e.max_lifetime_seconds, e.allow_shares, e.allow_exec_shares,
                          e.deny_gpus), ([], 0, True, True, False))
        # from the policies model (docs/providers-policies.md)
        self.assertEqual((env.c.replicas[0].metric("gantry_policy_model_reads_total") or 0) - reads, 1)
        self.err(lambda: env.po("pa", "GetEffective", PO.GetEffectivePolicyRequest(namespace="nope")), SC.NOT_FOUND)
        self.err(lambda: env.po("pa", "Get", PO.GetPolicyRequest(namespace="nope")), SC.NOT_FOUND, "nope")
        # A namespace admin may tighten even the default (anything is within "any").
        env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", max_lifetime_seconds=60, allow_shares=True)))
        # Shares follow the policies: read shares allowed, exec shares not (left false here).
        SB = sandboxes_pb2
        env.call("user", sandboxes_pb2, "Sandboxes", "Create", SB.CreateSandboxRequest(sandbox=SB.Sandbox(
            meta=SB.Sandbox().meta.__class__(name="shared", namespace="default"), spec=SB.SandboxSpec(image="busybox"))))

        def share(access):
            return env.call("user", sandboxes_pb2, "Sandboxes", "Share", SB.ShareSandboxRequest(
                namespace="default", name="shared", grantee_principal_id=env.ids["sa"], access=access))
        self.assertEqual(len(share(SB.SHARE_ACCESS_READ).shares), 1)
        self.err(lambda: share(SB.SHARE_ACCESS_EXEC), SC.FAILED_PRECONDITION, "namespace policy", "allow_exec_shares")
        env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", max_lifetime_seconds=60)))
        self.err(lambda: share(SB.SHARE_ACCESS_READ), SC.FAILED_PRECONDITION, "allow_shares")
        # Existing shares stay and can always be removed.
        env.call("user", sandboxes_pb2, "Sandboxes", "Unshare", SB.UnshareSandboxRequest(
            namespace="default", name="shared", grantee_principal_id=env.ids["sa"]))
        env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", max_lifetime_seconds=60, allow_shares=True)))
        # The gateway policy: platform_admin only; bad input refused.
        self.err(lambda: env.po("na", "Set", PO.SetPolicyRequest(policy=pol(**GATEWAY))), SC.PERMISSION_DENIED,
                 "platform_admin")
        for field, value, needle in (("egress_allow", ["github.com"], "egress_allow[0]"),
                                     ("egress_allow", ["x.org:0"], "egress_allow[0]"),
                                     ("egress_allow", ["x.org:70000"], "egress_allow[0]"),
                                     ("egress_allow", ["x.org:443-80"], "egress_allow[0]"),
                                     ("egress_allow", ["X.org:443"], "egress_allow[0]"),
                                     ("allowed_drivers", ["Bad Driver"], "allowed_drivers[0]"),
                                     ("allowed_images", ["a b"], "allowed_images[0]"),
                                     ("allowed_images", ["x%d" % i for i in range(65)], "at most 64"),
                                     ("max_lifetime_seconds", 2 ** 63, "max_lifetime_seconds")):
            self.err(lambda: env.po("pa", "Set", PO.SetPolicyRequest(policy=pol(**{field: value}))),
                     SC.INVALID_ARGUMENT, needle)
        self.err(lambda: env.po("pa", "Set", PO.SetPolicyRequest()), SC.INVALID_ARGUMENT, "policy is required")
        gw = env.po("pa", "Set", PO.SetPolicyRequest(policy=pol(**GATEWAY)), replica=1)
        self.assertEqual(list(gw.egress_allow), GATEWAY["egress_allow"])
        self.assertGreater(gw.meta.resource_version, 0)
        got = env.po("other", "Get", PO.GetPolicyRequest(), replica=2)
        self.assertEqual(got, gw)
        # The namespace policy stored earlier (lifetime 60, shares on, the rest "any") is now looser than the
        # gateway's in its lists: both apply, GetEffective says so.
        e = env.po("user", "GetEffective", PO.GetEffectivePolicyRequest(namespace="default"))
        self.assertEqual((e.max_lifetime_seconds, e.max_gpus_per_sandbox, list(e.allowed_images)),
                         (60, 2, GATEWAY["allowed_images"]))
        # Looser namespace policies are refused, naming EACH loosening field.
        loose = dict(allowed_images=["*"], allowed_drivers=[], max_lifetime_seconds=0, max_gpus_per_sandbox=4,
                     allowed_driver_config_keys=["*"], allow_shares=True, allow_exec_shares=True,
                     egress_allow=["*:*"])
        msg = self.err(lambda: env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", **loose))),
                       SC.FAILED_PRECONDITION, "may only tighten")
        for field in ("allowed_images", "allowed_drivers", "max_lifetime_seconds", "max_gpus_per_sandbox",
                      "allowed_driver_config_keys", "allow_exec_shares", "egress_allow"):
            self.assertIn(field, msg)
        self.assertNotIn("allow_shares,", msg)
        for field, value in (("allowed_images", ["registry.example.com.evil.io/*"]), ("allowed_drivers", ["fake"]),
                             ("egress_allow", ["api.github.com:22"]), ("egress_allow", ["github.com:443"]),
                             ("egress_allow", ["pypi.org:80-8080"]), ("max_lifetime_seconds", 3601),
                             ("allowed_driver_config_keys", ["process.*"])):
            tight = dict(GATEWAY)
            tight[field] = value
            self.err(lambda: env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", **tight))),
                     SC.FAILED_PRECONDITION, "looser fields: %s (%s: " % (field, field))  # only that field
        # Coverage is judged conservatively: "process.e[n]v" means "process.env" but is not provably within it;
        # a prefix glob covers any pattern that starts with its literal prefix.
        self.err(lambda: env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", **dict(
            GATEWAY, allowed_driver_config_keys=["process.e[n]v"])))), SC.FAILED_PRECONDITION,
            "allowed_driver_config_keys")
        env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", **dict(
            GATEWAY, allowed_images=["registry.example.com/*/app:?"]))))
        # A tighter one is accepted; GetEffective shows it.
        tight = dict(allowed_images=["registry.example.com/team-a/*", "docker.io/library/python:3.12"],
                     allowed_drivers=["process"], max_lifetime_seconds=600, max_gpus_per_sandbox=1,
                     allowed_driver_config_keys=["kubernetes.node_selector"], allow_shares=True,
                     allow_exec_shares=False, egress_allow=["api.github.com:443", "pypi.org:443"])
        np_ = env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", **tight)), replica=2)
        self.assertEqual(np_.meta.namespace, "default")
        self.assertEqual(np_.meta.created_by, env.ids["na"])
        e = env.po("auditor", "GetEffective", PO.GetEffectivePolicyRequest(namespace="default"))
        self.assertEqual((list(e.allowed_images), list(e.allowed_drivers), e.max_lifetime_seconds,
                          e.max_gpus_per_sandbox, list(e.egress_allow), e.allow_shares, e.allow_exec_shares),
                         (tight["allowed_images"], ["process"], 600, 1, tight["egress_allow"], True, False))
        self.assertEqual(dict(e.meta.annotations), {})
        self.err(lambda: env.po("other", "GetEffective", PO.GetEffectivePolicyRequest(namespace="default")),
                 SC.PERMISSION_DENIED)
        self.assertEqual(env.po("user", "Get", PO.GetPolicyRequest(namespace="default")), np_)
        # Optimistic concurrency and idempotency.
        self.err(lambda: env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", **tight),
                                                                 expected_resource_version=1)), SC.ABORTED)
        a = env.po("na", "Set", PO.SetPolicyRequest(request_id="pol-1", policy=pol("default", **tight),
                                                    expected_resource_version=np_.meta.resource_version))
        b = env.po("na", "Set", PO.SetPolicyRequest(request_id="pol-1", policy=pol("default", **tight),
                                                    expected_resource_version=np_.meta.resource_version), replica=1)
        self.assertEqual(a, b)
        # deny_gpus: a gateway that denies GPUs cannot be loosened; later gateway tightening makes both apply.
        env.po("pa", "Set", PO.SetPolicyRequest(policy=pol(**dict(GATEWAY, deny_gpus=True,
                                                                   allowed_images=["docker.io/library/python:*"]))))
        self.err(lambda: env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", **dict(
            tight, allowed_images=["docker.io/library/python:3.12"])))), SC.FAILED_PRECONDITION, "deny_gpus")
        e = env.po("na", "GetEffective", PO.GetEffectivePolicyRequest(namespace="default"))
        self.assertTrue(e.deny_gpus)
        self.assertEqual(dict(e.meta.annotations), {"gantry.io/also-enforced": "allowed_images"})
        # Namespaces that do not exist; Delete.
        self.err(lambda: env.po("pa", "Set", PO.SetPolicyRequest(policy=pol("nope", **tight))), SC.NOT_FOUND, "nope")
        self.err(lambda: env.po("na", "Delete", PO.DeletePolicyRequest(namespace="default",
                                                                       expected_resource_version=1)), SC.ABORTED)
        d = env.po("na", "Delete", PO.DeletePolicyRequest(namespace="default"), replica=1)
        self.assertEqual(list(d.allowed_drivers), ["process"])
        self.assertGreater(d.meta.deletion_timestamp_ms, 0)
        self.err(lambda: env.po("na", "Get", PO.GetPolicyRequest(namespace="default")), SC.NOT_FOUND)
        self.err(lambda: env.po("na", "Delete", PO.DeletePolicyRequest(namespace="default")), SC.NOT_FOUND)
        self.err(lambda: env.po("na", "Delete", PO.DeletePolicyRequest()), SC.PERMISSION_DENIED)
        self.err(lambda: env.po("user", "Set", PO.SetPolicyRequest(policy=pol("default"))), SC.PERMISSION_DENIED)
        env.po("pa", "Delete", PO.DeletePolicyRequest())
        self.err(lambda: env.po("pa", "Get", PO.GetPolicyRequest()), SC.NOT_FOUND)
        deadline = time.monotonic() + 10  # refused calls reach the trail through the audit sink (about 1 s)
        while True:
            audits = env.query("SELECT count(*) FROM audit WHERE operation LIKE '/gantry.v1.Policies/%'").split("\n")[1]
            if int(audits) > 10 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertGreater(int(audits), 10)
        # Sandbox creation is checked against the effective policy, naming each violated field.
        env.po("pa", "Set", PO.SetPolicyRequest(policy=PO.Policy(
            allowed_images=["registry.example.com/*"], max_lifetime_seconds=600, max_gpus_per_sandbox=1)))
        from gantry.v1 import meta_pb2
        bad = sandboxes_pb2.CreateSandboxRequest(sandbox=sandboxes_pb2.Sandbox(
            meta=meta_pb2.ObjectMeta(namespace="default", name="nope"),
            spec=sandboxes_pb2.SandboxSpec(image="busybox", lifetime_seconds=7200, gpu_count=2)))
        with self.assertRaises(grpc.RpcError) as cm:
            env.call("pa", sandboxes_pb2, "Sandboxes", "Create", bad)
        self.assertEqual(cm.exception.code(), SC.FAILED_PRECONDITION)
        for field in ("allowed_images", "max_lifetime_seconds", "max_gpus_per_sandbox"):
            self.assertIn(field, cm.exception.details())
        ok = sandboxes_pb2.CreateSandboxRequest(sandbox=sandboxes_pb2.Sandbox(
            meta=meta_pb2.ObjectMeta(namespace="default", name="fine"),
            spec=sandboxes_pb2.SandboxSpec(image="registry.example.com/agent:1", lifetime_seconds=300)))
        self.assertEqual(env.call("pa", sandboxes_pb2, "Sandboxes", "Create", ok).meta.name, "fine")
        print("policies: every call checked; %s audit events; sandbox creation enforced" % audits)


class Leak(Base):
    def test_a_planted_credential_appears_nowhere(self):
        env = Env(self)
        canary = "gantry-canary-" + secrets.token_hex(20)
        forms = [canary.encode(), canary.encode().hex().encode(), canary.encode().hex().upper().encode(),
                 base64.b64encode(canary.encode())]
        ns = "default"

        def attempt(role, method, req, replica=0):
            try:
                env.pv(role, method, req, replica=replica)
            except grpc.RpcError:
                pass

        attempt("na", "Create", PV.CreateProviderRequest(request_id="leak-1", provider=provider("leaky"),
                                                          secret={"API_KEY": canary, "SECOND": canary + "-2"}))
        attempt("na", "Create", PV.CreateProviderRequest(request_id="leak-1", provider=provider("leaky"),
                                                          secret={"API_KEY": canary}), replica=1)
        attempt("na", "Create", PV.CreateProviderRequest(provider=provider("leaky"), secret={"API_KEY": canary}))
        attempt("na", "Create", PV.CreateProviderRequest(provider=provider("bad_name"), secret={"API_KEY": canary}))
        attempt("na", "Create", PV.CreateProviderRequest(provider=provider("leaky2"), secret={"bad key": canary}))
        attempt("na", "Create", PV.CreateProviderRequest(provider=provider("leaky2"), secret={"K": canary * 500}))
        attempt("na", "Create", PV.CreateProviderRequest(provider=provider("leaky2"),
                                                          secret={"K": canary, "L": canary * 400}))
        attempt("user", "Create", PV.CreateProviderRequest(provider=provider("leaky2"), secret={"K": canary}))
        attempt("na", "Create", PV.CreateProviderRequest(provider=provider("leaky2", ns="team-b"),
                                                          secret={"K": canary}))
        attempt("pa", "Create", PV.CreateProviderRequest(provider=provider("leaky2", ns="nope"), secret={"K": canary}))
        attempt("na", "Create", PV.CreateProviderRequest(request_id="x" * 200, provider=provider("leaky2"),
                                                          secret={"K": canary}))
        for rep in range(3):
            attempt("auditor", "Get", PV.GetProviderRequest(namespace=ns, name="leaky"), replica=rep)
            attempt("user", "List", PV.ListProvidersRequest(namespace=ns), replica=rep)
        attempt("na", "Update", PV.UpdateProviderRequest(provider=provider("leaky"), secret={"API_KEY": canary + "-3"}))
        attempt("na", "Update", PV.UpdateProviderRequest(provider=provider("leaky"), secret={"API_KEY": canary},
                                                          expected_resource_version=1))
        attempt("na", "Update", PV.UpdateProviderRequest(provider=provider("leaky"), secret={"bad key": canary}))
        attempt("na", "Update", PV.UpdateProviderRequest(provider=provider("leaky", config={"c": "d"})))
        attempt("user", "Update", PV.UpdateProviderRequest(provider=provider("leaky"), secret={"K": canary}))
        attempt("na", "Grant", PV.GrantProviderRequest(namespace=ns, name="leaky", principal_id=env.ids["user"]))
        attempt("na", "Grant", PV.GrantProviderRequest(namespace=ns, name="leaky", principal_id=env.ids["other"]))
        attempt("na", "ListGrants", PV.ListProviderGrantsRequest(namespace=ns, name="leaky"))
        attempt("na", "RevokeGrant", PV.RevokeProviderGrantRequest(namespace=ns, name="leaky",
                                                                   principal_id=env.ids["user"]))
        insert_sandbox(env, "holder", ["leaky"])
        attempt("na", "Delete", PV.DeleteProviderRequest(namespace=ns, name="leaky"))
        env.c.replicas[0].store("exec", "DELETE FROM sandboxes WHERE name = 'holder'")
        got = env.pv("auditor", "Get", PV.GetProviderRequest(namespace=ns, name="leaky"))
        self.assertEqual(list(got.secret_keys), ["API_KEY"])
        attempt("na", "Delete", PV.DeleteProviderRequest(namespace=ns, name="leaky"))
        attempt("na", "Create", PV.CreateProviderRequest(provider=provider("kept"), secret={"API_KEY": canary}))
        self.assertGreater(len(env.responses), 30)
        places = {}
        for what, body in env.responses:
            places["response of %s" % what] = body if isinstance(body, bytes) else body.encode()
        for r in env.c.replicas:
            with open(r.log, "rb") as f:
                places["log of replica %d" % r.rid] = f.read()
            with urllib.request.urlopen("http://%s/metrics" % r.admin, timeout=5) as resp:
                places["/metrics of replica %d" % r.rid] = resp.read()
        # Failed mutations and denials are audited asynchronously: wait until the table stops growing.
        audit, end = "", time.monotonic() + 10
        while time.monotonic() < end:
            time.sleep(0.5)
            # Two halves: results wider than 16 columns are refused (store/conn.h, a dqlite 1.11 bug).
            now = env.query("SELECT seq, time_ms, class_uid, activity_id, actor_id, actor_name, actor_kind, operation, "
                            "namespace, resource_type FROM audit") + env.query(
                "SELECT resource_id, resource_name, status, status_code, message, source, request_id, replica_id, "
                "gateway_id, revision FROM audit")
            if now == audit:
                break
            audit = now
        places["audit table"] = audit.encode()
        places["idempotency table"] = env.query("SELECT * FROM idempotency").encode()
        places["events table"] = env.query("SELECT * FROM events").encode()
        places["providers table without the sealed column"] = env.query(
            "SELECT id, namespace, name, type, config, secret_keys, key_id, labels FROM providers").encode()
        for where, data in places.items():
            for form in forms:
                self.assertNotIn(form, data, "the planted credential appears in the %s" % where)
        self.assertGreaterEqual(audit.count("/gantry.v1.Providers/"), 15)
        self.assertIn(b"gantry_", places["/metrics of replica 1"])
        print("leak: %d places searched (%d responses, 3 logs, 3 metrics pages, audit with %d Providers events): "
              "the credential appears in none" % (len(places), len(env.responses), audit.count("/gantry.v1.Providers/")))


class Rotation(Base):
    def rotate(self, env, rep=0):
        r = env.c.replicas[rep]
        return subprocess.run([g.GANTRYD, "rotate-provider-key"] + r.flags(), capture_output=True, timeout=120)

    def test_rotation_reencrypts_and_rows_cannot_be_swapped(self):
        env = Env(self)
        probe = subprocess.run([g.GANTRYD, "rotate-provider-key", "--help"], capture_output=True, timeout=60)
        if b"unknown command" in probe.stderr:
            self.skipTest("gantryd has no rotate-provider-key command yet")
        # The first provider creates the ring's first key; a rotation adds k2 and moves it there.
        self.assertEqual(env.pv("na", "Create", PV.CreateProviderRequest(provider=provider("alpha"),
                                                                         secret={"K": "v-alpha"})).key_id, "k1")
        out = self.rotate(env)
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        self.assertIn(b"Added provider key k2", out.stdout)
        self.assertIn(b"Re-encrypted 1 provider secret(s) under k2", out.stdout)
        for i, name in enumerate(("beta", "gamma")):
            p = env.pv("na", "Create", PV.CreateProviderRequest(provider=provider(name), secret={"K": "v-" + name}),
                       replica=i + 1)
            self.assertEqual(p.key_id, "k2")
        out = self.rotate(env, rep=1)
        self.assertEqual(out.returncode, 0, out.stderr.decode())
        self.assertIn(b"Re-encrypted 3 provider secret(s) under k3", out.stdout)
        for i, name in enumerate(("alpha", "beta", "gamma")):
            self.assertEqual(env.pv("auditor", "Get", PV.GetProviderRequest(namespace="default", name=name),
                                    replica=i).key_id, "k3")
        # New writes on every replica use the newest key at once.
        self.assertEqual(env.pv("na", "Create", PV.CreateProviderRequest(provider=provider("delta"),
                                                                         secret={"K": "v"}), replica=2).key_id, "k3")
        # A sealed secret moved to another row does not open: the next rotation leaves it and says so.
        env.c.replicas[0].store("exec", "UPDATE providers SET secret = (SELECT secret FROM providers WHERE "
                                "name = 'alpha') WHERE name = 'beta'")
        out = self.rotate(env, rep=2)
        self.assertEqual(out.returncode, 1, out.stdout.decode())
        self.assertIn(b"Re-encrypted 3 provider secret(s) under k4", out.stdout)
        self.assertIn(b"did not open", out.stderr)
        keys = dict(x.split("\t") for x in env.query("SELECT name, key_id FROM providers").split("\n")[1:] if x)
        self.assertEqual(keys, {"alpha": "k4", "beta": "k3", "gamma": "k4", "delta": "k4"})
        logs = b"".join(open(r.log, "rb").read() for r in env.c.replicas)
        audit = env.query("SELECT operation, resource_name, message FROM audit WHERE operation LIKE 'gantryd%'")
        self.assertIn("re-encrypted from key k3 to key k4", audit)
        self.assertNotIn(b"v-alpha", logs + audit.encode() + out.stdout + out.stderr)
        print("rotation: k1 -> k4, old ciphertexts opened, new writes under the newest key on every replica, "
              "a moved ciphertext refused")


class Egress(Base):
    def test_egress_decide(self):
        """Egress.Decide (docs/egress.md): one decision function over the gateway and namespace
        policies; every name of a connection must be allowed; the deciding layer, its entry and its
        policy revision are reported; bad intents are INVALID_ARGUMENT and change nothing; anyone who
        may read the namespace may ask; `gantry policy test` answers the same (exit 6 when refused)."""
        env = Env(self)
        ED = PO.EgressTransport

        def decide(role="user", ns="default", replica=0, **intent):
            return env.call(role, policies_pb2, "Egress", "Decide", PO.DecideEgressRequest(
                intent=PO.EgressIntent(namespace=ns, **intent)), replica=replica)

        # No policy: everything, from the built-in default.
        d = decide(host="example.com", port=443)
        self.assertEqual((d.allowed, d.layer, d.rule, d.policy_revision), (True, "default", "", 0))
        gp = env.po("pa", "Set", PO.SetPolicyRequest(policy=pol(egress_allow=["*.github.com:443", "pypi.org:*",
                                                                             "10.0.*:5432"])))
        n = env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", egress_allow=["api.github.com:443",
                                                                                       "10.0.1.*:5432"])))
        table = [
            # (intent, allowed, layer, rule)
            (dict(host="api.github.com", port=443, transport=ED.EGRESS_TRANSPORT_HTTP_CONNECT), True, "namespace",
             "api.github.com:443"),
            (dict(host="API.GitHub.com.", port=443), True, "namespace", "api.github.com:443"),
            (dict(host="raw.github.com", port=443), False, "namespace", ""),
            (dict(host="pypi.org", port=443), False, "namespace", ""),
            (dict(host="evil.example", port=443), False, "gateway", ""),
            (dict(host="api.github.com", port=22), False, "gateway", ""),
            (dict(host="api.github.com", port=443, sni="evil.example", transport=ED.EGRESS_TRANSPORT_TLS), False,
             "gateway", ""),
            (dict(http_host="api.github.com", port=443, transport=ED.EGRESS_TRANSPORT_HTTP), True, "namespace",
             "api.github.com:443"),
            (dict(ip="10.0.1.7", port=5432), True, "namespace", "10.0.1.*:5432"),
            (dict(ip="10.0.2.7", port=5432), False, "namespace", ""),
            (dict(host="api.github.com", port=53, transport=ED.EGRESS_TRANSPORT_DNS), False, "gateway", ""),
        ]
        reads = [r.metric("gantry_policy_model_reads_total") or 0 for r in env.c.replicas]
        for i, (intent, allowed, layer, rule) in enumerate(table):
            d = decide(replica=i, **intent)
            self.assertEqual((d.allowed, d.layer, d.rule), (allowed, layer, rule), (intent, d))
            want_rev = n.meta.resource_version if layer == "namespace" else gp.meta.resource_version
            self.assertEqual(d.policy_revision, want_rev, intent)
            self.assertTrue(d.reason, intent)
            if not allowed:
                self.assertIn(d.destination, d.reason)
        # Decided from each replica's policies model (the layers and the namespace), not the store.
        for rid, r in enumerate(env.c.replicas):
            self.assertGreaterEqual((r.metric("gantry_policy_model_reads_total") or 0) - reads[rid], 3, rid)
        # Without a namespace policy, the gateway's entry decides.
        d = decide(ns="team-b", role="other", host="pypi.org", port=8443)
        self.assertEqual((d.allowed, d.layer, d.rule), (True, "gateway", "pypi.org:*"))
        # Bad intents: INVALID_ARGUMENT naming the field; nothing is written.
        before = env.query("SELECT max(revision) FROM events")
        for intent, field in ((dict(host="a.example", port=0), "intent.port"),
                              (dict(host="a.example", port=70000), "intent.port"),
                              (dict(port=443), "no destination"),
                              (dict(host="a b", port=443), "intent.host"),
                              (dict(sni="x/y", port=443), "intent.sni"),
                              (dict(ip="10.0.0.999", port=443), "intent.ip"),
                              (dict(ip="10.0.0.1", port=53, transport=ED.EGRESS_TRANSPORT_DNS), "DNS"),
                              # refused by the transport's decoder, through the gate, with its reason
                              (dict(host="a.example", port=443, transport=42), "intent.transport: unknown value 42")):
            self.err(lambda: decide(**intent), SC.INVALID_ARGUMENT, field)
        # Without an intent there is no namespace to authorize against: malformed, for every caller.
        for role in ("user", "pa"):
            self.err(lambda: env.call(role, policies_pb2, "Egress", "Decide", PO.DecideEgressRequest()),
                     SC.INVALID_ARGUMENT, "intent.namespace is required" if role == "user" else "intent is required")
        self.err(lambda: decide(host="a.example", port=443, sandbox="nope"), SC.NOT_FOUND, "nope")
        self.err(lambda: decide(role="pa", ns="nope", host="a.example", port=443), SC.NOT_FOUND, "nope")
        self.assertEqual(env.query("SELECT max(revision) FROM events"), before)
        # Who may ask: anyone who may read the namespace.
        self.err(lambda: decide(role="other", host="a.example", port=443), SC.PERMISSION_DENIED)
        decide(role="auditor", host="a.example", port=443)
        # The CLI: the same answer, exit 0 or 6.
        env_vars = dict(os.environ, GANTRY_ENDPOINT=env.c.replicas[1].api,
                        GANTRY_CA=os.path.join(env.c.replicas[0].dir, "tls", "ca.pem"), GANTRY_TOKEN=env.keys["user"])
        for dest, extra, rc, needle in (("api.github.com:443", [], 0, "api.github.com:443"),
                                        ("api.github.com:443", ["--transport", "tls", "--sni", "evil.example"], 6,
                                         "evil.example"),
                                        ("10.0.1.9:5432", [], 0, "10.0.1.*:5432"),
                                        ("nowhere", [], 2, "HOST:PORT")):
            p = subprocess.run([g.CLI, "policy", "test", dest, "--namespace", "default"] + extra, env=env_vars,
                               capture_output=True, timeout=30)
            self.assertEqual(p.returncode, rc, p.stderr)
            self.assertIn(needle, (p.stdout + p.stderr).decode())
        # The sandbox's own policy, the third layer (fixed at create, tighten-only): one that widens
        # either layer is FAILED_PRECONDITION naming the entry and the layer; a bad entry or another
        # field is INVALID_ARGUMENT; neither creates anything.
        SB = sandboxes_pb2

        def create(name, allow, replica=0, **more):
            return env.call("user", SB, "Sandboxes", "Create", SB.CreateSandboxRequest(sandbox=SB.Sandbox(
                meta=meta_pb2.ObjectMeta(name=name, namespace="default"),
                spec=SB.SandboxSpec(image="busybox", policy=PO.Policy(egress_allow=allow, **more)))),
                replica=replica)

        before = env.query("SELECT max(revision) FROM events")
        self.err(lambda: create("wide", ["pypi.org:443"]), SC.FAILED_PRECONDITION, '"pypi.org:443" is outside the '
                 "namespace policy's egress_allow", "may only tighten")
        self.err(lambda: create("wide", ["evil.example:443"], replica=1), SC.FAILED_PRECONDITION,
                 '"evil.example:443" is outside the gateway policy')
        self.err(lambda: create("wide", ["api.github.com:*"], replica=2), SC.FAILED_PRECONDITION, "api.github.com:*")
        self.err(lambda: create("bad", ["api.github.com:99999"]), SC.INVALID_ARGUMENT,
                 'sandbox.spec.policy.egress_allow[0] "api.github.com:99999"')
        self.err(lambda: create("bad", ["a b:443"]), SC.INVALID_ARGUMENT, "sandbox.spec.policy.egress_allow[0]")
        self.err(lambda: create("bad", ["10.0.1.7:5432"], max_gpus_per_sandbox=1), SC.INVALID_ARGUMENT,
                 "sandbox.spec.policy.max_gpus_per_sandbox: a sandbox's own policy carries only egress_allow")
        self.assertEqual(env.query("SELECT max(revision) FROM events"), before)
        self.assertNotIn("wide", env.query("SELECT name FROM sandboxes"))
        self.assertNotIn("bad", env.query("SELECT name FROM sandboxes"))
        # A tightening one is stored, returned by Get on every replica, and decides as the third layer.
        create("tight", ["10.0.1.7:5432"])
        for r in range(3):
            got = env.call("user", SB, "Sandboxes", "Get", SB.GetSandboxRequest(namespace="default", name="tight"),
                           replica=r)
            self.assertEqual(list(got.spec.policy.egress_allow), ["10.0.1.7:5432"])
        layered = [
            (dict(host="api.github.com", port=443), False, "sandbox", ""),  # the namespace allows it
            (dict(ip="10.0.1.8", port=5432), False, "sandbox", ""),
            (dict(ip="10.0.1.7", port=5432), True, "sandbox", "10.0.1.7:5432"),
            (dict(host="pypi.org", port=443), False, "namespace", ""),
            (dict(host="evil.example", port=443), False, "gateway", ""),
        ]
        for i, (intent, allowed, layer, rule) in enumerate(layered):
            d = decide(replica=i, sandbox="tight", **intent)
            self.assertEqual((d.allowed, d.layer, d.rule), (allowed, layer, rule), (intent, d))
            if layer == "sandbox":
                self.assertEqual(d.policy_revision, 0)
                if not allowed:
                    self.assertIn("sandbox policy's egress_allow", d.reason)
            # Without the sandbox the namespace decides as before.
            if layer == "sandbox" and "host" in intent:
                self.assertEqual(decide(replica=i, **intent).layer, "namespace")
        # The CLI sets it with --egress-allow; a wider entry is the server's refusal.
        def cli_create(name, entry):
            return subprocess.run([g.CLI, "sandbox", "create", name, "--image", "busybox", "--namespace", "default",
                                   "--egress-allow", entry], env=env_vars, capture_output=True, timeout=30)
        p = cli_create("tight-cli", "10.0.1.7:5432")
        self.assertEqual(p.returncode, 0, p.stderr)
        got = env.call("user", SB, "Sandboxes", "Get", SB.GetSandboxRequest(namespace="default", name="tight-cli"))
        self.assertEqual(list(got.spec.policy.egress_allow), ["10.0.1.7:5432"])
        p = cli_create("wide-cli", "pypi.org:443")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("may only tighten", p.stderr.decode())
        print("egress: %d intents decided as the table says through three replicas, 8 bad intents refused, "
              "the CLI agrees; a sandbox policy that widens or is malformed is refused and creates nothing, "
              "one that tightens decides as layer sandbox (%d intents)" % (len(table), len(layered)))

    def test_host_network_is_a_platform_admin_choice(self):
        """driver_config process.network = host bypasses egress_allow (docs/egress.md): anyone but a
        platform_admin is PERMISSION_DENIED (the refusal audited, nothing created); a platform_admin's
        create is audited twice: the call, and an event of its own naming the choice."""
        env = Env(self)
        SB = sandboxes_pb2
        AU = audit_pb2
        OP = "/gantry.v1.Sandboxes/Create:network=host"

        def create(role, name, network, replica=0):
            return env.call(role, SB, "Sandboxes", "Create", SB.CreateSandboxRequest(sandbox=SB.Sandbox(
                meta=meta_pb2.ObjectMeta(name=name, namespace="default"),
                spec=SB.SandboxSpec(image="busybox", driver_config={"process": json.dumps({"network": network})}))),
                replica=replica)

        before = env.query("SELECT max(revision) FROM events")
        for i, role in enumerate(("user", "na", "sa")):
            self.err(lambda: create(role, "h-" + role, "host", replica=i), SC.PERMISSION_DENIED,
                     'process.network "host"', "only a platform_admin may choose it")
        self.assertEqual(env.query("SELECT max(revision) FROM events"), before)
        self.assertNotIn("h-", env.query("SELECT name FROM sandboxes"))
        # Other network modes stay open to users.
        create("user", "n-user", "none", replica=1)
        self.assertEqual(env.query("SELECT count(*) FROM audit WHERE operation = '%s'" % OP).split("\n")[1:2],
                         ["0"])
        sb = create("pa", "h-pa", "host", replica=2)

        def events(**kw):
            return env.call("pa", AU, "Audit", "Query", AU.QueryAuditRequest(namespace="default", **kw)).events
        own = events(api_operation=OP)
        self.assertEqual(len(own), 1, own)
        e = own[0]
        self.assertEqual((e.status, e.class_uid), ("Success", 6003))
        self.assertEqual(e.actor_principal_id, sb.meta.created_by)
        self.assertIn("egress_allow is not applied", e.status_detail)
        self.assertEqual((e.resource_type, e.resource_id, e.resource_name), ("sandbox", sb.meta.id, "h-pa"))
        self.assertEqual(json.loads(e.ocsf_json)["class_uid"], 6003)
        # ... beside the call's own event.
        self.assertTrue(any(x.resource_id == sb.meta.id and x.status == "Success"
                            for x in events(api_operation="/gantry.v1.Sandboxes/Create")))
        # The refusals are in the trail too (failed mutations, status Failure, with the reason).
        deadline = time.time() + 10
        while True:
            refused = [x for x in events(api_operation="/gantry.v1.Sandboxes/Create", status="Failure")
                       if "only a platform_admin may choose it" in x.status_detail]
            if len(refused) >= 3 or time.time() > deadline:
                break
            time.sleep(0.1)
        self.assertGreaterEqual(len(refused), 3, refused)
        print("host network: refused for user, namespace_admin and service account (audited); a platform_admin's "
              "create audited as %s" % OP)


class ServiceAccounts(Base):
    """Issue #19: a sandbox's driver_config service_account must be on the policies' allow-lists (gateway, then
    namespace, tighten-only; empty: none) and, for a delegated caller, on its scope's; never "gantry"."""

    def test_service_account_allow_lists(self):
        env = Env(self)
        SB, P = sandboxes_pb2, principals_pb2
        made = []

        def create(role, name, sa=None, value=None):
            cfg = {"kubernetes": value if value is not None else '{"service_account": "%s"}' % sa}
            r = env.call(role, sandboxes_pb2, "Sandboxes", "Create", SB.CreateSandboxRequest(sandbox=SB.Sandbox(
                meta=meta_pb2.ObjectMeta(name=name, namespace="default"),
                spec=SB.SandboxSpec(image="busybox", driver_config=cfg))), replica=len(made))
            made.append(name)
            return r

        def count(table):
            return int(env.query("SELECT count(*) FROM %s" % table).split("\n")[1])

        def unchanged(fn, code, *needles):
            before = (count("sandboxes"), count("policies"), count("role_bindings"))
            self.err(fn, code, *needles)
            self.assertEqual((count("sandboxes"), count("policies"), count("role_bindings")), before,
                             "a refused call changed something")

        # No gateway policy stored: the built-in default lists none, so no sandbox may name one.
        unchanged(lambda: create("user", "sb-0", "runner"), SC.FAILED_PRECONDITION, "the gateway policy",
                  "allowed_service_accounts", '"runner"', "empty: none")
        e = env.po("user", "GetEffective", PO.GetEffectivePolicyRequest(namespace="default"))
        self.assertEqual(list(e.allowed_service_accounts), [])
        # Bad policy input: INVALID_ARGUMENT, nothing stored.
        for value, needle in ((["Bad_Name"], "is not a ServiceAccount name"),
                              (["-runner"], "allowed_service_accounts[0]"),
                              (["a" * 64], "allowed_service_accounts[0]"),
                              (["runner", "gantry"], "gateway's own ServiceAccount"),
                              (["sa%d" % i for i in range(65)], "at most 64")):
            unchanged(lambda: env.po("pa", "Set", PO.SetPolicyRequest(
                policy=pol(allowed_service_accounts=value))), SC.INVALID_ARGUMENT, needle)
        gw = env.po("pa", "Set", PO.SetPolicyRequest(policy=pol(allowed_service_accounts=["runner", "builder"],
                                                                 allow_shares=True)))
        self.assertEqual(list(gw.allowed_service_accounts), ["runner", "builder"])
        self.assertEqual(list(env.po("auditor", "Get", PO.GetPolicyRequest(), replica=2).allowed_service_accounts),
                         ["runner", "builder"])
        # Listed: accepted, and the spec keeps the value. Not listed, malformed, the gateway's own: refused.
        ok = create("user", "sb-1", "runner")
        self.assertEqual(ok.spec.driver_config["kubernetes"], '{"service_account": "runner"}')
        unchanged(lambda: create("user", "sb-2", "other"), SC.FAILED_PRECONDITION, "the gateway policy",
                  '"other" is not in allowed_service_accounts')
        unchanged(lambda: create("user", "sb-2", "gantry"), SC.FAILED_PRECONDITION, "never allowed")
        for bad in ('{"service_account": "Bad_Name"}', '{"service_account": 7}', '{"service_account": ""}',
                    '{"service_account": "a..b"}'):
            unchanged(lambda: create("user", "sb-2", value=bad), SC.INVALID_ARGUMENT,
                      'driver_config["kubernetes"].service_account must be a ServiceAccount name')
        # A namespace policy only narrows: outside the gateway's list is FAILED_PRECONDITION naming the field.
        unchanged(lambda: env.po("na", "Set", PO.SetPolicyRequest(policy=pol(
            "default", allowed_service_accounts=["builder", "other"], allow_shares=True))),
            SC.FAILED_PRECONDITION, "may only tighten", "allowed_service_accounts", '"other"')
        env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", allowed_service_accounts=["builder"],
                                                           allow_shares=True)))
        e = env.po("user", "GetEffective", PO.GetEffectivePolicyRequest(namespace="default"), replica=1)
        self.assertEqual(list(e.allowed_service_accounts), ["builder"])
        unchanged(lambda: create("user", "sb-2", "runner"), SC.FAILED_PRECONDITION,
                  'the policy of namespace "default" (allowed_service_accounts)')
        create("user", "sb-3", "builder")
        # A namespace policy without the list allows none (what Set leaves out of this field is "none").
        env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", allow_shares=True)))
        unchanged(lambda: create("user", "sb-4", "builder"), SC.FAILED_PRECONDITION,
                  'the policy of namespace "default" (allowed_service_accounts)', "empty: none")
        env.po("na", "Set", PO.SetPolicyRequest(policy=pol("default", allowed_service_accounts=["builder"],
                                                           allow_shares=True)))

        # Delegation scopes: bad lists are INVALID_ARGUMENT and store nothing.
        def principal(name):
            pr = env.call("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(
                principal=P.Principal(meta=meta_pb2.ObjectMeta(name=name), kind=P.PRINCIPAL_KIND_SERVICE_ACCOUNT)))
            env.ids[name] = pr.meta.id
            env.keys[name] = env.call("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
                principal_id=pr.meta.id, name="test")).secret
            return pr.meta.id

        def bind(pid, sas):
            b = P.RoleBinding(principal_id=pid, role=P.ROLE_USER, delegation=P.DelegationScope(
                namespace_patterns=["default"], allowed_driver_config_keys=["kubernetes.*"],
                allowed_service_accounts=sas))
            return env.call("pa", principals_pb2, "Principals", "CreateRoleBinding",
                            P.CreateRoleBindingRequest(binding=b))

        ctrl, bare = principal("ctrl"), principal("bare")
        for sas, needle in ((["Bad_Name"], "is not a ServiceAccount name"), (["gantry"], "gateway's own"),
                            (["s%d" % i for i in range(9)], "at most 8"),
                            (["a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61] * 3, "512 bytes")):
            unchanged(lambda: bind(ctrl, sas), SC.INVALID_ARGUMENT, "allowed_service_accounts", needle)
        b = bind(ctrl, ["builder"])
        self.assertEqual(list(b.delegation.allowed_service_accounts), ["builder"])
        listed = env.call("pa", principals_pb2, "Principals", "ListRoleBindings",
                          P.ListRoleBindingsRequest(principal_id=ctrl), replica=2)
        self.assertEqual([list(x.delegation.allowed_service_accounts) for x in listed.bindings], [["builder"]])
        bind(bare, [])
        # In scope and in the policies: accepted. A scope without the value: PERMISSION_DENIED, before the policies
        # are even read (here they would allow it).
        create("ctrl", "sb-5", "builder")
        unchanged(lambda: create("bare", "sb-6", "builder"), SC.PERMISSION_DENIED, "outside the delegation scope",
                  "allowed_service_accounts is empty: none")
        unchanged(lambda: create("ctrl", "sb-6", "runner"), SC.PERMISSION_DENIED, '"runner" is outside the delegation')
        # Without a service_account the scope's list does not matter.
        create("bare", "sb-7", value='{}')
        names = sorted(env.query("SELECT name FROM sandboxes").split("\n")[1:])
        self.assertEqual([n for n in names if n], ["sb-1", "sb-3", "sb-5", "sb-7"])
        print("service accounts: policies (gateway, namespace) and delegation scopes enforced; refusals change nothing")


GROUPS = {"providers": Providers, "policies": [Policies, Egress], "leak": Leak, "rotation": Rotation,
          "service_accounts": ServiceAccounts}

if __name__ == "__main__":
    group = sys.argv[1] if len(sys.argv) > 1 else "all"
    suite = unittest.TestSuite()
    for name, classes in GROUPS.items():
        if group in ("all", name):
            for cls in classes if isinstance(classes, list) else [classes]:
                suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    ok = unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful()
    if ok:
        shutil.rmtree(g.WORK, ignore_errors=True)
    sys.exit(0 if ok else 1)
