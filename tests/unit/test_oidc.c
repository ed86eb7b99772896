/* The OIDC authenticator: JWKS from files and from a real HTTPS server (tests/unit/oidc/
 * jwks_server.py, Python standard library) with a test CA made here by the openssl CLI; keys made
 * and tokens signed here with OpenSSL; the fake clock for refresh periods and rate limits. The
 * server logs every request path before answering, so the tests count fetches exactly. */
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "api/auth/oidc.h"
#include "api/auth/tokenreview.h"
#include "lib/file.h"
#include "lib/mem.h"
#include "lib/proc.h"

#define NOW           1795428000LL /* 2026-11-23T10:00:00Z */
#define ISS_A         "https://idp-a.example.com"
#define ISS_B         "https://idp-b.example.com"
#define SERVER_SCRIPT GANTRY_SOURCE_DIR "/tests/unit/oidc/jwks_server.py"
#define SEC           1000000000ull
#define N_THREADS     8

static char errmsg[GERR_MSG_SIZE];
static char dir[] = "/tmp/gantry-test-oidc-XXXXXX";
static EVP_PKEY *key1, *key2, *key_ec, *key_b;
static char *jwk_k1, *jwk_k2, *jwk_e1, *jwk_b1;
static struct proc server;
static int port;
static struct clock_fake fake;
static struct oidc *o;
static char principal[600];

/* ---- Paths, files and the server's request log */

/* "<dir>/<name>" in one of four rotating buffers. */
static const char *in_dir(const char *name)
{
    static char bufs[4][1024];
    static unsigned next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

/* "https://127.0.0.1:<port><path>" in one of four rotating buffers. */
static const char *url_at(int p, const char *path)
{
    static char bufs[4][512];
    static unsigned next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "https://127.0.0.1:%d%s", p, path);
    return b;
}

static const char *url(const char *path)
{
    return url_at(port, path);
}

/* Replace <dir>/<name> atomically, so the server never serves half a document. */
static void put_file(const char *name, const char *content)
{
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", in_dir(name));
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, strlen(content), f), strlen(content));
    assert_int_equal(fclose(f), 0);
    assert_int_equal(rename(tmp, in_dir(name)), 0);
}

/* How many times the server was asked for @path. */
static int requests(const char *path)
{
    char line[1024];
    int n = 0;
    FILE *f = fopen(in_dir("requests.log"), "r");
    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        n += strcmp(line, path) == 0;
    }
    fclose(f);
    return n;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* A TCP port on 127.0.0.1 that nothing listens on (just now). */
static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* Start the HTTPS server on @want (0: any port) and return its port. */
static int spawn_server(struct proc *p, int want, const char *out_name)
{
    char port_arg[16], line[128], perr[GERR_MSG_SIZE];
    snprintf(port_arg, sizeof port_arg, "%d", want);
    const char *argv[] = {"/usr/bin/python3", SERVER_SCRIPT,     "--dir", dir,
                          "--cert",           in_dir("srv.pem"), "--key", in_dir("srv.key"),
                          "--port",           port_arg,          NULL};
    char out_path[1100], err_path[1100];
    snprintf(out_path, sizeof out_path, "%s.out", in_dir(out_name));
    snprintf(err_path, sizeof err_path, "%s.err", in_dir(out_name));
    struct proc_spec spec = {.argv = argv, .stdout_path = out_path, .stderr_path = err_path};
    if (proc_spawn(p, &spec, perr) != 0 || proc_wait_line(p, "READY ", 30000, line, sizeof line, perr) != 0) {
        fprintf(stderr, "jwks server: %s\n", perr);
        return -1;
    }
    return atoi(line + 6);
}

/* ---- Keys, JWKS documents and tokens */

static char *b64url(const uint8_t *p, size_t n)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char *out = mem_alloc(n / 3 * 4 + 5);
    size_t k = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t w = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[k++] = abc[w >> 18];
        out[k++] = abc[(w >> 12) & 63];
        out[k++] = abc[(w >> 6) & 63];
        out[k++] = abc[w & 63];
    }
    if (n - i == 1) {
        out[k++] = abc[p[i] >> 2];
        out[k++] = abc[(p[i] & 3) << 4];
    } else if (n - i == 2) {
        uint32_t w = (uint32_t)p[i] << 8 | p[i + 1];
        out[k++] = abc[w >> 10];
        out[k++] = abc[(w >> 4) & 63];
        out[k++] = abc[(w << 2) & 63];
    }
    out[k] = '\0';
    return out;
}

static char *b64url_str(const char *s)
{
    return b64url((const uint8_t *)s, strlen(s));
}

static char *bn_param_b64(EVP_PKEY *k, const char *name, int pad)
{
    BIGNUM *bn = NULL;
    assert_int_equal(EVP_PKEY_get_bn_param(k, name, &bn), 1);
    int n = pad > 0 ? pad : BN_num_bytes(bn);
    uint8_t *b = mem_alloc((size_t)n);
    assert_int_equal(BN_bn2binpad(bn, b, n), n);
    char *s = b64url(b, (size_t)n);
    mem_free(b);
    BN_free(bn);
    return s;
}

static char *jwk_rsa(EVP_PKEY *k, const char *kid)
{
    char *n = bn_param_b64(k, OSSL_PKEY_PARAM_RSA_N, 0), *e = bn_param_b64(k, OSSL_PKEY_PARAM_RSA_E, 0);
    char *out = mem_alloc(strlen(n) + 200);
    sprintf(out,
            "{\"kty\":\"RSA\",\"use\":\"sig\",\"alg\":\"RS256\",\"kid\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"}",
            kid, n, e);
    mem_free(n);
    mem_free(e);
    return out;
}

static char *jwk_ec(EVP_PKEY *k, const char *kid)
{
    char *x = bn_param_b64(k, OSSL_PKEY_PARAM_EC_PUB_X, 32),
         *y = bn_param_b64(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
    char *out = mem_alloc(300);
    sprintf(out, "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"%s\",\"x\":\"%s\",\"y\":\"%s\"}", kid, x, y);
    mem_free(x);
    mem_free(y);
    return out;
}

/* Write "{"keys":[a,b]}" (b may be NULL) to <dir>/<name>. */
static void put_jwks(const char *name, const char *a, const char *b)
{
    char *doc = mem_alloc(strlen(a) + (b ? strlen(b) : 0) + 32);
    sprintf(doc, "{\"keys\":[%s%s%s]}", a, b ? "," : "", b ? b : "");
    put_file(name, doc);
    mem_free(doc);
}

/* Sign "<b64 header>.<b64 payload>" as RS256 (RSA key) or ES256 (EC key, raw r||s). */
static char *sign_raw(const char *input, EVP_PKEY *key)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t n = 0;
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestSign(md, NULL, &n, (const uint8_t *)input, strlen(input)), 1);
    uint8_t *sig = mem_alloc(n);
    assert_int_equal(EVP_DigestSign(md, sig, &n, (const uint8_t *)input, strlen(input)), 1);
    EVP_MD_CTX_free(md);
    char *out;
    if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC) {
        const uint8_t *p = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)n);
        assert_non_null(es);
        uint8_t raw[64];
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32), 32);
        assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32), 32);
        ECDSA_SIG_free(es);
        out = b64url(raw, 64);
    } else {
        out = b64url(sig, n);
    }
    mem_free(sig);
    return out;
}

