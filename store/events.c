/* The change feed (store/events.h). */
#include "store/events.h"

#include "lib/clock.h"
#include "store/batch.h"

static const struct store_table events_table = {
    "INSERT INTO events (revision, kind, namespace, object_id, type, at_ms, payload) VALUES", 7};

int store_event_tx(struct store_tx *tx, const char *kind, const char *ns, const char *object_id,
                   const char *type, int64_t *revision)
{
    struct clock *c = clock_system();
    int64_t rev = 0;
    int rv;
    if (tx->batch != NULL) {
        rv = store_batch__next_revision(tx, &rev);
    } else {
        rv = store_tx_exec(tx, "UPDATE cluster_revision SET revision = revision + 1 WHERE id = 1", NULL, 0,
                           NULL);
        if (rv == 0) {
            rv = store_tx_query_int(tx, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0, &rev);
        }
    }
    if (rv == 0) {
        struct proto_value p[] = {proto_int(rev),        proto_text(kind), proto_text(ns),
                                  proto_text(object_id), proto_text(type), proto_int((int64_t)c->wall_ms(c)),
                                  proto_blob("", 0)};
        rv = store_tx_insert(tx, &events_table, p);
    }
    if (rv == 0 && revision != NULL) {
        *revision = rev;
    }
    return rv;
}

int store_event_payload_tx(struct store_tx *tx, int64_t revision, const void *data, size_t len)
{
    struct proto_value v = proto_blob(data, len);
    if (tx->batch != NULL) {
        return store_batch__set_value(tx->batch, &events_table, 0, revision, 6, &v);
    }
    struct proto_value p[] = {v, proto_int(revision)};
    return store_tx_exec(tx, "UPDATE events SET payload = ? WHERE revision = ?", p, 2, NULL);
}

int store_events_compacted(struct store_client *cl, int64_t *out)
{
    int rv = store_client_query_int(
        cl, "SELECT CAST(value AS INTEGER) FROM cluster_meta WHERE key = 'events_compacted_revision'", NULL,
        0, out);
    if (rv == GERR_NOTFOUND) {
        *out = 0;
        rv = 0;
    }
    return rv;
}

int store_list_revision(struct proto_rows *rows, uint64_t *rev)
{
    if (rows->n_rows == 0 || rows->n_cols < 2) {
        return GERR_PROTO;
    }
    const struct proto_value *r = proto_rows_at(rows, 0, rows->n_cols - 1);
    if (r->type != PROTO_INTEGER || r->u.i < 0) {
        return GERR_PROTO;
    }
    *rev = (uint64_t)r->u.i;
    if (rows->n_rows == 1 && proto_rows_at(rows, 0, 0)->type == PROTO_NULL) {
        rows->n_rows = 0;
    }
    return 0;
}
