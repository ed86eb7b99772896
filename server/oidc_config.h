/* Loading the OIDC issuers gantryd trusts from the file named by oidc_issuers_file:
 *
 *   {"oidc_issuers": [{"name": ..., "issuer": ..., "audiences": [...], "jwks_file" | "jwks_url": ...,
 *                      "ca_file": ..., "principal_claim": ..., "bearer_token_file": ...,
 *                      "token_review": true|false, "token_review_url": ...,
 *                      "verify": "jwks" (default) | "token_review"}, ...]}
 *
 * (docs/oidc.md). Unknown members, wrong types and missing required members are GERR_INVAL naming
 * the issuer's index and the member. On success *@out is a started verifier (api/auth/oidc.h: the
 * first fetch of each issuer happened; an issuer whose fetch failed is logged and retried later). */
#ifndef GANTRY_SERVER_OIDC_CONFIG_H
#define GANTRY_SERVER_OIDC_CONFIG_H

#include "api/auth/oidc.h"

int oidc_config_load(const char *path, struct oidc **out, char *errmsg);

/* The same checks on the document @text of @len bytes (need not be NUL-terminated; @what names it
 * in messages), without starting: *@out is an authenticator with its issuers added and nothing
 * fetched (oidc_free it). For tests and the fuzz harness (tests/fuzz/fuzz_oidc_config.c). */
int oidc_config_parse(const char *text, size_t len, const char *what, struct oidc **out, char *errmsg);

#endif
