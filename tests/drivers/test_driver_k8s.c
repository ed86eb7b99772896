/* The kubernetes driver against the fake API server (tests/drivers/fake_kube_apiserver.py) over
 * real TLS with a certificate made here by the openssl CLI, and a bearer token file. The server
 * pages every list by 2 items, so paging is always exercised.
 *
 * Covers: the shared conformance checks (managed mode); managed namespaces made and removed with
 * the gateway's labels, foreign namespaces never adopted or deleted; operator mode's allowlist;
 * shared mode with its "<namespace>--<name>" object names, names that read the same and names
 * taken by another gateway (create steps aside); two gateway ids in one API server never seeing
 * or touching each other's Sandbox objects; 409 Conflict on the fence and on deletes (re-read,
 * then succeed or refuse as stale); 404 on delete is success; driver_config values in the
 * Sandbox's pod template; phases from the Sandbox's conditions; an API server without the
 * agent-sandbox CRD; 401, untrusted certificates, 5xx, an unreachable server; lists select by the
 * gateway id label.
 *
 * Without /usr/bin/python3 or /usr/bin/openssl the test says so and exits 77 (skipped). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "conformance.h"
#include "drivers/k8s.h"
#include "drivers/k8s_http.h"
#include "drivers/k8s_json.h"
#include "lib/file.h"
#include "lib/mem.h"
#include "lib/proc.h"

#define PYTHON  "/usr/bin/python3"
#define OPENSSL "/usr/bin/openssl"
#define SBX     "/apis/agents.x-k8s.io/v1alpha1"

static char dir[256], cert[300], key[300], token[300], bad_token[300], reqlog[300], server[64];
static struct proc apiserver;
static const char *const sleeper[] = {"sleep", "infinity"};

static struct driver *open_gw(const char *gw, enum driver_k8s_mode mode, const char *shared,
                              const char *const *allow, const char *tok)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d;
    struct driver_k8s_config cfg = {.server = server,
                                    .token_file = tok,
                                    .ca_file = cert,
                                    .gateway_id = gw,
                                    .mode = mode,
                                    .shared_namespace = shared,
                                    .operator_namespaces = allow,
                                    .timeout_ms = 10000};
    if (driver_k8s_new(&cfg, &d, errmsg) != 0) {
        fail_msg("driver_k8s_new: %s", errmsg);
    }
    return d;
}

static struct driver *open_managed(void *ctx)
{
    (void)ctx;
    return open_gw("gw-a", DRIVER_K8S_MANAGED, NULL, NULL, token);
}

static const struct conf_env env = {
    .open = open_managed,
    .command = sleeper,
    .n_command = 2,
    .image = "busybox:1.36",
    .config_key = "runtime_class",
    .config_value = "gvisor",
    .ns = "team-a",
    .ready_timeout_ms = 10000,
};

/* ---- Raw requests, as another client of the API server */

static long raw(const char *method, const char *path, const char *body, json_t **out)
{
    char errmsg[GERR_MSG_SIZE];
    struct k8s_http *h;
    struct k8s_http_config cfg = {
        .server = server, .token_file = token, .ca_file = cert, .max_body = 1 << 24};
    struct buf resp;
    long status = 0;
    assert_int_equal(k8s_http_new(&cfg, &h, errmsg), 0);
    buf_init(&resp);
    if (k8s_http_request(h, method, path, body, &status, &resp, errmsg) != 0) {
        fail_msg("%s %s: %s", method, path, errmsg);
    }
    if (out != NULL) {
        json_error_t jerr;
        *out = json_loadb((const char *)resp.data, resp.len, 0, &jerr);
        assert_non_null(*out);
    }
    buf_close(&resp);
    k8s_http_free(h);
    return status;
}

static bool exists(const char *path)
{
    return raw("GET", path, NULL, NULL) == 200;
}

/* The path of Sandbox @name in Kubernetes namespace @kns. */
static void sbx_path(char *out, size_t len, const char *kns, const char *name)
{
    snprintf(out, len, SBX "/namespaces/%s/sandboxes/%s", kns, name);
}

/* The label @label of the object at @path, copied into @out ("" if absent). */
static void label_of(const char *path, const char *label, char *out, size_t len)
{
    json_t *j;
    assert_int_equal(raw("GET", path, NULL, &j), 200);
    const char *v =
        json_string_value(json_object_get(json_object_get(json_object_get(j, "metadata"), "labels"), label));
    snprintf(out, len, "%s", v != NULL ? v : "");
    json_decref(j);
}

static void inject(const char *json)
{
    assert_int_equal(raw("POST", "/_fake/inject", json, NULL), 200);
}

