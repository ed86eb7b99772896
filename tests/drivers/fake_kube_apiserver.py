#!/usr/bin/python3
"""A fake Kubernetes API server for the kubernetes driver's tests (standard library only).

It speaks HTTPS (a certificate the test makes with the openssl CLI) and serves the objects the
driver uses, with the semantics the driver depends on:

  - namespaces (cluster scoped) and configmaps (namespaced) under /api/v1/...; the
    kubernetes-sigs/agent-sandbox custom resource sandboxes.agents.x-k8s.io (kind Sandbox, served
    at version v1alpha1 only) under /apis/agents.x-k8s.io/v1alpha1/namespaces/<ns>/sandboxes, with
    its status subresource (PUT .../sandboxes/<name>/status changes status only; a PUT of the
    object itself keeps the stored status, as for any CRD with subresources.status); lists across
    namespaces at /api/v1/configmaps and /apis/agents.x-k8s.io/v1alpha1/sandboxes;
  - one resourceVersion counter for the whole server, increased by every write and written into
    the object; lists carry the counter in metadata.resourceVersion;
  - create of an existing name: 409 Status reason AlreadyExists; create in a namespace that does
    not exist: 404 NotFound; in a namespace being deleted: 403 Forbidden; create with a
    resourceVersion: 400 BadRequest; invalid names or labels: 422 Invalid; a Sandbox whose
    apiVersion/kind are not agents.x-k8s.io/v1alpha1 Sandbox: 400; without
    spec.podTemplate.spec.containers (each with a name and an image), with replicas outside 0..1,
    a shutdownTime that is not an RFC 3339 time, or a shutdownPolicy other than Delete/Retain: 422;
  - PUT with a stale metadata.resourceVersion: 409 Status reason Conflict ("the object has been
    modified"); without one: an unconditional replace; a spec change increases generation;
  - DELETE with DeleteOptions preconditions (resourceVersion, uid) that do not match: 409 Conflict;
    missing objects: 404 NotFound (details.kind the resource); a create in a missing namespace: 404
    with details.kind "namespaces"; deleting a namespace deletes its sandboxes and configmaps;
  - labelSelector on lists: key=value, key==value, key!=value, key in (a,b), key notin (a,b), key,
    !key, comma-separated (all must hold); limit and continue for paging (--max-page N caps every
    page, as a real server may, so clients must follow continue);
  - every request needs "Authorization: Bearer <token>" (the token file's content): 401 otherwise;
  - the agent-sandbox controller is played by the server itself: a new Sandbox gets the status
    conditions the controller writes once its pod runs (Ready=True, reason DependenciesReady);
    with --pending it stays Ready=False, reason DependenciesNotReady (tests move it on with a PUT
    of the status subresource, as the controller would).

Test controls (same bearer token):
  POST /_fake/inject {"method": "PUT", "path": "/api/v1/...", "times": 1,
                      "status": 500, "reason": "...",     (answer with this error instead), or
                      "mutate": {"annotations": {...}, "labels": {...}}}
       (before handling the matching request, change the stored object as a concurrent writer
        would: new annotations/labels and a new resourceVersion)
  GET  /_fake/dump   every stored object: {"namespaces": [...], "configmaps": [...],
                     "sandboxes": [...]} (tests check what exists without going through a driver)

With --latency-ms N every request other than the test controls waits N ms before it is handled
(outside the store's lock, as a slow API server would: requests still overlap).

On start it prints "LISTENING <port>" on stdout. With --log FILE it appends one JSON line per
request: {"method", "path", "query", "status"}.
"""

