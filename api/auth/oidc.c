/* The OIDC authenticator on jwt.h and libcurl. See oidc.h for the contract.
 *
 * The happy path: oidc_start() fetches each issuer's JWKS (file or HTTPS), parses it with
 * jwt_keyset_parse() and installs it with jwt_verifier_set_keys() under the write lock. Worker
 * threads call oidc_verify(), which runs jwt_verify() under the read lock. When an issuer rotates
 * its keys, the first token signed with the new key gets GERR_NOTFOUND; that thread fetches the
 * issuer's JWKS again (others needing the same issuer wait for that fetch), installs it, and the
 * second jwt_verify() succeeds.
 *
 * Possible failure modes:
 *   - the fetch fails (network, TLS, HTTP status, size, bad document): the old key set stays, the
 *     error is logged and kept in the issuer's state, and the next fetch is allowed only after
 *     min_refresh_interval_ms (by oidc_refresh_due() or by a token with an unknown kid);
 *   - a flood of tokens with unknown kids: at most one fetch per issuer per interval; the rest
 *     are refused at once with a message that says the refresh is rate limited;
 *   - several threads miss the same kid at once: one fetches, the others wait on the issuer's
 *     condition variable for that fetch to finish and then verify again.
 *
 * Locks: o->lock (rwlock, writer-preferring) guards the verifier; each source's mu guards its
 * fetch state. No thread holds a source's mu while it takes o->lock, and no lock is held while
 * fetching, so a slow identity provider never blocks verification of other tokens. */
#include "api/auth/oidc.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>

#include "api/auth/tokenreview.h"
#include "lib/file.h"
#include "lib/log.h"
#include "lib/mem.h"

#define USER_AGENT          "gantry-oidc/1"
#define BODY_INITIAL        4096u
#define HTTP_STATUS_OK      200L
#define HTTP_STATUS_CREATED 201L
#define SA_PREFIX           "system:serviceaccount:"
#define MAX_BEARER          16384u /* bytes of a bearer token file (a projected token is about 1 KiB) */

/* One issuer: its configuration (immutable after oidc_add_issuer) and its fetch state (mu). */
struct oidc_src {
    char *name;
    char *issuer;
    char *jwks_file; /* exactly one of jwks_file and jwks_url is set */
    char *jwks_url;
    char *ca_file;
    char *bearer_token_file; /* read at every fetch of jwks_url, or NULL */
    unsigned timeout_ms;
    size_t max_document;
    uint64_t refresh_ms;
    uint64_t min_interval_ms;
    /* TokenReview (token_review on): the full URL of the tokenreviews endpoint, the audiences
     * asked for, and the cache of positive answers; review_url NULL when off. */
    char *review_url;
    char **auds;
    unsigned n_auds;
    struct tokenreview_cache *review_cache;
    bool review_only; /* OIDC_VERIFY_TOKEN_REVIEW: no key set; the TokenReview is the verification */

    pthread_mutex_t mu;
    pthread_cond_t fetched;   /* broadcast when a fetch finishes */
    bool fetching;            /* a thread is fetching this issuer right now */
    bool attempted;           /* a fetch has started at least once */
    uint64_t generation;      /* completed fetches */
    uint64_t last_attempt_ms; /* monotonic start of the last fetch */
    struct oidc_issuer_status status;
};

struct oidc {
    struct clock *clock;
    pthread_rwlock_t lock; /* guards verifier */
    struct jwt_verifier *verifier;
    struct oidc_src *srcs[JWT_MAX_ISSUERS];
    unsigned n_srcs;
    bool started;
};

/* ---- libcurl: process-wide initialisation and the one error translation */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (curl_init_rc != CURLE_OK) {
        LOG_ERROR("oidc: curl_global_init: %s", curl_easy_strerror(curl_init_rc));
    }
}

/* The one translation of libcurl results (and of the HTTP status of a completed transfer) into
 * GERR codes. @too_big is set when our write callback refused the body; @detail is libcurl's
 * error buffer (may be empty). */
static int oidc_from_curl(CURLcode rc, long status, bool too_big, const char *detail, char *errmsg)
{
    const char *what = detail[0] != '\0' ? detail : curl_easy_strerror(rc);
    switch (rc) {
    case CURLE_OK:
        if (status == HTTP_STATUS_OK || status == HTTP_STATUS_CREATED) {
            return 0; /* 201: a TokenReview is created (POST); a JWKS GET answers 200 */
        }
        gerr_set(errmsg, "HTTP status %ld", status);
        return GERR_UNAVAILABLE;
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
        if (too_big || rc == CURLE_FILESIZE_EXCEEDED) {
            gerr_set(errmsg, "the document is larger than the maximum allowed");
            return GERR_TOOBIG;
        }
        break;
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_TOO_MANY_REDIRECTS:
        gerr_set(errmsg, "refused redirect or scheme (only https is allowed): %s", what);
        return GERR_REFUSED;
    case CURLE_URL_MALFORMAT:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        gerr_set(errmsg, "bad local setting: %s", what);
        return GERR_INVAL;
    case CURLE_OUT_OF_MEMORY:
        gerr_set(errmsg, "libcurl: %s", what);
        return GERR_NOMEM;
    case CURLE_FAILED_INIT:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
    case CURLE_NOT_BUILT_IN:
        gerr_set(errmsg, "libcurl: %s", what);
        return GERR_INTERNAL;
    default:
        break;
    }
    gerr_set(errmsg, "%s", what);
    return GERR_UNAVAILABLE;
}

