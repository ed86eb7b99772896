/* This gateway's Sandbox objects as the kubernetes driver's list+watch last saw them, found by
 * sandbox id (the informer's store; drivers/k8s_watch.h fills it, drivers/k8s.c reads it).
 *
 * The cache is split into scopes, one per watch: a Kubernetes namespace, or every namespace (NULL,
 * managed mode's cluster-wide watch). A scope is live while its watch is established after a
 * complete list; only then do lookups in it answer for the API server. A lookup in a scope that is
 * not live says so, and the caller asks the API server instead.
 *
 * Besides the objects, the cache remembers the name under which each sandbox was last seen (also
 * after its scope went stale), so the driver can read a sandbox by its name instead of searching
 * for it by label.
 *
 * Thread-safe (its own mutex): the watch threads write while driver calls read. Objects handed in
 * are copied; objects handed out are copies the caller closes (k8s_sandbox_close). */
#ifndef GANTRY_DRIVERS_K8S_CACHE_H
#define GANTRY_DRIVERS_K8S_CACHE_H

#include <stdbool.h>
#include <stddef.h>

#include "drivers/k8s_json.h"

struct k8s_cache;

/* A cache with @n scopes: @scopes[i] a Kubernetes namespace, or NULL for every namespace (then it
 * is the only scope). Strings copied. No scope is live yet. */
struct k8s_cache *k8s_cache_new(const char *const *scopes, size_t n);
void k8s_cache_free(struct k8s_cache *c); /* NULL is fine */

/* Mark scope @i live (its list is complete and its watch established) or not. */
void k8s_cache_set_live(struct k8s_cache *c, size_t i, bool live);

/* Whether the scope that holds Kubernetes namespace @kns (NULL: every scope) is live. */
bool k8s_cache_live(struct k8s_cache *c, const char *kns);

/* Put (add or replace, by namespace and name) a copy of @s, which must carry a sandbox id. An
 * object older than the one held (a smaller resourceVersion, compared as the integers the API
 * server writes) is ignored, so a late watch event never undoes a newer write. */
void k8s_cache_put(struct k8s_cache *c, const struct k8s_sandbox *s);

/* Remove the object @kns/@name (of sandbox @id). With @rv NULL (a watch's DELETED event) its name
 * is forgotten too. With @rv (the driver's own delete, answered with the object at that
 * resourceVersion) a tombstone stays: watch events of the object up to @rv, still on their way, do
 * not bring it back; the DELETED event then removes the tombstone. */
void k8s_cache_remove(struct k8s_cache *c, const char *id, const char *kns, const char *name, const char *rv);

/* Replace every object of scope @i by the @n objects @items (a complete list). */
void k8s_cache_replace(struct k8s_cache *c, size_t i, const struct k8s_sandbox *items, size_t n);

/* The object of sandbox @id in Kubernetes namespace @kns: 1 and a copy in @out when the cache holds
 * it; 0 when it does not and the scope is live (the API server has none, as far as the watch
 * says); -1 when the scope is not live (ask the API server). */
int k8s_cache_get(struct k8s_cache *c, const char *kns, const char *id, struct k8s_sandbox *out);

/* The Kubernetes namespace and name sandbox @id was last seen under (live or not): true and both
 * copied into the 64-byte buffers, or false. */
bool k8s_cache_name_of(struct k8s_cache *c, const char *id, char kns[64], char name[64]);

/* Copies of every object in Kubernetes namespace @kns (NULL: all) whose gantry namespace label is
 * @gantry_ns (NULL: any), appended to *@items (*@n of them, capacity *@cap; realloc'd). False
 * (nothing appended) if a scope involved is not live. */
bool k8s_cache_snapshot(struct k8s_cache *c, const char *kns, const char *gantry_ns,
                        struct k8s_sandbox **items, size_t *n, size_t *cap);

/* The READY sandbox whose pod has address @ip (IPv4 or IPv6 text, compared as addresses): true and
 * a copy in @out (k8s_sandbox_close), or false when no READY object has it, when two do (a stale
 * entry beside the pod that now holds the address: neither is trusted), or when @ip is not an
 * address. Scans every object under the cache's mutex (O(n)). Whether the scopes are live is the
 * caller's to check (k8s_cache_live). */
bool k8s_cache_find_pod_ip(struct k8s_cache *c, const char *ip, struct k8s_sandbox *out);

/* How many objects the cache holds. */
size_t k8s_cache_size(struct k8s_cache *c);

/* A deep copy of @s into @out. */
void k8s_sandbox_copy(const struct k8s_sandbox *s, struct k8s_sandbox *out);

#endif
