/* The peer TLS relay over real sockets on 127.0.0.1 with certificates from a test CA. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "lib/rand.h"
#include "raft/peertls.h"
#include "raft/pki.h"

static char errmsg[GERR_MSG_SIZE];

/* ---- An echo server (TCP or abstract unix), one thread per connection. */

struct echo {
    int fd;
    char address[128];
    pthread_t thread;
};

static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[8192];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        ssize_t off = 0;
        while (off < n) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w <= 0) {
                goto out;
            }
            off += w;
        }
    }
out:
    close(fd);
    return NULL;
}

static void *echo_accept(void *arg)
{
    struct echo *e = arg;
    for (;;) {
        int fd = accept(e->fd, NULL, NULL);
        if (fd < 0) {
            return NULL; /* listener shut down */
        }
        pthread_t t;
        pthread_create(&t, NULL, echo_conn, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
}

static void echo_start(struct echo *e, bool abstract)
{
    if (abstract) {
        struct sockaddr_un su = {.sun_family = AF_UNIX};
        snprintf(e->address, sizeof e->address, "@gantry-test-echo-%d", (int)getpid());
        size_t n = strlen(e->address);
        memcpy(su.sun_path, e->address, n);
        su.sun_path[0] = '\0';
        e->fd = socket(AF_UNIX, SOCK_STREAM, 0);
        assert_int_equal(
            bind(e->fd, (struct sockaddr *)&su, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)), 0);
    } else {
        struct sockaddr_in sa = {.sin_family = AF_INET};
        socklen_t len = sizeof sa;
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        e->fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_int_equal(bind(e->fd, (struct sockaddr *)&sa, sizeof sa), 0);
        getsockname(e->fd, (struct sockaddr *)&sa, &len);
        snprintf(e->address, sizeof e->address, "127.0.0.1:%u", ntohs(sa.sin_port));
    }
    assert_int_equal(listen(e->fd, 16), 0);
    pthread_create(&e->thread, NULL, echo_accept, e);
}

static void echo_stop(struct echo *e)
{
    shutdown(e->fd, SHUT_RDWR);
    close(e->fd);
    pthread_join(e->thread, NULL);
}

/* ---- Certificates */

struct pem {
    char *ca, *ca_key, *cert, *key;
};

static void make_ca(struct pem *p, const char *name)
{
    assert_int_equal(pki_ca_create(name, &p->ca_key, &p->ca, errmsg), 0);
}

static void make_cert(struct pem *p, const struct pem *ca, const char *cn)
{
    const char *ips[] = {"127.0.0.1"};
    struct pki_subject s = {.common_name = cn, .ip_sans = ips, .n_ip_sans = 1};
    p->ca = mem_strdup(ca->ca);
    p->ca_key = NULL;
    assert_int_equal(pki_issue(ca->ca_key, ca->ca, &s, 0, &p->key, &p->cert, errmsg), 0);
}

static void pem_free(struct pem *p)
{
    mem_free(p->ca);
    mem_free(p->ca_key);
    mem_free(p->cert);
    mem_free(p->key);
}

struct world {
    struct pem ca, foreign_ca, a, b, foreign;
    struct echo echo;
    struct peertls *server; /* listens, relays to the echo server */
    struct peertls *client; /* dial-only, same CA */
};

static struct peertls *start(const struct pem *p, const char *listen, const char *backend, unsigned hs_ms)
{
    struct peertls_config cfg = {.ca_pem = p->ca,
                                 .cert_pem = p->cert,
                                 .key_pem = p->key,
                                 .listen_address = listen,
                                 .backend_address = backend,
                                 .handshake_timeout_ms = hs_ms};
    struct peertls *t = NULL;
    int rv = peertls_start(&cfg, &t, errmsg);
    if (rv != 0) {
        fail_msg("peertls_start: %s", errmsg);
    }
    return t;
}

static int setup_world(void **state, bool abstract)
{
    struct world *w = mem_zalloc(sizeof *w);
    make_ca(&w->ca, "test-cluster");
    make_ca(&w->foreign_ca, "other-cluster");
    make_cert(&w->a, &w->ca, "replica-a");
    make_cert(&w->b, &w->ca, "replica-b");
    make_cert(&w->foreign, &w->foreign_ca, "intruder");
    echo_start(&w->echo, abstract);
    w->server = start(&w->a, "127.0.0.1:0", w->echo.address, 400);
    w->client = start(&w->b, NULL, NULL, 0);
    *state = w;
    return 0;
}

static int setup_tcp(void **state)
{
    return setup_world(state, false);
}

static int setup_abstract(void **state)
{
    return setup_world(state, true);
}

static int teardown_world(void **state)
{
    struct world *w = *state;
    peertls_stop(w->client);
    peertls_stop(w->server);
    echo_stop(&w->echo);
    pem_free(&w->ca);
    pem_free(&w->foreign_ca);
    pem_free(&w->a);
    pem_free(&w->b);
    pem_free(&w->foreign);
    mem_free(w);
    return 0;
}

static void read_exact(int fd, void *p, size_t n)
{
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        assert_true(r > 0);
        c += r;
        n -= (size_t)r;
    }
}

