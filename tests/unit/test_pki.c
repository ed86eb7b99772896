/* The cluster PKI: CA, CSR signing, fingerprints, verification, and hostile inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "lib/mem.h"
#include "raft/pki.h"

struct ca {
    char *key;
    char *cert;
};

static char errmsg[GERR_MSG_SIZE];

static void ca_new(struct ca *ca, const char *name)
{
    assert_int_equal(pki_ca_create(name, &ca->key, &ca->cert, errmsg), 0);
    assert_non_null(strstr(ca->key, "BEGIN PRIVATE KEY"));
    assert_non_null(strstr(ca->cert, "BEGIN CERTIFICATE"));
}

static void ca_free(struct ca *ca)
{
    mem_free(ca->key);
    mem_free(ca->cert);
}

static X509 *parse(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(x);
    return x;
}

static void fingerprint_format_and_identity(void **state)
{
    (void)state;
    struct ca a, b;
    char fa[PKI_FINGERPRINT_SIZE], fa2[PKI_FINGERPRINT_SIZE], fb[PKI_FINGERPRINT_SIZE];
    ca_new(&a, "cluster-a");
    ca_new(&b, "cluster-b");
    assert_int_equal(pki_fingerprint(a.cert, fa, errmsg), 0);
    assert_int_equal(pki_fingerprint(a.cert, fa2, errmsg), 0);
    assert_int_equal(pki_fingerprint(b.cert, fb, errmsg), 0);
    assert_int_equal(strlen(fa), 7 + 64);
    assert_memory_equal(fa, "sha256:", 7);
    assert_string_equal(fa, fa2);
    assert_string_not_equal(fa, fb);
    assert_int_equal(pki_fingerprint("not a certificate", fa, errmsg), GERR_INVAL);
    ca_free(&a);
    ca_free(&b);
}

static void issued_cert_verifies_only_against_its_ca(void **state)
{
    (void)state;
    struct ca a, b;
    char *key, *cert;
    const char *ips[] = {"127.0.0.1", "::1"};
    const char *dns[] = {"gantry-0.gantry.svc"};
    struct pki_subject s = {
        .common_name = "replica-1", .ip_sans = ips, .n_ip_sans = 2, .dns_sans = dns, .n_dns_sans = 1};
    ca_new(&a, "cluster-a");
    ca_new(&b, "cluster-b");
    assert_int_equal(pki_issue(a.key, a.cert, &s, 0, &key, &cert, errmsg), 0);
    assert_int_equal(pki_verify(a.cert, cert, errmsg), 0);
    assert_int_equal(pki_verify(b.cert, cert, errmsg), GERR_PERM);
    assert_non_null(strstr(errmsg, "cluster CA"));
    /* The CA key must match the CA certificate. */
    char *k2, *c2;
    assert_int_equal(pki_issue(b.key, a.cert, &s, 0, &k2, &c2, errmsg), GERR_INVAL);
    mem_free(key);
    mem_free(cert);
    ca_free(&a);
    ca_free(&b);
}

static void csr_is_signed_with_the_clusters_names_not_the_requesters(void **state)
{
    (void)state;
    struct ca a;
    char *jkey, *csr, *cert;
    const char *ips[] = {"10.0.0.7"};
    struct pki_subject s = {.common_name = "replica-7", .ip_sans = ips, .n_ip_sans = 1};
    ca_new(&a, "cluster-a");
    assert_int_equal(pki_csr_create("i-would-like-to-be-admin", &jkey, &csr, errmsg), 0);
    assert_int_equal(pki_sign_csr(a.key, a.cert, csr, &s, 30, &cert, errmsg), 0);
    assert_int_equal(pki_verify(a.cert, cert, errmsg), 0);

    X509 *x = parse(cert);
    char cn[128];
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    assert_string_equal(cn, "replica-7");
    assert_int_equal(X509_check_ip_asc(x, "10.0.0.7", 0), 1);
    assert_int_equal(X509_check_ca(x), 0);
    /* The certificate carries the joiner's public key. */
    BIO *b = BIO_new_mem_buf(jkey, -1);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_int_equal(X509_check_private_key(x, k), 1);
    EVP_PKEY_free(k);
    X509_free(x);
    mem_free(jkey);
    mem_free(csr);
    mem_free(cert);
    ca_free(&a);
}

static void hostile_csrs_are_refused(void **state)
{
    (void)state;
    struct ca a;
    char *jkey, *csr, *cert = NULL;
    struct pki_subject s = {.common_name = "replica-2"};
    ca_new(&a, "cluster-a");
    assert_int_equal(pki_sign_csr(a.key, a.cert, "garbage", &s, 0, &cert, errmsg), GERR_INVAL);
    assert_null(cert);
    assert_int_equal(pki_csr_create("x", &jkey, &csr, errmsg), 0);
    /* Flip one character inside the base64 body: the signature no longer matches. */
    char *body = strstr(csr, "\n") + 40;
    *body = *body == 'A' ? 'B' : 'A';
    int rv = pki_sign_csr(a.key, a.cert, csr, &s, 0, &cert, errmsg);
    assert_int_equal(rv, GERR_INVAL);
    assert_null(cert);
    mem_free(jkey);
    mem_free(csr);
    ca_free(&a);
}

