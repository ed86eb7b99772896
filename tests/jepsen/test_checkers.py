"""The checkers of tests/jepsen on small hand-made histories: each must accept a valid one and
reject the anomaly it exists for. Run: /usr/bin/python3 tests/jepsen/test_checkers.py"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checkers as c  # noqa: E402

INF = c.INF


def op(f, value, typ, invoke, complete, key="k"):
    return {"key": key, "f": f, "value": value, "type": typ, "invoke": invoke, "complete": complete}


class Register(unittest.TestCase):
    def test_sequential_history_is_linearizable(self):
        h = [op("read", "0", "ok", 0, 1), op("cas", ["0", "a"], "ok", 2, 3), op("read", "a", "ok", 4, 5),
             op("cas", ["0", "b"], "fail", 6, 7), op("read", "a", "ok", 8, 9)]
        self.assertTrue(c.check_register(h)["valid"])

    def test_concurrent_reads_may_see_either_side(self):
        h = [op("cas", ["0", "a"], "ok", 0, 10), op("read", "a", "ok", 1, 2), op("read", "0", "ok", 3, 4)]
        # A read of the new value, then a later read of the old one while the CAS is still pending:
        # not linearizable (once a is visible, 0 is gone).
        self.assertFalse(c.check_register(h)["valid"])
        h = [op("cas", ["0", "a"], "ok", 0, 10), op("read", "0", "ok", 1, 2), op("read", "a", "ok", 3, 4)]
        self.assertTrue(c.check_register(h)["valid"])

    def test_stale_read_after_acknowledged_cas_is_caught(self):
        h = [op("cas", ["0", "a"], "ok", 0, 1), op("read", "0", "ok", 2, 3)]
        v = c.check_register(h)
        self.assertFalse(v["valid"])
        self.assertIn("non_linearizable", v["anomalies"][0])

    def test_indeterminate_cas_may_apply_late_or_never(self):
        h = [op("cas", ["0", "a"], "info", 0, 1), op("read", "0", "ok", 2, 3), op("read", "a", "ok", 4, 5)]
        self.assertTrue(c.check_register(h)["valid"])
        h = [op("cas", ["0", "a"], "info", 0, 1), op("read", "0", "ok", 2, 3)]
        self.assertTrue(c.check_register(h)["valid"])
        # ...but it applies once: a then 0 then a again is impossible.
        h = [op("cas", ["0", "a"], "info", 0, 1), op("read", "a", "ok", 2, 3), op("read", "0", "ok", 4, 5),
             op("read", "a", "ok", 6, 7)]
        self.assertFalse(c.check_register(h)["valid"])

    def test_failed_cas_means_the_value_differed(self):
        h = [op("read", "0", "ok", 0, 1), op("cas", ["0", "a"], "fail", 2, 3), op("read", "0", "ok", 4, 5)]
        self.assertFalse(c.check_register(h)["valid"])

    def test_lost_acknowledged_write_between_two_writers(self):
        h = [op("cas", ["0", "a"], "ok", 0, 1), op("cas", ["0", "b"], "ok", 2, 3)]
        self.assertFalse(c.check_register(h)["valid"])

    def test_keys_are_independent(self):
        h = [op("cas", ["0", "a"], "ok", 0, 1, key="x"), op("read", "0", "ok", 2, 3, key="y")]
        self.assertTrue(c.check_register(h)["valid"])


class Set(unittest.TestCase):
    def test_acknowledged_present_and_none_twice(self):
        h = [{"op": 1, "type": "ok", "id": "A"}, {"op": 2, "type": "info"}, {"op": 3, "type": "info"}]
        final = [{"id": "A", "name": "s1-a1", "op": 1}, {"id": "B", "name": "s2-a2", "op": 2}]
        self.assertTrue(c.check_set(h, final)["valid"])

    def test_lost_acknowledged_create(self):
        h = [{"op": 1, "type": "ok", "id": "A"}]
        self.assertFalse(c.check_set(h, [])["valid"])

    def test_read_back_before_deletion(self):
        h = [{"op": 1, "type": "ok", "id": "A"}, {"op": 2, "type": "ok", "id": "B"}]
        self.assertTrue(c.check_set(h, [], {1: "A", 2: "B"}, [(1, "A"), (2, "B")])["valid"])
        self.assertFalse(c.check_set(h, [], {1: "A", 2: None})["valid"])
        # A second sandbox for one op, seen only by a watch (the harness deleted the first).
        v = c.check_set(h, [], {1: "A", 2: "B"}, [(1, "A"), (2, "B"), (2, "C")])
        self.assertFalse(v["valid"])

    def test_create_applied_twice(self):
        h = [{"op": 1, "type": "ok", "id": "A"}]
        final = [{"id": "A", "name": "s1-a1", "op": 1}, {"id": "B", "name": "s1-a2", "op": 1}]
        v = c.check_set(h, final)
        self.assertFalse(v["valid"])
        self.assertIn("duplicate", v["anomalies"][0])


class Quota(unittest.TestCase):
    def test_within_the_limit(self):
        self.assertTrue(c.check_quota(2, [(0, 5), (1, 6), (5, 9)], [(1, "usage", 2)])["valid"])

    def test_over_the_limit(self):
        self.assertFalse(c.check_quota(2, [(0, 5), (1, 6), (2, INF)], [])["valid"])
        self.assertFalse(c.check_quota(2, [], [(1, "usage", 3)])["valid"])


DQLITE_BT = """#0  0x0000000000000035 in ?? ()
#0  0x0000000000000035 in ?? ()
#1  0x00007f23e6fab789 in ?? () from /lib/x86_64-linux-gnu/libuv.so.1
#2  0x00007f23e6fabf08 in ?? () from /lib/x86_64-linux-gnu/libuv.so.1
#3  0x00007f23e6fa09f6 in uv_run () from /lib/x86_64-linux-gnu/libuv.so.1
#4  0x00007f23e69b5650 in ?? () from /lib/x86_64-linux-gnu/libdqlite.so.0
#5  0x00007f23e66e41f5 in start_thread (arg=<optimized out>) at ./nptl/pthread_create.c:442
#6  0x00007f23e67648ec in clone3 () at ../sysdeps/unix/sysv/linux/x86_64/clone3.S:81"""

