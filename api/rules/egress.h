/* The egress decision point (docs/egress.md): one function that says whether a sandbox may open one
 * outbound connection, used by Egress.Decide and by every adapter of the egress relay, so the two
 * can never disagree. Pure: no store, no clock, no I/O; the caller loads the policies.
 *
 * Rule. Every destination NAME the intent carries (host, sni, http_host; each normalised: lower
 * case, one trailing dot dropped) must be allowed by the gateway policy and by the namespace policy
 * and, when the sandbox carries its own policy (SandboxSpec.policy), by that one too
 * (policy_rules_egress_match, each layer on its own, as sandbox admission does); a TLS server_name
 * or Host header that differs from the CONNECT target is therefore checked too, so a sandbox cannot
 * ask for an allowed name and then talk to another one (domain fronting). The address is matched
 * only when no name is known. The first refusal decides; an allowed intent reports the innermost
 * layer with a restriction and the entry that matched.
 *
 * Memory: the decision is written into @out (fixed buffers); nothing is kept. */
#ifndef GANTRY_API_RULES_EGRESS_H
#define GANTRY_API_RULES_EGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gantry/v1/policies.pb-c.h"

#define EGRESS_NAME_MAX 253u

struct egress_intent {
    int transport;         /* Gantry__V1__EgressTransport; 0 reads as TCP */
    const char *host;      /* may be NULL or "" */
    const char *ip;        /* may be NULL or "" */
    unsigned port;         /* 1..65535; 0 for a DNS question about any port */
    const char *sni;       /* may be NULL or "" */
    const char *http_host; /* may be NULL or "" */
};

struct egress_decision {
    bool allowed;
    const char *layer;                     /* "sandbox", "namespace", "gateway" or "default" (static) */
    char rule[300];                        /* the matching egress_allow entry; "" when refused */
    uint64_t revision;                     /* that layer's resource_version (filled by the caller) */
    char destination[EGRESS_NAME_MAX + 1]; /* the name or address refused, or the last one matched */
    char reason[512];
};

/* Check @in's shape: a port in 1..65535 (a DNS intent may give 0: its name is then allowed when an
 * entry matches it on any port, the question the relay's DNS responder asks), at least one name or
 * an address, names of at most
 * EGRESS_NAME_MAX bytes of [A-Za-z0-9.-_] (a leading "*." is not a name), the address an IPv4 or
 * IPv6 literal, the transport a known one. 0, or GERR_INVAL with the field named in @why. */
int egress_intent_check(const struct egress_intent *in, char *why, size_t len);

/* Decide @in (checked) against the gateway policy @g (never NULL: the stored one or the built-in
 * default), the namespace's @n (NULL: none stored) and the sandbox's own @sb (NULL: none, or the
 * intent names no sandbox; only its egress_allow is read). Layers are asked in that order; the
 * first refusal names its layer. Fills @out; its revision is left 0 (the caller knows the policies'
 * versions: @out->layer says which one applies). */
void egress_decide(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n, const Gantry__V1__Policy *sb,
                   const struct egress_intent *in, struct egress_decision *out);

#endif