static void write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        assert_true(w > 0);
        c += w;
        n -= (size_t)w;
    }
}

/* Poll a stats field until it reaches @want or 5 s pass. */
static uint64_t wait_stat(struct peertls *t, size_t offset, uint64_t want)
{
    uint64_t deadline = clock_mono_ms(clock_system()) + 5000;
    struct peertls_stats s;
    for (;;) {
        peertls_get_stats(t, &s);
        uint64_t v = *(uint64_t *)((char *)&s + offset);
        if (v >= want || clock_mono_ms(clock_system()) > deadline) {
            return v;
        }
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
}

static void echo_through_the_relay(void **state)
{
    struct world *w = *state;
    int fd;
    assert_int_equal(peertls_dial(w->client, peertls_listen_address(w->server), 5000, &fd, errmsg), 0);
    write_all(fd, "hello, peer", 11);
    char buf[16] = {0};
    read_exact(fd, buf, 11);
    assert_string_equal(buf, "hello, peer");
    close(fd);
    assert_int_equal(wait_stat(w->server, offsetof(struct peertls_stats, accepted), 1), 1);
}

struct bulk {
    int fd;
    uint8_t *data;
    size_t n;
};

static void *bulk_writer(void *arg)
{
    struct bulk *b = arg;
    write_all(b->fd, b->data, b->n);
    return NULL;
}

static void four_mib_both_ways_at_once(void **state)
{
    struct world *w = *state;
    struct bulk b = {.n = 4u << 20};
    b.data = mem_alloc(b.n);
    rand_bytes(b.data, b.n);
    assert_int_equal(peertls_dial(w->client, peertls_listen_address(w->server), 5000, &b.fd, errmsg), 0);
    pthread_t t;
    pthread_create(&t, NULL, bulk_writer, &b);
    uint8_t *back = mem_alloc(b.n);
    read_exact(b.fd, back, b.n);
    pthread_join(t, NULL);
    assert_memory_equal(back, b.data, b.n);
    close(b.fd);
    mem_free(back);
    mem_free(b.data);
}

static void foreign_certificate_is_refused_both_ways(void **state)
{
    struct world *w = *state;
    int fd;
    struct peertls *intruder = start(&w->foreign, NULL, NULL, 0);
    uint64_t before = wait_stat(w->server, offsetof(struct peertls_stats, rejected), 0);
    assert_int_equal(peertls_dial(intruder, peertls_listen_address(w->server), 5000, &fd, errmsg), GERR_PERM);
    assert_int_equal(wait_stat(w->server, offsetof(struct peertls_stats, rejected), before + 1), before + 1);
    /* And a legitimate replica does not trust a server with a foreign certificate either. */
    struct echo e2;
    echo_start(&e2, false);
    struct peertls *rogue = start(&w->foreign, "127.0.0.1:0", e2.address, 0);
    assert_int_equal(peertls_dial(w->client, peertls_listen_address(rogue), 5000, &fd, errmsg), GERR_PERM);
    assert_non_null(strstr(errmsg, "certificate"));
    peertls_stop(rogue);
    echo_stop(&e2);
    peertls_stop(intruder);
}

static int tcp_connect(const char *address)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    char host[64];
    const char *colon = strrchr(address, ':');
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    inet_pton(AF_INET, host, &sa.sin_addr);
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void plaintext_and_silent_clients_are_refused(void **state)
{
    struct world *w = *state;
    uint64_t before = wait_stat(w->server, offsetof(struct peertls_stats, rejected), 0);
    /* Someone speaking the dqlite protocol in clear text. */
    int fd = tcp_connect(peertls_listen_address(w->server));
    write_all(fd, "\x01\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00", 16);
    close(fd);
    assert_int_equal(wait_stat(w->server, offsetof(struct peertls_stats, rejected), before + 1), before + 1);
    /* Someone who connects and says nothing: cut off after the handshake timeout (400 ms). */
    fd = tcp_connect(peertls_listen_address(w->server));
    char c;
    assert_int_equal(wait_stat(w->server, offsetof(struct peertls_stats, rejected), before + 2), before + 2);
    assert_int_equal(read(fd, &c, 1), 0); /* closed by the relay */
    close(fd);
}

static uint64_t now_ms(void)
{
    return clock_mono_ms(clock_system());
}

/* Open @n TCP connections to @address from @source (any 127.x.y.z on Linux loopback) that never
 * say anything: non-blocking connects, not waited for. */
static void open_silent(const char *source, const char *address, int *fds, int n)
{
    struct sockaddr_in to = {.sin_family = AF_INET}, from = {.sin_family = AF_INET};
    char host[64];
    const char *colon = strrchr(address, ':');
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    inet_pton(AF_INET, host, &to.sin_addr);
    to.sin_port = htons((uint16_t)atoi(colon + 1));
    inet_pton(AF_INET, source, &from.sin_addr);
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        assert_true(fds[i] >= 0);
        assert_int_equal(bind(fds[i], (struct sockaddr *)&from, sizeof from), 0);
        int rc = connect(fds[i], (struct sockaddr *)&to, sizeof to);
        assert_true(rc == 0 || errno == EINPROGRESS);
    }
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        close(fds[i]);
    }
}

