/* The kubernetes driver's pure parts, without a server: decoders of API documents (Status,
 * Sandbox objects in every phase the agent-sandbox controller reports, lists with continue
 * tokens, malformed input), the names it derives, the
 * manifests it sends, and the two error translations (curl codes, HTTP statuses). Also the
 * process driver's on-disk decoders, which are as much outside input as an API response. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "drivers/k8s.h"
#include "drivers/k8s_cache.h"
#include "drivers/k8s_http.h"
#include "drivers/k8s_json.h"
#include "drivers/process.h"
#include "lib/mem.h"

#define ID "0f8fad5b-d9cb-469f-a165-70867728950e"

static char errmsg[GERR_MSG_SIZE];

static int sandbox_phase(const char *status_json, char *msg, size_t len)
{
    char doc[2048];
    struct k8s_sandbox p;
    snprintf(doc, sizeof doc,
             "{\"apiVersion\":\"agents.x-k8s.io/v1beta1"
             "\",\"kind\":\"Sandbox\",\"metadata\":{\"name\":\"team-a--web\","
             "\"namespace\":\"ns\",\"resourceVersion\":\"7\","
             "\"creationTimestamp\":\"2026-11-23T10:00:00Z\",\"labels\":{\"" K8S_LABEL_GATEWAY "\":\"gw\","
             "\"" K8S_LABEL_SANDBOX "\":\"" ID "\"},\"annotations\":{\"" K8S_ANN_EPOCH "\":\"42\"}},"
             "\"status\":%s}",
             status_json);
    assert_int_equal(k8s_sandbox_decode(doc, strlen(doc), &p, errmsg), 0);
    assert_int_equal(p.meta.epoch, 42);
    assert_int_equal(p.meta.created_at_ms, 1795428000000ull);
    assert_string_equal(p.meta.gateway_id, "gw");
    int phase = (int)p.phase;
    snprintf(msg, len, "%s", p.message);
    k8s_sandbox_close(&p);
    return phase;
}

#define READY(st, reason, msg)                                                                               \
    "{\"conditions\":[{\"type\":\"Ready\",\"status\":\"" st "\",\"reason\":\"" reason                        \
    "\",\"message\":\"" msg "\"}]}"

static void test_sandbox_phases(void **state)
{
    char msg[300];
    /* Not yet seen by the controller. */
    assert_int_equal(sandbox_phase("{}", msg, sizeof msg), DRIVER_PHASE_PROVISIONING);
    assert_non_null(strstr(msg, "controller"));
    assert_int_equal(sandbox_phase(READY("False", "DependenciesNotReady", "Pod exists with phase: Pending"),
                                   msg, sizeof msg),
                     DRIVER_PHASE_PROVISIONING);
    assert_string_equal(msg, "DependenciesNotReady: Pod exists with phase: Pending");
    /* The controller retries its own errors: still provisioning, the message says why. */
    assert_int_equal(sandbox_phase(READY("False", "ReconcilerError", "Error seen: quota"), msg, sizeof msg),
                     DRIVER_PHASE_PROVISIONING);
    assert_string_equal(msg, "ReconcilerError: Error seen: quota");
    assert_int_equal(sandbox_phase(READY("True", "DependenciesReady", "Pod is Ready"), msg, sizeof msg),
                     DRIVER_PHASE_READY);
    assert_string_equal(msg, "");
    assert_int_equal(sandbox_phase(READY("False", "SandboxExpired", "expired"), msg, sizeof msg),
                     DRIVER_PHASE_STOPPED);
    assert_int_equal(
        sandbox_phase(READY("False", "SandboxSuspended", "Sandbox is suspended"), msg, sizeof msg),
        DRIVER_PHASE_STOPPED);
    assert_int_equal(sandbox_phase(READY("False", "PodFailed", "Pod failed"), msg, sizeof msg),
                     DRIVER_PHASE_ERROR);
    assert_int_equal(sandbox_phase(READY("False", "MultiplePods", "2 pods"), msg, sizeof msg),
                     DRIVER_PHASE_ERROR);
    assert_int_equal(sandbox_phase(READY("Unknown", "Whatever", ""), msg, sizeof msg), DRIVER_PHASE_UNKNOWN);
    assert_string_equal(msg, "Whatever");
    /* Finished decides over Ready. */
    assert_int_equal(
        sandbox_phase(
            "{\"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"PodSucceeded\"},"
            "{\"type\":\"Finished\",\"status\":\"True\",\"reason\":\"PodSucceeded\",\"message\":"
            "\"Pod completed successfully\"}]}",
            msg, sizeof msg),
        DRIVER_PHASE_STOPPED);
    assert_string_equal(msg, "PodSucceeded: Pod completed successfully");
    assert_int_equal(
        sandbox_phase("{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"},{\"type\":\"Finished\","
                      "\"status\":\"True\",\"reason\":\"PodFailed\",\"message\":\"Pod failed\"}]}",
                      msg, sizeof msg),
        DRIVER_PHASE_ERROR);
    assert_string_equal(msg, "PodFailed: Pod failed");
    /* Wrong member types are ignored, not trusted. */
    assert_int_equal(
        sandbox_phase("{\"conditions\":[{\"type\":\"Ready\",\"status\":true}]}", msg, sizeof msg),
        DRIVER_PHASE_PROVISIONING);
    assert_int_equal(sandbox_phase("{\"conditions\":{\"type\":\"Ready\"}}", msg, sizeof msg),
                     DRIVER_PHASE_PROVISIONING);
    /* Control characters from the server never reach a message. */
    sandbox_phase(READY("False", "X", "a\\u001b[31mb\\n"), msg, sizeof msg);
    assert_string_equal(msg, "X: a?[31mb?");
}

static void test_sandbox_deleting_and_malformed(void **state)
{
    struct k8s_sandbox p;
    const char *del = "{\"metadata\":{\"name\":\"p\",\"resourceVersion\":\"1\",\"deletionTimestamp\":"
                      "\"2026-11-23T10:00:00Z\"},\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":"
                      "\"True\"}]}}";
    assert_int_equal(k8s_sandbox_decode(del, strlen(del), &p, errmsg), 0);
    assert_int_equal(p.phase, DRIVER_PHASE_DELETING);
    assert_true(p.meta.deleting);
    assert_null(p.meta.gateway_id);
    assert_int_equal(p.meta.epoch, 0);
    k8s_sandbox_close(&p);

    const char *bad[] = {
        "",
        "[]",
        "{\"metadata\":{}}",
        "{\"metadata\":{\"name\":\"p\"}}",
        "{\"metadata\":{\"name\":\"p\",\"resourceVersion\":\"1\",\"labels\":[]}}",
        "{\"metadata\":{\"name\":\"p\",\"name\":\"q\",\"resourceVersion\":\"1\"}}",
        "{\"metadata\":{\"name\":\"p\\u0000q\",\"resourceVersion\":\"1\"}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (k8s_sandbox_decode(bad[i], strlen(bad[i]), &p, errmsg) != GERR_PROTO) {
            fail_msg("accepted %s", bad[i]);
        }
        assert_null(p.meta.name);
    }
    /* A malformed epoch annotation is no epoch, not an error. */
    const char *odd =
        "{\"metadata\":{\"name\":\"p\",\"resourceVersion\":\"1\",\"annotations\":{\"" K8S_ANN_EPOCH
        "\":\"-5\"}}}";
    assert_int_equal(k8s_sandbox_decode(odd, strlen(odd), &p, errmsg), 0);
    assert_int_equal(p.meta.epoch, 0);
    k8s_sandbox_close(&p);
}