/* ---- HTTPS fetch */

struct body {
    char *p;
    size_t n, cap, max;
    bool too_big;
};

/* Append what arrives, refusing (which aborts the transfer) anything beyond b->max bytes. The
 * buffer grows by doubling from what actually arrived, never from a declared length. */
static size_t body_write(char *data, size_t size, size_t nmemb, void *ud)
{
    struct body *b = ud;
    size_t n = size * nmemb;
    if (n > b->max - b->n) {
        b->too_big = true;
        return 0;
    }
    if (b->n + n > b->cap) {
        size_t cap = b->cap == 0 ? BODY_INITIAL : b->cap * 2;
        while (cap < b->n + n) {
            cap *= 2;
        }
        b->cap = cap < b->max ? cap : b->max;
        b->p = mem_realloc(b->p, b->cap + 1);
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    return n;
}

static CURLcode http_setup_tls(CURL *h, const struct oidc_src *s)
{
    CURLcode rc = curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    }
    if (rc == CURLE_OK && s->ca_file != NULL) {
        rc = curl_easy_setopt(h, CURLOPT_CAINFO, s->ca_file);
        /* Only the configured CA: also drop the built-in CA directory. */
        if (rc == CURLE_OK) {
            rc = curl_easy_setopt(h, CURLOPT_CAPATH, (char *)NULL);
        }
    }
    return rc;
}

static CURLcode http_setup_limits(CURL *h, const struct oidc_src *s, size_t max)
{
    CURLcode rc = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)s->timeout_ms);
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)s->timeout_ms);
    }
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max);
    }
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* we run on many threads */
    }
    return rc;
}

/* What one HTTPS request is: GET of a JWKS, or POST of a TokenReview (@post non-NULL, JSON). */
struct http_req {
    const char *url;
    const char *post;
    size_t max;
};

static CURLcode http_setup(CURL *h, const struct oidc_src *s, const struct http_req *r, const char *bearer,
                           struct body *b, char *detail)
{
    CURLcode rc = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, detail);
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(h, CURLOPT_URL, r->url);
    }
    if (rc == CURLE_OK && r->post != NULL) {
        rc = curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->post);
    }
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    }
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "https");
    }
    if (rc == CURLE_OK) {
        /* A bearer token goes to the configured host only: no redirect is followed with one. */
        rc = curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, bearer == NULL ? 1L : 0L);
    }
    if (rc == CURLE_OK && bearer != NULL) {
        rc = curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        if (rc == CURLE_OK) {
            rc = curl_easy_setopt(h, CURLOPT_XOAUTH2_BEARER, bearer);
        }
    }
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(h, CURLOPT_MAXREDIRS, (long)OIDC_MAX_REDIRECTS);
    }
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(h, CURLOPT_USERAGENT, USER_AGENT);
    }
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
    }
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    }
    if (rc == CURLE_OK) {
        rc = http_setup_tls(h, s);
    }
    if (rc == CURLE_OK) {
        rc = http_setup_limits(h, s, r->max);
    }
    return rc;
}

/* Read s->bearer_token_file into *@out (mem_free it after wiping): surrounding white space
 * dropped; GERR_INVAL when empty or holding anything but visible ASCII. */
static int bearer_read(const struct oidc_src *s, char **out, char *errmsg)
{
    size_t len = 0;
    char *t = NULL;
    int rc = file_read_all(s->bearer_token_file, MAX_BEARER, &t, &len, errmsg);
    if (rc != 0) {
        gerr_wrap(errmsg, "bearer_token_file");
        return rc;
    }
    size_t a = 0, z = len;
    while (a < z && (t[a] == ' ' || t[a] == '\t' || t[a] == '\r' || t[a] == '\n')) {
        a++;
    }
    while (z > a && (t[z - 1] == ' ' || t[z - 1] == '\t' || t[z - 1] == '\r' || t[z - 1] == '\n')) {
        z--;
    }
    bool ok = z > a;
    for (size_t i = a; i < z && ok; i++) {
        ok = t[i] > 0x20 && t[i] < 0x7f;
    }
    if (!ok) {
        explicit_bzero(t, len);
        mem_free(t);
        gerr_set(errmsg, "bearer_token_file %s is empty or holds characters a token cannot have",
                 s->bearer_token_file);
        return GERR_INVAL;
    }
    memmove(t, t + a, z - a);
    explicit_bzero(t + (z - a), len - (z - a));
    t[z - a] = '\0';
    *out = t;
    return 0;
}