/* Poll a stats field for at most @ms (wait_stat waits up to 5 s, longer than this test allows). */
static uint64_t wait_stat_ms(struct peertls *t, size_t offset, uint64_t want, uint64_t ms)
{
    uint64_t deadline = now_ms() + ms;
    struct peertls_stats s;
    for (;;) {
        peertls_get_stats(t, &s);
        uint64_t v = *(uint64_t *)((char *)&s + offset);
        if (v >= want || now_ms() > deadline) {
            return v;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

static void silent_flood_does_not_delay_a_peer(void **state)
{
    struct world *w = *state;
    /* The default handshake timeout (5 s): 300 silent connections from one address used to fill
     * the 256 handshake slots, stop the listener, and leave a peer's dial in the backlog until
     * they timed out (4-5 s, past the store clients' 1 s connect timeout). */
    struct echo e;
    echo_start(&e, false);
    struct peertls *srv = start(&w->a, "127.0.0.1:0", e.address, 0);
    int fds[300];
    open_silent("127.0.0.2", peertls_listen_address(srv), fds, 300);
    /* All but 8 are refused at accept (max_handshakes_per_source). */
    uint64_t rejected = wait_stat_ms(srv, offsetof(struct peertls_stats, rejected), 292, 1000);
    uint64_t t0 = now_ms();
    int fd;
    int rv = peertls_dial(w->client, peertls_listen_address(srv), 1000, &fd, errmsg);
    uint64_t took = now_ms() - t0;
    print_message("silent flood: %llu of 300 refused at accept; a peer's dial took %llu ms\n",
                  (unsigned long long)rejected, (unsigned long long)took);
    if (rv != 0) {
        fail_msg("dial behind a flood of silent connections: %s (after %llu ms)", errmsg,
                 (unsigned long long)took);
    }
    assert_true(took < 500);
    write_all(fd, "hi", 2);
    char buf[2];
    read_exact(fd, buf, 2);
    close(fd);
    close_all(fds, 300);
    peertls_stop(srv);
    echo_stop(&e);
}

/* Lines of @path that contain @needle. */
static int count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    int n = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        n += strstr(line, needle) != NULL;
    }
    fclose(f);
    return n;
}

static void refusals_are_logged_once_per_address_per_window(void **state)
{
    struct world *w = *state;
    char path[] = "/tmp/gantry-peertls-log-XXXXXX";
    int logfd = mkstemp(path);
    assert_true(logfd >= 0);
    log_set_fd(logfd);
    struct echo e;
    echo_start(&e, false);
    struct peertls_config cfg = {.ca_pem = w->a.ca,
                                 .cert_pem = w->a.cert,
                                 .key_pem = w->a.key,
                                 .listen_address = "127.0.0.1:0",
                                 .backend_address = e.address,
                                 .handshake_timeout_ms = 200,
                                 .refusal_log_window_ms = 600};
    struct peertls *srv = NULL;
    assert_int_equal(peertls_start(&cfg, &srv, errmsg), 0);
    /* 40 silent connections: 32 over the per-source cap, 8 that time out. One line, not 40. */
    int fds[40];
    open_silent("127.0.0.3", peertls_listen_address(srv), fds, 40);
    assert_int_equal(wait_stat(srv, offsetof(struct peertls_stats, rejected), 40), 40);
    assert_int_equal(count_lines(path, "peer TLS: refused"), 1);
    /* After the window, the next refusal from that address reports the count, then itself. The
     * window is time passing, not a condition to poll for. */
    struct timespec ts = {0, 700000000};
    nanosleep(&ts, NULL);
    int more;
    open_silent("127.0.0.3", peertls_listen_address(srv), &more, 1);
    assert_int_equal(wait_stat(srv, offsetof(struct peertls_stats, rejected), 41), 41);
    assert_int_equal(count_lines(path, "peer TLS: refused"), 3);
    assert_int_equal(count_lines(path, "refused 39 more connection(s) from 127.0.0.3"), 1);
    close(more);
    close_all(fds, 40);
    peertls_stop(srv);
    echo_stop(&e);
    log_set_fd(2);
    close(logfd);
    unlink(path);
}

static void unreachable_peer_and_bad_address(void **state)
{
    struct world *w = *state;
    int fd;
    /* A port nobody listens on: bind one, close it, dial it. */
    struct echo e;
    echo_start(&e, false);
    char dead[128];
    snprintf(dead, sizeof dead, "%s", e.address);
    echo_stop(&e);
    assert_int_equal(peertls_dial(w->client, dead, 2000, &fd, errmsg), GERR_CLOSED);
    assert_int_equal(peertls_dial(w->client, "not-an-address", 2000, &fd, errmsg), GERR_INVAL);
    assert_int_equal(fd, -1);
}

static void bad_key_material_is_refused(void **state)
{
    struct world *w = *state;
    struct peertls *t = NULL;
    struct peertls_config cfg = {.ca_pem = w->ca.ca, .cert_pem = w->a.cert, .key_pem = w->b.key};
    assert_int_equal(peertls_start(&cfg, &t, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "does not match"));
    cfg.key_pem = "garbage";
    assert_int_equal(peertls_start(&cfg, &t, errmsg), GERR_INVAL);
    assert_null(t);
}

/* ---- ALPN: a second backend for peers that ask for it (gantryd's forwarded calls). */

struct marker {
    int fd;
    pthread_t thread;
    char address[64];
    const char *word; /* what it writes to each connection: "ALT" when NULL */
};

static void *marker_accept(void *arg)
{
    struct marker *m = arg;
    for (;;) {
        int fd = accept(m->fd, NULL, NULL);
        if (fd < 0) {
            return NULL;
        }
        write_all(fd, m->word != NULL ? m->word : "ALT", 3);
        close(fd);
    }
}

static void marker_start(struct marker *m, const char *name, const char *word)
{
    memset(m, 0, sizeof *m);
    m->word = word;
    struct sockaddr_un su = {.sun_family = AF_UNIX};
    snprintf(m->address, sizeof m->address, "@gantry-test-%s-%d", name, (int)getpid());
    size_t n = strlen(m->address);
    memcpy(su.sun_path, m->address, n);
    su.sun_path[0] = '\0';
    m->fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(
        bind(m->fd, (struct sockaddr *)&su, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)), 0);
    assert_int_equal(listen(m->fd, 16), 0);
    pthread_create(&m->thread, NULL, marker_accept, m);
}

