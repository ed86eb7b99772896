/* Kubernetes API documents for the kubernetes driver: decoders of what the API server sends
 * (agents.x-k8s.io Sandbox objects, lists and watch events of them, the API group's discovery
 * document, namespaces, ConfigMaps, Secrets, Status errors) and encoders of what the driver sends
 * (Sandbox, Namespace, NetworkPolicy, fence ConfigMap and copied Secret manifests,
 * DeleteOptions). Pure functions, no I/O: the fuzzer (tests/fuzz/fuzz_k8s_json.c) and the tests
 * call them directly.
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
#include "drivers/k8s_netpol.h"

#define K8S_MAX_BODY    (16u * 1024u * 1024u) /* bytes of one response (or one watch event) */
#define K8S_MAX_ITEMS   5000u                 /* items in one list page */
#define K8S_MAX_MESSAGE 256u                  /* bytes kept of a message from the server */
/* The largest Sandbox object the driver sends. The API server takes request bodies of up to 3 MiB
 * and etcd objects of up to 1.5 MiB; the controller adds status and the server managedFields, so
 * the driver keeps a third of etcd's limit in reserve and refuses bigger specs at admission. */
#define K8S_MAX_OBJECT (1024u * 1024u)

/* Labels and annotations the driver puts on everything it makes. The gantry.dev/ labels are the
 * driver's own: it selects and recognises its objects by them. The openshell.ai/ labels are the
 * ones upstream OpenShell's kubernetes driver writes, so OpenShell tooling and its selectors
 * (openshell.ai/managed-by=openshell,openshell.ai/sandbox-id) recognise Gantry's sandboxes too. */
#define K8S_LABEL_GATEWAY   "gantry.dev/gateway-id"
#define K8S_LABEL_SANDBOX   "gantry.dev/sandbox-id"
#define K8S_LABEL_MANAGED   "gantry.dev/managed-by"
#define K8S_LABEL_NAMESPACE "gantry.dev/namespace"
#define K8S_LABEL_NAME      "gantry.dev/name"
#define K8S_MANAGED_BY      "gantry"
#define K8S_ANN_EPOCH       "gantry.dev/epoch"
#define K8S_ANN_OWNER       "gantry.dev/owner"
#define K8S_ANN_CREDENTIALS "gantry.dev/credentials" /* the credentials Secret a Sandbox's pod mounts */
#define K8S_ANN_CLAIM       "gantry.dev/claim"       /* a claimed Sandbox: the SandboxClaim holding it */
#define OS_LABEL_MANAGED    "openshell.ai/managed-by"
#define OS_MANAGED_BY       "openshell"
#define OS_LABEL_GATEWAY    "openshell.ai/gateway-id"
#define OS_LABEL_SANDBOX    "openshell.ai/sandbox-id"
#define OS_LABEL_NAME       "openshell.ai/sandbox-name"
#define OS_LABEL_NAMESPACE  "openshell.ai/sandbox-namespace"

/* The kubernetes-sigs/agent-sandbox custom resource the driver makes (one per sandbox). v1beta1
 * is the storage version since agent-sandbox v0.5.0; v1alpha1 is served through the controller's
 * conversion webhook and used only where v1beta1 is not served. Every field the driver writes and
 * reads is the same in both. */
#define K8S_SANDBOX_GROUP    "agents.x-k8s.io"
#define K8S_SANDBOX_V1BETA1  "v1beta1"
#define K8S_SANDBOX_V1ALPHA1 "v1alpha1"
#define K8S_SANDBOX_KIND     "Sandbox"
#define K8S_SANDBOX_RESOURCE "sandboxes"

/* A Status object (the body of every API error). */
struct k8s_status {
    long code;
    char reason[64];               /* "NotFound", "AlreadyExists", "Conflict", ... ("" if absent) */
    char message[K8S_MAX_MESSAGE]; /* printable ASCII only ('?' for anything else) */
    char details_kind[64];         /* details.kind: "namespaces" when a 404 is about the namespace */
    unsigned retry_after_s;        /* details.retryAfterSeconds (429, some 5xx); 0 if absent */
    bool ns_terminating;           /* a details.causes entry of type NamespaceTerminating (403) */
};