static void test_sandbox_list(void **state)
{
    struct k8s_sandbox_list l;
    const char *doc = "{\"kind\":\"SandboxList\",\"metadata\":{\"continue\":\"tok==\"},\"items\":["
                      "{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"1\"}},"
                      "{\"metadata\":{\"name\":\"b\",\"resourceVersion\":\"2\"}}]}";
    assert_int_equal(k8s_sandbox_list_decode(doc, strlen(doc), &l, errmsg), 0);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[1].meta.name, "b");
    assert_string_equal(l.next, "tok==");
    k8s_sandbox_list_close(&l);
    const char *empty = "{\"kind\":\"SandboxList\",\"metadata\":{\"continue\":\"\"},\"items\":null}";
    assert_int_equal(k8s_sandbox_list_decode(empty, strlen(empty), &l, errmsg), 0);
    assert_int_equal(l.n, 0);
    assert_null(l.next);
    k8s_sandbox_list_close(&l);
    const char *bad = "{\"items\":[{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"1\"}},{}]}";
    assert_int_equal(k8s_sandbox_list_decode(bad, strlen(bad), &l, errmsg), GERR_PROTO);
    assert_int_equal(l.n, 0);
    assert_null(l.items);
}

static void test_status(void **state)
{
    struct k8s_status st;
    const char *doc =
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"message\":\"pods \\\"x\\\" "
        "already exists\",\"reason\":\"AlreadyExists\",\"code\":409}";
    assert_int_equal(k8s_status_decode(doc, strlen(doc), &st), 0);
    assert_int_equal(st.code, 409);
    assert_string_equal(st.reason, "AlreadyExists");
    assert_string_equal(st.message, "pods \"x\" already exists");
    assert_string_equal(st.details_kind, "");
    const char *nsdoc =
        "{\"kind\":\"Status\",\"reason\":\"NotFound\",\"code\":404,\"details\":{\"name\":\"x\","
        "\"kind\":\"namespaces\"}}";
    assert_int_equal(k8s_status_decode(nsdoc, strlen(nsdoc), &st), 0);
    assert_string_equal(st.details_kind, "namespaces");
    assert_int_equal(k8s_status_decode("{\"kind\":\"Pod\"}", 14, &st), GERR_PROTO);
    assert_int_equal(k8s_status_decode("<html>", 6, &st), GERR_PROTO);
    assert_string_equal(st.reason, "");
}

static void test_names(void **state)
{
    char out[64], other[64];
    /* Managed mode: the Kubernetes namespace is the gantry namespace's alone. */
    driver_k8s_object_name(DRIVER_K8S_MANAGED, "team-a", "web", out);
    assert_string_equal(out, "web");
    driver_k8s_object_name(DRIVER_K8S_SHARED, "team-a", "web", out);
    assert_string_equal(out, "team-a--web");
    driver_k8s_object_name(DRIVER_K8S_OPERATOR, "team-a", "web", out);
    assert_string_equal(out, "team-a--web");
    /* Too long: cut to 54, a hash of the whole keeps near misses apart. */
    driver_k8s_object_name(DRIVER_K8S_SHARED, "a-namespace-name-that-is-quite-long-too",
                           "and-a-sandbox-name-that-is-long-as-well", out);
    assert_int_equal(strlen(out), 63);
    assert_true(driver_is_dns_label(out));
    driver_k8s_object_name(DRIVER_K8S_SHARED, "a-namespace-name-that-is-quite-long-too",
                           "and-a-sandbox-name-that-is-long-as-wel0", other);
    assert_string_not_equal(out, other);
    assert_int_equal(strncmp(out, other, 54), 0);
    /* The name a sandbox steps aside to: per gateway and sandbox id. */
    driver_k8s_fallback_name("team-a--web", "gw-a", ID, out);
    assert_true(driver_is_dns_label(out));
    assert_int_equal(strncmp(out, "team-a--web-", 12), 0);
    assert_int_equal(strlen(out), 12 + 8);
    driver_k8s_fallback_name("team-a--web", "gw-b", ID, other);
    assert_string_not_equal(out, other);
    driver_k8s_fallback_name("a-namespace-name-that-is-quite-long-too--and-a-sandbox-nam", "gw-a", ID, out);
    assert_int_equal(strlen(out), 63);
    assert_true(driver_is_dns_label(out));

    driver_k8s_managed_namespace("gw-a", "team-a", out);
    assert_string_equal(out, "openshell-gw-a-team-a");
    driver_k8s_managed_namespace("a-gateway-id-of-forty-bytes-exactly-0001",
                                 "a-namespace-name-that-is-quite-long-too", out);
    assert_true(strlen(out) <= 63);
    assert_true(driver_is_dns_label(out));
    driver_k8s_managed_namespace("a-gateway-id-of-forty-bytes-exactly-0001",
                                 "a-namespace-name-that-is-quite-long-to0", other);
    assert_string_not_equal(out, other);
}

