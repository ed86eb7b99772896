/* The cluster's PKI: a CA created at bootstrap, and the certificates it signs for replicas.
 *
 * Every replica holds a certificate from the cluster CA and uses it for mutually authenticated
 * TLS on peer traffic (Raft and dqlite client traffic). A joining replica generates its own key
 * and sends a certificate signing request with its join token; the CA signs it with the
 * identity and addresses the *cluster* decided, never extensions copied from the request. A
 * join token carries the CA's fingerprint so the joiner can verify it reached the right cluster
 * before trusting anything it says (as kubeadm's discovery-token-ca-cert-hash does).
 *
 * Keys are ECDSA P-256; signatures SHA-256. Everything is exchanged as PEM text in heap strings
 * owned by the caller (mem_free). OpenSSL's errors are translated by lib/sslerr.h. */
#ifndef GANTRY_RAFT_PKI_H
#define GANTRY_RAFT_PKI_H

#include <stdint.h>

#include "lib/err.h"

#define PKI_CA_DAYS          3650u
#define PKI_CERT_DAYS        825u
#define PKI_FINGERPRINT_SIZE 72 /* "sha256:" + 64 hex digits + NUL */

/* What a certificate identifies and where it may be used. */
struct pki_subject {
    const char *common_name;    /* e.g. "replica-2" or the CA's name */
    const char *const *ip_sans; /* IPv4/IPv6 literals */
    unsigned n_ip_sans;
    const char *const *dns_sans;
    unsigned n_dns_sans;
};

/* A new CA: its key and self-signed certificate. 0, or an error with @errmsg. */
int pki_ca_create(const char *name, char **key_pem, char **cert_pem, char *errmsg);

/* A new private key and a CSR for @common_name (the joiner's side). */
int pki_csr_create(const char *common_name, char **key_pem, char **csr_pem, char *errmsg);

/* Sign @csr_pem with the CA: the certificate carries @subject (not the CSR's names or
 * extensions), the CSR's public key (after checking the CSR's own signature), usage for both
 * TLS server and client auth, and a random serial. GERR_INVAL for a bad CSR. */
int pki_sign_csr(const char *ca_key_pem, const char *ca_cert_pem, const char *csr_pem,
                 const struct pki_subject *subject, unsigned days, char **cert_pem, char *errmsg);

/* Convenience for bootstrap: a key and a certificate for @subject signed by the CA. */
int pki_issue(const char *ca_key_pem, const char *ca_cert_pem, const struct pki_subject *subject,
              unsigned days, char **key_pem, char **cert_pem, char *errmsg);

/* "sha256:<hex of the DER certificate>". */
int pki_fingerprint(const char *cert_pem, char out[PKI_FINGERPRINT_SIZE], char *errmsg);

/* Renewal: a new key, and a certificate for it signed by the CA with the common name and the IP
 * and DNS names of @old_cert_pem (at most 16 of each), valid @days (0: PKI_CERT_DAYS). GERR_INVAL for
 * an unreadable old certificate or one without a common name. */
int pki_renew(const char *ca_key_pem, const char *ca_cert_pem, const char *old_cert_pem, unsigned days,
              char **key_pem, char **cert_pem, char *errmsg);

/* Renewal for a key held elsewhere: sign @csr_pem (its own signature checked) with the common
 * name and IP and DNS names of @old_cert_pem, never the CSR's. Errors as pki_renew and
 * pki_sign_csr. The caller decides that @old_cert_pem is the requester's (docs/security.md). */
int pki_renew_csr(const char *ca_key_pem, const char *ca_cert_pem, const char *old_cert_pem,
                  const char *csr_pem, unsigned days, char **cert_pem, char *errmsg);

/* 0 if @key_pem is the private key of @cert_pem; GERR_INVAL otherwise (or if either does not
 * parse). */
int pki_check_pair(const char *cert_pem, const char *key_pem, char *errmsg);

/* When @cert_pem expires (its notAfter), in Unix milliseconds. GERR_INVAL for a bad certificate. */
int pki_not_after_ms(const char *cert_pem, int64_t *out, char *errmsg);

/* 0 if @cert_pem chains to a CA of @ca_pem (one certificate, or a bundle of up to 8) and is valid
 * now; GERR_PERM (with the reason) otherwise, GERR_INVAL when nothing parses. */
int pki_verify(const char *ca_pem, const char *cert_pem, char *errmsg);

#endif
