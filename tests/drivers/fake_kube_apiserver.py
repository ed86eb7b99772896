#!/usr/bin/python3
"""A strict fake Kubernetes API server for the kubernetes driver's tests (standard library only).

It speaks HTTPS (a certificate the test makes with the openssl CLI) and serves the objects the
driver uses with the semantics of a real API server, strict where a real one is strict:

Resources
  - namespaces (cluster scoped), configmaps and secrets (namespaced) under /api/v1;
    networkpolicies under /apis/networking.k8s.io/v1; the kubernetes-sigs/agent-sandbox custom
    resource sandboxes.agents.x-k8s.io (kind Sandbox, with its status subresource) under
    /apis/agents.x-k8s.io/<version>; lists across namespaces for every namespaced resource.
  - Versions: the CRD stores v1beta1 and serves v1beta1 and v1alpha1 (--versions picks which are
    served). v1alpha1 goes through the controller's conversion webhook: with --no-conversion (or
    POST /_fake/config {"conversion": false}) every v1alpha1 request that carries an object answers
    500 "conversion webhook ... failed", as a real server does while the webhook is down. A version
    that is not served is 404 for every URL under it. Discovery: GET /apis, /apis/<group> and
    /apis/<group>/<version> (the APIGroup and APIResourceList documents), allowed to every
    authenticated user (the system:discovery role).

Semantics
  - one resourceVersion counter for the whole server, increased by every write and written into the
    object; lists carry it in metadata.resourceVersion;
  - create of an existing name: 409 AlreadyExists; in a namespace that does not exist: 404 NotFound
    (details.kind "namespaces"); in a Terminating namespace: 403 Forbidden with the cause
    NamespaceTerminating; with a resourceVersion: 400; invalid names or labels: 422 Invalid; a
    Sandbox of another apiVersion/kind than the URL's: 400; without spec.podTemplate.spec.containers
    (each with a name and an image), with replicas outside 0..1 (v1alpha1 only), a shutdownTime that
    is not RFC 3339, or a shutdownPolicy other than Delete/Retain: 422;
  - PUT with a stale metadata.resourceVersion: 409 Conflict; without one: an unconditional replace;
    PATCH (application/merge-patch+json only, of metadata.labels and annotations) likewise: a
    metadata.resourceVersion in the patch that is not the object's is 409 Conflict;
    DELETE with DeleteOptions preconditions (resourceVersion, uid) that do not match: 409 Conflict;
    missing objects: 404 NotFound (details.kind the resource);
  - Secrets: data keys of [-._a-zA-Z0-9] (422 otherwise), base64 values (400 otherwise), at most 1 MiB
    of data decoded (422), type Opaque unless given and immutable on replace (422);
  - metadata.ownerReferences are validated (apiVersion, kind, name, uid; no namespace; no uid twice:
    422), stored, and replaced by a PUT; the garbage collector deletes a namespaced object once every
    owner it names is gone (at the owner's delete: background propagation, no finalizers);
  - deleting a namespace makes it Terminating (status.phase, deletionTimestamp) and deletes its
    contents; it disappears --finalize-ms later, or, while a test holds it (POST /_fake/namespace
    {"name": n, "stuck": true}), stays Terminating: creates in it are 403, a create of the namespace
    itself 409 AlreadyExists;
  - labelSelector on lists and watches: key=value, key==value, key!=value, key in (a,b),
    key notin (a,b), key, !key; limit and continue for paging (--max-page N caps every page);
    continue tokens carry the resourceVersion of the first page and answer 410 Expired once that
    revision has been compacted (POST /_fake/compact);
  - watch (?watch=true, resourceVersion, allowWatchBookmarks, timeoutSeconds, labelSelector): a
    chunked stream of {"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...} lines; a
    resourceVersion older than the compacted revision gets one ERROR event with a 410 Expired
    Status ("too old resource version"); bookmarks every --bookmark-ms;
  - request bodies over --max-request-bytes (default 3 MiB, the API server's limit): 413; objects
    whose stored JSON is over --max-object-bytes (default 1.5 MiB, etcd's request limit): 413
    "etcdserver: request is too large";
  - throttling: --qps/--burst (or POST /_fake/config) is a token bucket over every API request;
    an empty bucket answers 429 TooManyRequests with a Retry-After header and
    details.retryAfterSeconds;
  - authentication: "Authorization: Bearer <token>" is required (401 otherwise). The --token-file
    token is the cluster admin (unrestricted: the tests' own requests). Each --identity
    TOKENFILE=RBACFILE adds a ServiceAccount whose requests are authorised by RBAC: RBACFILE is JSON
    {"user": "system:serviceaccount:<ns>:<name>", "objects": [Roles, ClusterRoles, RoleBindings,
    ClusterRoleBindings]}, the chart's rendered RBAC (tests/drivers/rbac/). Denied requests are
    403 Forbidden naming the user, verb, resource and namespace, as a real server does.
  - TokenReview (POST /apis/authentication.k8s.io/v1/tokenreviews, answered 201): the caller
    needs RBAC create on tokenreviews in authentication.k8s.io (the admin token may). The token's
    payload is read without checking its signature unless a signing key was given (POST
    /_fake/tokenreview-key: then, as a real API server does with its own tokens, an RS256
    signature by that key is required; gantryd's issuers without JWKS rely on it): it is
    authenticated when it is a JWT whose sub is system:serviceaccount:NS:NAME, whose exp has not
    passed, whose ServiceAccount was not deleted (POST /_fake/serviceaccount), whose bound pod (the
    kubernetes.io.pod.name claim, in the sub's namespace) was not deleted (POST /_fake/boundpod) and
    whose aud meets
    spec.audiences (when given); status.user.username is the sub, status.audiences the
    intersection; otherwise authenticated false with status.error saying why;
  - the agent-sandbox controller is played by the server itself: a new Sandbox gets the conditions
    the controller writes once its pod runs (Ready=True, DependenciesReady); with --pending it stays
    Ready=False, DependenciesNotReady ("Pod exists with phase: Pending"); in a namespace labelled
    pod-security.kubernetes.io/enforce=restricted a pod template that the restricted Pod Security
    Standard forbids gets Ready=False, ReconcilerError with the admission message (the controller
    cannot make the pod).

Pods (what the agent-sandbox controller's pod of a Sandbox would serve; the pod is named after the
Sandbox, in its namespace, with one container "sandbox"; a Sandbox that is not there: 404 NotFound
pods; another container: 400 BadRequest; RBAC as pods/log get, pods/exec and pods/portforward
create):
  - GET .../pods/P/log?container=&follow=&sinceTime=|sinceSeconds=&tailLines=&timestamps=: the
    lines a test wrote with POST /_fake/podlog, each stamped (RFC 3339 with nanoseconds) when it
    was written; follow streams (chunked) until the test ends the log ("end": true) or the
    Sandbox is deleted; sinceTime and sinceSeconds together are 400, as are bad numbers;
  - GET .../pods/P/exec?command=..&stdin=&stdout=&stderr=&tty=&container= with a WebSocket
    upgrade offering v5.channel.k8s.io or v4.channel.k8s.io (anything else: 400): the command
    runs here (subprocess, a pty with tty=true; tty with stderr is 400, no stream at all 400);
    frames are binary, the first byte the channel: 0 stdin, 1 stdout, 2 stderr, 3 the status
    (a Status: Success, or Failure with reason NonZeroExitCode and the cause ExitCode, or
    InternalError for a command that cannot be run), 4 resize ({"Width","Height"}: TIOCSWINSZ
    on the pty); v5 adds 255 close (payload: the channel to close, 0 = stdin's EOF). A client
    frame that is not masked, not binary, or for another channel ends the stream with close
    1002;
  - GET .../pods/P/portforward?ports=N with a WebSocket upgrade offering v4.channel.k8s.io or
    portforward.k8s.io: connects to 127.0.0.1:N here; channel 0 data and 1 error, the first frame
    of each carrying the port as 2 bytes little-endian; a refused connection is a message on
    channel 1, then close.

Test controls (admin token only)
  POST /_fake/inject {"method": "PUT", "path": "/api/v1/...", "times": 1, "query": "continue="
                          (optional: only requests whose query contains this),
                      "status": 500, "reason": "...", "message": "...", "retry_after": 2
                          (answer with this error instead), or
                      "mutate": {"annotations": {...}, "labels": {...}}
                          (first change the stored object as a concurrent writer would), or
                      "crash": "before" | "after"
                          (the server exits without answering, before or after doing the work;
                           with --state the work survives the restart)}
  POST /_fake/config  {"conversion": bool, "qps": n, "burst": n, "pending": bool,
                       "extensions": bool (false: agent-sandbox's extensions CRDs are not
                       installed, every extensions.agents.x-k8s.io URL is 404),
                       "claims_pending": bool (SandboxClaims stay unbound, Ready=False
                       SandboxNotReady; false binds the waiting ones),
                       "pod_ip": "a.b.c.d" (the address every new Sandbox's pod reports in
                       status.podIPs; by default 10.0.0.N),
                       "versions": ["v1beta1", "v1alpha1"] (the served agents.x-k8s.io versions),
                       "watch_end": bool (every watch answers 200 and ends at once, without an
                       event, as one cut by a proxy or a server shutting down does)}
  POST /_fake/podlog {"namespace": ns, "name": pod, "lines": ["..."], "end": bool}
                      append to a pod's log (each line stamped now); end: the container ended
  POST /_fake/namespace {"name": n, "stuck": bool}   hold a Terminating namespace, or let it go
  POST /_fake/serviceaccount {"namespace": ns, "name": n, "deleted": bool}
                      delete a ServiceAccount for TokenReview (its tokens stop authenticating), or
                      bring it back
  POST /_fake/tokenreview-key {"pem": "-----BEGIN PUBLIC KEY-----..."}
                      TokenReview requires an RS256 signature by this RSA key ("pem": null: any
                      signature, the default)
  POST /_fake/boundpod {"namespace": ns, "name": pod, "deleted": bool}
                      delete the pod tokens are bound to for TokenReview (tokens whose
                      kubernetes.io.pod.name claim names it stop authenticating), or bring it back
  POST /_fake/compact   compact every revision so far (continue tokens and watches from before: 410)
  POST /_fake/drop-watches   cut every open watch stream (as an API server restart does)
  GET  /_fake/dump   every stored object, by resource (no driver in between)
  GET  /_fake/stats  {"requests": {identity: count}, "watches_open": n}

With --state FILE the objects are kept in FILE (written after every change, read at start), so a
test can kill the server and start it again on the same --port: an API server restart. With
--latency-ms N every API request waits N ms (outside the store's lock). With --log FILE every
request appends one JSON line {"method", "path", "query", "status", "user"}. On start it prints
"LISTENING <port>".
"""

