/* The process driver's per-sandbox output log: bounded, rotating, timestamped.
 *
 * A sandbox's stdout and stderr go to one pipe. A small pump process (forked with bwrap, detached
 * from the replica like bwrap, so it outlives a replica restart) reads the pipe and appends each
 * chunk it reads as one record to <path> (the current file). When a record would take the current
 * file past @max_file_bytes, the file is renamed to <path>.1 (replacing the previous one) and a new
 * current file is started, so the log never holds more than 2 x max_file_bytes plus one record.
 * When every writer has closed the pipe (the sandbox's processes ended), the pump appends an END
 * record and exits.
 *
 * Record: a 16-byte header, little-endian: u64 wall-clock time in Unix ms when the pump read the
 * chunk, u32 payload length (at most PLOG_CHUNK_MAX), u32 flags (PLOG_FLAG_END: no payload; the
 * output ended), then the payload bytes. Each record is written with one write(2) on an O_APPEND
 * descriptor, so a reader sees whole records, or a partial last one that it leaves for later.
 *
 * Readers (plog_open / plog_next) need no lock: they follow renames by inode, also a second rotation
 * that replaced the file they hold, and notice that the log was removed (the sandbox was deleted)
 * when the file they hold has no links left and neither name exists. */
#ifndef GANTRY_DRIVERS_PROCESS_LOG_H
#define GANTRY_DRIVERS_PROCESS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

#define PLOG_HEADER       16u
#define PLOG_CHUNK_MAX    (64u * 1024u)
#define PLOG_FLAG_END     1u
#define PLOG_FILE_DEFAULT (4u << 20) /* bytes per file; two files per sandbox */
#define PLOG_FILE_MIN     (64u << 10)

/* Decode the record header at @p (@len bytes available). 0 with *@ts, *@n, *@flags set;
 * GERR_BUSY when fewer than PLOG_HEADER bytes are there (a partial record); GERR_PROTO for a
 * length over PLOG_CHUNK_MAX or unknown flags. Pure; fuzzed by tests/drivers/fuzz_driver_state.c. */
int plog_header_decode(const uint8_t *p, size_t len, uint64_t *ts, uint32_t *n, uint32_t *flags);

/* The pump: read @in_fd until EOF and append records to @path, rotating as above. Runs in a forked
 * child of a multi-threaded process, so it uses async-signal-safe calls only (no allocation).
 * Returns when the input ends (after the END record) or writing fails. @path must outlive it. */
void plog_pump(int in_fd, const char *path, uint64_t max_file_bytes);

/* What a reader starts with. */
struct plog_query {
    int64_t tail_lines; /* < 0: from the start of what is kept; else the last N lines (0: none) */
    uint64_t since_ms;  /* 0: no bound; else only records read at or after this Unix ms */
};

struct plog_reader;

/* Open the log at @path for reading from the position @q selects. GERR_NOTFOUND when there is no
 * log (the sandbox never started or was deleted), GERR_IO with @errmsg. *@out on 0 (free with
 * plog_close). Memory: bounded by one chunk, whatever the log's size. */
int plog_open(const char *path, const struct plog_query *q, struct plog_reader **out, char *errmsg);

/* The next chunk: 0 with @buf (PLOG_CHUNK_MAX bytes) holding *@n bytes read at Unix ms *@ts;
 * GERR_BUSY when there is nothing more now (call again later to follow); GERR_CLOSED when the
 * output ended (the END record: the sandbox's processes are gone) and everything before was
 * returned; GERR_NOTFOUND when the log was removed (the sandbox was deleted: also when the END
 * record its killing caused is read after the removal); GERR_PROTO when a
 * file is corrupt (with @errmsg); GERR_IO. Chunks of a tail query may start mid-record: only the
 * last lines asked for are returned. */
int plog_next(struct plog_reader *r, uint8_t *buf, size_t *n, uint64_t *ts, char *errmsg);

void plog_close(struct plog_reader *r);

/* The printable end of the log (up to @len - 1 bytes, control bytes as spaces, trailing spaces
 * removed) for error messages; "" when unreadable. Waits up to @wait_end_ms for the END record
 * (the output of a process that just failed may still be in the pump). */
void plog_tail_text(const char *path, unsigned wait_end_ms, char *buf, size_t len);

/* Remove <path>.1, then <path> (in that order, so a follower never goes back to the older file). */
void plog_remove(const char *path);

#endif
