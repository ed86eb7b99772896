/* The cluster PKI on OpenSSL 3. See pki.h. */
#include "raft/pki.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "lib/mem.h"
#include "lib/sslerr.h"

/* ---- PEM in and out of heap strings */

static char *bio_to_string(BIO *bio)
{
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *s = mem_alloc((size_t)n + 1);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    return s;
}

static char *key_to_pem(EVP_PKEY *key)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *s = NULL;
    if (bio != NULL && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1) {
        s = bio_to_string(bio);
    }
    BIO_free(bio);
    return s;
}

static char *cert_to_pem(X509 *cert)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *s = NULL;
    if (bio != NULL && PEM_write_bio_X509(bio, cert) == 1) {
        s = bio_to_string(bio);
    }
    BIO_free(bio);
    return s;
}

static X509 *cert_from_pem(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return x;
}

static EVP_PKEY *key_from_pem(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return k;
}

static X509_REQ *csr_from_pem(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509_REQ *r = bio != NULL ? PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return r;
}

static EVP_PKEY *new_key(void)
{
    return EVP_EC_gen("P-256");
}

/* ---- Certificate building */

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL) {
        return -1;
    }
    int ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 ? 0 : -1;
}

static int set_serial(X509 *cert)
{
    BIGNUM *bn = BN_new();
    int rv = -1;
    /* 127 random bits: positive, unique with overwhelming probability (RFC 5280 allows 20 bytes). */
    if (bn != NULL && BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1 &&
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL) {
        rv = 0;
    }
    BN_free(bn);
    return rv;
}

static int set_name(X509_NAME *name, const char *cn)
{
    return X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"gantry", -1, -1, 0) ==
                       1 &&
                   X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                              0) == 1
               ? 0
               : -1;
}

static bool valid_ip(const char *v)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, v, buf) == 1 || inet_pton(AF_INET6, v, buf) == 1;
}

static bool valid_dns(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > 253) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '.')) {
            return false;
        }
    }
    return true;
}

/* "IP:1.2.3.4,DNS:host" from the subject. Every value is validated first, so nothing can inject
 * another entry into OpenSSL's configuration syntax. */
static int san_string(const struct pki_subject *s, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < s->n_ip_sans + s->n_dns_sans; i++) {
        bool ip = i < s->n_ip_sans;
        const char *v = ip ? s->ip_sans[i] : s->dns_sans[i - s->n_ip_sans];
        if (v == NULL || !(ip ? valid_ip(v) : valid_dns(v))) {
            return GERR_INVAL;
        }
        int k = snprintf(out + n, cap - n, "%s%s:%s", n ? "," : "", ip ? "IP" : "DNS", v);
        if (k < 0 || (size_t)k >= cap - n) {
            return GERR_INVAL;
        }
        n += (size_t)k;
    }
    return 0;
}

/* Build and sign a certificate for @pub with @subject, issued by (@issuer_cert, @issuer_key);
 * a NULL issuer_cert means self-signed (the CA). */
