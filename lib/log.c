#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "err.h"

static _Atomic int log_level = LOG_LEVEL_INFO;
static _Atomic int log_fd = STDERR_FILENO;
static char log_replica[64] = "-";

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"};

int log_set_level_name(const char *name)
{
    for (int i = 0; i <= LOG_LEVEL_TRACE; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            log_set_level((enum log_level)i);
            return 0;
        }
    }
    return GERR_INVAL;
}

void log_set_level(enum log_level level)
{
    atomic_store(&log_level, (int)level);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load(&log_level);
}

void log_set_replica(const char *id)
{
    snprintf(log_replica, sizeof log_replica, "%s", id);
}

void log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

void log_write(enum log_level level, const char *file, int line, const char *fmt, ...)
{
    char out[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    int k;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%S", &tm);
    k = snprintf(out + n, sizeof out - n, ".%03ldZ %-5s %s %s:%d ", ts.tv_nsec / 1000000, level_names[level],
                 log_replica, file, line);
    if (k > 0) {
        n += (size_t)k < sizeof out - n ? (size_t)k : sizeof out - n - 1;
    }
    va_start(ap, fmt);
    k = vsnprintf(out + n, sizeof out - n, fmt, ap);
    va_end(ap);
    if (k > 0) {
        n += (size_t)k < sizeof out - n ? (size_t)k : sizeof out - n - 1;
    }
    if (n >= sizeof out - 1) {
        n = sizeof out - 2;
    }
    out[n++] = '\n';
    ssize_t w = write(atomic_load(&log_fd), out, n);
    (void)w;
}
