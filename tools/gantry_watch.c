/* gantry watch KIND: changes of any kind as they happen (docs/cli.md). Sandboxes through
 * Sandboxes.Watch (`gantry sandbox watch`), every other kind through Events.Watch. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gantry/v1/events.pb-c.h"
#include "tools/gantry.h"

/* The CLI's kind names (lower-case, as the other commands spell them) and the API's. */
static const struct {
    const char *cli, *api;
} kind_names[] = {
    {"namespace", "Namespace"},
    {"principal", "Principal"},
    {"rolebinding", "RoleBinding"},
    {"role", "RoleBinding"},
    {"apikey", "ApiKey"},
    {"key", "ApiKey"},
    {"provider", "Provider"},
    {"providergrant", "ProviderGrant"},
    {"grant", "ProviderGrant"},
    {"policy", "Policy"},
    {"quota", "Quota"},
    {"quotaceiling", "QuotaCeiling"},
    {"ceiling", "QuotaCeiling"},
    {"principallink", "PrincipalLink"},
    {"link", "PrincipalLink"},
    {"warmpool", "WarmPool"},
};

struct ewatch {
    struct cli *c;
    uint64_t revision; /* the last revision seen: where a resumed watch starts */
    uint64_t count, max;
    bool header;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int on_event(const ProtobufCMessage *msg, void *arg)
{
    struct ewatch *w = arg;
    const Gantry__V1__WatchEvent *e = (const Gantry__V1__WatchEvent *)msg;
    if (e->revision > w->revision) {
        w->revision = e->revision;
    }
    if (e->type == GANTRY__V1__EVENT_TYPE__EVENT_TYPE_BOOKMARK) {
        return 0;
    }
    json_t *doc = gantry_json(msg);
    if (w->c->out == GANTRY_OUT_JSON) {
        json_dumpf(doc, stdout, JSON_COMPACT); /* one event per line */
        fputc('\n', stdout);
    } else if (w->c->out == GANTRY_OUT_YAML) {
        fputs("---\n", stdout);
        gantry_yaml(stdout, doc, 0);
    } else {
        if (!w->header) {
            printf("%-10s %-9s %-14s %-20s %s\n", "EVENT", "REVISION", "KIND", "NAMESPACE", "OBJECT");
            w->header = true;
        }
        const char *type = json_string_value(gantry_json_path(doc, "type"));
        type = type != NULL ? type : "";
        if (strncmp(type, "EVENT_TYPE_", 11) == 0) {
            type += 11;
        }
        printf("%-10s %-9" PRIu64 " %-14s %-20s %s\n", type, e->revision, e->kind, e->namespace_,
               e->object_id);
    }
    fflush(stdout);
    json_decref(doc);
    if (w->max > 0 && ++w->count >= w->max) {
        w->c->stream_done = true;
        return GERR_CANCELED;
    }
    return 0;
}

static int cmd_watch(struct cli *c, int argc, char **argv)
{
    if (argc >= 1 && (strcasecmp(argv[0], "sandbox") == 0 || strcasecmp(argv[0], "sandboxes") == 0)) {
        return gantry_sandbox_watch(c, argc - 1, argv + 1);
    }
    const char *sel[64]; /* Events.Watch takes at most 64 labels */
    int n_sel = gantry_opt_all(&argc, argv, "--selector", sel, 64);
    if (gantry_opt(&argc, argv, "--selector") != NULL) {
        fprintf(stderr, "gantry watch: at most 64 --selector labels\n");
        return GANTRY_EXIT_USAGE;
    }
    uint64_t since = 0, timeout = 0, count = 0;
    if (gantry_u64("--since", gantry_opt(&argc, argv, "--since"), INT64_MAX, &since) != 0 ||
        gantry_u64("--timeout", gantry_opt(&argc, argv, "--timeout"), GANTRY_MAX_TIMEOUT_S, &timeout) != 0 ||
        gantry_u64("--count", gantry_opt(&argc, argv, "--count"), UINT64_MAX, &count) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    int rc = gantry_args(gantry_find("watch", NULL), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    char *kind = NULL;
    size_t klen = strlen(argv[0]);
    for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++) {
        const char *k = kind_names[i].cli;
        size_t n = strlen(k);
        /* "namespace", "namespaces" and the API's "Namespace" all name it */
        if (strcasecmp(argv[0], kind_names[i].api) == 0 ||
            (strncasecmp(argv[0], k, n) == 0 && (klen == n || (klen == n + 1 && argv[0][n] == 's')))) {
            kind = (char *)kind_names[i].api;
            break;
        }
    }
    if (kind == NULL && strcmp(argv[0], "all") != 0) {
        fprintf(stderr,
                "gantry: unknown kind \"%s\": one of sandbox, namespace, principal, rolebinding, apikey, "
                "provider, providergrant, policy, quota, quotaceiling, principallink, warmpool, all\n",
                argv[0]);
        return GANTRY_EXIT_USAGE;
    }
    Gantry__V1__WatchEventsRequest req = GANTRY__V1__WATCH_EVENTS_REQUEST__INIT;
    Gantry__V1__LabelSelector s = GANTRY__V1__LABEL_SELECTOR__INIT;
    if (gantry_map(&gantry__v1__label_selector__match_labels_entry__descriptor, sel, n_sel, &s.match_labels,
                   &s.n_match_labels) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    req.selector = n_sel > 0 ? &s : NULL;
    req.kinds = kind != NULL ? &kind : NULL;
    req.n_kinds = kind != NULL ? 1 : 0;
    /* Many kinds are cluster-scoped: every namespace unless --namespace names one. */
    req.namespace_ = c->ns_flag && !c->all_namespaces ? c->ns : "";
    struct ewatch w = {.c = c, .revision = since, .max = count};
    c->deadline_ok = true;
    uint64_t start = mono_ms();
    for (int resumes = 0;; resumes++) {
        uint64_t left = timeout > 0 ? timeout * 1000 - (mono_ms() - start) : 0;
        if (timeout > 0 && (int64_t)left <= 0) {
            rc = 0;
            break;
        }
        req.since_revision = w.revision;
        rc = gantry_call(c, "/gantry.v1.Events/Watch", &req.base, &gantry__v1__watch_event__descriptor,
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

const struct gantry_cmd gantry_watch_cmds[] = {
    {"watch", NULL,
     "KIND [--namespace NS] [--selector K=V ...] [--since REVISION] [--timeout SECONDS] [--count N]",
     "print changes of one kind as they happen (-o json: one JSON object per line, with the object): "
     "sandbox (as `gantry sandbox watch`), namespace, principal, rolebinding, apikey, provider, "
     "providergrant, policy, quota, quotaceiling, principallink, warmpool, or all (every kind but sandbox). "
     "--selector: only objects carrying every one of these labels (a kind whose objects have no labels "
     "then shows nothing). Without --since it starts now; a broken stream resumes on another replica from "
     "the last "
     "revision seen",
     "gantry watch namespace -o json --selector tier=prod --timeout 60", cmd_watch, false},
    {NULL, NULL, NULL, NULL, NULL, NULL, false},
};
