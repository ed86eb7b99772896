/* The gantry CLI's shared parts. The command table is the single source of the commands: main
 * dispatches through it, --help prints its synopsis and example, `gantry help --commands` lists it
 * for the documentation test, and `gantry completion bash` is generated from it.
 *
 *   tools/gantry.c            main: global flags, contexts applied, dispatch
 *   tools/gantry_help.c       the command registry, help, the bash completion
 *   tools/gantry_call.c       the call with failover across endpoints, exit codes, hints
 *   tools/gantry_out.c        protobuf messages as JSON, YAML or a table
 *   tools/gantry_ctx.c        contexts in $XDG_CONFIG_HOME/gantry/config.json
 *   tools/gantry_cluster.c    cluster
 *   tools/gantry_top.c        cluster top
 *   tools/gantry_principals.c whoami, user, sa, role, key
 *   tools/gantry_tenants.c    namespace, quota, policy, usage, audit
 *   tools/gantry_providers.c  provider
 *   tools/gantry_warmpools.c  warmpool
 *   tools/gantry_sandbox.c    sandbox
 *   tools/gantry_drill.c      drill
 *   tools/gantry_watch.c      watch */
#ifndef GANTRY_TOOLS_GANTRY_H
#define GANTRY_TOOLS_GANTRY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "gantry/v1/meta.pb-c.h"
#include "server/grpc/client.h"

/* Exit codes (docs/cli.md). */
enum {
    GANTRY_EXIT_OK = 0,
    GANTRY_EXIT_FAILED = 1,      /* the server refused or failed the call */
    GANTRY_EXIT_USAGE = 2,       /* bad command line or configuration */
    GANTRY_EXIT_UNAVAILABLE = 3, /* no endpoint answered (connection refused, UNAVAILABLE, TLS) */
    GANTRY_EXIT_DENIED = 4,      /* UNAUTHENTICATED or PERMISSION_DENIED */
    GANTRY_EXIT_NOT_READY = 5,   /* a waited-for sandbox ended in ERROR or was not READY in time */
    GANTRY_EXIT_REFUSED = 6,     /* policy test: the policy refuses the connection */
};

enum gantry_format { GANTRY_OUT_TABLE, GANTRY_OUT_JSON, GANTRY_OUT_YAML };

#define GANTRY_MAX_ENDPOINTS 16

struct cli {
    char endpoint_buf[2048]; /* the endpoints, comma-separated, split in place */
    const char *endpoints[GANTRY_MAX_ENDPOINTS];
    unsigned n_endpoints;
    unsigned preferred; /* the endpoint that answered last; calls start there */
    char ca[1024];
    char token[8192]; /* an API key or an OIDC token; never from a flag */
    char ns[256];     /* --namespace, else the context's namespace, else "" */
    bool ns_flag;     /* the namespace came from --namespace on this command line */
    bool all_namespaces;
    char context[128]; /* the context in use, "" when none */
    enum gantry_format out;
    unsigned retry_ms; /* how long a call keeps retrying while no endpoint answers */
    /* For a call that streams requests (sandbox exec): set on the client of each attempt. */
    const struct grpc_client_input *input;
    /* For streams and probes: */
    bool quiet;       /* print nothing about a call the server failed (the caller handles it) */
    bool deadline_ok; /* a stream that reaches its deadline ends normally */
    bool stream_done; /* set by a stream callback that has seen enough (it then returns nonzero) */
    int last_status;  /* the gRPC status of the last call that completed, -1 otherwise */
    /* An UNAVAILABLE answered by a replica is the call's answer (printed, exit UNAVAILABLE), not a
     * reason to try the next endpoint: for calls whose UNAVAILABLE says why (a transfer's target is
     * catching up), where another replica would answer the same after the same wait. */
    bool unavailable_final;
    unsigned call_timeout_ms; /* gantry_call_json's deadline per attempt; 0: 30 s */
    /* The x-gantry-revision trailer of the last call that completed (the revision a model-served
     * Get answered at), 0 when it sent none (a Get the leader's store answered). */
    uint64_t last_revision;
};

/* One command. @args is the synopsis after "gantry GROUP NAME"; @example is one or more lines of
 * shell. @offline commands do not need an endpoint or a credential. */
