/* Quota arithmetic as pure functions: whether a charge of sandboxes and GPUs fits a namespace's
 * ceiling and quota, whether a quota or a ceiling to set is well formed, and whether a quota fits
 * its ceiling (a namespace_admin sets the quota of their namespace within the ceiling a
 * platform_admin set, docs/resources.md). api/services/tenants_svc.c loads the
 * namespace's state (phase, limits, usage) in the same transaction as the change, asks here, and
 * writes the new usage; so quotas stay exact under concurrency (one transaction at a time). */
#ifndef GANTRY_API_RULES_QUOTA_H
#define GANTRY_API_RULES_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gantry/v1/quotas.pb-c.h"

/* The ceiling a platform_admin set for a namespace (Quotas.SetCeiling): the most its quota may
 * allow, enforced whatever the quota says and always hard. 0: no limit on that dimension. */
struct quota_ceiling {
    bool set;
    int64_t max_sandboxes, max_gpus, max_lifetime_s;
};

/* A namespace's quota and usage as stored. */
struct quota_state {
    bool active;            /* the namespace's phase is ACTIVE (not TERMINATING) */
    bool has_quota;         /* a quota is set; when false the limits are ignored */
    int64_t max_sandboxes;  /* concurrent sandboxes; 0: unlimited */
    int64_t max_gpus;       /* GPUs in use; 0: unlimited */
    int64_t max_lifetime_s; /* per sandbox; 0: unlimited */
    bool hard;              /* hard: refuse; soft: allow and warn */
    int64_t used_sandboxes, used_gpus;
    struct quota_ceiling ceiling; /* checked before the quota */
};

enum quota_verdict {
    QUOTA_OK = 0,
    QUOTA_SOFT_EXCEEDED, /* allowed; @why holds the warning */
    QUOTA_HARD_EXCEEDED, /* refused (RESOURCE_EXHAUSTED); @why names the limit */
    QUOTA_TERMINATING,   /* refused: new sandboxes cannot go into a namespace being deleted */
};

/* May namespace @ns (@st) take @sandboxes more sandboxes and @gpus more GPUs (negative: a release,
 * always allowed) for a sandbox of @lifetime_s? The ceiling is checked first and always refuses
 * (QUOTA_HARD_EXCEEDED); then the quota in its mode. The first limit exceeded is named in @why
 * (sandboxes, then GPUs, then lifetime). */
enum quota_verdict quota_rules_charge(const struct quota_state *st, const char *ns, int sandboxes, int gpus,
                                      uint64_t lifetime_s, char *why, size_t len);

/* Is @q a quota that can be set: a namespace named, a known mode (HARD or SOFT), a lifetime that
 * fits in milliseconds? true, or false with the INVALID_ARGUMENT message in @why. */
bool quota_rules_validate(const Gantry__V1__Quota *q, char *why, size_t len);

/* Is @c a ceiling that can be set: a namespace named, a lifetime that fits in milliseconds? */
bool quota_rules_validate_ceiling(const Gantry__V1__QuotaCeiling *c, char *why, size_t len);

/* Does quota @q for namespace @ns fit the ceiling @c (not set: anything fits)? Every limit the
 * ceiling sets must be set by the quota too (0 would mean unlimited) and be at most the ceiling's.
 * false with the FAILED_PRECONDITION message in @why, naming the field and both numbers. */
bool quota_rules_within_ceiling(const Gantry__V1__Quota *q, const char *ns, const struct quota_ceiling *c,
                                char *why, size_t len);

/* The longest lifetime a sandbox of the namespace may have (0: no limit): the tighter of the quota's
 * (when set) and the ceiling's. */
int64_t quota_rules_lifetime_max(const struct quota_state *st);

#endif
