#!/usr/bin/python3
"""Interoperability suite for Gantry's gRPC server, driven by Debian's python3-grpcio.

Run: /usr/bin/python3 test_grpc.py <group> [unittest args]
Groups: unary, streaming, errors, limits, tls, reflection, health, admin, shutdown, hostile, validate (or "all").

Environment (set by tests/interop/CMakeLists.txt):
  GANTRY_TESTSERVER   path of gantry-grpc-testserver
  GANTRY_PROTO_DIR    api/proto
  GANTRY_GRPC_PROTO_DIR server/grpc/proto (health, reflection)
  GANTRY_PROTOC       Debian's protoc (stubs are generated at test time, never committed)
  GANTRY_INTEROP_WORK scratch directory inside the build tree

Every test starts its own server on 127.0.0.1 with port 0, learns the ports from --port-file
(polled with a deadline), and stops it with SIGTERM at the end; a server that does not exit in
time is killed and the test fails. The server's exit status must be 0: under ASan that includes
LeakSanitizer's check at exit, so every group is also a leak check.
"""

import glob
import os
import queue
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import grpc

SERVER_BIN = os.environ.get("GANTRY_TESTSERVER", "")
PROTO_DIR = os.environ.get("GANTRY_PROTO_DIR", "")
# The transport's own protos (health, reflection) live in server/grpc/proto.
GRPC_PROTO_DIR = os.environ.get("GANTRY_GRPC_PROTO_DIR", "")
PROTOC = os.environ.get("GANTRY_PROTOC", "protoc")
WORK_ROOT = os.environ.get("GANTRY_INTEROP_WORK", tempfile.gettempdir())

# Generous bounds: a loaded 2-core machine under ASan is slow. Nothing waits this long on success.
# Under AddressSanitizer freed memory sits in a quarantine (256 MB by default) and the allocator
# keeps it: RSS says nothing about the server's own buffering. Servers that tests measure get a
# small quarantine and return freed pages quickly, and RSS bounds are scaled by ASAN_RSS_FACTOR
# (ASan's redzones roughly double what every allocation occupies).
def _is_asan(path):
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


ASAN = _is_asan(SERVER_BIN)
ASAN_RSS_FACTOR = 3 if ASAN else 1
ASAN_RSS_OPTIONS = "quarantine_size_mb=4:allocator_release_to_os_interval_ms=50"

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
RPC_TIMEOUT = 30.0

WORK = tempfile.mkdtemp(prefix="grpc-interop-", dir=WORK_ROOT)


def _gen_stubs():
    out = os.path.join(WORK, "py")
    os.makedirs(out)
    for d in (PROTO_DIR, GRPC_PROTO_DIR):
        protos = [os.path.relpath(p, d) for p in glob.glob(os.path.join(d, "**", "*.proto"), recursive=True)]
        subprocess.run([PROTOC, "-I" + d, "--python_out=" + out] + protos, check=True, timeout=120)
    sys.path.insert(0, out)


_gen_stubs()

from gantry.testing.v1 import echo_pb2  # noqa: E402
from gantry.v1 import api_keys_pb2, audit_pb2, cluster_pb2, namespaces_pb2, policies_pb2  # noqa: E402,F401
from gantry.v1 import principals_pb2, providers_pb2, quotas_pb2, sandboxes_pb2, usage_pb2  # noqa: E402,F401
from gantry.v1 import meta_pb2  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: E402


def _load_generated(name, relpath):
    # The generated grpc/health/v1/... modules would collide with grpcio's own `grpc` package,
    # so they are loaded by path under a private name (they import nothing else).
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, os.path.join(WORK, "py", relpath))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


health_pb2 = _load_generated("gantry_test_health_pb2", "grpc/health/v1/health_pb2.py")
reflection_pb2 = _load_generated("gantry_test_reflection_pb2", "grpc/reflection/v1/reflection_pb2.py")
reflection_v1alpha_pb2 = _load_generated("gantry_test_reflection_v1alpha_pb2",
                                         "grpc/reflection/v1alpha/reflection_pb2.py")

GANTRY_MODULES = [api_keys_pb2, audit_pb2, cluster_pb2, namespaces_pb2, policies_pb2, principals_pb2,
                  providers_pb2, quotas_pb2, sandboxes_pb2, usage_pb2]


# --- certificates (openssl CLI, once per process) ---

def _openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, timeout=60, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def _make_certs():
    d = os.path.join(WORK, "pki")
    os.makedirs(d)
    p = lambda n: os.path.join(d, n)  # noqa: E731
    for ca in ("ca", "evilca"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                 "-subj", "/CN=gantry test " + ca, "-keyout", p(ca + ".key"), "-out", p(ca + ".crt"))
    with open(p("server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    with open(p("client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for name, ca, ext in (("server", "ca", "server.ext"), ("client", "ca", "client.ext"),
                          ("evilclient", "evilca", "client.ext")):
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
                 "/CN=" + name, "-keyout", p(name + ".key"), "-out", p(name + ".csr"))
        _openssl("x509", "-req", "-in", p(name + ".csr"), "-CA", p(ca + ".crt"), "-CAkey", p(ca + ".key"),
                 "-CAcreateserial", "-days", "2", "-extfile", p(ext), "-out", p(name + ".crt"))
    return {n: p(n) for n in os.listdir(d)}


CERTS = None


def certs():
    global CERTS
    if CERTS is None:
        CERTS = _make_certs()
    return CERTS


def read(path):
    with open(path, "rb") as f:
        return f.read()


# --- the server under test ---

class Server:
    def __init__(self, *extra, tls=True, client_ca=False):
        self.tls = tls
        self.dir = tempfile.mkdtemp(prefix="srv-", dir=WORK)
        self.port_file = os.path.join(self.dir, "ports")
        self.log_path = os.path.join(self.dir, "server.log")
        args = [SERVER_BIN, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--port-file", self.port_file]
        if tls:
            c = certs()
            args += ["--cert", c["server.crt"], "--key", c["server.key"]]
            if client_ca:
                args += ["--client-ca", c["ca.crt"]]
        else:
            args += ["--h2c"]
        args += list(extra)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        if ASAN:
            env["ASAN_OPTIONS"] += ":" + ASAN_RSS_OPTIONS
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None:
                raise AssertionError("server exited early (%s):\n%s" % (self.proc.returncode, self.tail()))
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError("server did not start in time:\n" + self.tail())
            time.sleep(0.02)
        ports = dict(line.split("=") for line in read(self.port_file).decode().split())
        self.port = int(ports["grpc"])
        self.admin_port = int(ports["admin"])
        self.target = "127.0.0.1:%d" % self.port
        self.channels = []
        self.signalled = False

    def tail(self, n=60):
        if not self.log.closed:
            self.log.flush()
        try:
            lines = read(self.log_path).decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def channel(self, client_cert=None, options=()):
        opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        opts += list(options)
        if self.tls:
            c = certs()
            key = read(c[client_cert + ".key"]) if client_cert else None
            crt = read(c[client_cert + ".crt"]) if client_cert else None
            creds = grpc.ssl_channel_credentials(read(c["ca.crt"]), key, crt)
            ch = grpc.secure_channel(self.target, creds, options=opts)
        else:
            ch = grpc.insecure_channel(self.target, options=opts)
        self.channels.append(ch)
        return ch

    def admin_get(self, path, method="GET"):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.admin_port, path), method=method)
        try:
            with urllib.request.urlopen(req, timeout=RPC_TIMEOUT) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metric(self, name, **labels):
        """Sum of the samples of @name whose labels include @labels (0 if none)."""
        _, body = self.admin_get("/metrics")
        total = 0.0
        for line in body.splitlines():
            if line.startswith("#"):
                continue
            m = re.match(r'^([a-zA-Z_:]+)(\{([^}]*)\})? (\S+)$', line)
            if not m or m.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(4))
        return total

    def stop(self, sig=signal.SIGTERM):
        """SIGTERM and wait; returns the exit status (killing and failing on timeout)."""
        for ch in self.channels:
            ch.close()
        self.channels = []
        if self.proc.poll() is None and not self.signalled:
            self.signal(sig)
        try:
            rc = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("server did not exit within %ss of SIGTERM:\n%s" % (STOP_TIMEOUT, self.tail()))
        self.log.close()
        return rc

    def signal(self, sig=signal.SIGTERM):
        self.signalled = True
        self.proc.send_signal(sig)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if not self.log.closed:
            self.log.close()


def wait_until(cond, timeout=RPC_TIMEOUT, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


def unary(ch, path, req_cls, resp_cls):
    return ch.unary_unary(path, request_serializer=req_cls.SerializeToString,
                          response_deserializer=resp_cls.FromString)


def echo(ch, method):
    kinds = {
        "Unary": ("uu", echo_pb2.EchoRequest, echo_pb2.EchoResponse),
        "Fail": ("uu", echo_pb2.FailRequest, echo_pb2.EchoResponse),
        "Delay": ("uu", echo_pb2.DelayRequest, echo_pb2.EchoResponse),
        "Size": ("uu", echo_pb2.SizeRequest, echo_pb2.EchoResponse),
        "Context": ("uu", echo_pb2.ContextRequest, echo_pb2.ContextResponse),
        "ServerStream": ("us", echo_pb2.StreamRequest, echo_pb2.EchoResponse),
        "ClientStream": ("su", echo_pb2.EchoRequest, echo_pb2.EchoResponse),
        "Bidi": ("ss", echo_pb2.EchoRequest, echo_pb2.EchoResponse),
    }
    kind, req, resp = kinds[method]
    fn = {"uu": ch.unary_unary, "us": ch.unary_stream, "su": ch.stream_unary, "ss": ch.stream_stream}[kind]
    return fn("/gantry.testing.v1.Echo/" + method, request_serializer=req.SerializeToString,
              response_deserializer=resp.FromString)


def grpc_frame(msg_bytes):
    return struct.pack(">BI", 0, len(msg_bytes)) + msg_bytes


def nghttp(server, path, body, headers, timeout=RPC_TIMEOUT):
    """A raw HTTP/2 request with nghttp (nghttp2-client); returns its verbose output."""
    body_file = os.path.join(server.dir, "body-%d" % time.monotonic_ns())
    with open(body_file, "wb") as f:
        f.write(body)
    scheme = "https" if server.tls else "http"
    args = ["nghttp", "-v", "-n", "-t", str(int(timeout)), "-d", body_file]
    for h in headers:
        args += ["-H", h]
    args.append("%s://127.0.0.1:%d%s" % (scheme, server.port, path))
    r = subprocess.run(args, capture_output=True, timeout=timeout + 10)
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def h2_frame(t, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([t, flags]) + struct.pack(">I", sid) + payload


def raw_h2_call(port, path, request):
    """Open a plaintext HTTP/2 connection by hand and send one complete gRPC request on stream 1
    (HPACK literals without indexing). Returns the socket; the caller reads (or does not)."""
    def lit(n, v):
        n, v = n.encode(), v.encode()
        return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v

    hdrs = (lit(":method", "POST") + lit(":scheme", "http") + lit(":path", path) + lit(":authority", "x") +
            lit("content-type", "application/grpc") + lit("te", "trailers"))
    s = socket.create_connection(("127.0.0.1", port), timeout=RPC_TIMEOUT)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b"") + h2_frame(1, 4, 1, hdrs) +
              h2_frame(0, 1, 1, grpc_frame(request)))
    return s