OUR_BT = """#0  0x000055cf407912b0 in grpc_call_send_async (call=0x7f39ec018cb0, msg=0x7f3a00eb03a0) at server/call.c:710
#1  0x000055cf4076e37f in send_event (w=0x7f39f0043a70) at server/sandboxes_svc.c:1039
#2  0x00007f3a17e281f5 in start_thread (arg=<optimized out>) at ./nptl/pthread_create.c:442
#3  0x00007f3a17ea88ec in clone3 () at ../sysdeps/unix/sysv/linux/x86_64/clone3.S:81"""


ASAN_LOG = """2026-11-23T16:01:43.654Z WARN  replica-2 leases/reconciler.c:242 reconciler: lease lost
AddressSanitizer:DEADLYSIGNAL
=================================================================
==28747==ERROR: AddressSanitizer: SEGV on unknown address 0x7fb794e51158 (pc 0x7fb794e51158 T3)
==28747==The signal is caused by a READ memory access.
    #0 0x7fb794e51158  (<unknown module>)
    #1 0x7fb7e6d3b789  (/lib/x86_64-linux-gnu/libuv.so.1+0x11789)
    #2 0x7fb7e6d309f6 in uv_run (/lib/x86_64-linux-gnu/libuv.so.1+0x69f6)
    #3 0x7fb7e6ec9650  (/lib/x86_64-linux-gnu/libdqlite.so.0+0x11650)
    #4 0x7fb7e6bb61f5 in start_thread nptl/pthread_create.c:442

AddressSanitizer can not provide additional info.
"""