/* 0 if @text is a Status object (kind "Status"), else GERR_PROTO; @out is zeroed first. */
int k8s_status_decode(const char *text, size_t len, struct k8s_status *out);

/* The metadata every object has, plus the labels and annotations the driver uses. */
struct k8s_meta {
    char *name;
    char *ns;               /* "" for cluster-scoped objects */
    char *resource_version; /* opaque; required */
    char *uid;              /* metadata.uid (what ownerReferences name), NULL if absent */
    char *gateway_id;       /* label gantry.dev/gateway-id, NULL if absent */
    char *managed_by;       /* label gantry.dev/managed-by, NULL if absent */
    char *sandbox_id;       /* label gantry.dev/sandbox-id, NULL if absent */
    char *gantry_ns;        /* label gantry.dev/namespace, NULL if absent */
    char *gantry_name;      /* label gantry.dev/name, NULL if absent */
    uint64_t epoch;         /* annotation gantry.dev/epoch; 0 if absent or malformed */
    uint64_t created_at_ms; /* creationTimestamp (RFC 3339, UTC); 0 if absent or malformed */
    bool credentials; /* annotation gantry.dev/credentials is set: its pod mounts a credentials Secret */
    bool deleting;    /* deletionTimestamp is set */
    /* annotation gantry.dev/claim (drivers/k8s_claims.h): the SandboxClaim that holds this Sandbox,
     * "" if absent or not a name of at most 63 bytes (a Sandbox the driver made itself) */
    char claim[64];
    bool terminating; /* a Namespace whose status.phase is "Terminating" */
};

/* A Sandbox (agents.x-k8s.io). Its phase is mapped from metadata.deletionTimestamp and the Ready
 * and Finished conditions the agent-sandbox controller writes:
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
 *   no Ready condition (the controller has not seen it yet)  PROVISIONING
 * (The driver turns PROVISIONING into ERROR once the object is older than its provisioning
 * deadline; see drivers/k8s.h.) */
#define K8S_POD_IPS   2u   /* addresses kept of status.podIPs (one per family on a dual-stack pod) */
#define K8S_OWNER_MAX 128u /* bytes of the owner annotation kept, NUL included */
struct k8s_sandbox {
    struct k8s_meta meta;
    enum driver_phase phase;
    char *message; /* "<reason>: <message>" of the deciding condition, printable ("" if nothing) */
    /* The pod's addresses as the controller reports them (status.podIPs; strings that are not an
     * IPv4 or IPv6 address are skipped; "" for none), and the owner annotation ("" if absent or
     * longer than K8S_OWNER_MAX - 1): what the egress relay attributes a pod's connections by. */
    char pod_ips[K8S_POD_IPS][46];
    char owner[K8S_OWNER_MAX];
};

struct k8s_sandbox_list {
    struct k8s_sandbox *items;
    size_t n;
    char *next;             /* metadata.continue, NULL when this is the last page */
    char *resource_version; /* metadata.resourceVersion of the list (where a watch starts), or NULL */
};

/* A single object (Namespace, ConfigMap, Sandbox): its metadata. */
int k8s_meta_decode(const char *text, size_t len, struct k8s_meta *out, char *errmsg);
void k8s_meta_close(struct k8s_meta *m);

int k8s_sandbox_decode(const char *text, size_t len, struct k8s_sandbox *out, char *errmsg);
void k8s_sandbox_close(struct k8s_sandbox *s);

/* Whether @m is a Sandbox this driver made for gateway @gateway_id: its gateway id label, a
 * canonical sandbox id and the gantry namespace and name labels. Nothing else is believed. */
bool k8s_sandbox_belongs(const struct k8s_meta *m, const char *gateway_id);

/* A SandboxList of at most K8S_MAX_ITEMS items. */
int k8s_sandbox_list_decode(const char *text, size_t len, struct k8s_sandbox_list *out, char *errmsg);
void k8s_sandbox_list_close(struct k8s_sandbox_list *l);