def read_h2_frames(s):
    """Yield (type, flags, stream_id, payload) until EOF."""
    data = b""
    while True:
        while len(data) >= 9:
            n = int.from_bytes(data[:3], "big")
            if len(data) < 9 + n:
                break
            yield data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9:9 + n]
            data = data[9 + n:]
        chunk = s.recv(65536)
        if not chunk:
            return
        data += chunk


# --- hostile clients: helpers ---

def proc_status_kb(pid, field):
    """A size from /proc/PID/status in KiB (VmRSS: resident now, VmHWM: the peak)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for pid %d" % (field, pid))


def rss_bound(kib):
    """An RSS bound stated for the plain build, scaled for ASan builds (see ASAN_RSS_FACTOR)."""
    return kib * ASAN_RSS_FACTOR


def settle_rss(pid, base_kb, margin_kb, timeout=5.0):
    """Poll VmRSS until it is within @margin_kb of @base_kb (malloc_trim runs 100 ms after large
    requests are freed) or @timeout passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        rss = proc_status_kb(pid, "VmRSS")
        if rss <= base_kb + margin_kb or time.monotonic() > deadline:
            return rss
        time.sleep(0.05)


def reset_peak_rss(pid):
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


def hpack_int(value, prefix_bits, flags):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([flags | value])
    out = [flags | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name, value, indexed=False):
    """A literal header field with a new name: without indexing, or with incremental indexing
    (it then enters the dynamic table as entry 62)."""
    name, value = name.encode(), value.encode() if isinstance(value, str) else value
    return (b"\x40" if indexed else b"\x00") + hpack_int(len(name), 7, 0) + name + hpack_int(len(value), 7, 0) + value


def grpc_request_headers(path, extra=b""):
    return (hpack_literal(":method", "POST") + hpack_literal(":scheme", "http") + hpack_literal(":path", path) +
            hpack_literal(":authority", "x") + hpack_literal("content-type", "application/grpc") +
            hpack_literal("te", "trailers") + extra)


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def read_frames_until_eof(s, deadline):
    """Every frame until the server closes the connection or @deadline (monotonic) passes;
    returns (frames, closed)."""
    frames, data = [], b""
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return frames, True
        if not chunk:
            return frames, True
        data += chunk
        while len(data) >= 9:
            n = int.from_bytes(data[:3], "big")
            if len(data) < 9 + n:
                break
            frames.append((data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9:9 + n]))
            data = data[9 + n:]
    return frames, False


class LatencyProbe:
    """A legitimate client calling Echo/Unary in a loop on its own channel (with a credential,
    so its connection counts as established), recording each call's latency."""

    def __init__(self, server, timeout=10.0):
        self.ch = server.channel()
        self.call = echo(self.ch, "Unary")
        self.timeout = timeout
        self.samples, self.errors = [], []
        self.stop_flag = threading.Event()
        self.thread = None
        self.once()  # connected and established before the attack starts

    def once(self):
        t0 = time.monotonic()
        self.call(echo_pb2.EchoRequest(message="probe"), metadata=(("authorization", "Bearer probe"),),
                  timeout=self.timeout)
        return time.monotonic() - t0

    def _run(self):
        while not self.stop_flag.is_set():
            try:
                self.samples.append(self.once())
            except grpc.RpcError as e:
                self.errors.append(e.code())
            time.sleep(0.01)

    def start(self):
        self.samples, self.errors = [], []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_flag.set()
        self.thread.join()
        self.stop_flag.clear()
        s = sorted(self.samples)
        return {"n": len(s), "errors": self.errors, "median": s[len(s) // 2] if s else None,
                "max": s[-1] if s else None}


class ServerCase(unittest.TestCase):
    """One server per test class; its clean exit is checked at teardown."""
    server_args = ()
    tls = True
    client_ca = False

    @classmethod
    def setUpClass(cls):
        cls.server = Server(*cls.server_args, tls=cls.tls, client_ca=cls.client_ca)

    @classmethod
    def tearDownClass(cls):
        # Connection-leak check: once every client channel is closed, the server must hold no
        # connection and no stream (then exit 0 with every libuv handle closed, and under ASan
        # with no heap leak).
        for ch in cls.server.channels:
            ch.close()
        cls.server.channels = []
        try:
            wait_until(lambda: cls.server.metric("gantry_grpc_server_connections") == 0 and
                       cls.server.metric("gantry_grpc_server_streams") == 0, what="connections to close")
        except AssertionError:
            cls.server.kill()
            raise
        rc = cls.server.stop()
        if rc != 0:
            raise AssertionError("server exited with %s (leak or error at exit):\n%s" % (rc, cls.server.tail()))

    def setUp(self):
        self.ch = self.server.channel()


# --- unary ---

class UnaryTests:
    def test_echo_small_and_large(self):
        call = echo(self.ch, "Unary")
        r = call(echo_pb2.EchoRequest(message="hi", payload=b"x"), timeout=RPC_TIMEOUT)
        self.assertEqual((r.message, r.payload), ("hi", b"x"))
        big = os.urandom(3 << 20)  # spans many DATA frames and flow-control windows
        r = call(echo_pb2.EchoRequest(message="big", payload=big), timeout=RPC_TIMEOUT)
        self.assertEqual(r.payload, big)
        r = call(echo_pb2.EchoRequest(), timeout=RPC_TIMEOUT)  # empty message: a zero-length frame
        self.assertEqual(r.message, "")

    def test_every_gantry_method_is_unimplemented_for_now(self):
        n = 0
        for mod in GANTRY_MODULES:
            for svc in mod.DESCRIPTOR.services_by_name.values():
                for m in svc.methods:
                    path = "/%s/%s" % (svc.full_name, m.name)
                    fn = self.ch.unary_stream(path) if m.server_streaming else self.ch.unary_unary(path)
                    with self.assertRaises(grpc.RpcError) as cm:
                        r = fn(b"", timeout=RPC_TIMEOUT)
                        if m.server_streaming:
                            list(r)
                    self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED, path)
                    self.assertIn("not implemented", cm.exception.details())
                    n += 1
        self.assertGreater(n, 50)

    def test_unknown_method_and_service(self):
        for path in ("/gantry.testing.v1.Echo/Nope", "/no.such.Service/Call", "/"):
            with self.assertRaises(grpc.RpcError) as cm:
                self.ch.unary_unary(path)(b"", timeout=RPC_TIMEOUT)
            self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

    def test_status_codes_and_percent_encoded_messages(self):
        call = echo(self.ch, "Fail")
        for code in grpc.StatusCode:
            if code == grpc.StatusCode.OK:
                continue
            msg = "failed: %s 100%% ✓ \n tab\t end" % code.name
            with self.assertRaises(grpc.RpcError) as cm:
                call(echo_pb2.FailRequest(code=code.value[0], message=msg), timeout=RPC_TIMEOUT)
            self.assertEqual(cm.exception.code(), code)
            self.assertEqual(cm.exception.details(), msg)

    def test_request_context(self):
        call = echo(self.ch, "Context")
        md = (("authorization", "Bearer gantry_abc.secret"), ("x-gantry-request", "42"),
              ("trace-bin", b"\x00\x01\x02"))
        r = call(echo_pb2.ContextRequest(), metadata=md, timeout=10)
        self.assertEqual(r.authorization, "Bearer gantry_abc.secret")
        self.assertIn("x-gantry-request", r.metadata_keys)
        self.assertIn("trace-bin", r.metadata_keys)
        self.assertTrue(r.peer.startswith("127.0.0.1:"), r.peer)
        # grpcio rounds the timeout it sends up a little; the server rounds up to whole ms.
        self.assertTrue(0 < r.deadline_remaining_ms <= 11000, r.deadline_remaining_ms)
        self.assertEqual(r.tls, self.tls)
        r = call(echo_pb2.ContextRequest())
        self.assertEqual(r.deadline_remaining_ms, -1)

    def test_async_completion_from_another_thread(self):
        call = echo(self.ch, "Delay")
        futs = [call.future(echo_pb2.DelayRequest(delay_ms=50 + i % 7 * 10, message=str(i)), timeout=RPC_TIMEOUT)
                for i in range(50)]
        self.assertEqual([f.result().message for f in futs], [str(i) for i in range(50)])

    def test_many_concurrent_calls(self):
        call = echo(self.ch, "Unary")
        futs = [call.future(echo_pb2.EchoRequest(message=str(i)), timeout=RPC_TIMEOUT) for i in range(500)]
        self.assertEqual([f.result().message for f in futs], [str(i) for i in range(500)])
        chans = [self.server.channel() for _ in range(8)]
        futs = [echo(c, "Unary").future(echo_pb2.EchoRequest(message="c"), timeout=RPC_TIMEOUT) for c in chans]
        self.assertTrue(all(f.result().message == "c" for f in futs))


class UnaryTLS(UnaryTests, ServerCase):
    tls = True


class UnaryH2C(UnaryTests, ServerCase):
    tls = False


# --- streaming ---