static void marker_stop(struct marker *m)
{
    shutdown(m->fd, SHUT_RDWR);
    close(m->fd);
    pthread_join(m->thread, NULL);
}

static void alpn_selects_the_second_backend(void **state)
{
    struct world *w = *state;
    struct marker m, m2;
    marker_start(&m, "alt", "ALT");
    marker_start(&m2, "sess", "SES");
    struct peertls_config cfg = {.ca_pem = w->a.ca,
                                 .cert_pem = w->a.cert,
                                 .key_pem = w->a.key,
                                 .listen_address = "127.0.0.1:0",
                                 .backend_address = w->echo.address,
                                 .alt_alpn = "gantry-fwd/1",
                                 .alt_backend = m.address,
                                 .alt2_alpn = "gantry-sess/1",
                                 .alt2_backend = m2.address};
    struct peertls *srv = NULL;
    assert_int_equal(peertls_start(&cfg, &srv, errmsg), 0);
    /* Without ALPN: the first backend (dqlite's place), as before. */
    int fd;
    assert_int_equal(peertls_dial(w->client, peertls_listen_address(srv), 5000, &fd, errmsg), 0);
    write_all(fd, "ping", 4);
    char buf[8] = {0};
    read_exact(fd, buf, 4);
    assert_string_equal(buf, "ping");
    close(fd);
    /* With the second backend's protocol: the second backend. */
    assert_int_equal(
        peertls_dial_alpn(w->client, peertls_listen_address(srv), "gantry-fwd/1", 5000, &fd, errmsg), 0);
    memset(buf, 0, sizeof buf);
    read_exact(fd, buf, 3);
    assert_string_equal(buf, "ALT");
    close(fd);
    /* With the third backend's protocol (routed sessions): the third backend. */
    assert_int_equal(
        peertls_dial_alpn(w->client, peertls_listen_address(srv), "gantry-sess/1", 5000, &fd, errmsg), 0);
    memset(buf, 0, sizeof buf);
    read_exact(fd, buf, 3);
    assert_string_equal(buf, "SES");
    close(fd);
    /* A protocol the peer does not serve: refused at the dial, with a reason. */
    assert_int_equal(
        peertls_dial_alpn(w->client, peertls_listen_address(srv), "something/9", 5000, &fd, errmsg),
        GERR_REFUSED);
    assert_non_null(strstr(errmsg, "does not accept"));
    /* A relay without a second backend refuses the protocol the same way. */
    assert_int_equal(
        peertls_dial_alpn(w->client, peertls_listen_address(w->server), "gantry-fwd/1", 5000, &fd, errmsg),
        GERR_REFUSED);
    peertls_stop(srv);
    /* The same protocol for both: refused at the start. */
    cfg.alt2_alpn = "gantry-fwd/1";
    assert_int_equal(peertls_start(&cfg, &srv, errmsg), GERR_INVAL);
    marker_stop(&m);
    marker_stop(&m2);
}

