/* List+watch into the cache (see k8s_watch.h). */
#include "drivers/k8s_watch.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "drivers/k8s_json.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/mem.h"

#define LIST_PAGE        500
#define LIST_RESTARTS    3
#define BACKOFF_FIRST_MS 1000u
#define BACKOFF_MAX_MS   30000u
#define HEALTHY_MS       1000u /* a watch this long, or with an event, was a working one */
#define DEFAULT_TIMEOUT  300u

struct k8s_watch {
    struct k8s_http *http;
    char *api, *gw, *kns;
    size_t scope;
    struct k8s_cache *cache;
    unsigned timeout_s;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    volatile bool stop; /* read by curl's progress callback without the mutex */
    struct buf resp;
    char *rv;                     /* where the next watch starts */
    bool gone;                    /* the current stream reported 410 */
    unsigned lines;               /* events (bookmarks included, ERROR not) the current stream brought */
    struct k8s_watch_stats stats; /* under mu */
    char errmsg[GERR_MSG_SIZE];
};

static void count(struct k8s_watch *w, uint64_t *field)
{
    pthread_mutex_lock(&w->mu);
    (*field)++;
    pthread_mutex_unlock(&w->mu);
}

static void set_rv(struct k8s_watch *w, const char *rv)
{
    if (rv != NULL && rv[0] != '\0') {
        mem_free(w->rv);
        w->rv = mem_strdup(rv);
    }
}

/* "<api>[/namespaces/<kns>]/sandboxes?labelSelector=gantry.dev/gateway-id=<gw>" onto @b. */
static void collection(struct k8s_watch *w, struct buf *b)
{
    buf_printf(b, "%s", w->api);
    if (w->kns != NULL) {
        buf_printf(b, "/namespaces/%s", w->kns);
    }
    buf_printf(b, "/" K8S_SANDBOX_RESOURCE "?labelSelector=");
    k8s_http_put_escaped(b, K8S_LABEL_GATEWAY "=");
    k8s_http_put_escaped(b, w->gw);
}

/* One GET; a non-2xx status is its GERR_* code (410 is reported through *@status). */
static int get(struct k8s_watch *w, const char *path, long *status)
{
    int rv = k8s_http_request(w->http, "GET", path, NULL, status, &w->resp, w->errmsg);
    if (rv == 0 && (*status < 200 || *status >= 300)) {
        struct k8s_status st;
        k8s_status_decode((const char *)w->resp.data, w->resp.len, &st);
        rv = k8s_http_err_from_status(*status, st.reason);
        gerr_set(w->errmsg, "GET %s: HTTP %ld %s: %s", path, *status, st.reason, st.message);
    }
    return rv;
}

/* The whole scope, page by page, into the cache; the list's resourceVersion into w->rv. A page
 * answered 410 (an expired continue token) starts the list again. */
static int relist(struct k8s_watch *w)
{
    for (int attempt = 0; attempt <= LIST_RESTARTS && !w->stop; attempt++) {
        struct k8s_sandbox *items = NULL;
        size_t n = 0, cap = 0;
        char *next = NULL, *list_rv = NULL;
        long status = 0;
        int rv = 0;
        do {
            struct buf path;
            struct k8s_sandbox_list l;
            buf_init(&path);
            collection(w, &path);
            buf_printf(&path, "&limit=%d", LIST_PAGE);
            if (next != NULL) {
                buf_printf(&path, "&continue=");
                k8s_http_put_escaped(&path, next);
                mem_free(next);
                next = NULL;
            }
            buf_append_zero(&path, 1);
            count(w, &w->stats.list_pages);
            rv = get(w, (const char *)path.data, &status);
            buf_close(&path);
            if (rv == 0) {
                rv = k8s_sandbox_list_decode((const char *)w->resp.data, w->resp.len, &l, w->errmsg);
            }
            if (rv != 0) {
                break;
            }
            for (size_t i = 0; i < l.n; i++) {
                if (!k8s_sandbox_belongs(&l.items[i].meta, w->gw)) {
                    continue;
                }
                if (n == cap) {
                    cap = cap == 0 ? 64 : cap * 2;
                    items = mem_realloc(items, cap * sizeof *items);
                }
                items[n++] = l.items[i];
                memset(&l.items[i], 0, sizeof l.items[i]); /* moved */
            }
            if (list_rv == NULL && l.resource_version != NULL) {
                list_rv = mem_strdup(l.resource_version); /* the first page's: the list's snapshot */
            }
            next = l.next;
            l.next = NULL;
            k8s_sandbox_list_close(&l);
        } while (next != NULL && !w->stop);
        mem_free(next);
        if (rv == 0 && !w->stop) {
            k8s_cache_replace(w->cache, w->scope, items, n);
            set_rv(w, list_rv);
        }
        for (size_t i = 0; i < n; i++) {
            k8s_sandbox_close(&items[i]);
        }
        mem_free(items);
        mem_free(list_rv);
        if (rv == 0 || status != 410) {
            return rv;
        }
        count(w, &w->stats.restarts);
        LOG_INFO("kubernetes watch %s: %s; listing again from the first page", w->kns != NULL ? w->kns : "*",
                 w->errmsg);
    }
    return GERR_ABORTED;
}

