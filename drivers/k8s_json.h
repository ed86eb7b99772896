/* Kubernetes API documents for the kubernetes driver: decoders of what the API server sends
 * (agents.x-k8s.io Sandbox objects and lists of them, namespaces, ConfigMaps, Status errors) and
 * encoders of what the driver sends (Sandbox, Namespace and fence ConfigMap manifests,
 * DeleteOptions). Pure functions, no I/O: the fuzzer
 * (tests/fuzz/fuzz_k8s_json.c) and the tests call them directly.
 *
 * Decoders take @len bytes of untrusted text (no NUL needed), refuse more than K8S_MAX_BODY bytes,
 * duplicate JSON members and wrong member types with GERR_PROTO and a reason in @errmsg, cap every
 * string they keep, and leave their output zeroed on failure. Members they do not need are
 * ignored, so newer API servers do not break them. */
#ifndef GANTRY_DRIVERS_K8S_JSON_H
#define GANTRY_DRIVERS_K8S_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drivers/driver.h"

#define K8S_MAX_BODY    (16u * 1024u * 1024u) /* bytes of one response */
#define K8S_MAX_ITEMS   5000u                 /* items in one list page */
#define K8S_MAX_MESSAGE 256u                  /* bytes kept of a message from the server */

/* Labels and annotations the driver puts on everything it makes. */
#define K8S_LABEL_GATEWAY   "gantry.dev/gateway-id"
#define K8S_LABEL_SANDBOX   "gantry.dev/sandbox-id"
#define K8S_LABEL_MANAGED   "gantry.dev/managed-by"
#define K8S_LABEL_NAMESPACE "gantry.dev/namespace"
#define K8S_LABEL_NAME      "gantry.dev/name"
#define K8S_MANAGED_BY      "gantry"
#define K8S_ANN_EPOCH       "gantry.dev/epoch"
#define K8S_ANN_OWNER       "gantry.dev/owner"

/* The kubernetes-sigs/agent-sandbox custom resource the driver makes (one per sandbox). */
#define K8S_SANDBOX_GROUP    "agents.x-k8s.io"
#define K8S_SANDBOX_VERSION  "v1alpha1"
#define K8S_SANDBOX_API      K8S_SANDBOX_GROUP "/" K8S_SANDBOX_VERSION
#define K8S_SANDBOX_KIND     "Sandbox"
#define K8S_SANDBOX_RESOURCE "sandboxes"

/* A Status object (the body of every API error). */
struct k8s_status {
    long code;
    char reason[64];               /* "NotFound", "AlreadyExists", "Conflict", ... ("" if absent) */
    char message[K8S_MAX_MESSAGE]; /* printable ASCII only ('?' for anything else) */
    char details_kind[64];         /* details.kind: "namespaces" when a 404 is about the namespace */
};

/* 0 if @text is a Status object (kind "Status"), else GERR_PROTO; @out is zeroed first. */
int k8s_status_decode(const char *text, size_t len, struct k8s_status *out);

/* The metadata every object has, plus the labels and annotations the driver uses. */
struct k8s_meta {
    char *name;
    char *ns;               /* "" for cluster-scoped objects */
    char *resource_version; /* opaque; required */
    char *gateway_id;       /* label gantry.dev/gateway-id, NULL if absent */
    char *managed_by;       /* label gantry.dev/managed-by, NULL if absent */
    char *sandbox_id;       /* label gantry.dev/sandbox-id, NULL if absent */
    char *gantry_ns;        /* label gantry.dev/namespace, NULL if absent */
    char *gantry_name;      /* label gantry.dev/name, NULL if absent */
    uint64_t epoch;         /* annotation gantry.dev/epoch; 0 if absent or malformed */
    uint64_t created_at_ms; /* creationTimestamp (RFC 3339, UTC); 0 if absent or malformed */
    bool deleting;          /* deletionTimestamp is set */
    bool terminating;       /* a Namespace whose status.phase is "Terminating" */
};

