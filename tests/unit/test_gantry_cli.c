/* Unit tests of the gantry CLI's pieces that need no cluster (tools/gantry.h): replies as JSON,
 * YAML and tables; argument helpers; times; KEY=VALUE maps; the command table; contexts in the
 * config file. The CLI against a real cluster is tests/integration/test_cli.py. */
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
    assert_int_equal(gantry_u64("--n", NULL, &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(gantry_u64("--n", "12", &v), 0);
    assert_int_equal(v, 12);
    assert_int_equal(gantry_u64("--n", "-1", &v), -1);
    assert_int_equal(gantry_u64("--n", "3x", &v), -1);
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
        cmocka_unit_test(test_json),     cmocka_unit_test(test_table_and_yaml),
        cmocka_unit_test(test_args),     cmocka_unit_test(test_time),
        cmocka_unit_test(test_map),      cmocka_unit_test(test_commands),
        cmocka_unit_test(test_contexts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
