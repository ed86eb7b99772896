/* The gantry CLI's calls: failover across the endpoints, exit codes and messages that say what to
 * do; and the argument helpers every command uses (tools/gantry.h).
 *
 * Failover: a call starts at the endpoint that answered last. A connection that cannot be made
 * (refused, reset, timed out) or a reply of UNAVAILABLE moves it to the next endpoint; when every
 * endpoint failed that way it waits a little and goes round again, until c->retry_ms (a leader
 * election after a replica died takes a few seconds). The request is the same every time: writes
 * carry a request_id, so a write retried on another replica applies once. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gantry/v1/principals.pb-c.h"
#include "lib/rand.h"
#include "server/grpc/status.h"
#include "tools/gantry.h"

void gantry_request_id(char out[37])
{
    uint8_t b[16];
    rand_bytes(b, sizeof b);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* What to do about a failed call, by status. */
static const char *hint(struct cli *c, int status)
{
    switch (status) {
    case GRPC_STATUS_UNAUTHENTICATED:
        return c->token[0] == '\0'
                   ? "no credential: set GANTRY_TOKEN, pass --token-file FILE, or use a context "
                     "with one (gantry context create --help)"
                   : "the credential was not accepted (revoked, expired or mistyped): check "
                     "GANTRY_TOKEN, --token-file or the context's (gantry context show)";
    case GRPC_STATUS_PERMISSION_DENIED:
        return "your principal lacks the role for this: see `gantry whoami`; a platform or namespace admin "
               "grants roles with `gantry role grant`";
    case GRPC_STATUS_NOT_FOUND:
        return "check the name and the namespace (--namespace, or the context's default)";
    case GRPC_STATUS_ALREADY_EXISTS:
        return "pick another name, or get/update the existing one";
    case GRPC_STATUS_INVALID_ARGUMENT:
        return "check the arguments (add --help to the command for its synopsis)";
    case GRPC_STATUS_FAILED_PRECONDITION:
    case GRPC_STATUS_ABORTED:
        return "the object changed or is in the wrong state: get it again, then retry";
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return "a quota or limit was reached: see `gantry quota get`";
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return "the cluster did not answer in time: check `gantry cluster health` and retry";
    case GRPC_STATUS_UNAVAILABLE: /* only printed for calls with unavailable_final */
        return "the message says what the cluster waits for: try again in a moment";
    case GRPC_STATUS_UNIMPLEMENTED:
        return "this replica does not serve that call: is it running an older version?";
    default:
        return NULL;
    }
}

static int exit_code(int status)
{
    return status == GRPC_STATUS_UNAUTHENTICATED || status == GRPC_STATUS_PERMISSION_DENIED
               ? GANTRY_EXIT_DENIED
           : status == GRPC_STATUS_UNAVAILABLE ? GANTRY_EXIT_UNAVAILABLE
                                               : GANTRY_EXIT_FAILED;
}

/* The caller's stream callback, noting whether it refused a message (it then printed why). */
struct trampoline {
    grpc_client_msg_cb cb;
    void *arg;
    bool refused;
};

static int on_message(const ProtobufCMessage *msg, void *arg)
{
    struct trampoline *t = arg;
    int rv = t->cb(msg, t->arg);
    t->refused = t->refused || rv != 0;
    return rv;
}

int gantry_check_endpoints(struct cli *c)
{
    if (c->n_endpoints == 0 || c->ca[0] == '\0') {
        fprintf(stderr,
                "gantry: %s\n  create a context (`gantry context create --help`), or pass --endpoint and "
                "--ca (or "
                "GANTRY_ENDPOINT and GANTRY_CA)\n",
                c->n_endpoints == 0 ? "no endpoint to call" : "no cluster CA to verify the replicas with");
        return GANTRY_EXIT_USAGE;
    }
    return 0;
}

