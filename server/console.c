/* The operator console (server/console.h).
 *
 * Happy path of a live view: GET /console/api/events with the session cookie -> the loop thread
 * opens a stream and registers a view -> every refresh_ms the console thread builds the snapshot
 * for the session's credential (console_feed_snapshot) and posts it -> the loop thread sends it as
 * one server-sent event. One-shot requests (sign-in, a snapshot, a drill) are jobs for the console
 * thread, answered through the same completion queue.
 *
 * Failure modes: the browser goes away (the next send finds the connection closed: the view ends);
 * the browser does not read (admin_stream_send refuses past max_buffered_bytes: the view ends, the
 * browser reconnects); the credential stops working (WhoAmI UNAUTHENTICATED: a "signed-out" event,
 * the view ends, the session is forgotten); a call fails (no leader for a moment): the snapshot
 * lists the error, the view goes on; the replica stops (console_shutdown finishes everything). */
#include "server/console.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/queue.h"
#include "lib/rand.h"
#include "server/console_drill.h"
#include "server/console_feed.h"
#include "server/console_req.h"
#include "server/grpc/status.h"

/* The page, embedded at build time from server/console/ (cmake/embed.cmake). */
extern const unsigned char console_index_html[], console_app_js[], console_app_css[];
extern const size_t console_index_html_len, console_app_js_len, console_app_css_len;

#define SESSION_MAX_AGE_MS (12ull * 3600 * 1000)
#define SECURITY_HEADERS                                                                                     \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " \
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"                        \
    "X-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\n"
#define JSON_TYPE "application/json"

struct session {
    bool used;
    char id[CONSOLE_SESSION_ID_LEN + 1];
    char *authorization; /* "Bearer <token>", heap, wiped when forgotten */
    char name[128];
    char principal[128];          /* the principal's id: sessions are capped per principal */
    uint64_t created_ms, used_ms; /* monotonic */
};

enum job_kind { JOB_LOGIN, JOB_SNAPSHOT, JOB_DRILL };

struct job {
    struct queue link;
    enum job_kind kind;
    uint64_t xid; /* the exchange waiting for the answer */
    char *token;  /* JOB_LOGIN: the token, heap, wiped after use */
    bool https;   /* JOB_LOGIN: the page came over https (the cookie is Secure) */
    char sid[CONSOLE_SESSION_ID_LEN + 1];
    struct console_filter filter;
    uint64_t target;
    char peer[64];
};

enum completion_kind { DONE_REPLY, DONE_DATA, DONE_END };

struct completion {
    struct queue link;
    enum completion_kind kind;
    uint64_t id; /* exchange (DONE_REPLY) or view (DONE_DATA, DONE_END) */
    int status;
    char *headers; /* extra header lines, or NULL */
    char *body;
    size_t len;
};

/* A live view as the console thread sees it (under mu). */
struct view_spec {
    bool used;
    uint64_t id;
    char sid[CONSOLE_SESSION_ID_LEN + 1];
    struct console_filter filter;
    char peer[64];
};

/* The loop thread's side of an exchange: a pending one-shot answer or a live view. */
struct lx {
    struct queue link;
    uint64_t id;
    struct admin_exchange *x;
    bool stream;
};

struct console {
    struct console_config cfg;
    char replica_name[128];
    struct console_feed feed;
    struct console_drill *drill;
    uv_async_t async;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    atomic_bool stop; /* set with stopping: the feed and the drill read it between calls */
    /* Under mu. */
    bool stopping;
    bool tick_now;
    struct session sessions[CONSOLE_MAX_SESSIONS];
    struct view_spec *views; /* [max_streams] */
    struct queue jobs;
    struct queue done;
    /* Loop thread only. */
    struct queue lxs;
    unsigned n_streams;
    uint64_t next_id;
    bool shut;
};

/* --- Small helpers --- */

static uint64_t now_ms(void)
{
    return clock_mono_ms(clock_system());
}

static void wipe_free(char *s)
{
    if (s != NULL) {
        explicit_bzero(s, strlen(s));
        mem_free(s);
    }
}

static char *json_text(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    char *out = mem_strdup(s != NULL ? s : "null");
    free(s); /* jansson's allocator is malloc */
    return out;
}