/* The agents.x-k8s.io versions the server serves, from its APIGroup discovery document
 * (GET /apis/agents.x-k8s.io): K8S_SERVES_* bits. A document of another group or kind is
 * GERR_PROTO. Versions the driver does not know are ignored. */
#define K8S_SERVES_V1BETA1  1u
#define K8S_SERVES_V1ALPHA1 2u
int k8s_api_group_decode(const char *text, size_t len, unsigned *served, char *errmsg);

/* One line of a watch stream of Sandboxes. ADDED, MODIFIED and DELETED carry the object
 * (decoded as by k8s_sandbox_decode); BOOKMARK only a resourceVersion; ERROR a Status (410
 * Expired: the resourceVersion is too old, list again). */
enum k8s_watch_type {
    K8S_WATCH_ADDED = 1,
    K8S_WATCH_MODIFIED,
    K8S_WATCH_DELETED,
    K8S_WATCH_BOOKMARK,
    K8S_WATCH_ERROR,
};

struct k8s_watch_event {
    enum k8s_watch_type type;
    struct k8s_sandbox object; /* ADDED, MODIFIED, DELETED */
    char *resource_version;    /* BOOKMARK (and the object's, for the others) */
    struct k8s_status status;  /* ERROR */
};

int k8s_watch_event_decode(const char *text, size_t len, struct k8s_watch_event *out, char *errmsg);
void k8s_watch_event_close(struct k8s_watch_event *e);

/* ---- Encoders. Each returns a heap JSON document (mem_free). */

struct k8s_sandbox_params {
    const struct driver_sandbox_spec *spec;
    const char *api_version; /* "agents.x-k8s.io/v1beta1" or ".../v1alpha1" */
    const char *gateway_id;
    const char *k8s_namespace;
    const char *object_name;
    uint64_t epoch;
    const char *gpu_resource; /* extended resource name for gpu_count, e.g. "nvidia.com/gpu" */
    const char *const
        *image_pull_secrets; /* Secret names in the sandbox's namespace (NULL-terminated), or NULL */
    uint64_t now_ms;         /* Unix ms; with spec->lifetime_s > 0, shutdownTime = now + lifetime */
    /* The credentials Secret (k8s_credentials_secret_name) the pod refers to when the spec carries
     * credentials; ignored (and may be NULL) when it carries none. */
    const char *credentials_secret;
    /* The egress relay whose address the pod is given as its proxy (k8s_egress_env), or NULL. */
    const struct k8s_egress_relay *egress;
};

/* The driver_config keys the kubernetes driver knows (NULL-terminated). */
extern const char *const k8s_config_keys[];

/* Check the values of @spec's driver_config (keys are checked by the caller):
 *   runtime_class    a DNS subdomain (a RuntimeClass name);
 *   service_account  a DNS subdomain (a ServiceAccount in the sandbox's namespace); without it
 *                    the pod gets no service account token. (Which names are allowed at all is
 *                    the driver's allow-list, checked in drivers/k8s.c.)
 *   node_selector    "key=value[,key=value...]", Kubernetes label syntax, at most 32 pairs;
 *   tolerations      a JSON array of at most 32 objects with members key, operator ("Exists" or
 *                    "Equal"), value, effect ("NoSchedule", "PreferNoSchedule", "NoExecute"),
 *                    tolerationSeconds (integer), nothing else;
 *   namespace        a DNS-1123 label: the Kubernetes namespace to place the sandbox in (only
 *                    operator mode honours it, within the allowlist: drivers/k8s.h);
 *   resources        a JSON object {"requests": {...}, "limits": {...}} mapping resource names
 *                    (label-key syntax) to quantities ("500m", "1.5", "2Gi"), nothing else.
 * GERR_INVAL naming the key and what is wrong. */
int k8s_check_config(const struct driver_sandbox_spec *spec, char *errmsg);

