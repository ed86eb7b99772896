/* The kubernetes driver against the strict fake API server (tests/drivers/fake_kube_apiserver.py)
 * over real TLS with a certificate made here by the openssl CLI.
 *
 * The fake enforces RBAC: each gateway's driver authenticates as the ServiceAccount of its own Helm
 * release and gets exactly the rights the chart renders for it (the JSON files in tests/drivers/rbac/, kept
 * equal to the chart by deploy/helm/check.sh): gw-a and gw-b in managed mode (releases gantry and gantry-b),
 * gw-op in operator mode (gantry-op: tenant-a and team-b), gw-one and gw-two in shared mode (gantry-one and
 * gantry-two, both in namespace "sandboxes"). The tests' own requests use the admin token. The server pages
 * every list by 2 items, so paging is always exercised.
 *
 * Covers: the shared conformance checks (managed mode); managed namespaces made and removed with
 * the gateway's labels, the Pod Security labels, a default-deny NetworkPolicy and copied image pull
 * secrets, foreign namespaces never adopted or deleted, one an older version made brought up to
 * date by a merge PATCH, a name two gateway ids collide on refused naming the holder; operator
 * mode's allowlist and a namespace chosen per sandbox among it (runtime class and tolerations
 * in the pod template, found and deleted there by a second instance); shared mode
 * without reading the Namespace object, with "<namespace>--<name>" object names, names that read the
 * same and names taken by another gateway; two gateway ids in one API server (managed and shared)
 * never seeing or touching each other's objects; 409 Conflict on the fence and on deletes; 404 on
 * delete; driver_config in the pod template and the service account allow-list; tenant labels under
 * reserved prefixes and objects over the size limit refused; the restricted pod security context
 * (the fake's controller refuses pods that break it); phases from the Sandbox's conditions; the
 * provisioning deadline; the served API version (v1beta1, v1alpha1 only where v1beta1 is not,
 * the conversion webhook down); the CRD not served; throttling (429 with Retry-After, waited out
 * without blocking other calls, cut short by driver_k8s_stop); a namespace
 * stuck Terminating; the API server restarting mid-create; reads from the list+watch cache, a watch
 * relisting after 410 and list pages restarting after an expired continue token; RBAC refusals;
 * 401, untrusted certificates, 5xx, an unreachable server; credentials (the per-sandbox Secret's
 * data, labels and owner, the Sandbox referring to it without a value, create again, rotation,
 * never read back, errors without the value, delete, garbage collection, every namespace mode under
 * the chart's RBAC, a namespace deleted behind the driver); 1,000 sandboxes with the API requests
 * per create and per idle minute measured (printed; docs/drivers.md records them).
 *
 * Without /usr/bin/python3 or /usr/bin/openssl the test says so and exits 77 (skipped).
 * GANTRY_TEST_FILTER (a cmocka pattern such as "test_throttl*") runs only the tests it matches. */
#include <pthread.h>
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
#include "drivers/k8s_claims.h"
#include "drivers/k8s_pools.h"
#include "drivers/k8s_http.h"
#include "drivers/k8s_json.h"
#include "lib/clock.h"
#include "lib/file.h"
#include "lib/mem.h"
#include "lib/proc.h"

#define PYTHON  "/usr/bin/python3"
#define OPENSSL "/usr/bin/openssl"
#define SBX     "/apis/agents.x-k8s.io/v1beta1"

static char dir[256], cert[300], key[300], token[300], bad_token[300], reqlog[300], statefile[300],
    server[64];
static int port;
static struct proc apiserver;
static const char *const sleeper[] = {"sleep", "infinity"};

/* The gateways of the tests: each is a Helm release with its own ServiceAccount (token) and
 * namespace (where its fence lives), and the RBAC the chart renders for it. */
struct gateway {
    const char *id, *release, *rbac;
    char token[300];
};
static struct gateway gateways[] = {
    {"gw-a", "gantry", "managed-gw-a", ""},        {"gw-b", "gantry-b", "managed-gw-b", ""},
    {"gw-op", "gantry-op", "operator-gw-op", ""},  {"gw-one", "gantry-one", "shared-gw-one", ""},
    {"gw-two", "gantry-two", "shared-gw-two", ""},
};
#define N_GATEWAYS (sizeof gateways / sizeof gateways[0])

static const struct gateway *gateway(const char *id)
{
    for (size_t i = 0; i < N_GATEWAYS; i++) {
        if (strcmp(gateways[i].id, id) == 0) {
            return &gateways[i];
        }
    }
    fail_msg("no gateway %s", id);
    return NULL;
}

static const char *const gw_a_accounts[] = {"sandbox-runner", NULL};
static const char *const gw_a_pulls[] = {"regcred", NULL};

/* A driver for gateway @gw as its release's ServiceAccount; @cfg (may be NULL) adds settings. */
static struct driver *open_cfg(const char *gw, struct driver_k8s_config *cfg)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d;
    struct driver_k8s_config c = cfg != NULL ? *cfg : (struct driver_k8s_config){0};
    const struct gateway *g = gateway(gw);
    c.server = c.server != NULL ? c.server : server;
    c.token_file = c.token_file != NULL ? c.token_file : g->token;
    c.ca_file = cert;
    c.gateway_id = gw;
    c.home_namespace = g->release;
    c.timeout_ms = 10000;
    if (strcmp(gw, "gw-a") == 0) {
        c.service_accounts = c.service_accounts != NULL ? c.service_accounts : gw_a_accounts;
        c.image_pull_secrets = gw_a_pulls;
    }
    if (driver_k8s_new(&c, &d, errmsg) != 0) {
        fail_msg("driver_k8s_new: %s", errmsg);
    }
    return d;
}

static struct driver *open_gw(const char *gw, enum driver_k8s_mode mode, const char *shared,
                              const char *const *allow)
{
    struct driver_k8s_config c = {.mode = mode, .shared_namespace = shared, .operator_namespaces = allow};
    return open_cfg(gw, &c);
}

static struct driver *open_managed(void *ctx)
{
    (void)ctx;
    return open_gw("gw-a", DRIVER_K8S_MANAGED, NULL, NULL);
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

/* ---- Raw requests, as another client of the API server (the admin) */

static long raw_as(const char *tok, const char *method, const char *path, const char *body, json_t **out)
{
    char errmsg[GERR_MSG_SIZE];
    struct k8s_http *h;
    struct k8s_http_config cfg = {.server = server, .token_file = tok, .ca_file = cert, .max_body = 1 << 26};
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

static long raw(const char *method, const char *path, const char *body, json_t **out)
{
    return raw_as(token, method, path, body, out);
}

static bool exists(const char *path)
{
    return raw("GET", path, NULL, NULL) == 200;
}

static void make_namespace(const char *name)
{
    char body[200];
    snprintf(body, sizeof body, "{\"metadata\":{\"name\":\"%s\"}}", name);
    long st = raw("POST", "/api/v1/namespaces", body, NULL);
    assert_true(st == 201 || st == 409);
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

static void control(const char *path, const char *json)
{
    assert_int_equal(raw("POST", path, json, NULL), 200);
}

static void inject(const char *json)
{
    control("/_fake/inject", json);
}

/* How many requests in the server's log match @method and @path (and contain @query_part). */
static int logged(const char *method, const char *path, const char *query_part)
{
    char errmsg[GERR_MSG_SIZE], *text;
    int n = 0;
    if (file_read_all(reqlog, 256 << 20, &text, NULL, errmsg) != 0) {
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

/* How many requests in the server's log came from @user with @method and @path. */
static int logged_user(const char *method, const char *path, const char *user)
{
    char errmsg[GERR_MSG_SIZE], *text;
    int n = 0;
    if (file_read_all(reqlog, 256 << 20, &text, NULL, errmsg) != 0) {
        return 0;
    }
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        const char *m = json_string_value(json_object_get(j, "method"));
        const char *p = json_string_value(json_object_get(j, "path"));
        const char *u = json_string_value(json_object_get(j, "user"));
        n += m != NULL && p != NULL && u != NULL && strcmp(m, method) == 0 && strcmp(p, path) == 0 &&
             strcmp(u, user) == 0;
        json_decref(j);
    }
    mem_free(text);
    return n;
}

/* How many logged requests answered @status. */
static int logged_status(long status)
{
    char errmsg[GERR_MSG_SIZE], *text;
    int n = 0;
    if (file_read_all(reqlog, 256 << 20, &text, NULL, errmsg) != 0) {
        return 0;
    }
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        n += json_integer_value(json_object_get(j, "status")) == status;
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

static uint64_t now_ms(void)
{
    return clock_mono_ms(clock_system());
}

static void nap_ms(unsigned ms)
{
    clock_system()->sleep_ns(clock_system(), (uint64_t)ms * 1000000u);
}

/* Poll get() until the sandbox is in @phase (the cache follows the watch a moment later than the
 * API server); fail after 10 s. */
static void wait_phase(struct driver *d, uint64_t e, const char *ns, const char *id, enum driver_phase phase,
                       struct driver_sandbox *out)
{
    char errmsg[GERR_MSG_SIZE];
    uint64_t deadline = now_ms() + 10000;
    for (;;) {
        int rv = driver_get(d, e, ns, id, out, errmsg);
        if (rv == 0 && out->phase == phase) {
            return;
        }
        if (now_ms() > deadline) {
            fail_msg("sandbox %s: %s, phase %s, want %s", id, gerr_name(rv),
                     rv == 0 ? driver_phase_name(out->phase) : "-", driver_phase_name(phase));
        }
        if (rv == 0) {
            driver_sandbox_close(out);
        }
        nap_ms(20);
    }
}

/* Wait until every scope of @d's cache is live. */
static void wait_live(struct driver *d)
{
    uint64_t deadline = now_ms() + 30000;
    struct driver_k8s_stats st;
    for (driver_k8s_stats(d, &st); !st.live; driver_k8s_stats(d, &st)) {
        assert_true(now_ms() < deadline);
        nap_ms(20);
    }
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
    char errmsg[GERR_MSG_SIZE], kns[64], path[200];
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
    assert_string_equal(json_string_value(json_object_get(labels, OS_LABEL_MANAGED)), "openshell");
    assert_string_equal(json_string_value(json_object_get(labels, OS_LABEL_GATEWAY)), "gw-a");
    assert_string_equal(json_string_value(json_object_get(labels, "pod-security.kubernetes.io/enforce")),
                        "restricted");
    json_decref(ns);
    /* Nothing in it talks to anything until a policy allows it. */
    snprintf(path, sizeof path, "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies/" K8S_NETPOL_NAME,
             kns);
    json_t *np;
    assert_int_equal(raw("GET", path, NULL, &np), 200);
    assert_int_equal(json_object_size(json_object_get(json_object_get(np, "spec"), "podSelector")), 0);
    json_decref(np);
    /* The image pull secret is copied from the gateway's namespace. */
    snprintf(path, sizeof path, "/api/v1/namespaces/%s/secrets/regcred", kns);
    json_t *sec;
    assert_int_equal(raw("GET", path, NULL, &sec), 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(sec, "data"), ".dockerconfigjson")),
                        "eyJhdXRocyI6e319");
    json_decref(sec);
    assert_int_equal(driver_ensure_namespace(d, e, "team-m", errmsg), 0); /* idempotent */
    driver_free(d);
    /* A rotated credential reaches the namespace the next time it is ensured. */
    assert_int_equal(raw("PUT", "/api/v1/namespaces/gantry/secrets/regcred",
                         "{\"metadata\":{\"name\":\"regcred\"},\"type\":\"kubernetes.io/dockerconfigjson\","
                         "\"data\":{\".dockerconfigjson\":\"eyJhdXRocyI6eyJ4Ijp7fX19\"}}",
                         NULL),
                     200);
    d = open_managed(NULL);
    assert_int_equal(driver_ensure_namespace(d, e, "team-m", errmsg), 0);
    assert_int_equal(raw("GET", path, NULL, &sec), 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(sec, "data"), ".dockerconfigjson")),
                        "eyJhdXRocyI6eyJ4Ijp7fX19");
    json_decref(sec);
    assert_int_equal(driver_delete_namespace(d, e, "team-m", errmsg), 0);
    snprintf(path, sizeof path, "/api/v1/namespaces/%s", kns);
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

/* What an older Gantry left: namespace @kns with @labels_json (a JSON object) and nothing else. */
static void make_labelled_namespace(const char *kns, const char *labels_json)
{
    char body[600];
    snprintf(body, sizeof body, "{\"metadata\":{\"name\":\"%s\",\"labels\":%s}}", kns, labels_json);
    assert_int_equal(raw("POST", "/api/v1/namespaces", body, NULL), 201);
}

/* The resourceVersion of the object at @path. */
static void rv_of(const char *path, char *out, size_t len)
{
    json_t *j;
    assert_int_equal(raw("GET", path, NULL, &j), 200);
    snprintf(out, len, "%s",
             json_string_value(json_object_get(json_object_get(j, "metadata"), "resourceVersion")));
    json_decref(j);
}

/* A managed namespace made by an older Gantry (this gateway's labels, no Pod Security or OpenShell
 * labels) is brought up to date by ensure_namespace with a merge PATCH carrying the resourceVersion
 * read (a 409 reads again); an operator's own labels stay; one already up to date is not written;
 * one that is not this gateway's (or another gantry namespace's) is refused and not modified. */
static void test_managed_namespace_brought_up_to_date(void **state)
{
    char errmsg[GERR_MSG_SIZE], kns[64], path[200], v[64], before[32], after[32], json[400];
    const char *old_labels = "{\"gantry.dev/gateway-id\":\"gw-a\",\"gantry.dev/managed-by\":\"gantry\","
                             "\"gantry.dev/namespace\":\"legacy\",\"team\":\"x\"}";
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    driver_k8s_managed_namespace("gw-a", "legacy", kns);
    make_labelled_namespace(kns, old_labels);
    snprintf(path, sizeof path, "/api/v1/namespaces/%s", kns);
    truncate_log();
    if (driver_ensure_namespace(d, e, "legacy", errmsg) != 0) {
        fail_msg("ensure of a namespace an older version made: %s", errmsg);
    }
    assert_int_equal(logged("PATCH", path, NULL), 1);
    label_of(path, "pod-security.kubernetes.io/enforce", v, sizeof v);
    assert_string_equal(v, "restricted");
    label_of(path, "pod-security.kubernetes.io/audit-version", v, sizeof v);
    assert_string_equal(v, "latest");
    label_of(path, OS_LABEL_GATEWAY, v, sizeof v);
    assert_string_equal(v, "gw-a");
    label_of(path, OS_LABEL_MANAGED, v, sizeof v);
    assert_string_equal(v, "openshell");
    label_of(path, "team", v, sizeof v);
    assert_string_equal(v, "x"); /* not ours to remove */
    snprintf(json, sizeof json, "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies/" K8S_NETPOL_NAME,
             kns);
    assert_true(exists(json));
    driver_free(d);
    /* Up to date now: a new instance (nothing remembered) reads it and writes nothing. */
    d = open_managed(NULL);
    rv_of(path, before, sizeof before);
    assert_int_equal(driver_ensure_namespace(d, e, "legacy", errmsg), 0);
    rv_of(path, after, sizeof after);
    assert_string_equal(before, after);
    assert_int_equal(logged("PATCH", path, NULL), 1);
    assert_int_equal(driver_delete_namespace(d, e, "legacy", errmsg), 0);

    /* Someone writes it between our read and our PATCH: 409 Conflict, read again, patch again. */
    driver_k8s_managed_namespace("gw-a", "legacy-2", kns);
    make_labelled_namespace(kns, "{\"gantry.dev/gateway-id\":\"gw-a\",\"gantry.dev/managed-by\":\"gantry\"}");
    snprintf(path, sizeof path, "/api/v1/namespaces/%s", kns);
    snprintf(json, sizeof json,
             "{\"method\":\"PATCH\",\"path\":\"%s\",\"mutate\":{\"labels\":{\"owner\":\"ops\"}}}", path);
    inject(json);
    truncate_log();
    if (driver_ensure_namespace(d, e, "legacy-2", errmsg) != 0) {
        fail_msg("ensure after a conflicting write: %s", errmsg);
    }
    assert_int_equal(logged("PATCH", path, NULL), 2);
    assert_int_equal(logged_status(409), 2); /* the POST (AlreadyExists) and the first PATCH */
    label_of(path, "owner", v, sizeof v);
    assert_string_equal(v, "ops");
    label_of(path, "pod-security.kubernetes.io/enforce", v, sizeof v);
    assert_string_equal(v, "restricted");
    label_of(path, K8S_LABEL_NAMESPACE, v, sizeof v);
    assert_string_equal(v, "legacy-2");
    assert_int_equal(driver_delete_namespace(d, e, "legacy-2", errmsg), 0);

    /* Another gateway's namespace of that name, and one of this gateway's that belongs to another
     * gantry namespace: refused, and left exactly as they were. */
    driver_k8s_managed_namespace("gw-a", "legacy-3", kns);
    make_labelled_namespace(kns, "{\"gantry.dev/gateway-id\":\"gw-b\",\"gantry.dev/managed-by\":\"gantry\"}");
    snprintf(path, sizeof path, "/api/v1/namespaces/%s", kns);
    rv_of(path, before, sizeof before);
    truncate_log();
    assert_int_equal(driver_ensure_namespace(d, e, "legacy-3", errmsg), GERR_EXISTS);
    assert_non_null(strstr(errmsg, "not managed by gateway gw-a"));
    rv_of(path, after, sizeof after);
    assert_string_equal(before, after);
    assert_int_equal(logged("PATCH", path, NULL), 0);
    label_of(path, "pod-security.kubernetes.io/enforce", v, sizeof v);
    assert_string_equal(v, "");
    driver_k8s_managed_namespace("gw-a", "legacy-4", kns);
    make_labelled_namespace(kns, "{\"gantry.dev/gateway-id\":\"gw-a\",\"gantry.dev/managed-by\":\"gantry\","
                                 "\"gantry.dev/namespace\":\"other\"}");
    snprintf(path, sizeof path, "/api/v1/namespaces/%s", kns);
    rv_of(path, before, sizeof before);
    assert_int_equal(driver_ensure_namespace(d, e, "legacy-4", errmsg), GERR_EXISTS);
    assert_non_null(strstr(errmsg, "belongs to gantry namespace other"));
    rv_of(path, after, sizeof after);
    assert_string_equal(before, after);
    driver_free(d);
}

static void test_operator_allowlist(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    const char *const allow[] = {"team-a=tenant-a", "team-b", NULL};
    struct driver *d = open_gw("gw-op", DRIVER_K8S_OPERATOR, NULL, allow);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    struct driver_sandbox_list l;
    make_namespace("tenant-a");

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

/* Placement chosen per sandbox (driver_config "namespace", issue 21): honoured in operator mode only,
 * within the allowlist's Kubernetes namespaces; the Sandbox (and the pod its template makes) lands
 * there with the chosen RuntimeClass and tolerations, and get, list and delete find it there, also
 * from a second instance that never saw it (a new lease holder's reconciler). */
static void test_operator_placement(void **state)
{
    char errmsg[GERR_MSG_SIZE], path[200];
    const char *const allow[] = {"team-a=tenant-a", "team-b", NULL};
    struct driver *d = open_gw("gw-op", DRIVER_K8S_OPERATOR, NULL, allow);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    struct driver_sandbox_list l;
    json_t *p;
    make_namespace("tenant-a");
    make_namespace("team-b");
    struct driver_kv cfg[] = {
        {"namespace", "team-b"},
        {"runtime_class", "gvisor"},
        {"tolerations", "[{\"key\":\"agents\",\"operator\":\"Exists\",\"effect\":\"NoSchedule\"}]"}};
    conf_spec(&env, &cs, "placed");
    cs.spec.namespace = "team-a";
    cs.spec.driver_config = cfg;
    cs.spec.n_driver_config = 3;

    /* Outside the allowlist, or malformed: refused before anything is sent. */
    struct driver_kv outside[] = {{"namespace", "tenant-z"}}, bad[] = {{"namespace", "Bad_NS"}};
    cs.spec.driver_config = outside;
    cs.spec.n_driver_config = 1;
    assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), GERR_PERM);
    assert_non_null(strstr(errmsg, "tenant-z"));
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_PERM);
    cs.spec.driver_config = bad;
    assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "namespace"));
    sbx_path(path, sizeof path, "tenant-z", "team-a--placed");
    assert_false(exists(path));

    cs.spec.driver_config = cfg;
    cs.spec.n_driver_config = 3;
    assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), 0);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), 0);
    assert_string_equal(s.handle, "k8s:team-b/team-a--placed");
    driver_sandbox_close(&s);
    sbx_path(path, sizeof path, "tenant-a", "team-a--placed");
    assert_false(exists(path)); /* not where team-a maps to */
    sbx_path(path, sizeof path, "team-b", "team-a--placed");
    assert_int_equal(raw("GET", path, NULL, &p), 200);
    json_t *pod = json_object_get(json_object_get(json_object_get(p, "spec"), "podTemplate"), "spec");
    assert_string_equal(json_string_value(json_object_get(pod, "runtimeClassName")), "gvisor");
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(pod, "tolerations"), 0), "key")),
        "agents");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(p, "metadata"), "labels"), K8S_LABEL_NAMESPACE)),
                        "team-a");
    json_decref(p);
    /* Created again (a retry): found where it is, not made twice. */
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), 0);
    assert_string_equal(s.handle, "k8s:team-b/team-a--placed");
    driver_sandbox_close(&s);
    wait_phase(d, e, "team-a", cs.id, DRIVER_PHASE_READY, &s);
    driver_sandbox_close(&s);
    assert_int_equal(driver_list(d, e, "team-a", &l, errmsg), 0);
    assert_int_equal(conf_count(&l, cs.id), 1);
    driver_sandbox_list_close(&l);
    assert_int_equal(driver_delete_namespace(d, e, "team-a", errmsg), GERR_CONSTRAINT);

    /* A second instance (no cache yet, never saw the create) finds it and deletes it there. */
    struct driver *d2 = open_gw("gw-op", DRIVER_K8S_OPERATOR, NULL, allow);
    uint64_t e2 = conf_epoch();
    assert_int_equal(driver_get(d2, e2, "team-a", cs.id, &s, errmsg), 0);
    assert_string_equal(s.handle, "k8s:team-b/team-a--placed");
    driver_sandbox_close(&s);
    assert_int_equal(driver_delete(d2, e2, "team-a", cs.id, errmsg), 0);
    assert_false(exists(path));
    assert_int_equal(driver_get(d2, e2, "team-a", cs.id, &s, errmsg), GERR_NOTFOUND);
    assert_int_equal(driver_delete_namespace(d2, e2, "team-a", errmsg), 0);
    driver_free(d2);
    driver_free(d);

    /* Managed and shared mode choose the namespace themselves: a choice is refused. */
    struct driver *m = open_managed(NULL);
    struct driver_kv mine[] = {{"namespace", "team-b"}};
    cs.spec.driver_config = mine;
    cs.spec.n_driver_config = 1;
    assert_int_equal(driver_validate(m, &cs.spec, NULL, errmsg), GERR_PERM);
    assert_non_null(strstr(errmsg, "managed mode"));
    driver_free(m);
    (void)state;
}

