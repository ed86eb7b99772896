/* gantry provider: the Providers service (docs/cli.md). A provider's secret never appears on the
 * command line (flags show in ps): it is read as KEY=VALUE lines from a file or from stdin. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "gantry/v1/providers.pb-c.h"
#include "tools/gantry.h"

#define END                                                                                                  \
    {                                                                                                        \
        NULL, NULL, NULL, false                                                                              \
    }

static const struct gantry_col provider_cols[] = {
    {"NAMESPACE", "meta.namespace", NULL, false},
    {"NAME", "meta.name", NULL, false},
    {"TYPE", "type", NULL, false},
    {"CONFIG", "config", NULL, false},
    {"SECRET KEYS", "secret_keys", NULL, false},
    {"KEY ID", "key_id", NULL, false},
    END,
};

static const struct gantry_col grant_cols[] = {
    {"NAMESPACE", "namespace", NULL, false},
    {"PRINCIPAL", "principal_id", NULL, false},
    {"GRANTED BY", "created_by", NULL, false},
    {"AT", "created_at_ms", NULL, true},
    END,
};

/* KEY=VALUE lines (blank lines and # comments skipped) from @file, or stdin for "-". At most @max
 * pairs, each pointing into *@text (free it after use). */
static int read_secret(const char *file, char **text, const char **pairs, int max, int *n)
{
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    *n = 0;
    *text = NULL;
    if (f == NULL) {
        fprintf(stderr, "gantry: cannot read the secret file %s\n", file);
        return -1;
    }
    size_t cap = 0, len = 0;
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0 && len + got < 1u << 20) {
        if (len + got + 1 > cap) {
            cap = (len + got + 1) * 2;
            *text = realloc(*text, cap);
        }
        memcpy(*text + len, buf, got);
        len += got;
    }
    if (f != stdin) {
        fclose(f);
    }
    if (*text == NULL) {
        fprintf(stderr, "gantry: the secret file %s is empty: give KEY=VALUE lines\n", file);
        return -1;
    }
    (*text)[len] = '\0';
    for (char *save = NULL, *line = strtok_r(*text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        line[strcspn(line, "\r")] = '\0';
        if (line[0] == '\0' || line[0] == '#') {
            continue;
        }
        if (*n >= max) {
            fprintf(stderr, "gantry: more than %d secret entries\n", max);
            return -1;
        }
        pairs[(*n)++] = line;
    }
    return 0;
}

