/* The egress relay. See relay.h.
 *
 * A connection goes HEAD (reading the first bytes into b_up) -> DIAL (decided and allowed:
 * resolving and connecting) -> SPLICE (both ways, one buffer and at most one write in flight per
 * direction, reading stopped while that write is pending) -> CLOSING; a refusal goes HEAD ->
 * DENYING (the 403 being written) -> CLOSING. An allowed CONNECT goes DIAL -> TUNNEL (the 200
 * written, the sandbox's first bytes awaited and a ClientHello among them decided) -> SPLICE. Raw
 * TCP redirected from port 53 of a DNS door goes HEAD -> DNS (questions answered one at a time) ->
 * CLOSING. close_conn is the single teardown: it closes the
 * handles (libuv then fails every pending write, connect and shutdown with ECANCELED, whose
 * callbacks see CLOSING and do nothing) and cancels a pending getaddrinfo; the memory goes when the
 * last handle's close callback and the getaddrinfo callback have both run. */
#include "egress/relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "egress/dns.h"
#include "egress/parse.h"
#include "lib/err.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/queue.h"
#include "lib/uverr.h"

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80 /* linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same value */
#endif

struct egress_relay {
    uv_loop_t *loop;
    struct egress_relay_config cfg;
    struct egress_policy_cache *policies;
    egress_event_cb cb;
    void *cb_ctx;
    egress_orig_dst_fn orig_dst;
    void *orig_ctx;
    struct queue doors;
    unsigned admitted; /* connections counted against max_conns */
    _Atomic uint64_t open, accepted, refused_limit;
    uv_timer_t keep;  /* a handle of the relay's own, so egress_relay_close's callback is never synchronous */
    unsigned pending; /* doors + keep still open once closing */
    bool closing;
    egress_relay_close_cb close_cb;
    void *close_ctx;
};

struct egress_door {
    struct queue node; /* in relay->doors */
    struct egress_relay *r;
    uv_tcp_t listener;
    struct egress_sandbox sb;       /* strings owned (all "" on a shared door) */
    egress_source_lookup_fn lookup; /* a shared door: the sandbox of each source address */
    void *lookup_ctx;
    struct queue sources; /* a shared door: struct source, connections counted per sandbox */
    struct queue conns;
    unsigned admitted;
    bool closing, listener_closed;
    /* The DNS responder (EGRESS_DOOR_DNS). */
    uv_udp_t udp;
    bool udp_init, udp_closed;
    unsigned dns_pending;                /* resolutions and answers in flight */
    uint8_t dns_buf[EGRESS_DNS_MAX + 1]; /* one byte more than a query may have: longer is refused */
};

#define DNS_PENDING_MAX 64u /* per door; past it a question is answered SERVFAIL at once */
#define DNS_ANSWERS_MAX 8u
#define DNS_TTL_S       30u

/* A shared door's count of one sandbox's connections (its key "<namespace>/<name>"). */
struct source {
    struct queue node; /* in door->sources */
    unsigned admitted;
    char key[];
};

enum conn_state { ST_HEAD, ST_DIAL, ST_DENYING, ST_TUNNEL, ST_SPLICE, ST_DNS, ST_CLOSING };

struct conn {
    struct queue node; /* in door->conns */
    struct egress_door *door;
    struct egress_sandbox sb;       /* whose: the door's, or (shared door) the lookup's, in sb_buf */
    struct source *src;             /* a shared door's count this connection is in, or NULL */
    char sb_buf[EGRESS_SOURCE_BUF]; /* the lookup's strings */
    uv_tcp_t down;                  /* the sandbox's side */
    uv_tcp_t up;                    /* the destination's side */
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    uv_write_t w_up, w_down;
    uv_shutdown_t sh_up, sh_down;
    enum conn_state st;
    enum egress_proto proto;
    unsigned handles; /* initialised handles not yet closed */
    bool admitted, up_init, gai_pending, allowed, got_bytes, tunnel_bytes;
    bool down_eof, up_eof, writing_up, writing_down, shutting_up, shutting_down;
    bool tunnel_up; /* ST_TUNNEL: the destination's bytes flow to the sandbox while its first are awaited */
    uint8_t *b_up, *b_down;
    size_t n_up;
    char *reply; /* the 403/502/200 text being written to the sandbox */
    struct egress_target target;
    bool have_orig;
    char orig_ip[INET6_ADDRSTRLEN];
    unsigned orig_port;
    char dial_name[EGRESS_TARGET_NAME + 1];
    char tunnel_sni[EGRESS_TARGET_NAME + 1]; /* the server_name of a ClientHello inside a CONNECT tunnel */
    unsigned dial_port;
    struct egress_intent intent;
    struct egress_decision decision;
    uint64_t bytes_out, bytes_in;
    /* DNS over TCP (ST_DNS): the question being answered. */
    struct egress_dns_query dq;
    uint8_t dq_msg[EGRESS_DNS_MAX];
    bool dq_busy; /* resolving or writing its answer: reading is stopped */
};

void egress_relay_config_defaults(struct egress_relay_config *cfg)
{
    cfg->max_conns = 4096;
    cfg->max_conns_per_sandbox = 1024;
    cfg->buf_size = EGRESS_HEAD_MAX;
    cfg->sniff_ms = 300;
    cfg->head_timeout_ms = 10000;
    cfg->connect_timeout_ms = 10000;
}

/* SO_ORIGINAL_DST (IPv4) or its IPv6 twin: where netfilter's REDIRECT/DNAT found the connection
 * going. The one translation of its errno. */
static int default_orig_dst(void *ctx, uv_os_fd_t fd, struct sockaddr_storage *out)
{
    (void)ctx;
    socklen_t len = sizeof *out;
    memset(out, 0, sizeof *out);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, out, &len) == 0) {
        return 0;
    }
    len = sizeof *out;
    if (getsockopt(fd, SOL_IPV6, SO_ORIGINAL_DST, out, &len) == 0) {
        return 0;
    }
    return gerr_from_errno(errno);
}

int egress_relay_new(uv_loop_t *loop, const struct egress_relay_config *cfg,
                     struct egress_policy_cache *policies, egress_event_cb cb, void *cb_ctx,
                     struct egress_relay **out)
{
    if (cfg->buf_size < EGRESS_HEAD_MAX || cfg->max_conns == 0 || cfg->max_conns_per_sandbox == 0) {
        return GERR_INVAL;
    }
    struct egress_relay *r = mem_zalloc(sizeof *r);
    r->loop = loop;
    r->cfg = *cfg;
    r->policies = policies;
    r->cb = cb;
    r->cb_ctx = cb_ctx;
    r->orig_dst = default_orig_dst;
    queue_init(&r->doors);
    uv_timer_init(loop, &r->keep);
    r->keep.data = r;
    *out = r;
    return 0;
}

void egress_relay_set_orig_dst(struct egress_relay *r, egress_orig_dst_fn fn, void *ctx)
{
    r->orig_dst = fn;
    r->orig_ctx = ctx;
}