/* ---- Claims (allocation "claim": drivers/k8s_claims.h) against the fake's extensions controller */

#define EXT "/apis/extensions.agents.x-k8s.io/v1alpha1"

/* How many Sandboxes of @kns are free members of warm pool @pool (the fake labels them). */
static size_t pool_members(const char *kns, const char *pool)
{
    char path[300];
    json_t *j;
    snprintf(path, sizeof path, SBX "/namespaces/%s/sandboxes?labelSelector=agents.x-k8s.io%%2Fpool%%3D%s",
             kns, pool);
    assert_int_equal(raw("GET", path, NULL, &j), 200);
    size_t n = json_array_size(json_object_get(j, "items"));
    json_decref(j);
    return n;
}

/* The text at members @a.@b.@c of the object at @path ("" if absent; @c may be NULL). */
static void member_of(const char *path, const char *a, const char *b, const char *c, char *out, size_t len)
{
    json_t *j;
    assert_int_equal(raw("GET", path, NULL, &j), 200);
    json_t *v = json_object_get(json_object_get(j, a), b);
    v = c != NULL ? json_object_get(v, c) : v;
    snprintf(out, len, "%s", json_is_string(v) ? json_string_value(v) : "");
    json_decref(j);
}

static void claim_spec(struct conf_spec *cs, const char *name, struct driver_kv *cfg, size_t n)
{
    conf_spec(&env, cs, name);
    cs->spec.namespace = "claims";
    cs->spec.driver_config = cfg;
    cs->spec.n_driver_config = n;
}

/* A claim from a warm pool binds a member (which leaves the pool, and the pool refills), from a
 * template makes a fresh Sandbox; either is then the driver's like its own (get, list, a second
 * instance), and delete deletes the claim, whose Sandbox goes with it. Malformed choices are
 * INVALID_ARGUMENT before anything is sent; a missing pool is refused at once, a missing template
 * by the controller's condition; a claim name someone else holds is stepped around; a concurrent
 * write to the bound Sandbox (409 on the labelling PATCH) is read again. */
static void test_claims(void **state)
{
    char errmsg[GERR_MSG_SIZE], path[400], claim[300], bound[80], v[260];
    const char *const allow[] = {"claims=team-b", NULL};
    struct driver *d = open_gw("gw-op", DRIVER_K8S_OPERATOR, NULL, allow);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    struct driver_sandbox_list l;
    make_namespace("team-b");
    assert_int_equal(raw("POST", EXT "/namespaces/team-b/sandboxtemplates",
                         "{\"metadata\":{\"name\":\"agent-tpl\"},\"spec\":{\"podTemplate\":{\"spec\":"
                         "{\"containers\":[{\"name\":\"agent\",\"image\":\"registry.example/agent:1\"}]}}}}",
                         NULL),
                     201);
    assert_int_equal(raw("POST", EXT "/namespaces/team-b/sandboxwarmpools",
                         "{\"metadata\":{\"name\":\"pool-a\"},\"spec\":{\"replicas\":2,"
                         "\"sandboxTemplateRef\":{\"name\":\"agent-tpl\"}}}",
                         NULL),
                     201);
    assert_int_equal(pool_members("team-b", "pool-a"), 2);

    /* Malformed or contradictory choices. */
    struct driver_kv none[] = {{"allocation", "claim"}},
                     both[] = {{"allocation", "claim"}, {"template", "agent-tpl"}, {"warm_pool", "pool-a"}},
                     pod[] = {{"allocation", "claim"},
                              {"template", "agent-tpl"},
                              {"runtime_class", "gvisor"}},
                     nomode[] = {{"warm_pool", "pool-a"}}, badmode[] = {{"allocation", "pool"}},
                     badname[] = {{"allocation", "claim"}, {"warm_pool", "Pool_A"}};
    struct {
        struct driver_kv *kv;
        size_t n;
        const char *want;
    } bad[] = {{none, 1, "exactly one"},        {both, 3, "exactly one"},   {pod, 3, "runtime_class"},
               {nomode, 1, "needs allocation"}, {badmode, 1, "allocation"}, {badname, 2, "warm_pool"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        claim_spec(&cs, "bad", bad[i].kv, bad[i].n);
        assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), GERR_INVAL);
        assert_non_null(strstr(errmsg, bad[i].want));
        assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_INVAL);
    }
    assert_false(exists(EXT "/namespaces/team-b/sandboxclaims/claims--bad"));

    /* 1. From the warm pool. */
    struct driver_kv from_pool[] = {{"allocation", "claim"}, {"warm_pool", "pool-a"}};
    struct conf_spec pool_cs;
    claim_spec(&pool_cs, "from-pool", from_pool, 2);
    assert_int_equal(driver_validate(d, &pool_cs.spec, NULL, errmsg), 0);
    assert_int_equal(driver_create(d, e, &pool_cs.spec, &s, errmsg), 0);
    assert_non_null(strstr(s.handle, "k8s:team-b/pool-a-"));
    snprintf(bound, sizeof bound, "%s", s.handle + strlen("k8s:team-b/"));
    driver_sandbox_close(&s);
    snprintf(claim, sizeof claim, EXT "/namespaces/team-b/sandboxclaims/claims--from-pool");
    label_of(claim, K8S_LABEL_GATEWAY, v, sizeof v);
    assert_string_equal(v, "gw-op");
    label_of(claim, K8S_LABEL_SANDBOX, v, sizeof v);
    assert_string_equal(v, pool_cs.id);
    member_of(claim, "spec", "warmpool", NULL, v, sizeof v);
    assert_string_equal(v, "pool-a");
    member_of(claim, "status", "sandbox", "name", v, sizeof v);
    assert_string_equal(v, bound);
    sbx_path(path, sizeof path, "team-b", bound);
    label_of(path, K8S_LABEL_SANDBOX, v, sizeof v); /* the member is this sandbox's now */
    assert_string_equal(v, pool_cs.id);
    label_of(path, K8S_LABEL_NAME, v, sizeof v);
    assert_string_equal(v, "from-pool");
    member_of(path, "metadata", "annotations", K8S_ANN_CLAIM, v, sizeof v);
    assert_string_equal(v, "claims--from-pool");
    assert_int_equal(pool_members("team-b", "pool-a"), 2); /* it left the pool, which refilled */
    wait_phase(d, e, "claims", pool_cs.id, DRIVER_PHASE_READY, &s);
    driver_sandbox_close(&s);
    assert_int_equal(driver_list(d, e, "claims", &l, errmsg), 0);
    assert_int_equal(conf_count(&l, pool_cs.id), 1);
    assert_int_equal(l.n, 1); /* the pool's free members are nobody's sandboxes */
    driver_sandbox_list_close(&l);
    /* Created again (a retry): the same Sandbox, no second claim. */
    assert_int_equal(driver_create(d, e, &pool_cs.spec, &s, errmsg), 0);
    assert_non_null(strstr(s.handle, bound));
    driver_sandbox_close(&s);
    assert_int_equal(pool_members("team-b", "pool-a"), 2);

    /* 2. From the template: a fresh Sandbox named after the claim. */
    struct driver_kv from_tpl[] = {{"allocation", "claim"}, {"template", "agent-tpl"}};
    struct conf_spec tpl_cs;
    claim_spec(&tpl_cs, "from-tpl", from_tpl, 2);
    assert_int_equal(driver_create(d, e, &tpl_cs.spec, &s, errmsg), 0);
    assert_string_equal(s.handle, "k8s:team-b/claims--from-tpl");
    driver_sandbox_close(&s);
    member_of(EXT "/namespaces/team-b/sandboxclaims/claims--from-tpl", "spec", "warmpool", NULL, v, sizeof v);
    assert_string_equal(v, "none");
    assert_int_equal(pool_members("team-b", "pool-a"), 2);

    /* A second instance (no cache, never saw the creates) finds both. */
    struct driver *d2 = open_gw("gw-op", DRIVER_K8S_OPERATOR, NULL, allow);
    uint64_t e2 = conf_epoch();
    assert_int_equal(driver_get(d2, e2, "claims", pool_cs.id, &s, errmsg), 0);
    assert_non_null(strstr(s.handle, bound));
    driver_sandbox_close(&s);

    /* 3. Release: delete deletes the claim; the controller's owner reference takes the Sandbox. */
    assert_int_equal(driver_delete(d2, e2, "claims", pool_cs.id, errmsg), 0);
    assert_false(exists(claim));
    assert_false(exists(path));
    assert_int_equal(driver_get(d2, e2, "claims", pool_cs.id, &s, errmsg), GERR_NOTFOUND);
    assert_int_equal(driver_delete(d2, e2, "claims", pool_cs.id, errmsg), 0); /* again: nothing to do */
    assert_int_equal(pool_members("team-b", "pool-a"), 2);                    /* the other members stay */
    assert_int_equal(driver_delete(d2, e2, "claims", tpl_cs.id, errmsg), 0);
    sbx_path(path, sizeof path, "team-b", "claims--from-tpl");
    assert_false(exists(path));
    assert_false(exists(EXT "/namespaces/team-b/sandboxclaims/claims--from-tpl"));
    driver_free(d2);
    e = conf_epoch(); /* newer than d2's, which the fence holds now */

    /* 4. A warm pool that does not exist: refused at once, nothing made. */
    struct driver_kv no_pool[] = {{"allocation", "claim"}, {"warm_pool", "no-such-pool"}};
    claim_spec(&cs, "no-pool", no_pool, 2);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "no-such-pool"));
    assert_false(exists(EXT "/namespaces/team-b/sandboxclaims/claims--no-pool"));
    /* A template that does not exist: the claim stays unbound with the controller's condition,
     * which the driver reports at once; delete removes the unbound claim. */
    struct driver_kv no_tpl[] = {{"allocation", "claim"}, {"template", "no-such-template"}};
    claim_spec(&cs, "no-tpl", no_tpl, 2);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "TemplateNotFound"));
    assert_true(exists(EXT "/namespaces/team-b/sandboxclaims/claims--no-tpl"));
    assert_int_equal(driver_delete(d, e, "claims", cs.id, errmsg), 0);
    assert_false(exists(EXT "/namespaces/team-b/sandboxclaims/claims--no-tpl"));

    /* The extensions not installed: UNAVAILABLE saying so (it clears once they are), nothing made. */
    control("/_fake/config", "{\"extensions\": false}");
    claim_spec(&cs, "no-ext", from_tpl, 2);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "are agent-sandbox's extensions installed?"));
    assert_int_equal(driver_delete(d, e, "claims", cs.id, errmsg), 0); /* nothing to find */
    control("/_fake/config", "{\"extensions\": true}");
    assert_false(exists(EXT "/namespaces/team-b/sandboxclaims/claims--no-ext"));

    /* A claim the controller leaves unbound: GERR_UNAVAILABLE after the driver's wait, with the
     * condition (the reconciler retries); once bound, the next create follows the same claim. */
    control("/_fake/config", "{\"claims_pending\": true}");
    claim_spec(&cs, "later", from_tpl, 2);
    uint64_t t0 = now_ms();
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_UNAVAILABLE);
    assert_true(now_ms() - t0 >= 1900);
    assert_non_null(strstr(errmsg, "not bound to a Sandbox yet: SandboxNotReady: waiting for capacity"));
    control("/_fake/config", "{\"claims_pending\": false}");
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), 0);
    assert_string_equal(s.handle, "k8s:team-b/claims--later");
    driver_sandbox_close(&s);
    assert_int_equal(driver_delete(d, e, "claims", cs.id, errmsg), 0);
    assert_false(exists(EXT "/namespaces/team-b/sandboxclaims/claims--later"));

    /* 5. Conflicts. The claim's name is someone else's (409 AlreadyExists): stepped around. */
    assert_int_equal(raw("POST", EXT "/namespaces/team-b/sandboxclaims",
                         "{\"metadata\":{\"name\":\"claims--taken\"},\"spec\":{\"sandboxTemplateRef\":"
                         "{\"name\":\"agent-tpl\"},\"warmpool\":\"none\"}}",
                         NULL),
                     201);
    claim_spec(&cs, "taken", from_tpl, 2);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), 0);
    assert_string_not_equal(s.handle, "k8s:team-b/claims--taken"); /* the fallback name */
    driver_sandbox_close(&s);
    sbx_path(path, sizeof path, "team-b", "claims--taken");
    label_of(path, K8S_LABEL_GATEWAY, v, sizeof v);
    assert_string_equal(v, ""); /* the other claim's Sandbox is left alone */
    assert_int_equal(driver_delete(d, e, "claims", cs.id, errmsg), 0);
    assert_true(exists(EXT "/namespaces/team-b/sandboxclaims/claims--taken"));
    /* Another writer changes the bound Sandbox between the driver's read and its PATCH (409
     * Conflict on the resourceVersion precondition): read again, labelled, nothing lost. */
    claim_spec(&cs, "conflict", from_tpl, 2);
    sbx_path(path, sizeof path, "team-b", "claims--conflict");
    truncate_log();
    inject("{\"method\": \"PATCH\", \"path\": \"" SBX "/namespaces/team-b/sandboxes/claims--conflict\", "
           "\"times\": 1, \"mutate\": {\"annotations\": {\"example.com/other\": \"writer\"}}}");
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), 0);
    driver_sandbox_close(&s);
    assert_int_equal(logged("PATCH", SBX "/namespaces/team-b/sandboxes/claims--conflict", NULL), 2);
    label_of(path, K8S_LABEL_SANDBOX, v, sizeof v);
    assert_string_equal(v, cs.id);
    member_of(path, "metadata", "annotations", "example.com/other", v, sizeof v);
    assert_string_equal(v, "writer");
    assert_int_equal(driver_delete(d, e, "claims", cs.id, errmsg), 0);
    assert_false(exists(path));
    driver_free(d);
    (void)state;
}