import argparse
import base64
import copy
import datetime
import fcntl
import hashlib
import json
import os
import pty
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
SANDBOX_GROUP = "agents.x-k8s.io"
SANDBOX_STORAGE = "v1beta1"
EXT_GROUP = "extensions.agents.x-k8s.io"
EXT_KEYS = {(EXT_GROUP, "sandboxtemplates"), (EXT_GROUP, "sandboxwarmpools"), (EXT_GROUP, "sandboxclaims")}

# (group, plural) -> kind, namespaced, versions (the first is the storage version)
RESOURCES = {
    ("", "namespaces"): ("Namespace", False, ["v1"]),
    ("", "configmaps"): ("ConfigMap", True, ["v1"]),
    ("", "secrets"): ("Secret", True, ["v1"]),
    ("networking.k8s.io", "networkpolicies"): ("NetworkPolicy", True, ["v1"]),
    (SANDBOX_GROUP, "sandboxes"): ("Sandbox", True, ["v1beta1", "v1alpha1"]),
    (EXT_GROUP, "sandboxtemplates"): ("SandboxTemplate", True, ["v1alpha1"]),
    (EXT_GROUP, "sandboxwarmpools"): ("SandboxWarmPool", True, ["v1alpha1"]),
    (EXT_GROUP, "sandboxclaims"): ("SandboxClaim", True, ["v1alpha1"]),
}
PSA_ENFORCE = "pod-security.kubernetes.io/enforce"


TOKENREVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


def api_version(group, version):
    return version if group == "" else "%s/%s" % (group, version)


class ApiError(Exception):
    def __init__(self, code, reason, message, name=None, kind=None, causes=None, retry_after=None):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.name, self.kind, self.causes, self.retry_after = name, kind, causes, retry_after

    def status(self):
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        details = {}
        if self.name is not None:
            details.update({"name": self.name, "kind": self.kind})
        if self.causes:
            details["causes"] = self.causes
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            body["details"] = details
        return body


def not_found(plural, name):
    return ApiError(404, "NotFound", f'{plural} "{name}" not found', name, plural)


def dns_subdomain(s):
    return isinstance(s, str) and 0 < len(s) <= 253 and all(DNS_LABEL.match(p) for p in s.split("."))


def label_key_ok(k):
    if not isinstance(k, str):
        return False
    prefix, _, name = k.rpartition("/")
    if prefix and not dns_subdomain(prefix):
        return False
    return len(name) <= 63 and bool(LABEL_NAME.match(name))


def label_value_ok(v):
    return isinstance(v, str) and (v == "" or (len(v) <= 63 and bool(LABEL_NAME.match(v))))


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- label selectors

def split_requirements(sel):
    parts, depth, cur = [], 0, ""
    for c in sel:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


SET_RE = re.compile(r"^(\S+)\s+(in|notin)\s+\(([^()]*)\)$")


def parse_selector(sel):
    """A list of predicates over a labels dict; ApiError 400 for bad syntax."""
    preds = []
    for req in split_requirements(sel or ""):
        m = SET_RE.match(req)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if not label_key_ok(key):
                raise ApiError(400, "BadRequest", f"invalid label key {key!r} in selector")
            if op == "in":
                preds.append(lambda l, k=key, vs=values: l.get(k) in vs)
            else:
                preds.append(lambda l, k=key, vs=values: l.get(k) not in vs)
            continue
        for op in ("!=", "==", "="):
            if op in req:
                key, value = (s.strip() for s in req.split(op, 1))
                if not label_key_ok(key) or not label_value_ok(value):
                    raise ApiError(400, "BadRequest", f"invalid selector requirement {req!r}")
                if op == "!=":
                    preds.append(lambda l, k=key, v=value: l.get(k) != v)
                else:
                    preds.append(lambda l, k=key, v=value: l.get(k) == v)
                break
        else:
            neg = req.startswith("!")
            key = req[1:].strip() if neg else req
            if not label_key_ok(key):
                raise ApiError(400, "BadRequest", f"invalid selector requirement {req!r}")
            preds.append((lambda l, k=key: k not in l) if neg else (lambda l, k=key: k in l))
    return preds


def matches(preds, obj):
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(p(labels) for p in preds)


# ---- RBAC

class Rbac:
    """The chart's rendered RBAC for one ServiceAccount user."""

    def __init__(self, doc):
        self.user = doc["user"]
        m = re.match(r"^system:serviceaccount:([^:]+):([^:]+)$", self.user)
        if not m:
            raise ValueError("user must be system:serviceaccount:<ns>:<name>")
        self.sa_ns, self.sa_name = m.group(1), m.group(2)
        self.roles, self.cluster_roles, self.bindings, self.cluster_bindings = {}, {}, [], []
        for o in doc["objects"]:
            kind, md = o.get("kind"), o.get("metadata") or {}
            if kind == "Role":
                self.roles[(md["namespace"], md["name"])] = o.get("rules") or []
            elif kind == "ClusterRole":
                self.cluster_roles[md["name"]] = o.get("rules") or []
            elif kind == "RoleBinding":
                self.bindings.append(o)
            elif kind == "ClusterRoleBinding":
                self.cluster_bindings.append(o)

    def subject_is_me(self, binding):
        return any(s.get("kind") == "ServiceAccount" and s.get("name") == self.sa_name and
                   s.get("namespace") == self.sa_ns for s in binding.get("subjects") or [])

    @staticmethod
    def rule_allows(rule, group, resource, verb, name):
        def has(field, v):
            vals = rule.get(field) or []
            return v in vals or "*" in vals
        if not (has("apiGroups", group) and has("resources", resource) and has("verbs", verb)):
            return False
        names = rule.get("resourceNames")
        return not names or (name is not None and name in names)

    def allows(self, group, resource, verb, ns, name):
        for b in self.cluster_bindings:
            if self.subject_is_me(b) and b["roleRef"]["kind"] == "ClusterRole":
                if any(self.rule_allows(r, group, resource, verb, name)
                       for r in self.cluster_roles.get(b["roleRef"]["name"], [])):
                    return True
        if ns is None:
            return False
        for b in self.bindings:
            if b["metadata"].get("namespace") != ns or not self.subject_is_me(b):
                continue
            ref = b["roleRef"]
            rules = (self.roles.get((ns, ref["name"]), []) if ref["kind"] == "Role"
                     else self.cluster_roles.get(ref["name"], []))
            if any(self.rule_allows(r, group, resource, verb, name) for r in rules):
                return True
        return False


# ---- Pod Security Standard "restricted", for the controller's pod

def psa_restricted_violations(pod_spec):
    out = []
    psc = pod_spec.get("securityContext") or {}
    for k in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(k):
            out.append("host namespaces (%s=true)" % k)
    for c in pod_spec.get("containers") or []:
        sc = c.get("securityContext") or {}
        n = c.get("name")
        if sc.get("privileged"):
            out.append('privileged (container "%s" must not set securityContext.privileged=true)' % n)
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append('allowPrivilegeEscalation != false (container "%s" must set '
                       'securityContext.allowPrivilegeEscalation=false)' % n)
        drop = ((sc.get("capabilities") or {}).get("drop")) or []
        if "ALL" not in drop:
            out.append('unrestricted capabilities (container "%s" must set securityContext.capabilities.drop=["ALL"])'
                       % n)
        if not (sc.get("runAsNonRoot") is True or (psc.get("runAsNonRoot") is True and
                                                    sc.get("runAsNonRoot") is not False)):
            out.append('runAsNonRoot != true (pod or container "%s" must set securityContext.runAsNonRoot=true)' % n)
        if sc.get("runAsUser") == 0 or (psc.get("runAsUser") == 0 and "runAsUser" not in sc):
            out.append("runAsUser=0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append('seccompProfile (pod or container "%s" must set securityContext.seccompProfile.type to '
                       '"RuntimeDefault" or "Localhost")' % n)
    return out


# ---- the store