struct gantry_cmd {
    const char *group;
    const char *name; /* NULL for a group without subcommands (whoami, version) */
    const char *args;
    const char *summary;
    const char *example;
    int (*run)(struct cli *c, int argc, char **argv);
    bool offline;
};

/* The command tables, each ended by an entry with a NULL group. */
extern const struct gantry_cmd gantry_cluster_cmds[];
extern const struct gantry_cmd gantry_principal_cmds[];
extern const struct gantry_cmd gantry_tenant_cmds[];
extern const struct gantry_cmd gantry_provider_cmds[];
extern const struct gantry_cmd gantry_warmpool_cmds[];
extern const struct gantry_cmd gantry_sandbox_cmds[];
extern const struct gantry_cmd gantry_ctx_cmds[];
extern const struct gantry_cmd gantry_drill_cmds[];
extern const struct gantry_cmd gantry_watch_cmds[];

/* `gantry sandbox watch` (gantry_sandbox.c), also `gantry watch sandbox`. */
int gantry_sandbox_watch(struct cli *c, int argc, char **argv);

/* `gantry cluster top` (gantry_top.c). */
int gantry_cluster_top(struct cli *c, int argc, char **argv);

/* --- gantry_call.c --- */

/* Call @path on the endpoints, starting with the one that answered last, until one answers other
 * than UNAVAILABLE or a transport failure; while none does, retry for up to c->retry_ms. The
 * same request (with its request_id) is sent each time, so a retried write applies once. Unary:
 * *@out gets the reply (protobuf_c_message_free_unpacked); streaming: @cb per message, @out NULL
 * (a stream that breaks after its first message is not retried: the caller resumes it). Prints
 * what went wrong and what to do, and returns a GANTRY_EXIT_* code. */
/* Whether there is an endpoint and a CA to call with; otherwise print what to do and return
 * GANTRY_EXIT_USAGE (commands that wait for something before their first call check first). */
int gantry_check_endpoints(struct cli *c);

int gantry_call(struct cli *c, const char *path, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *resp, grpc_client_msg_cb cb, void *arg,
                ProtobufCMessage **out, unsigned timeout_ms);

/* A unary call whose reply is converted to JSON (*@out, json_decref it). A list call follows
 * next_page_token when @req has a "page" field, appending @items of each page to the first. */
int gantry_call_json(struct cli *c, const char *path, ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp, const char *items, json_t **out);

/* gantry_call_json, then gantry_print. */
struct gantry_col;
int gantry_simple(struct cli *c, const char *path, ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp, const char *items, const struct gantry_col *cols);

/* The read options of a get or list (gantry.v1.ReadOptions, docs/resources.md "Read
 * consistency"; docs/cli.md): --min-revision N, --max-staleness D (500ms, 2s, 1m, or plain
 * milliseconds) and --show-revision. Any command whose request has a `read` field can take them:
 * gantry_read_opts before gantry_args, then gantry_read_simple instead of gantry_simple. */
struct gantry_read {
    Gantry__V1__ReadOptions opts; /* what the flags asked; all 0: linearizable */
    bool show;                    /* --show-revision: the revision the answer reflects on stderr */
};
/* Take the read flags out of argv into @r. Both --min-revision and --max-staleness, or a value
 * that does not parse: prints why and returns GANTRY_EXIT_USAGE; 0 otherwise. */
int gantry_read_opts(int *argc, char **argv, struct gantry_read *r);
/* gantry_simple with @r set as @req's `read` field (every page of a list), then with
 * --show-revision "revision: N" on stderr: a list's `revision` field (its first page's), a get's
 * x-gantry-revision, or a note that the store answered (linearizable, no revision). A request
 * without a `read` field given read options: GANTRY_EXIT_USAGE, nothing called. */
int gantry_read_simple(struct cli *c, const char *path, ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *resp, const char *items,
                       const struct gantry_col *cols, struct gantry_read *r);

/* A fresh UUIDv4 for request_id. */
void gantry_request_id(char out[37]);

/* --- gantry_out.c --- */

/* @m as JSON: fields by their proto names, enums by name, maps as objects, bytes as base64. */
json_t *gantry_json(const ProtobufCMessage *m);

/* A table column: @path is dotted into the JSON ("meta.name"); @strip is a prefix removed from
 * the value (enum names: "PHASE_"); @time formats milliseconds as UTC. */
struct gantry_col {
    const char *header;
    const char *path;
    const char *strip;
    bool time;
};

