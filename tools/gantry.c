/* gantry: the command-line client (docs/cli.md). This file parses the global flags, applies the
 * context, and dispatches through the command tables (tools/gantry.h, tools/gantry_help.c).
 *
 * Global flags may come anywhere before "--": --context NAME, --endpoint A[,B...], --ca FILE,
 * --token-file FILE, --namespace NS (-n), --all-namespaces (-A), -o table|json|yaml. The credential
 * comes from --token-file, GANTRY_TOKEN or the context, never from a flag's value (flags show in ps). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "tools/gantry.h"

static bool is(const char *a, const char *x, const char *y)
{
    return strcmp(a, x) == 0 || (y != NULL && strcmp(a, y) == 0);
}

int main(int argc, char **argv)
{
    /* A replica killed while a call to it is in flight must not kill the CLI silently: the TLS client
     * writes with write(2), which raises SIGPIPE on a connection the peer has reset. Ignored, the
     * write fails with EPIPE, the call fails, and the next endpoint is tried, for every command. */
    signal(SIGPIPE, SIG_IGN);
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
        gantry_usage(help ? stdout : stderr);
        return help ? 0 : GANTRY_EXIT_USAGE;
    }
    bool subs;
    if (!gantry_group_exists(words[0], &subs)) {
        fprintf(stderr, "gantry: unknown command \"%s\"; see `gantry --help`\n", words[0]);
        return GANTRY_EXIT_USAGE;
    }
    const struct gantry_cmd *cmd = gantry_find(words[0], subs ? (n > 1 ? words[1] : NULL) : NULL);
    if (cmd == NULL) {
        if (n == 1 || help) {
            gantry_group_help(help ? stdout : stderr, words[0]);
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
        uint64_t retry_s = 20;
        if (gantry_u64("GANTRY_RETRY_S", getenv("GANTRY_RETRY_S"), GANTRY_MAX_TIMEOUT_S, &retry_s) != 0) {
            return GANTRY_EXIT_USAGE;
        }
        c.retry_ms = (unsigned)retry_s * 1000u;
    }
    c.last_status = -1;
    return cmd->run(&c, n - skip, words + skip);
}
