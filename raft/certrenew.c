/* Renewing this replica's peer certificate at start. See certrenew.h. */
#include "raft/certrenew.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lib/file.h"
#include "lib/log.h"
#include "lib/mem.h"
#include "raft/pki.h"

#define PEM_MAX (1u << 20)

static int read_tls(const char *data_dir, const char *rel, char **out, char *errmsg)
{
    char path[4200];
    identity_path(data_dir, rel, path, sizeof path);
    return file_read_all(path, PEM_MAX, out, NULL, errmsg);
}

/* Both .next files present: install them (the previous start stopped part-way). */
static int finish_pending(const char *data_dir, const char *ca_pem, char *errmsg)
{
    char kp[4200], cp[4200];
    identity_path(data_dir, "tls/key.pem.next", kp, sizeof kp);
    identity_path(data_dir, "tls/cert.pem.next", cp, sizeof cp);
    if (access(kp, F_OK) != 0 || access(cp, F_OK) != 0) {
        unlink(kp); /* one alone was never installed: the old pair is whole */
        unlink(cp);
        return 0;
    }
    char *key = NULL, *cert = NULL;
    int rv = file_read_all(kp, PEM_MAX, &key, NULL, errmsg);
    if (rv == 0) {
        rv = file_read_all(cp, PEM_MAX, &cert, NULL, errmsg);
    }
    if (rv == 0) {
        rv = identity_tls_save(data_dir, ca_pem, cert, key, errmsg);
    }
    if (rv == 0) {
        LOG_WARN(
            "certificate renewal: installed the certificate a previous start renewed but did not install");
        unlink(kp);
        unlink(cp);
    }
    mem_free(key);
    mem_free(cert);
    return rv;
}

/* The new pair into tls/ (see the header). On error the installed pair is whole, or the .next
 * files hold the new one for the next start. */
static int install(const char *data_dir, const char *ca, const char *cert, const char *key, char *errmsg)
{
    char kp[4200], cp[4200];
    identity_path(data_dir, "tls/key.pem.next", kp, sizeof kp);
    identity_path(data_dir, "tls/cert.pem.next", cp, sizeof cp);
    int rv = identity_write_file(kp, key, strlen(key), 0600, errmsg);
    if (rv == 0) {
        rv = identity_write_file(cp, cert, strlen(cert), 0644, errmsg);
    }
    if (rv != 0) {
        unlink(kp); /* the old pair is untouched */
        unlink(cp);
        return rv;
    }
    rv = identity_tls_save(data_dir, ca, cert, key, errmsg);
    if (rv == 0) {
        unlink(kp);
        unlink(cp);
    } /* else tls/ may hold half of the new pair: the .next files stay for the next start to install */
    return rv;
}

/* A new certificate, from a holder or signed here, before it is installed: it must verify against
 * tls/ca.pem (@ca) and be @key's. A CA key that is not tls/ca.pem's (secrets/ out of step with tls/)
 * fails here instead of installing a certificate nobody trusts. */
static int check_new(const char *ca, const char *cert, const char *key, char *errmsg)
{
    int rv = pki_verify(ca, cert, errmsg);
    if (rv != 0) {
        gerr_wrap(errmsg, "the renewed certificate does not verify against tls/ca.pem");
        return GERR_INVAL;
    }
    return pki_check_pair(cert, key, errmsg);
}

/* A renewal signed by a holder: a new key and CSR here, the certificate from @sign. */
static int renew_remote(const char *ca, const char *old, certrenew_sign_fn sign, void *sign_arg, char **key,
                        char **cert, char *errmsg)
{
    char *csr = NULL;
    /* The common name is the holder's to choose (from @old); the CSR only proves the key. */
    int rv = pki_csr_create("renewal", key, &csr, errmsg);
    if (rv == 0) {
        rv = sign(sign_arg, csr, old, cert, errmsg);
    }
    if (rv == 0) {
        rv = check_new(ca, *cert, *key, errmsg);
    }
    mem_free(csr);
    return rv;
}

static pthread_mutex_t files_mu = PTHREAD_MUTEX_INITIALIZER;

void certrenew_files_lock(void)
{
    pthread_mutex_lock(&files_mu);
}