/* Print @doc in c->out. Tables: one row per element of the array at @items, or one row for @doc
 * itself when @items is NULL. */
void gantry_print(struct cli *c, json_t *doc, const char *items, const struct gantry_col *cols);

/* Print @doc as YAML (also used by `context show`). */
void gantry_yaml(FILE *f, json_t *doc, int indent);

/* The value at dotted @path, or NULL. */
json_t *gantry_json_path(json_t *doc, const char *path);

/* --- argument helpers (gantry_call.c) --- */

/* Take "--name VALUE" out of argv (before any "--"); NULL when absent. */
const char *gantry_opt(int *argc, char **argv, const char *name);
/* Take every "--name VALUE"; returns how many were stored in @vals (at most @max). */
int gantry_opt_all(int *argc, char **argv, const char *name, const char **vals, int max);
/* Take "--name"; true when present. */
bool gantry_flag(int *argc, char **argv, const char *name);
/* Check that what is left is @min..@max positional arguments and no unknown option; otherwise
 * print the command's usage and return GANTRY_EXIT_USAGE (0 when fine). @max < 0: no limit. */
int gantry_args(const struct gantry_cmd *cmd, int argc, char **argv, int min, int max);
/* Parse the value @s of the numeric option @what: a whole number from 0 to @max in plain decimal
 * (no sign, no spaces, no other characters). NULL (the option is absent) leaves *@out alone and
 * returns 0. Anything else, including a number past @max or past 2^64 (which must never wrap
 * around into a small one), prints "gantry: WHAT must be a whole number from 0 to MAX, not ..."
 * and returns -1; the command then exits GANTRY_EXIT_USAGE. */
int gantry_u64(const char *what, const char *s, uint64_t max, uint64_t *out);

/* The longest wait (--timeout) a command takes, in seconds: a call's deadline is kept in
 * milliseconds in 32 bits (about 49 days). */
#define GANTRY_MAX_TIMEOUT_S (UINT32_MAX / 1000u)
/* The namespace for a single object: --namespace, the context's, else "default". */
const char *gantry_ns(struct cli *c);
/* The namespace for a list: "" with --all-namespaces or when none is set. */
const char *gantry_list_ns(struct cli *c);
/* "KEY=VALUE" pairs as a protobuf map field: entries of type @entry (a map's *Entry message).
 * Fills *@out and *@n; free with gantry_map_free. Prints an error and returns -1 on a pair
 * without "=". */
int gantry_map(const ProtobufCMessageDescriptor *entry, const char **pairs, int n_pairs, void *out,
               size_t *n);
void gantry_map_free(void *out, size_t n);
/* Resolve a principal given by id or name to its id (@out). */
int gantry_principal_id(struct cli *c, const char *id_or_name, char *out, size_t len);
/* Parse a time into *@ms (left alone when @s is NULL): milliseconds since the epoch, "-1h",
 * "+30d" (s, m, h, d) relative to now, or "YYYY-MM-DDTHH:MM:SSZ". Prints why and returns -1 when
 * malformed or out of range (a time before 1970 or one that does not fit in 64 bits of
 * milliseconds). */
int gantry_time(const char *s, int64_t *ms);
/* --- gantry_help.c --- */

/* Find the command for `gantry GROUP NAME` (NAME NULL for groups without subcommands). */
const struct gantry_cmd *gantry_find(const char *group, const char *name);
/* Whether GROUP exists, and whether it has subcommands. */
bool gantry_group_exists(const char *group, bool *has_subs);
void gantry_cmd_help(FILE *f, const struct gantry_cmd *cmd);
void gantry_group_help(FILE *f, const char *group);
void gantry_usage(FILE *f);

/* --- gantry_ctx.c --- */

/* Fill what the flags and environment left unset (endpoints, CA, credential, namespace) from
 * the context named @name, else GANTRY_CONTEXT, else the current one. Returns 0, or
 * GANTRY_EXIT_USAGE after printing why (a named context that does not exist, a bad file). */
int gantry_ctx_apply(struct cli *c, const char *name, bool have_endpoint, bool have_ca, bool have_token,
                     bool have_ns);
/* The names of the contexts, one per line (for completion). */
void gantry_ctx_names(FILE *f);
/* Read a credential file into c->token (trailing whitespace removed). */
int gantry_read_token(struct cli *c, const char *file);

#endif