/* ---- Gantry-owned warm pools (driver_pool_apply/delete/list: drivers/k8s_pools.h) */

#define POOL_ID  "00000000-0000-4000-8000-00000000a001"
#define POOL_ID2 "00000000-0000-4000-8000-00000000a002"

/* A pool is created labelled as this gateway's with its size (the fake's controller fills it), an
 * unchanged pool is not written, a resize survives a concurrent write (409 on the PUT: read
 * again), a pool of the same name that is not this gateway's is never changed or deleted, the list
 * holds this gateway's pools only, a chosen namespace must be the allowlist's, a stale epoch
 * touches nothing, and delete removes the pool (absent: still 0). */
static void pool_ok(int rv, const char *errmsg)
{
    if (rv != 0) {
        fail_msg("driver_pool_apply: %s (%s)", errmsg, gerr_name(rv));
    }
}

static void test_warm_pools(void **state)
{
    char errmsg[GERR_MSG_SIZE], v[260];
    const char *const allow[] = {"pools=team-b", "pools2=tenant-a", NULL};
    struct driver *d = open_gw("gw-op", DRIVER_K8S_OPERATOR, NULL, allow);
    uint64_t e = conf_epoch();
    struct driver_caps caps;
    driver_capabilities(d, &caps);
    assert_true(caps.pools);
    make_namespace("team-b");
    make_namespace("tenant-a");
    long made = raw("POST", EXT "/namespaces/team-b/sandboxtemplates",
                    "{\"metadata\":{\"name\":\"agent-tpl\"},\"spec\":{\"podTemplate\":{\"spec\":"
                    "{\"containers\":[{\"name\":\"agent\",\"image\":\"registry.example/agent:1\"}]}}}}",
                    NULL);
    assert_true(made == 201 || made == 409); /* test_claims may have made it */
    const char *path = EXT "/namespaces/team-b/sandboxwarmpools/warm";
    struct driver_pool_spec ps = {
        .id = POOL_ID, .namespace = "pools", .name = "warm", .template_name = "agent-tpl", .replicas = 2};
    struct driver_pool out;

    /* Created, labelled, filled. */
    pool_ok(driver_pool_apply(d, e, &ps, &out, errmsg), errmsg);
    assert_string_equal(out.k8s_namespace, "team-b");
    assert_string_equal(out.id, POOL_ID);
    assert_int_equal(out.replicas, 2);
    driver_pool_close(&out);
    label_of(path, K8S_LABEL_GATEWAY, v, sizeof v);
    assert_string_equal(v, "gw-op");
    label_of(path, K8S_LABEL_POOL, v, sizeof v);
    assert_string_equal(v, POOL_ID);
    label_of(path, K8S_LABEL_NAMESPACE, v, sizeof v);
    assert_string_equal(v, "pools");
    assert_int_equal(pool_members("team-b", "warm"), 2);

    /* Unchanged: read, not written; the ready members are reported. */
    truncate_log();
    pool_ok(driver_pool_apply(d, e, &ps, &out, errmsg), errmsg);
    assert_int_equal(logged("PUT", path, NULL), 0);
    assert_int_equal(logged("POST", EXT "/namespaces/team-b/sandboxwarmpools", NULL), 0);
    assert_int_equal(out.ready, 2);
    driver_pool_close(&out);

    /* Resized while another writer changes it (409 on the PUT): read again, applied. */
    inject("{\"method\": \"PUT\", \"path\": \"" EXT "/namespaces/team-b/sandboxwarmpools/warm\", "
           "\"times\": 1, \"mutate\": {\"annotations\": {\"example.com/other\": \"writer\"}}}");
    truncate_log();
    ps.replicas = 3;
    pool_ok(driver_pool_apply(d, e, &ps, &out, errmsg), errmsg);
    assert_int_equal(out.replicas, 3);
    driver_pool_close(&out);
    assert_int_equal(logged("PUT", path, NULL), 2);
    json_t *j;
    assert_int_equal(raw("GET", path, NULL, &j), 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "spec"), "replicas")), 3);
    /* the fake's controller made the third member */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "status"), "replicas")), 3);
    json_decref(j);
    ps.replicas = 0; /* shrunk to nothing (the fake's controller does not remove members) */
    pool_ok(driver_pool_apply(d, e, &ps, &out, errmsg), errmsg);
    assert_int_equal(out.replicas, 0);
    driver_pool_close(&out);

    /* Someone else's pool of a name we want: refused, never changed, never deleted. */
    assert_int_equal(
        raw("POST", EXT "/namespaces/team-b/sandboxwarmpools",
            "{\"metadata\":{\"name\":\"theirs\",\"labels\":{\"gantry.dev/gateway-id\":\"gw-other\","
            "\"gantry.dev/warm-pool-id\":\"" POOL_ID2 "\"}},\"spec\":{\"replicas\":1,"
            "\"sandboxTemplateRef\":{\"name\":\"agent-tpl\"}}}",
            NULL),
        201);
    struct driver_pool_spec theirs = {
        .id = POOL_ID2, .namespace = "pools", .name = "theirs", .template_name = "agent-tpl", .replicas = 5};
    truncate_log();
    assert_int_equal(driver_pool_apply(d, e, &theirs, &out, errmsg), GERR_EXISTS);
    assert_non_null(strstr(errmsg, "not this gateway's"));
    assert_int_equal(driver_pool_delete(d, e, "team-b", "theirs", POOL_ID2, errmsg), 0);
    assert_int_equal(logged("PUT", EXT "/namespaces/team-b/sandboxwarmpools/theirs", NULL), 0);
    assert_int_equal(logged("DELETE", EXT "/namespaces/team-b/sandboxwarmpools/theirs", NULL), 0);
    assert_true(exists(EXT "/namespaces/team-b/sandboxwarmpools/theirs"));
    /* ... nor is ours deleted under another pool's id. */
    assert_int_equal(driver_pool_delete(d, e, "team-b", "warm", POOL_ID2, errmsg), 0);
    assert_true(exists(path));

    /* A chosen namespace: one of the allowlist's, nothing else. */
    struct driver_pool_spec placed = {.id = POOL_ID2,
                                      .namespace = "pools",
                                      .name = "placed",
                                      .k8s_namespace = "tenant-a",
                                      .template_name = "agent-tpl",
                                      .replicas = 0};
    assert_int_equal(driver_pool_apply(d, e, &placed, &out, errmsg), 0);
    assert_string_equal(out.k8s_namespace, "tenant-a");
    driver_pool_close(&out);
    placed.k8s_namespace = "kube-system";
    assert_int_equal(driver_pool_apply(d, e, &placed, &out, errmsg), GERR_PERM);
    assert_false(exists(EXT "/namespaces/kube-system/sandboxwarmpools/placed"));

    /* The list: this gateway's pools only, wherever they are. */
    struct driver_pool_list l;
    assert_int_equal(driver_pool_list(d, e, &l, errmsg), 0);
    assert_int_equal(l.n, 2);
    for (size_t i = 0; i < l.n; i++) {
        assert_true(strcmp(l.items[i].name, "warm") == 0 || strcmp(l.items[i].name, "placed") == 0);
    }
    driver_pool_list_close(&l);

    /* Bad arguments and a stale epoch touch nothing. */
    struct driver_pool_spec big = ps;
    big.replicas = DRIVER_POOL_REPLICAS_MAX + 1;
    assert_int_equal(driver_pool_apply(d, e, &big, &out, errmsg), GERR_INVAL);
    big = ps;
    big.name = "Bad_Name";
    assert_int_equal(driver_pool_apply(d, e, &big, &out, errmsg), GERR_INVAL);
    uint64_t newer = conf_epoch();
    assert_int_equal(driver_pool_apply(d, newer, &ps, &out, errmsg), 0);
    driver_pool_close(&out);
    assert_int_equal(driver_pool_delete(d, e, "team-b", "warm", POOL_ID, errmsg), DRIVER_ERR_STALE);
    assert_true(exists(path));

    /* Delete: gone; again: still 0. */
    assert_int_equal(driver_pool_delete(d, newer, "team-b", "warm", POOL_ID, errmsg), 0);
    assert_false(exists(path));
    assert_int_equal(driver_pool_delete(d, newer, "team-b", "warm", POOL_ID, errmsg), 0);
    assert_int_equal(driver_pool_delete(d, newer, "tenant-a", "placed", POOL_ID2, errmsg), 0);
    assert_int_equal(raw("DELETE", EXT "/namespaces/team-b/sandboxwarmpools/theirs", NULL, NULL), 200);
    driver_free(d);

    /* Managed mode: the pool goes to the gantry namespace's managed namespace, made first; the list
     * looks across the cluster (the chart's ClusterRole) and finds this gateway's pools only. */
    struct driver *m = open_managed(NULL);
    uint64_t me = conf_epoch();
    char kns[64], mpath[300];
    driver_k8s_managed_namespace("gw-a", "pools-m", kns);
    snprintf(mpath, sizeof mpath, EXT "/namespaces/%s/sandboxwarmpools/warm", kns);
    assert_int_equal(driver_ensure_namespace(m, me, "pools-m", errmsg), 0);
    struct driver_pool_spec mps = {
        .id = POOL_ID, .namespace = "pools-m", .name = "warm", .template_name = "agent-tpl", .replicas = 1};
    pool_ok(driver_pool_apply(m, me, &mps, &out, errmsg), errmsg);
    assert_string_equal(out.k8s_namespace, kns);
    driver_pool_close(&out);
    assert_true(exists(mpath));
    mps.k8s_namespace = "team-b"; /* managed mode chooses the namespace itself */
    assert_int_equal(driver_pool_apply(m, me, &mps, &out, errmsg), GERR_PERM);
    assert_int_equal(driver_pool_list(m, me, &l, errmsg), 0);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.items[0].k8s_namespace, kns);
    assert_string_equal(l.items[0].namespace, "pools-m");
    driver_pool_list_close(&l);
    assert_int_equal(driver_pool_delete(m, me, kns, "warm", POOL_ID, errmsg), 0);
    assert_false(exists(mpath));
    assert_int_equal(driver_delete_namespace(m, me, "pools-m", errmsg), 0);
    driver_free(m);
    (void)state;
}

/* A Secret-backed credential read through the driver's API client (driver_k8s_read_secret, issue
 * 21): the decoded value; a missing key or Secret NOTFOUND; the chart's RBAC (which grants no get on
 * Secrets outside the gateway's own pull secrets) PERM; never the value in a message. */
static void test_read_secret(void **state)
{
    char errmsg[GERR_MSG_SIZE], *v = NULL;
    const char *value = "ghp-0123456789abcdef"; /* base64: Z2hwLTAxMjM0NTY3ODlhYmNkZWY= */
    make_namespace("platform-creds");
    long st = raw("POST", "/api/v1/namespaces/platform-creds/secrets",
                  "{\"metadata\":{\"name\":\"gh-token\"},\"type\":\"Opaque\",\"data\":"
                  "{\"token\":\"Z2hwLTAxMjM0NTY3ODlhYmNkZWY=\",\"short\":\"YQ==\"}}",
                  NULL);
    assert_true(st == 201 || st == 409);
    struct driver_k8s_config admin = {.mode = DRIVER_K8S_MANAGED, .token_file = token};
    struct driver *d = open_cfg("gw-a", &admin);
    assert_int_equal(driver_k8s_read_secret(d, "platform-creds", "gh-token", "token", &v, errmsg), 0);
    assert_string_equal(v, value);
    mem_free(v);
    assert_int_equal(driver_k8s_read_secret(d, "platform-creds", "gh-token", "short", &v, errmsg), 0);
    assert_string_equal(v, "a");
    mem_free(v);
    assert_int_equal(driver_k8s_read_secret(d, "platform-creds", "gh-token", "nope", &v, errmsg),
                     GERR_NOTFOUND);
    assert_null(v);
    assert_non_null(strstr(errmsg, "no key nope"));
    assert_int_equal(driver_k8s_read_secret(d, "platform-creds", "missing", "token", &v, errmsg),
                     GERR_NOTFOUND);
    assert_non_null(strstr(errmsg, "404"));
    assert_int_equal(driver_k8s_read_secret(d, "Bad_NS", "gh-token", "token", &v, errmsg), GERR_INVAL);
    driver_free(d);
    /* As the chart's ServiceAccount: RBAC refuses (the operator grants get where Secrets may be
     * referenced, docs/credentials.md). */
    d = open_gw("gw-a", DRIVER_K8S_MANAGED, NULL, NULL);
    assert_int_equal(driver_k8s_read_secret(d, "platform-creds", "gh-token", "token", &v, errmsg), GERR_PERM);
    assert_null(v);
    assert_non_null(strstr(errmsg, "403"));
    assert_null(strstr(errmsg, value));
    driver_free(d);
    (void)state;
}

/* ---- The egress relay's NetworkPolicy and the pods' proxy variables (drivers/k8s_netpol.h) */

static struct driver *open_egress(const char *address, const char *selector, unsigned relay_port)
{
    struct driver_k8s_config c = {.mode = DRIVER_K8S_MANAGED};
    c.egress.address = address;
    c.egress.pod_selector = selector;
    c.egress.port = relay_port;
    return open_cfg("gw-a", &c);
}

static json_t *egress_policy(const char *kns, long want_status)
{
    char path[200];
    json_t *np = NULL;
    snprintf(path, sizeof path,
             "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies/" K8S_EGRESS_NETPOL_NAME, kns);
    assert_int_equal(raw("GET", path, NULL, &np), want_status);
    return np;
}

/* The one egress rule's only peer and port. */
static json_t *peer_of(json_t *np, long *port_out, const char **protocol)
{
    json_t *spec = json_object_get(np, "spec");
    json_t *rules = json_object_get(spec, "egress");
    assert_int_equal(json_array_size(rules), 1);
    json_t *to = json_object_get(json_array_get(rules, 0), "to");
    json_t *ports = json_object_get(json_array_get(rules, 0), "ports");
    assert_int_equal(json_array_size(to), 1);
    assert_int_equal(json_array_size(ports), 1);
    *port_out = (long)json_integer_value(json_object_get(json_array_get(ports, 0), "port"));
    *protocol = json_string_value(json_object_get(json_array_get(ports, 0), "protocol"));
    return json_array_get(to, 0);
}

static const char *env_value(json_t *sandbox, const char *name)
{
    json_t *containers = json_object_get(
        json_object_get(json_object_get(json_object_get(sandbox, "spec"), "podTemplate"), "spec"),
        "containers");
    json_t *vars = json_object_get(json_array_get(containers, 0), "env");
    for (size_t i = 0; i < json_array_size(vars); i++) {
        json_t *v = json_array_get(vars, i);
        if (strcmp(json_string_value(json_object_get(v, "name")), name) == 0) {
            return json_string_value(json_object_get(v, "value"));
        }
    }
    return NULL;
}

