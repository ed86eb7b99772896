/* The dqlite wire protocol codec. See proto.h for the contract and
 * ../shared/design/dqlite-protocol.md section 1 for the format. */
#include "store/proto.h"

#include <assert.h>
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "lib/err.h"
#include "lib/mem.h"

#define PROTO_MARKER_DONE 0xffffffffffffffffull
#define PROTO_MARKER_PART 0xeeeeeeeeeeeeeeeeull

/* ------------------------------------------------------------------------------------------------
 * Values */

struct proto_value proto_int(int64_t v)
{
    struct proto_value x = {.type = PROTO_INTEGER};
    x.u.i = v;
    return x;
}

struct proto_value proto_float(double v)
{
    struct proto_value x = {.type = PROTO_FLOAT};
    x.u.f = v;
    return x;
}

struct proto_value proto_text(const char *s)
{
    struct proto_value x = {.type = PROTO_TEXT};
    x.u.b.s = s;
    x.u.b.n = strlen(s);
    return x;
}

struct proto_value proto_blob(const void *p, size_t n)
{
    struct proto_value x = {.type = PROTO_BLOB};
    x.u.b.s = p;
    x.u.b.n = n;
    return x;
}

struct proto_value proto_null(void)
{
    struct proto_value x = {.type = PROTO_NULL};
    return x;
}

/* ------------------------------------------------------------------------------------------------
 * Encoding */

static bool sql_multiple_statements(const char *sql);

static size_t pad8(size_t n)
{
    return (n + 7u) & ~(size_t)7u;
}

static void put_text(struct buf *b, const char *s, size_t n)
{
    size_t total = pad8(n + 1);
    uint8_t *p = buf_append_zero(b, total);
    memcpy(p, s, n);
}

/* Start a message: reserve the header. Returns the offset of the header. */
static size_t msg_begin(struct buf *b)
{
    size_t off = b->len;
    buf_append_zero(b, PROTO_HEADER_SIZE);
    return off;
}

/* Finish a message: fill in the header. The body is never empty: every request we encode has at
 * least one word, which keeps us clear of 1.11's words=0 assertion. */
static void msg_end(struct buf *b, size_t off, uint8_t type)
{
    size_t body = b->len - off - PROTO_HEADER_SIZE;
    assert(body > 0 && body % 8 == 0);
    assert(body / 8 <= UINT32_MAX);
    uint32_t words = (uint32_t)(body / 8);
    uint8_t *h = b->data + off;
    h[0] = (uint8_t)words;
    h[1] = (uint8_t)(words >> 8);
    h[2] = (uint8_t)(words >> 16);
    h[3] = (uint8_t)(words >> 24);
    h[4] = type;
    h[5] = 0; /* schema 0: the only one 1.11 understands */
    h[6] = 0;
    h[7] = 0;
}

static bool text_ok(const char *s, size_t n)
{
    return s != NULL && memchr(s, '\0', n) == NULL;
}

static int check_params(const struct proto_value *params, unsigned n)
{
    if (n > PROTO_MAX_PARAMS) {
        return GERR_REFUSED;
    }
    if (n > 0 && params == NULL) {
        return GERR_INVAL;
    }
    for (unsigned i = 0; i < n; i++) {
        switch (params[i].type) {
        case PROTO_INTEGER:
        case PROTO_FLOAT:
        case PROTO_NULL:
        case PROTO_BOOLEAN:
            break;
        case PROTO_TEXT:
        case PROTO_ISO8601:
            if (!text_ok(params[i].u.b.s, params[i].u.b.n)) {
                return GERR_REFUSED;
            }
            break;
        case PROTO_BLOB:
            if (params[i].u.b.n > 0 && params[i].u.b.s == NULL) {
                return GERR_INVAL;
            }
            break;
        default:
            /* UNIXTIME is rejected by 1.11's decoder (FAILURE 1005); anything else is unknown. */
            return GERR_REFUSED;
        }
    }
    return 0;
}

static void put_params(struct buf *b, const struct proto_value *params, unsigned n)
{
    if (n == 0) {
        return; /* no tuple at all: the server binds only if bytes remain */
    }
    uint8_t *h = buf_append_zero(b, pad8(1 + n));
    h[0] = (uint8_t)n;
    for (unsigned i = 0; i < n; i++) {
        h[1 + i] = (uint8_t)params[i].type;
    }
    for (unsigned i = 0; i < n; i++) {
        const struct proto_value *v = &params[i];
        switch (v->type) {
        case PROTO_INTEGER:
            buf_put_u64(b, (uint64_t)v->u.i);
            break;
        case PROTO_BOOLEAN:
            buf_put_u64(b, v->u.i != 0 ? 1u : 0u);
            break;
        case PROTO_FLOAT: {
            uint64_t bits;
            memcpy(&bits, &v->u.f, 8);
            buf_put_u64(b, bits);
            break;
        }
        case PROTO_NULL:
            buf_put_u64(b, 0);
            break;
        case PROTO_TEXT:
        case PROTO_ISO8601:
            put_text(b, v->u.b.s, v->u.b.n);
            break;
        case PROTO_BLOB: {
            buf_put_u64(b, (uint64_t)v->u.b.n);
            if (v->u.b.n > 0) {
                uint8_t *p = buf_append_zero(b, pad8(v->u.b.n));
                memcpy(p, v->u.b.s, v->u.b.n);
            }
            break;
        }
        default:
            assert(!"checked by check_params");
        }
    }
}

