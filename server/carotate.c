/* Rotating the cluster CA with an overlap. See carotate.h.
 *
 * Happy path of the sync thread: read the three rows; nothing there (never rotated): nothing to
 * do. Otherwise install the bundle if tls/ca.pem differs, point the CA keeper at the signing CA
 * and the key that matches it, force a renewal while this replica's certificate is not from the
 * signing CA, and at "done" retire the old CA from secrets/. Failure modes: the store unreachable
 * (no leader): logged once, the replica keeps what it applied; a file cannot be written: logged,
 * the next round tries again. */
#include "server/carotate.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "api/services/clusterdb.h"
#include "lib/clock.h"
#include "lib/file.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "raft/certrenew.h"
#include "raft/identity.h"
#include "raft/peertls.h"
#include "raft/pki.h"
#include "server/bootstrap.h"
#include "server/config.h"
#include "server/rotate_key.h"
#include "store/events.h"

#define PEM_MAX          (1u << 20)
#define FORCE_EVERY_MS   10000u
#define META_SIGNING     "ca/signing"
#define META_BUNDLE      "ca/bundle"
#define META_PHASE       "ca/phase"
#define PHASE_OVERLAP    "overlap"
#define PHASE_DONE       "done"
#define CHECK_TIMEOUT_MS 3000u

static int64_t wall_now_ms(void)
{
    struct clock *c = clock_system();
    return (int64_t)c->wall_ms(c);
}

struct ca_state {
    char *signing, *bundle; /* NULL: never rotated */
    char phase[16];
};

static void state_free(struct ca_state *st)
{
    mem_free(st->signing);
    mem_free(st->bundle);
    memset(st, 0, sizeof *st);
}

static int meta_get(struct store_client *cl, const char *key, char **out)
{
    struct proto_value p[] = {proto_text(key)};
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    *out = NULL;
    int rv = store_client_query(cl, "SELECT value FROM cluster_meta WHERE key = ?", p, 1, &rows);
    if (rv == 0 && rows.n_rows == 1) {
        const struct proto_value *v = proto_rows_at(&rows, 0, 0);
        if (v->type == PROTO_TEXT) {
            char *s = mem_alloc(v->u.b.n + 1);
            memcpy(s, v->u.b.s, v->u.b.n);
            s[v->u.b.n] = '\0';
            *out = s;
        }
    }
    proto_rows_close(&rows);
    return rv;
}

static int state_read(struct store_client *cl, struct ca_state *st)
{
    memset(st, 0, sizeof *st);
    char *phase = NULL;
    int rv = meta_get(cl, META_SIGNING, &st->signing);
    if (rv == 0) {
        rv = meta_get(cl, META_BUNDLE, &st->bundle);
    }
    if (rv == 0) {
        rv = meta_get(cl, META_PHASE, &phase);
    }
    snprintf(st->phase, sizeof st->phase, "%s", phase != NULL ? phase : "");
    mem_free(phase);
    if (rv != 0 || st->signing == NULL || st->bundle == NULL) {
        mem_free(st->signing);
        mem_free(st->bundle);
        st->signing = st->bundle = NULL;
    }
    return rv;
}

/* Write the state, unless the phase in the store is no longer @expect_phase (another command
 * raced this one): GERR_CONSTRAINT then. */
struct state_write {
    const struct ca_state *st;
    const char *expect_phase; /* "" for "never rotated or done" */
};

