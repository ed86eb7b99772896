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
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>

#include "drivers/k8s.h"
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
             "{\"apiVersion\":\"" K8S_SANDBOX_API
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
    struct k8s_sandbox_params p = {.spec = &spec,
                                   .gateway_id = "gw",
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
    assert_string_equal(json_string_value(json_object_get(j, "apiVersion")), "agents.x-k8s.io/v1alpha1");
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
    assert_int_equal(k8s_http_err_from_curl(CURLE_SSL_CONNECT_ERROR), GERR_IO);
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
        cmocka_unit_test(test_error_translation),
        cmocka_unit_test(test_process_decoders),
    };
    return cmocka_run_group_tests_name("driver_k8s_json", tests, NULL, NULL);
}
