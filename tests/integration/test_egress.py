#!/usr/bin/python3
"""Egress through gantryd's relay (docs/egress.md) with the process driver: a real sandbox with
driver_config network = egress, whose only way out is the relay.

Needs root (a network namespace, a veth pair and iptables rules per sandbox), ip, iptables and
bubblewrap; skipped otherwise.

One sandbox runs a Python script that tries every adapter against echo servers on the host and
prints what happened: CONNECT, plain HTTP and TLS (by SNI) to an allowed name, raw TCP to an allowed
address, the same refused for names, an address and a port the policy does not allow; UDP to the
host. Then it loops on a CONNECT, so the test can tighten the namespace policy and see the next
connection refused within 2 s. The refusals are in the audit trail (OCSF 4001) with their reason,
and the decisions in /metrics.

Groups: process."""

import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_gantryd as g  # noqa: E402
import test_resources as tr  # noqa: E402

from gantry.v1 import audit_pb2, policies_pb2, sandboxes_pb2  # noqa: E402

S = sandboxes_pb2
PO = policies_pb2
LEASE_FLAGS = ["--lease-duration-ms", "1500", "--lease-renew-deadline-ms", "1000", "--lease-retry-ms", "200"]

# Runs inside the sandbox as its uid. argv: the allowed port, the refused port, the relay port.
SANDBOX_SCRIPT = r'''
import json, socket, struct, sys, time
ok_port, bad_port, relay_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        f = line.split()
        if f[1] == "00000000":
            return socket.inet_ntoa(struct.pack("<I", int(f[2], 16)))
gw = gateway()
def talk(host, port, data, want):
    try:
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(data)
        got = b""
        while len(got) < want:
            d = s.recv(65536)
            if not d:
                break
            got += d
        s.close()
        return got.decode("latin-1")
    except OSError as e:
        return "ERROR " + type(e).__name__
def hello(sni):
    n = len(sni)
    ext = struct.pack(">HHHBH", 0, n + 5, n + 3, 0, n) + sni.encode()
    body = b"\x03\x03" + b"\x5a" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack(">H", len(ext)) + ext
    hs = b"\x01" + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs
import os
r = {"gateway": gw, "proxy": os.environ.get("https_proxy", "")}
req = "CONNECT localhost:%d HTTP/1.1\r\n\r\nping" % ok_port
# No waiting: the driver starts the sandbox once a relay listens on its door (docs/egress.md).
r["connect_ok"] = talk(gw, relay_port, req.encode(), 43)
r["connect_denied"] = talk(gw, relay_port, ("CONNECT denied.example:%d HTTP/1.1\r\n\r\n" % ok_port).encode(), 10000)
head = "GET / HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % ok_port
r["http_ok"] = talk(gw, ok_port, head.encode(), len(head))
r["http_denied"] = talk(gw, ok_port, b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n", 10000)
h = hello("localhost")
r["tls_ok"] = talk(gw, ok_port, h, len(h)) == h.decode("latin-1")
r["tls_denied"] = talk(gw, ok_port, hello("other.example"), 10000)
r["raw_ok"] = talk(gw, ok_port, b"\x00raw", 4)
r["raw_denied_port"] = talk(gw, bad_port, b"\x00raw", 4)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"udp", (gw, bad_port))
u.close()
def dns(name, server=("192.0.2.53", 53)):
    q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5)
    try:
        u.sendto(q, server)
        a = u.recv(600)
        return {"rcode": a[3] & 15, "answers": a[7], "last4": ".".join(str(b) for b in a[-4:])}
    except OSError as e:
        return "ERROR " + type(e).__name__
    finally:
        u.close()
r["dns_ok"] = dns("localhost")
r["dns_denied"] = dns("denied.example")
def dns_tcp(names, server=("192.0.2.53", 53)):
    # DNS over TCP: both questions on one connection, each length-prefixed; answers in order.
    out = b""
    for i, name in enumerate(names):
        q = struct.pack(">HHHHHH", 0x4300 + i, 0x0100, 1, 0, 0, 0)
        q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
        out += struct.pack(">H", len(q)) + q
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.settimeout(5)
    try:
        t.connect(server)
        t.sendall(out)
        got = []
        buf = b""
        for _ in names:
            while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
                d = t.recv(4096)
                if not d:
                    return "ERROR EOF"
                buf += d
            n = struct.unpack(">H", buf[:2])[0]
            a, buf = buf[2:2 + n], buf[2 + n:]
            got.append({"rcode": a[3] & 15, "answers": a[7], "last4": ".".join(str(b) for b in a[-4:])})
        return got
    except OSError as e:
        return "ERROR " + type(e).__name__
    finally:
        t.close()
r["dns_tcp"] = dns_tcp(["localhost", "denied.example"])
try:
    socket.getaddrinfo("denied.example", 443)
    r["getaddrinfo_denied"] = "resolved"
except socket.gaierror as e:
    r["getaddrinfo_denied"] = "gaierror"
print("RESULTS " + json.dumps(r), flush=True)
while True:
    got = talk(gw, relay_port, req.encode(), 12)
    print("LOOP %.3f %s" % (time.time(), got[:12]), flush=True)
    time.sleep(0.1)
'''