class Store:
    def __init__(self, args):
        self.cond = threading.Condition()
        self.max_page = args.max_page
        self.pending = args.pending
        self.claims_pending = False
        self.extensions = True  # agent-sandbox's extensions CRDs installed
        self.pod_ip = None
        self.served = [v for v in args.versions.split(",") if v]
        self.conversion = not args.no_conversion
        self.qps, self.burst = args.qps, args.burst
        self.tokens, self.refill_at = float(args.burst), time.monotonic()
        self.max_request, self.max_object = args.max_request_bytes, args.max_object_bytes
        self.finalize_ms = args.finalize_ms
        self.bookmark_ms = args.bookmark_ms
        self.state_path = args.state
        self.rv = 100
        self.compacted = 0
        self.objects = {key: {} for key in RESOURCES}  # (group, plural) -> {(ns, name): obj}
        self.events = []  # (rv, key, type, obj)
        self.injections = []
        self.stuck = set()
        self.finalize_at = {}  # namespace -> monotonic time it disappears
        self.watch_generation = 0
        self.watch_end = False
        self.watches_open = 0
        self.requests = {}
        self.pod_logs = {}  # (ns, pod) -> {"lines": [(ns_stamp, text)], "ended": bool}
        self.deleted_sas = set()  # (ns, name) of ServiceAccounts deleted for TokenReview
        self.deleted_pods = set()  # (ns, name) of bound pods deleted for TokenReview
        self.review_key = None  # PEM of the RSA key TokenReview checks signatures with, or None
        with self.cond:
            if self.state_path and os.path.exists(self.state_path):
                self.load()
            else:
                for ns in ("default", "kube-system"):
                    self.create(("", "namespaces"), None, {"metadata": {"name": ns}}, "v1")

    # -- persistence (an API server restart keeps etcd's data; the watch cache starts empty)

    def save(self):
        if not self.state_path:
            return
        doc = {"rv": self.rv, "objects": [[key[0], key[1], [[k[0], k[1], o] for k, o in objs.items()]]
                                          for key, objs in self.objects.items()]}
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def load(self):
        with open(self.state_path) as f:
            doc = json.load(f)
        self.rv = doc["rv"]
        for group, plural, items in doc["objects"]:
            self.objects[(group, plural)] = {(ns, name): o for ns, name, o in items}
        self.compacted = self.rv  # no event history survives a restart

    # -- bookkeeping

    def bump(self, obj):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def record(self, key, etype, obj):
        self.events.append((self.rv, key, etype, copy.deepcopy(obj)))
        if len(self.events) > 200000:
            drop = len(self.events) - 100000
            self.compacted = self.events[drop - 1][0]
            del self.events[:drop]
        self.cond.notify_all()

    def compact(self):
        self.compacted = self.rv
        self.events = []

    def throttle(self):
        """None, or the seconds a throttled client must wait (the bucket is empty)."""
        if self.qps <= 0:
            return None
        t = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (t - self.refill_at) * self.qps)
        self.refill_at = t
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return max(1, int((1.0 - self.tokens) / self.qps + 0.999))

    def reap_namespaces(self):
        t = time.monotonic()
        for name, at in list(self.finalize_at.items()):
            if t >= at and name not in self.stuck:
                obj = self.objects[("", "namespaces")].pop((None, name), None)
                del self.finalize_at[name]
                if obj is not None:
                    self.rv += 1
                    self.record(("", "namespaces"), "DELETED", obj)
                    self.save()

    # -- checks

    def check_meta(self, key, meta):
        kind = RESOURCES[key][0]
        name = meta.get("name")
        ok = (DNS_LABEL.match(name or "") and len(name) <= 63) if key[1] == "namespaces" else dns_subdomain(name)
        if not ok:
            raise ApiError(422, "Invalid", f'{kind} "{name}" is invalid: metadata.name', name, key[1])
        for k, v in (meta.get("labels") or {}).items():
            if not label_key_ok(k) or not label_value_ok(v):
                raise ApiError(422, "Invalid", f'{kind} "{name}" is invalid: metadata.labels {k}', name, key[1])
        for k, v in (meta.get("annotations") or {}).items():
            if not label_key_ok(k) or not isinstance(v, str):
                raise ApiError(422, "Invalid", f'{kind} "{name}" is invalid: metadata.annotations', name, key[1])

    def check_owner_refs(self, key, meta):
        """metadata.ownerReferences as a real server validates them: each names apiVersion, kind, name
        and uid, and a namespaced object's owner is found in its own namespace (no namespace member)."""
        refs = meta.get("ownerReferences")
        if refs is None:
            return
        name = meta.get("name")
        if not isinstance(refs, list) or not all(
                isinstance(r, dict) and all(isinstance(r.get(f), str) and r.get(f) for f in ("apiVersion", "kind",
                                                                                           "name", "uid"))
                and "namespace" not in r for r in refs):
            raise ApiError(422, "Invalid", f'{RESOURCES[key][0]} "{name}" is invalid: metadata.ownerReferences',
                           name, key[1])
        if len({r["uid"] for r in refs}) != len(refs):
            raise ApiError(422, "Invalid", f'{RESOURCES[key][0]} "{name}" is invalid: metadata.ownerReferences: '
                           'Duplicate value', name, key[1])

    def check_secret(self, obj):
        """A Secret's data: keys of [-._a-zA-Z0-9], base64 values, at most 1 MiB decoded in all; type
        defaults to Opaque."""
        name = obj["metadata"].get("name")
        data = obj.get("data") or {}
        if not isinstance(data, dict):
            raise ApiError(400, "BadRequest", "Secret.data must be an object")
        total = 0
        for k, v in data.items():
            if not SECRET_KEY.match(k) or len(k) > 253:
                raise ApiError(422, "Invalid", f'Secret "{name}" is invalid: data[{k}]: Invalid value: "{k}": a valid '
                               'config key must consist of alphanumeric characters, \'-\', \'_\' or \'.\'', name,
                               "secrets")
            try:
                total += len(base64.b64decode(v, validate=True))
            except (ValueError, TypeError):
                raise ApiError(400, "BadRequest", "Secret in version \"v1\" cannot be handled as a Secret: illegal "
                               "base64 data")
        if total > 1024 * 1024:
            raise ApiError(422, "Invalid", f'Secret "{name}" is invalid: data: Too long: must have at most 1048576 '
                           'bytes', name, "secrets")
        obj.setdefault("type", "Opaque")

    def collect_garbage(self, ns, uid):
        """The garbage collector: a namespaced object whose owners are all gone (no object of that uid)
        is deleted in the background once its last owner is (propagationPolicy Background)."""
        live = {o["metadata"]["uid"] for objs in self.objects.values() for o in objs.values()}
        for k in RESOURCES:
            if not RESOURCES[k][1]:
                continue
            for okey, o in list(self.objects[k].items()):
                refs = o["metadata"].get("ownerReferences") or []
                if okey[0] == ns and refs and any(r.get("uid") == uid for r in refs) and \
                        not any(r.get("uid") in live for r in refs):
                    del self.objects[k][okey]
                    self.rv += 1
                    self.record(k, "DELETED", o)

    def check_sandbox(self, obj, version):
        name = obj["metadata"].get("name")

        def invalid(what):
            return ApiError(422, "Invalid", f'Sandbox.agents.x-k8s.io "{name}" is invalid: {what}', name, "sandboxes")

        spec = obj.get("spec")
        if not isinstance(spec, dict):
            raise invalid("spec: Required value")
        tmpl = spec.get("podTemplate")
        if not isinstance(tmpl, dict) or not isinstance(tmpl.get("spec"), dict):
            raise invalid("spec.podTemplate.spec: Required value")
        containers = tmpl["spec"].get("containers")
        if not containers or not all(isinstance(c, dict) and c.get("name") and c.get("image") for c in containers):
            raise invalid("spec.podTemplate.spec.containers: Required value")
        for k, v in ((tmpl.get("metadata") or {}).get("labels") or {}).items():
            if not label_key_ok(k) or not label_value_ok(v):
                raise invalid(f"spec.podTemplate.metadata.labels {k}")
        if "replicas" in spec and (version != "v1alpha1" or spec["replicas"] not in (0, 1)):
            raise invalid("spec.replicas: must be 0 or 1" if version == "v1alpha1"
                          else 'spec.replicas: field not declared in schema')
        if "shutdownTime" in spec and not (isinstance(spec["shutdownTime"], str) and RFC3339.match(spec["shutdownTime"])):
            raise invalid("spec.shutdownTime: must be a date-time")
        if "shutdownPolicy" in spec and spec["shutdownPolicy"] not in ("Delete", "Retain"):
            raise invalid('spec.shutdownPolicy: Unsupported value: supported values: "Delete", "Retain"')

    def check_size(self, obj):
        if self.max_object > 0 and len(json.dumps(obj)) > self.max_object:
            raise ApiError(413, "RequestEntityTooLarge", "etcdserver: request is too large")

    def namespace_usable(self, ns):
        nsobj = self.objects[("", "namespaces")].get((None, ns))
        if nsobj is None:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', ns, "namespaces")
        if nsobj["status"].get("phase") == "Terminating":
            raise ApiError(403, "Forbidden", f"unable to create new content in namespace {ns} because it is being "
                           "terminated", ns, "namespaces",
                           causes=[{"type": "NamespaceTerminating", "field": "metadata.namespace",
                                    "message": f"namespace {ns} is being terminated"}])

    # -- the agent-sandbox controller

    def sandbox_status(self, ns, obj):
        t = now()
        nsobj = self.objects[("", "namespaces")].get((None, ns)) or {}
        if ((nsobj.get("metadata") or {}).get("labels") or {}).get(PSA_ENFORCE) == "restricted":
            bad = psa_restricted_violations(obj["spec"]["podTemplate"]["spec"])
            if bad:
                msg = ('pods "%s" is forbidden: violates PodSecurity "restricted:latest": %s'
                       % (obj["metadata"]["name"], ", ".join(bad)))
                return {"conditions": [{"type": "Ready", "status": "False", "reason": "ReconcilerError",
                                        "message": msg[:1000], "lastTransitionTime": t, "observedGeneration": 1}]}
        if self.pending:
            return {"conditions": [{"type": "Ready", "status": "False", "reason": "DependenciesNotReady",
                                    "message": "Pod exists with phase: Pending", "lastTransitionTime": t,
                                    "observedGeneration": 1}]}
        return {"conditions": [{"type": "Ready", "status": "True", "reason": "DependenciesReady",
                                "message": "Pod is Ready", "lastTransitionTime": t, "observedGeneration": 1}],
                "replicas": 1, "podIPs": [self.pod_ip or "10.0.0.%d" % (self.rv % 250 + 2)]}

    # -- the agent-sandbox extensions controller (SandboxTemplate, SandboxWarmPool, SandboxClaim)

    def check_extension(self, key, obj):
        """What the extensions CRDs' schemas require: a template's spec.podTemplate.spec.containers
        (each with a name and an image), a warm pool's spec.replicas (an integer >= 0) and
        spec.sandboxTemplateRef.name, a claim's spec.sandboxTemplateRef.name (spec.warmpool optional:
        "none", "default" or a pool's name). 422 Invalid otherwise."""
        kind, name = RESOURCES[key][0], obj["metadata"].get("name")
        spec = obj.get("spec")

        def invalid(what):
            return ApiError(422, "Invalid", f'{kind}.{EXT_GROUP} "{name}" is invalid: {what}', name, key[1])

        if not isinstance(spec, dict):
            raise invalid("spec: Required value")
        if key[1] == "sandboxtemplates":
            tmpl = spec.get("podTemplate")
            containers = ((tmpl or {}).get("spec") or {}).get("containers") if isinstance(tmpl, dict) else None
            if not containers or not all(isinstance(c, dict) and c.get("name") and c.get("image")
                                         for c in containers):
                raise invalid("spec.podTemplate.spec.containers: Required value")
            return
        ref = spec.get("sandboxTemplateRef")
        if not isinstance(ref, dict) or not isinstance(ref.get("name"), str) or not dns_subdomain(ref["name"]):
            raise invalid("spec.sandboxTemplateRef.name: Required value")
        if key[1] == "sandboxwarmpools":
            r = spec.get("replicas")
            if not isinstance(r, int) or isinstance(r, bool) or r < 0:
                raise invalid("spec.replicas: Invalid value: must be greater than or equal to 0")
        if key[1] == "sandboxclaims" and "warmpool" in spec and not (
                isinstance(spec["warmpool"], str) and (spec["warmpool"] in ("none", "default")
                                                       or dns_subdomain(spec["warmpool"]))):
            raise invalid("spec.warmpool: Invalid value")

    def ext_put(self, key, ns, obj, etype):
        self.bump(obj)
        self.objects[key][(ns, obj["metadata"]["name"])] = obj
        self.record(key, etype, obj)

    def ext_sandbox(self, ns, name, template, owner_key, owner, labels=None):
        """A Sandbox the controller makes from @template, owned (controller: true) by @owner."""
        sb = {"apiVersion": api_version(SANDBOX_GROUP, SANDBOX_STORAGE), "kind": "Sandbox",
              "metadata": {"name": name, "namespace": ns, "uid": str(uuid.uuid4()), "creationTimestamp": now(),
                           "generation": 1, "labels": dict(labels or {}),
                           "ownerReferences": [self.owner_ref(owner_key, owner)]},
              "spec": {"podTemplate": copy.deepcopy(template["spec"]["podTemplate"])}}
        sb["status"] = self.sandbox_status(ns, sb)
        self.ext_put((SANDBOX_GROUP, "sandboxes"), ns, sb, "ADDED")
        return sb

    @staticmethod
    def owner_ref(key, owner):
        return {"apiVersion": api_version(key[0], RESOURCES[key][2][0]), "kind": RESOURCES[key][0],
                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "controller": True,
                "blockOwnerDeletion": True}

    def reconcile_extensions(self, ns):
        """The controller, run after every change of a template, pool, claim or Sandbox in @ns:
          - a SandboxWarmPool of replicas N whose template exists keeps N member Sandboxes (named
            "<pool>-<5 hex>", owned by the pool, labelled agents.x-k8s.io/pool=<pool>), status.replicas
            and readyReplicas counting them;
          - an unbound SandboxClaim (no status.sandbox.name) whose template is missing gets Ready=False,
            reason TemplateNotFound; one naming a warm pool (spec.warmpool) that is missing, Ready=False,
            reason WarmPoolNotFound; otherwise it adopts a member of that pool (or, for "default" or no
            warmpool, of any pool of the same template): the member's owner becomes the claim (it leaves
            the pool, which refills), or, with no member free (or "none"), a new Sandbox named after the
            claim is made from the template; then status.sandbox.name and Ready=True;
          - deleting a claim deletes its Sandbox (the garbage collector: the claim owns it)."""
        sbkey, tkey = (SANDBOX_GROUP, "sandboxes"), (EXT_GROUP, "sandboxtemplates")
        pkey, ckey = (EXT_GROUP, "sandboxwarmpools"), (EXT_GROUP, "sandboxclaims")
        sandboxes, templates = self.objects[sbkey], self.objects[tkey]
        pools, claims = self.objects[pkey], self.objects[ckey]

        def members(pool):
            return [o for (n, _), o in sorted(sandboxes.items()) if n == ns and any(
                r.get("uid") == pool["metadata"]["uid"] for r in o["metadata"].get("ownerReferences") or [])]

        def pool_pass():
            for (pns, pname), pool in sorted(pools.items()):
                if pns != ns:
                    continue
                tmpl = templates.get((ns, pool["spec"]["sandboxTemplateRef"]["name"]))
                have = members(pool)
                while tmpl is not None and len(have) < pool["spec"]["replicas"]:
                    name = "%s-%s" % (pname[:57], uuid.uuid4().hex[:5])
                    have.append(self.ext_sandbox(ns, name, tmpl, pkey, pool, {"agents.x-k8s.io/pool": pname}))
                ready = sum(1 for o in have if any(c.get("type") == "Ready" and c.get("status") == "True"
                                                   for c in (o.get("status") or {}).get("conditions") or []))
                if (pool.get("status") or {}) != {"replicas": len(have), "readyReplicas": ready}:
                    new = copy.deepcopy(pool)
                    new["status"] = {"replicas": len(have), "readyReplicas": ready}
                    self.ext_put(pkey, ns, new, "MODIFIED")

        pool_pass()
        for (cns, cname), claim in sorted(claims.items()):
            if cns != ns or ((claim.get("status") or {}).get("sandbox") or {}).get("name"):
                continue
            tname = claim["spec"]["sandboxTemplateRef"]["name"]
            wp = claim["spec"].get("warmpool", "default")
            tmpl, bound, cond = templates.get((ns, tname)), None, None
            if tmpl is None:
                cond = ("False", "TemplateNotFound", 'SandboxTemplate "%s" not found' % tname)
            elif self.claims_pending:
                cond = ("False", "SandboxNotReady", "waiting for capacity")
            elif wp not in ("none", "default") and (ns, wp) not in pools:
                cond = ("False", "WarmPoolNotFound", 'SandboxWarmPool "%s" not found' % wp)
            else:
                cands = [p for (pn, n), p in sorted(pools.items()) if pn == ns and (
                    n == wp if wp not in ("none", "default") else wp == "default"
                    and p["spec"]["sandboxTemplateRef"]["name"] == tname)]
                free = [m for p in cands for m in members(p)]
                if free:
                    m = copy.deepcopy(free[0])
                    m["metadata"]["ownerReferences"] = [self.owner_ref(ckey, claim)]
                    m["metadata"].get("labels", {}).pop("agents.x-k8s.io/pool", None)
                    self.ext_put(sbkey, ns, m, "MODIFIED")
                    bound = m["metadata"]["name"]
                elif (ns, cname) in sandboxes:
                    cond = ("False", "SandboxNameTaken", 'a Sandbox "%s" exists and is not this claim\'s' % cname)
                else:
                    bound = self.ext_sandbox(ns, cname, tmpl, ckey, claim)["metadata"]["name"]
            new = copy.deepcopy(claim)
            if bound is not None:
                new["status"] = {"sandbox": {"name": bound},
                                 "conditions": [{"type": "Ready", "status": "True", "reason": "SandboxBound",
                                                 "message": "bound to Sandbox %s" % bound,
                                                 "lastTransitionTime": now()}]}
            else:
                new["status"] = {"conditions": [{"type": "Ready", "status": cond[0], "reason": cond[1],
                                                 "message": cond[2], "lastTransitionTime": now()}]}
            if new.get("status") != claim.get("status"):
                self.ext_put(ckey, ns, new, "MODIFIED")
        pool_pass()  # a pool whose member was claimed refills

    # -- operations (version: the URL's; objects are stored at the storage version)

    def out(self, key, obj, version):
        o = copy.deepcopy(obj)
        o["apiVersion"] = api_version(key[0], version)
        o["kind"] = RESOURCES[key][0]
        return o

    def create(self, key, ns, obj, version):
        kind, namespaced, versions = RESOURCES[key]
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            raise ApiError(400, "BadRequest", "the body is not an object with metadata")
        want = api_version(key[0], version)
        if obj.get("apiVersion", want) != want or obj.get("kind", kind) != kind:
            raise ApiError(400, "BadRequest", f"the object is {obj.get('apiVersion')}/{obj.get('kind')}, not "
                           f"{want}/{kind}")
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise ApiError(400, "BadRequest", "resourceVersion should not be set on objects to be created")
        if ns is not None and meta.get("namespace", ns) != ns:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                           "sent on the request")
        self.check_meta(key, meta)
        self.check_owner_refs(key, meta)
        if key[1] == "secrets":
            self.check_secret(obj)
        if ns is not None:
            self.namespace_usable(ns)
            meta["namespace"] = ns
        if key[1] == "sandboxes":
            self.check_sandbox(obj, version)
            obj["status"] = self.sandbox_status(ns, obj)
        if key in EXT_KEYS:
            self.check_extension(key, obj)
            obj.pop("status", None)  # the controller's (status subresource): never the client's
        if key[1] == "namespaces":
            obj["status"] = {"phase": "Active"}
        if key[1] == "networkpolicies" and not isinstance((obj.get("spec") or {}).get("podSelector"), dict):
            raise ApiError(422, "Invalid", "NetworkPolicy.networking.k8s.io is invalid: spec.podSelector: Required")
        okey = (ns, meta["name"])
        if okey in self.objects[key]:
            raise ApiError(409, "AlreadyExists", f'{key[1]} "{meta["name"]}" already exists', meta["name"], key[1])
        obj["apiVersion"] = api_version(key[0], versions[0])
        obj["kind"] = kind
        meta.update({"uid": str(uuid.uuid4()), "creationTimestamp": now(), "generation": 1})
        self.check_size(obj)
        self.bump(obj)
        self.objects[key][okey] = obj
        self.record(key, "ADDED", obj)
        if key in EXT_KEYS:
            self.reconcile_extensions(ns)
            obj = self.objects[key].get(okey, obj)
        self.save()
        return self.out(key, obj, version)

    def get(self, key, ns, name, version):
        obj = self.objects[key].get((ns, name))
        if obj is None:
            raise not_found(key[1], name)
        return self.out(key, obj, version)

    def conflict(self, plural, name, why):
        return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": {why}', name, plural)

    def replace(self, key, ns, name, obj, version, subresource=None):
        cur = self.objects[key].get((ns, name))
        if cur is None:
            raise not_found(key[1], name)
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            raise ApiError(400, "BadRequest", "the body is not an object with metadata")
        meta = obj["metadata"]
        if meta.get("name") != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        rv = meta.get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise self.conflict(key[1], name, "the object has been modified; please apply your changes to the "
                                "latest version and try again")
        new = copy.deepcopy(cur)
        if subresource == "status":
            new["status"] = copy.deepcopy(obj.get("status") or {})
        else:
            self.check_meta(key, meta)
            if key[1] == "sandboxes":
                self.check_sandbox(obj, version)
                if obj.get("spec") != cur.get("spec"):
                    new["spec"] = copy.deepcopy(obj["spec"])
                    new["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1
            for field in ("labels", "annotations"):
                new["metadata"][field] = copy.deepcopy(meta.get(field) or {})
            self.check_owner_refs(key, meta)
            if meta.get("ownerReferences"):
                new["metadata"]["ownerReferences"] = copy.deepcopy(meta["ownerReferences"])
            else:
                new["metadata"].pop("ownerReferences", None)
            if key[1] == "secrets":
                self.check_secret(obj)
                if obj["type"] != cur.get("type", "Opaque"):
                    raise ApiError(422, "Invalid", f'Secret "{name}" is invalid: type: Invalid value: '
                                   f'"{obj["type"]}": field is immutable', name, "secrets")
            if key[1] in ("configmaps", "secrets"):
                new["data"] = copy.deepcopy(obj.get("data") or {})
            if key in EXT_KEYS:
                self.check_extension(key, obj)
                new["spec"] = copy.deepcopy(obj["spec"])
            if key[1] == "networkpolicies":
                if not isinstance((obj.get("spec") or {}).get("podSelector"), dict):
                    raise ApiError(422, "Invalid", "NetworkPolicy.networking.k8s.io is invalid: spec.podSelector: "
                                   "Required")
                new["spec"] = copy.deepcopy(obj["spec"])
        self.check_size(new)
        self.bump(new)
        self.objects[key][(ns, name)] = new
        self.record(key, "MODIFIED", new)
        if key in EXT_KEYS:
            self.reconcile_extensions(ns)
            new = self.objects[key].get((ns, name), new)
        self.save()
        return self.out(key, new, version)

    def patch(self, key, ns, name, patch, version):
        """A JSON merge patch (RFC 7386) of metadata.labels and metadata.annotations, the only fields
        the driver patches (anything else is 422 here). A metadata.resourceVersion in the patch is a
        precondition: 409 Conflict when the object has changed since, as a real server does."""
        cur = self.objects[key].get((ns, name))
        if cur is None:
            raise not_found(key[1], name)
        if not isinstance(patch, dict) or set(patch) - {"metadata"} or \
                not isinstance(patch.get("metadata", {}), dict) or \
                set(patch.get("metadata", {})) - {"labels", "annotations", "resourceVersion"}:
            raise ApiError(422, "Invalid", "this fake merge-patches metadata.labels and metadata.annotations only")
        meta = patch.get("metadata", {})
        rv = meta.get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise self.conflict(key[1], name, "the object has been modified; please apply your changes to the "
                                "latest version and try again")
        new = copy.deepcopy(cur)
        for field in ("labels", "annotations"):
            if field not in meta:
                continue
            if not isinstance(meta[field], dict):
                raise ApiError(422, "Invalid", f"metadata.{field} must be an object")
            merged = new["metadata"].setdefault(field, {})
            for k, v in meta[field].items():
                if v is None:
                    merged.pop(k, None)
                else:
                    merged[k] = v
        self.check_meta(key, new["metadata"])
        self.check_size(new)
        self.bump(new)
        self.objects[key][(ns, name)] = new
        self.record(key, "MODIFIED", new)
        self.save()
        return self.out(key, new, version)

    def delete(self, key, ns, name, options, version):
        cur = self.objects[key].get((ns, name))
        if cur is None:
            raise not_found(key[1], name)
        pre = (options or {}).get("preconditions") or {}
        if pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]:
            raise self.conflict(key[1], name, "Precondition failed: ResourceVersion in precondition: "
                                f'{pre["resourceVersion"]}, ResourceVersion in object meta: '
                                f'{cur["metadata"]["resourceVersion"]}')
        if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
            raise self.conflict(key[1], name, "Precondition failed: UID in precondition does not match")
        if key[1] == "namespaces":
            if cur["status"].get("phase") == "Terminating":
                return self.out(key, cur, version)
            for k in RESOURCES:
                if RESOURCES[k][1]:
                    for okey in [o for o in self.objects[k] if o[0] == name]:
                        gone = self.objects[k].pop(okey)
                        self.rv += 1
                        self.record(k, "DELETED", gone)
            new = copy.deepcopy(cur)
            new["status"] = {"phase": "Terminating"}
            new["metadata"]["deletionTimestamp"] = now()
            self.bump(new)
            self.objects[key][(ns, name)] = new
            self.record(key, "MODIFIED", new)
            self.finalize_at[name] = time.monotonic() + self.finalize_ms / 1000.0
            self.save()
            return self.out(key, new, version)
        del self.objects[key][(ns, name)]
        self.rv += 1
        self.record(key, "DELETED", cur)
        if ns is not None:
            self.collect_garbage(ns, cur["metadata"]["uid"])
        if ns is not None and (key in EXT_KEYS or key[1] == "sandboxes"):
            self.reconcile_extensions(ns)
        self.save()
        return self.out(key, cur, version)

    def list(self, key, ns, query, version):
        preds = parse_selector(query.get("labelSelector", [""])[0])
        keys = sorted((k for k in self.objects[key] if ns is None or k[0] == ns), key=lambda k: (k[0] or "", k[1]))
        items = [self.objects[key][k] for k in keys if matches(preds, self.objects[key][k])]
        start, list_rv = 0, self.rv
        token = query.get("continue", [""])[0]
        if token:
            try:
                t = json.loads(base64.urlsafe_b64decode(token))
                start, list_rv = int(t["start"]), int(t["rv"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "BadRequest", "invalid continue token")
            if list_rv < self.compacted:  # a list at the compacted revision itself is still whole
                raise ApiError(410, "Expired", "The provided continue parameter is too old to display a consistent "
                               "list result. You can start a new list without the continue parameter.")
        limit = int(query.get("limit", ["0"])[0] or 0)
        if self.max_page > 0:  # real servers may return fewer items than asked for, too
            limit = min(limit, self.max_page) if limit > 0 else self.max_page
        page = items[start:start + limit] if limit > 0 else items[start:]
        meta = {"resourceVersion": str(list_rv)}
        if limit > 0 and start + limit < len(items):
            meta["continue"] = base64.urlsafe_b64encode(json.dumps({"start": start + limit,
                                                                    "rv": list_rv}).encode()).decode()
        return {"kind": RESOURCES[key][0] + "List", "apiVersion": api_version(key[0], version), "metadata": meta,
                "items": [{k: v for k, v in self.out(key, i, version).items() if k not in ("kind", "apiVersion")}
                          for i in page]}

    def take_injection(self, method, path, query):
        for inj in self.injections:
            if inj["method"] == method and inj["path"] == path and inj["times"] > 0 and \
                    inj.get("query", "") in query:
                inj["times"] -= 1
                return inj
        return None

    def dump(self):
        return {key[1]: [copy.deepcopy(o) for _, o in sorted(objs.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))]
                for key, objs in self.objects.items()}

    def mutate(self, path, mutation):
        r = parse_path(path)
        if r is None or r["name"] is None or r["sub"] is not None:
            return
        obj = self.objects[r["key"]].get((r["ns"], r["name"]))
        if obj is None:
            return
        for field in ("annotations", "labels"):
            if field in mutation:
                obj["metadata"].setdefault(field, {}).update(mutation[field])
        self.bump(obj)
        self.record(r["key"], "MODIFIED", obj)
        self.save()


