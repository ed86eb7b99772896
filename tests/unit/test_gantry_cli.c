/* Unit tests of the gantry CLI's pieces that need no cluster (tools/gantry.h): replies as JSON,
 * YAML and tables; argument helpers; times; KEY=VALUE maps; the command table; contexts in the
 * config file. The CLI against a real cluster is tests/integration/test_cli.py. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "gantry/v1/cluster.pb-c.h"
#include "gantry/v1/events.pb-c.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "tools/gantry.h"

/* Run @fn with stdout captured into @out. */
static void capture(void (*fn)(void *), void *arg, char *out, size_t len)
{
    fflush(stdout);
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(STDOUT_FILENO);
    dup2(fileno(tmp), STDOUT_FILENO);
    fn(arg);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, len - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
}

static json_t *sample_sandbox(void)
{
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__SandboxSpec spec = GANTRY__V1__SANDBOX_SPEC__INIT;
    Gantry__V1__SandboxStatus st = GANTRY__V1__SANDBOX_STATUS__INIT;
    Gantry__V1__Sandbox sb = GANTRY__V1__SANDBOX__INIT;
    const char *labels[] = {"team=a", "tier=gold: yes"};
    assert_int_equal(gantry_map(&gantry__v1__object_meta__labels_entry__descriptor, labels, 2, &meta.labels,
                                &meta.n_labels),
                     0);
    char *cmd[] = {"sleep", "60"};
    meta.name = "agent-1";
    meta.namespace_ = "demo";
    meta.resource_version = 42;
    meta.created_at_ms = 1801353600000; /* 2027-01-31T00:00:00Z */
    spec.image = "busybox";
    spec.n_command = 2;
    spec.command = cmd;
    spec.gpu_count = 1;
    st.phase = GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_READY;
    sb.meta = &meta;
    sb.spec = &spec;
    sb.status = &st;
    json_t *j = gantry_json(&sb.base);
    gantry_map_free(meta.labels, meta.n_labels);
    return j;
}

static void test_json(void **state)
{
    (void)state;
    json_t *j = sample_sandbox();
    assert_string_equal(json_string_value(gantry_json_path(j, "meta.name")), "agent-1");
    assert_int_equal(json_integer_value(gantry_json_path(j, "meta.resource_version")), 42);
    assert_string_equal(json_string_value(gantry_json_path(j, "meta.labels.team")), "a");
    assert_string_equal(json_string_value(gantry_json_path(j, "status.phase")), "PHASE_READY");
    assert_int_equal(json_array_size(gantry_json_path(j, "spec.command")), 2);
    assert_string_equal(json_string_value(json_array_get(gantry_json_path(j, "spec.command"), 1)), "60");
    assert_true(json_is_object(gantry_json_path(j, "spec.env"))); /* an empty map is an object */
    assert_string_equal(json_string_value(gantry_json_path(j, "meta.namespace")), "demo");
    assert_null(gantry_json_path(j, "meta.nope"));
    json_decref(j);

    /* bytes are base64 */
    Gantry__V1__BackupChunk ch = GANTRY__V1__BACKUP_CHUNK__INIT;
    ch.data.data = (uint8_t *)"hello";
    ch.data.len = 5;
    ch.last = true;
    j = gantry_json(&ch.base);
    assert_string_equal(json_string_value(json_object_get(j, "data")), "aGVsbG8=");
    assert_true(json_is_true(json_object_get(j, "last")));
    json_decref(j);

    /* A oneof: only the member that is set, under its name (its siblings share its storage). */
    Gantry__V1__WatchEvent ev = GANTRY__V1__WATCH_EVENT__INIT;
    Gantry__V1__Namespace ns = GANTRY__V1__NAMESPACE__INIT;
    Gantry__V1__ObjectMeta nm = GANTRY__V1__OBJECT_META__INIT;
    nm.name = "team-a";
    ns.meta = &nm;
    ev.kind = "Namespace";
    j = gantry_json(&ev.base);
    assert_null(json_object_get(j, "namespace_object"));
    assert_null(json_object_get(j, "principal"));
    json_decref(j);
    ev.object_case = GANTRY__V1__WATCH_EVENT__OBJECT_NAMESPACE_OBJECT;
    ev.namespace_object = &ns;
    j = gantry_json(&ev.base);
    assert_string_equal(json_string_value(gantry_json_path(j, "namespace_object.meta.name")), "team-a");
    assert_null(json_object_get(j, "principal"));
    assert_null(json_object_get(j, "api_key"));
    json_decref(j);
}

