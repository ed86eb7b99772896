/* The fenced lease (leases/lease.h). */
#include "leases/lease.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "lib/log.h"

int lease_init(struct lease *l, const struct lease_config *cfg)
{
    memset(l, 0, sizeof *l);
    if (cfg->name == NULL || cfg->holder == NULL || cfg->name[0] == '\0' || cfg->holder[0] == '\0' ||
        strlen(cfg->name) >= sizeof l->name || strlen(cfg->holder) >= sizeof l->holder) {
        return GERR_INVAL;
    }
    snprintf(l->name, sizeof l->name, "%s", cfg->name);
    snprintf(l->holder, sizeof l->holder, "%s", cfg->holder);
    l->duration_ms = cfg->duration_ms != 0 ? cfg->duration_ms : LEASE_DEFAULT_DURATION_MS;
    l->renew_deadline_ms =
        cfg->renew_deadline_ms != 0 ? cfg->renew_deadline_ms : LEASE_DEFAULT_RENEW_DEADLINE_MS;
    l->retry_ms = cfg->retry_ms != 0 ? cfg->retry_ms : LEASE_DEFAULT_RETRY_MS;
    l->clock = cfg->clock != NULL ? cfg->clock : clock_system();
    if (l->renew_deadline_ms >= l->duration_ms || l->retry_ms >= l->renew_deadline_ms) {
        return GERR_INVAL;
    }
    return 0;
}

bool lease_valid(const struct lease *l)
{
    return l->held && clock_mono_ms(l->clock) - l->renewed_mono_ms < l->renew_deadline_ms;
}

struct step {
    struct lease *l;
    uint64_t started_mono;
    int64_t now_wall;
    /* outcome */
    bool held;
    uint64_t epoch;
    int64_t renewed_at;
};

static void text(const struct proto_value *v, char *out, size_t len)
{
    snprintf(out, len, "%.*s", v->type == PROTO_TEXT ? (int)v->u.b.n : 0,
             v->type == PROTO_TEXT ? v->u.b.s : "");
}

/* What a contender or the holder does about the row (@holder, @epoch, @renewed_at): *@mine when
 * this replica holds it under that epoch; true when it may take the lease now (released, or the
 * same row version observed unchanged for a whole duration). Updates the observation; calling it
 * twice with the same row, as lease_tick's read and its transaction do, decides the same way. */
static bool decide(struct lease *l, const char *holder, uint64_t epoch, int64_t renewed_at, bool *mine)
{
    *mine = strcmp(holder, l->holder) == 0 && l->held && epoch == l->epoch;
    bool take = false;
    if (*mine) {
        take = false;
    } else if (holder[0] == '\0') {
        take = true; /* released: no wait */
    } else if (l->seen && strcmp(l->seen_holder, holder) == 0 && l->seen_epoch == epoch &&
               l->seen_renewed_at == renewed_at) {
        take = clock_mono_ms(l->clock) - l->seen_since_mono_ms >= l->duration_ms;
    } else {
        /* A new row version: start the observation over. */
        l->seen = true;
        snprintf(l->seen_holder, sizeof l->seen_holder, "%s", holder);
        l->seen_epoch = epoch;
        l->seen_renewed_at = renewed_at;
        l->seen_since_mono_ms = clock_mono_ms(l->clock);
    }
#ifdef GANTRY_PLANT_BUG_STALE_EPOCH
    /* Planted bug (tests/jepsen, docs/reliability.md): a held lease is taken at once, without
     * waiting the holder out, so the old holder still acts while the new one does. */
    take = !*mine;
#endif
    return take;
}

static int step_tx(struct store_tx *tx, void *arg)
{
    struct step *s = arg;
    struct lease *l = s->l;
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(l->name)};
    int rv =
        store_tx_query(tx, "SELECT holder, epoch, renewed_at_ms FROM leases WHERE name = ?", p, 1, &rows);
    if (rv != 0) {
        proto_rows_close(&rows);
        return rv;
    }
    s->held = false;
    if (rows.n_rows == 0) {
        proto_rows_close(&rows);
        s->epoch = 1;
        s->renewed_at = s->now_wall;
        s->held = true;
        struct proto_value ins[] = {proto_text(l->name), proto_text(l->holder), proto_int(s->renewed_at),
                                    proto_int((int64_t)l->duration_ms)};
        return store_tx_exec(
            tx, "INSERT INTO leases (name, holder, epoch, renewed_at_ms, duration_ms) VALUES (?, ?, 1, ?, ?)",
            ins, 4, NULL);
    }
    char holder[128];
    text(proto_rows_at(&rows, 0, 0), holder, sizeof holder);
    uint64_t epoch = (uint64_t)proto_rows_at(&rows, 0, 1)->u.i;
    int64_t renewed_at = proto_rows_at(&rows, 0, 2)->u.i;
    proto_rows_close(&rows);
    bool mine = false;
    bool take = decide(l, holder, epoch, renewed_at, &mine);
    if (mine) {
        s->epoch = epoch;
    }
    if (!mine && !take) {
        return 0;
    }
    if (take) {
        s->epoch = epoch + 1;
    }
    s->renewed_at = s->now_wall > renewed_at ? s->now_wall : renewed_at + 1;
    struct proto_value up[] = {proto_text(l->holder),    proto_int((int64_t)s->epoch),
                               proto_int(s->renewed_at), proto_int((int64_t)l->duration_ms),
                               proto_text(l->name),      proto_int((int64_t)epoch),
                               proto_int(renewed_at)};
    struct store_result res = {0};
    rv = store_tx_exec(tx,
                       "UPDATE leases SET holder = ?1, epoch = ?2, renewed_at_ms = ?3, duration_ms = ?4 "
                       "WHERE name = ?5 AND epoch = ?6 AND renewed_at_ms = ?7",
                       up, 7, &res);
    if (rv == 0 && res.rows_affected == 1) {
        s->held = true;
    }
    return rv;
}