static int state_write_tx(struct store_tx *tx, void *arg)
{
    const struct state_write *w = arg;
    struct proto_value k[] = {proto_text(META_PHASE)};
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    int rv = store_tx_query(tx, "SELECT value FROM cluster_meta WHERE key = ?", k, 1, &rows);
    char now_phase[16] = "";
    if (rv == 0 && rows.n_rows == 1 && proto_rows_at(&rows, 0, 0)->type == PROTO_TEXT) {
        const struct proto_value *v = proto_rows_at(&rows, 0, 0);
        snprintf(now_phase, sizeof now_phase, "%.*s", (int)v->u.b.n, v->u.b.s);
    }
    proto_rows_close(&rows);
    if (rv != 0) {
        return rv;
    }
    bool ok = strcmp(w->expect_phase, PHASE_OVERLAP) == 0 ? strcmp(now_phase, PHASE_OVERLAP) == 0
                                                          : strcmp(now_phase, PHASE_OVERLAP) != 0;
    if (!ok) {
        return GERR_CONSTRAINT;
    }
    int64_t now = wall_now_ms();
    rv = clusterdb_meta_put_tx(tx, META_SIGNING, w->st->signing, now);
    if (rv == 0) {
        rv = clusterdb_meta_put_tx(tx, META_BUNDLE, w->st->bundle, now);
    }
    if (rv == 0) {
        rv = clusterdb_meta_put_tx(tx, META_PHASE, w->st->phase, now);
    }
    if (rv == 0) {
        rv = store_event_tx(tx, "ClusterCA", "", "", "MODIFIED", NULL);
    }
    return rv;
}

static int read_rel(const char *data_dir, const char *rel, char **out, char *errmsg)
{
    char path[4200];
    identity_path(data_dir, rel, path, sizeof path);
    return file_read_all(path, PEM_MAX, out, NULL, errmsg);
}

static int write_rel(const char *data_dir, const char *rel, const char *text, unsigned mode, char *errmsg)
{
    char path[4200];
    identity_path(data_dir, rel, path, sizeof path);
    return identity_write_file(path, text, strlen(text), mode, errmsg);
}

static bool exists_rel(const char *data_dir, const char *rel)
{
    char path[4200];
    identity_path(data_dir, rel, path, sizeof path);
    return access(path, F_OK) == 0;
}

static void unlink_rel(const char *data_dir, const char *rel)
{
    char path[4200];
    identity_path(data_dir, rel, path, sizeof path);
    unlink(path);
}

static void wipe_free(char *s)
{
    if (s != NULL) {
        memset(s, 0, strlen(s));
    }
    mem_free(s);
}

/* ------------------------------------------------------------------------------------------------
 * The sync thread */

struct carotate_sync {
    char data_dir[4096];
    struct store_client cl;
    struct cakeeper *ca;
    struct replica *replica;
    struct grpc_server *api;
    struct renewer *renewer;
    unsigned interval_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop;                 /* under mu */
    enum carotate_phase phase; /* under mu */
    /* Sync thread only: what the keeper was last given, and when a renewal was last forced. */
    char applied_signing_fp[PKI_FINGERPRINT_SIZE];
    char *applied_bundle;
    bool applied_key;
    uint64_t forced_ms;
};

/* Which of this replica's CA keys belongs to @signing: secrets/ca-next-key.pem (a rotation this
 * replica began) or secrets/ca-key.pem; NULL when neither does (a replica that joined, or a holder
 * that did not begin this rotation). */
static char *key_for(const char *data_dir, const char *signing)
{
    const char *rels[] = {"secrets/ca-next-key.pem", "secrets/ca-key.pem"};
    for (unsigned i = 0; i < 2; i++) {
        char *key = NULL, err[GERR_MSG_SIZE];
        if (read_rel(data_dir, rels[i], &key, err) == 0 && pki_check_pair(signing, key, err) == 0) {
            return key;
        }
        wipe_free(key);
    }
    return NULL;
}

/* At "done": secrets/ holds the new CA, and its key on a holder that has it. The key is written (or
 * retired) before ca.pem, so a crash between the two leaves either the old pair, or the new key
 * with the new CA still in secrets/ca-next.pem, which identity_secrets_load takes (raft/identity.h);
 * never the new CA with the old key. The next round finishes the rest. */
