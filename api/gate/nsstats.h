/* Per-namespace call counters for /metrics, with a bounded number of series (docs/metrics.md,
 * "Cardinality").
 *
 * The gate tags every call that names a namespace (grpc_call_set_tag with nsstats_tag) once it is
 * authenticated and the request decoded, and the transport's outcome observer counts the tagged
 * call's final status (nsstats_count). A call is counted by the replica whose client made it: a
 * call another replica forwarded here is not tagged, so a forwarded mutation is counted once.
 *
 * Bounds. Only namespaces in the known set get a series of their own: nsstats_set_known adds the
 * names of the namespaces that exist (the caller reads them from the store now and then), up to
 * @max_namespaces names in all; a name once added keeps its counters until the process ends. Every
 * other name a request carries (a namespace that does not exist, one created after the table
 * filled up) is counted under namespace "_other", which no namespace can be called (names are
 * DNS-1123 labels). Methods are those of the authorization table (api/authz/authz.h), a fixed set.
 * So the series are at most (max_namespaces + 1) x methods x 2, plus (max_namespaces + 1) denial
 * series; only nonzero counters are written.
 *
 * Threads: nsstats_tag and nsstats_count from any thread, lock-free; nsstats_set_known from one
 * thread at a time (a mutex orders concurrent callers); nsstats_write from any thread. */
#ifndef GANTRY_API_GATE_NSSTATS_H
#define GANTRY_API_GATE_NSSTATS_H

#include <stdint.h>

#include "lib/buf.h"

#define NSSTATS_OTHER                  "_other"
#define NSSTATS_DEFAULT_MAX_NAMESPACES 200u
#define NSSTATS_NAME_MAX               64u /* a DNS-1123 label is at most 63 characters */

struct nsstats;

/* A table for @max_namespaces names (0: the default) and every method of the authorization table.
 * Never fails (allocation failure aborts, like every allocation here). */
struct nsstats *nsstats_new(unsigned max_namespaces);
void nsstats_free(struct nsstats *s);

/* Add the names in @names (@n of them; anything but a DNS-1123 label of at most 63 characters is
 * skipped)
 * that are not tracked yet, while room is left. Names are copied. Returns how many names are
 * tracked now. */
unsigned nsstats_set_known(struct nsstats *s, const char *const *names, unsigned n);

/* How many namespace names could not be tracked because the table was full, at the last
 * nsstats_set_known. */
unsigned nsstats_overflow(struct nsstats *s);

/* The tag of a call to method @path ("/gantry.v1.Sandboxes/Create") in namespace @ns: 0 (not
 * counted) for an empty namespace or a path outside the table. */
uint32_t nsstats_tag(struct nsstats *s, const char *ns, const char *path);

/* Count one call with tag @tag (0: nothing) that ended with gRPC status @status: every call, the
 * non-OK ones as errors, PERMISSION_DENIED also as a denial. */
void nsstats_count(struct nsstats *s, uint32_t tag, int status);

/* Append gantry_namespace_api_calls_total, gantry_namespace_api_errors_total and
 * gantry_namespace_api_denied_total (HELP, TYPE and every nonzero series) to @out. */
void nsstats_write(struct nsstats *s, struct buf *out);

#endif
