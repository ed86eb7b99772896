/* The dqlite wire protocol, version 1, as spoken by dqlite 1.11.1 (../shared/design/dqlite-protocol.md).
 *
 * Pure encoding and decoding: no sockets, no clocks. Encoders append one whole message (8-byte
 * header + body) to a struct buf. Decoders parse one response body that the caller has already
 * framed, and distrust every length and count in it: each is checked against the bytes that are
 * actually there and against the caps below before anything is allocated.
 *
 * The encoders are also where the client refuses the requests that crash or wedge a 1.11 node
 * (dqlite-protocol.md sections 0 and 4.3): HEARTBEAT, CONNECT and unknown request types have no
 * encoder at all; a message body is never empty; at most 255 parameters; no UNIXTIME parameter
 * type; no text containing NUL; QUERY/QUERY_SQL only for read-only statements (proto_sql_is_read_only);
 * DDL never declares DATETIME, DATE, TIMESTAMP or BOOLEAN columns (proto_sql_check_ddl). Refusals
 * return GERR_REFUSED and append nothing. */
#ifndef GANTRY_STORE_PROTO_H
#define GANTRY_STORE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

#define PROTO_VERSION     1u
#define PROTO_HEADER_SIZE 8u
#define PROTO_MAX_PARAMS  255u

/* Request types we send. HEARTBEAT (2) and CONNECT (11) are deliberately absent. */
enum proto_req {
    PROTO_REQ_LEADER = 0,
    PROTO_REQ_CLIENT = 1,
    PROTO_REQ_OPEN = 3,
    PROTO_REQ_PREPARE = 4,
    PROTO_REQ_EXEC = 5,
    PROTO_REQ_QUERY = 6,
    PROTO_REQ_FINALIZE = 7,
    PROTO_REQ_EXEC_SQL = 8,
    PROTO_REQ_QUERY_SQL = 9,
    PROTO_REQ_INTERRUPT = 10,
    PROTO_REQ_ADD = 12,
    PROTO_REQ_ASSIGN = 13,
    PROTO_REQ_REMOVE = 14,
    PROTO_REQ_DUMP = 15,
    PROTO_REQ_CLUSTER = 16,
    PROTO_REQ_TRANSFER = 17,
    PROTO_REQ_DESCRIBE = 18,
    PROTO_REQ_WEIGHT = 19,
};

enum proto_resp {
    PROTO_RESP_FAILURE = 0,
    PROTO_RESP_SERVER = 1,
    PROTO_RESP_WELCOME = 2,
    PROTO_RESP_SERVERS = 3,
    PROTO_RESP_DB = 4,
    PROTO_RESP_STMT = 5,
    PROTO_RESP_RESULT = 6,
    PROTO_RESP_ROWS = 7,
    PROTO_RESP_EMPTY = 8,
    PROTO_RESP_FILES = 9,
    PROTO_RESP_METADATA = 10,
};

/* Value type codes on the wire. */
enum proto_type {
    PROTO_INTEGER = 1,
    PROTO_FLOAT = 2,
    PROTO_TEXT = 3,
    PROTO_BLOB = 4,
    PROTO_NULL = 5,
    PROTO_UNIXTIME = 9, /* only ever received (DATETIME columns); never sent */
    PROTO_ISO8601 = 10,
    PROTO_BOOLEAN = 11,
};

/* Node roles in CLUSTER/ASSIGN. */
enum proto_role { PROTO_ROLE_VOTER = 0, PROTO_ROLE_STANDBY = 1, PROTO_ROLE_SPARE = 2 };

/* A parameter or a column value. For TEXT/ISO8601 @s points at NUL-terminated bytes of length
 * @n; for BLOB @s points at @n bytes. In decoded rows those bytes belong to the rows' arena. */
struct proto_value {
    int type; /* enum proto_type */
    union {
        int64_t i; /* INTEGER, UNIXTIME, BOOLEAN (0/1) */
        double f;  /* FLOAT */
        struct {
            const char *s;
            size_t n;
        } b; /* TEXT, ISO8601, BLOB */
    } u;
};

/* Constructors for parameters. */
struct proto_value proto_int(int64_t v);
struct proto_value proto_float(double v);
struct proto_value proto_text(const char *s); /* s must stay valid until encoded */
struct proto_value proto_blob(const void *p, size_t n);
struct proto_value proto_null(void);

/* ---- Encoders: append one message to @out. Return 0, GERR_INVAL (bad argument) or GERR_REFUSED.
 * On error @out is unchanged. */
int proto_enc_leader(struct buf *out);
int proto_enc_client(struct buf *out, uint64_t client_id);
int proto_enc_open(struct buf *out, const char *db_name);
int proto_enc_prepare(struct buf *out, uint32_t db_id, const char *sql);
int proto_enc_exec(struct buf *out, uint32_t db_id, uint32_t stmt_id, const struct proto_value *params,
                   unsigned n_params);
/* QUERY by statement id: the caller vouches that the statement was checked read-only at PREPARE
 * time (the client only prepares read-only statements for QUERY, see store/conn.h). */
int proto_enc_query(struct buf *out, uint32_t db_id, uint32_t stmt_id, const struct proto_value *params,
                    unsigned n_params);
int proto_enc_finalize(struct buf *out, uint32_t db_id, uint32_t stmt_id);
int proto_enc_exec_sql(struct buf *out, uint32_t db_id, const char *sql, const struct proto_value *params,
                       unsigned n_params);
int proto_enc_query_sql(struct buf *out, uint32_t db_id, const char *sql, const struct proto_value *params,
                        unsigned n_params);