/* "<b64 header>.<b64 payload>." plus a signature: by @key, an HMAC with @secret, or none. */
static char *assemble(const char *header, const char *payload, EVP_PKEY *key, const char *secret)
{
    char *h = b64url_str(header), *p = b64url_str(payload);
    char *input = mem_alloc(strlen(h) + strlen(p) + 2);
    sprintf(input, "%s.%s", h, p);
    char *s;
    if (key != NULL) {
        s = sign_raw(input, key);
    } else if (secret != NULL) {
        uint8_t mac[EVP_MAX_MD_SIZE];
        unsigned mac_len = 0;
        assert_non_null(HMAC(EVP_sha256(), secret, (int)strlen(secret), (const uint8_t *)input, strlen(input),
                             mac, &mac_len));
        s = b64url(mac, mac_len);
    } else {
        s = mem_strdup("");
    }
    char *tok = mem_alloc(strlen(input) + strlen(s) + 2);
    sprintf(tok, "%s.%s", input, s);
    mem_free(h);
    mem_free(p);
    mem_free(s);
    mem_free(input);
    return tok;
}

/* A token of issuer @iss for audience @aud, naming key @kid and signed with @key (RS256 or
 * ES256 by the key's type). Subject "alice", email "alice@example.com", valid for a day. */
static char *token(const char *iss, const char *aud, const char *kid, EVP_PKEY *key)
{
    char header[200], payload[600];
    const char *alg = EVP_PKEY_get_base_id(key) == EVP_PKEY_EC ? "ES256" : "RS256";
    snprintf(header, sizeof header, "{\"alg\":\"%s\",\"typ\":\"JWT\",\"kid\":\"%s\"}", alg, kid);
    snprintf(payload, sizeof payload,
             "{\"iss\":\"%s\",\"sub\":\"alice\",\"email\":\"alice@example.com\",\"aud\":\"%s\",\"exp\":%lld,"
             "\"iat\":%lld}",
             iss, aud, NOW + 86400, NOW - 10);
    return assemble(header, payload, key, NULL);
}

/* Verify and free @tok; on success remember the principal. */
static int verify(char *tok)
{
    struct jwt_result r;
    int rc = oidc_verify(o, tok, strlen(tok), &r, errmsg);
    if (rc == 0) {
        snprintf(principal, sizeof principal, "%s", r.principal);
        jwt_result_close(&r);
    } else {
        assert_null(r.principal);
        assert_null(r.claims);
        assert_int_not_equal(rc, GERR_NOTFOUND);
    }
    mem_free(tok);
    return rc;
}

/* ---- Authenticator set-up */

static const char *const aud_gantry[] = {"gantry"};
static const char *const aud_a[] = {"gantry-a"};
static const char *const aud_b[] = {"gantry-b"};

static void url_issuer(struct oidc_issuer_config *c, const char *name, const char *iss, const char *path)
{
    oidc_issuer_config_init(c, name, iss);
    c->audiences = aud_gantry;
    c->n_audiences = 1;
    c->jwks_url = url(path);
    c->ca_file = in_dir("ca.pem");
}

/* One issuer "idp-a" (ISS_A, audience "gantry") whose JWKS is <server>/jwks/<name>. */
static void start_one(const char *name)
{
    struct oidc_issuer_config c;
    char path[256];
    snprintf(path, sizeof path, "/jwks/%s", name);
    url_issuer(&c, "idp-a", ISS_A, path);
    assert_int_equal(oidc_add_issuer(o, &c, errmsg), 0);
    assert_int_equal(oidc_start(o, errmsg), 0);
}

static void advance_s(uint64_t s)
{
    clock_fake_advance(&fake, s * SEC);
}

static struct oidc_issuer_status status_of(const char *name)
{
    struct oidc_issuer_status st;
    assert_int_equal(oidc_issuer_status(o, name, &st), 0);
    return st;
}

static int run(const char *cmd)
{
    int rc = system(cmd);
    if (rc != 0) {
        fprintf(stderr, "failed (%d): %s\n", rc, cmd);
    }
    return rc;
}

/* A CA, a server certificate for 127.0.0.1 and localhost signed by it, and an unrelated CA. */
static int make_certs(void)
{
    char cmd[4096];
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    put_file("ext.cnf", "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    snprintf(cmd, sizeof cmd,
             "cd %s && openssl req -x509 %s -keyout ca.key -out ca.pem -days 2 -subj /CN=gantry-test-ca "
             "2>>openssl.log && openssl req -x509 %s -keyout other.key -out other.pem -days 2 "
             "-subj /CN=other-ca 2>>openssl.log && openssl req %s -keyout srv.key -out srv.csr -subj "
             "/CN=localhost 2>>openssl.log && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key "
             "-CAcreateserial -out srv.pem -days 2 -extfile ext.cnf 2>>openssl.log",
             dir, ec, ec, ec);
    return run(cmd);
}

