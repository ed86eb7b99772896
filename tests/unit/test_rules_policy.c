/* Unit tests for the policy decisions (api/rules/policy.h): validation, tightening, enforcement,
 * shares, egress and the effective policy, without a store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api/rules/policy.h"

static Gantry__V1__Policy pol(void)
{
    Gantry__V1__Policy p = GANTRY__V1__POLICY__INIT;
    p.allow_shares = true;
    p.allow_exec_shares = true;
    return p;
}

static Gantry__V1__SandboxSpec spec(const char *image, unsigned gpus, uint64_t lifetime)
{
    Gantry__V1__SandboxSpec s = GANTRY__V1__SANDBOX_SPEC__INIT;
    s.image = (char *)image;
    s.gpu_count = gpus;
    s.lifetime_seconds = lifetime;
    return s;
}

static void test_validate(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    assert_false(policy_rules_validate(NULL, why, sizeof why));
    assert_string_equal(why, "policy is required");

    Gantry__V1__Policy p = pol();
    assert_true(policy_rules_validate(&p, why, sizeof why));

    char *bad_egress[] = {"api.example.com:443", "Bad Host:80"};
    p.egress_allow = bad_egress;
    p.n_egress_allow = 2;
    assert_false(policy_rules_validate(&p, why, sizeof why));
    assert_non_null(strstr(why, "policy.egress_allow[1] \"Bad Host:80\" is not \"host:port\""));

    char *ports[] = {"a.example.com:0", "a.example.com:2-1", "a.example.com:70000", "a.example.com:x"};
    for (size_t i = 0; i < 4; i++) {
        p.egress_allow = &ports[i];
        p.n_egress_allow = 1;
        assert_false(policy_rules_validate(&p, why, sizeof why));
    }
    char *good[] = {"*.example.com:*", "10.0.0.1:8000-8080"};
    p.egress_allow = good;
    p.n_egress_allow = 2;
    assert_true(policy_rules_validate(&p, why, sizeof why));

    char *drivers[] = {"Process"};
    p.allowed_drivers = drivers;
    p.n_allowed_drivers = 1;
    assert_false(policy_rules_validate(&p, why, sizeof why));
    assert_non_null(strstr(why, "a driver name of a-z"));
    p.n_allowed_drivers = 0;

    char *many[65];
    for (size_t i = 0; i < 65; i++) {
        many[i] = "img/*";
    }
    p.allowed_images = many;
    p.n_allowed_images = 65;
    assert_false(policy_rules_validate(&p, why, sizeof why));
    assert_string_equal(why, "policy.allowed_images: at most 64 entries");
    p.n_allowed_images = 0;

    p.max_lifetime_seconds = UINT64_MAX;
    assert_false(policy_rules_validate(&p, why, sizeof why));
    assert_string_equal(why, "policy.max_lifetime_seconds is out of range");
}

static void test_tightening(void **state)
{
    (void)state;
    struct policy_looser l;
    Gantry__V1__Policy g = pol(), n = pol();
    /* Against the built-in default (empty lists, no maxima), anything tightens. */
    char *imgs[] = {"docker.io/x"};
    n.allowed_images = imgs;
    n.n_allowed_images = 1;
    n.max_lifetime_seconds = 10;
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.names, "");

    char *gimgs[] = {"registry.io/*"};
    g.allowed_images = gimgs;
    g.n_allowed_images = 1;
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.names, "allowed_images");
    assert_non_null(strstr(l.why, "\"docker.io/x\" is outside the gateway's"));

    char *narrower[] = {"registry.io/team/*", "registry.io/x"};
    n.allowed_images = narrower;
    n.n_allowed_images = 2;
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.names, "");

    /* An empty list allows any image: looser than a non-empty one. */
    n.n_allowed_images = 0;
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.names, "allowed_images");
    assert_non_null(strstr(l.why, "empty = any, the gateway's has 1"));
    n.n_allowed_images = 1;

    /* Maxima, flags and every loosening field named together. */
    g.max_lifetime_seconds = 3600;
    n.max_lifetime_seconds = 0;
    g.deny_gpus = true;
    g.allow_exec_shares = false;
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.names, "max_lifetime_seconds, deny_gpus, allow_exec_shares");
    assert_non_null(strstr(l.why, "max_lifetime_seconds: unlimited > 3600"));
    n.max_lifetime_seconds = 7200;
    n.deny_gpus = true;
    n.allow_exec_shares = false;
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.names, "max_lifetime_seconds");
    assert_non_null(strstr(l.why, "7200 > 3600"));
    n.max_lifetime_seconds = 60;
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.names, "");

    /* Egress: host coverage and port-range containment. */
    char *ge[] = {"api.example.com:443"}, *wide[] = {"api.example.com:1-1000"},
         *same[] = {"api.example.com:443"};
    g.egress_allow = ge;
    g.n_egress_allow = 1;
    n.egress_allow = wide;
    n.n_egress_allow = 1;
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.names, "egress_allow");
    n.egress_allow = same;
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.names, "");
}