static char *error_body(const char *message)
{
    json_t *j = json_object();
    json_object_set_new(j, "error", json_string(message));
    char *s = json_text(j);
    json_decref(j);
    return s;
}

/* Answer now, on the loop thread. */
static void reply_json(struct admin_exchange *x, int status, const char *extra, const char *body)
{
    char headers[1024];
    snprintf(headers, sizeof headers, "%s%s", SECURITY_HEADERS, extra != NULL ? extra : "");
    admin_reply(x, status, JSON_TYPE, headers, body, strlen(body));
}

static void reply_error(struct admin_exchange *x, int status, const char *message)
{
    char *body = error_body(message);
    reply_json(x, status, NULL, body);
    mem_free(body);
}

/* --- Sessions (under mu) --- */

static bool session_live(const struct session *s, uint64_t now, unsigned idle_s)
{
    return s->used && now - s->used_ms < (uint64_t)idle_s * 1000 && now - s->created_ms < SESSION_MAX_AGE_MS;
}

static void session_forget(struct session *s)
{
    wipe_free(s->authorization);
    memset(s, 0, sizeof *s);
}

/* The live session @sid (touched), or NULL. Compared in constant time. */
static struct session *session_find(struct console *c, const char *sid)
{
    uint64_t now = now_ms();
    struct session *found = NULL;
    for (unsigned i = 0; i < CONSOLE_MAX_SESSIONS; i++) {
        struct session *s = &c->sessions[i];
        if (!s->used) {
            continue;
        }
        if (!session_live(s, now, c->cfg.session_idle_s)) {
            session_forget(s);
            continue;
        }
        unsigned char diff = 0;
        for (unsigned k = 0; k < CONSOLE_SESSION_ID_LEN; k++) {
            diff |= (unsigned char)(s->id[k] ^ sid[k]);
        }
        if (diff == 0) {
            found = s;
        }
    }
    if (found != NULL) {
        found->used_ms = now;
    }
    return found;
}

/* A new session of @principal for @authorization (ownership passes). A principal at
 * CONSOLE_MAX_SESSIONS_PER_PRINCIPAL loses its own least recently used session; otherwise a free
 * slot, or the least recently used of all when the table is full. */
static struct session *session_new(struct console *c, char *authorization, const char *name, const char *who)
{
    char principal[sizeof c->sessions[0].principal];
    snprintf(principal, sizeof principal, "%s", who); /* compared as stored */
    uint64_t now = now_ms();
    struct session *slot = NULL, *lru = NULL, *own_lru = NULL;
    unsigned own = 0;
    for (unsigned i = 0; i < CONSOLE_MAX_SESSIONS; i++) {
        struct session *s = &c->sessions[i];
        if (s->used && !session_live(s, now, c->cfg.session_idle_s)) {
            session_forget(s);
        }
        if (!s->used) {
            slot = slot != NULL ? slot : s;
            continue;
        }
        lru = lru == NULL || s->used_ms < lru->used_ms ? s : lru;
        if (strcmp(s->principal, principal) == 0) {
            own++;
            own_lru = own_lru == NULL || s->used_ms < own_lru->used_ms ? s : own_lru;
        }
    }
    if (own >= CONSOLE_MAX_SESSIONS_PER_PRINCIPAL) {
        slot = own_lru;
    } else if (slot == NULL) {
        slot = lru;
    }
    session_forget(slot);
    uint8_t raw[CONSOLE_SESSION_ID_LEN / 2];
    rand_bytes(raw, sizeof raw);
    for (unsigned i = 0; i < sizeof raw; i++) {
        snprintf(slot->id + 2 * i, 3, "%02x", raw[i]);
    }
    explicit_bzero(raw, sizeof raw);
    slot->used = true;
    slot->authorization = authorization;
    snprintf(slot->name, sizeof slot->name, "%s", name);
    snprintf(slot->principal, sizeof slot->principal, "%s", principal);
    slot->created_ms = slot->used_ms = now_ms();
    return slot;
}

/* A copy of the session's credential, or NULL. */
static char *session_credential(struct console *c, const char *sid)
{
    pthread_mutex_lock(&c->mu);
    struct session *s = session_find(c, sid);
    char *auth = s != NULL ? mem_strdup(s->authorization) : NULL;
    pthread_mutex_unlock(&c->mu);
    return auth;
}

