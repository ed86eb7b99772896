/* Allocation through agent-sandbox's extensions (extensions.agents.x-k8s.io/v1alpha1): the JSON
 * the kubernetes driver sends and reads for a sandbox whose driver_config says "allocation":
 * "claim" (drivers/k8s.h, "Claims").
 *
 * The API, as the agent-sandbox project defines it: a SandboxTemplate holds a pod template; a
 * SandboxWarmPool (spec.replicas, spec.sandboxTemplateRef.name) keeps that many Sandboxes of a
 * template ready; a SandboxClaim (spec.sandboxTemplateRef.name required, spec.warmpool "none",
 * "default" or a pool's name) gets a Sandbox: the controller adopts a ready member of a pool (the
 * claim becomes its controlling owner) or makes a new one from the template, and writes its name
 * to status.sandbox.name. Deleting the claim deletes its Sandbox (owner reference, garbage
 * collector). Pure functions; no I/O. */
#ifndef GANTRY_DRIVERS_K8S_CLAIMS_H
#define GANTRY_DRIVERS_K8S_CLAIMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drivers/driver.h"

#define K8S_EXT_GROUP         "extensions.agents.x-k8s.io"
#define K8S_EXT_VERSION       "v1alpha1"
#define K8S_EXT_API           "/apis/" K8S_EXT_GROUP "/" K8S_EXT_VERSION
#define K8S_CLAIM_RESOURCE    "sandboxclaims"
#define K8S_POOL_RESOURCE     "sandboxwarmpools"
#define K8S_CLAIM_KIND        "SandboxClaim"
#define K8S_CLAIM_MESSAGE_MAX 512u

/* What a sandbox's driver_config asks for: allocation "sandbox" (the default: the driver makes the
 * Sandbox) or "claim" (a SandboxClaim against template or warm_pool, exactly one of them). */
struct k8s_allocation {
    bool claim;
    const char *template_name; /* points into the spec's driver_config; NULL when not given */
    const char *warm_pool;     /* likewise */
};

/* Read and check the allocation keys of @spec's driver_config: "allocation" is "sandbox" or "claim";
 * "template" and "warm_pool" are DNS subdomains, only with "claim", and a claim names exactly one.
 * A claimed sandbox's pod comes from its SandboxTemplate, so with "claim" the pod-shaping keys
 * (runtime_class, node_selector, tolerations, service_account, resources) and gpu_count are
 * refused: GERR_INVAL naming the key. 0 with @out filled. */
int k8s_allocation_of(const struct driver_sandbox_spec *spec, struct k8s_allocation *out, char *errmsg);

/* A SandboxClaim as the API server sent it (only what the driver uses). */
struct k8s_claim {
    char name[254];
    char uid[128];
    char gateway_id[64]; /* label gantry.dev/gateway-id ("" if absent) */
    char sandbox_id[40]; /* label gantry.dev/sandbox-id ("" if absent or not 36 bytes) */
    char bound[254];     /* status.sandbox.name: the Sandbox it holds ("" while unbound) */
    bool deleting;       /* metadata.deletionTimestamp is set */
    /* The Ready condition: False with a reason ending in "NotFound" (its template or warm pool does
     * not exist: TemplateNotFound, WarmPoolNotFound) is final; any other unbound state may clear. */
    bool failed;
    char message[K8S_CLAIM_MESSAGE_MAX]; /* "<reason>: <message>" of Ready, printable ASCII ("" if none) */
};

/* Decode a SandboxClaim (GERR_PROTO for anything that is not a JSON object with metadata.name). */
int k8s_claim_decode(const char *text, size_t len, struct k8s_claim *out, char *errmsg);

/* The claims of a SandboxClaimList (at most @max; *@n of them); GERR_PROTO for a malformed list. */
int k8s_claim_list_decode(const char *text, size_t len, struct k8s_claim *out, size_t max, size_t *n,
                          char *errmsg);

/* The template a SandboxWarmPool is of (spec.sandboxTemplateRef.name, a DNS subdomain) into
 * @out; GERR_PROTO when it has none. */
int k8s_pool_template(const char *text, size_t len, char out[254], char *errmsg);

/* The SandboxClaim of a sandbox: named @object_name in @k8s_namespace, labelled like the driver's
 * Sandboxes (gateway id, managed-by, sandbox id, gantry namespace and name), annotated with the
 * epoch and owner; spec.sandboxTemplateRef.name @template_name and spec.warmpool @warm_pool (NULL:
 * "none", a fresh Sandbox from the template). Heap JSON (mem_free), NULL when out of memory. */
char *k8s_claim_manifest(const struct driver_sandbox_spec *spec, const char *gateway_id,
                         const char *k8s_namespace, const char *object_name, uint64_t epoch,
                         const char *template_name, const char *warm_pool);

/* The JSON merge patch that makes a claimed Sandbox one of the driver's: the labels the driver puts
 * on its own Sandboxes (and the spec's), the epoch and owner annotations and K8S_ANN_CLAIM
 * @claim_name; metadata.resourceVersion @resource_version as the precondition (409 when the Sandbox
 * changed since it was read). Heap JSON (mem_free), NULL when out of memory. */
char *k8s_claimed_patch(const struct driver_sandbox_spec *spec, const char *gateway_id, uint64_t epoch,
                        const char *claim_name, const char *resource_version);

/* DeleteOptions for a claim: background propagation (the garbage collector deletes its Sandbox),
 * precondition uid @uid (409 when the name now holds another claim). Heap JSON or NULL. */
char *k8s_claim_delete_options(const char *uid);

#endif