void egress_relay_stats(struct egress_relay *r, struct egress_relay_stats *out)
{
    out->open = atomic_load(&r->open);
    out->accepted = atomic_load(&r->accepted);
    out->refused_limit = atomic_load(&r->refused_limit);
}

static void emit_for(struct egress_door *d, const struct egress_sandbox *sb, enum egress_event_kind kind,
                     const struct egress_intent *in, const struct egress_decision *dec, uint64_t out,
                     uint64_t inb)
{
    struct egress_relay *r = d->r;
    if (r->cb == NULL) {
        return;
    }
    struct egress_event ev = {
        .kind = kind, .sandbox = sb, .intent = in, .decision = dec, .bytes_out = out, .bytes_in = inb};
    r->cb(r->cb_ctx, &ev);
}

static void emit(struct conn *c, enum egress_event_kind kind)
{
    emit_for(c->door, &c->sb, kind, &c->intent, &c->decision, c->bytes_out, c->bytes_in);
}

/* ---- teardown ---------------------------------------------------------------------------------- */

static void relay_release(struct egress_relay *r)
{
    if (--r->pending > 0) {
        return;
    }
    egress_relay_close_cb cb = r->close_cb;
    void *ctx = r->close_ctx;
    mem_free(r);
    if (cb != NULL) {
        cb(ctx);
    }
}

static void door_maybe_free(struct egress_door *d)
{
    if (!d->closing || !d->listener_closed || !queue_empty(&d->conns) || (d->udp_init && !d->udp_closed) ||
        d->dns_pending > 0) {
        return;
    }
    struct egress_relay *r = d->r;
    queue_remove(&d->node);
    mem_free((char *)d->sb.ns);
    mem_free((char *)d->sb.name);
    mem_free((char *)d->sb.owner);
    mem_free((char *)d->sb.id);
    mem_free(d);
    if (r->closing) {
        relay_release(r);
    }
}

static void conn_maybe_free(struct conn *c)
{
    if (c->handles > 0 || c->gai_pending) {
        return;
    }
    struct egress_door *d = c->door;
    struct egress_relay *r = d->r;
    if (c->allowed) {
        emit(c, EGRESS_EVENT_CLOSED);
    }
    if (c->admitted) {
        d->admitted--;
        r->admitted--;
    }
    if (c->src != NULL && --c->src->admitted == 0) {
        queue_remove(&c->src->node);
        mem_free(c->src);
    }
    atomic_fetch_sub(&r->open, 1);
    queue_remove(&c->node);
    mem_free(c->b_up);
    mem_free(c->b_down);
    mem_free(c->reply);
    mem_free(c);
    door_maybe_free(d);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    c->handles--;
    conn_maybe_free(c);
}

static void close_conn(struct conn *c)
{
    if (c->st == ST_CLOSING) {
        return;
    }
    c->st = ST_CLOSING;
    if (c->gai_pending) {
        uv_cancel((uv_req_t *)&c->gai);
    }
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->down, on_conn_handle_closed);
    if (c->up_init) {
        uv_close((uv_handle_t *)&c->up, on_conn_handle_closed);
    }
}

/* Both directions ended and nothing is in flight: done. */
static void maybe_finish(struct conn *c)
{
    if (c->st == ST_SPLICE && c->down_eof && c->up_eof && !c->writing_up && !c->writing_down &&
        !c->shutting_up && !c->shutting_down) {
        close_conn(c);
    }
}

/* ---- refusing ---------------------------------------------------------------------------------- */

static void on_reply_written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    c->writing_down = false;
    if (c->st == ST_DENYING || status < 0) {
        close_conn(c);
    }
}

/* Write @status_line and @body to an HTTP-speaking sandbox, then close (ST_DENYING). */
static void reply_and_close(struct conn *c, const char *status_line, const char *body)
{
    c->st = ST_DENYING;
    uv_timer_stop(&c->timer);
    uv_read_stop((uv_stream_t *)&c->down);
    if (c->proto != EGRESS_PROTO_CONNECT && c->proto != EGRESS_PROTO_HTTP) {
        close_conn(c);
        return;
    }
    size_t blen = strlen(body) + 1, n = strlen(status_line) + blen + 160;
    c->reply = mem_alloc(n);
    int len = snprintf(
        c->reply, n,
        "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s\n",
        status_line, blen, body);
    uv_buf_t b = uv_buf_init(c->reply, (unsigned)len);
    c->w_down.data = c;
    c->writing_down = true;
    if (uv_write(&c->w_down, (uv_stream_t *)&c->down, &b, 1, on_reply_written) != 0) {
        c->writing_down = false;
        close_conn(c);
    }
}

/* Refuse for a reason of the relay's own (limit, malformed or late head): reported like any other
 * decision, with layer "relay". */
static void refuse(struct conn *c, const char *reason)
{
    memset(&c->decision, 0, sizeof c->decision);
    c->decision.layer = "relay";
    snprintf(c->decision.destination, sizeof c->decision.destination, "%.*s", (int)EGRESS_NAME_MAX,
             c->intent.host != NULL ? c->intent.host : "");
    snprintf(c->decision.reason, sizeof c->decision.reason, "%s", reason);
    emit(c, EGRESS_EVENT_DECIDED);
    reply_and_close(c, "403 Forbidden", c->decision.reason);
}

/* ---- splicing ---------------------------------------------------------------------------------- */

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_down_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void alloc_down(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = h->data;
    size_t cap = c->door->r->cfg.buf_size;
    *buf = uv_buf_init((char *)c->b_up + c->n_up, (unsigned)(cap - c->n_up));
}

static void alloc_up(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = h->data;
    *buf = uv_buf_init((char *)c->b_down, c->door->r->cfg.buf_size);
}

static void read_down(struct conn *c)
{
    if (!c->down_eof && uv_read_start((uv_stream_t *)&c->down, alloc_down, on_down_read) != 0) {
        close_conn(c);
    }
}

static void read_up(struct conn *c)
{
    if (c->up_eof || c->writing_down) {
        return; /* a write to the sandbox from b_down is in flight: its callback reads again */
    }
    int rv = uv_read_start((uv_stream_t *)&c->up, alloc_up, on_up_read);
    if (rv != 0 && rv != UV_EALREADY) {
        close_conn(c);
    }
}

static void on_up_written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    c->writing_up = false;
    if (c->st != ST_SPLICE) {
        return;
    }
    if (status < 0) {
        close_conn(c);
        return;
    }
    c->n_up = 0;
    read_down(c);
    maybe_finish(c);
}

static void on_down_written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    c->writing_down = false;
    if (c->st != ST_SPLICE && !(c->st == ST_TUNNEL && c->tunnel_up)) {
        return;
    }
    if (status < 0) {
        close_conn(c);
        return;
    }
    read_up(c);
    maybe_finish(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (req == &c->sh_up) {
        c->shutting_up = false;
    } else {
        c->shutting_down = false;
    }
    if (c->st != ST_SPLICE) {
        return;
    }
    if (status < 0) {
        close_conn(c);
        return;
    }
    maybe_finish(c);
}