/* How many requests in the server's log match @method and @path (and contain @query_part). */
static int logged(const char *method, const char *path, const char *query_part)
{
    char errmsg[GERR_MSG_SIZE], *text;
    int n = 0;
    if (file_read_all(reqlog, 64 << 20, &text, NULL, errmsg) != 0) {
        return 0;
    }
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        const char *m = json_string_value(json_object_get(j, "method"));
        const char *p = json_string_value(json_object_get(j, "path"));
        const char *q = json_string_value(json_object_get(j, "query"));
        n += m != NULL && p != NULL && q != NULL && strcmp(m, method) == 0 && strcmp(p, path) == 0 &&
             (query_part == NULL || strstr(q, query_part) != NULL);
        json_decref(j);
    }
    mem_free(text);
    return n;
}

static void truncate_log(void)
{
    FILE *f = fopen(reqlog, "w");
    assert_non_null(f);
    fclose(f);
}

/* ---- Conformance (managed mode) */

static void test_lifecycle(void **state)
{
    conf_lifecycle(&env);
}

static void test_stale_epoch(void **state)
{
    conf_stale_epoch(&env);
}

static void test_adoption(void **state)
{
    conf_adoption(&env);
}

static void test_namespaces(void **state)
{
    conf_namespaces(&env);
}

static void test_config_keys(void **state)
{
    conf_config_keys(&env);
}

static void test_bad_arguments(void **state)
{
    conf_bad_arguments(&env);
}

/* ---- Managed namespaces */

static void test_managed_namespace_labels(void **state)
{
    char errmsg[GERR_MSG_SIZE], kns[64], path[128];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    json_t *ns;
    driver_k8s_managed_namespace("gw-a", "team-m", kns);
    assert_string_equal(kns, "openshell-gw-a-team-m");
    snprintf(path, sizeof path, "/api/v1/namespaces/%s", kns);

    assert_int_equal(driver_ensure_namespace(d, e, "team-m", errmsg), 0);
    assert_int_equal(raw("GET", path, NULL, &ns), 200);
    json_t *labels = json_object_get(json_object_get(ns, "metadata"), "labels");
    assert_string_equal(json_string_value(json_object_get(labels, K8S_LABEL_GATEWAY)), "gw-a");
    assert_string_equal(json_string_value(json_object_get(labels, K8S_LABEL_MANAGED)), "gantry");
    assert_string_equal(json_string_value(json_object_get(labels, K8S_LABEL_NAMESPACE)), "team-m");
    json_decref(ns);
    assert_int_equal(driver_ensure_namespace(d, e, "team-m", errmsg), 0); /* idempotent */
    assert_int_equal(driver_delete_namespace(d, e, "team-m", errmsg), 0);
    assert_false(exists(path));

    /* A namespace of that name made by someone else is neither adopted nor deleted. */
    assert_int_equal(
        raw("POST", "/api/v1/namespaces", "{\"metadata\":{\"name\":\"openshell-gw-a-team-x\"}}", NULL), 201);
    assert_int_equal(driver_ensure_namespace(d, e, "team-x", errmsg), GERR_EXISTS);
    assert_non_null(strstr(errmsg, "not managed by gateway gw-a"));
    assert_int_equal(driver_delete_namespace(d, e, "team-x", errmsg), GERR_PERM);
    assert_true(exists("/api/v1/namespaces/openshell-gw-a-team-x"));
    driver_free(d);
}

/* ---- Operator mode */

static void test_operator_allowlist(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    const char *const allow[] = {"team-a=tenant-a", "team-b", NULL};
    struct driver *d = open_gw("gw-op", DRIVER_K8S_OPERATOR, NULL, allow, token);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    struct driver_sandbox_list l;
    assert_int_equal(raw("POST", "/api/v1/namespaces", "{\"metadata\":{\"name\":\"tenant-a\"}}", NULL), 201);

    assert_int_equal(driver_ensure_namespace(d, e, "team-c", errmsg), GERR_PERM);
    assert_non_null(strstr(errmsg, "allowlist"));
    assert_non_null(strstr(errmsg, "team-a"));
    assert_int_equal(driver_ensure_namespace(d, e, "team-b", errmsg),
                     GERR_NOTFOUND); /* not made by the operator */
    assert_non_null(strstr(errmsg, "operator"));
    assert_int_equal(driver_ensure_namespace(d, e, "team-a", errmsg), 0);

    conf_spec(&env, &cs, "op");
    cs.spec.namespace = "team-c";
    assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), GERR_PERM);
    cs.spec.namespace = "team-a";
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), 0);
    assert_string_equal(s.handle, "k8s:tenant-a/team-a--op");
    driver_sandbox_close(&s);
    assert_int_equal(driver_list(d, e, NULL, &l, errmsg), 0);
    assert_int_equal(conf_count(&l, cs.id), 1);
    driver_sandbox_list_close(&l);
    assert_int_equal(driver_delete_namespace(d, e, "team-a", errmsg), GERR_CONSTRAINT);
    assert_int_equal(driver_delete(d, e, "team-a", cs.id, errmsg), 0);
    assert_int_equal(driver_delete_namespace(d, e, "team-a", errmsg), 0);
    assert_true(exists("/api/v1/namespaces/tenant-a")); /* never deleted in operator mode */
    driver_free(d);
}

