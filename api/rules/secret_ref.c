/* Secret-backed credential sources (api/rules/secret_ref.h). */
#include "api/rules/secret_ref.h"

#include <stdio.h>
#include <string.h>

#include "lib/err.h"
#include "lib/names.h"

const char *secret_ref_key(const char *config_key)
{
    size_t n = strlen(SECRET_REF_PREFIX);
    return strncmp(config_key, SECRET_REF_PREFIX, n) == 0 ? config_key + n : NULL;
}

static bool data_key_ok(const char *k, size_t n)
{
    if (n == 0 || n > 253 || (n == 1 && k[0] == '.') || (n == 2 && k[0] == '.' && k[1] == '.')) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.')) {
            return false;
        }
    }
    return true;
}

int secret_ref_parse(const char *value, struct secret_ref *out)
{
    char why[160];
    memset(out, 0, sizeof *out);
    const char *a = strchr(value, '/');
    const char *b = a != NULL ? strchr(a + 1, '/') : NULL;
    size_t total = strnlen(value, 600);
    if (a == NULL || b == NULL || strchr(b + 1, '/') != NULL || total >= 600) {
        return GERR_INVAL;
    }
    size_t n_ns = (size_t)(a - value), n_name = (size_t)(b - a - 1), n_key = strlen(b + 1);
    if (n_ns >= sizeof out->ns || n_name >= sizeof out->name || n_key >= sizeof out->key) {
        return GERR_INVAL;
    }
    memcpy(out->ns, value, n_ns);
    memcpy(out->name, a + 1, n_name);
    memcpy(out->key, b + 1, n_key);
    if (!names_dns_label_ok(out->ns, 63, why, sizeof why) || !authz_sa_name_ok(out->name) ||
        !data_key_ok(out->key, n_key)) {
        memset(out, 0, sizeof *out);
        return GERR_INVAL;
    }
    return 0;
}

bool secret_ref_allowed(const struct secret_ref *r, bool platform_admin,
                        const struct authz_scope *const *scopes, size_t n, char *why, size_t len)
{
    why[0] = '\0';
    if (platform_admin) {
        return true;
    }
    for (size_t i = 0; i < n; i++) {
        if (authz_scope_allows_secret(scopes[i], r->ns, r->name)) {
            return true;
        }
    }
    if (n == 0) {
        snprintf(
            why, len,
            "Kubernetes Secret %s/%s: referencing a Secret needs platform_admin or a delegation scope whose "
            "allowed_secret_namespaces and allowed_secret_names allow it",
            r->ns, r->name);
    } else {
        snprintf(why, len,
                 "Kubernetes Secret %s/%s is outside the delegation scope (allowed_secret_namespaces and "
                 "allowed_secret_names must both match)",
                 r->ns, r->name);
    }
    return false;
}