static void test_manifests(void **state)
{
    const char *const cmd[] = {"python3", "-m", "http.server"};
    struct driver_kv env[] = {{"A", "1"}};
    struct driver_kv cfg[] = {{"resources", "{\"limits\":{\"nvidia.com/gpu\":\"4\"}}"}};
    struct driver_sandbox_spec spec = {.id = ID,
                                       .namespace = "team-a",
                                       .name = "web",
                                       .owner = "user:bob",
                                       .image = "python:3.12",
                                       .command = cmd,
                                       .n_command = 3,
                                       .env = env,
                                       .n_env = 1,
                                       .gpu_count = 1,
                                       .lifetime_s = 60};
    const char *const pulls[] = {"regcred", NULL};
    struct k8s_sandbox_params p = {.spec = &spec,
                                   .api_version = "agents.x-k8s.io/v1beta1",
                                   .gateway_id = "gw",
                                   .image_pull_secrets = pulls,
                                   .k8s_namespace = "openshell-gw-team-a",
                                   .object_name = "web",
                                   .epoch = 9,
                                   .gpu_resource = "nvidia.com/gpu",
                                   .now_ms = 1795428000000ull};
    char *doc;
    json_error_t jerr;
    assert_int_equal(k8s_sandbox_manifest(&p, &doc, errmsg), 0);
    json_t *j = json_loads(doc, 0, &jerr);
    mem_free(doc);
    assert_string_equal(json_string_value(json_object_get(j, "apiVersion")), "agents.x-k8s.io/v1beta1");
    assert_string_equal(json_string_value(json_object_get(j, "kind")), "Sandbox");
    json_t *md = json_object_get(j, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "name")), "web");
    assert_string_equal(json_string_value(json_object_get(md, "namespace")), "openshell-gw-team-a");
    json_t *spec_j = json_object_get(j, "spec");
    json_t *tmpl = json_object_get(spec_j, "podTemplate");
    json_t *pod_spec = json_object_get(tmpl, "spec");
    json_t *c = json_array_get(json_object_get(pod_spec, "containers"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(md, "annotations"), K8S_ANN_EPOCH)),
                        "9");
    assert_string_equal(json_string_value(json_object_get(json_object_get(md, "labels"), K8S_LABEL_MANAGED)),
                        "gantry");
    /* The pod carries the gateway's labels too. */
    json_t *pod_labels = json_object_get(json_object_get(tmpl, "metadata"), "labels");
    assert_string_equal(json_string_value(json_object_get(pod_labels, K8S_LABEL_GATEWAY)), "gw");
    assert_string_equal(json_string_value(json_object_get(pod_labels, K8S_LABEL_SANDBOX)), ID);
    assert_true(json_is_false(json_object_get(pod_spec, "automountServiceAccountToken")));
    /* Upstream OpenShell's labels, so its tooling and selectors recognise the sandbox. */
    json_t *labels = json_object_get(md, "labels");
    assert_string_equal(json_string_value(json_object_get(labels, OS_LABEL_MANAGED)), "openshell");
    assert_string_equal(json_string_value(json_object_get(labels, OS_LABEL_GATEWAY)), "gw");
    assert_string_equal(json_string_value(json_object_get(labels, OS_LABEL_SANDBOX)), ID);
    assert_string_equal(json_string_value(json_object_get(labels, OS_LABEL_NAME)), "web");
    assert_string_equal(json_string_value(json_object_get(labels, OS_LABEL_NAMESPACE)), "team-a");
    assert_string_equal(json_string_value(json_object_get(pod_labels, OS_LABEL_SANDBOX)), ID);
    /* The restricted Pod Security Standard by default. */
    json_t *psc = json_object_get(pod_spec, "securityContext");
    assert_true(json_is_true(json_object_get(psc, "runAsNonRoot")));
    assert_int_equal(json_integer_value(json_object_get(psc, "runAsUser")), 65534);
    assert_string_equal(json_string_value(json_object_get(json_object_get(psc, "seccompProfile"), "type")),
                        "RuntimeDefault");
    json_t *csc = json_object_get(c, "securityContext");
    assert_true(json_is_false(json_object_get(csc, "allowPrivilegeEscalation")));
    assert_true(json_is_false(json_object_get(csc, "privileged")));
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(json_object_get(csc, "capabilities"), "drop"), 0)),
        "ALL");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(pod_spec, "imagePullSecrets"), 0), "name")),
                        "regcred");
    assert_string_equal(json_string_value(json_object_get(pod_spec, "restartPolicy")), "Never");
    /* The lifetime is the controller's shutdownTime: 2026-11-23T10:00:00Z + 60 s. */
    assert_string_equal(json_string_value(json_object_get(spec_j, "shutdownTime")), "2026-11-23T10:01:00Z");
    assert_string_equal(json_string_value(json_object_get(spec_j, "shutdownPolicy")), "Retain");
    json_t *limits = json_object_get(json_object_get(c, "resources"), "limits");
    assert_string_equal(json_string_value(json_object_get(limits, "nvidia.com/gpu")), "1");
    json_decref(j);

    /* driver_config resources may set the GPU limit itself; gpu_count does not override it. */
    spec.driver_config = cfg;
    spec.n_driver_config = 1;
    spec.lifetime_s = 0;
    assert_int_equal(k8s_sandbox_manifest(&p, &doc, errmsg), 0);
    j = json_loads(doc, 0, &jerr);
    mem_free(doc);
    spec_j = json_object_get(j, "spec");
    assert_null(json_object_get(spec_j, "shutdownTime")); /* no lifetime: until deleted */
    c = json_array_get(
        json_object_get(json_object_get(json_object_get(spec_j, "podTemplate"), "spec"), "containers"), 0);
    limits = json_object_get(json_object_get(c, "resources"), "limits");
    assert_string_equal(json_string_value(json_object_get(limits, "nvidia.com/gpu")), "4");
    json_decref(j);

    const char *const bad_utf8[] = {"sh", "\xff\xfe"};
    spec.command = bad_utf8;
    spec.n_command = 2;
    assert_int_equal(k8s_sandbox_manifest(&p, &doc, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "UTF-8"));

    /* Tenant labels under prefixes Kubernetes, the controller or Gantry give meaning to: refused. */
    spec.command = cmd;
    spec.n_command = 3;
    const char *const reserved[] = {"kubernetes.io/metadata.name",
                                    "app.kubernetes.io/name",
                                    "statefulset.kubernetes.io/pod-name",
                                    "node.k8s.io/x",
                                    "k8s.io/x",
                                    "agents.x-k8s.io/pod-name",
                                    "gantry.dev/name",
                                    "openshell.ai/sandbox-id",
                                    "a.gantry.dev/x",
                                    "sub.openshell.ai/y"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        struct driver_kv l[] = {{reserved[i], "v"}};
        spec.labels = l;
        spec.n_labels = 1;
        assert_int_equal(k8s_check_labels(&spec, errmsg), GERR_INVAL);
        assert_non_null(strstr(errmsg, reserved[i]));
        assert_int_equal(k8s_sandbox_manifest(&p, &doc, errmsg), GERR_INVAL);
        assert_null(doc);
    }
    const char *const fine[] = {"team", "example.com/team", "notkubernetes.io/x",
                                "kubernetes.io.example.com/x"};
    for (size_t i = 0; i < sizeof fine / sizeof fine[0]; i++) {
        struct driver_kv l[] = {{fine[i], "v"}};
        spec.labels = l;
        spec.n_labels = 1;
        if (k8s_check_labels(&spec, errmsg) != 0) {
            fail_msg("refused %s: %s", fine[i], errmsg);
        }
    }
    spec.n_labels = 0;
    /* An object over K8S_MAX_OBJECT is refused, naming its size. */
    static char big[DRIVER_ENV_VAL_MAX];
    memset(big, 'x', sizeof big - 1);
    struct driver_kv bigenv[40];
    char names[40][8];
    for (int i = 0; i < 40; i++) {
        snprintf(names[i], sizeof names[i], "V%d", i);
        bigenv[i] = (struct driver_kv){names[i], big};
    }
    spec.env = bigenv;
    spec.n_env = 40;
    assert_int_equal(k8s_sandbox_manifest(&p, &doc, errmsg), GERR_INVAL);
    assert_null(doc);
    assert_non_null(strstr(errmsg, "bytes"));
    spec.n_env = 20; /* 640 KiB: fine */
    assert_int_equal(k8s_sandbox_manifest(&p, &doc, errmsg), 0);
    mem_free(doc);
    spec.env = env;
    spec.n_env = 1;

    /* Managed namespaces enforce the restricted Pod Security Standard and deny all traffic. */
    doc = k8s_namespace_manifest("openshell-gw-team-a", "gw", "team-a", 3);
    j = json_loads(doc, 0, &jerr);
    mem_free(doc);
    labels = json_object_get(json_object_get(j, "metadata"), "labels");
    assert_string_equal(json_string_value(json_object_get(labels, "pod-security.kubernetes.io/enforce")),
                        "restricted");
    assert_string_equal(json_string_value(json_object_get(labels, OS_LABEL_GATEWAY)), "gw");
    json_decref(j);
    /* A namespace an older Gantry made (its own labels only) gets a merge patch of the missing
     * ones, with its resourceVersion; an operator's labels are not in the patch; an up-to-date one
     * gets none. */
    const char *legacy =
        "{\"metadata\":{\"name\":\"openshell-gw-team-a\",\"resourceVersion\":\"77\","
        "\"labels\":{\"gantry.dev/gateway-id\":\"gw\",\"gantry.dev/managed-by\":\"gantry\","
        "\"gantry.dev/namespace\":\"team-a\",\"pod-security.kubernetes.io/enforce\":\"baseline\","
        "\"team\":\"x\"}}}";
    assert_int_equal(k8s_namespace_patch(legacy, strlen(legacy), "gw", "team-a", &doc, errmsg), 0);
    assert_non_null(doc);
    j = json_loads(doc, 0, &jerr);
    mem_free(doc);
    md = json_object_get(j, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "resourceVersion")), "77");
    labels = json_object_get(md, "labels");
    assert_string_equal(json_string_value(json_object_get(labels, "pod-security.kubernetes.io/enforce")),
                        "restricted"); /* a different value is set back */
    assert_string_equal(json_string_value(json_object_get(labels, "pod-security.kubernetes.io/warn")),
                        "restricted");
    assert_string_equal(json_string_value(json_object_get(labels, OS_LABEL_GATEWAY)), "gw");
    assert_null(json_object_get(labels, K8S_LABEL_GATEWAY)); /* already right: not sent */
    assert_null(json_object_get(labels, "team"));
    assert_int_equal(json_object_size(j), 1); /* metadata only */
    json_decref(j);
    doc = k8s_namespace_manifest("openshell-gw-team-a", "gw", "team-a", 3);
    j = json_loads(doc, 0, &jerr);
    mem_free(doc);
    json_object_set_new(json_object_get(j, "metadata"), "resourceVersion", json_string("78"));
    char *current = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    assert_int_equal(k8s_namespace_patch(current, strlen(current), "gw", "team-a", &doc, errmsg), 0);
    assert_null(doc);
    free(current);
    const char *no_rv = "{\"metadata\":{\"name\":\"x\"}}";
    assert_int_equal(k8s_namespace_patch(no_rv, strlen(no_rv), "gw", "team-a", &doc, errmsg), GERR_PROTO);
    assert_null(doc);
    assert_int_equal(k8s_namespace_patch("[1]", 3, "gw", "team-a", &doc, errmsg), GERR_PROTO);

    doc = k8s_network_policy_manifest("openshell-gw-team-a", "gw");
    j = json_loads(doc, 0, &jerr);
    mem_free(doc);
    json_t *np = json_object_get(j, "spec");
    assert_int_equal(json_object_size(json_object_get(np, "podSelector")), 0);
    assert_int_equal(json_array_size(json_object_get(np, "policyTypes")), 2);
    assert_null(json_object_get(np, "ingress"));
    assert_null(json_object_get(np, "egress"));
    json_decref(j);

    doc = k8s_fence_manifest("gantry-fence-gw", "default", "gw", 12, "34");
    j = json_loads(doc, 0, &jerr);
    mem_free(doc);
    md = json_object_get(j, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "resourceVersion")), "34");
    assert_string_equal(json_string_value(json_object_get(json_object_get(md, "annotations"), K8S_ANN_EPOCH)),
                        "12");
    json_decref(j);
    doc = k8s_delete_options("77");
    assert_non_null(strstr(doc, "\"preconditions\":{\"resourceVersion\":\"77\"}"));
    mem_free(doc);
}