class Crashes(unittest.TestCase):
    def test_asan_reports_are_read_when_there_is_no_core(self):
        bt = c.asan_backtrace(ASAN_LOG)
        self.assertEqual(len(bt.splitlines()), 5)
        self.assertTrue(c.dqlite_thread_crash(-6, bt))
        self.assertFalse(c.dqlite_thread_crash(-6, bt.replace("libdqlite.so.0", "gantryd")))
        self.assertEqual(c.asan_backtrace("no report here"), "")
        ours = "==1==ERROR: AddressSanitizer: SEGV on unknown address\n    #0 0x55 in watch_poll server/sandboxes_svc.c:1130\n"
        self.assertIn("watch_poll", c.asan_backtrace(ASAN_LOG + ours))  # the last report counts

    def test_dqlite_thread_crash_is_recognised(self):
        self.assertTrue(c.dqlite_thread_crash(-11, DQLITE_BT))
        self.assertTrue(c.dqlite_thread_crash(-6, DQLITE_BT))

    def test_our_frames_missing_cores_and_other_exits_are_never_excused(self):
        self.assertFalse(c.dqlite_thread_crash(-11, OUR_BT))
        self.assertFalse(c.dqlite_thread_crash(-11, ""))
        self.assertFalse(c.dqlite_thread_crash(1, DQLITE_BT))
        # A libuv loop that is not dqlite's (gantryd's own gRPC loop) is not excused either.
        self.assertFalse(c.dqlite_thread_crash(-11, DQLITE_BT.replace("libdqlite.so.0", "gantryd")))
        mixed = DQLITE_BT.replace("#3  0x00007f23e6fa09f6 in uv_run () from /lib/x86_64-linux-gnu/libuv.so.1",
                                  "#3  0x000055cf4076e37f in relay_cb (h=0x1) at raft/peertls.c:200")
        self.assertFalse(c.dqlite_thread_crash(-11, mixed))


def call(replica, epoch, newest, result="GERR_OK", line=0):
    return {"replica": replica, "epoch": epoch, "newest": newest, "result": result,
            "code": 0 if result == "GERR_OK" else 9, "line": line, "op": "create", "id": "x"}


class Lease(unittest.TestCase):
    def test_fenced_journal(self):
        calls = [call(1, 1, 0), call(1, 1, 1, line=1), call(2, 2, 1), call(1, 1, 2, "GERR_STALE", line=2)]
        v = c.check_lease(calls, ["a"], [{"id": "a"}], {1, 2})
        self.assertTrue(v["valid"], v)

    def test_stale_call_accepted(self):
        calls = [call(2, 2, 1), call(1, 1, 2, line=1)]
        self.assertFalse(c.check_lease(calls, [], [], {1, 2})["valid"])

    def test_epoch_from_two_replicas(self):
        self.assertFalse(c.check_lease([call(1, 3, 2), call(2, 3, 3)], [], [], {3})["valid"])

    def test_desired_exactly_once(self):
        self.assertFalse(c.check_lease([], ["a"], [{"id": "a"}, {"id": "a"}], set())["valid"])
        self.assertFalse(c.check_lease([], ["a", "b"], [{"id": "a"}], set())["valid"])
        self.assertFalse(c.check_lease([], [], [{"id": "a"}], set())["valid"])


def ev(rev, sid="a", typ="MODIFIED", epoch=1):
    return {"revision": rev, "type": typ, "id": sid, "rv": rev, "epoch": epoch}


class Watch(unittest.TestCase):
    def test_every_change_once_in_order(self):
        s = {"r1": [ev(11), ev(12), ev(13)], "r2": [ev(11), ev(12), ev(13), {"type": "BOOKMARK", "revision": 13}]}
        self.assertTrue(c.check_watch(s, 10, 13, [(11, "a")], must_reach=["r1", "r2"])["valid"])

    def test_missed_repeated_reordered(self):
        base = [ev(11), ev(12), ev(13)]
        self.assertFalse(c.check_watch({"r1": base, "r2": [ev(11), ev(13)]}, 10, 13, [])["valid"])
        self.assertFalse(c.check_watch({"r1": base, "r2": [ev(11), ev(12), ev(12), ev(13)]}, 10, 13, [])["valid"])
        self.assertFalse(c.check_watch({"r1": base, "r2": [ev(12), ev(11), ev(13)]}, 10, 13, [])["valid"])

    def test_acknowledged_create_never_seen_and_lagging_watcher(self):
        self.assertFalse(c.check_watch({"r1": [ev(11)]}, 10, 11, [(12, "b")])["valid"])
        self.assertFalse(c.check_watch({"r1": [ev(11)]}, 10, 12, [], must_reach=["r1"])["valid"])

    def test_status_epoch_going_back(self):
        s = {"r1": [ev(11, epoch=2), ev(12, epoch=1)]}
        self.assertFalse(c.check_watch(s, 10, 12, [])["valid"])


if __name__ == "__main__":
    unittest.main(verbosity=1)