/* Rendered beside the default-deny policy in a managed namespace: sandbox pods of this gateway may
 * reach the relay by TCP and nothing else (an ipBlock for an address, the gantryd pods for a
 * selector); changed with the configuration by a conditional replace (a concurrent write's 409
 * reads again); kept when equal; deleted when the relay is turned off; another's policy of that
 * name never touched; pods given the proxy variables (their own env wins); bad settings refused. */
static void test_egress_relay_policy(void **state)
{
    (void)state;
    char errmsg[GERR_MSG_SIZE], kns[64], path[200], rv1[32], rv2[32];
    uint64_t e = conf_epoch();
    long rport;
    const char *proto;
    driver_k8s_managed_namespace("gw-a", "team-e", kns);
    snprintf(path, sizeof path,
             "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies/" K8S_EGRESS_NETPOL_NAME, kns);

    /* An address: an ipBlock of it, on its port. */
    struct driver *d = open_egress("10.96.0.50:3129", NULL, 0);
    assert_int_equal(driver_ensure_namespace(d, e, "team-e", errmsg), 0);
    json_t *np = egress_policy(kns, 200);
    json_t *md = json_object_get(np, "metadata");
    assert_string_equal(json_string_value(json_object_get(json_object_get(md, "labels"), K8S_LABEL_GATEWAY)),
                        "gw-a");
    json_t *sel = json_object_get(json_object_get(json_object_get(np, "spec"), "podSelector"), "matchLabels");
    assert_string_equal(json_string_value(json_object_get(sel, K8S_LABEL_GATEWAY)), "gw-a");
    assert_string_equal(json_string_value(json_object_get(sel, K8S_LABEL_MANAGED)), "gantry");
    json_t *types = json_object_get(json_object_get(np, "spec"), "policyTypes");
    assert_int_equal(json_array_size(types), 1);
    assert_string_equal(json_string_value(json_array_get(types, 0)), "Egress");
    json_t *peer = peer_of(np, &rport, &proto);
    assert_string_equal(json_string_value(json_object_get(json_object_get(peer, "ipBlock"), "cidr")),
                        "10.96.0.50/32");
    assert_int_equal(rport, 3129);
    assert_string_equal(proto, "TCP");
    json_decref(np);
    rv_of(path, rv1, sizeof rv1);
    /* The default-deny policy is still there: the two add up to "the relay only". */
    char dd[200];
    snprintf(dd, sizeof dd, "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies/" K8S_NETPOL_NAME, kns);
    assert_true(exists(dd));

    /* A sandbox's pod is pointed at the relay; a variable of its own spec wins. */
    struct conf_spec cs;
    conf_spec(&env, &cs, "proxied");
    cs.spec.namespace = "team-e";
    struct driver_kv own = {.key = "no_proxy", .value = "internal.example"};
    cs.spec.env = &own;
    cs.spec.n_env = 1;
    struct driver_sandbox s;
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), 0);
    driver_sandbox_close(&s);
    char spath[200];
    sbx_path(spath, sizeof spath, kns, "proxied");
    json_t *sbx;
    assert_int_equal(raw("GET", spath, NULL, &sbx), 200);
    assert_string_equal(env_value(sbx, "https_proxy"), "http://10.96.0.50:3129");
    assert_string_equal(env_value(sbx, "http_proxy"), "http://10.96.0.50:3129");
    assert_string_equal(env_value(sbx, "HTTPS_PROXY"), "http://10.96.0.50:3129");
    assert_string_equal(env_value(sbx, "GANTRY_EGRESS_PROXY"), "http://10.96.0.50:3129");
    assert_string_equal(env_value(sbx, "no_proxy"), "internal.example");
    assert_string_equal(env_value(sbx, "NO_PROXY"), "localhost,127.0.0.1,::1");
    json_decref(sbx);

    /* The relay's lookup: the pod's address (status.podIPs, as the controller reports it) is this
     * sandbox, from the watch's cache; any other address is no sandbox. */
    struct driver_k8s_pod pod;
    wait_live(d);
    char ip[64] = "";
    int64_t until = (int64_t)now_ms() + 5000;
    for (;;) {
        assert_int_equal(raw("GET", spath, NULL, &sbx), 200);
        json_t *ips = json_object_get(json_object_get(sbx, "status"), "podIPs");
        snprintf(ip, sizeof ip, "%s", json_string_value(json_array_get(ips, 0)));
        json_decref(sbx);
        if (driver_k8s_lookup_ip(d, ip, &pod) == 0 || (int64_t)now_ms() > until) {
            break;
        }
        nap_ms(20);
    }
    assert_int_equal(driver_k8s_lookup_ip(d, ip, &pod), 0);
    assert_string_equal(pod.ns, "team-e");
    assert_string_equal(pod.name, "proxied");
    assert_string_equal(pod.id, cs.spec.id);
    assert_string_equal(pod.owner, cs.spec.owner != NULL ? cs.spec.owner : "");
    assert_int_equal(driver_k8s_lookup_ip(d, "10.255.255.254", &pod), GERR_NOTFOUND);
    assert_int_equal(driver_k8s_lookup_ip(d, "not-an-address", &pod), GERR_NOTFOUND);
    assert_int_equal(driver_delete(d, e, "team-e", cs.spec.id, errmsg), 0);
    driver_free(d);

    /* The same settings again (a new instance, so nothing is memoised): not written. */
    d = open_egress("10.96.0.50:3129", NULL, 0);
    assert_int_equal(driver_ensure_namespace(d, e, "team-e", errmsg), 0);
    rv_of(path, rv2, sizeof rv2);
    assert_string_equal(rv1, rv2);
    driver_free(d);

    /* The gantryd pods as the peer: replaced with the resourceVersion read, on the pods' port. */
    d = open_egress("10.96.0.50:3129", "app.kubernetes.io/name=gantry,app.kubernetes.io/instance=gantry",
                    3130);
    assert_int_equal(driver_ensure_namespace(d, e, "team-e", errmsg), 0);
    assert_true(logged("PUT", path, NULL) >= 1);
    np = egress_policy(kns, 200);
    peer = peer_of(np, &rport, &proto);
    assert_null(json_object_get(peer, "ipBlock"));
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(peer, "namespaceSelector"), "matchLabels"),
                            "kubernetes.io/metadata.name")),
                        "gantry");
    json_t *pods = json_object_get(json_object_get(peer, "podSelector"), "matchLabels");
    assert_int_equal(json_object_size(pods), 2);
    assert_string_equal(json_string_value(json_object_get(pods, "app.kubernetes.io/name")), "gantry");
    assert_string_equal(json_string_value(json_object_get(pods, "app.kubernetes.io/instance")), "gantry");
    assert_int_equal(rport, 3130);
    json_decref(np);
    driver_free(d);

    /* A concurrent writer between our read and our replace: 409 Conflict, read again, replaced. */
    char inj[400];
    snprintf(inj, sizeof inj,
             "{\"method\":\"PUT\",\"path\":\"%s\",\"mutate\":{\"labels\":{\"owner\":\"ops\"}}}", path);
    inject(inj);
    d = open_egress("[fd00::5]:3129", NULL, 0);
    assert_int_equal(driver_ensure_namespace(d, e, "team-e", errmsg), 0);
    np = egress_policy(kns, 200);
    peer = peer_of(np, &rport, &proto);
    assert_string_equal(json_string_value(json_object_get(json_object_get(peer, "ipBlock"), "cidr")),
                        "fd00::5/128");
    json_decref(np);
    assert_true(logged_status(409) >= 1);
    driver_free(d);

    /* The relay turned off: the policy goes (the default-deny stays: pods reach nothing). */
    d = open_egress(NULL, NULL, 0);
    assert_int_equal(driver_ensure_namespace(d, e, "team-e", errmsg), 0);
    json_decref(egress_policy(kns, 404)); /* the Status object */
    assert_true(exists(dd));
    assert_int_equal(driver_ensure_namespace(d, e, "team-e", errmsg), 0);
    driver_free(d);

    /* A policy of that name that is not this gateway's is refused and left as it is. */
    char coll[200], body[300];
    snprintf(coll, sizeof coll, "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies", kns);
    snprintf(body, sizeof body,
             "{\"metadata\":{\"name\":\"" K8S_EGRESS_NETPOL_NAME "\"},\"spec\":{\"podSelector\":{},"
             "\"policyTypes\":[\"Egress\"],\"egress\":[{}]}}");
    assert_int_equal(raw("POST", coll, body, NULL), 201);
    d = open_egress("10.96.0.50:3129", NULL, 0);
    assert_int_equal(driver_ensure_namespace(d, e, "team-e", errmsg), GERR_EXISTS);
    assert_non_null(strstr(errmsg, "is not gateway gw-a's"));
    np = egress_policy(kns, 200);
    assert_null(json_object_get(json_object_get(np, "metadata"), "labels"));
    json_decref(np);
    assert_int_equal(raw("DELETE", path, NULL, NULL), 200);
    assert_int_equal(driver_delete_namespace(d, e, "team-e", errmsg), 0);
    driver_free(d);

    /* Bad settings are refused at construction, naming what is wrong. */
    struct {
        const char *address, *selector, *want;
    } bad[] = {
        {"gantry-egress.gantry.svc:3129", NULL, "is not IPv4:port"},
        {"10.96.0.50", NULL, "is not IPv4:port"},
        {"10.96.0.50:0", NULL, "is not IPv4:port"},
        {"10.96.0.50:70000", NULL, "is not IPv4:port"},
        {"[fd00::5:3129", NULL, "is not IPv4:port"},
        {"10.96.0.50:3129", "app=", "pod selector"},
        {"10.96.0.50:3129", "Bad Key=x", "pod selector"},
        {"10.96.0.50:3129", "a=1,b=2,c=3,d=4,e=5,f=6,g=7,h=8,i=9", "pod selector"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct driver_k8s_config c = {.server = server,
                                      .gateway_id = "gw-a",
                                      .token_file = gateway("gw-a")->token,
                                      .ca_file = cert,
                                      .home_namespace = "gantry"};
        c.egress.address = bad[i].address;
        c.egress.pod_selector = bad[i].selector;
        struct driver *x = NULL;
        assert_int_equal(driver_k8s_new(&c, &x, errmsg), GERR_INVAL);
        assert_null(x);
        if (strstr(errmsg, bad[i].want) == NULL) {
            fail_msg("%s / %s: %s", bad[i].address, bad[i].selector ? bad[i].selector : "-", errmsg);
        }
    }
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
    make_namespace("sandboxes");
    truncate_log();
    /* Each gateway's ServiceAccount has a Role in "sandboxes" only: the Namespace object itself is
     * not readable (a namespaced Role cannot grant it), so ensure_namespace must not read it. */
    assert_int_equal(raw_as(gateway("gw-one")->token, "GET", "/api/v1/namespaces/sandboxes", NULL, NULL),
                     403);
    struct driver *a = open_gw("gw-one", DRIVER_K8S_SHARED, "sandboxes", NULL);
    struct driver *b = open_gw("gw-two", DRIVER_K8S_SHARED, "sandboxes", NULL);
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

    wait_live(a);
    wait_live(b);
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

    /* Lists and watches asked the server for this gateway's label only. */
    assert_true(logged("GET", SBX "/namespaces/sandboxes/sandboxes", "gantry.dev%2Fgateway-id%3Dgw-one") > 0);
    assert_true(logged("GET", SBX "/namespaces/sandboxes/sandboxes", "gantry.dev%2Fgateway-id%3Dgw-two") > 0);
    /* Neither driver read the Namespace (gw-one's one GET is this test's own, refused, above). */
    assert_int_equal(
        logged_user("GET", "/api/v1/namespaces/sandboxes", "system:serviceaccount:gantry-one:gantry-one"), 1);
    assert_int_equal(
        logged_user("GET", "/api/v1/namespaces/sandboxes", "system:serviceaccount:gantry-two:gantry-two"), 0);
    driver_free(a);
    driver_free(b);
}

/* "a--b"/"c" and "a"/"b--c" read the same in shared mode; both exist, each found by its labels. */
static void test_shared_names_that_read_the_same(void **state)
{
    char errmsg[GERR_MSG_SIZE], path[256];
    struct driver *d = open_gw("gw-one", DRIVER_K8S_SHARED, "sandboxes", NULL);
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

/* Gateway ids where one followed by "-" begins the other name one managed namespace for two
 * gantry namespaces: gw-a's "b-x" and gw-a-b's "x" are both openshell-gw-a-b-x. Whoever ensures
 * first has it; the other is refused (ensure GERR_EXISTS, delete GERR_PERM) with a message naming
 * the gateway and gantry namespace that hold it, and nothing of the holder's is touched. gw-a-b
 * has no Helm release in these tests: its driver uses the admin token. */
static void test_managed_name_collision_between_gateways(void **state)
{
    char errmsg[GERR_MSG_SIZE], kns[64], other[64], path[200], before[32], after[32];
    struct driver_k8s_config c = {.server = server,
                                  .token_file = token,
                                  .ca_file = cert,
                                  .gateway_id = "gw-a-b",
                                  .mode = DRIVER_K8S_MANAGED,
                                  .home_namespace = "gantry-b",
                                  .timeout_ms = 10000,
                                  .no_watch = true};
    struct driver *ab, *a = open_managed(NULL);
    uint64_t e = conf_epoch();
    assert_int_equal(driver_k8s_new(&c, &ab, errmsg), 0);
    driver_k8s_managed_namespace("gw-a", "b-x", kns);
    driver_k8s_managed_namespace("gw-a-b", "x", other);
    assert_string_equal(kns, other);
    assert_string_equal(kns, "openshell-gw-a-b-x");
    snprintf(path, sizeof path, "/api/v1/namespaces/%s", kns);

    assert_int_equal(driver_ensure_namespace(ab, e, "x", errmsg), 0);
    rv_of(path, before, sizeof before);
    assert_int_equal(driver_ensure_namespace(a, e, "b-x", errmsg), GERR_EXISTS);
    assert_non_null(strstr(errmsg, "not managed by gateway gw-a"));
    assert_non_null(strstr(errmsg, "belongs to gateway gw-a-b (gantry namespace x)"));
    assert_int_equal(driver_delete_namespace(a, e, "b-x", errmsg), GERR_PERM);
    assert_non_null(strstr(errmsg, "not deleting it"));
    assert_non_null(strstr(errmsg, "belongs to gateway gw-a-b (gantry namespace x)"));
    rv_of(path, after, sizeof after);
    assert_string_equal(before, after);
    char v[64];
    label_of(path, K8S_LABEL_GATEWAY, v, sizeof v);
    assert_string_equal(v, "gw-a-b");

    assert_int_equal(driver_delete_namespace(ab, e, "x", errmsg), 0);
    driver_free(ab);
    driver_free(a);
}

static void test_two_gateways_managed(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *a = open_managed(NULL);
    struct driver *b = open_gw("gw-b", DRIVER_K8S_MANAGED, NULL, NULL);
    uint64_t e = conf_epoch();
    struct conf_spec sa, sb;
    struct driver_sandbox_list l;
    make_in(a, e, "shared-name", "app", &sa);
    make_in(b, e, "shared-name", "app", &sb);
    assert_true(exists("/api/v1/namespaces/openshell-gw-a-shared-name"));
    assert_true(exists("/api/v1/namespaces/openshell-gw-b-shared-name"));
    wait_live(a);
    wait_live(b);
    assert_int_equal(driver_list(a, e, NULL, &l, errmsg), 0);
    assert_int_equal(conf_count(&l, sa.id), 1);
    assert_int_equal(conf_count(&l, sb.id), 0);
    driver_sandbox_list_close(&l);
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

#define FENCE_PATH "/api/v1/namespaces/gantry/configmaps/gantry-fence-gw-a"

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
    assert_false(exists("/api/v1/namespaces/default/configmaps/gantry-fence-gw-a")); /* in the release's */
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
    assert_string_equal(json_string_value(json_object_get(p, "apiVersion")), "agents.x-k8s.io/v1beta1");
    json_t *md = json_object_get(p, "metadata");
    json_t *sspec = json_object_get(p, "spec");
    json_t *tmpl = json_object_get(sspec, "podTemplate");
    json_t *spec = json_object_get(tmpl, "spec");
    json_t *c = json_array_get(json_object_get(spec, "containers"), 0);
    json_t *labs = json_object_get(md, "labels");
    json_t *pod_labs = json_object_get(json_object_get(tmpl, "metadata"), "labels");
    assert_string_equal(json_string_value(json_object_get(pod_labs, K8S_LABEL_GATEWAY)), "gw-a");
    assert_string_equal(json_string_value(json_object_get(pod_labs, "team")), "blue");
    assert_string_equal(json_string_value(json_object_get(pod_labs, OS_LABEL_SANDBOX)), cs.id);
    assert_string_equal(json_string_value(json_object_get(labs, K8S_LABEL_SANDBOX)), cs.id);
    assert_string_equal(json_string_value(json_object_get(labs, K8S_LABEL_NAME)), "configured");
    assert_string_equal(json_string_value(json_object_get(labs, OS_LABEL_MANAGED)), "openshell");
    assert_string_equal(json_string_value(json_object_get(labs, OS_LABEL_NAME)), "configured");
    assert_string_equal(json_string_value(json_object_get(labs, OS_LABEL_NAMESPACE)), env.ns);
    assert_string_equal(json_string_value(json_object_get(labs, "team")), "blue");
    assert_string_equal(json_string_value(json_object_get(json_object_get(md, "annotations"), K8S_ANN_OWNER)),
                        "user:alice");
    assert_string_equal(json_string_value(json_object_get(spec, "runtimeClassName")), "gvisor");
    assert_string_equal(json_string_value(json_object_get(spec, "serviceAccountName")), "sandbox-runner");
    assert_true(json_is_true(json_object_get(spec, "automountServiceAccountToken")));
    assert_string_equal(json_string_value(json_object_get(json_object_get(spec, "nodeSelector"), "zone")),
                        "a");
    assert_int_equal(json_array_size(json_object_get(spec, "tolerations")), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(spec, "imagePullSecrets"), 0), "name")),
                        "regcred");
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
    /* The managed namespace enforces the restricted Pod Security Standard (the fake's controller
     * refuses a pod that breaks it): the driver's defaults let the sandbox run. */
    struct driver_sandbox ready;
    wait_phase(d, e, env.ns, cs.id, DRIVER_PHASE_READY, &ready);
    driver_sandbox_close(&ready);
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
    /* A service account outside the allow-list (the gateway's own, say) is refused. */
    struct driver_kv own_sa[] = {{"service_account", "gantry"}};
    cs.spec.driver_config = own_sa;
    cs.spec.n_driver_config = 1;
    assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), GERR_PERM);
    assert_non_null(strstr(errmsg, "sandbox-runner"));
    cs.spec.n_driver_config = 0;
    /* Tenant labels that would reach the platform are refused at admission. */
    struct driver_kv platform[][1] = {
        {{"app.kubernetes.io/name", "x"}},   {{"kubernetes.io/metadata.name", "x"}},
        {{"agents.x-k8s.io/pod-name", "x"}}, {{"statefulset.kubernetes.io/pod-name", "x"}},
        {{"openshell.ai/sandbox-id", "x"}},  {{"node.k8s.io/x", "x"}}};
    for (size_t i = 0; i < sizeof platform / sizeof platform[0]; i++) {
        cs.spec.labels = platform[i];
        cs.spec.n_labels = 1;
        assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), GERR_INVAL);
        assert_non_null(strstr(errmsg, platform[i][0].key));
        assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_INVAL);
    }
    cs.spec.n_labels = 0;
    /* A spec whose object the API server would refuse (over 1 MiB here) is refused at admission. */
    static char big[DRIVER_ENV_VAL_MAX];
    memset(big, 'x', sizeof big - 1);
    struct driver_kv bigenv[40];
    char names[40][8];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof names[i], "V%d", i);
        bigenv[i] = (struct driver_kv){names[i], big};
    }
    cs.spec.env = bigenv;
    cs.spec.n_env = 40;
    assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "bytes"));
    cs.spec.n_env = 0;
    cs.spec.image = "";
    assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "image"));
    driver_free(d);

    /* The API server refuses bodies over its limit (413) whoever sends them. */
    char *huge = mem_alloc(4u << 20);
    memset(huge, ' ', (4u << 20) - 3);
    memcpy(huge + (4u << 20) - 3, "{}", 3);
    assert_int_equal(raw("POST", "/api/v1/namespaces", huge, NULL), 413);
    mem_free(huge);
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
    wait_phase(d, e, env.ns, cs.id, DRIVER_PHASE_READY, &s);
    driver_sandbox_close(&s);

    set_status(
        path, "phases",
        "{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"PodFailed\",\"message\":"
        "\"Pod failed\"},{\"type\":\"Finished\",\"status\":\"True\",\"reason\":\"PodFailed\",\"message\":"
        "\"Pod failed\"}]}");
    wait_phase(d, e, env.ns, cs.id, DRIVER_PHASE_ERROR, &s); /* the watch brings the change */
    assert_string_equal(s.message, "PodFailed: Pod failed");
    driver_sandbox_close(&s);

    set_status(path, "phases",
               "{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"SandboxExpired\","
               "\"message\":\"Sandbox has expired\"}]}");
    wait_phase(d, e, env.ns, cs.id, DRIVER_PHASE_STOPPED, &s);
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
    struct driver *fresh = open_managed(NULL); /* no cache yet: reads the API server */
    assert_int_equal(driver_get(fresh, e, env.ns, cs.id, &s, errmsg), 0);
    assert_int_equal(s.phase, DRIVER_PHASE_STOPPED);
    driver_sandbox_close(&s);
    driver_free(fresh);
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    driver_free(d);
}