int gantry_call(struct cli *c, const char *path, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp, grpc_client_msg_cb cb, void *arg,
                ProtobufCMessage **out, unsigned timeout_ms)
{
    char auth[sizeof c->token + 16];
    snprintf(auth, sizeof auth, "Bearer %s", c->token);
    struct grpc_client_md md = {"authorization", auth};
    char errmsg[GERR_MSG_SIZE] = "", last[GERR_MSG_SIZE + 128] = "";
    uint64_t deadline = now_ms() + c->retry_ms;
    struct trampoline t = {.cb = cb, .arg = arg};
    bool said_retry = false;
    if (gantry_check_endpoints(c) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    for (;;) {
        for (unsigned k = 0; k < c->n_endpoints; k++) {
            unsigned i = (c->preferred + k) % c->n_endpoints;
            struct grpc_client_config cc = {.target = c->endpoints[i], .ca_file = c->ca[0] ? c->ca : NULL};
            struct grpc_client *gc;
            struct grpc_client_result res = {.status = -1};
            int rv = grpc_client_connect(&cc, &gc, errmsg);
            if (rv == GERR_PERM) {
                fprintf(
                    stderr,
                    "gantry: %s: %s\n  the server's certificate does not verify against the CA %s: pass the "
                    "cluster's CA (<data_dir>/tls/ca.pem) with --ca, GANTRY_CA or the context\n",
                    c->endpoints[i], errmsg, c->ca);
                return GANTRY_EXIT_UNAVAILABLE;
            }
            if (rv == GERR_INVAL) {
                fprintf(stderr, "gantry: %s: %s\n", c->endpoints[i], errmsg);
                return GANTRY_EXIT_USAGE;
            }
            if (rv != 0) {
                snprintf(last, sizeof last, "%s: %s", c->endpoints[i], errmsg);
                continue;
            }
            if (out != NULL) {
                rv = grpc_client_unary(gc, path, &md, 1, req, resp, timeout_ms, out, &res, errmsg);
            } else {
                if (c->input != NULL) {
                    grpc_client_set_input(gc, c->input);
                }
                rv = grpc_client_call(gc, path, &md, 1, req, resp, on_message, &t, timeout_ms, &res, errmsg);
            }
            grpc_client_close(gc);
            c->last_status = rv == 0 ? res.status : -1;
            c->last_revision = rv == 0 ? res.revision : 0;
            if ((rv == 0 && res.status == GRPC_STATUS_OK) || (cb != NULL && c->stream_done)) {
                c->preferred = i;
                return GANTRY_EXIT_OK;
            }
            if (t.refused) {
                return GANTRY_EXIT_FAILED; /* the callback said why */
            }
            if (cb != NULL && c->deadline_ok &&
                (rv == GERR_TIMEOUT || (rv == 0 && res.status == GRPC_STATUS_DEADLINE_EXCEEDED))) {
                return GANTRY_EXIT_OK;
            }
            if (rv == 0 && (res.status != GRPC_STATUS_UNAVAILABLE || c->unavailable_final)) {
                if (c->quiet) {
                    return exit_code(res.status);
                }
                const char *h = hint(c, res.status);
                fprintf(stderr, "gantry: %s (%s)\n", res.message, grpc_status_name(res.status));
                if (h != NULL) {
                    fprintf(stderr, "  %s\n", h);
                }
                return exit_code(res.status);
            }
            if (out == NULL && res.n_messages > 0) {
                /* A stream that delivered something: the caller resumes it where it broke. */
                snprintf(last, sizeof last, "%s: %s", c->endpoints[i], rv == 0 ? res.message : errmsg);
                fprintf(stderr, "gantry: %s\n", last);
                return GANTRY_EXIT_UNAVAILABLE;
            }
            if (rv != 0 && rv != GERR_CLOSED && rv != GERR_TIMEOUT && rv != GERR_IO) {
                fprintf(stderr, "gantry: %s: %s\n", c->endpoints[i], errmsg);
                return GANTRY_EXIT_FAILED;
            }
            snprintf(last, sizeof last, "%s: %s", c->endpoints[i], rv == 0 ? res.message : errmsg);
        }
        if (now_ms() >= deadline) {
            break;
        }
        if (!said_retry) {
            fprintf(stderr, "gantry: no endpoint answered yet (%s); retrying for up to %u s\n", last,
                    c->retry_ms / 1000);
            said_retry = true;
        }
        usleep(500000);
    }
    fprintf(
        stderr,
        "gantry: no endpoint answered (last: %s)\n  check that the cluster runs (tools/dev-cluster.sh status "
        "for the local one) and the endpoints (gantry context show)\n",
        last);
    return GANTRY_EXIT_UNAVAILABLE;
}

static const ProtobufCFieldDescriptor *field(const ProtobufCMessageDescriptor *d, const char *name)
{
    return protobuf_c_message_descriptor_get_field_by_name(d, name);
}

int gantry_call_json(struct cli *c, const char *path, ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp, const char *items, json_t **out)
{
    const ProtobufCFieldDescriptor *pf = items != NULL ? field(req->descriptor, "page") : NULL;
    /* Static: the request points at it during the call (nothing here is reentrant). */
    static Gantry__V1__PageRequest page = GANTRY__V1__PAGE_REQUEST__INIT;
    static char token[1024];
    token[0] = '\0';
    if (pf != NULL) {
        page.page_token = token;
        *(Gantry__V1__PageRequest **)((char *)req + pf->offset) = &page;
    }
    *out = NULL;
    for (int pages = 0; pages < 10000; pages++) {
        ProtobufCMessage *m;
        int rc = gantry_call(c, path, req, resp, NULL, NULL, &m,
                             c->call_timeout_ms != 0 ? c->call_timeout_ms : 30000);
        if (rc != 0) {
            json_decref(*out);
            *out = NULL;
            return rc;
        }
        json_t *j = gantry_json(m);
        protobuf_c_message_free_unpacked(m, NULL);
        const char *next = json_string_value(json_object_get(j, "next_page_token"));
        snprintf(token, sizeof token, "%s", next != NULL ? next : "");
        if (*out == NULL) {
            *out = j;
        } else {
            json_array_extend(json_object_get(*out, items), json_object_get(j, items));
            json_decref(j);
        }
        if (pf == NULL || token[0] == '\0') {
            break;
        }
    }
    if (pf != NULL) {
        *(Gantry__V1__PageRequest **)((char *)req + pf->offset) = NULL;
        json_object_del(*out, "next_page_token");
    }
    return 0;
}

int gantry_simple(struct cli *c, const char *path, ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp, const char *items, const struct gantry_col *cols)
{
    json_t *doc;
    int rc = gantry_call_json(c, path, req, resp, items, &doc);
    if (rc == 0) {
        gantry_print(c, doc, items, cols);
        json_decref(doc);
    }
    return rc;
}

/* --- read options --- */

/* --max-staleness: a whole number of milliseconds, or one followed by ms, s or m; at most
 * UINT32_MAX ms (the server refuses more than MODEL_MAX_STALENESS_MS itself, saying so). */
static int staleness(const char *s, uint32_t *ms)
{
    size_t digits = strspn(s, "0123456789");
    const char *unit = s + digits;
    uint64_t mult = strcmp(unit, "") == 0 || strcmp(unit, "ms") == 0 ? 1
                    : strcmp(unit, "s") == 0                         ? 1000
                    : strcmp(unit, "m") == 0                         ? 60000
                                                                     : 0;
    uint64_t v = 0;
    bool ok = digits > 0 && digits <= 10 && mult != 0;
    for (size_t i = 0; ok && i < digits; i++) {
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (!ok || v * mult > UINT32_MAX) {
        fprintf(stderr,
                "gantry: --max-staleness is a duration such as 500ms, 2s or 1m, or a number of milliseconds "
                "(the server takes at most 60s), not \"%.40s%s\"\n",
                s, strlen(s) > 40 ? "..." : "");
        return -1;
    }
    *ms = (uint32_t)(v * mult);
    return 0;
}

int gantry_read_opts(int *argc, char **argv, struct gantry_read *r)
{
    *r = (struct gantry_read){.opts = GANTRY__V1__READ_OPTIONS__INIT};
    const char *min = gantry_opt(argc, argv, "--min-revision"),
               *stale = gantry_opt(argc, argv, "--max-staleness");
    r->show = gantry_flag(argc, argv, "--show-revision");
    if (min != NULL && stale != NULL) {
        fprintf(stderr, "gantry: --min-revision and --max-staleness exclude each other: give at most one\n");
        return GANTRY_EXIT_USAGE;
    }
    if (gantry_u64("--min-revision", min, INT64_MAX, &r->opts.min_revision) != 0 ||
        (stale != NULL && staleness(stale, &r->opts.max_staleness_ms) != 0)) {
        return GANTRY_EXIT_USAGE;
    }
    return 0;
}

int gantry_read_simple(struct cli *c, const char *path, ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp, const char *items,
                       const struct gantry_col *cols, struct gantry_read *r)
{
    bool set = r->opts.min_revision != 0 || r->opts.max_staleness_ms != 0;
    const ProtobufCFieldDescriptor *rf = field(req->descriptor, "read");
    if (rf != NULL && rf->descriptor != &gantry__v1__read_options__descriptor) {
        rf = NULL;
    }
    if (set && rf == NULL) {
        fprintf(stderr, "gantry: %s takes no read options (--min-revision, --max-staleness)\n", path);
        return GANTRY_EXIT_USAGE;
    }
    if (set) {
        *(Gantry__V1__ReadOptions **)((char *)req + rf->offset) = &r->opts;
    }
    json_t *doc;
    int rc = gantry_call_json(c, path, req, resp, items, &doc);
    if (set) {
        *(Gantry__V1__ReadOptions **)((char *)req + rf->offset) = NULL;
    }
    if (rc != 0) {
        return rc;
    }
    gantry_print(c, doc, items, cols);
    if (r->show) {
        json_t *rev = items != NULL ? json_object_get(doc, "revision") : NULL;
        uint64_t at = rev != NULL ? (uint64_t)json_integer_value(rev) : c->last_revision;
        if (at != 0) {
            fprintf(stderr, "revision: %" PRIu64 "\n", at);
        } else {
            fprintf(stderr, "revision: none (the leader's store answered: linearizable)\n");
        }
    }
    json_decref(doc);
    return 0;
}

/* --- argument helpers --- */

static void take(int *argc, char **argv, int i, int n)
{
    memmove(&argv[i], &argv[i + n], sizeof *argv * (size_t)(*argc - i - n));
    *argc -= n;
}

const char *gantry_opt(int *argc, char **argv, const char *name)
{
    for (int i = 0; i < *argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], name) == 0 && i + 1 < *argc) {
            const char *v = argv[i + 1];
            take(argc, argv, i, 2);
            return v;
        }
    }
    return NULL;
}