/* Write @n bytes of @p to @to (one write in flight per direction). */
static void forward(struct conn *c, bool to_up, const uint8_t *p, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    uv_write_t *w = to_up ? &c->w_up : &c->w_down;
    w->data = c;
    if (to_up) {
        c->writing_up = true;
        c->bytes_out += n;
    } else {
        c->writing_down = true;
        c->bytes_in += n;
    }
    int rv = uv_write(w, (uv_stream_t *)(to_up ? &c->up : &c->down), &b, 1,
                      to_up ? on_up_written : on_down_written);
    if (rv != 0) {
        if (to_up) {
            c->writing_up = false;
        } else {
            c->writing_down = false;
        }
        close_conn(c);
    }
}

/* One side said EOF: stop reading it, and shut the other side's write half once its writes are
 * done (uv_shutdown waits for them). */
static void half_close(struct conn *c, bool from_down)
{
    uv_stream_t *from = (uv_stream_t *)(from_down ? &c->down : &c->up);
    uv_stream_t *to = (uv_stream_t *)(from_down ? &c->up : &c->down);
    uv_shutdown_t *req = from_down ? &c->sh_up : &c->sh_down;
    uv_read_stop(from);
    if (from_down) {
        c->down_eof = true;
        c->shutting_up = true;
    } else {
        c->up_eof = true;
        c->shutting_down = true;
    }
    req->data = c;
    if (uv_shutdown(req, to, on_shutdown) != 0) {
        close_conn(c);
        return;
    }
    maybe_finish(c);
}

static void on_up_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct conn *c = s->data;
    bool tunnel = c->st == ST_TUNNEL && c->tunnel_up;
    if (nread == 0 || (c->st != ST_SPLICE && !tunnel)) {
        return;
    }
    if (nread == UV_EOF && tunnel) {
        close_conn(c); /* the destination is done before the sandbox said anything */
        return;
    }
    if (nread == UV_EOF) {
        half_close(c, false);
        return;
    }
    if (nread < 0) {
        close_conn(c);
        return;
    }
    uv_read_stop(s);
    forward(c, false, c->b_down, (size_t)nread);
}

/* ---- dialing ----------------------------------------------------------------------------------- */

/* Both ways from now on: forward what the sandbox has sent already, then read both sides. */
static void splice_both(struct conn *c)
{
    c->st = ST_SPLICE;
    uv_timer_stop(&c->timer);
    uv_read_stop((uv_stream_t *)&c->down);
    read_up(c);
    if (c->st != ST_SPLICE) {
        return;
    }
    if (c->n_up > 0) {
        forward(c, true, c->b_up, c->n_up);
    } else {
        read_down(c);
    }
}

static void on_timer(uv_timer_t *t);

/* Inside an allowed CONNECT tunnel the relay has answered 200 and not yet forwarded anything: when
 * the sandbox's first bytes are a TLS ClientHello, its server_name is decided too (with the CONNECT
 * target, as Decide does for an intent carrying both), so a sandbox cannot CONNECT to an allowed
 * name and then ask the same server for another one. Refused: the tunnel is closed before a byte
 * reaches the destination (a 403 cannot be sent after the 200). */
static void tunnel_refuse(struct conn *c, const char *reason)
{
    if (reason != NULL) {
        memset(&c->decision, 0, sizeof c->decision);
        c->decision.layer = "relay";
        snprintf(c->decision.destination, sizeof c->decision.destination, "%.*s", (int)EGRESS_NAME_MAX,
                 c->target.host);
        snprintf(c->decision.reason, sizeof c->decision.reason, "%s", reason);
    }
    emit(c, EGRESS_EVENT_DECIDED);
    close_conn(c);
}

static void tunnel_progress(struct conn *c)
{
    struct egress_relay *r = c->door->r;
    if (!c->tunnel_bytes && c->n_up > 0) {
        c->tunnel_bytes = true;
        uv_timer_start(&c->timer, on_timer, r->cfg.head_timeout_ms, 0);
    }
    enum egress_proto p = egress_sniff(c->b_up, c->n_up);
    if (p == EGRESS_PROTO_UNKNOWN) {
        return;
    }
    if (p != EGRESS_PROTO_TLS) {
        splice_both(c);
        return;
    }
    struct egress_target t;
    char why[200] = "", reason[300];
    enum egress_parse res = egress_parse_tls_sni(c->b_up, c->n_up, &t, why, sizeof why);
    if (res == EGRESS_PARSE_MORE && c->n_up == r->cfg.buf_size) {
        res = EGRESS_PARSE_BAD;
        snprintf(why, sizeof why, "the ClientHello is longer than the relay's buffer");
    }
    if (res == EGRESS_PARSE_MORE) {
        return;
    }
    if (res == EGRESS_PARSE_BAD) {
        snprintf(reason, sizeof reason,
                 "the sandbox's TLS ClientHello inside its CONNECT tunnel is malformed: %s", why);
        tunnel_refuse(c, reason);
        return;
    }
    if (t.host[0] == '\0') {
        splice_both(c);
        return;
    }
    snprintf(c->tunnel_sni, sizeof c->tunnel_sni, "%s", t.host);
    c->intent.sni = c->tunnel_sni;
    egress_policy_cache_decide(r->policies, c->sb.ns, c->sb.id, &c->intent, &c->decision);
    if (!c->decision.allowed) {
        tunnel_refuse(c, NULL);
        return;
    }
    splice_both(c);
}

static void on_tunnel_ok_written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    c->writing_down = false;
    if (c->st != ST_TUNNEL) {
        return;
    }
    if (status < 0) {
        close_conn(c);
        return;
    }
    uv_timer_start(&c->timer, on_timer, c->door->r->cfg.sniff_ms, 0);
    if (c->n_up > 0) {
        tunnel_progress(c);
    } else {
        read_down(c);
    }
}

/* Dialed: CONNECT gets its 200 and the tunnel's first bytes looked at; the rest splice at once. */
static void start_splice(struct conn *c)
{
    uv_timer_stop(&c->timer);
    c->b_down = mem_alloc(c->door->r->cfg.buf_size);
    if (c->proto != EGRESS_PROTO_CONNECT) {
        splice_both(c);
        return;
    }
    memmove(c->b_up, c->b_up + c->target.head_len, c->n_up - c->target.head_len);
    c->n_up -= c->target.head_len;
    c->st = ST_TUNNEL;
    static const char ok[] = "HTTP/1.1 200 Connection Established\r\n\r\n";
    uv_buf_t b = uv_buf_init((char *)ok, sizeof ok - 1);
    c->w_down.data = c;
    c->writing_down = true;
    if (uv_write(&c->w_down, (uv_stream_t *)&c->down, &b, 1, on_tunnel_ok_written) != 0) {
        c->writing_down = false;
        close_conn(c);
    }
}

static void dial_failed(struct conn *c, const char *what, int uv_status)
{
    char msg[GERR_MSG_SIZE];
    snprintf(msg, sizeof msg, "the relay could not %s %s:%u: %s", what, c->dial_name, c->dial_port,
             uv_status != 0 ? uv_strerror(uv_status) : "timed out");
    LOG_INFO("egress: %s/%s: %s", c->sb.ns, c->sb.name, msg);
    reply_and_close(c, "502 Bad Gateway", msg);
}