static void session_drop(struct console *c, const char *sid)
{
    pthread_mutex_lock(&c->mu);
    struct session *s = session_find(c, sid);
    if (s != NULL) {
        session_forget(s);
    }
    pthread_mutex_unlock(&c->mu);
}

/* --- Completions: console thread -> loop thread --- */

static void post(struct console *c, enum completion_kind kind, uint64_t id, int status, const char *headers,
                 char *body)
{
    struct completion *d = mem_zalloc(sizeof *d);
    d->kind = kind;
    d->id = id;
    d->status = status;
    d->headers = headers != NULL ? mem_strdup(headers) : NULL;
    d->body = body;
    d->len = body != NULL ? strlen(body) : 0;
    pthread_mutex_lock(&c->mu);
    bool stopping = c->stopping;
    if (!stopping) {
        queue_insert_tail(&c->done, &d->link);
        /* Under the lock: console_shutdown sets stopping under it before it closes the handle. */
        uv_async_send(&c->async);
    }
    pthread_mutex_unlock(&c->mu);
    if (stopping) {
        mem_free(d->headers);
        mem_free(d->body);
        mem_free(d);
    }
}

static struct lx *lx_find(struct console *c, uint64_t id)
{
    struct queue *q;
    QUEUE_FOREACH (q, &c->lxs) {
        struct lx *l = QUEUE_DATA(q, struct lx, link);
        if (l->id == id) {
            return l;
        }
    }
    return NULL;
}

static void view_unregister(struct console *c, uint64_t id)
{
    pthread_mutex_lock(&c->mu);
    for (unsigned i = 0; i < c->cfg.max_streams; i++) {
        if (c->views[i].used && c->views[i].id == id) {
            c->views[i].used = false;
        }
    }
    pthread_mutex_unlock(&c->mu);
}

/* End a live view on the loop thread. */
static void lx_end_stream(struct console *c, struct lx *l)
{
    view_unregister(c, l->id);
    admin_stream_close(l->x);
    queue_remove(&l->link);
    c->n_streams--;
    mem_free(l);
}

static void async_cb(uv_async_t *a)
{
    struct console *c = a->data;
    struct queue done;
    queue_init(&done);
    pthread_mutex_lock(&c->mu);
    queue_move(&c->done, &done);
    pthread_mutex_unlock(&c->mu);
    struct queue *q;
    while ((q = queue_head(&done)) != NULL) {
        queue_remove(q);
        struct completion *d = QUEUE_DATA(q, struct completion, link);
        struct lx *l = lx_find(c, d->id);
        if (l != NULL && d->kind == DONE_REPLY && !l->stream) {
            char headers[1536];
            snprintf(headers, sizeof headers, "%s%s", SECURITY_HEADERS, d->headers != NULL ? d->headers : "");
            admin_reply(l->x, d->status, JSON_TYPE, headers, d->body != NULL ? d->body : "", d->len);
            queue_remove(&l->link);
            mem_free(l);
        } else if (l != NULL && l->stream) {
            int rv = d->len > 0 ? admin_stream_send(l->x, d->body, d->len) : 0;
            if (rv != 0 || d->kind == DONE_END) {
                lx_end_stream(c, l);
            }
        }
        mem_free(d->headers);
        mem_free(d->body);
        mem_free(d);
    }
}

/* --- The console thread --- */

static char *sse_event(const char *event, json_t *data)
{
    char *text = json_text(data);
    size_t n = strlen(event) + strlen(text) + 32;
    char *out = mem_alloc(n);
    snprintf(out, n, "event: %s\ndata: %s\n\n", event, text);
    mem_free(text);
    return out;
}

/* The drill's state (who ran it, the leaders, the target, the message) is cluster data: only a
 * platform admin's snapshot carries it, like "cluster" and "lease". */
static void attach_drill(struct console *c, json_t *snap)
{
    if (console_feed_platform_admin(json_object_get(snap, "principal"))) {
        json_object_set_new(snap, "drill", console_drill_state(c->drill));
    }
}

