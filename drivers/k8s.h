/* The kubernetes driver: each sandbox is an agents.x-k8s.io Sandbox object (the
 * kubernetes-sigs/agent-sandbox CRD, whose controller makes and watches the pod), made through the
 * API server over HTTPS. The CRD and its controller must be installed in the cluster; without
 * them the sandbox calls fail with GERR_UNAVAILABLE saying so.
 *
 * API version. The driver asks the API server which versions of agents.x-k8s.io it serves (the
 * APIGroup discovery document, readable by every authenticated user) before its first sandbox
 * call, and uses v1beta1 (the storage version since agent-sandbox v0.5.0) or, only where that is
 * not served, v1alpha1 (which goes through the controller's conversion webhook). A 404 for the
 * resource later (the CRD was changed) makes it ask again.
 *
 * Several gateway clusters may share one Kubernetes cluster. Everything the driver makes carries
 * the labels gantry.dev/gateway-id=<gateway_id> and gantry.dev/managed-by=gantry, and upstream
 * OpenShell's openshell.ai/managed-by=openshell and openshell.ai/gateway-id; Sandbox objects (and,
 * through spec.podTemplate.metadata, their pods) also gantry.dev/sandbox-id, gantry.dev/namespace,
 * gantry.dev/name and openshell.ai/sandbox-id, sandbox-name, sandbox-namespace, and the
 * annotations gantry.dev/epoch (the epoch that created them) and gantry.dev/owner. The driver
 * recognises its objects by the gantry.dev labels: lists, watches and create's idempotence check
 * select gantry.dev/gateway-id=<gw> (plus the sandbox id or namespace), and every object read back
 * is checked to carry this gateway's id (and the expected sandbox id) before it is used. So a
 * gateway never sees, adopts or deletes another's objects, whatever they are named.
 *
 * Reads and load on the API server. A list+watch per scope (drivers/k8s_watch.h: every namespace
 * in managed mode, the shared namespace, or each operator namespace) keeps this gateway's Sandbox
 * objects in a cache (drivers/k8s_cache.h). get() and list() answer from the cache without a
 * request while its scope is live; a get() the cache cannot answer (scope not live, or a sandbox it
 * does not hold) reads the object by the name it was last seen under (one GET), and only for a
 * sandbox never seen searches by label (one LIST). create() always checks by label before its POST
 * (a sandbox made by another replica under a fallback name must be found whatever the cache says).
 * ensure_namespace() remembers a namespace it made usable for a while and does nothing then.
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
 *             created by ensure_namespace with the gateway's labels, the Pod Security labels of
 *             the restricted standard, a default-deny NetworkPolicy and copies of the image pull
 *             secrets; one that exists with this gateway's labels (an older Gantry made it) gets
 *             the labels it lacks by a merge PATCH with its resourceVersion (the default-deny policy
 *             is created if missing, never rewritten); deleted by delete_namespace; one without this
 *             gateway's labels is refused by both and never modified;
 *   operator  existing namespaces from the allowlist: entry "N" maps gantry namespace N to the
 *             Kubernetes namespace N, entry "N=K" to K. Anything else is GERR_PERM. ensure checks
 *             that the namespace exists (a GET the chart grants by name); the driver never creates
 *             or deletes one. A sandbox's driver_config "namespace" places it in another of the
 *             allowlist's Kubernetes namespaces instead (any other is GERR_PERM; managed and
 *             shared mode refuse the key with GERR_PERM): get, delete, list of one gantry
 *             namespace and delete_namespace's emptiness check therefore look in every allowlist
 *             namespace (the cache's last sighting first, then the mapped one, then the rest);
 *   shared    every gantry namespace in the one namespace shared_namespace, told apart by the
 *             gantry.dev/namespace label; never created, deleted or read by the driver (a
 *             namespaced Role cannot grant reading the Namespace object).
 * The gateway's own namespace (home_namespace, the Helm release's) holds the fence and the image
 * pull secrets; it can never hold sandboxes: a shared namespace or operator allowlist entry equal
 * to it is refused at construction (sandbox pods there could mount the gateway's Secrets).
 *
 * Epoch fencing: the newest epoch lives in the annotation gantry.dev/epoch of the ConfigMap
 * "gantry-fence-<gateway_id>" in the home namespace. Every mutating call reads it first: a newer
 * epoch there refuses the call (DRIVER_ERR_STALE); an older one is raised with a conditional
 * replace (its resourceVersion in the PUT), and a 409 Conflict means someone else wrote it: read
 * again and decide again. Deletes also check the Sandbox's own epoch annotation and carry its
 * resourceVersion as a precondition (a 409 there re-reads it). Reads (get, list) check only the
 * newest epoch this instance has seen, without a request. The remaining window (a stale holder
 * passes the fence check, then the new holder raises it, then the stale create lands) can only
 * produce the object the new holder would create under the same deterministic name: the new
 * holder finds it by its labels and adopts it, never a second copy.
 *
 * Errors that clear by waiting are never final: 429 (throttling: the driver waits for the
 * Retry-After it is given, up to 5 s in all within one call, then answers GERR_BUSY; the wait
 * does not hold the instance's mutex, so other calls go on meanwhile), 5xx
 * (including an unavailable admission or conversion webhook: GERR_UNAVAILABLE), a namespace being
 * deleted (403 NamespaceTerminating, or a managed namespace still Terminating: GERR_UNAVAILABLE)
 * and transport failures. The reconciler retries those until the provisioning deadline. Errors
 * that cannot clear by waiting (400, 422, RBAC's 403, a name taken by someone else) are
 * GERR_INVAL, GERR_PERM or GERR_EXISTS.
 *
 * Phases come from the Sandbox's Ready and Finished conditions (see struct k8s_sandbox in
 * drivers/k8s_json.h), with the controller's condition message: a pod that never schedules or
 * never pulls its image stays PROVISIONING (the reconciler's provisioning deadline ends it, only
 * for a sandbox that was never READY). driver_config: see k8s_check_config() in drivers/k8s_json.h;
 * service_account must also be in the service_accounts allow-list. Tenant labels under the
 * Kubernetes, agent-sandbox, Gantry and OpenShell prefixes are refused (k8s_check_labels). The
 * image is required. gpu_count becomes a limit on gpu_resource. lifetime_s becomes
 * spec.shutdownTime (shutdownPolicy Retain: the controller stops the pod and reports Ready=False
 * SandboxExpired; the reconciler deletes the object). A spec whose object would exceed
 * K8S_MAX_OBJECT is refused by validate.
 *
 * Credentials (caps.credentials; docs/credentials.md): a create whose spec carries credentials
 * writes the Secret "gantry-credentials-<gateway_id>-<id>" (k8s_credentials_secret) in the
 * sandbox's Kubernetes namespace before the Sandbox, so the pod never starts without it, and again
 * after it with an owner reference to the Sandbox, so the garbage collector removes it with the
 * Sandbox; the pod mounts it (k8s_sandbox_manifest) and the Sandbox carries the annotation
 * gantry.dev/credentials. A create that finds the Sandbox writes the Secret again; update_credentials
 * replaces its data with the whole new set (an unconditional PUT: the name is this gateway's and
 * this sandbox's alone); delete removes it after the Sandbox (404 fine). The driver writes and deletes
 * Secrets there and never reads one (its ServiceAccount may not); the only Secrets it reads are image
 * pull secrets in its home namespace and, through driver_k8s_read_secret, the Secrets a provider
 * references (Secret-backed credentials, where the operator granted the get); request and answer bodies are
 * wiped from memory, and Secret errors are reported by HTTP status and reason only, never the server's text
 * about the data.
 *
 * Claims (drivers/k8s_claims.h, docs/drivers.md "Claims and warm pools"): with driver_config
 * allocation "claim" and a template or warm_pool, create makes a labelled SandboxClaim
 * (extensions.agents.x-k8s.io/v1alpha1) instead of a Sandbox, waits up to 2 s (mutex released) for
 * the controller to bind it (an unbound claim is GERR_UNAVAILABLE, retried by the reconciler; a
 * missing template or pool GERR_INVAL), then labels the bound Sandbox as this gateway's (merge PATCH
 * with its resourceVersion; annotation gantry.dev/claim), after which it is like a Sandbox the
 * driver made. delete deletes the claim (uid precondition); the controller's owner reference makes
 * the garbage collector delete the Sandbox. A delete that finds no Sandbox deletes the sandbox's
 * unbound claims. Such sandboxes take no credentials (GERR_INVAL).
 *
 * Thread-safe (the instance mutex); one HTTPS connection per instance for calls, plus one per
 * watch, each on its own thread. A call waiting out a 429 releases the mutex until its wait ends
 * (driver_k8s_stop ends it early); it then sends its request again, and is DRIVER_ERR_STALE if a
 * call with a newer epoch ran meanwhile. */
