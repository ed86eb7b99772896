/* gantry: the command-line client (docs/cli.md). This file parses the global flags, applies the
 * context, and dispatches through the command tables (tools/gantry.h); it also prints help and
 * generates the bash completion from those tables.
 *
 * Global flags may come anywhere before "--": --context NAME, --endpoint A[,B...], --ca FILE,
 * --token-file FILE, --namespace NS (-n), --all-namespaces (-A), -o table|json|yaml. The credential
 * comes from --token-file, GANTRY_TOKEN or the context, never from a flag's value (flags show in ps). */
#include <stdlib.h>
#include <string.h>

#include "tools/gantry.h"

#define VERSION "0.1.0-dev"

static int cmd_version(struct cli *c, int argc, char **argv);
static int cmd_help(struct cli *c, int argc, char **argv);
static int cmd_completion(struct cli *c, int argc, char **argv);

static const struct gantry_cmd builtin_cmds[] = {
    {"version", NULL, "", "print the CLI's version", "gantry version", cmd_version, true},
    {"help", NULL, "[GROUP [COMMAND]] | --commands",
     "help on a group or a command (the same as adding --help); --commands lists every command",
     "gantry help sandbox create", cmd_help, true},
    {"completion", "bash", "", "print the bash completion script",
     "source <(gantry completion bash)    # or: gantry completion bash > /etc/bash_completion.d/gantry",
     cmd_completion, true},
    {NULL, NULL, NULL, NULL, NULL, NULL, false},
};

static const struct gantry_cmd *const tables[] = {
    gantry_ctx_cmds,      gantry_cluster_cmds, gantry_principal_cmds, gantry_tenant_cmds,
    gantry_provider_cmds, gantry_sandbox_cmds, builtin_cmds,
};
#define N_TABLES (sizeof tables / sizeof tables[0])

