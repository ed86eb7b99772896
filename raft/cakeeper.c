/* The cluster CA material, replaceable while running. See cakeeper.h. */
#include "raft/cakeeper.h"

#include <pthread.h>
#include <string.h>

#include "lib/mem.h"

#define MAX_CAS 8

struct cakeeper {
    pthread_mutex_t mu;
    char *ca_pem, *ca_key_pem, *bundle_pem;
    char fp[PKI_FINGERPRINT_SIZE];
    char bundle_fps[MAX_CAS][PKI_FINGERPRINT_SIZE];
    unsigned n_bundle;
};

static char *dup_or_null(const char *s)
{
    return s != NULL ? mem_strdup(s) : NULL;
}

static void wipe_free(char *s)
{
    if (s != NULL) {
        memset(s, 0, strlen(s));
    }
    mem_free(s);
}

/* The fingerprints of the certificates in @bundle, in order. */
static int bundle_fps(const char *bundle, char (*out)[PKI_FINGERPRINT_SIZE], unsigned *n, char *errmsg)
{
    *n = 0;
    const char *p = bundle;
    const char *begin = "-----BEGIN CERTIFICATE-----", *end = "-----END CERTIFICATE-----";
    while ((p = strstr(p, begin)) != NULL && *n < MAX_CAS) {
        const char *e = strstr(p, end);
        if (e == NULL) {
            break;
        }
        e += strlen(end);
        size_t len = (size_t)(e - p);
        char *one = mem_alloc(len + 2);
        memcpy(one, p, len);
        one[len] = '\n';
        one[len + 1] = '\0';
        int rv = pki_fingerprint(one, out[*n], errmsg);
        mem_free(one);
        if (rv != 0) {
            return rv;
        }
        (*n)++;
        p = e;
    }
    if (*n == 0) {
        gerr_set(errmsg, "the CA bundle holds no certificate");
        return GERR_INVAL;
    }
    return 0;
}

int cakeeper_new(const char *ca_pem, const char *ca_key_pem, struct cakeeper **out, char *errmsg)
{
    struct cakeeper *k = mem_zalloc(sizeof *k);
    pthread_mutex_init(&k->mu, NULL);
    int rv = cakeeper_set(k, ca_pem, ca_key_pem, ca_pem, errmsg);
    if (rv != 0) {
        cakeeper_free(k);
        return rv;
    }
    *out = k;
    return 0;
}

void cakeeper_free(struct cakeeper *k)
{
    if (k == NULL) {
        return;
    }
    mem_free(k->ca_pem);
    wipe_free(k->ca_key_pem);
    mem_free(k->bundle_pem);
    pthread_mutex_destroy(&k->mu);
    mem_free(k);
}

int cakeeper_set(struct cakeeper *k, const char *ca_pem, const char *ca_key_pem, const char *bundle_pem,
                 char *errmsg)
{
    char fp[PKI_FINGERPRINT_SIZE], fps[MAX_CAS][PKI_FINGERPRINT_SIZE];
    unsigned n = 0;
    int rv = pki_fingerprint(ca_pem, fp, errmsg);
    if (rv == 0) {
        rv = bundle_fps(bundle_pem, fps, &n, errmsg);
    }
    if (rv != 0) {
        return GERR_INVAL;
    }
    char *c = mem_strdup(ca_pem), *key = dup_or_null(ca_key_pem), *b = mem_strdup(bundle_pem);
    pthread_mutex_lock(&k->mu);
    char *oc = k->ca_pem, *ok = k->ca_key_pem, *ob = k->bundle_pem;
    k->ca_pem = c;
    k->ca_key_pem = key;
    k->bundle_pem = b;
    memcpy(k->fp, fp, sizeof fp);
    memcpy(k->bundle_fps, fps, sizeof fps);
    k->n_bundle = n;
    pthread_mutex_unlock(&k->mu);
    mem_free(oc);
    wipe_free(ok);
    mem_free(ob);
    return 0;
}

void cakeeper_signer(struct cakeeper *k, char **ca_pem, char **ca_key_pem)
{
    pthread_mutex_lock(&k->mu);
    *ca_pem = mem_strdup(k->ca_pem);
    *ca_key_pem = dup_or_null(k->ca_key_pem);
    pthread_mutex_unlock(&k->mu);
}

char *cakeeper_bundle(struct cakeeper *k)
{
    pthread_mutex_lock(&k->mu);
    char *b = mem_strdup(k->bundle_pem);
    pthread_mutex_unlock(&k->mu);
    return b;
}

bool cakeeper_can_sign(struct cakeeper *k)
{
    pthread_mutex_lock(&k->mu);
    bool can = k->ca_key_pem != NULL;
    pthread_mutex_unlock(&k->mu);
    return can;
}

void cakeeper_fingerprint(struct cakeeper *k, char out[PKI_FINGERPRINT_SIZE])
{
    pthread_mutex_lock(&k->mu);
    memcpy(out, k->fp, PKI_FINGERPRINT_SIZE);
    pthread_mutex_unlock(&k->mu);
}

bool cakeeper_trusts(struct cakeeper *k, const char *fp)
{
    pthread_mutex_lock(&k->mu);
    bool yes = false;
    for (unsigned i = 0; i < k->n_bundle; i++) {
        yes = yes || strcmp(k->bundle_fps[i], fp) == 0;
    }
    pthread_mutex_unlock(&k->mu);
    return yes;
}