import argparse
import base64
import copy
import datetime
import json
import re
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
KINDS = {"sandboxes": "Sandbox", "configmaps": "ConfigMap", "namespaces": "Namespace"}
SANDBOX_API = "agents.x-k8s.io/v1alpha1"
API_VERSION = {"sandboxes": SANDBOX_API, "configmaps": "v1", "namespaces": "v1"}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class ApiError(Exception):
    def __init__(self, code, reason, message, name=None, kind=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.name, self.kind = code, reason, message, name, kind

    def status(self):
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.name is not None:
            body["details"] = {"name": self.name, "kind": self.kind}
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


# ---- the store

class Store:
    def __init__(self, pending, max_page):
        self.lock = threading.Lock()
        self.max_page = max_page
        self.rv = 100
        self.pending = pending
        self.objects = {"namespaces": {}, "sandboxes": {}, "configmaps": {}}  # key: (ns, name)
        self.injections = []
        for ns in ("default", "kube-system"):
            self.create("namespaces", None, {"metadata": {"name": ns}})

    def bump(self, obj):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def now(self):
        return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def check_meta(self, plural, meta):
        name = meta.get("name")
        ok = DNS_LABEL.match(name or "") and len(name) <= 63 if plural == "namespaces" else dns_subdomain(name)
        if not ok:
            raise ApiError(422, "Invalid", f'{KINDS[plural]} "{name}" is invalid: metadata.name', name, plural)
        for k, v in (meta.get("labels") or {}).items():
            if not label_key_ok(k) or not label_value_ok(v):
                raise ApiError(422, "Invalid", f'{KINDS[plural]} "{name}" is invalid: metadata.labels {k}', name,
                               plural)
        for k, v in (meta.get("annotations") or {}).items():
            if not label_key_ok(k) or not isinstance(v, str):
                raise ApiError(422, "Invalid", f'{KINDS[plural]} "{name}" is invalid: metadata.annotations', name,
                               plural)

    def check_sandbox(self, obj):
        name = obj["metadata"].get("name")

        def invalid(what):
            return ApiError(422, "Invalid", f'Sandbox.agents.x-k8s.io "{name}" is invalid: {what}', name, "sandboxes")

        if obj.get("apiVersion") != SANDBOX_API or obj.get("kind") != "Sandbox":
            raise ApiError(400, "BadRequest", f"the object is {obj.get('apiVersion')}/{obj.get('kind')}, not "
                           f"{SANDBOX_API}/Sandbox")
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
        if "replicas" in spec and spec["replicas"] not in (0, 1):
            raise invalid("spec.replicas: must be 0 or 1")
        if "shutdownTime" in spec and not (isinstance(spec["shutdownTime"], str) and RFC3339.match(spec["shutdownTime"])):
            raise invalid("spec.shutdownTime: must be a date-time")
        if "shutdownPolicy" in spec and spec["shutdownPolicy"] not in ("Delete", "Retain"):
            raise invalid('spec.shutdownPolicy: Unsupported value: supported values: "Delete", "Retain"')

    def namespace_usable(self, ns):
        nsobj = self.objects["namespaces"].get((None, ns))
        if nsobj is None:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found', ns, "namespaces")
        if nsobj["status"].get("phase") == "Terminating":
            raise ApiError(403, "Forbidden", f"unable to create new content in namespace {ns} because it is being "
                           "terminated", ns, "namespaces")

    def sandbox_status(self):
        t = self.now()
        if self.pending:
            return {"conditions": [{"type": "Ready", "status": "False", "reason": "DependenciesNotReady",
                                    "message": "Pod exists with phase: Pending", "lastTransitionTime": t,
                                    "observedGeneration": 1}]}
        return {"conditions": [{"type": "Ready", "status": "True", "reason": "DependenciesReady",
                                "message": "Pod is Ready", "lastTransitionTime": t, "observedGeneration": 1}],
                "replicas": 1, "podIPs": ["10.0.0.%d" % (self.rv % 250 + 2)]}

    def create(self, plural, ns, obj):
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            raise ApiError(400, "BadRequest", "the body is not an object with metadata")
        obj = copy.deepcopy(obj)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise ApiError(400, "BadRequest", "resourceVersion should not be set on objects to be created")
        if ns is not None and meta.get("namespace", ns) != ns:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace "
                           "sent on the request")
        self.check_meta(plural, meta)
        if ns is not None:
            self.namespace_usable(ns)
            meta["namespace"] = ns
        if plural == "sandboxes":
            self.check_sandbox(obj)
            obj["status"] = self.sandbox_status()
        if plural == "namespaces":
            obj["status"] = {"phase": "Active"}
        key = (ns, meta["name"])
        if key in self.objects[plural]:
            raise ApiError(409, "AlreadyExists", f'{plural} "{meta["name"]}" already exists', meta["name"], plural)
        obj["apiVersion"] = API_VERSION[plural]
        obj["kind"] = KINDS[plural]
        meta.update({"uid": str(uuid.uuid4()), "creationTimestamp": self.now(), "generation": 1})
        self.bump(obj)
        self.objects[plural][key] = obj
        return obj

    def get(self, plural, ns, name):
        obj = self.objects[plural].get((ns, name))
        if obj is None:
            raise not_found(plural, name)
        return obj

    def conflict(self, plural, name, why):
        return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": {why}', name, plural)

    def replace(self, plural, ns, name, obj, subresource=None):
        cur = self.get(plural, ns, name)
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            raise ApiError(400, "BadRequest", "the body is not an object with metadata")
        meta = obj["metadata"]
        if meta.get("name") != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        rv = meta.get("resourceVersion")
        if rv and rv != cur["metadata"]["resourceVersion"]:
            raise self.conflict(plural, name, "the object has been modified; please apply your changes to the "
                                "latest version and try again")
        new = copy.deepcopy(cur)
        if subresource == "status":
            new["status"] = copy.deepcopy(obj.get("status") or {})
        else:
            self.check_meta(plural, meta)
            if plural == "sandboxes":
                self.check_sandbox(obj)
                if obj.get("spec") != cur.get("spec"):
                    new["spec"] = copy.deepcopy(obj["spec"])
                    new["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1
            for field in ("labels", "annotations"):
                new["metadata"][field] = copy.deepcopy(meta.get(field) or {})
            if plural == "configmaps":
                new["data"] = copy.deepcopy(obj.get("data") or {})
        self.bump(new)
        self.objects[plural][(ns, name)] = new
        return new

    def delete(self, plural, ns, name, options):
        cur = self.get(plural, ns, name)
        pre = (options or {}).get("preconditions") or {}
        if pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]:
            raise self.conflict(plural, name, "Precondition failed: ResourceVersion in precondition: "
                                f'{pre["resourceVersion"]}, ResourceVersion in object meta: '
                                f'{cur["metadata"]["resourceVersion"]}')
        if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
            raise self.conflict(plural, name, "Precondition failed: UID in precondition does not match")
        del self.objects[plural][(ns, name)]
        if plural == "namespaces":
            for p in ("sandboxes", "configmaps"):
                for key in [k for k in self.objects[p] if k[0] == name]:
                    del self.objects[p][key]
            cur = copy.deepcopy(cur)
            cur["status"] = {"phase": "Terminating"}
            cur["metadata"]["deletionTimestamp"] = self.now()
        self.rv += 1
        return cur

    def list(self, plural, ns, query):
        preds = parse_selector(query.get("labelSelector", [""])[0])
        keys = sorted((k for k in self.objects[plural] if ns is None or k[0] == ns), key=lambda k: (k[0] or "", k[1]))
        items = [self.objects[plural][k] for k in keys
                 if all(p(self.objects[plural][k]["metadata"].get("labels") or {}) for p in preds)]
        start = 0
        if query.get("continue", [""])[0]:
            try:
                start = int(json.loads(base64.urlsafe_b64decode(query["continue"][0]))["start"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, "BadRequest", "invalid continue token")
        limit = int(query.get("limit", ["0"])[0] or 0)
        if self.max_page > 0:  # real servers may return fewer items than asked for, too
            limit = min(limit, self.max_page) if limit > 0 else self.max_page
        page = items[start:start + limit] if limit > 0 else items[start:]
        meta = {"resourceVersion": str(self.rv)}
        if limit > 0 and start + limit < len(items):
            meta["continue"] = base64.urlsafe_b64encode(json.dumps({"start": start + limit}).encode()).decode()
        return {"kind": KINDS[plural] + "List", "apiVersion": API_VERSION[plural], "metadata": meta,
                "items": [{k: v for k, v in i.items() if k not in ("kind", "apiVersion")} for i in page]}

    def take_injection(self, method, path):
        for inj in self.injections:
            if inj["method"] == method and inj["path"] == path and inj["times"] > 0:
                inj["times"] -= 1
                return inj
        return None

    def dump(self):
        return {plural: [copy.deepcopy(o) for _, o in sorted(objs.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))]
                for plural, objs in self.objects.items()}

    def mutate(self, path, mutation):
        m = route(path)
        if not m or m.group("name") is None or m.group("sub") is not None:
            return
        ns, plural, name = m.group("ns"), m.group("plural"), m.group("name")
        if plural == "namespaces":
            ns = None
        obj = self.objects[plural].get((ns, name))
        if obj is None:
            return
        for field in ("annotations", "labels"):
            if field in mutation:
                obj["metadata"].setdefault(field, {}).update(mutation[field])
        self.bump(obj)