struct print_arg {
    struct cli *c;
    json_t *doc;
    const char *items;
    const struct gantry_col *cols;
};

static void do_print(void *arg)
{
    struct print_arg *p = arg;
    gantry_print(p->c, p->doc, p->items, p->cols);
}

static void test_table_and_yaml(void **state)
{
    (void)state;
    static struct cli c;
    json_t *doc = json_object(), *arr = json_array();
    json_array_append_new(arr, sample_sandbox());
    json_object_set_new(doc, "sandboxes", arr);
    static const struct gantry_col cols[] = {{"NAME", "meta.name", NULL, false},
                                             {"PHASE", "status.phase", "PHASE_", false},
                                             {"LABELS", "meta.labels", NULL, false},
                                             {"CREATED", "meta.created_at_ms", NULL, true},
                                             {NULL, NULL, NULL, false}};
    struct print_arg pa = {&c, doc, "sandboxes", cols};
    char out[8192];
    c.out = GANTRY_OUT_TABLE;
    capture(do_print, &pa, out, sizeof out);
    assert_string_equal(out, "NAME     PHASE  LABELS                 CREATED\n"
                             "agent-1  READY  team=a,tier=gold: yes  2027-01-31T00:00:00Z\n");

    c.out = GANTRY_OUT_YAML;
    capture(do_print, &pa, out, sizeof out);
    /* Strings are double-quoted (so "gold: yes" stays one scalar), maps nest, lists of objects put
     * their first key on the dash's line, empty collections are {} and []. */
    assert_non_null(strstr(out, "sandboxes:\n  - meta:\n      id: \"\"\n      name: \"agent-1\"\n"));
    assert_non_null(strstr(out, "      labels:\n        team: \"a\"\n        tier: \"gold: yes\"\n"));
    assert_non_null(strstr(out, "      annotations: {}\n"));
    assert_non_null(strstr(out, "      resource_version: 42\n"));
    assert_non_null(
        strstr(out, "    spec:\n      image: \"busybox\"\n      command:\n        - \"sleep\"\n"));
    assert_non_null(strstr(out, "      providers: []\n"));

    c.out = GANTRY_OUT_JSON;
    capture(do_print, &pa, out, sizeof out);
    json_error_t e;
    json_t *back = json_loads(out, 0, &e);
    assert_non_null(back);
    assert_true(json_equal(back, doc));
    json_decref(back);
    json_decref(doc);
}