static void run_login(struct console *c, struct job *j)
{
    size_t n = strlen(j->token) + 8;
    char *auth = mem_alloc(n);
    snprintf(auth, n, "Bearer %s", j->token);
    wipe_free(j->token);
    j->token = NULL;
    json_t *who = NULL;
    struct console_call res;
    console_feed_whoami(&c->feed, auth, j->peer, &who, &res);
    if (who == NULL) {
        wipe_free(auth);
        int status = res.status == GRPC_STATUS_UNAUTHENTICATED      ? 401
                     : res.status == GRPC_STATUS_PERMISSION_DENIED  ? 403
                     : res.status == GRPC_STATUS_RESOURCE_EXHAUSTED ? 429
                                                                    : 503;
        char msg[400];
        snprintf(msg, sizeof msg, "%s: %s", grpc_status_name(res.status), res.message);
        post(c, DONE_REPLY, j->xid, status, NULL, error_body(msg));
        return;
    }
    pthread_mutex_lock(&c->mu);
    const char *pid = json_string_value(json_object_get(who, "id"));
    struct session *s =
        session_new(c, auth, json_string_value(json_object_get(who, "name")), pid != NULL ? pid : "");
    char cookie[256];
    snprintf(cookie, sizeof cookie, "Set-Cookie: %s=%s; Path=%s; HttpOnly; SameSite=Strict%s\r\n",
             CONSOLE_COOKIE, s->id, CONSOLE_PREFIX, j->https ? "; Secure" : "");
    pthread_mutex_unlock(&c->mu);
    json_t *body = json_object();
    json_object_set_new(body, "principal", who);
    LOG_INFO("console: %s signed in from %s", json_string_value(json_object_get(who, "name")), j->peer);
    post(c, DONE_REPLY, j->xid, 200, cookie, json_text(body));
    json_decref(body);
}

static void run_snapshot(struct console *c, struct job *j)
{
    char *auth = session_credential(c, j->sid);
    if (auth == NULL) {
        post(c, DONE_REPLY, j->xid, 401, NULL, error_body("sign in first"));
        return;
    }
    struct console_view view;
    memset(&view, 0, sizeof view);
    struct console_call res;
    json_t *snap = console_feed_snapshot(&c->feed, auth, j->peer, &j->filter, &view, &res);
    wipe_free(auth);
    console_view_free(&view);
    if (snap == NULL) {
        if (res.status == GRPC_STATUS_UNAUTHENTICATED) {
            session_drop(c, j->sid);
        }
        char msg[400];
        snprintf(msg, sizeof msg, "%s: %s", grpc_status_name(res.status), res.message);
        post(c, DONE_REPLY, j->xid, res.status == GRPC_STATUS_UNAUTHENTICATED ? 401 : 503, NULL,
             error_body(msg));
        return;
    }
    attach_drill(c, snap);
    post(c, DONE_REPLY, j->xid, 200, NULL, json_text(snap));
    json_decref(snap);
}

static void run_drill(struct console *c, struct job *j)
{
    char *auth = session_credential(c, j->sid);
    if (auth == NULL) {
        post(c, DONE_REPLY, j->xid, 401, NULL, error_body("sign in first"));
        return;
    }
    struct console_call res;
    int rv = console_drill_start(c->drill, auth, j->peer, j->target, &res);
    wipe_free(auth);
    if (rv == GERR_PERM) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s: %s", grpc_status_name(res.status), res.message);
        int status = res.status == GRPC_STATUS_PERMISSION_DENIED ? 403
                     : res.status == GRPC_STATUS_UNAUTHENTICATED ? 401
                                                                 : 503;
        post(c, DONE_REPLY, j->xid, status, NULL, error_body(msg));
        return;
    }
    if (rv != 0) {
        post(c, DONE_REPLY, j->xid, rv == GERR_BUSY ? 409 : 503, NULL,
             error_body(rv == GERR_BUSY ? "a drill is running: wait for its result"
                                        : "the drill could not start"));
        return;
    }
    json_t *body = json_object();
    json_object_set_new(body, "drill", console_drill_state(c->drill));
    post(c, DONE_REPLY, j->xid, 202, NULL, json_text(body));
    json_decref(body);
}

/* The console thread's state of one live view. */
struct wview {
    bool used;
    uint64_t id;
    struct console_view view;
};