int proto_enc_interrupt(struct buf *out, uint32_t db_id);
int proto_enc_add(struct buf *out, uint64_t id, const char *address);
int proto_enc_assign(struct buf *out, uint64_t id, int role);
int proto_enc_remove(struct buf *out, uint64_t id);
int proto_enc_dump(struct buf *out, const char *db_name);
int proto_enc_cluster(struct buf *out); /* always format 1 (with roles) */
int proto_enc_transfer(struct buf *out, uint64_t target_id);
int proto_enc_describe(struct buf *out); /* always format 0: other formats double-answer in 1.11 */
int proto_enc_weight(struct buf *out, uint64_t weight);

/* SQL screening, by tokenizing outside literals, quoted identifiers and comments.
 * proto_sql_is_read_only: true iff the text is exactly one statement that starts with SELECT,
 * VALUES or WITH and contains none of the keywords that write or change state (INSERT, UPDATE,
 * DELETE, REPLACE, RETURNING, CREATE, DROP, ALTER, ...); replace(...) the function is allowed. Conservative:
 * an unquoted identifier spelled like one of those keywords makes the statement "not read-only"; quote it.
 * proto_sql_check_ddl: 0, or GERR_REFUSED if a CREATE TABLE column definition or an ALTER TABLE
 * ADD COLUMN declares a type name containing DATETIME, DATE, TIMESTAMP or BOOLEAN, bare or quoted
 * (1.11 asserts on reading such a column holding another storage class). Only type positions are
 * checked: date('now') in a trigger or a column named created_date is fine.
 * PREPARE also refuses text with more than one statement: 1.11 silently drops the tail. */
bool proto_sql_is_read_only(const char *sql);
/* True iff @sql holds at most one statement (empty statements, a trailing ';', and the ';' inside a
 * trigger's BEGIN ... END do not count). */
bool proto_sql_is_single_statement(const char *sql);
int proto_sql_check_ddl(const char *sql);

/* ---- Framing. */
struct proto_header {
    uint32_t words; /* body length in 8-byte words */
    uint8_t type;
    uint8_t schema;
    uint16_t extra;
};
void proto_header_decode(const uint8_t p[PROTO_HEADER_SIZE], struct proto_header *h);

/* ---- Decoders of response bodies. Each returns 0, GERR_PROTO (malformed: message in @errmsg of
 * GERR_MSG_SIZE bytes) or GERR_TOOBIG (exceeds a cap). */
struct proto_failure {
    uint64_t code;
    char message[256]; /* truncated copy */
};
int proto_dec_failure(const uint8_t *p, size_t n, struct proto_failure *f, char *errmsg);

struct proto_server {
    uint64_t id;
    char address[256];
};
int proto_dec_server(const uint8_t *p, size_t n, struct proto_server *s, char *errmsg);
int proto_dec_welcome(const uint8_t *p, size_t n, uint64_t *heartbeat_ms, char *errmsg);
int proto_dec_db(const uint8_t *p, size_t n, uint32_t *db_id, char *errmsg);
int proto_dec_stmt(const uint8_t *p, size_t n, uint32_t *db_id, uint32_t *stmt_id, uint64_t *n_params,
                   char *errmsg);
int proto_dec_result(const uint8_t *p, size_t n, uint64_t *last_insert_id, uint64_t *rows_affected,
                     char *errmsg);
int proto_dec_empty(const uint8_t *p, size_t n, char *errmsg);
int proto_dec_metadata(const uint8_t *p, size_t n, uint64_t *failure_domain, uint64_t *weight, char *errmsg);

#define PROTO_MAX_SERVERS 1024u
struct proto_node_info {
    uint64_t id;
    char address[256];
    int role; /* enum proto_role */
};
/* Decodes a format-1 SERVERS body. *@out is allocated (mem_alloc) and owned by the caller. */
int proto_dec_servers(const uint8_t *p, size_t n, struct proto_node_info **out, unsigned *n_out,
                      char *errmsg);

/* FILES (DUMP): two files. Pointers point into @p (no copy). */
struct proto_file {
    char name[256];
    const uint8_t *data;
    uint64_t size;
};
int proto_dec_files(const uint8_t *p, size_t n, struct proto_file files[2], char *errmsg);

/* ---- Rows. A result set accumulates the batches of one QUERY (PART ... DONE). */
#define PROTO_MAX_COLUMNS 1024u

struct proto_rows {
    unsigned n_cols;
    char **cols; /* n_cols names, in the arena */
    size_t n_rows;
    struct proto_value *vals;        /* n_rows * n_cols, row-major; text/blob bytes in the arena */
    size_t vals_cap;                 /* allocated entries in vals */
    struct proto_rows_chunk *chunks; /* string storage: stable pointers */
    size_t bytes;                    /* total decoded payload bytes, checked against max_bytes */
    size_t max_bytes;                /* cap on the result set (0 = PROTO_DEFAULT_MAX_RESULT) */
};
#define PROTO_DEFAULT_MAX_RESULT (64u * 1024u * 1024u)

void proto_rows_init(struct proto_rows *r, size_t max_bytes);
void proto_rows_close(struct proto_rows *r); /* frees everything; r may be re-initialised */

/* Decode one ROWS body and append its rows to @r. Sets *@done to true when the batch ends with
 * DONE and false for PART. The column count and names of a later batch must match the first.
 * After an error the content of @r is unspecified: only proto_rows_close may be called on it. */
int proto_dec_rows(const uint8_t *p, size_t n, struct proto_rows *r, bool *done, char *errmsg);

/* Accessors (asserting bounds). */
static inline const struct proto_value *proto_rows_at(const struct proto_rows *r, size_t row, unsigned col)
{
    return &r->vals[row * r->n_cols + col];
}

#endif