class StreamingTests(ServerCase):
    tls = False

    def test_server_stream(self):
        call = echo(self.ch, "ServerStream")
        msgs = list(call(echo_pb2.StreamRequest(message="s", count=2000, payload_size=4096), timeout=RPC_TIMEOUT))
        self.assertEqual([m.index for m in msgs], list(range(2000)))
        self.assertTrue(all(len(m.payload) == 4096 for m in msgs))
        msgs = list(call(echo_pb2.StreamRequest(count=5, interval_ms=10), timeout=RPC_TIMEOUT))
        self.assertEqual(len(msgs), 5)
        self.assertEqual(list(call(echo_pb2.StreamRequest(count=0), timeout=RPC_TIMEOUT)), [])

    def test_server_stream_large_volume_with_backpressure(self):
        # 64 MiB: the C server produces faster than the Python client reads, so it passes its
        # high-water mark and must wait for on_drain (checked on the server through a full stream).
        it = echo(self.ch, "ServerStream")(echo_pb2.StreamRequest(count=256, payload_size=256 << 10),
                                            timeout=RPC_TIMEOUT * 2)
        first = next(it)
        rest = list(it)
        self.assertEqual(first.index, 0)
        self.assertEqual(len(rest), 255)

    def test_server_stream_error_after_messages(self):
        it = echo(self.ch, "ServerStream")(echo_pb2.StreamRequest(count=3, fail_after=True), timeout=RPC_TIMEOUT)
        got = []
        with self.assertRaises(grpc.RpcError) as cm:
            for m in it:
                got.append(m.index)
        self.assertEqual(got, [0, 1, 2])
        self.assertEqual(cm.exception.code(), grpc.StatusCode.ABORTED)

    def test_cancel_mid_stream(self):
        call = echo(self.ch, "ServerStream")
        it = call(echo_pb2.StreamRequest(count=1000000, interval_ms=1), timeout=RPC_TIMEOUT)
        next(it)
        it.cancel()
        with self.assertRaises(grpc.RpcError) as cm:
            list(it)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.CANCELLED)
        wait_until(lambda: self.server.metric("gantry_grpc_server_handled_total", grpc_method="ServerStream",
                                              grpc_code="CANCELLED") >= 1, what="server-side cancel")
        wait_until(lambda: self.server.metric("gantry_grpc_server_streams") == 0, what="streams to close")
        r = echo(self.ch, "Unary")(echo_pb2.EchoRequest(message="after"), timeout=RPC_TIMEOUT)
        self.assertEqual(r.message, "after")

    def test_server_streams_sent_from_other_threads(self):
        # 6 concurrent streams of 40,000 messages, each sent by a thread of the server's own through
        # grpc_call_send_async while the loop thread sends and drops references; two of them are
        # cancelled part way. A lost update of the call's reference count (it was a plain int)
        # frees a call too early (AddressSanitizer's use after free) or never (the leak check of
        # the server's exit at teardown, and the open-calls gauge below).
        call = echo(self.ch, "ServerStream")
        its = [call(echo_pb2.StreamRequest(message=str(i), count=40000, from_thread=True), timeout=RPC_TIMEOUT * 4)
               for i in range(6)]
        results = [None] * len(its)

        def drain(i):
            got = 0
            try:
                for _ in its[i]:
                    got += 1
                    if i < 2 and got == 5000:
                        its[i].cancel()
            except grpc.RpcError as e:
                results[i] = (e.code(), got)
                return
            results[i] = (grpc.StatusCode.OK, got)
        threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(its))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results[2:], [(grpc.StatusCode.OK, 40000)] * 4)
        self.assertEqual([r[0] for r in results[:2]], [grpc.StatusCode.CANCELLED] * 2)
        wait_until(lambda: self.server.metric("gantry_grpc_server_streams") == 0, what="streams to close")
        with self.assertRaises(grpc.RpcError) as cm:
            next(call(echo_pb2.StreamRequest(count=1, from_thread=True, payload_size=1), timeout=RPC_TIMEOUT))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_sending_thread_bounded_by_unsent(self):
        # A thread streaming with grpc_call_send_async waits while grpc_call_unsent is above its
        # bound (256 KiB), so a client that stops reading for a second stalls it instead of making
        # the server buffer the whole 32 MB stream; each message reports the unsent bytes seen.
        # Without the bound the thread queues everything at once and the values reach megabytes.
        call = echo(self.ch, "ServerStream")
        bound, size, count = 256 << 10, 16 << 10, 2000
        it = call(echo_pb2.StreamRequest(count=count, from_thread=True, payload_size=size, max_unsent=bound),
                  timeout=RPC_TIMEOUT * 4)
        def rss_kb():
            with open("/proc/%d/status" % self.server.proc.pid) as f:
                return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
        seen = [int(next(it).message)]
        rss0 = rss_kb()
        time.sleep(1.0)  # a slow reader: the sender must stall meanwhile, which the values show
        grown = rss_kb() - rss0
        n = 1
        for r in it:
            self.assertEqual(len(r.payload), size)
            seen.append(int(r.message))
            n += 1
        self.assertEqual(n, count)
        self.assertLessEqual(max(seen), bound)
        self.assertGreater(max(seen), size)  # the bound was reached: the reader was slower
        self.assertLess(grown, 8 << 10, "the server buffered %d KiB for a client that did not read" % grown)
        print("grpc_call_unsent: 2000 x 16 KiB from a thread, at most %d bytes unsent (bound %d); server RSS "
              "grew %d KiB while the client did not read" % (max(seen), bound, grown))

    def test_client_stream(self):
        call = echo(self.ch, "ClientStream")
        r = call(iter([echo_pb2.EchoRequest(payload=b"y" * 1000) for _ in range(300)]), timeout=RPC_TIMEOUT)
        self.assertEqual(r.index, 300)
        self.assertIn("300000 payload bytes", r.message)
        r = call(iter([]), timeout=RPC_TIMEOUT)
        self.assertEqual(r.index, 0)

    def test_bidi_ping_pong(self):
        q = queue.Queue()

        def gen():
            while True:
                item = q.get(timeout=RPC_TIMEOUT)
                if item is None:
                    return
                yield item

        it = echo(self.ch, "Bidi")(gen(), timeout=RPC_TIMEOUT)
        for i in range(20):
            q.put(echo_pb2.EchoRequest(message="m%d" % i))
            r = next(it)  # the server answers each message before the next is sent
            self.assertEqual((r.message, r.index), ("m%d" % i, i))
        q.put(None)
        self.assertEqual(list(it), [])

    def test_bidi_input_paused_by_the_handler(self):
        # The handler pauses the call's input for 1 s (grpc_call_pause_input) and resumes it from a
        # timer (grpc_call_resume_input). Meanwhile the client streams 4 MiB: nothing of it is
        # delivered (no echo comes back before the pause ends), the server holds at most about the
        # stream's window, and afterwards every message arrives, in order.
        q = queue.Queue()

        def gen():
            while True:
                item = q.get(timeout=RPC_TIMEOUT)
                if item is None:
                    return
                yield item

        def rss_kb():
            with open("/proc/%d/status" % self.server.proc.pid) as f:
                return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
        it = echo(self.ch, "Bidi")(gen(), timeout=RPC_TIMEOUT * 2)
        q.put(echo_pb2.EchoRequest(message="pause:1000"))
        self.assertEqual(next(it).message, "pause:1000")
        t0, rss0 = time.monotonic(), rss_kb()
        for i in range(64):
            q.put(echo_pb2.EchoRequest(message="m%d" % i, payload=b"z" * (64 << 10)))
        q.put(None)
        time.sleep(0.5)
        grown = rss_kb() - rss0
        first = next(it)
        waited = time.monotonic() - t0
        rest = list(it)
        self.assertGreaterEqual(waited, 0.9, "a message was delivered while the input was paused")
        self.assertEqual([r.message for r in [first] + rest], ["m%d" % i for i in range(64)])
        self.assertLess(grown, 4 << 10, "the server held %d KiB of paused input" % grown)
        print("paused bidi input: first echo after %.2f s, server RSS grew %d KiB while paused" % (waited, grown))


# --- errors ---

class ErrorTests(ServerCase):
    tls = False

    def test_non_grpc_content_type_is_415(self):
        out = nghttp(self.server, "/gantry.testing.v1.Echo/Unary", b"hello",
                     ["content-type: text/plain", "te: trailers"])
        self.assertRegex(out, r":status: 415")

    def test_trailers_only_error(self):
        out = nghttp(self.server, "/gantry.testing.v1.Echo/Fail",
                     grpc_frame(echo_pb2.FailRequest(code=5, message="no such thing").SerializeToString()),
                     ["content-type: application/grpc", "te: trailers"])
        # One HEADERS frame carrying :status, grpc-status and grpc-message, ending the stream.
        self.assertRegex(out, r"recv HEADERS frame <[^>]*flags=0x05")
        self.assertIn("grpc-status: 5", out)
        self.assertIn("grpc-message: no such thing", out)
        self.assertNotIn("recv DATA frame", out)

    def test_server_side_deadline(self):
        out = nghttp(self.server, "/gantry.testing.v1.Echo/Delay",
                     grpc_frame(echo_pb2.DelayRequest(delay_ms=5000).SerializeToString()),
                     ["content-type: application/grpc", "te: trailers", "grpc-timeout: 200m"])
        self.assertIn("grpc-status: 4", out)
        self.assertIn("grpc-message: deadline exceeded", out)

    def test_client_deadline_exceeded(self):
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            echo(self.ch, "Delay")(echo_pb2.DelayRequest(delay_ms=3000), timeout=0.3)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - t0, 2.9)
        # The late answer from the worker thread is dropped; the server stays healthy.
        r = echo(self.ch, "Unary")(echo_pb2.EchoRequest(message="ok"), timeout=RPC_TIMEOUT)
        self.assertEqual(r.message, "ok")

    def test_malformed_timeout(self):
        out = nghttp(self.server, "/gantry.testing.v1.Echo/Unary", grpc_frame(b""),
                     ["content-type: application/grpc", "te: trailers", "grpc-timeout: soon"])
        self.assertIn("grpc-status: 13", out)

    def test_whitespace_around_header_values_is_trimmed(self):
        # RFC 9110: optional whitespace around a field value is not part of it. A trailing space
        # after a bearer token used to end the call with INTERNAL (nghttp2 reset the stream).
        r = echo(self.ch, "Context")(echo_pb2.ContextRequest(),
                                     metadata=(("authorization", " Bearer tok  "), ("x-pad", "v ")),
                                     timeout=RPC_TIMEOUT)
        self.assertEqual(r.authorization, "Bearer tok")
        self.assertIn("x-pad", r.metadata_keys)

    def test_undecodable_message_is_internal(self):
        with self.assertRaises(grpc.RpcError) as cm:
            self.ch.unary_unary("/gantry.testing.v1.Echo/Unary")(b"\xff\xff\xff\xff", timeout=RPC_TIMEOUT)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INTERNAL)

    def test_two_messages_on_unary(self):
        body = grpc_frame(b"") + grpc_frame(b"")
        out = nghttp(self.server, "/gantry.testing.v1.Echo/Unary", body,
                     ["content-type: application/grpc", "te: trailers"])
        self.assertIn("grpc-status: 13", out)

    def test_truncated_message(self):
        out = nghttp(self.server, "/gantry.testing.v1.Echo/Unary", struct.pack(">BI", 0, 100) + b"abc",
                     ["content-type: application/grpc", "te: trailers"])
        self.assertIn("grpc-status: 13", out)
        self.assertIn("ended inside a message", out)

    def test_compressed_message_refused(self):
        out = nghttp(self.server, "/gantry.testing.v1.Echo/Unary", struct.pack(">BI", 1, 0),
                     ["content-type: application/grpc", "te: trailers", "grpc-encoding: gzip"])
        self.assertIn("grpc-status: 12", out)

    def test_garbage_connection_is_closed_and_server_survives(self):
        for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(512),
                     os.urandom(4096)):
            s = socket.create_connection(("127.0.0.1", self.server.port), timeout=RPC_TIMEOUT)
            s.sendall(junk)
            try:
                while s.recv(65536):
                    pass
            except (ConnectionResetError, socket.timeout):
                pass
            s.close()
        r = echo(self.ch, "Unary")(echo_pb2.EchoRequest(message="alive"), timeout=RPC_TIMEOUT)
        self.assertEqual(r.message, "alive")