static void test_discovery_and_watch_events(void **state)
{
    unsigned served;
    const char *both =
        "{\"kind\":\"APIGroup\",\"apiVersion\":\"v1\",\"name\":\"agents.x-k8s.io\",\"versions\":["
        "{\"groupVersion\":\"agents.x-k8s.io/v1beta1\",\"version\":\"v1beta1\"},"
        "{\"groupVersion\":\"agents.x-k8s.io/v1alpha1\",\"version\":\"v1alpha1\"},"
        "{\"groupVersion\":\"agents.x-k8s.io/v2\",\"version\":\"v2\"}]}";
    assert_int_equal(k8s_api_group_decode(both, strlen(both), &served, errmsg), 0);
    assert_int_equal(served, K8S_SERVES_V1BETA1 | K8S_SERVES_V1ALPHA1);
    const char *alpha =
        "{\"kind\":\"APIGroup\",\"name\":\"agents.x-k8s.io\",\"versions\":[{\"version\":\"v1alpha1\"}]}";
    assert_int_equal(k8s_api_group_decode(alpha, strlen(alpha), &served, errmsg), 0);
    assert_int_equal(served, K8S_SERVES_V1ALPHA1);
    const char *other = "{\"kind\":\"APIGroup\",\"name\":\"apps\",\"versions\":[{\"version\":\"v1beta1\"}]}";
    assert_int_equal(k8s_api_group_decode(other, strlen(other), &served, errmsg), GERR_PROTO);
    assert_int_equal(served, 0);

    struct k8s_watch_event e;
    const char *added =
        "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Sandbox\",\"metadata\":{\"name\":\"web\","
        "\"namespace\":\"ns\",\"resourceVersion\":\"42\",\"labels\":{\"" K8S_LABEL_GATEWAY
        "\":\"gw\",\"" K8S_LABEL_SANDBOX "\":\"" ID "\",\"" K8S_LABEL_NAMESPACE "\":\"a\",\"" K8S_LABEL_NAME
        "\":\"web\"}},\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\"}]}}}";
    assert_int_equal(k8s_watch_event_decode(added, strlen(added), &e, errmsg), 0);
    assert_int_equal(e.type, K8S_WATCH_ADDED);
    assert_int_equal(e.object.phase, DRIVER_PHASE_READY);
    assert_string_equal(e.resource_version, "42");
    assert_true(k8s_sandbox_belongs(&e.object.meta, "gw"));
    assert_false(k8s_sandbox_belongs(&e.object.meta, "gw2"));
    k8s_watch_event_close(&e);
    const char *bookmark =
        "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Sandbox\",\"metadata\":{\"resourceVersion\":\"77\"}}}";
    assert_int_equal(k8s_watch_event_decode(bookmark, strlen(bookmark), &e, errmsg), 0);
    assert_int_equal(e.type, K8S_WATCH_BOOKMARK);
    assert_string_equal(e.resource_version, "77");
    k8s_watch_event_close(&e);
    const char *gone =
        "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,\"reason\":\"Expired\","
        "\"message\":\"too old resource version: 5 (90)\"}}";
    assert_int_equal(k8s_watch_event_decode(gone, strlen(gone), &e, errmsg), 0);
    assert_int_equal(e.type, K8S_WATCH_ERROR);
    assert_int_equal(e.status.code, 410);
    k8s_watch_event_close(&e);
    const char *bad[] = {"{\"type\":\"ADDED\"}",
                         "{\"type\":\"UPSERTED\",\"object\":{}}",
                         "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{}}}",
                         "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Pod\"}}",
                         "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"x\"}}}",
                         "[]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (k8s_watch_event_decode(bad[i], strlen(bad[i]), &e, errmsg) != GERR_PROTO) {
            fail_msg("accepted %s", bad[i]);
        }
        assert_int_equal(e.type, 0);
        assert_null(e.resource_version);
    }
    /* A list's resourceVersion is where a watch starts. */
    struct k8s_sandbox_list l;
    const char *list = "{\"kind\":\"SandboxList\",\"metadata\":{\"resourceVersion\":\"901\"},\"items\":[]}";
    assert_int_equal(k8s_sandbox_list_decode(list, strlen(list), &l, errmsg), 0);
    assert_string_equal(l.resource_version, "901");
    k8s_sandbox_list_close(&l);
}

