/* Audit events that happen outside a mutation's transaction (refused authentications, denied
 * calls, failed mutations, join attempts), recorded without letting a flood of them drive the write
 * path.
 *
 * Happy path: audit_sink_record copies the event into a fixed table keyed by what makes two events
 * the same (class, activity, actor, operation, namespace, resource, status, message and the source
 * host; not the request id or the time). A thread wakes every flush_ms and writes, in ONE
 * transaction through the replica's writer, a row for each event seen for the first time in the
 * current window (count 1, so a single refusal is in the audit trail within about flush_ms), and, when
 * the window (window_ms) closes, one row per event that repeated, with OCSF's count and its first
 * and last time. So the trail holds every distinct refusal and how often it happened, and a flood of
 * identical refusals costs at most two rows per window. The same thread writes the log lines: the
 * first occurrence at WARN, repeats as one summary line per window.
 *
 * Failure modes: more than max_keys distinct events in a window are counted in one overflow row per
 * class ("N further events ..."); a failed write is logged and counted (audit_sink_stats) and its
 * rows are dropped, so memory stays bounded whatever the store does. audit_sink_record never blocks
 * on the store and never fails.
 *
 * Thread-safe. docs/security.md ("Denials in the audit trail") describes the rows. */
#ifndef GANTRY_API_GATE_AUDIT_SINK_H
#define GANTRY_API_GATE_AUDIT_SINK_H

#include <stdint.h>

#include "api/gate/audit.h"
#include "store/writer.h"

struct audit_sink_config {
    unsigned window_ms; /* repeats of one event are counted per window (10000) */
    unsigned flush_ms;  /* first occurrences are written within about this (1000) */
    unsigned max_keys;  /* distinct events per window (1024) */
};

/* The defaults above. */
void audit_sink_config_defaults(struct audit_sink_config *cfg);

struct audit_sink_stats {
    uint64_t recorded;       /* events given to audit_sink_record */
    uint64_t rows_written;   /* audit rows committed */
    uint64_t aggregated;     /* events written as part of a repeat row (count > 1) */
    uint64_t overflow;       /* events counted in overflow rows */
    uint64_t write_failures; /* flushes whose transaction failed (their rows are dropped) */
};

struct audit_sink;

/* Start the flushing thread; rows go through @w (borrowed: it must outlive audit_sink_stop).
 * @cfg is copied. Returns NULL only if the thread cannot start. */
struct audit_sink *audit_sink_start(struct store_writer *w, const struct audit_sink_config *cfg);

/* Write what is pending (one last flush, both kinds of rows) and stop. NULL is fine. */
void audit_sink_stop(struct audit_sink *s);

/* Record one event. Strings are copied; @r->count and @r->start_time_ms are ignored. */
void audit_sink_record(struct audit_sink *s, const struct audit_record *r);

/* Write now what a flush would write, without waiting for the tick (tests, shutdown). */
void audit_sink_flush(struct audit_sink *s, bool close_window);

void audit_sink_stats(struct audit_sink *s, struct audit_sink_stats *out);

#endif