static void refresh_views(struct console *c, struct wview *wv)
{
    unsigned n = c->cfg.max_streams;
    struct view_spec *specs = mem_zalloc(sizeof *specs * n);
    pthread_mutex_lock(&c->mu);
    memcpy(specs, c->views, sizeof *specs * n);
    pthread_mutex_unlock(&c->mu);
    /* Forget the state of views that ended. */
    for (unsigned i = 0; i < n; i++) {
        bool live = false;
        for (unsigned k = 0; k < n && wv[i].used; k++) {
            live = live || (specs[k].used && specs[k].id == wv[i].id);
        }
        if (wv[i].used && !live) {
            console_view_free(&wv[i].view);
            wv[i].used = false;
        }
    }
    for (unsigned k = 0; k < n; k++) {
        if (!specs[k].used) {
            continue;
        }
        if (atomic_load(&c->stop)) {
            break; /* the replica stops: no more snapshots (each is several calls) */
        }
        struct wview *w = NULL;
        for (unsigned i = 0; i < n && w == NULL; i++) {
            w = wv[i].used && wv[i].id == specs[k].id ? &wv[i] : NULL;
        }
        for (unsigned i = 0; i < n && w == NULL; i++) {
            if (!wv[i].used) {
                w = &wv[i];
                memset(w, 0, sizeof *w);
                w->used = true;
                w->id = specs[k].id;
            }
        }
        char *auth = session_credential(c, specs[k].sid);
        json_t *snap = NULL;
        struct console_call res = {.status = GRPC_STATUS_UNAUTHENTICATED};
        snprintf(res.message, sizeof res.message, "the session ended: sign in again");
        if (auth != NULL) {
            snap = console_feed_snapshot(&c->feed, auth, specs[k].peer, &specs[k].filter, &w->view, &res);
            wipe_free(auth);
        }
        if (snap == NULL) {
            /* The credential no longer works: say so and end the view. */
            if (res.status == GRPC_STATUS_UNAUTHENTICATED) {
                session_drop(c, specs[k].sid);
            }
            char msg[400];
            snprintf(msg, sizeof msg, "%s: %s", grpc_status_name(res.status), res.message);
            json_t *e = json_object();
            json_object_set_new(e, "error", json_string(msg));
            post(c, DONE_END, specs[k].id, 0, NULL, sse_event("signed-out", e));
            json_decref(e);
            continue;
        }
        attach_drill(c, snap);
        post(c, DONE_DATA, specs[k].id, 0, NULL, sse_event("snapshot", snap));
        json_decref(snap);
    }
    mem_free(specs);
}

static void *console_main(void *arg)
{
    struct console *c = arg;
    struct wview *wv = mem_zalloc(sizeof *wv * c->cfg.max_streams);
    uint64_t next_tick = now_ms();
    pthread_mutex_lock(&c->mu);
    while (!c->stopping) {
        struct queue *q = queue_head(&c->jobs);
        if (q != NULL) {
            queue_remove(q);
            pthread_mutex_unlock(&c->mu);
            struct job *j = QUEUE_DATA(q, struct job, link);
            if (j->kind == JOB_LOGIN) {
                run_login(c, j);
            } else if (j->kind == JOB_SNAPSHOT) {
                run_snapshot(c, j);
            } else {
                run_drill(c, j);
            }
            wipe_free(j->token);
            mem_free(j);
            pthread_mutex_lock(&c->mu);
            continue;
        }
        if (c->tick_now || now_ms() >= next_tick) {
            c->tick_now = false;
            next_tick = now_ms() + c->cfg.refresh_ms;
            pthread_mutex_unlock(&c->mu);
            refresh_views(c, wv);
            pthread_mutex_lock(&c->mu);
            continue;
        }
        struct timespec until;
        uint64_t now = now_ms();
        clock_mono_deadline(&until, next_tick > now ? next_tick - now : 0);
        clock_cond_wait_mono(&c->cond, &c->mu, &until);
    }
    pthread_mutex_unlock(&c->mu);
    for (unsigned i = 0; i < c->cfg.max_streams; i++) {
        if (wv[i].used) {
            console_view_free(&wv[i].view);
        }
    }
    mem_free(wv);
    return NULL;
}

/* --- Requests, on the loop thread --- */

