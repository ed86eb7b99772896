"""Checkers for tests/jepsen: each takes the recorded history (and the artefacts the run left) and
returns a verdict dict {"name", "valid" (True/False), "summary", "anomalies": [...]}.

The register checker is a Wing-Gong-Lowe search (linearizability of a compare-and-set register),
written for this harness: calls and returns sorted by time in a doubly linked list; the search
linearizes a pending call whose model step is legal, lifts it out of the list, backtracks when it
meets the return of a call it has not linearized, and memoises (linearized set, state) pairs.
Operations whose outcome is unknown (timeouts, UNAVAILABLE) have no return: they may take effect
at any point after their call, or never.
"""

import json
import os
import re

INF = float("inf")


def verdict(name, anomalies, summary):
    return {"name": name, "valid": not anomalies, "summary": summary, "anomalies": anomalies[:50],
            "anomaly_count": len(anomalies)}


# ---------------------------------------------------------------- crashes

# gdb ("in f () from /lib/.../libuv.so.1") and AddressSanitizer ("in f (/lib/.../libuv.so.1+0x1b789)").
_LIB_FRAME = re.compile(r"(from |\()/(usr/)?lib/\S*/(libdqlite|libraft|libuv|libc|libpthread)\.so")
_UNKNOWN_FRAME = re.compile(r"^#\d+\s+0x[0-9a-f]+ (in \?\? \(\)|\s*\(<unknown module>\))$")
_GLIBC_FRAME = re.compile(r" (start_thread|clone3?) \(.*\) at \.\./sysdeps/|start_thread \(.*\) at \./nptl/|"
                          r" in (start_thread|clone3?) (\.\./sysdeps|nptl)/")


def asan_backtrace(log):
    """The crashing thread's frames from the last AddressSanitizer report in what one replica
    process wrote ("" if none): under ASan there is no core file (ASan turns core dumps off)."""
    lines = log.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if "ERROR: AddressSanitizer:" in lines[i]:
            out = []
            for x in lines[i + 1:]:
                x = x.strip()
                if x.startswith("#"):
                    out.append(x)
                elif out:
                    break
            return "\n".join(out)
    return ""


def dqlite_thread_crash(exit_code, backtrace):
    """True when a crash is dqlite 1.11's own (dqlite-protocol.md: bug 8, an outstanding request
    when the node loses leadership; fixed in dqlite 1.12): SIGSEGV or SIGABRT on a thread that
    dqlite started (a libdqlite.so frame), with no frame of Gantry's on it, only libdqlite, libraft,
    libuv and glibc frames and unknown addresses (the corrupt handle's callback). A crash without
    a backtrace, or with any frame of ours, is never excused."""
    if exit_code not in (-11, -6):
        return False
    frames, seen = [], set()
    for line in backtrace.splitlines():
        line = line.strip()
        if line.startswith("#") and line not in seen:  # gdb prints the signal frame twice
            seen.add(line)
            frames.append(line)
    if not frames or not any("libdqlite.so" in f for f in frames):
        return False
    return all(_LIB_FRAME.search(f) or _UNKNOWN_FRAME.match(f) or _GLIBC_FRAME.search(f) for f in frames)


# ---------------------------------------------------------------- register (WGL)

class _Entry:
    __slots__ = ("op", "is_call", "match", "prev", "next", "t")

    def __init__(self, op, is_call, t):
        self.op, self.is_call, self.t = op, is_call, t
        self.match = self.prev = self.next = None


def _step(state, op):
    """The CAS register model: (legal, new state)."""
    f = op["f"]
    if f == "read":
        return state == op["value"], state
    if f == "cas":
        frm, to = op["value"]
        if op["type"] == "fail":  # ABORTED: the value was not `frm` at that point
            return state != frm, state
        return (state == frm, to) if state == frm else (False, state)
    raise ValueError(f)


def _plain(op):
    return {k: v for k, v in op.items() if k != "bit"} if op else op