static void test_args(void **state)
{
    (void)state;
    char *argv[] = {"x",     "--image", "busybox", "--wait",  "--env", "A=1",
                    "--env", "B=2",     "--",      "--image", "y"};
    int argc = 11;
    const char *env[4];
    assert_string_equal(gantry_opt(&argc, argv, "--image"), "busybox");
    assert_int_equal(gantry_opt_all(&argc, argv, "--env", env, 4), 2);
    assert_string_equal(env[1], "B=2");
    assert_true(gantry_flag(&argc, argv, "--wait"));
    assert_false(gantry_flag(&argc, argv, "--wait"));
    assert_null(gantry_opt(&argc, argv, "--image")); /* after "--": the sandbox's command */
    assert_int_equal(argc, 4);
    assert_string_equal(argv[1], "--");

    const struct gantry_cmd *cmd = gantry_find("sandbox", "get");
    assert_non_null(cmd);
    char *ok[] = {"agent-1"}, *unknown[] = {"agent-1", "--bogus"};
    assert_int_equal(gantry_args(cmd, 1, ok, 1, 1), 0);
    assert_int_equal(gantry_args(cmd, 0, ok, 1, 1), GANTRY_EXIT_USAGE);
    assert_int_equal(gantry_args(cmd, 2, unknown, 1, 2), GANTRY_EXIT_USAGE);

    uint64_t v = 7;
    assert_int_equal(gantry_u64("--n", NULL, 10, &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(gantry_u64("--n", "12", 12, &v), 0);
    assert_int_equal(v, 12);
    assert_int_equal(gantry_u64("--n", "0", 0, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(gantry_u64("--n", "18446744073709551615", UINT64_MAX, &v), 0);
    assert_true(v == UINT64_MAX);
    v = 7;
    /* Nothing wraps around, and nothing but plain decimal digits is a number. */
    static const char *const bad[] = {"13", "-1", "3x", "", " 1", "1 ", "+1", "0x10", "1e3", "１"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(gantry_u64("--n", bad[i], 12, &v), -1);
    }
    assert_int_equal(gantry_u64("--n", "18446744073709551616", UINT64_MAX, &v), -1);
    assert_int_equal(gantry_u64("--n", "99999999999999999999999999", UINT64_MAX, &v), -1);
    assert_int_equal(gantry_u64("--n", "4294967296", UINT32_MAX, &v), -1);
    assert_int_equal(gantry_u64("--n", "1", 0, &v), -1);
    assert_int_equal(v, 7); /* left alone on error */
}

/* Run `gantry GROUP NAME ARGS...` with no endpoint (nothing is ever sent), its stderr in @err. */
static int run_cmd(const char *group, const char *name, char **args, int n, char *err, size_t len)
{
    const struct gantry_cmd *cmd = gantry_find(group, name);
    assert_non_null(cmd);
    char *argv[16];
    assert_true(n < 16);
    memcpy(argv, args, sizeof *argv * (size_t)n);
    argv[n] = NULL;
    struct cli c;
    memset(&c, 0, sizeof c);
    c.last_status = -1;
    fflush(stderr);
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    int rc = cmd->run(&c, n, argv);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    size_t got = fread(err, 1, len - 1, tmp);
    err[got] = '\0';
    fclose(tmp);
    return rc;
}

/* Every numeric option of every command and its range: the field's own (uint32, int64 seconds of
 * milliseconds, ...), or the server's limit where the CLI knows it. */
static const struct numeric {
    const char *group, *name;
    const char *flag; /* NULL: the positional ID */
    uint64_t max;
    const char *args[4]; /* what else the command needs */
} numerics[] = {
    {"cluster", "join-token", "--uses", 100, {NULL}},
    {"cluster", "join-token", "--ttl-s", 86400, {NULL}},
    {"cluster", "transfer", NULL, UINT64_MAX, {NULL}},
    {"cluster", "transfer", "--wait-ms", 60000, {NULL}},
    {"cluster", "remove", NULL, UINT64_MAX, {NULL}},
    {"cluster", "top", "--interval-ms", 60000, {NULL}},
    {"cluster", "top", "--count", UINT32_MAX, {NULL}},
    {"sandbox", "create", "--gpus", UINT32_MAX, {"sb", "--image", "busybox", NULL}},
    {"sandbox", "create", "--lifetime", UINT64_MAX, {"sb", "--image", "busybox", NULL}},
    {"sandbox", "create", "--timeout", GANTRY_MAX_TIMEOUT_S, {"sb", "--image", "busybox", NULL}},
    {"sandbox", "get", "--min-revision", INT64_MAX, {"sb", NULL}},
    {"sandbox", "list", "--min-revision", INT64_MAX, {NULL}},
    {"sandbox", "shared-with-me", "--min-revision", INT64_MAX, {NULL}},
    {"namespace", "get", "--min-revision", INT64_MAX, {"ns", NULL}},
    {"namespace", "list", "--min-revision", INT64_MAX, {NULL}},
    {"sandbox", "watch", "--since", INT64_MAX, {NULL}},
    {"sandbox", "watch", "--timeout", GANTRY_MAX_TIMEOUT_S, {NULL}},
    {"sandbox", "watch", "--count", UINT64_MAX, {NULL}},
    {"sandbox", "logs", "--tail", INT64_MAX, {"sb", NULL}},
    {"sandbox", "port-forward", "--count", UINT32_MAX, {"sb", "8080:80", NULL}},
    {"quota", "set", "--max-sandboxes", UINT32_MAX, {NULL}},
    {"quota", "set", "--max-gpus", UINT32_MAX, {NULL}},
    {"quota", "set", "--max-lifetime", INT64_MAX / 1000, {NULL}},
    {"quota", "set-ceiling", "--max-sandboxes", UINT32_MAX, {NULL}},
    {"quota", "set-ceiling", "--max-gpus", UINT32_MAX, {NULL}},
    {"quota", "set-ceiling", "--max-lifetime", INT64_MAX / 1000, {NULL}},
    {"policy", "set", "--max-lifetime", INT64_MAX / 1000, {NULL}},
    {"policy", "set", "--max-gpus", UINT32_MAX, {NULL}},
    {"audit", "query", "--class", UINT32_MAX, {NULL}},
    {"audit", "query", "--limit", UINT32_MAX, {NULL}},
};

/* Every TIME option. */
static const struct {
    const char *group, *name, *flag;
} times[] = {
    {"key", "create", "--expires"}, {"usage", "query", "--since"},  {"usage", "query", "--until"},
    {"audit", "query", "--since"},  {"audit", "query", "--until"},  {"audit", "export", "--since"},
    {"audit", "export", "--until"}, {"sandbox", "logs", "--since"},
};

static int run_with(const struct numeric *t, const char *value, char *err, size_t len)
{
    char *argv[12];
    int n = 0;
    for (int i = 0; t->args[i] != NULL; i++) {
        argv[n++] = (char *)t->args[i];
    }
    if (t->flag != NULL) {
        argv[n++] = (char *)t->flag;
    }
    argv[n++] = (char *)value;
    return run_cmd(t->group, t->name, argv, n, err, len);
}

static void test_numeric_flags(void **state)
{
    (void)state;
    char err[4096], value[32], want[160];
    for (size_t i = 0; i < sizeof numerics / sizeof numerics[0]; i++) {
        const struct numeric *t = &numerics[i];
        const char *what = t->flag != NULL ? t->flag : "ID";
        snprintf(want, sizeof want, "%s must be a whole number from 0 to %" PRIu64 ", not", what, t->max);
        /* The largest value is taken (the command goes on, and finds no endpoint to call). */
        snprintf(value, sizeof value, "%" PRIu64, t->max);
        run_with(t, value, err, sizeof err);
        if (strstr(err, "whole number") != NULL) {
            fail_msg("gantry %s %s %s %s: %s", t->group, t->name, what, value, err);
        }
        /* One more, 2^64 and beyond, signs, spaces, other notations: refused before any call. */
        char over[32];
        snprintf(over, sizeof over, "%" PRIu64, t->max + 1);
        const char *bad[] = {t->max < UINT64_MAX ? over : "18446744073709551616",
                             "18446744073709551616",
                             "4294967297",
                             "99999999999999999999999",
                             "-1",
                             "+1",
                             " 1",
                             "0x10",
                             "1e3",
                             ""};
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            if (t->max >= 4294967297u && strcmp(bad[b], "4294967297") == 0) {
                continue;
            }
            int rc = run_with(t, bad[b], err, sizeof err);
            /* A positional "-1" is refused as an unknown option before it is read as a number. */
            bool refused = strstr(err, want) != NULL ||
                           (t->flag == NULL && bad[b][0] == '-' && strstr(err, "unknown option") != NULL);
            if (rc != GANTRY_EXIT_USAGE || !refused || strstr(err, "no endpoint") != NULL) {
                fail_msg("gantry %s %s %s \"%s\": exit %d, %s", t->group, t->name, what, bad[b], rc, err);
            }
        }
    }
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++) {
        const char *bad[] = {"99999999999999999999", "-9999999999999999d", "+9999999999999999d",
                             "-99999999999h", "1969-12-31T23:59:59Z"};
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            char *argv[] = {(char *)times[i].flag, (char *)bad[b]};
            int rc = run_cmd(times[i].group, times[i].name, argv, 2, err, sizeof err);
            if (rc != GANTRY_EXIT_USAGE || strstr(err, "out of range") == NULL) {
                fail_msg("gantry %s %s %s %s: exit %d, %s", times[i].group, times[i].name, times[i].flag,
                         bad[b], rc, err);
            }
        }
    }
    /* The tables above cover every numeric option in the synopses (N, S, MS, SECONDS, REVISION, UID,
     * TIME, and the positional ID of the cluster commands), so a new one cannot miss its range. */
    const struct gantry_cmd *const tables[] = {gantry_cluster_cmds, gantry_principal_cmds,
                                               gantry_tenant_cmds,  gantry_provider_cmds,
                                               gantry_sandbox_cmds, gantry_ctx_cmds};
    static const char *const metas[] = {"N", "S", "MS", "SECONDS", "REVISION", "UID", "TIME"};
    unsigned found = 0;
    for (size_t k = 0; k < sizeof tables / sizeof tables[0]; k++) {
        for (const struct gantry_cmd *cmd = tables[k]; cmd->group != NULL; cmd++) {
            char args[1024];
            snprintf(args, sizeof args, "%s", cmd->args);
            char *save = NULL, *prev = NULL;
            for (char *w = strtok_r(args, " []|", &save); w != NULL;
                 prev = w, w = strtok_r(NULL, " []|", &save)) {
                bool numeric = false;
                for (size_t m = 0; m < sizeof metas / sizeof metas[0]; m++) {
                    numeric = numeric || strcmp(w, metas[m]) == 0;
                }
                bool id = strcmp(cmd->group, "cluster") == 0 && strcmp(w, "ID") == 0 && prev == NULL;
                if ((!numeric || prev == NULL || strncmp(prev, "--", 2) != 0) && !id) {
                    continue;
                }
                if (strcmp(cmd->group, "key") == 0 && strcmp(prev != NULL ? prev : "", "--name") == 0) {
                    continue; /* a key's name, not a number */
                }
                bool listed = false;
                for (size_t i = 0; i < sizeof numerics / sizeof numerics[0]; i++) {
                    listed =
                        listed || (strcmp(numerics[i].group, cmd->group) == 0 &&
                                   strcmp(numerics[i].name, cmd->name) == 0 &&
                                   (id ? numerics[i].flag == NULL
                                       : numerics[i].flag != NULL && strcmp(numerics[i].flag, prev) == 0));
                }
                for (size_t i = 0; !id && i < sizeof times / sizeof times[0]; i++) {
                    listed =
                        listed || (strcmp(times[i].group, cmd->group) == 0 &&
                                   strcmp(times[i].name, cmd->name) == 0 && strcmp(times[i].flag, prev) == 0);
                }
                if (!listed) {
                    fail_msg("gantry %s %s %s %s: a numeric option without a range check in this test",
                             cmd->group, cmd->name, id ? "" : prev, w);
                }
                found++;
            }
        }
    }
    assert_int_equal(found, sizeof numerics / sizeof numerics[0] + sizeof times / sizeof times[0]);
}

/* The read flags (gantry_read_opts): --max-staleness's forms and range, the two options excluding
 * each other, and every read command refusing both before any call. */
static void test_read_flags(void **state)
{
    (void)state;
    static const struct {
        const char *v;
        uint32_t ms;
    } good[] = {{"500ms", 500}, {"2s", 2000}, {"1m", 60000},
                {"250", 250},   {"0", 0},     {"4294967295", UINT32_MAX}};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char *argv[] = {"--max-staleness", (char *)good[i].v, "--show-revision", "x"};
        int argc = 4;
        struct gantry_read r;
        assert_int_equal(gantry_read_opts(&argc, argv, &r), 0);
        assert_int_equal(r.opts.max_staleness_ms, good[i].ms);
        assert_int_equal(r.opts.min_revision, 0);
        assert_true(r.show);
        assert_int_equal(argc, 1); /* the flags taken out, "x" left */
        assert_string_equal(argv[0], "x");
    }
    static const char *const bad[] = {"2h",     "",           "1.5s",          "-1",
                                      "ms",     "s",          "2 s",           "4294968s",
                                      "71583m", "4294967296", "99999999999ms", "0x10"};
    char err[1024];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[] = {"ns", "--max-staleness", (char *)bad[i]};
        int rc = run_cmd("namespace", "get", argv, 3, err, sizeof err);
        if (rc != GANTRY_EXIT_USAGE || strstr(err, "--max-staleness is a duration") == NULL) {
            fail_msg("--max-staleness \"%s\": exit %d, %s", bad[i], rc, err);
        }
    }
    static const struct {
        const char *group, *name, *arg;
    } reads[] = {{"sandbox", "get", "sb"},
                 {"sandbox", "list", NULL},
                 {"sandbox", "shared-with-me", NULL},
                 {"namespace", "get", "ns"},
                 {"namespace", "list", NULL}};
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        char *argv[6];
        int n = 0;
        if (reads[i].arg != NULL) {
            argv[n++] = (char *)reads[i].arg;
        }
        argv[n++] = "--min-revision";
        argv[n++] = "5";
        argv[n++] = "--max-staleness";
        argv[n++] = "1s";
        int rc = run_cmd(reads[i].group, reads[i].name, argv, n, err, sizeof err);
        if (rc != GANTRY_EXIT_USAGE || strstr(err, "exclude each other") == NULL ||
            strstr(err, "endpoint") != NULL) {
            fail_msg("gantry %s %s with both read options: exit %d, %s", reads[i].group, reads[i].name, rc,
                     err);
        }
    }
}