static int enc_u64(struct buf *out, uint8_t type, uint64_t v)
{
    size_t off = msg_begin(out);
    buf_put_u64(out, v);
    msg_end(out, off, type);
    return 0;
}

static int enc_text(struct buf *out, uint8_t type, const char *s)
{
    if (s == NULL) {
        return GERR_INVAL;
    }
    size_t off = msg_begin(out);
    put_text(out, s, strlen(s));
    msg_end(out, off, type);
    return 0;
}

int proto_enc_leader(struct buf *out)
{
    return enc_u64(out, PROTO_REQ_LEADER, 0);
}

int proto_enc_client(struct buf *out, uint64_t client_id)
{
    return enc_u64(out, PROTO_REQ_CLIENT, client_id);
}

int proto_enc_open(struct buf *out, const char *db_name)
{
    if (db_name == NULL || db_name[0] == '\0') {
        return GERR_INVAL;
    }
    size_t off = msg_begin(out);
    put_text(out, db_name, strlen(db_name));
    buf_put_u64(out, 0);          /* flags: ignored */
    put_text(out, "volatile", 8); /* vfs: ignored by 1.11 */
    msg_end(out, off, PROTO_REQ_OPEN);
    return 0;
}

int proto_enc_prepare(struct buf *out, uint32_t db_id, const char *sql)
{
    if (sql == NULL) {
        return GERR_INVAL;
    }
    /* 1.11 compiles the first statement and silently drops the rest (an error since 1.15.1). */
    if (sql_multiple_statements(sql) || proto_sql_check_ddl(sql) != 0) {
        return GERR_REFUSED;
    }
    size_t off = msg_begin(out);
    buf_put_u64(out, db_id);
    put_text(out, sql, strlen(sql));
    msg_end(out, off, PROTO_REQ_PREPARE);
    return 0;
}

static int enc_stmt(struct buf *out, uint8_t type, uint32_t db_id, uint32_t stmt_id,
                    const struct proto_value *params, unsigned n)
{
    int rv = check_params(params, n);
    if (rv != 0) {
        return rv;
    }
    size_t off = msg_begin(out);
    buf_put_u32(out, db_id);
    buf_put_u32(out, stmt_id);
    put_params(out, params, n);
    msg_end(out, off, type);
    return 0;
}

int proto_enc_exec(struct buf *out, uint32_t db_id, uint32_t stmt_id, const struct proto_value *params,
                   unsigned n_params)
{
    return enc_stmt(out, PROTO_REQ_EXEC, db_id, stmt_id, params, n_params);
}

int proto_enc_query(struct buf *out, uint32_t db_id, uint32_t stmt_id, const struct proto_value *params,
                    unsigned n_params)
{
    return enc_stmt(out, PROTO_REQ_QUERY, db_id, stmt_id, params, n_params);
}

int proto_enc_finalize(struct buf *out, uint32_t db_id, uint32_t stmt_id)
{
    return enc_stmt(out, PROTO_REQ_FINALIZE, db_id, stmt_id, NULL, 0);
}

static int enc_sql(struct buf *out, uint8_t type, uint32_t db_id, const char *sql,
                   const struct proto_value *params, unsigned n)
{
    if (sql == NULL) {
        return GERR_INVAL;
    }
    int rv = check_params(params, n);
    if (rv != 0) {
        return rv;
    }
    size_t off = msg_begin(out);
    buf_put_u64(out, db_id);
    put_text(out, sql, strlen(sql));
    put_params(out, params, n);
    msg_end(out, off, type);
    return 0;
}

int proto_enc_exec_sql(struct buf *out, uint32_t db_id, const char *sql, const struct proto_value *params,
                       unsigned n_params)
{
    if (sql != NULL && proto_sql_check_ddl(sql) != 0) {
        return GERR_REFUSED;
    }
    return enc_sql(out, PROTO_REQ_EXEC_SQL, db_id, sql, params, n_params);
}

int proto_enc_query_sql(struct buf *out, uint32_t db_id, const char *sql, const struct proto_value *params,
                        unsigned n_params)
{
    if (sql != NULL && !proto_sql_is_read_only(sql)) {
        return GERR_REFUSED;
    }
    return enc_sql(out, PROTO_REQ_QUERY_SQL, db_id, sql, params, n_params);
}

