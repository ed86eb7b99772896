/* The change feed (store/events.h). */
#include "store/events.h"

#include "lib/clock.h"

int store_event_tx(struct store_tx *tx, const char *kind, const char *ns, const char *object_id,
                   const char *type, int64_t *revision)
{
    int rv =
        store_tx_exec(tx, "UPDATE cluster_revision SET revision = revision + 1 WHERE id = 1", NULL, 0, NULL);
    int64_t rev = 0;
    if (rv == 0) {
        rv = store_tx_query_int(tx, "SELECT revision FROM cluster_revision WHERE id = 1", NULL, 0, &rev);
    }
    if (rv == 0) {
        struct clock *c = clock_system();
        struct proto_value p[] = {proto_int(rev),        proto_text(kind), proto_text(ns),
                                  proto_text(object_id), proto_text(type), proto_int((int64_t)c->wall_ms(c))};
        rv = store_tx_exec(tx,
                           "INSERT INTO events (revision, kind, namespace, object_id, type, at_ms) VALUES "
                           "(?, ?, ?, ?, ?, ?)",
                           p, 6, NULL);
    }
    if (rv == 0 && revision != NULL) {
        *revision = rev;
    }
    return rv;
}
