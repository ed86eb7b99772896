/* Logs, exec and port-forward for the kubernetes driver (see k8s_sessions.h). */
#include "drivers/k8s_sessions.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "drivers/driver_internal.h"
#include "drivers/k8s_json.h"
#include "lib/buf.h"
#include "lib/clock.h"
#include "lib/mem.h"

/* How long opening a log waits for the API server's answer to the first request (its headers):
 * the request itself has no overall timeout, since a followed log may stream for days. */
#define LOG_OPEN_WAIT_MS 30000u

/* ---- Log timestamps */

static bool digits(const char *p, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return false;
        }
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return true;
}

int k8s_log_stamp(const char *line, size_t len, int64_t *ns, size_t *used)
{
    int y, mo, d, h, mi, s;
    if (len < 20 || line[4] != '-' || line[7] != '-' || line[10] != 'T' || line[13] != ':' ||
        line[16] != ':' || !digits(line, 4, &y) || !digits(line + 5, 2, &mo) || !digits(line + 8, 2, &d) ||
        !digits(line + 11, 2, &h) || !digits(line + 14, 2, &mi) || !digits(line + 17, 2, &s) || y < 1970 ||
        y > 2200 /* Unix nanoseconds fit an int64_t until 2262 */ || mo < 1 || mo > 12 || d < 1 || d > 31 ||
        h > 23 || mi > 59 || s > 60) {
        return GERR_PROTO;
    }
    size_t i = 19;
    int64_t frac = 0;
    if (line[i] == '.') {
        size_t nd = 0;
        for (i++; i < len && line[i] >= '0' && line[i] <= '9'; i++, nd++) {
            if (nd < 9) {
                frac = frac * 10 + (line[i] - '0');
            }
        }
        if (nd == 0 || nd > 9) {
            return GERR_PROTO;
        }
        for (; nd < 9; nd++) {
            frac *= 10;
        }
    }
    if (i >= len || line[i] != 'Z' || (i + 1 < len && line[i + 1] != ' ')) {
        return GERR_PROTO;
    }
    struct tm tm = {
        .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = s};
    time_t t = timegm(&tm);
    if (t < 0) {
        return GERR_PROTO;
    }
    *ns = (int64_t)t * 1000000000 + frac;
    *used = i + 1 < len ? i + 2 : i + 1;
    return 0;
}

/* ---- Logs */

struct rec {
    struct rec *next;
    uint64_t ts_ms;
    size_t len, off;
    uint8_t data[];
};

struct k8s_log {
    struct driver_log base;
    struct k8s_http *http;
    char *path; /* .../pods/P/log?container=sandbox&timestamps=true */
    struct driver_log_query q;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct rec *head, *tail;
    size_t bytes;
    bool opened;     /* the first request was answered 200 */
    bool first_done; /* the first request ended: what the kubelet held is queued */
    bool done;       /* the reader ended: end_rv after the queue */
    int end_rv;
    char end_msg[GERR_MSG_SIZE];
    volatile bool stop;
    bool following;
    int64_t skip_upto_ns; /* following: lines stamped at or before this were delivered already */
    int64_t last_ns;      /* the newest stamp queued (0: none) */
    int64_t since_ns;     /* 0: no bound */
};