/* Refuse label keys a tenant must not set on Kubernetes objects, because Kubernetes, the
 * agent-sandbox controller or Gantry give them meaning: keys whose prefix is kubernetes.io or
 * k8s.io or a subdomain of either (app.kubernetes.io, node.kubernetes.io, statefulset.kubernetes.io,
 * ...), x-k8s.io or a subdomain (agents.x-k8s.io), gantry.dev or openshell.ai or a subdomain.
 * GERR_INVAL naming the key, or 0. */
int k8s_check_labels(const struct driver_sandbox_spec *spec, char *errmsg);

/* The Sandbox object for a sandbox (checks driver_config like k8s_check_config): labels
 * gantry.dev/{gateway-id,managed-by,sandbox-id,namespace,name}, openshell.ai/{managed-by,
 * gateway-id,sandbox-id,sandbox-name,sandbox-namespace} plus the spec's labels on the object and
 * on spec.podTemplate.metadata (so the controller's pod carries them too); annotations
 * gantry.dev/epoch and gantry.dev/owner (and gantry.dev/credentials, the Secret's name, for a spec with
 * credentials: see "Credentials" below); spec.podTemplate.spec the pod: one container "sandbox",
 * restartPolicy Never, the restricted Pod Security Standard by default (runAsNonRoot with uid and
 * gid 65534, seccompProfile RuntimeDefault, allowPrivilegeEscalation false, every capability
 * dropped), no service account token unless service_account is set, the image pull secrets; with
 * a lifetime, spec.shutdownTime (RFC 3339, UTC) and shutdownPolicy Retain. GERR_INVAL (also for
 * an object over K8S_MAX_OBJECT bytes, naming its size) or 0. */
int k8s_sandbox_manifest(const struct k8s_sandbox_params *p, char **out, char *errmsg);

/* A managed Namespace labelled for @gateway_id and @gantry_ns, with the Pod Security admission
 * labels that enforce (and audit and warn about) the restricted standard. */
char *k8s_namespace_manifest(const char *name, const char *gateway_id, const char *gantry_ns, uint64_t epoch);

/* Bring a managed Namespace made by an older Gantry up to date: @text is the Namespace as the API
 * server sent it. On 0, *@out is NULL when it already carries every label k8s_namespace_manifest
 * sets (same values), else a JSON merge patch (mem_free) that sets only the missing or different
 * ones and carries the Namespace's resourceVersion, so a write made since it was read is a 409
 * Conflict; other labels (an operator's) are left alone. GERR_PROTO for a malformed Namespace. */
int k8s_namespace_patch(const char *text, size_t len, const char *gateway_id, const char *gantry_ns,
                        char **out, char *errmsg);

/* The NetworkPolicy K8S_NETPOL_NAME in managed namespace @ns: every pod, no ingress, no egress.
 * Sandboxes never dial out themselves (DESIGN.md 6a: egress goes through the relay, which is not
 * in this tree yet); when it lands, its policy is an allow rule beside this one. */
#define K8S_NETPOL_NAME "gantry-default-deny"
char *k8s_network_policy_manifest(const char *ns, const char *gateway_id);

/* The fence ConfigMap holding the newest epoch in annotation gantry.dev/epoch; @resource_version
 * NULL for a create, the version read for a conditional replace. */
char *k8s_fence_manifest(const char *name, const char *ns, const char *gateway_id, uint64_t epoch,
                         const char *resource_version);

/* An image pull Secret, read from the gateway's own namespace, copied into managed namespace @ns:
 * @text is the Secret as the API server sent it. Only types kubernetes.io/dockerconfigjson and
 * kubernetes.io/dockercfg are copied (anything else is GERR_PERM: the driver never spreads other
 * credentials); the copy has the same name, type and data and this gateway's labels, no
 * resourceVersion (a create, or an unconditional replace of the gateway's earlier copy). On 0
 * *@out is the manifest (mem_free). GERR_PROTO for a malformed Secret. */
int k8s_secret_copy(const char *text, size_t len, const char *ns, const char *gateway_id, char **out,
                    char *errmsg);