/* ---- Shared mode and two gateways in one API server */

static void make_in(struct driver *d, uint64_t e, const char *ns, const char *name, struct conf_spec *cs)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver_sandbox s;
    conf_spec(&env, cs, name);
    cs->spec.namespace = ns;
    assert_int_equal(driver_ensure_namespace(d, e, ns, errmsg), 0);
    if (driver_create(d, e, &cs->spec, &s, errmsg) != 0) {
        fail_msg("create %s/%s: %s", ns, name, errmsg);
    }
    driver_sandbox_close(&s);
}

static void test_shared_and_two_gateways(void **state)
{
    char errmsg[GERR_MSG_SIZE], path[256], fallback[64], v[64];
    assert_int_equal(raw("POST", "/api/v1/namespaces", "{\"metadata\":{\"name\":\"sandboxes\"}}", NULL), 201);
    struct driver *a = open_gw("gw-one", DRIVER_K8S_SHARED, "sandboxes", NULL, token);
    struct driver *b = open_gw("gw-two", DRIVER_K8S_SHARED, "sandboxes", NULL, token);
    uint64_t ea = conf_epoch(), eb = 1; /* separate fences: a low epoch on gw-two is not stale */
    struct conf_spec a1, a2, b1;
    struct driver_sandbox s;
    struct driver_sandbox_list l;

    /* The same names in the same namespaces, in the same Kubernetes namespace. */
    make_in(a, ea, "team-a", "web", &a1);
    make_in(a, ea, "team-b", "web", &a2);
    make_in(b, eb, "team-a", "web", &b1);
    /* gw-one got the readable names; gw-two's "team-a--web" was taken, so it stepped aside. */
    sbx_path(path, sizeof path, "sandboxes", "team-a--web");
    label_of(path, K8S_LABEL_GATEWAY, v, sizeof v);
    assert_string_equal(v, "gw-one");
    sbx_path(path, sizeof path, "sandboxes", "team-b--web");
    label_of(path, K8S_LABEL_SANDBOX, v, sizeof v);
    assert_string_equal(v, a2.id);
    driver_k8s_fallback_name("team-a--web", "gw-two", b1.id, fallback);
    sbx_path(path, sizeof path, "sandboxes", fallback);
    label_of(path, K8S_LABEL_GATEWAY, v, sizeof v);
    assert_string_equal(v, "gw-two");
    assert_int_equal(driver_get(b, eb, "team-a", b1.id, &s, errmsg), 0);
    assert_non_null(strstr(s.handle, fallback));
    assert_string_equal(s.name, "web");
    driver_sandbox_close(&s);
    /* Creating it again finds it under the name it got: still one copy. */
    assert_int_equal(driver_create(b, eb, &b1.spec, &s, errmsg), 0);
    assert_non_null(strstr(s.handle, fallback));
    driver_sandbox_close(&s);

    assert_int_equal(driver_list(a, ea, NULL, &l, errmsg), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(conf_count(&l, a1.id) + conf_count(&l, a2.id), 2);
    driver_sandbox_list_close(&l);
    assert_int_equal(driver_list(a, ea, "team-a", &l, errmsg), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.items[0].id, a1.id);
    driver_sandbox_list_close(&l);
    assert_int_equal(driver_list(b, eb, NULL, &l, errmsg), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.items[0].id, b1.id);
    driver_sandbox_list_close(&l);

    /* gw-two can neither see nor delete gw-one's sandbox. */
    assert_int_equal(driver_get(b, eb, "team-a", a1.id, &s, errmsg), GERR_NOTFOUND);
    assert_int_equal(driver_delete(b, eb, "team-a", a1.id, errmsg), 0);
    assert_int_equal(driver_get(a, ea, "team-a", a1.id, &s, errmsg), 0);
    driver_sandbox_close(&s);
    /* Shared mode never deletes the namespace; team-b's sandbox does not keep team-a busy. */
    assert_int_equal(driver_delete(a, ea, "team-a", a1.id, errmsg), 0);
    assert_int_equal(driver_delete_namespace(a, ea, "team-a", errmsg), 0);
    assert_true(exists("/api/v1/namespaces/sandboxes"));
    assert_int_equal(driver_delete(a, ea, "team-b", a2.id, errmsg), 0);
    assert_int_equal(driver_delete(b, eb, "team-a", b1.id, errmsg), 0);
    assert_false(exists(path));

    /* Lists asked the server for this gateway's label only. */
    assert_true(logged("GET", SBX "/namespaces/sandboxes/sandboxes", "gantry.dev%2Fgateway-id%3Dgw-one") > 0);
    assert_true(logged("GET", SBX "/namespaces/sandboxes/sandboxes", "gantry.dev%2Fgateway-id%3Dgw-two") > 0);
    driver_free(a);
    driver_free(b);
}

/* "a--b"/"c" and "a"/"b--c" read the same in shared mode; both exist, each found by its labels. */
static void test_shared_names_that_read_the_same(void **state)
{
    char errmsg[GERR_MSG_SIZE], path[256];
    struct driver *d = open_gw("gw-one", DRIVER_K8S_SHARED, "sandboxes", NULL, token);
    uint64_t e = conf_epoch();
    struct conf_spec x, y;
    struct driver_sandbox s;
    make_in(d, e, "a--b", "c", &x);
    make_in(d, e, "a", "b--c", &y);
    sbx_path(path, sizeof path, "sandboxes", "a--b--c");
    assert_true(exists(path));
    assert_int_equal(driver_get(d, e, "a", y.id, &s, errmsg), 0);
    assert_string_equal(s.name, "b--c");
    assert_string_not_equal(s.handle, "k8s:sandboxes/a--b--c"); /* stepped aside */
    assert_non_null(strstr(s.handle, "k8s:sandboxes/a--b--c-"));
    driver_sandbox_close(&s);
    assert_int_equal(driver_get(d, e, "a--b", x.id, &s, errmsg), 0);
    assert_string_equal(s.handle, "k8s:sandboxes/a--b--c");
    driver_sandbox_close(&s);
    assert_int_equal(driver_delete(d, e, "a--b", x.id, errmsg), 0);
    assert_int_equal(driver_get(d, e, "a", y.id, &s, errmsg), 0); /* the other one stays */
    driver_sandbox_close(&s);
    assert_int_equal(driver_delete(d, e, "a", y.id, errmsg), 0);
    driver_free(d);
}

static void test_two_gateways_managed(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *a = open_managed(NULL);
    struct driver *b = open_gw("gw-b", DRIVER_K8S_MANAGED, NULL, NULL, token);
    uint64_t e = conf_epoch();
    struct conf_spec sa, sb;
    struct driver_sandbox_list l;
    make_in(a, e, "shared-name", "app", &sa);
    make_in(b, e, "shared-name", "app", &sb);
    assert_true(exists("/api/v1/namespaces/openshell-gw-a-shared-name"));
    assert_true(exists("/api/v1/namespaces/openshell-gw-b-shared-name"));
    assert_int_equal(driver_list(a, e, NULL, &l, errmsg), 0);
    assert_int_equal(conf_count(&l, sa.id), 1);
    assert_int_equal(conf_count(&l, sb.id), 0);
    driver_sandbox_list_close(&l);
    truncate_log();
    assert_int_equal(driver_list(b, e, NULL, &l, errmsg), 0);
    assert_int_equal(conf_count(&l, sb.id), 1);
    assert_int_equal(conf_count(&l, sa.id), 0);
    driver_sandbox_list_close(&l);
    assert_true(logged("GET", SBX "/sandboxes", "labelSelector=gantry.dev%2Fgateway-id%3Dgw-b") > 0);
    assert_int_equal(driver_delete(a, e, "shared-name", sa.id, errmsg), 0);
    assert_int_equal(driver_delete(b, e, "shared-name", sb.id, errmsg), 0);
    assert_int_equal(driver_delete_namespace(a, e, "shared-name", errmsg), 0);
    assert_false(exists("/api/v1/namespaces/openshell-gw-a-shared-name"));
    assert_true(exists("/api/v1/namespaces/openshell-gw-b-shared-name"));
    assert_int_equal(driver_delete_namespace(b, e, "shared-name", errmsg), 0);
    driver_free(a);
    driver_free(b);
}

/* ---- Conflicts */

#define FENCE_PATH "/api/v1/namespaces/default/configmaps/gantry-fence-gw-a"

static void test_fence_conflict_then_success(void **state)
{
    char errmsg[GERR_MSG_SIZE], json[512];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    conf_epoch();
    uint64_t mine = conf_epoch();
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), 0);
    /* Between our read and our write another replica raises the fence, but below our epoch. */
    snprintf(
        json, sizeof json,
        "{\"method\":\"PUT\",\"path\":\"%s\",\"mutate\":{\"annotations\":{\"gantry.dev/epoch\":\"%llu\"}}}",
        FENCE_PATH, (unsigned long long)(mine - 1));
    inject(json);
    truncate_log();
    assert_int_equal(driver_ensure_namespace(d, mine, env.ns, errmsg), 0);
    assert_int_equal(logged("PUT", FENCE_PATH, NULL), 2); /* 409, read again, write again */
    driver_free(d);
}