# --- limits ---

class LimitTests(ServerCase):
    tls = False
    server_args = ("--max-recv-bytes", str(1 << 20), "--max-send-bytes", str(2 << 20), "--max-streams", "4",
                   "--max-header-bytes", "4096", "--idle-timeout-ms", "400", "--keepalive-ms", "200",
                   "--keepalive-timeout-ms", "300")

    def test_oversized_request(self):
        with self.assertRaises(grpc.RpcError) as cm:
            echo(self.ch, "Unary")(echo_pb2.EchoRequest(payload=b"z" * (2 << 20)), timeout=RPC_TIMEOUT)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("larger than max", cm.exception.details())
        r = echo(self.ch, "Unary")(echo_pb2.EchoRequest(payload=b"z" * (1 << 19)), timeout=RPC_TIMEOUT)
        self.assertEqual(len(r.payload), 1 << 19)

    def test_oversized_response(self):
        with self.assertRaises(grpc.RpcError) as cm:
            echo(self.ch, "Size")(echo_pb2.SizeRequest(size=3 << 20), timeout=RPC_TIMEOUT)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("exceeds the limit", cm.exception.details())

    def test_oversized_headers(self):
        out = nghttp(self.server, "/gantry.testing.v1.Echo/Unary", grpc_frame(b""),
                     ["content-type: application/grpc", "te: trailers", "x-big: " + "a" * 6000])
        self.assertIn("grpc-status: 8", out)
        self.assertIn("request headers exceed the limit of 4096 bytes", out)

    def test_concurrent_stream_limit_queues_calls(self):
        call = echo(self.ch, "Delay")
        futs = [call.future(echo_pb2.DelayRequest(delay_ms=300, message=str(i)), timeout=RPC_TIMEOUT)
                for i in range(12)]
        # Sample the server's open-stream gauge while the calls run: never above the limit.
        most = 0
        while not all(f.done() for f in futs):
            most = max(most, self.server.metric("gantry_grpc_server_streams"))
        self.assertEqual(sorted(int(f.result().message) for f in futs), list(range(12)))
        self.assertGreaterEqual(most, 1)
        self.assertLessEqual(most, 4)

    def test_idle_connection_gets_goaway_and_client_reconnects(self):
        ch = self.server.channel()
        echo(ch, "Unary")(echo_pb2.EchoRequest(), timeout=RPC_TIMEOUT)
        before = self.server.metric("gantry_grpc_server_connections_total")
        # The idle timer closes the connection: wait until the server has none open.
        wait_until(lambda: self.server.metric("gantry_grpc_server_connections") == 0, what="idle close")
        r = echo(ch, "Unary")(echo_pb2.EchoRequest(message="again"), timeout=RPC_TIMEOUT)
        self.assertEqual(r.message, "again")
        self.assertGreater(self.server.metric("gantry_grpc_server_connections_total"), before)

    def test_keepalive_closes_a_peer_that_stops_answering(self):
        # A raw HTTP/2 client that starts a long call and then never reads nor acknowledges PINGs.
        before = self.server.metric("gantry_grpc_server_handled_total", grpc_method="Delay", grpc_code="CANCELLED")
        s = raw_h2_call(self.server.port, "/gantry.testing.v1.Echo/Delay",
                        echo_pb2.DelayRequest(delay_ms=3000).SerializeToString())
        wait_until(lambda: self.server.metric("gantry_grpc_server_handled_total", grpc_method="Delay",
                                              grpc_code="CANCELLED") > before, what="keepalive close")
        s.close()

    def test_keepalive_pings_keep_an_active_connection(self):
        # A stream lasting several keepalive intervals: the client acknowledges every PING.
        it = echo(self.ch, "ServerStream")(echo_pb2.StreamRequest(count=10, interval_ms=100), timeout=RPC_TIMEOUT)
        self.assertEqual(len(list(it)), 10)


class ConnectionLimitTests(ServerCase):
    tls = False
    server_args = ("--conn-memory", str(1 << 20), "--max-recv-bytes", str(4 << 20), "--max-connections", "1")

    def test_connection_memory_budget(self):
        # Under the message limit but over the connection's budget for buffered request bytes.
        with self.assertRaises(grpc.RpcError) as cm:
            echo(self.ch, "Unary")(echo_pb2.EchoRequest(payload=b"m" * (2 << 20)), timeout=RPC_TIMEOUT)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("connection memory limit", cm.exception.details())
        r = echo(self.ch, "Unary")(echo_pb2.EchoRequest(payload=b"m" * 1000), timeout=RPC_TIMEOUT)
        self.assertEqual(len(r.payload), 1000)

    def test_max_connections(self):
        # The one connection is established (a call with credentials, answered OK), so a second
        # client is refused rather than admitted by evicting it.
        echo(self.ch, "Unary")(echo_pb2.EchoRequest(), metadata=(("authorization", "Bearer k"),), timeout=RPC_TIMEOUT)
        self.assertEqual(self.server.metric("gantry_grpc_server_connections_established"), 1)
        ch2 = self.server.channel(options=[("grpc.use_local_subchannel_pool", 1)])
        with self.assertRaises(grpc.RpcError) as cm:
            echo(ch2, "Unary")(echo_pb2.EchoRequest(), timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertGreaterEqual(self.server.metric("gantry_grpc_server_connections_rejected_total"), 1)
        echo(self.ch, "Unary")(echo_pb2.EchoRequest(), timeout=RPC_TIMEOUT)


# --- TLS ---

class TLSTests(ServerCase):
    client_ca = True

    def test_tls_without_client_certificate(self):
        r = echo(self.ch, "Context")(echo_pb2.ContextRequest(), timeout=RPC_TIMEOUT)
        self.assertTrue(r.tls)
        self.assertEqual(r.peer_certificate_subject, "")

    def test_mtls_client_certificate_reaches_the_handler(self):
        ch = self.server.channel(client_cert="client")
        r = echo(ch, "Context")(echo_pb2.ContextRequest(), timeout=RPC_TIMEOUT)
        self.assertIn("CN=client", r.peer_certificate_subject)

    def test_untrusted_client_certificate_is_refused(self):
        ch = self.server.channel(client_cert="evilclient")
        with self.assertRaises(grpc.RpcError) as cm:
            echo(ch, "Unary")(echo_pb2.EchoRequest(), timeout=5)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)

    def test_plaintext_client_on_tls_port_fails(self):
        ch = grpc.insecure_channel(self.server.target)
        with self.assertRaises(grpc.RpcError) as cm:
            echo(ch, "Unary")(echo_pb2.EchoRequest(), timeout=5)
        ch.close()
        self.assertIn(cm.exception.code(), (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED))

    def test_alpn_h2_is_required(self):
        ctx = ssl.create_default_context(cafile=certs()["ca.crt"])
        ctx.set_alpn_protocols(["http/1.1"])
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=RPC_TIMEOUT) as raw:
            with self.assertRaises(ssl.SSLError) as cm:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.recv(1)
        self.assertIn("NO APPLICATION PROTOCOL", str(cm.exception).upper().replace("_", " "))

    def test_no_alpn_gets_the_alert(self):
        # A client offering no ALPN at all cannot speak h2 either: the handshake itself fails with
        # the no_application_protocol alert (it used to complete, and the connection was closed
        # afterwards without a word).
        ctx = ssl.create_default_context(cafile=certs()["ca.crt"])
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=RPC_TIMEOUT) as raw:
            with self.assertRaises(ssl.SSLError) as cm:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.recv(1)
        self.assertIn("NO APPLICATION PROTOCOL", str(cm.exception).upper().replace("_", " "))

    def test_h2c_refused_off_loopback(self):
        r = subprocess.run([SERVER_BIN, "--h2c", "--listen", "0.0.0.0:0", "--admin", "off"], capture_output=True,
                           timeout=60)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"only allowed on a loopback address", r.stderr)


# --- reflection ---

def reflect(ch, requests, alpha=False):
    mod = reflection_v1alpha_pb2 if alpha else reflection_pb2
    pkg = "grpc.reflection.v1alpha" if alpha else "grpc.reflection.v1"
    fn = ch.stream_stream("/%s.ServerReflection/ServerReflectionInfo" % pkg,
                          request_serializer=mod.ServerReflectionRequest.SerializeToString,
                          response_deserializer=mod.ServerReflectionResponse.FromString)
    return list(fn(iter([mod.ServerReflectionRequest(**r) for r in requests]), timeout=RPC_TIMEOUT))


class ReflectionTests(ServerCase):
    EXPECTED = {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection", "gantry.testing.v1.Echo"} | {
        "gantry.v1." + s for s in ("Namespaces", "Principals", "ApiKeys", "Sandboxes", "Providers", "Policies", "Egress",
                                   "Quotas", "Usage", "Audit", "Cluster", "Events")}

    EXPECTED = EXPECTED | {"gantry.v1.WarmPools"}  # docs/platform-controller.md, Gantry-owned warm pools

    def test_list_services_v1_and_v1alpha(self):
        for alpha in (False, True):
            (r,) = reflect(self.ch, [{"list_services": ""}], alpha=alpha)
            self.assertEqual({s.name for s in r.list_services_response.service}, self.EXPECTED)

    def pool_for(self, symbol):
        (r,) = reflect(self.ch, [{"file_containing_symbol": symbol}])
        self.assertEqual(r.WhichOneof("message_response"), "file_descriptor_response")
        pool = descriptor_pool.DescriptorPool()
        protos = [descriptor_pb2.FileDescriptorProto.FromString(b)
                  for b in r.file_descriptor_response.file_descriptor_proto]
        added = set()
        while len(added) < len(protos):  # add dependencies first
            for fdp in protos:
                if fdp.name not in added and all(d in added for d in fdp.dependency):
                    pool.Add(fdp)
                    added.add(fdp.name)
        return pool

    def test_descriptors_for_every_gantry_service(self):
        for svc in sorted(s for s in self.EXPECTED if s.startswith("gantry.v1.")):
            pool = self.pool_for(svc)
            sd = pool.FindServiceByName(svc)
            self.assertGreater(len(sd.methods), 0)
        sd = self.pool_for("gantry.v1.Sandboxes").FindServiceByName("gantry.v1.Sandboxes")
        self.assertEqual([m.name for m in sd.methods],
                         ["Create", "Get", "List", "Delete", "Share", "Unshare", "ListSharedWithMe", "Watch", "Logs",
                          "Exec", "PortForward"])
        self.assertTrue(sd.methods_by_name["Watch"].server_streaming)
        self.assertTrue(sd.methods_by_name["Logs"].server_streaming)
        self.assertTrue(sd.methods_by_name["Exec"].server_streaming and sd.methods_by_name["Exec"].client_streaming)
        meta = self.pool_for("gantry.v1.ObjectMeta").FindMessageTypeByName("gantry.v1.ObjectMeta")
        self.assertIn("resource_version", meta.fields_by_name)

    def test_call_a_method_built_only_from_reflection(self):
        pool = self.pool_for("gantry.testing.v1.Echo.Unary")  # a method symbol resolves too
        method = pool.FindServiceByName("gantry.testing.v1.Echo").methods_by_name["Unary"]
        factory = message_factory.MessageFactory(pool)
        Req = factory.GetPrototype(method.input_type)
        Resp = factory.GetPrototype(method.output_type)
        fn = self.ch.unary_unary("/gantry.testing.v1.Echo/Unary", request_serializer=Req.SerializeToString,
                                 response_deserializer=Resp.FromString)
        r = fn(Req(message="reflected"), timeout=RPC_TIMEOUT)
        self.assertEqual(r.message, "reflected")

    def test_file_by_filename_and_not_found(self):
        rs = reflect(self.ch, [{"file_by_filename": "gantry/v1/sandboxes.proto"},
                               {"file_by_filename": "nope.proto"},
                               {"file_containing_symbol": "gantry.v1.Nope"},
                               {"all_extension_numbers_of_type": "gantry.v1.Sandbox"}])
        names = [descriptor_pb2.FileDescriptorProto.FromString(b).name
                 for b in rs[0].file_descriptor_response.file_descriptor_proto]
        self.assertEqual(names[0], "gantry/v1/sandboxes.proto")
        self.assertIn("gantry/v1/meta.proto", names)
        self.assertEqual(rs[1].error_response.error_code, 5)
        self.assertEqual(rs[2].error_response.error_code, 5)
        self.assertEqual(rs[3].all_extension_numbers_response.base_type_name, "gantry.v1.Sandbox")


