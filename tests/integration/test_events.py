"""Events.Watch (every kind but Sandbox) on a real 3-replica gantryd cluster, driven by Debian's python3-grpcio.

Run: /usr/bin/python3 test_events.py <group>
Groups: watch (delivery on a follower while another replica writes: once, in order, with the object;
resume, past the ring from the store; OUT_OF_RANGE past retention; per-namespace and label filtering;
List then watch from the List's revision; bad input; no secret in any payload), revoke (a revoked key ends
the watch within 2 s; a lost binding stops delivery), slow (a watcher that does not read is cut with the
revision to resume from; the replica-wide unread bound refuses new watches).

Uses test_resources.py's principals (a platform admin, an auditor, a namespace admin and users of
"default", a user of "team-b"). The replicas keep a ring of RING events (--events-watch-ring), so a
resume from before the last RING events reads the store without writing thousands.
"""

import json
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_gantryd as g  # noqa: E402
import test_resources as tr  # noqa: E402

import grpc  # noqa: E402
from gantry.v1 import (api_keys_pb2, events_pb2, meta_pb2, namespaces_pb2, policies_pb2,  # noqa: E402
                       principals_pb2, providers_pb2, quotas_pb2)

E = events_pb2
SC = grpc.StatusCode
RING = 64
BOOKMARK = meta_pb2.EVENT_TYPE_BOOKMARK
PROVIDER_SECRET = "pv-secret-0f1e2d3c4b5a69788796a5b4"


KINDS = ("Namespace", "Principal", "RoleBinding", "ApiKey", "Provider", "ProviderGrant", "Policy", "Quota",
         "QuotaCeiling", "PrincipalLink")


class Env(tr.Env):
    def __init__(self, test, flags=()):
        c = g.Cluster("ev-" + test._testMethodName, run_flags=["--driver", "none",
                                                              "--events-watch-ring", str(RING)] + list(flags)).init()
        test.clusters.append(c)
        c.join(2)
        c.wait_roles(3, 0)
        c.wait_ready()
        self._setup(c)
        leader = c.leader()
        self.followers = [i for i, r in enumerate(c.replicas) if r is not leader]
        self.writer = [i for i, r in enumerate(c.replicas) if r is leader][0]

    def watch(self, role, replica, key=None, timeout=120, **req):
        """An Events.Watch read by a thread into a list of events (bookmarks too); returns
        (events, stream, thread, box) where box["error"] gets the stream's end."""
        fn = self.stub("gantry.v1.Events", "Watch", E.WatchEventsRequest, E.WatchEvent, streaming=True,
                       replica=replica)
        stream = fn(E.WatchEventsRequest(**req), metadata=[("authorization", "Bearer " + (key or self.keys[role]))],
                    timeout=timeout)
        seen, box = [], {}

        def reader():
            try:
                for ev in stream:
                    seen.append(ev)
            except grpc.RpcError as err:
                box["error"] = (err.code(), err.details(), time.monotonic())
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        return seen, stream, t, box

    def write(self, role, mod, svc, method, req):
        return self.call(role, mod, svc, method, req, replica=self.writer)

    def ceiling(self, ns, n):
        return self.write("pa", quotas_pb2, "Quotas", "SetCeiling", quotas_pb2.SetQuotaCeilingRequest(
            ceiling=quotas_pb2.QuotaCeiling(meta=meta_pb2.ObjectMeta(namespace=ns), max_concurrent_sandboxes=n)))


def wait_for(cond, timeout=20):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.05)
    return cond()


def changes(seen):
    return [ev for ev in seen if ev.type != BOOKMARK]


def reached(seen, rev):
    return any(ev.revision >= rev for ev in seen)