static void test_fence_conflict_then_stale(void **state)
{
    char errmsg[GERR_MSG_SIZE], json[512];
    struct driver *d = open_managed(NULL);
    uint64_t mine = conf_epoch(), theirs = conf_epoch();
    /* Between our read and our write a newer holder raises the fence above our epoch. */
    snprintf(
        json, sizeof json,
        "{\"method\":\"PUT\",\"path\":\"%s\",\"mutate\":{\"annotations\":{\"gantry.dev/epoch\":\"%llu\"}}}",
        FENCE_PATH, (unsigned long long)theirs);
    inject(json);
    assert_int_equal(driver_ensure_namespace(d, mine, env.ns, errmsg), DRIVER_ERR_STALE);
    assert_non_null(strstr(errmsg, "stale epoch"));
    struct driver_sandbox_list l;
    assert_int_equal(driver_list(d, mine, NULL, &l, errmsg), DRIVER_ERR_STALE); /* remembered locally */
    driver_free(d);
}

static void test_delete_conflict_and_404(void **state)
{
    char errmsg[GERR_MSG_SIZE], json[512], path[200], kns[64];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    make_in(d, e, env.ns, "conflicted", &cs);
    driver_k8s_managed_namespace("gw-a", env.ns, kns);
    sbx_path(path, sizeof path, kns, "conflicted");
    /* The object changes between our read and our delete: the precondition fails, we read again. */
    snprintf(json, sizeof json,
             "{\"method\":\"DELETE\",\"path\":\"%s\",\"mutate\":{\"labels\":{\"touched\":\"yes\"}}}", path);
    inject(json);
    truncate_log();
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    assert_int_equal(logged("DELETE", path, NULL), 2);
    assert_false(exists(path));

    /* Gone between our read and our delete (404 on DELETE): success. */
    make_in(d, e, env.ns, "vanishing", &cs);
    sbx_path(path, sizeof path, kns, "vanishing");
    snprintf(json, sizeof json, "{\"method\":\"DELETE\",\"path\":\"%s\",\"status\":404}", path);
    inject(json);
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    assert_int_equal(raw("DELETE", path, NULL, NULL), 200); /* the injected 404 left it; clean up */
    driver_free(d);
}