/* Create and update share their flags: --type, --config K=V, --label K=V, --secret-file F|-. */
static int provider_write(struct cli *c, bool create, int argc, char **argv)
{
    const char *type = gantry_opt(&argc, argv, "--type"), *sf = gantry_opt(&argc, argv, "--secret-file");
    const char *config[64], *labels[32], *secret[64];
    int n_config = gantry_opt_all(&argc, argv, "--config", config, 64);
    int n_labels = gantry_opt_all(&argc, argv, "--label", labels, 32);
    int rc = gantry_args(gantry_find("provider", create ? "create" : "update"), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    bool refs = false; /* Secret-backed credentials (--config secret_ref.KEY=NS/NAME/KEY) */
    for (int i = 0; i < n_config; i++) {
        refs = refs || strncmp(config[i], "secret_ref.", 11) == 0;
    }
    if (create && (type == NULL || (sf == NULL && !refs))) {
        fprintf(stderr, "gantry provider create: give --type and --secret-file FILE (or - for stdin) with "
                        "KEY=VALUE lines, or --config secret_ref.KEY=NAMESPACE/SECRET/KEY\n");
        return GANTRY_EXIT_USAGE;
    }
    char *text = NULL;
    int n_secret = 0;
    if (sf != NULL && read_secret(sf, &text, secret, 64, &n_secret) != 0) {
        free(text);
        return GANTRY_EXIT_USAGE;
    }
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__Provider p = GANTRY__V1__PROVIDER__INIT;
    Gantry__V1__CreateProviderRequest cr = GANTRY__V1__CREATE_PROVIDER_REQUEST__INIT;
    Gantry__V1__UpdateProviderRequest ur = GANTRY__V1__UPDATE_PROVIDER_REQUEST__INIT;
    ProtobufCMessage *old = NULL;
    if (!create) { /* start from what is stored: what is not given stays */
        Gantry__V1__GetProviderRequest get = GANTRY__V1__GET_PROVIDER_REQUEST__INIT;
        get.namespace_ = (char *)gantry_ns(c);
        get.name = argv[0];
        if ((rc = gantry_call(c, "/gantry.v1.Providers/Get", &get.base, &gantry__v1__provider__descriptor,
                              NULL, NULL, &old, 10000)) != 0) {
            free(text);
            return rc;
        }
        Gantry__V1__Provider *o = (Gantry__V1__Provider *)old;
        meta = *o->meta;
        p.type = o->type;
        p.n_config = o->n_config;
        p.config = o->config;
        ur.expected_resource_version = o->meta->resource_version;
    }
    meta.name = argv[0];
    meta.namespace_ = (char *)gantry_ns(c);
    p.meta = &meta;
    p.type = (char *)(type != NULL ? type : p.type != NULL ? p.type : "");
    Gantry__V1__ObjectMeta__LabelsEntry **labels_new = NULL;
    Gantry__V1__Provider__ConfigEntry **config_new = NULL;
    ProtobufCMessage **secret_new = NULL;
    size_t n_labels_new = 0, n_config_new = 0, n_secret_new = 0;
    if (gantry_map(&gantry__v1__object_meta__labels_entry__descriptor, labels, n_labels, &labels_new,
                   &n_labels_new) != 0 ||
        gantry_map(&gantry__v1__provider__config_entry__descriptor, config, n_config, &config_new,
                   &n_config_new) != 0 ||
        gantry_map(create ? &gantry__v1__create_provider_request__secret_entry__descriptor
                          : &gantry__v1__update_provider_request__secret_entry__descriptor,
                   secret, n_secret, &secret_new, &n_secret_new) != 0) {
        rc = GANTRY_EXIT_USAGE;
        goto done;
    }
    if (n_labels > 0 || create) {
        meta.labels = labels_new;
        meta.n_labels = n_labels_new;
    }
    if (n_config > 0 || create) {
        p.config = config_new;
        p.n_config = n_config_new;
    }
    char rid[37];
    gantry_request_id(rid);
    if (create) {
        cr.request_id = rid;
        cr.provider = &p;
        cr.secret = (Gantry__V1__CreateProviderRequest__SecretEntry **)secret_new;
        cr.n_secret = n_secret_new;
        rc = gantry_simple(c, "/gantry.v1.Providers/Create", &cr.base, &gantry__v1__provider__descriptor,
                           NULL, provider_cols);
    } else {
        ur.request_id = rid;
        ur.provider = &p;
        ur.secret = (Gantry__V1__UpdateProviderRequest__SecretEntry **)secret_new;
        ur.n_secret = n_secret_new;
        rc = gantry_simple(c, "/gantry.v1.Providers/Update", &ur.base, &gantry__v1__provider__descriptor,
                           NULL, provider_cols);
    }
done:
    gantry_map_free(labels_new, n_labels_new);
    gantry_map_free(config_new, n_config_new);
    gantry_map_free(secret_new, n_secret_new);
    if (old != NULL) {
        protobuf_c_message_free_unpacked(old, NULL);
    }
    if (text != NULL) {
        memset(text, 0, strlen(text));
        free(text);
    }
    return rc;
}

static int provider_create(struct cli *c, int argc, char **argv)
{
    return provider_write(c, true, argc, argv);
}

static int provider_update(struct cli *c, int argc, char **argv)
{
    return provider_write(c, false, argc, argv);
}

static int provider_get(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("provider", "get"), argc, argv, 1, 1);
    Gantry__V1__GetProviderRequest req = GANTRY__V1__GET_PROVIDER_REQUEST__INIT;
    req.namespace_ = (char *)gantry_ns(c);
    req.name = argv[0];
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Providers/Get", &req.base,
                                   &gantry__v1__provider__descriptor, NULL, provider_cols);
}

static int provider_list(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("provider", "list"), argc, argv, 0, 0);
    Gantry__V1__ListProvidersRequest req = GANTRY__V1__LIST_PROVIDERS_REQUEST__INIT;
    req.namespace_ = (char *)gantry_ns(c);
    return rc != 0
               ? rc
               : gantry_simple(c, "/gantry.v1.Providers/List", &req.base,
                               &gantry__v1__list_providers_response__descriptor, "providers", provider_cols);
}

static int provider_delete(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("provider", "delete"), argc, argv, 1, 1);
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__DeleteProviderRequest req = GANTRY__V1__DELETE_PROVIDER_REQUEST__INIT;
    req.request_id = rid;
    req.namespace_ = (char *)gantry_ns(c);
    req.name = argv[0];
    static const struct gantry_col cols[] = {
        {"DELETED", "id", NULL, false}, {"REVISION", "revision", NULL, false}, END};
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.Providers/Delete", &req.base,
                                   &gantry__v1__delete_response__descriptor, NULL, cols);
}