/* Revocation: an open connection with the revoked peer is closed, new handshakes either way are
 * refused and counted, the refused dialer learns its own certificate is revoked, and an empty set
 * lets it back in. */
static void revoked_certificate_is_refused_and_closed(void **state)
{
    struct world *w = *state;
    char fp_b[PKI_FINGERPRINT_SIZE], fp_a[PKI_FINGERPRINT_SIZE];
    assert_int_equal(pki_fingerprint(w->b.cert, fp_b, errmsg), 0);
    assert_int_equal(pki_fingerprint(w->a.cert, fp_a, errmsg), 0);
    int open_fd, fd;
    assert_int_equal(peertls_dial(w->client, peertls_listen_address(w->server), 5000, &open_fd, errmsg), 0);
    write_all(open_fd, "x", 1);
    char c;
    read_exact(open_fd, &c, 1);
    assert_false(peertls_self_revoked(w->client));

    assert_int_equal(peertls_set_revoked(w->server, (const char(*)[PKI_FINGERPRINT_SIZE]) & fp_b, 1, errmsg),
                     0);
    /* The open connection is closed by the relay: the next read sees EOF. */
    assert_int_equal(read(open_fd, &c, 1), 0);
    close(open_fd);
    assert_int_equal(wait_stat(w->server, offsetof(struct peertls_stats, revoked_closed), 1), 1);
    /* A new dial is refused in the handshake, and the dialer learns why. */
    assert_int_equal(peertls_dial(w->client, peertls_listen_address(w->server), 5000, &fd, errmsg),
                     GERR_PERM);
    assert_true(peertls_self_revoked(w->client));
    assert_int_equal(wait_stat(w->server, offsetof(struct peertls_stats, revoked_refused), 1), 1);
    struct peertls_stats st;
    peertls_get_stats(w->server, &st);
    assert_int_equal(st.revoked_certs, 1);

    /* The other direction: a relay that revoked A refuses to dial A's listener. */
    assert_int_equal(peertls_set_revoked(w->client, (const char(*)[PKI_FINGERPRINT_SIZE]) & fp_a, 1, errmsg),
                     0);
    assert_int_equal(peertls_dial(w->client, peertls_listen_address(w->server), 5000, &fd, errmsg),
                     GERR_PERM);
    assert_non_null(strstr(errmsg, "is revoked"));
    assert_int_equal(wait_stat(w->client, offsetof(struct peertls_stats, revoked_refused), 1), 1);

    /* Emptied sets: B gets in again (its self_revoked flag stays: it was told once). */
    assert_int_equal(peertls_set_revoked(w->server, NULL, 0, errmsg), 0);
    assert_int_equal(peertls_set_revoked(w->client, NULL, 0, errmsg), 0);
    assert_int_equal(peertls_dial(w->client, peertls_listen_address(w->server), 5000, &fd, errmsg), 0);
    close(fd);
    assert_true(peertls_self_revoked(w->client));

    /* A relay whose own fingerprint is in its set knows it was removed; too many is refused. */
    assert_false(peertls_self_revoked(w->server));
    assert_int_equal(peertls_set_revoked(w->server, (const char(*)[PKI_FINGERPRINT_SIZE]) & fp_a, 1, errmsg),
                     0);
    assert_true(peertls_self_revoked(w->server));
    char(*many)[PKI_FINGERPRINT_SIZE] = mem_zalloc(sizeof *many * (PEERTLS_MAX_REVOKED + 1));
    assert_int_equal(peertls_set_revoked(w->server, (const char(*)[PKI_FINGERPRINT_SIZE])many,
                                         PEERTLS_MAX_REVOKED + 1, errmsg),
                     GERR_TOOBIG);
    mem_free(many);
    peertls_get_stats(w->server, &st);
    assert_int_equal(st.revoked_certs, 1);
}

