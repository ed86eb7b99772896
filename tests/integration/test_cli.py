#!/usr/bin/env python3
"""The gantry CLI and the README's run command, end to end.

  test_cli.py readme   clone the repository into a temporary directory (a clean checkout of the
                       committed HEAD: uncommitted changes are not in it), run the README's run
                       command there, then drive the cluster only through `gantry`: create and list
                       every resource kind, share a sandbox, query and export the audit trail; kill
                       the replica the context lists first and keep working; run the command again,
                       which must reuse the cluster and bring the killed replica back, even while its
                       pid file names a zombie; `dev-cluster.sh clean` of another directory must keep
                       this cluster's contexts, and the final clean must remove them. The processes
                       are stopped and the directory removed at the end, whatever happened.
  test_cli.py docs     every `gantry ...` line in a code block of docs/*.md and README.md names a
                       command that exists (its --help exits 0); every command has --help with an
                       example and is documented in docs/cli.md; the bash completion parses.

GANTRY_BIN_DIR is the build tree holding server/gantryd and tools/gantry. The README's run command
honours it by skipping the package installation and the build (tools/run.sh): building the clone
from scratch would take most of the CI budget and test the compiler rather than the run command.
GANTRY_SOURCE_DIR is the repository to clone.
"""
import json
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import yaml  # python3-yaml (tools/install-deps.sh): checks that -o yaml parses