/* Send @r into a new buffer (*@out, mem_free it; *@len bytes). */
static int http_do(const struct oidc_src *s, const struct http_req *r, char **out, size_t *len, char *errmsg)
{
    char detail[CURL_ERROR_SIZE] = "";
    struct body b = {.max = r->max};
    struct curl_slist *hdrs = NULL;
    long status = 0;
    char *bearer = NULL;

    *out = NULL;
    if (s->bearer_token_file != NULL) {
        int brc = bearer_read(s, &bearer, errmsg);
        if (brc != 0) {
            return brc;
        }
    }
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        return oidc_from_curl(curl_init_rc, 0, false, detail, errmsg);
    }
    CURL *h = curl_easy_init();
    CURLcode rc = h != NULL ? http_setup(h, s, r, bearer, &b, detail) : CURLE_FAILED_INIT;
    if (rc == CURLE_OK && r->post != NULL) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        hdrs = curl_slist_append(hdrs, "Accept: application/json");
        rc = hdrs != NULL ? curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs) : CURLE_OUT_OF_MEMORY;
    }
    if (rc == CURLE_OK) {
        rc = curl_easy_perform(h);
    }
    if (rc == CURLE_OK) {
        rc = curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    }
    curl_easy_cleanup(h);
    curl_slist_free_all(hdrs);
    if (bearer != NULL) {
        explicit_bzero(bearer, strlen(bearer));
        mem_free(bearer);
    }
    int err = oidc_from_curl(rc, status, b.too_big, detail, errmsg);
    if (err != 0) {
        mem_free(b.p);
        return err;
    }
    *out = b.p != NULL ? b.p : mem_zalloc(1);
    *len = b.n;
    return 0;
}

/* ---- Fetch, parse, install */

static int src_load(const struct oidc_src *s, char **doc, size_t *len, char *errmsg)
{
    if (s->jwks_file != NULL) {
        return file_read_all(s->jwks_file, s->max_document, doc, len, errmsg);
    }
    struct http_req r = {.url = s->jwks_url, .max = s->max_document};
    return http_do(s, &r, doc, len, errmsg);
}

static const char *src_location(const struct oidc_src *s)
{
    return s->jwks_file != NULL ? s->jwks_file : s->jwks_url != NULL ? s->jwks_url : s->review_url;
}

/* Load, parse and install the issuer's key set; *@n_keys is its size. No lock may be held. */
static int src_fetch(struct oidc *o, const struct oidc_src *s, unsigned *n_keys, char *errmsg)
{
    char *doc;
    size_t len = 0;
    struct jwt_keyset *ks;

    int rc = src_load(s, &doc, &len, errmsg);
    if (rc == 0) {
        rc = jwt_keyset_parse(doc, len, &ks, errmsg);
        mem_free(doc);
    }
    if (rc == 0) {
        *n_keys = jwt_keyset_count(ks);
        pthread_rwlock_wrlock(&o->lock);
        rc = jwt_verifier_set_keys(o->verifier, s->issuer, ks, errmsg);
        pthread_rwlock_unlock(&o->lock);
        if (rc != 0) {
            jwt_keyset_free(ks);
        }
    }
    if (rc != 0) {
        gerr_wrap(errmsg, "JWKS of issuer %s from %s", s->name, src_location(s));
    }
    return rc;
}

/* Claim the fetch of @s. Called with s->mu held and s->fetching false. */
static void src_begin(struct oidc *o, struct oidc_src *s)
{
    s->fetching = true;
    s->attempted = true;
    s->last_attempt_ms = clock_mono_ms(o->clock);
}

/* Record the outcome of a fetch begun with src_begin and wake the waiting threads. */
static void src_end(struct oidc *o, struct oidc_src *s, int rc, unsigned n_keys, const char *errmsg)
{
    pthread_mutex_lock(&s->mu);
    s->fetching = false;
    s->generation++;
    s->status.fetches++;
    s->status.last_rc = rc;
    if (rc == 0) {
        s->status.has_keys = true;
        s->status.n_keys = n_keys;
        s->status.last_success_wall_ms = o->clock->wall_ms(o->clock);
        s->status.last_error[0] = '\0';
    } else {
        s->status.failures++;
        snprintf(s->status.last_error, sizeof s->status.last_error, "%s", errmsg);
    }
    pthread_cond_broadcast(&s->fetched);
    pthread_mutex_unlock(&s->mu);
}

/* Fetch @s (already claimed with src_begin), record and log the outcome. */
static int src_run(struct oidc *o, struct oidc_src *s, char *errmsg)
{
    unsigned n_keys = 0;
    int rc = src_fetch(o, s, &n_keys, errmsg);
    src_end(o, s, rc, n_keys, errmsg);
    if (rc == 0) {
        LOG_INFO("oidc: issuer %s: %u key(s) loaded from %s", s->name, n_keys, src_location(s));
    } else {
        LOG_WARN("oidc: %s (%s)", errmsg, gerr_name(rc));
    }
    return rc;
}