static void test_enforcement(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    Gantry__V1__Policy g = pol(), n = pol();
    Gantry__V1__SandboxSpec s = spec("docker.io/busybox", 0, 0);
    assert_int_equal(policy_rules_check_sandbox(&g, NULL, "team-a", &s, "process", why, sizeof why), 0);
    assert_string_equal(why, "");

    char *imgs[] = {"registry.io/*"};
    g.allowed_images = imgs;
    g.n_allowed_images = 1;
    char *drivers[] = {"kubernetes"};
    n.allowed_drivers = drivers;
    n.n_allowed_drivers = 1;
    n.deny_gpus = true;
    s.gpu_count = 2;
    assert_int_equal(policy_rules_check_sandbox(&g, &n, "team-a", &s, "process", why, sizeof why),
                     GERR_REFUSED);
    assert_string_equal(
        why, "the sandbox violates the gateway policy (allowed_images) and the policy of namespace "
             "\"team-a\" (deny_gpus, allowed_drivers): image \"docker.io/busybox\" matches no "
             "allowed pattern; gpu_count 2: GPUs are denied; driver \"process\" is not allowed");
    /* No driver named: allowed_drivers is not checked. */
    s.gpu_count = 0;
    s.image = "registry.io/busybox";
    assert_int_equal(policy_rules_check_sandbox(&g, &n, "team-a", &s, NULL, why, sizeof why), 0);

    /* A lifetime of 0 passes (the caller caps it); an explicit one over the maximum does not. */
    g.max_lifetime_seconds = 600;
    assert_int_equal(policy_rules_check_sandbox(&g, &n, "team-a", &s, NULL, why, sizeof why), 0);
    s.lifetime_seconds = 601;
    assert_int_equal(policy_rules_check_sandbox(&g, &n, "team-a", &s, NULL, why, sizeof why), GERR_REFUSED);
    assert_non_null(strstr(why, "lifetime_seconds 601 > 600"));
    s.lifetime_seconds = 0;

    /* driver_config keys by glob over "<driver>.<key>". */
    char *keys[] = {"kubernetes.runtime_class"};
    g.allowed_driver_config_keys = keys;
    g.n_allowed_driver_config_keys = 1;
    Gantry__V1__SandboxSpec__DriverConfigEntry e = GANTRY__V1__SANDBOX_SPEC__DRIVER_CONFIG_ENTRY__INIT;
    Gantry__V1__SandboxSpec__DriverConfigEntry *ep[] = {&e};
    e.key = "kubernetes";
    e.value = "{\"runtime_class\":\"gvisor\",\"node_selector\":{}}";
    s.driver_config = ep;
    s.n_driver_config = 1;
    assert_int_equal(policy_rules_check_sandbox(&g, NULL, "team-a", &s, NULL, why, sizeof why), GERR_REFUSED);
    assert_non_null(strstr(why, "driver_config key \"kubernetes.node_selector\" is not allowed"));
    e.value = "[1]";
    assert_int_equal(policy_rules_check_sandbox(&g, NULL, "team-a", &s, NULL, why, sizeof why), GERR_INVAL);
    assert_string_equal(why, "driver_config[\"kubernetes\"] is not a JSON object");
}