# A second sandbox, with its own policy (SandboxSpec.policy: the door addresses only). argv: the
# allowed port, the relay port, the FIRST sandbox's door address.
FENCED_SCRIPT = r'''
import json, socket, struct, sys
ok_port, relay_port, other_door = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
gw = [socket.inet_ntoa(struct.pack("<I", int(l.split()[2], 16)))
      for l in open("/proc/net/route").read().splitlines()[1:] if l.split()[1] == "00000000"][0]
def talk(host, port, data, want):
    try:
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(data)
        got = b""
        while len(got) < want:
            d = s.recv(65536)
            if not d:
                break
            got += d
        s.close()
        return got.decode("latin-1")
    except OSError as e:
        return "ERROR " + type(e).__name__
def dns(name, server):
    q = struct.pack(">HHHHHH", 0x4243, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    try:
        u.sendto(q, server)
        a = u.recv(600)
        return {"rcode": a[3] & 15, "answers": a[7]}
    except OSError as e:
        return "ERROR " + type(e).__name__
    finally:
        u.close()
r = {"gateway": gw}
r["connect_refused"] = talk(gw, relay_port, ("CONNECT localhost:%d HTTP/1.1\r\n\r\n" % ok_port).encode(), 10000)
r["raw_ok"] = talk(gw, ok_port, b"\x00raw", 4)
r["dns_own"] = dns("localhost", ("192.0.2.53", 53))
# Straight to the other sandbox's door, whose policy would answer: dropped by the host's rules.
r["dns_other_door"] = dns("localhost", (other_door, relay_port))
print("RESULTS " + json.dumps(r), flush=True)
'''


class Echo:
    """TCP echo server on every address of the host (and a UDP socket on the same port), counting
    the connections and datagrams that reach it."""

    def __init__(self):
        self.tcp = socket.socket()
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("0.0.0.0", 0))
        self.tcp.listen(64)
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("0.0.0.0", self.port))
        self.udp.settimeout(0.2)
        self.accepted = 0
        self.datagrams = 0
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._udp, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.tcp.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    def _echo(self, c):
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        c.close()

    def _udp(self):
        while not self.stop:
            try:
                self.udp.recvfrom(2048)
                self.datagrams += 1
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        self.stop = True
        self.tcp.close()
        self.udp.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_for(test, what, fn, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        ok, got = fn()
        if ok:
            return got
        if time.monotonic() > deadline:
            test.fail("%s: last seen %r" % (what, got))
        time.sleep(0.1)


def remove_leftovers(state):
    """Sandboxes of the process driver outlive gantryd by design: after a failed run, stop the ones
    this test made (their network namespaces are named after their ids) and remove their networks."""
    import subprocess
    doors = os.path.join(state, "sandboxes", "egress")
    ids = [f[:-5] for f in os.listdir(doors) if f.endswith(".door")] if os.path.isdir(doors) else []
    for sid in ids:
        ns = "gantry-" + sid
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except OSError:
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        h = 1469598103934665603  # drivers/process_net.c: 12 hex digits of an FNV-1a hash of the whole id
        for ch in sid.encode():
            h = ((h ^ ch) * 1099511628211) & 0xffffffffffffffff
        host = "gxh%012x" % (h & 0xffffffffffff)
        for table in ("filter", "nat"):
            rules = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True).stdout
            for rule in rules.splitlines():
                if ("-i %s " % host) in rule and rule.startswith("-A "):
                    subprocess.run(["iptables", "-t", table, "-D"] + rule.split()[1:], capture_output=True)
        slots = "/run/gantry-egress"
        for slot in os.listdir(slots) if os.path.isdir(slots) else []:
            try:
                with open(os.path.join(slots, slot)) as f:
                    if f.read() == sid:
                        os.unlink(os.path.join(slots, slot))
            except OSError:
                pass