static void on_connected(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (c->st != ST_DIAL) {
        return;
    }
    if (status < 0) {
        dial_failed(c, "connect to", status);
        return;
    }
    start_splice(c);
}

static void connect_to(struct conn *c, const struct sockaddr *sa)
{
    int rv = uv_tcp_init(c->door->r->loop, &c->up);
    if (rv == 0) {
        c->up_init = true;
        c->handles++;
        c->up.data = c;
        c->creq.data = c;
        rv = uv_tcp_connect(&c->creq, &c->up, sa, on_connected);
    }
    if (rv != 0) {
        dial_failed(c, "connect to", rv);
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct conn *c = req->data;
    c->gai_pending = false;
    if (c->st != ST_DIAL) {
        uv_freeaddrinfo(res);
        conn_maybe_free(c);
        return;
    }
    if (status < 0) {
        dial_failed(c, "resolve", status);
        return;
    }
    /* The first IPv4 address, else the first: one attempt (docs/egress.md). */
    const struct addrinfo *pick = res;
    for (const struct addrinfo *a = res; a != NULL; a = a->ai_next) {
        if (a->ai_family == AF_INET) {
            pick = a;
            break;
        }
    }
    struct sockaddr_storage ss;
    memcpy(&ss, pick->ai_addr, pick->ai_addrlen);
    uv_freeaddrinfo(res);
    connect_to(c, (const struct sockaddr *)&ss);
}

static void dial(struct conn *c)
{
    c->st = ST_DIAL;
    uv_timer_start(&c->timer, on_timer, c->door->r->cfg.connect_timeout_ms, 0);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (uv_ip4_addr(c->dial_name, (int)c->dial_port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(c->dial_name, (int)c->dial_port, (struct sockaddr_in6 *)&ss) == 0) {
        connect_to(c, (const struct sockaddr *)&ss);
        return;
    }
    char port[8];
    snprintf(port, sizeof port, "%u", c->dial_port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    c->gai.data = c;
    int rv = uv_getaddrinfo(c->door->r->loop, &c->gai, on_resolved, c->dial_name, port, &hints);
    if (rv != 0) {
        dial_failed(c, "resolve", rv);
        return;
    }
    c->gai_pending = true;
}

/* ---- deciding ---------------------------------------------------------------------------------- */

static bool is_ip_literal(const char *s)
{
    unsigned char b[16];
    return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

/* The connection's original destination, unless unknown or the door itself (a connection that
 * reached the door without netfilter redirecting it). */
static void find_orig(struct conn *c)
{
    struct egress_relay *r = c->door->r;
    uv_os_fd_t fd;
    struct sockaddr_storage orig, local;
    int local_len = sizeof local;
    if (c->door->lookup != NULL || uv_fileno((uv_handle_t *)&c->down, &fd) != 0 ||
        r->orig_dst(r->orig_ctx, fd, &orig) != 0 ||
        uv_tcp_getsockname(&c->down, (struct sockaddr *)&local, &local_len) != 0) {
        return;
    }
    unsigned port;
    if (orig.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)&orig, *l = (const void *)&local;
        if (local.ss_family == AF_INET && a->sin_addr.s_addr == l->sin_addr.s_addr &&
            a->sin_port == l->sin_port) {
            return;
        }
        uv_ip4_name(a, c->orig_ip, sizeof c->orig_ip);
        port = ntohs(a->sin_port);
    } else if (orig.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)&orig, *l = (const void *)&local;
        if (local.ss_family == AF_INET6 && memcmp(&a->sin6_addr, &l->sin6_addr, 16) == 0 &&
            a->sin6_port == l->sin6_port) {
            return;
        }
        uv_ip6_name(a, c->orig_ip, sizeof c->orig_ip);
        port = ntohs(a->sin6_port);
    } else {
        return;
    }
    c->orig_port = port;
    c->have_orig = port != 0;
}

static void dns_tcp_start(struct conn *c);

/* The head is complete (or the connection is raw TCP): build the intent, decide, act. */
static void decide(struct conn *c)
{
    struct egress_relay *r = c->door->r;
    uv_read_stop((uv_stream_t *)&c->down);
    uv_timer_stop(&c->timer);
    find_orig(c);
    struct egress_intent *in = &c->intent;
    struct egress_target *t = &c->target;
    memset(in, 0, sizeof *in);
    in->ip = c->have_orig ? c->orig_ip : NULL;
    switch (c->proto) {
    case EGRESS_PROTO_CONNECT:
        in->transport = GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_HTTP_CONNECT;
        if (is_ip_literal(t->host)) {
            in->ip = t->host;
        } else {
            in->host = t->host;
        }
        in->port = t->port;
        snprintf(c->dial_name, sizeof c->dial_name, "%s", t->host);
        break;
    case EGRESS_PROTO_HTTP:
        in->transport = GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_HTTP;
        if (is_ip_literal(t->host)) {
            /* The address in the request line is what is dialed, so it is what is decided: a Host
             * header naming an allowed site must not carry a request to another address (the
             * rule looks at the address only when no name is given). */
            in->ip = t->host;
        } else {
            if (t->host[0] != '\0') {
                in->host = t->host;
            }
            in->http_host = t->http_host[0] != '\0' ? t->http_host : NULL;
        }
        in->port = t->port;
        snprintf(c->dial_name, sizeof c->dial_name, "%s", t->host[0] != '\0' ? t->host : t->http_host);
        break;
    case EGRESS_PROTO_TLS:
        in->transport = GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_TLS;
        in->sni = t->host[0] != '\0' ? t->host : NULL;
        in->port = c->have_orig ? c->orig_port : 443;
        snprintf(c->dial_name, sizeof c->dial_name, "%s", t->host[0] != '\0' ? t->host : c->orig_ip);
        break;
    default:
        in->transport = GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_TCP;
        if (c->door->lookup != NULL) {
            refuse(c,
                   "a shared door (kubernetes pods) takes CONNECT, plain HTTP and TLS only: raw TCP has no "
                   "destination the relay can know");
            return;
        }
        if (!c->have_orig) {
            refuse(c,
                   "raw TCP is decided by the connection's original destination, and the relay does not know "
                   "it (the connection was not redirected to the relay by netfilter)");
            return;
        }
        if (c->orig_port == 53 && c->door->udp_init) {
            dns_tcp_start(c); /* DNS over TCP: answered like the door's UDP questions */
            return;
        }
        in->port = c->orig_port;
        snprintf(c->dial_name, sizeof c->dial_name, "%s", c->orig_ip);
        break;
    }
    c->dial_port = in->port;
    egress_policy_cache_decide(r->policies, c->sb.ns, c->sb.id, in, &c->decision);
    emit(c, EGRESS_EVENT_DECIDED);
    if (!c->decision.allowed) {
        reply_and_close(c, "403 Forbidden", c->decision.reason);
        return;
    }
    c->allowed = true;
    dial(c);
}

/* More head bytes arrived: pick the adapter, parse, decide when complete. */
static void head_progress(struct conn *c)
{
    struct egress_relay *r = c->door->r;
    if (!c->got_bytes) {
        c->got_bytes = true;
        uv_timer_start(&c->timer, on_timer, r->cfg.head_timeout_ms, 0);
    }
    c->proto = egress_sniff(c->b_up, c->n_up);
    char why[200] = "";
    enum egress_parse res;
    switch (c->proto) {
    case EGRESS_PROTO_UNKNOWN:
        return;
    case EGRESS_PROTO_RAW:
        decide(c);
        return;
    case EGRESS_PROTO_CONNECT:
        res = egress_parse_connect(c->b_up, c->n_up, &c->target, why, sizeof why);
        break;
    case EGRESS_PROTO_HTTP:
        res = egress_parse_http(c->b_up, c->n_up, &c->target, why, sizeof why);
        break;
    default:
        res = egress_parse_tls_sni(c->b_up, c->n_up, &c->target, why, sizeof why);
        break;
    }
    if (res == EGRESS_PARSE_MORE && c->n_up == r->cfg.buf_size) {
        res = EGRESS_PARSE_BAD;
        snprintf(why, sizeof why, "the head is longer than the relay's buffer");
    }
    if (res == EGRESS_PARSE_MORE) {
        return;
    }
    if (res == EGRESS_PARSE_BAD) {
        char reason[300];
        static const char *const names[] = {"", "CONNECT request", "HTTP request", "TLS ClientHello", ""};
        snprintf(reason, sizeof reason, "the sandbox's %s is malformed: %s", names[c->proto], why);
        c->intent.transport =
            c->proto == EGRESS_PROTO_CONNECT ? GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_HTTP_CONNECT
            : c->proto == EGRESS_PROTO_HTTP  ? GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_HTTP
                                             : GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_TLS;
        refuse(c, reason);
        return;
    }
    decide(c);
}

/* ---- DNS over TCP ------------------------------------------------------------------------------ */

/* A connection redirected from port 53 of a door with a DNS responder is a resolver speaking DNS
 * over TCP (RFC 7766): each length-prefixed question is decided and answered as the door's UDP
 * questions are (the same intent: transport DNS, the name, any port), one at a time, in order;
 * several may be sent on one connection. A malformed message, a length over EGRESS_DNS_MAX, or
 * head_timeout_ms without a complete question closes the connection. */
static void dns_tcp_progress(struct conn *c);

static void on_dns_tcp_written(uv_write_t *w, int status)
{
    struct conn *c = w->data;
    c->writing_down = false;
    mem_free(c->reply);
    c->reply = NULL;
    if (c->st != ST_DNS) {
        return;
    }
    if (status < 0) {
        close_conn(c);
        return;
    }
    c->dq_busy = false;
    dns_tcp_progress(c);
}

/* Answer the question in c->dq with @rcode and @n addresses, framed; then the next question. */
static void dns_tcp_answer(struct conn *c, unsigned rcode, const uint8_t (*addrs)[16], size_t n,
                           size_t addr_len)
{
    uint8_t *out = mem_alloc(2 + EGRESS_DNS_MAX);
    size_t len =
        egress_dns_answer(c->dq_msg, &c->dq, rcode, addrs, n, addr_len, DNS_TTL_S, out + 2, EGRESS_DNS_MAX);
    if (len == 0) {
        mem_free(out);
        close_conn(c);
        return;
    }
    out[0] = (uint8_t)(len >> 8);
    out[1] = (uint8_t)len;
    c->reply = (char *)out;
    uv_buf_t b = uv_buf_init(c->reply, (unsigned)(len + 2));
    c->w_down.data = c;
    c->writing_down = true;
    if (uv_write(&c->w_down, (uv_stream_t *)&c->down, &b, 1, on_dns_tcp_written) != 0) {
        c->writing_down = false;
        close_conn(c);
    }
}

static void on_dns_tcp_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct conn *c = req->data;
    struct egress_door *d = c->door;
    c->gai_pending = false;
    d->dns_pending--;
    if (c->st != ST_DNS) {
        if (res != NULL) {
            uv_freeaddrinfo(res);
        }
        conn_maybe_free(c);
        return;
    }
    uint8_t addrs[DNS_ANSWERS_MAX][16];
    size_t n = 0, addr_len = c->dq.qtype == EGRESS_DNS_A ? 4 : 16;
    for (const struct addrinfo *a = status == 0 ? res : NULL; a != NULL && n < DNS_ANSWERS_MAX;
         a = a->ai_next) {
        if (a->ai_family == AF_INET && addr_len == 4) {
            memcpy(addrs[n++], &((const struct sockaddr_in *)a->ai_addr)->sin_addr, 4);
        } else if (a->ai_family == AF_INET6 && addr_len == 16) {
            memcpy(addrs[n++], &((const struct sockaddr_in6 *)a->ai_addr)->sin6_addr, 16);
        }
    }
    if (res != NULL) {
        uv_freeaddrinfo(res);
    }
    unsigned rcode = status == 0 || status == UV_EAI_NODATA || status == UV_EAI_ADDRFAMILY
                         ? EGRESS_DNS_NOERROR
                     : status == UV_EAI_NONAME ? EGRESS_DNS_NXDOMAIN
                                               : EGRESS_DNS_SERVFAIL;
    dns_tcp_answer(c, rcode, (const uint8_t(*)[16])addrs, n, addr_len);
}

static void dns_tcp_progress(struct conn *c)
{
    struct egress_door *d = c->door;
    struct egress_relay *r = d->r;
    if (c->dq_busy || c->st != ST_DNS) {
        return;
    }
    size_t n;
    int f = egress_dns_tcp_frame(c->b_up, c->n_up, &n);
    if (f < 0 || (f == 0 && c->n_up == r->cfg.buf_size)) {
        close_conn(c);
        return;
    }
    if (f == 0) {
        /* Reading may be on already (more bytes of this question are awaited): that is fine. */
        int rv = uv_read_start((uv_stream_t *)&c->down, alloc_down, on_down_read);
        if (rv != 0 && rv != UV_EALREADY) {
            close_conn(c);
        }
        return;
    }
    memcpy(c->dq_msg, c->b_up + 2, n);
    c->n_up -= 2 + n;
    memmove(c->b_up, c->b_up + 2 + n, c->n_up);
    if (egress_dns_parse_query(c->dq_msg, n, &c->dq, NULL, 0) != 0) {
        close_conn(c);
        return;
    }
    uv_read_stop((uv_stream_t *)&c->down);
    uv_timer_start(&c->timer, on_timer, r->cfg.head_timeout_ms, 0);
    c->dq_busy = true;
    struct egress_intent in = {.transport = GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_DNS,
                               .host = c->dq.name};
    struct egress_decision dec;
    egress_policy_cache_decide(r->policies, c->sb.ns, c->sb.id, &in, &dec);
    emit_for(d, &c->sb, EGRESS_EVENT_DECIDED, &in, &dec, 0, 0);
    if (!dec.allowed) {
        dns_tcp_answer(c, EGRESS_DNS_REFUSED, NULL, 0, 4);
        return;
    }
    if ((c->dq.qtype != EGRESS_DNS_A && c->dq.qtype != EGRESS_DNS_AAAA) ||
        d->dns_pending >= DNS_PENDING_MAX) {
        dns_tcp_answer(c,
                       c->dq.qtype == EGRESS_DNS_A || c->dq.qtype == EGRESS_DNS_AAAA ? EGRESS_DNS_SERVFAIL
                                                                                     : EGRESS_DNS_NOERROR,
                       NULL, 0, 4);
        return;
    }
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = c->dq.qtype == EGRESS_DNS_A ? AF_INET : AF_INET6;
    hints.ai_socktype = SOCK_STREAM;
    c->gai.data = c;
    if (uv_getaddrinfo(r->loop, &c->gai, on_dns_tcp_resolved, c->dq.name, NULL, &hints) != 0) {
        dns_tcp_answer(c, EGRESS_DNS_SERVFAIL, NULL, 0, 4);
        return;
    }
    c->gai_pending = true;
    d->dns_pending++;
}

static void dns_tcp_start(struct conn *c)
{
    c->st = ST_DNS;
    c->proto = EGRESS_PROTO_RAW;
    uv_timer_start(&c->timer, on_timer, c->door->r->cfg.head_timeout_ms, 0);
    dns_tcp_progress(c);
}

static void on_down_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    struct conn *c = s->data;
    if (nread == 0) {
        return;
    }
    if (c->st == ST_HEAD) {
        if (nread < 0) {
            close_conn(c); /* gone before saying where to: nothing to decide */
            return;
        }
        c->n_up += (size_t)nread;
        head_progress(c);
        return;
    }
    if (c->st == ST_TUNNEL) {
        if (nread < 0) {
            close_conn(c);
            return;
        }
        c->n_up += (size_t)nread;
        tunnel_progress(c);
        return;
    }
    if (c->st == ST_DNS) {
        if (nread < 0) {
            close_conn(c); /* the resolver is done (or gone): nothing more to answer */
            return;
        }
        c->n_up += (size_t)nread;
        dns_tcp_progress(c);
        return;
    }
    if (c->st != ST_SPLICE) {
        return;
    }
    if (nread == UV_EOF) {
        half_close(c, true);
        return;
    }
    if (nread < 0) {
        close_conn(c);
        return;
    }
    uv_read_stop(s);
    c->n_up = (size_t)nread;
    forward(c, true, c->b_up, c->n_up);
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->st == ST_DNS) {
        close_conn(c); /* idle, or a question not complete, for head_timeout_ms */
        return;
    }
    struct egress_relay *r = c->door->r;
    char reason[200];
    if (c->st == ST_HEAD && !c->got_bytes) {
        c->proto = EGRESS_PROTO_RAW; /* a protocol where the server speaks first */
        decide(c);
    } else if (c->st == ST_HEAD) {
        snprintf(reason, sizeof reason, "the sandbox sent no complete head within %u ms",
                 r->cfg.head_timeout_ms);
        refuse(c, reason);
    } else if (c->st == ST_DIAL) {
        dial_failed(c, "reach", 0);
    } else if (c->st == ST_TUNNEL && !c->tunnel_bytes) {
        /* Nothing sent yet: maybe a protocol where the server speaks first. Its bytes flow to the
         * sandbox from now on, but the sandbox's own first bytes are still looked at before any is
         * forwarded (a ClientHello sent late is decided like one sent at once). */
        c->tunnel_up = true;
        read_up(c);
    } else if (c->st == ST_TUNNEL) {
        snprintf(reason, sizeof reason, "the sandbox sent no complete ClientHello in its tunnel within %u ms",
                 r->cfg.head_timeout_ms);
        tunnel_refuse(c, reason);
    }
}