static void test_lifetime_shares_egress(void **state)
{
    (void)state;
    Gantry__V1__Policy g = pol(), n = pol();
    assert_int_equal(policy_rules_cap_lifetime(NULL, NULL, 86400), 86400);
    g.max_lifetime_seconds = 7200;
    n.max_lifetime_seconds = 3600;
    assert_int_equal(policy_rules_cap_lifetime(&g, NULL, 86400), 7200);
    assert_int_equal(policy_rules_cap_lifetime(&g, &n, 86400), 3600);
    assert_int_equal(policy_rules_cap_lifetime(&g, &n, 60), 60);

    const char *by, *field;
    assert_true(policy_rules_share_allowed(&g, NULL, true, &by, &field));
    n.allow_exec_shares = false;
    assert_true(policy_rules_share_allowed(&g, &n, false, &by, &field));
    assert_false(policy_rules_share_allowed(&g, &n, true, &by, &field));
    assert_string_equal(by, "the namespace policy");
    assert_string_equal(field, "allow_exec_shares");
    g.allow_shares = false;
    assert_false(policy_rules_share_allowed(&g, &n, true, &by, &field));
    assert_string_equal(by, "the gateway policy");
    assert_string_equal(field, "allow_shares");

    char *ge[] = {"*.example.com:443", "10.0.0.1:8000-8080"}, *ne[] = {"api.example.com:*"};
    g.egress_allow = ge;
    g.n_egress_allow = 2;
    assert_true(policy_rules_egress_allowed(&g, NULL, "api.example.com", 443));
    assert_false(policy_rules_egress_allowed(&g, NULL, "api.example.com", 80));
    assert_true(policy_rules_egress_allowed(&g, NULL, "10.0.0.1", 8080));
    assert_false(policy_rules_egress_allowed(&g, NULL, "10.0.0.1", 8081));
    n.egress_allow = ne;
    n.n_egress_allow = 1;
    assert_true(policy_rules_egress_allowed(&g, &n, "api.example.com", 443));
    assert_false(policy_rules_egress_allowed(&g, &n, "www.example.com", 443));
    assert_true(policy_rules_egress_allowed(NULL, NULL, "anything", 1));
}

static void test_effective(void **state)
{
    (void)state;
    char also[128];
    Gantry__V1__Policy g = pol(), n = pol(), e;
    char *gi[] = {"registry.io/*"}, *ni[] = {"registry.io/team/*"};
    char *gd[] = {"process"}, *nd[] = {"kubernetes"};
    g.allowed_images = gi;
    g.n_allowed_images = 1;
    n.allowed_images = ni;
    n.n_allowed_images = 1;
    g.allowed_drivers = gd;
    g.n_allowed_drivers = 1;
    n.allowed_drivers = nd;
    n.n_allowed_drivers = 1;
    g.max_gpus_per_sandbox = 4;
    n.max_gpus_per_sandbox = 0;
    g.max_lifetime_seconds = 0;
    n.max_lifetime_seconds = 60;
    n.deny_gpus = true;
    n.allow_shares = false;
    policy_rules_effective(&g, &n, &e, also, sizeof also);
    assert_int_equal(e.n_allowed_images, 1);
    assert_string_equal(e.allowed_images[0], "registry.io/team/*");
    assert_string_equal(e.allowed_drivers[0], "process"); /* neither within the other: the gateway's */
    assert_string_equal(also, "allowed_drivers");
    assert_int_equal(e.max_gpus_per_sandbox, 4);
    assert_int_equal(e.max_lifetime_seconds, 60);
    assert_true(e.deny_gpus);
    assert_false(e.allow_shares);
    assert_true(e.allow_exec_shares);
    assert_null(e.meta);

    policy_rules_effective(&g, NULL, &e, also, sizeof also);
    assert_string_equal(also, "");
    assert_string_equal(e.allowed_images[0], "registry.io/*");

    Gantry__V1__Policy *d = policy_rules_default();
    assert_non_null(d);
    assert_true(d->allow_shares && d->allow_exec_shares);
    assert_int_equal(d->n_allowed_images, 0);
    policy_rules_free(d);
    policy_rules_free(NULL);
}

/* A spec whose kubernetes driver_config names ServiceAccount @sa (@value overrides the JSON). */
struct sa_spec {
    Gantry__V1__SandboxSpec s;
    Gantry__V1__SandboxSpec__DriverConfigEntry e;
    Gantry__V1__SandboxSpec__DriverConfigEntry *ep[1];
    char json[400];
};

static void sa_spec_init(struct sa_spec *x, const char *sa)
{
    x->s = spec("registry.io/busybox", 0, 0);
    x->e = (Gantry__V1__SandboxSpec__DriverConfigEntry)GANTRY__V1__SANDBOX_SPEC__DRIVER_CONFIG_ENTRY__INIT;
    x->ep[0] = &x->e;
    snprintf(x->json, sizeof x->json, "{\"service_account\":\"%s\"}", sa);
    x->e.key = "kubernetes";
    x->e.value = x->json;
    x->s.driver_config = x->ep;
    x->s.n_driver_config = 1;
}