/* store_stream I/O for the tests: all of @n, polling the socket as the stream asks. */
static int stream_io(struct store_stream *st, int fd, bool send, uint8_t *p, size_t n, char *why)
{
    while (n > 0) {
        short want = 0;
        long r = send ? st->send(st->s, p, n, &want, why) : st->recv(st->s, p, n, &want, why);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            continue;
        }
        if (r == 0 || want == 0) {
            return -1;
        }
        struct pollfd pfd = {.fd = fd, .events = want};
        assert_int_equal(poll(&pfd, 1, 5000), 1);
    }
    return 0;
}

/* A stream driven by the dialer's thread (peertls_dial_stream, the store clients' path): bytes
 * both ways, shut down when the peer's certificate is revoked, refused while it is, and usable and
 * closable after its relay stopped. */
static void direct_stream_echo_revocation_and_stop(void **state)
{
    struct world *w = *state;
    int fd = -1;
    struct store_stream st = {0};
    assert_int_equal(
        peertls_dial_stream(w->client, peertls_listen_address(w->server), 5000, &fd, &st, errmsg), 0);
    assert_non_null(st.s);
    size_t n = 256u << 10; /* several TLS records and socket buffers: the want paths run */
    uint8_t *out = mem_alloc(n), *back = mem_alloc(n);
    rand_bytes(out, n);
    char why[GERR_MSG_SIZE] = "";
    for (size_t off = 0; off < n; off += 32u << 10) { /* the echo answers while we write */
        assert_int_equal(stream_io(&st, fd, true, out + off, 32u << 10, why), 0);
        assert_int_equal(stream_io(&st, fd, false, back + off, 32u << 10, why), 0);
    }
    assert_memory_equal(back, out, n);

    /* The client revokes the server's certificate: the open stream fails on its next call. */
    char fp_a[PKI_FINGERPRINT_SIZE];
    assert_int_equal(pki_fingerprint(w->a.cert, fp_a, errmsg), 0);
    assert_int_equal(peertls_set_revoked(w->client, (const char(*)[PKI_FINGERPRINT_SIZE]) & fp_a, 1, errmsg),
                     0);
    assert_int_equal(stream_io(&st, fd, false, back, 1, why), -1);
    assert_non_null(strstr(why, "revoked"));
    struct peertls_stats stats;
    peertls_get_stats(w->client, &stats);
    assert_int_equal(stats.revoked_closed, 1);
    st.close(st.s);
    int fd2 = -1;
    struct store_stream st2 = {0};
    assert_int_equal(
        peertls_dial_stream(w->client, peertls_listen_address(w->server), 5000, &fd2, &st2, errmsg),
        GERR_PERM);
    assert_null(st2.s);

    /* A stream outlives its relay: still usable, then closed without touching the stopped relay
     * (ASan would see it). */
    assert_int_equal(peertls_set_revoked(w->client, NULL, 0, errmsg), 0);
    struct peertls *c2 = start(&w->b, NULL, NULL, 0);
    assert_int_equal(peertls_dial_stream(c2, peertls_listen_address(w->server), 5000, &fd2, &st2, errmsg), 0);
    peertls_stop(c2);
    assert_int_equal(stream_io(&st2, fd2, true, out, 4096, why), 0);
    assert_int_equal(stream_io(&st2, fd2, false, back, 4096, why), 0);
    assert_memory_equal(back, out, 4096);
    st2.close(st2.s);
    mem_free(out);
    mem_free(back);
}