static int group_setup(void **state)
{
    (void)state;
    if (mkdtemp(dir) == NULL || make_certs() != 0) {
        return -1;
    }
    key1 = EVP_RSA_gen(2048);
    key2 = EVP_RSA_gen(2048);
    key_b = EVP_RSA_gen(2048);
    key_ec = EVP_EC_gen("P-256");
    if (key1 == NULL || key2 == NULL || key_b == NULL || key_ec == NULL) {
        return -1;
    }
    jwk_k1 = jwk_rsa(key1, "k1");
    jwk_k2 = jwk_rsa(key2, "k2");
    jwk_b1 = jwk_rsa(key_b, "b1");
    jwk_e1 = jwk_ec(key_ec, "e1");
    port = spawn_server(&server, 0, "server");
    return port > 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    proc_stop(&server, 10000);
    EVP_PKEY_free(key1);
    EVP_PKEY_free(key2);
    EVP_PKEY_free(key_b);
    EVP_PKEY_free(key_ec);
    mem_free(jwk_k1);
    mem_free(jwk_k2);
    mem_free(jwk_b1);
    mem_free(jwk_e1);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static int setup(void **state)
{
    (void)state;
    clock_fake_init(&fake, 1000 * SEC, (uint64_t)NOW * 1000u);
    o = oidc_new(&fake.base);
    principal[0] = '\0';
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    oidc_free(o);
    o = NULL;
    return 0;
}

/* ---- Sources */

static void file_source(void **state)
{
    (void)state;
    struct oidc_issuer_config c;
    put_jwks("file.json", jwk_k1, NULL);
    oidc_issuer_config_init(&c, "idp-file", ISS_A);
    c.audiences = aud_gantry;
    c.n_audiences = 1;
    c.jwks_file = in_dir("file.json");
    assert_int_equal(oidc_add_issuer(o, &c, errmsg), 0);
    assert_int_equal(oidc_start(o, errmsg), 0);
    assert_int_equal(verify(token(ISS_A, "gantry", "k1", key1)), 0);
    assert_string_equal(principal, "idp-file#alice");
    struct oidc_issuer_status st = status_of("idp-file");
    assert_true(st.has_keys);
    assert_int_equal(st.n_keys, 1);
    assert_int_equal(st.fetches, 1);
    assert_int_equal(st.last_success_wall_ms, (uint64_t)NOW * 1000u);
    /* The file is read again on an unknown kid, once the minimum interval has passed. */
    put_jwks("file.json", jwk_k1, jwk_k2);
    advance_s(30);
    assert_int_equal(verify(token(ISS_A, "gantry", "k2", key2)), 0);
    assert_int_equal(status_of("idp-file").fetches, 2);
    assert_int_equal(status_of("idp-file").n_keys, 2);
}

static void https_source(void **state)
{
    (void)state;
    put_jwks("https.json", jwk_k1, jwk_e1);
    start_one("https.json");
    assert_int_equal(requests("/jwks/https.json"), 1);
    assert_int_equal(verify(token(ISS_A, "gantry", "k1", key1)), 0);
    assert_string_equal(principal, "idp-a#alice");
    assert_int_equal(verify(token(ISS_A, "gantry", "e1", key_ec)), 0);
    assert_int_equal(status_of("idp-a").n_keys, 2);
    assert_int_equal(requests("/jwks/https.json"), 1); /* verification never fetches */
    assert_int_equal(oidc_issuer_status(o, "nope", &(struct oidc_issuer_status){0}), GERR_NOTFOUND);
}

/* ---- Refresh */

static void key_rotation(void **state)
{
    (void)state;
    put_jwks("rot.json", jwk_k1, NULL);
    start_one("rot.json");
    assert_int_equal(verify(token(ISS_A, "gantry", "k1", key1)), 0);
    put_jwks("rot.json", jwk_k2, NULL); /* the IdP rotates: k1 retired, k2 in use */
    advance_s(31);
    assert_int_equal(verify(token(ISS_A, "gantry", "k2", key2)), 0);
    assert_int_equal(requests("/jwks/rot.json"), 2);
    assert_int_equal(verify(token(ISS_A, "gantry", "k2", key2)), 0);
    /* k1 is gone; the next refresh is rate limited, so no fetch. */
    assert_int_equal(verify(token(ISS_A, "gantry", "k1", key1)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "unknown key id \"k1\""));
    assert_int_equal(requests("/jwks/rot.json"), 2);
}

static void unknown_kid_is_rate_limited(void **state)
{
    (void)state;
    put_jwks("rate.json", jwk_k1, NULL);
    start_one("rate.json");
    /* Inside the interval after the initial fetch: no fetch at all. */
    assert_int_equal(verify(token(ISS_A, "gantry", "zz", key2)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "next refresh allowed"));
    assert_int_equal(requests("/jwks/rate.json"), 1);
    advance_s(30);
    assert_int_equal(verify(token(ISS_A, "gantry", "zz", key2)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "just refreshed and has no such key"));
    assert_int_equal(requests("/jwks/rate.json"), 2);
    /* A flood of random kids inside the interval costs nothing. */
    for (int i = 0; i < 50; i++) {
        char kid[16];
        snprintf(kid, sizeof kid, "rnd-%d", i);
        assert_int_equal(verify(token(ISS_A, "gantry", kid, key2)), GERR_UNAUTH);
    }
    advance_s(29);
    assert_int_equal(verify(token(ISS_A, "gantry", "yy", key2)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "next refresh allowed"));
    assert_int_equal(requests("/jwks/rate.json"), 2);
    assert_int_equal(verify(token(ISS_A, "gantry", "k1", key1)), 0); /* known keys keep working */
    advance_s(1);
    assert_int_equal(verify(token(ISS_A, "gantry", "ww", key2)), GERR_UNAUTH);
    assert_int_equal(requests("/jwks/rate.json"), 3);
}

struct worker {
    pthread_barrier_t *go;
    const char *tok;
    int rc;
    char principal[128];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct jwt_result r;
    char msg[GERR_MSG_SIZE];
    pthread_barrier_wait(w->go);
    w->rc = oidc_verify(o, w->tok, strlen(w->tok), &r, msg);
    if (w->rc == 0) {
        snprintf(w->principal, sizeof w->principal, "%s", r.principal);
        jwt_result_close(&r);
    }
    return NULL;
}

static void concurrent_misses_fetch_once(void **state)
{
    (void)state;
    pthread_t t[N_THREADS];
    struct worker w[N_THREADS];
    pthread_barrier_t go;
    put_jwks("conc.json", jwk_k1, NULL);
    start_one("conc.json");
    put_jwks("conc.json", jwk_k1, jwk_k2);
    advance_s(31);
    char *tok = token(ISS_A, "gantry", "k2", key2);
    pthread_barrier_init(&go, NULL, N_THREADS);
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (struct worker){.go = &go, .tok = tok};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].rc, 0);
        assert_string_equal(w[i].principal, "idp-a#alice");
    }
    pthread_barrier_destroy(&go);
    mem_free(tok);
    assert_int_equal(requests("/jwks/conc.json"), 2);
}

static void periodic_refresh(void **state)
{
    (void)state;
    put_jwks("per.json", jwk_k1, NULL);
    start_one("per.json");
    put_jwks("per.json", jwk_k2, NULL);
    assert_int_equal(oidc_refresh_due(o, errmsg), 0);
    advance_s(3599);
    assert_int_equal(oidc_refresh_due(o, errmsg), 0);
    assert_int_equal(requests("/jwks/per.json"), 1);
    advance_s(1);
    assert_int_equal(oidc_refresh_due(o, errmsg), 0);
    assert_int_equal(requests("/jwks/per.json"), 2);
    assert_int_equal(verify(token(ISS_A, "gantry", "k2", key2)), 0);
    assert_int_equal(verify(token(ISS_A, "gantry", "k1", key1)), GERR_UNAUTH);
    assert_int_equal(requests("/jwks/per.json"), 2);
    assert_int_equal(oidc_refresh_due(o, errmsg), 0);
    assert_int_equal(requests("/jwks/per.json"), 2);
}

