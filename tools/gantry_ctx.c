/* Contexts: named sets of endpoints, CA, credential and default namespace in
 * $XDG_CONFIG_HOME/gantry/config.json (else ~/.config/gantry/config.json), like kubectl's
 * kubeconfig. The file is written atomically with mode 0600, because a context may hold an API
 * key (`--token-stdin`); `--token-file` stores only the path.
 *
 *   {"current_context": "dev",
 *    "contexts": {"dev": {"endpoints": ["127.0.0.1:7101", ...], "ca": "/abs/ca.pem",
 *                         "token_file": "/abs/alice.key", "namespace": "demo"}}}
 *
 * Flags and GANTRY_* variables win over the context, field by field. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/file.h"
#include "lib/mem.h"
#include "tools/gantry.h"

static void config_path(char *out, size_t len, bool dir_only)
{
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (xdg != NULL && xdg[0] != '\0') {
        snprintf(out, len, "%s/gantry%s", xdg, dir_only ? "" : "/config.json");
    } else {
        snprintf(out, len, "%s/.config/gantry%s", home != NULL ? home : ".", dir_only ? "" : "/config.json");
    }
}

/* The config, or an empty one when the file does not exist; NULL (after printing why) when it
 * cannot be read or parsed. */
static json_t *load(void)
{
    char path[PATH_MAX];
    config_path(path, sizeof path, false);
    if (access(path, F_OK) != 0) {
        return json_pack("{s:s,s:{}}", "current_context", "", "contexts");
    }
    json_error_t e;
    json_t *cfg = json_load_file(path, 0, &e);
    if (cfg == NULL || !json_is_object(json_object_get(cfg, "contexts"))) {
        fprintf(stderr, "gantry: cannot use %s: %s (line %d)\n  fix or remove the file\n", path,
                cfg == NULL ? e.text : "no \"contexts\" object", e.line);
        json_decref(cfg);
        return NULL;
    }
    return cfg;
}

static int save(json_t *cfg)
{
    char dir[PATH_MAX], path[PATH_MAX], tmp[PATH_MAX + 8];
    config_path(dir, sizeof dir, true);
    config_path(path, sizeof path, false);
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", dir);
    char *slash = strrchr(parent, '/');
    if (slash != NULL && slash != parent) {
        *slash = '\0';
        mkdir(parent, 0700); /* $HOME/.config when it is missing */
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "gantry: cannot create %s: %s\n", dir, strerror(errno));
        return GANTRY_EXIT_USAGE;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    mode_t old = umask(077);
    int rv = json_dump_file(cfg, tmp, JSON_INDENT(2));
    umask(old);
    if (rv != 0 || chmod(tmp, 0600) != 0 || rename(tmp, path) != 0) {
        fprintf(stderr, "gantry: cannot write %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return GANTRY_EXIT_USAGE;
    }
    return 0;
}

int gantry_read_token(struct cli *c, const char *file)
{
    char *text = NULL, err[GERR_MSG_SIZE];
    size_t len = 0;
    if (file_read_all(file, sizeof c->token - 1, &text, &len, err) != 0) {
        fprintf(stderr, "gantry: cannot read the credential: %s\n", err);
        return GANTRY_EXIT_USAGE;
    }
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' ')) {
        text[--len] = '\0';
    }
    snprintf(c->token, sizeof c->token, "%s", text);
    memset(text, 0, len);
    mem_free(text);
    return 0;
}