/* A pod that never schedules or never pulls its image: the controller reports
 * DependenciesNotReady for ever, and the driver says PROVISIONING with the controller's message
 * (the reconciler's provisioning deadline ends it: reconciler_kubernetes). */
static void test_pending_pod(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    control("/_fake/config", "{\"pending\":true}");
    make_in(d, e, env.ns, "stuck", &cs);
    control("/_fake/config", "{\"pending\":false}");
    assert_int_equal(driver_get(d, e, env.ns, cs.id, &s, errmsg), 0);
    assert_int_equal(s.phase, DRIVER_PHASE_PROVISIONING);
    assert_non_null(strstr(s.message, "DependenciesNotReady: Pod exists with phase: Pending"));
    driver_sandbox_close(&s);
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    driver_free(d);
}

/* An API server without the agent-sandbox CRD: no API group, or the resource not served. */
static void test_crd_not_installed(void **state)
{
    char errmsg[GERR_MSG_SIZE], json[512], kns[64];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    conf_spec(&env, &cs, "nocrd");
    inject("{\"method\":\"GET\",\"path\":\"/apis/agents.x-k8s.io\",\"status\":404,\"reason\":\"NotFound\"}");
    assert_int_equal(driver_get(d, e, env.ns, cs.id, &s, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "CRD"));
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

/* v1beta1 (the storage version) wherever it is served, so the conversion webhook is never on the
 * path; v1alpha1 only where it is not. */
static void test_api_versions(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    struct driver_caps caps;

    /* The controller's conversion webhook is down: v1alpha1 requests fail with 500; v1beta1 works. */
    control("/_fake/config", "{\"conversion\":false}");
    struct driver *d = open_managed(NULL);
    make_in(d, e, env.ns, "beta", &cs);
    driver_capabilities(d, &caps);
    assert_non_null(strstr(caps.detail, "(v1beta1)"));
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    driver_free(d);
    control("/_fake/config", "{\"conversion\":true}");

    /* An agent-sandbox before v0.5.0 serves v1alpha1 only. */
    control("/_fake/config", "{\"versions\":[\"v1alpha1\"]}");
    truncate_log();
    d = open_managed(NULL);
    make_in(d, e, env.ns, "alpha", &cs);
    driver_capabilities(d, &caps);
    assert_non_null(strstr(caps.detail, "(v1alpha1)"));
    assert_true(logged("POST", "/apis/agents.x-k8s.io/v1alpha1/namespaces/openshell-gw-a-team-a/sandboxes",
                       NULL) == 1);
    wait_phase(d, e, env.ns, cs.id, DRIVER_PHASE_READY, &s);
    driver_sandbox_close(&s);
    /* ... and is upgraded to one that serves v1beta1: the next 404 makes the driver ask again. */
    control("/_fake/config", "{\"versions\":[\"v1beta1\"]}");
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), GERR_UNAVAILABLE);
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    driver_capabilities(d, &caps);
    assert_non_null(strstr(caps.detail, "(v1beta1)"));
    driver_free(d);
    control("/_fake/config", "{\"versions\":[\"v1beta1\",\"v1alpha1\"]}");
}

/* ---- Errors that clear by waiting */

static void test_throttling(void **state)
{
    char errmsg[GERR_MSG_SIZE], json[512], kns[64];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), 0);
    assert_int_equal(driver_list(d, e, NULL, &(struct driver_sandbox_list){0}, errmsg), 0);
    wait_live(d);
    /* The API server's priority and fairness answers 429 with Retry-After: the driver waits and
     * the call succeeds. */
    truncate_log();
    control("/_fake/config", "{\"qps\":2,\"burst\":1}");
    conf_spec(&env, &cs, "throttled");
    uint64_t t0 = now_ms();
    int rv = driver_create(d, e, &cs.spec, &s, errmsg);
    control("/_fake/config", "{\"qps\":0}");
    if (rv != 0) {
        fail_msg("create while throttled: %s", errmsg);
    }
    driver_sandbox_close(&s);
    assert_true(logged_status(429) > 0);
    assert_true(now_ms() - t0 >= 1000); /* it waited for Retry-After */
    /* A Retry-After longer than the driver waits in one call: GERR_BUSY, which the reconciler
     * retries until the provisioning deadline, never ERROR at once. */
    driver_k8s_managed_namespace("gw-a", env.ns, kns);
    conf_spec(&env, &cs, "throttled-long");
    snprintf(json, sizeof json,
             "{\"method\":\"POST\",\"path\":\"" SBX
             "/namespaces/%s/sandboxes\",\"status\":429,\"reason\":\"TooManyRequests\",\"retry_after\":30}",
             kns);
    inject(json);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_BUSY);
    assert_non_null(strstr(errmsg, "retry after 30 s"));
    /* An admission webhook that is down: 500, unavailable, not permanent. */
    snprintf(
        json, sizeof json,
        "{\"method\":\"POST\",\"path\":\"" SBX
        "/namespaces/%s/sandboxes\",\"status\":500,\"message\":\"Internal error occurred: failed calling "
        "webhook \\\"policy.example.com\\\": connection refused\"}",
        kns);
    inject(json);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "failed calling webhook"));
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), 0); /* the next try works */
    driver_sandbox_close(&s);
    driver_free(d);
}

/* A call made on its own thread: ensure_namespace(@ns) at @epoch; done is set after it returns. */
struct bg_call {
    struct driver *d;
    uint64_t epoch;
    const char *ns;
    int rv;
    char errmsg[GERR_MSG_SIZE];
    pthread_mutex_t mu;
    bool done;
    pthread_t thread;
};

static void *bg_main(void *arg)
{
    struct bg_call *c = arg;
    int rv = driver_ensure_namespace(c->d, c->epoch, c->ns, c->errmsg);
    pthread_mutex_lock(&c->mu);
    c->rv = rv;
    c->done = true;
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void bg_start(struct bg_call *c, struct driver *d, uint64_t epoch, const char *ns)
{
    c->d = d;
    c->epoch = epoch;
    c->ns = ns;
    c->done = false;
    pthread_mutex_init(&c->mu, NULL);
    assert_int_equal(pthread_create(&c->thread, NULL, bg_main, c), 0);
}

static bool bg_done(struct bg_call *c)
{
    pthread_mutex_lock(&c->mu);
    bool done = c->done;
    pthread_mutex_unlock(&c->mu);
    return done;
}

static int bg_join(struct bg_call *c)
{
    pthread_join(c->thread, NULL);
    pthread_mutex_destroy(&c->mu);
    return c->rv;
}

/* Inject a 429 with Retry-After @s into the next POST of a namespace, start ensure_namespace(@ns)
 * on its own thread and return once the server has answered it the 429 (the call is then waiting
 * it out, or about to). */
static void start_throttled(struct bg_call *c, struct driver *d, uint64_t epoch, const char *ns, unsigned s)
{
    char json[256];
    truncate_log();
    snprintf(json, sizeof json,
             "{\"method\":\"POST\",\"path\":\"/api/v1/namespaces\",\"status\":429,\"reason\":"
             "\"TooManyRequests\",\"retry_after\":%u}",
             s);
    inject(json);
    bg_start(c, d, epoch, ns);
    uint64_t deadline = now_ms() + 30000;
    while (logged_status(429) == 0) {
        assert_true(now_ms() < deadline);
        nap_ms(20);
    }
}

/* Waiting out a 429 does not hold the driver's mutex: another thread's calls go on meanwhile (they
 * finish before the throttled call does: the order is checked, not a duration), a call with a
 * newer epoch made meanwhile makes the throttled one stale, and driver_k8s_stop ends the wait. */
static void test_throttled_call_does_not_block_others(void **state)
{
    char errmsg[GERR_MSG_SIZE], kns[64], path[200];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    struct driver_sandbox_list l;
    struct driver_caps caps;
    struct driver_k8s_stats st;
    struct bg_call a;
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), 0);

    /* While one call waits out Retry-After (the whole budget, 5 s), the others are answered:
     * validate and capabilities (the API's threads), stats, and a create, a list and a get, which
     * make their own requests (the fence, the idempotence check, the POST). */
    start_throttled(&a, d, e, "throttle-a", DRIVER_K8S_THROTTLE_WAIT_S);
    conf_spec(&env, &cs, "beside-throttled");
    assert_int_equal(driver_validate(d, &cs.spec, NULL, errmsg), 0);
    driver_capabilities(d, &caps);
    if (driver_create(d, e, &cs.spec, &s, errmsg) != 0) {
        fail_msg("create beside a throttled call: %s", errmsg);
    }
    driver_sandbox_close(&s);
    assert_int_equal(driver_list(d, e, env.ns, &l, errmsg), 0);
    driver_sandbox_list_close(&l);
    assert_int_equal(driver_get(d, e, env.ns, cs.id, &s, errmsg), 0);
    driver_sandbox_close(&s);
    driver_k8s_stats(d, &st);
    assert_false(bg_done(&a)); /* all of that went on while the throttled call waited */
    assert_int_equal(st.throttled, 1);
    if (bg_join(&a) != 0) {
        fail_msg("throttled ensure_namespace: %s", a.errmsg);
    }
    assert_int_equal(logged("POST", "/api/v1/namespaces", NULL), 2); /* the 429, then the retry */
    driver_k8s_managed_namespace("gw-a", "throttle-a", kns);
    snprintf(path, sizeof path, "/api/v1/namespaces/%s", kns);
    assert_true(exists(path));
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    assert_int_equal(driver_delete_namespace(d, e, "throttle-a", errmsg), 0);

    /* A call with a newer epoch while the throttled one waits: the throttled call's fence check
     * no longer holds, so it ends DRIVER_ERR_STALE instead of sending its request again. */
    start_throttled(&a, d, e, "throttle-b", DRIVER_K8S_THROTTLE_WAIT_S);
    uint64_t e2 = conf_epoch();
    assert_int_equal(driver_ensure_namespace(d, e2, env.ns, errmsg), 0); /* raises the fence */
    assert_false(bg_done(&a));
    assert_int_equal(bg_join(&a), DRIVER_ERR_STALE);
    assert_non_null(strstr(a.errmsg, "waited out throttling"));
    assert_int_equal(logged("POST", "/api/v1/namespaces", NULL), 1);
    driver_k8s_managed_namespace("gw-a", "throttle-b", kns);
    snprintf(path, sizeof path, "/api/v1/namespaces/%s", kns);
    assert_false(exists(path));

    /* driver_k8s_stop while a call waits: the call ends GERR_CANCELED without waiting out the
     * rest (without the stop it would send its request again and succeed), and later calls fail
     * the same way without a request. */
    start_throttled(&a, d, e2, "throttle-c", DRIVER_K8S_THROTTLE_WAIT_S);
    driver_k8s_stop(d);
    assert_int_equal(bg_join(&a), GERR_CANCELED);
    assert_non_null(strstr(a.errmsg, "stopping"));
    assert_int_equal(logged("POST", "/api/v1/namespaces", NULL), 1);
    assert_int_equal(driver_ensure_namespace(d, e2, "throttle-d", errmsg), GERR_CANCELED);
    driver_k8s_stop(d); /* twice is fine */
    driver_free(d);
}

/* A namespace being deleted: creates in it are 403 (NamespaceTerminating) and making it again is
 * 409, until it is gone. Both clear by waiting, so both are GERR_UNAVAILABLE, never permanent. */
static void test_namespace_terminating(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    make_in(d, e, "team-t", "first", &cs);
    assert_int_equal(driver_delete(d, e, "team-t", cs.id, errmsg), 0);
    control("/_fake/namespace", "{\"name\":\"openshell-gw-a-team-t\",\"stuck\":true}");
    assert_int_equal(driver_delete_namespace(d, e, "team-t", errmsg), 0);
    /* Another replica's driver, which still believes the namespace usable, creates in it. */
    struct driver *other = open_managed(NULL);
    conf_spec(&env, &cs, "second");
    cs.spec.namespace = "team-t";
    assert_int_equal(driver_create(other, e, &cs.spec, &s, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "being terminated"));
    assert_int_equal(driver_ensure_namespace(other, e, "team-t", errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "terminating"));
    /* It finalises: ensure makes it again and the create goes through. */
    control("/_fake/namespace", "{\"name\":\"openshell-gw-a-team-t\",\"stuck\":false}");
    assert_int_equal(driver_ensure_namespace(other, e, "team-t", errmsg), 0);
    assert_int_equal(driver_create(other, e, &cs.spec, &s, errmsg), 0);
    driver_sandbox_close(&s);
    assert_int_equal(driver_delete(other, e, "team-t", cs.id, errmsg), 0);
    assert_int_equal(driver_delete_namespace(other, e, "team-t", errmsg), 0);
    driver_free(other);
    driver_free(d);
}

/* ---- Load on the API server: the cache, the watch */