int gantry_opt_all(int *argc, char **argv, const char *name, const char **vals, int max)
{
    int n = 0;
    const char *v;
    while (n < max && (v = gantry_opt(argc, argv, name)) != NULL) {
        vals[n++] = v;
    }
    return n;
}

bool gantry_flag(int *argc, char **argv, const char *name)
{
    for (int i = 0; i < *argc && strcmp(argv[i], "--") != 0; i++) {
        if (strcmp(argv[i], name) == 0) {
            take(argc, argv, i, 1);
            return true;
        }
    }
    return false;
}

int gantry_args(const struct gantry_cmd *cmd, int argc, char **argv, int min, int max)
{
    for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "gantry %s%s%s: unknown option %s, or it needs a value\n", cmd->group,
                    cmd->name ? " " : "", cmd->name ? cmd->name : "", argv[i]);
            fprintf(stderr, "usage: gantry %s%s%s %s\n", cmd->group, cmd->name ? " " : "",
                    cmd->name ? cmd->name : "", cmd->args);
            return GANTRY_EXIT_USAGE;
        }
    }
    if (argc < min || (max >= 0 && argc > max)) {
        fprintf(stderr, "gantry %s%s%s: expected %s\nusage: gantry %s%s%s %s\n", cmd->group,
                cmd->name ? " " : "", cmd->name ? cmd->name : "",
                argc < min ? "more arguments" : "fewer arguments", cmd->group, cmd->name ? " " : "",
                cmd->name ? cmd->name : "", cmd->args);
        return GANTRY_EXIT_USAGE;
    }
    return 0;
}