int gantry_ctx_apply(struct cli *c, const char *name, bool have_endpoint, bool have_ca, bool have_token,
                     bool have_ns)
{
    const char *env = getenv("GANTRY_CONTEXT");
    json_t *cfg = load();
    if (cfg == NULL) {
        return GANTRY_EXIT_USAGE;
    }
    const char *want = name != NULL ? name : env != NULL && env[0] != '\0' ? env : NULL;
    if (want == NULL) {
        want = json_string_value(json_object_get(cfg, "current_context"));
    }
    json_t *ctx =
        want != NULL && want[0] != '\0' ? json_object_get(json_object_get(cfg, "contexts"), want) : NULL;
    if (ctx == NULL && want != NULL && want[0] != '\0') {
        fprintf(stderr, "gantry: there is no context \"%s\"\n  see `gantry context list`\n", want);
        json_decref(cfg);
        return GANTRY_EXIT_USAGE;
    }
    int rc = 0;
    if (ctx != NULL) {
        snprintf(c->context, sizeof c->context, "%s", want);
        if (!have_endpoint) {
            size_t i, at = 0;
            json_t *e;
            json_array_foreach(json_object_get(ctx, "endpoints"), i, e)
            {
                at += (size_t)snprintf(c->endpoint_buf + at,
                                       at < sizeof c->endpoint_buf ? sizeof c->endpoint_buf - at : 0, "%s%s",
                                       i > 0 ? "," : "", json_string_value(e));
            }
        }
        const char *ca = json_string_value(json_object_get(ctx, "ca"));
        if (!have_ca && ca != NULL) {
            snprintf(c->ca, sizeof c->ca, "%s", ca);
        }
        const char *ns = json_string_value(json_object_get(ctx, "namespace"));
        if (!have_ns && ns != NULL) {
            snprintf(c->ns, sizeof c->ns, "%s", ns);
        }
        const char *tf = json_string_value(json_object_get(ctx, "token_file"));
        const char *tok = json_string_value(json_object_get(ctx, "token"));
        if (!have_token && tf != NULL && tf[0] != '\0') {
            rc = gantry_read_token(c, tf);
        } else if (!have_token && tok != NULL) {
            snprintf(c->token, sizeof c->token, "%s", tok);
        }
    }
    json_decref(cfg);
    return rc;
}

void gantry_ctx_names(FILE *f)
{
    json_t *cfg = load();
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(cfg, "contexts"), k, v)
    {
        fprintf(f, "%s\n", k);
    }
    json_decref(cfg);
}

/* --- the context commands --- */

static const struct gantry_cmd *me(const char *name)
{
    return gantry_find("context", name);
}

static bool valid_name(const char *s)
{
    if (s[0] == '\0' || strlen(s) > 63) {
        return false;
    }
    for (const char *p = s; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_' || *p == '.')) {
            return false;
        }
    }
    return true;
}

static int ctx_create(struct cli *c, int argc, char **argv)
{
    (void)c;
    const char *eps = gantry_opt(&argc, argv, "--endpoint"), *ca = gantry_opt(&argc, argv, "--ca");
    const char *tf = gantry_opt(&argc, argv, "--token-file"), *ns = gantry_opt(&argc, argv, "--namespace");
    bool tstdin = gantry_flag(&argc, argv, "--token-stdin"), use = gantry_flag(&argc, argv, "--use");
    bool overwrite = gantry_flag(&argc, argv, "--overwrite");
    int rc = gantry_args(me("create"), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    if (!valid_name(argv[0]) || eps == NULL || ca == NULL || (tf != NULL && tstdin)) {
        fprintf(stderr,
                "gantry context create: give a NAME (letters, digits, - _ .), --endpoint and --ca, and at "
                "most one of --token-file and --token-stdin\n");
        return GANTRY_EXIT_USAGE;
    }
    char ca_abs[PATH_MAX], tf_abs[PATH_MAX] = "";
    if (realpath(ca, ca_abs) == NULL) {
        fprintf(stderr, "gantry context create: the CA file %s: %s\n", ca, strerror(errno));
        return GANTRY_EXIT_USAGE;
    }
    if (tf != NULL && realpath(tf, tf_abs) == NULL) {
        fprintf(stderr, "gantry context create: the token file %s: %s\n", tf, strerror(errno));
        return GANTRY_EXIT_USAGE;
    }
    json_t *cfg = load();
    if (cfg == NULL) {
        return GANTRY_EXIT_USAGE;
    }
    json_t *all = json_object_get(cfg, "contexts");
    if (json_object_get(all, argv[0]) != NULL && !overwrite) {
        fprintf(stderr, "gantry context create: \"%s\" exists; add --overwrite to replace it\n", argv[0]);
        json_decref(cfg);
        return GANTRY_EXIT_USAGE;
    }
    json_t *ctx = json_object(), *list = json_array();
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", eps);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
        json_array_append_new(list, json_string(t));
    }
    json_object_set_new(ctx, "endpoints", list);
    json_object_set_new(ctx, "ca", json_string(ca_abs));
    if (tf != NULL) {
        json_object_set_new(ctx, "token_file", json_string(tf_abs));
    }
    if (tstdin) {
        char tok[8192];
        if (fgets(tok, sizeof tok, stdin) == NULL) {
            fprintf(stderr, "gantry context create: --token-stdin: nothing on stdin\n");
            json_decref(ctx);
            json_decref(cfg);
            return GANTRY_EXIT_USAGE;
        }
        tok[strcspn(tok, "\r\n")] = '\0';
        json_object_set_new(ctx, "token", json_string(tok));
        memset(tok, 0, sizeof tok);
    }
    if (ns != NULL) {
        json_object_set_new(ctx, "namespace", json_string(ns));
    }
    json_object_set_new(all, argv[0], ctx);
    const char *cur = json_string_value(json_object_get(cfg, "current_context"));
    if (use || cur == NULL || cur[0] == '\0') {
        json_object_set_new(cfg, "current_context", json_string(argv[0]));
    }
    rc = save(cfg);
    if (rc == 0) {
        printf("context %s saved%s\n", argv[0],
               strcmp(json_string_value(json_object_get(cfg, "current_context")), argv[0]) == 0
                   ? " and in use"
                   : "");
    }
    json_decref(cfg);
    return rc;
}