static int retire_old(struct carotate_sync *s, const char *signing, const char *key, char *errmsg)
{
    char *ca = NULL;
    int rv = 0;
    bool adopted = false;
    if (key != NULL && exists_rel(s->data_dir, "secrets/ca-next-key.pem")) {
        rv = write_rel(s->data_dir, "secrets/ca-key.pem", key, 0600, errmsg);
        adopted = rv == 0;
    } else if (key == NULL && exists_rel(s->data_dir, "secrets/ca-key.pem")) {
        /* A holder of the old CA only: its key signs for a CA nobody trusts any more. */
        char from[4200], to[4200];
        identity_path(s->data_dir, "secrets/ca-key.pem", from, sizeof from);
        identity_path(s->data_dir, "secrets/ca-key.pem.retired", to, sizeof to);
        if (rename(from, to) == 0) {
            LOG_WARN("CA rotation: this replica held only the old CA's key; it is retired as "
                     "secrets/ca-key.pem.retired, and this replica is no longer a CA holder");
        } else {
            rv = gerr_from_errno(errno);
            gerr_set(errmsg, "CA rotation: retire %s: %s", from, strerror(errno));
        }
    }
    if (rv == 0 && (read_rel(s->data_dir, "secrets/ca.pem", &ca, errmsg) != 0 || strcmp(ca, signing) != 0)) {
        rv = write_rel(s->data_dir, "secrets/ca.pem", signing, 0600, errmsg);
    }
    mem_free(ca);
    if (rv == 0 && adopted) {
        unlink_rel(s->data_dir, "secrets/ca-next-key.pem");
        unlink_rel(s->data_dir, "secrets/ca-next.pem");
        LOG_INFO("CA rotation: the new CA's key is this replica's CA key now");
    }
    return rv;
}

/* Install @bundle as tls/ca.pem and the tail of tls/api.pem (under the renewal's file lock).
 * *@changed says whether anything was written. */
static int install_bundle(struct carotate_sync *s, const char *bundle, bool *changed, char *errmsg)
{
    *changed = false;
    char *cur = NULL, *cert = NULL;
    certrenew_files_lock();
    int rv = read_rel(s->data_dir, "tls/ca.pem", &cur, errmsg);
    if (rv == 0 && strcmp(cur, bundle) != 0) {
        rv = read_rel(s->data_dir, "tls/cert.pem", &cert, errmsg);
        struct buf api;
        buf_init(&api);
        if (rv == 0) {
            buf_printf(&api, "%s%s", cert, bundle);
            rv = write_rel(s->data_dir, "tls/api.pem", (const char *)api.data, 0644, errmsg);
        }
        if (rv == 0) {
            rv = write_rel(s->data_dir, "tls/ca.pem", bundle, 0644, errmsg);
        }
        buf_close(&api);
        *changed = rv == 0;
    }
    certrenew_files_unlock();
    mem_free(cur);
    mem_free(cert);
    return rv;
}

static void reload_all(struct carotate_sync *s)
{
    char err[GERR_MSG_SIZE] = "";
    struct peertls *relay = replica_relay(s->replica);
    certrenew_files_lock(); /* the files read whole, not half-way through a renewal */
    if (relay != NULL && peertls_reload(relay, err) != 0) {
        LOG_ERROR("CA rotation: the peer relay could not reload the new trust bundle (%s)", err);
    }
    if (s->api != NULL && grpc_server_reload_tls(s->api, err) != 0) {
        LOG_ERROR("CA rotation: the API server could not reload (%s)", err);
    }
    certrenew_files_unlock();
}

