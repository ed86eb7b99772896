/* One API kind held in memory on each replica, kept by a change-feed subscriber (store/feed.h), so
 * its Get and List are answered without a store query (how they wait: api/services/model_read.h).
 * One implementation for every kind keyed by namespace and name (cluster-scoped kinds: namespace
 * ""): Namespaces (tenants_svc.c), Policies, Providers, WarmPools, ...
 *
 * on_resync loads every row of the kind's table and the cluster revision in one statement. on_event
 * for the model's kind reads the changed object's row again through the feed's client, by the
 * column that equals the event's key (its namespace or its object id, as the config says; no
 * payload is needed): a row found replaces the entry of its namespace and name, none removes the
 * entry holding that key. A DELETED event of the config's @parent_kind (e.g. "Namespace", whose
 * deletion removes rows of this kind without an event of their own) reads every row of that parent
 * again and replaces the parent's entries. A read that fails marks the model
 * unloaded (readers fall back to the store) until on_applied reloads it. A row read may show a
 * state newer than the event's revision (a later change whose event comes next): never an older
 * one, so the model only moves forward.
 *
 * The rows are turned into messages by the owner's @pack (the owning service's own row decoding),
 * so the model's answers are the store path's, byte for byte. The model holds only what the kind's
 * Get and List return: @cols must not select secret material (a provider's secret, a key hash).
 *
 * Batched re-reads (@batch_where set): a kind whose rows change with events of other kinds too (a
 * namespace's quota usage changes with every sandbox created or deleted in it, and the change feed
 * has only the Sandbox event) lists those in @marks. Then an event of the kind or of a mark does not
 * read at once: it marks its key (the event's field @key names, which must equal the key column of
 * the rows it changes) dirty,
 * and on_applied, once per feed page and before the feed publishes the page's revision (store/feed.h),
 * reads every dirty key's rows in ONE statement (@batch_where with one parameter, the keys as a JSON
 * array) and replaces their entries; only then does the model's revision move. So the leader sees
 * at most one such read per page whatever the number of events, and a linearizable read (which
 * waits for the feed's revision) finds the rows read after every event up to it. @parent_kind must
 * be NULL in this mode (list the parent's events in @marks).
 *
 * Threads: the feed thread writes (its callbacks); readers (kind_model_read, kind_model_get,
 * kind_model_serve_get) run on worker threads, never on the feed's. */
#ifndef GANTRY_API_SERVICES_KIND_MODEL_H
#define GANTRY_API_SERVICES_KIND_MODEL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "gantry/v1/meta.pb-c.h"
#include "store/client.h"
#include "store/feed.h"

/* Row @i of a "SELECT <cols> FROM <table>" result packed as the kind's message: the bytes,
 * mem_alloc'd (the caller frees them), and *@len. NULL: none (the row is skipped, as the store
 * path skips a row that does not decode). Called on the feed thread. */
typedef uint8_t *(*kind_model_pack_fn)(const struct proto_rows *r, size_t i, size_t *len);

#define KIND_MODEL_NO_COL (-1)

/* Which field of an event of the kind names the changed row (the value of @key_col). */
enum kind_model_key {
    KIND_MODEL_KEY_NS,        /* feed_event.ns: Namespace (its name), Policy (its namespace) */
    KIND_MODEL_KEY_OBJECT_ID, /* feed_event.object_id: kinds whose events carry the row's id */
};

/* An event that may change rows of the model's kind: its kind, and its type (NULL: any). */
struct kind_model_mark {
    const char *kind;
    const char *type;
};