int proto_enc_interrupt(struct buf *out, uint32_t db_id)
{
    return enc_u64(out, PROTO_REQ_INTERRUPT, db_id);
}

int proto_enc_add(struct buf *out, uint64_t id, const char *address)
{
    if (address == NULL || address[0] == '\0' || id == 0) {
        return GERR_INVAL;
    }
    size_t off = msg_begin(out);
    buf_put_u64(out, id);
    put_text(out, address, strlen(address));
    msg_end(out, off, PROTO_REQ_ADD);
    return 0;
}

int proto_enc_assign(struct buf *out, uint64_t id, int role)
{
    if (id == 0 || role < PROTO_ROLE_VOTER || role > PROTO_ROLE_SPARE) {
        return GERR_INVAL;
    }
    size_t off = msg_begin(out);
    buf_put_u64(out, id);
    buf_put_u64(out, (uint64_t)role);
    msg_end(out, off, PROTO_REQ_ASSIGN);
    return 0;
}

int proto_enc_remove(struct buf *out, uint64_t id)
{
    if (id == 0) {
        return GERR_INVAL;
    }
    return enc_u64(out, PROTO_REQ_REMOVE, id);
}

int proto_enc_dump(struct buf *out, const char *db_name)
{
    if (db_name == NULL || db_name[0] == '\0') {
        return GERR_INVAL;
    }
    return enc_text(out, PROTO_REQ_DUMP, db_name);
}

int proto_enc_cluster(struct buf *out)
{
    return enc_u64(out, PROTO_REQ_CLUSTER, 1);
}

int proto_enc_transfer(struct buf *out, uint64_t target_id)
{
    return enc_u64(out, PROTO_REQ_TRANSFER, target_id);
}

int proto_enc_describe(struct buf *out)
{
    return enc_u64(out, PROTO_REQ_DESCRIBE, 0);
}

int proto_enc_weight(struct buf *out, uint64_t weight)
{
    return enc_u64(out, PROTO_REQ_WEIGHT, weight);
}

/* ------------------------------------------------------------------------------------------------
 * SQL screening: a tokenizer that understands literals, quoted identifiers and comments. */

enum sql_tok { SQL_END, SQL_WORD, SQL_QUOTED, SQL_SEMI, SQL_LPAREN, SQL_RPAREN, SQL_COMMA, SQL_OTHER };

struct sql_lexer {
    const char *p;
    const char *word; /* for SQL_WORD */
    size_t word_len;
};

static void sql_skip_quoted(struct sql_lexer *lx, char close)
{
    /* Called after the opening quote. A doubled closing quote is an escape ('' or ""). */
    while (*lx->p != '\0') {
        if (*lx->p == close) {
            if (close != ']' && lx->p[1] == close) {
                lx->p += 2;
                continue;
            }
            lx->p++;
            return;
        }
        lx->p++;
    }
}

static enum sql_tok sql_next(struct sql_lexer *lx)
{
    for (;;) {
        char c = *lx->p;
        if (c == '\0') {
            return SQL_END;
        }
        if (isspace((unsigned char)c)) {
            lx->p++;
            continue;
        }
        if (c == '-' && lx->p[1] == '-') {
            while (*lx->p != '\0' && *lx->p != '\n') {
                lx->p++;
            }
            continue;
        }
        if (c == '/' && lx->p[1] == '*') {
            lx->p += 2;
            while (*lx->p != '\0' && !(lx->p[0] == '*' && lx->p[1] == '/')) {
                lx->p++;
            }
            if (*lx->p != '\0') {
                lx->p += 2;
            }
            continue;
        }
        if (c == '\'' || c == '"' || c == '`' || c == '[') {
            /* A literal or a quoted identifier: never a keyword, but SQLite accepts one as a
             * type name, so its content is kept for proto_sql_check_ddl. */
            lx->p++;
            lx->word = lx->p;
            sql_skip_quoted(lx, c == '[' ? ']' : c);
            lx->word_len = (size_t)(lx->p - lx->word);
            if (lx->word_len > 0 && lx->p[-1] == (c == '[' ? ']' : c)) {
                lx->word_len--; /* not the closing quote */
            }
            return SQL_QUOTED;
        }
        if (c == ';' || c == '(' || c == ')' || c == ',') {
            lx->p++;
            return c == ';' ? SQL_SEMI : c == '(' ? SQL_LPAREN : c == ')' ? SQL_RPAREN : SQL_COMMA;
        }
        if (isalpha((unsigned char)c) || c == '_') {
            lx->word = lx->p;
            while (isalnum((unsigned char)*lx->p) || *lx->p == '_' || *lx->p == '$') {
                lx->p++;
            }
            lx->word_len = (size_t)(lx->p - lx->word);
            return SQL_WORD;
        }
        if (isdigit((unsigned char)c)) {
            /* Numbers, including 1e5 and 0x1F: consume alphanumerics so "1e5" is not a word. */
            while (isalnum((unsigned char)*lx->p) || *lx->p == '.') {
                lx->p++;
            }
            return SQL_OTHER;
        }
        lx->p++;
        return SQL_OTHER;
    }
}