class Watch(g.GantrydTest):
    def test_every_kind_on_a_follower(self):
        e = Env(self)
        f1, f2 = e.followers
        # since_revision 0: the first message is a BOOKMARK at the revision the watch starts from.
        admin, admin_stream, _, _ = e.watch("pa", f1)
        user, user_stream, _, _ = e.watch("user", f1)  # USER in default: only default's objects
        na, na_stream, _, _ = e.watch("na", f1)  # NAMESPACE_ADMIN of default: also principals and bindings
        self.assertTrue(wait_for(lambda: admin and user and na), "no first bookmark")
        self.assertEqual(admin[0].type, BOOKMARK)
        start = admin[0].revision
        self.assertGreater(start, 0)

        # Changes of every kind, written through the leader's replica.
        ns = e.write("pa", namespaces_pb2, "Namespaces", "Create", namespaces_pb2.CreateNamespaceRequest(
            namespace=namespaces_pb2.Namespace(meta=meta_pb2.ObjectMeta(name="ev-a", labels={"t": "1"}))))
        ceil = e.ceiling("default", 10)
        quota = e.write("pa", quotas_pb2, "Quotas", "Set", quotas_pb2.SetQuotaRequest(
            quota=quotas_pb2.Quota(meta=meta_pb2.ObjectMeta(namespace="default"), max_concurrent_sandboxes=5, mode=quotas_pb2.QUOTA_MODE_HARD)))
        pv = e.write("pa", providers_pb2, "Providers", "Create", providers_pb2.CreateProviderRequest(
            provider=providers_pb2.Provider(meta=meta_pb2.ObjectMeta(name="ev-p", namespace="default"), type="openai"),
            secret={"API_KEY": PROVIDER_SECRET}))
        pv_b = e.write("pa", providers_pb2, "Providers", "Create", providers_pb2.CreateProviderRequest(
            provider=providers_pb2.Provider(meta=meta_pb2.ObjectMeta(name="ev-pb", namespace="team-b"), type="openai"),
            secret={"API_KEY": PROVIDER_SECRET}))
        grant = e.write("pa", providers_pb2, "Providers", "Grant", providers_pb2.GrantProviderRequest(
            namespace="default", name="ev-p", principal_id=e.ids["user"]))
        self.assertEqual(grant.principal_id, e.ids["user"])
        p = e.write("pa", principals_pb2, "Principals", "Create", principals_pb2.CreatePrincipalRequest(
            principal=principals_pb2.Principal(meta=meta_pb2.ObjectMeta(name="ev-u"),
                                               kind=principals_pb2.PRINCIPAL_KIND_USER)))
        mid = p.meta.resource_version
        key = e.write("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(principal_id=p.meta.id))
        e.write("pa", api_keys_pb2, "ApiKeys", "Revoke", api_keys_pb2.RevokeApiKeyRequest(id=key.key.meta.id))
        P = principals_pb2
        rb = e.write("pa", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
            binding=P.RoleBinding(principal_id=p.meta.id, role=P.ROLE_USER, namespace="team-b")))
        e.write("pa", principals_pb2, "Principals", "DeleteRoleBinding", P.DeleteRoleBindingRequest(id=rb.meta.id))
        e.write("pa", principals_pb2, "Principals", "LinkIdentity", P.LinkIdentityRequest(
            identity=P.ExternalIdentity(principal_id=p.meta.id, issuer="mtls", subject="ev-subject")))
        e.write("pa", principals_pb2, "Principals", "UnlinkIdentity", P.UnlinkIdentityRequest(
            issuer="mtls", subject="ev-subject"))
        e.write("pa", policies_pb2, "Policies", "Set", policies_pb2.SetPolicyRequest(policy=policies_pb2.Policy(
            meta=meta_pb2.ObjectMeta(namespace="default"), allowed_images=["busybox*"], allow_shares=True)))
        e.write("pa", policies_pb2, "Policies", "Delete", policies_pb2.DeletePolicyRequest(namespace="default"))
        e.write("pa", providers_pb2, "Providers", "RevokeGrant", providers_pb2.RevokeProviderGrantRequest(
            namespace="default", name="ev-p", principal_id=e.ids["user"]))
        e.write("pa", providers_pb2, "Providers", "Delete", providers_pb2.DeleteProviderRequest(
            namespace="team-b", name="ev-pb"))
        e.write("pa", quotas_pb2, "Quotas", "Delete", quotas_pb2.DeleteQuotaRequest(namespace="default"))
        # Onboarding: a principal created bound in a namespace (its binding's event has the binding too).
        onb = e.write("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(
            namespace="default", principal=P.Principal(meta=meta_pb2.ObjectMeta(name="ev-onb"),
                                                       kind=P.PRINCIPAL_KIND_USER)))
        # A key of a user of default only: its namespace_admin manages it, so sees the key's events.
        onb_key = e.write("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
            principal_id=onb.meta.id))
        # A refused namespace delete marks the namespace TERMINATING (its own event, with the namespace).
        e.write("pa", providers_pb2, "Providers", "Create", providers_pb2.CreateProviderRequest(
            provider=providers_pb2.Provider(meta=meta_pb2.ObjectMeta(name="ev-keep", namespace="ev-a"), type="openai"),
            secret={"API_KEY": PROVIDER_SECRET}))
        with self.assertRaises(grpc.RpcError) as cm:
            e.write("pa", namespaces_pb2, "Namespaces", "Delete", namespaces_pb2.DeleteNamespaceRequest(name="ev-a"))
        self.assertEqual(cm.exception.code(), SC.FAILED_PRECONDITION, cm.exception.details())
        e.write("pa", providers_pb2, "Providers", "Delete", providers_pb2.DeleteProviderRequest(
            namespace="ev-a", name="ev-keep"))
        last = e.write("pa", namespaces_pb2, "Namespaces", "Delete", namespaces_pb2.DeleteNamespaceRequest(
            name="ev-a")).meta.resource_version
        self.assertTrue(wait_for(lambda: reached(admin, last)), "the admin's watch did not reach %d" % last)
        self.assertTrue(wait_for(lambda: reached(user, last)), "the user's watch did not reach %d" % last)

        got = changes(admin)
        revs = [ev.revision for ev in got]
        self.assertEqual(revs, sorted(revs), "events out of order")
        self.assertEqual(len(revs), len(set(revs)), "an event delivered twice")
        self.assertTrue(all(start < r <= last for r in revs))
        kinds = [(ev.kind, meta_pb2.EventType.Name(ev.type)) for ev in got]
        for want in [("Namespace", "EVENT_TYPE_ADDED"), ("QuotaCeiling", "EVENT_TYPE_MODIFIED"),
                     ("Quota", "EVENT_TYPE_MODIFIED"), ("Provider", "EVENT_TYPE_ADDED"),
                     ("ProviderGrant", "EVENT_TYPE_ADDED"), ("Principal", "EVENT_TYPE_ADDED"),
                     ("ApiKey", "EVENT_TYPE_ADDED"), ("ApiKey", "EVENT_TYPE_MODIFIED"),
                     ("RoleBinding", "EVENT_TYPE_ADDED"), ("RoleBinding", "EVENT_TYPE_DELETED"),
                     ("PrincipalLink", "EVENT_TYPE_ADDED"), ("PrincipalLink", "EVENT_TYPE_DELETED"),
                     ("Policy", "EVENT_TYPE_ADDED"), ("Policy", "EVENT_TYPE_DELETED"),
                     ("ProviderGrant", "EVENT_TYPE_DELETED"), ("Provider", "EVENT_TYPE_DELETED"),
                     ("Quota", "EVENT_TYPE_DELETED"), ("Namespace", "EVENT_TYPE_DELETED")]:
            self.assertIn(want, kinds)
        # Every event carries its object; a DELETED one the object's last state.
        for ev in got:
            self.assertIsNotNone(ev.WhichOneof("object"), "no object on %s" % ev)
        by = {(ev.kind, ev.type, ev.namespace_object.meta.name or ev.provider.meta.name or ev.object_id): ev
              for ev in got}
        added_ns = by[("Namespace", meta_pb2.EVENT_TYPE_ADDED, "ev-a")]
        self.assertEqual(added_ns.namespace_object.meta.labels["t"], "1")
        self.assertEqual(added_ns.revision, ns.meta.resource_version)
        gone_ns = by[("Namespace", meta_pb2.EVENT_TYPE_DELETED, "ev-a")]
        self.assertEqual(gone_ns.namespace_object.meta.labels["t"], "1")
        gone_pv = by[("Provider", meta_pb2.EVENT_TYPE_DELETED, "ev-pb")]
        self.assertEqual((gone_pv.provider.meta.namespace, list(gone_pv.provider.secret_keys)), ("team-b", ["API_KEY"]))
        self.assertEqual(gone_pv.provider.meta.id, pv_b.meta.id)
        self.assertIn((onb.meta.id, "default", principals_pb2.ROLE_USER),
                      [(ev.role_binding.principal_id, ev.role_binding.namespace, ev.role_binding.role) for ev in got
                       if ev.kind == "RoleBinding" and ev.type == meta_pb2.EVENT_TYPE_ADDED])
        self.assertEqual([ev.namespace_object.phase for ev in got if ev.kind == "Namespace" and
                          ev.type == meta_pb2.EVENT_TYPE_MODIFIED], [namespaces_pb2.Namespace.PHASE_TERMINATING])
        key_events = [ev for ev in got if ev.kind == "ApiKey" and ev.api_key.principal_id == p.meta.id]
        self.assertEqual([ev.api_key.revoked for ev in key_events], [False, True])
        self.assertTrue(all(ev.api_key.meta.id == key.key.meta.id for ev in key_events))
        quota_events = [ev for ev in got if ev.kind == "Quota"]
        self.assertEqual([ev.quota.max_concurrent_sandboxes for ev in quota_events], [5, 5])  # set, then last state
        self.assertEqual(quota_events[0].revision, quota.meta.resource_version)
        self.assertEqual([ev.quota_ceiling.max_concurrent_sandboxes for ev in got if ev.kind == "QuotaCeiling"],
                         [ceil.max_concurrent_sandboxes])
        self.assertEqual(by[("Provider", meta_pb2.EVENT_TYPE_ADDED, "ev-p")].provider.meta.id, pv.meta.id)
        self.assertEqual([(ev.role_binding.meta.id, ev.role_binding.namespace) for ev in got if ev.kind == "RoleBinding"
                          and ev.role_binding.principal_id == p.meta.id], [(rb.meta.id, "team-b")] * 2)
        self.assertEqual([(ev.external_identity.principal_id, ev.external_identity.subject) for ev in got
                          if ev.kind == "PrincipalLink"], [(p.meta.id, "ev-subject")] * 2)
        self.assertEqual([list(ev.policy.allowed_images) for ev in got if ev.kind == "Policy"], [["busybox*"]] * 2)
        self.assertEqual([ev.principal.meta.name for ev in got if ev.kind == "Principal"], ["ev-u", "ev-onb"])

        # The USER of default sees exactly the default namespace's namespaced objects.
        ugot = changes(user)
        self.assertEqual([(ev.revision, ev.kind) for ev in ugot],
                         [(ev.revision, ev.kind) for ev in got if ev.namespace == "default" and
                          ev.kind in ("Namespace", "Provider", "ProviderGrant", "Quota", "QuotaCeiling", "Policy")])
        self.assertTrue(ugot, "the user saw nothing")
        # A namespace_admin also sees every principal, binding and link (Principals.List shows it them), and
        # the API keys of the principals it manages (ApiKeys.List shows it them: users bound only in namespaces
        # it administers), not those of others (ev-u, bound nowhere or in team-b).
        self.assertTrue(wait_for(lambda: reached(na, last)))
        na_want = [(ev.revision, ev.kind) for ev in got if ev.namespace == "default" and
                   ev.kind in ("Namespace", "Provider", "ProviderGrant", "Quota", "QuotaCeiling", "Policy") or
                   ev.kind in ("Principal", "RoleBinding", "PrincipalLink") or
                   ev.kind == "ApiKey" and ev.api_key.principal_id == onb.meta.id]
        self.assertEqual([(ev.revision, ev.kind) for ev in changes(na)], na_want)
        self.assertIn(("ApiKey", onb_key.key.meta.id), [(ev.kind, ev.object_id) for ev in changes(na)])
        keys_na = e.call("na", api_keys_pb2, "ApiKeys", "List", api_keys_pb2.ListApiKeysRequest(
            principal_id=onb.meta.id)).keys
        self.assertEqual([k.meta.id for k in keys_na], [onb_key.key.meta.id])
        print("events watch on a follower: %d changes of %d kinds once and in order; the user of default saw %d"
              % (len(got), len(set(k for k, _ in kinds)), len(ugot)))

        # Resume from a revision on the other follower: exactly the same events after it.
        resumed, rs, _, _ = e.watch("pa", f2, since_revision=mid)
        self.assertTrue(wait_for(lambda: reached(resumed, last)))
        self.assertEqual([(ev.revision, ev.kind, ev.type) for ev in changes(resumed)],
                         [(ev.revision, ev.kind, ev.type) for ev in got if ev.revision > mid])
        # A kind and namespace filter.
        only, os_, _, _ = e.watch("pa", f2, since_revision=start, kinds=["Provider"], namespace="team-b")
        self.assertTrue(wait_for(lambda: reached(only, last)))
        self.assertEqual([(ev.kind, ev.type) for ev in changes(only)],
                         [("Provider", meta_pb2.EVENT_TYPE_ADDED), ("Provider", meta_pb2.EVENT_TYPE_DELETED)])
        for s in (admin_stream, user_stream, na_stream, rs, os_):
            s.cancel()
        # The CLI: `gantry watch provider -o json` from `start` prints the same Provider events, objects included.
        r = e.c.replicas[f2]
        out = subprocess.run([g.CLI, "--endpoint", r.api, "--ca", os.path.join(e.c.replicas[0].dir, "tls", "ca.pem"),
                              "-o", "json", "watch", "providers", "--since", str(start), "--count", "3",
                              "--timeout", "20"], capture_output=True, timeout=60,
                             env=dict(os.environ, GANTRY_TOKEN=e.keys["pa"], XDG_CONFIG_HOME=g.WORK))
        self.assertEqual(out.returncode, 0, out.stderr)
        lines = [json.loads(x) for x in out.stdout.decode().splitlines()]
        self.assertEqual([(x["revision"], x["provider"]["meta"]["name"]) for x in lines],
                         [(ev.revision, ev.provider.meta.name) for ev in got if ev.kind == "Provider"][:3])
        self.assertTrue(all(set(x) & {"principal", "api_key", "namespace_object"} == set() for x in lines))

        # No payload of an ApiKey or Provider event holds a secret (the stored bytes, read through the store).
        rows = g.query(e.c.replicas[e.writer], "SELECT hex(payload) FROM events WHERE kind IN ('ApiKey', 'Provider') "
                       "AND revision > %d" % start)
        blobs = [bytes.fromhex(x.strip()) for x in rows if x.strip()]
        self.assertGreaterEqual(len(blobs), 5, rows)
        for secret in (PROVIDER_SECRET, key.secret, key.secret[-24:]):
            self.assertFalse(any(secret.encode() in b for b in blobs), "a secret in an event payload")

        # Bad input: INVALID_ARGUMENT (or OUT_OF_RANGE for a revision in the future), and nothing changes.
        before = e.call("pa", namespaces_pb2, "Namespaces", "List", namespaces_pb2.ListNamespacesRequest()).revision
        for req, code, text in [
                (dict(kinds=["Bogus"]), SC.INVALID_ARGUMENT, "unknown kind"),
                (dict(kinds=["Namespace", "Sandbox"]), SC.INVALID_ARGUMENT, "Sandboxes.Watch"),
                (dict(namespace="Bad_NS!"), SC.INVALID_ARGUMENT, "namespace"),
                (dict(since_revision=2 ** 64 - 1), SC.OUT_OF_RANGE, "in the future"),
                (dict(since_revision=last + 1000000), SC.OUT_OF_RANGE, "in the future")]:
            fn = e.stub("gantry.v1.Events", "Watch", E.WatchEventsRequest, E.WatchEvent, streaming=True, replica=f1)
            with self.assertRaises(grpc.RpcError) as cm:
                next(fn(E.WatchEventsRequest(**req), metadata=[("authorization", "Bearer " + e.keys["pa"])],
                        timeout=15))
            self.assertEqual(cm.exception.code(), code, (req, cm.exception.details()))
            self.assertIn(text, cm.exception.details())
        after = e.call("pa", namespaces_pb2, "Namespaces", "List", namespaces_pb2.ListNamespacesRequest()).revision
        self.assertEqual(before, after, "a refused watch changed something")

        # A label selector (Sandboxes.Watch's rule): only objects carrying every label, so only ev-a's events.
        sel, ss, _, _ = e.watch("pa", f2, since_revision=start, selector=meta_pb2.LabelSelector(match_labels={"t": "1"}))
        self.assertTrue(wait_for(lambda: reached(sel, last)))
        self.assertEqual([(ev.kind, ev.revision) for ev in changes(sel)],
                         [(ev.kind, ev.revision) for ev in got if ev.kind == "Namespace" and
                          ev.namespace_object.meta.name == "ev-a"])
        ss.cancel()
        fn = e.stub("gantry.v1.Events", "Watch", E.WatchEventsRequest, E.WatchEvent, streaming=True, replica=f1)
        with self.assertRaises(grpc.RpcError) as cm:
            next(fn(E.WatchEventsRequest(selector=meta_pb2.LabelSelector(
                match_labels={"k%d" % i: "v" for i in range(65)})),
                metadata=[("authorization", "Bearer " + e.keys["pa"])], timeout=15))
        self.assertEqual(cm.exception.code(), SC.INVALID_ARGUMENT, cm.exception.details())
        self.assertIn("selector", cm.exception.details())

        # List, then watch from the List's revision: exactly the changes after the List (two kinds; one List
        # empty), the List read at one snapshot.
        PV = providers_pb2
        plist = e.call("pa", providers_pb2, "Providers", "List", PV.ListProvidersRequest(namespace="team-b"),
                       replica=f1)
        klist = e.call("pa", api_keys_pb2, "ApiKeys", "List", api_keys_pb2.ListApiKeysRequest(), replica=f2)
        self.assertEqual(list(plist.providers), [])
        self.assertGreaterEqual(plist.revision, last)
        self.assertGreater(len(klist.keys), 0)
        self.assertGreaterEqual(klist.revision, plist.revision)
        for resp, what in [(e.call("pa", principals_pb2, "Principals", "List", P.ListPrincipalsRequest()), "principals"),
                           (e.call("pa", principals_pb2, "Principals", "ListRoleBindings",
                                   P.ListRoleBindingsRequest()), "bindings"),
                           (e.call("pa", quotas_pb2, "Quotas", "List", quotas_pb2.ListQuotasRequest()), "quotas"),
                           (e.call("pa", principals_pb2, "Principals", "ListIdentities",
                                   P.ListIdentitiesRequest(principal_id=p.meta.id)), "identities"),
                           (e.call("pa", providers_pb2, "Providers", "ListGrants",
                                   PV.ListProviderGrantsRequest(namespace="default", name="ev-p")), "grants")]:
            self.assertGreaterEqual(resp.revision, plist.revision, what)
            self.assertLess(resp.revision, plist.revision + 5, what)
        pv_new = e.write("pa", providers_pb2, "Providers", "Create", PV.CreateProviderRequest(
            provider=PV.Provider(meta=meta_pb2.ObjectMeta(name="ev-after", namespace="team-b"), type="openai"),
            secret={"API_KEY": "v"}))
        key_new = e.write("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(
            principal_id=p.meta.id))
        pw, pws, _, _ = e.watch("pa", f1, kinds=["Provider"], namespace="team-b", since_revision=plist.revision)
        kw, kws, _, _ = e.watch("pa", f2, kinds=["ApiKey"], since_revision=klist.revision)
        end = key_new.key.meta.resource_version
        self.assertTrue(wait_for(lambda: reached(pw, end) and reached(kw, end)))
        self.assertEqual([(ev.type, ev.provider.meta.name, ev.revision) for ev in changes(pw)],
                         [(meta_pb2.EVENT_TYPE_ADDED, "ev-after", pv_new.meta.resource_version)])
        self.assertEqual([(ev.type, ev.api_key.meta.id, ev.revision) for ev in changes(kw)],
                         [(meta_pb2.EVENT_TYPE_ADDED, key_new.key.meta.id, end)])
        pws.cancel()
        kws.cancel()

        # Past the ring: more than RING events later, a resume from `start` (older than the ring, and than
        # this replica's start for since 1) reads the older events from the store, with their objects, then
        # joins the live stream: every event once, in order, while another replica keeps writing.
        for i in range(RING + 8):
            e.ceiling("default", 11 + i)
        stop = threading.Event()

        def writer():
            i = 0
            while not stop.is_set() and i < 40:
                e.ceiling("default", 200 + i)
                i += 1
        wt = threading.Thread(target=writer, daemon=True)
        wt.start()
        res1, r1s, _, _ = e.watch("pa", f1, since_revision=start)
        res2, r2s, _, _ = e.watch("pa", f2, since_revision=1)
        res3, r3s, _, _ = e.watch("na", f1, since_revision=start)  # the namespace_admin's rule, from the store
        wt.join(60)
        stop.set()
        head = int(g.query(e.c.replicas[e.writer], "SELECT max(revision) FROM events")[0])
        self.assertTrue(wait_for(lambda: reached(res1, head) and reached(res2, head), 30), "resumes did not reach %d" % head)
        want = [int(x) for x in g.query(e.c.replicas[e.writer], "SELECT revision FROM events WHERE kind IN (%s) "
                                        "ORDER BY revision" % ",".join("'%s'" % k for k in KINDS))
                if x.strip().isdigit()]
        got1 = [ev.revision for ev in changes(res1)]
        got2 = [ev.revision for ev in changes(res2)]
        self.assertEqual(got1, [r for r in want if start < r <= head], "resume from %d past the ring" % start)
        self.assertEqual(got2, [r for r in want if r <= head], "resume from 1")
        self.assertTrue(all(ev.WhichOneof("object") for ev in changes(res1) if ev.revision > start))
        self.assertEqual([(ev.revision, ev.kind, ev.type) for ev in changes(res1) if ev.revision <= last],
                         [(ev.revision, ev.kind, ev.type) for ev in got])
        self.assertTrue(wait_for(lambda: reached(res3, head)))
        self.assertEqual([(ev.revision, ev.kind) for ev in changes(res3) if ev.revision <= last], na_want)
        r1s.cancel()
        r2s.cancel()
        r3s.cancel()
        print("events watch: resume, filters, a selector, List revisions, no secret in %d payloads, bad input refused; "
              "resumes from before a %d-event ring read %d and %d events from the store and joined the live stream"
              % (len(blobs), RING, len(got1), len(got2)))