# --- health ---

class HealthTests(ServerCase):
    def check(self, service):
        return unary(self.ch, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest,
                     health_pb2.HealthCheckResponse)(health_pb2.HealthCheckRequest(service=service),
                                                     timeout=RPC_TIMEOUT)

    def test_check(self):
        SERVING = health_pb2.HealthCheckResponse.SERVING
        self.assertEqual(self.check("").status, SERVING)
        self.assertEqual(self.check("gantry.v1.Sandboxes").status, SERVING)
        with self.assertRaises(grpc.RpcError) as cm:
            self.check("no.such.Service")
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_watch_unknown_service(self):
        it = self.ch.unary_stream("/grpc.health.v1.Health/Watch",
                                  request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                  response_deserializer=health_pb2.HealthCheckResponse.FromString)(
            health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=RPC_TIMEOUT)
        self.assertEqual(next(it).status, health_pb2.HealthCheckResponse.SERVICE_UNKNOWN)
        it.cancel()


class HealthWatchShutdownTest(unittest.TestCase):
    def test_watch_sees_not_serving_on_sigterm(self):
        srv = Server()
        try:
            ch = srv.channel()
            it = ch.unary_stream("/grpc.health.v1.Health/Watch",
                                 request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                                 response_deserializer=health_pb2.HealthCheckResponse.FromString)(
                health_pb2.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT)
            self.assertEqual(next(it).status, health_pb2.HealthCheckResponse.SERVING)
            srv.signal()
            self.assertEqual(next(it).status, health_pb2.HealthCheckResponse.NOT_SERVING)
            self.assertEqual(list(it), [])  # the watch ends with OK so the connection can drain
            self.assertEqual(srv.stop(), 0, srv.tail())
        finally:
            srv.kill()


# --- admin ---

class AdminTests(ServerCase):
    tls = False

    def test_healthz_readyz(self):
        self.assertEqual(self.server.admin_get("/healthz"), (200, "ok\n"))
        self.assertEqual(self.server.admin_get("/readyz"), (200, "ready\n"))
        self.assertEqual(self.server.admin_get("/healthz", method="HEAD")[0], 200)

    def test_metrics_count_calls_by_code_with_latency(self):
        call = echo(self.ch, "Unary")
        for _ in range(7):
            call(echo_pb2.EchoRequest(), timeout=RPC_TIMEOUT)
        with self.assertRaises(grpc.RpcError):
            echo(self.ch, "Fail")(echo_pb2.FailRequest(code=7, message="no"), timeout=RPC_TIMEOUT)
        m = self.server.metric
        self.assertEqual(m("gantry_grpc_server_handled_total", grpc_service="gantry.testing.v1.Echo",
                           grpc_method="Unary", grpc_code="OK"), 7)
        self.assertEqual(m("gantry_grpc_server_handled_total", grpc_method="Fail", grpc_code="PERMISSION_DENIED"), 1)
        self.assertEqual(m("gantry_grpc_server_handling_seconds_count", grpc_method="Unary"), 7)
        self.assertEqual(m("gantry_grpc_server_handling_seconds_bucket", grpc_method="Unary", le="+Inf"), 7)
        self.assertGreaterEqual(m("gantry_grpc_server_connections"), 1)
        status, body = self.server.admin_get("/metrics")
        self.assertIn("# TYPE gantry_grpc_server_handling_seconds histogram", body)

    def test_errors(self):
        self.assertEqual(self.server.admin_get("/nope")[0], 404)
        self.assertEqual(self.server.admin_get("/metrics", method="POST")[0], 405)
        s = socket.create_connection(("127.0.0.1", self.server.admin_port), timeout=RPC_TIMEOUT)
        s.sendall(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b" 414 ", s.recv(4096))
        s.close()
        s = socket.create_connection(("127.0.0.1", self.server.admin_port), timeout=RPC_TIMEOUT)
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        self.assertIn(b" 400 ", s.recv(4096))
        s.close()

    def test_keep_alive(self):
        s = socket.create_connection(("127.0.0.1", self.server.admin_port), timeout=RPC_TIMEOUT)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200") < 2:
            chunk = s.recv(4096)
            self.assertTrue(chunk, "connection closed early")
            data += chunk
        s.close()


# --- shutdown ---

class ShutdownTests(unittest.TestCase):
    def test_in_flight_calls_finish_after_sigterm(self):
        srv = Server("--grace-ms", "20000")
        try:
            ch = srv.channel()
            call = echo(ch, "Delay")
            futs = [call.future(echo_pb2.DelayRequest(delay_ms=800, message=str(i)), timeout=RPC_TIMEOUT)
                    for i in range(5)]
            wait_until(lambda: srv.metric("gantry_grpc_server_streams") == 5, what="calls in flight")
            srv.signal()
            self.assertEqual([f.result().message for f in futs], [str(i) for i in range(5)])
            wait_until(lambda: srv.proc.poll() is not None, timeout=STOP_TIMEOUT, what="exit")
            self.assertEqual(srv.proc.returncode, 0, srv.tail())
            self.assertIn("shutting down: GOAWAY", srv.tail(200))
        finally:
            srv.kill()

    def test_goaway_on_sigterm_at_the_frame_level(self):
        srv = Server("--grace-ms", "20000", tls=False)
        try:
            s = raw_h2_call(srv.port, "/gantry.testing.v1.Echo/Delay",
                            echo_pb2.DelayRequest(delay_ms=1000, message="late").SerializeToString())
            wait_until(lambda: srv.metric("gantry_grpc_server_streams") == 1, what="call in flight")
            srv.signal()
            seen = []
            for ftype, flags, sid, payload in read_h2_frames(s):
                if ftype == 7:  # GOAWAY: last stream id, error code
                    seen.append(("GOAWAY", int.from_bytes(payload[:4], "big"), int.from_bytes(payload[4:8], "big")))
                elif ftype == 0 and sid == 1:
                    seen.append(("DATA", len(payload)))
                elif ftype == 1 and sid == 1 and flags & 1:
                    seen.append(("TRAILERS",))
                    break
            s.close()
            goaway = [x for x in seen if x[0] == "GOAWAY"]
            self.assertEqual(goaway[0][1:], (1, 0), seen)  # last stream 1, NO_ERROR
            # The call accepted before the GOAWAY still completes: its reply and trailers follow.
            self.assertLess(seen.index(goaway[0]), seen.index(("TRAILERS",)), seen)
            self.assertTrue(any(x[0] == "DATA" and x[1] > 5 for x in seen), seen)
            wait_until(lambda: srv.proc.poll() is not None, timeout=STOP_TIMEOUT, what="exit")
            self.assertEqual(srv.proc.returncode, 0, srv.tail())
        finally:
            srv.kill()

    def test_grace_period_bounds_shutdown(self):
        srv = Server("--grace-ms", "300")
        try:
            ch = srv.channel()
            fut = echo(ch, "Delay").future(echo_pb2.DelayRequest(delay_ms=60000), timeout=RPC_TIMEOUT)
            stream = echo(ch, "ServerStream")(echo_pb2.StreamRequest(count=1000000, interval_ms=5),
                                              timeout=RPC_TIMEOUT)
            next(stream)
            wait_until(lambda: srv.metric("gantry_grpc_server_streams") == 2, what="calls in flight")
            t0 = time.monotonic()
            srv.signal()
            with self.assertRaises(grpc.RpcError) as cm:
                fut.result()
            self.assertIn(cm.exception.code(), (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE))
            with self.assertRaises(grpc.RpcError):
                list(stream)
            wait_until(lambda: srv.proc.poll() is not None, timeout=STOP_TIMEOUT, what="exit")
            self.assertLess(time.monotonic() - t0, STOP_TIMEOUT)
            self.assertEqual(srv.proc.returncode, 0, srv.tail())
        finally:
            srv.kill()

    def test_new_connections_refused_after_shutdown(self):
        srv = Server("--grace-ms", "20000")
        try:
            ch = srv.channel()
            fut = echo(ch, "Delay").future(echo_pb2.DelayRequest(delay_ms=1500), timeout=RPC_TIMEOUT)
            wait_until(lambda: srv.metric("gantry_grpc_server_streams") == 1, what="call in flight")
            srv.signal()
            # The listener closes at once; the in-flight call still completes.
            def refused():
                try:
                    socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
                    return False
                except OSError:
                    return True
            wait_until(refused, what="listener to close")
            fut.result()
            wait_until(lambda: srv.proc.poll() is not None, timeout=STOP_TIMEOUT, what="exit")
            self.assertEqual(srv.proc.returncode, 0, srv.tail())
        finally:
            srv.kill()


# --- hostile clients (issue 15): each attack is bounded in load and time, and a legitimate client
# must be served within a stated latency during and right after it ---

