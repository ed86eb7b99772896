/* Renewing a replica's certificate at start (raft/certrenew.h) in a real data dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "lib/file.h"
#include "lib/mem.h"
#include "raft/cakeeper.h"
#include "raft/certrenew.h"
#include "raft/pki.h"

static char errmsg[GERR_MSG_SIZE];

struct world {
    char dir[256];
    struct identity_secrets sec;
};

static char *read_rel(const char *dir, const char *rel)
{
    char path[512], *out = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    assert_int_equal(file_read_all(path, 1u << 20, &out, NULL, errmsg), 0);
    return out;
}

static int setup(void **state)
{
    struct world *w = mem_zalloc(sizeof *w);
    snprintf(w->dir, sizeof w->dir, "/tmp/gantry-certrenew-XXXXXX");
    assert_non_null(mkdtemp(w->dir));
    assert_int_equal(identity_make_dirs(w->dir, errmsg), 0);
    assert_int_equal(pki_ca_create("test-ca", &w->sec.ca_key_pem, &w->sec.ca_pem, errmsg), 0);
    const char *ips[] = {"127.0.0.1"};
    struct pki_subject s = {.common_name = "replica-2", .ip_sans = ips, .n_ip_sans = 1};
    char *key, *cert;
    assert_int_equal(pki_issue(w->sec.ca_key_pem, w->sec.ca_pem, &s, 10, &key, &cert, errmsg), 0);
    assert_int_equal(identity_tls_save(w->dir, w->sec.ca_pem, cert, key, errmsg), 0);
    mem_free(key);
    mem_free(cert);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", w->dir);
    assert_int_equal(system(cmd), 0);
    identity_secrets_free(&w->sec);
    mem_free(w);
    return 0;
}

static int64_t now_ms(void)
{
    return (int64_t)time(NULL) * 1000;
}

static void renews_only_under_the_threshold(void **state)
{
    struct world *w = *state;
    bool renewed = true;
    int64_t na = 0;
    char *before = read_rel(w->dir, "tls/cert.pem");
    /* 10 days left, threshold 5: nothing to do. */
    assert_int_equal(certrenew_at_start(w->dir, &w->sec, 5, now_ms(), &renewed, &na, errmsg), 0);
    assert_false(renewed);
    assert_true(na - now_ms() < 11ll * 86400 * 1000);
    char *same = read_rel(w->dir, "tls/cert.pem");
    assert_string_equal(before, same);
    /* Threshold 30: renewed, a matching key, the chain file updated, nothing left over. */
    assert_int_equal(certrenew_at_start(w->dir, &w->sec, 30, now_ms(), &renewed, &na, errmsg), 0);
    assert_true(renewed);
    assert_true(na - now_ms() > 800ll * 86400 * 1000);
    char *after = read_rel(w->dir, "tls/cert.pem");
    char *api = read_rel(w->dir, "tls/api.pem");
    assert_string_not_equal(before, after);
    assert_int_equal(strncmp(api, after, strlen(after)), 0);
    assert_int_equal(pki_verify(w->sec.ca_pem, after, errmsg), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/tls/cert.pem.next", w->dir);
    assert_int_not_equal(access(path, F_OK), 0);
    /* And again: fresh now, so left alone. */
    assert_int_equal(certrenew_at_start(w->dir, &w->sec, 30, now_ms(), &renewed, &na, errmsg), 0);
    assert_false(renewed);
    mem_free(before);
    mem_free(same);
    mem_free(after);
    mem_free(api);
}