#ifndef GANTRY_DRIVERS_K8S_H
#define GANTRY_DRIVERS_K8S_H

#include <stdbool.h>

#include "drivers/driver.h"
#include "drivers/k8s_json.h"
#include "drivers/k8s_netpol.h"

#define DRIVER_K8S_GATEWAY_ID_MAX  40u
#define DRIVER_K8S_ALLOWLIST_MAX   256u
#define DRIVER_K8S_ENSURE_MEMO_MS  300000u /* how long ensure_namespace trusts a namespace it made usable */
#define DRIVER_K8S_THROTTLE_WAIT_S 5u      /* the most a call waits for Retry-After in all */

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
    const char *home_namespace;          /* the gateway's own namespace (fence, image pull secrets); NULL: in
                                            cluster the pod's (the service account's namespace file), else "default" */
    const char *const *service_accounts; /* the ServiceAccount names driver_config service_account may
                                            name (NULL-terminated); NULL or empty: none */
    const char *const *image_pull_secrets; /* Secrets in the home namespace (NULL-terminated): copied into
                                              managed namespaces, named in every sandbox pod; NULL: none */
    const char *gpu_resource;              /* NULL: "nvidia.com/gpu" */
    unsigned timeout_ms;                   /* per request; 0 = 10000 */
    unsigned watch_timeout_s;              /* timeoutSeconds of each watch; 0 = 300 */
    bool no_watch;                         /* no list+watch cache: every read asks the API server */
    /* The egress relay for pods (drivers/k8s_netpol.h; its home_namespace is ignored: the driver's
     * own is used). Off (address NULL): managed namespaces get no gantry-egress-relay policy (one
     * left by an earlier configuration is deleted) and pods no proxy variables. */
    struct k8s_egress_relay egress;
};