class HeaderBombTests(ServerCase):
    tls = False
    server_args = ("--max-header-bytes", "16384")

    @staticmethod
    def bomb_block(refs=4000, size=4000):
        # One 4000-byte header enters the HPACK dynamic table, then is referenced 4000 times with
        # one byte each: an 8 KB header block that decodes into 16 MB of headers.
        return grpc_request_headers("/gantry.testing.v1.Echo/Unary",
                                    hpack_literal("x-bomb", "a" * size, indexed=True) + b"\xbe" * refs)

    def test_hpack_bomb_ends_the_connection(self):
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=RPC_TIMEOUT)
        block = self.bomb_block()
        s.sendall(H2_PREFACE + h2_frame(4, 0, 0, b"") + h2_frame(1, 4, 1, block) + h2_frame(1, 4, 3, block))
        frames, closed = read_frames_until_eof(s, time.monotonic() + 5)
        s.close()
        goaway = [f for f in frames if f[0] == 7]
        self.assertTrue(closed, "the server kept the connection open: %s" % [f[:3] for f in frames])
        self.assertEqual(len(goaway), 1, frames)
        last_stream, code = int.from_bytes(goaway[0][3][:4], "big"), int.from_bytes(goaway[0][3][4:8], "big")
        self.assertEqual((last_stream, code), (1, 0xB))  # ENHANCE_YOUR_CALM; stream 3 never processed
        # Stream 1 itself was answered: a trailers-only RESOURCE_EXHAUSTED.
        self.assertTrue(any(f[0] == 1 and f[2] == 1 for f in frames), frames)
        self.assertEqual(self.server.metric("gantry_grpc_server_handled_total", grpc_code="RESOURCE_EXHAUSTED"), 1)

    def test_normal_calls_stay_fast_during_a_bomb_flood(self):
        # Bounded attack: bomb blocks as fast as the server takes them, on fresh connections,
        # for 2 s. A legitimate client must keep a median under 50 ms (about 1 ms unloaded;
        # before the fix the bombs took the loop thread and calls queued behind them).
        probe = LatencyProbe(self.server)
        stop = threading.Event()
        conns = [0]

        def attack():
            block = self.bomb_block()
            while not stop.is_set():
                s = None
                try:
                    s = socket.create_connection(("127.0.0.1", self.server.port), timeout=2)
                    conns[0] += 1
                    s.sendall(H2_PREFACE + h2_frame(4, 0, 0, b""))
                    sid = 1
                    while not stop.is_set() and sid < 400:
                        s.sendall(h2_frame(1, 4, sid, block))
                        sid += 2
                except OSError:
                    pass  # closed by the server: the expected outcome
                finally:
                    if s is not None:
                        s.close()

        attacker = threading.Thread(target=attack, daemon=True)
        probe.start()
        attacker.start()
        time.sleep(2.0)
        stop.set()
        attacker.join()
        during = probe.stop()
        after = [probe.once() for _ in range(20)]
        self.assertEqual(during["errors"], [])
        self.assertGreater(during["n"], 5, during)
        self.assertLess(during["median"], 0.05, during)
        self.assertLess(sorted(after)[10], 0.05, after)
        print("hpack bomb: %d connections; probe during %s, after median %.1f ms" %
              (conns[0], {k: (round(v * 1000, 1) if isinstance(v, float) else v) for k, v in during.items()},
               sorted(after)[10] * 1000), file=sys.stderr)


class LazyDecodeTests(ServerCase):
    tls = False

    # 2,000,000 two-byte fields (field 15, varint 0: unknown to every Echo message) in 4 MB, just
    # under max_recv_message_bytes: about 140 ms and some 200 MB for protobuf-c to decode.
    MANY_FIELDS = b"\x78\x00" * 2000000

    def rss(self):
        return proc_status_kb(self.server.proc.pid, "VmRSS")

    def peak(self):
        return proc_status_kb(self.server.proc.pid, "VmHWM")

    def settle(self, baseline_kb, margin_kb):
        return settle_rss(self.server.proc.pid, baseline_kb, margin_kb)

    def attack(self, path, rounds=3, parallel=3):
        """Send rounds x parallel huge requests to @path; returns their outcomes."""
        outcomes = []
        call = self.ch.unary_unary(path)
        for _ in range(rounds):
            futs = [call.future(self.MANY_FIELDS, timeout=RPC_TIMEOUT) for _ in range(parallel)]
            for f in futs:
                try:
                    f.result()
                    outcomes.append("OK")
                except grpc.RpcError as e:
                    outcomes.append((e.code(), e.details()))
        return outcomes

    def warm_up(self):
        # Reach a steady state first (arenas, stubs, the probe's connection): the baseline.
        for _ in range(2):
            self.ch.unary_unary("/gantry.testing.v1.Echo/Context")(b"\x78\x00" * 1000, timeout=RPC_TIMEOUT)
        time.sleep(0.3)

    def test_requests_are_not_decoded_until_asked(self):
        # Echo/Context never looks at its request, like the gate with an unauthenticated call: the
        # loop thread must only buffer the bytes. Peak RSS may grow by the buffered bytes (3 x 4 MB
        # at a time), not by a decode (before: +200 MB per request), and come back after.
        probe = LatencyProbe(self.server)
        self.warm_up()
        base = self.rss()
        reset_peak_rss(self.server.proc.pid)
        probe.start()
        outcomes = self.attack("/gantry.testing.v1.Echo/Context")
        during = probe.stop()
        peak = self.peak() - base
        after = self.settle(base, rss_bound(4 << 10))
        print("lazy decode (Context): RSS base %d MiB, peak +%.1f MiB, after +%.1f MiB; probe median %.1f ms "
              "max %.1f ms (%d calls)" % (base >> 10, peak / 1024, (after - base) / 1024, during["median"] * 1000,
                                          during["max"] * 1000, during["n"]), file=sys.stderr)
        self.assertEqual(outcomes, ["OK"] * 9)
        self.assertEqual(during["errors"], [])
        self.assertLess(peak, rss_bound(64 << 10), "peak RSS grew by %d KiB" % peak)
        self.assertLess(after - base, rss_bound(16 << 10))
        self.assertLess(during["median"], 0.05, during)

    def test_decode_work_is_capped(self):
        # Echo/Delay decodes on a worker thread (as the gate does after authenticating): the field
        # cap refuses the request before protobuf-c allocates anything.
        probe = LatencyProbe(self.server)
        self.warm_up()
        base = self.rss()
        reset_peak_rss(self.server.proc.pid)
        probe.start()
        outcomes = self.attack("/gantry.testing.v1.Echo/Delay")
        during = probe.stop()
        peak = self.peak() - base
        after = self.settle(base, rss_bound(4 << 10))
        print("decode cap (Delay): RSS base %d MiB, peak +%.1f MiB, after +%.1f MiB; probe median %.1f ms "
              "max %.1f ms" % (base >> 10, peak / 1024, (after - base) / 1024, during["median"] * 1000,
                               during["max"] * 1000), file=sys.stderr)
        self.assertEqual({o[0] for o in outcomes}, {grpc.StatusCode.RESOURCE_EXHAUSTED}, outcomes[:1])
        self.assertIn("more than 65536 fields", outcomes[0][1])
        self.assertEqual(during["errors"], [])
        self.assertLess(peak, rss_bound(64 << 10), "peak RSS grew by %d KiB" % peak)
        self.assertLess(after - base, rss_bound(16 << 10))
        self.assertLess(during["median"], 0.05, during)
        # Under the cap, a request still decodes (on the worker) and is answered.
        r = echo(self.ch, "Delay")(echo_pb2.DelayRequest(delay_ms=1, message="fine"), timeout=RPC_TIMEOUT)
        self.assertEqual(r.message, "fine")


# --- the strict request check (issue 15, items 9-11) ---

def with_bytes(msg, placeholder, raw):
    """@msg serialized, with the string @placeholder replaced by the same number of @raw bytes
    (a standard client refuses to encode invalid UTF-8 itself)."""
    data = msg.SerializeToString()
    ph = placeholder.encode()
    assert len(ph) == len(raw) and data.count(ph) == 1, (placeholder, raw)
    return data.replace(ph, raw)


class ValidateTests(ServerCase):
    tls = False

    def refused(self, path, data):
        with self.assertRaises(grpc.RpcError) as cm:
            self.ch.unary_unary(path)(data, timeout=RPC_TIMEOUT)
        return cm.exception.code(), cm.exception.details()

    def sandbox(self, **kw):
        meta = dict(name="web-1", namespace="team-a", labels={"team": "infra"})
        spec = dict(image="debian:12", command=["sh", "-c", "echo"], env={"A": "1", "B": "2"})
        meta.update(kw.get("meta", {}))
        spec.update(kw.get("spec", {}))
        return sandboxes_pb2.CreateSandboxRequest(request_id="req-1", sandbox=sandboxes_pb2.Sandbox(
            meta=meta_pb2.ObjectMeta(**meta), spec=sandboxes_pb2.SandboxSpec(**spec)))

    CREATE = "/gantry.v1.Sandboxes/Create"

    def test_valid_gantry_request_is_decoded(self):
        code, details = self.refused(self.CREATE, self.sandbox().SerializeToString())
        self.assertEqual(code, grpc.StatusCode.UNIMPLEMENTED)
        self.assertIn("checked and decoded", details)

    def test_invalid_utf8_in_nested_string(self):
        data = with_bytes(self.sandbox(meta={"name": "PLACE"}), "PLACE", b"ca\xfe\xffe")
        self.assertEqual(self.refused(self.CREATE, data),
                         (grpc.StatusCode.INVALID_ARGUMENT, "sandbox.meta.name: invalid UTF-8"))

    def test_nul_byte_no_longer_truncates(self):
        # protobuf-c copied up to the NUL: "nul\0Evil" became the namespace "nul".
        data = with_bytes(self.sandbox(meta={"namespace": "nul@Evil"}), "nul@Evil", b"nul\x00Evil")
        self.assertEqual(self.refused(self.CREATE, data),
                         (grpc.StatusCode.INVALID_ARGUMENT, "sandbox.meta.namespace: contains a NUL byte"))

    def test_map_values_and_repeated_strings(self):
        data = with_bytes(self.sandbox(meta={"labels": {"team": "VALUE"}}), "VALUE", b"\xc0\xafabc")
        self.assertEqual(self.refused(self.CREATE, data),
                         (grpc.StatusCode.INVALID_ARGUMENT, 'sandbox.meta.labels["team"]: invalid UTF-8'))
        data = with_bytes(self.sandbox(spec={"env": {"A": "1", "B": "SECRET"}}), "SECRET", b"se\x00ret")
        self.assertEqual(self.refused(self.CREATE, data),
                         (grpc.StatusCode.INVALID_ARGUMENT, 'sandbox.spec.env["B"]: contains a NUL byte'))
        data = with_bytes(self.sandbox(spec={"command": ["sh", "ARGV", "x"]}), "ARGV", b"\xed\xa0\x80!")
        self.assertEqual(self.refused(self.CREATE, data),
                         (grpc.StatusCode.INVALID_ARGUMENT, "sandbox.spec.command[1]: invalid UTF-8"))
        data = with_bytes(sandboxes_pb2.CreateSandboxRequest(request_id="REQUEST"), "REQUEST", b"r\xffquest")
        self.assertEqual(self.refused(self.CREATE, data),
                         (grpc.StatusCode.INVALID_ARGUMENT, "request_id: invalid UTF-8"))

    def test_unknown_enum_values(self):
        # Quota mode 77, 99 and -1 were stored as HARD.
        for mode in (77, 99, -1):
            req = quotas_pb2.SetQuotaRequest(request_id="q", quota=quotas_pb2.Quota(max_gpus=2, mode=mode))
            self.assertEqual(self.refused("/gantry.v1.Quotas/Set", req.SerializeToString()),
                             (grpc.StatusCode.INVALID_ARGUMENT,
                              "quota.mode: unknown value %d of enum gantry.v1.QuotaMode" % mode))
        req = quotas_pb2.SetQuotaRequest(quota=quotas_pb2.Quota(mode=quotas_pb2.QUOTA_MODE_SOFT))
        self.assertEqual(self.refused("/gantry.v1.Quotas/Set", req.SerializeToString())[0],
                         grpc.StatusCode.UNIMPLEMENTED)

    def test_every_handler_kind_gets_the_check(self):
        # Unary decoded on the loop thread (Echo/Unary), on a worker (Echo/Delay), health (the
        # transport's own handler), and the messages of a bidi stream (reflection).
        for method, cls in (("Unary", echo_pb2.EchoRequest), ("Delay", echo_pb2.DelayRequest)):
            bad = with_bytes(cls(message="MSG"), "MSG", b"\xff\xfe\xfd")
            self.assertEqual(self.refused("/gantry.testing.v1.Echo/" + method, bad),
                             (grpc.StatusCode.INVALID_ARGUMENT, "message: invalid UTF-8"))
        bad = with_bytes(health_pb2.HealthCheckRequest(service="SVC"), "SVC", b"a\x00b")
        self.assertEqual(self.refused("/grpc.health.v1.Health/Check", bad),
                         (grpc.StatusCode.INVALID_ARGUMENT, "service: contains a NUL byte"))
        bad = with_bytes(reflection_pb2.ServerReflectionRequest(file_by_filename="FILE"), "FILE", b"f\xffle")
        fn = self.ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
        with self.assertRaises(grpc.RpcError) as cm:
            list(fn(iter([bad]), timeout=RPC_TIMEOUT))
        self.assertEqual((cm.exception.code(), cm.exception.details()),
                         (grpc.StatusCode.INVALID_ARGUMENT, "file_by_filename: invalid UTF-8"))
        # And valid requests still pass every path.
        self.assertEqual(echo(self.ch, "Unary")(echo_pb2.EchoRequest(message="h\u00e9"), timeout=RPC_TIMEOUT).message,
                         "h\u00e9")

    def test_undecodable_and_oversized_requests(self):
        code, details = self.refused("/gantry.v1.Sandboxes/Get", b"\x0a\x09ab")
        self.assertEqual(code, grpc.StatusCode.INTERNAL)
        self.assertIn("could not decode the request message", details)
        code, details = self.refused("/gantry.v1.Sandboxes/Get", b"\x78\x00" * 70000)
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn("more than 65536 fields", details)