static X509 *build_cert(EVP_PKEY *pub, const struct pki_subject *subject, bool is_ca, X509 *issuer_cert,
                        EVP_PKEY *issuer_key, unsigned days)
{
    char sans[2048];
    X509 *cert = X509_new();
    if (cert == NULL) {
        return NULL;
    }
    if (X509_set_version(cert, X509_VERSION_3) != 1 || set_serial(cert) != 0 ||
        X509_gmtime_adj(X509_getm_notBefore(cert), -300) == NULL || /* 5 minutes of clock skew */
        X509_gmtime_adj(X509_getm_notAfter(cert), (long)days * 86400L) == NULL ||
        X509_set_pubkey(cert, pub) != 1 || set_name(X509_get_subject_name(cert), subject->common_name) != 0) {
        goto err;
    }
    X509 *issuer = issuer_cert != NULL ? issuer_cert : cert;
    if (X509_set_issuer_name(cert, X509_get_subject_name(issuer)) != 1) {
        goto err;
    }
    if (is_ca) {
        if (add_ext(cert, issuer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") != 0 ||
            add_ext(cert, issuer, NID_key_usage, "critical,keyCertSign,cRLSign") != 0 ||
            add_ext(cert, issuer, NID_subject_key_identifier, "hash") != 0) {
            goto err;
        }
    } else {
        if (add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
            add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature,keyEncipherment") != 0 ||
            add_ext(cert, issuer, NID_ext_key_usage, "serverAuth,clientAuth") != 0 ||
            add_ext(cert, issuer, NID_subject_key_identifier, "hash") != 0 ||
            add_ext(cert, issuer, NID_authority_key_identifier, "keyid:always") != 0) {
            goto err;
        }
        if (san_string(subject, sans, sizeof sans) != 0) {
            goto err;
        }
        if (sans[0] != '\0' && add_ext(cert, issuer, NID_subject_alt_name, sans) != 0) {
            goto err;
        }
    }
    if (X509_sign(cert, issuer_key, EVP_sha256()) <= 0) {
        goto err;
    }
    return cert;
err:
    X509_free(cert);
    return NULL;
}

int pki_ca_create(const char *name, char **key_pem, char **cert_pem, char *errmsg)
{
    struct pki_subject subject = {.common_name = name};
    int rv = GERR_INTERNAL;
    *key_pem = *cert_pem = NULL;
    EVP_PKEY *key = new_key();
    if (key == NULL) {
        return sslerr_from_openssl(errmsg, "generate CA key");
    }
    X509 *cert = build_cert(key, &subject, true, NULL, key, PKI_CA_DAYS);
    if (cert == NULL) {
        rv = sslerr_from_openssl(errmsg, "build CA certificate");
        goto err_after_key;
    }
    *key_pem = key_to_pem(key);
    *cert_pem = cert_to_pem(cert);
    if (*key_pem == NULL || *cert_pem == NULL) {
        rv = sslerr_from_openssl(errmsg, "encode CA");
        mem_free(*key_pem);
        mem_free(*cert_pem);
        *key_pem = *cert_pem = NULL;
    } else {
        rv = 0;
    }
    X509_free(cert);
err_after_key:
    EVP_PKEY_free(key);
    return rv;
}

int pki_csr_create(const char *common_name, char **key_pem, char **csr_pem, char *errmsg)
{
    int rv;
    *key_pem = *csr_pem = NULL;
    EVP_PKEY *key = new_key();
    if (key == NULL) {
        return sslerr_from_openssl(errmsg, "generate key");
    }
    X509_REQ *req = X509_REQ_new();
    if (req == NULL || X509_REQ_set_version(req, 0) != 1 ||
        set_name(X509_REQ_get_subject_name(req), common_name) != 0 || X509_REQ_set_pubkey(req, key) != 1 ||
        X509_REQ_sign(req, key, EVP_sha256()) <= 0) {
        rv = sslerr_from_openssl(errmsg, "build CSR");
        goto err_after_req;
    }
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL || PEM_write_bio_X509_REQ(bio, req) != 1) {
        BIO_free(bio);
        rv = sslerr_from_openssl(errmsg, "encode CSR");
        goto err_after_req;
    }
    *csr_pem = bio_to_string(bio);
    BIO_free(bio);
    *key_pem = key_to_pem(key);
    if (*key_pem == NULL) {
        mem_free(*csr_pem);
        *csr_pem = NULL;
        rv = sslerr_from_openssl(errmsg, "encode key");
        goto err_after_req;
    }
    rv = 0;
err_after_req:
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    return rv;
}

/* Load the CA pair and check that the key belongs to the certificate. */
static int load_ca(const char *ca_key_pem, const char *ca_cert_pem, EVP_PKEY **key, X509 **cert, char *errmsg)
{
    *key = key_from_pem(ca_key_pem);
    *cert = cert_from_pem(ca_cert_pem);
    if (*key == NULL || *cert == NULL || X509_check_private_key(*cert, *key) != 1) {
        int rv = sslerr_from_openssl(errmsg, "load CA");
        EVP_PKEY_free(*key);
        X509_free(*cert);
        *key = NULL;
        *cert = NULL;
        return rv == GERR_INTERNAL ? GERR_INVAL : rv;
    }
    return 0;
}

static int sign_pub(const char *ca_key_pem, const char *ca_cert_pem, EVP_PKEY *pub,
                    const struct pki_subject *subject, unsigned days, char **cert_pem, char *errmsg)
{
    EVP_PKEY *ca_key;
    X509 *ca_cert;
    char sans[2048];
    int rv;

    if (subject->common_name == NULL || subject->common_name[0] == '\0' ||
        san_string(subject, sans, sizeof sans) != 0) {
        gerr_set(errmsg, "certificate subject: bad common name or subject alternative name");
        return GERR_INVAL;
    }
    if ((rv = load_ca(ca_key_pem, ca_cert_pem, &ca_key, &ca_cert, errmsg)) != 0) {
        return rv;
    }
    X509 *cert = build_cert(pub, subject, false, ca_cert, ca_key, days == 0 ? PKI_CERT_DAYS : days);
    if (cert == NULL) {
        rv = sslerr_from_openssl(errmsg, "sign certificate");
    } else {
        *cert_pem = cert_to_pem(cert);
        rv = *cert_pem != NULL ? 0 : sslerr_from_openssl(errmsg, "encode certificate");
        X509_free(cert);
    }
    X509_free(ca_cert);
    EVP_PKEY_free(ca_key);
    return rv;
}