/* ---- shared doors ------------------------------------------------------------------------------ */

/* The sandbox behind @peer on shared door @d: true with @sb filled (strings in @buf, of
 * EGRESS_SOURCE_BUF bytes), or false with @sb empty and @dec the refusal (layer "relay"). */
static bool attribute(struct egress_door *d, const struct sockaddr *peer, struct egress_sandbox *sb,
                      char *buf, struct egress_decision *dec)
{
    memset(sb, 0, sizeof *sb);
    if (peer != NULL && d->lookup(d->lookup_ctx, peer, sb, buf, EGRESS_SOURCE_BUF) == 0 && sb->ns != NULL &&
        sb->name != NULL && sb->ns[0] != '\0' && sb->name[0] != '\0') {
        if (sb->owner == NULL) {
            sb->owner = "";
        }
        return true;
    }
    char ip[INET6_ADDRSTRLEN] = "?";
    if (peer != NULL && peer->sa_family == AF_INET) {
        uv_ip4_name((const struct sockaddr_in *)peer, ip, sizeof ip);
    } else if (peer != NULL && peer->sa_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)peer, ip, sizeof ip);
    }
    sb->ns = sb->name = sb->owner = "";
    sb->id = NULL;
    memset(dec, 0, sizeof *dec);
    dec->layer = "relay";
    snprintf(dec->destination, sizeof dec->destination, "%s", ip);
    snprintf(dec->reason, sizeof dec->reason,
             "the source address %s is not a sandbox of this gateway (a shared door serves only the pods the "
             "kubernetes driver knows)",
             ip);
    return false;
}