static int ctx_use(struct cli *c, int argc, char **argv)
{
    (void)c;
    int rc = gantry_args(me("use"), argc, argv, 1, 1);
    json_t *cfg = rc == 0 ? load() : NULL;
    if (cfg == NULL) {
        return GANTRY_EXIT_USAGE;
    }
    if (json_object_get(json_object_get(cfg, "contexts"), argv[0]) == NULL) {
        fprintf(stderr, "gantry: there is no context \"%s\"\n  see `gantry context list`\n", argv[0]);
        json_decref(cfg);
        return GANTRY_EXIT_USAGE;
    }
    json_object_set_new(cfg, "current_context", json_string(argv[0]));
    rc = save(cfg);
    if (rc == 0) {
        printf("using context %s\n", argv[0]);
    }
    json_decref(cfg);
    return rc;
}

static int ctx_delete(struct cli *c, int argc, char **argv)
{
    (void)c;
    int rc = gantry_args(me("delete"), argc, argv, 1, 1);
    json_t *cfg = rc == 0 ? load() : NULL;
    if (cfg == NULL) {
        return GANTRY_EXIT_USAGE;
    }
    if (json_object_del(json_object_get(cfg, "contexts"), argv[0]) != 0) {
        fprintf(stderr, "gantry: there is no context \"%s\"\n  see `gantry context list`\n", argv[0]);
        json_decref(cfg);
        return GANTRY_EXIT_USAGE;
    }
    const char *cur = json_string_value(json_object_get(cfg, "current_context"));
    if (cur != NULL && strcmp(cur, argv[0]) == 0) {
        json_object_set_new(cfg, "current_context", json_string(""));
    }
    rc = save(cfg);
    if (rc == 0) {
        printf("context %s deleted\n", argv[0]);
    }
    json_decref(cfg);
    return rc;
}

/* A context for display: the token itself never printed. */
static json_t *shown(const char *name, json_t *ctx, const char *cur)
{
    json_t *o = json_deep_copy(ctx);
    if (json_object_get(o, "token") != NULL) {
        json_object_set_new(o, "token", json_string("(stored, hidden)"));
    }
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "current", json_boolean(cur != NULL && strcmp(cur, name) == 0));
    const char *tf = json_string_value(json_object_get(o, "token_file"));
    json_object_set_new(o, "credential",
                        json_string(tf != NULL                            ? tf
                                    : json_object_get(o, "token") != NULL ? "(stored)"
                                                                          : "(none)"));
    return o;
}