static void test_epoch_annotation_fences_delete(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = open_managed(NULL);
    uint64_t old = conf_epoch(), newer = conf_epoch();
    struct conf_spec cs;
    make_in(d, newer, env.ns, "newer", &cs);
    /* A stale holder that somehow passed the fence still cannot delete a newer holder's sandbox. */
    struct driver *stale = open_managed(NULL);
    assert_int_equal(driver_delete(stale, old, env.ns, cs.id, errmsg), DRIVER_ERR_STALE);
    driver_free(stale);
    assert_int_equal(driver_delete(d, newer, env.ns, cs.id, errmsg), 0);
    driver_free(d);
}

/* ---- The Sandbox object itself */

static void test_manifest_and_config(void **state)
{
    char errmsg[GERR_MSG_SIZE], path[200], kns[64];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    json_t *p;
    struct driver_kv cfg[] = {
        {"runtime_class", "gvisor"},
        {"node_selector", "pool=agents,zone=a"},
        {"tolerations", "[{\"key\":\"agents\",\"operator\":\"Exists\",\"effect\":\"NoSchedule\"}]"},
        {"service_account", "sandbox-runner"},
        {"resources", "{\"requests\":{\"cpu\":\"500m\"},\"limits\":{\"memory\":\"1Gi\"}}"}};
    struct driver_kv envs[] = {{"MODE", "test"}};
    struct driver_kv labels[] = {{"team", "blue"}};
    conf_spec(&env, &cs, "configured");
    cs.spec.driver_config = cfg;
    cs.spec.n_driver_config = 5;
    cs.spec.env = envs;
    cs.spec.n_env = 1;
    cs.spec.labels = labels;
    cs.spec.n_labels = 1;
    cs.spec.gpu_count = 2;
    cs.spec.lifetime_s = 3600;
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), 0);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), 0);
    driver_sandbox_close(&s);
    driver_k8s_managed_namespace("gw-a", env.ns, kns);
    sbx_path(path, sizeof path, kns, "configured");
    assert_int_equal(raw("GET", path, NULL, &p), 200);
    assert_string_equal(json_string_value(json_object_get(p, "kind")), "Sandbox");
    json_t *md = json_object_get(p, "metadata");
    json_t *sspec = json_object_get(p, "spec");
    json_t *tmpl = json_object_get(sspec, "podTemplate");
    json_t *spec = json_object_get(tmpl, "spec");
    json_t *c = json_array_get(json_object_get(spec, "containers"), 0);
    json_t *labs = json_object_get(md, "labels");
    json_t *pod_labs = json_object_get(json_object_get(tmpl, "metadata"), "labels");
    assert_string_equal(json_string_value(json_object_get(pod_labs, K8S_LABEL_GATEWAY)), "gw-a");
    assert_string_equal(json_string_value(json_object_get(pod_labs, "team")), "blue");
    assert_string_equal(json_string_value(json_object_get(labs, K8S_LABEL_SANDBOX)), cs.id);
    assert_string_equal(json_string_value(json_object_get(labs, K8S_LABEL_NAME)), "configured");
    assert_string_equal(json_string_value(json_object_get(labs, "team")), "blue");
    assert_string_equal(json_string_value(json_object_get(json_object_get(md, "annotations"), K8S_ANN_OWNER)),
                        "user:alice");
    assert_string_equal(json_string_value(json_object_get(spec, "runtimeClassName")), "gvisor");
    assert_string_equal(json_string_value(json_object_get(spec, "serviceAccountName")), "sandbox-runner");
    assert_string_equal(json_string_value(json_object_get(json_object_get(spec, "nodeSelector"), "zone")),
                        "a");
    assert_int_equal(json_array_size(json_object_get(spec, "tolerations")), 1);
    assert_null(json_object_get(spec, "activeDeadlineSeconds"));
    assert_non_null(json_string_value(json_object_get(sspec, "shutdownTime"))); /* the lifetime */
    assert_string_equal(json_string_value(json_object_get(sspec, "shutdownPolicy")), "Retain");
    assert_string_equal(json_string_value(json_object_get(spec, "restartPolicy")), "Never");
    json_t *res = json_object_get(c, "resources");
    assert_string_equal(json_string_value(json_object_get(json_object_get(res, "requests"), "cpu")), "500m");
    assert_string_equal(json_string_value(json_object_get(json_object_get(res, "limits"), "memory")), "1Gi");
    assert_string_equal(json_string_value(json_object_get(json_object_get(res, "limits"), "nvidia.com/gpu")),
                        "2");
    assert_string_equal(json_string_value(json_object_get(c, "image")), "busybox:1.36");
    assert_string_equal(json_string_value(json_array_get(json_object_get(c, "command"), 1)), "infinity");
    json_decref(p);
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);

    /* Bad values are refused before anything is sent, naming the key. */
    struct driver_kv bad[][1] = {{{"runtime_class", "Not_A_Name"}},
                                 {{"node_selector", "no-equals-sign"}},
                                 {{"tolerations", "[{\"key\":\"x\",\"operator\":\"Sometimes\"}]"}},
                                 {{"resources", "{\"limits\":{\"cpu\":\"lots\"}}"}},
                                 {{"service_account", ""}}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cs.spec.driver_config = bad[i];
        cs.spec.n_driver_config = 1;
        assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), GERR_INVAL);
        assert_non_null(strstr(errmsg, bad[i][0].key));
    }
    cs.spec.n_driver_config = 0;
    cs.spec.image = "";
    assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "image"));
    driver_free(d);
}