def wgl(ops, init, budget=20_000_000):
    """ops: dicts with index, f, value, type (ok/fail/info), invoke, complete (INF for info).
    Returns (True, None) if linearizable, (False, witness) if not, (None, why) if the budget ran out."""
    entries = []
    for i, op in enumerate(ops):
        op["bit"] = 1 << i
        c = _Entry(op, True, op["invoke"])
        entries.append(c)
        if op["complete"] != INF:
            r = _Entry(op, False, op["complete"])
            c.match = r
            entries.append(r)
    # Calls before returns at equal times: concurrent operations may overlap by a tie.
    entries.sort(key=lambda e: (e.t, 0 if e.is_call else 1))
    head = _Entry(None, True, -1)
    prev = head
    for e in entries:
        prev.next, e.prev = e, prev
        prev = e

    def lift(e):
        e.prev.next = e.next
        if e.next:
            e.next.prev = e.prev
        if e.match:
            m = e.match
            m.prev.next = m.next
            if m.next:
                m.next.prev = m.prev

    def unlift(e):
        if e.match:
            m = e.match
            m.prev.next = m
            if m.next:
                m.next.prev = m
        e.prev.next = e
        if e.next:
            e.next.prev = e

    state, linearized = init, 0
    cache = set()
    stack = []
    entry = head.next
    steps = 0
    best = (0, None)
    deepest = (0, None, None)
    while entry is not None:
        steps += 1
        if steps > budget:
            return None, "search budget of %d steps exhausted" % budget
        if entry.is_call:
            ok, new = _step(state, entry.op)
            if ok:
                key = (linearized | entry.op["bit"], new)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state, linearized = new, linearized | entry.op["bit"]
                    lift(entry)
                    if len(stack) > best[0]:
                        best = (len(stack), entry.op)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if len(stack) >= deepest[0]:
                # The furthest the search got: this call's return came and no order of the calls
                # before it could explain it.
                deepest = (len(stack), entry.op, state)
            if not stack:
                return False, {"cannot_linearize": _plain(deepest[1]), "value_there": deepest[2],
                               "ops_linearized_before": deepest[0], "last_linearized": _plain(best[1])}
            e, state = stack.pop()
            linearized &= ~e.op["bit"]
            unlift(e)
            entry = e.next
    return True, None


def check_register(history, init="0"):
    """history: completed register operations (one dict per op: key, f, value, type, invoke, complete)."""
    anomalies = []
    by_key = {}
    for op in history:
        if op["f"] == "read" and op["type"] != "ok":
            continue  # a read that did not return constrains nothing
        if op["f"] == "cas" and op["type"] == "info":
            op = dict(op, complete=INF)
        by_key.setdefault(op["key"], []).append(dict(op))
    counts = {"ok": 0, "fail": 0, "info": 0}
    unknown = []
    for key, ops in sorted(by_key.items()):
        for op in ops:
            counts[op["type"]] += 1
        ok, why = wgl(ops, init)
        if ok is False:
            anomalies.append({"key": key, "non_linearizable": why})
        elif ok is None:
            unknown.append(key)
            anomalies.append({"key": key, "unknown": why})
    return verdict("register", anomalies,
                   "%d keys, %d ops (%d ok, %d failed, %d indeterminate)%s" % (
                       len(by_key), sum(counts.values()), counts["ok"], counts["fail"], counts["info"],
                       ", NOT linearizable" if anomalies else ", linearizable"))


# ---------------------------------------------------------------- set

