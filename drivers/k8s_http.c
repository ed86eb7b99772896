/* HTTPS to the Kubernetes API server (see k8s_http.h). */
#include "drivers/k8s_http.h"

#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "drivers/driver_internal.h"
#include "lib/file.h"
#include "lib/mem.h"

#define DEFAULT_TIMEOUT_MS 10000u

struct k8s_http {
    CURL *curl;
    char *server;
    char *token_file;
    char *ca_file;
    char *cert;
    char *key;
    unsigned timeout_ms;
    unsigned max_body;
    struct buf *resp; /* the response being received */
    bool too_big;
    unsigned retry_after; /* the last response's Retry-After, seconds */
    /* A stream (k8s_http_stream) in progress: */
    bool streaming;
    long stream_status;
    const volatile bool *stop;
    k8s_http_open_cb on_open;
    k8s_http_line_cb on_line;
    void *arg;
    bool cb_ended; /* a line callback ended the stream */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rv;

static void curl_init(void)
{
    curl_init_rv = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int k8s_http_err_from_curl(int curl_code)
{
    switch ((CURLcode)curl_code) {
    case CURLE_OK:
        return 0;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        return GERR_UNAVAILABLE;
    case CURLE_OPERATION_TIMEDOUT:
        return GERR_TIMEOUT;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
        return GERR_UNAUTH;
    case CURLE_WRITE_ERROR:
        return GERR_TOOBIG;
    case CURLE_OUT_OF_MEMORY:
        return GERR_NOMEM;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    /* A connection reset while TLS or HTTP/2 was being set up or used, as an API server
     * restarting (or a load balancer in front of it dropping it) causes: it clears by waiting. */
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SEND_FAIL_REWIND:
        return GERR_CLOSED;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_BAD_FUNCTION_ARGUMENT:
        return GERR_INVAL;
    default:
        return GERR_IO;
    }
}

int k8s_http_err_from_status(long status, const char *reason)
{
    if (status >= 200 && status < 300) {
        return 0;
    }
    switch (status) {
    case 400:
    case 422:
        return GERR_INVAL;
    case 401:
        return GERR_UNAUTH;
    case 403:
        return GERR_PERM;
    case 404:
        return GERR_NOTFOUND;
    case 409:
        return reason != NULL && strcmp(reason, "AlreadyExists") == 0 ? GERR_EXISTS : GERR_ABORTED;
    case 410:
        return GERR_ABORTED;
    case 429:
        return GERR_BUSY;
    case 504:
        return GERR_TIMEOUT;
    default:
        return status >= 400 && status < 500   ? GERR_INVAL
               : status >= 500 && status < 600 ? GERR_UNAVAILABLE
                                               : GERR_PROTO;
    }
}

/* Deliver every complete line in h->resp to the line callback and keep the partial rest. */
static bool stream_lines(struct k8s_http *h)
{
    size_t start = 0;
    for (size_t i = 0; i < h->resp->len; i++) {
        if (h->resp->data[i] != '\n') {
            continue;
        }
        h->resp->data[i] = '\0';
        size_t n = i - start;
        if (n > 0 && h->on_line(h->arg, (char *)h->resp->data + start, n) != 0) {
            h->cb_ended = true;
            return false;
        }
        start = i + 1;
    }
    memmove(h->resp->data, h->resp->data + start, h->resp->len - start);
    h->resp->len -= start;
    return true;
}

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct k8s_http *h = arg;
    size_t len = size * n;
    if (h->streaming && h->stream_status == 0) {
        curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &h->stream_status);
        if (h->stream_status == 200 && h->on_open != NULL) {
            h->on_open(h->arg);
        }
    }
    if (h->streaming && h->stream_status == 200) {
        if (h->resp->len + len > K8S_STREAM_LINE_MAX) {
            h->too_big = true;
            return 0;
        }
        buf_append(h->resp, p, len);
        return stream_lines(h) ? len : 0;
    }
    if (h->resp->len + len > h->max_body) {
        h->too_big = true;
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    }
    buf_append(h->resp, p, len);
    return len;
}

/* Retry-After: <seconds> (an HTTP date is ignored: the API server sends seconds). A stream is open
 * once its headers end with status 200: a quiet watch may send no byte of body for a minute (until
 * its first bookmark), and it is established all the same. */