/* Reload: new handshakes use the new identity and trust; a connection already open keeps working;
 * bad material changes nothing. */
static void reload_swaps_the_identity_for_new_connections_only(void **state)
{
    struct world *w = *state;
    int open_fd, fd;
    assert_int_equal(peertls_dial(w->client, peertls_listen_address(w->server), 5000, &open_fd, errmsg), 0);
    write_all(open_fd, "one", 3);
    char buf[8] = {0};
    read_exact(open_fd, buf, 3);
    char before[PKI_FINGERPRINT_SIZE], after[PKI_FINGERPRINT_SIZE], want[PKI_FINGERPRINT_SIZE];
    int64_t na = 0;
    peertls_own_cert(w->server, before, &na);
    /* The server moves to a certificate from another CA, trusting only that CA. */
    struct pem moved;
    make_cert(&moved, &w->foreign_ca, "replica-a");
    assert_int_equal(peertls_reload_pem(w->server, moved.ca, moved.cert, moved.key, errmsg), 0);
    peertls_own_cert(w->server, after, &na);
    assert_int_equal(pki_fingerprint(moved.cert, want, errmsg), 0);
    assert_string_equal(after, want);
    assert_string_not_equal(after, before);
    /* The open connection still relays. */
    write_all(open_fd, "two", 3);
    memset(buf, 0, sizeof buf);
    read_exact(open_fd, buf, 3);
    assert_string_equal(buf, "two");
    /* A new dial from the old CA's replica is refused: the new identity is in force. */
    assert_int_equal(peertls_dial(w->client, peertls_listen_address(w->server), 5000, &fd, errmsg),
                     GERR_PERM);
    /* Bad material: refused, and the identity stays. */
    assert_int_equal(peertls_reload_pem(w->server, moved.ca, moved.cert, w->a.key, errmsg), GERR_INVAL);
    assert_int_equal(peertls_reload_pem(w->server, "not a PEM", moved.cert, moved.key, errmsg), GERR_INVAL);
    peertls_own_cert(w->server, after, &na);
    assert_string_equal(after, want);
    /* A relay started from memory has no files to re-read. */
    assert_int_equal(peertls_reload(w->server, errmsg), GERR_INVAL);
    /* A bundle of both CAs: replicas of either are accepted (a CA rotation's overlap). */
    size_t n = strlen(w->ca.ca) + strlen(w->foreign_ca.ca) + 1;
    char *bundle = mem_alloc(n);
    snprintf(bundle, n, "%s%s", w->ca.ca, w->foreign_ca.ca);
    assert_int_equal(peertls_reload_pem(w->server, bundle, moved.cert, moved.key, errmsg), 0);
    struct peertls *other = start(&moved, NULL, NULL, 0);
    for (int i = 0; i < 2; i++) {
        struct peertls *dialer = i == 0 ? w->client : other;
        /* The dialer must trust the server's CA too: the client (old CA) is given the bundle. */
        if (i == 0) {
            assert_int_equal(peertls_reload_pem(w->client, bundle, w->b.cert, w->b.key, errmsg), 0);
        }
        assert_int_equal(peertls_dial(dialer, peertls_listen_address(w->server), 5000, &fd, errmsg), 0);
        write_all(fd, "hi", 2);
        memset(buf, 0, sizeof buf);
        read_exact(fd, buf, 2);
        assert_string_equal(buf, "hi");
        close(fd);
    }
    struct peertls_stats st;
    peertls_get_stats(w->server, &st);
    assert_int_equal(st.reloads, 2);
    peertls_stop(other);
    mem_free(bundle);
    close(open_fd);
    pem_free(&moved);
}