/* A shared door's count for @sb (made on first use). */
static struct source *source_of(struct egress_door *d, const struct egress_sandbox *sb)
{
    char key[EGRESS_SOURCE_BUF];
    snprintf(key, sizeof key, "%s/%s", sb->ns, sb->name);
    struct queue *q;
    QUEUE_FOREACH (q, &d->sources) {
        struct source *s = QUEUE_DATA(q, struct source, node);
        if (strcmp(s->key, key) == 0) {
            return s;
        }
    }
    size_t n = strlen(key) + 1;
    struct source *s = mem_zalloc(sizeof *s + n);
    memcpy(s->key, key, n);
    queue_insert_tail(&d->sources, &s->node);
    return s;
}

/* ---- DNS ---------------------------------------------------------------------------------------- */

struct dns_req {
    struct egress_door *door;
    uv_getaddrinfo_t gai;
    struct sockaddr_storage peer;
    struct egress_dns_query q;
    uint8_t query[EGRESS_DNS_MAX];
};

struct dns_send {
    uv_udp_send_t req;
    struct egress_door *door;
    uint8_t buf[EGRESS_DNS_MAX];
};

static void on_dns_sent(uv_udp_send_t *req, int status)
{
    (void)status; /* a lost answer is the resolver's to retry */
    struct dns_send *ds = req->data;
    struct egress_door *d = ds->door;
    mem_free(ds);
    d->dns_pending--;
    door_maybe_free(d);
}