static bool sql_word_is(const struct sql_lexer *lx, const char *kw)
{
    return strlen(kw) == lx->word_len && strncasecmp(lx->word, kw, lx->word_len) == 0;
}

static bool sql_word_in(const struct sql_lexer *lx, const char *const *kws)
{
    for (; *kws != NULL; kws++) {
        if (sql_word_is(lx, *kws)) {
            return true;
        }
    }
    return false;
}

static const char *const sql_writing_words[] = {
    "INSERT", "UPDATE",   "DELETE",    "REPLACE", "RETURNING", "CREATE",  "DROP",
    "ALTER",  "ATTACH",   "DETACH",    "VACUUM",  "REINDEX",   "ANALYZE", "BEGIN",
    "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "PRAGMA",    "UPSERT",  NULL,
};

bool proto_sql_is_read_only(const char *sql)
{
    struct sql_lexer lx = {.p = sql};
    enum sql_tok t;
    bool first = true;
    bool ended = false;

    if (sql == NULL) {
        return false;
    }
    while ((t = sql_next(&lx)) != SQL_END) {
        if (ended) {
            if (t == SQL_SEMI) {
                continue; /* "SELECT 1;;" is still one statement */
            }
            return false; /* a second statement: PREPARE would silently ignore it */
        }
        if (t == SQL_SEMI) {
            if (first) {
                return false;
            }
            ended = true;
            continue;
        }
        if (first) {
            static const char *const starts[] = {"SELECT", "VALUES", "WITH", NULL};
            if (t != SQL_WORD || !sql_word_in(&lx, starts)) {
                return false;
            }
            first = false;
            continue;
        }
        if (t == SQL_WORD && sql_word_in(&lx, sql_writing_words)) {
            /* replace(x, y, z) is a string function; REPLACE the statement is never followed by '('. */
            if (sql_word_is(&lx, "REPLACE")) {
                struct sql_lexer peek = lx;
                if (sql_next(&peek) == SQL_LPAREN) {
                    continue;
                }
            }
            return false;
        }
    }
    return !first;
}

static bool sql_bad_type(const struct sql_lexer *lx)
{
    static const char *const bad_types[] = {"DATETIME", "DATE", "TIMESTAMP", "BOOLEAN", NULL};
    return sql_word_in(lx, bad_types);
}

/* Words that end a column's type name in a column definition. */
static bool sql_column_constraint(const struct sql_lexer *lx)
{
    static const char *const words[] = {"CONSTRAINT", "PRIMARY", "NOT",        "NULL",      "UNIQUE", "CHECK",
                                        "DEFAULT",    "COLLATE", "REFERENCES", "GENERATED", "AS",     NULL};
    return sql_word_in(lx, words);
}

/* After a column's name: read its type name (words and quoted names, as SQLite allows) and
 * refuse a dangerous one. Returns the first token after the type name. */
static enum sql_tok sql_check_type(struct sql_lexer *lx, bool *bad)
{
    enum sql_tok t;
    while ((t = sql_next(lx)) == SQL_WORD || t == SQL_QUOTED) {
        if (t == SQL_WORD && sql_column_constraint(lx)) {
            break;
        }
        if (sql_bad_type(lx)) {
            *bad = true;
        }
    }
    return t;
}

/* Skip to the end of the current element of a parenthesised list (a ',' or the closing ')' at
 * the same depth). Returns that token, or SQL_SEMI/SQL_END. */
static enum sql_tok sql_skip_element(struct sql_lexer *lx, enum sql_tok t)
{
    int depth = 0;
    for (;; t = sql_next(lx)) {
        if (t == SQL_END || t == SQL_SEMI) {
            return t;
        }
        if (t == SQL_LPAREN) {
            depth++;
        } else if (t == SQL_RPAREN) {
            if (depth == 0) {
                return t;
            }
            depth--;
        } else if (t == SQL_COMMA && depth == 0) {
            return t;
        }
    }
}