/* ---- Configuration */

static void src_free(struct oidc_src *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->fetched);
    mem_free(s->name);
    mem_free(s->issuer);
    mem_free(s->jwks_file);
    mem_free(s->jwks_url);
    mem_free(s->ca_file);
    mem_free(s->bearer_token_file);
    mem_free(s->review_url);
    for (unsigned i = 0; i < s->n_auds; i++) {
        mem_free(s->auds[i]);
    }
    mem_free(s->auds);
    tokenreview_cache_free(s->review_cache);
    mem_free(s);
}

static bool empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

/* The URL must parse, use the https scheme and name a host. */
static int check_url(const char *url, const char *what, const char *name, char *errmsg)
{
    if (strlen(url) > OIDC_MAX_URL) {
        gerr_set(errmsg, "issuer %s: %s is longer than %u bytes", name, what, OIDC_MAX_URL);
        return GERR_INVAL;
    }
    if (strncasecmp(url, "http://", 7) == 0) {
        gerr_set(errmsg, "issuer %s: %s %s uses plain http, which is refused: use https://", name, what, url);
        return GERR_INVAL;
    }
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    CURLUcode uc = u != NULL ? curl_url_set(u, CURLUPART_URL, url, 0) : CURLUE_OUT_OF_MEMORY;
    if (uc == CURLUE_OK) {
        uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    }
    if (uc == CURLUE_OK) {
        uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    }
    bool ok = uc == CURLUE_OK && strcmp(scheme, "https") == 0 && host[0] != '\0';
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    if (!ok) {
        gerr_set(errmsg, "issuer %s: %s %s is not a valid https:// URL", name, what, url);
        return GERR_INVAL;
    }
    return 0;
}

/* OIDC_VERIFY_TOKEN_REVIEW: no JWKS source; the API server's address and our bearer token. */
static int check_review_only(const struct oidc_issuer_config *cfg, const char *name, char *errmsg)
{
    if (cfg->jwks_file != NULL || cfg->jwks_url != NULL) {
        gerr_set(errmsg,
                 "issuer %s: verify \"token_review\" takes no jwks_file or jwks_url (the API server's "
                 "TokenReview is the verification)",
                 name);
        return GERR_INVAL;
    }
    if (empty(cfg->token_review_url)) {
        gerr_set(errmsg,
                 "issuer %s: verify \"token_review\" needs token_review_url (the API server's https:// "
                 "address)",
                 name);
        return GERR_INVAL;
    }
    if (empty(cfg->bearer_token_file)) {
        gerr_set(errmsg,
                 "issuer %s: verify \"token_review\" needs bearer_token_file (the API server answers "
                 "TokenReviews only to an authorised caller)",
                 name);
        return GERR_INVAL;
    }
    if (cfg->ca_file != NULL && cfg->ca_file[0] == '\0') {
        gerr_set(errmsg, "issuer %s: ca_file must be a non-empty path", name);
        return GERR_INVAL;
    }
    return check_url(cfg->token_review_url, "token_review_url", name, errmsg);
}

static int check_source(const struct oidc_issuer_config *cfg, const char *name, char *errmsg)
{
    if (cfg->verify == OIDC_VERIFY_TOKEN_REVIEW) {
        return check_review_only(cfg, name, errmsg);
    }
    if (cfg->verify != OIDC_VERIFY_JWKS) {
        gerr_set(errmsg, "issuer %s: unknown verification mode %d", name, (int)cfg->verify);
        return GERR_INVAL;
    }
    if (empty(cfg->jwks_file) == empty(cfg->jwks_url)) {
        gerr_set(errmsg, "issuer %s: give exactly one of jwks_file and jwks_url", name);
        return GERR_INVAL;
    }
    bool https = cfg->jwks_url != NULL || cfg->token_review;
    if (cfg->ca_file != NULL && (cfg->ca_file[0] == '\0' || !https)) {
        gerr_set(errmsg, "issuer %s: ca_file must be a non-empty path and needs jwks_url or token_review",
                 name);
        return GERR_INVAL;
    }
    if (cfg->bearer_token_file != NULL && (cfg->bearer_token_file[0] == '\0' || !https)) {
        gerr_set(errmsg,
                 "issuer %s: bearer_token_file must be a non-empty path and needs jwks_url or token_review",
                 name);
        return GERR_INVAL;
    }
    if (cfg->token_review_url != NULL && !cfg->token_review) {
        gerr_set(errmsg, "issuer %s: token_review_url needs token_review", name);
        return GERR_INVAL;
    }
    if (cfg->token_review && cfg->bearer_token_file == NULL) {
        gerr_set(errmsg,
                 "issuer %s: token_review needs bearer_token_file (the API server answers TokenReviews "
                 "only to an authorised caller)",
                 name);
        return GERR_INVAL;
    }
    if (cfg->token_review && cfg->token_review_url == NULL && cfg->jwks_url == NULL) {
        gerr_set(errmsg, "issuer %s: token_review with jwks_file needs token_review_url", name);
        return GERR_INVAL;
    }
    int rc = empty(cfg->jwks_url) ? 0 : check_url(cfg->jwks_url, "jwks_url", name, errmsg);
    if (rc == 0 && cfg->token_review_url != NULL) {
        rc = check_url(cfg->token_review_url, "token_review_url", name, errmsg);
    }
    return rc;
}

