/* Secret-backed credential sources (docs/credentials.md, "Secret-backed credentials"): a provider's
 * credential entry <key> may come from a Kubernetes Secret instead of a value stored in Gantry. The
 * reference sits in the provider's (non-secret) config as
 *
 *     secret_ref.<key> = <namespace>/<name>/<data key>
 *
 * and is resolved by the gateway (the kubernetes driver's API client) when a sandbox starts. A pure
 * module: parsing and the rule of who may reference which Secret; no store, no I/O. */
#ifndef GANTRY_API_RULES_SECRET_REF_H
#define GANTRY_API_RULES_SECRET_REF_H

#include <stdbool.h>
#include <stddef.h>

#include "api/authz/authz.h"

#define SECRET_REF_PREFIX "secret_ref."

struct secret_ref {
    char ns[64];    /* a DNS-1123 label */
    char name[254]; /* a DNS-1123 subdomain */
    char key[254];  /* a Secret data key: 1..253 of [-._a-zA-Z0-9], not "." or ".." */
};

/* The credential key a provider config key names when it is a reference ("secret_ref.token" ->
 * "token"), pointing into @config_key; NULL when it does not start with SECRET_REF_PREFIX. */
const char *secret_ref_key(const char *config_key);

/* Parse @value ("<namespace>/<name>/<data key>", exactly two '/') into @out. 0 or GERR_INVAL (@out
 * then zeroed). Reads at most the first 600 bytes' worth: longer values are GERR_INVAL. */
int secret_ref_parse(const char *value, struct secret_ref *out);

/* May a caller reference @r? @platform_admin: yes. Otherwise only through a delegation scope (one
 * of @scopes, @n of them, allows_secret). A caller with neither (n 0, not platform_admin) may not:
 * a Secret anywhere in the cluster is not an ordinary user's to hand to a sandbox. When refused,
 * @why (caller buffer, always NUL-terminated) names the Secret and what is missing. */
bool secret_ref_allowed(const struct secret_ref *r, bool platform_admin,
                        const struct authz_scope *const *scopes, size_t n, char *why, size_t len);

#endif
