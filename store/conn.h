/* One blocking connection to one dqlite node.
 *
 * A connection is used by one thread at a time. Every request has a deadline (the connection's
 * request timeout): the socket is non-blocking and every wait goes through poll(2), so a dead or
 * black-holed peer costs at most that timeout. Messages are framed here; bodies are decoded by
 * store/proto.h, which refuses the requests that would crash or wedge a 1.11 node.
 *
 * Errors: every function returns 0 or a GERR_* code and, on error, leaves a message naming the
 * node and the request in c->errmsg. Server FAILUREs are translated by store_err_from_dqlite()
 * (the one translation of SQLite/dqlite codes); the raw code is kept in c->last_code.
 *
 * A connection that saw an I/O error, a timeout or a protocol violation is marked broken: every
 * later call returns GERR_CLOSED and the owner must close it. Whether a failed *write* may have
 * committed is for the caller to judge (store/client.h does): on a broken connection after the
 * request was sent, it may have. c->sent tells whether the last request left this process. */
#ifndef GANTRY_STORE_CONN_H
#define GANTRY_STORE_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "store/proto.h"

/* A connection's bytes when they do not go straight through its socket: mutual TLS driven on the
 * caller's own thread (raft/peertls.h, peertls_dial_stream), instead of a relay thread between a
 * local socket and the peer. Non-blocking like the socket: send and recv return the bytes moved
 * (> 0), recv 0 when the peer closed; -1 when they would block, with *want set to POLLIN or
 * POLLOUT (poll the socket for it, then call again), or on an error, with *want 0 and the reason
 * in @errmsg. close frees @s and closes the socket. All NULL: a plain socket. */
struct store_stream {
    void *s;
    long (*send)(void *s, const uint8_t *p, size_t n, short *want, char *errmsg);
    long (*recv)(void *s, uint8_t *p, size_t n, short *want, char *errmsg);
    void (*close)(void *s);
};

/* Like store_dial_fn (below), for a dialer that may hand back a stream: *@fd is the socket to poll
 * and @stream, when its s is set, moves the bytes and owns the socket. */
typedef int (*store_stream_dial_fn)(void *arg, const char *address, unsigned timeout_ms, int *fd,
                                    struct store_stream *stream, char *errmsg);

/* A statement this connection prepared (store_conn_query_prepared). */
#define STORE_CONN_STMTS 16u
struct store_conn_stmt {
    char *sql; /* a copy of the text, the key */
    uint32_t id;
    uint64_t used; /* c->stmt_tick at the last use: the least recently used one is evicted */
};

struct store_conn {
    int fd;                     /* -1 when closed */
    struct store_stream stream; /* s NULL: bytes go through fd itself */
    char address[256];          /* the node dialled, exactly as given */
    unsigned timeout_ms;        /* per request */
    size_t max_message;         /* cap on one response message body */
    bool broken;
    bool sent; /* last request was (at least partly) written */
    bool db_open;
    uint32_t db_id;
    uint64_t last_code; /* last FAILURE code from the server, 0 if none */
    struct buf wbuf;
    struct buf rbuf;
    struct store_conn_stmt stmts[STORE_CONN_STMTS];
    unsigned n_stmts;
    uint64_t stmt_tick;
    char errmsg[GERR_MSG_SIZE];
};

#define STORE_CONN_DEFAULT_MAX_MESSAGE (64u * 1024u * 1024u)
#define STORE_CONN_DUMP_MAX_MESSAGE    (4ull * 1024u * 1024u * 1024u)

/* Translate a FAILURE code that answered request @req (enum proto_req): 10250/8202 ->
 * GERR_NOTLEADER; 10506/8458, 778 (SQLITE_IOERR_WRITE) and 4 (SQLITE_ABORT: server shutting down
 * mid-request) -> GERR_UNKNOWN_OUTCOME; 5 and 6 (BUSY/LOCKED, their extended forms, and
 * "checkpoint in progress") -> GERR_BUSY; 19 and its extended codes -> GERR_CONSTRAINT. dqlite
 * overloads 12 (SQLITE_NOTFOUND): answering FINALIZE it means "no statement with the given id"
 * (GERR_NOTFOUND); otherwise "no database opened", i.e. our leader connection was closed after a
 * step-down (GERR_NOTLEADER: reconnect). 7 answering EXEC or EXEC_SQL is raft's RAFT_NOTLEADER
 * leaked by dqlite 1.11 during a leadership transfer (frames aborted, nothing applied):
 * GERR_NOTLEADER. Everything else -> GERR_SQL. */
int store_err_from_dqlite(uint64_t code, int req);

/* How to reach a node. The default (store_conn_tcp_dial) opens a TCP connection with
 * TCP_NODELAY; a replica with peer TLS passes a dialer that returns a local socket relayed over
 * mutual TLS (raft/peertls.h). On success *@fd is a connected stream socket that the connection
 * then owns; on error the function returns a GERR_* code with the reason in @errmsg. May be
 * called from any thread. */
typedef int (*store_dial_fn)(void *arg, const char *address, unsigned timeout_ms, int *fd, char *errmsg);
int store_conn_tcp_dial(void *arg, const char *address, unsigned timeout_ms, int *fd, char *errmsg);

