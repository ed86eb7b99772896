/* gantry: the command-line client. This first part covers the Cluster API; the other resources
 * join it as their services get handlers (docs/cli.md).
 *
 *   gantry [global flags] cluster members|leader|health
 *   gantry [global flags] cluster join-token [--uses N] [--ttl-s S]
 *   gantry [global flags] cluster transfer [ID]
 *   gantry [global flags] cluster remove ID [--force]
 *   gantry [global flags] cluster backup FILE
 *   gantry version
 *
 * Global flags: --endpoint A[,B,...] (or GANTRY_ENDPOINT), --ca FILE (or GANTRY_CA), -o table|json.
 * The credential comes from GANTRY_TOKEN or --token-file FILE, never from a flag (flags show in
 * ps). A call that fails with UNAVAILABLE or a transport error moves on to the next endpoint.
 *
 * Exit codes: 0 ok, 1 the call failed (the gRPC status and message are printed), 2 usage. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "gantry/v1/cluster.pb-c.h"
#include "lib/file.h"
#include "lib/mem.h"
#include "server/grpc_client.h"
#include "server/grpc_status.h"
#include "tools/gantry.h"

static int usage(FILE *f, int rc)
{
    fprintf(f,
            "usage: gantry [--endpoint A[,B..]] [--ca FILE] [--token-file FILE] [-o table|json] COMMAND\n\n"
            "Commands:\n"
            "  cluster members              list the members: id, name, addresses, role, reachable, leader\n"
            "  cluster leader               the leader\n"
            "  cluster health               the cluster's health and any problems\n"
            "  cluster join-token [--uses N] [--ttl-s S]\n"
            "                               create a join token for new replicas (shown once)\n"
            "  cluster transfer [ID]        hand leadership to member ID (default: any healthy voter)\n"
            "  cluster remove ID [--force]  remove a member (stopped, or --force)\n"
            "  cluster backup FILE          stream a consistent backup into FILE\n"
            "  version                      print the version\n");
    gantry_res_usage(f);
    fprintf(f,
            "\nThe endpoint defaults to GANTRY_ENDPOINT, the CA to GANTRY_CA, the API key to GANTRY_TOKEN.\n"
            "Example:\n"
            "  GANTRY_TOKEN=$(cat admin.key) gantry --endpoint 127.0.0.1:8443 --ca ca.pem cluster members\n"
            "  gantry sandbox create demo --image busybox --wait -- sleep 3600\n");
    return rc;
}

int call(struct cli *c, const char *path, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp,
         grpc_client_msg_cb cb, void *arg, ProtobufCMessage **out, unsigned timeout_ms)
{
    char auth[600];
    snprintf(auth, sizeof auth, "Bearer %s", c->token);
    struct grpc_client_md md = {"authorization", auth};
    char errmsg[GERR_MSG_SIZE] = "";
    struct grpc_client_result res = {.status = -1};
    for (unsigned i = 0; i < c->n_endpoints; i++) {
        struct grpc_client_config cc = {.target = c->endpoints[i], .ca_file = c->ca, .server_name = NULL};
        struct grpc_client *gc;
        int rv = grpc_client_connect(&cc, &gc, errmsg);
        if (rv == GERR_PERM || rv == GERR_INVAL) {
            break;
        }
        if (rv != 0) {
            fprintf(stderr, "gantry: %s: %s\n", c->endpoints[i], errmsg);
            continue;
        }
        if (out != NULL) {
            rv = grpc_client_unary(gc, path, &md, 1, req, resp, timeout_ms, out, &res, errmsg);
        } else {
            rv = grpc_client_call(gc, path, &md, 1, req, resp, cb, arg, timeout_ms, &res, errmsg);
        }
        grpc_client_close(gc);
        if (rv == 0 && res.status == GRPC_STATUS_UNAVAILABLE && i + 1 < c->n_endpoints) {
            fprintf(stderr, "gantry: %s: %s; trying the next endpoint\n", c->endpoints[i], res.message);
            continue;
        }
        if (rv == 0) {
            if (res.status != 0) {
                fprintf(stderr, "gantry: %s (%s)\n", res.message, grpc_status_name(res.status));
                return 1;
            }
            return 0;
        }
        fprintf(stderr, "gantry: %s: %s\n", c->endpoints[i], errmsg);
    }
    if (errmsg[0] != '\0' && c->n_endpoints > 0) {
        fprintf(stderr, "gantry: no endpoint answered (last: %s)\n", errmsg);
    }
    return 1;
}

static const char *role_name(Gantry__V1__MemberRole r)
{
    return r == GANTRY__V1__MEMBER_ROLE__MEMBER_ROLE_VOTER     ? "voter"
           : r == GANTRY__V1__MEMBER_ROLE__MEMBER_ROLE_STANDBY ? "standby"
                                                               : "spare";
}

static void print_member(struct cli *c, const Gantry__V1__Member *m, bool first)
{
    if (c->json) {
        printf("%s{\"id\":%" PRIu64
               ",\"name\":\"%s\",\"address\":\"%s\",\"api_address\":\"%s\",\"role\":\"%s\","
               "\"reachable\":%s,\"leader\":%s,\"failure_domain\":\"%s\",\"last_contact_ms\":%" PRId64 "}",
               first ? "" : ",", m->id, m->name, m->address, m->api_address, role_name(m->role),
               m->reachable ? "true" : "false", m->leader ? "true" : "false", m->failure_domain,
               m->last_contact_ms);
    } else {
        printf("%-4" PRIu64 " %-14s %-22s %-22s %-8s %-9s %s\n", m->id, m->name, m->address, m->api_address,
               role_name(m->role), m->reachable ? "yes" : "NO", m->leader ? "leader" : "");
    }
}

static int cmd_members(struct cli *c)
{
    Gantry__V1__ListMembersRequest req = GANTRY__V1__LIST_MEMBERS_REQUEST__INIT;
    ProtobufCMessage *out;
    if (call(c, "/gantry.v1.Cluster/ListMembers", &req.base, &gantry__v1__list_members_response__descriptor,
             NULL, NULL, &out, 10000) != 0) {
        return 1;
    }
    Gantry__V1__ListMembersResponse *r = (Gantry__V1__ListMembersResponse *)out;
    if (c->json) {
        printf("{\"revision\":%" PRIu64 ",\"members\":[", r->revision);
    } else {
        printf("%-4s %-14s %-22s %-22s %-8s %-9s %s\n", "ID", "NAME", "PEER ADDRESS", "API ADDRESS", "ROLE",
               "REACHABLE", "");
    }
    for (size_t i = 0; i < r->n_members; i++) {
        print_member(c, r->members[i], i == 0);
    }
    if (c->json) {
        printf("]}\n");
    }
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int cmd_leader(struct cli *c)
{
    Gantry__V1__GetLeaderRequest req = GANTRY__V1__GET_LEADER_REQUEST__INIT;
    ProtobufCMessage *out;
    if (call(c, "/gantry.v1.Cluster/GetLeader", &req.base, &gantry__v1__get_leader_response__descriptor, NULL,
             NULL, &out, 10000) != 0) {
        return 1;
    }
    Gantry__V1__GetLeaderResponse *r = (Gantry__V1__GetLeaderResponse *)out;
    if (r->leader != NULL) {
        print_member(c, r->leader, true);
        if (c->json) {
            printf("\n");
        }
    }
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int cmd_health(struct cli *c)
{
    Gantry__V1__GetHealthRequest req = GANTRY__V1__GET_HEALTH_REQUEST__INIT;
    ProtobufCMessage *out;
    if (call(c, "/gantry.v1.Cluster/GetHealth", &req.base, &gantry__v1__cluster_health__descriptor, NULL,
             NULL, &out, 10000) != 0) {
        return 1;
    }
    Gantry__V1__ClusterHealth *h = (Gantry__V1__ClusterHealth *)out;
    printf("%s: leader %" PRIu64 ", %u members (%u voters, %u reachable; %u standbys), schema %" PRId64
           "/%" PRId64 ", revision %" PRIu64 ", cluster %s, gateway %s\n",
           h->healthy ? "healthy" : "UNHEALTHY", h->leader_id, h->members, h->voters, h->voters_reachable,
           h->standbys, h->schema_version, h->schema_version_wanted, h->revision, h->cluster_id,
           h->gateway_id);
    for (size_t i = 0; i < h->n_problems; i++) {
        printf("  problem: %s\n", h->problems[i]);
    }
    int rc = h->healthy ? 0 : 1;
    protobuf_c_message_free_unpacked(out, NULL);
    return rc;
}

static int parse_u32(const char *s, uint32_t *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v > UINT32_MAX) {
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int cmd_join_token(struct cli *c, int argc, char **argv)
{
    Gantry__V1__CreateJoinTokenRequest req = GANTRY__V1__CREATE_JOIN_TOKEN_REQUEST__INIT;
    for (int i = 0; i < argc; i += 2) { /* flag, value */
        uint32_t *dst = strcmp(argv[i], "--uses") == 0    ? &req.uses
                        : strcmp(argv[i], "--ttl-s") == 0 ? &req.ttl_seconds
                                                          : NULL;
        if (dst == NULL || i + 1 >= argc || parse_u32(argv[i + 1], dst) != 0) {
            fprintf(stderr, "gantry cluster join-token: unknown or bad option \"%s\"\n", argv[i]);
            return 2;
        }
    }
    ProtobufCMessage *out;
    if (call(c, "/gantry.v1.Cluster/CreateJoinToken", &req.base, &gantry__v1__join_token__descriptor, NULL,
             NULL, &out, 10000) != 0) {
        return 1;
    }
    Gantry__V1__JoinToken *t = (Gantry__V1__JoinToken *)out;
    printf("%s\n", t->token);
    fprintf(stderr,
            "join token %s: %u use(s), expires at %" PRId64 " ms; give it to the new replica as "
            "GANTRY_JOIN_TOKEN or in --join-token-file\n",
            t->id, t->uses, t->expires_at_ms);
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int cmd_transfer(struct cli *c, int argc, char **argv)
{
    Gantry__V1__TransferLeadershipRequest req = GANTRY__V1__TRANSFER_LEADERSHIP_REQUEST__INIT;
    char *end;
    if (argc > 1 || (argc == 1 && ((req.target_id = strtoull(argv[0], &end, 10)) == 0 || *end != '\0'))) {
        fprintf(stderr, "gantry cluster transfer: give at most one member id\n");
        return 2;
    }
    ProtobufCMessage *out;
    if (call(c, "/gantry.v1.Cluster/TransferLeadership", &req.base,
             &gantry__v1__transfer_leadership_response__descriptor, NULL, NULL, &out, 15000) != 0) {
        return 1;
    }
    Gantry__V1__TransferLeadershipResponse *r = (Gantry__V1__TransferLeadershipResponse *)out;
    printf("leader: %" PRIu64 " (%s)\n", r->leader != NULL ? r->leader->id : 0,
           r->leader != NULL ? r->leader->address : "");
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int cmd_remove(struct cli *c, int argc, char **argv)
{
    Gantry__V1__RemoveMemberRequest req = GANTRY__V1__REMOVE_MEMBER_REQUEST__INIT;
    char *end = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--force") == 0) {
            req.force = true;
        } else if (req.id == 0 && (req.id = strtoull(argv[i], &end, 10)) != 0 && *end == '\0') {
        } else {
            fprintf(stderr, "gantry cluster remove: usage: remove ID [--force]\n");
            return 2;
        }
    }
    if (req.id == 0) {
        fprintf(stderr, "gantry cluster remove: usage: remove ID [--force]\n");
        return 2;
    }
    ProtobufCMessage *out;
    if (call(c, "/gantry.v1.Cluster/RemoveMember", &req.base, &gantry__v1__remove_member_response__descriptor,
             NULL, NULL, &out, 30000) != 0) {
        return 1;
    }
    printf("member %" PRIu64 " removed\n", req.id);
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