static void on_open(void *arg)
{
    struct k8s_watch *w = arg;
    k8s_cache_set_live(w->cache, w->scope, true);
}

static int on_line(void *arg, char *line, size_t len)
{
    struct k8s_watch *w = arg;
    struct k8s_watch_event e;
    if (k8s_watch_event_decode(line, len, &e, w->errmsg) != 0) {
        return 1;
    }
    if (e.type != K8S_WATCH_ERROR) {
        w->lines++;
    }
    int rv = 0;
    switch (e.type) {
    case K8S_WATCH_ADDED:
    case K8S_WATCH_MODIFIED:
        if (k8s_sandbox_belongs(&e.object.meta, w->gw)) {
            k8s_cache_put(w->cache, &e.object);
            count(w, &w->stats.events);
        }
        set_rv(w, e.resource_version);
        break;
    case K8S_WATCH_DELETED:
        k8s_cache_remove(w->cache, e.object.meta.sandbox_id, e.object.meta.ns, e.object.meta.name, NULL);
        count(w, &w->stats.events);
        set_rv(w, e.resource_version);
        break;
    case K8S_WATCH_BOOKMARK:
        set_rv(w, e.resource_version);
        break;
    case K8S_WATCH_ERROR:
    default:
        w->gone = e.status.code == 410;
        gerr_set(w->errmsg, "watch error %ld %s: %s", e.status.code, e.status.reason, e.status.message);
        rv = 1;
        break;
    }
    k8s_watch_event_close(&e);
    return rv;
}

