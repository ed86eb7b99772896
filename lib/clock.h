/* Clocks behind an ops struct, so tests can swap in a fake clock (lease logic, backoff, timeouts).
 *
 * Production code receives a `struct clock *` (usually clock_system()) and never calls
 * clock_gettime directly. The fake clock never moves unless the test advances it; its sleep
 * advances it instead of sleeping, so retry loops run instantly and deterministically. */
#ifndef GANTRY_LIB_CLOCK_H
#define GANTRY_LIB_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

struct clock {
    uint64_t (*mono_ns)(struct clock *c); /* monotonic, arbitrary origin */
    uint64_t (*wall_ms)(struct clock *c); /* Unix time in milliseconds */
    void (*sleep_ns)(struct clock *c, uint64_t ns);
};

/* The process-wide real clock (CLOCK_MONOTONIC, CLOCK_REALTIME, nanosleep). Never NULL. */
struct clock *clock_system(void);

struct clock_fake {
    struct clock base; /* first member: pass &fake.base where a struct clock * is wanted */
    uint64_t mono;     /* ns */
    uint64_t wall;     /* ms */
    uint64_t wall_rem; /* ns not yet added to wall */
    uint64_t slept;    /* total ns "slept", for assertions on backoff */
};

void clock_fake_init(struct clock_fake *f, uint64_t mono_ns, uint64_t wall_ms);
void clock_fake_advance(struct clock_fake *f, uint64_t ns); /* moves both clocks */

static inline uint64_t clock_mono_ms(struct clock *c)
{
    return c->mono_ns(c) / 1000000u;
}

/* Condition waits with a deadline on CLOCK_MONOTONIC (never the wall clock, which jumps).
 * clock_mono_deadline sets @ts to @ms from now. clock_cond_wait_mono waits on @c (any clock
 * attribute) until signalled or @deadline: 0, or ETIMEDOUT once it passed. It uses
 * pthread_cond_clockwait, because libfaketime (the Jepsen harness's clock nemesis) wraps
 * pthread_cond_timedwait and returns ETIMEDOUT at once for a monotonic condition, which turned
 * every timed wait into a spin or an instant timeout under it. */
void clock_mono_deadline(struct timespec *ts, uint64_t ms);
int clock_cond_wait_mono(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *deadline);

#endif
