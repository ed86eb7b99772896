/* The gantry CLI's resource commands (tools/gantry.h). Every write carries a fresh request_id,
 * so the retry on another endpoint after UNAVAILABLE applies it once. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gantry/v1/api_keys.pb-c.h"
#include "gantry/v1/audit.pb-c.h"
#include "gantry/v1/cluster.pb-c.h"
#include "gantry/v1/namespaces.pb-c.h"
#include "gantry/v1/principals.pb-c.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "lib/rand.h"
#include "tools/gantry.h"

void gantry_res_usage(FILE *f)
{
    fprintf(
        f, "  whoami                       who the credential is, and its role bindings\n"
           "  namespace create NAME [--description D] | list | get NAME | delete NAME\n"
           "  user create NAME [--oidc-issuer I --oidc-subject S]   a user principal\n"
           "  sa create NAME                a service account (authenticates with API keys only)\n"
           "  role grant PRINCIPAL ROLE [--namespace NS]   ROLE: platform_admin, namespace_admin,\n"
           "                               auditor, user (PRINCIPAL: an id or a name)\n"
           "  key create [--principal P] [--name N]   an API key, printed once (default: for yourself)\n"
           "  sandbox create NAME --image IMG [--namespace NS] [--gpus N] [--lifetime SECONDS]\n"
           "                 [--wait] [-- COMMAND...]   --wait shows progress until READY or ERROR\n"
           "  sandbox list [--namespace NS] | get NAME [--namespace NS] | delete NAME [--namespace NS]\n"
           "                               (NS defaults to \"default\"; list without it: every visible one)\n"
           "  cluster lease                the reconciler lease: holder and epoch\n"
           "  audit export [--namespace NS]  every audit event as JSON lines on stdout\n");
}

static void request_id(char out[37])
{
    uint8_t b[16];
    rand_bytes(b, sizeof b);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* "--flag value" options: take the value of @name from argv, removing both; NULL if absent. */
static const char *opt(int *argc, char **argv, const char *name)
{
    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            return NULL;
        }
        if (strcmp(argv[i], name) == 0 && i + 1 < *argc) {
            const char *v = argv[i + 1];
            memmove(&argv[i], &argv[i + 2], sizeof *argv * (size_t)(*argc - i - 2));
            *argc -= 2;
            return v;
        }
    }
    return NULL;
}

static bool flag(int *argc, char **argv, const char *name)
{
    for (int i = 0; i < *argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            return false;
        }
        if (strcmp(argv[i], name) == 0) {
            memmove(&argv[i], &argv[i + 1], sizeof *argv * (size_t)(*argc - i - 1));
            (*argc)--;
            return true;
        }
    }
    return false;
}

static int usage_error(const char *what)
{
    fprintf(stderr, "gantry: usage: %s (see gantry --help)\n", what);
    return 2;
}

/* --- whoami, lease --- */

static const char *role_name(Gantry__V1__Role r)
{
    static const char *names[] = {"?", "platform_admin", "namespace_admin", "auditor", "user"};
    return r >= 1 && r <= 4 ? names[r] : "?";
}

