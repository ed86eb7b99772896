/* libFuzzer harness for what Sandboxes.Create reads of a caller's SandboxSpec beyond the existing
 * checks: its own policy (api/rules/policy.h policy_rules_check_sandbox_policy), whether it asks
 * for the host's network (api/rules/sandbox.h sandbox_rules_host_network, a JSON parse of each
 * driver_config value), and the three-layer decision over an admitted policy (api/rules/egress.h).
 * The input is a packed gantry.v1.SandboxSpec, as a Create request carries it.
 *
 * Promises checked (abort() on a broken one): the check answers 0, GERR_INVAL or GERR_REFUSED with
 * a NUL-terminated message that is not empty on a refusal; an admitted policy never allows what the
 * gateway and namespace layers alone refuse (tighten-only), for intents made of its own entries'
 * hosts and a few fixed ones. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/rules/egress.h"
#include "api/rules/policy.h"
#include "api/rules/sandbox.h"
#include "lib/err.h"

static char *g_allow[] = {"*.github.com:443", "pypi.org:*", "10.0.*:*"};
static char *n_allow[] = {"*.github.com:443", "10.0.1.*:5432"};

static void decide_both(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n, const Gantry__V1__Policy *s,
                        const char *host, unsigned port)
{
    struct egress_intent in = {.transport = 2, .port = port};
    if (host[0] != '\0' && strspn(host, "0123456789.") == strlen(host)) {
        in.ip = host; /* an address-looking host: asked as an address */
    } else {
        in.host = host;
    }
    char why[256];
    if (egress_intent_check(&in, why, sizeof why) != 0) {
        return;
    }
    struct egress_decision three, two;
    egress_decide(g, n, s, &in, &three);
    egress_decide(g, n, NULL, &in, &two);
    if (three.allowed && !two.allowed) {
        abort();
    }
    if (three.layer == NULL || strnlen(three.reason, sizeof three.reason) == sizeof three.reason) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Gantry__V1__SandboxSpec *spec = gantry__v1__sandbox_spec__unpack(NULL, size, data);
    if (spec == NULL) {
        return 0;
    }
    (void)sandbox_rules_host_network(spec);
    Gantry__V1__Policy g = GANTRY__V1__POLICY__INIT, n = GANTRY__V1__POLICY__INIT;
    g.egress_allow = g_allow, g.n_egress_allow = 3;
    n.egress_allow = n_allow, n.n_egress_allow = 2;
    char why[GERR_MSG_SIZE];
    int rv = policy_rules_check_sandbox_policy(&g, &n, spec->policy, why, sizeof why);
    if (rv != 0 && rv != GERR_INVAL && rv != GERR_REFUSED) {
        abort();
    }
    if (strnlen(why, sizeof why) == sizeof why || (rv != 0 && why[0] == '\0')) {
        abort();
    }
    if (rv == 0 && spec->policy != NULL) {
        static const char *const fixed[] = {"api.github.com", "pypi.org", "evil.example", "10.0.1.7"};
        for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
            decide_both(&g, &n, spec->policy, fixed[i], 443);
            decide_both(&g, &n, spec->policy, fixed[i], 5432);
        }
        for (size_t i = 0; i < spec->policy->n_egress_allow && i < 8; i++) {
            char host[300];
            const char *e = spec->policy->egress_allow[i];
            const char *colon = strrchr(e, ':');
            size_t len = colon != NULL ? (size_t)(colon - e) : strlen(e);
            if (len >= sizeof host) {
                continue;
            }
            memcpy(host, e, len);
            host[len] = '\0';
            for (char *p = host; *p != '\0'; p++) {
                *p = *p == '*' || *p == '?' ? 'a' : *p; /* a name the glob matches */
            }
            decide_both(&g, &n, spec->policy, host, 443);
        }
    }
    gantry__v1__sandbox_spec__free_unpacked(spec, NULL);
    return 0;
}
