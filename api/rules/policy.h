/* Decisions over gantry.v1 policies as pure functions: no store, no clock, no I/O. The policies
 * service (api/services/policies_svc.c) loads the stored policies and calls these; the sandbox
 * service calls the enforcement. The semantics of each field, tightening and the effective policy
 * are described in api/services/policies_svc.h.
 *
 * Memory: functions read the messages they are given and keep no reference; @why and @also are
 * caller buffers, always NUL-terminated. */
#ifndef GANTRY_API_RULES_POLICY_H
#define GANTRY_API_RULES_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/authz/authz.h"
#include "gantry/v1/policies.pb-c.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "lib/err.h"

/* The annotation GetEffective sets when both lists of a field apply. */
#define POLICY_ALSO_ENFORCED "gantry.io/also-enforced"

/* The built-in gateway policy (everything allowed, shares and exec shares on), heap-allocated;
 * free with policy_rules_free. NULL only if protobuf-c could not allocate. */
Gantry__V1__Policy *policy_rules_default(void);

/* Free a policy from policy_rules_default or from gantry__v1__policy__unpack. NULL is fine. */
void policy_rules_free(Gantry__V1__Policy *p);

/* Is @p a well-formed policy (entry counts, pattern syntax, ranges)? true, or false with the
 * reason (the INVALID_ARGUMENT message) in @why. @p may be NULL ("policy is required"). */
bool policy_rules_validate(const Gantry__V1__Policy *p, char *why, size_t len);

/* The fields of a namespace policy @n that allow more than the gateway's @g: their names
 * (@names, "" when @n only tightens) and why, field by field (@why). */
struct policy_looser {
    char names[256];
    char why[GERR_MSG_SIZE];
};
void policy_rules_loosening(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n,
                            struct policy_looser *l);

/* The "service_account" member of a driver_config entry @value (JSON object text), copied into
 * @out (@len bytes; "" when there is none). GERR_INVAL when it is there but is not a string
 * naming a ServiceAccount (authz_sa_name_ok) that fits @out. @value need not be valid JSON. */
int policy_rules_sa_of(const char *value, char *out, size_t len);

/* May a sandbox of @spec run in namespace @ns on @driver (NULL or "": not checked) under the
 * gateway policy @g and the namespace policy @n (NULL: none)? 0; GERR_REFUSED with @why naming
 * every violated field and the policy that forbids it (a driver_config "service_account" must be
 * on allowed_service_accounts of @g and of @n when there is one, and is never AUTHZ_SA_GATEWAY);
 * GERR_INVAL when a driver_config value is not a JSON object or its service_account is not a
 * ServiceAccount name. A lifetime of 0 passes (the caller caps it, policy_rules_cap_lifetime). */
int policy_rules_check_sandbox(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n, const char *ns,
                               const Gantry__V1__SandboxSpec *spec, const char *driver, char *why,
                               size_t len);

/* Is @s, a sandbox's own policy (SandboxSpec.policy; NULL: none, 0), one it may carry under the
 * gateway policy @g and the namespace policy @n (NULL: none)? 0; GERR_INVAL with @why naming the
 * field when a field other than egress_allow is set or an entry is malformed (policy_rules_validate);
 * GERR_REFUSED with @why naming the first entry of @s's egress_allow that lies outside a layer that
 * restricts egress (tighten-only: each entry must be covered by an entry of @g and of @n when they
 * have any). An empty egress_allow restricts nothing and passes. */
int policy_rules_check_sandbox_policy(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n,
                                      const Gantry__V1__Policy *s, char *why, size_t len);

/* @lifetime_s lowered to the smaller nonzero max_lifetime_seconds of @g and @n (either may be NULL). */
uint64_t policy_rules_cap_lifetime(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n,
                                   uint64_t lifetime_s);

/* May a share (an exec share when @exec) be created under the gateway policy @g and the namespace
 * policy @n (NULL: none)? true, or false with the policy that forbids it in *@by ("the gateway
 * policy", "the namespace policy") and the field in *@field ("allow_shares", "allow_exec_shares").
 * Existing shares stay when a policy later forbids new ones. */
bool policy_rules_share_allowed(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n, bool exec,
                                const char **by, const char **field);

/* The first egress_allow entry of @p (NULL: none stored) that matches @host:@port; "" when @p
 * restricts nothing (no policy, or an empty list); NULL when it refuses. @host is matched as given
 * (api/rules/egress.h normalises it first). @port 0 matches an entry of any port (a DNS question,
 * which names no port). */
const char *policy_rules_egress_match(const Gantry__V1__Policy *p, const char *host, unsigned port);

/* May a sandbox open a connection to @host:@port under both policies (@ns_policy may be NULL)? */
bool policy_rules_egress_allowed(const Gantry__V1__Policy *gateway, const Gantry__V1__Policy *ns_policy,
                                 const char *host, unsigned port);

/* @e = @g tightened by @n (may be NULL), field by field; @e's lists point into @g and @n, and its
 * meta is NULL. @also gets the comma-separated fields where neither list lies within the other
 * (both apply). */
void policy_rules_effective(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n, Gantry__V1__Policy *e,
                            char *also, size_t len);

#endif