/* Set the status of Sandbox @path as the agent-sandbox controller would. */
static void set_status(const char *path, const char *name, const char *status_json)
{
    char spath[300], body[2048];
    json_t *p;
    snprintf(spath, sizeof spath, "%s/status", path);
    assert_int_equal(raw("GET", spath, NULL, &p), 200);
    const char *rv = json_string_value(json_object_get(json_object_get(p, "metadata"), "resourceVersion"));
    snprintf(body, sizeof body, "{\"metadata\":{\"name\":\"%s\",\"resourceVersion\":\"%s\"},\"status\":%s}",
             name, rv, status_json);
    json_decref(p);
    assert_int_equal(raw("PUT", spath, body, NULL), 200);
    assert_int_equal(raw("PUT", spath, body, NULL), 409); /* stale resourceVersion */
}

static void test_phase_from_sandbox_status(void **state)
{
    char errmsg[GERR_MSG_SIZE], path[256], kns[64];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    make_in(d, e, env.ns, "phases", &cs);
    driver_k8s_managed_namespace("gw-a", env.ns, kns);
    sbx_path(path, sizeof path, kns, "phases");
    assert_int_equal(driver_get(d, e, env.ns, cs.id, &s, errmsg), 0);
    assert_int_equal(s.phase, DRIVER_PHASE_READY);
    driver_sandbox_close(&s);

    set_status(
        path, "phases",
        "{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"PodFailed\",\"message\":"
        "\"Pod failed\"},{\"type\":\"Finished\",\"status\":\"True\",\"reason\":\"PodFailed\",\"message\":"
        "\"Pod failed\"}]}");
    assert_int_equal(driver_get(d, e, env.ns, cs.id, &s, errmsg), 0);
    assert_int_equal(s.phase, DRIVER_PHASE_ERROR);
    assert_string_equal(s.message, "PodFailed: Pod failed");
    driver_sandbox_close(&s);

    set_status(path, "phases",
               "{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"SandboxExpired\","
               "\"message\":\"Sandbox has expired\"}]}");
    assert_int_equal(driver_get(d, e, env.ns, cs.id, &s, errmsg), 0);
    assert_int_equal(s.phase, DRIVER_PHASE_STOPPED);
    driver_sandbox_close(&s);

    /* A PUT of the object itself cannot change the status (the status subresource can). */
    json_t *p;
    assert_int_equal(raw("GET", path, NULL, &p), 200);
    json_object_set_new(p, "status",
                        json_pack("{s:[{s:s,s:s}]}", "conditions", "type", "Ready", "status", "True"));
    char *doc = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    assert_int_equal(raw("PUT", path, doc, NULL), 200);
    free(doc);
    assert_int_equal(driver_get(d, e, env.ns, cs.id, &s, errmsg), 0);
    assert_int_equal(s.phase, DRIVER_PHASE_STOPPED);
    driver_sandbox_close(&s);
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    driver_free(d);
}

