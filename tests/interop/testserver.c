/* gantry-grpc-testserver: the gRPC server without gantryd. Serves grpc.health.v1, server
 * reflection, every gantry.v1 service (UNIMPLEMENTED until later issues add handlers) and the
 * test-only gantry.testing.v1.Echo, plus the admin HTTP port. For the interop suite, the fuzzer
 * seeds and the benchmarks; never deployed. The gantry.v1 methods go to a stand-in for the gate
 * (testserver_echo.h, echo_route_checked): each request is decoded on a worker thread, so the
 * transport's request check runs there as in gantryd, and answered UNIMPLEMENTED.
 *
 * SIGTERM or SIGINT: health goes NOT_SERVING, watches end, GOAWAY goes to every connection,
 * in-flight calls get --grace-ms to finish, then the process exits 0 (non-zero if a leak check
 * under ASan finds anything). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/proto/services.h"
#include "lib/err.h"
#include "lib/log.h"
#include "server/admin.h"
#include "server/grpc/health.h"
#include "server/grpc/reflection.h"
#include "server/grpc/server.h"
#include "testserver_echo.h"

struct ts {
    uv_loop_t *loop;
    struct grpc_server *server;
    struct health *health;
    struct reflection *refl;
    struct echo *echo;
    struct admin *admin;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sigusr1;
    uv_timer_t grace_timer;
    uint64_t grace_ms;
    bool stopping;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: gantry-grpc-testserver [options]\n"
               "  --listen HOST:PORT        gRPC address (default 127.0.0.1:0)\n"
               "  --admin HOST:PORT         admin HTTP address (default 127.0.0.1:0; 'off' disables)\n"
               "  --cert FILE --key FILE    TLS certificate chain and key (PEM)\n"
               "  --client-ca FILE          request and verify client certificates\n"
               "  --h2c                     plaintext HTTP/2 (loopback addresses only)\n"
               "  --port-file FILE          write 'grpc=PORT' and 'admin=PORT' once listening\n"
               "  --max-recv-bytes N        max request message (default 4194304)\n"
               "  --max-send-bytes N        max response message (default 16777216)\n"
               "  --max-streams N           concurrent streams per connection (default 100)\n"
               "  --max-header-bytes N      request header list limit (default 16384)\n"
               "  --conn-memory N           buffered bytes per connection (default 67108864)\n"
               "  --max-connections N       (default 1024)\n"
               "  --max-connections-per-source N  from one IP address (default 128, 0 no limit)\n"
               "  --established-reserve-percent N share kept for established connections (default 25)\n"
               "  --handshake-timeout-ms N  TLS + HTTP/2 preface deadline (default 10000, 0 off)\n"
               "  --idle-timeout-ms N       GOAWAY after N ms without streams (default 300000, 0 off)\n"
               "  --keepalive-ms N          PING interval while streams are open (default 30000, 0 off)\n"
               "  --keepalive-timeout-ms N  close if a PING is not acknowledged in N ms (default 20000)\n"
               "  --max-request-fields N    fields in one request message (default 65536)\n"
               "  --max-request-depth N     nesting of sub-messages in a request (default 32)\n"
               "  --admin-max-connections N      admin connections (default 64)\n"
               "  --admin-probe-reserve N        more, for /healthz and /readyz only (default 8)\n"
               "  --admin-header-timeout-ms N    a request complete within N ms of its first byte (10000)\n"
               "  --admin-idle-timeout-ms N      keep-alive idle close (default 30000)\n"
               "  --admin-probe-timeout-ms N     a probe connection's deadline (default 2000)\n"
               "  --admin-max-buffered N         unwritten response bytes per connection (default 1048576)\n"
               "  --grace-ms N              shutdown grace for in-flight calls (default 5000)\n"
               "  --log-level LEVEL         error|warn|info|debug|trace (default info)\n");
}

static bool ts_ready(void *data, char *reason, size_t len)
{
    struct ts *t = data;
    if (grpc_server_closing(t->server)) {
        snprintf(reason, len, "shutting down");
        return false;
    }
    return true;
}

static void ts_metrics(void *data, struct buf *out)
{
    struct ts *t = data;
    grpc_server_metrics_write(t->server, out);
}

static void ts_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void ts_admin_closed(struct admin *a, void *data)
{
    (void)a;
    struct ts *t = data;
    t->admin = NULL;
}

static void ts_server_closed(struct grpc_server *s, void *data)
{
    (void)s;
    struct ts *t = data;
    LOG_INFO("testserver: gRPC server closed");
    if (t->admin != NULL) {
        admin_close(t->admin, ts_admin_closed, t);
    }
    uv_close((uv_handle_t *)&t->sigterm, ts_handle_closed);
    uv_close((uv_handle_t *)&t->sigint, ts_handle_closed);
    uv_close((uv_handle_t *)&t->sigusr1, ts_handle_closed);
    /* Already stopping: a second signal must not kill the process mid-cleanup. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    uv_close((uv_handle_t *)&t->grace_timer, ts_handle_closed);
}

static void ts_grace_cb(uv_timer_t *timer)
{
    struct ts *t = timer->data;
    /* Delay calls still waiting on the worker would hold the server open: answer them now. */
    echo_stop(t->echo);
}