static void submit(struct console *c, struct admin_exchange *x, struct job *j)
{
    struct lx *l = mem_zalloc(sizeof *l);
    l->id = j->xid = ++c->next_id;
    l->x = x;
    queue_insert_tail(&c->lxs, &l->link);
    pthread_mutex_lock(&c->mu);
    queue_insert_tail(&c->jobs, &j->link);
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

/* May this request change something? The console's own pages send X-Gantry-Console and JSON, and a
 * browser's Origin (when sent) must be this host: a form or script of another site cannot. */
static bool writable(const struct admin_request *r, char *why, size_t len)
{
    if (strcmp(r->console, "1") != 0) {
        snprintf(why, len, "missing the header X-Gantry-Console: 1");
        return false;
    }
    if (strncmp(r->content_type, JSON_TYPE, sizeof JSON_TYPE - 1) != 0) {
        snprintf(why, len, "the body must be %s", JSON_TYPE);
        return false;
    }
    if (r->origin[0] != '\0') {
        char http[300], https[300];
        snprintf(http, sizeof http, "http://%s", r->host);
        snprintf(https, sizeof https, "https://%s", r->host);
        if (r->host[0] == '\0' || (strcmp(r->origin, http) != 0 && strcmp(r->origin, https) != 0)) {
            snprintf(why, len, "cross-origin request refused");
            return false;
        }
    }
    return true;
}

static void serve_static(struct admin_exchange *x, const struct admin_request *r)
{
    const char *rest = r->path + sizeof CONSOLE_PREFIX - 1;
    const unsigned char *body = NULL;
    size_t len = 0;
    const char *type = NULL;
    if (strcmp(rest, "") == 0 || strcmp(rest, "/") == 0 || strcmp(rest, "/index.html") == 0) {
        body = console_index_html, len = console_index_html_len, type = "text/html; charset=utf-8";
    } else if (strcmp(rest, "/app.js") == 0) {
        body = console_app_js, len = console_app_js_len, type = "text/javascript; charset=utf-8";
    } else if (strcmp(rest, "/app.css") == 0) {
        body = console_app_css, len = console_app_css_len, type = "text/css; charset=utf-8";
    }
    if (body == NULL) {
        admin_reply(x, 404, "text/plain", SECURITY_HEADERS, "not found\n", 10);
    } else if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0) {
        admin_reply(x, 405, "text/plain", SECURITY_HEADERS "Allow: GET, HEAD\r\n", "method not allowed\n",
                    19);
    } else {
        admin_reply(x, 200, type, SECURITY_HEADERS, body, len);
    }
}

/* The session of the request's cookie: true with @sid, or answered 401/400. */
static bool need_session(struct console *c, struct admin_exchange *x, const struct admin_request *r,
                         char sid[CONSOLE_SESSION_ID_LEN + 1])
{
    int rv = console_req_session(r->cookie, sid);
    if (rv == GERR_INVAL) {
        reply_error(x, 400, "malformed session cookie: sign in again");
        return false;
    }
    pthread_mutex_lock(&c->mu);
    bool ok = rv == 0 && session_find(c, sid) != NULL;
    pthread_mutex_unlock(&c->mu);
    if (!ok) {
        reply_error(x, 401, "sign in first");
    }
    return ok;
}