static int round_once(struct carotate_sync *s, char *errmsg)
{
    struct ca_state st;
    int rv = state_read(&s->cl, &st);
    if (rv != 0) {
        snprintf(errmsg, GERR_MSG_SIZE, "%s", s->cl.errmsg);
        return rv;
    }
    if (st.signing == NULL) {
        return 0; /* never rotated */
    }
    enum carotate_phase phase = strcmp(st.phase, PHASE_OVERLAP) == 0 ? CAROTATE_OVERLAP : CAROTATE_DONE;
    bool changed = false;
    rv = install_bundle(s, st.bundle, &changed, errmsg);
    char *key = rv == 0 ? key_for(s->data_dir, st.signing) : NULL;
    char fp[PKI_FINGERPRINT_SIZE] = "";
    if (rv == 0) {
        rv = pki_fingerprint(st.signing, fp, errmsg);
    }
    if (rv == 0 && (strcmp(fp, s->applied_signing_fp) != 0 || s->applied_bundle == NULL ||
                    strcmp(s->applied_bundle, st.bundle) != 0 || s->applied_key != (key != NULL))) {
        rv = cakeeper_set(s->ca, st.signing, key, st.bundle, errmsg);
        if (rv == 0) {
            memcpy(s->applied_signing_fp, fp, sizeof fp);
            mem_free(s->applied_bundle);
            s->applied_bundle = mem_strdup(st.bundle);
            s->applied_key = key != NULL;
            LOG_INFO("CA rotation: phase %s; signing CA %s%s", st.phase, fp,
                     key != NULL ? " (this replica holds its key)" : "");
        }
    }
    if (rv == 0 && phase == CAROTATE_DONE) {
        rv = retire_old(s, st.signing, key, errmsg);
    }
    if (changed) {
        LOG_INFO("CA rotation: installed the trust bundle of phase %s; reloading", st.phase);
        reload_all(s);
    }
    /* This replica's certificate must come from the signing CA: renew it (a holder signs). */
    char *cert = NULL, err[GERR_MSG_SIZE];
    if (rv == 0 && s->renewer != NULL && read_rel(s->data_dir, "tls/cert.pem", &cert, err) == 0 &&
        pki_verify(st.signing, cert, err) != 0) {
        uint64_t now = clock_mono_ms(clock_system());
        if (s->forced_ms == 0 || now - s->forced_ms >= FORCE_EVERY_MS) {
            s->forced_ms = now;
            LOG_INFO("CA rotation: this replica's certificate is not from the signing CA yet: renewing it");
            renewer_force(s->renewer);
        }
    }
    mem_free(cert);
    wipe_free(key);
    if (rv == 0) {
        pthread_mutex_lock(&s->mu);
        s->phase = phase;
        pthread_mutex_unlock(&s->mu);
    }
    state_free(&st);
    return rv;
}

static void *sync_main(void *arg)
{
    struct carotate_sync *s = arg;
    bool failing = false;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        pthread_mutex_unlock(&s->mu);
        char err[GERR_MSG_SIZE] = "";
        int rv = round_once(s, err);
        if (rv != 0 && !failing) {
            LOG_WARN("CA rotation: cannot apply the cluster's CA state yet (%s); trying again every %u ms",
                     err, s->interval_ms);
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

int carotate_sync_start(const struct carotate_sync_config *cfg, struct carotate_sync **out, char *errmsg)
{
    struct carotate_sync *s = mem_zalloc(sizeof *s);
    int rv = store_client_init(&s->cl, cfg->store);
    if (rv != 0) {
        gerr_set(errmsg, "CA rotation: %s", s->cl.errmsg);
        mem_free(s);
        return rv;
    }
    snprintf(s->data_dir, sizeof s->data_dir, "%s", cfg->data_dir);
    s->ca = cfg->ca;
    s->replica = cfg->replica;
    s->api = cfg->api;
    s->renewer = cfg->renewer;
    s->interval_ms = cfg->interval_ms != 0 ? cfg->interval_ms : CAROTATE_INTERVAL_MS;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (pthread_create(&s->thread, NULL, sync_main, s) != 0) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->mu);
        store_client_close(&s->cl);
        mem_free(s);
        gerr_set(errmsg, "CA rotation: cannot start the thread");
        return GERR_NOMEM;
    }
    *out = s;
    return 0;
}

enum carotate_phase carotate_sync_phase(struct carotate_sync *s)
{
    if (s == NULL) {
        return CAROTATE_NONE;
    }
    pthread_mutex_lock(&s->mu);
    enum carotate_phase p = s->phase;
    pthread_mutex_unlock(&s->mu);
    return p;
}

void carotate_sync_stop(struct carotate_sync *s)
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
    mem_free(s->applied_bundle);
    mem_free(s);
}

/* ------------------------------------------------------------------------------------------------
 * gantryd rotate-ca */

struct member_row {
    uint64_t id;
    char peer[256];
};