/* A relay started from files re-reads them. */
static void reload_rereads_the_files(void **state)
{
    struct world *w = *state;
    char dir[] = "/tmp/peertls-reload-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char ca[128], cert[128], key[128];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    const char *paths[] = {ca, cert, key};
    const char *first[] = {w->a.ca, w->a.cert, w->a.key};
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(paths[i], "w");
        fputs(first[i], f);
        fclose(f);
    }
    struct peertls *t = NULL;
    assert_int_equal(peertls_start_files(ca, cert, key, NULL, NULL, NULL, &t, errmsg), 0);
    struct pem next;
    make_cert(&next, &w->ca, "replica-a");
    const char *second[] = {next.ca, next.cert, next.key};
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(paths[i], "w");
        fputs(second[i], f);
        fclose(f);
    }
    assert_int_equal(peertls_reload(t, errmsg), 0);
    char fp[PKI_FINGERPRINT_SIZE], want[PKI_FINGERPRINT_SIZE];
    int64_t na = 0;
    peertls_own_cert(t, fp, &na);
    assert_int_equal(pki_fingerprint(next.cert, want, errmsg), 0);
    assert_string_equal(fp, want);
    unlink(key);
    assert_int_not_equal(peertls_reload(t, errmsg), 0);
    peertls_own_cert(t, fp, &na);
    assert_string_equal(fp, want);
    peertls_stop(t);
    unlink(ca);
    unlink(cert);
    rmdir(dir);
    pem_free(&next);
}

/* The fourth backend reads the peer's verified fingerprint first. */
static void fourth_backend_is_told_the_peer(void **state)
{
    struct world *w = *state;
    struct peertls_config cfg = {.ca_pem = w->a.ca,
                                 .cert_pem = w->a.cert,
                                 .key_pem = w->a.key,
                                 .listen_address = "127.0.0.1:0",
                                 .backend_address = w->echo.address,
                                 .alt3_alpn = "gantry-renew/1",
                                 .alt3_backend = w->echo.address};
    struct peertls *srv = NULL;
    assert_int_equal(peertls_start(&cfg, &srv, errmsg), 0);
    int fd;
    assert_int_equal(
        peertls_dial_alpn(w->client, peertls_listen_address(srv), "gantry-renew/1", 5000, &fd, errmsg), 0);
    char fp[PKI_FINGERPRINT_SIZE], line[PEERTLS_PEER_HEADER_MAX + 2] = {0};
    assert_int_equal(pki_fingerprint(w->b.cert, fp, errmsg), 0);
    char want[PEERTLS_PEER_HEADER_MAX + 2];
    snprintf(want, sizeof want, PEERTLS_PEER_HEADER "%s\n", fp);
    read_exact(fd, line, strlen(want)); /* the echo server sends the header back */
    assert_string_equal(line, want);
    close(fd);
    /* Without the protocol: no header, the first backend as before. */
    assert_int_equal(peertls_dial(w->client, peertls_listen_address(srv), 5000, &fd, errmsg), 0);
    write_all(fd, "x", 1);
    char c = 0;
    read_exact(fd, &c, 1);
    assert_int_equal(c, 'x');
    close(fd);
    peertls_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(echo_through_the_relay, setup_tcp, teardown_world),
        cmocka_unit_test_setup_teardown(echo_through_the_relay, setup_abstract, teardown_world),
        cmocka_unit_test_setup_teardown(four_mib_both_ways_at_once, setup_tcp, teardown_world),
        cmocka_unit_test_setup_teardown(foreign_certificate_is_refused_both_ways, setup_tcp, teardown_world),
        cmocka_unit_test_setup_teardown(plaintext_and_silent_clients_are_refused, setup_tcp, teardown_world),
        cmocka_unit_test_setup_teardown(silent_flood_does_not_delay_a_peer, setup_tcp, teardown_world),
        cmocka_unit_test_setup_teardown(refusals_are_logged_once_per_address_per_window, setup_tcp,
                                        teardown_world),
        cmocka_unit_test_setup_teardown(unreachable_peer_and_bad_address, setup_tcp, teardown_world),
        cmocka_unit_test_setup_teardown(bad_key_material_is_refused, setup_tcp, teardown_world),
        cmocka_unit_test_setup_teardown(alpn_selects_the_second_backend, setup_tcp, teardown_world),
        cmocka_unit_test_setup_teardown(revoked_certificate_is_refused_and_closed, setup_tcp, teardown_world),
        cmocka_unit_test_setup_teardown(direct_stream_echo_revocation_and_stop, setup_tcp, teardown_world),
        cmocka_unit_test_setup_teardown(reload_swaps_the_identity_for_new_connections_only, setup_tcp,
                                        teardown_world),
        cmocka_unit_test_setup_teardown(reload_rereads_the_files, setup_tcp, teardown_world),
        cmocka_unit_test_setup_teardown(fourth_backend_is_told_the_peer, setup_tcp, teardown_world),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