/* A start that stopped after writing both .next files installs them; one alone is dropped. */
static void an_interrupted_install_is_finished(void **state)
{
    struct world *w = *state;
    const char *ips[] = {"127.0.0.1"};
    struct pki_subject s = {.common_name = "replica-2", .ip_sans = ips, .n_ip_sans = 1};
    char *key, *cert;
    assert_int_equal(pki_issue(w->sec.ca_key_pem, w->sec.ca_pem, &s, 0, &key, &cert, errmsg), 0);
    char kp[512], cp[512];
    snprintf(kp, sizeof kp, "%s/tls/key.pem.next", w->dir);
    snprintf(cp, sizeof cp, "%s/tls/cert.pem.next", w->dir);
    assert_int_equal(identity_write_file(kp, key, strlen(key), 0600, errmsg), 0);
    bool renewed;
    int64_t na;
    char *before = read_rel(w->dir, "tls/cert.pem");
    assert_int_equal(certrenew_at_start(w->dir, &w->sec, 5, now_ms(), &renewed, &na, errmsg), 0);
    char *still = read_rel(w->dir, "tls/cert.pem");
    assert_string_equal(before, still); /* the key alone was never installed */
    assert_int_not_equal(access(kp, F_OK), 0);
    assert_int_equal(identity_write_file(kp, key, strlen(key), 0600, errmsg), 0);
    assert_int_equal(identity_write_file(cp, cert, strlen(cert), 0644, errmsg), 0);
    assert_int_equal(certrenew_at_start(w->dir, &w->sec, 5, now_ms(), &renewed, &na, errmsg), 0);
    assert_false(renewed); /* installed, not renewed: 825 days left */
    char *now_cert = read_rel(w->dir, "tls/cert.pem");
    char *now_key = read_rel(w->dir, "tls/key.pem");
    assert_string_equal(now_cert, cert);
    assert_string_equal(now_key, key);
    assert_int_not_equal(access(kp, F_OK), 0);
    assert_int_not_equal(access(cp, F_OK), 0);
    mem_free(key);
    mem_free(cert);
    mem_free(before);
    mem_free(still);
    mem_free(now_cert);
    mem_free(now_key);
}

/* A replica that joined holds no CA key (raft/identity.h): its secrets load without one, and a
 * certificate under the threshold is kept as it is (and said so in the log), not an error. */