static int members(struct store_client *cl, struct member_row **out, unsigned *n, char *errmsg)
{
    struct proto_rows rows;
    proto_rows_init(&rows, 0);
    *out = NULL;
    *n = 0;
    int rv = store_client_query(cl, "SELECT id, peer_address FROM members ORDER BY id", NULL, 0, &rows);
    if (rv != 0) {
        gerr_set(errmsg, "%s", cl->errmsg);
    } else {
        *out = mem_zalloc(sizeof **out * (rows.n_rows + 1));
        for (size_t i = 0; i < rows.n_rows; i++) {
            const struct proto_value *id = proto_rows_at(&rows, i, 0), *peer = proto_rows_at(&rows, i, 1);
            if (id->type != PROTO_INTEGER || peer->type != PROTO_TEXT || peer->u.b.n >= sizeof(*out)->peer) {
                continue;
            }
            (*out)[*n].id = (uint64_t)id->u.i;
            memcpy((*out)[*n].peer, peer->u.b.s, peer->u.b.n);
            (*out)[*n].peer[peer->u.b.n] = '\0';
            (*n)++;
        }
    }
    proto_rows_close(&rows);
    return rv;
}

/* How many members' peer ports present a certificate from @signing; each one is printed. */
static int check_members(const struct config *cfg, struct store_client *cl, const char *signing, FILE *out,
                         unsigned *on_new, unsigned *total, char *errmsg)
{
    struct member_row *rows = NULL;
    unsigned n = 0;
    int rv = members(cl, &rows, &n, errmsg);
    char *cert = NULL, *key = NULL;
    if (rv == 0) {
        rv = read_rel(cfg->data_dir, "tls/cert.pem", &cert, errmsg);
    }
    if (rv == 0) {
        rv = read_rel(cfg->data_dir, "tls/key.pem", &key, errmsg);
    }
    struct peertls *only_new = NULL;
    if (rv == 0) {
        /* A relay that trusts the signing CA alone: a member it reaches presents a new certificate. */
        struct peertls_config pc = {.ca_pem = signing, .cert_pem = cert, .key_pem = key};
        rv = peertls_start(&pc, &only_new, errmsg);
    }
    *on_new = *total = 0;
    for (unsigned i = 0; rv == 0 && i < n; i++) {
        int fd = -1;
        char err[GERR_MSG_SIZE] = "";
        int drv = peertls_dial(only_new, rows[i].peer, CHECK_TIMEOUT_MS, &fd, err);
        if (fd >= 0) {
            close(fd);
        }
        (*total)++;
        if (drv == 0) {
            (*on_new)++;
        }
        fprintf(out, "  replica %" PRIu64 " at %s: %s\n", rows[i].id, rows[i].peer,
                drv == 0           ? "certificate from the new CA"
                : drv == GERR_PERM ? "certificate from the old CA"
                                   : err);
    }
    if (only_new != NULL) {
        peertls_stop(only_new);
    }
    wipe_free(key);
    mem_free(cert);
    mem_free(rows);
    return rv;
}

static void print_fps(FILE *out, const char *what, const char *pem)
{
    const char *p = pem, *begin = "-----BEGIN CERTIFICATE-----", *end = "-----END CERTIFICATE-----";
    fprintf(out, "%s:", what);
    while ((p = strstr(p, begin)) != NULL) {
        const char *e = strstr(p, end);
        if (e == NULL) {
            break;
        }
        e += strlen(end);
        char *one = mem_alloc((size_t)(e - p) + 2);
        memcpy(one, p, (size_t)(e - p));
        one[e - p] = '\n';
        one[e - p + 1] = '\0';
        char fp[PKI_FINGERPRINT_SIZE], err[GERR_MSG_SIZE];
        fprintf(out, " %s", pki_fingerprint(one, fp, err) == 0 ? fp : "(unreadable)");
        mem_free(one);
        p = e;
    }
    fprintf(out, "\n");
}