/* CREATE [TEMP] TABLE name (coldef, ...): check each column's type. */
static enum sql_tok sql_check_create_table(struct sql_lexer *lx, bool *bad)
{
    static const char *const table_constraints[] = {"CONSTRAINT", "PRIMARY", "UNIQUE",
                                                    "CHECK",      "FOREIGN", NULL};
    enum sql_tok t;
    /* Up to the column list; "AS SELECT" tables have no declared types. */
    while ((t = sql_next(lx)) != SQL_LPAREN) {
        if (t == SQL_END || t == SQL_SEMI || (t == SQL_WORD && sql_word_is(lx, "AS"))) {
            return t;
        }
    }
    for (;;) {
        t = sql_next(lx); /* first token of an element */
        if (t == SQL_END || t == SQL_SEMI || t == SQL_RPAREN) {
            return t;
        }
        if ((t == SQL_WORD && !sql_word_in(lx, table_constraints)) || t == SQL_QUOTED) {
            t = sql_check_type(lx, bad); /* after the column name */
        }
        t = sql_skip_element(lx, t);
        if (t != SQL_COMMA) {
            return t;
        }
    }
}

/* ALTER TABLE name ADD [COLUMN] coldef. */
static enum sql_tok sql_check_alter(struct sql_lexer *lx, bool *bad)
{
    enum sql_tok t;
    while ((t = sql_next(lx)) != SQL_END && t != SQL_SEMI) {
        if (t == SQL_WORD && sql_word_is(lx, "ADD")) {
            t = sql_next(lx);
            if (t == SQL_WORD && sql_word_is(lx, "COLUMN")) {
                t = sql_next(lx);
            }
            if (t == SQL_WORD || t == SQL_QUOTED) {
                t = sql_check_type(lx, bad);
            }
            return t;
        }
    }
    return t;
}

int proto_sql_check_ddl(const char *sql)
{
    struct sql_lexer lx = {.p = sql};
    enum sql_tok t = SQL_SEMI;
    bool bad = false;

    if (sql == NULL) {
        return 0;
    }
    while (t != SQL_END) {
        if (t != SQL_SEMI) {
            /* Skip the rest of a statement that is not a table definition. Statements inside a
             * trigger body (BEGIN ... END) are never CREATE or ALTER, so splitting them at ';'
             * does no harm. */
            t = sql_next(&lx);
            continue;
        }
        t = sql_next(&lx); /* first token of the next statement */
        if (t != SQL_WORD) {
            continue;
        }
        if (sql_word_is(&lx, "CREATE")) {
            t = sql_next(&lx);
            if (t == SQL_WORD && (sql_word_is(&lx, "TEMP") || sql_word_is(&lx, "TEMPORARY"))) {
                t = sql_next(&lx);
            }
            if (t == SQL_WORD && sql_word_is(&lx, "TABLE")) {
                t = sql_check_create_table(&lx, &bad);
            }
        } else if (sql_word_is(&lx, "ALTER")) {
            t = sql_check_alter(&lx, &bad);
        }
        if (bad) {
            return GERR_REFUSED;
        }
    }
    return 0;
}

/* True iff @sql holds more than one statement (ignoring empty ones and a trailing ';'). */
static bool sql_multiple_statements(const char *sql)
{
    struct sql_lexer lx = {.p = sql};
    enum sql_tok t;
    unsigned statements = 0;
    bool in_statement = false;
    int depth = 0; /* BEGIN ... END of a trigger body holds ';' inside one statement; CASE ... END nests */
    while ((t = sql_next(&lx)) != SQL_END) {
        if (t == SQL_SEMI) {
            if (depth == 0) {
                in_statement = false;
            }
            continue;
        }
        if (t == SQL_WORD && in_statement && (sql_word_is(&lx, "BEGIN") || sql_word_is(&lx, "CASE"))) {
            depth++;
        } else if (t == SQL_WORD && depth > 0 && sql_word_is(&lx, "END")) {
            depth--;
        }
        if (!in_statement) {
            in_statement = true;
            statements++;
        }
    }
    return statements > 1;
}

/* ------------------------------------------------------------------------------------------------
 * Decoding */

void proto_header_decode(const uint8_t p[PROTO_HEADER_SIZE], struct proto_header *h)
{
    h->words = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    h->type = p[4];
    h->schema = p[5];
    h->extra = (uint16_t)(p[6] | p[7] << 8);
}

struct cursor {
    const uint8_t *p;
    size_t n;
    char *errmsg;
};

static int bad(struct cursor *c, const char *what)
{
    gerr_set(c->errmsg, "malformed response: %s", what);
    return GERR_PROTO;
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = v << 8 | p[i];
    }
    return v;
}

static int get_u64(struct cursor *c, uint64_t *v, const char *what)
{
    if (c->n < 8) {
        return bad(c, what);
    }
    *v = le64(c->p);
    c->p += 8;
    c->n -= 8;
    return 0;
}

static int get_u32(struct cursor *c, uint32_t *v, const char *what)
{
    if (c->n < 4) {
        return bad(c, what);
    }
    *v = (uint32_t)c->p[0] | (uint32_t)c->p[1] << 8 | (uint32_t)c->p[2] << 16 | (uint32_t)c->p[3] << 24;
    c->p += 4;
    c->n -= 4;
    return 0;
}