static void server_down_at_start_then_up(void **state)
{
    (void)state;
    struct oidc_issuer_config c;
    struct proc late;
    int p = free_port();
    put_jwks("late.json", jwk_k1, NULL);
    oidc_issuer_config_init(&c, "idp-late", ISS_A);
    c.audiences = aud_gantry;
    c.n_audiences = 1;
    c.jwks_url = url_at(p, "/jwks/late.json");
    c.ca_file = in_dir("ca.pem");
    assert_int_equal(oidc_add_issuer(o, &c, errmsg), 0);
    assert_int_equal(oidc_start(o, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "idp-late"));
    struct oidc_issuer_status st = status_of("idp-late");
    assert_false(st.has_keys);
    assert_int_equal(st.last_rc, GERR_UNAVAILABLE);
    assert_int_equal(st.failures, 1);
    /* Tokens fail with a message that says why. */
    assert_int_equal(verify(token(ISS_A, "gantry", "k1", key1)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "no JWKS is loaded"));
    assert_non_null(strstr(errmsg, "the last fetch failed"));
    /* Still down when the retry is due. */
    advance_s(30);
    assert_int_equal(oidc_refresh_due(o, errmsg), GERR_UNAVAILABLE);
    assert_int_equal(status_of("idp-late").failures, 2);
    /* Up again: the periodic retry picks it up after the interval. */
    assert_int_equal(spawn_server(&late, p, "late-server"), p);
    advance_s(29);
    assert_int_equal(oidc_refresh_due(o, errmsg), 0);
    assert_int_equal(requests("/jwks/late.json"), 0);
    advance_s(1);
    assert_int_equal(oidc_refresh_due(o, errmsg), 0);
    assert_int_equal(requests("/jwks/late.json"), 1);
    assert_int_equal(verify(token(ISS_A, "gantry", "k1", key1)), 0);
    assert_string_equal(principal, "idp-late#alice");
    st = status_of("idp-late");
    assert_true(st.has_keys);
    assert_int_equal(st.last_rc, 0);
    assert_string_equal(st.last_error, "");
    proc_stop(&late, 10000);
}

static void server_down_then_token_triggers_retry(void **state)
{
    (void)state;
    struct oidc_issuer_config c;
    struct proc late;
    int p = free_port();
    put_jwks("late2.json", jwk_k1, NULL);
    oidc_issuer_config_init(&c, "idp-late", ISS_A);
    c.audiences = aud_gantry;
    c.n_audiences = 1;
    c.jwks_url = url_at(p, "/jwks/late2.json");
    c.ca_file = in_dir("ca.pem");
    assert_int_equal(oidc_add_issuer(o, &c, errmsg), 0);
    assert_int_equal(oidc_start(o, errmsg), GERR_UNAVAILABLE);
    assert_int_equal(spawn_server(&late, p, "late2-server"), p);
    assert_int_equal(verify(token(ISS_A, "gantry", "k1", key1)), GERR_UNAUTH); /* rate limited */
    assert_int_equal(requests("/jwks/late2.json"), 0);
    advance_s(30);
    assert_int_equal(verify(token(ISS_A, "gantry", "k1", key1)), 0);
    assert_int_equal(requests("/jwks/late2.json"), 1);
    proc_stop(&late, 10000);
}

/* ---- Failures of the fetch */

static int start_expect(const char *name, const char *path, void (*tweak)(struct oidc_issuer_config *))
{
    struct oidc_issuer_config c;
    url_issuer(&c, name, ISS_A, path);
    if (tweak != NULL) {
        tweak(&c);
    }
    assert_int_equal(oidc_add_issuer(o, &c, errmsg), 0);
    int rc = oidc_start(o, errmsg);
    if (rc != 0) {
        assert_int_equal(status_of(name).last_rc, rc);
        assert_false(status_of(name).has_keys);
    }
    return rc;
}

static void small_limit(struct oidc_issuer_config *c)
{
    c->max_document = 4096;
}

static void oversized_document(void **state)
{
    (void)state;
    char *pad = mem_alloc(300 * 1024);
    memset(pad, 'A', 300 * 1024 - 1);
    pad[300 * 1024 - 1] = '\0';
    char *big = mem_alloc(strlen(pad) + strlen(jwk_k1) + 64);
    sprintf(big, "{\"keys\":[%s],\"x\":\"%.5000s\"}", jwk_k1, pad);
    put_file("big.json", big);
    sprintf(big, "{\"keys\":[%s],\"x\":\"%s\"}", jwk_k1, pad);
    put_file("huge.json", big);
    assert_int_equal(start_expect("cl", "/jwks/big.json", small_limit), GERR_TOOBIG); /* Content-Length */
    teardown(state);
    setup(state);
    assert_int_equal(start_expect("nolen", "/nolen/big.json", small_limit), GERR_TOOBIG); /* streamed */
    teardown(state);
    setup(state);
    assert_int_equal(start_expect("default", "/nolen/huge.json", NULL), GERR_TOOBIG); /* 256 KiB */
    teardown(state);
    setup(state);
    struct oidc_issuer_config c;
    oidc_issuer_config_init(&c, "file", ISS_A);
    c.audiences = aud_gantry;
    c.n_audiences = 1;
    c.jwks_file = in_dir("big.json");
    c.max_document = 4096;
    assert_int_equal(oidc_add_issuer(o, &c, errmsg), 0);
    assert_int_equal(oidc_start(o, errmsg), GERR_TOOBIG);
    mem_free(pad);
    mem_free(big);
}

static size_t exact_size;

static void exact_limit(struct oidc_issuer_config *c)
{
    c->max_document = exact_size;
}

static void document_of_exactly_the_limit(void **state)
{
    (void)state;
    put_jwks("exact.json", jwk_k1, jwk_k2);
    char *doc;
    size_t len;
    assert_int_equal(file_read_all(in_dir("exact.json"), 1u << 20, &doc, &len, errmsg), 0);
    mem_free(doc);
    exact_size = len;
    assert_int_equal(start_expect("exact", "/nolen/exact.json", exact_limit), 0);
    teardown(state);
    setup(state);
    exact_size = len - 1;
    assert_int_equal(start_expect("exact", "/nolen/exact.json", exact_limit), GERR_TOOBIG);
}

static void no_ca(struct oidc_issuer_config *c)
{
    c->ca_file = NULL;
}

static void other_ca(struct oidc_issuer_config *c)
{
    c->ca_file = in_dir("other.pem");
}

static void missing_ca(struct oidc_issuer_config *c)
{
    c->ca_file = in_dir("missing.pem");
}

static void tls_is_verified(void **state)
{
    (void)state;
    put_jwks("tls.json", jwk_k1, NULL);
    assert_int_equal(start_expect("other-ca", "/jwks/tls.json", other_ca), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "certificate"));
    teardown(state);
    setup(state);
    assert_int_equal(start_expect("system-store", "/jwks/tls.json", no_ca), GERR_UNAVAILABLE);
    teardown(state);
    setup(state);
    assert_int_equal(start_expect("missing-ca", "/jwks/tls.json", missing_ca), GERR_INVAL);
    assert_int_equal(requests("/jwks/tls.json"), 0);
}

static void redirects_only_to_https(void **state)
{
    (void)state;
    put_jwks("redir.json", jwk_k1, NULL);
    assert_int_equal(start_expect("downgrade", "/redirect-http/redir.json", NULL), GERR_REFUSED);
    assert_int_equal(requests("/jwks/redir.json"), 0);
    teardown(state);
    setup(state);
    assert_int_equal(start_expect("https-redirect", "/redirect-https/redir.json", NULL), 0);
    assert_int_equal(requests("/jwks/redir.json"), 1);
}

static void short_timeout(struct oidc_issuer_config *c)
{
    c->timeout_ms = 300;
}

