/* api/rules/egress.h: the egress decision point over hand-made policies. The same function answers
 * Egress.Decide (tests/integration/test_resources_providers.py, Egress) and the relay. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "api/rules/egress.h"
#include "lib/err.h"

static Gantry__V1__Policy policy(char **allow, size_t n)
{
    Gantry__V1__Policy p = GANTRY__V1__POLICY__INIT;
    p.egress_allow = allow;
    p.n_egress_allow = n;
    return p;
}

static struct egress_decision decide(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n,
                                     const char *host, unsigned port, const char *sni)
{
    struct egress_intent in = {.transport = 2, .host = host, .port = port, .sni = sni};
    char why[256];
    assert_int_equal(egress_intent_check(&in, why, sizeof why), 0);
    struct egress_decision d;
    egress_decide(g, n, NULL, &in, &d);
    return d;
}

static void no_policy_allows_everything(void **state)
{
    (void)state;
    Gantry__V1__Policy g = policy(NULL, 0);
    struct egress_decision d = decide(&g, NULL, "example.com", 443, NULL);
    assert_true(d.allowed);
    assert_string_equal(d.layer, "default");
    assert_string_equal(d.rule, "");
}

static void each_layer_on_its_own(void **state)
{
    (void)state;
    char *ga[] = {"*.github.com:443", "pypi.org:*"}, *na[] = {"api.github.com:443"};
    Gantry__V1__Policy g = policy(ga, 2), n = policy(na, 1);
    struct egress_decision d = decide(&g, &n, "api.github.com", 443, NULL);
    assert_true(d.allowed);
    assert_string_equal(d.layer, "namespace");
    assert_string_equal(d.rule, "api.github.com:443");
    /* Allowed by the gateway, not by the namespace. */
    d = decide(&g, &n, "pypi.org", 443, NULL);
    assert_false(d.allowed);
    assert_string_equal(d.layer, "namespace");
    assert_string_equal(d.destination, "pypi.org");
    assert_non_null(strstr(d.reason, "namespace policy's egress_allow"));
    /* Refused by the gateway first. */
    d = decide(&g, &n, "evil.example", 443, NULL);
    assert_false(d.allowed);
    assert_string_equal(d.layer, "gateway");
    /* The wrong port. */
    d = decide(&g, NULL, "api.github.com", 22, NULL);
    assert_false(d.allowed);
    /* Only the gateway restricts: its entry is reported. */
    d = decide(&g, NULL, "pypi.org", 8080, NULL);
    assert_true(d.allowed);
    assert_string_equal(d.layer, "gateway");
    assert_string_equal(d.rule, "pypi.org:*");
}

static void every_name_must_be_allowed(void **state)
{
    (void)state;
    char *ga[] = {"api.github.com:443"};
    Gantry__V1__Policy g = policy(ga, 1);
    /* CONNECT to an allowed name, then a ClientHello for another one: refused. */
    struct egress_decision d = decide(&g, NULL, "api.github.com", 443, "evil.example");
    assert_false(d.allowed);
    assert_string_equal(d.destination, "evil.example");
    /* Names are compared normalised: case and one trailing dot. */
    d = decide(&g, NULL, "API.GitHub.com.", 443, "api.github.com");
    assert_true(d.allowed);
}

static void addresses_only_without_names(void **state)
{
    (void)state;
    char *ga[] = {"10.0.*:5432"};
    Gantry__V1__Policy g = policy(ga, 1);
    struct egress_intent in = {.transport = 1, .ip = "10.0.3.4", .port = 5432};
    struct egress_decision d;
    egress_decide(&g, NULL, NULL, &in, &d);
    assert_true(d.allowed);
    in.ip = "10.1.3.4";
    egress_decide(&g, NULL, NULL, &in, &d);
    assert_false(d.allowed);
    /* With a name, the name decides. */
    in.host = "db.internal";
    in.ip = "10.0.3.4";
    egress_decide(&g, NULL, NULL, &in, &d);
    assert_false(d.allowed);
    assert_string_equal(d.destination, "db.internal");
}