static void test_status_details(void **state)
{
    struct k8s_status st;
    const char *term =
        "{\"kind\":\"Status\",\"code\":403,\"reason\":\"Forbidden\",\"details\":{\"name\":\"ns\","
        "\"kind\":\"namespaces\",\"causes\":[{\"type\":\"NamespaceTerminating\"}]}}";
    assert_int_equal(k8s_status_decode(term, strlen(term), &st), 0);
    assert_true(st.ns_terminating);
    const char *rbac =
        "{\"kind\":\"Status\",\"code\":403,\"reason\":\"Forbidden\",\"details\":{\"kind\":\"sandboxes\"}}";
    assert_int_equal(k8s_status_decode(rbac, strlen(rbac), &st), 0);
    assert_false(st.ns_terminating);
    const char *slow = "{\"kind\":\"Status\",\"code\":429,\"reason\":\"TooManyRequests\",\"details\":{"
                       "\"retryAfterSeconds\":3}}";
    assert_int_equal(k8s_status_decode(slow, strlen(slow), &st), 0);
    assert_int_equal(st.retry_after_s, 3);
    const char *silly = "{\"kind\":\"Status\",\"details\":{\"retryAfterSeconds\":-1,\"causes\":\"x\"}}";
    assert_int_equal(k8s_status_decode(silly, strlen(silly), &st), 0);
    assert_int_equal(st.retry_after_s, 0);
}

static void test_secret_copy(void **state)
{
    char *doc;
    json_error_t jerr;
    const char *sec = "{\"kind\":\"Secret\",\"metadata\":{\"name\":\"regcred\",\"namespace\":\"gantry\","
                      "\"resourceVersion\":\"5\",\"uid\":\"u\"},\"type\":\"kubernetes.io/dockerconfigjson\","
                      "\"data\":{\".dockerconfigjson\":\"e30=\"}}";
    assert_int_equal(k8s_secret_copy(sec, strlen(sec), "openshell-gw-a", "gw", &doc, errmsg), 0);
    json_t *j = json_loads(doc, 0, &jerr);
    mem_free(doc);
    json_t *md = json_object_get(j, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "namespace")), "openshell-gw-a");
    assert_null(json_object_get(md, "uid"));
    assert_null(json_object_get(md, "resourceVersion"));
    assert_string_equal(json_string_value(json_object_get(json_object_get(md, "labels"), K8S_LABEL_GATEWAY)),
                        "gw");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "data"), ".dockerconfigjson")),
                        "e30=");
    json_decref(j);
    /* Anything but an image pull secret is never spread. */
    const char *opaque =
        "{\"kind\":\"Secret\",\"metadata\":{\"name\":\"gantry-ca\"},\"type\":\"kubernetes.io/tls\","
        "\"data\":{\"tls.key\":\"eA==\"}}";
    assert_int_equal(k8s_secret_copy(opaque, strlen(opaque), "x", "gw", &doc, errmsg), GERR_PERM);
    assert_null(doc);
    assert_non_null(strstr(errmsg, "kubernetes.io/tls"));
    const char *bad[] = {
        "{}", "{\"metadata\":{\"name\":\"x\"},\"type\":\"kubernetes.io/dockercfg\",\"data\":{\"k\":1}}",
        "{\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"x\"},\"data\":{}}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(k8s_secret_copy(bad[i], strlen(bad[i]), "x", "gw", &doc, errmsg), GERR_PROTO);
        assert_null(doc);
    }
}

/* The member @key of @obj's @a member's @b member (NULL-safe). */
static json_t *at(json_t *obj, const char *a, const char *b)
{
    return json_object_get(json_object_get(obj, a), b);
}

/* A sandbox with credentials: the pod refers to the Secret (volume, mount, fsGroup, env from
 * secretKeyRef) and the manifest holds no value; without credentials none of it is there. */