/* A store_dial_fn for a unix socket path ("@name" is abstract): for a replica's own node, which
 * listens on a private abstract socket behind the peer TLS relay (raft/replica.h). */
int store_conn_unix_dial(void *arg, const char *path, unsigned timeout_ms, int *fd, char *errmsg);

/* Connect to @address ("a.b.c.d:port") within @timeout_ms with @dial (NULL: store_conn_tcp_dial)
 * and send the protocol handshake. @c is caller-owned memory; on success it must be closed with
 * store_conn_close. On error it is left closed (store_conn_close is still allowed) with the
 * reason in c->errmsg. */
int store_conn_open(struct store_conn *c, const char *address, unsigned timeout_ms, store_dial_fn dial,
                    void *dial_arg);
/* The same with a dialer that may return a stream (NULL: store_conn_tcp_dial). */
int store_conn_open_stream(struct store_conn *c, const char *address, unsigned timeout_ms,
                           store_stream_dial_fn dial, void *dial_arg);
void store_conn_close(struct store_conn *c);

/* LEADER: the node this node believes is the leader (id 0 and "" when unknown). */
int store_conn_leader(struct store_conn *c, struct proto_server *out);
/* CLIENT: register (optional). */
int store_conn_client(struct store_conn *c, uint64_t client_id);
/* OPEN @name. Sets c->db_open/db_id. */
int store_conn_open_db(struct store_conn *c, const char *name);

struct store_result {
    uint64_t last_insert_id;
    uint64_t rows_affected;
};

/* EXEC_SQL: one or more statements; @params bind to the first. @res may be NULL. */
int store_conn_exec_sql(struct store_conn *c, const char *sql, const struct proto_value *params, unsigned n,
                        struct store_result *res);
/* Results of more than this many columns are refused (GERR_REFUSED) after they are drained: they
 * can overflow a dqlite 1.11 node's response buffer (store/conn.c columns_ok). */
#define STORE_MAX_RESULT_COLUMNS 16u

/* QUERY_SQL of one read-only statement (refused with GERR_REFUSED otherwise). @rows must be
 * initialised by the caller (proto_rows_init) and is appended to. Drains every batch. A FAILURE
 * after some rows has an unreliable code (1.11 bug): it is reported as GERR_SQL. */
int store_conn_query_sql(struct store_conn *c, const char *sql, const struct proto_value *params, unsigned n,
                         struct proto_rows *rows);

/* Prepared statements. store_conn_prepare_query refuses statements that are not read-only. */
int store_conn_prepare(struct store_conn *c, const char *sql, uint32_t *stmt_id, uint64_t *n_params);
int store_conn_prepare_query(struct store_conn *c, const char *sql, uint32_t *stmt_id, uint64_t *n_params);
int store_conn_exec(struct store_conn *c, uint32_t stmt_id, const struct proto_value *params, unsigned n,
                    struct store_result *res);
int store_conn_query(struct store_conn *c, uint32_t stmt_id, const struct proto_value *params, unsigned n,
                     struct proto_rows *rows);
int store_conn_finalize(struct store_conn *c, uint32_t stmt_id);

/* QUERY of one read-only statement that this connection prepares once: the first call with @sql
 * sends PREPARE (refused with GERR_REFUSED if the text is not read-only) and keeps the statement's
 * id; later calls send only QUERY, so the node does not parse and plan the text again (a 16-column
 * facts query costs about 100 us to prepare on this project's machine, the QUERY a few). The key
 * is the text (copied), so this is for a few fixed texts, not for SQL built per call. At most
 * STORE_CONN_STMTS statements are kept; preparing one more FINALIZEs the least recently used.
 * Statements die with the connection (dqlite closes them on a leader change too, and the
 * connection is then reopened). Rows and errors as store_conn_query_sql. */
int store_conn_query_prepared(struct store_conn *c, const char *sql, const struct proto_value *params,
                              unsigned n, struct proto_rows *rows);
/* INTERRUPT: stop a running statement; reads and discards until EMPTY. */
int store_conn_interrupt(struct store_conn *c);

/* Membership and operations. */
int store_conn_add(struct store_conn *c, uint64_t id, const char *address);
int store_conn_assign(struct store_conn *c, uint64_t id, int role);
int store_conn_remove(struct store_conn *c, uint64_t id);
int store_conn_transfer(struct store_conn *c, uint64_t target_id);
/* CLUSTER format 1. *@nodes is allocated and owned by the caller (mem_free). */
int store_conn_cluster(struct store_conn *c, struct proto_node_info **nodes, unsigned *n);
int store_conn_describe(struct store_conn *c, uint64_t *failure_domain, uint64_t *weight);
int store_conn_weight(struct store_conn *c, uint64_t weight);

/* DUMP @db into @dir as files named @db and @db-wal (created 0600, replaced atomically). */
int store_conn_dump(struct store_conn *c, const char *db, const char *dir);

/* Requests this process has sent to dqlite nodes (every connection, every kind), for /metrics and
 * the benchmark's "dqlite requests per call". Thread-safe. */
uint64_t store_conn_requests_total(void);

#endif