static void bad_intents(void **state)
{
    (void)state;
    char why[256];
    const struct {
        struct egress_intent in;
        const char *field;
    } cases[] = {
        {{.host = "a.example", .port = 0}, "intent.port"},
        {{.host = "a.example", .port = 70000}, "intent.port"},
        {{.port = 443}, "no destination"},
        {{.host = "a b.example", .port = 443}, "intent.host"},
        {{.host = "..", .port = 443}, "intent.host"},
        {{.sni = "x/y", .port = 443}, "intent.sni"},
        {{.ip = "10.0.0.999", .port = 443}, "intent.ip"},
        {{.host = "a.example", .port = 443, .transport = 99}, "intent.transport"},
        {{.ip = "10.0.0.1", .port = 53, .transport = 5}, "DNS"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        why[0] = '\0';
        assert_int_equal(egress_intent_check(&cases[i].in, why, sizeof why), GERR_INVAL);
        if (strstr(why, cases[i].field) == NULL) {
            fail_msg("case %zu: \"%s\" does not name %s", i, why, cases[i].field);
        }
    }
    char long_name[300];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    struct egress_intent in = {.host = long_name, .port = 443};
    assert_int_equal(egress_intent_check(&in, why, sizeof why), GERR_INVAL);
}

/* A DNS question names no port: port 0 asks whether any entry allows the name, in each layer. */
static void dns_question_any_port(void **state)
{
    (void)state;
    char *ga[] = {"*.github.com:443", "pypi.org:*"}, *na[] = {"api.github.com:443"};
    Gantry__V1__Policy g = policy(ga, 2), n = policy(na, 1);
    struct egress_intent in = {.transport = 5, .host = "api.github.com", .port = 0};
    char why[256];
    struct egress_decision d;
    assert_int_equal(egress_intent_check(&in, why, sizeof why), 0);
    egress_decide(&g, &n, NULL, &in, &d);
    assert_true(d.allowed);
    assert_string_equal(d.rule, "api.github.com:443");
    assert_non_null(strstr(d.reason, "api.github.com on any port"));
    in.host = "pypi.org";
    egress_decide(&g, &n, NULL, &in, &d);
    assert_false(d.allowed);
    assert_string_equal(d.layer, "namespace");
    assert_non_null(strstr(d.reason, "matches pypi.org on any port"));
    in.host = "evil.example";
    egress_decide(&g, &n, NULL, &in, &d);
    assert_false(d.allowed);
    assert_string_equal(d.layer, "gateway");
    /* Port 0 is a DNS question's only: any other transport still needs a port. */
    in.transport = 2;
    assert_int_equal(egress_intent_check(&in, why, sizeof why), GERR_INVAL);
    assert_non_null(strstr(why, "intent.port"));
}

/* Three layers (gateway, namespace, the sandbox's own): a table of intents, each with the layer
 * that decides and, when allowed, the entry that matched. */
static void three_layers(void **state)
{
    (void)state;
    char *ga[] = {"*.github.com:443", "pypi.org:*", "10.0.*:*"}, *na[] = {"*.github.com:443", "pypi.org:443"},
         *sa[] = {"api.github.com:443"};
    Gantry__V1__Policy g = policy(ga, 3), n = policy(na, 2), sb = policy(sa, 1), none = policy(NULL, 0);
    const struct {
        const Gantry__V1__Policy *g, *n, *s;
        const char *host, *ip, *sni;
        unsigned port;
        bool allowed;
        const char *layer, *rule;
    } rows[] = {
        /* Allowed by all three: the innermost restricting layer reports. */
        {&g, &n, &sb, "api.github.com", NULL, NULL, 443, true, "sandbox", "api.github.com:443"},
        /* Allowed by the namespace, refused by the sandbox. */
        {&g, &n, &sb, "raw.github.com", NULL, NULL, 443, false, "sandbox", ""},
        {&g, &n, &sb, "pypi.org", NULL, NULL, 443, false, "sandbox", ""},
        /* Refused by an outer layer first, whatever the sandbox says. */
        {&g, &n, &sb, "pypi.org", NULL, NULL, 80, false, "namespace", ""},
        {&g, &n, &sb, "evil.example", NULL, NULL, 443, false, "gateway", ""},
        /* Every name: an allowed CONNECT target with another SNI is refused by the sandbox. */
        {&g, &n, &sb, "api.github.com", NULL, "www.github.com", 443, false, "sandbox", ""},
        /* An address without a name, outside the sandbox's list. */
        {&g, NULL, &sb, NULL, "10.0.0.5", NULL, 22, false, "sandbox", ""},
        /* A sandbox with an empty list (or none) restricts nothing. */
        {&g, &n, &none, "raw.github.com", NULL, NULL, 443, true, "namespace", "*.github.com:443"},
        {&g, &n, NULL, "raw.github.com", NULL, NULL, 443, true, "namespace", "*.github.com:443"},
        /* Only the sandbox restricts. */
        {&none, NULL, &sb, "api.github.com", NULL, NULL, 443, true, "sandbox", "api.github.com:443"},
        {&none, NULL, &sb, "example.com", NULL, NULL, 443, false, "sandbox", ""},
        {&none, NULL, &none, "example.com", NULL, NULL, 443, true, "default", ""},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct egress_intent in = {
            .transport = 2, .host = rows[i].host, .ip = rows[i].ip, .port = rows[i].port, .sni = rows[i].sni};
        char why[256];
        assert_int_equal(egress_intent_check(&in, why, sizeof why), 0);
        struct egress_decision d;
        egress_decide(rows[i].g, rows[i].n, rows[i].s, &in, &d);
        if (d.allowed != rows[i].allowed || strcmp(d.layer, rows[i].layer) != 0 ||
            strcmp(d.rule, rows[i].rule) != 0) {
            fail_msg("row %zu: allowed %d layer %s rule \"%s\" (%s)", i, d.allowed, d.layer, d.rule,
                     d.reason);
        }
        if (!d.allowed && strcmp(d.layer, "sandbox") == 0 &&
            strstr(d.reason, "sandbox policy's egress_allow") == NULL) {
            fail_msg("row %zu: %s", i, d.reason);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dns_question_any_port),
        cmocka_unit_test(no_policy_allows_everything),
        cmocka_unit_test(each_layer_on_its_own),
        cmocka_unit_test(every_name_must_be_allowed),
        cmocka_unit_test(addresses_only_without_names),
        cmocka_unit_test(bad_intents),
        cmocka_unit_test(three_layers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