/* The tokenreviews endpoint: token_review_url (an API server's base URL) with TOKENREVIEW_PATH
 * appended to its path, or the scheme, host and port of jwks_url with that path. NULL when off. */
static char *review_url_of(const struct oidc_issuer_config *cfg)
{
    if (!cfg->token_review) {
        return NULL;
    }
    CURLU *u = curl_url();
    char *path = NULL, *url = NULL;
    bool base = cfg->token_review_url != NULL;
    CURLUcode uc = u != NULL ? curl_url_set(u, CURLUPART_URL, base ? cfg->token_review_url : cfg->jwks_url, 0)
                             : CURLUE_OUT_OF_MEMORY;
    if (uc == CURLUE_OK) {
        uc = curl_url_get(u, CURLUPART_PATH, &path, 0);
    }
    if (uc == CURLUE_OK) {
        size_t n = base ? strlen(path) : 0;
        while (n > 0 && path[n - 1] == '/') {
            n--;
        }
        char *full = mem_alloc(n + sizeof TOKENREVIEW_PATH);
        memcpy(full, path, n);
        memcpy(full + n, TOKENREVIEW_PATH, sizeof TOKENREVIEW_PATH);
        uc = curl_url_set(u, CURLUPART_PATH, full, 0);
        mem_free(full);
    }
    if (uc == CURLUE_OK) {
        uc = curl_url_set(u, CURLUPART_QUERY, NULL, 0);
    }
    if (uc == CURLUE_OK) {
        uc = curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0);
    }
    if (uc == CURLUE_OK) {
        uc = curl_url_get(u, CURLUPART_URL, &url, 0);
    }
    char *out = uc == CURLUE_OK ? mem_strdup(url) : NULL;
    curl_free(path);
    curl_free(url);
    curl_url_cleanup(u);
    return out;
}

static int check_limits(const struct oidc_issuer_config *cfg, const char *name, char *errmsg)
{
    if (cfg->timeout_ms == 0 || cfg->timeout_ms > OIDC_MAX_TIMEOUT_MS) {
        gerr_set(errmsg, "issuer %s: timeout_ms must be 1..%u", name, OIDC_MAX_TIMEOUT_MS);
        return GERR_INVAL;
    }
    if (cfg->max_document == 0 || cfg->max_document > JWT_MAX_JWKS) {
        gerr_set(errmsg, "issuer %s: max_document must be 1..%u bytes", name, JWT_MAX_JWKS);
        return GERR_INVAL;
    }
    if (cfg->min_refresh_interval_ms < OIDC_MIN_INTERVAL_FLOOR_MS) {
        gerr_set(errmsg, "issuer %s: min_refresh_interval_ms must be at least %u", name,
                 OIDC_MIN_INTERVAL_FLOOR_MS);
        return GERR_INVAL;
    }
    if (cfg->refresh_ms < cfg->min_refresh_interval_ms) {
        gerr_set(errmsg, "issuer %s: refresh_ms must be at least min_refresh_interval_ms", name);
        return GERR_INVAL;
    }
    return 0;
}

static struct oidc_src *src_new(const struct oidc_issuer_config *cfg)
{
    struct oidc_src *s = mem_zalloc(sizeof *s);
    s->name = mem_strdup(cfg->name);
    s->issuer = mem_strdup(cfg->issuer);
    s->jwks_file = empty(cfg->jwks_file) ? NULL : mem_strdup(cfg->jwks_file);
    s->jwks_url = empty(cfg->jwks_url) ? NULL : mem_strdup(cfg->jwks_url);
    s->ca_file = cfg->ca_file != NULL ? mem_strdup(cfg->ca_file) : NULL;
    s->bearer_token_file = cfg->bearer_token_file != NULL ? mem_strdup(cfg->bearer_token_file) : NULL;
    s->timeout_ms = cfg->timeout_ms;
    s->max_document = cfg->max_document;
    s->refresh_ms = cfg->refresh_ms;
    s->min_interval_ms = cfg->min_refresh_interval_ms;
    s->review_url = review_url_of(cfg);
    s->review_only = cfg->verify == OIDC_VERIFY_TOKEN_REVIEW;
    if (s->review_url != NULL) {
        s->auds = mem_zalloc(sizeof *s->auds * (cfg->n_audiences + 1u));
        for (unsigned i = 0; i < cfg->n_audiences; i++) {
            s->auds[s->n_auds++] = mem_strdup(cfg->audiences[i]);
        }
        s->review_cache = tokenreview_cache_new();
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->fetched, NULL);
    return s;
}