static void test_sa_validate(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    Gantry__V1__Policy p = pol();
    char *good[] = {"runner", "ci.runner-2", "a"};
    p.allowed_service_accounts = good;
    p.n_allowed_service_accounts = 3;
    assert_true(policy_rules_validate(&p, why, sizeof why));

    char long_label[70], long_name[260];
    memset(long_label, 'a', 64);
    long_label[64] = '\0';
    for (size_t i = 0; i < 254; i++) {
        long_name[i] = i % 50 == 49 ? '.' : 'b';
    }
    long_name[254] = '\0';
    char *bad[] = {"",   "Runner", "-runner", "runner-", "run_ner",  "a..b",
                   ".a", "a.",     "run ner", "a/b",     long_label, long_name};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p.allowed_service_accounts = &bad[i];
        p.n_allowed_service_accounts = 1;
        assert_false(policy_rules_validate(&p, why, sizeof why));
        assert_non_null(strstr(why, "policy.allowed_service_accounts[0]"));
        assert_non_null(strstr(why, "is not a ServiceAccount name"));
    }
    /* 253 characters in labels of at most 63 is fine. */
    char max_name[254];
    for (size_t i = 0; i < 253; i++) {
        max_name[i] = i % 60 == 59 ? '.' : 'c';
    }
    max_name[253] = '\0';
    char *maxp[] = {max_name};
    p.allowed_service_accounts = maxp;
    assert_true(policy_rules_validate(&p, why, sizeof why));

    /* The gateway's own ServiceAccount, never. */
    char *own[] = {"runner", "gantry"};
    p.allowed_service_accounts = own;
    p.n_allowed_service_accounts = 2;
    assert_false(policy_rules_validate(&p, why, sizeof why));
    assert_string_equal(
        why, "policy.allowed_service_accounts[1] \"gantry\" is the gateway's own ServiceAccount: never "
             "allowed");

    char *many[65];
    for (size_t i = 0; i < 65; i++) {
        many[i] = "runner";
    }
    p.allowed_service_accounts = many;
    p.n_allowed_service_accounts = 65;
    assert_false(policy_rules_validate(&p, why, sizeof why));
    assert_string_equal(why, "policy.allowed_service_accounts: at most 64 entries");
    p.n_allowed_service_accounts = 64;
    assert_true(policy_rules_validate(&p, why, sizeof why));
}

static void test_sa_tightening(void **state)
{
    (void)state;
    Gantry__V1__Policy g = pol(), n = pol();
    struct policy_looser l;
    /* Empty is none: an empty namespace list is within anything, even an empty gateway list. */
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.names, "");
    char *ns_list[] = {"runner"};
    n.allowed_service_accounts = ns_list;
    n.n_allowed_service_accounts = 1;
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.names, "allowed_service_accounts");
    assert_string_equal(l.why,
                        "allowed_service_accounts: \"runner\" is not in the gateway's list (empty: none)");

    char *gw_list[] = {"builder", "runner"};
    g.allowed_service_accounts = gw_list;
    g.n_allowed_service_accounts = 2;
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.names, "");
    n.n_allowed_service_accounts = 0;
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.names, "");

    /* Exact names: no glob widens anything. */
    char *wider[] = {"runner", "other"};
    n.allowed_service_accounts = wider;
    n.n_allowed_service_accounts = 2;
    policy_rules_loosening(&g, &n, &l);
    assert_string_equal(l.why, "allowed_service_accounts: \"other\" is not in the gateway's list");
}