static void test_time(void **state)
{
    (void)state;
    int64_t ms = -5;
    assert_int_equal(gantry_time(NULL, &ms), 0);
    assert_int_equal(ms, -5);
    assert_int_equal(gantry_time("2027-01-31T00:00:00Z", &ms), 0);
    assert_int_equal(ms, 1801353600000);
    assert_int_equal(gantry_time("1801353600123", &ms), 0);
    assert_int_equal(ms, 1801353600123);
    int64_t now = (int64_t)time(NULL) * 1000;
    ms = 5;
    assert_int_equal(gantry_time("99999999999999999999", &ms), -1); /* past 2^63 */
    assert_int_equal(gantry_time("-9999999999999999d", &ms), -1);   /* before 1970 */
    assert_int_equal(gantry_time("+9999999999999999d", &ms), -1);   /* past 2^63 ms */
    assert_int_equal(gantry_time("1969-12-31T23:59:59Z", &ms), -1);
    assert_int_equal(gantry_time("- 5d", &ms), -1);
    assert_int_equal(ms, 5);
    assert_int_equal(gantry_time("-2h", &ms), 0);
    assert_true(ms > now - 7200000 - 5000 && ms < now - 7200000 + 5000);
    assert_int_equal(gantry_time("+30d", &ms), 0);
    assert_true(ms > now + 2592000000 - 5000 && ms < now + 2592000000 + 5000);
    assert_int_equal(gantry_time("yesterday", &ms), -1);
    assert_int_equal(gantry_time("-2w", &ms), -1);
}