void oidc_issuer_config_init(struct oidc_issuer_config *cfg, const char *name, const char *issuer)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->name = name;
    cfg->issuer = issuer;
    cfg->leeway_s = JWT_DEFAULT_LEEWAY_S;
    cfg->timeout_ms = OIDC_DEFAULT_TIMEOUT_MS;
    cfg->max_document = OIDC_DEFAULT_MAX_DOCUMENT;
    cfg->refresh_ms = OIDC_DEFAULT_REFRESH_MS;
    cfg->min_refresh_interval_ms = OIDC_DEFAULT_MIN_INTERVAL_MS;
}

int oidc_add_issuer(struct oidc *o, const struct oidc_issuer_config *given, char *errmsg)
{
    assert(!o->started);
    struct oidc_issuer_config copy = *given;
    const struct oidc_issuer_config *cfg = &copy;
    if (copy.verify == OIDC_VERIFY_TOKEN_REVIEW) {
        copy.token_review = true; /* implied: the review is the verification */
    }
    if (empty(cfg->name) || empty(cfg->issuer)) {
        gerr_set(errmsg, "an OIDC issuer needs a name and an issuer URL");
        return GERR_INVAL;
    }
    int rc = check_source(cfg, cfg->name, errmsg);
    if (rc == 0) {
        rc = check_limits(cfg, cfg->name, errmsg);
    }
    if (rc != 0) {
        return rc;
    }
    char *probe = review_url_of(cfg);
    if (cfg->token_review && probe == NULL) {
        gerr_set(errmsg, "issuer %s: cannot make the TokenReview URL", cfg->name);
        return GERR_INVAL;
    }
    mem_free(probe);
    struct jwt_issuer j;
    jwt_issuer_init(&j, cfg->issuer, cfg->name);
    j.audiences = cfg->audiences;
    j.n_audiences = cfg->n_audiences;
    j.leeway_s = cfg->leeway_s;
    j.principal_claim = cfg->principal_claim;
    j.external_signature = cfg->verify == OIDC_VERIFY_TOKEN_REVIEW;
    rc = jwt_verifier_add_issuer(o->verifier, &j, errmsg); /* the last step that can fail */
    if (rc != 0) {
        return rc;
    }
    assert(o->n_srcs < JWT_MAX_ISSUERS); /* jwt_verifier_add_issuer enforces it */
    o->srcs[o->n_srcs++] = src_new(cfg);
    return 0;
}

/* ---- Lifecycle */

struct oidc *oidc_new(struct clock *clock)
{
    pthread_rwlockattr_t attr;
    struct oidc *o = mem_zalloc(sizeof *o);

    pthread_once(&curl_once, curl_init);
    o->clock = clock;
    o->verifier = jwt_verifier_new(clock);
    /* Prefer writers: a key rotation must not wait behind an endless stream of verifications. */
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&o->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    return o;
}

void oidc_free(struct oidc *o)
{
    if (o == NULL) {
        return;
    }
    for (unsigned i = 0; i < o->n_srcs; i++) {
        src_free(o->srcs[i]);
    }
    jwt_verifier_free(o->verifier);
    pthread_rwlock_destroy(&o->lock);
    mem_free(o);
}

int oidc_start(struct oidc *o, char *errmsg)
{
    int first = 0;
    char msg[GERR_MSG_SIZE];

    assert(!o->started);
    o->started = true;
    for (unsigned i = 0; i < o->n_srcs; i++) {
        struct oidc_src *s = o->srcs[i];
        if (s->review_only) {
            LOG_INFO("oidc: issuer %s: no JWKS; tokens are verified by TokenReview at %s", s->name,
                     s->review_url);
            continue;
        }
        pthread_mutex_lock(&s->mu);
        src_begin(o, s);
        pthread_mutex_unlock(&s->mu);
        int rc = src_run(o, s, msg);
        if (rc != 0 && first == 0) {
            first = rc;
            snprintf(errmsg, GERR_MSG_SIZE, "%s", msg);
        }
    }
    return first;
}

/* ---- Periodic refresh */

/* Called with s->mu held. */
static bool src_due(const struct oidc_src *s, uint64_t now_ms)
{
    if (s->fetching || s->review_only) {
        return false;
    }
    if (!s->attempted) {
        return true;
    }
    uint64_t period = s->status.last_rc == 0 ? s->refresh_ms : s->min_interval_ms;
    return now_ms - s->last_attempt_ms >= period;
}

int oidc_refresh_due(struct oidc *o, char *errmsg)
{
    int first = 0;
    char msg[GERR_MSG_SIZE];

    assert(o->started);
    for (unsigned i = 0; i < o->n_srcs; i++) {
        struct oidc_src *s = o->srcs[i];
        pthread_mutex_lock(&s->mu);
        bool due = src_due(s, clock_mono_ms(o->clock));
        if (due) {
            src_begin(o, s);
        }
        pthread_mutex_unlock(&s->mu);
        int rc = due ? src_run(o, s, msg) : 0;
        if (rc != 0 && first == 0) {
            first = rc;
            snprintf(errmsg, GERR_MSG_SIZE, "%s", msg);
        }
    }
    return first;
}

