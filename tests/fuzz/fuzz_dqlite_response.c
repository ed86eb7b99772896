/* libFuzzer harness for the dqlite response decoders (store/proto.h).
 *
 * Input layout: byte 0 selects the response type (value % 11 = enum proto_resp), the rest is the
 * body. For ROWS, byte 1 is a control byte and the body starts at byte 2:
 *   bits 0-1: the body is fed (1 + bits) times into one proto_rows, to exercise batch appends
 *             (a PART body repeated; on the last feed a trailing PART marker is turned into DONE);
 *   bits 2-3: max_bytes: 0 (default cap), 64, 4096 or 1 MiB.
 * Feeding stops at the first error or DONE; after an error the set is only closed.
 * Every body is copied into a heap block of exactly its size so that ASan sees any overread.
 *
 * Besides "no crash, no leak, no overread", the harness checks the header's promises on success:
 * decoded text is NUL-terminated at its length, fixed-size strings are terminated, roles are valid,
 * FILES data lies inside the body, and the rows accessor stays inside the value array. On error the
 * errmsg buffer must be terminated. A broken promise calls abort(), which libFuzzer reports. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"
#include "lib/mem.h"
#include "store/proto.h"

#define MARK_PART 0xeeu
#define MARK_DONE 0xffu

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
    if (!ok) {
        abort();
    }
}

static void check_errmsg(int rc, const char *errmsg)
{
    check(rc == 0 || rc == GERR_PROTO || rc == GERR_TOOBIG);
    if (rc != 0) {
        check(memchr(errmsg, '\0', GERR_MSG_SIZE) != NULL);
    }
}

static void check_terminated(const char *s, size_t cap)
{
    check(memchr(s, '\0', cap) != NULL);
}

static void check_value(const struct proto_value *v)
{
    switch (v->type) {
    case PROTO_INTEGER:
    case PROTO_FLOAT:
    case PROTO_NULL:
    case PROTO_UNIXTIME:
        break;
    case PROTO_BOOLEAN:
        break;
    case PROTO_TEXT:
    case PROTO_ISO8601:
        /* NUL-terminated bytes of length n, and (text came through strnlen) no NUL inside. */
        check(v->u.b.s != NULL);
        check(v->u.b.s[v->u.b.n] == '\0');
        check(strlen(v->u.b.s) == v->u.b.n);
        break;
    case PROTO_BLOB:
        check(v->u.b.n == 0 || v->u.b.s != NULL);
        if (v->u.b.n > 0) {
            /* Touch both ends so ASan validates the whole range. */
            volatile char first = v->u.b.s[0];
            volatile char last = v->u.b.s[v->u.b.n - 1];
            (void)first;
            (void)last;
        }
        break;
    default:
        check(false);
    }
}

static void fuzz_rows(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return;
    }
    static const size_t caps[4] = {0, 64, 4096, 1u << 20};
    uint8_t ctl = data[0];
    unsigned feeds = 1u + (ctl & 3u);
    size_t n = size - 1;
    struct proto_rows r;
    proto_rows_init(&r, caps[(ctl >> 2) & 3u]);

    for (unsigned i = 0; i < feeds; i++) {
        uint8_t *body = malloc(n == 0 ? 1 : n);
        check(body != NULL);
        if (n > 0) {
            memcpy(body, data + 1, n);
        }
        /* Last feed of a repeated PART body: end the stream with DONE. */
        if (feeds > 1 && i == feeds - 1 && n >= 8) {
            bool part = true;
            for (size_t k = n - 8; k < n; k++) {
                part = part && body[k] == MARK_PART;
            }
            if (part) {
                memset(body + n - 8, MARK_DONE, 8);
            }
        }
        char errmsg[GERR_MSG_SIZE];
        memset(errmsg, 'X', sizeof errmsg);
        bool done = false;
        int rc = proto_dec_rows(body, n, &r, &done, errmsg);
        /* Scribble over the input: decoded values must live in the rows' own storage. */
        memset(body, 0xa5, n);
        free(body);
        check_errmsg(rc, errmsg);
        if (rc != 0) {
            /* After an error the only valid call is proto_rows_close (what store/conn.c does). */
            proto_rows_close(&r);
            return;
        }
        if (done) {
            break;
        }
    }

    /* Every batch decoded: what the set claims to hold must be readable. */
    check(r.n_cols <= PROTO_MAX_COLUMNS);
    if (r.n_rows > 0) {
        check(r.n_cols > 0);
        check(r.vals != NULL);
        check(r.n_rows <= r.vals_cap / r.n_cols);
    }
    for (unsigned c = 0; c < r.n_cols && r.cols != NULL; c++) {
        check(r.cols[c] != NULL);
        (void)strlen(r.cols[c]);
    }
    for (size_t row = 0; row < r.n_rows; row++) {
        for (unsigned c = 0; c < r.n_cols; c++) {
            check_value(proto_rows_at(&r, row, c));
        }
    }
    proto_rows_close(&r);
}