static int provider_grant(struct cli *c, int argc, char **argv, bool revoke)
{
    int rc = gantry_args(gantry_find("provider", revoke ? "revoke-grant" : "grant"), argc, argv, 2, 2);
    char id[64], rid[37];
    if (rc != 0 || (rc = gantry_principal_id(c, argv[1], id, sizeof id)) != 0) {
        return rc;
    }
    gantry_request_id(rid);
    if (revoke) {
        Gantry__V1__RevokeProviderGrantRequest req = GANTRY__V1__REVOKE_PROVIDER_GRANT_REQUEST__INIT;
        req.request_id = rid;
        req.namespace_ = (char *)gantry_ns(c);
        req.name = argv[0];
        req.principal_id = id;
        static const struct gantry_col cols[] = {
            {"REVOKED", "id", NULL, false}, {"REVISION", "revision", NULL, false}, END};
        return gantry_simple(c, "/gantry.v1.Providers/RevokeGrant", &req.base,
                             &gantry__v1__delete_response__descriptor, NULL, cols);
    }
    Gantry__V1__GrantProviderRequest req = GANTRY__V1__GRANT_PROVIDER_REQUEST__INIT;
    req.request_id = rid;
    req.namespace_ = (char *)gantry_ns(c);
    req.name = argv[0];
    req.principal_id = id;
    return gantry_simple(c, "/gantry.v1.Providers/Grant", &req.base, &gantry__v1__provider_grant__descriptor,
                         NULL, grant_cols);
}

static int provider_grant_cmd(struct cli *c, int argc, char **argv)
{
    return provider_grant(c, argc, argv, false);
}

static int provider_revoke_cmd(struct cli *c, int argc, char **argv)
{
    return provider_grant(c, argc, argv, true);
}

static int provider_grants(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("provider", "grants"), argc, argv, 1, 1);
    Gantry__V1__ListProviderGrantsRequest req = GANTRY__V1__LIST_PROVIDER_GRANTS_REQUEST__INIT;
    req.namespace_ = (char *)gantry_ns(c);
    req.name = argv[0];
    return rc != 0
               ? rc
               : gantry_simple(c, "/gantry.v1.Providers/ListGrants", &req.base,
                               &gantry__v1__list_provider_grants_response__descriptor, "grants", grant_cols);
}

const struct gantry_cmd gantry_provider_cmds[] = {
    {"provider", "create",
     "NAME --type TYPE --secret-file FILE|- | --config secret_ref.KEY=NS/SECRET/KEY [--config K=V ...] "
     "[--label K=V ...] "
     "[--namespace NS]",
     "store a provider credential (KEY=VALUE lines from FILE, or stdin for -), encrypted at rest and never "
     "returned",
     "printf 'api_key=%s\\n' \"$OPENAI_KEY\" | gantry provider create openai --type openai --secret-file - "
     "\\\n"
     "    --config base_url=https://api.openai.com/v1 --namespace team-a",
     provider_create, false},
    {"provider", "get", "NAME [--namespace NS]", "show a provider (secret key names, never values)",
     "gantry provider get openai --namespace team-a", provider_get, false},
    {"provider", "list", "[--namespace NS]", "list a namespace's providers",
     "gantry provider list --namespace team-a", provider_list, false},
    {"provider", "update", "NAME [--type TYPE] [--secret-file FILE|-] [--config K=V ...] [--label K=V ...]",
     "change a provider; without --secret-file the stored secret is kept; --config and --label replace",
     "gantry provider update openai --secret-file new-openai.env --namespace team-a", provider_update, false},
    {"provider", "delete", "NAME [--namespace NS]", "delete a provider",
     "gantry provider delete openai --namespace team-a", provider_delete, false},
    {"provider", "grant", "NAME PRINCIPAL [--namespace NS]",
     "let PRINCIPAL (id or name; bound in the namespace) attach the provider to its sandboxes",
     "gantry provider grant openai alice --namespace team-a", provider_grant_cmd, false},
    {"provider", "revoke-grant", "NAME PRINCIPAL [--namespace NS]", "take a grant back",
     "gantry provider revoke-grant openai alice --namespace team-a", provider_revoke_cmd, false},
    {"provider", "grants", "NAME [--namespace NS]", "list who may use a provider",
     "gantry provider grants openai --namespace team-a", provider_grants, false},
    {NULL, NULL, NULL, NULL, NULL, NULL, false},
};