/* The value under data key @key of a Secret read from the API server (a Secret-backed credential
 * source, docs/credentials.md): 0 with *@out the decoded bytes NUL-terminated (heap, mem_free after
 * wiping), GERR_NOTFOUND when the Secret has no such key, GERR_PROTO when the body is not a Secret or
 * the value is not standard base64 of 1..K8S_SECRET_VALUE_MAX bytes without a NUL. The base64 text
 * in the parsed copy is wiped; @text itself is the caller's to wipe. Messages never carry a value. */
#define K8S_SECRET_VALUE_MAX 65536u
int k8s_secret_value(const char *text, size_t len, const char *key, char **out, char *errmsg);

/* ---- Credentials (docs/credentials.md): one Secret per sandbox that carries any, in the sandbox's
 * Kubernetes namespace, made and replaced by the driver and never read back (the driver has no
 * right to read Secrets outside its own namespace; see docs/deploy-helm.md). Its data key for
 * credential <provider>/<key> is "<provider>.<key>": a provider is a DNS label, so the first '.'
 * splits it unambiguously, and both parts are Secret key characters ([-._a-zA-Z0-9]). The Sandbox's
 * pod template refers to it (k8s_sandbox_manifest): a secret volume mounted read-only at
 * DRIVER_CREDENTIALS_DIR whose items map "<provider>.<key>" to the path "<provider>/<key>", with
 * defaultMode K8S_CREDENTIALS_MODE and the pod's fsGroup, and for a credential with env an
 * environment variable from a secretKeyRef. The plaintext is only ever in the Secret. */
#define K8S_CREDENTIALS_PREFIX "gantry-credentials-"
#define K8S_CREDENTIALS_VOLUME "gantry-credentials"
/* Files are owned by root and group fsGroup (SANDBOX_UID's group, which the sandbox's processes
 * have whatever uid a runtime gives them): 0440 lets the sandbox read them and nobody else write. */
#define K8S_CREDENTIALS_MODE 0440
/* The API server refuses a Secret whose data add up to more than 1 MiB (decoded). */
#define K8S_SECRET_DATA_MAX (1024u * 1024u)
/* The Secret of sandbox @sandbox_id of gateway @gateway_id: "gantry-credentials-<gateway>-<id>"
 * (at most 19 + 40 + 1 + 36 bytes: a DNS subdomain). The gateway id is part of it because gateways
 * sharing a Kubernetes namespace (shared mode) must never write or delete each other's. */
void k8s_credentials_secret_name(const char *gateway_id, const char *sandbox_id, char out[128]);

/* The owner of a credentials Secret: the Sandbox object, so Kubernetes' garbage collector deletes
 * the Secret with it. */
struct k8s_owner {
    const char *api_version; /* "agents.x-k8s.io/v1beta1" */
    const char *name;
    const char *uid;
};

struct k8s_credentials_params {
    const char *name; /* k8s_credentials_secret_name */
    const char *k8s_namespace;
    const char *gateway_id;
    const char *gantry_ns;
    const char *sandbox_id;
    const char *sandbox_name;
    const struct k8s_owner *owner; /* NULL: no ownerReferences (made before the Sandbox) */
    const struct driver_credential *creds;
    size_t n;
};

/* The credentials Secret (type Opaque, the driver's labels and the sandbox's, data keys as above
 * with base64 values, ownerReferences to @owner with blockOwnerDeletion false), for a create (POST)
 * or an unconditional replace (PUT). On 0 *@out holds the plaintext (base64): release it with
 * k8s_secret_free, which wipes it. GERR_INVAL for entries whose data would exceed
 * K8S_SECRET_DATA_MAX (naming the size) or keys that are not Secret keys (naming provider and key,
 * never a value). */
int k8s_credentials_secret(const struct k8s_credentials_params *p, char **out, char *errmsg);

/* Wipe and free a document that may hold credentials. NULL is fine. */
void k8s_secret_free(char *doc);

/* DeleteOptions with a resourceVersion precondition. */
char *k8s_delete_options(const char *resource_version);

#endif