/* One watch from w->rv: 0 when the server ended it normally, GERR_ABORTED on 410, else an error. */
static int watch_once(struct k8s_watch *w)
{
    struct buf path;
    long status = 0;
    buf_init(&path);
    collection(w, &path);
    buf_printf(&path,
               "&watch=true&allowWatchBookmarks=true&timeoutSeconds=%u&resourceVersion=", w->timeout_s);
    k8s_http_put_escaped(&path, w->rv != NULL ? w->rv : "0");
    buf_append_zero(&path, 1);
    w->gone = false;
    w->lines = 0;
    w->errmsg[0] = '\0';
    count(w, &w->stats.watches);
    int rv = k8s_http_stream(w->http, (const char *)path.data, (w->timeout_s + 30u) * 1000u, &w->stop,
                             on_open, on_line, w, &status, &w->resp, w->errmsg);
    buf_close(&path);
    if (rv == 0 && status != 200) {
        struct k8s_status st;
        k8s_status_decode((const char *)w->resp.data, w->resp.len, &st);
        gerr_set(w->errmsg, "watch: HTTP %ld %s: %s", status, st.reason, st.message);
        return status == 410 ? GERR_ABORTED : k8s_http_err_from_status(status, st.reason);
    }
    if (rv == 0 && w->gone) {
        return GERR_ABORTED;
    }
    if (rv == 0 && w->errmsg[0] != '\0') {
        return GERR_PROTO; /* a line callback ended it: an event that does not decode, or an ERROR */
    }
    return rv;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Wait @ms unless stopped; false when stopped. */
static bool pause_ms(struct k8s_watch *w, unsigned ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000u;
    until.tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (!w->stop && pthread_cond_timedwait(&w->cond, &w->mu, &until) == 0) {
    }
    bool go_on = !w->stop;
    pthread_mutex_unlock(&w->mu);
    return go_on;
}

static void *watch_main(void *arg)
{
    struct k8s_watch *w = arg;
    bool need_list = true, first = true;
    unsigned backoff = 0;
    const char *where = w->kns != NULL ? w->kns : "every namespace";
    while (!w->stop) {
        int rv = 0;
        bool listed = false; /* this watch starts from a list made just now */
        if (need_list) {
            if (!first) {
                count(w, &w->stats.relists);
            }
            rv = relist(w);
            if (rv == 0) {
                need_list = false;
                first = false;
                listed = true;
            }
        }
        bool healthy = false; /* the watch that just ended was a working one */
        if (rv == 0 && !w->stop) {
            uint64_t t0 = mono_ms();
            rv = watch_once(w);
            uint64_t took = mono_ms() - t0;
            healthy = w->lines > 0 || took >= HEALTHY_MS;
            if (rv == 0 && healthy) {
                backoff = 0;
                continue; /* the server's timeout: watch again from w->rv */
            }
            if (rv == 0) {
                /* Ended at once without an event: something in between (a proxy, a server that
                 * is shutting down) cuts it. Watching again at once would be a busy loop. */
                gerr_set(w->errmsg, "watch: ended after %llu ms without an event", (unsigned long long)took);
                rv = GERR_CLOSED;
            }
        }
        if (w->stop) {
            break;
        }
        k8s_cache_set_live(w->cache, w->scope, false);
        bool gone = rv == GERR_ABORTED && !need_list; /* the watch (not the list) ended in 410 */
        if (gone) {
            need_list = true;
        }
        if (gone && (healthy || !listed)) {
            /* The watch's resourceVersion is too old (410) after a working watch, or after one cut
             * short (an API server restart): list again at once. A watch that gets 410 again
             * straight after its list, and a list that keeps failing (its continue tokens expiring
             * again and again), back off below instead, so neither turns into a busy loop of
             * LISTs against the API server. */
            LOG_INFO("kubernetes watch of %s: %s; listing again", where, w->errmsg);
            continue;
        }
        count(w, &w->stats.errors);
        backoff =
            backoff == 0 ? BACKOFF_FIRST_MS : (backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2);
        LOG_WARN("kubernetes watch of %s: %s (%s); again in %u ms", where, w->errmsg, gerr_name(rv), backoff);
        if (!pause_ms(w, backoff)) {
            break;
        }
    }
    k8s_cache_set_live(w->cache, w->scope, false);
    return NULL;
}

int k8s_watch_start(const struct k8s_watch_config *cfg, struct k8s_watch **out, char *errmsg)
{
    *out = NULL;
    struct k8s_watch *w = mem_zalloc(sizeof *w);
    int rv = k8s_http_new(&cfg->http, &w->http, errmsg);
    if (rv != 0) {
        mem_free(w);
        return rv;
    }
    w->api = mem_strdup(cfg->api);
    w->gw = mem_strdup(cfg->gateway_id);
    w->kns = cfg->kns != NULL ? mem_strdup(cfg->kns) : NULL;
    w->scope = cfg->scope;
    w->cache = cfg->cache;
    w->timeout_s = cfg->timeout_s != 0 ? cfg->timeout_s : DEFAULT_TIMEOUT;
    buf_init(&w->resp);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->started = pthread_create(&w->thread, NULL, watch_main, w) == 0;
    if (!w->started) {
        gerr_set(errmsg, "kubernetes watch: cannot start its thread");
        k8s_watch_stop(w);
        return GERR_NOMEM;
    }
    *out = w;
    return 0;
}

void k8s_watch_signal(struct k8s_watch *w)
{
    if (w == NULL) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

void k8s_watch_stop(struct k8s_watch *w)
{
    if (w == NULL) {
        return;
    }
    k8s_watch_signal(w);
    if (w->started) {
        pthread_join(w->thread, NULL);
    }
    k8s_cache_set_live(w->cache, w->scope, false);
    k8s_http_free(w->http);
    buf_close(&w->resp);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
    mem_free(w->api);
    mem_free(w->gw);
    mem_free(w->kns);
    mem_free(w->rv);
    mem_free(w);
}

void k8s_watch_stats_get(struct k8s_watch *w, struct k8s_watch_stats *out)
{
    pthread_mutex_lock(&w->mu);
    *out = w->stats;
    pthread_mutex_unlock(&w->mu);
}