/* An API server without the agent-sandbox CRD answers 404 for the resource itself. */
static void test_crd_not_installed(void **state)
{
    char errmsg[GERR_MSG_SIZE], json[512], kns[64];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    conf_spec(&env, &cs, "nocrd");
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), 0);
    driver_k8s_managed_namespace("gw-a", env.ns, kns);
    snprintf(json, sizeof json,
             "{\"method\":\"GET\",\"path\":\"" SBX
             "/namespaces/%s/sandboxes\",\"status\":404,\"reason\":\"NotFound\"}",
             kns);
    inject(json);
    assert_int_equal(driver_get(d, e, env.ns, cs.id, &s, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "CRD"));
    snprintf(json, sizeof json,
             "{\"method\":\"POST\",\"path\":\"" SBX
             "/namespaces/%s/sandboxes\",\"status\":404,\"reason\":\"NotFound\"}",
             kns);
    inject(json);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "CRD"));
    driver_free(d);
}

/* ---- Failures of the server or the connection */

static void test_auth_tls_and_server_errors(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    uint64_t e = conf_epoch();
    struct driver *d = open_gw("gw-a", DRIVER_K8S_MANAGED, NULL, NULL, bad_token);
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "401"));
    driver_free(d);

    struct driver_k8s_config untrusted = {.server = server, .token_file = token, .gateway_id = "gw-a"};
    assert_int_equal(driver_k8s_new(&untrusted, &d, errmsg), 0); /* system CAs do not know ours */
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), GERR_UNAUTH);
    driver_free(d);

    struct driver_k8s_config down = {
        .server = "https://127.0.0.1:1", .token_file = token, .ca_file = cert, .gateway_id = "gw-a"};
    assert_int_equal(driver_k8s_new(&down, &d, errmsg), 0);
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), GERR_UNAVAILABLE);
    driver_free(d);

    d = open_managed(NULL);
    inject("{\"method\":\"GET\",\"path\":\"" FENCE_PATH "\",\"status\":503}");
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "503"));
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), 0); /* the next call works */
    driver_free(d);
}

static void test_bad_config(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = NULL;
    const char *const bad_allow[] = {"Team", NULL};
    const char *const dup_allow[] = {"a", "a=b", NULL};
    struct driver_k8s_config cfgs[] = {
        {.server = server, .gateway_id = "GW"},
        {.server = server, .gateway_id = "a-gateway-id-that-is-longer-than-forty-bytes"},
        {.server = "http://127.0.0.1:1", .gateway_id = "gw"},
        {.server = "https://127.0.0.1:1/path", .gateway_id = "gw"},
        {.server = server, .gateway_id = "gw", .mode = DRIVER_K8S_SHARED},
        {.server = server, .gateway_id = "gw", .mode = DRIVER_K8S_OPERATOR},
        {.server = server, .gateway_id = "gw", .mode = DRIVER_K8S_OPERATOR, .operator_namespaces = bad_allow},
        {.server = server, .gateway_id = "gw", .mode = DRIVER_K8S_OPERATOR, .operator_namespaces = dup_allow},
        {.server = server, .gateway_id = "gw", .client_cert_file = cert},
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        if (driver_k8s_new(&cfgs[i], &d, errmsg) != GERR_INVAL) {
            fail_msg("config %zu accepted", i);
        }
        assert_null(d);
    }
}

