/* Logging with levels and the replica id, one line per record, to stderr (or a file descriptor).
 *
 *   2026-11-23T09:50:00.123Z INFO  r1 store/client.c:120 connected to leader 127.0.0.1:9001
 *
 * Thread-safe: each record is formatted into a local buffer and written with one write(2).
 * Records above the configured level are dropped before formatting. */
#ifndef GANTRY_LIB_LOG_H
#define GANTRY_LIB_LOG_H

enum log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG, LOG_LEVEL_TRACE };

/* Set the level ("error", "warn", "info", "debug", "trace"). Returns 0 or GERR_INVAL. */
int log_set_level_name(const char *name);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Identify this process in every line (copied; at most 63 bytes kept). */
void log_set_replica(const char *id);

/* Send records to @fd instead of stderr (not closed by this module). */
void log_set_fd(int fd);

void log_write(enum log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define LOG__AT(lvl, ...)                                                                                    \
    do {                                                                                                     \
        if ((lvl) <= log_get_level()) {                                                                      \
            log_write((lvl), __FILE__, __LINE__, __VA_ARGS__);                                               \
        }                                                                                                    \
    } while (0)

#define LOG_ERROR(...) LOG__AT(LOG_LEVEL_ERROR, __VA_ARGS__)
#define LOG_WARN(...)  LOG__AT(LOG_LEVEL_WARN, __VA_ARGS__)
#define LOG_INFO(...)  LOG__AT(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) LOG__AT(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define LOG_TRACE(...) LOG__AT(LOG_LEVEL_TRACE, __VA_ARGS__)

#endif