static void test_sa_enforcement(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    Gantry__V1__Policy g = pol(), n = pol();
    struct sa_spec x;
    sa_spec_init(&x, "runner");

    /* The built-in default (and any policy without the list) allows no service account. */
    Gantry__V1__Policy *d = policy_rules_default();
    assert_int_equal(policy_rules_check_sandbox(d, NULL, "team-a", &x.s, NULL, why, sizeof why),
                     GERR_REFUSED);
    assert_string_equal(why,
                        "the sandbox violates the gateway policy (allowed_service_accounts): driver_config "
                        "service_account \"runner\" is not in allowed_service_accounts (empty: none)");
    policy_rules_free(d);

    /* The gateway lists it; no namespace policy: it inherits the gateway's list. */
    char *gw_list[] = {"builder", "runner"};
    g.allowed_service_accounts = gw_list;
    g.n_allowed_service_accounts = 2;
    assert_int_equal(policy_rules_check_sandbox(&g, NULL, "team-a", &x.s, NULL, why, sizeof why), 0);

    /* A namespace policy narrows it: its own list applies as well (empty: none). */
    assert_int_equal(policy_rules_check_sandbox(&g, &n, "team-a", &x.s, NULL, why, sizeof why), GERR_REFUSED);
    assert_string_equal(why,
                        "the sandbox violates the policy of namespace \"team-a\" (allowed_service_accounts): "
                        "driver_config service_account \"runner\" is not in allowed_service_accounts "
                        "(empty: none)");
    char *ns_list[] = {"runner"};
    n.allowed_service_accounts = ns_list;
    n.n_allowed_service_accounts = 1;
    assert_int_equal(policy_rules_check_sandbox(&g, &n, "team-a", &x.s, NULL, why, sizeof why), 0);
    sa_spec_init(&x, "builder");
    assert_int_equal(policy_rules_check_sandbox(&g, &n, "team-a", &x.s, NULL, why, sizeof why), GERR_REFUSED);
    assert_non_null(strstr(why, "namespace \"team-a\" (allowed_service_accounts)"));

    /* A gateway tightened below the namespace's list still applies (both are checked). */
    sa_spec_init(&x, "runner");
    g.n_allowed_service_accounts = 1; /* "builder" only */
    assert_int_equal(policy_rules_check_sandbox(&g, &n, "team-a", &x.s, NULL, why, sizeof why), GERR_REFUSED);
    assert_non_null(strstr(why, "the gateway policy (allowed_service_accounts)"));

    /* The gateway's own ServiceAccount, whatever the lists say. */
    char *own[] = {"gantry"};
    g.allowed_service_accounts = own;
    n.allowed_service_accounts = own;
    sa_spec_init(&x, "gantry");
    assert_int_equal(policy_rules_check_sandbox(&g, &n, "team-a", &x.s, NULL, why, sizeof why), GERR_REFUSED);
    assert_non_null(strstr(why, "\"gantry\" is the gateway's own ServiceAccount: never allowed"));

    /* Malformed: not a string, not a name. */
    const char *bad[] = {"{\"service_account\":7}", "{\"service_account\":\"Bad_Name\"}",
                         "{\"service_account\":\"\"}"};
    for (size_t i = 0; i < 3; i++) {
        x.e.value = (char *)bad[i];
        assert_int_equal(policy_rules_check_sandbox(&g, &n, "team-a", &x.s, NULL, why, sizeof why),
                         GERR_INVAL);
        assert_string_equal(why,
                            "driver_config[\"kubernetes\"].service_account is not a ServiceAccount name (a "
                            "DNS-1123 subdomain: at most 253 characters of a-z, 0-9, '-' and '.')");
    }
    /* No service_account at all: nothing to check. */
    x.e.value = "{\"runtime_class\":\"gvisor\"}";
    assert_int_equal(policy_rules_check_sandbox(&g, &n, "team-a", &x.s, NULL, why, sizeof why), 0);

    char out[8];
    assert_int_equal(policy_rules_sa_of("{\"service_account\":\"runner\"}", out, sizeof out), 0);
    assert_string_equal(out, "runner");
    assert_int_equal(policy_rules_sa_of("{\"service_account\":\"runner-two\"}", out, sizeof out), GERR_INVAL);
    assert_int_equal(policy_rules_sa_of("not json", out, sizeof out), 0);
    assert_string_equal(out, "");
}

static void test_sa_effective(void **state)
{
    (void)state;
    char also[128];
    Gantry__V1__Policy g = pol(), n = pol(), e;
    char *gw_list[] = {"builder", "runner"}, *ns_list[] = {"runner"}, *other[] = {"other"};
    g.allowed_service_accounts = gw_list;
    g.n_allowed_service_accounts = 2;
    /* No namespace policy: the gateway's list. */
    policy_rules_effective(&g, NULL, &e, also, sizeof also);
    assert_int_equal(e.n_allowed_service_accounts, 2);
    /* A namespace policy without the list: none. */
    policy_rules_effective(&g, &n, &e, also, sizeof also);
    assert_int_equal(e.n_allowed_service_accounts, 0);
    assert_string_equal(also, "");
    n.allowed_service_accounts = ns_list;
    n.n_allowed_service_accounts = 1;
    policy_rules_effective(&g, &n, &e, also, sizeof also);
    assert_int_equal(e.n_allowed_service_accounts, 1);
    assert_string_equal(e.allowed_service_accounts[0], "runner");
    /* The gateway tightened below the namespace: the gateway's. */
    g.n_allowed_service_accounts = 0;
    policy_rules_effective(&g, &n, &e, also, sizeof also);
    assert_int_equal(e.n_allowed_service_accounts, 0);
    assert_string_equal(also, "");
    /* Neither within the other: the gateway's, and both enforced. */
    g.allowed_service_accounts = other;
    g.n_allowed_service_accounts = 1;
    policy_rules_effective(&g, &n, &e, also, sizeof also);
    assert_string_equal(e.allowed_service_accounts[0], "other");
    assert_string_equal(also, "allowed_service_accounts");
}