static void without_the_ca_key_nothing_is_renewed(void **state)
{
    struct world *w = *state;
    struct identity_secrets joined = {.ca_pem = w->sec.ca_pem, .ca_key_pem = NULL};
    memset(joined.pepper, 7, sizeof joined.pepper);
    assert_int_equal(identity_secrets_save(w->dir, &joined, errmsg), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/secrets/ca-key.pem", w->dir);
    assert_int_not_equal(access(path, F_OK), 0);
    struct identity_secrets loaded;
    assert_int_equal(identity_secrets_load(w->dir, &loaded, errmsg), 0);
    assert_null(loaded.ca_key_pem);
    assert_string_equal(loaded.ca_pem, w->sec.ca_pem);
    assert_memory_equal(loaded.pepper, joined.pepper, sizeof joined.pepper);
    char *before = read_rel(w->dir, "tls/cert.pem");
    bool renewed = true;
    int64_t na = 0;
    assert_int_equal(certrenew_at_start(w->dir, &loaded, 30, now_ms(), &renewed, &na, errmsg), 0);
    assert_false(renewed);
    assert_true(na - now_ms() < 11ll * 86400 * 1000);
    char *after = read_rel(w->dir, "tls/cert.pem");
    assert_string_equal(before, after);
    identity_secrets_free(&loaded);
    mem_free(before);
    mem_free(after);
    /* A holder's secrets keep the key file. */
    assert_int_equal(identity_secrets_save(w->dir, &w->sec, errmsg), 0);
    assert_int_equal(identity_secrets_load(w->dir, &loaded, errmsg), 0);
    assert_non_null(loaded.ca_key_pem);
    assert_string_equal(loaded.ca_key_pem, w->sec.ca_key_pem);
    identity_secrets_free(&loaded);
}

/* Making a replica a CA holder (gantryd recover --ca-key): only the key of its own CA is taken. */
static void only_the_clusters_ca_key_is_installed(void **state)
{
    struct world *w = *state;
    struct identity_secrets joined = {.ca_pem = w->sec.ca_pem, .ca_key_pem = NULL};
    assert_int_equal(identity_secrets_save(w->dir, &joined, errmsg), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/secrets/ca-key.pem", w->dir);
    char *other_key = NULL, *other_ca = NULL;
    assert_int_equal(pki_ca_create("other-ca", &other_key, &other_ca, errmsg), 0);
    assert_int_equal(identity_check_ca_key(w->dir, other_key, errmsg), GERR_PERM);
    assert_int_equal(identity_install_ca_key(w->dir, other_key, errmsg), GERR_PERM);
    assert_non_null(strstr(errmsg, "not the private key of the CA"));
    assert_int_equal(identity_install_ca_key(w->dir, "not a key", errmsg), GERR_PERM);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_equal(identity_check_ca_key(w->dir, w->sec.ca_key_pem, errmsg), 0);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_equal(identity_install_ca_key(w->dir, w->sec.ca_key_pem, errmsg), 0);
    char *installed = read_rel(w->dir, "secrets/ca-key.pem");
    assert_string_equal(installed, w->sec.ca_key_pem);
    mem_free(installed);
    mem_free(other_key);
    mem_free(other_ca);
}

static void a_missing_certificate_is_an_error(void **state)
{
    struct world *w = *state;
    char path[512];
    snprintf(path, sizeof path, "%s/tls/cert.pem", w->dir);
    assert_int_equal(unlink(path), 0);
    bool renewed;
    int64_t na;
    assert_int_equal(certrenew_at_start(w->dir, &w->sec, 30, now_ms(), &renewed, &na, errmsg), GERR_NOTFOUND);
    assert_false(renewed);
}

/* What the stand-in holder does with a request (certrenew_sign_fn). */
struct fake_holder {
    const struct identity_secrets *sec;
    enum { SIGN, REFUSE, OTHER_KEY, FOREIGN_CA } mode;
    unsigned calls;
};

static int fake_sign(void *arg, const char *csr_pem, const char *cert_pem, char **cert_out, char *err)
{
    struct fake_holder *h = arg;
    h->calls++;
    switch (h->mode) {
    case SIGN:
        return pki_renew_csr(h->sec->ca_key_pem, h->sec->ca_pem, cert_pem, csr_pem, 0, cert_out, err);
    case REFUSE:
        gerr_set(err, "no holder answered");
        return GERR_UNAVAILABLE;
    case OTHER_KEY: {
        char *key = NULL;
        int rv = pki_renew(h->sec->ca_key_pem, h->sec->ca_pem, cert_pem, 0, &key, cert_out, err);
        mem_free(key);
        return rv;
    }
    case FOREIGN_CA: {
        char *ca_key = NULL, *ca = NULL;
        assert_int_equal(pki_ca_create("foreign", &ca_key, &ca, err), 0);
        int rv = pki_renew_csr(ca_key, ca, cert_pem, csr_pem, 0, cert_out, err);
        mem_free(ca_key);
        mem_free(ca);
        return rv;
    }
    }
    return GERR_INTERNAL;
}

/* A replica without the CA key renews through a holder: the holder's certificate is installed
 * only when it verifies against the cluster CA and matches the new key; anything else leaves the
 * files as they were. */
static void without_the_key_a_holder_signs(void **state)
{
    struct world *w = *state;
    struct identity_secrets joined = {.ca_pem = w->sec.ca_pem, .ca_key_pem = NULL};
    struct fake_holder h = {.sec = &w->sec};
    char *before = read_rel(w->dir, "tls/cert.pem");
    bool renewed = true;
    int64_t na = 0;
    /* Not due (10 days left, threshold 5): the holder is not asked. */
    assert_int_equal(certrenew_run(w->dir, &joined, 5, now_ms(), false, fake_sign, &h, &renewed, &na, errmsg),
                     0);
    assert_false(renewed);
    assert_int_equal(h.calls, 0);
    /* Due, but the holder sends what must not be installed, or nothing. */
    int modes[] = {REFUSE, OTHER_KEY, FOREIGN_CA};
    int want[] = {GERR_UNAVAILABLE, GERR_INVAL, GERR_INVAL};
    for (unsigned i = 0; i < 3; i++) {
        h.mode = modes[i];
        assert_int_equal(
            certrenew_run(w->dir, &joined, 30, now_ms(), false, fake_sign, &h, &renewed, &na, errmsg),
            want[i]);
        assert_false(renewed);
        char *same = read_rel(w->dir, "tls/cert.pem");
        assert_string_equal(before, same);
        mem_free(same);
    }
    /* Signed properly: installed, with the old names, and the new key. */
    h.mode = SIGN;
    assert_int_equal(
        certrenew_run(w->dir, &joined, 30, now_ms(), false, fake_sign, &h, &renewed, &na, errmsg), 0);
    assert_true(renewed);
    assert_true(na - now_ms() > 800ll * 86400 * 1000);
    char *cert = read_rel(w->dir, "tls/cert.pem");
    char *key = read_rel(w->dir, "tls/key.pem");
    assert_string_not_equal(cert, before);
    assert_int_equal(pki_check_pair(cert, key, errmsg), 0);
    assert_int_equal(pki_verify(w->sec.ca_pem, cert, errmsg), 0);
    /* Forced: renewed again even though nothing is due. */
    assert_int_equal(certrenew_run(w->dir, &joined, 30, now_ms(), true, fake_sign, &h, &renewed, &na, errmsg),
                     0);
    assert_true(renewed);
    mem_free(before);
    mem_free(cert);
    mem_free(key);
}

/* pki_renew_csr takes the names of the old certificate, never the CSR's. */
static void a_csr_cannot_choose_its_names(void **state)
{
    struct world *w = *state;
    char *key = NULL, *csr = NULL, *cert = NULL;
    assert_int_equal(pki_csr_create("evil.example", &key, &csr, errmsg), 0);
    char *old = read_rel(w->dir, "tls/cert.pem");
    assert_int_equal(pki_renew_csr(w->sec.ca_key_pem, w->sec.ca_pem, old, csr, 0, &cert, errmsg), 0);
    assert_int_equal(pki_check_pair(cert, key, errmsg), 0);
    /* Its common name is the old one's, not the CSR's. */
    BIO *b = BIO_new_mem_buf(cert, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    char cn[64] = "";
    assert_non_null(x);
    assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) > 0);
    assert_string_equal(cn, "replica-2");
    X509_free(x);
    BIO_free(b);
    assert_int_equal(pki_check_pair(old, key, errmsg), GERR_INVAL);
    mem_free(cert);
    assert_int_equal(pki_renew_csr(w->sec.ca_key_pem, w->sec.ca_pem, old, "not a CSR", 0, &cert, errmsg),
                     GERR_INVAL);
    mem_free(key);
    mem_free(csr);
    mem_free(cert);
    mem_free(old);
}

/* The CA keeper (raft/cakeeper.h): a rotation's swap, the bundle's fingerprints, bad input refused
 * without a change; pki_verify takes a bundle. */
static void the_ca_keeper_swaps_and_trusts_a_bundle(void **state)
{
    struct world *w = *state;
    struct cakeeper *k = NULL;
    assert_int_equal(cakeeper_new(w->sec.ca_pem, NULL, &k, errmsg), 0);
    assert_false(cakeeper_can_sign(k));
    char old_fp[PKI_FINGERPRINT_SIZE], new_fp[PKI_FINGERPRINT_SIZE], fp[PKI_FINGERPRINT_SIZE];
    assert_int_equal(pki_fingerprint(w->sec.ca_pem, old_fp, errmsg), 0);
    cakeeper_fingerprint(k, fp);
    assert_string_equal(fp, old_fp);
    char *nkey = NULL, *nca = NULL;
    assert_int_equal(pki_ca_create("next", &nkey, &nca, errmsg), 0);
    assert_int_equal(pki_fingerprint(nca, new_fp, errmsg), 0);
    assert_false(cakeeper_trusts(k, new_fp));
    size_t n = strlen(nca) + strlen(w->sec.ca_pem) + 1;
    char *bundle = mem_alloc(n);
    snprintf(bundle, n, "%s%s", nca, w->sec.ca_pem);
    assert_int_equal(cakeeper_set(k, nca, nkey, bundle, errmsg), 0);
    assert_true(cakeeper_can_sign(k));
    assert_true(cakeeper_trusts(k, new_fp));
    assert_true(cakeeper_trusts(k, old_fp));
    cakeeper_fingerprint(k, fp);
    assert_string_equal(fp, new_fp);
    char *ca = NULL, *key = NULL;
    cakeeper_signer(k, &ca, &key);
    assert_string_equal(ca, nca);
    assert_string_equal(key, nkey);
    /* A certificate of either CA verifies against the bundle, and only against its own CA alone. */
    char *old_cert = read_rel(w->dir, "tls/cert.pem");
    assert_int_equal(pki_verify(bundle, old_cert, errmsg), 0);
    assert_int_equal(pki_verify(nca, old_cert, errmsg), GERR_PERM);
    /* Bad input: refused, nothing changes. */
    assert_int_equal(cakeeper_set(k, "junk", NULL, bundle, errmsg), GERR_INVAL);
    assert_int_equal(cakeeper_set(k, nca, NULL, "junk", errmsg), GERR_INVAL);
    assert_true(cakeeper_can_sign(k));
    assert_true(cakeeper_trusts(k, old_fp));
    /* The finish: the new CA alone. */
    assert_int_equal(cakeeper_set(k, nca, nkey, nca, errmsg), 0);
    assert_false(cakeeper_trusts(k, old_fp));
    char *b = cakeeper_bundle(k);
    assert_string_equal(b, nca);
    mem_free(b);
    mem_free(ca);
    mem_free(key);
    mem_free(old_cert);
    mem_free(bundle);
    mem_free(nkey);
    mem_free(nca);
    cakeeper_free(k);
}

/* secrets/ca-key.pem must be secrets/ca.pem's key; a rotation stopped between the two writes (the
 * key first) leaves the new CA in secrets/ca-next.pem, which is taken. */
static void the_ca_key_must_match_the_ca(void **state)
{
    struct world *w = *state;
    assert_int_equal(identity_secrets_save(w->dir, &w->sec, errmsg), 0);
    struct identity_secrets got;
    assert_int_equal(identity_secrets_load(w->dir, &got, errmsg), 0);
    assert_string_equal(got.ca_pem, w->sec.ca_pem);
    identity_secrets_free(&got);
    char *other_key = NULL, *other_ca = NULL;
    assert_int_equal(pki_ca_create("next-ca", &other_key, &other_ca, errmsg), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/secrets/ca-key.pem", w->dir);
    assert_int_equal(identity_write_file(path, other_key, strlen(other_key), 0600, errmsg), 0);
    assert_int_equal(identity_secrets_load(w->dir, &got, errmsg), GERR_PERM);
    assert_non_null(strstr(errmsg, "is not the private key of the CA in"));
    assert_null(got.ca_pem);
    /* The new CA waiting in ca-next.pem: the interrupted retirement is taken. */
    snprintf(path, sizeof path, "%s/secrets/ca-next.pem", w->dir);
    assert_int_equal(identity_write_file(path, other_ca, strlen(other_ca), 0600, errmsg), 0);
    assert_int_equal(identity_secrets_load(w->dir, &got, errmsg), 0);
    assert_string_equal(got.ca_pem, other_ca);
    assert_string_equal(got.ca_key_pem, other_key);
    identity_secrets_free(&got);
    /* Without a key (a replica that joined) there is nothing to pair. */
    snprintf(path, sizeof path, "%s/secrets/ca-key.pem", w->dir);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(identity_secrets_load(w->dir, &got, errmsg), 0);
    assert_null(got.ca_key_pem);
    identity_secrets_free(&got);
    mem_free(other_key);
    mem_free(other_ca);
}

/* A certificate signed here with a CA key that tls/ca.pem does not trust is not installed. */
static void a_local_renewal_is_verified_before_it_is_installed(void **state)
{
    struct world *w = *state;
    struct identity_secrets wrong = {.ca_pem = NULL};
    assert_int_equal(pki_ca_create("stray-ca", &wrong.ca_key_pem, &wrong.ca_pem, errmsg), 0);
    char *before = read_rel(w->dir, "tls/cert.pem");
    bool renewed = true;
    int64_t na = 0;
    assert_int_equal(certrenew_run(w->dir, &wrong, 30, now_ms(), true, NULL, NULL, &renewed, &na, errmsg),
                     GERR_INVAL);
    assert_false(renewed);
    assert_non_null(strstr(errmsg, "does not verify against tls/ca.pem"));
    assert_true(na - now_ms() < 11ll * 86400 * 1000);
    char *after = read_rel(w->dir, "tls/cert.pem");
    assert_string_equal(before, after);
    char path[512];
    snprintf(path, sizeof path, "%s/tls/cert.pem.next", w->dir);
    assert_int_not_equal(access(path, F_OK), 0);
    mem_free(after);
    /* The right key still renews. */
    assert_int_equal(certrenew_run(w->dir, &w->sec, 30, now_ms(), true, NULL, NULL, &renewed, &na, errmsg),
                     0);
    assert_true(renewed);
    after = read_rel(w->dir, "tls/cert.pem");
    assert_string_not_equal(before, after);
    mem_free(before);
    mem_free(after);
    identity_secrets_free(&wrong);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(renews_only_under_the_threshold, setup, teardown),
        cmocka_unit_test_setup_teardown(an_interrupted_install_is_finished, setup, teardown),
        cmocka_unit_test_setup_teardown(without_the_ca_key_nothing_is_renewed, setup, teardown),
        cmocka_unit_test_setup_teardown(only_the_clusters_ca_key_is_installed, setup, teardown),
        cmocka_unit_test_setup_teardown(a_missing_certificate_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(without_the_key_a_holder_signs, setup, teardown),
        cmocka_unit_test_setup_teardown(a_csr_cannot_choose_its_names, setup, teardown),
        cmocka_unit_test_setup_teardown(the_ca_keeper_swaps_and_trusts_a_bundle, setup, teardown),
        cmocka_unit_test_setup_teardown(the_ca_key_must_match_the_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(a_local_renewal_is_verified_before_it_is_installed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