/* A NUL-terminated, zero-padded text. *s points into the body; *len excludes the NUL. */
static int get_text(struct cursor *c, const char **s, size_t *len, const char *what)
{
    const uint8_t *nul = memchr(c->p, '\0', c->n);
    if (nul == NULL) {
        return bad(c, what);
    }
    size_t l = (size_t)(nul - c->p);
    size_t total = pad8(l + 1);
    if (total > c->n) {
        return bad(c, what);
    }
    *s = (const char *)c->p;
    *len = l;
    c->p += total;
    c->n -= total;
    return 0;
}

static void copy_trunc(char *dst, size_t cap, const char *s, size_t len)
{
    if (len >= cap) {
        len = cap - 1;
    }
    memcpy(dst, s, len);
    dst[len] = '\0';
}

int proto_dec_failure(const uint8_t *p, size_t n, struct proto_failure *f, char *errmsg)
{
    struct cursor c = {p, n, errmsg};
    const char *s;
    size_t len;
    int rv;
    if ((rv = get_u64(&c, &f->code, "FAILURE code")) != 0 ||
        (rv = get_text(&c, &s, &len, "FAILURE message")) != 0) {
        return rv;
    }
    copy_trunc(f->message, sizeof f->message, s, len);
    return 0;
}

int proto_dec_server(const uint8_t *p, size_t n, struct proto_server *out, char *errmsg)
{
    struct cursor c = {p, n, errmsg};
    const char *s;
    size_t len;
    int rv;
    if ((rv = get_u64(&c, &out->id, "SERVER id")) != 0 ||
        (rv = get_text(&c, &s, &len, "SERVER address")) != 0) {
        return rv;
    }
    if (len >= sizeof out->address) {
        return bad(&c, "SERVER address too long");
    }
    copy_trunc(out->address, sizeof out->address, s, len);
    return 0;
}

int proto_dec_welcome(const uint8_t *p, size_t n, uint64_t *heartbeat_ms, char *errmsg)
{
    struct cursor c = {p, n, errmsg};
    return get_u64(&c, heartbeat_ms, "WELCOME");
}

int proto_dec_db(const uint8_t *p, size_t n, uint32_t *db_id, char *errmsg)
{
    struct cursor c = {p, n, errmsg};
    uint32_t pad;
    int rv;
    if ((rv = get_u32(&c, db_id, "DB id")) != 0 || (rv = get_u32(&c, &pad, "DB padding")) != 0) {
        return rv;
    }
    return 0;
}

int proto_dec_stmt(const uint8_t *p, size_t n, uint32_t *db_id, uint32_t *stmt_id, uint64_t *n_params,
                   char *errmsg)
{
    struct cursor c = {p, n, errmsg};
    int rv;
    if ((rv = get_u32(&c, db_id, "STMT db id")) != 0 || (rv = get_u32(&c, stmt_id, "STMT id")) != 0 ||
        (rv = get_u64(&c, n_params, "STMT params")) != 0) {
        return rv;
    }
    return 0; /* newer servers may append a tail offset: ignored */
}

int proto_dec_result(const uint8_t *p, size_t n, uint64_t *last_insert_id, uint64_t *rows_affected,
                     char *errmsg)
{
    struct cursor c = {p, n, errmsg};
    int rv;
    if ((rv = get_u64(&c, last_insert_id, "RESULT last insert id")) != 0 ||
        (rv = get_u64(&c, rows_affected, "RESULT rows affected")) != 0) {
        return rv;
    }
    return 0;
}

int proto_dec_empty(const uint8_t *p, size_t n, char *errmsg)
{
    struct cursor c = {p, n, errmsg};
    uint64_t zero;
    return get_u64(&c, &zero, "EMPTY");
}

int proto_dec_metadata(const uint8_t *p, size_t n, uint64_t *failure_domain, uint64_t *weight, char *errmsg)
{
    struct cursor c = {p, n, errmsg};
    int rv;
    if ((rv = get_u64(&c, failure_domain, "METADATA failure domain")) != 0 ||
        (rv = get_u64(&c, weight, "METADATA weight")) != 0) {
        return rv;
    }
    return 0;
}