static void test_map(void **state)
{
    (void)state;
    Gantry__V1__ObjectMeta__LabelsEntry **m = NULL;
    size_t n = 99;
    const char *good[] = {"a=1", "b=", "c=x=y"};
    assert_int_equal(gantry_map(&gantry__v1__object_meta__labels_entry__descriptor, good, 3, &m, &n), 0);
    assert_int_equal(n, 3);
    assert_string_equal(m[1]->key, "b");
    assert_string_equal(m[1]->value, "");
    assert_string_equal(m[2]->value, "x=y");
    gantry_map_free(m, n);
    const char *bad[] = {"a=1", "novalue"}, *empty_key[] = {"=v"};
    m = NULL;
    assert_int_equal(gantry_map(&gantry__v1__object_meta__labels_entry__descriptor, bad, 2, &m, &n), -1);
    assert_int_equal(n, 0); /* so the caller's cleanup frees nothing twice */
    gantry_map_free(m, n);
    assert_int_equal(gantry_map(&gantry__v1__object_meta__labels_entry__descriptor, empty_key, 1, &m, &n),
                     -1);
}

static void test_commands(void **state)
{
    (void)state;
    bool subs;
    assert_true(gantry_group_exists("sandbox", &subs));
    assert_true(subs);
    assert_true(gantry_group_exists("whoami", &subs));
    assert_false(subs);
    assert_false(gantry_group_exists("sandboxes", &subs));
    assert_non_null(gantry_find("whoami", NULL));
    assert_null(gantry_find("sandbox", "explode"));
    /* The groups of the API (their --help and examples: tests/integration/test_cli.py docs). */
    const char *groups[] = {"context",   "cluster", "whoami", "user",  "sa",    "role",     "identity", "key",
                            "namespace", "quota",   "policy", "usage", "audit", "provider", "sandbox"};
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        assert_true(gantry_group_exists(groups[g], &subs));
    }
}