/* A Sandbox (agents.x-k8s.io/v1alpha1). Its phase is mapped from metadata.deletionTimestamp and the
 * Ready and Finished conditions the agent-sandbox controller writes:
 *   deletionTimestamp set                          DELETING
 *   Finished=True, reason PodSucceeded             STOPPED  (the command exited 0)
 *   Finished=True, reason PodFailed (or any other) ERROR    (the condition's message)
 *   Ready=True                                     READY
 *   Ready=False, reason SandboxExpired             STOPPED  (shutdownTime reached: the lifetime)
 *   Ready=False, reason PodSucceeded               STOPPED
 *   Ready=False, reason PodFailed or MultiplePods  ERROR
 *   Ready=False, reason SandboxSuspended           STOPPED  (someone set replicas to 0)
 *   Ready=False, any other reason (DependenciesNotReady, ReconcilerError, ...)  PROVISIONING: the
 *                                                  controller retries these; the message says why
 *   Ready=Unknown                                  UNKNOWN
 *   no Ready condition (the controller has not seen it yet)  PROVISIONING */
struct k8s_sandbox {
    struct k8s_meta meta;
    enum driver_phase phase;
    char *message; /* "<reason>: <message>" of the deciding condition, printable ("" if nothing) */
};

struct k8s_sandbox_list {
    struct k8s_sandbox *items;
    size_t n;
    char *next; /* metadata.continue, NULL when this is the last page */
};

/* A single object (Namespace, ConfigMap, Sandbox): its metadata. */
int k8s_meta_decode(const char *text, size_t len, struct k8s_meta *out, char *errmsg);
void k8s_meta_close(struct k8s_meta *m);

int k8s_sandbox_decode(const char *text, size_t len, struct k8s_sandbox *out, char *errmsg);
void k8s_sandbox_close(struct k8s_sandbox *s);

/* A SandboxList of at most K8S_MAX_ITEMS items. */
int k8s_sandbox_list_decode(const char *text, size_t len, struct k8s_sandbox_list *out, char *errmsg);
void k8s_sandbox_list_close(struct k8s_sandbox_list *l);

/* ---- Encoders. Each returns a heap JSON document (mem_free). */

struct k8s_sandbox_params {
    const struct driver_sandbox_spec *spec;
    const char *gateway_id;
    const char *k8s_namespace;
    const char *object_name;
    uint64_t epoch;
    const char *gpu_resource; /* extended resource name for gpu_count, e.g. "nvidia.com/gpu" */
    uint64_t now_ms;          /* Unix ms; with spec->lifetime_s > 0, shutdownTime = now + lifetime */
};

/* The driver_config keys the kubernetes driver knows (NULL-terminated). */
extern const char *const k8s_config_keys[];

/* Check the values of @spec's driver_config (keys are checked by the caller):
 *   runtime_class    a DNS subdomain (a RuntimeClass name);
 *   service_account  a DNS subdomain (a ServiceAccount in the sandbox's namespace); without it
 *                    the pod gets no service account token;
 *   node_selector    "key=value[,key=value...]", Kubernetes label syntax, at most 32 pairs;
 *   tolerations      a JSON array of at most 32 objects with members key, operator ("Exists" or
 *                    "Equal"), value, effect ("NoSchedule", "PreferNoSchedule", "NoExecute"),
 *                    tolerationSeconds (integer), nothing else;
 *   resources        a JSON object {"requests": {...}, "limits": {...}} mapping resource names
 *                    (label-key syntax) to quantities ("500m", "1.5", "2Gi"), nothing else.
 * GERR_INVAL naming the key and what is wrong. */
int k8s_check_config(const struct driver_sandbox_spec *spec, char *errmsg);

/* The Sandbox object for a sandbox (checks driver_config like k8s_check_config): labels
 * gantry.dev/{gateway-id,managed-by,sandbox-id,namespace,name} plus the spec's labels on the object
 * and on spec.podTemplate.metadata (so the controller's pod carries them too); annotations
 * gantry.dev/epoch and gantry.dev/owner; spec.podTemplate.spec the pod (one container "sandbox",
 * restartPolicy Never, no service account token unless service_account is set); with a lifetime,
 * spec.shutdownTime (RFC 3339, UTC) and shutdownPolicy Retain. GERR_INVAL or 0. */
int k8s_sandbox_manifest(const struct k8s_sandbox_params *p, char **out, char *errmsg);

/* A managed Namespace labelled for @gateway_id and @gantry_ns. */
char *k8s_namespace_manifest(const char *name, const char *gateway_id, const char *gantry_ns, uint64_t epoch);

/* The fence ConfigMap holding the newest epoch in annotation gantry.dev/epoch; @resource_version
 * NULL for a create, the version read for a conditional replace. */
char *k8s_fence_manifest(const char *name, const char *ns, const char *gateway_id, uint64_t epoch,
                         const char *resource_version);

/* DeleteOptions with a resourceVersion precondition. */
char *k8s_delete_options(const char *resource_version);

#endif