static int cmd_begin(const struct config *cfg, struct store_client *cl, FILE *out, char *errmsg)
{
    struct identity_secrets sec;
    memset(&sec, 0, sizeof sec);
    struct ca_state st;
    int rv = identity_secrets_load(cfg->data_dir, &sec, errmsg);
    if (rv == 0 && sec.ca_key_pem == NULL) {
        gerr_set(errmsg, "this replica does not hold the cluster CA key: run rotate-ca begin on a CA holder");
        rv = GERR_PERM;
    }
    if (rv == 0 && (rv = state_read(cl, &st)) != 0) {
        gerr_set(errmsg, "%s", cl->errmsg);
    }
    if (rv != 0) {
        identity_secrets_free(&sec);
        return rv;
    }
    if (strcmp(st.phase, PHASE_OVERLAP) == 0) {
        gerr_set(errmsg, "a CA rotation is under way already: finish it first (gantryd rotate-ca finish)");
        state_free(&st);
        identity_secrets_free(&sec);
        return GERR_EXISTS;
    }
    /* The CA that signs now: the last rotation's, or the one this holder was made with. */
    const char *old = st.signing != NULL ? st.signing : sec.ca_pem;
    if (pki_check_pair(old, sec.ca_key_pem, errmsg) != 0) {
        gerr_set(errmsg, "this replica's CA key is not the key of the CA that signs now");
        state_free(&st);
        identity_secrets_free(&sec);
        return GERR_PERM;
    }
    char *key = NULL, *ca = NULL, name[64];
    snprintf(name, sizeof name, "gantry cluster CA %" PRId64, wall_now_ms() / 1000);
    rv = pki_ca_create(name, &key, &ca, errmsg);
    if (rv == 0) {
        rv = write_rel(cfg->data_dir, "secrets/ca-next-key.pem", key, 0600, errmsg);
    }
    if (rv == 0) {
        rv = write_rel(cfg->data_dir, "secrets/ca-next.pem", ca, 0600, errmsg);
    }
    struct buf bundle;
    buf_init(&bundle);
    if (rv == 0) {
        buf_printf(&bundle, "%s%s", ca, old); /* the signing CA first */
        struct ca_state next = {.signing = ca, .bundle = (char *)bundle.data};
        snprintf(next.phase, sizeof next.phase, "%s", PHASE_OVERLAP);
        struct state_write w = {.st = &next, .expect_phase = ""};
        rv = store_client_tx(cl, state_write_tx, &w);
        if (rv == GERR_CONSTRAINT) {
            gerr_set(errmsg, "another rotation began meanwhile");
        } else if (rv != 0) {
            gerr_set(errmsg, "%s", cl->errmsg);
        }
    }
    if (rv == 0) {
        char fp[PKI_FINGERPRINT_SIZE], ofp[PKI_FINGERPRINT_SIZE];
        pki_fingerprint(ca, fp, errmsg);
        pki_fingerprint(old, ofp, errmsg);
        fprintf(out,
                "Began a CA rotation: new CA %s (its key stays in this replica's secrets/), old CA %s.\n"
                "Every replica trusts both within a second or two and renews its certificate from the new "
                "CA;\nrun `gantryd rotate-ca status` until every member shows the new CA, then `gantryd "
                "rotate-ca finish`.\n",
                fp, ofp);
    } else {
        unlink_rel(cfg->data_dir, "secrets/ca-next-key.pem");
        unlink_rel(cfg->data_dir, "secrets/ca-next.pem");
    }
    buf_close(&bundle);
    wipe_free(key);
    mem_free(ca);
    state_free(&st);
    identity_secrets_free(&sec);
    return rv;
}