static void test_reads_from_cache(void **state)
{
    char errmsg[GERR_MSG_SIZE], path[256], kns[64];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    struct driver_sandbox_list l;
    struct driver_k8s_stats before, after;
    make_in(d, e, env.ns, "cached", &cs);
    wait_live(d);
    driver_k8s_stats(d, &before);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(driver_get(d, e, env.ns, cs.id, &s, errmsg), 0);
        driver_sandbox_close(&s);
    }
    assert_int_equal(driver_list(d, e, NULL, &l, errmsg), 0);
    assert_int_equal(conf_count(&l, cs.id), 1);
    driver_sandbox_list_close(&l);
    driver_k8s_stats(d, &after);
    assert_int_equal(after.requests - before.requests, 0); /* 50 gets and a list: no request */
    /* Someone else's change reaches the cache through the watch. */
    driver_k8s_managed_namespace("gw-a", env.ns, kns);
    sbx_path(path, sizeof path, kns, "cached");
    set_status(
        path, "cached",
        "{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"SandboxSuspended\"}]}");
    wait_phase(d, e, env.ns, cs.id, DRIVER_PHASE_STOPPED, &s);
    driver_sandbox_close(&s);
    driver_k8s_stats(d, &after);
    assert_int_equal(after.requests - before.requests, 0);
    assert_true(after.watch_events > before.watch_events);
    driver_free(d);

    /* Without the watch, a sandbox seen before is read by its name: one GET, not a LIST. */
    struct driver_k8s_config c = {.no_watch = true};
    d = open_cfg("gw-a", &c);
    assert_int_equal(driver_get(d, e, env.ns, cs.id, &s, errmsg), 0); /* never seen: by label */
    driver_sandbox_close(&s);
    truncate_log();
    for (int i = 0; i < 5; i++) {
        assert_int_equal(driver_get(d, e, env.ns, cs.id, &s, errmsg), 0);
        driver_sandbox_close(&s);
    }
    assert_int_equal(logged("GET", path, NULL), 5);
    assert_int_equal(logged("GET", SBX "/namespaces/openshell-gw-a-team-a/sandboxes", NULL), 0);
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    driver_free(d);
}

/* The watch's resourceVersion was compacted away (an API server restart, or a long disconnect):
 * 410, list again, and the cache holds what was made meanwhile. */
static void test_watch_relists_after_410(void **state)
{
    char errmsg[GERR_MSG_SIZE], body[2048], kns[64];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs, other;
    struct driver_sandbox s;
    struct driver_k8s_stats st;
    make_in(d, e, env.ns, "before-410", &cs);
    wait_live(d);
    /* Made by another replica while this one's watch is cut and its revision compacted. */
    conf_spec(&env, &other, "during-410");
    driver_k8s_managed_namespace("gw-a", env.ns, kns);
    control("/_fake/drop-watches", "{}"); /* the watch waits a second before it watches again */
    snprintf(body, sizeof body,
             "{\"apiVersion\":\"agents.x-k8s.io/"
             "v1beta1\",\"kind\":\"Sandbox\",\"metadata\":{\"name\":\"during-410\","
             "\"labels\":{\"" K8S_LABEL_GATEWAY "\":\"gw-a\",\"" K8S_LABEL_SANDBOX
             "\":\"%s\",\"" K8S_LABEL_NAMESPACE "\":\"%s\",\"" K8S_LABEL_NAME
             "\":\"during-410\"},\"annotations\":{\"" K8S_ANN_EPOCH "\":\"%llu\"}},"
             "\"spec\":{\"podTemplate\":{\"spec\":{\"containers\":[{\"name\":\"sandbox\",\"image\":"
             "\"busybox\"}]}}}}",
             other.id, env.ns, (unsigned long long)e);
    char path[200];
    snprintf(path, sizeof path, SBX "/namespaces/%s/sandboxes", kns);
    assert_int_equal(raw("POST", path, body, NULL), 201);
    control("/_fake/compact", "{}"); /* the watch's revision is history now */
    uint64_t deadline = now_ms() + 15000;
    for (driver_k8s_stats(d, &st); st.watch_relists == 0 || !st.live; driver_k8s_stats(d, &st)) {
        assert_true(now_ms() < deadline);
        nap_ms(20);
    }
    struct driver_sandbox_list l;
    assert_int_equal(driver_list(d, e, env.ns, &l, errmsg), 0); /* from the relisted cache */
    assert_int_equal(conf_count(&l, other.id), 1);
    assert_int_equal(conf_count(&l, cs.id), 1);
    driver_sandbox_list_close(&l);
    assert_int_equal(driver_get(d, e, env.ns, other.id, &s, errmsg), 0);
    driver_sandbox_close(&s);
    assert_int_equal(driver_delete(d, e, env.ns, other.id, errmsg), 0);
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    driver_free(d);
}

/* A watch that the server answers 200 and ends at once, without an event (cut by a proxy, or a
 * server shutting down): the driver backs off as for any error (1 s, then 2 s) instead of watching
 * again at once, which was a busy loop of watch requests for as long as the condition lasted. The
 * window is a measurement of the request rate, not a wait for a condition. */
static void test_watch_ending_at_once_backs_off(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_k8s_stats before, st;
    make_in(d, e, env.ns, "cut-at-once", &cs);
    wait_live(d);
    driver_k8s_stats(d, &before);
    control("/_fake/config", "{\"watch_end\":true}");
    control("/_fake/drop-watches", "{}");
    nap_ms(2500);
    driver_k8s_stats(d, &st);
    control("/_fake/config", "{\"watch_end\":false}");
    /* The cut stream, a second's pause, one watch ending at once, a 2 s pause. */
    assert_true(st.watch_requests - before.watch_requests <= 3);
    assert_true(st.watch_errors - before.watch_errors >= 2);
    wait_live(d); /* and it comes back once watches work again */
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    driver_free(d);
}

/* The watch's list keeps failing because its continue tokens keep expiring (410 on every second
 * page): after a few restarts it backs off like any other failure (counted as an error, a second
 * before the next try) instead of listing again at once, which would be a busy loop of LIST
 * requests against the API server for as long as the condition lasts. */
static void test_watch_list_410_backs_off(void **state)
{
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs[4];
    struct driver_k8s_stats before, st;
    char errmsg[GERR_MSG_SIZE];
    for (int i = 0; i < 3; i++) { /* pages of 2: the list has a second page */
        char name[16];
        snprintf(name, sizeof name, "expiring-%d", i);
        make_in(d, e, env.ns, name, &cs[i]);
    }
    wait_live(d);
    driver_k8s_stats(d, &before);
    /* Six 410s: the four attempts of one relist, then two more after its pause. */
    inject("{\"method\":\"GET\",\"path\":\"" SBX "/sandboxes\",\"query\":\"continue=\",\"status\":410,"
           "\"reason\":\"Expired\",\"message\":\"The provided continue parameter is too old\",\"times\":6}");
    uint64_t t0 = now_ms(), deadline = t0 + 20000;
    control("/_fake/drop-watches", "{}");
    make_in(d, e, env.ns, "expiring-3", &cs[3]); /* a write while the watch is away ... */
    control("/_fake/compact", "{}");             /* ... compacted: the watch must list again */
    for (driver_k8s_stats(d, &st); st.watch_relists == before.watch_relists || !st.live;
         driver_k8s_stats(d, &st)) {
        assert_true(now_ms() < deadline);
        nap_ms(20);
    }
    /* One error for the cut stream (the watch pauses a second before it watches again, then gets
     * 410 and lists), one for the relist that failed four times: it went through the backoff and
     * paused another second before listing again. */
    assert_true(st.watch_errors - before.watch_errors >= 2);
    assert_true(now_ms() - t0 >= 1800);
    assert_true(st.watch_list_pages - before.watch_list_pages <= 16);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(driver_delete(d, e, env.ns, cs[i].id, errmsg), 0);
    }
    driver_free(d);
}

/* A list's continue token expired between pages (410): the list starts again from the first page
 * and is complete, never cut short or failed. */
static void test_expired_continue_restarts_list(void **state)
{
    char errmsg[GERR_MSG_SIZE], json[512], kns[64];
    struct driver_k8s_config c = {.no_watch = true};
    struct driver *d = open_cfg("gw-a", &c);
    uint64_t e = conf_epoch();
    struct conf_spec cs[5];
    char names[5][16];
    for (int i = 0; i < 5; i++) {
        snprintf(names[i], sizeof names[i], "paged-%d", i);
        make_in(d, e, "team-p", names[i], &cs[i]);
    }
    driver_k8s_managed_namespace("gw-a", "team-p", kns);
    snprintf(
        json, sizeof json,
        "{\"method\":\"GET\",\"path\":\"" SBX "/namespaces/%s/sandboxes\",\"query\":\"continue=\","
        "\"status\":410,\"reason\":\"Expired\",\"message\":\"The provided continue parameter is too old\"}",
        kns);
    inject(json);
    struct driver_sandbox_list l;
    assert_int_equal(driver_list(d, e, "team-p", &l, errmsg), 0); /* 5 items in pages of 2 */
    assert_int_equal(l.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(conf_count(&l, cs[i].id), 1);
    }
    driver_sandbox_list_close(&l);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(driver_delete(d, e, "team-p", cs[i].id, errmsg), 0);
    }
    assert_int_equal(driver_delete_namespace(d, e, "team-p", errmsg), 0);
    driver_free(d);
}

/* ---- The API server restarting mid-create */

static int start_apiserver(void);

static void test_apiserver_restart_mid_create(void **state)
{
    char errmsg[GERR_MSG_SIZE], json[512], kns[64], path[200];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), 0);
    driver_k8s_managed_namespace("gw-a", env.ns, kns);
    snprintf(path, sizeof path, SBX "/namespaces/%s/sandboxes", kns);
    /* The create reaches etcd, then the API server dies before it answers. */
    snprintf(json, sizeof json, "{\"method\":\"POST\",\"path\":\"%s\",\"crash\":\"after\"}", path);
    inject(json);
    conf_spec(&env, &cs, "restarted");
    int rv = driver_create(d, e, &cs.spec, &s, errmsg);
    assert_true(rv == GERR_CLOSED || rv == GERR_UNAVAILABLE || rv == GERR_IO);
    proc_stop(&apiserver, 5000);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_UNAVAILABLE); /* still down */
    assert_int_equal(start_apiserver(), 0);
    /* The reconciler's retry adopts the object the lost answer was about: one copy. */
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), 0);
    driver_sandbox_close(&s);
    json_t *list;
    char sel[400];
    snprintf(sel, sizeof sel, "%s?labelSelector=gantry.dev%%2Fsandbox-id%%3D%s", path, cs.id);
    assert_int_equal(raw("GET", sel, NULL, &list), 200);
    assert_int_equal(json_array_size(json_object_get(list, "items")), 1);
    assert_null(json_string_value(json_object_get(json_object_get(list, "metadata"), "continue")));
    json_decref(list);
    /* The watch came back after the restart (its old revision is gone: it listed again). */
    wait_live(d);
    wait_phase(d, e, env.ns, cs.id, DRIVER_PHASE_READY, &s);
    driver_sandbox_close(&s);
    assert_int_equal(driver_delete(d, e, env.ns, cs.id, errmsg), 0);
    driver_free(d);
}

/* ---- RBAC: the fake refuses what the chart does not grant */

static void test_rbac_is_enforced(void **state)
{
    const char *a = gateway("gw-a")->token, *one = gateway("gw-one")->token, *op = gateway("gw-op")->token;
    /* Secrets: only the named image pull secret in the release namespace. */
    assert_int_equal(raw_as(a, "GET", "/api/v1/namespaces/gantry/secrets/regcred", NULL, NULL), 200);
    assert_int_equal(raw_as(a, "GET", "/api/v1/namespaces/gantry/secrets/gantry-ca", NULL, NULL), 403);
    assert_int_equal(raw_as(a, "GET", "/api/v1/namespaces/kube-system/secrets/x", NULL, NULL), 403);
    /* Credentials Secrets are written where sandboxes live, never read there. */
    assert_int_equal(raw_as(a, "GET", "/api/v1/namespaces/openshell-gw-a-team-a/secrets/x", NULL, NULL), 403);
    assert_int_equal(raw_as(a, "DELETE", "/api/v1/namespaces/openshell-gw-a-team-a/secrets/x", "{}", NULL),
                     404);
    assert_int_equal(raw_as(one, "GET", "/api/v1/namespaces/sandboxes/secrets/x", NULL, NULL), 403);
    assert_int_equal(raw_as(one, "DELETE", "/api/v1/namespaces/sandboxes/secrets/x", "{}", NULL), 404);
    assert_int_equal(raw_as(one, "DELETE", "/api/v1/namespaces/other/secrets/x", "{}", NULL), 403);
    assert_int_equal(raw_as(op, "GET", "/api/v1/namespaces/tenant-a/secrets/x", NULL, NULL), 403);
    assert_int_equal(raw_as(op, "DELETE", "/api/v1/namespaces/tenant-a/secrets/x", "{}", NULL), 404);
    assert_int_equal(
        raw_as(gateway("gw-b")->token, "DELETE", "/api/v1/namespaces/openshell-gw-b-x/secrets/x", "{}", NULL),
        403);
    /* ConfigMaps: the fence only, in the release namespace. */
    assert_int_equal(raw_as(a, "GET", "/api/v1/namespaces/gantry/configmaps/gantry-config", NULL, NULL), 403);
    assert_int_equal(raw_as(a, "GET", "/api/v1/namespaces/default/configmaps/gantry-fence-gw-a", NULL, NULL),
                     403);
    /* Shared mode: its namespace only, no Namespace objects, nothing cluster-wide. */
    assert_int_equal(raw_as(one, "GET", SBX "/sandboxes", NULL, NULL), 403);
    assert_int_equal(raw_as(one, "GET", SBX "/namespaces/other/sandboxes", NULL, NULL), 403);
    assert_int_equal(raw_as(one, "GET", SBX "/namespaces/sandboxes/sandboxes", NULL, NULL), 200);
    /* Operator mode: allowlisted namespaces, read by name. */
    assert_int_equal(raw_as(op, "GET", "/api/v1/namespaces/tenant-a", NULL, NULL), 200);
    assert_int_equal(raw_as(op, "GET", "/api/v1/namespaces/kube-system", NULL, NULL), 403);
    assert_int_equal(raw_as(op, "GET", SBX "/namespaces/sandboxes/sandboxes", NULL, NULL), 403);
    /* Discovery is for everyone. */
    assert_int_equal(raw_as(one, "GET", "/apis/agents.x-k8s.io", NULL, NULL), 200);
}

/* ---- Credentials (docs/credentials.md) */

#define USER_A  "system:serviceaccount:gantry:gantry"
#define VAL_ONE "sk-VALUE-ONE"  /* base64 c2stVkFMVUUtT05F */
#define VAL_TWO "ghp-VALUE-TWO" /* base64 Z2hwLVZBTFVFLVRXTw== */
#define VAL_NEW "sk-VALUE-NEW"  /* base64 c2stVkFMVUUtTkVX */

static const struct driver_credential creds_two[] = {{"openai", "api_key", VAL_ONE, "OPENAI_API_KEY"},
                                                     {"gh", "token", VAL_TWO, NULL}};

/* The path of sandbox @id's credentials Secret of gateway @gw in @kns. */
static void secret_path(char *out, size_t len, const char *gw, const char *kns, const char *id)
{
    char name[128];
    k8s_credentials_secret_name(gw, id, name);
    snprintf(out, len, "/api/v1/namespaces/%s/secrets/%s", kns, name);
}

/* The Secret at @path as the admin reads it (200 expected). */
static json_t *get_secret(const char *path)
{
    json_t *j;
    assert_int_equal(raw("GET", path, NULL, &j), 200);
    return j;
}

static const char *data_of(json_t *secret, const char *k)
{
    return json_string_value(json_object_get(json_object_get(secret, "data"), k));
}

/* Create @cs with @creds in @ns through @d; its Secret at @spath must then be owned by its Sandbox
 * at @sbx (read by the admin), with the values and labels, and the Sandbox must hold no value. */