/* Every string static (the model keeps the pointers). */
struct kind_model_config {
    const char *kind;      /* the events' kind: "Policy" */
    const char *what;      /* for log lines: "policy" */
    const char *table;     /* "policies" */
    const char *cols;      /* the select list @pack reads */
    unsigned n_cols;       /* how many columns it has */
    int ns_col;            /* the namespace among them; KIND_MODEL_NO_COL: cluster-scoped ("") */
    unsigned name_col;     /* the name */
    int labels_col;        /* the labels (JSON object text); KIND_MODEL_NO_COL: none ("") */
    unsigned key_col;      /* the column an event's key equals */
    const char *key_where; /* its condition with one parameter: "id = ?" */
    enum kind_model_key key;
    /* NULL, or a kind whose deletion deletes rows of this kind (a trigger, a cascade, the
     * deleting transaction) without an event of their kind: */
    const char *parent_kind;
    enum kind_model_key parent_key; /* which field of its event names the parent */
    int parent_col;                 /* the column among @cols that holds that value */
    const char *parent_where;       /* its condition with one parameter: "namespace = ?" */
    /* NULL: each event re-reads its rows at once. Else batched re-reads (above): the condition
     * with one parameter, a JSON array of keys: "ns IN (SELECT value FROM json_each(?))". */
    const char *batch_where;
    const struct kind_model_mark *marks; /* with @batch_where: @n_marks events of other kinds */
    size_t n_marks;
    const ProtobufCMessageDescriptor *desc; /* the message @pack packs */
    kind_model_pack_fn pack;
    /* Optional (NULL: none): a second kind whose DELETED events remove rows of this kind without
     * events of their own; such an event reloads every row at once, in one statement as at a resync
     * (the role bindings of a deleted namespace, when @parent_kind is "Principal"). */
    const char *reload_on_delete;
    /* Optional (0: never): reload every row at most this often (on_applied), for columns written
     * without a change event (api_keys.last_used_ms); each reload is a snapshot, as at a resync. */
    unsigned reload_every_ms;
    /* Optional (false: none): one more column kept as text beside the message, for readers in this
     * process that need it in the store's form (the role bindings' scope JSON, which authentication
     * parses as its store path does: api/services/authn_models.h). Never secret material. */
    bool has_aux;
    unsigned aux_col;
};

struct kind_model_entry {
    const char *ns; /* "" for a cluster-scoped kind */
    const char *name;
    const char *key;    /* the value of key_col */
    const char *parent; /* the value of parent_col ("" without a parent kind) */
    const char *labels; /* JSON object text, as stored ("" when the kind has none) */
    const char *aux;    /* the config's aux_col as text ("" without one) */
    const ProtobufCMessage *msg;
};

/* What a reader sees, under the model's read lock: @entries sorted by namespace, then name
 * (strcmp each). */
struct kind_model_view {
    const struct kind_model_entry *entries;
    size_t n;
    uint64_t rev; /* the revision the model reflects (every change up to it) */
};

struct kind_model;

/* @cfg copied (its strings are not). Never NULL (aborts on no memory, as mem_alloc). */
struct kind_model *kind_model_new(const struct kind_model_config *cfg);

/* Before feed_start: subscribe to @f (borrowed; it must outlive the model's use of it). */
void kind_model_attach_feed(struct kind_model *m, struct feed *f);

/* The feed attached (NULL: none, or @m NULL). Any thread. */
struct feed *kind_model_feed(struct kind_model *m);

/* After feed_close (or without a feed): free. NULL is fine. */
void kind_model_free(struct kind_model *m);

/* Call @fn(view, @arg) under the model's read lock if it is loaded and at revision @need or later,
 * and return true (one read counted); false (nothing called) otherwise, and when @m is NULL. @fn
 * must not block on the feed; it may answer the call (grpc_call_finish_async packs before
 * returning). Any thread but the feed's. */
bool kind_model_read(struct kind_model *m, uint64_t need,
                     void (*fn)(const struct kind_model_view *v, void *arg), void *arg);

/* As kind_model_read at no particular revision (whatever the model holds now, every event applied
 * so far), not counted as a Get or List: for lookups inside this process (authentication,
 * api/services/authn_models.h). false when @m is NULL or not loaded. */
bool kind_model_peek(struct kind_model *m, void (*fn)(const struct kind_model_view *v, void *arg), void *arg);

/* The entry @ns/@name in @v, or NULL. */
const struct kind_model_entry *kind_model_find(const struct kind_model_view *v, const char *ns,
                                               const char *name);

/* The entries of @v whose parent (the config's parent_col) is @parent, sorted by name (strcmp), as
 * a mem_alloc'd array the caller frees (NULL when none), *@n of them; valid only under the lock.
 * A scan of every entry: the model keeps no index by parent. */
const struct kind_model_entry **kind_model_children(const struct kind_model_view *v, const char *parent,
                                                    size_t *n);

