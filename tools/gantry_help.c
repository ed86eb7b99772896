/* The gantry CLI's command registry (tools/gantry.h): the tables of every module, lookup, help, and
 * the bash completion generated from the tables. */
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
    gantry_ctx_cmds,      gantry_cluster_cmds,  gantry_principal_cmds, gantry_tenant_cmds,
    gantry_provider_cmds, gantry_warmpool_cmds, gantry_sandbox_cmds,   gantry_watch_cmds,
    gantry_drill_cmds,    builtin_cmds,
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

bool gantry_group_exists(const char *group, bool *has_subs)
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

void gantry_group_help(FILE *f, const char *group)
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

void gantry_usage(FILE *f)
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
        gantry_usage(stdout);
        return 0;
    }
    if (!gantry_group_exists(argv[0], &subs) || argc > 2) {
        fprintf(stderr, "gantry help: no such command; see `gantry --help`\n");
        return GANTRY_EXIT_USAGE;
    }
    const struct gantry_cmd *cmd = gantry_find(argv[0], argc == 2 ? argv[1] : NULL);
    if (cmd != NULL) {
        gantry_cmd_help(stdout, cmd);
    } else if (argc == 1) {
        gantry_group_help(stdout, argv[0]);
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
