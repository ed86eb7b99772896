/* The egress policies one replica holds in memory (docs/egress.md, "Policy on a replica"): the
 * gateway policy and each namespace's, with their resource versions, and the own policy of each
 * sandbox whose door this host holds, so the relay decides every
 * connection without a store round trip. Whoever follows the store (server/egress_policies.c in
 * gantryd, the test itself in tests) replaces entries; the relay reads them for every decision.
 *
 * egress_policy_cache_decide is the only way the relay decides: it runs api/rules/egress.h's
 * egress_intent_check and egress_decide (the function Egress.Decide answers with) over the cached
 * layers under the cache's lock, so a replacement applies to the very next decision.
 *
 * Memory: policies given to the setters are deep-copied; the cache frees its copies.
 * Thread-safe: every function may be called from any thread. */
#ifndef GANTRY_EGRESS_POLICY_CACHE_H
#define GANTRY_EGRESS_POLICY_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/rules/egress.h"
#include "gantry/v1/policies.pb-c.h"

struct egress_policy_cache;

/* A cache with no stored gateway policy (the built-in default applies) and no namespace policies.
 * 0 or GERR_NOMEM. */
int egress_policy_cache_new(struct egress_policy_cache **out);

/* Free the cache and its copies. NULL is fine. */
void egress_policy_cache_free(struct egress_policy_cache *c);

/* Replace the gateway policy (@p NULL: none stored, the built-in default applies) and its
 * @revision. 0 or GERR_NOMEM (the old entry stays). */
int egress_policy_cache_set_gateway(struct egress_policy_cache *c, const Gantry__V1__Policy *p,
                                    uint64_t revision);

/* Replace namespace @ns's policy (@p NULL: none stored) and its @revision. 0 or GERR_NOMEM (the old
 * entry stays). */
int egress_policy_cache_set_namespace(struct egress_policy_cache *c, const char *ns,
                                      const Gantry__V1__Policy *p, uint64_t revision);

/* Forget every namespace policy not in @keep[0..n) (namespaces deleted since the last refresh). */
void egress_policy_cache_retain(struct egress_policy_cache *c, const char *const *keep, size_t n);

/* Record sandbox @id's own policy (SandboxSpec.policy; @p NULL: it has none). A sandbox's policy is
 * fixed at create, so this is done once per sandbox; until it is, decisions for @id are refused
 * (egress_policy_cache_decide). 0 or GERR_NOMEM (nothing recorded). */
int egress_policy_cache_set_sandbox(struct egress_policy_cache *c, const char *id,
                                    const Gantry__V1__Policy *p);

/* Has sandbox @id's own policy been recorded (even as "none")? */
bool egress_policy_cache_has_sandbox(struct egress_policy_cache *c, const char *id);

/* Forget every sandbox policy whose id is not in @keep[0..n) (sandboxes gone from this host). */
void egress_policy_cache_retain_sandboxes(struct egress_policy_cache *c, const char *const *keep, size_t n);

/* Decide @in for a sandbox of namespace @ns whose id is @sandbox_id (NULL: decide by the gateway and
 * namespace layers only): egress_intent_check, then egress_decide over the cached layers, with
 * out->revision the deciding layer's revision (0 for the layer "sandbox"). An intent that fails the
 * check is refused: out->allowed false, out->layer "intent", the check's text in out->reason. A
 * @sandbox_id whose own policy is not recorded yet is refused with out->layer "sandbox" (never
 * decided looser than its policy). Never fails. */
void egress_policy_cache_decide(struct egress_policy_cache *c, const char *ns, const char *sandbox_id,
                                const struct egress_intent *in, struct egress_decision *out);

#endif
