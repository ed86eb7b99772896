#!/usr/bin/python3
"""`gantry drill` on the local 3-replica cluster (tools/dev-cluster.sh, this build's binaries): each
drill runs under load and its report is checked, and the checker is shown to catch a lost write.

  leader-loss    the leader's replica is SIGKILLed, then started again: another member leads, no
                 acknowledged write is lost, the cluster is whole again;
  minority-loss  one voter that does not lead: the same;
  quorum-loss    two of three voters at once: writes stop (the RTO covers at least the outage),
                 nothing acknowledged is lost once they are back;
  a hook that deletes an acknowledged write instead of killing anything: the drill reports it
                 lost and exits 1 (the RPO check can fail);
  bad command lines: exit 2 with the reason, nothing started;
  restore: `tools/dev-cluster.sh restore FILE KEY` replaces the cluster by one restored from a
                 sealed backup (the writes up to the backup, none after; three voters; the old API
                 key works), and refuses a corrupted backup, or one without its key, leaving the
                 cluster untouched.

Short phases (--before-ms 1500 --down-ms 2500 --after-ms 1000) keep each drill short; with the
cluster starts, the restores and the three drills the test takes about 2.5-3.5 minutes on the CI
machine (150-197 s measured). The documented defaults are longer (docs/operations.md)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_cli import BIN, GANTRY, SRC, check, fail, free_base  # noqa: E402

PHASES = ["--before-ms", "1500", "--down-ms", "2500", "--after-ms", "1000", "--writers", "3"]
KILL = "tools/dev-cluster.sh kill $GANTRY_DRILL_MEMBER"
START = "tools/dev-cluster.sh start $GANTRY_DRILL_MEMBER"


def main():
    work = tempfile.mkdtemp(prefix="gantry-drill-")
    os.chmod(work, 0o711)
    dev = os.path.join(work, "dev")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANTRY_")}
    env.update(GANTRY_BIN_DIR=BIN, GANTRY_DEV_DIR=dev, GANTRY_DEV_PORT=str(free_base()),
               XDG_CONFIG_HOME=os.path.join(work, "config"), HOME=work)

    def sh(*args, timeout=300):
        return subprocess.run(list(args), cwd=SRC, env=env, capture_output=True, text=True, timeout=timeout)

    try:
        p = sh("tools/dev-cluster.sh", "start")
        check(p.returncode == 0, "the dev cluster did not start: %s %s" % (p.stdout, p.stderr))
        for line in sh("tools/dev-cluster.sh", "env").stdout.splitlines():
            k, v = line.replace("export ", "", 1).split("=", 1)
            env[k] = v
        env["GANTRY_TOKEN"] = open(os.path.join(dev, "admin.key")).read().strip()

        def members():
            p = sh(GANTRY, "-o", "json", "cluster", "members")
            check(p.returncode == 0, "cluster members: %s" % p.stderr)
            return json.loads(p.stdout)["members"]

        def wait_voters():
            for _ in range(200):
                ms = members()
                if sum(1 for m in ms if m["role"] == "MEMBER_ROLE_VOTER" and m.get("reachable")) == 3:
                    return ms
                subprocess.run(["sleep", "0.2"])
            fail("the dev cluster never had 3 reachable voters")

        def drill(name, *extra, expect=0):
            ms = wait_voters()
            leader = [m["name"] for m in ms if m.get("leader")][0]
            report = os.path.join(work, name + ".json")
            p = sh(GANTRY, "drill", name, "--kill-cmd", KILL, "--start-cmd", START, "--report", report, *PHASES,
                   *extra)
            print("== gantry drill %s %s: exit %d\n%s%s" % (name, " ".join(extra), p.returncode, p.stdout,
                                                              p.stderr[-2000:]), flush=True)
            check(p.returncode == expect, "drill %s exited %d, not %d" % (name, p.returncode, expect))
            with open(report) as f:
                r = json.load(f)
            check(r["drill"] == name, "the report names another drill: %r" % r["drill"])
            return r, leader

        # leader-loss: the leader is the victim, another member leads meanwhile, nothing is lost.
        r, leader = drill("leader-loss")
        check([v["name"] for v in r["victims"]] == [leader], "leader-loss killed %r, the leader was %s" %
              (r["victims"], leader))
        check(r["recovered"] and r["rpo_lost_writes"] == 0, "leader-loss: %r" % r)
        check(r["writes"]["acknowledged"] > 20, "too few writes to prove anything: %r" % r["writes"])
        check(r["reads"]["stale"] == 0, "a read missed an acknowledged write: %r" % r["reads"])
        led = [e["event"] for e in r["timeline"] if e["event"].startswith("leader: ")]
        check(any(e != "leader: " + leader for e in led), "no other leader seen after the kill: %r" % led)
        check(r["rto_ms"] > 0, "no RTO measured: %r" % r)
        # minority-loss: one voter that does not lead.
        r, leader = drill("minority-loss")
        check(len(r["victims"]) == 1 and r["victims"][0]["name"] != leader, "minority-loss victims: %r" %
              r["victims"])
        check(r["recovered"] and r["rpo_lost_writes"] == 0, "minority-loss: %r" % r)
        # quorum-loss: two of three; no write can be acknowledged while they are down.
        r, leader = drill("quorum-loss")
        names = [v["name"] for v in r["victims"]]
        check(len(names) == 2 and leader in names, "quorum-loss victims: %r (leader %s)" % (names, leader))
        check(r["recovered"] and r["rpo_lost_writes"] == 0, "quorum-loss: %r" % r)
        outage = r["phases_ms"]["restart"] - r["phases_ms"]["fault"]
        check(r["rto_ms"] >= outage, "writes were acknowledged without a majority? RTO %d ms, outage %d ms" %
              (r["rto_ms"], outage))
        # The checker can fail: a "kill" that deletes an acknowledged write (writer 0's first, acknowledged
        # long before the fault) is reported as a lost write.
        lose = ("n=$(gantry -o json sa list | python3 -c 'import json,sys; print([p[\"meta\"][\"name\"] for p in "
                "json.load(sys.stdin)[\"principals\"] if p[\"meta\"][\"name\"].endswith(\"-0-0\")][0])'); "
                "gantry sa delete \"$n\" >&2")
        env["PATH"] = os.path.join(BIN, "tools") + ":" + env.get("PATH", "/usr/bin:/bin")
        ms = wait_voters()
        report = os.path.join(work, "lose.json")
        p = sh(GANTRY, "drill", "minority-loss", "--kill-cmd", lose, "--start-cmd", "true", "--report", report,
               *PHASES)
        print("== a drill whose hook deletes a write: exit %d\n%s%s" % (p.returncode, p.stdout, p.stderr[-1500:]))
        check(p.returncode == 1, "a lost write was not reported (exit %d)" % p.returncode)
        with open(report) as f:
            r = json.load(f)
        check(r["rpo_lost_writes"] == 1, "lost writes: %r" % r["rpo_lost_writes"])
        check("FAILED" in p.stdout, "the summary does not say FAILED")
        # The drill cleans up after itself.
        p = sh(GANTRY, "-o", "json", "sa", "list")
        left = [x["meta"]["name"] for x in json.loads(p.stdout).get("principals", []) if
                x["meta"]["name"].startswith("drill-")]
        check(left == [], "the drills left service accounts behind: %d" % len(left))
        # Bad command lines: exit 2 with the reason, before anything runs.
        for args, why in ((["--start-cmd", "true"], "--kill-cmd"),
                          (["--kill-cmd", "true", "--start-cmd", "true", "--writers", "0"], "--writers"),
                          (["--kill-cmd", "true", "--start-cmd", "true", "--down-ms", "x"], "--down-ms"),
                          (["--kill-cmd", "true", "--start-cmd", "true", "surplus"], "")):
            p = sh(GANTRY, "drill", "leader-loss", *args)
            check(p.returncode == 2, "%r: exit %d, not 2" % (args, p.returncode))
            check(why in p.stderr, "%r: the message does not name %s: %r" % (args, why, p.stderr))
        # Restoring the whole local cluster from a sealed backup, in one command.
        key = os.path.join(work, "backup.key")
        with open(key, "w") as f:
            f.write(os.urandom(32).hex() + "\n")
        os.chmod(key, 0o600)
        check(sh(GANTRY, "sa", "create", "before-backup").returncode == 0, "sa create")
        backup = os.path.join(work, "cluster.gbk")
        p = sh(GANTRY, "cluster", "backup", backup, "--encrypt-key-file", key)
        check(p.returncode == 0, "backup: %s" % p.stderr)
        check(sh(GANTRY, "sa", "create", "after-backup").returncode == 0, "sa create")

        def lease():
            p = sh(GANTRY, "-o", "json", "cluster", "lease")
            check(p.returncode == 0, "cluster lease: %s" % p.stderr)
            return json.loads(p.stdout)

        # After the backup the old cluster moves on: its lease holder dies, the next one raises the
        # driver's fence past the epoch the backup holds.
        before = lease()
        holder = before["holder"].split("/")[0]
        sh("tools/dev-cluster.sh", "kill", holder)
        for _ in range(150):
            now = lease()
            if int(now.get("epoch", 0)) > int(before["epoch"]) and now["holder"]:
                break
            subprocess.run(["sleep", "0.2"])
        check(int(lease()["epoch"]) > int(before["epoch"]), "the lease never moved: %r" % lease())
        sh("tools/dev-cluster.sh", "start", holder)
        with open(backup, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 0x40
        bad = os.path.join(work, "corrupted.gbk")
        with open(bad, "wb") as f:
            f.write(data)

        def names():
            p = sh(GANTRY, "-o", "json", "sa", "list")
            check(p.returncode == 0, "sa list: %s" % p.stderr)
            return [x["meta"]["name"] for x in json.loads(p.stdout).get("principals", [])]

        for args, why in (([bad, key], "corrupted"), ([backup], "no key")):
            p = sh("tools/dev-cluster.sh", "restore", *args)
            check(p.returncode == 1 and "untouched" in p.stderr, "restore of a backup with %s: exit %d %r" %
                  (why, p.returncode, p.stderr))
            check("after-backup" in names(), "the refused restore (%s) changed the cluster" % why)
        p = sh("tools/dev-cluster.sh", "restore", backup, key, timeout=600)
        print("== restore:", p.stdout, p.stderr[-1500:], flush=True)
        check(p.returncode == 0, "restore exited %d" % p.returncode)
        wait_voters()
        got = names()
        check("before-backup" in got and "after-backup" not in got, "restored service accounts: %r" % got)
        # The restored cluster starts ahead of the old one's fence: its first lease holder drives the
        # sandboxes at once, no driver refuses its epoch.
        p = sh(GANTRY, "sandbox", "create", "after-restore", "--image", "busybox", "--wait", "--timeout", "60", "--",
               "sleep", "300", timeout=120)
        check(p.returncode == 0, "a sandbox on the restored cluster: exit %d %s" % (p.returncode, p.stderr[-800:]))
        epoch = int(lease()["epoch"])
        check(epoch > 1600000000000, "the restored lease epoch did not jump past the old fence: %d" % epoch)
        for i in (1, 2, 3):
            with open(os.path.join(dev, "replica%d.log" % i)) as f:
                stale = [line for line in f if "refused epoch" in line]
            check(stale == [], "replica %d was fenced out after the restore: %r" % (i, stale[:2]))
        sh(GANTRY, "sandbox", "delete", "after-restore", "--wait", timeout=120)
        # gantry drill restore: the same procedure as a drill under load. The backup is written by the
        # hook while the writers run; everything acknowledged before it must come back, what came after
        # is counted as lost.
        wait_voters()
        report = os.path.join(work, "restore.json")
        backup_cmd = 'gantry cluster backup "$GANTRY_DRILL_BACKUP" --encrypt-key-file ' + key
        p = sh(GANTRY, "drill", "restore", "--kill-cmd", KILL, "--backup-cmd", backup_cmd,
               "--restore-cmd", 'tools/dev-cluster.sh restore "$GANTRY_DRILL_BACKUP" ' + key, "--report", report,
               *PHASES, timeout=600)
        print("== gantry drill restore: exit %d\n%s%s" % (p.returncode, p.stdout, p.stderr[-2000:]), flush=True)
        check(p.returncode == 0, "drill restore exited %d" % p.returncode)
        with open(report) as f:
            r = json.load(f)
        check(r["drill"] == "restore" and len(r["victims"]) == 3, "restore drill victims: %r" % r["victims"])
        check(r["passed"] and r["recovered"] and r["backup_ok"] and r["rpo_within_promise"], "restore: %r" % r)
        check(r["writes"]["acknowledged"] > 20, "too few writes to prove anything: %r" % r["writes"])
        check(r["rpo_lost_writes"] == r["lost_after_backup"], "restore: lost %d, after the backup %d" %
              (r["rpo_lost_writes"], r["lost_after_backup"]))
        check(r["rto_ms"] >= r["phases_ms"]["restart"] - r["phases_ms"]["fault"], "restore RTO: %r" % r)
        # A backup that fails: nothing is killed, the drill fails, the cluster keeps serving.
        report = os.path.join(work, "restore-nobackup.json")
        p = sh(GANTRY, "drill", "restore", "--kill-cmd", "echo killed-$GANTRY_DRILL_MEMBER >&2", "--backup-cmd",
               "false", "--restore-cmd", "true", "--report", report, *PHASES, timeout=300)
        check(p.returncode == 1 and "killed-" not in p.stderr, "a failed backup: exit %d %r" %
              (p.returncode, p.stderr[-500:]))
        with open(report) as f:
            r = json.load(f)
        check(not r["backup_ok"] and not r["passed"] and r["rpo_lost_writes"] == 0, "restore-nobackup: %r" % r)
        check(any("nothing was killed" in x["event"] for x in r["timeline"]), "restore-nobackup timeline")
        # The promise can be seen broken: a restore hook that uses the OLDER backup (taken before this
        # drill's writes) loses writes acknowledged before the drill's backup, and the drill says so.
        wait_voters()
        report = os.path.join(work, "restore-old.json")
        p = sh(GANTRY, "drill", "restore", "--kill-cmd", KILL, "--backup-cmd", backup_cmd,
               "--restore-cmd", "tools/dev-cluster.sh restore %s %s" % (backup, key), "--report", report,
               *PHASES, timeout=600)
        print("== gantry drill restore from an older backup: exit %d\n%s" % (p.returncode, p.stdout), flush=True)
        check(p.returncode == 1, "a restore that lost early writes passed (exit %d)" % p.returncode)
        with open(report) as f:
            r = json.load(f)
        check(r["recovered"] and not r["rpo_within_promise"] and "BROKEN" in p.stdout, "restore-old: %r" % r)
        print("drill: restore RTO %d ms, %d write(s) after the backup lost as expected" %
              (json.load(open(os.path.join(work, "restore.json")))["rto_ms"],
               json.load(open(os.path.join(work, "restore.json")))["lost_after_backup"]))
        print("drill: all checks passed")
    finally:
        subprocess.run(["tools/dev-cluster.sh", "stop"], cwd=SRC, env=env, capture_output=True, timeout=180)
        if os.environ.get("GANTRY_IT_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
