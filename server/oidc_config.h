/* Loading the OIDC issuers gantryd trusts from the file named by oidc_issuers_file:
 *
 *   {"oidc_issuers": [{"name": ..., "issuer": ..., "audiences": [...], "jwks_file" | "jwks_url": ...,
 *                      "ca_file": ..., "principal_claim": ...}, ...]}
 *
 * (docs/oidc.md). Unknown members, wrong types and missing required members are GERR_INVAL naming
 * the issuer's index and the member. On success *@out is a started verifier (api/auth/oidc.h: the
 * first fetch of each issuer happened; an issuer whose fetch failed is logged and retried later). */
#ifndef GANTRY_SERVER_OIDC_CONFIG_H
#define GANTRY_SERVER_OIDC_CONFIG_H

#include "api/auth/oidc.h"

int oidc_config_load(const char *path, struct oidc **out, char *errmsg);

#endif