struct backup_ctx {
    FILE *f;
    EVP_MD_CTX *sha;
    uint64_t bytes, revision;
    char want[80];
    bool last;
};

static int on_chunk(const ProtobufCMessage *msg, void *arg)
{
    struct backup_ctx *b = arg;
    const Gantry__V1__BackupChunk *c = (const Gantry__V1__BackupChunk *)msg;
    if (c->offset != b->bytes || b->last) {
        fprintf(stderr, "gantry: the backup stream is out of order\n");
        return GERR_PROTO;
    }
    if (b->bytes == 0) {
        b->revision = c->revision;
    }
    if (fwrite(c->data.data, 1, c->data.len, b->f) != c->data.len) {
        fprintf(stderr, "gantry: cannot write the backup file\n");
        return GERR_IO;
    }
    EVP_DigestUpdate(b->sha, c->data.data, c->data.len);
    b->bytes += c->data.len;
    if (c->last) {
        b->last = true;
        snprintf(b->want, sizeof b->want, "%s", c->sha256);
    }
    return 0;
}

static int cmd_backup(struct cli *c, int argc, char **argv)
{
    if (argc != 1) {
        fprintf(stderr, "gantry cluster backup: usage: backup FILE\n");
        return 2;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.partial", argv[0]);
    struct backup_ctx b = {.f = fopen(tmp, "wb")};
    if (b.f == NULL) {
        fprintf(stderr, "gantry: cannot create %s\n", tmp);
        return 1;
    }
    b.sha = EVP_MD_CTX_new();
    EVP_DigestInit_ex(b.sha, EVP_sha256(), NULL);
    Gantry__V1__BackupRequest req = GANTRY__V1__BACKUP_REQUEST__INIT;
    int rv = call(c, "/gantry.v1.Cluster/Backup", &req.base, &gantry__v1__backup_chunk__descriptor, on_chunk,
                  &b, NULL, 600000);
    bool closed = fclose(b.f) == 0;
    uint8_t d[32];
    char hex[65];
    unsigned int dlen = 0;
    EVP_DigestFinal_ex(b.sha, d, &dlen);
    EVP_MD_CTX_free(b.sha);
    for (unsigned i = 0; i < sizeof d; i++) {
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    }
    if (rv == 0 && (!b.last || !closed || strcmp(hex, b.want) != 0)) {
        fprintf(stderr, "gantry: the backup is incomplete or its checksum does not match; discarded\n");
        rv = 1;
    }
    if (rv != 0) {
        remove(tmp);
        return 1;
    }
    if (rename(tmp, argv[0]) != 0) {
        fprintf(stderr, "gantry: cannot rename %s to %s\n", tmp, argv[0]);
        return 1;
    }
    printf("backup: %" PRIu64 " bytes at revision %" PRIu64 ", sha256 %s, in %s\n", b.bytes, b.revision, hex,
           argv[0]);
    return 0;
}

static int load_token(struct cli *c, const char *file)
{
    const char *env = getenv("GANTRY_TOKEN");
    if (file != NULL) {
        char *text = NULL, err[GERR_MSG_SIZE];
        size_t len = 0;
        if (file_read_all(file, sizeof c->token - 1, &text, &len, err) != 0) {
            fprintf(stderr, "gantry: %s\n", err);
            return -1;
        }
        while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ')) {
            text[--len] = '\0';
        }
        snprintf(c->token, sizeof c->token, "%s", text);
        memset(text, 0, len);
        mem_free(text);
    } else if (env != NULL) {
        snprintf(c->token, sizeof c->token, "%s", env);
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct cli c = {0};
    const char *endpoint = getenv("GANTRY_ENDPOINT");
    const char *token_file = NULL;
    c.ca = getenv("GANTRY_CA");
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i += 2) { /* flag, value */
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            return usage(stdout, 0);
        }
        if (v == NULL) {
            fprintf(stderr, "gantry: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "--endpoint") == 0) {
            endpoint = v;
        } else if (strcmp(a, "--ca") == 0) {
            c.ca = v;
        } else if (strcmp(a, "--token-file") == 0) {
            token_file = v;
        } else if (strcmp(a, "-o") == 0 && (strcmp(v, "json") == 0 || strcmp(v, "table") == 0)) {
            c.json = strcmp(v, "json") == 0;
        } else {
            fprintf(stderr, "gantry: unknown flag %s (see gantry --help)\n", a);
            return 2;
        }
    }
    if (i >= argc) {
        return usage(stderr, 2);
    }
    if (strcmp(argv[i], "version") == 0) {
        printf("gantry 0.1.0-dev\n");
        return 0;
    }
    const char *group = argv[i];
    bool cluster = strcmp(group, "cluster") == 0;
    if (cluster && i + 1 >= argc) {
        return usage(stderr, 2);
    }
    const char *sub = cluster ? argv[i + 1] : "";
    if (strcmp(sub, "--help") == 0) {
        return usage(stdout, 0);
    }
    int rest_c = argc - i - (cluster ? 2 : 1);
    char **rest = argv + i + (cluster ? 2 : 1);
    if (endpoint == NULL || c.ca == NULL) {
        fprintf(stderr, "gantry: give --endpoint (or GANTRY_ENDPOINT) and --ca (or GANTRY_CA)\n");
        return 2;
    }
    if (load_token(&c, token_file) != 0) {
        return 2;
    }
    char eps[1024];
    snprintf(eps, sizeof eps, "%s", endpoint);
    for (char *save = NULL, *t = strtok_r(eps, ",", &save); t != NULL && c.n_endpoints < 16;
         t = strtok_r(NULL, ",", &save)) {
        c.endpoints[c.n_endpoints++] = t;
    }
    if (!cluster) {
        int rc = gantry_res_main(&c, group, rest_c, rest);
        if (rc < 0) {
            fprintf(stderr, "gantry: unknown command \"%s\" (see gantry --help)\n", group);
            return 2;
        }
        return rc;
    }
    if (strcmp(sub, "lease") == 0 && rest_c == 0) {
        return gantry_res_main(&c, "lease", 0, rest);
    }
    if (strcmp(sub, "members") == 0 && rest_c == 0) {
        return cmd_members(&c);
    } else if (strcmp(sub, "leader") == 0 && rest_c == 0) {
        return cmd_leader(&c);
    } else if (strcmp(sub, "health") == 0 && rest_c == 0) {
        return cmd_health(&c);
    } else if (strcmp(sub, "join-token") == 0) {
        return cmd_join_token(&c, rest_c, rest);
    } else if (strcmp(sub, "transfer") == 0) {
        return cmd_transfer(&c, rest_c, rest);
    } else if (strcmp(sub, "remove") == 0) {
        return cmd_remove(&c, rest_c, rest);
    } else if (strcmp(sub, "backup") == 0) {
        return cmd_backup(&c, rest_c, rest);
    }
    fprintf(stderr, "gantry cluster: unknown subcommand \"%s\" (see gantry --help)\n", sub);
    return 2;
}