int proto_dec_servers(const uint8_t *p, size_t n, struct proto_node_info **out, unsigned *n_out, char *errmsg)
{
    struct cursor c = {p, n, errmsg};
    uint64_t count;
    int rv;

    *out = NULL;
    *n_out = 0;
    if ((rv = get_u64(&c, &count, "SERVERS count")) != 0) {
        return rv;
    }
    /* Each entry takes at least 24 bytes (id, one text word, role): check before allocating. */
    if (count > PROTO_MAX_SERVERS) {
        gerr_set(errmsg, "SERVERS count %llu exceeds the limit of %u", (unsigned long long)count,
                 PROTO_MAX_SERVERS);
        return GERR_TOOBIG;
    }
    if (count > c.n / 24) {
        return bad(&c, "SERVERS count larger than the body");
    }
    struct proto_node_info *nodes = mem_zalloc(sizeof *nodes * (count == 0 ? 1 : count));
    for (uint64_t i = 0; i < count; i++) {
        const char *s;
        size_t len;
        uint64_t role;
        if ((rv = get_u64(&c, &nodes[i].id, "SERVERS id")) != 0 ||
            (rv = get_text(&c, &s, &len, "SERVERS address")) != 0 ||
            (rv = get_u64(&c, &role, "SERVERS role")) != 0) {
            mem_free(nodes);
            return rv;
        }
        if (len >= sizeof nodes[i].address || role > PROTO_ROLE_SPARE) {
            mem_free(nodes);
            return bad(&c, "SERVERS entry out of range");
        }
        copy_trunc(nodes[i].address, sizeof nodes[i].address, s, len);
        nodes[i].role = (int)role;
    }
    *out = nodes;
    *n_out = (unsigned)count;
    return 0;
}

int proto_dec_files(const uint8_t *p, size_t n, struct proto_file files[2], char *errmsg)
{
    struct cursor c = {p, n, errmsg};
    uint64_t count;
    int rv;
    if ((rv = get_u64(&c, &count, "FILES count")) != 0) {
        return rv;
    }
    if (count != 2) {
        return bad(&c, "FILES count is not 2");
    }
    for (int i = 0; i < 2; i++) {
        const char *s;
        size_t len;
        if ((rv = get_text(&c, &s, &len, "FILES name")) != 0 ||
            (rv = get_u64(&c, &files[i].size, "FILES size")) != 0) {
            return rv;
        }
        if (len >= sizeof files[i].name || files[i].size > c.n) {
            return bad(&c, "FILES entry larger than the body");
        }
        copy_trunc(files[i].name, sizeof files[i].name, s, len);
        files[i].data = c.p;
        c.p += files[i].size;
        c.n -= (size_t)files[i].size;
    }
    return 0;
}

/* ---- Rows */

struct proto_rows_chunk {
    struct proto_rows_chunk *next;
    size_t used;
    size_t cap;
    char data[];
};

void proto_rows_init(struct proto_rows *r, size_t max_bytes)
{
    memset(r, 0, sizeof *r);
    r->max_bytes = max_bytes == 0 ? PROTO_DEFAULT_MAX_RESULT : max_bytes;
}

void proto_rows_close(struct proto_rows *r)
{
    struct proto_rows_chunk *ch = r->chunks;
    while (ch != NULL) {
        struct proto_rows_chunk *next = ch->next;
        mem_free(ch);
        ch = next;
    }
    mem_free(r->cols);
    mem_free(r->vals);
    size_t max = r->max_bytes;
    proto_rows_init(r, max);
}

/* Copy @n bytes plus a NUL into stable storage owned by @r. */
static char *rows_store(struct proto_rows *r, const void *src, size_t n)
{
    struct proto_rows_chunk *ch = r->chunks;
    if (ch == NULL || ch->cap - ch->used < n + 1) {
        size_t cap = n + 1 > 16384 ? n + 1 : 16384;
        ch = mem_alloc(sizeof *ch + cap);
        ch->next = r->chunks;
        ch->used = 0;
        ch->cap = cap;
        r->chunks = ch;
    }
    char *dst = ch->data + ch->used;
    if (n > 0) {
        memcpy(dst, src, n);
    }
    dst[n] = '\0';
    ch->used += n + 1;
    return dst;
}

static int rows_charge(struct proto_rows *r, struct cursor *c, size_t n)
{
    if (n > r->max_bytes - r->bytes) {
        gerr_set(c->errmsg, "result set exceeds %zu bytes", r->max_bytes);
        return GERR_TOOBIG;
    }
    r->bytes += n;
    return 0;
}