static void fuzz_one(unsigned type, const uint8_t *p, size_t n)
{
    char errmsg[GERR_MSG_SIZE];
    memset(errmsg, 'X', sizeof errmsg);
    int rc;

    switch (type) {
    case PROTO_RESP_FAILURE: {
        struct proto_failure f;
        rc = proto_dec_failure(p, n, &f, errmsg);
        if (rc == 0) {
            check_terminated(f.message, sizeof f.message);
        }
        break;
    }
    case PROTO_RESP_SERVER: {
        struct proto_server s;
        rc = proto_dec_server(p, n, &s, errmsg);
        if (rc == 0) {
            check_terminated(s.address, sizeof s.address);
        }
        break;
    }
    case PROTO_RESP_WELCOME: {
        uint64_t hb;
        rc = proto_dec_welcome(p, n, &hb, errmsg);
        break;
    }
    case PROTO_RESP_SERVERS: {
        struct proto_node_info *nodes = NULL;
        unsigned count = 0;
        rc = proto_dec_servers(p, n, &nodes, &count, errmsg);
        if (rc == 0) {
            check(count <= PROTO_MAX_SERVERS);
            check(count == 0 || nodes != NULL);
            for (unsigned i = 0; i < count; i++) {
                check_terminated(nodes[i].address, sizeof nodes[i].address);
                check(nodes[i].role >= PROTO_ROLE_VOTER && nodes[i].role <= PROTO_ROLE_SPARE);
            }
            mem_free(nodes);
        }
        break;
    }
    case PROTO_RESP_DB: {
        uint32_t db;
        rc = proto_dec_db(p, n, &db, errmsg);
        break;
    }
    case PROTO_RESP_STMT: {
        uint32_t db, stmt;
        uint64_t np;
        rc = proto_dec_stmt(p, n, &db, &stmt, &np, errmsg);
        break;
    }
    case PROTO_RESP_RESULT: {
        uint64_t last, changes;
        rc = proto_dec_result(p, n, &last, &changes, errmsg);
        break;
    }
    case PROTO_RESP_EMPTY:
        rc = proto_dec_empty(p, n, errmsg);
        break;
    case PROTO_RESP_FILES: {
        struct proto_file files[2];
        rc = proto_dec_files(p, n, files, errmsg);
        if (rc == 0) {
            for (int i = 0; i < 2; i++) {
                check_terminated(files[i].name, sizeof files[i].name);
                check(files[i].size <= n);
                if (files[i].size > 0) {
                    check(files[i].data >= p && files[i].data + files[i].size <= p + n);
                }
            }
        }
        break;
    }
    case PROTO_RESP_METADATA: {
        uint64_t fd, w;
        rc = proto_dec_metadata(p, n, &fd, &w, errmsg);
        break;
    }
    default:
        return;
    }
    check_errmsg(rc, errmsg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    unsigned type = data[0] % 11u;
    if (type == PROTO_RESP_ROWS) {
        fuzz_rows(data + 1, size - 1);
        return 0;
    }
    size_t n = size - 1;
    uint8_t *body = malloc(n == 0 ? 1 : n);
    check(body != NULL);
    if (n > 0) {
        memcpy(body, data + 1, n);
    }
    fuzz_one(type, body, n);
    free(body);
    return 0;
}