/* Every command, in table order. @var must be unique among nested uses (it names the index too). */
#define FOREACH_CMD(var)                                                                                     \
    for (size_t var##_t = 0; var##_t < N_TABLES; var##_t++)                                                  \
        for (const struct gantry_cmd *var = tables[var##_t]; var->group != NULL; var++)

const struct gantry_cmd *gantry_find(const char *group, const char *name)
{
    FOREACH_CMD(cmd)
    {
        if (strcmp(cmd->group, group) == 0 &&
            ((cmd->name == NULL && name == NULL) ||
             (cmd->name != NULL && name != NULL && strcmp(cmd->name, name) == 0))) {
            return cmd;
        }
    }
    return NULL;
}

static bool group_exists(const char *group, bool *has_subs)
{
    bool found = false;
    *has_subs = false;
    FOREACH_CMD(cmd)
    {
        if (strcmp(cmd->group, group) == 0) {
            found = true;
            *has_subs = *has_subs || cmd->name != NULL;
        }
    }
    return found;
}

static const char global_help[] =
    "Global flags (anywhere on the line):\n"
    "  --context NAME          use this context instead of the current one (or GANTRY_CONTEXT)\n"
    "  --endpoint A[,B,...]    the replicas' API addresses, tried in turn (or GANTRY_ENDPOINT)\n"
    "  --ca FILE               the cluster CA (or GANTRY_CA)\n"
    "  --token-file FILE       the credential: an API key or OIDC token in a file (or GANTRY_TOKEN)\n"
    "  --namespace NS, -n NS   the namespace (default: the context's, else \"default\")\n"
    "  --all-namespaces, -A    lists, usage and audit: every namespace you may read\n"
    "  -o table|json|yaml      the output format (default: table)\n";

void gantry_cmd_help(FILE *f, const struct gantry_cmd *cmd)
{
    fprintf(f, "usage: gantry %s%s%s%s%s\n\n%s\n\nExample:\n", cmd->group, cmd->name ? " " : "",
            cmd->name ? cmd->name : "", cmd->args[0] ? " " : "", cmd->args, cmd->summary);
    char ex[2048];
    snprintf(ex, sizeof ex, "%s", cmd->example);
    for (char *save = NULL, *l = strtok_r(ex, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        fprintf(f, "  %s\n", l);
    }
    if (!cmd->offline) {
        fprintf(f, "\n%s", global_help);
    }
}

static void group_help(FILE *f, const char *group)
{
    fprintf(f, "usage: gantry %s COMMAND [ARGS]\n\nCommands:\n", group);
    FOREACH_CMD(cmd)
    {
        if (strcmp(cmd->group, group) == 0) {
            fprintf(f, "  %-16s %s\n", cmd->name ? cmd->name : "", cmd->summary);
        }
    }
    fprintf(f, "\nExample:\n");
    FOREACH_CMD(cmd)
    {
        if (strcmp(cmd->group, group) == 0) {
            fprintf(f, "  %s\n", cmd->example);
            break;
        }
    }
    fprintf(f, "\n`gantry %s COMMAND --help` shows a command's arguments and an example.\n", group);
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: gantry [global flags] GROUP COMMAND [ARGS]\n\n"
        "Gantry's command-line client: every call of the gantry.v1 API, grouped by resource.\n\nCommands:\n");
    const char *last = "";
    FOREACH_CMD(cmd)
    {
        if (strcmp(cmd->group, last) != 0) {
            fprintf(f, "  %-11s", cmd->group);
            if (cmd->name == NULL) {
                fprintf(f, " (%s)", cmd->summary);
            }
            bool first = true;
            FOREACH_CMD(o)
            {
                if (strcmp(o->group, cmd->group) == 0 && o->name != NULL) {
                    fprintf(f, "%s%s", first ? " " : ", ", o->name);
                    first = false;
                }
            }
            fputc('\n', f);
            last = cmd->group;
        }
    }
    fprintf(
        f,
        "\n%s\n"
        "Exit codes: 0 ok; 1 the server refused or failed the call; 2 bad usage or configuration;\n"
        "3 no endpoint answered; 4 not authenticated or not permitted; 5 the sandbox did not get READY.\n\n"
        "Example:\n"
        "  gantry context create dev --endpoint 127.0.0.1:7101,127.0.0.1:7102 --ca ca.pem --token-file "
        "my.key\n"
        "  gantry sandbox create agent-1 --namespace demo --image busybox --wait -- sleep 3600\n\n"
        "`gantry GROUP --help` and `gantry GROUP COMMAND --help` say more.\n",
        global_help);
}

static int cmd_version(struct cli *c, int argc, char **argv)
{
    (void)c;
    int rc = gantry_args(gantry_find("version", NULL), argc, argv, 0, 0);
    if (rc == 0) {
        printf("gantry %s\n", VERSION);
    }
    return rc;
}

static int cmd_help(struct cli *c, int argc, char **argv)
{
    (void)c;
    if (argc == 1 && strcmp(argv[0], "--commands") == 0) {
        FOREACH_CMD(cmd)
        {
            printf("%s%s%s\n", cmd->group, cmd->name ? " " : "", cmd->name ? cmd->name : "");
        }
        return 0;
    }
    bool subs;
    if (argc == 0) {
        usage(stdout);
        return 0;
    }
    if (!group_exists(argv[0], &subs) || argc > 2) {
        fprintf(stderr, "gantry help: no such command; see `gantry --help`\n");
        return GANTRY_EXIT_USAGE;
    }
    const struct gantry_cmd *cmd = gantry_find(argv[0], argc == 2 ? argv[1] : NULL);
    if (cmd != NULL) {
        gantry_cmd_help(stdout, cmd);
    } else if (argc == 1) {
        group_help(stdout, argv[0]);
    } else {
        fprintf(stderr, "gantry help: no such command; see `gantry %s --help`\n", argv[0]);
        return GANTRY_EXIT_USAGE;
    }
    return 0;
}

/* The --flags in a synopsis, space-separated. */
static void synopsis_flags(const char *args, char *out, size_t len)
{
    size_t at = 0;
    out[0] = '\0';
    for (const char *p = args; (p = strstr(p, "--")) != NULL;) {
        size_t n = 2;
        while ((p[n] >= 'a' && p[n] <= 'z') || p[n] == '-') {
            n++;
        }
        char flag[64];
        snprintf(flag, sizeof flag, "%.*s", (int)n, p);
        if (n > 2 && strstr(out, flag) == NULL && at + n + 2 < len) {
            at += (size_t)snprintf(out + at, len - at, "%s%s", at ? " " : "", flag);
        }
        p += n;
    }
}

static int cmd_completion(struct cli *c, int argc, char **argv)
{
    (void)c;
    int rc = gantry_args(gantry_find("completion", "bash"), argc, argv, 0, 0);
    if (rc != 0) {
        return rc;
    }
    printf("# bash completion for gantry (generated by `gantry completion bash`)\n"
           "_gantry() {\n"
           "  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} g= s= i w\n"
           "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
           "    w=${COMP_WORDS[i]}\n"
           "    case $w in\n"
           "      --context|--endpoint|--ca|--token-file|--namespace|-n|-o|--output) ((i++)) ;;\n"
           "      --) return ;;\n"
           "      -*) ;;\n"
           "      *) if [ -z \"$g\" ]; then g=$w; elif [ -z \"$s\" ]; then s=$w; fi ;;\n"
           "    esac\n"
           "  done\n"
           "  case $prev in\n"
           "    -o|--output) COMPREPLY=($(compgen -W 'table json yaml' -- \"$cur\")); return ;;\n"
           "    --context) COMPREPLY=($(compgen -W \"$(gantry context list -q 2>/dev/null)\" -- \"$cur\")); "
           "return ;;\n"
           "    --ca|--token-file|--secret-file|--file) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n"
           "  esac\n"
           "  local globals='--context --endpoint --ca --token-file --namespace --all-namespaces -o --help'\n"
           "  if [ -z \"$g\" ]; then\n"
           "    COMPREPLY=($(compgen -W \"");
    const char *last = "";
    FOREACH_CMD(cmd)
    {
        if (strcmp(cmd->group, last) != 0) {
            printf("%s ", cmd->group);
            last = cmd->group;
        }
    }
    printf("$globals\" -- \"$cur\"))\n    return\n  fi\n  case $g in\n");
    last = "";
    FOREACH_CMD(cmd)
    {
        if (cmd->name != NULL && strcmp(cmd->group, last) != 0) {
            printf("    %s) [ -z \"$s\" ] && { COMPREPLY=($(compgen -W \"", cmd->group);
            FOREACH_CMD(o)
            {
                if (strcmp(o->group, cmd->group) == 0) {
                    printf("%s ", o->name);
                }
            }
            printf("\" -- \"$cur\")); return; } ;;\n");
            last = cmd->group;
        }
    }
    printf("  esac\n  case \"$g $s\" in\n"
           "    'context use '|'context delete '|'context show ') COMPREPLY=($(compgen -W \"$(gantry context "
           "list "
           "-q 2>/dev/null)\" -- \"$cur\")); return ;;\n");
    FOREACH_CMD(cmd)
    {
        char flags[1024];
        synopsis_flags(cmd->args, flags, sizeof flags);
        printf("    '%s %s') COMPREPLY=($(compgen -W \"%s --help%s\" -- \"$cur\")) ;;\n", cmd->group,
               cmd->name ? cmd->name : "", flags, cmd->offline ? "" : " $globals");
    }
    printf("  esac\n}\ncomplete -o default -F _gantry gantry\n");
    return 0;
}

static bool is(const char *a, const char *x, const char *y)
{
    return strcmp(a, x) == 0 || (y != NULL && strcmp(a, y) == 0);
}

int main(int argc, char **argv)
{
    static struct cli c;
    const char *endpoint = NULL, *ca = NULL, *token_file = NULL, *context = NULL, *ns = NULL, *out = "table";
    bool help = false;
    /* Words and flags: global flags come out wherever they are; the rest keeps its order. The
     * context commands take --endpoint, --ca, --token-file and --namespace as their own. */
    static char **words; /* static: still reachable at exit, whichever return is taken */
    words = calloc((size_t)argc + 1, sizeof *words);
    int n = 0;
    bool dashdash = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool ctx_group = n > 0 && strcmp(words[0], "context") == 0;
        const char **dst = NULL;
        if (dashdash || a[0] != '-') {
            words[n++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            dashdash = true;
            words[n++] = argv[i];
            continue;
        }
        if (is(a, "--help", "-h")) {
            help = true;
            continue;
        }
        if (is(a, "--all-namespaces", "-A") && !ctx_group) {
            c.all_namespaces = true;
            continue;
        }
        dst = is(a, "-o", "--output")       ? &out
              : is(a, "--context", NULL)    ? &context
              : ctx_group                   ? NULL
              : is(a, "--endpoint", NULL)   ? &endpoint
              : is(a, "--ca", NULL)         ? &ca
              : is(a, "--token-file", NULL) ? &token_file
              : is(a, "--namespace", "-n")  ? &ns
                                            : NULL;
        if (dst == NULL) {
            words[n++] = argv[i];
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "gantry: %s needs a value\n", a);
            return GANTRY_EXIT_USAGE;
        }
        *dst = argv[++i];
    }
    c.out = strcmp(out, "json") == 0   ? GANTRY_OUT_JSON
            : strcmp(out, "yaml") == 0 ? GANTRY_OUT_YAML
                                       : GANTRY_OUT_TABLE;
    if (c.out == GANTRY_OUT_TABLE && strcmp(out, "table") != 0) {
        fprintf(stderr, "gantry: -o is table, json or yaml\n");
        return GANTRY_EXIT_USAGE;
    }
    if (n == 0) {
        usage(help ? stdout : stderr);
        return help ? 0 : GANTRY_EXIT_USAGE;
    }
    bool subs;
    if (!group_exists(words[0], &subs)) {
        fprintf(stderr, "gantry: unknown command \"%s\"; see `gantry --help`\n", words[0]);
        return GANTRY_EXIT_USAGE;
    }
    const struct gantry_cmd *cmd = gantry_find(words[0], subs ? (n > 1 ? words[1] : NULL) : NULL);
    if (cmd == NULL) {
        if (n == 1 || help) {
            group_help(help ? stdout : stderr, words[0]);
            return help ? 0 : GANTRY_EXIT_USAGE;
        }
        fprintf(stderr, "gantry %s: unknown command \"%s\"; see `gantry %s --help`\n", words[0], words[1],
                words[0]);
        return GANTRY_EXIT_USAGE;
    }
    if (help) {
        gantry_cmd_help(stdout, cmd);
        return 0;
    }
    int skip = subs ? 2 : 1;
    if (context != NULL) {
        snprintf(c.context, sizeof c.context, "%s", context);
    }
    if (ns != NULL) {
        snprintf(c.ns, sizeof c.ns, "%s", ns);
        c.ns_flag = true;
    }
    if (!cmd->offline) {
        const char *env_ep = getenv("GANTRY_ENDPOINT"), *env_ca = getenv("GANTRY_CA"),
                   *env_tok = getenv("GANTRY_TOKEN");
        endpoint = endpoint != NULL ? endpoint : env_ep != NULL && env_ep[0] ? env_ep : NULL;
        ca = ca != NULL ? ca : env_ca != NULL && env_ca[0] ? env_ca : NULL;
        int rc = token_file != NULL ? gantry_read_token(&c, token_file) : 0;
        if (rc != 0) {
            return rc;
        }
        bool have_token = token_file != NULL;
        if (!have_token && env_tok != NULL && env_tok[0] != '\0') {
            snprintf(c.token, sizeof c.token, "%s", env_tok);
            have_token = true;
        }
        if (endpoint != NULL) {
            snprintf(c.endpoint_buf, sizeof c.endpoint_buf, "%s", endpoint);
        }
        if (ca != NULL) {
            snprintf(c.ca, sizeof c.ca, "%s", ca);
        }
        /* An endpoint from the flag or the environment bypasses the contexts, unless one is named. */
        const char *env_ctx = getenv("GANTRY_CONTEXT");
        bool use_ctx = endpoint == NULL || context != NULL || (env_ctx != NULL && env_ctx[0] != '\0');
        if (use_ctx &&
            (rc = gantry_ctx_apply(&c, context, endpoint != NULL, ca != NULL, have_token, ns != NULL)) != 0) {
            return rc;
        }
        for (char *save = NULL, *t = strtok_r(c.endpoint_buf, ",", &save);
             t != NULL && c.n_endpoints < GANTRY_MAX_ENDPOINTS; t = strtok_r(NULL, ",", &save)) {
            c.endpoints[c.n_endpoints++] = t;
        }
        /* A missing endpoint or CA is reported by the first call (gantry_call), after the command
         * has checked its arguments. */
        const char *retry = getenv("GANTRY_RETRY_S");
        c.retry_ms = retry != NULL ? (unsigned)strtoul(retry, NULL, 10) * 1000u : 20000u;
    }
    c.last_status = -1;
    return cmd->run(&c, n - skip, words + skip);
}
