/* The OIDC issuers file (server/oidc_config.h): the "verify" member and the checks of an issuer
 * verified by TokenReview only. Parsed without starting, so nothing is fetched. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "server/oidc_config.h"

static char errmsg[GERR_MSG_SIZE];

/* Parse one issuer: the common members, then @members (a JSON fragment starting with ','). */
static int parse_issuer(const char *members)
{
    char doc[1024];
    snprintf(doc, sizeof doc,
             "{\"oidc_issuers\":[{\"name\":\"kube\",\"issuer\":\"https://kubernetes.default.svc\","
             "\"audiences\":[\"gantry\"]%s}]}",
             members);
    struct oidc *o = NULL;
    errmsg[0] = '\0';
    int rc = oidc_config_parse(doc, strlen(doc), "issuers.json", &o, errmsg);
    if (rc == 0) {
        assert_non_null(o);
    } else {
        assert_null(o);
    }
    oidc_free(o);
    return rc;
}

#define REVIEW_ONLY                                                                                          \
    ",\"verify\":\"token_review\",\"token_review_url\":\"https://10.0.0.1:6443\","                           \
    "\"bearer_token_file\":\"/var/run/secrets/kubernetes.io/serviceaccount/token\","                         \
    "\"ca_file\":\"/var/run/secrets/kubernetes.io/serviceaccount/ca.crt\""

static void verify_token_review_is_accepted(void **state)
{
    (void)state;
    assert_int_equal(parse_issuer(REVIEW_ONLY), 0);
    assert_int_equal(parse_issuer(REVIEW_ONLY ",\"token_review\":true"), 0); /* implied, may be said */
    assert_int_equal(parse_issuer(",\"verify\":\"jwks\",\"jwks_file\":\"/x\""), 0);
    assert_int_equal(parse_issuer(",\"jwks_file\":\"/x\""), 0); /* jwks is the default */
}

static void verify_token_review_is_checked(void **state)
{
    (void)state;
    static const struct {
        const char *members;
        const char *msg;
    } cases[] = {
        {REVIEW_ONLY ",\"jwks_url\":\"https://10.0.0.1:6443/openid/v1/jwks\"",
         "takes no jwks_file or jwks_url"},
        {REVIEW_ONLY ",\"jwks_file\":\"/x\"", "takes no jwks_file or jwks_url"},
        {",\"verify\":\"token_review\",\"bearer_token_file\":\"/t\"", "needs token_review_url"},
        {",\"verify\":\"token_review\",\"token_review_url\":\"https://10.0.0.1:6443\"",
         "needs bearer_token_file"},
        {",\"verify\":\"token_review\",\"token_review_url\":\"http://"
         "10.0.0.1:6443\",\"bearer_token_file\":\"/t\"",
         "plain http"},
        {REVIEW_ONLY ",\"token_review\":false", "oidc_issuers[0].token_review: false contradicts verify"},
        {REVIEW_ONLY ",\"verify\":\"token_review\"", "duplicate"},
        {",\"verify\":\"tokenreview\",\"jwks_file\":\"/x\"", "oidc_issuers[0].verify: must be \"jwks\" or"},
        {",\"verify\":true,\"jwks_file\":\"/x\"", "oidc_issuers[0].verify: must be a non-empty string"},
        {",\"verify\":\"\",\"jwks_file\":\"/x\"", "oidc_issuers[0].verify: must be a non-empty string"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(parse_issuer(cases[i].members), GERR_INVAL);
        if (strstr(errmsg, cases[i].msg) == NULL) {
            fail_msg("case %zu: \"%s\" does not say \"%s\"", i, errmsg, cases[i].msg);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(verify_token_review_is_accepted),
        cmocka_unit_test(verify_token_review_is_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