static char cfg_dir[64];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_contexts(void **state)
{
    (void)state;
    snprintf(cfg_dir, sizeof cfg_dir, "/tmp/gantry-cli-unit-XXXXXX");
    assert_non_null(mkdtemp(cfg_dir));
    setenv("XDG_CONFIG_HOME", cfg_dir, 1);
    unsetenv("GANTRY_CONTEXT");
    char ca[128], key[128], path[128];
    snprintf(ca, sizeof ca, "%s/ca.pem", cfg_dir);
    snprintf(key, sizeof key, "%s/me.key", cfg_dir);
    write_file(ca, "not checked here\n");
    write_file(key, "gtk_secret \n");

    /* No config file: nothing applied, no error. */
    static struct cli c;
    assert_int_equal(gantry_ctx_apply(&c, NULL, false, false, false, false), 0);
    assert_string_equal(c.endpoint_buf, "");

    /* context create writes a 0600 file; the first context becomes the current one. */
    char *argv[] = {"dev",         "--endpoint", "127.0.0.1:1,127.0.0.1:2", "--ca", ca, "--token-file", key,
                    "--namespace", "demo"};
    const struct gantry_cmd *create = gantry_find("context", "create");
    assert_int_equal(create->run(&c, 9, argv), 0);
    snprintf(path, sizeof path, "%s/gantry/config.json", cfg_dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char *again[] = {"dev", "--endpoint", "127.0.0.1:3", "--ca", ca};
    assert_int_equal(create->run(&c, 5, again), GANTRY_EXIT_USAGE); /* exists: needs --overwrite */

    memset(&c, 0, sizeof c);
    assert_int_equal(gantry_ctx_apply(&c, NULL, false, false, false, false), 0);
    assert_string_equal(c.context, "dev");
    assert_string_equal(c.endpoint_buf, "127.0.0.1:1,127.0.0.1:2");
    assert_string_equal(c.ns, "demo");
    assert_string_equal(c.token, "gtk_secret"); /* trailing whitespace removed */
    assert_non_null(strstr(c.ca, "/ca.pem"));

    /* What the flags set stays. */
    memset(&c, 0, sizeof c);
    snprintf(c.ns, sizeof c.ns, "other");
    snprintf(c.token, sizeof c.token, "from-env");
    assert_int_equal(gantry_ctx_apply(&c, "dev", false, false, true, true), 0);
    assert_string_equal(c.ns, "other");
    assert_string_equal(c.token, "from-env");

    /* A named context that does not exist, and one named by GANTRY_CONTEXT. */
    memset(&c, 0, sizeof c);
    assert_int_equal(gantry_ctx_apply(&c, "nope", false, false, false, false), GANTRY_EXIT_USAGE);
    setenv("GANTRY_CONTEXT", "nope", 1);
    assert_int_equal(gantry_ctx_apply(&c, NULL, false, false, false, false), GANTRY_EXIT_USAGE);
    unsetenv("GANTRY_CONTEXT");

    /* delete clears the current context; a corrupt file is an error that names it. */
    char *del[] = {"dev"};
    assert_int_equal(gantry_find("context", "delete")->run(&c, 1, del), 0);
    assert_int_equal(gantry_find("context", "delete")->run(&c, 1, del), GANTRY_EXIT_USAGE);
    memset(&c, 0, sizeof c);
    assert_int_equal(gantry_ctx_apply(&c, NULL, false, false, false, false), 0);
    assert_string_equal(c.context, "");
    write_file(path, "{\"contexts\": [");
    assert_int_equal(gantry_ctx_apply(&c, NULL, false, false, false, false), GANTRY_EXIT_USAGE);

    unlink(path);
    snprintf(path, sizeof path, "%s/gantry", cfg_dir);
    rmdir(path);
    unlink(ca);
    unlink(key);
    rmdir(cfg_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json),       cmocka_unit_test(test_table_and_yaml),
        cmocka_unit_test(test_args),       cmocka_unit_test(test_time),
        cmocka_unit_test(test_map),        cmocka_unit_test(test_commands),
        cmocka_unit_test(test_contexts),   cmocka_unit_test(test_numeric_flags),
        cmocka_unit_test(test_read_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
