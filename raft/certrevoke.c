/* Revoking a removed member's certificate. See certrevoke.h.
 *
 * Happy path of the sync thread: record this replica's own certificate once, then every interval
 * read the revoked set from the leader and hand it to the relay. Failure modes: no leader, or the
 * table not there yet (a replica that starts before the migration ran): the relay keeps the last
 * set it was given, the failure is logged once until a round succeeds again, and the next round
 * tries again. */
#include "raft/certrevoke.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "store/events.h"

int certrevoke_note_tx(struct store_tx *tx, void *arg)
{
    const struct certrevoke_cert *c = arg;
    struct proto_value key[] = {proto_int((int64_t)c->member_id), proto_text(c->fingerprint)};
    int64_t have = 0;
    int rv = store_tx_query_int(
        tx, "SELECT count(*) FROM member_certs WHERE member_id = ? AND fingerprint = ?", key, 2, &have);
    if (rv != 0 || have != 0) {
        return rv;
    }
    struct proto_value row[] = {proto_int((int64_t)c->member_id), proto_text(c->fingerprint),
                                proto_int(c->not_after_ms), proto_int(c->now_ms)};
    rv = store_tx_exec(tx,
                       "INSERT INTO member_certs (member_id, fingerprint, not_after_ms, recorded_at_ms) "
                       "VALUES (?, ?, ?, ?)",
                       row, 4, NULL);
    if (rv == 0) {
        char id[24];
        snprintf(id, sizeof id, "%" PRIu64, c->member_id);
        rv = store_event_tx(tx, "MemberCertificate", "", id, "ADDED", NULL);
    }
    return rv;
}

int certrevoke_holder_tx(struct store_tx *tx, void *arg)
{
    struct certrevoke_holder *h = arg;
    struct proto_value fp[] = {proto_text(h->fingerprint)};
    int64_t n = 0, id = 0;
    int rv = store_tx_query_int(
        tx, "SELECT count(DISTINCT member_id) FROM member_certs WHERE fingerprint = ?", fp, 1, &n);
    if (rv == 0 && n == 1) {
        rv = store_tx_query_int(tx, "SELECT member_id FROM member_certs WHERE fingerprint = ?", fp, 1, &id);
    }
    h->member_id = rv == 0 && n == 1 ? (uint64_t)id : 0;
    h->members = rv == 0 ? (unsigned)n : 0;
    return rv;
}

int certrevoke_member_tx(struct store_tx *tx, void *arg)
{
    struct certrevoke_member *m = arg;
    struct proto_value two[] = {proto_int((int64_t)m->member_id), proto_int((int64_t)m->member_id)};
    int64_t shared = 0;
    m->revoked = m->shared = 0;
    int rv = store_tx_query_int(tx,
                                "SELECT count(*) FROM member_certs WHERE member_id = ? AND fingerprint IN "
                                "(SELECT fingerprint FROM member_certs WHERE member_id <> ?)",
                                two, 2, &shared);
    if (rv != 0) {
        return rv;
    }
    struct proto_value p[] = {proto_int(m->now_ms), proto_text(m->reason != NULL ? m->reason : ""),
                              proto_int((int64_t)m->member_id), proto_int((int64_t)m->member_id)};
    struct store_result res = {0};
    rv = store_tx_exec(
        tx,
        "INSERT OR IGNORE INTO revoked_certs (fingerprint, member_id, not_after_ms, revoked_at_ms, "
        "reason) SELECT fingerprint, member_id, not_after_ms, ?, ? FROM member_certs "
        "WHERE member_id = ? AND fingerprint NOT IN "
        "(SELECT fingerprint FROM member_certs WHERE member_id <> ?)",
        p, 4, &res);
    if (rv != 0) {
        return rv;
    }
    rv = store_tx_exec(tx, "DELETE FROM member_certs WHERE member_id = ?", two, 1, NULL);
    if (rv == 0 && res.rows_affected > 0) {
        char id[24];
        snprintf(id, sizeof id, "%" PRIu64, m->member_id);
        rv = store_event_tx(tx, "RevokedCertificate", "", id, "ADDED", NULL);
    }
    if (rv == 0) {
        m->revoked = (unsigned)res.rows_affected;
        m->shared = (unsigned)shared;
    }
    return rv;
}

