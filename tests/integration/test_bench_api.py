"""Smoke test of `gantry-bench api --quick`: it starts its clusters, runs every phase, exits 0, and
leaves nothing behind. No performance figure is checked (docs/benchmarks.md has those).

Run: /usr/bin/python3 test_bench_api.py gantry|etcd
  gantry   gantry-bench api --quick
  etcd     gantry-bench api --quick --baseline etcd (exit 77, skipped, without /usr/bin/etcd)

Environment (set by tests/integration/CMakeLists.txt):
  GANTRY_BENCH   path of gantry-bench (it finds gantryd next to it in the build tree)
  GANTRY_IT_WORK scratch directory inside the build tree (TMPDIR of the bench)
"""

import json
import os
import subprocess
import sys
import tempfile

BENCH = os.environ.get("GANTRY_BENCH", "")
WORK_ROOT = os.environ.get("GANTRY_IT_WORK", tempfile.gettempdir())
ETCD = "/usr/bin/etcd"

GANTRY_ROWS = [
    "1a create, sequential, to the leader",
    "1b create, sequential, to a follower",
    "2 create, concurrent, all replicas",
    "3 get, followers",
    "4 List 100 objects",
    "6 watch: 20 watchers, 20 creates",
    "gantry watch: 20 watchers on",
    "5 create under leader SIGKILL",
    "gantry failover: SIGKILL of the leader",
    "gantry after phases 1-4",
]
ETCD_ROWS = [
    "1a Put, sequential, to the leader",
    "1b Put, sequential, to a follower",
    "2 Put, concurrent, all members",
    "3 Range linearizable, followers",
    "3 Range serializable, followers",
    "4 Range prefix, 100 keys",
    "etcd watch: 20 watchers on",
    "5 Put under leader SIGKILL",
    "etcd failover: SIGKILL of the leader",
    "etcd   after phases 1-4",
    "ratios gantry/etcd",
]
GANTRY_PHASES = {"create_seq_leader", "create_seq_follower", "create_concurrent", "get_followers", "list", "watch",
                 "failover"}
ETCD_PHASES = {"put_seq_leader", "put_seq_follower", "put_concurrent", "range_followers_linearizable",
               "range_followers_serializable", "range_prefix", "watch", "failover"}


def fail(msg, out=""):
    print("FAIL: " + msg)
    if out:
        print(out[-6000:])
    sys.exit(1)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "gantry"
    if mode not in ("gantry", "etcd"):
        fail("usage: test_bench_api.py gantry|etcd")
    if mode == "etcd" and not os.access(ETCD, os.X_OK):
        print("SKIP: %s is not installed (tools/install-deps.sh installs etcd-server)" % ETCD)
        sys.exit(77)
    work = tempfile.mkdtemp(prefix="bench-api-", dir=WORK_ROOT)
    json_path = os.path.join(work, "out.json")
    args = [BENCH, "api", "--quick", "--json", json_path] + (["--baseline", "etcd"] if mode == "etcd" else [])
    env = dict(os.environ, TMPDIR=work)
    try:
        p = subprocess.run(args, capture_output=True, timeout=240, env=env)
    except subprocess.TimeoutExpired:
        fail("gantry-bench api did not finish within 240 s")
    out = p.stdout.decode(errors="replace") + "\n--- stderr\n" + p.stderr.decode(errors="replace")
    if p.returncode != 0:
        fail("gantry-bench api exited %d" % p.returncode, out)
    stdout = p.stdout.decode(errors="replace")
    rows = GANTRY_ROWS + (ETCD_ROWS if mode == "etcd" else [])
    missing = [r for r in rows if r not in stdout]
    if missing:
        fail("the table lacks %s" % missing, out)
    with open(json_path) as f:
        data = json.load(f)
    got = {(ph["system"], ph["phase"]) for ph in data["phases"]}
    want = {("gantry", k) for k in GANTRY_PHASES} | ({("etcd", k) for k in ETCD_PHASES} if mode == "etcd" else set())
    if not want <= got:
        fail("the JSON lacks phases %s" % sorted(want - got), out)
    for ph in data["phases"]:
        if ph["failed"]:
            fail("phase %s/%s failed: %s" % (ph["system"], ph["phase"], ph.get("why")), out)
        if ph["phase"] == "failover" and ph["missing"] != 0:
            fail("%s lost acknowledged writes" % ph["system"], out)
        if ph["phase"] == "watch" and (ph["watch_events_delivered"] != 20 * 20 or
                                       ph["watch_repeated_or_out_of_order"] != 0):
            fail("%s watch: %d of 400 events delivered, %d repeated or out of order" %
                 (ph["system"], ph["watch_events_delivered"], ph["watch_repeated_or_out_of_order"]), out)
    for key in ("nproc", "loadavg_start", "loadavg_end"):
        if key not in data["machine"]:
            fail("the JSON lacks machine.%s" % key, out)
    # The bench removes its clusters' directories (under TMPDIR) when it ends.
    left = [d for d in os.listdir(work) if d.startswith("gantry-bench-")]
    if left:
        fail("left behind: %s" % left, out)
    os.unlink(json_path)
    os.rmdir(work)
    print("bench api %s: %d phases, every one ran" % (mode, len(data["phases"])))


if __name__ == "__main__":
    main()