static void ts_signal_cb(uv_signal_t *sig, int signum)
{
    struct ts *t = sig->data;
    if (t->stopping) {
        return;
    }
    t->stopping = true;
    LOG_INFO("testserver: signal %d: graceful shutdown (grace %llu ms)", signum,
             (unsigned long long)t->grace_ms);
    health_shutdown(t->health);
    grpc_server_shutdown(t->server, t->grace_ms, ts_server_closed, t);
    uv_timer_start(&t->grace_timer, ts_grace_cb, t->grace_ms, 0);
}

/* SIGUSR1: flip the overall health status 100,000 times, ending SERVING, so the interop suite
 * can watch a watcher that does not read. */
static void ts_flap_cb(uv_signal_t *sig, int signum)
{
    (void)signum;
    struct ts *t = sig->data;
    if (t->stopping) {
        return;
    }
    for (int i = 0; i < 100000; i++) {
        health_set(t->health, "", i % 2 == 0 ? 2 /* NOT_SERVING */ : 1 /* SERVING */);
    }
    LOG_INFO("testserver: health flapped 100000 times");
}

static int ts_write_port_file(const char *path, int grpc_port, int admin_port)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        return -1;
    }
    fprintf(f, "grpc=%d\nadmin=%d\n", grpc_port, admin_port);
    if (fclose(f) != 0) {
        return -1;
    }
    return rename(tmp, path);
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] == '\0' || *end != '\0' || errno != 0 || s[0] == '-') {
        return false;
    }
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    struct grpc_server_config cfg;
    grpc_server_config_defaults(&cfg);
    const char *admin_addr = "127.0.0.1:0";
    struct admin_config acfg = {.ready = ts_ready, .metrics = ts_metrics}; /* limits: 0 = default */
    const char *port_file = NULL;
    struct ts t;
    memset(&t, 0, sizeof(t));
    t.grace_ms = 5000;
    char errmsg[GERR_MSG_SIZE] = "";
    enum {
        O_LISTEN = 1,
        O_ADMIN,
        O_CERT,
        O_KEY,
        O_CA,
        O_H2C,
        O_PORTFILE,
        O_MAXRECV,
        O_MAXSEND,
        O_STREAMS,
        O_HEADERS,
        O_CONNMEM,
        O_MAXCONNS,
        O_PERSOURCE,
        O_RESERVE,
        O_HANDSHAKE,
        O_IDLE,
        O_KEEPALIVE,
        O_KATIMEOUT,
        O_REQFIELDS,
        O_REQDEPTH,
        O_ADM_CONNS,
        O_ADM_RESERVE,
        O_ADM_HEADER,
        O_ADM_IDLE,
        O_ADM_PROBE,
        O_ADM_BUFFERED,
        O_GRACE,
        O_LOG,
        O_HELP
    };
    static const struct option opts[] = {
        {"listen", required_argument, NULL, O_LISTEN},
        {"admin", required_argument, NULL, O_ADMIN},
        {"cert", required_argument, NULL, O_CERT},
        {"key", required_argument, NULL, O_KEY},
        {"client-ca", required_argument, NULL, O_CA},
        {"h2c", no_argument, NULL, O_H2C},
        {"port-file", required_argument, NULL, O_PORTFILE},
        {"max-recv-bytes", required_argument, NULL, O_MAXRECV},
        {"max-send-bytes", required_argument, NULL, O_MAXSEND},
        {"max-streams", required_argument, NULL, O_STREAMS},
        {"max-header-bytes", required_argument, NULL, O_HEADERS},
        {"conn-memory", required_argument, NULL, O_CONNMEM},
        {"max-connections", required_argument, NULL, O_MAXCONNS},
        {"max-connections-per-source", required_argument, NULL, O_PERSOURCE},
        {"established-reserve-percent", required_argument, NULL, O_RESERVE},
        {"handshake-timeout-ms", required_argument, NULL, O_HANDSHAKE},
        {"idle-timeout-ms", required_argument, NULL, O_IDLE},
        {"keepalive-ms", required_argument, NULL, O_KEEPALIVE},
        {"keepalive-timeout-ms", required_argument, NULL, O_KATIMEOUT},
        {"max-request-fields", required_argument, NULL, O_REQFIELDS},
        {"max-request-depth", required_argument, NULL, O_REQDEPTH},
        {"admin-max-connections", required_argument, NULL, O_ADM_CONNS},
        {"admin-probe-reserve", required_argument, NULL, O_ADM_RESERVE},
        {"admin-header-timeout-ms", required_argument, NULL, O_ADM_HEADER},
        {"admin-idle-timeout-ms", required_argument, NULL, O_ADM_IDLE},
        {"admin-probe-timeout-ms", required_argument, NULL, O_ADM_PROBE},
        {"admin-max-buffered", required_argument, NULL, O_ADM_BUFFERED},
        {"grace-ms", required_argument, NULL, O_GRACE},
        {"log-level", required_argument, NULL, O_LOG},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        uint64_t v = 0;
        bool numeric = c >= O_MAXRECV && c <= O_GRACE;
        if (numeric && (!parse_u64(optarg, &v) || v > UINT32_MAX * 16ull)) {
            fprintf(stderr, "gantry-grpc-testserver: bad number for --%s: %s\n", opts[c - 1].name, optarg);
            return 2;
        }
        uint32_t v32 = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
        switch (c) {
        case O_LISTEN:
            cfg.listen = optarg;
            break;
        case O_ADMIN:
            admin_addr = optarg;
            break;
        case O_CERT:
            cfg.cert_file = optarg;
            break;
        case O_KEY:
            cfg.key_file = optarg;
            break;
        case O_CA:
            cfg.client_ca_file = optarg;
            break;
        case O_H2C:
            cfg.h2c = true;
            break;
        case O_PORTFILE:
            port_file = optarg;
            break;
        case O_MAXRECV:
            cfg.max_recv_message_bytes = v32;
            break;
        case O_MAXSEND:
            cfg.max_send_message_bytes = v32;
            break;
        case O_STREAMS:
            cfg.max_concurrent_streams = v32;
            break;
        case O_HEADERS:
            cfg.max_header_list_bytes = v32;
            break;
        case O_CONNMEM:
            cfg.conn_memory_bytes = (size_t)v;
            break;
        case O_MAXCONNS:
            cfg.max_connections = v32;
            break;
        case O_PERSOURCE:
            cfg.max_connections_per_source = v32;
            break;
        case O_RESERVE:
            cfg.established_reserve_percent = v32;
            break;
        case O_HANDSHAKE:
            cfg.handshake_timeout_ms = v;
            break;
        case O_IDLE:
            cfg.idle_timeout_ms = v;
            break;
        case O_KEEPALIVE:
            cfg.keepalive_ms = v;
            break;
        case O_KATIMEOUT:
            cfg.keepalive_timeout_ms = v;
            break;
        case O_REQFIELDS:
            cfg.max_request_fields = v32;
            break;
        case O_REQDEPTH:
            cfg.max_request_depth = v32;
            break;
        case O_ADM_CONNS:
            acfg.max_connections = v32;
            break;
        case O_ADM_RESERVE:
            acfg.probe_reserve = v32;
            break;
        case O_ADM_HEADER:
            acfg.header_timeout_ms = v;
            break;
        case O_ADM_IDLE:
            acfg.idle_timeout_ms = v;
            break;
        case O_ADM_PROBE:
            acfg.probe_timeout_ms = v;
            break;
        case O_ADM_BUFFERED:
            acfg.max_buffered_bytes = (size_t)v;
            break;
        case O_GRACE:
            t.grace_ms = v;
            break;
        case O_LOG:
            if (log_set_level_name(optarg) != 0) {
                fprintf(stderr, "gantry-grpc-testserver: bad log level %s\n", optarg);
                return 2;
            }
            break;
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    log_set_replica("testserver");
    signal(SIGPIPE, SIG_IGN);
    t.loop = uv_default_loop();
    int rv = grpc_server_new(t.loop, &cfg, &t.server, errmsg);
    if (rv != 0) {
        fprintf(stderr, "gantry-grpc-testserver: %s\n", errmsg);
        return 1;
    }
    for (size_t i = 0; api_services[i] != NULL; i++) {
        grpc_server_add_service(t.server, api_services[i]);
    }
    if ((rv = health_new(t.server, &t.health)) != 0 || (rv = reflection_new(t.server, &t.refl)) != 0 ||
        (rv = echo_new(t.server, &t.echo)) != 0 ||
        (rv = echo_route_checked(t.echo, t.server, api_services)) != 0) {
        fprintf(stderr, "gantry-grpc-testserver: registering services: %s\n", gerr_str(rv));
        return 1;
    }
    if ((rv = reflection_add_descriptor_set(t.refl, api_descriptor_set, api_descriptor_set_len, errmsg)) !=
            0 ||
        (rv = reflection_add_descriptor_set(t.refl, api_testing_descriptor_set,
                                            api_testing_descriptor_set_len, errmsg)) != 0) {
        fprintf(stderr, "gantry-grpc-testserver: descriptor sets: %s\n", errmsg);
        return 1;
    }
    int exit_code = 0;
    if ((rv = grpc_server_start(t.server, errmsg)) != 0) {
        fprintf(stderr, "gantry-grpc-testserver: %s\n", errmsg);
        exit_code = 1;
        t.stopping = true;
        uv_signal_init(t.loop, &t.sigterm);
        uv_signal_init(t.loop, &t.sigint);
        uv_signal_init(t.loop, &t.sigusr1);
        uv_timer_init(t.loop, &t.grace_timer);
        grpc_server_shutdown(t.server, 0, ts_server_closed, &t);
        goto run;
    }
    health_serve_all(t.health, t.server);
    if (strcmp(admin_addr, "off") != 0) {
        acfg.listen = admin_addr;
        acfg.data = &t;
        if ((rv = admin_start(t.loop, &acfg, &t.admin, errmsg)) != 0) {
            fprintf(stderr, "gantry-grpc-testserver: %s\n", errmsg);
            t.admin = NULL;
            exit_code = 1;
        }
    }
    uv_signal_init(t.loop, &t.sigterm);
    uv_signal_init(t.loop, &t.sigint);
    uv_signal_init(t.loop, &t.sigusr1);
    uv_timer_init(t.loop, &t.grace_timer);
    t.sigterm.data = &t;
    t.sigusr1.data = &t;
    t.sigint.data = &t;
    t.grace_timer.data = &t;
    if (exit_code != 0) {
        t.stopping = true;
        grpc_server_shutdown(t.server, 0, ts_server_closed, &t);
        goto run;
    }
    uv_signal_start(&t.sigterm, ts_signal_cb, SIGTERM);
    uv_signal_start(&t.sigint, ts_signal_cb, SIGINT);
    uv_signal_start(&t.sigusr1, ts_flap_cb, SIGUSR1);
    if (port_file != NULL && ts_write_port_file(port_file, grpc_server_port(t.server),
                                                t.admin != NULL ? admin_port(t.admin) : 0) != 0) {
        fprintf(stderr, "gantry-grpc-testserver: cannot write %s\n", port_file);
        exit_code = 1;
        t.stopping = true;
        grpc_server_shutdown(t.server, 0, ts_server_closed, &t);
    }
run:
    uv_run(t.loop, UV_RUN_DEFAULT);
    echo_stop(t.echo);
    echo_free(t.echo);
    reflection_free(t.refl);
    health_free(t.health);
    grpc_server_free(t.server);
    int lrv = uv_loop_close(t.loop);
    if (lrv != 0) {
        LOG_ERROR("testserver: handles left open at exit: %s", uv_strerror(lrv));
        exit_code = 1;
    }
    LOG_INFO("testserver: exit %d", exit_code);
    return exit_code;
}
