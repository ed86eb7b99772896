/* The kubernetes driver: each sandbox is an agents.x-k8s.io/v1alpha1 Sandbox object (the
 * kubernetes-sigs/agent-sandbox CRD, whose controller makes and watches the pod), made through the
 * API server over HTTPS. The CRD and its controller must be installed in the cluster; without
 * them the sandbox calls fail with GERR_UNAVAILABLE saying so.
 *
 * Several gateway clusters may share one Kubernetes cluster. Everything the driver makes carries
 * the labels gantry.dev/gateway-id=<gateway_id> and gantry.dev/managed-by=gantry; Sandbox objects
 * (and, through spec.podTemplate.metadata, their pods) also gantry.dev/sandbox-id,
 * gantry.dev/namespace and gantry.dev/name, and the annotations gantry.dev/epoch (the epoch that
 * created them) and gantry.dev/owner. Sandboxes are found by label, never by name: get, delete
 * and create's idempotence check list with the selector gateway-id=<gw>,sandbox-id=<id>; lists and
 * garbage collection select by the gateway id label; every object read back is checked to carry
 * this gateway's id (and the expected sandbox id) before it is used. So a gateway never sees,
 * adopts or deletes another's objects, whatever they are named.
 *
 * Object names (driver_k8s_object_name): "<name>" in managed mode (the Kubernetes namespace is
 * this gateway's and this gantry namespace's alone); "<namespace>--<name>" in operator and shared
 * modes, where one Kubernetes namespace holds several gantry namespaces (and maybe several
 * gateways). A name over 63 bytes is cut to 54 and followed by "-" and a hash of the whole. When
 * the name is taken by an object that is not this sandbox (another gateway's sandbox of the same
 * namespace and name in a shared namespace, or "a--b"/"c" against "a"/"b--c"), create steps aside
 * to driver_k8s_fallback_name: the name cut to 54, "-", a hash of gateway id and sandbox id. Only
 * when that is taken as well does create fail with GERR_EXISTS.
 *
 * Namespace modes (which Kubernetes namespace holds the sandboxes of gantry namespace N):
 *   managed   "openshell-<gateway_id>-<N>" (cut to 54 bytes plus a hash when longer than 63),
 *             created by ensure_namespace with the gateway's labels and deleted by
 *             delete_namespace, which refuses to touch a namespace without this gateway's labels;
 *   operator  existing namespaces from the allowlist: entry "N" maps gantry namespace N to the
 *             Kubernetes namespace N, entry "N=K" to K. Anything else is GERR_PERM. ensure checks
 *             that the namespace exists; the driver never creates or deletes one;
 *   shared    every gantry namespace in the one namespace shared_namespace, told apart by the
 *             gantry.dev/namespace label; never created or deleted by the driver.
 *
 * Epoch fencing: the newest epoch lives in the annotation gantry.dev/epoch of the ConfigMap
 * "gantry-fence-<gateway_id>" in fence_namespace. Every mutating call reads it first: a newer
 * epoch there refuses the call (DRIVER_ERR_STALE); an older one is raised with a conditional
 * replace (its resourceVersion in the PUT), and a 409 Conflict means someone else wrote it: read
 * again and decide again. Deletes also check the Sandbox's own epoch annotation and carry its
 * resourceVersion as a precondition (a 409 there re-reads it). Reads (get, list) check only the
 * newest epoch this instance has seen, without a request. The remaining window (a stale holder
 * passes the fence check, then the new holder raises it, then the stale create lands) can only
 * produce the object the new holder would create under the same deterministic name: the new
 * holder finds it by its labels and adopts it, never a second copy.
 *
 * Phases come from the Sandbox's Ready and Finished conditions (see struct k8s_sandbox in
 * drivers/k8s_json.h). driver_config: see k8s_check_config() in drivers/k8s_json.h. The image is
 * required. gpu_count becomes a limit on gpu_resource. lifetime_s becomes spec.shutdownTime
 * (shutdownPolicy Retain: the controller stops the pod and reports Ready=False SandboxExpired;
 * the reconciler deletes the object).
 *
 * Thread-safe (the instance mutex); one HTTPS connection per instance, reused. */
#ifndef GANTRY_DRIVERS_K8S_H
#define GANTRY_DRIVERS_K8S_H

#include "drivers/driver.h"

#define DRIVER_K8S_GATEWAY_ID_MAX 40u
#define DRIVER_K8S_ALLOWLIST_MAX  256u

enum driver_k8s_mode {
    DRIVER_K8S_MANAGED = 0,
    DRIVER_K8S_OPERATOR,
    DRIVER_K8S_SHARED,
};

struct driver_k8s_config {
    const char *server;     /* "https://host:port"; NULL = in cluster: https://$KUBERNETES_SERVICE_HOST:
                               $KUBERNETES_SERVICE_PORT with the service account's token and CA */
    const char *token_file; /* bearer token, re-read per request; NULL: none (in cluster: the SA token) */
    const char *ca_file;    /* NULL: the system store (in cluster: the SA's ca.crt) */
    const char *client_cert_file; /* optional mutual TLS (with client_key_file) */
    const char *client_key_file;
    const char *gateway_id; /* DNS-1123 label of 1..DRIVER_K8S_GATEWAY_ID_MAX bytes */
    enum driver_k8s_mode mode;
    const char *shared_namespace;           /* shared mode: the namespace */
    const char *const *operator_namespaces; /* operator mode: "N" or "N=K" entries, NULL-terminated */
    const char *fence_namespace; /* NULL: shared_namespace (shared), the first allowlisted namespace
                                    (operator), "default" (managed) */
    const char *gpu_resource;    /* NULL: "nvidia.com/gpu" */
    unsigned timeout_ms;         /* per request; 0 = 10000 */
};

/* Make a kubernetes driver (strings copied). No request is made here: an API server that is down
 * shows up as GERR_UNAVAILABLE from the calls. GERR_INVAL names the bad configuration field. */
int driver_k8s_new(const struct driver_k8s_config *cfg, struct driver **out, char *errmsg);

/* The names the driver uses (63 bytes at most, NUL-terminated into 64-byte buffers): a sandbox's
 * preferred object name, the name it steps aside to when that is taken, and a managed namespace. */
void driver_k8s_object_name(enum driver_k8s_mode mode, const char *ns, const char *name, char out[64]);
void driver_k8s_fallback_name(const char *preferred, const char *gateway_id, const char *sandbox_id,
                              char out[64]);
void driver_k8s_managed_namespace(const char *gateway_id, const char *ns, char out[64]);

#endif