static void bad_answers(void **state)
{
    (void)state;
    put_file("garbage.json", "this is not a JWKS");
    put_file("nokeys.json", "{\"keys\":[]}");
    assert_int_equal(start_expect("garbage", "/jwks/garbage.json", NULL), GERR_INVAL);
    teardown(state);
    setup(state);
    assert_int_equal(start_expect("nokeys", "/jwks/nokeys.json", NULL), GERR_INVAL);
    teardown(state);
    setup(state);
    assert_int_equal(start_expect("missing", "/jwks/missing.json", NULL), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "HTTP status 404"));
    teardown(state);
    setup(state);
    assert_int_equal(start_expect("error", "/status/503", NULL), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "HTTP status 503"));
    teardown(state);
    setup(state);
    assert_int_equal(start_expect("slow", "/slow", short_timeout), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "timed out"));
}

/* ---- Issuers and tokens */

/* "idp-a" over HTTPS with audience gantry-a; "idp-b" from a file with audience gantry-b, naming
 * principals by their "email" claim. */
static void start_two(void)
{
    struct oidc_issuer_config a, b;
    put_jwks("two-a.json", jwk_k1, NULL);
    put_jwks("two-b.json", jwk_b1, NULL);
    url_issuer(&a, "idp-a", ISS_A, "/jwks/two-a.json");
    a.audiences = aud_a;
    oidc_issuer_config_init(&b, "idp-b", ISS_B);
    b.audiences = aud_b;
    b.n_audiences = 1;
    b.jwks_file = in_dir("two-b.json");
    b.principal_claim = "email";
    assert_int_equal(oidc_add_issuer(o, &a, errmsg), 0);
    assert_int_equal(oidc_add_issuer(o, &b, errmsg), 0);
    assert_int_equal(oidc_start(o, errmsg), 0);
}

static void two_issuers_each_with_its_audience(void **state)
{
    (void)state;
    int base = requests("/jwks/two-a.json");
    start_two();
    assert_int_equal(verify(token(ISS_A, "gantry-a", "k1", key1)), 0);
    assert_string_equal(principal, "idp-a#alice");
    assert_int_equal(verify(token(ISS_B, "gantry-b", "b1", key_b)), 0);
    assert_string_equal(principal, "idp-b#alice@example.com");
    assert_int_equal(verify(token(ISS_A, "gantry-b", "k1", key1)), GERR_UNAUTH);
    assert_int_equal(verify(token(ISS_B, "gantry-a", "b1", key_b)), GERR_UNAUTH);
    assert_int_equal(verify(token("https://idp-c.example.com", "gantry-a", "k1", key1)), GERR_UNAUTH);
    assert_int_equal(requests("/jwks/two-a.json"), base + 1);
}

static void token_of_one_issuer_with_the_key_of_another(void **state)
{
    (void)state;
    int base = requests("/jwks/two-a.json");
    start_two();
    advance_s(30); /* a refresh is allowed: it must not help */
    assert_int_equal(verify(token(ISS_A, "gantry-a", "b1", key_b)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "has no such key"));
    assert_int_equal(requests("/jwks/two-a.json"), base + 2);
    assert_int_equal(verify(token(ISS_A, "gantry-a", "k1", key_b)), GERR_UNAUTH); /* bad signature */
    assert_int_equal(verify(token(ISS_B, "gantry-b", "k1", key1)), GERR_UNAUTH);
    assert_int_equal(verify(token(ISS_B, "gantry-b", "b1", key1)), GERR_UNAUTH);
    assert_int_equal(requests("/jwks/two-a.json"), base + 2);
}

static void alg_none_and_hs256_are_refused_without_fetching(void **state)
{
    (void)state;
    put_jwks("alg.json", jwk_k1, NULL);
    start_one("alg.json");
    advance_s(30);
    char payload[300];
    snprintf(payload, sizeof payload, "{\"iss\":\"%s\",\"sub\":\"mallory\",\"aud\":\"gantry\",\"exp\":%lld}",
             ISS_A, NOW + 600);
    assert_int_equal(verify(assemble("{\"alg\":\"none\",\"kid\":\"k1\"}", payload, NULL, NULL)), GERR_UNAUTH);
    /* HS256 keyed with the RSA public key the attacker can download. */
    BIO *mem = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(mem, key1), 1);
    char *pem;
    long n = BIO_get_mem_data(mem, &pem);
    char *secret = mem_strndup(pem, (size_t)n);
    BIO_free(mem);
    assert_int_equal(verify(assemble("{\"alg\":\"HS256\",\"kid\":\"k1\"}", payload, NULL, secret)),
                     GERR_UNAUTH);
    assert_int_equal(verify(assemble("{\"alg\":\"HS256\",\"kid\":\"zz\"}", payload, NULL, secret)),
                     GERR_UNAUTH);
    mem_free(secret);
    assert_int_equal(verify(mem_strdup("not-a-token")), GERR_INVAL);
    assert_int_equal(requests("/jwks/alg.json"), 1);
}

/* ---- A bearer token with the fetch (a Kubernetes API server's /openid/v1/jwks) */

static void bearer_token_for_the_jwks_fetch(void **state)
{
    (void)state;
    put_jwks("kube.json", jwk_k1, NULL);
    put_file("bearer.token", "tok-1");
    put_file("client.token", "  tok-1 \n"); /* white space around it is dropped */
    struct oidc_issuer_config c;
    url_issuer(&c, "kube", ISS_A, "/auth/kube.json");
    c.bearer_token_file = in_dir("client.token");
    assert_int_equal(oidc_add_issuer(o, &c, errmsg), 0);
    assert_int_equal(oidc_start(o, errmsg), 0);
    assert_int_equal(requests("/auth/kube.json bearer=tok-1"), 1);
    assert_int_equal(verify(token(ISS_A, "gantry", "k1", key1)), 0);
    /* The file is read at every fetch: a rotated token is sent with the next one. */
    put_file("bearer.token", "tok-2");
    put_file("client.token", "tok-2");
    advance_s(3600);
    assert_int_equal(oidc_refresh_due(o, errmsg), 0);
    assert_int_equal(requests("/auth/kube.json bearer=tok-2"), 1);
    /* A token the server refuses fails the fetch; the keys loaded before stay. */
    put_file("client.token", "tok-x");
    advance_s(3600);
    assert_int_equal(oidc_refresh_due(o, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "401"));
    assert_null(strstr(errmsg, "tok-x"));
    assert_int_equal(verify(token(ISS_A, "gantry", "k1", key1)), 0);
    /* A file that cannot hold a token, or no file: no request at all. */
    int before = requests("/auth/kube.json");
    put_file("client.token", "tok 3");
    advance_s(30);
    assert_int_equal(oidc_refresh_due(o, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "bearer_token_file"));
    assert_null(strstr(errmsg, "tok 3"));
    put_file("client.token", " \n");
    advance_s(30);
    assert_int_equal(oidc_refresh_due(o, errmsg), GERR_INVAL);
    assert_int_equal(unlink(in_dir("client.token")), 0);
    advance_s(30);
    assert_int_equal(oidc_refresh_due(o, errmsg), GERR_NOTFOUND);
    assert_non_null(strstr(errmsg, "bearer_token_file"));
    assert_int_equal(requests("/auth/kube.json"), before);
    assert_int_equal(status_of("kube").failures, 4);
}