int gantry_u64(const char *what, const char *s, uint64_t max, uint64_t *out)
{
    if (s == NULL) {
        return 0;
    }
    /* By hand rather than strtoull, which skips leading spaces, takes a sign ("-1" is 2^64-1) and
     * reports overflow only through errno. */
    uint64_t v = 0;
    bool ok = *s != '\0';
    for (const char *p = s; ok && *p != '\0'; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        ok = *p >= '0' && *p <= '9' && d <= max && v <= (max - d) / 10; /* so v * 10 + d <= max */
        v = ok ? v * 10 + d : v;
    }
    if (!ok) {
        fprintf(stderr, "gantry: %s must be a whole number from 0 to %" PRIu64 ", not \"%.40s%s\"\n", what,
                max, s, strlen(s) > 40 ? "..." : "");
        return -1;
    }
    *out = v;
    return 0;
}

const char *gantry_ns(struct cli *c)
{
    return c->ns[0] != '\0' ? c->ns : "default";
}

const char *gantry_list_ns(struct cli *c)
{
    return c->all_namespaces ? "" : c->ns;
}

int gantry_map(const ProtobufCMessageDescriptor *entry, const char **pairs, int n_pairs, void *out, size_t *n)
{
    const ProtobufCFieldDescriptor *kf = field(entry, "key"), *vf = field(entry, "value");
    ProtobufCMessage **arr = calloc((size_t)n_pairs + 1, sizeof *arr);
    *n = 0;
    for (int i = 0; i < n_pairs; i++) {
        const char *eq = strchr(pairs[i], '=');
        if (eq == NULL || eq == pairs[i]) {
            fprintf(stderr, "gantry: \"%s\" is not KEY=VALUE\n", pairs[i]);
            gantry_map_free(arr, *n);
            *n = 0;
            return -1;
        }
        ProtobufCMessage *m = calloc(1, entry->sizeof_message);
        protobuf_c_message_init(entry, m);
        *(char **)((char *)m + kf->offset) = strndup(pairs[i], (size_t)(eq - pairs[i]));
        *(char **)((char *)m + vf->offset) = strdup(eq + 1);
        arr[(*n)++] = m;
    }
    *(ProtobufCMessage ***)out = arr;
    return 0;
}

