/* The namespaces of the cluster held in memory on each replica, kept by a change-feed subscriber
 * (store/feed.h), so Namespaces.Get and List are answered without a store query
 * (api/services/tenants_svc.c; how they wait: api/services/model_read.h).
 *
 * on_resync loads every namespace and the cluster revision in one statement; on_event for kind
 * "Namespace" reads that one namespace's row again through the feed's client (the event's ns is the
 * namespace's name; no payload is needed): a row found replaces the entry, none removes it. A read
 * that fails marks the model unloaded (readers fall back to the store) until on_applied reloads it.
 * The row read may show a state newer than the event's revision (a later change whose event comes
 * next): never an older one, so the model only moves forward.
 *
 * The rows are turned into messages by the owner's @pack (tenants_svc.c's own row decoding), so the
 * model's answers are the store path's, byte for byte. */
#ifndef GANTRY_API_SERVICES_NS_MODEL_H
#define GANTRY_API_SERVICES_NS_MODEL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gantry/v1/namespaces.pb-c.h"
#include "store/client.h"
#include "store/feed.h"

/* Row @i of a "SELECT <cols> FROM namespaces" result packed as a gantry.v1.Namespace: the bytes,
 * mem_alloc'd (the caller frees them), and *@len. NULL: none (the row is skipped). */
typedef uint8_t *(*ns_model_pack_fn)(const struct proto_rows *r, size_t i, size_t *len);

struct ns_model_config {
    const char *cols;              /* the select list @pack reads; static storage */
    unsigned n_cols;               /* how many columns it has */
    unsigned name_col, labels_col; /* the name and the labels (JSON object text) among them */
    ns_model_pack_fn pack;
};

struct ns_model_entry {
    const char *name;
    const char *labels; /* JSON object text, as stored */
    const Gantry__V1__Namespace *msg;
};

/* What a reader sees, under the model's read lock: @entries sorted by name (strcmp). */
struct ns_model_view {
    const struct ns_model_entry *entries;
    size_t n;
    uint64_t rev; /* the revision the model reflects (every change up to it) */
};

struct ns_model;

/* @cfg copied. Never NULL (aborts on no memory, as mem_alloc). */
struct ns_model *ns_model_new(const struct ns_model_config *cfg);

/* Before feed_start: subscribe to @f (borrowed; it must outlive the model's use of it). */
void ns_model_attach_feed(struct ns_model *m, struct feed *f);

/* The feed attached (NULL: none). Any thread. */
struct feed *ns_model_feed(struct ns_model *m);

/* After feed_close (or without a feed): free. NULL is fine. */
void ns_model_free(struct ns_model *m);

/* Call @fn(view, @arg) under the model's read lock if it is loaded and at revision @need or later,
 * and return true; false (nothing called) otherwise. @fn must not block on the feed; it may answer
 * the call (grpc_call_finish_async packs before returning). Any thread but the feed's. */
bool ns_model_read(struct ns_model *m, uint64_t need, void (*fn)(const struct ns_model_view *v, void *arg),
                   void *arg);

/* The entry named @name in @v, or NULL. */
const struct ns_model_entry *ns_model_find(const struct ns_model_view *v, const char *name);

/* Gets and Lists answered from the model (gantry_namespace_model_reads_total). Any thread. */
uint64_t ns_model_reads(struct ns_model *m);

#endif