/* Answer @q (of @query) to @peer; @addrs as answers of the question's type. */
static void dns_reply(struct egress_door *d, const struct sockaddr *peer, const uint8_t *query,
                      const struct egress_dns_query *q, unsigned rcode, const uint8_t (*addrs)[16], size_t n,
                      size_t addr_len)
{
    if (d->closing) {
        return;
    }
    struct dns_send *ds = mem_alloc(sizeof *ds);
    size_t len = egress_dns_answer(query, q, rcode, addrs, n, addr_len, DNS_TTL_S, ds->buf, sizeof ds->buf);
    if (len == 0) {
        mem_free(ds);
        return;
    }
    ds->door = d;
    ds->req.data = ds;
    uv_buf_t b = uv_buf_init((char *)ds->buf, (unsigned)len);
    if (uv_udp_send(&ds->req, &d->udp, &b, 1, peer, on_dns_sent) != 0) {
        mem_free(ds);
        return;
    }
    d->dns_pending++;
}

static void on_dns_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct dns_req *dr = req->data;
    struct egress_door *d = dr->door;
    uint8_t addrs[DNS_ANSWERS_MAX][16];
    size_t n = 0, addr_len = dr->q.qtype == EGRESS_DNS_A ? 4 : 16;
    for (const struct addrinfo *a = status == 0 ? res : NULL; a != NULL && n < DNS_ANSWERS_MAX;
         a = a->ai_next) {
        if (a->ai_family == AF_INET && addr_len == 4) {
            memcpy(addrs[n++], &((const struct sockaddr_in *)a->ai_addr)->sin_addr, 4);
        } else if (a->ai_family == AF_INET6 && addr_len == 16) {
            memcpy(addrs[n++], &((const struct sockaddr_in6 *)a->ai_addr)->sin6_addr, 16);
        }
    }
    if (res != NULL) {
        uv_freeaddrinfo(res);
    }
    unsigned rcode = status == 0 || status == UV_EAI_NODATA || status == UV_EAI_ADDRFAMILY
                         ? EGRESS_DNS_NOERROR
                     : status == UV_EAI_NONAME ? EGRESS_DNS_NXDOMAIN
                                               : EGRESS_DNS_SERVFAIL;
    dns_reply(d, (const struct sockaddr *)&dr->peer, dr->query, &dr->q, rcode, (const uint8_t(*)[16])addrs, n,
              addr_len);
    mem_free(dr);
    d->dns_pending--;
    door_maybe_free(d);
}

static void dns_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct egress_door *d = h->data;
    *buf = uv_buf_init((char *)d->dns_buf, sizeof d->dns_buf);
}

/* A question from the sandbox: decided like a connection (transport DNS, the name, port 0: any
 * port); refused is REFUSED, allowed is resolved by the replica and answered (A and AAAA; any
 * other type is answered with no records). Malformed datagrams are dropped. */
static void on_dns_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *peer,
                        unsigned flags)
{
    (void)buf;
    struct egress_door *d = h->data;
    struct egress_relay *r = d->r;
    struct egress_dns_query q;
    if (nread <= 0 || peer == NULL || (flags & UV_UDP_PARTIAL) != 0 || d->closing ||
        egress_dns_parse_query(d->dns_buf, (size_t)nread, &q, NULL, 0) != 0) {
        return;
    }
    struct egress_intent in = {.transport = GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_DNS,
                               .host = q.name};
    struct egress_decision dec;
    struct egress_sandbox sb = d->sb;
    char sb_buf[EGRESS_SOURCE_BUF];
    if (d->lookup != NULL && !attribute(d, peer, &sb, sb_buf, &dec)) {
        emit_for(d, &sb, EGRESS_EVENT_DECIDED, &in, &dec, 0, 0);
        dns_reply(d, peer, d->dns_buf, &q, EGRESS_DNS_REFUSED, NULL, 0, 4);
        return;
    }
    egress_policy_cache_decide(r->policies, sb.ns, sb.id, &in, &dec);
    emit_for(d, &sb, EGRESS_EVENT_DECIDED, &in, &dec, 0, 0);
    if (!dec.allowed) {
        dns_reply(d, peer, d->dns_buf, &q, EGRESS_DNS_REFUSED, NULL, 0, 4);
        return;
    }
    if ((q.qtype != EGRESS_DNS_A && q.qtype != EGRESS_DNS_AAAA) || d->dns_pending >= DNS_PENDING_MAX) {
        dns_reply(d, peer, d->dns_buf, &q,
                  q.qtype == EGRESS_DNS_A || q.qtype == EGRESS_DNS_AAAA ? EGRESS_DNS_SERVFAIL
                                                                        : EGRESS_DNS_NOERROR,
                  NULL, 0, 4);
        return;
    }
    struct dns_req *dr = mem_alloc(sizeof *dr);
    dr->door = d;
    dr->q = q;
    memcpy(dr->query, d->dns_buf, (size_t)nread);
    memcpy(&dr->peer, peer,
           peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    dr->gai.data = dr;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = q.qtype == EGRESS_DNS_A ? AF_INET : AF_INET6;
    hints.ai_socktype = SOCK_STREAM;
    if (uv_getaddrinfo(r->loop, &dr->gai, on_dns_resolved, q.name, NULL, &hints) != 0) {
        dns_reply(d, peer, d->dns_buf, &q, EGRESS_DNS_SERVFAIL, NULL, 0, 4);
        mem_free(dr);
        return;
    }
    d->dns_pending++;
}

static void on_udp_closed(uv_handle_t *h)
{
    struct egress_door *d = h->data;
    d->udp_closed = true;
    door_maybe_free(d);
}

/* The door's UDP socket on @addr, SO_REUSEPORT like its listener when asked. */
static int open_dns(struct egress_door *d, const struct sockaddr *addr, bool reuse_port, char *errmsg)
{
    int rv = uv_udp_init(d->r->loop, &d->udp);
    if (rv != 0) {
        return uverr_to_gerr(rv, errmsg);
    }
    d->udp_init = true;
    d->udp.data = d;
    if (reuse_port) {
        int fd = socket(addr->sa_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;
        socklen_t len =
            addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
            bind(fd, addr, len) != 0) {
            int e = errno;
            if (fd >= 0) {
                close(fd);
            }
            gerr_set(errmsg, "bind udp: %s", strerror(e));
            return gerr_from_errno(e);
        }
        if ((rv = uv_udp_open(&d->udp, fd)) != 0) {
            close(fd);
            return uverr_to_gerr(rv, errmsg);
        }
    } else if ((rv = uv_udp_bind(&d->udp, addr, 0)) != 0) {
        return uverr_to_gerr(rv, errmsg);
    }
    if ((rv = uv_udp_recv_start(&d->udp, dns_alloc, on_dns_recv)) != 0) {
        return uverr_to_gerr(rv, errmsg);
    }
    return 0;
}

/* ---- accepting --------------------------------------------------------------------------------- */

static void on_accept(uv_stream_t *server, int status)
{
    struct egress_door *d = server->data;
    struct egress_relay *r = d->r;
    if (status < 0 || d->closing) {
        LOG_WARN("egress: %s/%s: accept: %s", d->lookup != NULL ? "(shared)" : d->sb.ns, d->sb.name,
                 status < 0 ? uv_strerror(status) : "door closing");
        return;
    }
    struct conn *c = mem_zalloc(sizeof *c);
    c->door = d;
    queue_insert_tail(&d->conns, &c->node);
    atomic_fetch_add(&r->open, 1);
    uv_tcp_init(r->loop, &c->down);
    uv_timer_init(r->loop, &c->timer);
    c->handles = 2;
    c->down.data = c;
    c->timer.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->down) != 0) {
        close_conn(c);
        return;
    }
    atomic_fetch_add(&r->accepted, 1);
    c->b_up = mem_alloc(r->cfg.buf_size);
    c->sb = d->sb;
    struct source *src = NULL;
    unsigned mine = d->admitted; /* the sandbox's connections on this door */
    if (d->lookup != NULL) {
        struct sockaddr_storage peer;
        int len = sizeof peer;
        const struct sockaddr *pa = uv_tcp_getpeername(&c->down, (struct sockaddr *)&peer, &len) == 0
                                        ? (struct sockaddr *)&peer
                                        : NULL;
        if (!attribute(d, pa, &c->sb, c->sb_buf, &c->decision)) {
            emit(c, EGRESS_EVENT_DECIDED);
            close_conn(c);
            return;
        }
        src = source_of(d, &c->sb);
        mine = src->admitted;
    }
    if (mine >= r->cfg.max_conns_per_sandbox || r->admitted >= r->cfg.max_conns) {
        char reason[200];
        atomic_fetch_add(&r->refused_limit, 1);
        snprintf(reason, sizeof reason, "the %s holds %u connections, its limit",
                 mine >= r->cfg.max_conns_per_sandbox ? "sandbox" : "relay",
                 mine >= r->cfg.max_conns_per_sandbox ? mine : r->admitted);
        if (src != NULL && src->admitted == 0) {
            queue_remove(&src->node);
            mem_free(src);
        }
        refuse(c, reason); /* no adapter picked yet: closed without a reply */
        return;
    }
    c->admitted = true;
    d->admitted++;
    r->admitted++;
    if (src != NULL) {
        c->src = src;
        src->admitted++;
    }
    uv_tcp_nodelay(&c->down, 1);
    uv_timer_start(&c->timer, on_timer, r->cfg.sniff_ms, 0);
    read_down(c);
}