def check_set(history, final, verified=None, watched=()):
    """history: set creates (op n, type, id acknowledged). final: sandboxes listed at the end after
    healing, as dicts {id, name, op}. verified: {op: id found by a read before the harness deleted
    it, or None if that read found nothing}. watched: (op, id) of every creation a watch delivered.
    Every acknowledged create must have been read back (before its deletion, or at the end); no op
    may have made more than one sandbox (by id, in the final list or in any watch)."""
    verified = verified or {}
    anomalies = []
    by_op = {}
    for s in final:
        by_op.setdefault(s["op"], set()).add(s["id"])
    made = {}
    for op, sid in list(watched) + [(s["op"], s["id"]) for s in final]:
        made.setdefault(op, set()).add(sid)
    acked = [h for h in history if h["type"] == "ok"]
    for h in acked:
        if h["op"] in verified:
            if verified[h["op"]] != h["id"]:
                anomalies.append({"lost": h, "read_back": verified[h["op"]]})
        elif h["id"] not in by_op.get(h["op"], ()):
            anomalies.append({"lost": h, "present": sorted(by_op.get(h["op"], ()))})
    for op, ids in sorted(made.items()):
        if len(ids) > 1:
            anomalies.append({"duplicate": op, "ids": sorted(ids)})
    attempted = {h["op"] for h in history}
    for op in made:
        if op not in attempted:
            anomalies.append({"unexpected": op})
    info = sum(1 for h in history if h["type"] == "info")
    recovered = sum(1 for h in history if h["type"] == "info" and h["op"] in made)
    return verdict("set", anomalies, "%d creates attempted, %d acknowledged, %d indeterminate (%d of them applied), "
                   "%d read back and deleted during the run, %d present at the end" % (
                       len(history), len(acked), info, recovered, sum(1 for v in verified.values() if v), len(final)))


# ---------------------------------------------------------------- quota

def check_quota(limit, lifetimes, observations):
    """lifetimes: (ack time, delete invoke time or INF) of each acknowledged create: the sandbox
    certainly existed in between. observations: (time, what, count) read from the cluster."""
    anomalies = []
    points = []
    for a, d in lifetimes:
        points.append((a, 1))
        if d != INF:
            points.append((d, -1))
    points.sort(key=lambda p: (p[0], p[1]))  # deletes first at equal times: never over-count
    live = peak = 0
    for t, delta in points:
        live += delta
        if live > limit:
            anomalies.append({"t": t, "acknowledged_and_not_deleted": live, "limit": limit})
        peak = max(peak, live)
    for t, what, n in observations:
        if n > limit:
            anomalies.append({"t": t, "observed": what, "count": n, "limit": limit})
    obs_peak = max((n for _, _, n in observations), default=0)
    return verdict("quota", anomalies, "limit %d, %d acknowledged creates, peak %d certainly live, %d observations "
                   "(peak %d)" % (limit, len(lifetimes), peak, len(observations), obs_peak))


# ---------------------------------------------------------------- lease and reconciler

def read_journals(paths):
    calls = []
    for rid, path in paths.items():
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for n, line in enumerate(f):
                line = line.strip()
                if line:
                    try:
                        calls.append(dict(json.loads(line), replica=rid, line=n))
                    except ValueError:
                        pass  # a replica SIGKILLed mid-write leaves no partial line (one write), but be safe
    return calls


def check_lease(calls, store_ids, driver_items, epochs_seen):
    """calls: journal lines of every replica; store_ids: sandbox ids the store holds at the end (not
    being deleted); driver_items: the fake driver's state at the end; epochs_seen: lease epochs
    read through Cluster.GetLease during the run."""
    anomalies = []
    accepted = [c for c in calls if c["result"] not in ("GERR_STALE",) and c["code"] == 0]
    stale_refused = [c for c in calls if c["result"] == "GERR_STALE"]
    for c in accepted:
        if c["epoch"] < c["newest"]:
            anomalies.append({"stale_call_accepted": c})
    owners = {}
    for c in accepted:
        owners.setdefault(c["epoch"], set()).add(c["replica"])
    for epoch, who in owners.items():
        if len(who) > 1:
            anomalies.append({"epoch_acted_from_several_replicas": epoch, "replicas": sorted(who)})
    # In the driver's own order (its newest mark only rises), the accepted epochs never go back:
    # a call of epoch e accepted after the backend saw e' > e means two epochs acted at once.
    per_replica_order = {}
    for c in sorted(accepted, key=lambda c: (c["replica"], c["line"])):
        last = per_replica_order.get(c["replica"], 0)
        if c["epoch"] < last:
            anomalies.append({"epoch_went_back_on_replica": c["replica"], "call": c, "after": last})
        per_replica_order[c["replica"]] = max(last, c["epoch"])
    ids = [s["id"] for s in driver_items]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        anomalies.append({"in_driver_more_than_once": dup})
    missing = sorted(set(store_ids) - set(ids))
    if missing:
        anomalies.append({"desired_but_not_in_driver": missing[:20], "count": len(missing)})
    extra = sorted(set(ids) - set(store_ids))
    if extra:
        anomalies.append({"in_driver_but_not_desired": extra[:20], "count": len(extra)})
    return verdict("lease", anomalies, "%d driver calls accepted under epochs %s, %d stale calls refused, lease "
                   "epochs observed %d..%d, %d desired sandboxes, %d in the driver" % (
                       len(accepted), _ranges(sorted(owners)), len(stale_refused),
                       min(epochs_seen, default=0), max(epochs_seen, default=0), len(store_ids), len(ids)))