class Process(g.GantrydTest):
    def test_sandbox_reaches_only_what_the_policy_allows(self):
        if os.geteuid() != 0 or shutil.which("bwrap") is None or not os.path.exists("/usr/sbin/iptables"):
            self.skipTest("needs root, bubblewrap and iptables")
        state = tempfile.mkdtemp(prefix="gantry-egress-")
        os.chmod(state, 0o711)
        self.addCleanup(shutil.rmtree, state, True)
        self.addCleanup(remove_leftovers, state)  # runs before the rmtree, after the cluster stopped
        ok, bad = Echo(), Echo()
        self.addCleanup(ok.close)
        self.addCleanup(bad.close)
        relay_port = free_port()
        c = g.Cluster("egress-" + self._testMethodName,
                      run_flags=["--driver", "process", "--driver-state-dir", os.path.join(state, "sandboxes"),
                                 "--egress-relay-port", str(relay_port)] + LEASE_FLAGS)
        self.clusters.append(c)
        c.init()
        c.wait_ready()
        e = tr.Env.__new__(tr.Env)
        tr.Env._setup(e, c)

        def po(req, role="pa"):
            return e.call(role, policies_pb2, "Policies", "Set", req)

        def reads():
            return float(c.replicas[0].metric("gantry_egress_policy_reads_total") or 0)

        def relay_has_read_since(n):
            # A read that started after the write has finished: two more complete reads.
            return wait_for(self, "the relay re-read the policies", lambda: (reads() >= n + 2, reads()), timeout=10)
        allow = ["localhost:%d" % ok.port, "10.213.*:%d" % ok.port]
        po(PO.SetPolicyRequest(policy=PO.Policy(meta=tr.meta_pb2.ObjectMeta(namespace="default"),
                                                egress_allow=allow)), role="na")
        relay_has_read_since(reads())
        e.sb("user", "Create", S.CreateSandboxRequest(sandbox=tr.sandbox(
            "default", "agent", command=["/usr/bin/python3", "-c", SANDBOX_SCRIPT, str(ok.port), str(bad.port),
                                         str(relay_port)],
            driver_config={"process": json.dumps({"network": "egress"})})))

        def sandbox():
            return e.sb("user", "Get", S.GetSandboxRequest(namespace="default", name="agent"))
        sb = wait_for(self, "sandbox READY", lambda: (sandbox().status.phase == S.SandboxStatus.PHASE_READY,
                                                      sandbox().status), timeout=30)
        log = os.path.join(state, "sandboxes", "sandboxes", sandbox().meta.id + ".log")

        def lines(path=None):
            """The sandbox's output: the payloads of the driver's log records (drivers/process_log.h:
            a 16-byte little-endian header, u64 time, u32 length, u32 flags, then the bytes)."""
            import struct
            try:
                with open(path or log, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                return []
            out, i = bytearray(), 0
            while i + 16 <= len(data):
                _, n, _ = struct.unpack_from("<QII", data, i)
                if i + 16 + n > len(data):
                    break
                out += data[i + 16:i + 16 + n]
                i += 16 + n
            return out.decode("latin-1").splitlines()
        results = wait_for(self, "the sandbox's results", lambda: (
            any(x.startswith("RESULTS ") for x in lines()), lines()), timeout=60)
        r = json.loads([x for x in results if x.startswith("RESULTS ")][0][8:])
        self.assertTrue(r["gateway"].startswith("10.213."), r)
        self.assertEqual(r["proxy"], "http://%s:%d" % (r["gateway"], relay_port))
        self.assertEqual(r["connect_ok"], "HTTP/1.1 200 Connection Established\r\n\r\nping")
        self.assertTrue(r["connect_denied"].startswith("HTTP/1.1 403 Forbidden"), r)
        self.assertIn("denied.example", r["connect_denied"])
        self.assertTrue(r["http_ok"].startswith("GET / HTTP/1.1"), r)
        self.assertTrue(r["http_denied"].startswith("HTTP/1.1 403 Forbidden"), r)
        self.assertTrue(r["tls_ok"], r)
        self.assertEqual(r["tls_denied"], "", r)
        self.assertEqual(r["raw_ok"], "\x00raw")
        self.assertEqual(r["raw_denied_port"], "", r)
        # DNS to any resolver is answered by the relay under the same policy.
        self.assertEqual(r["dns_ok"], {"rcode": 0, "answers": 1, "last4": "127.0.0.1"}, r)
        self.assertEqual(r["dns_denied"], {"rcode": 5, "answers": 0, "last4": r["dns_denied"]["last4"]}, r)
        # DNS over TCP (to any resolver's port 53) is answered the same way, not decided as raw TCP.
        self.assertEqual(r["dns_tcp"][0], {"rcode": 0, "answers": 1, "last4": "127.0.0.1"}, r)
        self.assertEqual(r["dns_tcp"][1]["rcode"], 5, r)
        self.assertEqual(r["dns_tcp"][1]["answers"], 0, r)
        self.assertEqual(r["getaddrinfo_denied"], "gaierror", r)
        # Nothing reached the refused port, by TCP or UDP: the relay is the only way out.
        self.assertEqual((bad.accepted, bad.datagrams), (0, 0))
        self.assertGreaterEqual(ok.accepted, 4)

        # A second sandbox with its own policy (the door addresses only), which tightens the
        # namespace's: the relay decides by all three layers, as Decide does; and it cannot use the
        # first sandbox's door (its DNS question there is dropped, not answered under that policy).
        req = S.CreateSandboxRequest(sandbox=tr.sandbox(
            "default", "fenced", command=["/usr/bin/python3", "-c", FENCED_SCRIPT, str(ok.port), str(relay_port),
                                          r["gateway"]],
            driver_config={"process": json.dumps({"network": "egress"})}))
        req.sandbox.spec.policy.egress_allow.append("10.213.*:%d" % ok.port)
        e.sb("user", "Create", req)
        flog = [None]

        def fenced_results():
            sb2 = e.sb("user", "Get", S.GetSandboxRequest(namespace="default", name="fenced"))
            flog[0] = os.path.join(state, "sandboxes", "sandboxes", sb2.meta.id + ".log")
            got = [x for x in lines(flog[0]) if x.startswith("RESULTS ")]
            return bool(got), got
        f = json.loads(wait_for(self, "the fenced sandbox's results", fenced_results, timeout=60)[0][8:])
        self.assertTrue(f["connect_refused"].startswith("HTTP/1.1 403 Forbidden"), f)
        self.assertIn("sandbox policy's egress_allow", f["connect_refused"])
        self.assertEqual(f["raw_ok"], "\x00raw", f)
        self.assertEqual(f["dns_own"], {"rcode": 5, "answers": 0}, f)
        self.assertEqual(f["dns_other_door"], "ERROR TimeoutError", f)
        d = e.call("user", policies_pb2, "Egress", "Decide", PO.DecideEgressRequest(intent=PO.EgressIntent(
            namespace="default", sandbox="fenced", transport=PO.EgressTransport.EGRESS_TRANSPORT_HTTP_CONNECT,
            host="localhost", port=ok.port)))
        self.assertEqual((d.allowed, d.layer), (False, "sandbox"))
        self.assertIn(d.reason, f["connect_refused"])
        e.sb("user", "Delete", S.DeleteSandboxRequest(namespace="default", name="fenced"))

        # Tighten: the namespace no longer allows localhost; the loop's next CONNECT is refused.
        seen = len(lines())
        t0 = time.time()
        po(PO.SetPolicyRequest(policy=PO.Policy(meta=tr.meta_pb2.ObjectMeta(namespace="default"),
                                                egress_allow=["10.213.*:%d" % ok.port])), role="na")

        def refused():
            for x in lines()[seen:]:
                f = x.split(" ", 2)
                if len(f) == 3 and f[0] == "LOOP" and float(f[1]) > t0 and f[2].startswith("HTTP/1.1 403"):
                    return True, float(f[1]) - t0
            return False, lines()[-3:]
        took = wait_for(self, "a refusal after tightening", refused, timeout=10)
        self.assertLess(took, 2.0, "the tightened policy took %.2f s to apply" % took)

        # The audit trail has the refusals with their reason, attributed to the sandbox's owner.
        def denials():
            ev = e.call("pa", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(
                namespace="default", class_uid=4001, status="Failure")).events
            return any("denied.example" in x.api_operation and "no entry of the namespace policy" in x.status_detail
                       and x.actor_principal_id == e.ids["user"] for x in ev), [(x.api_operation, x.status_detail)
                                                                                  for x in ev]
        wait_for(self, "the CONNECT refusal in the audit trail", denials, timeout=10)
        allowed = e.call("pa", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(
            namespace="default", class_uid=4001, status="Success")).events
        self.assertTrue(any("localhost:%d" % ok.port in x.api_operation for x in allowed))
        # Egress.Decide answers as the relay did, for the same intents (one decision function).
        T = PO.EgressTransport

        def decide(**intent):
            return e.call("user", policies_pb2, "Egress", "Decide", PO.DecideEgressRequest(
                intent=PO.EgressIntent(namespace="default", **intent)))
        table = [  # (intent, what the relay did above, under the policy now in force)
            (dict(transport=T.EGRESS_TRANSPORT_HTTP_CONNECT, host="localhost", port=ok.port), False),
            (dict(transport=T.EGRESS_TRANSPORT_HTTP_CONNECT, host="denied.example", port=ok.port), False),
            (dict(transport=T.EGRESS_TRANSPORT_TCP, ip=r["gateway"], port=ok.port), True),
            (dict(transport=T.EGRESS_TRANSPORT_TCP, ip=r["gateway"], port=bad.port), False),
            (dict(transport=T.EGRESS_TRANSPORT_TLS, sni="other.example", ip=r["gateway"], port=ok.port), False),
        ]
        for intent, allowed in table:
            self.assertEqual(decide(**intent).allowed, allowed, intent)
        d = decide(transport=T.EGRESS_TRANSPORT_HTTP_CONNECT, host="localhost", port=ok.port)

        def tightened_refusal_audited():
            ev = e.call("pa", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(
                namespace="default", class_uid=4001, status="Failure")).events
            last = [x for x in ev if x.api_operation == "egress/HTTP_CONNECT localhost:%d" % ok.port]
            return any(d.reason in x.status_detail for x in last), [x.status_detail for x in last]
        wait_for(self, "the tightened refusal in the audit trail, with Decide's reason", tightened_refusal_audited,
                 timeout=10)
        dns_refusals = e.call("pa", audit_pb2, "Audit", "Query", audit_pb2.QueryAuditRequest(
            namespace="default", class_uid=4001, status="Failure")).events
        self.assertTrue(any(x.api_operation.startswith("egress/DNS denied.example") for x in dns_refusals),
                        [x.api_operation for x in dns_refusals])
        # And the decisions in /metrics.
        denied = c.replicas[0].metric('gantry_egress_connections_total{namespace="default",decision="denied"}')
        self.assertIsNotNone(denied)
        self.assertGreaterEqual(float(denied), 5)
        # Every policy change above reached the relay through the change feed: the whole policies
        # table was read once, at the start, however many rounds ran.
        self.assertEqual(float(c.replicas[0].metric("gantry_egress_policy_full_reads_total")), 1.0)
        self.assertGreater(reads(), 3)
        # Deleting the sandbox removes its network namespace.
        sid = sandbox().meta.id
        e.sb("user", "Delete", S.DeleteSandboxRequest(namespace="default", name="agent"))
        wait_for(self, "the sandbox's network namespace removed",
                 lambda: (not os.path.exists("/run/netns/gantry-" + sid), sid), timeout=30)
        print("egress: CONNECT, HTTP, TLS and raw TCP allowed and refused through the relay; nothing else left the "
              "sandbox; a sandbox with its own policy was decided by it and could not use another sandbox's door; a "
              "tightened policy applied in %.2f s; refusals audited" % took)


GROUPS = {"process": Process}

if __name__ == "__main__":
    group = sys.argv[1] if len(sys.argv) > 1 else "all"
    suite = unittest.TestSuite()
    for name, cls in GROUPS.items():
        if group in ("all", name):
            suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    ok = unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful()
    sys.exit(0 if ok else 1)