static int whoami(struct cli *c)
{
    Gantry__V1__WhoAmIRequest req = GANTRY__V1__WHO_AM_IREQUEST__INIT;
    ProtobufCMessage *out;
    if (call(c, "/gantry.v1.Principals/WhoAmI", &req.base, &gantry__v1__who_am_iresponse__descriptor, NULL,
             NULL, &out, 10000) != 0) {
        return 1;
    }
    Gantry__V1__WhoAmIResponse *r = (Gantry__V1__WhoAmIResponse *)out;
    printf("%s (%s, id %s)\n", r->principal->meta->name,
           r->principal->kind == GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE_ACCOUNT
               ? "service account"
               : "user",
           r->principal->meta->id);
    for (size_t i = 0; i < r->n_bindings; i++) {
        printf("  %s%s%s\n", role_name(r->bindings[i]->role),
               r->bindings[i]->namespace_[0] != '\0' ? " in " : "", r->bindings[i]->namespace_);
    }
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int lease(struct cli *c)
{
    Gantry__V1__GetLeaseRequest req = GANTRY__V1__GET_LEASE_REQUEST__INIT;
    ProtobufCMessage *out;
    if (call(c, "/gantry.v1.Cluster/GetLease", &req.base, &gantry__v1__lease__descriptor, NULL, NULL, &out,
             10000) != 0) {
        return 1;
    }
    Gantry__V1__Lease *l = (Gantry__V1__Lease *)out;
    printf("lease %s: holder %s, epoch %" PRIu64 ", renewed at %" PRId64 " ms, duration %" PRIu64 " ms\n",
           l->name, l->holder[0] != '\0' ? l->holder : "(released)", l->epoch, l->renewed_at_ms,
           l->duration_ms);
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

/* --- namespaces --- */

static int ns_cmd(struct cli *c, int argc, char **argv)
{
    char rid[37];
    request_id(rid);
    ProtobufCMessage *out = NULL;
    if (argc >= 2 && strcmp(argv[0], "create") == 0) {
        const char *desc = opt(&argc, argv, "--description");
        Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
        Gantry__V1__Namespace ns = GANTRY__V1__NAMESPACE__INIT;
        Gantry__V1__CreateNamespaceRequest req = GANTRY__V1__CREATE_NAMESPACE_REQUEST__INIT;
        meta.name = argv[1];
        ns.meta = &meta;
        ns.description = (char *)(desc != NULL ? desc : "");
        req.namespace_ = &ns;
        req.request_id = rid;
        if (call(c, "/gantry.v1.Namespaces/Create", &req.base, &gantry__v1__namespace__descriptor, NULL, NULL,
                 &out, 10000) != 0) {
            return 1;
        }
        printf("namespace %s created\n", ((Gantry__V1__Namespace *)out)->meta->name);
    } else if (argc == 1 && strcmp(argv[0], "list") == 0) {
        Gantry__V1__ListNamespacesRequest req = GANTRY__V1__LIST_NAMESPACES_REQUEST__INIT;
        if (call(c, "/gantry.v1.Namespaces/List", &req.base,
                 &gantry__v1__list_namespaces_response__descriptor, NULL, NULL, &out, 10000) != 0) {
            return 1;
        }
        Gantry__V1__ListNamespacesResponse *r = (Gantry__V1__ListNamespacesResponse *)out;
        printf("%-32s %-12s %s\n", "NAME", "PHASE", "DESCRIPTION");
        for (size_t i = 0; i < r->n_namespaces; i++) {
            printf("%-32s %-12s %s\n", r->namespaces[i]->meta->name,
                   r->namespaces[i]->phase == GANTRY__V1__NAMESPACE__PHASE__PHASE_ACTIVE ? "ACTIVE"
                                                                                         : "TERMINATING",
                   r->namespaces[i]->description);
        }
    } else if (argc == 2 && (strcmp(argv[0], "get") == 0 || strcmp(argv[0], "delete") == 0)) {
        bool get = strcmp(argv[0], "get") == 0;
        Gantry__V1__GetNamespaceRequest g = GANTRY__V1__GET_NAMESPACE_REQUEST__INIT;
        Gantry__V1__DeleteNamespaceRequest d = GANTRY__V1__DELETE_NAMESPACE_REQUEST__INIT;
        g.name = argv[1];
        d.name = argv[1];
        d.request_id = rid;
        if (call(c, get ? "/gantry.v1.Namespaces/Get" : "/gantry.v1.Namespaces/Delete",
                 get ? &g.base : &d.base, &gantry__v1__namespace__descriptor, NULL, NULL, &out, 10000) != 0) {
            return 1;
        }
        Gantry__V1__Namespace *n = (Gantry__V1__Namespace *)out;
        printf(get ? "namespace %s: %s, resource version %" PRIu64 "\n"
                   : "namespace %s deleted%s (revision %" PRIu64 ")\n",
               n->meta->name,
               get ? (n->phase == GANTRY__V1__NAMESPACE__PHASE__PHASE_ACTIVE ? "ACTIVE" : "TERMINATING") : "",
               n->meta->resource_version);
    } else {
        return usage_error("gantry namespace create NAME | list | get NAME | delete NAME");
    }
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

/* --- principals, roles, keys --- */

static int principal_create(struct cli *c, int argc, char **argv, bool sa)
{
    const char *iss = opt(&argc, argv, "--oidc-issuer"), *sub = opt(&argc, argv, "--oidc-subject");
    if (argc != 2 || strcmp(argv[0], "create") != 0) {
        return usage_error(sa ? "gantry sa create NAME"
                              : "gantry user create NAME [--oidc-issuer I --oidc-subject S]");
    }
    char rid[37];
    request_id(rid);
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__Principal p = GANTRY__V1__PRINCIPAL__INIT;
    Gantry__V1__CreatePrincipalRequest req = GANTRY__V1__CREATE_PRINCIPAL_REQUEST__INIT;
    meta.name = argv[1];
    p.meta = &meta;
    p.kind = sa ? GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_SERVICE_ACCOUNT
                : GANTRY__V1__PRINCIPAL_KIND__PRINCIPAL_KIND_USER;
    p.oidc_issuer = (char *)(iss != NULL ? iss : "");
    p.oidc_subject = (char *)(sub != NULL ? sub : "");
    req.principal = &p;
    req.request_id = rid;
    ProtobufCMessage *out;
    if (call(c, "/gantry.v1.Principals/Create", &req.base, &gantry__v1__principal__descriptor, NULL, NULL,
             &out, 10000) != 0) {
        return 1;
    }
    printf("%s %s created (id %s)\n", sa ? "service account" : "user",
           ((Gantry__V1__Principal *)out)->meta->name, ((Gantry__V1__Principal *)out)->meta->id);
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

/* An id from an id or a name. */
static int principal_id(struct cli *c, const char *id_or_name, char *out, size_t len)
{
    Gantry__V1__GetPrincipalRequest req = GANTRY__V1__GET_PRINCIPAL_REQUEST__INIT;
    req.id = (char *)id_or_name;
    ProtobufCMessage *p;
    if (call(c, "/gantry.v1.Principals/Get", &req.base, &gantry__v1__principal__descriptor, NULL, NULL, &p,
             10000) != 0) {
        return 1;
    }
    snprintf(out, len, "%s", ((Gantry__V1__Principal *)p)->meta->id);
    protobuf_c_message_free_unpacked(p, NULL);
    return 0;
}

static int role_cmd(struct cli *c, int argc, char **argv)
{
    const char *ns = opt(&argc, argv, "--namespace");
    if (argc != 3 || strcmp(argv[0], "grant") != 0) {
        return usage_error("gantry role grant PRINCIPAL ROLE [--namespace NS]");
    }
    int role = 0;
    for (int r = 1; r <= 4; r++) {
        role = strcmp(argv[2], role_name((Gantry__V1__Role)r)) == 0 ? r : role;
    }
    if (role == 0) {
        return usage_error("ROLE is platform_admin, namespace_admin, auditor or user");
    }
    char id[64], rid[37];
    if (principal_id(c, argv[1], id, sizeof id) != 0) {
        return 1;
    }
    request_id(rid);
    Gantry__V1__RoleBinding b = GANTRY__V1__ROLE_BINDING__INIT;
    Gantry__V1__CreateRoleBindingRequest req = GANTRY__V1__CREATE_ROLE_BINDING_REQUEST__INIT;
    b.principal_id = id;
    b.role = (Gantry__V1__Role)role;
    b.namespace_ = (char *)(ns != NULL ? ns : "");
    req.binding = &b;
    req.request_id = rid;
    ProtobufCMessage *out;
    if (call(c, "/gantry.v1.Principals/CreateRoleBinding", &req.base, &gantry__v1__role_binding__descriptor,
             NULL, NULL, &out, 10000) != 0) {
        return 1;
    }
    printf("%s is now %s%s%s\n", argv[1], argv[2], b.namespace_[0] != '\0' ? " in " : "", b.namespace_);
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int key_cmd(struct cli *c, int argc, char **argv)
{
    const char *who = opt(&argc, argv, "--principal"), *name = opt(&argc, argv, "--name");
    if (argc != 1 || strcmp(argv[0], "create") != 0) {
        return usage_error("gantry key create [--principal P] [--name N]");
    }
    char id[64] = "", rid[37];
    if (who != NULL && principal_id(c, who, id, sizeof id) != 0) {
        return 1;
    }
    request_id(rid);
    Gantry__V1__CreateApiKeyRequest req = GANTRY__V1__CREATE_API_KEY_REQUEST__INIT;
    req.principal_id = id;
    req.name = (char *)(name != NULL ? name : "");
    req.request_id = rid;
    ProtobufCMessage *out;
    if (call(c, "/gantry.v1.ApiKeys/Create", &req.base, &gantry__v1__create_api_key_response__descriptor,
             NULL, NULL, &out, 10000) != 0) {
        return 1;
    }
    Gantry__V1__CreateApiKeyResponse *r = (Gantry__V1__CreateApiKeyResponse *)out;
    printf("%s\n", r->secret);
    fprintf(stderr, "API key %s for principal %s: shown once, keep it (e.g. in GANTRY_TOKEN)\n",
            r->key->prefix, r->key->principal_id);
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

/* --- sandboxes --- */

static const char *phase_name(const Gantry__V1__SandboxStatus *s)
{
    static const char *names[] = {"?", "PROVISIONING", "READY", "ERROR", "DELETING", "STOPPED", "UNKNOWN"};
    return s != NULL && s->phase <= 6 ? names[s->phase] : "?";
}

static int sb_get(struct cli *c, const char *ns, const char *name, Gantry__V1__Sandbox **out)
{
    Gantry__V1__GetSandboxRequest req = GANTRY__V1__GET_SANDBOX_REQUEST__INIT;
    req.namespace_ = (char *)ns;
    req.name = (char *)name;
    return call(c, "/gantry.v1.Sandboxes/Get", &req.base, &gantry__v1__sandbox__descriptor, NULL, NULL,
                (ProtobufCMessage **)out, 10000);
}

static int sb_wait(struct cli *c, const char *ns, const char *name)
{
    const char *last = "";
    for (int i = 0; i < 600; i++) {
        Gantry__V1__Sandbox *s;
        if (sb_get(c, ns, name, &s) != 0) {
            return 1;
        }
        const char *phase = phase_name(s->status);
        if (strcmp(phase, last) != 0) {
            printf("%s/%s: %s%s%s\n", ns, name, phase,
                   s->status != NULL && s->status->n_conditions > 0 ? ": " : "",
                   s->status != NULL && s->status->n_conditions > 0 ? s->status->conditions[0]->message : "");
            fflush(stdout);
            last = phase;
        }
        int done = strcmp(phase, "READY") == 0 ? 0 : strcmp(phase, "ERROR") == 0 ? 1 : -1;
        protobuf_c_message_free_unpacked(&s->base, NULL);
        if (done >= 0) {
            return done;
        }
        usleep(500000);
    }
    fprintf(stderr, "gantry: %s/%s is not READY after 5 minutes\n", ns, name);
    return 1;
}

static int sb_cmd(struct cli *c, int argc, char **argv)
{
    const char *ns_opt = opt(&argc, argv, "--namespace");
    const char *ns = ns_opt != NULL ? ns_opt : "default";
    ProtobufCMessage *out = NULL;
    char rid[37];
    request_id(rid);
    if (argc >= 2 && strcmp(argv[0], "create") == 0) {
        const char *image = opt(&argc, argv, "--image"), *gpus = opt(&argc, argv, "--gpus");
        const char *life = opt(&argc, argv, "--lifetime");
        bool wait = flag(&argc, argv, "--wait");
        int dash = 2;
        while (dash < argc && strcmp(argv[dash], "--") != 0) {
            dash++;
        }
        if (image == NULL || (dash != argc && dash + 1 >= argc) || dash != 2) {
            return usage_error(
                "gantry sandbox create NAME --image IMG [--namespace NS] [--gpus N] [--lifetime S] "
                "[--wait] [-- COMMAND...]");
        }
        Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
        Gantry__V1__SandboxSpec spec = GANTRY__V1__SANDBOX_SPEC__INIT;
        Gantry__V1__Sandbox sb = GANTRY__V1__SANDBOX__INIT;
        Gantry__V1__CreateSandboxRequest req = GANTRY__V1__CREATE_SANDBOX_REQUEST__INIT;
        meta.name = argv[1];
        meta.namespace_ = (char *)ns;
        spec.image = (char *)image;
        spec.gpu_count = gpus != NULL ? (uint32_t)strtoul(gpus, NULL, 10) : 0;
        spec.lifetime_seconds = life != NULL ? strtoull(life, NULL, 10) : 0;
        if (dash < argc) {
            spec.n_command = (size_t)(argc - dash - 1);
            spec.command = argv + dash + 1;
        }
        sb.meta = &meta;
        sb.spec = &spec;
        req.sandbox = &sb;
        req.request_id = rid;
        if (call(c, "/gantry.v1.Sandboxes/Create", &req.base, &gantry__v1__sandbox__descriptor, NULL, NULL,
                 &out, 15000) != 0) {
            return 1;
        }
        printf("sandbox %s/%s created (%s)\n", ns, argv[1], phase_name(((Gantry__V1__Sandbox *)out)->status));
        protobuf_c_message_free_unpacked(out, NULL);
        return wait ? sb_wait(c, ns, argv[1]) : 0;
    }
    if (argc == 1 && strcmp(argv[0], "list") == 0) {
        Gantry__V1__ListSandboxesRequest req = GANTRY__V1__LIST_SANDBOXES_REQUEST__INIT;
        req.namespace_ = (char *)(ns_opt != NULL ? ns_opt : ""); /* all the caller may see */
        if (call(c, "/gantry.v1.Sandboxes/List", &req.base, &gantry__v1__list_sandboxes_response__descriptor,
                 NULL, NULL, &out, 10000) != 0) {
            return 1;
        }
        Gantry__V1__ListSandboxesResponse *r = (Gantry__V1__ListSandboxesResponse *)out;
        printf("%-20s %-28s %-13s %-26s %s\n", "NAMESPACE", "NAME", "PHASE", "IMAGE", "HANDLE");
        for (size_t i = 0; i < r->n_sandboxes; i++) {
            Gantry__V1__Sandbox *s = r->sandboxes[i];
            printf("%-20s %-28s %-13s %-26s %s\n", s->meta->namespace_, s->meta->name, phase_name(s->status),
                   s->spec != NULL ? s->spec->image : "", s->status != NULL ? s->status->driver_handle : "");
        }
        protobuf_c_message_free_unpacked(out, NULL);
        return 0;
    }
    if (argc == 2 && strcmp(argv[0], "get") == 0) {
        Gantry__V1__Sandbox *s;
        if (sb_get(c, ns, argv[1], &s) != 0) {
            return 1;
        }
        printf("sandbox %s/%s: %s, owner %s, image %s, driver %s %s, resource version %" PRIu64 "\n", ns,
               argv[1], phase_name(s->status), s->spec->owner_id, s->spec->image,
               s->status != NULL ? s->status->driver : "", s->status != NULL ? s->status->driver_handle : "",
               s->meta->resource_version);
        protobuf_c_message_free_unpacked(&s->base, NULL);
        return 0;
    }
    if (argc == 2 && strcmp(argv[0], "delete") == 0) {
        Gantry__V1__DeleteSandboxRequest req = GANTRY__V1__DELETE_SANDBOX_REQUEST__INIT;
        req.namespace_ = (char *)ns;
        req.name = argv[1];
        req.request_id = rid;
        if (call(c, "/gantry.v1.Sandboxes/Delete", &req.base, &gantry__v1__sandbox__descriptor, NULL, NULL,
                 &out, 10000) != 0) {
            return 1;
        }
        printf("sandbox %s/%s deleting\n", ns, argv[1]);
        protobuf_c_message_free_unpacked(out, NULL);
        return 0;
    }
    return usage_error("gantry sandbox create|list|get|delete ...");
}

/* --- audit export --- */

static int on_chunk(const ProtobufCMessage *msg, void *arg)
{
    (void)arg;
    const Gantry__V1__ExportAuditChunk *c = (const Gantry__V1__ExportAuditChunk *)msg;
    return fwrite(c->jsonl.data, 1, c->jsonl.len, stdout) == c->jsonl.len ? 0 : GERR_IO;
}

static int audit_cmd(struct cli *c, int argc, char **argv)
{
    const char *ns = opt(&argc, argv, "--namespace");
    if (argc != 1 || strcmp(argv[0], "export") != 0) {
        return usage_error("gantry audit export [--namespace NS]");
    }
    Gantry__V1__ExportAuditRequest req = GANTRY__V1__EXPORT_AUDIT_REQUEST__INIT;
    req.namespace_ = (char *)(ns != NULL ? ns : "");
    int rv = call(c, "/gantry.v1.Audit/Export", &req.base, &gantry__v1__export_audit_chunk__descriptor,
                  on_chunk, NULL, NULL, 600000);
    fflush(stdout);
    return rv;
}

int gantry_res_main(struct cli *c, const char *group, int argc, char **argv)
{
    if (strcmp(group, "whoami") == 0) {
        return argc == 0 ? whoami(c) : usage_error("gantry whoami");
    }
    if (strcmp(group, "namespace") == 0) {
        return ns_cmd(c, argc, argv);
    }
    if (strcmp(group, "user") == 0 || strcmp(group, "sa") == 0) {
        return principal_create(c, argc, argv, strcmp(group, "sa") == 0);
    }
    if (strcmp(group, "role") == 0) {
        return role_cmd(c, argc, argv);
    }
    if (strcmp(group, "key") == 0) {
        return key_cmd(c, argc, argv);
    }
    if (strcmp(group, "sandbox") == 0) {
        return sb_cmd(c, argc, argv);
    }
    if (strcmp(group, "audit") == 0) {
        return audit_cmd(c, argc, argv);
    }
    if (strcmp(group, "lease") == 0) {
        return lease(c);
    }
    return -1;
}