def grpc_messages(payload):
    """Split concatenated length-prefixed gRPC messages; returns (messages, leftover bytes)."""
    out = []
    while len(payload) >= 5:
        n = int.from_bytes(payload[1:5], "big")
        if len(payload) < 5 + n:
            break
        out.append(payload[5:5 + n])
        payload = payload[5 + n:]
    return out, payload


REFLECTION_PATH = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


class StreamingBackpressureTests(ServerCase):
    tls = False
    server_args = ("--conn-memory", str(8 << 20))

    def test_reflection_client_that_never_reads(self):
        # 10 reflection streams on one connection, 2,000 requests each (54 KB per stream, within
        # the flow-control windows), and the client reads nothing. Each answer is some 6 KB: 120
        # MB if buffered (the bug: +474 MB for 2.6 MB of requests). Now a stream stops taking
        # requests once its answers pass 1 MiB unsent, and every stream once the connection's
        # pass conn_memory_bytes (8 MiB here), so the server grows by about that.
        probe = LatencyProbe(self.server)
        reflect(self.ch, [{"file_containing_symbol": "gantry.v1.Principals"}])  # warm the index
        time.sleep(0.2)
        base = proc_status_kb(self.server.proc.pid, "VmRSS")
        reset_peak_rss(self.server.proc.pid)
        req = grpc_frame(reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="gantry.v1.Principals").SerializeToString())
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=RPC_TIMEOUT)
        s.sendall(H2_PREFACE + h2_frame(4, 0, 0, b""))
        probe.start()
        body = req * 2000
        for i in range(10):
            sid = 1 + 2 * i
            frames = h2_frame(1, 4, sid, grpc_request_headers(REFLECTION_PATH))
            for off in range(0, len(body), 16000):
                frames += h2_frame(0, 0, sid, body[off:off + 16000])
            s.sendall(frames)
        # Give the server time to answer all it will answer.
        wait_until(lambda: self.server.metric("gantry_grpc_server_streams") >= 10, what="streams open")
        time.sleep(1.0)
        during = probe.stop()
        peak = proc_status_kb(self.server.proc.pid, "VmHWM") - base
        s.close()
        wait_until(lambda: self.server.metric("gantry_grpc_server_streams") == 0, what="attacker's streams gone")
        after = [probe.once() for _ in range(10)]
        settled = settle_rss(self.server.proc.pid, base, rss_bound(8 << 10))
        print("reflection, client not reading: RSS base %d MiB, peak +%.1f MiB, after close +%.1f MiB; probe "
              "median %.1f ms max %.1f ms during, median %.1f ms after" %
              (base >> 10, peak / 1024, (settled - base) / 1024, during["median"] * 1000, during["max"] * 1000,
               sorted(after)[5] * 1000), file=sys.stderr)
        self.assertEqual(during["errors"], [])
        self.assertLess(peak, rss_bound(24 << 10), "peak RSS grew by %d KiB" % peak)
        self.assertLess(during["median"], 0.05, during)
        self.assertLess(sorted(after)[5], 0.05, after)
        self.assertLess(settled - base, rss_bound(8 << 10))

    def test_reflection_reader_gets_every_answer(self):
        # The pause must not lose or stall anything for a client that does read: 3,000 requests
        # on one stream (answers well past the high-water mark), every one answered in order.
        names = ["gantry.v1.Principals", "gantry.v1.Sandboxes", "gantry.v1.ObjectMeta"]
        rs = reflect(self.ch, [{"file_containing_symbol": names[i % 3]} for i in range(3000)])
        self.assertEqual(len(rs), 3000)
        self.assertEqual([r.original_request.file_containing_symbol for r in rs], [names[i % 3] for i in range(3000)])
        self.assertTrue(all(r.WhichOneof("message_response") == "file_descriptor_response" for r in rs))


class HealthBackpressureTests(ServerCase):
    tls = False
    server_args = ("--conn-memory", str(64 << 10))

    def test_watch_that_does_not_read_gets_the_latest_status(self):
        # A Watch whose client stops reading while the status flips 100,000 times (SIGUSR1 makes
        # the test server flip it, ending SERVING). Before, every change was queued (100,001
        # messages); now the watch stops at the backpressure mark and then sends the latest.
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=RPC_TIMEOUT)
        req = grpc_frame(health_pb2.HealthCheckRequest(service="").SerializeToString())
        s.sendall(H2_PREFACE + h2_frame(4, 0, 0, b"") +
                  h2_frame(1, 4, 1, grpc_request_headers("/grpc.health.v1.Health/Watch")) + h2_frame(0, 1, 1, req))
        payload = b""
        deadline = time.monotonic() + RPC_TIMEOUT
        while not grpc_messages(payload)[0] and time.monotonic() < deadline:
            for t, flags, sid, p in read_frames_until_eof(s, time.monotonic() + 0.2)[0]:
                if t == 0 and sid == 1:
                    payload += p
        self.assertEqual(len(grpc_messages(payload)[0]), 1)  # SERVING
        self.server.signal(signal.SIGUSR1)
        self.server.signalled = False
        wait_until(lambda: "health flapped" in self.server.tail(20), what="the flips")
        # Now read everything: open both windows wide and drain until quiet.
        s.sendall(h2_frame(8, 0, 0, struct.pack(">I", 1 << 30)) + h2_frame(8, 0, 1, struct.pack(">I", 1 << 30)))
        while True:
            frames, closed = read_frames_until_eof(s, time.monotonic() + 0.5)
            got = b"".join(p for t, flags, sid, p in frames if t == 0 and sid == 1)
            if not got or closed:
                break
            payload += got
        s.close()
        msgs, rest = grpc_messages(payload)
        statuses = [health_pb2.HealthCheckResponse.FromString(m).status for m in msgs]
        print("health watch, reader paused during 100,000 flips: %d messages received" % len(msgs), file=sys.stderr)
        self.assertEqual(rest, b"")
        self.assertEqual(statuses[-1], health_pb2.HealthCheckResponse.SERVING)
        self.assertLess(len(msgs), 50000)