void certrenew_files_unlock(void)
{
    pthread_mutex_unlock(&files_mu);
}

static int run_locked(const char *data_dir, const struct identity_secrets *secrets, unsigned renew_days,
                      int64_t now_ms, bool force, certrenew_sign_fn sign, void *sign_arg, bool *renewed,
                      int64_t *not_after_ms, char *errmsg);

int certrenew_run(const char *data_dir, const struct identity_secrets *secrets, unsigned renew_days,
                  int64_t now_ms, bool force, certrenew_sign_fn sign, void *sign_arg, bool *renewed,
                  int64_t *not_after_ms, char *errmsg)
{
    certrenew_files_lock();
    int rv = run_locked(data_dir, secrets, renew_days, now_ms, force, sign, sign_arg, renewed, not_after_ms,
                        errmsg);
    certrenew_files_unlock();
    return rv;
}

static int run_locked(const char *data_dir, const struct identity_secrets *secrets, unsigned renew_days,
                      int64_t now_ms, bool force, certrenew_sign_fn sign, void *sign_arg, bool *renewed,
                      int64_t *not_after_ms, char *errmsg)
{
    *renewed = false;
    char *ca = NULL, *old = NULL, *key = NULL, *cert = NULL;
    int rv = read_tls(data_dir, "tls/ca.pem", &ca, errmsg);
    if (rv == 0) {
        rv = read_tls(data_dir, "tls/cert.pem", &old, errmsg);
    }
    if (rv == 0) {
        rv = pki_not_after_ms(old, not_after_ms, errmsg);
    }
    if (rv != 0 || (!force && *not_after_ms - now_ms >= (int64_t)renew_days * 86400 * 1000)) {
        goto out;
    }
    int64_t was = *not_after_ms;
    if (secrets->ca_key_pem != NULL) {
        rv = pki_renew(secrets->ca_key_pem, secrets->ca_pem, old, PKI_CERT_DAYS, &key, &cert, errmsg);
        if (rv == 0) {
            rv = check_new(ca, cert, key, errmsg);
        }
    } else if (sign != NULL) {
        rv = renew_remote(ca, old, sign, sign_arg, &key, &cert, errmsg);
    } else {
        /* No peer channel yet (at start): certrenew_run asks a holder once the replica runs. */
        LOG_WARN("certificate renewal: this replica's certificate has %lld day(s) left (under "
                 "cert_renew_days %u); this replica does not hold the cluster CA key, so a member that "
                 "does signs its renewal once it runs",
                 (long long)((*not_after_ms - now_ms) / 86400000), renew_days);
        goto out;
    }
    if (rv == 0) {
        rv = pki_not_after_ms(cert, not_after_ms, errmsg);
    }
    if (rv == 0) {
        rv = install(data_dir, ca, cert, key, errmsg);
    }
    if (rv == 0) {
        *renewed = true;
        LOG_WARN(
            "certificate renewal: this replica's certificate had %lld day(s) left (cert_renew_days %u%s): "
            "renewed%s, the new one is valid for %lld days",
            (long long)((was - now_ms) / 86400000), renew_days, force ? ", forced" : "",
            secrets->ca_key_pem != NULL ? "" : " by a CA holder",
            (long long)((*not_after_ms - now_ms) / 86400000));
    } else {
        *not_after_ms = was;
        gerr_wrap(errmsg, "certificate renewal");
    }
out:
    mem_free(ca);
    mem_free(old);
    if (key != NULL) {
        memset(key, 0, strlen(key));
    }
    mem_free(key);
    mem_free(cert);
    return rv;
}

int certrenew_at_start(const char *data_dir, const struct identity_secrets *secrets, unsigned renew_days,
                       int64_t now_ms, bool *renewed, int64_t *not_after_ms, char *errmsg)
{
    *renewed = false;
    char *ca = NULL;
    int rv = read_tls(data_dir, "tls/ca.pem", &ca, errmsg);
    if (rv == 0) {
        rv = finish_pending(data_dir, ca, errmsg);
    }
    mem_free(ca);
    if (rv == 0) {
        rv = certrenew_run(data_dir, secrets, renew_days, now_ms, false, NULL, NULL, renewed, not_after_ms,
                           errmsg);
    }
    return rv;
}
