#include "clock.h"

#include <errno.h>
#include <time.h>

static uint64_t sys_mono_ns(struct clock *c)
{
    struct timespec ts;
    (void)c;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t sys_wall_ms(struct clock *c)
{
    struct timespec ts;
    (void)c;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sys_sleep_ns(struct clock *c, uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u)};
    (void)c;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static struct clock sys_clock = {sys_mono_ns, sys_wall_ms, sys_sleep_ns};

struct clock *clock_system(void)
{
    return &sys_clock;
}

static uint64_t fake_mono_ns(struct clock *c)
{
    return ((struct clock_fake *)c)->mono;
}

static uint64_t fake_wall_ms(struct clock *c)
{
    return ((struct clock_fake *)c)->wall;
}

static void fake_sleep_ns(struct clock *c, uint64_t ns)
{
    struct clock_fake *f = (struct clock_fake *)c;
    f->slept += ns;
    clock_fake_advance(f, ns);
}

void clock_fake_init(struct clock_fake *f, uint64_t mono_ns, uint64_t wall_ms)
{
    f->base.mono_ns = fake_mono_ns;
    f->base.wall_ms = fake_wall_ms;
    f->base.sleep_ns = fake_sleep_ns;
    f->mono = mono_ns;
    f->wall = wall_ms;
    f->slept = 0;
    f->wall_rem = 0;
}

void clock_fake_advance(struct clock_fake *f, uint64_t ns)
{
    f->mono += ns;
    f->wall_rem += ns;
    f->wall += f->wall_rem / 1000000u;
    f->wall_rem %= 1000000u;
}

void clock_mono_deadline(struct timespec *ts, uint64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int clock_cond_wait_mono(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *deadline)
{
    return pthread_cond_clockwait(c, m, CLOCK_MONOTONIC, deadline);
}
