/* The bytes of a certificate renewal. See certrenew_wire.h. */
#include "raft/certrenew_wire.h"

#include <stdio.h>
#include <string.h>

#include "lib/mem.h"
#include "raft/peertls.h"

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* A length-prefixed text at @buf[*off]: 0 (with *@p, *@n pointing into @buf), GERR_CLOSED (more
 * needed) or GERR_PROTO. */
static int text_at(const uint8_t *buf, size_t len, size_t *off, size_t max, const char **p, size_t *n,
                   const char *what, char *errmsg)
{
    if (len - *off < 4) {
        return GERR_CLOSED;
    }
    uint32_t tl = get_u32(buf + *off);
    if (tl == 0 || tl > max) {
        gerr_set(errmsg, "renewal: %s of %u bytes (1 to %zu allowed)", what, tl, max);
        return GERR_PROTO;
    }
    if (len - *off - 4 < tl) {
        return GERR_CLOSED;
    }
    *p = (const char *)buf + *off + 4;
    *n = tl;
    if (memchr(*p, '\0', tl) != NULL) {
        gerr_set(errmsg, "renewal: a NUL byte inside the %s", what);
        return GERR_PROTO;
    }
    *off += 4 + tl;
    return 0;
}

static void put_u32(struct buf *b, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    buf_append(b, p, 4);
}

static char *dup_n(const char *p, size_t n)
{
    char *s = mem_alloc(n + 1);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

int certrenew_wire_request_decode(const uint8_t *buf, size_t len, struct certrenew_wire_request *out,
                                  size_t *used, char *errmsg)
{
    /* The relay's line: PEERTLS_PEER_HEADER "sha256:<64 hex>\n". */
    const size_t hl = sizeof PEERTLS_PEER_HEADER - 1, fl = PKI_FINGERPRINT_SIZE - 1;
    size_t have = len < hl + fl + 1 ? len : hl + fl + 1;
    if (memcmp(buf, PEERTLS_PEER_HEADER, have < hl ? have : hl) != 0 ||
        (have > hl && memcmp(buf + hl, "sha256:", have - hl < 7 ? have - hl : 7) != 0)) {
        gerr_set(errmsg, "renewal: no peer header from the relay");
        return GERR_PROTO;
    }
    for (size_t i = hl + 7; i < have && i < hl + fl; i++) {
        if (!((buf[i] >= '0' && buf[i] <= '9') || (buf[i] >= 'a' && buf[i] <= 'f'))) {
            gerr_set(errmsg, "renewal: a bad fingerprint in the peer header");
            return GERR_PROTO;
        }
    }
    if (have < hl + fl + 1) {
        return GERR_CLOSED;
    }
    if (buf[hl + fl] != '\n') {
        gerr_set(errmsg, "renewal: the peer header does not end its line");
        return GERR_PROTO;
    }
    size_t off = hl + fl + 1;
    const size_t ml = sizeof CERTRENEW_WIRE_MAGIC - 1;
    size_t mh = len - off < ml ? len - off : ml;
    if (memcmp(buf + off, CERTRENEW_WIRE_MAGIC, mh) != 0) {
        gerr_set(errmsg, "renewal: not a renewal request");
        return GERR_PROTO;
    }
    if (mh < ml) {
        return GERR_CLOSED;
    }
    off += ml;
    const char *csr, *cert;
    size_t csr_n, cert_n;
    int rv = text_at(buf, len, &off, CERTRENEW_WIRE_MAX_PEM, &csr, &csr_n, "CSR", errmsg);
    if (rv == 0) {
        rv = text_at(buf, len, &off, CERTRENEW_WIRE_MAX_PEM, &cert, &cert_n, "certificate", errmsg);
    }
    if (rv != 0) {
        return rv;
    }
    memcpy(out->peer_fp, buf + hl, fl);
    out->peer_fp[fl] = '\0';
    out->csr_pem = dup_n(csr, csr_n);
    out->cert_pem = dup_n(cert, cert_n);
    *used = off;
    return 0;
}

void certrenew_wire_request_free(struct certrenew_wire_request *r)
{
    mem_free(r->csr_pem);
    mem_free(r->cert_pem);
    r->csr_pem = r->cert_pem = NULL;
}

void certrenew_wire_request_encode(const char *csr_pem, const char *cert_pem, struct buf *out)
{
    buf_append(out, CERTRENEW_WIRE_MAGIC, sizeof CERTRENEW_WIRE_MAGIC - 1);
    put_u32(out, (uint32_t)strlen(csr_pem));
    buf_append(out, csr_pem, strlen(csr_pem));
    put_u32(out, (uint32_t)strlen(cert_pem));
    buf_append(out, cert_pem, strlen(cert_pem));
}

void certrenew_wire_response_encode(int status, const char *text, struct buf *out)
{
    size_t n = strlen(text);
    size_t max = status == 0 ? CERTRENEW_WIRE_MAX_PEM : GERR_MSG_SIZE - 1;
    if (n > max) {
        n = max;
    }
    if (n == 0) {
        text = "?";
        n = 1;
    }
    buf_put_u8(out, (uint8_t)status);
    put_u32(out, (uint32_t)n);
    buf_append(out, text, n);
}

int certrenew_wire_response_decode(const uint8_t *buf, size_t len, int *status, char **text, char *errmsg)
{
    if (len < 1) {
        return GERR_CLOSED;
    }
    if (buf[0] > GERR_STALE) {
        gerr_set(errmsg, "renewal: unknown status %u in the answer", buf[0]);
        return GERR_PROTO;
    }
    size_t off = 1;
    const char *p;
    size_t n;
    int rv = text_at(buf, len, &off, buf[0] == 0 ? CERTRENEW_WIRE_MAX_PEM : GERR_MSG_SIZE - 1, &p, &n,
                     "answer", errmsg);
    if (rv != 0) {
        return rv;
    }
    *status = buf[0];
    *text = dup_n(p, n);
    return 0;
}