# ---- URLs

def parse_path(path):
    """{"key", "group", "version", "ns", "name", "sub"} for a resource URL, None otherwise."""
    segs = [s for s in path.split("/") if s]
    if segs[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", segs[2:]
    elif len(segs) >= 3 and segs[0] == "apis":
        group, version, rest = segs[1], segs[2], segs[3:]
    else:
        return None
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    key = (group, rest[0])
    if key not in RESOURCES or version not in RESOURCES[key][2]:
        return None
    name = rest[1] if len(rest) >= 2 else None
    sub = rest[2] if len(rest) == 3 else None
    namespaced = RESOURCES[key][1]
    if not namespaced and ns is not None:
        return None
    if namespaced and ns is None and name is not None:
        return None
    if sub is not None and not (key[1] == "sandboxes" and sub == "status"):
        return None
    return {"key": key, "group": group, "version": version, "ns": ns, "name": name, "sub": sub}


def discovery(store, path):
    """The discovery document at @path, or None."""
    segs = [s for s in path.split("/") if s]
    groups = {}
    for (group, plural), (kind, namespaced, versions) in RESOURCES.items():
        if group == "":
            continue
        served = [v for v in versions if (group != SANDBOX_GROUP or v in store.served) and
                  (group != EXT_GROUP or store.extensions)]
        if served:
            groups.setdefault(group, (served, []))[1].append((plural, kind, namespaced))

    def group_doc(g):
        served = groups[g][0]
        vs = [{"groupVersion": "%s/%s" % (g, v), "version": v} for v in served]
        return {"name": g, "versions": vs, "preferredVersion": vs[0]}

    if segs == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"]}
    if segs == ["apis"]:
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_doc(g) for g in sorted(groups)]}
    if len(segs) == 2 and segs[0] == "apis" and segs[1] in groups:
        return dict(group_doc(segs[1]), kind="APIGroup", apiVersion="v1")
    if len(segs) == 3 and segs[0] == "apis" and segs[1] in groups and segs[2] in groups[segs[1]][0]:
        res = []
        for plural, kind, namespaced in groups[segs[1]][1]:
            res.append({"name": plural, "singularName": kind.lower(), "namespaced": namespaced, "kind": kind,
                        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            if plural == "sandboxes":
                res.append({"name": "sandboxes/status", "singularName": "", "namespaced": True, "kind": kind,
                            "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "%s/%s" % (segs[1], segs[2]),
                "resources": res}
    return None


POD_SUB = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/(log|exec|portforward)$")
VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes: no 40 ms delayed-ACK stall
    server_version = "fake-kube-apiserver/2"

    def log_message(self, fmt, *args):
        pass

    def log_request_line(self, code, user):
        log = self.server.request_log
        if log is not None:  # before the reply, so a client that got the reply finds the line
            url = urlsplit(self.path)
            with self.server.log_lock, open(log, "a") as f:
                f.write(json.dumps({"method": self.command, "path": url.path, "query": url.query,
                                    "status": code, "user": user}) + "\n")

    def send_json(self, code, body, user=None, headers=None):
        data = json.dumps(body).encode()
        self.log_request_line(code, user)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n == 0:
            return None, 0
        if self.server.store.max_request > 0 and n > self.server.store.max_request:
            left = n
            while left > 0:  # read it all, so the client is not cut off while it still sends
                got = self.rfile.read(min(left, 1 << 20))
                if not got:
                    break
                left -= len(got)
            raise ApiError(413, "RequestEntityTooLarge",
                           "Request entity too large: limit is %d" % self.server.store.max_request)
        raw = self.rfile.read(n)
        try:
            return json.loads(raw), n
        except ValueError:
            raise ApiError(400, "BadRequest", "the body is not JSON")

    def identity(self):
        """(user, rbac): ("admin", None) for the admin token; ApiError 401 for anything unknown."""
        auth = self.headers.get("Authorization") or ""
        if auth == "Bearer " + self.server.token:
            return "admin", None
        for tok, rbac in self.server.identities:
            if auth == "Bearer " + tok:
                return rbac.user, rbac
        raise ApiError(401, "Unauthorized", "Unauthorized")

    def handle_any(self):
        user = None
        try:
            body, _ = self.read_body()  # first, so an error reply leaves the connection usable
            user, rbac = self.identity()
            url = urlsplit(self.path)
            store = self.server.store
            if url.path.startswith("/_fake/"):
                if rbac is not None:
                    raise ApiError(403, "Forbidden", "test controls are for the admin token")
                with store.cond:
                    store.reap_namespaces()  # a real server finalizes on its own, not only when asked
                    return self.send_json(*self.control(store, url, body), user=user)
            if self.server.latency > 0:
                time.sleep(self.server.latency)
            query = parse_qs(url.query)
            m = POD_SUB.match(url.path)
            if m is not None:
                return self.pod_subresource(store, m.group(1), m.group(2), m.group(3), query, user, rbac)
            if self.command == "GET" and query.get("watch", [""])[0] in ("1", "true"):
                return self.watch(store, url, query, user, rbac)
            with store.cond:
                store.requests[user] = store.requests.get(user, 0) + 1
                store.reap_namespaces()
                wait = store.throttle()
                if wait is not None:
                    raise ApiError(429, "TooManyRequests", "Too many requests, please try again later.",
                                   retry_after=wait)
                inj = store.take_injection(self.command, url.path, url.query)
                if inj is not None and inj.get("crash") == "before":
                    os._exit(3)
                if inj is not None and "status" in inj:
                    # On an object's URL the Status names the object (as a real NotFound does); on a
                    # collection's it names nothing (as the 404 of a resource that is not served).
                    r = parse_path(url.path)
                    name, kind = (r["name"], r["key"][1]) if r is not None and r["name"] else (None, None)
                    raise ApiError(inj["status"], inj.get("reason") or ("InternalError" if inj["status"] >= 500
                                                                        else "Injected"),
                                   inj.get("message") or "injected failure", name, kind,
                                   retry_after=inj.get("retry_after"))
                if inj is not None and "mutate" in inj:
                    store.mutate(url.path, inj["mutate"])
                if url.path == TOKENREVIEW_PATH and self.command == "POST":
                    code, out = self.token_review(store, body, rbac)
                else:
                    code, out = self.dispatch(store, url, query, body, user, rbac)
                if inj is not None and inj.get("crash") == "after":
                    os._exit(3)
            self.send_json(code, out, user=user)
        except ApiError as e:
            headers = {"Retry-After": str(e.retry_after)} if e.retry_after is not None else None
            self.send_json(e.code, e.status(), user=user, headers=headers)

    def control(self, store, url, body):
        body = body or {}
        if url.path == "/_fake/dump" and self.command == "GET":
            return 200, store.dump()
        if url.path == "/_fake/stats" and self.command == "GET":
            return 200, {"requests": store.requests, "watches_open": store.watches_open, "rv": store.rv}
        if self.command != "POST":
            raise ApiError(405, "MethodNotAllowed", "test controls are POST")
        if url.path == "/_fake/inject":
            store.injections.append(dict(body, times=body.get("times", 1)))
        elif url.path == "/_fake/config":
            if "conversion" in body:
                store.conversion = bool(body["conversion"])
            if "pending" in body:
                store.pending = bool(body["pending"])
            if "extensions" in body:
                store.extensions = bool(body["extensions"])
            if "claims_pending" in body:
                store.claims_pending = bool(body["claims_pending"])
                for ns in sorted({k[0] for k in store.objects[(EXT_GROUP, "sandboxclaims")]}):
                    store.reconcile_extensions(ns)
                store.save()
            if "pod_ip" in body:
                store.pod_ip = body["pod_ip"]
            if "watch_end" in body:
                store.watch_end = bool(body["watch_end"])
            if "versions" in body:
                store.served = [v for v in body["versions"] if v in RESOURCES[(SANDBOX_GROUP, "sandboxes")][2]]
            if "qps" in body or "burst" in body:
                store.qps = float(body.get("qps", store.qps))
                store.burst = int(body.get("burst", store.burst))
                store.tokens, store.refill_at = float(store.burst), time.monotonic()
        elif url.path == "/_fake/podlog":
            log = store.pod_logs.setdefault((body["namespace"], body["name"]), {"lines": [], "ended": False})
            for line in body.get("lines", []):
                log["lines"].append((time.time_ns(), line))
                time.sleep(0.000001)  # distinct stamps
            if body.get("end"):
                log["ended"] = True
            store.cond.notify_all()
        elif url.path == "/_fake/namespace":
            (store.stuck.add if body.get("stuck") else store.stuck.discard)(body["name"])
            store.reap_namespaces()
        elif url.path == "/_fake/serviceaccount":
            sa = (body["namespace"], body["name"])
            (store.deleted_sas.add if body.get("deleted") else store.deleted_sas.discard)(sa)
        elif url.path == "/_fake/tokenreview-key":
            store.review_key = body.get("pem")
        elif url.path == "/_fake/boundpod":
            pod = (body["namespace"], body["name"])
            (store.deleted_pods.add if body.get("deleted") else store.deleted_pods.discard)(pod)
        elif url.path == "/_fake/compact":
            store.compact()
        elif url.path == "/_fake/drop-watches":
            store.watch_generation += 1
            store.cond.notify_all()
        else:
            raise ApiError(404, "NotFound", "no such test control")
        return 200, {"ok": True}

    def token_review(self, store, body, rbac):
        if rbac is not None and not rbac.allows("authentication.k8s.io", "tokenreviews", "create", None, None):
            raise ApiError(403, "Forbidden", 'tokenreviews.authentication.k8s.io is forbidden: User "%s" cannot '
                           'create resource "tokenreviews" in API group "authentication.k8s.io" at the cluster '
                           'scope' % rbac.user, None, "tokenreviews")
        body = body if isinstance(body, dict) else {}
        spec = body.get("spec")
        if (body.get("kind") != "TokenReview" or body.get("apiVersion") != "authentication.k8s.io/v1"
                or not isinstance(spec, dict) or not isinstance(spec.get("token"), str) or not spec["token"]):
            raise ApiError(400, "BadRequest", "a TokenReview with spec.token is required")
        asked = spec.get("audiences") or []

        def answer(ok, why=None, user=None, auds=None):
            st = {"authenticated": ok}
            if ok:
                st["user"], st["audiences"] = user, auds
            else:
                st["error"] = why
            return 201, {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                         "metadata": {"creationTimestamp": None}, "spec": {"audiences": asked}, "status": st}
        parts = spec["token"].split(".")
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (IndexError, ValueError):
            return answer(False, "[invalid bearer token, token lookup failed]")
        if store.review_key is not None and not self.signed_by(store.review_key, parts):
            return answer(False, "[invalid bearer token, square/go-jose: error in cryptographic primitive]")
        sub = claims.get("sub") if isinstance(claims, dict) else None
        m = re.match(r"^system:serviceaccount:([^:]+):([^:]+)$", sub if isinstance(sub, str) else "")
        if m is None:
            return answer(False, "[invalid bearer token, not a service account token]")
        if not isinstance(claims.get("exp"), int) or claims["exp"] < time.time():
            return answer(False, "[invalid bearer token, token has expired]")
        if (m.group(1), m.group(2)) in store.deleted_sas:
            return answer(False, '[invalid bearer token, serviceaccounts "%s" not found]' % m.group(2))
        # A bound token dies with its pod (the API server's message for it is this generic one).
        pod = (claims.get("kubernetes.io") or {}).get("pod") if isinstance(claims.get("kubernetes.io"), dict) else None
        if isinstance(pod, dict) and (m.group(1), pod.get("name")) in store.deleted_pods:
            return answer(False, "[invalid bearer token, service account token has been invalidated]")
        aud = claims.get("aud")
        aud = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        auds = [a for a in aud if a in asked] if asked else aud
        if asked and not auds:
            return answer(False, "[invalid bearer token, token audiences %s is invalid for the target audiences %s]"
                          % (json.dumps(aud), json.dumps(asked)))
        return answer(True, user={"username": sub, "uid": "sa-uid-" + m.group(2),
                                  "groups": ["system:serviceaccounts", "system:serviceaccounts:" + m.group(1),
                                             "system:authenticated"]}, auds=auds)

    @staticmethod
    def signed_by(pem, parts):
        """Whether the compact JWS @parts carries an RS256 signature by the RSA public key @pem."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding
        try:
            header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
            sig = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
            if not isinstance(header, dict) or header.get("alg") != "RS256" or not sig:
                return False
            key = serialization.load_pem_public_key(pem.encode())
            key.verify(sig, (parts[0] + "." + parts[1]).encode(), padding.PKCS1v15(), hashes.SHA256())
            return True
        except (IndexError, ValueError, InvalidSignature):
            return False

    def authorize(self, rbac, r, verb):
        if rbac is None:
            return
        resource = r["key"][1] + ("/" + r["sub"] if r["sub"] else "")
        # A namespace object's own URL is "in" that namespace for RBAC (RoleBindings there apply).
        ns = r["name"] if r["key"][1] == "namespaces" else r["ns"]
        if not rbac.allows(r["group"], resource, verb, ns, r["name"]):
            what = "resource \"%s\" in API group \"%s\"" % (resource, r["group"])
            where = " in the namespace \"%s\"" % ns if ns else " at the cluster scope"
            raise ApiError(403, "Forbidden", '%s is forbidden: User "%s" cannot %s %s%s' % (
                r["key"][1] + ("." + r["group"] if r["group"] else "") + (' "%s"' % r["name"] if r["name"] else ""),
                rbac.user, verb, what, where), r["name"], r["key"][1])

    def resolve(self, store, url):
        r = parse_path(url.path)
        if r is None or (r["key"][0] == EXT_GROUP and not store.extensions):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if r["key"][0] == SANDBOX_GROUP:
            if r["version"] not in store.served:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if r["version"] != SANDBOX_STORAGE and not store.conversion:
                raise ApiError(500, "InternalError", 'conversion webhook for agents.x-k8s.io/%s, Kind=Sandbox '
                               'failed: Post "https://agent-sandbox-webhook.agent-sandbox-system.svc:443/convert": '
                               'dial tcp 10.96.0.42:443: connect: connection refused' % SANDBOX_STORAGE)
        return r

    def dispatch(self, store, url, query, body, user, rbac):
        if self.command == "GET":
            doc = discovery(store, url.path)
            if doc is not None:
                return 200, doc
        r = self.resolve(store, url)
        key, ns, name, sub, version = r["key"], r["ns"], r["name"], r["sub"], r["version"]
        verb = VERBS.get(self.command)
        if name is None and self.command == "GET":
            verb = "list"
        if verb is None:
            raise ApiError(405, "MethodNotAllowed", f"{self.command} is not supported here")
        self.authorize(rbac, r, verb)
        if name is None:
            if verb == "list":
                return 200, store.list(key, ns, query, version)
            if verb == "create" and (ns is not None or not RESOURCES[key][1]):
                return 201, store.create(key, ns, body, version)
        elif sub == "status":
            if verb == "get":
                return 200, store.get(key, ns, name, version)
            if verb == "update":
                return 200, store.replace(key, ns, name, body, version, "status")
        else:
            if verb == "get":
                return 200, store.get(key, ns, name, version)
            if verb == "update":
                return 200, store.replace(key, ns, name, body, version)
            if verb == "patch":
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                if ctype != "application/merge-patch+json":
                    raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown "
                                   f"format - accepted media types include: application/merge-patch+json "
                                   f"(this fake), not {ctype!r}")
                return 200, store.patch(key, ns, name, body, version)
            if verb == "delete":
                return 200, store.delete(key, ns, name, body, version)
        raise ApiError(405, "MethodNotAllowed", f"{self.command} is not supported here")

    # -- watch

    def chunk(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def watch(self, store, url, query, user, rbac):
        with store.cond:
            store.requests[user] = store.requests.get(user, 0) + 1
            wait = store.throttle()
            if wait is not None:
                raise ApiError(429, "TooManyRequests", "Too many requests, please try again later.",
                               retry_after=wait)
            r = self.resolve(store, url)
            if r["name"] is not None:
                raise ApiError(405, "MethodNotAllowed", "watch a collection")
            self.authorize(rbac, r, "watch")
            preds = parse_selector(query.get("labelSelector", [""])[0])
            try:
                since = int(query.get("resourceVersion", ["0"])[0] or 0)
            except ValueError:
                raise ApiError(400, "BadRequest", "resourceVersion must be an integer")
            timeout = min(int(query.get("timeoutSeconds", ["1800"])[0] or 1800), 1800)
            bookmarks = query.get("allowWatchBookmarks", [""])[0] in ("1", "true")
            generation = store.watch_generation
            store.watches_open += 1
        self.log_request_line(200, user)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        key, ns, version = r["key"], r["ns"], r["version"]
        end = time.monotonic() + timeout
        next_bookmark = time.monotonic() + store.bookmark_ms / 1000.0
        cut = False
        try:
            with store.cond:
                if store.watch_end:
                    return self.finish_chunks()
                if since != 0 and since < store.compacted:
                    self.chunk({"type": "ERROR", "object": ApiError(
                        410, "Expired", "too old resource version: %d (%d)" % (since, store.compacted)).status()})
                    return self.finish_chunks()
                if since == 0:
                    since = store.rv
                while True:
                    if store.watch_generation != generation:
                        cut = True
                        return
                    sent = False
                    for rv, k, etype, obj in store.events:
                        if rv <= since or k != key:
                            continue
                        since = rv
                        if (ns is None or obj["metadata"].get("namespace") == ns) and matches(preds, obj):
                            self.chunk({"type": etype, "object": store.out(key, obj, version)})
                            sent = True
                    t = time.monotonic()
                    if t >= end:
                        return self.finish_chunks()
                    if bookmarks and t >= next_bookmark:
                        self.chunk({"type": "BOOKMARK", "object": {
                            "kind": RESOURCES[key][0], "apiVersion": api_version(key[0], version),
                            "metadata": {"resourceVersion": str(max(since, store.rv))}}})
                        since = max(since, store.rv)
                        next_bookmark = t + store.bookmark_ms / 1000.0
                    if not sent:
                        store.cond.wait(timeout=min(0.5, max(0.01, min(end, next_bookmark) - t)))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            cut = True
        finally:
            with store.cond:
                store.watches_open -= 1
            if cut:
                self.close_connection = True
                try:
                    self.connection.shutdown(2)
                except OSError:
                    pass

    # -- pods: log, exec, portforward

    def pod_subresource(self, store, ns, pod, sub, query, user, rbac):
        verb = "get" if sub == "log" else "create"
        if self.command != "GET" and not (sub != "log" and self.command == "POST"):
            raise ApiError(405, "MethodNotAllowed", f"{self.command} is not supported here")
        if rbac is not None and not rbac.allows("", "pods/" + sub, verb, ns, pod):
            raise ApiError(403, "Forbidden", 'pods "%s" is forbidden: User "%s" cannot %s resource "pods/%s" in '
                           'API group "" in the namespace "%s"' % (pod, rbac.user, verb, sub, ns), pod, "pods")
        with store.cond:
            store.requests[user] = store.requests.get(user, 0) + 1
            if (ns, pod) not in store.objects[(SANDBOX_GROUP, "sandboxes")]:
                raise not_found("pods", pod)
        container = query.get("container", ["sandbox"])[0]
        if container != "sandbox":
            raise ApiError(400, "BadRequest", "container %s is not valid for pod %s" % (container, pod))
        if sub == "log":
            return self.pod_log(store, ns, pod, query, user)
        protos = [p.strip() for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",") if p.strip()]
        wanted = ["v5.channel.k8s.io", "v4.channel.k8s.io"] if sub == "exec" else \
            ["v4.channel.k8s.io", "portforward.k8s.io"]
        chosen = next((p for p in protos if p in wanted), None)
        if (self.headers.get("Upgrade") or "").lower() != "websocket" or not self.headers.get("Sec-WebSocket-Key"):
            raise ApiError(400, "BadRequest", "Upgrade request required")
        if chosen is None:
            raise ApiError(400, "BadRequest", "none of the offered subprotocols %s is supported (%s)" % (
                protos, ", ".join(wanted)))
        if sub == "exec":
            return self.pod_exec(ns, pod, query, user, chosen)
        return self.pod_portforward(ns, pod, query, user, chosen)

    def pod_log(self, store, ns, pod, query, user):
        def flag(name):
            return query.get(name, ["false"])[0] in ("1", "true")
        try:
            tail = int(query["tailLines"][0]) if "tailLines" in query else None
            since_s = int(query["sinceSeconds"][0]) if "sinceSeconds" in query else None
        except ValueError:
            raise ApiError(400, "BadRequest", "tailLines and sinceSeconds are integers")
        since_ns = None
        if "sinceTime" in query:
            if since_s is not None:
                raise ApiError(422, "Invalid", "at most one of sinceTime or sinceSeconds may be specified")
            t = query["sinceTime"][0]
            if not RFC3339.match(t):
                raise ApiError(400, "BadRequest", "sinceTime %r is not RFC 3339" % t)
            since_ns = int(datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()) * 10**9
        elif since_s is not None:
            since_ns = time.time_ns() - since_s * 10**9
        stamps, follow = flag("timestamps"), flag("follow")

        def fmt(st, text):
            if not stamps:
                return text + "\n"
            sec, nsec = divmod(st, 10**9)
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%09dZ %s\n" % (nsec, text)

        with store.cond:
            log = store.pod_logs.setdefault((ns, pod), {"lines": [], "ended": False})
            lines = [(st, t) for st, t in log["lines"] if since_ns is None or st >= since_ns]
            if tail is not None:
                lines = lines[len(lines) - tail:] if tail < len(lines) else lines
                lines = lines if tail > 0 else []
            sent = len(log["lines"])
        out = "".join(fmt(st, t) for st, t in lines).encode()
        self.log_request_line(200, user)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if not follow:
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if out:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(out), out))
                self.wfile.flush()
            while True:
                with store.cond:
                    while (len(log["lines"]) == sent and not log["ended"] and
                           (ns, pod) in store.objects[(SANDBOX_GROUP, "sandboxes")]):
                        store.cond.wait(timeout=0.5)
                    more = log["lines"][sent:]
                    sent = len(log["lines"])
                    over = log["ended"] or (ns, pod) not in store.objects[(SANDBOX_GROUP, "sandboxes")]
                data = "".join(fmt(st, t) for st, t in more if since_ns is None or st >= since_ns).encode()
                if data:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                if over:
                    return self.finish_chunks()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    # WebSocket (RFC 6455), the server's side: strict about what a client must do.

    def ws_accept(self, user, proto):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
                                  .digest()).decode()
        self.log_request_line(101, user)
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Sec-WebSocket-Protocol", proto)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        self.ws_lock = threading.Lock()
        self.ws_in = b""

    def ws_send(self, op, payload):
        n = len(payload)
        head = bytes([0x80 | op])
        if n < 126:
            head += bytes([n])
        elif n < 65536:
            head += bytes([126]) + struct.pack(">H", n)
        else:
            head += bytes([127]) + struct.pack(">Q", n)
        with self.ws_lock:
            try:
                self.wfile.write(head + payload)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError, ValueError):
                pass

    def ws_read_frame(self):
        """(fin, op, payload) of the client's next frame; None at EOF; raises ValueError when bad."""
        def need(n):
            # The TLS connection is one OpenSSL object, which two threads must not use at once: the
            # pump writes output (ws_send, under ws_lock) while this reads input. So this waits for
            # input outside the lock (select, or what OpenSSL already holds) and reads it under the
            # lock without blocking; a blocking read beside a write broke the stream now and then
            # under load (the exec then ended early, or its start failed).
            while len(self.ws_in) < n:
                if self.connection.pending() == 0:
                    r, _, _ = select.select([self.connection], [], [], 0.5)
                    if not r:
                        continue
                with self.ws_lock:
                    self.connection.setblocking(False)
                    try:
                        got = self.connection.recv(65536)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        got = None
                    finally:
                        self.connection.setblocking(True)
                if got is None:
                    continue
                if not got:
                    return False
                self.ws_in += got
            return True
        if not need(2):
            return None
        b0, b1 = self.ws_in[0], self.ws_in[1]
        if b0 & 0x70 or not b1 & 0x80:
            raise ValueError("unmasked or reserved bits")
        n, at = b1 & 0x7f, 2
        if n == 126:
            if not need(4):
                return None
            n, at = struct.unpack(">H", self.ws_in[2:4])[0], 4
        elif n == 127:
            if not need(10):
                return None
            n, at = struct.unpack(">Q", self.ws_in[2:10])[0], 10
        if n > 16 << 20 or not need(at + 4 + n):
            if n > 16 << 20:
                raise ValueError("too big")
            return None
        mask = self.ws_in[at:at + 4]
        data = bytes(c ^ mask[i & 3] for i, c in enumerate(self.ws_in[at + 4:at + 4 + n]))
        self.ws_in = self.ws_in[at + 4 + n:]
        return bool(b0 & 0x80), b0 & 0x0f, data

    def ws_messages(self, on_message):
        """Read client messages until EOF or close; False when the client broke the protocol."""
        msg, mop = b"", None
        try:
            while True:
                fr = self.ws_read_frame()
                if fr is None:
                    return True
                fin, op, data = fr
                if op == 8:
                    self.ws_send(8, data[:2])
                    return True
                if op == 9:
                    self.ws_send(10, data)
                    continue
                if op == 10:
                    continue
                if op == 0:
                    if mop is None:
                        raise ValueError("continuation of nothing")
                    msg += data
                else:
                    if mop is not None:
                        raise ValueError("a new message inside one")
                    mop, msg = op, data
                if fin:
                    if mop != 2 or not on_message(msg):
                        raise ValueError("not a binary message for a known channel")
                    msg, mop = b"", None
        except (ValueError, ssl.SSLError, OSError):
            self.ws_send(8, struct.pack(">H", 1002))
            return False

    def pod_exec(self, ns, pod, query, user, proto):
        def flag(name, default):
            return query.get(name, [default])[0] in ("1", "true")
        cmd = query.get("command", [])
        tty, want_in, want_out, want_err = flag("tty", "false"), flag("stdin", "false"), \
            flag("stdout", "true"), flag("stderr", "true")
        if not cmd:
            raise ApiError(400, "BadRequest", "you must specify at least 1 command")
        if tty and want_err:
            raise ApiError(400, "BadRequest", "tty and stderr cannot both be true")
        if not (want_in or want_out or want_err):
            raise ApiError(400, "BadRequest", "you must specify at least 1 of stdin, stdout, stderr")
        self.ws_accept(user, proto)
        v5 = proto.startswith("v5.")
        master = None
        try:
            if tty:
                master, slave = pty.openpty()
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
                proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
                os.close(slave)
                outs = [(master, 1)]
            else:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if want_in else subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                outs = [(proc.stdout.fileno(), 1), (proc.stderr.fileno(), 2)]
        except OSError as e:
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "reason": "InternalError",
                      "message": 'exec: "%s": %s' % (cmd[0], e.strerror or str(e))}
            self.ws_send(2, b"\x03" + json.dumps(status).encode())
            self.ws_send(8, struct.pack(">H", 1000))
            return

        def pump():
            fds = dict(outs)
            while fds:
                r, _, _ = select.select(list(fds), [], [], 0.5)
                for fd in r:
                    try:
                        data = os.read(fd, 32768)
                    except OSError:
                        data = b""
                    if not data:
                        del fds[fd]
                        continue
                    if (fds[fd] == 1 and want_out) or (fds[fd] == 2 and want_err):
                        self.ws_send(2, bytes([fds[fd]]) + data)
                if not r and proc.poll() is not None and tty:
                    break
        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()

        def on_message(msg):
            if not msg:
                return False
            ch, data = msg[0], msg[1:]
            if ch == 0:
                if not want_in:
                    return False
                try:
                    if tty:
                        os.write(master, data)
                    else:
                        proc.stdin.write(data)
                        proc.stdin.flush()
                except OSError:
                    pass
                return True
            if ch == 4:
                size = json.loads(data)
                if tty:
                    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", int(size["Height"]),
                                                                         int(size["Width"]), 0, 0))
                return True
            if ch == 255 and v5:
                if data[:1] == b"\x00":
                    if tty:
                        os.write(master, b"\x04")
                    elif proc.stdin is not None:
                        proc.stdin.close()
                return True
            return False

        reader = threading.Thread(target=lambda: self.ws_messages(on_message) or proc.kill(), daemon=True)
        reader.start()
        code = proc.wait()
        pumper.join(timeout=5)
        if code == 0:
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
        else:
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": "command terminated with non-zero exit code: exit status %d" % (
                          code if code > 0 else 128 - code),
                      "reason": "NonZeroExitCode",
                      "details": {"causes": [{"reason": "ExitCode", "message": str(code if code > 0 else 128 - code)}]}}
        self.ws_send(2, b"\x03" + json.dumps(status).encode())
        self.ws_send(8, struct.pack(">H", 1000))
        if master is not None:
            os.close(master)
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def pod_portforward(self, ns, pod, query, user, proto):
        try:
            port = int(query.get("ports", [""])[0])
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise ApiError(400, "BadRequest", "ports must be one port number, 1..65535")
        self.ws_accept(user, proto)
        prefix = struct.pack("<H", port)
        self.ws_send(2, b"\x00" + prefix)
        self.ws_send(2, b"\x01" + prefix)
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError as e:
            self.ws_send(2, b"\x01" + ("error forwarding port %d to pod %s, uid : failed to connect to localhost:%d "
                                       "inside namespace: %s" % (port, pod, port, e.strerror or e)).encode())
            self.ws_send(8, struct.pack(">H", 1000))
            return
        conn.settimeout(None)

        def pump():
            while True:
                try:
                    data = conn.recv(32768)
                except OSError:
                    data = b""
                if not data:
                    break
                self.ws_send(2, b"\x00" + data)
            self.ws_send(8, struct.pack(">H", 1000))

        t = threading.Thread(target=pump, daemon=True)
        t.start()

        def on_message(msg):
            if not msg or msg[0] != 0:
                return False
            if msg[1:]:
                conn.sendall(msg[1:])
            return True
        self.ws_messages(on_message)
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        t.join(timeout=10)
        conn.close()

    def finish_chunks(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--token-file", required=True, help="the admin token (unrestricted)")
    ap.add_argument("--identity", action="append", default=[], metavar="TOKENFILE=RBACFILE",
                    help="a ServiceAccount token and the RBAC that authorises it")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log")
    ap.add_argument("--state", help="keep the objects in this file (survives a restart)")
    ap.add_argument("--pending", action="store_true", help="leave new sandboxes not Ready (DependenciesNotReady)")
    ap.add_argument("--max-page", type=int, default=0, help="at most this many items per list page")
    ap.add_argument("--latency-ms", type=int, default=0, help="delay every API request by this much")
    ap.add_argument("--versions", default="v1beta1,v1alpha1", help="served agents.x-k8s.io versions")
    ap.add_argument("--no-conversion", action="store_true", help="the conversion webhook is down")
    ap.add_argument("--qps", type=float, default=0, help="throttle: requests per second (0: none)")
    ap.add_argument("--burst", type=int, default=50)
    ap.add_argument("--max-request-bytes", type=int, default=3 * 1024 * 1024)
    ap.add_argument("--max-object-bytes", type=int, default=1536 * 1024)
    ap.add_argument("--finalize-ms", type=int, default=0, help="how long a deleted namespace stays Terminating")
    ap.add_argument("--bookmark-ms", type=int, default=1000)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.token = open(args.token_file).read().strip()
    server.identities = []
    for spec in args.identity:
        tokfile, _, rbacfile = spec.partition("=")
        with open(rbacfile) as f:
            server.identities.append((open(tokfile).read().strip(), Rbac(json.load(f))))
    server.store = Store(args)
    server.request_log = args.log
    server.latency = args.latency_ms / 1000.0
    server.log_lock = threading.Lock()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