static void log_push(struct k8s_log *l, int64_t ns, const char *p, size_t n)
{
    struct rec *r = mem_alloc(sizeof *r + n + 1);
    r->next = NULL;
    r->ts_ms = ns > 0 ? (uint64_t)(ns / 1000000) : driver__now_ms();
    r->len = n + 1;
    r->off = 0;
    memcpy(r->data, p, n);
    r->data[n] = '\n';
    pthread_mutex_lock(&l->mu);
    while (l->bytes > K8S_LOG_QUEUE && !l->stop) {
        pthread_cond_wait(&l->cv, &l->mu);
    }
    if (l->tail != NULL) {
        l->tail->next = r;
    } else {
        l->head = r;
    }
    l->tail = r;
    l->bytes += r->len;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static int log_line(void *arg, char *line, size_t len)
{
    struct k8s_log *l = arg;
    int64_t ns = 0;
    size_t used = 0;
    if (l->stop) {
        return 1;
    }
    if (k8s_log_stamp(line, len, &ns, &used) != 0) {
        ns = 0; /* not stamped: deliver it as it is, stamped now */
        used = 0;
    } else if ((l->since_ns != 0 && ns < l->since_ns) || (l->following && ns <= l->skip_upto_ns)) {
        return 0;
    }
    if (ns > l->last_ns) {
        l->last_ns = ns;
    }
    log_push(l, ns, line + used, len - used);
    return 0;
}

static void log_opened(void *arg)
{
    struct k8s_log *l = arg;
    pthread_mutex_lock(&l->mu);
    l->opened = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static void put_time(struct buf *b, int64_t ns)
{
    char t[40];
    time_t s = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%SZ", &tm);
    buf_printf(b, "&sinceTime=");
    k8s_http_put_escaped(b, t);
}

/* One request of the reader: 0 when it was answered 200 (and ended), else the error in @errmsg. */
static int log_request(struct k8s_log *l, const char *extra, int64_t since_ns, char *errmsg)
{
    struct buf path, resp;
    long status = 0;
    buf_init(&path);
    buf_init(&resp);
    buf_printf(&path, "%s%s", l->path, extra);
    if (since_ns > 0) {
        put_time(&path, since_ns);
    }
    buf_append_zero(&path, 1);
    int rv = k8s_http_stream(l->http, (const char *)path.data, 0, &l->stop, log_opened, log_line, l, &status,
                             &resp, errmsg);
    if (rv == 0 && status != 200) {
        struct k8s_status st;
        k8s_status_decode((const char *)resp.data, resp.len, &st);
        rv = k8s_http_err_from_status(status, st.reason);
        rv = rv != 0 ? rv : GERR_PROTO;
        gerr_set(errmsg, "GET %s: HTTP %ld %s%s%s", l->path, status, st.reason,
                 st.message[0] != '\0' ? ": " : "", st.message);
    }
    buf_close(&path);
    buf_close(&resp);
    return rv;
}

static void *log_reader(void *arg)
{
    struct k8s_log *l = arg;
    char errmsg[GERR_MSG_SIZE] = "";
    char extra[64] = "";
    int64_t start_ns = (int64_t)driver__now_ms() * 1000000;
    if (l->q.tail_lines >= 0) {
        snprintf(extra, sizeof extra, "&tailLines=%lld", (long long)l->q.tail_lines);
    }
    int rv = log_request(l, extra, l->since_ns, errmsg);
    pthread_mutex_lock(&l->mu);
    l->first_done = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (rv == 0 && !l->stop) {
        /* Follow from the last line seen; with none, from the bound the first request had. */
        int64_t from = l->last_ns;
        if (from == 0 && (l->q.tail_lines >= 0 || l->since_ns != 0)) {
            from = l->since_ns > start_ns ? l->since_ns : start_ns - 1;
        }
        l->following = true;
        l->skip_upto_ns = from;
        rv = log_request(l, "&follow=true", from, errmsg);
        if (rv == 0) {
            rv = GERR_CLOSED;
            gerr_set(errmsg, "the sandbox's output ended");
        }
    }
    pthread_mutex_lock(&l->mu);
    l->done = true;
    l->end_rv = l->stop ? GERR_CANCELED : rv;
    snprintf(l->end_msg, sizeof l->end_msg, "%s", errmsg);
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static int log_next(struct driver_log *dl, uint8_t *buf, size_t cap, size_t *n, uint64_t *ts_ms, char *errmsg)
{
    struct k8s_log *l = (struct k8s_log *)dl;
    int rv;
    *n = 0;
    pthread_mutex_lock(&l->mu);
    while (l->head == NULL && !l->first_done && !l->done) {
        pthread_cond_wait(&l->cv, &l->mu);
    }
    struct rec *r = l->head;
    if (r != NULL) {
        size_t take = r->len - r->off < cap ? r->len - r->off : cap;
        memcpy(buf, r->data + r->off, take);
        r->off += take;
        *n = take;
        *ts_ms = r->ts_ms;
        if (r->off == r->len) {
            l->head = r->next;
            if (l->head == NULL) {
                l->tail = NULL;
            }
            l->bytes -= r->len;
            mem_free(r);
            pthread_cond_broadcast(&l->cv);
        }
        rv = 0;
    } else if (l->done) {
        rv = l->end_rv;
        gerr_set(errmsg, "%s", l->end_msg);
    } else {
        rv = GERR_BUSY;
    }
    pthread_mutex_unlock(&l->mu);
    return rv;
}

static void log_close(struct driver_log *dl)
{
    struct k8s_log *l = (struct k8s_log *)dl;
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    while (l->head != NULL) {
        struct rec *r = l->head;
        l->head = r->next;
        mem_free(r);
    }
    k8s_http_free(l->http);
    mem_free(l->path);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    mem_free(l);
}

static const struct driver_log_ops k8s_log_ops = {.next = log_next, .close = log_close};

int k8s_logs_open(struct driver *d, const char *ns, const char *id, const struct driver_log_query *q,
                  struct driver_log **out, char *errmsg)
{
    char kns[64], pod[64];
    enum driver_phase phase;
    struct k8s_http_config hc;
    *out = NULL;
    int rv = k8s__pod_of(d, ns, id, kns, pod, &phase, &hc, errmsg);
    if (rv != 0) {
        return rv;
    }
    struct k8s_log *l = mem_zalloc(sizeof *l);
    l->base.ops = &k8s_log_ops;
    l->q = *q;
    l->since_ns = (int64_t)q->since_ms * 1000000;
    hc.max_body = 64u * 1024u;
    if ((rv = k8s_http_new(&hc, &l->http, errmsg)) != 0) {
        mem_free(l);
        return rv;
    }
    struct buf p;
    buf_init(&p);
    buf_printf(&p, "/api/v1/namespaces/%s/pods/%s/log?container=" K8S_CONTAINER "&timestamps=true", kns, pod);
    buf_append_zero(&p, 1);
    l->path = (char *)p.data;
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (pthread_create(&l->thread, NULL, log_reader, l) != 0) {
        k8s_http_free(l->http);
        mem_free(l->path);
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
        mem_free(l);
        gerr_set(errmsg, "cannot start the log reader thread");
        return GERR_IO;
    }
    /* Answer the first request's errors (no pod, no such container) here, not from next(). */
    pthread_mutex_lock(&l->mu);
    struct timespec until;
    clock_mono_deadline(&until, LOG_OPEN_WAIT_MS);
    bool late = false;
    while (!l->opened && !l->done && !late) {
        late = clock_cond_wait_mono(&l->cv, &l->mu, &until) != 0;
    }
    late = late && !l->opened && !l->done;
    bool failed = (!l->opened && l->done) || late;
    rv = late ? GERR_UNAVAILABLE : l->end_rv;
    if (late) {
        gerr_set(errmsg, "the API server did not answer the pod log request within %u ms", LOG_OPEN_WAIT_MS);
    } else if (failed) {
        gerr_set(errmsg, "%s", l->end_msg);
    }
    pthread_mutex_unlock(&l->mu);
    if (failed) {
        log_close(&l->base); /* sets stop: the reader's request ends and the thread is joined */
        return rv != 0 ? rv : GERR_IO;
    }
    *out = &l->base;
    return 0;
}
