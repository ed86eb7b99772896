/* Per-replica health for /metrics (docs/metrics.md, "Raft and the replica"): leadership as this
 * replica sees it, the COMMIT round trip of its writer's transactions, its node's snapshots and
 * data on disk, the space left on the data dir's filesystem, the peer relay's traffic, open sandbox
 * watches and the process's resident memory.
 *
 * Everything is read at scrape time from counters in memory, one readdir of the store directory (a
 * few dozen entries: Raft segments and snapshots), one statvfs and /proc/self/statm: no store
 * round trip. Any thread. */
#ifndef GANTRY_SERVER_REPLICA_METRICS_H
#define GANTRY_SERVER_REPLICA_METRICS_H

#include <stdatomic.h>

#include "lib/buf.h"
#include "raft/replica.h"
#include "store/writer.h"

struct replica_metrics_sources {
    struct replica *replica;
    struct store_writer *writer;
    const char *store_dir;      /* the dqlite node's directory */
    const char *data_dir;       /* the replica's data dir (statvfs) */
    const atomic_uint *watches; /* open Sandboxes.Watch streams; NULL: not written */
};

/* Append the families to @out. Values a source cannot give (a directory that cannot be read) are
 * left out, never written as zero. */
void replica_metrics_write(const struct replica_metrics_sources *src, struct buf *out);

#endif