/* The index in @v of the first entry of namespace @ns whose name sorts after @after ("" : the
 * namespace's first); the namespace's entries run from there while entries[i].ns equals @ns. */
size_t kind_model_after(const struct kind_model_view *v, const char *ns, const char *after);

/* One page of namespace @ns in @v as a store List "WHERE namespace = @ns AND name > @after ORDER BY
 * name LIMIT @limit" reads it: up to @limit messages into @out (room for @limit; they are @v's, valid
 * only under the lock), *@n of them; true when more entries of @ns follow. */
bool kind_model_page(const struct kind_model_view *v, const char *ns, const char *after, size_t limit,
                     const ProtobufCMessage **out, size_t *n);

/* As kind_model_page, counting only the entries @keep(entry, @arg) accepts (the store List's
 * further WHERE terms); @keep runs under the lock and must not block. */
bool kind_model_page_if(const struct kind_model_view *v, const char *ns, const char *after, size_t limit,
                        bool (*keep)(const struct kind_model_entry *e, void *arg), void *arg,
                        const ProtobufCMessage **out, size_t *n);

/* As kind_model_read, for one object: true when the model answered, with *@bytes the packed
 * message (mem_alloc'd, the caller frees it; NULL when there is no @ns/@name), *@len and *@rev. */
bool kind_model_get(struct kind_model *m, uint64_t need, const char *ns, const char *name, uint8_t **bytes,
                    size_t *len, uint64_t *rev);

/* @msg packed: mem_alloc'd bytes (the caller frees them) and *@len. For @pack functions. */
uint8_t *kind_model_pack(const ProtobufCMessage *msg, size_t *len);

/* How a service's Get and List read: from @model as the call's read options ask
 * (api/services/model_read.h), or from the store (the leader) when @model is NULL, @store_reads is
 * set (config model_reads false) or the model cannot answer. The model's answers are the store
 * path's byte for byte; authorization is the gate's, decided before the read either way. Set
 * before the service's calls arrive. */
struct kind_reads {
    struct kind_model *model; /* borrowed; NULL: the store */
    bool store_reads;
};

struct gate_ctx;

/* The read options' decision for a Get or List (model_read_gate, api/services/model_read.h):
 * true with *@need set when the model may answer; false when the call was answered (*@answered:
 * a bad option, a min_revision not reached, ...) or the store must answer. @rd may be NULL.
 * Worker threads only (it may block, at most MODEL_WAIT_MAX_MS). */
bool kind_model_wait(const struct kind_reads *rd, struct gate_ctx *ctx, const Gantry__V1__ReadOptions *o,
                     uint64_t *need, bool *answered);

/* A whole Get of @ns/@name after the caller's authorization: wait as @o asks, then answer from the
 * model (the message, or NOT_FOUND with @not_found) with the revision trailer
 * (MODEL_REVISION_TRAILER). true: the call was answered (so too when a read option failed it);
 * false: nothing was sent, the caller reads the store. Worker threads only. */
bool kind_model_serve_get(const struct kind_reads *rd, struct gate_ctx *ctx, const Gantry__V1__ReadOptions *o,
                          const char *ns, const char *name, const char *not_found);

/* Sends one List page: the messages (@v's, valid only during the call), the next page's token (""
 * on the last page) and the revision the page reflects. */
typedef void (*kind_model_page_fn)(struct gate_ctx *ctx, const ProtobufCMessage **msgs, size_t n,
                                   const char *next_token, uint64_t rev);

/* A whole List page of namespace @ns after the caller's authorization and page parsing (@after, at
 * most @limit): wait as @o asks, then @answer it under the model's lock, as the store path's
 * "name > after ORDER BY name" page. true: the call was answered (so too when a read option failed
 * it); false: nothing was sent, the caller reads the store. Worker threads only. */
bool kind_model_serve_page(const struct kind_reads *rd, struct gate_ctx *ctx,
                           const Gantry__V1__ReadOptions *o, const char *ns, const char *after, size_t limit,
                           kind_model_page_fn answer);

/* Gets and Lists answered from the model (gantry_<kind>_model_reads_total). Any thread; 0 for
 * NULL. */
uint64_t kind_model_reads(struct kind_model *m);

#endif