SRC = os.environ.get("GANTRY_SOURCE_DIR", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.environ["GANTRY_BIN_DIR"]
GANTRY = os.path.join(BIN, "tools", "gantry")


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


class Cli:
    """Runs gantry with a private config directory and no GANTRY_* variables from the caller."""

    def __init__(self, env):
        self.env = env

    def run(self, *args, token_file=None, stdin=None, ok=True, timeout=120):
        argv = [GANTRY] + list(args)
        if token_file is not None:
            argv[1:1] = ["--token-file", token_file]
        p = subprocess.run(argv, env=self.env, input=stdin, capture_output=True, text=True, timeout=timeout)
        shown = " ".join(shlex.quote(a) for a in argv[1:])
        print("$ gantry %s -> %d" % (shown, p.returncode), flush=True)
        if ok and p.returncode != 0:
            fail("gantry %s exited %d\nstdout: %s\nstderr: %s" % (shown, p.returncode, p.stdout, p.stderr))
        return p

    def json(self, *args, **kw):
        p = self.run("-o", "json", *args, **kw)
        try:
            return json.loads(p.stdout)
        except ValueError:
            fail("gantry %s: not JSON: %r" % (" ".join(args), p.stdout[:500]))


def free_base():
    """A base port B with B..B+2, B+100..B+102 and B+200..B+202 free on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(20000, 32768 - 203)  # below the ephemeral range (test_gantryd.free_port)
        socks = []
        try:
            for off in (0, 1, 2, 100, 101, 102, 200, 201, 202):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", base + off))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    fail("no free port range")


def readme_run_command():
    """The README's run command: the line of a sh code block that runs tools/run.sh."""
    with open(os.path.join(SRC, "README.md")) as f:
        text = f.read()
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.strip().startswith("tools/run.sh"):
                return line.split("#")[0].strip()
    fail("README.md has no sh code block running tools/run.sh")


def wait_until(what, fn, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.3)
    fail("timed out waiting for " + what)


def processes_under(path):
    """Pids of processes whose command line or working directory mentions @path."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink("/proc/%s/cwd" % d)
        except OSError:
            continue
        if path in cmd or cwd.startswith(path):
            pids.append(int(d))
    return pids


def test_readme():
    work = tempfile.mkdtemp(prefix="gantry-cli-")
    os.chmod(work, 0o711)  # the sandboxes' uid traverses into the process driver's state
    repo, dev = os.path.join(work, "repo"), os.path.join(work, "dev")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANTRY_")}
    env.update(XDG_CONFIG_HOME=os.path.join(work, "config"), HOME=os.path.join(work, "home"), GANTRY_BIN_DIR=BIN,
               GANTRY_DEV_DIR=dev, GANTRY_DEV_PORT=str(free_base()))
    os.makedirs(env["HOME"])
    try:
        subprocess.run(["git", "clone", "--quiet", SRC, repo], check=True, timeout=300)
        cmd = readme_run_command()
        print("== the README's run command in a clean clone: " + cmd, flush=True)
        p = subprocess.run(shlex.split(cmd), cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        print(p.stdout[-3000:], p.stderr[-3000:], flush=True)
        check(p.returncode == 0, "the run command exited %d" % p.returncode)
        check("READY" in p.stdout and "gantry-dev" in p.stdout, "the run command did not show a READY sandbox "
              "and the context")
        killed = drive(Cli(env), work, dev)
        # The replica killed above must look dead to `dev-cluster.sh start` even while it is a zombie
        # (SIGKILLed, not yet reaped by its parent), which `kill -0` calls alive. Whether it is one
        # right now depends on who reaps it, so make it one for sure: its pid file names a zombie
        # child of this test (exited, deliberately not reaped until the rerun is over).
        zombie = subprocess.Popen(["true"])
        wait_until("a zombie", lambda: proc_state(zombie.pid) == "Z", timeout=10)
        with open(os.path.join(dev, "replica%d.pid" % killed), "w") as f:
            f.write("%d\n" % zombie.pid)
        p = subprocess.run(["tools/dev-cluster.sh", "status"], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=60)
        check("replica %d: stopped" % killed in p.stdout, "status calls the zombie alive: %r" % p.stdout)
        # Running it again reuses the cluster: the killed replica comes back, nothing is recreated.
        p = subprocess.run(shlex.split(cmd), cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        print(p.stdout[-1500:], p.stderr[-1500:], flush=True)
        check(proc_state(zombie.pid) == "Z", "the zombie went away during the rerun: the check proved nothing")
        zombie.wait()
        check(p.returncode == 0, "the run command exited %d the second time" % p.returncode)
        check("already running" in p.stdout and "created; waiting" not in p.stderr,
              "the second run did not reuse the cluster and the sandbox")
        check("replica %d running: API" % killed in p.stdout, "the killed replica was not started again: %r" %
              p.stdout[-1500:])
        # `clean` of another directory keeps the contexts that point at this cluster.
        p = subprocess.run(["tools/dev-cluster.sh", "clean"], cwd=repo, capture_output=True, text=True, timeout=180,
                           env=dict(env, GANTRY_DEV_DIR=os.path.join(work, "another-cluster")))
        print("clean of another directory:", p.stdout, p.stderr, flush=True)
        kept = [c["name"] for c in Cli(env).json("context", "list")["contexts"]]
        check("gantry-dev" in kept and "gantry-dev-admin" in kept, "clean of another directory removed the "
              "contexts of this cluster: %r" % kept)
        members = Cli(env).json("--context", "gantry-dev-admin", "cluster", "members")["members"]
        check(len(members) == 3 and all(m["reachable"] for m in members), "after the rerun: %r" % members)
        print("PASS readme", flush=True)
    finally:
        cleanup(repo, env, work, dev)


def drive(cli, work, dev):
    admin = ["--context", "gantry-dev-admin"]
    # The current context is the user alice in namespace demo, written by the run command.
    me = cli.json("whoami")
    check(me["principal"]["meta"]["name"] == "alice", "whoami: %r" % me["principal"])
    check(any(p["method"] == "/gantry.v1.Sandboxes/Create" for p in me.get("permissions", [])),
          "whoami lists no effective permissions")
    check(cli.json("context", "show")["namespace"] == "demo", "the context's namespace")
    sbs = cli.json("sandbox", "list")["sandboxes"]
    check([s["meta"]["name"] for s in sbs] == ["hello"], "alice's sandboxes: %r" % sbs)
    as_yaml = yaml.safe_load(cli.run("-o", "yaml", "sandbox", "list").stdout)
    check(as_yaml == cli.json("sandbox", "list"), "-o yaml differs from -o json: %r" % as_yaml)
    check(sbs[0]["status"]["phase"] == "PHASE_READY", "hello is not READY")

    # Every resource kind, created and listed.
    cli.run(*admin, "namespace", "create", "cli-ns", "--description", "test_cli", "--label", "suite=cli")
    check("cli-ns" in names(cli.json(*admin, "namespace", "list")["namespaces"]), "namespace list")
    cli.run(*admin, "namespace", "update", "cli-ns", "--description", "updated")
    check(cli.json(*admin, "namespace", "get", "cli-ns")["description"] == "updated", "namespace update")
    cli.run(*admin, "user", "create", "carol", "--display-name", "Carol")
    check("carol" in names(cli.json(*admin, "user", "list")["principals"]), "user list")
    cli.run(*admin, "sa", "create", "cli-bot")
    check("cli-bot" in names(cli.json(*admin, "sa", "list")["principals"]), "sa list")
    cli.run(*admin, "role", "grant", "carol", "user", "--namespace", "cli-ns")
    check(any(b["role"] == "ROLE_USER" and b["namespace"] == "cli-ns"
              for b in cli.json(*admin, "role", "list", "--principal", "carol")["bindings"]), "role list")
    cli.run(*admin, "role", "grant", "cli-bot", "user", "--delegate", "cli-*", "--on-behalf-of-owner",
            "--delegate-kubernetes-namespace", "gpu-*", "--delegate-runtime-class", "gvisor",
            "--delegate-warm-pool", "agents-warm", "--delegate-template", "agent",
            "--delegate-node-selector", "pool=gpu", "--delegate-toleration", "gpu=a100:NoSchedule",
            "--delegate-toleration", "agents")
    bound = cli.json(*admin, "role", "list", "--principal", "cli-bot")["bindings"]
    check(len(bound) == 1 and bound[0]["delegation"]["namespace_patterns"] == ["cli-*"] and
          bound[0]["delegation"]["create_on_behalf_of_owner"] and
          bound[0]["delegation"]["allowed_kubernetes_namespaces"] == ["gpu-*"] and
          bound[0]["delegation"]["allowed_runtime_classes"] == ["gvisor"] and
          bound[0]["delegation"]["allowed_warm_pools"] == ["agents-warm"] and
          bound[0]["delegation"]["allowed_templates"] == ["agent"] and
          bound[0]["delegation"]["allowed_node_selectors"] == ["pool=gpu"] and
          bound[0]["delegation"]["allowed_tolerations"] == ["gpu=a100:NoSchedule", "agents"],
          "a delegated binding: %r" % bound)
    cli.run(*admin, "role", "revoke", "cli-bot", "user", "--delegated")
    check(cli.json(*admin, "role", "list", "--principal", "cli-bot")["bindings"] == [], "role revoke --delegated")
    carol_key = os.path.join(work, "carol.key")
    with open(carol_key, "w") as f:
        f.write(cli.run(*admin, "key", "create", "--principal", "carol", "--name", "cli").stdout)
    os.chmod(carol_key, 0o600)
    bot_key = cli.run(*admin, "key", "create", "--principal", "cli-bot", "--name", "bot").stdout.strip()
    check(bot_key.startswith("gtk_"), "key create printed %r" % bot_key[:8])
    keys = cli.json(*admin, "key", "list", "--principal", "cli-bot")["keys"]
    check(len(keys) == 1 and keys[0]["meta"]["name"] == "bot", "key list: %r" % keys)
    cli.run(*admin, "key", "revoke", keys[0]["meta"]["id"])
    check(cli.json(*admin, "key", "get", keys[0]["meta"]["id"])["revoked"], "key revoke")
    cli.run(*admin, "identity", "link", "carol", "--issuer", "mtls", "--subject", "carol-laptop")
    check([i["subject"] for i in cli.json(*admin, "identity", "list", "carol")["identities"]] == ["carol-laptop"],
          "identity list")
    cli.run(*admin, "quota", "set", "--namespace", "cli-ns", "--max-sandboxes", "3", "--max-gpus", "0")
    check(any(q["usage"]["namespace"] == "cli-ns" and q["quota"]["max_concurrent_sandboxes"] == 3
              for q in cli.json(*admin, "quota", "list")["quotas"]), "quota list")
    # Join tokens: created (printed once), listed without their secrets, revoked.
    tok = cli.run(*admin, "cluster", "join-token", "--uses", "2").stdout.strip()
    check(tok.startswith("gjt_"), "join-token printed %r" % tok[:8])
    tok_id = tok.split("_")[1]
    listed = cli.json(*admin, "cluster", "join-token", "list")["tokens"]
    check([t["uses"] for t in listed if t["id"] == tok_id] == [2], "join-token list: %r" % listed)
    check(tok.split("_")[2] not in cli.run(*admin, "cluster", "join-token", "list").stdout, "a listed secret")
    cli.run(*admin, "cluster", "join-token", "revoke", tok_id)
    check(tok_id not in [t["id"] for t in cli.json(*admin, "cluster", "join-token", "list")["tokens"]],
          "join-token revoke")
    p = cli.run(*admin, "cluster", "join-token", "revoke", tok_id, ok=False)
    check(p.returncode == 1 and "NOT_FOUND" in p.stderr, "revoking twice: %d %r" % (p.returncode, p.stderr))
    cli.run(*admin, "policy", "set", "--namespace", "cli-ns", "--allow-image", "busy*", "--allow-shares")
    check(cli.json(*admin, "policy", "get", "--namespace", "cli-ns")["allowed_images"] == ["busy*"], "policy get")
    cli.run(*admin, "policy", "effective", "--namespace", "cli-ns")
    # --allow-service-account reaches the server: with no gateway policy (whose list is empty: none), a namespace
    # listing one loosens it and is refused; nothing changes.
    p = cli.run(*admin, "policy", "set", "--namespace", "cli-ns", "--allow-service-account", "runner", ok=False)
    check(p.returncode == 1 and "FAILED_PRECONDITION" in p.stderr and "allowed_service_accounts" in p.stderr,
          "policy set --allow-service-account: %d %r" % (p.returncode, p.stderr))
    check(cli.json(*admin, "policy", "get", "--namespace", "cli-ns")["allowed_images"] == ["busy*"], "policy kept")
    cli.run(*admin, "provider", "create", "llm", "--namespace", "cli-ns", "--type", "generic", "--secret-file", "-",
            "--config", "url=https://llm.example", stdin="token=not-a-real-secret\n")
    provs = cli.json(*admin, "provider", "list", "--namespace", "cli-ns")["providers"]
    check(names(provs) == ["llm"] and provs[0]["secret_keys"] == ["token"], "provider list: %r" % provs)
    check("not-a-real-secret" not in json.dumps(provs), "the provider secret came back")
    cli.run(*admin, "provider", "grant", "llm", "carol", "--namespace", "cli-ns")
    check(len(cli.json(*admin, "provider", "grants", "llm", "--namespace", "cli-ns")["grants"]) == 1, "grants")

    # A context holding its token (read from stdin, never on the command line), used and removed.
    show = cli.json("context", "show")
    with open(carol_key) as f:
        cli.run("context", "create", "carol", "--endpoint", ",".join(show["endpoints"]), "--ca", show["ca"],
                "--token-stdin", "--namespace", "cli-ns", stdin=f.read())
    check(cli.json("--context", "carol", "whoami")["principal"]["meta"]["name"] == "carol", "carol's context")
    listed = cli.json("context", "list")
    check(listed["current_context"] == "gantry-dev" and "carol" in [c["name"] for c in listed["contexts"]],
          "context list: %r" % listed)
    check("not-a-real" not in cli.run("context", "show", "carol").stdout and
          cli.json("context", "show", "carol")["token"] == "(stored, hidden)", "context show printed the token")
    cli.run("context", "use", "carol")
    check(cli.json("whoami")["principal"]["meta"]["name"] == "carol", "context use")
    cli.run("context", "use", "gantry-dev")
    cli.run("context", "delete", "carol")
    check(cli.run("--context", "carol", "whoami", ok=False).returncode == 2, "a deleted context still works")

    # A sandbox in cli-ns, shared with carol, who then sees it.
    p = cli.run(*admin, "sandbox", "create", "sb1", "--namespace", "cli-ns", "--image", "busybox", "--wait", "--",
                "sleep", "600")
    check("READY" in p.stderr and "sb1" in p.stdout, "create --wait showed no progress to READY")
    check("sb1" in names(cli.json(*admin, "sandbox", "list", "--namespace", "cli-ns")["sandboxes"]), "list")
    carol_id = cli.json(*admin, "user", "get", "carol")["meta"]["id"]
    shares = cli.json(*admin, "sandbox", "share", "sb1", "carol", "--namespace", "cli-ns")["shares"]
    check([s["grantee_principal_id"] for s in shares] == [carol_id], "share: %r" % shares)
    seen = cli.json("sandbox", "shared-with-me", "-A", token_file=carol_key)["sandboxes"]
    check(names(seen) == ["sb1"], "carol's shared-with-me: %r" % seen)
    events = [json.loads(line) for line in cli.run("sandbox", "watch", "-o", "json", "--count", "1").stdout.split(
        "\n") if line]
    check(len(events) == 1 and events[0]["sandbox"]["meta"]["name"] == "hello", "watch: %r" % events)
    check(cli.json(*admin, "usage", "query", "-A")["records"], "usage query: no records")
    ev = cli.json(*admin, "audit", "query", "-A")["events"]
    check(any(e["api_operation"] == "/gantry.v1.Sandboxes/Share" for e in ev), "audit query: no share event")
    export = os.path.join(work, "audit.jsonl")
    cli.run(*admin, "audit", "export", "-A", "--file", export)
    with open(export) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    check(any("Sandboxes/Share" in json.dumps(e) for e in lines), "audit export has no share event")

    # Kill the replica the context lists first; everything keeps working through the others.
    first = cli.json("context", "show")["endpoints"][0]
    replica = int(first.rsplit(":", 1)[1]) - int(cli.env["GANTRY_DEV_PORT"]) - 99  # API port: base + 99 + id
    with open(os.path.join(dev, "replica%d.pid" % replica)) as f:
        pid = int(f.read())
    # A watch opened now is served by that replica (a fresh gantry starts at the first endpoint); it
    # must resume on another one and still report what happens after the kill.
    watch = subprocess.Popen([GANTRY, "sandbox", "watch", "-o", "json", "--timeout", "300"], env=cli.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([watch.stdout], [], [], 30)  # its first event: the stream is flowing
    check(ready, "the watch printed nothing in 30 s")
    first_event = watch.stdout.readline()
    check(connections_of(watch.pid, first), "the watch is not connected to %s" % first)
    print("== killing replica %d (pid %d, %s), the context's first endpoint" % (replica, pid, first), flush=True)
    os.kill(pid, signal.SIGKILL)
    sbs = cli.json("sandbox", "list")["sandboxes"]
    check(names(sbs) == ["hello"], "after the kill: alice's sandboxes: %r" % sbs)
    cli.run("sandbox", "create", "after-kill", "--image", "busybox", "--wait", "--", "sleep", "600")
    cli.run(*admin, "namespace", "create", "after-kill")
    wait_until("the killed replica shown unreachable", lambda: any(
        m["api_address"] == first and not m["reachable"] for m in cli.json(*admin, "cluster", "members")["members"]))
    cli.run("sandbox", "delete", "after-kill", "--wait")
    watch.terminate()
    out, err = watch.communicate(timeout=30)
    out = first_event + out
    seen = [json.loads(line) for line in out.splitlines() if line.strip()]
    phases = [e["sandbox"]["status"]["phase"] for e in seen if e["sandbox"]["meta"]["name"] == "after-kill"]
    check("resuming from revision" in err, "the watch did not resume: %r %r" % (err, out))
    check("PHASE_READY" in phases and seen[-1]["type"] == "EVENT_TYPE_DELETED",
          "the resumed watch missed after-kill's changes: %r" % [(e["type"], e["sandbox"]["meta"]["name"]) for e in seen])
    cli.run(*admin, "sandbox", "unshare", "sb1", carol_id, "--namespace", "cli-ns")
    check(cli.json("sandbox", "shared-with-me", "-A", token_file=carol_key)["sandboxes"] == [], "unshare")
    cli.run(*admin, "sandbox", "delete", "sb1", "--namespace", "cli-ns", "--wait")
    cli.run(*admin, "audit", "export", "-A", "--file", export)
    with open(export) as f:
        check("after-kill" in f.read(), "the audit export misses the writes after the kill")
    # Errors say what went wrong and what to do, with distinct exit codes.
    p = cli.run("namespace", "create", "not-allowed", ok=False)
    check(p.returncode == 4 and "gantry role grant" in p.stderr, "a denied call: %d %r" % (p.returncode, p.stderr))
    p = cli.run("sandbox", "get", "no-such-sandbox", ok=False)
    check(p.returncode == 1 and "NOT_FOUND" in p.stderr, "a missing sandbox: %d %r" % (p.returncode, p.stderr))
    p = cli.run("--endpoint", "127.0.0.1:1", "--ca", cli.json("context", "show")["ca"], "whoami", ok=False)
    check(p.returncode == 3 and "no endpoint answered" in p.stderr, "no endpoint: %d %r" % (p.returncode, p.stderr))
    return replica


def proc_state(pid):
    """The state letter of @pid (R, S, Z, ...), or "" when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def connections_of(pid, endpoint):
    """Remote addresses of @pid's established TCP connections to @endpoint (from ss)."""
    p = subprocess.run(["ss", "-tnpH", "state", "established", "dst", endpoint], capture_output=True, text=True)
    return [line.split()[-2] for line in p.stdout.splitlines() if "pid=%d," % pid in line]


def names(objs):
    return [o["meta"]["name"] for o in objs]


def cleanup(repo, env, work, dev):
    """Stop the cluster through the documented command, then make sure nothing is left running."""
    contexts = None
    if os.path.isdir(repo):
        p = subprocess.run(["tools/dev-cluster.sh", "clean"], cwd=repo, env=env, capture_output=True, text=True,
                           timeout=180)
        print("cleanup:", p.stdout, p.stderr, flush=True)
        if p.returncode == 0:
            contexts = subprocess.run([GANTRY, "context", "list", "-q"], env=env, capture_output=True, text=True,
                                      timeout=30).stdout.split()
    for pid in processes_under(work):
        try:
            os.kill(pid, signal.SIGKILL)
            print("cleanup: killed leftover pid %d" % pid, flush=True)
        except OSError:
            pass
    left = processes_under(work)
    shutil.rmtree(work, ignore_errors=True)
    check(not left, "processes survived the cleanup: %r" % left)
    check(contexts is None or not {"gantry-dev", "gantry-dev-admin"} & set(contexts),
          "clean left the contexts of the cluster it removed: %r" % contexts)


GLOBAL_WITH_VALUE = {"--context", "--endpoint", "--ca", "--token-file", "--namespace", "-n", "-o", "--output"}


def documented_commands():
    """(file, line, words) of each `gantry ...` line in a code block of docs/*.md and README.md."""
    files = [os.path.join(SRC, "README.md")] + sorted(
        os.path.join(SRC, "docs", f) for f in os.listdir(os.path.join(SRC, "docs")) if f.endswith(".md"))
    out = []
    for path in files:
        in_block = False
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if line.lstrip().startswith("```"):
                    in_block = not in_block
                    continue
                s = line.strip()
                if s.startswith("$ "):
                    s = s[2:]
                if not in_block or not s.startswith("gantry "):
                    continue
                toks, words, skip = s.split()[1:], [], False
                for t in toks:
                    if skip:
                        skip = False
                    elif t in GLOBAL_WITH_VALUE:
                        skip = True
                    elif t == "..." or t.startswith("-"):
                        continue
                    else:
                        words.append(t)
                out.append((os.path.relpath(path, SRC), n, words[:2]))
    return out


def test_docs():
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANTRY_")}
    env["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="gantry-cli-docs-")
    try:
        run = lambda *a: subprocess.run([GANTRY] + list(a), env=env, capture_output=True, text=True, timeout=30)
        listed = run("help", "--commands")
        check(listed.returncode == 0, "gantry help --commands failed")
        commands = [tuple(line.split()) for line in listed.stdout.splitlines() if line.strip()]
        check(len(commands) > 50, "only %d commands listed" % len(commands))
        with open(os.path.join(SRC, "docs", "cli.md")) as f:
            cli_md = f.read()
        problems = []
        for cmd in commands:
            p = run(*cmd, "--help")
            text = p.stdout
            if p.returncode != 0 or not text.startswith("usage: gantry " + " ".join(cmd)):
                problems.append("%s: --help exited %d: %r" % (" ".join(cmd), p.returncode, text[:80]))
            example = text.split("Example:\n", 1)[1] if "Example:\n" in text else ""
            if "gantry " + cmd[0] not in example:
                problems.append("%s: --help has no example using it" % " ".join(cmd))
            if not re.search(r"^\s*(gantry\s+)?%s\b" % re.escape(" ".join(cmd)), cli_md, re.M):
                problems.append("%s: not documented in docs/cli.md" % " ".join(cmd))
        groups = sorted({c[0] for c in commands})
        for g in groups:
            if run(g, "--help").returncode != 0:
                problems.append("gantry %s --help failed" % g)
        known = set(commands)
        docs = documented_commands()
        check(len(docs) > 20, "only %d documented gantry lines found" % len(docs))
        for path, n, words in docs:
            cmd = tuple(words[:2]) if tuple(words[:2]) in known else tuple(words[:1])
            if cmd not in known:
                problems.append("%s:%d: `gantry %s` is not a command" % (path, n, " ".join(words)))
                continue
            if run(*cmd, "--help").returncode != 0:
                problems.append("%s:%d: `gantry %s --help` failed" % (path, n, " ".join(cmd)))
        p = run("sandbox", "no-such-command")
        if p.returncode != 2 or "gantry sandbox --help" not in p.stderr:
            problems.append("an unknown subcommand: exit %d, %r" % (p.returncode, p.stderr))
        comp = run("completion", "bash")
        b = subprocess.run(["bash", "-n"], input=comp.stdout, capture_output=True, text=True)
        if comp.returncode != 0 or b.returncode != 0 or "complete -o default -F _gantry gantry" not in comp.stdout:
            problems.append("gantry completion bash: %s" % b.stderr)
        # The completion offers the subcommands of a group.
        script = comp.stdout + '\nCOMP_WORDS=(gantry sandbox sh); COMP_CWORD=2; _gantry; echo "${COMPREPLY[@]}"\n'
        b = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
        if b.stdout.split() != ["share", "shared-with-me"]:
            problems.append("completion of `gantry sandbox sh`: %r" % b.stdout)
        for p in problems:
            print("FAIL: " + p)
        check(not problems, "%d problems" % len(problems))
        print("PASS docs: %d commands, %d documented lines" % (len(commands), len(docs)), flush=True)
    finally:
        shutil.rmtree(env["XDG_CONFIG_HOME"], ignore_errors=True)


if __name__ == "__main__":
    {"readme": test_readme, "docs": test_docs}[sys.argv[1]]()
