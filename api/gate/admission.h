/* Admission of calls before any real work, on the loop thread: what a call without credentials, a
 * credential that failed before, or a source that keeps failing may cost the replica.
 *
 * The gate asks admission_check for every call that needs authentication, with a digest of the
 * presented credential (SHA-256 of the authorization header or of the client certificate) and the
 * source host. The answer is one of:
 *   ADMIT_KNOWN    the credential was verified on this replica within the last known_ttl_ms: the
 *                  call is queued in the priority class of the worker pool. It is still fully
 *                  authenticated there (so revocation keeps its bound); the class only decides who
 *                  is served first when the replica is loaded, and no failure of its source ever
 *                  refuses it;
 *   ADMIT_UNKNOWN  any other credential: the call is queued in the bounded second class;
 *   ADMIT_REFUSE   refused at once, with the status and message in the out parameters:
 *                  UNAUTHENTICATED for no credential and for a credential refused within the last
 *                  failed_ttl_ms (it is not checked again), RESOURCE_EXHAUSTED for an unknown
 *                  credential from a source over its failure limit or over its rate of
 *                  unauthenticated calls.
 * After authentication the gate reports the outcome: admission_verified (the credential joins the
 * known set) or admission_failed (the credential joins the failed set and the source's failure
 * count grows).
 *
 * Everything is in fixed tables allocated once (a flood of distinct credentials or sources evicts
 * the oldest entries, it never grows memory). Thread-safe (one mutex; every operation is a few
 * table probes). docs/security.md lists the limits and their defaults. */
#ifndef GANTRY_API_GATE_ADMISSION_H
#define GANTRY_API_GATE_ADMISSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ADMISSION_DIGEST_SIZE 32u

struct admission_config {
    unsigned fail_limit;     /* failures from one source in fail_window_ms before it is limited (20) */
    unsigned fail_window_ms; /* (60000) */
    unsigned unauth_rate;    /* calls per second a source may make without a known credential (50) */
    unsigned unauth_burst;   /* (100) */
    unsigned known_ttl_ms;   /* how long a verified credential counts as known (600000) */
    unsigned failed_ttl_ms;  /* how long a refused credential is refused without a check (5000) */
};

/* The defaults above. */
void admission_config_defaults(struct admission_config *cfg);

enum admission_class { ADMIT_KNOWN = 0, ADMIT_UNKNOWN = 1, ADMIT_REFUSE = 2 };

struct admission;

/* @cfg is copied. Never fails (allocation aborts). */
struct admission *admission_new(const struct admission_config *cfg);
void admission_free(struct admission *a);

/* Classify a call from @source_host ("10.0.0.1", no port) presenting the credential of @digest
 * (NULL: no credential at all). On ADMIT_REFUSE, *@status is the gRPC status and @why (at least
 * 160 bytes) the message for the client. */
enum admission_class admission_check(struct admission *a, const char *source_host,
                                     const uint8_t digest[ADMISSION_DIGEST_SIZE], int64_t now_ms, int *status,
                                     char *why, size_t len);

/* A call that needs no credential (Cluster/Join, which carries its own token): admitted in the
 * second class while @source_host is within its rate of unauthenticated calls. */
enum admission_class admission_anonymous(struct admission *a, const char *source_host, int64_t now_ms,
                                         int *status, char *why, size_t len);

/* The credential of @digest authenticated a call. */
void admission_verified(struct admission *a, const uint8_t digest[ADMISSION_DIGEST_SIZE], int64_t now_ms);

/* The credential of @digest (NULL: none) from @source_host was refused by authentication.
 * Returns the source's failures in the current window. */
unsigned admission_failed(struct admission *a, const char *source_host,
                          const uint8_t digest[ADMISSION_DIGEST_SIZE], int64_t now_ms);

/* The digest of a credential: SHA-256 of @authorization (the header value) when not NULL, else of
 * the DER client certificate @cert_der (@cert_len bytes). false when there is neither. */
bool admission_digest(const char *authorization, const uint8_t *cert_der, size_t cert_len,
                      uint8_t out[ADMISSION_DIGEST_SIZE]);

/* The host part of a peer address ("127.0.0.1:5000" -> "127.0.0.1", "[::1]:5" -> "[::1]"), so
 * ports do not dodge per-source limits. */
void admission_source_host(const char *peer, char *out, size_t len);

#endif