def connect_from(source, port, timeout=2.0):
    """A TCP connection to the server from @source (any 127.x.y.z works on Linux loopback), so
    tests can play several client addresses."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def hold_silent_connections(connect, stop, opened):
    """An attacker until @stop is set: keep up to 150 silent connections open, made by
    @connect(i) for the i-th attempt; replace those the server closes, hold the others (as the
    attacker's 1,024 were held). At most 10,000 in all, counted in @opened[0]."""
    held = []
    i = 0
    while not stop.is_set():
        if held:
            gone, _, _ = select.select(held, [], [], 0)
            for s in gone:
                held.remove(s)
                s.close()
        if len(held) >= 150 or opened[0] >= 10000:  # bounded
            stop.wait(0.01)
            continue
        try:
            held.append(connect(i))
            opened[0] += 1
        except OSError:
            pass
        i += 1
    for s in held:
        s.close()


def closed_by_server(s, wait):
    """True if the server closes @s (EOF or reset) within @wait seconds."""
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


class ConnectionBudgetTests(ServerCase):
    # TLS: idle attackers never send a ClientHello. 32 connections, 8 kept for established ones,
    # 8 per source address, 1 s to finish the handshake.
    server_args = ("--max-connections", "32", "--max-connections-per-source", "8", "--handshake-timeout-ms", "1000")

    def test_admin_connection_flood_does_not_stall_the_api(self):
        # The admin port shares the API's event loop. For about 2 s an attacker opens silent
        # connections to it as fast as it can (at most 10,000), holding up to 150: past the admin
        # cap each new one evicts another from the probe reserve. The API's established client must
        # stay fast, and a probe must still be answered. (Under ASan the probe's max was 5 ms, and
        # 5-8 ms with the admin listener's accept bound lifted: accepting there is cheap, no TLS.
        # So this guards the admin port's cost per connection, not that bound.)
        probe = LatencyProbe(self.server)
        port = self.server.admin_port
        stop = threading.Event()
        opened = [0]

        attacker = threading.Thread(target=hold_silent_connections, daemon=True,
                                    args=(lambda i: socket.create_connection(("127.0.0.1", port), timeout=1),
                                          stop, opened))
        probe.start()
        attacker.start()
        try:
            time.sleep(2)
        finally:
            stop.set()
            attacker.join()
            during = probe.stop()
        health = admin_probe(port)
        print("admin connection flood: %d connections opened; API probe median %.1f ms max %.1f ms (%d calls); "
              "/healthz after: %s" % (opened[0], during["median"] * 1000, during["max"] * 1000, during["n"], health),
              file=sys.stderr)
        self.assertEqual(during["errors"], [])
        self.assertLess(during["max"], 0.25, during)
        self.assertEqual(health[0], 200)

    def test_per_source_cap_and_handshake_deadline(self):
        socks = [connect_from("127.0.0.50", self.server.port) for _ in range(12)]
        # The 4 over the per-source cap are closed at accept; the 8 others live until the
        # handshake deadline (1 s) closes them too.
        refused = [s for s in socks if closed_by_server(s, 0.05)]
        self.assertEqual(len(refused), 4)
        self.assertEqual(self.server.metric("gantry_grpc_server_connections_rejected_total", reason="per_source"), 4)
        t0 = time.monotonic()
        self.assertTrue(all(closed_by_server(s, 5) for s in socks if s not in refused))
        self.assertLess(time.monotonic() - t0, 3)
        self.assertGreaterEqual(self.server.metric("gantry_grpc_server_handshake_timeouts_total"), 8)
        for s in socks:
            s.close()

    def test_idle_flood_does_not_lock_out_clients(self):
        # For about 2 s an attacker opens silent TCP connections from 9 addresses as fast as it can
        # (at most 10,000), holding up to 150 at a time (the bug: 1,024 idle connections refused every new client
        # until they went away). An established client and new clients must still be served.
        probe = LatencyProbe(self.server)
        stop = threading.Event()
        opened = [0]

        attacker = threading.Thread(target=hold_silent_connections, daemon=True,
                                    args=(lambda i: connect_from("127.0.0.%d" % (2 + i % 9), self.server.port,
                                                                 timeout=1), stop, opened))
        probe.start()
        attacker.start()
        time.sleep(0.5)
        new_clients = []
        try:
            for i in range(5):
                ch = self.server.channel(options=[("grpc.use_local_subchannel_pool", 1)])
                t0 = time.monotonic()
                echo(ch, "Unary")(echo_pb2.EchoRequest(message="new"), timeout=2)
                new_clients.append(time.monotonic() - t0)
                ch.close()
                self.server.channels.remove(ch)
                time.sleep(0.2)
        finally:
            stop.set()
            attacker.join()
            during = probe.stop()
        print("idle flood: %d connections opened; new clients served in %s ms; established probe median %.1f ms "
              "max %.1f ms; evicted %d, refused %d (per source) %d (full)" %
              (opened[0], [round(t * 1000) for t in new_clients], during["median"] * 1000, during["max"] * 1000,
               self.server.metric("gantry_grpc_server_connections_evicted_total"),
               self.server.metric("gantry_grpc_server_connections_rejected_total", reason="per_source"),
               self.server.metric("gantry_grpc_server_connections_rejected_total", reason="max_connections")),
              file=sys.stderr)
        self.assertEqual(during["errors"], [])
        self.assertLess(during["median"], 0.05, during)
        # The accept bound per loop turn (server/grpc/server.c): without it, under ASan, the loop sat
        # in libuv's accept loop while the flood refilled the backlog, the probe's max was 280-570 ms
        # and a new client's handshake missed the 1 s deadline about once in 8 runs (now 8-17 ms).
        self.assertLess(during["max"], 0.25, during)
        self.assertEqual(len(new_clients), 5)
        self.assertLess(max(new_clients), 1.0, new_clients)
        self.assertGreater(self.server.metric("gantry_grpc_server_connections_evicted_total"), 0)


class IdleTimeoutTests(ServerCase):
    tls = False
    server_args = ("--idle-timeout-ms", "600")

    def test_pings_do_not_keep_an_idle_connection(self):
        # A client that opens no stream but sends a PING every 100 ms gets the idle GOAWAY anyway
        # (PINGs used to count as activity, so such a connection was never closed).
        s = socket.create_connection(("127.0.0.1", self.server.port), timeout=RPC_TIMEOUT)
        s.sendall(H2_PREFACE + h2_frame(4, 0, 0, b""))
        t0 = time.monotonic()
        goaway_at = None
        while goaway_at is None and time.monotonic() - t0 < 4:
            s.sendall(h2_frame(6, 0, 0, b"12345678"))
            frames, closed = read_frames_until_eof(s, time.monotonic() + 0.1)
            if any(f[0] == 7 for f in frames):
                goaway_at = time.monotonic() - t0
            if closed:
                break
        s.close()
        self.assertIsNotNone(goaway_at, "no GOAWAY within 4 s although only PINGs were sent")
        self.assertLess(goaway_at, 2.0)


def admin_probe(port, path="/healthz", timeout=2.0):
    """GET @path on a fresh connection; returns (status or None if refused, seconds)."""
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            r.read()
            return r.status, time.monotonic() - t0
    except urllib.error.HTTPError as e:
        return e.code, time.monotonic() - t0
    except OSError:
        return None, time.monotonic() - t0


class AdminPipelineTests(ServerCase):
    tls = False

    def test_unread_pipelined_requests_are_bounded(self):
        # 30,000 pipelined GET /metrics on one connection whose responses are never read (the
        # bug: 100k of them grew the process by 598 MB, 470 MB of it kept after close). Now the
        # parser pauses once 1 MiB of responses waits, so growth stays small and comes back.
        for _ in range(3):
            self.server.admin_get("/metrics")
        time.sleep(0.2)
        pid = self.server.proc.pid
        base = proc_status_kb(pid, "VmRSS")
        reset_peak_rss(pid)
        s = socket.create_connection(("127.0.0.1", self.server.admin_port), timeout=3)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # read nothing, buffer little

        def send():
            try:
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 30000)
            except OSError:
                pass  # the server stopped reading: sendall times out, as it should

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(1.5)
        probes = [admin_probe(self.server.admin_port) for _ in range(5)]
        peak = proc_status_kb(pid, "VmHWM") - base
        sender.join()
        s.close()
        time.sleep(0.2)
        after = settle_rss(pid, base, rss_bound(2 << 10))
        print("admin pipelining: RSS base %d MiB, peak +%.1f MiB, after close +%.1f MiB; /healthz %s" %
              (base >> 10, peak / 1024, (after - base) / 1024, [(st, round(t * 1000, 1)) for st, t in probes]),
              file=sys.stderr)
        self.assertTrue(all(st == 200 and t < 0.5 for st, t in probes), probes)
        self.assertLess(peak, rss_bound(16 << 10), "peak RSS grew by %d KiB" % peak)
        self.assertLess(after - base, rss_bound(8 << 10))


class AdminSlowlorisTests(ServerCase):
    tls = False
    server_args = ("--admin-header-timeout-ms", "1000")

    def test_trickling_clients_do_not_lock_out_probes(self):
        # 64 connections (the whole cap) each send a request one byte every 100 ms, never
        # finishing it, and reconnect when closed. The per-byte timer restart used to keep them
        # forever and /healthz was refused. Now each dies 1 s after its first byte, and probes are
        # admitted past the cap into the probe reserve meanwhile.
        port = self.server.admin_port
        stop = threading.Event()
        stats = {"connects": 0, "closed_by_server": 0, "lifetimes": []}

        def trickle():
            conns = {}
            line = b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 4000
            while not stop.is_set():
                while len(conns) < 64:
                    try:
                        c = socket.create_connection(("127.0.0.1", port), timeout=1)
                        conns[c] = [time.monotonic(), 0]
                        stats["connects"] += 1
                    except OSError:
                        break
                for c, st in list(conns.items()):
                    try:
                        c.send(line[st[1]:st[1] + 1])
                        st[1] += 1
                    except OSError:
                        pass
                gone, _, _ = select.select(list(conns), [], [], 0)
                for c in gone:
                    stats["closed_by_server"] += 1
                    stats["lifetimes"].append(time.monotonic() - conns.pop(c)[0])
                    c.close()
                stop.wait(0.1)
            for c in conns:
                c.close()

        attacker = threading.Thread(target=trickle, daemon=True)
        attacker.start()
        time.sleep(0.5)
        probes = []
        try:
            for _ in range(12):
                probes.append(admin_probe(port))
                probes.append(admin_probe(port, "/readyz"))
                time.sleep(0.2)
        finally:
            stop.set()
            attacker.join()
        lifetimes = sorted(stats["lifetimes"])
        print("admin slowloris: %d connections, %d closed by the server (lifetime median %.2f s, max %.2f s); "
              "probes %s" % (stats["connects"], stats["closed_by_server"],
                             lifetimes[len(lifetimes) // 2] if lifetimes else -1, lifetimes[-1] if lifetimes else -1,
                             sorted({(st, round(t * 1000)) for st, t in probes})[-3:]), file=sys.stderr)
        self.assertTrue(all(st == 200 and t < 0.5 for st, t in probes), probes)
        self.assertGreaterEqual(stats["closed_by_server"], 64)
        self.assertLess(lifetimes[-1], 2.5)
        # A general request made while the cap is held goes to the probe reserve: 503.


GROUPS = {
    "unary": [UnaryTLS, UnaryH2C],
    "streaming": [StreamingTests],
    "errors": [ErrorTests],
    "limits": [LimitTests, ConnectionLimitTests],
    "tls": [TLSTests],
    "reflection": [ReflectionTests],
    "health": [HealthTests, HealthWatchShutdownTest],
    "admin": [AdminTests, AdminPipelineTests, AdminSlowlorisTests],
    "shutdown": [ShutdownTests],
    "hostile": [HeaderBombTests, LazyDecodeTests, StreamingBackpressureTests, HealthBackpressureTests,
                ConnectionBudgetTests, IdleTimeoutTests],
    "validate": [ValidateTests],
}


def main():
    if len(sys.argv) < 2 or (sys.argv[1] not in GROUPS and sys.argv[1] != "all"):
        print(__doc__)
        return 2
    group = sys.argv[1]
    classes = sum(GROUPS.values(), []) if group == "all" else GROUPS[group]
    loader = unittest.TestLoader()
    suite = unittest.TestSuite([loader.loadTestsFromTestCase(c) for c in classes])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    if result.wasSuccessful():
        shutil.rmtree(WORK, ignore_errors=True)
        return 0
    print("server logs kept under", WORK)
    return 1


if __name__ == "__main__":
    sys.exit(main())
