/* The kubernetes driver's side of the egress boundary (docs/egress.md, "Kubernetes"): the
 * NetworkPolicy that lets sandbox pods of a managed namespace reach the egress relay and nothing
 * else, and the proxy variables that point the pods at it.
 *
 * Managed namespaces already carry K8S_NETPOL_NAME (gantry-default-deny: every pod, no ingress, no
 * egress). NetworkPolicies add up, so K8S_EGRESS_NETPOL_NAME beside it opens exactly one way out
 * for the sandbox pods of this gateway (pods labelled gantry.dev/gateway-id=<gw> and
 * gantry.dev/managed-by=gantry): TCP to the relay's port at one peer, either
 *   - an ipBlock <address>/32 (or /128) on the address's port, when the relay is given as an
 *     address only (a relay outside the cluster, or a node address), or
 *   - the gantryd pods: namespaceSelector kubernetes.io/metadata.name=<home namespace> and a
 *     podSelector of the given labels, on the relay's port inside those pods (NetworkPolicy
 *     matches after a Service's address translation, so a Service's ClusterIP cannot be an
 *     ipBlock peer; the pods behind it are named instead).
 * No DNS: pods are given the relay's address, not a name, and the relay resolves the names a
 * CONNECT or an HTTP request carries. Nothing else (raw TCP, TLS without a proxy, UDP) leaves the
 * pod: transparent capture would need the CNI.
 *
 * Pure functions over documents, plus one reconcile step over an injected HTTP call, so the
 * module is tested against the fake API server through drivers/k8s.c and directly. */
#ifndef GANTRY_DRIVERS_K8S_NETPOL_H
#define GANTRY_DRIVERS_K8S_NETPOL_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "drivers/driver.h"

#define K8S_EGRESS_NETPOL_NAME  "gantry-egress-relay"
#define K8S_EGRESS_SELECTOR_MAX 8u /* labels in pod_selector */

/* Where sandbox pods reach the relay. Strings borrowed. */
struct k8s_egress_relay {
    const char *address;        /* "IPv4:port" or "[IPv6]:port": given to pods as http://<address>; NULL or
                                   "": no relay for pods (no policy, no variables) */
    const char *pod_selector;   /* "key=value[,key=value...]": the gantryd pods in home_namespace that
                                   serve it; NULL or "": the peer is the address itself (ipBlock) */
    const char *home_namespace; /* where the gantryd pods run (pod_selector only) */
    unsigned port;              /* the relay's port in those pods; 0: the address's port */
};

/* Whether @e is usable: an address that is an IP literal with a port in 1..65535, a selector of
 * 1..K8S_EGRESS_SELECTOR_MAX label pairs in Kubernetes syntax, a port in 0..65535. 0, or GERR_INVAL
 * naming the field and what is wrong. */
int k8s_egress_relay_check(const struct k8s_egress_relay *e, char *errmsg);

/* Whether @e asks for a relay at all. */
bool k8s_egress_relay_on(const struct k8s_egress_relay *e);

/* The NetworkPolicy K8S_EGRESS_NETPOL_NAME in managed namespace @ns for @gateway_id (policyTypes
 * Egress only), with metadata.resourceVersion @resource_version when not NULL (a conditional
 * replace). @e must have passed k8s_egress_relay_check and be on. mem_free the result; NULL when
 * out of memory. */
char *k8s_egress_netpol_manifest(const char *ns, const char *gateway_id, const struct k8s_egress_relay *e,
                                 const char *resource_version);

/* The environment a sandbox pod gets when the relay is on (appended to @env, a JSON array of
 * {name, value}): http_proxy, https_proxy, HTTP_PROXY, HTTPS_PROXY and GANTRY_EGRESS_PROXY =
 * http://<address>, no_proxy and NO_PROXY = localhost,127.0.0.1,::1; each left out when @spec's own
 * env sets that name (the spec may override them, as with the process driver). */
void k8s_egress_env(json_t *env, const struct k8s_egress_relay *e, const struct driver_sandbox_spec *spec);

/* Read the policy the API server sent (@len bytes of untrusted @text, at most K8S_MAX_BODY): 0 with
 * *@ours (it carries @gateway_id's gantry.dev/gateway-id label), *@same (its spec and the labels
 * k8s_egress_netpol_manifest sets equal what @e asks for; false when @e is off) and its
 * resourceVersion copied into @rv; GERR_PROTO when it is not an object with metadata and a
 * resourceVersion of fewer than 64 bytes (duplicate members refused). The fuzzer calls it directly. */
int k8s_egress_netpol_compare(const char *text, size_t len, const char *ns, const char *gateway_id,
                              const struct k8s_egress_relay *e, bool *ours, bool *same, char rv[64]);

/* One HTTP call of the driver: @method @path with @body (NULL for GET and DELETE without options);
 * 0 with the response body in *@resp (*@len bytes, valid until the next call), or a GERR_* code as
 * drivers/k8s.c maps statuses (GERR_NOTFOUND 404, GERR_EXISTS 409 AlreadyExists, GERR_ABORTED 409
 * Conflict). */
typedef int (*k8s_call_fn)(void *ctx, const char *method, const char *path, const char *body,
                           const char **resp, size_t *len, char *errmsg);

/* Bring K8S_EGRESS_NETPOL_NAME in managed namespace @ns to what @e asks for: relay on, created when
 * missing, replaced (PUT with the resourceVersion read) when its spec or labels differ, kept when
 * equal; relay off, deleted when present (404 is fine). A 409 (someone wrote it since it was read,
 * or made it since the 404) reads it again, up to 5 times. A policy of that name that does not carry
 * @gateway_id's label is never touched: GERR_EXISTS saying so. 0, or the call's error. */
int k8s_egress_netpol_reconcile(k8s_call_fn call, void *ctx, const char *ns, const char *gateway_id,
                                const struct k8s_egress_relay *e, char *errmsg);

#endif