static void test_credentials_in_manifest(void **state)
{
    const char *const cmd[] = {"sleep", "infinity"};
    struct driver_kv env[] = {{"A", "1"}, {"GH_TOKEN", "shadowed"}};
    struct driver_credential creds[] = {{"openai", "api_key", "sk-SECRET-ONE", "OPENAI_API_KEY"},
                                        {"openai", "org", "org-SECRET-TWO", NULL},
                                        {"gh", "token.v2", "ghp-SECRET-THREE", "GH_TOKEN"}};
    struct driver_sandbox_spec spec = {.id = ID,
                                       .namespace = "team-a",
                                       .name = "web",
                                       .image = "busybox",
                                       .command = cmd,
                                       .n_command = 2,
                                       .env = env,
                                       .n_env = 2,
                                       .credentials = creds,
                                       .n_credentials = 3};
    char secret[128], *doc;
    json_error_t jerr;
    k8s_credentials_secret_name("gw", ID, secret);
    assert_string_equal(secret, "gantry-credentials-gw-" ID);
    assert_true(driver_is_dns_subdomain(secret));
    struct k8s_sandbox_params p = {.spec = &spec,
                                   .api_version = "agents.x-k8s.io/v1beta1",
                                   .gateway_id = "gw",
                                   .k8s_namespace = "openshell-gw-team-a",
                                   .object_name = "web",
                                   .epoch = 9,
                                   .gpu_resource = "nvidia.com/gpu",
                                   .now_ms = 1795428000000ull};
    /* The Secret's name is required. */
    assert_int_equal(k8s_sandbox_manifest(&p, &doc, errmsg), GERR_INVAL);
    assert_null(doc);
    p.credentials_secret = secret;
    assert_int_equal(k8s_sandbox_manifest(&p, &doc, errmsg), 0);
    assert_null(strstr(doc, "SECRET"));
    assert_null(strstr(doc, "shadowed"));
    json_t *j = json_loads(doc, 0, &jerr);
    mem_free(doc);
    assert_non_null(j);
    assert_string_equal(
        json_string_value(at(json_object_get(j, "metadata"), "annotations", K8S_ANN_CREDENTIALS)), secret);
    json_t *pod = at(json_object_get(j, "spec"), "podTemplate", "spec");
    assert_int_equal(json_integer_value(at(pod, "securityContext", "fsGroup")), 65534);
    assert_int_equal(json_integer_value(at(pod, "securityContext", "runAsUser")), 65534);
    json_t *vols = json_object_get(pod, "volumes");
    assert_int_equal(json_array_size(vols), 1);
    json_t *sv = json_object_get(json_array_get(vols, 0), "secret");
    assert_string_equal(json_string_value(json_object_get(json_array_get(vols, 0), "name")),
                        K8S_CREDENTIALS_VOLUME);
    assert_string_equal(json_string_value(json_object_get(sv, "secretName")), secret);
    assert_int_equal(json_integer_value(json_object_get(sv, "defaultMode")), 0440);
    assert_true(json_is_true(json_object_get(sv, "optional")));
    json_t *items = json_object_get(sv, "items");
    assert_int_equal(json_array_size(items), 3);
    const char *want[][2] = {
        {"openai.api_key", "openai/api_key"}, {"openai.org", "openai/org"}, {"gh.token.v2", "gh/token.v2"}};
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(json_string_value(json_object_get(json_array_get(items, i), "key")), want[i][0]);
        assert_string_equal(json_string_value(json_object_get(json_array_get(items, i), "path")), want[i][1]);
    }
    json_t *c = json_array_get(json_object_get(pod, "containers"), 0);
    json_t *mounts = json_object_get(c, "volumeMounts");
    assert_int_equal(json_array_size(mounts), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(mounts, 0), "mountPath")),
                        DRIVER_CREDENTIALS_DIR);
    assert_true(json_is_true(json_object_get(json_array_get(mounts, 0), "readOnly")));
    /* The spec's A stays; its GH_TOKEN gives way to the credential's; OPENAI_API_KEY is added. */
    json_t *ev = json_object_get(c, "env");
    assert_int_equal(json_array_size(ev), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 0), "name")), "A");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 1), "name")), "OPENAI_API_KEY");
    json_t *ref = at(json_array_get(ev, 1), "valueFrom", "secretKeyRef");
    assert_string_equal(json_string_value(json_object_get(ref, "name")), secret);
    assert_string_equal(json_string_value(json_object_get(ref, "key")), "openai.api_key");
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 2), "name")), "GH_TOKEN");
    ref = at(json_array_get(ev, 2), "valueFrom", "secretKeyRef");
    assert_string_equal(json_string_value(json_object_get(ref, "key")), "gh.token.v2");
    assert_null(json_object_get(json_array_get(ev, 2), "value"));
    json_decref(j);

    /* Without credentials: no volume, mount, fsGroup or annotation, and the spec's env as given. */
    spec.n_credentials = 0;
    assert_int_equal(k8s_sandbox_manifest(&p, &doc, errmsg), 0);
    j = json_loads(doc, 0, &jerr);
    mem_free(doc);
    pod = at(json_object_get(j, "spec"), "podTemplate", "spec");
    assert_null(json_object_get(pod, "volumes"));
    assert_null(at(pod, "securityContext", "fsGroup"));
    c = json_array_get(json_object_get(pod, "containers"), 0);
    assert_null(json_object_get(c, "volumeMounts"));
    assert_int_equal(json_array_size(json_object_get(c, "env")), 2);
    assert_null(at(json_object_get(j, "metadata"), "annotations", K8S_ANN_CREDENTIALS));
    json_decref(j);
}

/* The Secret itself: labels, type, base64 data under "<provider>.<key>", the owner; the size limit
 * and bad keys refused without the value in the message. Also the uid and the credentials
 * annotation as decoded from a Sandbox. */