static int cmd_status_finish(const struct config *cfg, struct store_client *cl, bool finish, FILE *out,
                             char *errmsg)
{
    struct ca_state st;
    int rv = state_read(cl, &st);
    if (rv != 0) {
        gerr_set(errmsg, "%s", cl->errmsg);
        return rv;
    }
    if (st.signing == NULL) {
        fprintf(out, "CA rotation: none yet (the CA the cluster was made with signs and is trusted)\n");
        if (finish) {
            gerr_set(errmsg, "no CA rotation is under way (begin one with gantryd rotate-ca begin)");
            rv = GERR_INVAL;
        }
        return rv;
    }
    fprintf(out, "CA rotation: phase %s\n", st.phase);
    print_fps(out, "signing CA", st.signing);
    print_fps(out, "trusted CAs", st.bundle);
    if (finish && strcmp(st.phase, PHASE_OVERLAP) != 0) {
        gerr_set(errmsg, "no CA rotation is under way (begin one with gantryd rotate-ca begin)");
        state_free(&st);
        return GERR_INVAL;
    }
    unsigned on_new = 0, total = 0;
    if (strcmp(st.phase, PHASE_OVERLAP) == 0) {
        fprintf(out, "members:\n");
        rv = check_members(cfg, cl, st.signing, out, &on_new, &total, errmsg);
    }
    if (rv == 0 && finish && (total == 0 || on_new < total)) {
        gerr_set(errmsg,
                 "%u of %u members present a certificate from the new CA: not finishing (wait for their "
                 "renewal, or remove the members that cannot renew)",
                 on_new, total);
        rv = GERR_BUSY;
    }
    if (rv == 0 && finish) {
        struct ca_state next = {.signing = st.signing, .bundle = st.signing};
        snprintf(next.phase, sizeof next.phase, "%s", PHASE_DONE);
        struct state_write w = {.st = &next, .expect_phase = PHASE_OVERLAP};
        rv = store_client_tx(cl, state_write_tx, &w);
        if (rv == GERR_CONSTRAINT) {
            gerr_set(errmsg, "the rotation was finished meanwhile");
        } else if (rv != 0) {
            gerr_set(errmsg, "%s", cl->errmsg);
        } else {
            fprintf(
                out,
                "Finished the CA rotation: only the new CA is trusted now; every replica drops the old one "
                "within a second or two.\n");
        }
    }
    state_free(&st);
    return rv;
}

int carotate_command(const struct config *cfg, const char *action, FILE *out)
{
    if (action == NULL ||
        (strcmp(action, "begin") != 0 && strcmp(action, "finish") != 0 && strcmp(action, "status") != 0)) {
        fprintf(stderr, "gantryd rotate-ca: say begin, finish or status\n");
        return 2;
    }
    char errmsg[GERR_MSG_SIZE] = "", tls[4096];
    identity_path(cfg->data_dir, "tls", tls, sizeof tls);
    struct peertls *relay = NULL;
    int rv =
        cfg->peer_tls_cert[0] != '\0'
            ? peertls_start_files(cfg->peer_tls_ca[0] != '\0' ? cfg->peer_tls_ca : NULL, cfg->peer_tls_cert,
                                  cfg->peer_tls_key, NULL, NULL, NULL, &relay, errmsg)
            : peertls_start_dir(tls, NULL, NULL, NULL, &relay, errmsg);
    struct store_client cl;
    bool cl_ready = false;
    if (rv == 0) {
        const char *addrs[STORE_MAX_ADDRESSES];
        char list[4096];
        unsigned n = rotate_key_peer_addresses(cfg, list, sizeof list, addrs, STORE_MAX_ADDRESSES);
        struct store_client_config sc = {
            .addresses = addrs, .n_addresses = n, .dial = peertls_store_dial, .dial_arg = relay};
        rv = store_client_init(&cl, &sc);
        cl_ready = rv == 0;
        if (rv != 0) {
            gerr_set(errmsg, "%s", cl.errmsg);
        }
    }
    if (rv == 0) {
        rv = strcmp(action, "begin") == 0
                 ? cmd_begin(cfg, &cl, out, errmsg)
                 : cmd_status_finish(cfg, &cl, strcmp(action, "finish") == 0, out, errmsg);
    }
    if (cl_ready) {
        store_client_close(&cl);
    }
    if (relay != NULL) {
        peertls_stop(relay);
    }
    if (rv != 0) {
        fprintf(stderr, "gantryd rotate-ca %s: %s\n", action, errmsg[0] != '\0' ? errmsg : gerr_str(rv));
        return 1;
    }
    return 0;
}