static void bearer_token_is_never_sent_through_a_redirect(void **state)
{
    (void)state;
    put_jwks("kube2.json", jwk_k1, NULL);
    put_file("bearer.token", "tok-r");
    put_file("client2.token", "tok-r");
    struct oidc_issuer_config c;
    url_issuer(&c, "kube", ISS_A, "/auth-redirect/kube2.json");
    c.bearer_token_file = in_dir("client2.token");
    assert_int_equal(oidc_add_issuer(o, &c, errmsg), 0);
    assert_int_equal(oidc_start(o, errmsg), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "302"));
    assert_int_equal(requests("/auth-redirect/kube2.json"), 1);
    assert_int_equal(requests("/auth/kube2.json"), 0);
}

/* ---- Configuration */

static int add_with(const char *file, const char *jwks_url, const char *ca)
{
    struct oidc_issuer_config c;
    oidc_issuer_config_init(&c, "cfg", ISS_A);
    c.audiences = aud_gantry;
    c.n_audiences = 1;
    c.jwks_file = file;
    c.jwks_url = jwks_url;
    c.ca_file = ca;
    return oidc_add_issuer(o, &c, errmsg);
}

static int add_tweaked(void (*tweak)(struct oidc_issuer_config *))
{
    struct oidc_issuer_config c;
    oidc_issuer_config_init(&c, "cfg", ISS_A);
    c.audiences = aud_gantry;
    c.n_audiences = 1;
    c.jwks_url = "https://idp.example.com/jwks";
    tweak(&c);
    return oidc_add_issuer(o, &c, errmsg);
}

static void too_big_limit(struct oidc_issuer_config *c)
{
    c->max_document = JWT_MAX_JWKS + 1;
}

static void zero_timeout(struct oidc_issuer_config *c)
{
    c->timeout_ms = 0;
}

static void tiny_interval(struct oidc_issuer_config *c)
{
    c->min_refresh_interval_ms = 999;
}

static void refresh_below_interval(struct oidc_issuer_config *c)
{
    c->refresh_ms = c->min_refresh_interval_ms - 1;
}

static void no_audience(struct oidc_issuer_config *c)
{
    c->n_audiences = 0;
}

static void empty_bearer(struct oidc_issuer_config *c)
{
    c->bearer_token_file = "";
}

static void bearer_with_file(struct oidc_issuer_config *c)
{
    c->jwks_url = NULL;
    c->jwks_file = "/tmp/x.json";
    c->bearer_token_file = "/tmp/token";
}

static void review_without_bearer(struct oidc_issuer_config *c)
{
    c->token_review = true;
}

static void review_url_without_review(struct oidc_issuer_config *c)
{
    c->token_review_url = "https://127.0.0.1:6443";
    c->bearer_token_file = "/tmp/token";
}

static void review_with_file_and_no_url(struct oidc_issuer_config *c)
{
    c->jwks_url = NULL;
    c->jwks_file = "/tmp/x.json";
    c->token_review = true;
    c->bearer_token_file = "/tmp/token";
}

static void review_over_http(struct oidc_issuer_config *c)
{
    c->token_review = true;
    c->bearer_token_file = "/tmp/token";
    c->token_review_url = "http://127.0.0.1:6443";
}

static void review_with_file_and_url(struct oidc_issuer_config *c)
{
    c->jwks_url = NULL;
    c->jwks_file = "/tmp/x.json";
    c->token_review = true;
    c->bearer_token_file = "/tmp/token";
    c->ca_file = "/tmp/ca.pem";
    c->token_review_url = "https://127.0.0.1:6443/";
}

/* The token_review settings: a bearer token is required, a URL needs the option, jwks_file needs a
 * URL, and the URL must be https. */
static void token_review_configuration_is_checked(void **state)
{
    (void)state;
    assert_int_equal(add_tweaked(review_without_bearer), GERR_INVAL);
    assert_non_null(strstr(errmsg, "token_review needs bearer_token_file"));
    assert_int_equal(add_tweaked(review_url_without_review), GERR_INVAL);
    assert_non_null(strstr(errmsg, "token_review_url needs token_review"));
    assert_int_equal(add_tweaked(review_with_file_and_no_url), GERR_INVAL);
    assert_non_null(strstr(errmsg, "needs token_review_url"));
    assert_int_equal(add_tweaked(review_over_http), GERR_INVAL);
    assert_non_null(strstr(errmsg, "token_review_url"));
    assert_non_null(strstr(errmsg, "plain http"));
    assert_int_equal(add_tweaked(review_with_file_and_url), 0);
}

static void review_only(struct oidc_issuer_config *c)
{
    c->jwks_url = NULL;
    c->verify = OIDC_VERIFY_TOKEN_REVIEW;
    c->token_review_url = "https://127.0.0.1:6443";
    c->bearer_token_file = "/tmp/token";
}

static void review_only_with_jwks_url(struct oidc_issuer_config *c)
{
    review_only(c);
    c->jwks_url = "https://127.0.0.1:6443/openid/v1/jwks";
}

static void review_only_with_jwks_file(struct oidc_issuer_config *c)
{
    review_only(c);
    c->jwks_file = "/tmp/x.json";
}

static void review_only_without_url(struct oidc_issuer_config *c)
{
    review_only(c);
    c->token_review_url = NULL;
}

static void review_only_without_bearer(struct oidc_issuer_config *c)
{
    review_only(c);
    c->bearer_token_file = NULL;
}

static void review_only_over_http(struct oidc_issuer_config *c)
{
    review_only(c);
    c->token_review_url = "http://127.0.0.1:6443";
}

static void review_only_bad_mode(struct oidc_issuer_config *c)
{
    c->verify = (enum oidc_verify)7;
}

/* verify OIDC_VERIFY_TOKEN_REVIEW: no JWKS source, and the API server's address and our bearer
 * token are required; each refusal names the key. */
static void token_review_only_configuration_is_checked(void **state)
{
    (void)state;
    assert_int_equal(add_tweaked(review_only_with_jwks_url), GERR_INVAL);
    assert_non_null(strstr(errmsg, "verify \"token_review\" takes no jwks_file or jwks_url"));
    assert_int_equal(add_tweaked(review_only_with_jwks_file), GERR_INVAL);
    assert_non_null(strstr(errmsg, "takes no jwks_file or jwks_url"));
    assert_int_equal(add_tweaked(review_only_without_url), GERR_INVAL);
    assert_non_null(strstr(errmsg, "needs token_review_url"));
    assert_int_equal(add_tweaked(review_only_without_bearer), GERR_INVAL);
    assert_non_null(strstr(errmsg, "needs bearer_token_file"));
    assert_int_equal(add_tweaked(review_only_over_http), GERR_INVAL);
    assert_non_null(strstr(errmsg, "plain http"));
    assert_int_equal(add_tweaked(review_only_bad_mode), GERR_INVAL);
    assert_non_null(strstr(errmsg, "unknown verification mode"));
    assert_int_equal(add_tweaked(review_only), 0);
    /* Nothing to fetch: started at once, no keys, no fetch. */
    assert_int_equal(oidc_start(o, errmsg), 0);
    assert_int_equal(oidc_refresh_due(o, errmsg), 0);
    struct oidc_issuer_status st = status_of("cfg");
    assert_false(st.has_keys);
    assert_int_equal(st.fetches, 0);
}