static void create_with_credentials(struct driver *d, uint64_t e, struct conf_spec *cs, const char *gw,
                                    const char *ns, const char *kns, const char *sbx, const char *spath)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver_sandbox s;
    cs->spec.namespace = ns;
    cs->spec.credentials = creds_two;
    cs->spec.n_credentials = 2;
    assert_int_equal(driver_ensure_namespace(d, e, ns, errmsg), 0);
    if (driver_create(d, e, &cs->spec, &s, errmsg) != 0) {
        fail_msg("create with credentials: %s", errmsg);
    }
    driver_sandbox_close(&s);
    json_t *sec = get_secret(spath), *obj;
    json_t *md = json_object_get(sec, "metadata");
    assert_string_equal(json_string_value(json_object_get(sec, "type")), "Opaque");
    assert_string_equal(json_string_value(json_object_get(md, "namespace")), kns);
    assert_string_equal(json_string_value(json_object_get(json_object_get(md, "labels"), K8S_LABEL_GATEWAY)),
                        gw);
    assert_string_equal(json_string_value(json_object_get(json_object_get(md, "labels"), K8S_LABEL_SANDBOX)),
                        cs->id);
    assert_int_equal(json_object_size(json_object_get(sec, "data")), 2);
    assert_string_equal(data_of(sec, "openai.api_key"), "c2stVkFMVUUtT05F");
    assert_string_equal(data_of(sec, "gh.token"), "Z2hwLVZBTFVFLVRXTw==");
    assert_int_equal(raw("GET", sbx, NULL, &obj), 200);
    json_t *ref = json_array_get(json_object_get(md, "ownerReferences"), 0);
    assert_int_equal(json_array_size(json_object_get(md, "ownerReferences")), 1);
    assert_string_equal(json_string_value(json_object_get(ref, "kind")), "Sandbox");
    assert_string_equal(json_string_value(json_object_get(ref, "apiVersion")), "agents.x-k8s.io/v1beta1");
    assert_string_equal(json_string_value(json_object_get(ref, "name")),
                        json_string_value(json_object_get(json_object_get(obj, "metadata"), "name")));
    assert_string_equal(json_string_value(json_object_get(ref, "uid")),
                        json_string_value(json_object_get(json_object_get(obj, "metadata"), "uid")));
    assert_true(json_is_false(json_object_get(ref, "blockOwnerDeletion")));
    /* The Sandbox refers to the Secret and holds no value, plain or base64. */
    char *text = json_dumps(obj, JSON_COMPACT);
    assert_null(strstr(text, "VALUE"));
    assert_null(strstr(text, "c2stVkFMVUU"));
    assert_non_null(strstr(text, "\"secretName\":\"gantry-credentials-"));
    assert_non_null(strstr(text, "\"secretKeyRef\":{"));
    assert_non_null(strstr(text, "\"mountPath\":\"" DRIVER_CREDENTIALS_DIR "\""));
    free(text);
    json_decref(obj);
    json_decref(sec);
}

/* Managed mode: the Secret made with the Sandbox, owned by it, referenced by its pod; create again
 * puts it back as it should be; update_credentials replaces the whole set; the driver never reads
 * it; errors name no value; delete removes it; a sandbox without credentials has none. */
static void test_credentials(void **state)
{
    char errmsg[GERR_MSG_SIZE], kns[64], sbx[256], spath[300], body[600];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs, plain;
    struct driver_sandbox s;
    struct driver_sandbox_list l;
    struct driver_caps caps;
    driver_capabilities(d, &caps);
    assert_true(caps.credentials);
    truncate_log();
    conf_spec(&env, &cs, "creds");
    driver_k8s_managed_namespace("gw-a", "team-a", kns);
    sbx_path(sbx, sizeof sbx, kns, "creds");
    secret_path(spath, sizeof spath, "gw-a", kns, cs.id);
    create_with_credentials(d, e, &cs, "gw-a", "team-a", kns, sbx, spath);
    conf_wait_ready(&env, d, e, "team-a", cs.id);

    /* Create again (the reconciler retrying, another replica): one Sandbox, the Secret made current
     * again after someone changed it. */
    snprintf(body, sizeof body,
             "{\"metadata\":{\"name\":\"gantry-credentials-gw-a-%s\"},\"type\":\"Opaque\",\"data\":{\"x\":"
             "\"eA==\"}}",
             cs.id);
    assert_int_equal(raw("PUT", spath, body, NULL), 200);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), 0);
    driver_sandbox_close(&s);
    json_t *sec = get_secret(spath);
    assert_int_equal(json_object_size(json_object_get(sec, "data")), 2);
    assert_string_equal(data_of(sec, "openai.api_key"), "c2stVkFMVUUtT05F");
    assert_int_equal(json_array_size(json_object_get(json_object_get(sec, "metadata"), "ownerReferences")),
                     1);
    json_decref(sec);
    assert_int_equal(driver_list(d, e, "team-a", &l, errmsg), 0);
    assert_int_equal(conf_count(&l, cs.id), 1);
    driver_sandbox_list_close(&l);

    /* Rotation: the whole new set replaces the old; a key left out goes. */
    struct driver_credential rotated[] = {{"openai", "api_key", VAL_NEW, "OPENAI_API_KEY"}};
    assert_int_equal(driver_update_credentials(d, e, "team-a", cs.id, rotated, 1, errmsg), 0);
    sec = get_secret(spath);
    assert_int_equal(json_object_size(json_object_get(sec, "data")), 1);
    assert_string_equal(data_of(sec, "openai.api_key"), "c2stVkFMVUUtTkVX");
    json_decref(sec);
    char missing[DRIVER_ID_LEN + 1];
    conf_uuid(missing);
    assert_int_equal(driver_update_credentials(d, e, "team-a", missing, rotated, 1, errmsg), GERR_NOTFOUND);
    /* An API server error naming the data is not passed on. */
    snprintf(body, sizeof body,
             "{\"method\":\"PUT\",\"path\":\"%s\",\"status\":422,\"reason\":\"Invalid\",\"message\":\"data: "
             "Invalid value: " VAL_NEW "\"}",
             spath);
    inject(body);
    assert_int_equal(driver_update_credentials(d, e, "team-a", cs.id, rotated, 1, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "422"));
    assert_null(strstr(errmsg, "VALUE"));
    /* The driver wrote the Secret and never read it. */
    assert_int_equal(logged_user("GET", spath, USER_A), 0);
    assert_true(logged_user("PUT", spath, USER_A) >= 3);

    /* A sandbox without credentials: no Secret, no volume, no annotation; update is refused. */
    conf_spec(&env, &plain, "plain");
    assert_int_equal(driver_create(d, e, &plain.spec, &s, errmsg), 0);
    driver_sandbox_close(&s);
    char ppath[300], psbx[256];
    json_t *obj;
    secret_path(ppath, sizeof ppath, "gw-a", kns, plain.id);
    assert_false(exists(ppath));
    sbx_path(psbx, sizeof psbx, kns, "plain");
    assert_int_equal(raw("GET", psbx, NULL, &obj), 200);
    char *text = json_dumps(obj, JSON_COMPACT);
    assert_null(strstr(text, "volumes"));
    assert_null(strstr(text, "fsGroup"));
    assert_null(strstr(text, K8S_ANN_CREDENTIALS));
    free(text);
    json_decref(obj);
    assert_int_equal(driver_update_credentials(d, e, "team-a", plain.id, rotated, 1, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "without credentials"));
    assert_false(exists(ppath));
    assert_int_equal(driver_delete(d, e, "team-a", plain.id, errmsg), 0);

    /* Delete removes the Secret itself (not left to the garbage collector). */
    assert_int_equal(driver_delete(d, e, "team-a", cs.id, errmsg), 0);
    assert_false(exists(spath));
    assert_int_equal(logged_user("DELETE", spath, USER_A), 1);
    assert_int_equal(driver_delete(d, e, "team-a", cs.id, errmsg), 0); /* again: 404 is fine */

    /* A namespace deleted behind the driver's back: the Secret's create finds it gone, and
     * ensure_namespace then makes it again (it does not trust its memory of it). */
    char zns[64];
    struct conf_spec z;
    driver_k8s_managed_namespace("gw-a", "team-z", zns);
    assert_int_equal(driver_ensure_namespace(d, e, "team-z", errmsg), 0);
    snprintf(body, sizeof body, "/api/v1/namespaces/%s", zns);
    assert_int_equal(raw("DELETE", body, "{}", NULL), 200);
    for (uint64_t until = now_ms() + 10000; exists(body) && now_ms() < until;) {
        nap_ms(20);
    }
    conf_spec(&env, &z, "z");
    z.spec.namespace = "team-z";
    z.spec.credentials = creds_two;
    z.spec.n_credentials = 2;
    assert_int_equal(driver_create(d, e, &z.spec, &s, errmsg), GERR_NOTFOUND);
    assert_non_null(strstr(errmsg, "ensure_namespace first"));
    assert_int_equal(driver_ensure_namespace(d, e, "team-z", errmsg), 0);
    assert_int_equal(driver_create(d, e, &z.spec, &s, errmsg), 0);
    driver_sandbox_close(&s);
    assert_int_equal(driver_delete(d, e, "team-z", z.id, errmsg), 0);
    assert_int_equal(driver_delete_namespace(d, e, "team-z", errmsg), 0);
    driver_free(d);
}

/* The garbage collector (as the fake plays it) removes a Secret whose Sandbox is deleted by someone
 * else: the owner reference is right. */
static void test_credentials_collected_with_sandbox(void **state)
{
    char errmsg[GERR_MSG_SIZE], kns[64], sbx[256], spath[300];
    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    conf_spec(&env, &cs, "collected");
    driver_k8s_managed_namespace("gw-a", "team-a", kns);
    sbx_path(sbx, sizeof sbx, kns, "collected");
    secret_path(spath, sizeof spath, "gw-a", kns, cs.id);
    create_with_credentials(d, e, &cs, "gw-a", "team-a", kns, sbx, spath);
    assert_int_equal(raw("DELETE", sbx, "{}", NULL), 200);
    assert_false(exists(spath));
    assert_int_equal(driver_delete(d, e, "team-a", cs.id, errmsg), 0);
    driver_free(d);
}

/* Operator and shared modes: the chart's RBAC (which the fake enforces) lets the driver write and
 * delete the Secrets where the sandboxes live, and nothing reads them. Managed mode without the
 * namespace guard (gw-b) has no rights on Secrets: a create with credentials is refused before
 * anything is made, and deletes still work. */
static void test_credentials_every_mode(void **state)
{
    char errmsg[GERR_MSG_SIZE], sbx[256], spath[300], oname[64], kns[64];
    const char *const allow[] = {"tenant-a", NULL};
    struct {
        const char *gw, *user;
        enum driver_k8s_mode mode;
        const char *shared, *kns;
    } modes[] = {
        {"gw-op", "system:serviceaccount:gantry-op:gantry-op", DRIVER_K8S_OPERATOR, NULL, "tenant-a"},
        {"gw-one", "system:serviceaccount:gantry-one:gantry-one", DRIVER_K8S_SHARED, "sandboxes",
         "sandboxes"},
    };
    for (size_t i = 0; i < 2; i++) {
        struct driver *d = open_gw(modes[i].gw, modes[i].mode, modes[i].shared, allow);
        uint64_t e = conf_epoch();
        struct conf_spec cs;
        const char *ns = modes[i].mode == DRIVER_K8S_OPERATOR ? "tenant-a" : "team-c";
        conf_spec(&env, &cs, "creds");
        driver_k8s_object_name(modes[i].mode, ns, "creds", oname);
        sbx_path(sbx, sizeof sbx, modes[i].kns, oname);
        secret_path(spath, sizeof spath, modes[i].gw, modes[i].kns, cs.id);
        truncate_log();
        create_with_credentials(d, e, &cs, modes[i].gw, ns, modes[i].kns, sbx, spath);
        struct driver_credential rotated[] = {{"gh", "token", VAL_NEW, NULL}};
        assert_int_equal(driver_update_credentials(d, e, ns, cs.id, rotated, 1, errmsg), 0);
        json_t *sec = get_secret(spath);
        assert_int_equal(json_object_size(json_object_get(sec, "data")), 1);
        assert_string_equal(data_of(sec, "gh.token"), "c2stVkFMVUUtTkVX");
        json_decref(sec);
        assert_int_equal(driver_delete(d, e, ns, cs.id, errmsg), 0);
        assert_false(exists(spath));
        assert_int_equal(logged_user("DELETE", spath, modes[i].user), 1);
        assert_int_equal(logged_user("GET", spath, modes[i].user), 0);
        assert_int_equal(logged_status(403), 0);
        driver_free(d);
    }

    /* Managed mode without the guard: refused at the Secret, nothing made. */
    struct driver *b = open_gw("gw-b", DRIVER_K8S_MANAGED, NULL, NULL);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    conf_spec(&env, &cs, "creds");
    cs.spec.credentials = creds_two;
    cs.spec.n_credentials = 2;
    assert_int_equal(driver_ensure_namespace(b, e, "team-a", errmsg), 0);
    assert_int_equal(driver_create(b, e, &cs.spec, &s, errmsg), GERR_PERM);
    assert_non_null(strstr(errmsg, "secrets"));
    assert_null(strstr(errmsg, "VALUE"));
    assert_null(s.id);
    driver_k8s_managed_namespace("gw-b", "team-a", kns);
    sbx_path(sbx, sizeof sbx, kns, "creds");
    assert_false(exists(sbx));
    /* Deleting it (as the reconciler will) works all the same. */
    assert_int_equal(driver_delete(b, e, "team-a", cs.id, errmsg), 0);
    cs.spec.n_credentials = 0;
    assert_int_equal(driver_create(b, e, &cs.spec, &s, errmsg), 0);
    driver_sandbox_close(&s);
    assert_int_equal(driver_delete(b, e, "team-a", cs.id, errmsg), 0);
    driver_free(b);
}

/* Review F7: a create that fails after writing the credentials Secret (the Sandbox refused by an
 * admission webhook) in the namespace its creator chose (operator mode, driver_config "namespace")
 * leaves no Secret there: the create takes it back at once; when that fails too, the sandbox's
 * delete finds it there, also from an instance that never saw the create. */
static void test_credentials_failed_create_placed(void **state)
{
    char errmsg[GERR_MSG_SIZE], spath[300], home[300], sbx[256];
    const char *const allow[] = {"team-a=tenant-a", "team-b", NULL};
    struct driver *d = open_gw("gw-op", DRIVER_K8S_OPERATOR, NULL, allow);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    struct driver_kv cfg[] = {{"namespace", "team-b"}};
    make_namespace("tenant-a");
    make_namespace("team-b");
    conf_spec(&env, &cs, "refused");
    cs.spec.namespace = "team-a";
    cs.spec.driver_config = cfg;
    cs.spec.n_driver_config = 1;
    cs.spec.credentials = creds_two;
    cs.spec.n_credentials = 2;
    secret_path(spath, sizeof spath, "gw-op", "team-b", cs.id);
    secret_path(home, sizeof home, "gw-op", "tenant-a", cs.id);
    sbx_path(sbx, sizeof sbx, "team-b", "team-a--refused");
    static const char refuse[] =
        "{\"method\":\"POST\",\"path\":\"" SBX "/namespaces/team-b/sandboxes\",\"times\":1,\"status\":403,"
        "\"reason\":\"Forbidden\",\"message\":\"admission webhook \\\"policy.example\\\" denied the "
        "request\"}";

    /* The Sandbox is refused: the create's error, and no Secret left in team-b. */
    truncate_log();
    inject(refuse);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_PERM);
    assert_null(strstr(errmsg, "VALUE"));
    assert_null(s.id);
    assert_false(exists(sbx));
    assert_int_equal(logged("POST", "/api/v1/namespaces/team-b/secrets", NULL), 1); /* it was written */
    assert_false(exists(spath));

    /* Refused again, and the Secret's removal fails too: it stays until the delete, which (from an
     * instance that never saw the sandbox) removes it from team-b, where team-a does not map to. */
    inject(refuse);
    char secret[128], gone[400];
    k8s_credentials_secret_name("gw-op", cs.id, secret);
    snprintf(gone, sizeof gone,
             "{\"method\":\"DELETE\",\"path\":\"/api/v1/namespaces/team-b/secrets/%s\",\"times\":1,"
             "\"status\":409,\"reason\":\"Conflict\"}",
             secret);
    inject(gone);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_PERM);
    assert_true(exists(spath));
    struct driver *d2 = open_gw("gw-op", DRIVER_K8S_OPERATOR, NULL, allow);
    uint64_t e2 = conf_epoch();
    assert_int_equal(driver_delete(d2, e2, "team-a", cs.id, errmsg), 0);
    assert_false(exists(spath));
    assert_false(exists(home));
    driver_free(d2);
    e = conf_epoch(); /* d2 raised the fence */

    /* A failure after the Sandbox was made (the write that gives the Secret its owner refused):
     * the Secret its pod mounts stays, and the create's retry gives it its owner. */
    snprintf(gone, sizeof gone,
             "{\"method\":\"PUT\",\"path\":\"/api/v1/namespaces/team-b/secrets/%s\",\"times\":1,"
             "\"status\":409,\"reason\":\"Conflict\"}",
             secret);
    inject(gone);
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), GERR_ABORTED);
    assert_true(exists(sbx));
    assert_true(exists(spath));
    assert_int_equal(driver_create(d, e, &cs.spec, &s, errmsg), 0);
    driver_sandbox_close(&s);
    json_t *sec = get_secret(spath);
    assert_non_null(json_object_get(json_object_get(sec, "metadata"), "ownerReferences"));
    json_decref(sec);
    assert_int_equal(driver_delete(d, e, "team-a", cs.id, errmsg), 0);
    assert_false(exists(spath));
    driver_free(d);
    (void)state;
}

/* ---- Failures of the server or the connection */