static int rows_columns(struct proto_rows *r, struct cursor *c)
{
    uint64_t ncols;
    int rv;
    if ((rv = get_u64(c, &ncols, "ROWS column count")) != 0) {
        return rv;
    }
    /* Each name takes at least one word. */
    if (ncols > PROTO_MAX_COLUMNS) {
        gerr_set(c->errmsg, "ROWS column count %llu exceeds the limit of %u", (unsigned long long)ncols,
                 PROTO_MAX_COLUMNS);
        return GERR_TOOBIG;
    }
    if (ncols > c->n / 8) {
        return bad(c, "ROWS column count larger than the body");
    }
    bool first = r->cols == NULL;
    if (!first && ncols != r->n_cols) {
        return bad(c, "ROWS column count changed between batches");
    }
    if (first) {
        r->cols = mem_zalloc(sizeof *r->cols * (ncols == 0 ? 1 : ncols));
        r->n_cols = (unsigned)ncols;
    }
    for (unsigned i = 0; i < ncols; i++) {
        const char *s;
        size_t len;
        if ((rv = get_text(c, &s, &len, "ROWS column name")) != 0) {
            return rv;
        }
        if (first) {
            if ((rv = rows_charge(r, c, len + 1)) != 0) {
                return rv;
            }
            r->cols[i] = rows_store(r, s, len);
        } else if (strlen(r->cols[i]) != len || memcmp(r->cols[i], s, len) != 0) {
            return bad(c, "ROWS column names changed between batches");
        }
    }
    return 0;
}

static int rows_value(struct proto_rows *r, struct cursor *c, int type, struct proto_value *v)
{
    uint64_t u;
    const char *s;
    size_t len;
    int rv;

    v->type = type;
    switch (type) {
    case PROTO_INTEGER:
    case PROTO_UNIXTIME:
    case PROTO_BOOLEAN:
        if ((rv = get_u64(c, &u, "integer value")) != 0) {
            return rv;
        }
        v->u.i = (int64_t)u;
        return 0;
    case PROTO_FLOAT:
        if ((rv = get_u64(c, &u, "float value")) != 0) {
            return rv;
        }
        memcpy(&v->u.f, &u, 8);
        return 0;
    case PROTO_NULL:
        return get_u64(c, &u, "null value");
    case PROTO_TEXT:
    case PROTO_ISO8601:
        if ((rv = get_text(c, &s, &len, "text value")) != 0) {
            return rv;
        }
        if ((rv = rows_charge(r, c, len + 1)) != 0) {
            return rv;
        }
        v->u.b.s = rows_store(r, s, len);
        v->u.b.n = len;
        return 0;
    case PROTO_BLOB:
        if ((rv = get_u64(c, &u, "blob length")) != 0) {
            return rv;
        }
        if (u > c->n || pad8((size_t)u) > c->n) {
            return bad(c, "blob longer than the body");
        }
        if ((rv = rows_charge(r, c, (size_t)u + 1)) != 0) {
            return rv;
        }
        v->u.b.s = rows_store(r, c->p, (size_t)u);
        v->u.b.n = (size_t)u;
        c->p += pad8((size_t)u);
        c->n -= pad8((size_t)u);
        return 0;
    default:
        return bad(c, "unknown value type");
    }
}

int proto_dec_rows(const uint8_t *p, size_t n, struct proto_rows *r, bool *done, char *errmsg)
{
    struct cursor c = {p, n, errmsg};
    int rv;

    if ((rv = rows_columns(r, &c)) != 0) {
        return rv;
    }
    const size_t hdr = pad8((r->n_cols + 1u) / 2u);
    for (;;) {
        if (c.n < 8) {
            return bad(&c, "ROWS without end marker");
        }
        uint64_t marker = le64(c.p);
        if (marker == PROTO_MARKER_DONE || marker == PROTO_MARKER_PART) {
            c.p += 8;
            c.n -= 8;
            if (c.n != 0) {
                return bad(&c, "bytes after ROWS end marker");
            }
            *done = marker == PROTO_MARKER_DONE;
            return 0;
        }
        if (r->n_cols == 0) {
            return bad(&c, "row in a result without columns");
        }
        if (c.n < hdr) {
            return bad(&c, "truncated row header");
        }
        const uint8_t *types = c.p;
        c.p += hdr;
        c.n -= hdr;
        /* Each value takes at least 8 bytes: refuse a row that cannot fit before growing. */
        if ((size_t)r->n_cols > c.n / 8) {
            return bad(&c, "truncated row");
        }
        if ((rv = rows_charge(&*r, &c, sizeof(struct proto_value) * r->n_cols)) != 0) {
            return rv;
        }
        if ((r->n_rows + 1) * r->n_cols > r->vals_cap) {
            size_t cap = r->vals_cap == 0 ? (size_t)r->n_cols * 16 : r->vals_cap * 2;
            r->vals = mem_realloc(r->vals, cap * sizeof *r->vals);
            r->vals_cap = cap;
        }
        struct proto_value *row = &r->vals[r->n_rows * r->n_cols];
        for (unsigned i = 0; i < r->n_cols; i++) {
            int type = (i % 2 == 0) ? (types[i / 2] & 0x0f) : (types[i / 2] >> 4);
            if ((rv = rows_value(r, &c, type, &row[i])) != 0) {
                return rv;
            }
        }
        r->n_rows++;
    }
}

bool proto_sql_is_single_statement(const char *sql)
{
    return sql != NULL && !sql_multiple_statements(sql);
}