#define ISS_K     "https://kubernetes.default.svc.cluster.local"
#define SA_SUB    "system:serviceaccount:p:c"
#define K8S_CLAIM ",\"kubernetes.io\":{\"namespace\":\"p\",\"serviceaccount\":{\"name\":\"c\"}}"
#define REVIEWS   "/review/tr.json/apis/authentication.k8s.io/v1/tokenreviews"

/* A projected-ServiceAccount-shaped token of ISS_K for "gantry", signed by @key (NULL: unsigned)
 * with alg @alg. */
static char *sa_token(const char *sub, long long exp, const char *extra, EVP_PKEY *key, const char *alg)
{
    char header[100], payload[600];
    snprintf(header, sizeof header, "{\"alg\":\"%s\",\"kid\":\"sa\"}", alg);
    snprintf(payload, sizeof payload,
             "{\"iss\":\"%s\",\"sub\":\"%s\",\"aud\":[\"gantry\"],\"exp\":%lld,\"iat\":%lld%s}", ISS_K, sub,
             exp, NOW - 10, extra);
    return assemble(header, payload, key, NULL);
}

static void put_review(bool ok, const char *user)
{
    char body[400];
    if (ok) {
        snprintf(body, sizeof body,
                 "{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/v1\",\"status\":{"
                 "\"authenticated\":true,\"user\":{\"username\":\"%s\"},\"audiences\":[\"gantry\"]}}",
                 user);
    } else {
        snprintf(body, sizeof body, "%s",
                 "{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/v1\",\"status\":{"
                 "\"authenticated\":false,\"error\":\"[invalid bearer token, square/go-jose: error in "
                 "cryptographic primitive]\"}}");
    }
    put_file("tr.json", body);
}

/* verify OIDC_VERIFY_TOKEN_REVIEW: with no key set at all, the API server's answer decides; the
 * local checks (exp, aud, alg, the Kubernetes shape) refuse without asking; an API server that
 * cannot be asked is UNAVAILABLE. */
static void token_review_is_the_verification(void **state)
{
    (void)state;
    put_file("sa.token", "gw-token");
    struct oidc_issuer_config c;
    oidc_issuer_config_init(&c, "kube", ISS_K);
    c.audiences = aud_gantry;
    c.n_audiences = 1;
    c.verify = OIDC_VERIFY_TOKEN_REVIEW;
    c.token_review_url = url("/review/tr.json");
    c.ca_file = in_dir("ca.pem");
    c.bearer_token_file = in_dir("sa.token");
    assert_int_equal(oidc_add_issuer(o, &c, errmsg), 0);
    assert_int_equal(oidc_start(o, errmsg), 0);
    int asked = requests(REVIEWS " bearer=gw-token aud=gantry");

    /* Signed by a key gantryd never saw: accepted because the API server says so. */
    put_review(true, SA_SUB);
    assert_int_equal(verify(sa_token(SA_SUB, NOW + 600, K8S_CLAIM, key2, "RS256")), 0);
    assert_string_equal(principal, "kube#" SA_SUB);
    assert_int_equal(requests(REVIEWS " bearer=gw-token aud=gantry"), asked + 1);
    /* The same token again within TOKENREVIEW_CACHE_MS: not asked again. */
    assert_int_equal(verify(sa_token(SA_SUB, NOW + 600, K8S_CLAIM, key2, "RS256")), 0);
    /* (RSA PKCS#1 v1.5 signatures are deterministic, so that was the same token.) */
    assert_int_equal(requests(REVIEWS " bearer=gw-token aud=gantry"), asked + 1);

    /* The API server says no (a forged signature, a deleted ServiceAccount): refused. */
    advance_s(2);
    put_review(false, NULL);
    assert_int_equal(verify(sa_token(SA_SUB, NOW + 600, K8S_CLAIM, key1, "RS256")), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "cryptographic primitive"));
    /* ... or names another user than the token's sub. */
    put_review(true, "system:serviceaccount:p:other");
    assert_int_equal(verify(sa_token(SA_SUB, NOW + 600, K8S_CLAIM, key1, "RS256")), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "another user"));
    int before = requests(REVIEWS " bearer=gw-token aud=gantry");
    assert_int_equal(before, asked + 3);

    /* Refused locally, without asking, even though the API server would say yes. */
    put_review(true, SA_SUB);
    assert_int_equal(verify(sa_token(SA_SUB, NOW - 3600, K8S_CLAIM, key1, "RS256")), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "expired"));
    assert_int_equal(verify(sa_token(SA_SUB, NOW + 600, "", key1, "RS256")), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "kubernetes.io"));
    assert_int_equal(verify(sa_token("alice", NOW + 600, K8S_CLAIM, key1, "RS256")), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "system:serviceaccount:"));
    assert_int_equal(verify(sa_token(SA_SUB, NOW + 600, K8S_CLAIM, NULL, "none")), GERR_UNAUTH);
    assert_int_equal(verify(sa_token(SA_SUB, NOW + 600, K8S_CLAIM, NULL, "RS256")), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "unsigned"));
    char payload[400];
    snprintf(payload, sizeof payload, "{\"iss\":\"%s\",\"sub\":\"%s\",\"aud\":\"other\",\"exp\":%lld%s}",
             ISS_K, SA_SUB, NOW + 600, K8S_CLAIM);
    assert_int_equal(verify(assemble("{\"alg\":\"RS256\"}", payload, key1, NULL)), GERR_UNAUTH);
    assert_non_null(strstr(errmsg, "aud"));
    assert_int_equal(requests(REVIEWS " bearer=gw-token aud=gantry"), before);

    /* The API server cannot answer: UNAVAILABLE, never accepted. */
    assert_int_equal(unlink(in_dir("tr.json")), 0);
    assert_int_equal(verify(sa_token(SA_SUB, NOW + 601, K8S_CLAIM, key1, "RS256")), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "404"));
}

static void token_review_only_server_down(void **state)
{
    (void)state;
    put_file("sa.token", "gw-token");
    struct oidc_issuer_config c;
    oidc_issuer_config_init(&c, "kube", ISS_K);
    c.audiences = aud_gantry;
    c.n_audiences = 1;
    c.verify = OIDC_VERIFY_TOKEN_REVIEW;
    c.token_review_url = url_at(free_port(), "/");
    c.ca_file = in_dir("ca.pem");
    c.bearer_token_file = in_dir("sa.token");
    assert_int_equal(oidc_add_issuer(o, &c, errmsg), 0);
    assert_int_equal(oidc_start(o, errmsg), 0);
    assert_int_equal(verify(sa_token(SA_SUB, NOW + 600, K8S_CLAIM, key1, "RS256")), GERR_UNAVAILABLE);
    assert_non_null(strstr(errmsg, "cannot check the token with the API server of issuer kube"));
}

