/* gantry-store: a small operator tool that talks to a dqlite cluster through the store client.
 *
 * It exists for operating and debugging the replicated store directly (the dev cluster, the
 * integration tests, disaster-recovery drills); the `gantry` CLI talks to the gRPC API instead.
 * It links the client side only. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"
#include "lib/mem.h"
#include "raft/peertls.h"
#include "store/backup.h"
#include "store/client.h"
#include "store/migrate.h"

static const char usage[] =
    "usage: gantry-store --address A[,B,...] [--database NAME] [--timeout-ms N] [--tls-dir D]\n"
    "                    COMMAND [ARGS]\n"
    "\n"
    "  --tls-dir D  reach nodes that run behind the peer TLS relay, with D/ca.pem, D/cert.pem and\n"
    "               D/key.pem from the cluster CA\n"
    "\n"
    "Commands:\n"
    "  members             list the cluster's nodes with their roles, and the leader\n"
    "  leader              print the leader's id and address\n"
    "  exec SQL [PARAM...] run statement(s) on the leader (parameters bind as text, or as\n"
    "                      integers when prefixed with i:, e.g. i:42)\n"
    "  query SQL [PARAM...] run one read-only statement and print the rows, tab-separated\n"
    "  migrate             apply Gantry's schema migrations; print the schema version\n"
    "  version             print the schema version\n"
    "  add ID ADDRESS      add a node as a spare\n"
    "  assign ID ROLE      make a node voter, standby or spare\n"
    "  remove ID           remove a node from the cluster\n"
    "  transfer [ID]       hand leadership to node ID (0 or absent: let Raft pick)\n"
    "  dump DIR            write a consistent backup of the database into DIR\n"
    "  restore DIR         load a backup made by dump into this (new, empty) cluster\n"
    "\n"
    "Example:\n"
    "  gantry-store --address 127.0.0.1:7001,127.0.0.1:7002 members\n"
    "  gantry-store --address 127.0.0.1:7001 query 'SELECT count(*) FROM events'\n";

static const char *role_name(int role)
{
    switch (role) {
    case PROTO_ROLE_VOTER:
        return "voter";
    case PROTO_ROLE_STANDBY:
        return "standby";
    case PROTO_ROLE_SPARE:
        return "spare";
    default:
        return "?";
    }
}

static int parse_role(const char *s)
{
    if (strcmp(s, "voter") == 0) {
        return PROTO_ROLE_VOTER;
    }
    if (strcmp(s, "standby") == 0) {
        return PROTO_ROLE_STANDBY;
    }
    if (strcmp(s, "spare") == 0) {
        return PROTO_ROLE_SPARE;
    }
    return -1;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*s == '\0' || *end != '\0') {
        return -1;
    }
    *out = v;
    return 0;
}

static int fail(struct store_client *cl, int rv, const char *what)
{
    fprintf(stderr, "gantry-store: %s failed: %s (%s)\n", what, cl->errmsg, gerr_name(rv));
    return 1;
}

static void print_value(const struct proto_value *v)
{
    switch (v->type) {
    case PROTO_INTEGER:
    case PROTO_UNIXTIME:
    case PROTO_BOOLEAN:
        printf("%" PRId64, v->u.i);
        break;
    case PROTO_FLOAT:
        printf("%.17g", v->u.f);
        break;
    case PROTO_TEXT:
    case PROTO_ISO8601:
        printf("%s", v->u.b.s);
        break;
    case PROTO_BLOB:
        printf("x'");
        for (size_t i = 0; i < v->u.b.n; i++) {
            printf("%02x", (unsigned char)v->u.b.s[i]);
        }
        printf("'");
        break;
    default:
        printf("NULL");
    }
}

static unsigned parse_params(char **args, int n, struct proto_value *out)
{
    unsigned k = 0;
    for (int i = 0; i < n && k < PROTO_MAX_PARAMS; i++) {
        if (strncmp(args[i], "i:", 2) == 0) {
            out[k++] = proto_int(strtoll(args[i] + 2, NULL, 10));
        } else {
            out[k++] = proto_text(args[i]);
        }
    }
    return k;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"address", required_argument, NULL, 'a'},
                                         {"database", required_argument, NULL, 'd'},
                                         {"timeout-ms", required_argument, NULL, 't'},
                                         {"tls-dir", required_argument, NULL, 'T'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    char *addresses = NULL;
    const char *database = NULL;
    unsigned timeout_ms = 15000;
    const char *tls_dir = NULL;
    int c;

    log_set_level(LOG_LEVEL_WARN);
    while ((c = getopt_long(argc, argv, "a:d:t:T:h", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            addresses = optarg;
            break;
        case 'd':
            database = optarg;
            break;
        case 't':
            timeout_ms = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'T':
            tls_dir = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (addresses == NULL || optind >= argc) {
        fputs(usage, stderr);
        return 2;
    }
    const char *list[STORE_MAX_ADDRESSES];
    unsigned n_list = 0;
    char *save = NULL;
    for (char *tok = strtok_r(addresses, ",", &save); tok != NULL && n_list < STORE_MAX_ADDRESSES;
         tok = strtok_r(NULL, ",", &save)) {
        list[n_list++] = tok;
    }
    struct store_client_config cfg = {
        .addresses = list, .n_addresses = n_list, .database = database, .leader_timeout_ms = timeout_ms};
    struct peertls *relay = NULL;
    if (tls_dir != NULL) {
        char errmsg[GERR_MSG_SIZE];
        if (peertls_start_dir(tls_dir, NULL, NULL, NULL, &relay, errmsg) != 0) {
            fprintf(stderr, "gantry-store: %s\n", errmsg);
            return 2;
        }
        cfg.dial = peertls_store_dial;
        cfg.dial_arg = relay;
    }
    struct store_client cl;
    int rv = store_client_init(&cl, &cfg);
    if (rv != 0) {
        fprintf(stderr, "gantry-store: %s\n", cl.errmsg);
        return 2;
    }
    const char *cmd = argv[optind];
    char **args = argv + optind + 1;
    int nargs = argc - optind - 1;
    int status = 0;

    if (strcmp(cmd, "members") == 0 || strcmp(cmd, "leader") == 0) {
        struct proto_node_info *nodes;
        unsigned n;
        if ((rv = store_client_cluster(&cl, &nodes, &n)) != 0) {
            status = fail(&cl, rv, cmd);
        } else if (strcmp(cmd, "leader") == 0) {
            printf("%" PRIu64 "\t%s\n", cl.leader_id, cl.conn.address);
            mem_free(nodes);
        } else {
            printf("ID\tADDRESS\tROLE\tLEADER\n");
            for (unsigned i = 0; i < n; i++) {
                printf("%" PRIu64 "\t%s\t%s\t%s\n", nodes[i].id, nodes[i].address, role_name(nodes[i].role),
                       nodes[i].id == cl.leader_id ? "*" : "");
            }
            mem_free(nodes);
        }
    } else if (strcmp(cmd, "exec") == 0 && nargs >= 1) {
        struct proto_value params[PROTO_MAX_PARAMS];
        unsigned np = parse_params(args + 1, nargs - 1, params);
        struct store_result res;
        if ((rv = store_client_exec(&cl, args[0], params, np, &res)) != 0) {
            status = fail(&cl, rv, "exec");
        } else {
            printf("rows affected %" PRIu64 ", last insert id %" PRIu64 "\n", res.rows_affected,
                   res.last_insert_id);
        }
    } else if (strcmp(cmd, "query") == 0 && nargs >= 1) {
        struct proto_value params[PROTO_MAX_PARAMS];
        unsigned np = parse_params(args + 1, nargs - 1, params);
        struct proto_rows rows;
        proto_rows_init(&rows, 0);
        if ((rv = store_client_query(&cl, args[0], params, np, &rows)) != 0) {
            status = fail(&cl, rv, "query");
        } else {
            for (unsigned j = 0; j < rows.n_cols; j++) {
                printf("%s%s", j ? "\t" : "", rows.cols[j]);
            }
            printf("\n");
            for (size_t i = 0; i < rows.n_rows; i++) {
                for (unsigned j = 0; j < rows.n_cols; j++) {
                    if (j) {
                        printf("\t");
                    }
                    print_value(proto_rows_at(&rows, i, j));
                }
                printf("\n");
            }
        }
        proto_rows_close(&rows);
    } else if (strcmp(cmd, "migrate") == 0 || strcmp(cmd, "version") == 0) {
        unsigned n;
        const struct store_migration *m = store_schema(&n);
        int64_t v = 0;
        if (strcmp(cmd, "migrate") == 0 && (rv = store_migrate(&cl, m, n)) != 0) {
            status = fail(&cl, rv, "migrate");
        } else if ((rv = store_schema_version(&cl, &v)) != 0) {
            status = fail(&cl, rv, "version");
        } else {
            printf("schema version %" PRId64 " (this binary knows %u)\n", v, n);
        }
    } else if (strcmp(cmd, "add") == 0 && nargs == 2) {
        uint64_t id;
        if (parse_u64(args[0], &id) != 0) {
            fputs(usage, stderr);
            status = 2;
        } else if ((rv = store_client_add(&cl, id, args[1])) != 0) {
            status = fail(&cl, rv, "add");
        }
    } else if (strcmp(cmd, "assign") == 0 && nargs == 2) {
        uint64_t id;
        int role = parse_role(args[1]);
        if (parse_u64(args[0], &id) != 0 || role < 0) {
            fprintf(stderr, "gantry-store: assign ID voter|standby|spare\n");
            status = 2;
        } else if ((rv = store_client_assign(&cl, id, role)) != 0) {
            status = fail(&cl, rv, "assign");
        }
    } else if (strcmp(cmd, "remove") == 0 && nargs == 1) {
        uint64_t id;
        if (parse_u64(args[0], &id) != 0) {
            fputs(usage, stderr);
            status = 2;
        } else if ((rv = store_client_remove(&cl, id)) != 0) {
            status = fail(&cl, rv, "remove");
        }
    } else if (strcmp(cmd, "transfer") == 0 && nargs <= 1) {
        uint64_t id = 0;
        if (nargs == 1 && parse_u64(args[0], &id) != 0) {
            fputs(usage, stderr);
            status = 2;
        } else if ((rv = store_client_transfer(&cl, id)) != 0) {
            status = fail(&cl, rv, "transfer");
        }
    } else if (strcmp(cmd, "dump") == 0 && nargs == 1) {
        if ((rv = store_client_dump(&cl, args[0])) != 0) {
            status = fail(&cl, rv, "dump");
        } else {
            printf("backup written to %s/%s and %s/%s-wal\n", args[0], cl.database, args[0], cl.database);
        }
    } else if (strcmp(cmd, "restore") == 0 && nargs == 1) {
        struct store_restore_stats st;
        char errmsg[GERR_MSG_SIZE];
        if ((rv = store_restore(&cl, args[0], &st, errmsg)) != 0) {
            fprintf(stderr, "gantry-store: restore failed: %s (%s)\n", errmsg, gerr_name(rv));
            status = 1;
        } else {
            printf("restored %u tables, %" PRIu64 " rows, %u indexes/views/triggers\n", st.tables, st.rows,
                   st.other_objects);
        }
    } else {
        fputs(usage, stderr);
        status = 2;
    }
    store_client_close(&cl);
    if (relay != NULL) {
        peertls_stop(relay);
    }
    return status;
}