/* A sandbox's own policy: only egress_allow, well-formed, and within both layers. */
static void test_sandbox_policy(void **state)
{
    (void)state;
    char why[GERR_MSG_SIZE];
    Gantry__V1__Policy g = pol(), n = pol(), s = GANTRY__V1__POLICY__INIT;
    char *ga[] = {"*.github.com:443", "pypi.org:*"}, *na[] = {"*.github.com:443"};
    g.egress_allow = ga, g.n_egress_allow = 2;
    n.egress_allow = na, n.n_egress_allow = 1;
    assert_int_equal(policy_rules_check_sandbox_policy(&g, &n, NULL, why, sizeof why), 0);
    /* Tighter than both. */
    char *ok[] = {"api.github.com:443"};
    s.egress_allow = ok, s.n_egress_allow = 1;
    assert_int_equal(policy_rules_check_sandbox_policy(&g, &n, &s, why, sizeof why), 0);
    /* Within the gateway's, outside the namespace's: refused, naming the entry and the layer. */
    char *wide_ns[] = {"api.github.com:443", "pypi.org:443"};
    s.egress_allow = wide_ns, s.n_egress_allow = 2;
    assert_int_equal(policy_rules_check_sandbox_policy(&g, &n, &s, why, sizeof why), GERR_REFUSED);
    assert_non_null(strstr(why, "\"pypi.org:443\" is outside the namespace policy's egress_allow"));
    /* Without a namespace policy, the gateway's alone. */
    assert_int_equal(policy_rules_check_sandbox_policy(&g, NULL, &s, why, sizeof why), 0);
    char *wide_gw[] = {"example.com:443"};
    s.egress_allow = wide_gw, s.n_egress_allow = 1;
    assert_int_equal(policy_rules_check_sandbox_policy(&g, NULL, &s, why, sizeof why), GERR_REFUSED);
    assert_non_null(strstr(why, "\"example.com:443\" is outside the gateway policy's egress_allow"));
    /* Any port is wider than 443. */
    char *any_port[] = {"api.github.com:*"};
    s.egress_allow = any_port;
    assert_int_equal(policy_rules_check_sandbox_policy(&g, &n, &s, why, sizeof why), GERR_REFUSED);
    /* Layers that restrict nothing accept any list; an empty list restricts nothing. */
    Gantry__V1__Policy open = pol();
    assert_int_equal(policy_rules_check_sandbox_policy(&open, NULL, &s, why, sizeof why), 0);
    s.n_egress_allow = 0;
    assert_int_equal(policy_rules_check_sandbox_policy(&g, &n, &s, why, sizeof why), 0);
    /* Malformed entries and other fields: INVALID. */
    char *bad[] = {"api.github.com:99999"};
    s.egress_allow = bad, s.n_egress_allow = 1;
    assert_int_equal(policy_rules_check_sandbox_policy(&g, &n, &s, why, sizeof why), GERR_INVAL);
    assert_non_null(strstr(why, "sandbox.spec.policy.egress_allow[0] \"api.github.com:99999\""));
    s.egress_allow = ok;
    s.max_lifetime_seconds = 60;
    assert_int_equal(policy_rules_check_sandbox_policy(&g, &n, &s, why, sizeof why), GERR_INVAL);
    assert_non_null(strstr(why, "sandbox.spec.policy.max_lifetime_seconds"));
    s.max_lifetime_seconds = 0;
    s.allow_shares = true;
    assert_int_equal(policy_rules_check_sandbox_policy(&g, &n, &s, why, sizeof why), GERR_INVAL);
    assert_non_null(strstr(why, "allow_shares"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate),      cmocka_unit_test(test_tightening),
        cmocka_unit_test(test_enforcement),   cmocka_unit_test(test_lifetime_shares_egress),
        cmocka_unit_test(test_effective),     cmocka_unit_test(test_sa_validate),
        cmocka_unit_test(test_sa_tightening), cmocka_unit_test(test_sa_enforcement),
        cmocka_unit_test(test_sa_effective),  cmocka_unit_test(test_sandbox_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