/* A replica that does not hold the lease reads the row first, without a transaction, and opens
 * the write transaction only when it may take the lease (or there is none yet). So contenders do
 * not take the database's write lock every retry_ms: it is the writers' lock, and a contender that
 * stops (SIGSTOP, a frozen VM) between BEGIN and COMMIT would hold it, and every write of the
 * cluster with it, until its connection closes. True when there is nothing to do (*rv: 0, or the
 * read's error, which the caller reports like a failed step). */
static bool contender_waits(struct lease *l, struct store_client *cl, int *rv)
{
    char holder[128];
    uint64_t epoch = 0;
    int64_t renewed_at = 0;
    uint64_t duration = 0;
    *rv = lease_read(cl, l->name, holder, sizeof holder, &epoch, &renewed_at, &duration);
    if (*rv == GERR_NOTFOUND) {
        *rv = 0;
        return false;
    }
    if (*rv != 0) {
        snprintf(l->errmsg, sizeof l->errmsg, "%s", cl->errmsg);
        return true;
    }
    bool mine = false;
    return !decide(l, holder, epoch, renewed_at, &mine) && !mine;
}

int lease_tick(struct lease *l, struct store_client *cl, bool *held, uint64_t *epoch)
{
    struct clock *c = l->clock;
    struct step s = {.l = l, .started_mono = clock_mono_ms(c), .now_wall = (int64_t)c->wall_ms(c)};
    int rv;
    if (!l->held && contender_waits(l, cl, &rv)) {
        *held = false;
        *epoch = 0;
        return rv;
    }
    rv = store_client_tx(cl, step_tx, &s);
    if (rv == 0) {
        bool was = l->held;
        uint64_t old_epoch = l->epoch;
        l->held = s.held;
        if (s.held) {
            l->epoch = s.epoch;
            l->renewed_mono_ms = s.started_mono;
            l->last_renewed_at = s.renewed_at;
            l->seen = false;
            if (!was || old_epoch != s.epoch) {
                LOG_INFO("lease %s: acquired by %s, epoch %" PRIu64, l->name, l->holder, s.epoch);
            }
        } else if (was) {
            LOG_WARN("lease %s: lost (epoch %" PRIu64 ")", l->name, old_epoch);
            l->epoch = 0;
        }
    } else {
        snprintf(l->errmsg, sizeof l->errmsg, "%s", cl->errmsg);
        if (l->held && !lease_valid(l)) {
            LOG_WARN("lease %s: renewal deadline passed (%s): stop acting", l->name, l->errmsg);
            l->held = false;
            l->epoch = 0;
        }
    }
    *held = lease_valid(l);
    *epoch = *held ? l->epoch : 0;
    return rv;
}

int lease_check_tx(struct store_tx *tx, const char *name, const char *holder, uint64_t epoch)
{
    struct proto_value p[] = {proto_text(name), proto_text(holder), proto_int((int64_t)epoch)};
    int64_t n = 0;
    /* Prepared once per connection: every fenced write of the reconciler runs this check. */
    int rv = store_tx_query_prepared_int(
        tx, "SELECT count(*) FROM leases WHERE name = ? AND holder = ? AND epoch = ?", p, 3, &n);
    if (rv == 0 && n != 1) {
        snprintf(store_tx_errmsg(tx), GERR_MSG_SIZE, "lease %s lost: epoch %" PRIu64 " is no longer current",
                 name, epoch);
        return GERR_STALE;
    }
    return rv;
}

int lease_restored_tx(struct store_tx *tx, void *arg)
{
    const int64_t *now_ms = arg;
    struct proto_value p[] = {proto_int(*now_ms)};
    return store_tx_exec(tx, "UPDATE leases SET holder = '', epoch = max(epoch + 1, ?1)", p, 1, NULL);
}

int lease_release(struct lease *l, struct store_client *cl)
{
    if (!l->held) {
        return 0;
    }
    struct proto_value p[] = {proto_text(l->name), proto_text(l->holder), proto_int((int64_t)l->epoch)};
    int rv = store_client_exec(
        cl, "UPDATE leases SET holder = '' WHERE name = ? AND holder = ? AND epoch = ?", p, 3, NULL);
    l->held = false;
    if (rv == 0) {
        LOG_INFO("lease %s: released (epoch %" PRIu64 ")", l->name, l->epoch);
    }
    l->epoch = 0;
    return rv;
}

int lease_read(struct store_client *cl, const char *name, char *holder, size_t holder_len, uint64_t *epoch,
               int64_t *renewed_at_ms, uint64_t *duration_ms)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_text(name)};
    int rv = store_client_query(
        cl, "SELECT holder, epoch, renewed_at_ms, duration_ms FROM leases WHERE name = ?", p, 1, &rows);
    if (rv == 0 && rows.n_rows == 0) {
        rv = GERR_NOTFOUND;
    }
    if (rv == 0) {
        text(proto_rows_at(&rows, 0, 0), holder, holder_len);
        *epoch = (uint64_t)proto_rows_at(&rows, 0, 1)->u.i;
        *renewed_at_ms = proto_rows_at(&rows, 0, 2)->u.i;
        *duration_ms = (uint64_t)proto_rows_at(&rows, 0, 3)->u.i;
    }
    proto_rows_close(&rows);
    return rv;
}