static int ctx_list(struct cli *c, int argc, char **argv)
{
    bool quiet = gantry_flag(&argc, argv, "-q");
    int rc = gantry_args(me("list"), argc, argv, 0, 0);
    json_t *cfg = rc == 0 ? load() : NULL;
    if (cfg == NULL) {
        return GANTRY_EXIT_USAGE;
    }
    if (quiet) {
        gantry_ctx_names(stdout);
        json_decref(cfg);
        return 0;
    }
    const char *cur = json_string_value(json_object_get(cfg, "current_context"));
    json_t *doc = json_object(), *arr = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(cfg, "contexts"), k, v)
    {
        json_array_append_new(arr, shown(k, v, cur));
    }
    json_object_set_new(doc, "current_context", json_string(cur != NULL ? cur : ""));
    json_object_set_new(doc, "contexts", arr);
    static const struct gantry_col cols[] = {{"NAME", "name", NULL, false},
                                             {"CURRENT", "current", NULL, false},
                                             {"NAMESPACE", "namespace", NULL, false},
                                             {"ENDPOINTS", "endpoints", NULL, false},
                                             {"CREDENTIAL", "credential", NULL, false},
                                             {NULL, NULL, NULL, false}};
    gantry_print(c, doc, "contexts", cols);
    json_decref(doc);
    json_decref(cfg);
    return 0;
}

static int ctx_show(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(me("show"), argc, argv, 0, 1);
    json_t *cfg = rc == 0 ? load() : NULL;
    if (cfg == NULL) {
        return GANTRY_EXIT_USAGE;
    }
    const char *cur = json_string_value(json_object_get(cfg, "current_context"));
    const char *env = getenv("GANTRY_CONTEXT");
    const char *name = argc == 1 ? argv[0] : c->context[0] != '\0' ? c->context : env != NULL ? env : cur;
    json_t *ctx = name != NULL ? json_object_get(json_object_get(cfg, "contexts"), name) : NULL;
    if (ctx == NULL) {
        fprintf(stderr, "gantry: %s%s%s\n  see `gantry context list`, or `gantry context create --help`\n",
                name != NULL && name[0] != '\0' ? "there is no context " : "no context is in use",
                name != NULL && name[0] != '\0' ? "named " : "", name != NULL ? name : "");
        json_decref(cfg);
        return GANTRY_EXIT_USAGE;
    }
    json_t *doc = shown(name, ctx, cur);
    if (c->out == GANTRY_OUT_TABLE) {
        gantry_yaml(stdout, doc, 0);
    } else {
        gantry_print(c, doc, NULL, NULL);
    }
    json_decref(doc);
    json_decref(cfg);
    return 0;
}

const struct gantry_cmd gantry_ctx_cmds[] = {
    {"context", "create",
     "NAME --endpoint HOST:PORT[,HOST:PORT...] --ca FILE [--token-file FILE | --token-stdin] [--namespace "
     "NS] "
     "[--use] [--overwrite]",
     "save a context: the replicas' API endpoints (tried in turn), the cluster CA, the credential (a file's "
     "path, "
     "or the token read from stdin and stored in the 0600 config file) and the default namespace; the first "
     "context created, or one created with --use, becomes the current one",
     "gantry context create dev --endpoint 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103 \\\n"
     "    --ca .devcluster/replica1/tls/ca.pem --token-file .devcluster/alice.key --namespace demo --use",
     ctx_create, true},
    {"context", "use", "NAME", "make NAME the current context", "gantry context use dev", ctx_use, true},
    {"context", "list", "[-q]", "list the contexts (-q: names only)", "gantry context list", ctx_list, true},
    {"context", "show", "[NAME]", "show a context (default: the one in use); a stored token is not printed",
     "gantry context show -o json", ctx_show, true},
    {"context", "delete", "NAME", "delete a context", "gantry context delete old-cluster", ctx_delete, true},
    {NULL, NULL, NULL, NULL, NULL, NULL, false},
};
