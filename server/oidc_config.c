/* The OIDC issuers file (server/oidc_config.h). */
#include "server/oidc_config.h"

#include <string.h>

#include <jansson.h>

#include "lib/clock.h"
#include "lib/log.h"

static const char *const known[] = {
    "name",         "issuer",           "audiences",       "jwks_file",
    "jwks_url",     "ca_file",          "principal_claim", "bearer_token_file",
    "token_review", "token_review_url", "verify"};

static int member_string(json_t *o, const char *key, bool required, size_t i, const char **out, char *errmsg)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (v == NULL && !required) {
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0) {
        gerr_set(errmsg, "oidc_issuers[%zu].%s: %s", i, key,
                 v == NULL ? "is required" : "must be a non-empty string");
        return GERR_INVAL;
    }
    *out = json_string_value(v);
    return 0;
}

static int add_one(struct oidc *o, json_t *obj, size_t i, char *errmsg)
{
    if (!json_is_object(obj)) {
        gerr_set(errmsg, "oidc_issuers[%zu]: must be an object", i);
        return GERR_INVAL;
    }
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        bool ok = false;
        for (size_t j = 0; j < sizeof known / sizeof known[0]; j++) {
            ok = ok || strcmp(k, known[j]) == 0;
        }
        if (!ok) {
            gerr_set(errmsg, "oidc_issuers[%zu]: unknown member \"%.64s\"", i, k);
            return GERR_INVAL;
        }
    }
    const char *name, *issuer, *jwks_file, *jwks_url, *ca_file, *claim, *bearer;
    int rv = member_string(obj, "name", true, i, &name, errmsg);
    if (rv == 0) {
        rv = member_string(obj, "issuer", true, i, &issuer, errmsg);
    }
    if (rv == 0) {
        rv = member_string(obj, "jwks_file", false, i, &jwks_file, errmsg);
    }
    if (rv == 0) {
        rv = member_string(obj, "jwks_url", false, i, &jwks_url, errmsg);
    }
    if (rv == 0) {
        rv = member_string(obj, "ca_file", false, i, &ca_file, errmsg);
    }
    if (rv == 0) {
        rv = member_string(obj, "principal_claim", false, i, &claim, errmsg);
    }
    if (rv == 0) {
        rv = member_string(obj, "bearer_token_file", false, i, &bearer, errmsg);
    }
    const char *review_url = NULL;
    if (rv == 0) {
        rv = member_string(obj, "token_review_url", false, i, &review_url, errmsg);
    }
    json_t *review = json_object_get(obj, "token_review");
    if (rv == 0 && review != NULL && !json_is_boolean(review)) {
        gerr_set(errmsg, "oidc_issuers[%zu].token_review: must be true or false", i);
        rv = GERR_INVAL;
    }
    const char *verify = NULL;
    if (rv == 0) {
        rv = member_string(obj, "verify", false, i, &verify, errmsg);
    }
    if (rv == 0 && verify != NULL && strcmp(verify, "jwks") != 0 && strcmp(verify, "token_review") != 0) {
        gerr_set(errmsg, "oidc_issuers[%zu].verify: must be \"jwks\" or \"token_review\"", i);
        rv = GERR_INVAL;
    }
    bool review_only = verify != NULL && strcmp(verify, "token_review") == 0;
    if (rv == 0 && review_only && json_is_false(review)) {
        gerr_set(errmsg, "oidc_issuers[%zu].token_review: false contradicts verify \"token_review\"", i);
        rv = GERR_INVAL;
    }
    json_t *auds = json_object_get(obj, "audiences");
    const char *aud[16];
    size_t n_aud = 0;
    if (rv == 0 && (!json_is_array(auds) || json_array_size(auds) == 0 || json_array_size(auds) > 16)) {
        gerr_set(errmsg, "oidc_issuers[%zu].audiences: an array of 1 to 16 strings is required", i);
        rv = GERR_INVAL;
    }
    for (size_t j = 0; rv == 0 && j < json_array_size(auds); j++) {
        json_t *a = json_array_get(auds, j);
        if (!json_is_string(a)) {
            gerr_set(errmsg, "oidc_issuers[%zu].audiences[%zu]: must be a string", i, j);
            rv = GERR_INVAL;
        } else {
            aud[n_aud++] = json_string_value(a);
        }
    }
    if (rv != 0) {
        return rv;
    }
    struct oidc_issuer_config c;
    oidc_issuer_config_init(&c, name, issuer);
    c.audiences = aud;
    c.n_audiences = (unsigned)n_aud;
    c.jwks_file = jwks_file;
    c.jwks_url = jwks_url;
    c.ca_file = ca_file;
    c.principal_claim = claim;
    c.bearer_token_file = bearer;
    c.token_review = json_is_true(review);
    c.token_review_url = review_url;
    c.verify = review_only ? OIDC_VERIFY_TOKEN_REVIEW : OIDC_VERIFY_JWKS;
    char err[GERR_MSG_SIZE];
    rv = oidc_add_issuer(o, &c, err);
    if (rv != 0) {
        gerr_set(errmsg, "oidc_issuers[%zu]: %s", i, err);
    }
    return rv;
}

/* Build the authenticator from @root (not started). */
static int from_json(json_t *root, const char *what, struct oidc **out, size_t *n_issuers, char *errmsg)
{
    json_t *list = json_object_get(root, "oidc_issuers");
    if (!json_is_object(root) || !json_is_array(list) || json_object_size(root) != 1) {
        gerr_set(errmsg, "oidc: %s must be an object with one member, \"oidc_issuers\": an array", what);
        return GERR_INVAL;
    }
    struct oidc *o = oidc_new(clock_system());
    int rv = 0;
    for (size_t i = 0; rv == 0 && i < json_array_size(list); i++) {
        rv = add_one(o, json_array_get(list, i), i, errmsg);
    }
    if (rv != 0) {
        oidc_free(o);
        return rv;
    }
    *n_issuers = json_array_size(list);
    *out = o;
    return 0;
}

int oidc_config_parse(const char *text, size_t len, const char *what, struct oidc **out, char *errmsg)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        gerr_set(errmsg, "oidc: %s:%d:%d: %s", what, jerr.line, jerr.column, jerr.text);
        return GERR_INVAL;
    }
    size_t n = 0;
    int rv = from_json(root, what, out, &n, errmsg);
    json_decref(root);
    return rv;
}

int oidc_config_load(const char *path, struct oidc **out, char *errmsg)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        gerr_set(errmsg, "oidc: %s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        return GERR_INVAL;
    }
    struct oidc *o = NULL;
    size_t n = 0;
    int rv = from_json(root, path, &o, &n, errmsg);
    json_decref(root);
    if (rv != 0) {
        return rv;
    }
    char err[GERR_MSG_SIZE] = "";
    if (oidc_start(o, err) != 0) {
        LOG_WARN("oidc: %s (retried in the background)", err);
    }
    LOG_INFO("oidc: %zu issuer(s) configured from %s", n, path);
    *out = o;
    return 0;
}
