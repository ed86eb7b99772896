/* Gantry-owned warm pools: the JSON of the SandboxWarmPool objects (extensions.agents.x-k8s.io,
 * drivers/k8s_claims.h) the kubernetes driver makes for the WarmPools of Gantry's API
 * (driver_pool_apply, docs/drivers.md "Gantry-owned warm pools"). Pure functions; no I/O.
 *
 * A pool of this gateway carries the labels gantry.dev/gateway-id, gantry.dev/managed-by=gantry,
 * gantry.dev/namespace (the gantry namespace), gantry.dev/name (the WarmPool's name) and
 * gantry.dev/warm-pool-id (its id), and the annotation gantry.dev/epoch. The driver lists, changes and
 * deletes only pools whose gateway id and pool id labels are its own. */
#ifndef GANTRY_DRIVERS_K8S_POOLS_H
#define GANTRY_DRIVERS_K8S_POOLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drivers/driver.h"

#define K8S_LABEL_POOL "gantry.dev/warm-pool-id"
#define K8S_POOL_KIND  "SandboxWarmPool"

/* A SandboxWarmPool as the API server sent it (only what the driver uses). */
struct k8s_pool {
    char name[254];
    char k8s_namespace[64];
    char resource_version[64];
    char gateway_id[64];     /* label gantry.dev/gateway-id ("" if absent) */
    char pool_id[40];        /* label gantry.dev/warm-pool-id ("" if absent or not a UUID) */
    char gantry_ns[64];      /* label gantry.dev/namespace ("" if absent) */
    char template_name[254]; /* spec.sandboxTemplateRef.name ("" if absent) */
    int64_t replicas;        /* spec.replicas (-1 if absent or not an integer) */
    uint32_t ready;          /* status.readyReplicas (0 if absent; capped at DRIVER_POOL_REPLICAS_MAX) */
    bool deleting;           /* metadata.deletionTimestamp is set */
};

/* Decode one SandboxWarmPool (GERR_PROTO for anything that is not a JSON object with
 * metadata.name). */
int k8s_pool_decode(const char *text, size_t len, struct k8s_pool *out, char *errmsg);

/* The pools of a SandboxWarmPoolList (at most @max; *@n of them); GERR_PROTO for a malformed list. */
int k8s_pool_list_decode(const char *text, size_t len, struct k8s_pool *out, size_t max, size_t *n,
                         char *errmsg);

/* Is @p this gateway's pool @pool_id (NULL: any of this gateway's pools)? */
bool k8s_pool_ours(const struct k8s_pool *p, const char *gateway_id, const char *pool_id);

/* The SandboxWarmPool of @spec in @k8s_namespace, labelled as above, annotated with @epoch. Heap
 * JSON (mem_free), NULL when out of memory. */
char *k8s_pool_manifest(const struct driver_pool_spec *spec, const char *gateway_id,
                        const char *k8s_namespace, uint64_t epoch);

/* The pool @text (@len bytes, as read) with spec.replicas and spec.sandboxTemplateRef.name of
 * @spec and the epoch annotation, for a PUT: its metadata.resourceVersion stays the precondition
 * (409 when the pool changed since it was read); status is dropped. Heap JSON (mem_free), NULL
 * when @text is not a pool with a resourceVersion or out of memory. */
char *k8s_pool_replacement(const char *text, size_t len, const struct driver_pool_spec *spec, uint64_t epoch);

/* DeleteOptions with the precondition resourceVersion @resource_version. Heap JSON or NULL. */
char *k8s_pool_delete_options(const char *resource_version);

#endif