/* ---- Setup: certificate, token, the fake API server */

static int run(const char *const *argv)
{
    char errmsg[GERR_MSG_SIZE], out[320];
    struct proc p;
    int status;
    snprintf(out, sizeof out, "%s/openssl.log", dir);
    struct proc_spec spec = {.argv = argv, .stdout_path = out, .stderr_path = out, .append = true};
    if (proc_spawn(&p, &spec, errmsg) != 0 || proc_reap(&p, 60000, &status) != 0) {
        fprintf(stderr, "%s: %s\n", argv[0], errmsg);
        return -1;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static int start_apiserver(void)
{
    char errmsg[GERR_MSG_SIZE], line[128], out[320], err[320];
    const char *const gen[] = {OPENSSL,
                               "req",
                               "-x509",
                               "-newkey",
                               "ec",
                               "-pkeyopt",
                               "ec_paramgen_curve:P-256",
                               "-nodes",
                               "-subj",
                               "/CN=localhost",
                               "-addext",
                               "subjectAltName=IP:127.0.0.1,DNS:localhost",
                               "-days",
                               "2",
                               "-keyout",
                               key,
                               "-out",
                               cert,
                               NULL};
    if (run(gen) != 0) {
        fprintf(stderr, "openssl could not make a certificate (see %s/openssl.log)\n", dir);
        return -1;
    }
    write_text(token, "test-token-0123456789\n");
    write_text(bad_token, "not-the-token\n");
    snprintf(out, sizeof out, "%s/apiserver.out", dir);
    snprintf(err, sizeof err, "%s/apiserver.err", dir);
    const char *const argv[] = {
        PYTHON, FAKE_KUBE_APISERVER, "--cert", cert, "--key", key, "--token-file", token, "--log",
        reqlog, "--max-page",        "2",      NULL};
    struct proc_spec spec = {.argv = argv, .stdout_path = out, .stderr_path = err};
    if (proc_spawn(&apiserver, &spec, errmsg) != 0 ||
        proc_wait_line(&apiserver, "LISTENING ", 30000, line, sizeof line, errmsg) != 0) {
        char tail[600];
        fprintf(stderr, "fake API server did not start: %s; stderr: %s\n", errmsg,
                proc_file_tail(err, 500, tail, sizeof tail));
        return -1;
    }
    snprintf(server, sizeof server, "https://127.0.0.1:%.8s", line + strlen("LISTENING "));
    return 0;
}

int main(void)
{
    if (access(PYTHON, X_OK) != 0 || access(OPENSSL, X_OK) != 0) {
        fprintf(stderr, "SKIP: driver_k8s needs %s and %s for the fake API server\n", PYTHON, OPENSSL);
        return 77;
    }
    snprintf(dir, sizeof dir, "/tmp/gantry-driver-k8s-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    snprintf(token, sizeof token, "%s/token", dir);
    snprintf(bad_token, sizeof bad_token, "%s/bad-token", dir);
    snprintf(reqlog, sizeof reqlog, "%s/requests.jsonl", dir);
    if (start_apiserver() != 0) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_stale_epoch),
        cmocka_unit_test(test_adoption),
        cmocka_unit_test(test_namespaces),
        cmocka_unit_test(test_config_keys),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_managed_namespace_labels),
        cmocka_unit_test(test_operator_allowlist),
        cmocka_unit_test(test_shared_and_two_gateways),
        cmocka_unit_test(test_shared_names_that_read_the_same),
        cmocka_unit_test(test_two_gateways_managed),
        cmocka_unit_test(test_fence_conflict_then_success),
        cmocka_unit_test(test_fence_conflict_then_stale),
        cmocka_unit_test(test_delete_conflict_and_404),
        cmocka_unit_test(test_epoch_annotation_fences_delete),
        cmocka_unit_test(test_manifest_and_config),
        cmocka_unit_test(test_phase_from_sandbox_status),
        cmocka_unit_test(test_crd_not_installed),
        cmocka_unit_test(test_auth_tls_and_server_errors),
    };
    int failed = cmocka_run_group_tests_name("driver_k8s", tests, NULL, NULL);
    proc_stop(&apiserver, 5000);
    if (failed == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not remove %s\n", dir);
        }
    }
    return failed != 0 ? 1 : 0;
}