static void bad_subject_names_are_refused(void **state)
{
    (void)state;
    struct ca a;
    char *key = NULL, *cert = NULL;
    const char *inject[] = {"1.2.3.4,DNS:evil.example"};
    const char *bad_dns[] = {"two words"};
    struct pki_subject s1 = {.common_name = "r", .ip_sans = inject, .n_ip_sans = 1};
    struct pki_subject s2 = {.common_name = "r", .dns_sans = bad_dns, .n_dns_sans = 1};
    struct pki_subject s3 = {.common_name = ""};
    ca_new(&a, "cluster-a");
    assert_int_equal(pki_issue(a.key, a.cert, &s1, 0, &key, &cert, errmsg), GERR_INVAL);
    assert_int_equal(pki_issue(a.key, a.cert, &s2, 0, &key, &cert, errmsg), GERR_INVAL);
    assert_int_equal(pki_issue(a.key, a.cert, &s3, 0, &key, &cert, errmsg), GERR_INVAL);
    assert_null(key);
    assert_null(cert);
    ca_free(&a);
}

/* The expiry a certificate carries, in Unix milliseconds; garbage is refused. */
static void not_after_is_read(void **state)
{
    (void)state;
    struct ca a;
    char *key, *cert;
    struct pki_subject s = {.common_name = "replica-1"};
    ca_new(&a, "cluster-a");
    assert_int_equal(pki_issue(a.key, a.cert, &s, 30, &key, &cert, errmsg), 0);
    int64_t na = 0;
    assert_int_equal(pki_not_after_ms(cert, &na, errmsg), 0);
    int64_t now = (int64_t)time(NULL) * 1000, want = now + 30ll * 86400 * 1000;
    assert_true(na > want - 120000 && na < want + 120000);
    assert_int_equal(pki_not_after_ms("not a certificate", &na, errmsg), GERR_INVAL);
    mem_free(key);
    mem_free(cert);
    ca_free(&a);
}

/* Renewal: a new key and certificate with the old one's names, from the same CA. */
static void renew_keeps_the_names(void **state)
{
    (void)state;
    struct ca a;
    char *key, *cert, *nkey, *ncert;
    const char *ips[] = {"127.0.0.1", "::1"};
    const char *dns[] = {"gantry-0.gantry.svc", "localhost"};
    struct pki_subject s = {
        .common_name = "replica-7", .ip_sans = ips, .n_ip_sans = 2, .dns_sans = dns, .n_dns_sans = 2};
    ca_new(&a, "cluster-a");
    assert_int_equal(pki_issue(a.key, a.cert, &s, 1, &key, &cert, errmsg), 0);
    assert_int_equal(pki_renew(a.key, a.cert, cert, 0, &nkey, &ncert, errmsg), 0);
    assert_int_equal(pki_verify(a.cert, ncert, errmsg), 0);
    assert_string_not_equal(key, nkey);
    char f1[PKI_FINGERPRINT_SIZE], f2[PKI_FINGERPRINT_SIZE];
    assert_int_equal(pki_fingerprint(cert, f1, errmsg), 0);
    assert_int_equal(pki_fingerprint(ncert, f2, errmsg), 0);
    assert_string_not_equal(f1, f2);
    int64_t old_na, new_na;
    assert_int_equal(pki_not_after_ms(cert, &old_na, errmsg), 0);
    assert_int_equal(pki_not_after_ms(ncert, &new_na, errmsg), 0);
    assert_true(new_na - old_na > 800ll * 86400 * 1000);
    X509 *x = parse(ncert);
    char cn[64];
    assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) > 0);
    assert_string_equal(cn, "replica-7");
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "::1", 0), 1);
    assert_int_equal(X509_check_host(x, "gantry-0.gantry.svc", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "localhost", 0, 0, NULL), 1);
    X509_free(x);
    mem_free(nkey);
    mem_free(ncert);
    assert_int_equal(pki_renew(a.key, a.cert, "garbage", 0, &nkey, &ncert, errmsg), GERR_INVAL);
    mem_free(key);
    mem_free(cert);
    ca_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fingerprint_format_and_identity),
        cmocka_unit_test(issued_cert_verifies_only_against_its_ca),
        cmocka_unit_test(csr_is_signed_with_the_clusters_names_not_the_requesters),
        cmocka_unit_test(hostile_csrs_are_refused),
        cmocka_unit_test(bad_subject_names_are_refused),
        cmocka_unit_test(not_after_is_read),
        cmocka_unit_test(renew_keeps_the_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