static void test_credentials_secret(void **state)
{
    struct driver_credential creds[] = {{"openai", "api_key", "sk-SECRET", "OPENAI_API_KEY"},
                                        {"p", "one", "a", NULL},
                                        {"p", "two", "ab", NULL},
                                        {"p", "three", "abc", NULL},
                                        {"p", "utf8", "\xc3\xa9\x01", NULL}};
    struct k8s_owner owner = {.api_version = "agents.x-k8s.io/v1beta1", .name = "web", .uid = "uid-1"};
    struct k8s_credentials_params cp = {.name = "gantry-credentials-gw-" ID,
                                        .k8s_namespace = "openshell-gw-team-a",
                                        .gateway_id = "gw",
                                        .gantry_ns = "team-a",
                                        .sandbox_id = ID,
                                        .sandbox_name = "web",
                                        .owner = &owner,
                                        .creds = creds,
                                        .n = 5};
    char *doc;
    json_error_t jerr;
    assert_int_equal(k8s_credentials_secret(&cp, &doc, errmsg), 0);
    json_t *j = json_loads(doc, JSON_REJECT_DUPLICATES, &jerr);
    k8s_secret_free(doc);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "kind")), "Secret");
    assert_string_equal(json_string_value(json_object_get(j, "type")), "Opaque");
    json_t *md = json_object_get(j, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "name")), "gantry-credentials-gw-" ID);
    assert_string_equal(json_string_value(json_object_get(md, "namespace")), "openshell-gw-team-a");
    assert_null(json_object_get(md, "resourceVersion"));
    const char *labels[][2] = {{K8S_LABEL_GATEWAY, "gw"}, {K8S_LABEL_MANAGED, K8S_MANAGED_BY},
                               {K8S_LABEL_SANDBOX, ID},   {K8S_LABEL_NAMESPACE, "team-a"},
                               {K8S_LABEL_NAME, "web"},   {OS_LABEL_MANAGED, OS_MANAGED_BY},
                               {OS_LABEL_SANDBOX, ID},    {OS_LABEL_GATEWAY, "gw"}};
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++) {
        assert_string_equal(json_string_value(at(md, "labels", labels[i][0])), labels[i][1]);
    }
    json_t *ref = json_array_get(json_object_get(md, "ownerReferences"), 0);
    assert_int_equal(json_array_size(json_object_get(md, "ownerReferences")), 1);
    assert_string_equal(json_string_value(json_object_get(ref, "apiVersion")), "agents.x-k8s.io/v1beta1");
    assert_string_equal(json_string_value(json_object_get(ref, "kind")), "Sandbox");
    assert_string_equal(json_string_value(json_object_get(ref, "name")), "web");
    assert_string_equal(json_string_value(json_object_get(ref, "uid")), "uid-1");
    assert_true(json_is_false(json_object_get(ref, "blockOwnerDeletion")));
    json_t *data = json_object_get(j, "data");
    assert_int_equal(json_object_size(data), 5);
    assert_string_equal(json_string_value(json_object_get(data, "openai.api_key")), "c2stU0VDUkVU");
    assert_string_equal(json_string_value(json_object_get(data, "p.one")), "YQ==");
    assert_string_equal(json_string_value(json_object_get(data, "p.two")), "YWI=");
    assert_string_equal(json_string_value(json_object_get(data, "p.three")), "YWJj");
    assert_string_equal(json_string_value(json_object_get(data, "p.utf8")), "w6kB");
    json_decref(j);

    /* Made before the Sandbox: no owner yet. */
    cp.owner = NULL;
    cp.n = 1;
    assert_int_equal(k8s_credentials_secret(&cp, &doc, errmsg), 0);
    j = json_loads(doc, 0, &jerr);
    k8s_secret_free(doc);
    assert_null(at(j, "metadata", "ownerReferences"));
    json_decref(j);
    /* An empty set is an empty Secret (every key removed). */
    cp.n = 0;
    assert_int_equal(k8s_credentials_secret(&cp, &doc, errmsg), 0);
    j = json_loads(doc, 0, &jerr);
    k8s_secret_free(doc);
    assert_non_null(j);
    assert_int_equal(json_object_size(json_object_get(j, "data")), 0);
    json_decref(j);

    /* A key that is no Secret key, and more than a Secret holds: refused, no value in the message. */
    struct driver_credential bad = {"openai", "a/b", "sk-SECRET", NULL};
    cp.creds = &bad;
    cp.n = 1;
    assert_int_equal(k8s_credentials_secret(&cp, &doc, errmsg), GERR_INVAL);
    assert_null(doc);
    assert_non_null(strstr(errmsg, "openai/a/b"));
    assert_null(strstr(errmsg, "SECRET"));
    size_t n = K8S_SECRET_DATA_MAX / DRIVER_CREDENTIAL_VAL_MAX + 1;
    struct driver_credential *big = mem_zalloc(n * sizeof *big);
    char *value = mem_alloc(DRIVER_CREDENTIAL_VAL_MAX + 1), keys[80][16];
    memset(value, 'S', DRIVER_CREDENTIAL_VAL_MAX);
    value[DRIVER_CREDENTIAL_VAL_MAX] = '\0';
    assert_true(n < 80);
    for (size_t i = 0; i < n; i++) {
        snprintf(keys[i], sizeof keys[i], "k%zu", i);
        big[i] = (struct driver_credential){"p", keys[i], value, NULL};
    }
    cp.creds = big;
    cp.n = n;
    assert_int_equal(k8s_credentials_secret(&cp, &doc, errmsg), GERR_INVAL);
    assert_null(doc);
    assert_non_null(strstr(errmsg, "at most 1048576"));
    assert_null(strstr(errmsg, "SSSS"));
    cp.n = n - 1; /* exactly 1 MiB */
    assert_int_equal(k8s_credentials_secret(&cp, &doc, errmsg), 0);
    k8s_secret_free(doc);
    mem_free(value);
    mem_free(big);

    /* The Sandbox's uid (what the owner reference names) and the annotation are decoded. */
    const char *sbx = "{\"metadata\":{\"name\":\"web\",\"resourceVersion\":\"3\",\"uid\":\"u-42\","
                      "\"annotations\":{\"" K8S_ANN_CREDENTIALS "\":\"gantry-credentials-gw-x\"}}}";
    struct k8s_sandbox s;
    assert_int_equal(k8s_sandbox_decode(sbx, strlen(sbx), &s, errmsg), 0);
    assert_string_equal(s.meta.uid, "u-42");
    assert_true(s.meta.credentials);
    struct k8s_sandbox copy;
    k8s_sandbox_copy(&s, &copy);
    assert_string_equal(copy.meta.uid, "u-42");
    assert_true(copy.meta.credentials);
    k8s_sandbox_close(&copy);
    k8s_sandbox_close(&s);
    const char *plain = "{\"metadata\":{\"name\":\"web\",\"resourceVersion\":\"3\"}}";
    assert_int_equal(k8s_sandbox_decode(plain, strlen(plain), &s, errmsg), 0);
    assert_null(s.meta.uid);
    assert_false(s.meta.credentials);
    k8s_sandbox_close(&s);
}

/* The informer's store: put, newer wins, remove, replace, liveness per scope, names remembered. */
static void test_cache(void **state)
{
    const char *const scopes[] = {"ns-a", "ns-b"};
    struct k8s_cache *c = k8s_cache_new(scopes, 2);
    struct k8s_sandbox s = {0}, out;
    s.meta.name = "web";
    s.meta.ns = "ns-a";
    s.meta.resource_version = "10";
    s.meta.sandbox_id = ID;
    s.meta.gantry_ns = "team";
    s.meta.gantry_name = "web";
    s.message = "";
    s.phase = DRIVER_PHASE_PROVISIONING;
    assert_int_equal(k8s_cache_get(c, "ns-a", ID, &out), -1); /* not live */
    k8s_cache_put(c, &s);
    k8s_cache_set_live(c, 0, true);
    assert_true(k8s_cache_live(c, "ns-a"));
    assert_false(k8s_cache_live(c, "ns-b"));
    assert_false(k8s_cache_live(c, NULL));
    assert_int_equal(k8s_cache_get(c, "ns-a", ID, &out), 1);
    assert_string_equal(out.meta.name, "web");
    k8s_sandbox_close(&out);
    /* A late event with an older resourceVersion does not undo a newer state. */
    s.meta.resource_version = "12";
    s.phase = DRIVER_PHASE_READY;
    k8s_cache_put(c, &s);
    s.meta.resource_version = "11";
    s.phase = DRIVER_PHASE_PROVISIONING;
    k8s_cache_put(c, &s);
    assert_int_equal(k8s_cache_get(c, "ns-a", ID, &out), 1);
    assert_int_equal(out.phase, DRIVER_PHASE_READY);
    k8s_sandbox_close(&out);
    struct k8s_sandbox *items = NULL;
    size_t n = 0, cap = 0;
    assert_true(k8s_cache_snapshot(c, "ns-a", "team", &items, &n, &cap));
    assert_int_equal(n, 1);
    assert_false(k8s_cache_snapshot(c, NULL, NULL, &items, &n, &cap)); /* ns-b is not live */
    assert_int_equal(n, 1);
    k8s_sandbox_close(&items[0]);
    mem_free(items);
    /* A relist that no longer has it: gone from the scope, its name remembered. */
    k8s_cache_replace(c, 0, NULL, 0);
    assert_int_equal(k8s_cache_get(c, "ns-a", ID, &out), 0);
    char kns[64], name[64];
    assert_true(k8s_cache_name_of(c, ID, kns, name));
    assert_string_equal(kns, "ns-a");
    assert_string_equal(name, "web");
    assert_int_equal(k8s_cache_size(c), 0);
    k8s_cache_put(c, &s);
    assert_int_equal(k8s_cache_size(c), 1);
    /* Our own delete leaves a tombstone: events from before it do not bring the object back. */
    k8s_cache_remove(c, ID, "ns-a", "web", "20");
    s.meta.resource_version = "19";
    k8s_cache_put(c, &s);
    assert_int_equal(k8s_cache_get(c, "ns-a", ID, &out), 0);
    s.meta.resource_version = "21"; /* newer than the delete: it was made again */
    k8s_cache_put(c, &s);
    assert_int_equal(k8s_cache_get(c, "ns-a", ID, &out), 1);
    k8s_sandbox_close(&out);
    k8s_cache_remove(c, ID, "ns-a", "web", NULL);
    assert_false(k8s_cache_name_of(c, ID, kns, name));
    assert_int_equal(k8s_cache_size(c), 0);
    k8s_cache_free(c);
}