class Compacted(g.GantrydTest):
    def test_resume_older_than_retention(self):
        """A resume older than the ring reads the store; once retention deleted what it needs, OUT_OF_RANGE."""
        c = g.Cluster("evcomp-" + self._testMethodName, run_flags=[
            "--driver", "none", "--events-watch-ring", "16", "--event-retention-s", "2",
            "--retention-interval-s", "1"]).init()
        self.clusters.append(c)
        c.wait_ready()
        r1 = c.replicas[0]
        for _ in range(3):
            c.token()
        head = int(r1.store("query", "SELECT revision FROM cluster_revision").split()[-1])
        deadline = time.monotonic() + 30
        while True:
            out = r1.store("query", "SELECT value FROM cluster_meta WHERE key = 'events_compacted_revision'").split()
            if (len(out) > 1 and int(out[-1]) >= head) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertGreaterEqual(int(out[-1]), head, "change events were not pruned")
        fn = c.client.channel(r1).unary_stream("/gantry.v1.Events/Watch",
                                               request_serializer=E.WatchEventsRequest.SerializeToString,
                                               response_deserializer=E.WatchEvent.FromString)
        md = [("authorization", "Bearer " + c.key)]
        with self.assertRaises(grpc.RpcError) as cm:
            for _ in fn(E.WatchEventsRequest(since_revision=1), metadata=md, timeout=20):
                pass
        self.assertEqual(cm.exception.code(), SC.OUT_OF_RANGE, cm.exception.details())
        self.assertIn("were deleted): list again and watch from the list's revision", cm.exception.details())
        stream = fn(E.WatchEventsRequest(since_revision=head), metadata=md, timeout=20)
        self.assertEqual(next(stream).type, BOOKMARK)
        stream.cancel()
        print("events watch: a resume older than the retained history: %s" % cm.exception.details())