void gantry_map_free(void *arr, size_t n)
{
    ProtobufCMessage **a = arr;
    for (size_t i = 0; i < n; i++) {
        const ProtobufCMessageDescriptor *d = a[i]->descriptor;
        free(*(char **)((char *)a[i] + field(d, "key")->offset));
        free(*(char **)((char *)a[i] + field(d, "value")->offset));
        free(a[i]);
    }
    free(a);
}

/* 8-4-4-4-12 hex digits. */
static bool is_uuid(const char *s)
{
    if (strlen(s) != 36) {
        return false;
    }
    for (int i = 0; i < 36; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : strchr("0123456789abcdefABCDEF", s[i]) == NULL) {
            return false;
        }
    }
    return true;
}

int gantry_principal_id(struct cli *c, const char *id_or_name, char *out, size_t len)
{
    if (is_uuid(id_or_name)) { /* an id already: no lookup, which a plain user may not make */
        snprintf(out, len, "%s", id_or_name);
        return 0;
    }
    Gantry__V1__GetPrincipalRequest req = GANTRY__V1__GET_PRINCIPAL_REQUEST__INIT;
    req.id = (char *)id_or_name;
    ProtobufCMessage *p;
    bool quiet = c->quiet;
    c->quiet = true;
    int rc = gantry_call(c, "/gantry.v1.Principals/Get", &req.base, &gantry__v1__principal__descriptor, NULL,
                         NULL, &p, 10000);
    c->quiet = quiet;
    if (rc != 0 && c->last_status == GRPC_STATUS_PERMISSION_DENIED) {
        fprintf(stderr,
                "gantry: you may not look up the principal \"%s\" by name\n  give its id instead (an admin "
                "sees it "
                "with `gantry user get %s`)\n",
                id_or_name, id_or_name);
    } else if (rc != 0 && c->last_status == GRPC_STATUS_NOT_FOUND) {
        fprintf(stderr,
                "gantry: there is no principal \"%s\"\n  see `gantry user list` and `gantry sa list`\n",
                id_or_name);
    } else if (rc != 0 && c->last_status > 0) {
        fprintf(stderr, "gantry: looking up the principal \"%s\" failed (%s)\n", id_or_name,
                grpc_status_name(c->last_status));
    }
    if (rc != 0) {
        return rc;
    }
    snprintf(out, len, "%s", ((Gantry__V1__Principal *)p)->meta->id);
    protobuf_c_message_free_unpacked(p, NULL);
    return 0;
}

