/* Per-replica health for /metrics (server/replica_metrics.h). */
#include "server/replica_metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "lib/clock.h"
#include "lib/mem.h"

struct dir_usage {
    uint64_t snapshots, snapshot_bytes, total_bytes;
};

/* Raft's files in the node's directory: "snapshot-<term>-<index>-<time>" with a ".meta" beside
 * each, closed segments "<first>-<last>", open segments "open-<n>", metadata1/2. */
static bool scan_store_dir(const char *dir, struct dir_usage *u)
{
    memset(u, 0, sizeof *u);
    DIR *d = opendir(dir);
    if (d == NULL) {
        return false;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
            !S_ISREG(st.st_mode)) {
            continue;
        }
        u->total_bytes += (uint64_t)st.st_size;
        if (strncmp(e->d_name, "snapshot-", 9) == 0) {
            size_t n = strlen(e->d_name);
            bool meta = n > 5 && strcmp(e->d_name + n - 5, ".meta") == 0;
            u->snapshots += meta ? 0 : 1;
            u->snapshot_bytes += (uint64_t)st.st_size;
        }
    }
    closedir(d);
    return true;
}

static bool rss_bytes(uint64_t *out)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    bool ok = f != NULL && fscanf(f, "%llu %llu", &size, &resident) == 2;
    if (f != NULL) {
        fclose(f);
    }
    long page = sysconf(_SC_PAGESIZE);
    *out = ok && page > 0 ? (uint64_t)resident * (uint64_t)page : 0;
    return ok && page > 0;
}

static void view_metrics(struct replica *r, struct buf *out)
{
    struct replica_view *v = mem_alloc(sizeof *v);
    replica_view(r, v);
    unsigned voters = 0, voters_up = 0;
    for (unsigned i = 0; i < v->n; i++) {
        if (v->nodes[i].role == PROTO_ROLE_VOTER) {
            voters++;
            voters_up += v->nodes[i].online;
        }
    }
    buf_printf(
        out,
        "# HELP gantry_cluster_leader_known 1 if this replica's last membership snapshot named a leader.\n"
        "# TYPE gantry_cluster_leader_known gauge\ngantry_cluster_leader_known %d\n"
        "# HELP gantry_cluster_voters_reachable Voters that answered this replica's last probe.\n"
        "# TYPE gantry_cluster_voters_reachable gauge\ngantry_cluster_voters_reachable %u\n"
        "# HELP gantry_raft_leader_changes_total Times this replica saw the leader change (the first "
        "leader it saw included).\n"
        "# TYPE gantry_raft_leader_changes_total counter\ngantry_raft_leader_changes_total %" PRIu64 "\n"
        "# HELP gantry_cluster_view_age_seconds Age of this replica's membership snapshot.\n"
        "# TYPE gantry_cluster_view_age_seconds gauge\n",
        v->valid && v->leader_id != 0, voters_up, v->leader_changes);
    if (v->valid) {
        uint64_t now = clock_mono_ms(clock_system());
        buf_printf(out, "gantry_cluster_view_age_seconds %.3f\n",
                   (double)(now > v->taken_ms ? now - v->taken_ms : 0) / 1000.0);
    }
    mem_free(v);
}

