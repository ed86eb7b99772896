/* HTTPS requests to a Kubernetes API server with libcurl, and the translation of curl's and the
 * API server's errors into GERR_* codes.
 *
 * One struct k8s_http holds one curl easy handle (connections are reused between requests) and is
 * used by one thread at a time (the kubernetes driver's mutex). Requests block until the answer
 * or the timeout. TLS is always verified (peer and host name) against ca_file, or the system's
 * store without one; only https:// URLs are accepted and redirects are not followed. The bearer
 * token file is read again for every request, so a rotated token (projected service account
 * tokens rotate hourly) is picked up without a restart. */
#ifndef GANTRY_DRIVERS_K8S_HTTP_H
#define GANTRY_DRIVERS_K8S_HTTP_H

#include <stdbool.h>

#include "lib/buf.h"
#include "lib/err.h"

#define K8S_TOKEN_MAX (64u * 1024u)

struct k8s_http_config {
    const char *server;           /* "https://host[:port]", no path; copied */
    const char *token_file;       /* NULL: no bearer token; copied */
    const char *ca_file;          /* NULL: the system's CA store; copied */
    const char *client_cert_file; /* PEM; with client_key_file for mutual TLS; NULL: none; copied */
    const char *client_key_file;
    unsigned timeout_ms; /* whole request; 0 = 10000 */
    unsigned max_body;   /* bytes of a response body; larger is GERR_TOOBIG */
};

struct k8s_http;

/* GERR_INVAL for a malformed server URL or half a client certificate pair. */
int k8s_http_new(const struct k8s_http_config *cfg, struct k8s_http **out, char *errmsg);
void k8s_http_free(struct k8s_http *h); /* NULL is fine */

/* Send @method @path (starting with '/', query included, already escaped) with the JSON @body
 * (NULL for none; a PATCH's is a JSON merge patch, sent as application/merge-patch+json). On 0,
 * *@status is the HTTP status (any) and @resp (reset first) holds the
 * body, NUL-terminated past len. Transport failures come back through k8s_http_err_from_curl,
 * a token file that cannot be read as GERR_UNAUTH, with the reason in @errmsg. */
int k8s_http_request(struct k8s_http *h, const char *method, const char *path, const char *body, long *status,
                     struct buf *resp, char *errmsg);

/* The Retry-After header (seconds, 0..3600) of the last response of k8s_http_request, 0 when it
 * had none or one that is not a number of seconds. */
unsigned k8s_http_retry_after(const struct k8s_http *h);

/* A streamed GET (a watch): @on_line is called from this thread with every complete line of the
 * body (without the newline, NUL-terminated, at most K8S_STREAM_LINE_MAX bytes) while the server
 * sends them; a nonzero return from it, or *@stop turning true (checked at least every second),
 * ends the stream. @on_open is called once when the server answered 200, before any line.
 * Returns when the stream ends: 0 when the server closed it normally or a callback/stop ended it,
 * with *@status the HTTP status. A non-200 answer is 0 with that status and the body (capped) in
 * @resp, no line delivered. @timeout_ms bounds the whole stream (0: no bound). Transport failures
 * and a line over the maximum come back as for k8s_http_request (GERR_TOOBIG for the line). */
#define K8S_STREAM_LINE_MAX (16u * 1024u * 1024u)
typedef int (*k8s_http_line_cb)(void *arg, char *line, size_t len);
typedef void (*k8s_http_open_cb)(void *arg);
int k8s_http_stream(struct k8s_http *h, const char *path, unsigned timeout_ms, const volatile bool *stop,
                    k8s_http_open_cb on_open, k8s_http_line_cb on_line, void *arg, long *status,
                    struct buf *resp, char *errmsg);

/* "Authorization: Bearer <token>" from the token file, read now (*@out NUL-terminated, the
 * caller wipes and frees it), or *@out NULL without a token file. GERR_UNAUTH as for requests. */
int k8s_http_auth_header(struct k8s_http *h, char **out, char *errmsg);

/* Percent-encode @s (a query value) onto @b. */
void k8s_http_put_escaped(struct buf *b, const char *s);

/* curl's CURLcode -> GERR_*: connect and resolve failures GERR_UNAVAILABLE; timeouts
 * GERR_TIMEOUT; a server certificate that does not verify GERR_UNAUTH; our body cap
 * (write callback refusal) GERR_TOOBIG; out of memory GERR_NOMEM; send/receive failures and
 * empty replies GERR_CLOSED; a bad URL or option GERR_INVAL; everything else GERR_IO. */
int k8s_http_err_from_curl(int curl_code);

/* HTTP status (with the Status object's reason, "" if none) -> GERR_*: 2xx 0; 400 and 422
 * GERR_INVAL; 401 GERR_UNAUTH; 403 GERR_PERM; 404 GERR_NOTFOUND; 409 GERR_EXISTS when the reason
 * is AlreadyExists, else GERR_ABORTED (a resourceVersion or precondition conflict: re-read and
 * retry); 410 (an expired list continue token) GERR_ABORTED; 429 GERR_BUSY; 504 GERR_TIMEOUT;
 * other 4xx GERR_INVAL; other 5xx GERR_UNAVAILABLE; anything else GERR_PROTO. */
int k8s_http_err_from_status(long status, const char *reason);

#endif