int gantry_time(const char *s, int64_t *ms)
{
    char *end;
    if (s == NULL) {
        return 0;
    }
    /* Numbers are read with strtoll and checked for overflow (ERANGE), and relative times for
     * overflowing the 64 bits of milliseconds, so nothing wraps around into another time. */
    if ((s[0] == '-' || s[0] == '+') && s[1] >= '0' && s[1] <= '9') {
        errno = 0;
        long long v = strtoll(s + 1, &end, 10);
        long long unit = *end == 's'   ? 1000LL
                         : *end == 'm' ? 60000LL
                         : *end == 'h' ? 3600000LL
                         : *end == 'd' ? 86400000LL
                                       : 0;
        if (unit != 0 && end[1] == '\0' && errno == 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
            if (v > (s[0] == '-' ? now : INT64_MAX - now) / unit) {
                fprintf(
                    stderr,
                    "gantry: \"%.40s\" is out of range: a time from 1970 on, in 64 bits of milliseconds\n",
                    s);
                return -1;
            }
            *ms = now + (s[0] == '-' ? -v : v) * unit;
            return 0;
        }
    }
    struct tm tm = {0};
    end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (end != NULL && *end == '\0') {
        time_t t = timegm(&tm);
        if (t < 0 || (int64_t)t > INT64_MAX / 1000) {
            fprintf(stderr, "gantry: \"%.40s\" is out of range: a time from 1970 on\n", s);
            return -1;
        }
        *ms = (int64_t)t * 1000;
        return 0;
    }
    if (s[0] >= '0' && s[0] <= '9') {
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (*end == '\0' && errno == ERANGE) {
            fprintf(stderr,
                    "gantry: \"%.40s\" is out of range: milliseconds since the epoch are below 2^63\n", s);
            return -1;
        }
        if (*end == '\0') {
            *ms = v;
            return 0;
        }
    }
    fprintf(stderr,
            "gantry: \"%.40s\" is not a time: give milliseconds since the epoch, -30m/-2h/+1d, or "
            "2026-01-31T12:00:00Z\n",
            s);
    return -1;
}