static void commit_histogram(struct store_writer *w, struct buf *out)
{
    struct store_writer_stats_full ws;
    store_writer_stats_full(w, &ws);
    buf_printf(out, "# HELP gantry_raft_commit_seconds Round trip of the COMMIT of this replica's write "
                    "transactions: the leader replicating them to a quorum.\n"
                    "# TYPE gantry_raft_commit_seconds histogram\n");
    uint64_t cum = 0;
    for (unsigned i = 0; i < STORE_WRITER_COMMIT_BUCKETS; i++) {
        cum += ws.commit_buckets[i];
        if (i + 1 < STORE_WRITER_COMMIT_BUCKETS) {
            buf_printf(out, "gantry_raft_commit_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                       (double)store_writer_commit_bounds_us[i] / 1e6, cum);
        }
    }
    buf_printf(out,
               "gantry_raft_commit_seconds_bucket{le=\"+Inf\"} %" PRIu64
               "\ngantry_raft_commit_seconds_sum %.6f\n"
               "gantry_raft_commit_seconds_count %" PRIu64 "\n",
               cum, (double)ws.commit_ns_sum / 1e9, cum);
}

void replica_metrics_write(const struct replica_metrics_sources *src, struct buf *out)
{
    view_metrics(src->replica, out);
    commit_histogram(src->writer, out);
    struct dir_usage u;
    if (src->store_dir != NULL && scan_store_dir(src->store_dir, &u)) {
        buf_printf(out,
                   "# HELP gantry_raft_snapshots Raft snapshots kept in this replica's store directory.\n"
                   "# TYPE gantry_raft_snapshots gauge\ngantry_raft_snapshots %" PRIu64 "\n"
                   "# HELP gantry_raft_snapshot_bytes Bytes of those snapshots (with their metadata files).\n"
                   "# TYPE gantry_raft_snapshot_bytes gauge\ngantry_raft_snapshot_bytes %" PRIu64 "\n"
                   "# HELP gantry_store_dir_bytes Bytes of every file in the store directory (Raft log "
                   "segments, snapshots, metadata).\n"
                   "# TYPE gantry_store_dir_bytes gauge\ngantry_store_dir_bytes %" PRIu64 "\n",
                   u.snapshots, u.snapshot_bytes, u.total_bytes);
    }
    struct statvfs fs;
    if (src->data_dir != NULL && statvfs(src->data_dir, &fs) == 0) {
        buf_printf(
            out,
            "# HELP gantry_data_dir_filesystem_avail_bytes Bytes an unprivileged writer may still use on "
            "the data dir's filesystem.\n"
            "# TYPE gantry_data_dir_filesystem_avail_bytes gauge\n"
            "gantry_data_dir_filesystem_avail_bytes %" PRIu64 "\n"
            "# HELP gantry_data_dir_filesystem_size_bytes Size of the data dir's filesystem.\n"
            "# TYPE gantry_data_dir_filesystem_size_bytes gauge\n"
            "gantry_data_dir_filesystem_size_bytes %" PRIu64 "\n",
            (uint64_t)fs.f_bavail * fs.f_frsize, (uint64_t)fs.f_blocks * fs.f_frsize);
    }
    struct peertls_stats ps;
    replica_peer_stats(src->replica, &ps);
    buf_printf(
        out,
        "# HELP gantry_peer_relay_bytes_total Bytes the peer TLS relay carried, by direction (payload, "
        "before encryption).\n"
        "# TYPE gantry_peer_relay_bytes_total counter\n"
        "gantry_peer_relay_bytes_total{direction=\"in\"} %" PRIu64 "\n"
        "gantry_peer_relay_bytes_total{direction=\"out\"} %" PRIu64 "\n"
        "# HELP gantry_peer_relay_connections Peer connections the relay carries now.\n"
        "# TYPE gantry_peer_relay_connections gauge\ngantry_peer_relay_connections %" PRIu64 "\n"
        "# HELP gantry_peer_relay_handshakes_total Peer TLS connections, by outcome.\n"
        "# TYPE gantry_peer_relay_handshakes_total counter\n"
        "gantry_peer_relay_handshakes_total{outcome=\"accepted\"} %" PRIu64 "\n"
        "gantry_peer_relay_handshakes_total{outcome=\"rejected\"} %" PRIu64 "\n"
        "gantry_peer_relay_handshakes_total{outcome=\"dialed\"} %" PRIu64 "\n"
        "gantry_peer_relay_handshakes_total{outcome=\"dial_failed\"} %" PRIu64 "\n",
        ps.bytes_in, ps.bytes_out, ps.active, ps.accepted, ps.rejected, ps.dialed, ps.dial_failed);
    buf_printf(
        out,
        "# HELP gantry_peer_relay_revoked_total Peer TLS connections refused (handshakes, either direction) "
        "or closed (open when the certificate was revoked) because the peer's certificate is revoked.\n"
        "# TYPE gantry_peer_relay_revoked_total counter\n"
        "gantry_peer_relay_revoked_total{event=\"refused\"} %" PRIu64 "\n"
        "gantry_peer_relay_revoked_total{event=\"closed\"} %" PRIu64 "\n"
        "# HELP gantry_peer_relay_revoked_certs Revoked certificates the relay refuses now.\n"
        "# TYPE gantry_peer_relay_revoked_certs gauge\ngantry_peer_relay_revoked_certs %" PRIu64 "\n",
        ps.revoked_refused, ps.revoked_closed, ps.revoked_certs);
    struct peertls *relay = replica_relay(src->replica);
    if (relay != NULL) {
        char fp[PKI_FINGERPRINT_SIZE];
        int64_t not_after = 0;
        peertls_own_cert(relay, fp, &not_after);
        int64_t now = (int64_t)clock_system()->wall_ms(clock_system());
        buf_printf(
            out,
            "# HELP gantry_cert_days_left Days until the peer certificate this replica's relay presents "
            "expires (renewed while running under cert_renew_days).\n"
            "# TYPE gantry_cert_days_left gauge\ngantry_cert_days_left %.2f\n",
            (double)(not_after - now) / 86400000.0);
    }
    if (src->watches != NULL) {
        buf_printf(out,
                   "# HELP gantry_sandbox_watches Open Sandboxes.Watch streams on this replica.\n"
                   "# TYPE gantry_sandbox_watches gauge\ngantry_sandbox_watches %u\n",
                   atomic_load(src->watches));
    }
    uint64_t rss;
    if (rss_bytes(&rss)) {
        buf_printf(out,
                   "# HELP process_resident_memory_bytes Resident memory of the gantryd process.\n"
                   "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %" PRIu64 "\n",
                   rss);
    }
}