int certrevoke_list(struct store_client *cl, int64_t now_ms, char (**out)[PKI_FINGERPRINT_SIZE], unsigned *n)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    struct proto_value p[] = {proto_int(now_ms), proto_int(PEERTLS_MAX_REVOKED)};
    int rv = store_client_query(
        cl, "SELECT fingerprint FROM revoked_certs WHERE not_after_ms > ? ORDER BY fingerprint LIMIT ?", p, 2,
        &rows);
    *out = NULL;
    *n = 0;
    if (rv == 0) {
        *out = mem_zalloc(sizeof **out * (rows.n_rows + 1));
        for (size_t i = 0; i < rows.n_rows; i++) {
            const struct proto_value *v = proto_rows_at(&rows, i, 0);
            if (v->type == PROTO_TEXT && v->u.b.n < PKI_FINGERPRINT_SIZE) {
                memcpy((*out)[*n], v->u.b.s, v->u.b.n);
                (*out)[*n][v->u.b.n] = '\0';
                (*n)++;
            }
        }
    }
    proto_rows_close(&rows);
    return rv;
}

/* ------------------------------------------------------------------------------------------------
 * The sync thread */

struct certrevoke_sync {
    struct store_client cl;
    struct peertls *relay;
    uint64_t member_id;
    unsigned interval_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop; /* under mu */
};

static int64_t wall_now_ms(void)
{
    struct clock *c = clock_system();
    return (int64_t)c->wall_ms(c);
}

static void *sync_main(void *arg)
{
    struct certrevoke_sync *s = arg;
    bool noted = false, failing = false;
    char fp[PKI_FINGERPRINT_SIZE] = "";
    int64_t not_after = 0;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        pthread_mutex_unlock(&s->mu);
        int rv = 0;
        char now_fp[PKI_FINGERPRINT_SIZE];
        peertls_own_cert(s->relay, now_fp, &not_after);
        if (strcmp(now_fp, fp) != 0) { /* at first, and after a renewal reloaded the relay */
            memcpy(fp, now_fp, sizeof fp);
            noted = false;
        }
        if (!noted) {
            struct certrevoke_cert c = {.member_id = s->member_id,
                                        .fingerprint = fp,
                                        .not_after_ms = not_after,
                                        .now_ms = wall_now_ms()};
            rv = store_client_tx(&s->cl, certrevoke_note_tx, &c);
            noted = rv == 0;
        }
        char(*set)[PKI_FINGERPRINT_SIZE] = NULL;
        unsigned n = 0;
        if (rv == 0) {
            rv = certrevoke_list(&s->cl, wall_now_ms(), &set, &n);
        }
        if (rv == 0) {
            char err[GERR_MSG_SIZE];
            rv = peertls_set_revoked(s->relay, (const char(*)[PKI_FINGERPRINT_SIZE])set, n, err);
            if (rv != 0) {
                snprintf(s->cl.errmsg, sizeof s->cl.errmsg, "%s", err);
            }
        }
        mem_free(set);
        if (rv != 0 && !failing) {
            LOG_WARN(
                "certificate revocations: cannot read them yet (%s); the relay keeps its last set and this "
                "replica tries again every %u ms",
                s->cl.errmsg, s->interval_ms);
        } else if (rv == 0 && failing) {
            LOG_INFO("certificate revocations: read again (%u revoked)", n);
        }
        failing = rv != 0;
        pthread_mutex_lock(&s->mu);
        struct timespec until;
        clock_mono_deadline(&until, s->interval_ms);
        while (!s->stop && clock_cond_wait_mono(&s->cond, &s->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int certrevoke_sync_start(const struct certrevoke_sync_config *cfg, struct certrevoke_sync **out,
                          char *errmsg)
{
    struct certrevoke_sync *s = mem_zalloc(sizeof *s);
    int rv = store_client_init(&s->cl, cfg->store);
    if (rv != 0) {
        gerr_set(errmsg, "certificate revocations: %s", s->cl.errmsg);
        goto err;
    }
    s->relay = cfg->relay;
    s->member_id = cfg->member_id;
    s->interval_ms = cfg->interval_ms != 0 ? cfg->interval_ms : CERTREVOKE_INTERVAL_MS;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (pthread_create(&s->thread, NULL, sync_main, s) != 0) {
        gerr_set(errmsg, "certificate revocations: cannot start the thread");
        rv = GERR_NOMEM;
        goto err_after_sync;
    }
    *out = s;
    return 0;

err_after_sync:
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    store_client_close(&s->cl);
err:
    mem_free(s);
    return rv;
}

void certrevoke_sync_stop(struct certrevoke_sync *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    store_client_close(&s->cl);
    mem_free(s);
}