static void open_view(struct console *c, struct admin_exchange *x, const struct admin_request *r,
                      const char *sid, const struct console_filter *f)
{
    if (c->n_streams >= c->cfg.max_streams) {
        reply_error(x, 429, "too many live console views on this replica (console_max_streams); close one");
        return;
    }
    int slot = -1;
    pthread_mutex_lock(&c->mu);
    for (unsigned i = 0; i < c->cfg.max_streams && slot < 0; i++) {
        slot = c->views[i].used ? -1 : (int)i;
    }
    pthread_mutex_unlock(&c->mu);
    if (slot < 0) { /* views the console thread has not let go of yet */
        reply_error(x, 429, "too many live console views on this replica (console_max_streams); close one");
        return;
    }
    if (admin_stream_open(x, "text/event-stream; charset=utf-8", SECURITY_HEADERS) != 0) {
        admin_stream_close(x);
        return;
    }
    static const char hello[] = "retry: 1000\n\n";
    admin_stream_send(x, hello, sizeof hello - 1);
    struct lx *l = mem_zalloc(sizeof *l);
    l->id = ++c->next_id;
    l->x = x;
    l->stream = true;
    queue_insert_tail(&c->lxs, &l->link);
    c->n_streams++;
    pthread_mutex_lock(&c->mu);
    struct view_spec *v = &c->views[slot];
    memset(v, 0, sizeof *v);
    v->used = true;
    v->id = l->id;
    memcpy(v->sid, sid, sizeof v->sid);
    v->filter = *f;
    snprintf(v->peer, sizeof v->peer, "%s", r->peer);
    c->tick_now = true; /* the first snapshot at once */
    pthread_cond_signal(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

static void logout(struct console *c, struct admin_exchange *x, const struct admin_request *r)
{
    char sid[CONSOLE_SESSION_ID_LEN + 1];
    if (console_req_session(r->cookie, sid) == 0) {
        session_drop(c, sid);
        /* Its live views end now. */
        struct queue *q, *next;
        for (q = c->lxs.next; q != &c->lxs; q = next) {
            next = q->next;
            struct lx *l = QUEUE_DATA(q, struct lx, link);
            bool mine = false;
            pthread_mutex_lock(&c->mu);
            for (unsigned i = 0; i < c->cfg.max_streams; i++) {
                mine = mine ||
                       (c->views[i].used && c->views[i].id == l->id && strcmp(c->views[i].sid, sid) == 0);
            }
            pthread_mutex_unlock(&c->mu);
            if (l->stream && mine) {
                lx_end_stream(c, l);
            }
        }
    }
    char headers[600];
    snprintf(headers, sizeof headers, "%sSet-Cookie: %s=; Path=%s; HttpOnly; SameSite=Strict; Max-Age=0\r\n",
             SECURITY_HEADERS, CONSOLE_COOKIE, CONSOLE_PREFIX);
    admin_reply(x, 204, JSON_TYPE, headers, "", 0);
}

void console_handle(void *data, struct admin_exchange *x, const struct admin_request *r)
{
    struct console *c = data;
    static const char api[] = CONSOLE_PREFIX "/api/";
    if (c->shut) {
        reply_error(x, 503, "the replica is stopping");
        return;
    }
    if (strncmp(r->path, api, sizeof api - 1) != 0) {
        serve_static(x, r);
        return;
    }
    const char *what = r->path + sizeof api - 1;
    bool get = strcmp(r->method, "GET") == 0, post_ = strcmp(r->method, "POST") == 0;
    char why[200];
    char sid[CONSOLE_SESSION_ID_LEN + 1];
    struct console_filter filter;
    bool known = strcmp(what, "login") == 0 || strcmp(what, "logout") == 0 || strcmp(what, "session") == 0 ||
                 strcmp(what, "snapshot") == 0 || strcmp(what, "events") == 0 || strcmp(what, "drill") == 0;
    bool wants_post = strcmp(what, "login") == 0 || strcmp(what, "logout") == 0 || strcmp(what, "drill") == 0;
    if (!known) {
        reply_error(x, 404, "no such console endpoint");
        return;
    }
    if ((wants_post && !post_) || (!wants_post && !get)) {
        reply_error(x, 405, wants_post ? "use POST" : "use GET");
        return;
    }
    if (wants_post && !writable(r, why, sizeof why)) {
        reply_error(x, 403, why);
        return;
    }
    if (strcmp(what, "login") == 0) {
        struct job *j = mem_zalloc(sizeof *j);
        j->kind = JOB_LOGIN;
        j->token = mem_alloc(CONSOLE_TOKEN_MAX + 1);
        if (console_req_login(r->body, r->body_len, j->token, CONSOLE_TOKEN_MAX + 1, why) != 0) {
            explicit_bzero(j->token, CONSOLE_TOKEN_MAX + 1);
            mem_free(j->token);
            mem_free(j);
            reply_error(x, 400, why);
            return;
        }
        j->https = strncmp(r->origin, "https://", 8) == 0;
        snprintf(j->peer, sizeof j->peer, "%s", r->peer);
        submit(c, x, j);
        return;
    }
    if (strcmp(what, "logout") == 0) {
        logout(c, x, r);
        return;
    }
    if (!need_session(c, x, r, sid)) {
        return;
    }
    if (strcmp(what, "session") == 0) {
        pthread_mutex_lock(&c->mu);
        struct session *s = session_find(c, sid);
        json_t *j = json_object();
        json_object_set_new(j, "name", json_string(s != NULL ? s->name : ""));
        pthread_mutex_unlock(&c->mu);
        char *body = json_text(j);
        json_decref(j);
        reply_json(x, 200, NULL, body);
        mem_free(body);
        return;
    }
    if (strcmp(what, "drill") == 0) {
        struct job *j = mem_zalloc(sizeof *j);
        j->kind = JOB_DRILL;
        if (console_req_drill(r->body, r->body_len, &j->target, why) != 0) {
            mem_free(j);
            reply_error(x, 400, why);
            return;
        }
        memcpy(j->sid, sid, sizeof j->sid);
        snprintf(j->peer, sizeof j->peer, "%s", r->peer);
        submit(c, x, j);
        return;
    }
    if (console_req_filter(r->query, &filter, why) != 0) {
        reply_error(x, 400, why);
        return;
    }
    if (strcmp(what, "snapshot") == 0) {
        struct job *j = mem_zalloc(sizeof *j);
        j->kind = JOB_SNAPSHOT;
        memcpy(j->sid, sid, sizeof j->sid);
        j->filter = filter;
        snprintf(j->peer, sizeof j->peer, "%s", r->peer);
        submit(c, x, j);
        return;
    }
    open_view(c, x, r, sid, &filter);
}

/* --- Lifecycle --- */

int console_start(const struct console_config *cfg, struct console **out, char *errmsg)
{
    struct console *c = mem_zalloc(sizeof *c);
    c->cfg = *cfg;
    c->cfg.max_streams = cfg->max_streams != 0 ? cfg->max_streams : 8;
    c->cfg.refresh_ms = cfg->refresh_ms != 0 ? cfg->refresh_ms : 500;
    c->cfg.session_idle_s = cfg->session_idle_s != 0 ? cfg->session_idle_s : 1800;
    snprintf(c->replica_name, sizeof c->replica_name, "%s",
             cfg->replica_name != NULL ? cfg->replica_name : "");
    c->cfg.replica_name = c->replica_name;
    atomic_init(&c->stop, false);
    c->feed = (struct console_feed){
        .gate = cfg->gate, .replica_id = cfg->replica_id, .replica_name = c->replica_name, .stop = &c->stop};
    c->drill = console_drill_new(&c->feed, cfg->replica, cfg->writer);
    c->views = mem_zalloc(sizeof *c->views * c->cfg.max_streams);
    queue_init(&c->jobs);
    queue_init(&c->done);
    queue_init(&c->lxs);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, NULL);
    uv_async_init(cfg->loop, &c->async, async_cb);
    c->async.data = c;
    if (pthread_create(&c->thread, NULL, console_main, c) != 0) {
        gerr_set(errmsg, "console: cannot start its thread");
        c->shut = true;
        uv_close((uv_handle_t *)&c->async, NULL);
        *out = c; /* freed by console_free after the loop ran (the handle must close first) */
        return GERR_NOMEM;
    }
    c->thread_started = true;
    *out = c;
    return 0;
}

void console_shutdown(struct console *c)
{
    if (c->shut) {
        return;
    }
    c->shut = true;
    atomic_store(&c->stop, true);
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    async_cb(&c->async); /* what was answered already goes out */
    struct queue *q;
    while ((q = queue_head(&c->lxs)) != NULL) {
        struct lx *l = QUEUE_DATA(q, struct lx, link);
        if (l->stream) {
            lx_end_stream(c, l);
        } else {
            reply_error(l->x, 503, "the replica is stopping");
            queue_remove(&l->link);
            mem_free(l);
        }
    }
    uv_close((uv_handle_t *)&c->async, NULL);
}

void console_free(struct console *c)
{
    if (c == NULL) {
        return;
    }
    atomic_store(&c->stop, true);
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    if (c->thread_started) {
        pthread_join(c->thread, NULL);
    }
    console_drill_free(c->drill);
    struct queue *q;
    while ((q = queue_head(&c->jobs)) != NULL) {
        queue_remove(q);
        struct job *j = QUEUE_DATA(q, struct job, link);
        wipe_free(j->token);
        mem_free(j);
    }
    while ((q = queue_head(&c->done)) != NULL) {
        queue_remove(q);
        struct completion *d = QUEUE_DATA(q, struct completion, link);
        mem_free(d->headers);
        mem_free(d->body);
        mem_free(d);
    }
    for (unsigned i = 0; i < CONSOLE_MAX_SESSIONS; i++) {
        session_forget(&c->sessions[i]);
    }
    mem_free(c->views);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
    mem_free(c);
}