static void test_auth_tls_and_server_errors(void **state)
{
    char errmsg[GERR_MSG_SIZE];
    uint64_t e = conf_epoch();
    struct driver_k8s_config badtok = {.token_file = bad_token};
    struct driver *d = open_cfg("gw-a", &badtok);
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "401"));
    driver_free(d);

    struct driver_k8s_config untrusted = {
        .server = server, .token_file = token, .gateway_id = "gw-a", .home_namespace = "gantry"};
    assert_int_equal(driver_k8s_new(&untrusted, &d, errmsg), 0); /* system CAs do not know ours */
    assert_int_equal(driver_ensure_namespace(d, e, env.ns, errmsg), GERR_UNAUTH);
    driver_free(d);

    struct driver_k8s_config down = {.server = "https://127.0.0.1:1",
                                     .token_file = token,
                                     .ca_file = cert,
                                     .gateway_id = "gw-a",
                                     .home_namespace = "gantry"};
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
    const char *const home_allow[] = {"team-a=gantry", NULL};
    const char *const bad_names[] = {"Not_A_Name", NULL};
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
        /* Sandboxes in the gateway's own namespace, where its Secrets are: refused. */
        {.server = server,
         .gateway_id = "gw",
         .mode = DRIVER_K8S_SHARED,
         .shared_namespace = "gantry",
         .home_namespace = "gantry"},
        {.server = server, .gateway_id = "gw", .mode = DRIVER_K8S_SHARED, .shared_namespace = "default"},
        {.server = server,
         .gateway_id = "gw",
         .mode = DRIVER_K8S_OPERATOR,
         .operator_namespaces = home_allow,
         .home_namespace = "gantry"},
        {.server = server, .gateway_id = "gw", .home_namespace = "Gantry"},
        {.server = server, .gateway_id = "gw", .service_accounts = bad_names},
        {.server = server, .gateway_id = "gw", .image_pull_secrets = bad_names},
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
        if (driver_k8s_new(&cfgs[i], &d, errmsg) != GERR_INVAL) {
            fail_msg("config %zu accepted", i);
        }
        assert_null(d);
    }
}

/* ---- Many sandboxes: API requests per create and per idle minute, measured */

/* Requests the API server has had from @user so far, per its own count. */
static long long server_requests(const char *srv, const char *user)
{
    char errmsg[GERR_MSG_SIZE];
    struct k8s_http *h;
    struct k8s_http_config cfg = {.server = srv, .token_file = token, .ca_file = cert, .max_body = 1 << 20};
    struct buf resp;
    long status = 0;
    assert_int_equal(k8s_http_new(&cfg, &h, errmsg), 0);
    buf_init(&resp);
    assert_int_equal(k8s_http_request(h, "GET", "/_fake/stats", NULL, &status, &resp, errmsg), 0);
    json_error_t jerr;
    json_t *j = json_loadb((const char *)resp.data, resp.len, 0, &jerr);
    long long n = json_integer_value(json_object_get(json_object_get(j, "requests"), user));
    json_decref(j);
    buf_close(&resp);
    k8s_http_free(h);
    return n;
}

/* What @user's requests in the request log @path were, by kind: [0] fence ConfigMap reads and
 * writes, [1] Sandbox lookups by label (LIST), [2] Sandbox creates (POST), [3] anything else. */
static void request_kinds(const char *path, const char *user, long long kinds[4])
{
    char errmsg[GERR_MSG_SIZE], *text;
    memset(kinds, 0, 4 * sizeof kinds[0]);
    assert_int_equal(file_read_all(path, 256 << 20, &text, NULL, errmsg), 0);
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        const char *m = json_string_value(json_object_get(j, "method"));
        const char *p = json_string_value(json_object_get(j, "path"));
        const char *q = json_string_value(json_object_get(j, "query"));
        const char *u = json_string_value(json_object_get(j, "user"));
        if (m != NULL && p != NULL && q != NULL && u != NULL && strcmp(u, user) == 0) {
            size_t pl = strlen(p);
            bool collection = pl >= 10 && strcmp(p + pl - 10, "/sandboxes") == 0;
            kinds[strstr(p, "/configmaps/") != NULL                                           ? 0
                  : collection && strcmp(m, "GET") == 0 && strstr(q, "labelSelector") != NULL ? 1
                  : collection && strcmp(m, "POST") == 0                                      ? 2
                                                                                              : 3]++;
        }
        json_decref(j);
    }
    mem_free(text);
}

/* One minute of an idle reconciler with @n READY sandboxes: a full resync every 30 s, each a get
 * of every sandbox and one list (docs/reconciler.md). */
static void idle_minute(struct driver *d, uint64_t e, struct conf_spec *cs, size_t n)
{
    char errmsg[GERR_MSG_SIZE];
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            struct driver_sandbox s;
            assert_int_equal(driver_get(d, e, "scale", cs[i].id, &s, errmsg), 0);
            driver_sandbox_close(&s);
        }
        struct driver_sandbox_list l;
        assert_int_equal(driver_list(d, e, NULL, &l, errmsg), 0);
        assert_int_equal(l.n, n);
        driver_sandbox_list_close(&l);
    }
}

/* The measurement behind docs/drivers.md ("Load on the API server"): n sandboxes created as the
 * reconciler creates them, then an idle minute with and without the list+watch cache. ctest runs
 * it with 100 sandboxes; GANTRY_K8S_SCALE=1000 build/tests/drivers/test_driver_k8s runs the
 * documented 1,000 (the other tests run too, about a minute in all). The assertions are per
 * sandbox, so they hold at any size. */
static void test_many_sandboxes(void **state)
{
    char errmsg[GERR_MSG_SIZE], out[320], err[320], reqs[320], line[128], srv[64];
    const char *scale = getenv("GANTRY_K8S_SCALE");
    const size_t n = scale != NULL && atoi(scale) > 0 ? (size_t)atoi(scale) : 100;
    const char *user = "system:serviceaccount:gantry:gantry";
    /* Its own API server with the API server's default paging (500 a page, as the driver asks). */
    char args_ident[N_GATEWAYS][400];
    const char *argv[32];
    int a = 0;
    argv[a++] = PYTHON;
    argv[a++] = FAKE_KUBE_APISERVER;
    argv[a++] = "--cert";
    argv[a++] = cert;
    argv[a++] = "--key";
    argv[a++] = key;
    argv[a++] = "--token-file";
    argv[a++] = token;
    snprintf(reqs, sizeof reqs, "%s/scale-requests.jsonl", dir);
    argv[a++] = "--log";
    argv[a++] = reqs;
    /* Bookmarks about once a minute, as a real API server sends them: a watch of a quiet scope
     * carries no byte for that long and must count as established from its headers. */
    argv[a++] = "--bookmark-ms";
    argv[a++] = "60000";
    for (size_t i = 0; i < N_GATEWAYS; i++) {
        snprintf(args_ident[i], sizeof args_ident[i], "%s=%s/%s.json", gateways[i].token, RBAC_DIR,
                 gateways[i].rbac);
        argv[a++] = "--identity";
        argv[a++] = args_ident[i];
    }
    argv[a++] = NULL;
    snprintf(out, sizeof out, "%s/scale.out", dir);
    snprintf(err, sizeof err, "%s/scale.err", dir);
    struct proc big;
    struct proc_spec spec = {.argv = argv, .stdout_path = out, .stderr_path = err};
    assert_int_equal(proc_spawn(&big, &spec, errmsg), 0);
    assert_int_equal(proc_wait_line(&big, "LISTENING ", 30000, line, sizeof line, errmsg), 0);
    snprintf(srv, sizeof srv, "https://127.0.0.1:%.8s", line + strlen("LISTENING "));
    char *saved = mem_strdup(server);
    snprintf(server, sizeof server, "%s", srv); /* raw() and open_cfg() talk to it now */
    assert_int_equal(raw("POST", "/api/v1/namespaces", "{\"metadata\":{\"name\":\"gantry\"}}", NULL), 201);
    assert_int_equal(raw("POST", "/api/v1/namespaces/gantry/secrets",
                         "{\"metadata\":{\"name\":\"regcred\"},\"type\":\"kubernetes.io/dockerconfigjson\","
                         "\"data\":{\".dockerconfigjson\":\"eyJhdXRocyI6e319\"}}",
                         NULL),
                     201);

    struct driver *d = open_managed(NULL);
    uint64_t e = conf_epoch();
    struct conf_spec *cs = mem_zalloc(n * sizeof *cs);
    char(*names)[24] = mem_zalloc(n * sizeof *names);
    assert_int_equal(driver_ensure_namespace(d, e, "scale", errmsg), 0);
    struct driver_sandbox_list first;
    assert_int_equal(driver_list(d, e, NULL, &first, errmsg), 0); /* the watch starts */
    driver_sandbox_list_close(&first);
    wait_live(d);
    assert_int_equal(truncate(reqs, 0), 0);
    long long r0 = server_requests(srv, user);
    uint64_t t0 = now_ms();
    for (size_t i = 0; i < n; i++) {
        struct driver_sandbox s;
        snprintf(names[i], sizeof names[i], "s%04zu", i);
        conf_spec(&env, &cs[i], names[i]);
        cs[i].spec.namespace = "scale";
        /* As the reconciler does: get (absent), ensure the namespace, create. */
        assert_int_equal(driver_get(d, e, "scale", cs[i].id, &s, errmsg), GERR_NOTFOUND);
        assert_int_equal(driver_ensure_namespace(d, e, "scale", errmsg), 0);
        if (driver_create(d, e, &cs[i].spec, &s, errmsg) != 0) {
            fail_msg("create %zu: %s", i, errmsg);
        }
        driver_sandbox_close(&s);
    }
    uint64_t t1 = now_ms();
    long long r1 = server_requests(srv, user), kinds[4];
    request_kinds(reqs, user, kinds);
    struct driver_k8s_stats st;
    uint64_t deadline = now_ms() + 30000;
    for (driver_k8s_stats(d, &st); st.cached < n || !st.live; driver_k8s_stats(d, &st)) {
        assert_true(now_ms() < deadline);
        nap_ms(50);
    }
    long long r2 = server_requests(srv, user);
    idle_minute(d, e, cs, n);
    long long r3 = server_requests(srv, user);
    driver_free(d);

    /* The same minute without the watch (every read asks the API server; sandboxes are read by
     * the name they were seen under), for comparison. */
    struct driver_k8s_config c = {.no_watch = true};
    d = open_cfg("gw-a", &c);
    struct driver_sandbox_list l;
    assert_int_equal(driver_list(d, e, NULL, &l, errmsg), 0); /* as a new holder's first resync */
    driver_sandbox_list_close(&l);
    long long r4 = server_requests(srv, user);
    idle_minute(d, e, cs, n);
    long long r5 = server_requests(srv, user);
    driver_free(d);

    printf("%zu sandboxes: %lld API requests for %zu creates (%.2f per sandbox: get, ensure_namespace, "
           "create as "
           "the reconciler calls them), %.1f s; idle minute (2 resyncs: %zu gets and a list each) with the "
           "list+watch cache: %lld requests (+1 watch per %u s); without it: %lld requests\n",
           n, r1 - r0, n, (double)(r1 - r0) / (double)n, (double)(t1 - t0) / 1000.0, n, r3 - r2, 300u,
           r5 - r4);
    printf(
        "per sandbox created: %.2f fence reads, %.2f lookups by label, %.2f creates, %.2f other requests\n",
        (double)kinds[0] / (double)n, (double)kinds[1] / (double)n, (double)kinds[2] / (double)n,
        (double)kinds[3] / (double)n);
    assert_true((double)(r1 - r0) / (double)n <= 5.0);
    assert_int_equal(r3 - r2, 0);
    assert_true(r5 - r4 >= (long long)(2 * n));

    mem_free(cs);
    mem_free(names);
    snprintf(server, sizeof server, "%s", saved);
    mem_free(saved);
    proc_stop(&big, 5000);
}

/* ---- Setup: certificate, tokens, the fake API server */

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

/* Start (or, with its state file, restart on the same port) the fake API server. */
static int start_apiserver(void)
{
    char errmsg[GERR_MSG_SIZE], line[128], out[320], err[320], portarg[16];
    char args_ident[N_GATEWAYS][400];
    const char *argv[40];
    int a = 0;
    snprintf(out, sizeof out, "%s/apiserver.out", dir);
    snprintf(err, sizeof err, "%s/apiserver.err", dir);
    snprintf(portarg, sizeof portarg, "%d", port);
    argv[a++] = PYTHON;
    argv[a++] = FAKE_KUBE_APISERVER;
    argv[a++] = "--cert";
    argv[a++] = cert;
    argv[a++] = "--key";
    argv[a++] = key;
    argv[a++] = "--token-file";
    argv[a++] = token;
    argv[a++] = "--log";
    argv[a++] = reqlog;
    argv[a++] = "--max-page";
    argv[a++] = "2";
    argv[a++] = "--state";
    argv[a++] = statefile;
    argv[a++] = "--port";
    argv[a++] = portarg;
    argv[a++] = "--bookmark-ms";
    argv[a++] = "500";
    for (size_t i = 0; i < N_GATEWAYS; i++) {
        snprintf(args_ident[i], sizeof args_ident[i], "%s=%s/%s.json", gateways[i].token, RBAC_DIR,
                 gateways[i].rbac);
        argv[a++] = "--identity";
        argv[a++] = args_ident[i];
    }
    argv[a++] = NULL;
    struct proc_spec spec = {.argv = argv, .stdout_path = out, .stderr_path = err};
    if (proc_spawn(&apiserver, &spec, errmsg) != 0 ||
        proc_wait_line(&apiserver, "LISTENING ", 30000, line, sizeof line, errmsg) != 0) {
        char tail[600];
        fprintf(stderr, "fake API server did not start: %s; stderr: %s\n", errmsg,
                proc_file_tail(err, 500, tail, sizeof tail));
        return -1;
    }
    port = atoi(line + strlen("LISTENING "));
    snprintf(server, sizeof server, "https://127.0.0.1:%d", port);
    return 0;
}

static int setup(void)
{
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
    for (size_t i = 0; i < N_GATEWAYS; i++) {
        char text[100];
        snprintf(gateways[i].token, sizeof gateways[i].token, "%s/token-%s", dir, gateways[i].release);
        snprintf(text, sizeof text, "sa-token-%s\n", gateways[i].release);
        write_text(gateways[i].token, text);
    }
    if (start_apiserver() != 0) {
        return -1;
    }
    /* What the Helm releases made: their namespaces and gw-a's image pull secret. */
    for (size_t i = 0; i < N_GATEWAYS; i++) {
        char body[200];
        snprintf(body, sizeof body, "{\"metadata\":{\"name\":\"%s\"}}", gateways[i].release);
        if (raw("POST", "/api/v1/namespaces", body, NULL) != 201) {
            return -1;
        }
    }
    if (raw("POST", "/api/v1/namespaces/gantry/secrets",
            "{\"metadata\":{\"name\":\"regcred\"},\"type\":\"kubernetes.io/dockerconfigjson\","
            "\"data\":{\".dockerconfigjson\":\"eyJhdXRocyI6e319\"}}",
            NULL) != 201) {
        return -1;
    }
    /* What the cluster's operator made: the operator allowlist's namespace, the shared one. */
    make_namespace("tenant-a");
    make_namespace("sandboxes");
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
    snprintf(statefile, sizeof statefile, "%s/state.json", dir);
    if (setup() != 0) {
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_rbac_is_enforced),
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_stale_epoch),
        cmocka_unit_test(test_adoption),
        cmocka_unit_test(test_namespaces),
        cmocka_unit_test(test_config_keys),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_managed_namespace_labels),
        cmocka_unit_test(test_managed_namespace_brought_up_to_date),
        cmocka_unit_test(test_egress_relay_policy),
        cmocka_unit_test(test_operator_allowlist),
        cmocka_unit_test(test_operator_placement),
        cmocka_unit_test(test_claims),
        cmocka_unit_test(test_warm_pools),
        cmocka_unit_test(test_read_secret),
        cmocka_unit_test(test_shared_and_two_gateways),
        cmocka_unit_test(test_shared_names_that_read_the_same),
        cmocka_unit_test(test_two_gateways_managed),
        cmocka_unit_test(test_managed_name_collision_between_gateways),
        cmocka_unit_test(test_fence_conflict_then_success),
        cmocka_unit_test(test_fence_conflict_then_stale),
        cmocka_unit_test(test_delete_conflict_and_404),
        cmocka_unit_test(test_epoch_annotation_fences_delete),
        cmocka_unit_test(test_manifest_and_config),
        cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_credentials_collected_with_sandbox),
        cmocka_unit_test(test_credentials_every_mode),
        cmocka_unit_test(test_credentials_failed_create_placed),
        cmocka_unit_test(test_phase_from_sandbox_status),
        cmocka_unit_test(test_pending_pod),
        cmocka_unit_test(test_crd_not_installed),
        cmocka_unit_test(test_api_versions),
        cmocka_unit_test(test_throttling),
        cmocka_unit_test(test_throttled_call_does_not_block_others),
        cmocka_unit_test(test_namespace_terminating),
        cmocka_unit_test(test_reads_from_cache),
        cmocka_unit_test(test_watch_relists_after_410),
        cmocka_unit_test(test_watch_ending_at_once_backs_off),
        cmocka_unit_test(test_watch_list_410_backs_off),
        cmocka_unit_test(test_expired_continue_restarts_list),
        cmocka_unit_test(test_apiserver_restart_mid_create),
        cmocka_unit_test(test_auth_tls_and_server_errors),
        cmocka_unit_test(test_many_sandboxes),
    };
    if (getenv("GANTRY_TEST_FILTER") != NULL) { /* e.g. "test_throttl*": run only those */
        cmocka_set_test_filter(getenv("GANTRY_TEST_FILTER"));
    }
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