int oidc_issuer_status(struct oidc *o, const char *name, struct oidc_issuer_status *out)
{
    for (unsigned i = 0; i < o->n_srcs; i++) {
        struct oidc_src *s = o->srcs[i];
        if (strcmp(s->name, name) == 0) {
            pthread_mutex_lock(&s->mu);
            *out = s->status;
            pthread_mutex_unlock(&s->mu);
            return 0;
        }
    }
    return GERR_NOTFOUND;
}

/* ---- Verification */

static int verify_once(struct oidc *o, const char *token, size_t len, struct jwt_result *out, char *errmsg)
{
    pthread_rwlock_rdlock(&o->lock);
    int rc = jwt_verify(o->verifier, token, len, out, errmsg);
    pthread_rwlock_unlock(&o->lock);
    return rc;
}

static int b64url_value(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    return c == '-' ? 62 : c == '_' ? 63 : -1;
}

/* Decode unpadded base64url @in (@n bytes) into @out (room for n * 3 / 4 bytes). Returns the
 * decoded length, or SIZE_MAX for a character outside the alphabet. */
static size_t b64url_decode(const char *in, size_t n, unsigned char *out)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_value(in[i]);
        if (v < 0) {
            return SIZE_MAX;
        }
        acc = ((acc << 6) | (uint32_t)v) & 0xffffu;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (unsigned char)(acc >> bits);
        }
    }
    return k;
}

/* The source named by the token's "iss". Only called after jwt_verify answered GERR_NOTFOUND,
 * which means the token is well formed and its "iss" is a configured issuer; anything else
 * still yields NULL rather than trusting that. */
static struct oidc_src *src_of_token(struct oidc *o, const char *token, size_t len)
{
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 != NULL ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (d2 == NULL) {
        return NULL;
    }
    size_t n = (size_t)(d2 - d1 - 1);
    unsigned char *buf = mem_alloc(n * 3 / 4 + 1);
    size_t m = b64url_decode(d1 + 1, n, buf);
    json_t *payload = m != SIZE_MAX ? json_loadb((const char *)buf, m, JSON_REJECT_DUPLICATES, NULL) : NULL;
    mem_free(buf);
    const char *iss = json_string_value(json_object_get(payload, "iss"));
    struct oidc_src *found = NULL;
    for (unsigned i = 0; iss != NULL && i < o->n_srcs; i++) {
        if (strcmp(o->srcs[i]->issuer, iss) == 0) {
            found = o->srcs[i];
        }
    }
    json_decref(payload);
    return found;
}

/* Called with s->mu held: explain why no fetch is allowed now. */
static void describe_rate_limit(struct oidc *o, const struct oidc_src *s, char *why)
{
    uint64_t since = clock_mono_ms(o->clock) - s->last_attempt_ms;
    uint64_t wait = s->min_interval_ms > since ? s->min_interval_ms - since : 0;
    if (s->status.last_rc != 0) {
        gerr_set(why,
                 "JWKS refresh of issuer %s is rate limited (next in %llu ms); the last fetch failed: %s",
                 s->name, (unsigned long long)wait, s->status.last_error);
    } else {
        gerr_set(why, "JWKS of issuer %s was fetched %llu ms ago; next refresh allowed in %llu ms", s->name,
                 (unsigned long long)since, (unsigned long long)wait);
    }
}

/* After a miss: make sure the issuer's key set is as fresh as the rate limit allows. Returns 0
 * when a fetch (ours, or one we waited for) succeeded; GERR_BUSY when rate limited; otherwise
 * the fetch's error. @why explains every nonzero answer. */
