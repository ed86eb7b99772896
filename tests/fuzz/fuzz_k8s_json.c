/* libFuzzer harness for drivers/k8s_json.h: everything the kubernetes driver decodes from the API
 * server, and the driver_config values it parses from callers.
 *
 * Input layout: byte 0 selects the decoder ((byte - '0') % 8, so the digits '0' to '7' that start
 * the seeds in corpus/k8s_json/ name them), the rest is the body.
 *   0: a Sandbox (k8s_sandbox_decode)
 *   1: a SandboxList (k8s_sandbox_list_decode)
 *   2: a Status (k8s_status_decode)
 *   3: any object's metadata (k8s_meta_decode: Namespaces, the fence ConfigMap)
 *   5: the agents.x-k8s.io APIGroup discovery document (k8s_api_group_decode)
 *   6: one line of a watch stream (k8s_watch_event_decode)
 *   7: an image pull Secret read from the gateway's namespace (k8s_secret_copy), and the same body
 *      as a Secret a Secret-backed credential is read from (k8s_secret_value, key "token")
 *   4: a driver_config value: the body's first byte picks the key (the same way, modulo 6) (runtime_class,
 * node_selector, tolerations, service_account, resources, namespace), the rest is the value; checked by
 * k8s_check_config and, when accepted, turned into a Sandbox manifest by k8s_sandbox_manifest (with the value
 * also as a credential, which the manifest refers to) and into a credentials Secret by k8s_credentials_secret
 * (its base64 checked for length). Bodies are copied into heap
 * blocks of exactly their size so ASan sees any overread.
 *
 * Besides "no crash, no leak, no overread", the harness checks the header's promises: decoders
 * answer 0 or GERR_PROTO (a list page may also be GERR_TOOBIG) and leave their output zeroed on
 * failure; on success the name and resourceVersion are set, the phase is in range, a message
 * holds printable ASCII only; config checks answer 0 or GERR_INVAL, and an accepted config
 * always yields a manifest that is valid JSON. A broken promise calls abort(). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "drivers/k8s_json.h"
#include "lib/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ID "0f8fad5b-d9cb-469f-a165-70867728950e"

static void check(bool ok)
{
    if (!ok) {
        abort();
    }
}

static bool zeroed(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        if (b[i] != 0) {
            return false;
        }
    }
    return true;
}

static bool printable(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) {
            return false;
        }
    }
    return true;
}

static void check_sandbox(const struct k8s_sandbox *p)
{
    check(p->meta.name != NULL && p->meta.name[0] != '\0' && p->meta.resource_version != NULL);
    check(p->meta.ns != NULL && p->message != NULL && printable(p->message));
    check(p->phase >= DRIVER_PHASE_PROVISIONING && p->phase <= DRIVER_PHASE_UNKNOWN);
    check(!p->meta.deleting || p->phase == DRIVER_PHASE_DELETING);
}

static void fuzz_config(const char *body, size_t n)
{
    char errmsg[GERR_MSG_SIZE];
    if (n == 0) {
        return;
    }
    char *value = mem_strndup(body + 1, n - 1); /* stops at a NUL: values are C strings */
    const char *const cmd[] = {"sh"};
    struct driver_kv kv = {k8s_config_keys[(uint8_t)(body[0] - '0') % 6], value};
    /* The same bytes as a credential value: the pod refers to it, the Secret carries it in base64. */
    struct driver_credential cred = {"p", "k.v", value, "V"};
    struct driver_sandbox_spec spec = {.id = ID,
                                       .namespace = "ns",
                                       .name = "n",
                                       .image = "img",
                                       .command = cmd,
                                       .n_command = 1,
                                       .driver_config = &kv,
                                       .n_driver_config = 1,
                                       .gpu_count = 1,
                                       .lifetime_s = 60,
                                       .credentials = &cred,
                                       .n_credentials = 1};
    int rv = k8s_check_config(&spec, errmsg);
    check(rv == 0 || rv == GERR_INVAL);
    if (rv == 0) {
        struct k8s_sandbox_params p = {.spec = &spec,
                                       .api_version = "agents.x-k8s.io/v1beta1",
                                       .gateway_id = "gw",
                                       .k8s_namespace = "k",
                                       .object_name = "ns--n",
                                       .epoch = 1,
                                       .gpu_resource = "nvidia.com/gpu",
                                       .now_ms = 1795428000000ull,
                                       .credentials_secret = "gantry-credentials-gw-" ID};
        char *doc = NULL;
        check(k8s_sandbox_manifest(&p, &doc, errmsg) == 0 && doc != NULL);
        json_error_t jerr;
        json_t *j = json_loads(doc, 0, &jerr);
        check(j != NULL);
        json_decref(j);
        mem_free(doc);
        struct k8s_credentials_params cp = {.name = "gantry-credentials-gw-" ID,
                                            .k8s_namespace = "k",
                                            .gateway_id = "gw",
                                            .gantry_ns = "ns",
                                            .sandbox_id = ID,
                                            .sandbox_name = "n",
                                            .creds = &cred,
                                            .n = 1};
        rv = k8s_credentials_secret(&cp, &doc, errmsg);
        check(strlen(value) > K8S_SECRET_DATA_MAX ? rv == GERR_INVAL && doc == NULL : rv == 0 && doc != NULL);
        if (doc != NULL) {
            j = json_loads(doc, JSON_REJECT_DUPLICATES, &jerr);
            const char *b64 = json_string_value(json_object_get(json_object_get(j, "data"), "p.k.v"));
            check(b64 != NULL && strlen(b64) == 4 * ((strlen(value) + 2) / 3));
            json_decref(j);
            k8s_secret_free(doc);
        }
    } else {
        check(memchr(errmsg, '\0', sizeof errmsg) != NULL && strstr(errmsg, kv.key) != NULL);
    }
    mem_free(value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errmsg[GERR_MSG_SIZE];
    if (size == 0) {
        return 0;
    }
    size_t n = size - 1;
    char *body = mem_alloc(n > 0 ? n : 1);
    memcpy(body, data + 1, n);
    switch ((uint8_t)(data[0] - '0') % 8) {
    case 0: {
        struct k8s_sandbox p;
        int rv = k8s_sandbox_decode(body, n, &p, errmsg);
        check(rv == 0 || rv == GERR_PROTO);
        if (rv == 0) {
            check_sandbox(&p);
        } else {
            check(zeroed(&p, sizeof p));
        }
        k8s_sandbox_close(&p);
        break;
    }
    case 1: {
        struct k8s_sandbox_list l;
        int rv = k8s_sandbox_list_decode(body, n, &l, errmsg);
        check(rv == 0 || rv == GERR_PROTO || rv == GERR_TOOBIG);
        check(rv == 0 || zeroed(&l, sizeof l));
        for (size_t i = 0; i < l.n; i++) {
            check_sandbox(&l.items[i]);
        }
        check(l.next == NULL || l.next[0] != '\0');
        k8s_sandbox_list_close(&l);
        break;
    }
    case 2: {
        struct k8s_status st;
        int rv = k8s_status_decode(body, n, &st);
        check(rv == 0 || rv == GERR_PROTO);
        check(printable(st.reason) && printable(st.message) && printable(st.details_kind));
        break;
    }
    case 3: {
        struct k8s_meta m;
        int rv = k8s_meta_decode(body, n, &m, errmsg);
        check(rv == 0 || rv == GERR_PROTO);
        check(rv != 0 || (m.name != NULL && m.resource_version != NULL && m.ns != NULL));
        check(rv == 0 || zeroed(&m, sizeof m));
        k8s_meta_close(&m);
        break;
    }
    case 5: {
        unsigned served = 99;
        int rv = k8s_api_group_decode(body, n, &served, errmsg);
        check(rv == 0 || rv == GERR_PROTO);
        check((served & ~(unsigned)(K8S_SERVES_V1BETA1 | K8S_SERVES_V1ALPHA1)) == 0 &&
              (rv == 0 || served == 0));
        break;
    }
    case 6: {
        struct k8s_watch_event e;
        int rv = k8s_watch_event_decode(body, n, &e, errmsg);
        check(rv == 0 || rv == GERR_PROTO);
        if (rv != 0) {
            check(zeroed(&e, sizeof e));
        } else if (e.type == K8S_WATCH_ADDED || e.type == K8S_WATCH_MODIFIED || e.type == K8S_WATCH_DELETED) {
            check_sandbox(&e.object);
            check(e.resource_version != NULL &&
                  strcmp(e.resource_version, e.object.meta.resource_version) == 0);
        } else if (e.type == K8S_WATCH_BOOKMARK) {
            check(e.resource_version != NULL && e.resource_version[0] != '\0');
        } else {
            check(e.type == K8S_WATCH_ERROR && printable(e.status.reason) && printable(e.status.message));
        }
        k8s_watch_event_close(&e);
        break;
    }
    case 7: {
        char *doc = (char *)1;
        int rv = k8s_secret_copy(body, n, "openshell-gw-ns", "gw", &doc, errmsg);
        check(rv == 0 || rv == GERR_PROTO || rv == GERR_PERM);
        check((rv == 0) == (doc != NULL));
        if (doc != NULL) {
            json_error_t jerr;
            json_t *j = json_loads(doc, 0, &jerr);
            const char *type = j != NULL ? json_string_value(json_object_get(j, "type")) : NULL;
            check(type != NULL && (strcmp(type, "kubernetes.io/dockerconfigjson") == 0 ||
                                   strcmp(type, "kubernetes.io/dockercfg") == 0));
            json_decref(j);
            mem_free(doc);
        }
        char *v = (char *)1;
        rv = k8s_secret_value(body, n, "token", &v, errmsg);
        check(rv == 0 || rv == GERR_PROTO || rv == GERR_NOTFOUND);
        check((rv == 0) == (v != NULL));
        if (v != NULL) {
            check(v[0] != '\0' && strlen(v) <= K8S_SECRET_VALUE_MAX);
            mem_free(v);
        }
        break;
    }
    default:
        fuzz_config(body, n);
        break;
    }
    mem_free(body);
    return 0;
}
