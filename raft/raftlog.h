/* What a dqlite node's Raft log holds at its end, read from its directory, and how far one node's
 * log is behind another's.
 *
 * dqlite 1.11 exposes no log or applied index, and a follower answers no query, so the only
 * place a replica can learn how far its own node has got is the node's log on disk (libraft
 * 0.15's layout, the version Debian bookworm ships):
 *   - closed segments "<first>-<last>" (both %016llu);
 *   - open segments "open-<counter>", in counter order after the last closed one: an 8-byte
 *     format version (1; 0 for a preallocated file nothing was written to yet), then batches: two
 *     CRC32s (of the header, of the data), the header (u64 count, then per entry u64 term, u8
 *     type, 3 unused bytes, u32 size) and the entries' data back to back (libraft's loader adds
 *     up the sizes; dqlite's entries are multiples of 8 bytes). Integers are little-endian.
 *     Closed segments have the same content.
 *   - snapshots "snapshot-<term>-<index>-<timestamp>" and their ".meta" files (ignored here).
 * An open segment does not record the index of its first entry (libraft's own loader guesses it),
 * so this module does not deal in indexes: an entry is identified by its term, size and the CRC32
 * of its data, and the position of one node's last entries in another node's log gives the lag.
 *
 * The replica beside the leader compares its own log with a transfer target's (which the
 * target's gantryd reads the same way and sends in answer to a peer probe) before it hands
 * leadership over: docs/reliability.md, "Leadership transfers".
 *
 * Thread-safe (no state). It reads files a dqlite thread is writing, which only ever appends to
 * an open segment, closes one by renaming it, or deletes old ones: a batch still being written
 * (short, or failing its checksums) ends a segment, and a file that vanishes while the directory
 * is read makes the read start again. */
#ifndef GANTRY_RAFT_RAFTLOG_H
#define GANTRY_RAFT_RAFTLOG_H

#include <stddef.h>
#include <stdint.h>

struct raftlog_entry_id {
    uint64_t term;
    uint32_t size; /* bytes of the entry's data */
    uint32_t crc;  /* raftlog_crc32 of the entry's data */
};

/* Entries a probe answers with: enough that a run of identical entries cannot fake a match. */
#define RAFTLOG_PROBE_TAIL 8u

/* raftlog_lag's answer when the target's tail is not in the leader's entries (further behind
 * than the leader's retained log, diverged, or ahead with entries of an old term). */
#define RAFTLOG_LAG_UNKNOWN UINT64_MAX

/* The ids of the last entries in @dir's log, oldest first: at most @max of them into @out, their
 * number in *@n (0 for an empty log). 0; GERR_NOTFOUND when @dir holds no segment; GERR_IO when
 * it cannot be read (after 5 attempts when files vanish under it); GERR_PROTO for a format
 * version this code does not know. @errmsg (GERR_MSG_SIZE) says why. */
int raftlog_tail(const char *dir, struct raftlog_entry_id *out, unsigned max, unsigned *n, char *errmsg);

/* A reader of one directory's log that keeps what it has scanned, for callers that ask often
 * (every second, or every 50 ms while a transfer waits): a closed segment is read and checked
 * once (it is known again by its name, inode, size and modification time); an open one is read on
 * from the end of its last complete batch (after checking that batch's header is still there), so
 * each call reads only what was appended since the last. Without it every call reads whole 8 MB
 * segments and checksums the entries again. Same answers as raftlog_tail.
 *
 * Thread-safe: calls on one reader are serialized by its own lock. Memory: 16 bytes per entry of
 * the segments scanned, freed with segments that leave the directory. */
struct raftlog_reader;

/* A reader of @dir (copied). Never NULL. */
struct raftlog_reader *raftlog_reader_new(const char *dir);
void raftlog_reader_free(struct raftlog_reader *r); /* NULL is fine */

/* As raftlog_tail, through the reader's memory of the segments. */
int raftlog_reader_tail(struct raftlog_reader *r, struct raftlog_entry_id *out, unsigned max, unsigned *n,
                        char *errmsg);

/* How many of the leader's entries (@leader, @n_leader, oldest first) come after the target's
 * last entries (@target, @n_target, oldest first): 0 when the target has everything, or
 * RAFTLOG_LAG_UNKNOWN when its last entries are not a run of the leader's. */
uint64_t raftlog_lag(const struct raftlog_entry_id *leader, unsigned n_leader,
                     const struct raftlog_entry_id *target, unsigned n_target);

/* The entries in one segment's bytes (exposed for the fuzzer and the unit test): the complete,
 * checksummed batches from the start, stopping at the first incomplete or corrupt one. The ids of
 * the LAST min(@max, *@n) entries go to @out, oldest first; *@n counts all of them. Headers are
 * checked for every batch, data only from the end back as far as the ids wanted reach (the
 * expensive part, and a segment is written front to back): so with @max at least the count, *@n
 * is exact, and with a smaller @max a corrupt batch earlier than the ids returned may still be
 * counted. 0, or GERR_PROTO for an unknown format version. */
int raftlog_scan(const uint8_t *bytes, size_t len, struct raftlog_entry_id *out, size_t max, size_t *n);

/* libraft's checksum (libiberty's crc32: polynomial 0x04c11db7, most significant bit first, no
 * final xor), continuing from @init. */
uint32_t raftlog_crc32(const void *p, size_t n, uint32_t init);

#endif