static int src_refresh_on_miss(struct oidc *o, struct oidc_src *s, char *why)
{
    pthread_mutex_lock(&s->mu);
    if (s->fetching) {
        uint64_t gen = s->generation;
        while (s->generation == gen) {
            pthread_cond_wait(&s->fetched, &s->mu);
        }
        int rc = s->status.last_rc;
        gerr_set(why, "%s", rc != 0 ? s->status.last_error : "");
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    if (s->attempted && clock_mono_ms(o->clock) - s->last_attempt_ms < s->min_interval_ms) {
        describe_rate_limit(o, s, why);
        pthread_mutex_unlock(&s->mu);
        return GERR_BUSY;
    }
    src_begin(o, s);
    pthread_mutex_unlock(&s->mu);
    return src_run(o, s, why);
}

/* Ask the API server about a token whose signature and claims passed (review_url set). */
static int review(struct oidc *o, struct oidc_src *s, const char *token, size_t len,
                  const struct jwt_result *res, char *errmsg)
{
    uint64_t now = clock_mono_ms(o->clock);
    if (tokenreview_cache_hit(s->review_cache, token, len, now)) {
        return 0;
    }
    const char *sub = json_string_value(json_object_get(res->claims, "sub"));
    if (sub == NULL) {
        gerr_set(errmsg, "issuer %s reviews tokens with the API server and this token has no sub", s->name);
        return GERR_UNAUTH;
    }
    if (s->review_only && (!json_is_object(json_object_get(res->claims, "kubernetes.io")) ||
                           strncmp(sub, SA_PREFIX, sizeof SA_PREFIX - 1) != 0)) {
        gerr_set(errmsg,
                 "issuer %s accepts only Kubernetes ServiceAccount tokens (a \"kubernetes.io\" claim "
                 "object and a sub %sNS:NAME), verified by TokenReview",
                 s->name, SA_PREFIX);
        return GERR_UNAUTH;
    }
    char *body = tokenreview_request(token, len, (const char *const *)s->auds, s->n_auds);
    if (body == NULL) {
        gerr_set(errmsg, "the token is not valid UTF-8");
        return GERR_UNAUTH;
    }
    struct http_req r = {.url = s->review_url, .post = body, .max = TOKENREVIEW_MAX_RESPONSE};
    char *doc = NULL;
    size_t n = 0;
    int rc = http_do(s, &r, &doc, &n, errmsg);
    explicit_bzero(body, strlen(body));
    mem_free(body);
    if (rc == 0) {
        rc = tokenreview_parse(doc, n, sub, (const char *const *)s->auds, s->n_auds, errmsg);
        mem_free(doc);
        if (rc != 0 && rc != GERR_UNAUTH) {
            gerr_wrap(errmsg, "bad answer");
        }
    }
    if (rc == GERR_UNAUTH) {
        return rc;
    }
    if (rc != 0) {
        gerr_wrap(errmsg, "cannot check the token with the API server of issuer %s (TokenReview at %s)",
                  s->name, s->review_url);
        LOG_WARN("oidc: %s (%s)", errmsg, gerr_name(rc));
        return GERR_UNAVAILABLE;
    }
    tokenreview_cache_put(s->review_cache, token, len, now);
    return 0;
}

static struct oidc_src *src_named(struct oidc *o, const char *name)
{
    for (unsigned i = 0; name != NULL && i < o->n_srcs; i++) {
        if (strcmp(o->srcs[i]->name, name) == 0) {
            return o->srcs[i];
        }
    }
    return NULL;
}

/* After a successful jwt_verify: the TokenReview of the token's issuer, if it has one. */
static int verified(struct oidc *o, const char *token, size_t len, struct jwt_result *out, char *errmsg)
{
    struct oidc_src *s = src_named(o, out->issuer_name);
    if (s != NULL && s->review_only && s->review_url == NULL) {
        /* Fail closed: for this issuer nothing checked the signature, so no review, no entry. */
        jwt_result_close(out);
        gerr_set(errmsg, "issuer %s verifies tokens by TokenReview and has no API server address", s->name);
        return GERR_UNAVAILABLE;
    }
    if (s == NULL || s->review_url == NULL) {
        return 0;
    }
    int rc = review(o, s, token, len, out, errmsg);
    if (rc != 0) {
        jwt_result_close(out);
    }
    return rc;
}

static int verify_keys(struct oidc *o, const char *token, size_t len, struct jwt_result *out, char *errmsg);

int oidc_verify(struct oidc *o, const char *token, size_t len, struct jwt_result *out, char *errmsg)
{
    int rc = verify_keys(o, token, len, out, errmsg);
    return rc == 0 ? verified(o, token, len, out, errmsg) : rc;
}

/* jwt_verify, with one refresh of the issuer's key set on an unknown key. */
static int verify_keys(struct oidc *o, const char *token, size_t len, struct jwt_result *out, char *errmsg)
{
    char first[GERR_MSG_SIZE], why[GERR_MSG_SIZE];

    assert(o->started);
    int rc = verify_once(o, token, len, out, errmsg);
    if (rc != GERR_NOTFOUND) {
        return rc;
    }
    struct oidc_src *s = src_of_token(o, token, len);
    if (s == NULL) {
        return GERR_UNAUTH; /* not reachable with jwt.h's contract; errmsg already explains */
    }
    snprintf(first, sizeof first, "%s", errmsg);
    int fetched = src_refresh_on_miss(o, s, why);
    rc = verify_once(o, token, len, out, errmsg);
    if (rc != GERR_NOTFOUND) {
        return rc;
    }
    if (fetched == 0) {
        gerr_set(errmsg, "%s; the JWKS of issuer %s was just refreshed and has no such key", first, s->name);
    } else if (fetched == GERR_BUSY) {
        gerr_set(errmsg, "%s; %s", first, why);
    } else {
        gerr_set(errmsg, "%s; refreshing it failed: %s", first, why);
    }
    return GERR_UNAUTH;
}