/* What a TokenReview answer must say for a token to pass. */
static void token_review_answers(void **state)
{
    (void)state;
    static const char *const auds[] = {"gantry"};
    const char *user = "system:serviceaccount:p:c";
    struct {
        const char *body;
        int rc;
        const char *msg;
    } cases[] = {
        {"{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/"
         "v1\",\"status\":{\"authenticated\":true,"
         "\"user\":{\"username\":\"system:serviceaccount:p:c\"},\"audiences\":[\"gantry\"]}}",
         0, NULL},
        {"{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/"
         "v1\",\"status\":{\"authenticated\":false,"
         "\"error\":\"serviceaccounts \\\"c\\\" not found\\n\"}}",
         GERR_UNAUTH, "serviceaccounts \"c\" not found?"},
        {"{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/v1\",\"status\":{}}", GERR_UNAUTH,
         "no reason given"},
        {"{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/"
         "v1\",\"status\":{\"authenticated\":true,"
         "\"user\":{\"username\":\"system:serviceaccount:p:other\"}}}",
         GERR_UNAUTH, "another user"},
        {"{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/"
         "v1\",\"status\":{\"authenticated\":true,"
         "\"user\":{\"username\":\"system:serviceaccount:p:c\"},\"audiences\":[\"api\"]}}",
         GERR_UNAUTH, "none of the audiences"},
        {"{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/"
         "v1\",\"status\":{\"authenticated\":\"yes\"}}",
         GERR_INVAL, "wrong shape"},
        {"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"code\":401}", GERR_INVAL,
         "not an authentication.k8s.io/v1"},
        {"not json", GERR_INVAL, "not an authentication.k8s.io/v1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        errmsg[0] = '\0';
        assert_int_equal(tokenreview_parse(cases[i].body, strlen(cases[i].body), user, auds, 1, errmsg),
                         cases[i].rc);
        if (cases[i].msg != NULL) {
            assert_non_null(strstr(errmsg, cases[i].msg));
        }
    }
    /* The request carries the token and the audiences. */
    char *req = tokenreview_request("a.b.c", 5, auds, 1);
    assert_string_equal(req,
                        "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenReview\",\"spec\":{"
                        "\"token\":\"a.b.c\",\"audiences\":[\"gantry\"]}}");
    mem_free(req);
    assert_null(tokenreview_request("\xff", 1, auds, 1));
    /* Positive answers are reused for TOKENREVIEW_CACHE_MS, per token. */
    struct tokenreview_cache *c = tokenreview_cache_new();
    assert_false(tokenreview_cache_hit(c, "t1", 2, 5000));
    tokenreview_cache_put(c, "t1", 2, 5000);
    assert_true(tokenreview_cache_hit(c, "t1", 2, 5000 + TOKENREVIEW_CACHE_MS - 1));
    assert_false(tokenreview_cache_hit(c, "t1", 2, 5000 + TOKENREVIEW_CACHE_MS));
    assert_false(tokenreview_cache_hit(c, "t2", 2, 5001));
    tokenreview_cache_free(c);
}

static void configuration_is_checked(void **state)
{
    (void)state;
    assert_int_equal(add_with(NULL, "http://idp.example.com/jwks", NULL), GERR_INVAL);
    assert_non_null(strstr(errmsg, "plain http"));
    assert_non_null(strstr(errmsg, "https://"));
    assert_int_equal(add_with(NULL, "HTTP://idp.example.com/jwks", NULL), GERR_INVAL);
    assert_non_null(strstr(errmsg, "plain http"));
    const char *bad[] = {"ftp://idp.example.com/jwks", "file:///etc/passwd", "https://",
                         "idp.example.com/jwks",       "not a url",          ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(add_with(NULL, bad[i], NULL), GERR_INVAL);
    }
    assert_int_equal(add_with(NULL, NULL, NULL), GERR_INVAL);
    assert_non_null(strstr(errmsg, "exactly one"));
    assert_int_equal(add_with("/tmp/x.json", "https://idp.example.com/jwks", NULL), GERR_INVAL);
    assert_int_equal(add_with("/tmp/x.json", NULL, "/tmp/ca.pem"), GERR_INVAL);
    assert_int_equal(add_with(NULL, "https://idp.example.com/jwks", ""), GERR_INVAL);
    assert_int_equal(add_tweaked(too_big_limit), GERR_INVAL);
    assert_int_equal(add_tweaked(zero_timeout), GERR_INVAL);
    assert_int_equal(add_tweaked(tiny_interval), GERR_INVAL);
    assert_int_equal(add_tweaked(refresh_below_interval), GERR_INVAL);
    assert_int_equal(add_tweaked(no_audience), GERR_INVAL);
    assert_int_equal(add_tweaked(empty_bearer), GERR_INVAL);
    assert_non_null(strstr(errmsg, "bearer_token_file"));
    assert_int_equal(add_tweaked(bearer_with_file), GERR_INVAL);
    assert_non_null(strstr(errmsg, "needs jwks_url or token_review"));
    assert_int_equal(oidc_issuer_status(o, "cfg", &(struct oidc_issuer_status){0}), GERR_NOTFOUND);
    /* Accepted, and a second issuer with the same name or URL is not. */
    assert_int_equal(add_with(NULL, "HTTPS://idp.example.com:8443/jwks?x=1", NULL), 0);
    assert_int_equal(add_with("/tmp/x.json", NULL, NULL), GERR_EXISTS);
    struct oidc_issuer_config c;
    oidc_issuer_config_init(&c, "cfg", ISS_A);
    assert_int_equal(c.refresh_ms, 3600000u);
    assert_int_equal(c.min_refresh_interval_ms, 30000u);
    assert_int_equal(c.max_document, JWT_MAX_JWKS);
    assert_null(c.principal_claim);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    /* Requests go to 127.0.0.1 directly whatever proxy the environment names. */
    unsetenv("https_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    setenv("no_proxy", "*", 1);
    signal(SIGPIPE, SIG_IGN); /* as gantryd does: libcurl runs with CURLOPT_NOSIGNAL */
    const struct CMUnitTest tests[] = {
        T(file_source),
        T(https_source),
        T(key_rotation),
        T(unknown_kid_is_rate_limited),
        T(concurrent_misses_fetch_once),
        T(periodic_refresh),
        T(server_down_at_start_then_up),
        T(server_down_then_token_triggers_retry),
        T(oversized_document),
        T(document_of_exactly_the_limit),
        T(tls_is_verified),
        T(redirects_only_to_https),
        T(bad_answers),
        T(two_issuers_each_with_its_audience),
        T(token_of_one_issuer_with_the_key_of_another),
        T(alg_none_and_hs256_are_refused_without_fetching),
        T(bearer_token_for_the_jwks_fetch),
        T(bearer_token_is_never_sent_through_a_redirect),
        T(configuration_is_checked),
        T(token_review_configuration_is_checked),
        T(token_review_answers),
        T(token_review_only_configuration_is_checked),
        T(token_review_is_the_verification),
        T(token_review_only_server_down),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
