/* The fake driver: sandboxes that are only records, for tests and benchmarks.
 *
 * Behaviour (on top of drivers/driver.h):
 *   - every backend call first sleeps latency_ns on the configured clock (a fake clock makes this
 *     instant), then decides, from a xorshift generator seeded with @seed, whether to fail:
 *     failure_ppm calls in a million fail before doing anything (GERR_UNAVAILABLE, "injected
 *     failure"); lost_reply_ppm calls do their work and then report GERR_TIMEOUT, like a reply lost
 *     on the network. The same seed and the same call sequence give the same outcomes;
 *   - the epoch rule always holds, and is checked before the failure draw: a stale call is refused
 *     with DRIVER_ERR_STALE whatever the dice say;
 *   - create() records the sandbox as PROVISIONING; get()/list() report it READY once
 *     ready_after_ms of the clock's wall time have passed since the create (0: READY at once);
 *   - namespaces must be ensured before create; delete_namespace refuses while sandboxes remain;
 *   - driver_config keys: those in @config_keys (NULL: none accepted), values not checked;
 *   - journal: when journal_path is set, every call appends one JSON line with a single
 *     O_APPEND write (so several processes may share the file):
 *       {"t_ms":1795428000000,"pid":4711,"op":"create","ns":"default","id":"<uuid>","epoch":7,
 *        "newest":6,"result":"GERR_OK","code":0}
 *     "newest" is the newest epoch the backend had seen before the call; "ns" and "id" are "" where
 *     the operation has none. A checker proves fencing with: no line has result GERR_OK and
 *     epoch < newest;
 *   - shared state: when state_path is set, the records live in that JSON file instead of memory,
 *     read and rewritten (atomically, under flock on state_path + ".lock") by every call, so
 *     several instances and processes share one backend, as replicas share a real one. A corrupt
 *     state file fails every call with GERR_PROTO rather than being overwritten.
 *
 * Thread-safe (the instance mutex; the flock between processes). */
#ifndef GANTRY_DRIVERS_FAKE_H
#define GANTRY_DRIVERS_FAKE_H

#include <stdint.h>

#include "drivers/driver.h"
#include "lib/clock.h"

#define DRIVER_FAKE_MAX_SANDBOXES 100000u /* records a shared state file may hold */

struct driver_fake_config {
    struct clock *clock;            /* NULL = clock_system(); borrowed, must outlive the driver */
    uint64_t latency_ns;            /* slept at the start of every backend call */
    uint32_t failure_ppm;           /* 0..1000000 */
    uint32_t lost_reply_ppm;        /* 0..1000000 */
    uint64_t seed;                  /* 0 is replaced by a fixed constant */
    uint64_t ready_after_ms;        /* PROVISIONING -> READY delay */
    const char *journal_path;       /* NULL = no journal; copied */
    const char *state_path;         /* NULL = in memory; copied */
    const char *const *config_keys; /* NULL-terminated; copied */
};

/* Make a fake driver. GERR_INVAL for out-of-range rates; GERR_IO (and friends) if the journal or
 * the state file cannot be opened or the state file is corrupt (GERR_PROTO). *@out is set on 0. */
int driver_fake_new(const struct driver_fake_config *cfg, struct driver **out, char *errmsg);

/* Test hooks: the number of backend calls made so far through this instance, and how many
 * sandboxes the backend holds now (all namespaces). */
uint64_t driver_fake_calls(struct driver *d);
int driver_fake_count(struct driver *d, uint64_t *n, char *errmsg);

/* Decode a shared state file's text (the format the fake driver writes). Exposed for the fuzzer
 * and the tests; GERR_PROTO with the reason for anything malformed. */
struct fake_state;
int fake_state_decode(const char *text, size_t len, struct fake_state **out, char *errmsg);
void fake_state_free(struct fake_state *st);

#endif