static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct k8s_http *h = arg;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (h->streaming && h->stream_status == 0 && len > 0 && len <= 2 && (p[0] == '\r' || p[0] == '\n')) {
        long code = 0;
        curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &code);
        if (code == 200) {
            h->stream_status = code;
            if (h->on_open != NULL) {
                h->on_open(h->arg);
            }
        }
    }
    if (len > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
        unsigned v = 0;
        size_t i = sizeof name - 1, digits = 0;
        while (i < len && p[i] == ' ') {
            i++;
        }
        for (; i < len && p[i] >= '0' && p[i] <= '9' && digits < 5; i++, digits++) {
            v = v * 10u + (unsigned)(p[i] - '0');
        }
        h->retry_after = digits > 0 && v <= 3600 ? v : 0;
    }
    return len;
}

/* curl's progress callback: ends a stream when its stop flag is set. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    struct k8s_http *h = arg;
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return h->stop != NULL && *h->stop ? 1 : 0;
}

void k8s_http_put_escaped(struct buf *b, const char *s)
{
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
            c == '_' || c == '.' || c == '~') {
            buf_append(b, s, 1);
        } else {
            buf_printf(b, "%%%02X", c);
        }
    }
}

unsigned k8s_http_retry_after(const struct k8s_http *h)
{
    return h->retry_after;
}

static bool server_ok(const char *s)
{
    if (s == NULL || strncmp(s, "https://", 8) != 0 || strlen(s) > 512 || s[8] == '\0') {
        return false;
    }
    for (const char *p = s + 8; *p != '\0'; p++) {
        if (*p == '/' || *p == '?' || *p == '#' || *p == '@' || (unsigned char)*p <= 0x20 ||
            (unsigned char)*p >= 0x7f) {
            return false;
        }
    }
    return true;
}

static char *dup_opt(const char *s)
{
    return s != NULL ? mem_strdup(s) : NULL;
}

int k8s_http_new(const struct k8s_http_config *cfg, struct k8s_http **out, char *errmsg)
{
    *out = NULL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rv != CURLE_OK) {
        gerr_set(errmsg, "curl_global_init: %s", curl_easy_strerror(curl_init_rv));
        return GERR_INTERNAL;
    }
    if (!server_ok(cfg->server)) {
        gerr_set(errmsg, "kubernetes server must be https://host[:port] without a path");
        return GERR_INVAL;
    }
    if ((cfg->client_cert_file == NULL) != (cfg->client_key_file == NULL)) {
        gerr_set(errmsg, "kubernetes client certificate and key go together");
        return GERR_INVAL;
    }
    struct k8s_http *h = mem_zalloc(sizeof *h);
    h->curl = curl_easy_init();
    if (h->curl == NULL) {
        mem_free(h);
        gerr_set(errmsg, "curl_easy_init failed");
        return GERR_NOMEM;
    }
    h->server = mem_strdup(cfg->server);
    h->token_file = dup_opt(cfg->token_file);
    h->ca_file = dup_opt(cfg->ca_file);
    h->cert = dup_opt(cfg->client_cert_file);
    h->key = dup_opt(cfg->client_key_file);
    h->timeout_ms = cfg->timeout_ms != 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    h->max_body = cfg->max_body;
    *out = h;
    return 0;
}

void k8s_http_free(struct k8s_http *h)
{
    if (h == NULL) {
        return;
    }
    curl_easy_cleanup(h->curl);
    mem_free(h->server);
    mem_free(h->token_file);
    mem_free(h->ca_file);
    mem_free(h->cert);
    mem_free(h->key);
    mem_free(h);
}

/* The "Authorization: Bearer ..." header from the token file, or NULL without one. */
static int auth_header(struct k8s_http *h, char **out, char *errmsg)
{
    char *tok;
    size_t len;
    *out = NULL;
    if (h->token_file == NULL) {
        return 0;
    }
    int rv = file_read_all(h->token_file, K8S_TOKEN_MAX, &tok, &len, errmsg);
    if (rv != 0) {
        gerr_wrap(errmsg, "kubernetes bearer token");
        return GERR_UNAUTH;
    }
    while (len > 0 && (tok[len - 1] == '\n' || tok[len - 1] == '\r' || tok[len - 1] == ' ')) {
        tok[--len] = '\0';
    }
    if (!driver__printable(tok, K8S_TOKEN_MAX, true)) {
        mem_free(tok);
        gerr_set(errmsg, "kubernetes bearer token in %s is empty or not printable ASCII", h->token_file);
        return GERR_UNAUTH;
    }
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "Authorization: Bearer %s", tok);
    memset(tok, 0, len);
    mem_free(tok);
    *out = (char *)b.data;
    return 0;
}