/* Make a kubernetes driver (strings copied). No request is made here: an API server that is down
 * shows up as GERR_UNAVAILABLE from the calls; the watches start with the first sandbox call.
 * GERR_INVAL names the bad configuration field. */
int driver_k8s_new(const struct driver_k8s_config *cfg, struct driver **out, char *errmsg);

/* What the driver's requests have been, for measurements and tests: requests made by calls
 * (throttled retries included) and, summed over the watches, list pages, watch requests and
 * events applied; how many objects the cache holds and whether every scope is live. */
struct driver_k8s_stats {
    unsigned long long requests;
    unsigned throttled; /* calls waiting out a 429 (Retry-After) right now */
    unsigned long long watch_list_pages, watch_requests, watch_events, watch_relists, watch_errors;
    size_t cached;
    bool live;
};
void driver_k8s_stats(struct driver *d, struct driver_k8s_stats *out);

/* Stop the driver's activity, from any thread, before the threads that call it are joined: a call
 * waiting out a 429 returns GERR_CANCELED at once, and every later call that needs the API
 * server fails with GERR_CANCELED without a request; the watches are told to end. A call in the
 * middle of a request finishes it first (bounded by timeout_ms), so this returns within that.
 * driver_free is still needed, once no thread uses the driver. Calling it twice is fine. */
void driver_k8s_stop(struct driver *d);

/* Who is behind pod address @ip (text): the egress relay's lookup for a shared door (egress/relay.h,
 * egress_source_lookup_fn), answered from the list+watch cache without a request and without the
 * instance's mutex, so it never waits for a call in flight. 0 with the sandbox's gantry namespace,
 * name, id and owner copied into @out; GERR_NOTFOUND when no READY sandbox of this gateway has that
 * address (or two claim it); GERR_UNAVAILABLE when the cache is not live (the watches start with
 * the driver's first sandbox call, on the replica that holds the lease). Thread-safe. */
struct driver_k8s_pod {
    char ns[64], name[64], id[40], owner[K8S_OWNER_MAX];
};
int driver_k8s_lookup_ip(struct driver *d, const char *ip, struct driver_k8s_pod *out);

/* Start the list+watch cache now if it is not running (it otherwise starts with the first sandbox
 * call, which only the lease holder makes), so driver_k8s_lookup_ip answers on every replica. Holds
 * the instance's mutex for the discovery request when one is needed. 0, or the discovery's error. */
int driver_k8s_start_cache(struct driver *d, char *errmsg);

/* The ids of every READY sandbox in the cache (*@ids: mem_free; *@n of them), or GERR_UNAVAILABLE
 * when the cache is not live. */
int driver_k8s_ready_ids(struct driver *d, char (**ids)[40], size_t *n);

/* Read data key @key of Secret @ns/@name through the driver's API client (a Secret-backed
 * credential source, docs/credentials.md): 0 with *@out the value (heap, NUL-terminated; the caller
 * wipes and frees it with mem_free); GERR_NOTFOUND (no such Secret or key), GERR_PERM (RBAC: the
 * gateway's ServiceAccount may not get Secrets there), GERR_PROTO, or a transport error. The answer
 * body is wiped; messages carry the HTTP status and reason, never the value. Holds the instance's
 * mutex for the request; callable from any thread. */
int driver_k8s_read_secret(struct driver *d, const char *ns, const char *name, const char *key, char **out,
                           char *errmsg);

/* The names the driver uses (63 bytes at most, NUL-terminated into 64-byte buffers): a sandbox's
 * preferred object name, the name it steps aside to when that is taken, and a managed namespace. */
void driver_k8s_object_name(enum driver_k8s_mode mode, const char *ns, const char *name, char out[64]);
void driver_k8s_fallback_name(const char *preferred, const char *gateway_id, const char *sandbox_id,
                              char out[64]);
/* Managed namespace names collide between gateway ids where one followed by "-" begins the other
 * ("gw-a" with "b-x" and "gw-a-b" with "x"): the driver refuses the second (naming the gateway
 * that holds the name), so gateways sharing a cluster need ids that do not (docs/drivers.md). */
void driver_k8s_managed_namespace(const char *gateway_id, const char *ns, char out[64]);

#endif