int pki_sign_csr(const char *ca_key_pem, const char *ca_cert_pem, const char *csr_pem,
                 const struct pki_subject *subject, unsigned days, char **cert_pem, char *errmsg)
{
    *cert_pem = NULL;
    X509_REQ *req = csr_from_pem(csr_pem);
    if (req == NULL) {
        int rv = sslerr_from_openssl(errmsg, "parse CSR");
        return rv == GERR_INTERNAL ? GERR_INVAL : rv;
    }
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
    /* The CSR must be signed by the key it carries: proof the joiner holds that key. */
    if (pub == NULL || X509_REQ_verify(req, pub) != 1) {
        sslerr_from_openssl(errmsg, "verify CSR signature");
        X509_REQ_free(req);
        return GERR_INVAL;
    }
    int rv = sign_pub(ca_key_pem, ca_cert_pem, pub, subject, days, cert_pem, errmsg);
    X509_REQ_free(req);
    return rv;
}

int pki_issue(const char *ca_key_pem, const char *ca_cert_pem, const struct pki_subject *subject,
              unsigned days, char **key_pem, char **cert_pem, char *errmsg)
{
    *key_pem = *cert_pem = NULL;
    EVP_PKEY *key = new_key();
    if (key == NULL) {
        return sslerr_from_openssl(errmsg, "generate key");
    }
    int rv = sign_pub(ca_key_pem, ca_cert_pem, key, subject, days, cert_pem, errmsg);
    if (rv == 0) {
        *key_pem = key_to_pem(key);
        if (*key_pem == NULL) {
            rv = sslerr_from_openssl(errmsg, "encode key");
            mem_free(*cert_pem);
            *cert_pem = NULL;
        }
    }
    EVP_PKEY_free(key);
    return rv;
}

int pki_fingerprint(const char *cert_pem, char out[PKI_FINGERPRINT_SIZE], char *errmsg)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    X509 *cert = cert_from_pem(cert_pem);
    if (cert == NULL) {
        int rv = sslerr_from_openssl(errmsg, "parse certificate");
        return rv == GERR_INTERNAL ? GERR_INVAL : rv;
    }
    int ok = X509_digest(cert, EVP_sha256(), md, &n);
    X509_free(cert);
    if (ok != 1 || n != 32) {
        return sslerr_from_openssl(errmsg, "certificate digest");
    }
    memcpy(out, "sha256:", 7);
    for (unsigned i = 0; i < n; i++) {
        snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
    }
    return 0;
}

/* The names of an issued certificate, to give a renewal the same ones. */
struct cert_names {
    char cn[256];
    char ips[16][INET6_ADDRSTRLEN], dns[16][254];
    const char *ip_p[16], *dns_p[16];
    struct pki_subject subject;
};

static int names_of(const char *cert_pem, struct cert_names *out, char *errmsg)
{
    memset(out, 0, sizeof *out);
    X509 *old = cert_from_pem(cert_pem);
    if (old == NULL) {
        int rv = sslerr_from_openssl(errmsg, "parse the certificate to renew");
        return rv == GERR_INTERNAL ? GERR_INVAL : rv;
    }
    unsigned n_ip = 0, n_dns = 0;
    int rv = 0;
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(old), NID_commonName, out->cn, sizeof out->cn) <= 0) {
        ERR_clear_error();
        gerr_set(errmsg, "the certificate to renew has no common name");
        rv = GERR_INVAL;
    }
    GENERAL_NAMES *names = X509_get_ext_d2i(old, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; rv == 0 && names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_IPADD && n_ip < 16) {
            int len = ASN1_STRING_length(g->d.iPAddress);
            const unsigned char *d = ASN1_STRING_get0_data(g->d.iPAddress);
            if ((len == 4 || len == 16) &&
                inet_ntop(len == 4 ? AF_INET : AF_INET6, d, out->ips[n_ip], sizeof out->ips[0])) {
                out->ip_p[n_ip] = out->ips[n_ip];
                n_ip++;
            }
        } else if (g->type == GEN_DNS && n_dns < 16) {
            int len = ASN1_STRING_length(g->d.dNSName);
            if (len > 0 && len < (int)sizeof out->dns[0]) {
                memcpy(out->dns[n_dns], ASN1_STRING_get0_data(g->d.dNSName), (size_t)len);
                out->dns[n_dns][len] = '\0';
                out->dns_p[n_dns] = out->dns[n_dns];
                n_dns++;
            }
        }
    }
    GENERAL_NAMES_free(names);
    X509_free(old);
    out->subject = (struct pki_subject){.common_name = out->cn,
                                        .ip_sans = out->ip_p,
                                        .n_ip_sans = n_ip,
                                        .dns_sans = out->dns_p,
                                        .n_dns_sans = n_dns};
    return rv;
}

