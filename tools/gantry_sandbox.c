/* gantry sandbox: the Sandboxes service (docs/cli.md): create (--wait shows progress until READY or
 * ERROR), get, list, delete, share, unshare, shared-with-me and watch (resumed on another replica
 * from the last revision seen when its stream breaks). */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gantry/v1/sandboxes.pb-c.h"
#include "server/grpc/status.h"
#include "lib/buf.h"
#include "server/grpc/client.h"
#include "tools/gantry.h"

#define END                                                                                                  \
    {                                                                                                        \
        NULL, NULL, NULL, false                                                                              \
    }

static const struct gantry_col sb_cols[] = {
    {"NAMESPACE", "meta.namespace", NULL, false},    {"NAME", "meta.name", NULL, false},
    {"PHASE", "status.phase", "PHASE_", false},      {"IMAGE", "spec.image", NULL, false},
    {"GPUS", "spec.gpu_count", NULL, false},         {"OWNER", "spec.owner_id", NULL, false},
    {"DRIVER", "status.driver", NULL, false},        {"HANDLE", "status.driver_handle", NULL, false},
    {"EXPIRES", "status.expires_at_ms", NULL, true}, END,
};

static const struct gantry_col share_cols[] = {
    {"NAMESPACE", "namespace", NULL, false},
    {"SANDBOX", "sandbox_id", NULL, false},
    {"GRANTEE", "grantee_principal_id", NULL, false},
    {"ACCESS", "access", "SHARE_ACCESS_", false},
    {"BY", "created_by", NULL, false},
    {"AT", "created_at_ms", NULL, true},
    END,
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *phase_name(const Gantry__V1__SandboxStatus *s)
{
    const ProtobufCEnumValue *v =
        s != NULL ? protobuf_c_enum_descriptor_get_value(&gantry__v1__sandbox_status__phase__descriptor,
                                                         (int)s->phase)
                  : NULL;
    return v != NULL ? v->name + 6 : "UNSPECIFIED"; /* without "PHASE_" */
}

/* The newest condition's reason and message, or "". */
static void condition(const Gantry__V1__SandboxStatus *s, char *out, size_t len)
{
    out[0] = '\0';
    const Gantry__V1__SandboxCondition *best = NULL;
    for (size_t i = 0; s != NULL && i < s->n_conditions; i++) {
        if (best == NULL || s->conditions[i]->last_transition_ms >= best->last_transition_ms) {
            best = s->conditions[i];
        }
    }
    if (best != NULL) {
        snprintf(out, len, "%s%s%s", best->reason, best->reason[0] && best->message[0] ? ": " : "",
                 best->message);
    }
}

/* Poll until READY (0) or ERROR or @timeout_s (GANTRY_EXIT_NOT_READY), printing each change. */
static int sb_wait(struct cli *c, const char *ns, const char *name, uint64_t timeout_s)
{
    uint64_t start = mono_ms(), last_note = start;
    char last[512] = "";
    Gantry__V1__GetSandboxRequest req = GANTRY__V1__GET_SANDBOX_REQUEST__INIT;
    req.namespace_ = (char *)ns;
    req.name = (char *)name;
    for (;;) {
        ProtobufCMessage *out;
        int rc = gantry_call(c, "/gantry.v1.Sandboxes/Get", &req.base, &gantry__v1__sandbox__descriptor, NULL,
                             NULL, &out, 10000);
        if (rc != 0) {
            return rc;
        }
        Gantry__V1__Sandbox *s = (Gantry__V1__Sandbox *)out;
        char cond[400], now[512];
        condition(s->status, cond, sizeof cond);
        const char *phase = phase_name(s->status);
        snprintf(now, sizeof now, "%s%s%s", phase, cond[0] ? " (" : "", cond[0] ? cond : "");
        if (cond[0]) {
            strncat(now, ")", sizeof now - strlen(now) - 1);
        }
        double secs = (double)(mono_ms() - start) / 1000.0;
        if (strcmp(now, last) != 0) {
            fprintf(stderr, "[%5.1fs] %s/%s: %s\n", secs, ns, name, now);
            snprintf(last, sizeof last, "%s", now);
            last_note = mono_ms();
        } else if (mono_ms() - last_note >= 10000) {
            fprintf(stderr, "[%5.1fs] %s/%s: still %s\n", secs, ns, name, phase);
            last_note = mono_ms();
        }
        int done = strcmp(phase, "READY") == 0                                    ? 0
                   : strcmp(phase, "ERROR") == 0 || strcmp(phase, "STOPPED") == 0 ? 1
                                                                                  : -1;
        if (done == 0) {
            json_t *doc = gantry_json(out);
            gantry_print(c, doc, NULL, sb_cols);
            json_decref(doc);
        }
        protobuf_c_message_free_unpacked(out, NULL);
        if (done == 0) {
            return 0;
        }
        if (done == 1) {
            fprintf(stderr,
                    "gantry: %s/%s is %s\n  its conditions: gantry sandbox get %s --namespace %s -o yaml\n",
                    ns, name, phase, name, ns);
            return GANTRY_EXIT_NOT_READY;
        }
        if (mono_ms() - start >= timeout_s * 1000) {
            fprintf(stderr,
                    "gantry: %s/%s is not READY after %" PRIu64
                    " s (still %s)\n  keep waiting with `gantry sandbox "
                    "watch %s --namespace %s`, or check the lease holder's log (gantry cluster lease)\n",
                    ns, name, timeout_s, phase, name, ns);
            return GANTRY_EXIT_NOT_READY;
        }
        usleep(300000);
    }
}

static int sb_create(struct cli *c, int argc, char **argv)
{
    const char *image = gantry_opt(&argc, argv, "--image"), *owner = gantry_opt(&argc, argv, "--owner");
    const char *env[64], *labels[32], *dcfg[32], *providers[16], *egress[64];
    int n_egress = gantry_opt_all(&argc, argv, "--egress-allow", egress, 64);
    int n_env = gantry_opt_all(&argc, argv, "--env", env, 64);
    int n_labels = gantry_opt_all(&argc, argv, "--label", labels, 32);
    int n_dcfg = gantry_opt_all(&argc, argv, "--driver-config", dcfg, 32);
    int n_prov = gantry_opt_all(&argc, argv, "--provider", providers, 16);
    uint64_t gpus = 0, life = 0, timeout = 300;
    if (gantry_u64("--gpus", gantry_opt(&argc, argv, "--gpus"), UINT32_MAX, &gpus) != 0 ||
        gantry_u64("--lifetime", gantry_opt(&argc, argv, "--lifetime"), UINT64_MAX, &life) != 0 ||
        gantry_u64("--timeout", gantry_opt(&argc, argv, "--timeout"), GANTRY_MAX_TIMEOUT_S, &timeout) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    bool wait = gantry_flag(&argc, argv, "--wait");
    int dash = 0;
    while (dash < argc && strcmp(argv[dash], "--") != 0) {
        dash++;
    }
    int rc = gantry_args(gantry_find("sandbox", "create"), dash, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    if (image == NULL) {
        fprintf(stderr, "gantry sandbox create: --image is required\n");
        return GANTRY_EXIT_USAGE;
    }
    const char *ns = gantry_ns(c);
    char oid[64] = "", rid[37];
    if (owner != NULL && (rc = gantry_principal_id(c, owner, oid, sizeof oid)) != 0) {
        return rc;
    }
    gantry_request_id(rid);
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__SandboxSpec spec = GANTRY__V1__SANDBOX_SPEC__INIT;
    Gantry__V1__Sandbox sb = GANTRY__V1__SANDBOX__INIT;
    Gantry__V1__CreateSandboxRequest req = GANTRY__V1__CREATE_SANDBOX_REQUEST__INIT;
    Gantry__V1__Policy own = GANTRY__V1__POLICY__INIT; /* the sandbox's own policy: egress_allow only */
    if (n_egress > 0) {
        own.egress_allow = (char **)egress;
        own.n_egress_allow = (size_t)n_egress;
        spec.policy = &own;
    }
    if (gantry_map(&gantry__v1__object_meta__labels_entry__descriptor, labels, n_labels, &meta.labels,
                   &meta.n_labels) != 0 ||
        gantry_map(&gantry__v1__sandbox_spec__env_entry__descriptor, env, n_env, &spec.env, &spec.n_env) !=
            0 ||
        gantry_map(&gantry__v1__sandbox_spec__driver_config_entry__descriptor, dcfg, n_dcfg,
                   &spec.driver_config, &spec.n_driver_config) != 0) {
        rc = GANTRY_EXIT_USAGE;
        goto done;
    }
    meta.name = argv[0];
    meta.namespace_ = (char *)ns;
    spec.image = (char *)image;
    spec.gpu_count = (uint32_t)gpus;
    spec.lifetime_seconds = life;
    spec.owner_id = oid;
    spec.n_providers = (size_t)n_prov;
    spec.providers = (char **)providers;
    if (dash + 1 < argc) {
        spec.n_command = (size_t)(argc - dash - 1);
        spec.command = argv + dash + 1;
    }
    sb.meta = &meta;
    sb.spec = &spec;
    req.sandbox = &sb;
    req.request_id = rid;
    if (!wait) {
        rc = gantry_simple(c, "/gantry.v1.Sandboxes/Create", &req.base, &gantry__v1__sandbox__descriptor,
                           NULL, sb_cols);
        goto done;
    }
    ProtobufCMessage *out;
    if ((rc = gantry_call(c, "/gantry.v1.Sandboxes/Create", &req.base, &gantry__v1__sandbox__descriptor, NULL,
                          NULL, &out, 15000)) != 0) {
        goto done;
    }
    protobuf_c_message_free_unpacked(out, NULL);
    fprintf(stderr, "sandbox %s/%s created; waiting until READY (at most %" PRIu64 " s)\n", ns, argv[0],
            timeout);
    rc = sb_wait(c, ns, argv[0], timeout);
done:
    gantry_map_free(meta.labels, meta.n_labels);
    gantry_map_free(spec.env, spec.n_env);
    gantry_map_free(spec.driver_config, spec.n_driver_config);
    return rc;
}

static int sb_get(struct cli *c, int argc, char **argv)
{
    struct gantry_read rd;
    int rc = gantry_read_opts(&argc, argv, &rd);
    if (rc != 0 || (rc = gantry_args(gantry_find("sandbox", "get"), argc, argv, 1, 1)) != 0) {
        return rc;
    }
    Gantry__V1__GetSandboxRequest req = GANTRY__V1__GET_SANDBOX_REQUEST__INIT;
    req.namespace_ = (char *)gantry_ns(c);
    req.name = argv[0];
    return gantry_read_simple(c, "/gantry.v1.Sandboxes/Get", &req.base, &gantry__v1__sandbox__descriptor,
                              NULL, sb_cols, &rd);
}

static int sb_list(struct cli *c, int argc, char **argv)
{
    const char *owner = gantry_opt(&argc, argv, "--owner"), *sel[32];
    int n_sel = gantry_opt_all(&argc, argv, "--selector", sel, 32);
    struct gantry_read rd;
    int rc = gantry_read_opts(&argc, argv, &rd);
    if (rc != 0) {
        return rc;
    }
    rc = gantry_args(gantry_find("sandbox", "list"), argc, argv, 0, 0);
    Gantry__V1__ListSandboxesRequest req = GANTRY__V1__LIST_SANDBOXES_REQUEST__INIT;
    Gantry__V1__LabelSelector s = GANTRY__V1__LABEL_SELECTOR__INIT;
    char oid[64] = "";
    if (rc != 0 || gantry_map(&gantry__v1__label_selector__match_labels_entry__descriptor, sel, n_sel,
                              &s.match_labels, &s.n_match_labels) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    if (owner != NULL && (rc = gantry_principal_id(c, owner, oid, sizeof oid)) != 0) {
        gantry_map_free(s.match_labels, s.n_match_labels);
        return rc;
    }
    req.namespace_ = (char *)gantry_list_ns(c);
    req.owner_id = oid;
    req.selector = n_sel > 0 ? &s : NULL;
    rc = gantry_read_simple(c, "/gantry.v1.Sandboxes/List", &req.base,
                            &gantry__v1__list_sandboxes_response__descriptor, "sandboxes", sb_cols, &rd);
    gantry_map_free(s.match_labels, s.n_match_labels);
    return rc;
}

static int sb_delete(struct cli *c, int argc, char **argv)
{
    bool wait = gantry_flag(&argc, argv, "--wait");
    int rc = gantry_args(gantry_find("sandbox", "delete"), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__DeleteSandboxRequest req = GANTRY__V1__DELETE_SANDBOX_REQUEST__INIT;
    req.request_id = rid;
    req.namespace_ = (char *)gantry_ns(c);
    req.name = argv[0];
    if ((rc = gantry_simple(c, "/gantry.v1.Sandboxes/Delete", &req.base, &gantry__v1__sandbox__descriptor,
                            NULL, sb_cols)) != 0 ||
        !wait) {
        return rc;
    }
    Gantry__V1__GetSandboxRequest get = GANTRY__V1__GET_SANDBOX_REQUEST__INIT;
    get.namespace_ = req.namespace_;
    get.name = argv[0];
    uint64_t start = mono_ms();
    c->quiet = true;
    while (mono_ms() - start < 300000) {
        ProtobufCMessage *out;
        rc = gantry_call(c, "/gantry.v1.Sandboxes/Get", &get.base, &gantry__v1__sandbox__descriptor, NULL,
                         NULL, &out, 10000);
        if (rc != 0 && c->last_status == GRPC_STATUS_NOT_FOUND) {
            fprintf(stderr, "sandbox %s/%s is gone\n", get.namespace_, argv[0]);
            return 0;
        }
        if (rc == 0) {
            protobuf_c_message_free_unpacked(out, NULL);
        } else if (c->last_status != GRPC_STATUS_UNAVAILABLE) {
            return rc;
        }
        usleep(300000);
    }
    fprintf(stderr, "gantry: %s/%s is still being deleted after 300 s\n", get.namespace_, argv[0]);
    return GANTRY_EXIT_NOT_READY;
}

static int sb_share(struct cli *c, int argc, char **argv)
{
    const char *access = gantry_opt(&argc, argv, "--access");
    int rc = gantry_args(gantry_find("sandbox", "share"), argc, argv, 2, 2);
    if (rc != 0) {
        return rc;
    }
    if (access != NULL && strcmp(access, "read") != 0 && strcmp(access, "exec") != 0) {
        fprintf(stderr, "gantry sandbox share: --access is read or exec\n");
        return GANTRY_EXIT_USAGE;
    }
    char id[64], rid[37];
    if ((rc = gantry_principal_id(c, argv[1], id, sizeof id)) != 0) {
        return rc;
    }
    gantry_request_id(rid);
    Gantry__V1__ShareSandboxRequest req = GANTRY__V1__SHARE_SANDBOX_REQUEST__INIT;
    req.request_id = rid;
    req.namespace_ = (char *)gantry_ns(c);
    req.name = argv[0];
    req.grantee_principal_id = id;
    req.access = access != NULL && strcmp(access, "exec") == 0 ? GANTRY__V1__SHARE_ACCESS__SHARE_ACCESS_EXEC
                                                               : GANTRY__V1__SHARE_ACCESS__SHARE_ACCESS_READ;
    return gantry_simple(c, "/gantry.v1.Sandboxes/Share", &req.base,
                         &gantry__v1__list_shares_response__descriptor, "shares", share_cols);
}

static int sb_unshare(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("sandbox", "unshare"), argc, argv, 2, 2);
    char id[64], rid[37];
    if (rc != 0 || (rc = gantry_principal_id(c, argv[1], id, sizeof id)) != 0) {
        return rc;
    }
    gantry_request_id(rid);
    Gantry__V1__UnshareSandboxRequest req = GANTRY__V1__UNSHARE_SANDBOX_REQUEST__INIT;
    req.request_id = rid;
    req.namespace_ = (char *)gantry_ns(c);
    req.name = argv[0];
    req.grantee_principal_id = id;
    return gantry_simple(c, "/gantry.v1.Sandboxes/Unshare", &req.base,
                         &gantry__v1__list_shares_response__descriptor, "shares", share_cols);
}

static int sb_shared(struct cli *c, int argc, char **argv)
{
    struct gantry_read rd;
    int rc = gantry_read_opts(&argc, argv, &rd);
    if (rc != 0 || (rc = gantry_args(gantry_find("sandbox", "shared-with-me"), argc, argv, 0, 0)) != 0) {
        return rc;
    }
    Gantry__V1__ListSharedWithMeRequest req = GANTRY__V1__LIST_SHARED_WITH_ME_REQUEST__INIT;
    req.namespace_ = (char *)gantry_list_ns(c);
    return gantry_read_simple(c, "/gantry.v1.Sandboxes/ListSharedWithMe", &req.base,
                              &gantry__v1__list_shared_with_me_response__descriptor, "sandboxes", sb_cols,
                              &rd);
}

/* --- watch --- */

struct watch {
    struct cli *c;
    const char *name;  /* only this sandbox, or NULL */
    uint64_t revision; /* the last revision seen: where a resumed watch starts */
    uint64_t count, max;
    bool header;
};

static int on_event(const ProtobufCMessage *msg, void *arg)
{
    struct watch *w = arg;
    const Gantry__V1__SandboxEvent *e = (const Gantry__V1__SandboxEvent *)msg;
    if (e->revision > w->revision) {
        w->revision = e->revision;
    }
    if (e->type == GANTRY__V1__EVENT_TYPE__EVENT_TYPE_BOOKMARK || e->sandbox == NULL ||
        (w->name != NULL && strcmp(e->sandbox->meta->name, w->name) != 0)) {
        return 0;
    }
    json_t *doc = gantry_json(msg);
    static const struct gantry_col cols[] = {
        {"EVENT", "type", "EVENT_TYPE_", false},
        {"REVISION", "revision", NULL, false},
        {"NAMESPACE", "sandbox.meta.namespace", NULL, false},
        {"NAME", "sandbox.meta.name", NULL, false},
        {"PHASE", "sandbox.status.phase", "PHASE_", false},
        {"HANDLE", "sandbox.status.driver_handle", NULL, false},
        END,
    };
    if (w->c->out == GANTRY_OUT_JSON) {
        json_dumpf(doc, stdout, JSON_COMPACT); /* one event per line */
        fputc('\n', stdout);
    } else if (w->c->out == GANTRY_OUT_YAML) {
        fputs("---\n", stdout);
        gantry_yaml(stdout, doc, 0);
    } else {
        /* A fixed-width line per event, the header once. */
        if (!w->header) {
            printf("%-10s %-9s %-20s %-28s %-13s %s\n", "EVENT", "REVISION", "NAMESPACE", "NAME", "PHASE",
                   "HANDLE");
            w->header = true;
        }
        const char *v[6];
        for (int i = 0; i < 6; i++) {
            json_t *j = gantry_json_path(doc, cols[i].path);
            v[i] = json_is_string(j) ? json_string_value(j) : "";
            size_t sl = cols[i].strip != NULL ? strlen(cols[i].strip) : 0;
            if (sl > 0 && strncmp(v[i], cols[i].strip, sl) == 0) {
                v[i] += sl;
            }
        }
        printf("%-10s %-9" PRIu64 " %-20s %-28s %-13s %s\n", v[0], e->revision, v[2], v[3], v[4], v[5]);
    }
    fflush(stdout);
    json_decref(doc);
    if (w->max > 0 && ++w->count >= w->max) {
        w->c->stream_done = true;
        return GERR_CANCELED;
    }
    return 0;
}

int gantry_sandbox_watch(struct cli *c, int argc, char **argv)
{
    const char *sel[32];
    int n_sel = gantry_opt_all(&argc, argv, "--selector", sel, 32);
    uint64_t since = 0, timeout = 0, count = 0;
    if (gantry_u64("--since", gantry_opt(&argc, argv, "--since"), INT64_MAX, &since) != 0 ||
        gantry_u64("--timeout", gantry_opt(&argc, argv, "--timeout"), GANTRY_MAX_TIMEOUT_S, &timeout) != 0 ||
        gantry_u64("--count", gantry_opt(&argc, argv, "--count"), UINT64_MAX, &count) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    int rc = gantry_args(gantry_find("sandbox", "watch"), argc, argv, 0, 1);
    Gantry__V1__WatchSandboxesRequest req = GANTRY__V1__WATCH_SANDBOXES_REQUEST__INIT;
    Gantry__V1__LabelSelector s = GANTRY__V1__LABEL_SELECTOR__INIT;
    if (rc != 0 || gantry_map(&gantry__v1__label_selector__match_labels_entry__descriptor, sel, n_sel,
                              &s.match_labels, &s.n_match_labels) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    struct watch w = {.c = c, .name = argc == 1 ? argv[0] : NULL, .revision = since, .max = count};
    req.namespace_ = (char *)(argc == 1 ? gantry_ns(c) : gantry_list_ns(c));
    req.selector = n_sel > 0 ? &s : NULL;
    c->deadline_ok = true;
    uint64_t start = mono_ms();
    for (int resumes = 0;; resumes++) {
        uint64_t left = timeout > 0 ? timeout * 1000 - (mono_ms() - start) : 0;
        if (timeout > 0 && (int64_t)left <= 0) {
            rc = 0;
            break;
        }
        req.since_revision = w.revision;
        rc = gantry_call(c, "/gantry.v1.Sandboxes/Watch", &req.base, &gantry__v1__sandbox_event__descriptor,
                         on_event, &w, NULL, (unsigned)left);
        if (rc != GANTRY_EXIT_UNAVAILABLE || c->stream_done || resumes >= 100) {
            break; /* done, timed out, refused, or no replica left */
        }
        fprintf(stderr, "gantry: the watch broke; resuming from revision %" PRIu64 "\n", w.revision);
        c->preferred = (c->preferred + 1) % (c->n_endpoints > 0 ? c->n_endpoints : 1);
    }
    gantry_map_free(s.match_labels, s.n_match_labels);
    return rc;
}

/* --- logs --- */

static int on_chunk(const ProtobufCMessage *m, void *arg)
{
    (void)arg;
    const Gantry__V1__LogChunk *ch = (const void *)m;
    if (ch->data.len > 0 && fwrite(ch->data.data, 1, ch->data.len, stdout) != ch->data.len) {
        return GERR_IO; /* stdout closed (a pipe into head): stop reading */
    }
    fflush(stdout);
    return 0;
}

static int sb_logs(struct cli *c, int argc, char **argv)
{
    bool follow_short = gantry_flag(&argc, argv, "-f");
    bool follow = gantry_flag(&argc, argv, "--follow") || follow_short;
    const char *since = gantry_opt(&argc, argv, "--since");
    uint64_t tail = 0;
    int64_t since_ms = 0;
    char rel[48];
    if (gantry_u64("--tail", gantry_opt(&argc, argv, "--tail"), INT64_MAX, &tail) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    if (since != NULL) {
        /* A bare duration ("10m") means that long ago, as "-10m" does. */
        size_t n = strlen(since);
        bool duration = n > 1 && n < sizeof rel - 1 && strchr("smhd", since[n - 1]) != NULL &&
                        strspn(since, "0123456789") == n - 1;
        snprintf(rel, sizeof rel, "%s%s", duration ? "-" : "", since);
        if (gantry_time(rel, &since_ms) != 0) {
            return GANTRY_EXIT_USAGE;
        }
    }
    int rc = gantry_args(gantry_find("sandbox", "logs"), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    Gantry__V1__LogsRequest req = GANTRY__V1__LOGS_REQUEST__INIT;
    req.namespace_ = (char *)gantry_ns(c);
    req.name = argv[0];
    req.follow = follow;
    req.tail_lines = (int64_t)tail;
    req.since_ms = since_ms;
    return gantry_call(c, "/gantry.v1.Sandboxes/Logs", &req.base, &gantry__v1__log_chunk__descriptor,
                       on_chunk, NULL, NULL, follow ? 0 : 60000);
}

/* --- exec --- */

struct exec_io {
    bool tty, stdin_open;
    int code;   /* the command's exit code, -1 until it exited */
    bool saved; /* the terminal's mode was changed (restore it) */
    struct termios mode;
};

static volatile sig_atomic_t winch = 1; /* a resize is pending (1: send the size at start too) */

static void on_winch(int sig)
{
    (void)sig;
    winch = 1;
}

static int exec_produce(void *arg, bool fd_ready, struct buf *out, bool *eof)
{
    struct exec_io *io = arg;
    Gantry__V1__ExecRequest r = GANTRY__V1__EXEC_REQUEST__INIT;
    if (io->tty && winch) {
        winch = 0;
        struct winsize ws;
        if (ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
            Gantry__V1__TerminalSize sz = GANTRY__V1__TERMINAL_SIZE__INIT;
            sz.rows = ws.ws_row;
            sz.cols = ws.ws_col;
            r.resize = &sz;
            grpc_client_frame(out, &r.base);
            r.resize = NULL;
        }
    }
    if (!fd_ready || !io->stdin_open) {
        return 0;
    }
    uint8_t buf[32768];
    ssize_t n = read(0, buf, sizeof buf);
    if (n > 0) {
        r.stdin.data = buf;
        r.stdin.len = (size_t)n;
        grpc_client_frame(out, &r.base);
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        io->stdin_open = false;
        r.close_stdin = true;
        grpc_client_frame(out, &r.base);
        *eof = !io->tty; /* with a terminal, keep the stream open for resizes */
    }
    return 0;
}

static int exec_output(const ProtobufCMessage *m, void *arg)
{
    struct exec_io *io = arg;
    const Gantry__V1__ExecResponse *r = (const void *)m;
    if (r->stdout.len > 0 && write(1, r->stdout.data, r->stdout.len) < 0) {
        return GERR_IO;
    }
    if (r->stderr.len > 0 && write(2, r->stderr.data, r->stderr.len) < 0) {
        return GERR_IO;
    }
    if (r->exited) {
        io->code = r->exit_code;
    }
    return 0;
}

static int sb_exec(struct cli *c, int argc, char **argv)
{
    bool it = gantry_flag(&argc, argv, "-it") || gantry_flag(&argc, argv, "-ti");
    bool in_flag = gantry_flag(&argc, argv, "-i") || gantry_flag(&argc, argv, "--stdin");
    bool tty_flag = gantry_flag(&argc, argv, "-t") || gantry_flag(&argc, argv, "--tty");
    bool want_stdin = it || in_flag, tty = it || tty_flag;
    int dash = -1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            dash = i;
            break;
        }
    }
    int rc = gantry_args(gantry_find("sandbox", "exec"), dash >= 0 ? dash : argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    if (dash < 0 || dash + 1 >= argc) {
        fprintf(stderr, "gantry sandbox exec: give the command after --\nusage: gantry sandbox exec %s\n",
                gantry_find("sandbox", "exec")->args);
        return GANTRY_EXIT_USAGE;
    }
    if (tty && !isatty(0)) {
        fprintf(stderr, "gantry sandbox exec: -t needs a terminal on stdin\n");
        return GANTRY_EXIT_USAGE;
    }
    Gantry__V1__ExecStart st = GANTRY__V1__EXEC_START__INIT;
    Gantry__V1__TerminalSize sz = GANTRY__V1__TERMINAL_SIZE__INIT;
    Gantry__V1__ExecRequest req = GANTRY__V1__EXEC_REQUEST__INIT;
    st.namespace_ = (char *)gantry_ns(c);
    st.name = argv[0];
    st.n_command = (size_t)(argc - dash - 1);
    st.command = argv + dash + 1;
    st.tty = tty;
    struct winsize ws;
    if (tty && ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0) {
        sz.rows = ws.ws_row;
        sz.cols = ws.ws_col;
        st.size = &sz;
    }
    req.start = &st;
    req.close_stdin = !want_stdin;
    struct exec_io io = {.tty = tty, .stdin_open = want_stdin, .code = -1};
    struct grpc_client_input input = {.fd = want_stdin ? 0 : -1, .produce = exec_produce, .arg = &io};
    if (tty) {
        struct termios raw;
        if (tcgetattr(0, &io.mode) == 0) {
            raw = io.mode;
            cfmakeraw(&raw);
            io.saved = tcsetattr(0, TCSANOW, &raw) == 0;
        }
        signal(SIGWINCH, on_winch);
    }
    winch = 0; /* the start message carries the size */
    c->input = &input;
    rc = gantry_call(c, "/gantry.v1.Sandboxes/Exec", &req.base, &gantry__v1__exec_response__descriptor,
                     exec_output, &io, NULL, 0);
    c->input = NULL;
    if (io.saved) {
        tcsetattr(0, TCSANOW, &io.mode);
    }
    if (rc == GANTRY_EXIT_OK && io.code >= 0) {
        return io.code; /* the command's own exit status */
    }
    return rc;
}

/* --- port-forward --- */

struct pf_io {
    int conn;
    bool conn_open;
};

static int pf_produce(void *arg, bool fd_ready, struct buf *out, bool *eof)
{
    struct pf_io *io = arg;
    if (!fd_ready || !io->conn_open) {
        return 0;
    }
    uint8_t buf[32768];
    ssize_t n = read(io->conn, buf, sizeof buf);
    Gantry__V1__PortForwardRequest r = GANTRY__V1__PORT_FORWARD_REQUEST__INIT;
    if (n > 0) {
        r.data.data = buf;
        r.data.len = (size_t)n;
        grpc_client_frame(out, &r.base);
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        io->conn_open = false;
        r.close_write = true;
        grpc_client_frame(out, &r.base);
        *eof = true;
    }
    return 0;
}

static int pf_output(const ProtobufCMessage *m, void *arg)
{
    struct pf_io *io = arg;
    const Gantry__V1__PortForwardResponse *r = (const void *)m;
    size_t off = 0;
    while (off < r->data.len) {
        ssize_t w = write(io->conn, r->data.data + off, r->data.len - off);
        if (w <= 0) {
            return 0; /* the local client went away: the rest is dropped with the connection */
        }
        off += (size_t)w;
    }
    return 0;
}

static int sb_port_forward(struct cli *c, int argc, char **argv)
{
    uint64_t count = 0;
    if (gantry_u64("--count", gantry_opt(&argc, argv, "--count"), UINT32_MAX, &count) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    int rc = gantry_args(gantry_find("sandbox", "port-forward"), argc, argv, 2, 2);
    if (rc != 0) {
        return rc;
    }
    unsigned local = 0, remote = 0;
    char tail;
    if (sscanf(argv[1], "%u:%u%c", &local, &remote, &tail) != 2 || local == 0 || local > 65535 ||
        remote == 0 || remote > 65535) {
        fprintf(stderr,
                "gantry sandbox port-forward: LOCAL:REMOTE must be two ports from 1 to 65535, not %s\n",
                argv[1]);
        return GANTRY_EXIT_USAGE;
    }
    if (gantry_check_endpoints(c) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)local), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 16) != 0) {
        fprintf(stderr, "gantry sandbox port-forward: cannot listen on 127.0.0.1:%u: %s\n", local,
                strerror(errno));
        if (ls >= 0) {
            close(ls);
        }
        return GANTRY_EXIT_FAILED;
    }
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "forwarding 127.0.0.1:%u to port %u of sandbox %s (one connection at a time)\n", local,
            remote, argv[0]);
    Gantry__V1__PortForwardStart st = GANTRY__V1__PORT_FORWARD_START__INIT;
    Gantry__V1__PortForwardRequest req = GANTRY__V1__PORT_FORWARD_REQUEST__INIT;
    st.namespace_ = (char *)gantry_ns(c);
    st.name = argv[0];
    st.port = remote;
    req.start = &st;
    for (uint64_t served = 0; count == 0 || served < count; served++) {
        int conn = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
        if (conn < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        struct pf_io io = {.conn = conn, .conn_open = true};
        struct grpc_client_input input = {.fd = conn, .produce = pf_produce, .arg = &io};
        c->input = &input;
        rc = gantry_call(c, "/gantry.v1.Sandboxes/PortForward", &req.base,
                         &gantry__v1__port_forward_response__descriptor, pf_output, &io, NULL, 0);
        c->input = NULL;
        close(conn);
        if (rc != GANTRY_EXIT_OK) {
            break; /* refused (who, where, nothing listening): say so and stop, as kubectl does */
        }
    }
    close(ls);
    return rc;
}

const struct gantry_cmd gantry_sandbox_cmds[] = {
    {"sandbox", "create",
     "NAME --image IMAGE [--namespace NS] [--gpus N] [--lifetime SECONDS] [--env K=V ...] [--label K=V ...] "
     "[--provider NAME ...] [--driver-config K=V ...] [--egress-allow HOST:PORT ...] [--owner P] [--wait "
     "[--timeout SECONDS]] [-- COMMAND ARGS...]",
     "create a sandbox; --egress-allow gives it its own egress policy, which may only tighten the "
     "gateway's and namespace's; --wait shows its progress until READY (exit 0) or ERROR (exit 5)",
     "gantry sandbox create agent-1 --namespace demo --image busybox --wait -- sleep 3600", sb_create, false},
    {"sandbox", "get",
     "NAME [--namespace NS] [--min-revision N | --max-staleness DURATION] [--show-revision]",
     "show a sandbox; --min-revision N: as of revision N or later, --max-staleness 2s: possibly that stale, "
     "without asking the leader (default: linearizable); --show-revision prints the revision the answer "
     "reflects on stderr",
     "gantry sandbox get agent-1 -o yaml --show-revision", sb_get, false},
    {"sandbox", "list",
     "[--namespace NS | -A] [--owner P] [--selector K=V ...] [--min-revision N | --max-staleness DURATION] "
     "[--show-revision]",
     "list sandboxes (of the context's namespace; -A: every namespace you may read); read options as "
     "`sandbox get`",
     "gantry sandbox list -A --max-staleness 500ms", sb_list, false},
    {"sandbox", "delete", "NAME [--namespace NS] [--wait]",
     "delete a sandbox: DELETING until the driver has stopped it; --wait until it is gone",
     "gantry sandbox delete agent-1 --wait", sb_delete, false},
    {"sandbox", "share", "NAME PRINCIPAL [--access read|exec] [--namespace NS]",
     "share a sandbox with another principal (id or name); prints its shares",
     "gantry sandbox share agent-1 bob --access read", sb_share, false},
    {"sandbox", "unshare", "NAME PRINCIPAL [--namespace NS]",
     "take a share back; prints the remaining shares", "gantry sandbox unshare agent-1 bob", sb_unshare,
     false},
    {"sandbox", "shared-with-me",
     "[--namespace NS | -A] [--min-revision N | --max-staleness DURATION] [--show-revision]",
     "the sandboxes others shared with you; read options as `sandbox get`",
     "gantry sandbox shared-with-me -A", sb_shared, false},
    {"sandbox", "watch",
     "[NAME] [--namespace NS | -A] [--selector K=V ...] [--since REVISION] [--timeout SECONDS] [--count N]",
     "print sandbox changes as they happen (-o json: one JSON object per line); first the current state "
     "unless "
     "--since; a broken stream resumes on another replica from the last revision seen",
     "gantry sandbox watch -A --timeout 60", gantry_sandbox_watch, false},
    {"sandbox", "logs", "NAME [--namespace NS] [-f|--follow] [--since TIME] [--tail N]",
     "print the output of a sandbox's main process: everything kept, the last N lines (--tail), what came "
     "after TIME (--since 10m, -1h, an RFC 3339 time or Unix ms); -f follows new output until the process "
     "ends or the sandbox is deleted",
     "gantry sandbox logs agent-1 -f --tail 20", sb_logs, false},
    {"sandbox", "exec", "NAME [--namespace NS] [-i] [-t] -- COMMAND ARGS...",
     "run a command inside a running sandbox: -i sends your stdin to it, -t gives it a terminal (raw mode, "
     "resized with yours); the command's exit status is gantry's",
     "gantry sandbox exec -it agent-1 -- sh", sb_exec, false},
    {"sandbox", "port-forward", "NAME LOCAL:REMOTE [--namespace NS] [--count N]",
     "forward connections to 127.0.0.1:LOCAL to port REMOTE on the sandbox's loopback, one at a time, until "
     "interrupted (or N connections); a refused connection ends it",
     "gantry sandbox port-forward agent-1 8080:80", sb_port_forward, false},
    {NULL, NULL, NULL, NULL, NULL, NULL, false},
};