def _ranges(xs):
    if not xs:
        return "none"
    return "%d..%d (%d)" % (xs[0], xs[-1], len(xs))


# ---------------------------------------------------------------- watch

def check_watch(streams, since, final_revision, acked_creates, must_reach=()):
    """streams: {watcher name: [events]} where an event is {revision, type, id, rv, epoch, t}
    (bookmarks carry type BOOKMARK and no id). since: the revision every watcher started after.
    acked_creates: (revision, id) of acknowledged creates."""
    anomalies = []
    union = {}
    union_epoch = {}
    reached = {}
    for name, evs in streams.items():
        last = since
        for e in evs:
            if e["type"] == "BOOKMARK":
                if e["revision"] < last:
                    anomalies.append({"watcher": name, "bookmark_went_back": e, "after": last})
                reached[name] = max(reached.get(name, since), e["revision"])
                continue
            if e["revision"] <= last:
                anomalies.append({"watcher": name, "out_of_order_or_repeated": e, "after": last})
            last = max(last, e["revision"])
            reached[name] = max(reached.get(name, since), e["revision"])
            key = e["revision"]
            sig = (e["type"], e["id"], e["rv"])
            if key in union and union[key] != sig:
                anomalies.append({"watcher": name, "revision": key, "differs": [union[key], sig]})
            union.setdefault(key, sig)
            union_epoch.setdefault(key, (e["id"], e.get("epoch", 0)))
    for name, evs in streams.items():
        seen = {e["revision"] for e in evs if e["type"] != "BOOKMARK"}
        upto = reached.get(name, since)
        missed = sorted(r for r in union if r <= upto and r not in seen)
        if missed:
            anomalies.append({"watcher": name, "missed_revisions": missed[:20], "count": len(missed), "upto": upto})
    for rev, sid in acked_creates:
        if rev > since and (rev not in union or union[rev][1] != sid):
            anomalies.append({"acknowledged_create_never_watched": sid, "revision": rev})
    # The lease epoch a sandbox's status carries never goes back in revision order (a write of a
    # stale holder that the store's fence let through).
    epochs = {}
    for rev in sorted(union_epoch):
        sid, ep = union_epoch[rev]
        if ep and sid in epochs and ep < epochs[sid][1]:
            anomalies.append({"status_epoch_went_back": {"id": sid, "revision": rev, "epoch": ep}, "after": epochs[sid]})
        if ep:
            epochs[sid] = (rev, max(ep, epochs.get(sid, (0, 0))[1]))
    for name in must_reach:
        if reached.get(name, since) < final_revision:
            anomalies.append({"watcher": name, "never_caught_up": reached.get(name, since), "final": final_revision})
    behind = {n: r for n, r in reached.items() if r < final_revision}
    return verdict("watch", anomalies, "%d watchers, %d distinct changes, %d events delivered, final revision %d%s" % (
        len(streams), len(union), sum(len(v) for v in streams.values()), final_revision,
        (", behind at the end: %s" % behind) if behind else ", all caught up"))