int pki_renew(const char *ca_key_pem, const char *ca_cert_pem, const char *old_cert_pem, unsigned days,
              char **key_pem, char **cert_pem, char *errmsg)
{
    *key_pem = *cert_pem = NULL;
    struct cert_names *n = mem_alloc(sizeof *n);
    int rv = names_of(old_cert_pem, n, errmsg);
    if (rv == 0) {
        rv = pki_issue(ca_key_pem, ca_cert_pem, &n->subject, days, key_pem, cert_pem, errmsg);
    }
    mem_free(n);
    return rv;
}

int pki_renew_csr(const char *ca_key_pem, const char *ca_cert_pem, const char *old_cert_pem,
                  const char *csr_pem, unsigned days, char **cert_pem, char *errmsg)
{
    *cert_pem = NULL;
    struct cert_names *n = mem_alloc(sizeof *n);
    int rv = names_of(old_cert_pem, n, errmsg);
    if (rv == 0) {
        rv = pki_sign_csr(ca_key_pem, ca_cert_pem, csr_pem, &n->subject, days, cert_pem, errmsg);
    }
    mem_free(n);
    return rv;
}

int pki_check_pair(const char *cert_pem, const char *key_pem, char *errmsg)
{
    X509 *cert = cert_from_pem(cert_pem);
    EVP_PKEY *key = key_from_pem(key_pem);
    int rv = 0;
    if (cert == NULL || key == NULL || X509_check_private_key(cert, key) != 1) {
        sslerr_from_openssl(errmsg, "the certificate does not match the key");
        rv = GERR_INVAL;
    }
    X509_free(cert);
    EVP_PKEY_free(key);
    return rv;
}

int pki_not_after_ms(const char *cert_pem, int64_t *out, char *errmsg)
{
    X509 *cert = cert_from_pem(cert_pem);
    if (cert == NULL) {
        int rv = sslerr_from_openssl(errmsg, "parse certificate");
        return rv == GERR_INTERNAL ? GERR_INVAL : rv;
    }
    struct tm tm;
    int ok = ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm);
    X509_free(cert);
    if (ok != 1) {
        gerr_set(errmsg, "certificate: unreadable notAfter time");
        return GERR_INVAL;
    }
    *out = (int64_t)timegm(&tm) * 1000;
    return 0;
}

int pki_verify(const char *ca_pem, const char *cert_pem, char *errmsg)
{
    X509 *ca = NULL;
    X509 *cert = cert_from_pem(cert_pem);
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int rv;
    unsigned n_ca = 0;

    /* Every certificate of the bundle is a trust anchor (two during a CA rotation). */
    BIO *b = BIO_new_mem_buf(ca_pem, -1);
    while (b != NULL && store != NULL && n_ca < 8 && (ca = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        int added = X509_STORE_add_cert(store, ca);
        X509_free(ca);
        ca = NULL;
        if (added != 1) {
            break;
        }
        n_ca++;
    }
    BIO_free(b);
    ERR_clear_error();
    if (n_ca == 0 || cert == NULL || store == NULL || ctx == NULL) {
        rv = sslerr_from_openssl(errmsg, "load certificates");
        rv = rv == GERR_INTERNAL ? GERR_INVAL : rv;
        goto out;
    }
    if (X509_STORE_CTX_init(ctx, store, cert, NULL) != 1) {
        rv = sslerr_from_openssl(errmsg, "verify setup");
        goto out;
    }
    if (X509_verify_cert(ctx) == 1) {
        rv = 0;
    } else {
        int e = X509_STORE_CTX_get_error(ctx);
        gerr_set(errmsg, "certificate does not verify against the cluster CA: %s",
                 X509_verify_cert_error_string(e));
        ERR_clear_error();
        rv = GERR_PERM;
    }
out:
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    X509_free(cert);
    X509_free(ca);
    return rv;
}