int k8s_http_auth_header(struct k8s_http *h, char **out, char *errmsg)
{
    return auth_header(h, out, errmsg);
}

static void set_options(struct k8s_http *h, const char *method, const char *url, const char *body,
                        struct curl_slist *headers)
{
    CURL *c = h->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)h->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)h->timeout_ms);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
    if (h->ca_file != NULL) {
        curl_easy_setopt(c, CURLOPT_CAINFO, h->ca_file);
    }
    if (h->cert != NULL) {
        curl_easy_setopt(c, CURLOPT_SSLCERT, h->cert);
        curl_easy_setopt(c, CURLOPT_SSLKEY, h->key);
    }
}

/* The headers of a request: JSON accepted, @content_type (a "Content-Type: ..." line, NULL for a
 * request without a body), and the credential, which
 * is wiped from memory once copied into the list. 0, or auth_header's error. */
static int request_headers(struct k8s_http *h, const char *content_type, struct curl_slist **out,
                           char *errmsg)
{
    char *auth;
    int rv = auth_header(h, &auth, errmsg);
    if (rv != 0) {
        return rv;
    }
    struct curl_slist *headers = curl_slist_append(NULL, "Accept: application/json");
    if (content_type != NULL) {
        headers = curl_slist_append(headers, content_type);
    }
    if (auth != NULL) {
        headers = curl_slist_append(headers, auth);
        memset(auth, 0, strlen(auth));
        mem_free(auth);
    }
    *out = headers;
    return 0;
}

int k8s_http_request(struct k8s_http *h, const char *method, const char *path, const char *body, long *status,
                     struct buf *resp, char *errmsg)
{
    *status = 0;
    buf_reset(resp);
    struct curl_slist *headers;
    int rv = request_headers(h,
                             strcmp(method, "PATCH") == 0 ? "Content-Type: application/merge-patch+json"
                                                          : "Content-Type: application/json",
                             &headers, errmsg);
    if (rv != 0) {
        return rv;
    }
    struct buf url;
    buf_init(&url);
    buf_printf(&url, "%s%s", h->server, path);
    h->resp = resp;
    h->too_big = false;
    h->retry_after = 0;
    set_options(h, method, (const char *)url.data, body, headers);
    CURLcode cc = curl_easy_perform(h->curl);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    if (cc != CURLE_OK) {
        rv = k8s_http_err_from_curl((int)cc);
        gerr_set(errmsg, "%s %s: %s", method, path,
                 h->too_big ? "response larger than the limit" : curl_easy_strerror(cc));
    } else {
        curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, status);
        buf_append_zero(resp, 1);
        resp->len--; /* NUL-terminated past len */
    }
    buf_close(&url);
    h->resp = NULL;
    return rv;
}

int k8s_http_stream(struct k8s_http *h, const char *path, unsigned timeout_ms, const volatile bool *stop,
                    k8s_http_open_cb on_open, k8s_http_line_cb on_line, void *arg, long *status,
                    struct buf *resp, char *errmsg)
{
    *status = 0;
    buf_reset(resp);
    struct curl_slist *headers;
    int rv = request_headers(h, NULL, &headers, errmsg);
    if (rv != 0) {
        return rv;
    }
    struct buf url;
    buf_init(&url);
    buf_printf(&url, "%s%s", h->server, path);
    h->resp = resp;
    h->too_big = false;
    h->retry_after = 0;
    h->streaming = true;
    h->stream_status = 0;
    h->stop = stop;
    h->on_open = on_open;
    h->on_line = on_line;
    h->arg = arg;
    h->cb_ended = false;
    set_options(h, "GET", (const char *)url.data, NULL, headers);
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h->curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h->curl, CURLOPT_XFERINFODATA, h);
    curl_easy_setopt(h->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    CURLcode cc = curl_easy_perform(h->curl);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(headers);
    bool stopped = stop != NULL && *stop;
    if (cc == CURLE_OK || (cc == CURLE_WRITE_ERROR && h->cb_ended) ||
        (cc == CURLE_ABORTED_BY_CALLBACK && stopped)) {
        curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, status);
        buf_append_zero(resp, 1);
        resp->len--;
        rv = 0;
    } else {
        rv = k8s_http_err_from_curl((int)cc);
        gerr_set(errmsg, "watch %s: %s", path,
                 h->too_big ? "an event larger than the limit" : curl_easy_strerror(cc));
    }
    buf_close(&url);
    h->streaming = false;
    h->stop = NULL;
    h->on_open = NULL;
    h->on_line = NULL;
    h->resp = NULL;
    return rv;
}