# ---- HTTP

ROUTE = re.compile(r"^(?:/api/v1(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>configmaps|namespaces)"
                   r"|/apis/agents\.x-k8s\.io/v1alpha1(?:/namespaces/(?P<sns>[^/]+))?/(?P<splural>sandboxes))"
                   r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?$")


class Route:
    """ROUTE's match with the core and the custom resource alternatives folded together."""

    def __init__(self, m):
        self.m = m

    def group(self, g):
        if g == "ns":
            return self.m.group("ns") or self.m.group("sns")
        if g == "plural":
            return self.m.group("plural") or self.m.group("splural")
        return self.m.group(g)


def route(path):
    m = ROUTE.match(path)
    return Route(m) if m else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-kube-apiserver/1"

    def log_message(self, fmt, *args):
        pass

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        log = self.server.request_log
        if log is not None:  # before the reply, so a client that got the reply finds the line
            url = urlsplit(self.path)
            with self.server.log_lock, open(log, "a") as f:
                f.write(json.dumps({"method": self.command, "path": url.path, "query": url.query,
                                    "status": code}) + "\n")
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n == 0:
            return None
        raw = self.rfile.read(n)
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "BadRequest", "the body is not JSON")

    def handle_any(self):
        try:
            body = self.read_body()  # first, so an error reply leaves the connection usable
            if self.headers.get("Authorization") != "Bearer " + self.server.token:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            url = urlsplit(self.path)
            store = self.server.store
            if self.server.latency > 0 and not url.path.startswith("/_fake/"):
                time.sleep(self.server.latency)
            with store.lock:
                if url.path == "/_fake/inject" and self.command == "POST":
                    store.injections.append(dict(body, times=body.get("times", 1)))
                    return self.send_json(200, {"ok": True})
                inj = store.take_injection(self.command, url.path)
                if inj is not None and "status" in inj:
                    raise ApiError(inj["status"], inj.get("reason") or ("InternalError" if inj["status"] >= 500
                                                                        else "Injected"), "injected failure")
                if inj is not None and "mutate" in inj:
                    store.mutate(url.path, inj["mutate"])
                code, out = self.dispatch(store, url, body)
            self.send_json(code, out)
        except ApiError as e:
            self.send_json(e.code, e.status())

    def dispatch(self, store, url, body):
        if url.path == "/_fake/dump" and self.command == "GET":
            return 200, store.dump()
        m = route(url.path)
        if not m:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns, plural, name, sub = m.group("ns"), m.group("plural"), m.group("name"), m.group("sub")
        if plural == "namespaces":
            if ns is not None:  # /api/v1/namespaces/<x>/namespaces is not a thing
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            ns = None
        elif ns is None and name is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        query = parse_qs(url.query)
        verb = self.command
        if name is None:
            if verb == "GET":
                return 200, store.list(plural, ns, query)
            if verb == "POST" and (ns is not None or plural == "namespaces"):
                return 201, store.create(plural, ns, body)
        elif sub == "status" and plural == "sandboxes":
            if verb == "GET":
                return 200, store.get(plural, ns, name)
            if verb == "PUT":
                return 200, store.replace(plural, ns, name, body, "status")
        elif sub is None:
            if verb == "GET":
                return 200, store.get(plural, ns, name)
            if verb == "PUT":
                return 200, store.replace(plural, ns, name, body)
            if verb == "DELETE":
                return 200, store.delete(plural, ns, name, body)
        raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported here")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log")
    ap.add_argument("--pending", action="store_true", help="leave new sandboxes not Ready (DependenciesNotReady)")
    ap.add_argument("--max-page", type=int, default=0, help="at most this many items per list page")
    ap.add_argument("--latency-ms", type=int, default=0, help="delay every API request by this much")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.token = open(args.token_file).read().strip()
    server.store = Store(args.pending, args.max_page)
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