/* A listening socket bound with SO_REUSEPORT, handed to libuv (which has no such flag before 1.49). */
static int bind_reuse_port(uv_tcp_t *t, const struct sockaddr *addr, char *errmsg)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), one = 1;
    socklen_t len = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 || bind(fd, addr, len) != 0) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        gerr_set(errmsg, "bind: %s", strerror(e));
        return gerr_from_errno(e);
    }
    int rv = uv_tcp_open(t, fd);
    if (rv != 0) {
        close(fd);
        return uverr_to_gerr(rv, errmsg);
    }
    return 0;
}

static int open_door(struct egress_relay *r, const struct egress_sandbox *sb, egress_source_lookup_fn lookup,
                     void *lookup_ctx, const struct sockaddr *addr, unsigned flags, int *port,
                     struct egress_door **out, char *errmsg)
{
    struct egress_door *d = mem_zalloc(sizeof *d);
    d->r = r;
    d->sb.ns = mem_strdup(sb->ns);
    d->sb.name = mem_strdup(sb->name);
    d->sb.owner = mem_strdup(sb->owner != NULL ? sb->owner : "");
    d->sb.id = sb->id != NULL ? mem_strdup(sb->id) : NULL;
    d->lookup = lookup;
    d->lookup_ctx = lookup_ctx;
    queue_init(&d->sources);
    queue_init(&d->conns);
    queue_insert_tail(&r->doors, &d->node);
    uv_tcp_init(r->loop, &d->listener);
    d->listener.data = d;
    int rv = 0, e = 0;
    bool reuse_port = (flags & EGRESS_DOOR_REUSE_PORT) != 0;
    if (reuse_port) {
        e = bind_reuse_port(&d->listener, addr, errmsg);
    } else {
        rv = uv_tcp_bind(&d->listener, addr, 0);
    }
    if (e == 0 && rv == 0) {
        rv = uv_listen((uv_stream_t *)&d->listener, 511, on_accept);
    }
    if (rv == 0 && port != NULL) {
        struct sockaddr_storage ss;
        int len = sizeof ss;
        rv = uv_tcp_getsockname(&d->listener, (struct sockaddr *)&ss, &len);
        *port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    if (e == 0 && rv == 0 && (flags & EGRESS_DOOR_DNS) != 0) {
        /* The DNS socket on the port the listener got (the same when it was given). */
        struct sockaddr_storage ss;
        int len = sizeof ss;
        rv = uv_tcp_getsockname(&d->listener, (struct sockaddr *)&ss, &len);
        if (rv == 0) {
            e = open_dns(d, (const struct sockaddr *)&ss, reuse_port, errmsg);
        }
    }
    if (e != 0 || rv != 0) {
        e = e != 0 ? e : uverr_to_gerr(rv, errmsg);
        if (lookup != NULL) {
            gerr_wrap(errmsg, "shared egress door");
        } else {
            gerr_wrap(errmsg, "egress door for %s/%s", sb->ns, sb->name);
        }
        egress_relay_close_door(d); /* freed on a later iteration */
        return e;
    }
    *out = d;
    return 0;
}

int egress_relay_open_door(struct egress_relay *r, const struct egress_sandbox *sb,
                           const struct sockaddr *addr, unsigned flags, int *port, struct egress_door **out,
                           char *errmsg)
{
    return open_door(r, sb, NULL, NULL, addr, flags, port, out, errmsg);
}

int egress_relay_open_shared_door(struct egress_relay *r, const struct sockaddr *addr, unsigned flags,
                                  egress_source_lookup_fn lookup, void *lookup_ctx, int *port,
                                  struct egress_door **out, char *errmsg)
{
    struct egress_sandbox none = {"", "", "", NULL};
    return open_door(r, &none, lookup, lookup_ctx, addr, flags, port, out, errmsg);
}

static void on_listener_closed(uv_handle_t *h)
{
    struct egress_door *d = h->data;
    d->listener_closed = true;
    door_maybe_free(d);
}

void egress_relay_close_door(struct egress_door *d)
{
    if (d->closing) {
        return;
    }
    d->closing = true;
    uv_close((uv_handle_t *)&d->listener, on_listener_closed);
    if (d->udp_init) {
        uv_close((uv_handle_t *)&d->udp, on_udp_closed);
    }
    struct queue *q;
    QUEUE_FOREACH (q, &d->conns) {
        close_conn(QUEUE_DATA(q, struct conn, node));
    }
}

static void on_keep_closed(uv_handle_t *h)
{
    relay_release(h->data);
}

void egress_relay_close(struct egress_relay *r, egress_relay_close_cb cb, void *ctx)
{
    r->closing = true;
    r->close_cb = cb;
    r->close_ctx = ctx;
    r->pending = 1;
    struct queue *q;
    QUEUE_FOREACH (q, &r->doors) {
        struct egress_door *d = QUEUE_DATA(q, struct egress_door, node);
        r->pending++;
        egress_relay_close_door(d);
    }
    uv_close((uv_handle_t *)&r->keep, on_keep_closed);
}