static void test_error_translation(void **state)
{
    assert_int_equal(k8s_http_err_from_status(200, ""), 0);
    assert_int_equal(k8s_http_err_from_status(201, ""), 0);
    assert_int_equal(k8s_http_err_from_status(400, "BadRequest"), GERR_INVAL);
    assert_int_equal(k8s_http_err_from_status(401, "Unauthorized"), GERR_UNAUTH);
    assert_int_equal(k8s_http_err_from_status(403, "Forbidden"), GERR_PERM);
    assert_int_equal(k8s_http_err_from_status(404, "NotFound"), GERR_NOTFOUND);
    assert_int_equal(k8s_http_err_from_status(409, "AlreadyExists"), GERR_EXISTS);
    assert_int_equal(k8s_http_err_from_status(409, "Conflict"), GERR_ABORTED);
    assert_int_equal(k8s_http_err_from_status(410, "Expired"), GERR_ABORTED);
    assert_int_equal(k8s_http_err_from_status(422, "Invalid"), GERR_INVAL);
    assert_int_equal(k8s_http_err_from_status(429, "TooManyRequests"), GERR_BUSY);
    assert_int_equal(k8s_http_err_from_status(500, ""), GERR_UNAVAILABLE);
    assert_int_equal(k8s_http_err_from_status(504, ""), GERR_TIMEOUT);
    assert_int_equal(k8s_http_err_from_status(302, ""), GERR_PROTO);
    assert_int_equal(k8s_http_err_from_curl(CURLE_OK), 0);
    assert_int_equal(k8s_http_err_from_curl(CURLE_COULDNT_CONNECT), GERR_UNAVAILABLE);
    assert_int_equal(k8s_http_err_from_curl(CURLE_OPERATION_TIMEDOUT), GERR_TIMEOUT);
    assert_int_equal(k8s_http_err_from_curl(CURLE_PEER_FAILED_VERIFICATION), GERR_UNAUTH);
    assert_int_equal(k8s_http_err_from_curl(CURLE_WRITE_ERROR), GERR_TOOBIG);
    assert_int_equal(k8s_http_err_from_curl(CURLE_GOT_NOTHING), GERR_CLOSED);
    /* Resets during an API server restart clear by waiting: the reconciler's transient class. */
    assert_int_equal(k8s_http_err_from_curl(CURLE_SSL_CONNECT_ERROR), GERR_CLOSED);
    assert_int_equal(k8s_http_err_from_curl(CURLE_HTTP2), GERR_CLOSED);
    assert_int_equal(k8s_http_err_from_curl(CURLE_HTTP2_STREAM), GERR_CLOSED);
}

static void test_process_decoders(void **state)
{
    struct process_stat ps;
    const char *stat =
        "4711 (we(ird) name) S 1 4711 4711 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
    assert_int_equal(process_stat_decode(stat, strlen(stat), &ps, errmsg), 0);
    assert_int_equal(ps.state, 'S');
    assert_int_equal(ps.starttime, 123456);
    assert_int_equal(process_stat_decode("4711 (x) S 1 2", 14, &ps, errmsg), GERR_PROTO);

    struct process_status st;
    const char *status =
        "{ \"child-pid\": 12, \"pid-namespace\": 4026532184 }\n{ \"exit-code\": 3 }\n{ \"exi";
    assert_int_equal(process_status_decode(status, strlen(status), &st, errmsg), 0);
    assert_int_equal(st.child_pid, 12);
    assert_int_equal(st.pidns, 4026532184ull);
    assert_true(st.exited);
    assert_int_equal(st.exit_code, 3);
    assert_int_equal(process_status_decode("garbage\n", 8, &st, errmsg), GERR_PROTO);

    uint64_t e;
    assert_int_equal(process_epoch_decode("42\n", 3, &e, errmsg), 0);
    assert_int_equal(e, 42);
    assert_int_equal(process_epoch_decode("18446744073709551615", 20, &e, errmsg), 0);
    assert_int_equal(process_epoch_decode("18446744073709551616", 20, &e, errmsg), GERR_PROTO);
    assert_int_equal(process_epoch_decode("042", 3, &e, errmsg), GERR_PROTO);
    assert_int_equal(process_epoch_decode("", 0, &e, errmsg), GERR_PROTO);

    struct process_state ps2 = {
        .id = ID, .ns = "team-a", .name = "web", .epoch = 5, .init_pid = 10, .pidns = 99};
    size_t len;
    char *text = process_state_encode(&ps2, NULL, &len);
    struct process_state back;
    assert_int_equal(process_state_decode(text, len, &back, errmsg), 0);
    assert_string_equal(back.id, ID);
    assert_int_equal(back.init_pid, 10);
    assert_int_equal(back.pidns, 99);
    process_state_close(&back);
    mem_free(text);
    const char *bad =
        "{\"version\":1,\"id\":\"" ID "\",\"namespace\":\"a\",\"name\":\"b\",\"epoch\":1,\"created_at_ms\":1,"
        "\"lifetime_s\":0,\"bwrap_pid\":99999999,\"bwrap_start\":0,\"init_pid\":0,\"init_start\":0,"
        "\"pidns\":0}";
    assert_int_equal(process_state_decode(bad, strlen(bad), &back, errmsg), GERR_PROTO);
    assert_non_null(strstr(errmsg, "bwrap_pid"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sandbox_phases),
        cmocka_unit_test(test_sandbox_deleting_and_malformed),
        cmocka_unit_test(test_sandbox_list),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_manifests),
        cmocka_unit_test(test_discovery_and_watch_events),
        cmocka_unit_test(test_status_details),
        cmocka_unit_test(test_secret_copy),
        cmocka_unit_test(test_credentials_in_manifest),
        cmocka_unit_test(test_credentials_secret),
        cmocka_unit_test(test_cache),
        cmocka_unit_test(test_error_translation),
        cmocka_unit_test(test_process_decoders),
    };
    return cmocka_run_group_tests_name("driver_k8s_json", tests, NULL, NULL);
}