class Revoke(g.GantrydTest):
    def test_revoked_key_and_lost_binding(self):
        e = Env(self)
        f1 = e.followers[0]
        P = principals_pb2
        p = e.write("pa", principals_pb2, "Principals", "Create", P.CreatePrincipalRequest(
            principal=P.Principal(meta=meta_pb2.ObjectMeta(name="ev-w"), kind=P.PRINCIPAL_KIND_USER)))
        b = e.write("pa", principals_pb2, "Principals", "CreateRoleBinding", P.CreateRoleBindingRequest(
            binding=P.RoleBinding(principal_id=p.meta.id, role=P.ROLE_USER, namespace="default")))
        k1 = e.write("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(principal_id=p.meta.id))
        k2 = e.write("pa", api_keys_pb2, "ApiKeys", "Create", api_keys_pb2.CreateApiKeyRequest(principal_id=p.meta.id))
        first, _, t1, box1 = e.watch(None, f1, key=k1.secret)
        all_ns, s2, _, box2 = e.watch(None, f1, key=k2.secret)
        one_ns, _, t3, box3 = e.watch(None, f1, key=k2.secret, namespace="default")
        self.assertTrue(wait_for(lambda: first and all_ns and one_ns))
        rev = e.ceiling("default", 3).meta.resource_version
        self.assertTrue(wait_for(lambda: reached(changes(all_ns), rev)), "the user did not see default's ceiling")

        # A revoked key ends its watch with UNAUTHENTICATED within 2 s; the other key's watches go on.
        t0 = time.monotonic()
        e.write("pa", api_keys_pb2, "ApiKeys", "Revoke", api_keys_pb2.RevokeApiKeyRequest(id=k1.key.meta.id))
        revoked_in = None
        t1.join(5)
        self.assertIn("error", box1, "the watch of a revoked key did not end")
        code, details, at = box1["error"]
        self.assertEqual(code, SC.UNAUTHENTICATED, details)
        revoked_in = at - t0
        self.assertLess(revoked_in, 2.0, "the revoked key's watch ended after %.2f s" % revoked_in)
        self.assertNotIn("error", box2)

        # The binding removed: the namespace's events stop, and a watch of that namespace ends.
        t0 = time.monotonic()
        e.write("pa", principals_pb2, "Principals", "DeleteRoleBinding", P.DeleteRoleBindingRequest(id=b.meta.id))
        t3.join(5)
        self.assertIn("error", box3, "the watch of a namespace the caller lost did not end")
        self.assertEqual(box3["error"][0], SC.PERMISSION_DENIED, box3["error"][1])
        self.assertLess(box3["error"][2] - t0, 2.0)
        n = len(changes(all_ns))
        rev = e.ceiling("default", 4).meta.resource_version
        self.assertTrue(wait_for(lambda: reached(all_ns, rev)), "no bookmark past the change")
        self.assertEqual(len(changes(all_ns)), n, "an event of a namespace the caller lost was delivered")
        # Its own keys and bindings reach the principal's watch (ApiKeys.Get and ListRoleBindings show it them).
        own = [(ev.kind, ev.type, ev.object_id) for ev in changes(all_ns) if ev.kind in ("ApiKey", "RoleBinding")]
        self.assertEqual(own, [("ApiKey", meta_pb2.EVENT_TYPE_MODIFIED, k1.key.meta.id),
                               ("RoleBinding", meta_pb2.EVENT_TYPE_DELETED, b.meta.id)])
        s2.cancel()
        print("events watch: a revoked key's watch ended in %.2f s; a lost binding ended the namespace's watch in "
              "%.2f s and stopped delivery" % (revoked_in, box3["error"][2] - t0))


class Slow(g.GantrydTest):
    def test_a_watcher_that_does_not_read_is_cut(self):
        """A watcher that never reads (a small fixed HTTP/2 window) is cut once more than 1 MiB waits for
        it, with the revision to resume from; a reading watcher beside it gets everything, and the resume
        delivers the rest once. Then the replica-wide bound (--watch-total-unsent-mib 2): four watchers that
        do not read hold more than 2 MiB between them, none over its own 1 MiB, so a new watch is refused
        while the reading one goes on; once they are gone new watches are accepted again."""
        e = Env(self, flags=["--watch-total-unsent-mib", "2"])
        f = e.followers[0]
        big = {"pad%d" % k: "x" * 4000 for k in range(8)}  # about 32 KB per Provider event
        PV = providers_pb2
        pv = e.write("pa", providers_pb2, "Providers", "Create", PV.CreateProviderRequest(
            provider=PV.Provider(meta=meta_pb2.ObjectMeta(name="big", namespace="default"), type="openai"),
            secret={"API_KEY": "v"}))
        creds = grpc.ssl_channel_credentials(root_certificates=e.c.client.ca)
        ch = grpc.secure_channel(e.c.replicas[f].api, creds, options=[("grpc.ssl_target_name_override", "localhost"),
                                                                       ("grpc.http2.bdp_probe", 0)])
        slow = ch.unary_stream("/gantry.v1.Events/Watch", request_serializer=E.WatchEventsRequest.SerializeToString,
                               response_deserializer=E.WatchEvent.FromString)(
            E.WatchEventsRequest(kinds=["Provider"], since_revision=pv.meta.resource_version),
            metadata=[("authorization", "Bearer " + e.keys["pa"])], timeout=120)
        fast, fs, _, _ = e.watch("pa", f, kinds=["Provider"], since_revision=pv.meta.resource_version)
        self.assertTrue(wait_for(lambda: fast))
        last = 0
        for i in range(60):
            last = e.write("pa", providers_pb2, "Providers", "Update", PV.UpdateProviderRequest(provider=PV.Provider(
                meta=meta_pb2.ObjectMeta(name="big", namespace="default"), type="openai",
                config=dict(big, n=str(i))))).meta.resource_version
        self.assertTrue(wait_for(lambda: reached(fast, last), 60))
        self.assertEqual([ev.provider.config["n"] for ev in changes(fast)], [str(i) for i in range(60)])
        got = []
        with self.assertRaises(grpc.RpcError) as cm:
            for ev in slow:
                got.append(ev)
        self.assertEqual(cm.exception.code(), SC.RESOURCE_EXHAUSTED, cm.exception.details())
        self.assertIn("the watch fell behind at revision", cm.exception.details())
        resume = int(cm.exception.details().split("watch again from revision ")[1].split()[0])
        delivered = [ev.provider.config["n"] for ev in changes(got)]
        self.assertLess(len(delivered), 60, "not cut")
        self.assertLessEqual(max([ev.revision for ev in got] or [0]), resume)
        rest, rs, _, _ = e.watch("pa", f, kinds=["Provider"], since_revision=resume)
        self.assertTrue(wait_for(lambda: reached(rest, last)))
        self.assertEqual(delivered + [ev.provider.config["n"] for ev in changes(rest)], [str(i) for i in range(60)])
        rs.cancel()
        ch.close()

        # The replica-wide bound: four watchers that do not read, 25 events of about 32 KB each.
        chans, slows = [], []
        for _ in range(4):
            c2 = grpc.secure_channel(e.c.replicas[f].api, creds, options=[
                ("grpc.ssl_target_name_override", "localhost"), ("grpc.http2.bdp_probe", 0)])
            chans.append(c2)
            st = c2.unary_stream("/gantry.v1.Events/Watch", request_serializer=E.WatchEventsRequest.SerializeToString,
                                 response_deserializer=E.WatchEvent.FromString)(
                E.WatchEventsRequest(kinds=["Provider"]), metadata=[("authorization", "Bearer " + e.keys["pa"])],
                timeout=120)
            slows.append(st)
        for i in range(25):
            last = e.write("pa", providers_pb2, "Providers", "Update", PV.UpdateProviderRequest(provider=PV.Provider(
                meta=meta_pb2.ObjectMeta(name="big", namespace="default"), type="openai",
                config=dict(big, n="t%d" % i)))).meta.resource_version
        self.assertTrue(wait_for(lambda: reached(fast, last), 60))
        time.sleep(0.5)  # the hub sums its watchers' unread bytes at each feed poll

        def try_watch():
            fn = e.stub("gantry.v1.Events", "Watch", E.WatchEventsRequest, E.WatchEvent, streaming=True, replica=f)
            st = fn(E.WatchEventsRequest(kinds=["Namespace"]), metadata=[("authorization", "Bearer " + e.keys["pa"])],
                    timeout=15)
            try:
                return next(st), None
            except grpc.RpcError as err:
                return None, err
            finally:
                st.cancel()
        ev, err = try_watch()
        self.assertIsNotNone(err, "a new watch was accepted above the replica's bound")
        self.assertEqual(err.code(), SC.RESOURCE_EXHAUSTED, err.details())
        self.assertIn("their clients have not read (more than 2 MiB)", err.details())
        refused = err.details()
        # Existing watches go on: the reading one gets the next change, and no slow one was cut.
        n0 = len(changes(fast))
        last = e.write("pa", providers_pb2, "Providers", "Update", PV.UpdateProviderRequest(provider=PV.Provider(
            meta=meta_pb2.ObjectMeta(name="big", namespace="default"), type="openai",
            config={"n": "after"}))).meta.resource_version
        self.assertTrue(wait_for(lambda: reached(fast, last)))
        self.assertEqual([ev.provider.config["n"] for ev in changes(fast)[n0:]], ["after"])
        self.assertEqual(e.c.replicas[f].metric("gantry_events_watch_refused_unsent_total"), 1)
        self.assertFalse([st for st in slows if st.done()], "a watcher under its own bound was cut")
        # The slow ones gone: new watches are accepted again (the sum is taken again at the next poll).
        for st in slows:
            st.cancel()
        for c2 in chans:
            c2.close()
        deadline = time.monotonic() + 10
        while True:
            ev, err = try_watch()
            if err is None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertIsNone(err, err and err.details())
        self.assertEqual(ev.type, BOOKMARK)
        fs.cancel()
        print("events watch: a watcher that did not read was cut after %d of 60 large events and resumed from "
              "revision %d with the rest; above the replica-wide bound: %s" % (len(delivered), resume, refused))


GROUPS = {"watch": [Watch, Compacted], "revoke": [Revoke], "slow": [Slow]}

if __name__ == "__main__":
    group = sys.argv[1] if len(sys.argv) > 1 else "all"
    suite = unittest.TestSuite()
    for name, classes in GROUPS.items():
        for cls in classes if group in ("all", name) else []:
            suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    ok = unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful()
    sys.exit(0 if ok else 1)
