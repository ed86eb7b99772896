/* Quota arithmetic (api/rules/quota.h). */
#include "api/rules/quota.h"

#include <inttypes.h>
#include <stdio.h>

enum quota_verdict quota_rules_charge(const struct quota_state *st, const char *ns, int sandboxes, int gpus,
                                      uint64_t lifetime_s, char *why, size_t len)
{
    why[0] = '\0';
    if (sandboxes > 0 && !st->active) {
        snprintf(why, len, "namespace \"%.63s\" is being deleted (TERMINATING)", ns);
        return QUOTA_TERMINATING;
    }
    const struct quota_ceiling *c = &st->ceiling;
    if (c->set && sandboxes > 0 && c->max_sandboxes > 0 &&
        st->used_sandboxes + sandboxes > c->max_sandboxes) {
        snprintf(why, len,
                 "quota ceiling of namespace \"%.63s\": at most %" PRId64 " concurrent sandboxes (%" PRId64
                 " in use)",
                 ns, c->max_sandboxes, st->used_sandboxes);
    } else if (c->set && gpus > 0 && c->max_gpus > 0 && st->used_gpus + gpus > c->max_gpus) {
        snprintf(why, len,
                 "quota ceiling of namespace \"%.63s\": at most %" PRId64 " GPUs in use (%" PRId64
                 " in use, %d asked)",
                 ns, c->max_gpus, st->used_gpus, gpus);
    } else if (c->set && sandboxes > 0 && c->max_lifetime_s > 0 && lifetime_s > (uint64_t)c->max_lifetime_s) {
        snprintf(why, len,
                 "quota ceiling of namespace \"%.63s\": lifetime at most %" PRId64 " s (%" PRIu64 " asked)",
                 ns, c->max_lifetime_s, lifetime_s);
    }
    if (why[0] != '\0') {
        return QUOTA_HARD_EXCEEDED; /* the platform's limit: never soft */
    }
    int64_t max_sb = st->has_quota ? st->max_sandboxes : 0, max_gpu = st->has_quota ? st->max_gpus : 0;
    int64_t max_life = st->has_quota ? st->max_lifetime_s : 0;
    int64_t used_sb = st->used_sandboxes, used_gpu = st->used_gpus;
#ifdef GANTRY_PLANT_BUG_QUOTA_OFF_BY_ONE
    used_sb -= 1; /* planted (tests/jepsen only): one more sandbox than the limit is admitted */
#endif
    if (sandboxes > 0 && max_sb > 0 && used_sb + sandboxes > max_sb) {
        snprintf(why, len,
                 "quota of namespace \"%.63s\": at most %" PRId64 " concurrent sandboxes (%" PRId64
                 " in use)",
                 ns, max_sb, used_sb);
    } else if (gpus > 0 && max_gpu > 0 && used_gpu + gpus > max_gpu) {
        snprintf(why, len,
                 "quota of namespace \"%.63s\": at most %" PRId64 " GPUs in use (%" PRId64
                 " in use, %d asked)",
                 ns, max_gpu, used_gpu, gpus);
    } else if (sandboxes > 0 && max_life > 0 && lifetime_s > (uint64_t)max_life) {
        snprintf(why, len, "quota of namespace \"%.63s\": lifetime at most %" PRId64 " s (%" PRIu64 " asked)",
                 ns, max_life, lifetime_s);
    }
    if (why[0] == '\0') {
        return QUOTA_OK;
    }
    return st->has_quota && st->hard ? QUOTA_HARD_EXCEEDED : QUOTA_SOFT_EXCEEDED;
}

bool quota_rules_validate(const Gantry__V1__Quota *q, char *why, size_t len)
{
    if (q == NULL || q->meta == NULL || q->meta->namespace_[0] == '\0') {
        snprintf(why, len, "quota.meta.namespace is required");
        return false;
    }
    if (q->mode == GANTRY__V1__QUOTA_MODE__QUOTA_MODE_UNSPECIFIED) {
        snprintf(why, len, "quota.mode must be HARD or SOFT");
        return false;
    }
    if (q->max_lifetime_seconds > (uint64_t)INT64_MAX / 1000) {
        snprintf(why, len, "quota.max_lifetime_seconds is out of range");
        return false;
    }
    return true;
}

bool quota_rules_validate_ceiling(const Gantry__V1__QuotaCeiling *c, char *why, size_t len)
{
    if (c == NULL || c->meta == NULL || c->meta->namespace_[0] == '\0') {
        snprintf(why, len, "ceiling.meta.namespace is required");
        return false;
    }
    if (c->max_lifetime_seconds > (uint64_t)INT64_MAX / 1000) {
        snprintf(why, len, "ceiling.max_lifetime_seconds is out of range");
        return false;
    }
    return true;
}

static bool fits(const char *field, uint64_t want, int64_t ceiling, const char *ns, char *why, size_t len)
{
    if (ceiling <= 0 || (want > 0 && want <= (uint64_t)ceiling)) {
        return true;
    }
    if (want == 0) {
        snprintf(why, len,
                 "quota.%s 0 (unlimited) is above the ceiling of %" PRId64
                 " the platform_admin set for namespace "
                 "\"%.63s\"",
                 field, ceiling, ns);
    } else {
        snprintf(why, len,
                 "quota.%s %" PRIu64 " is above the ceiling of %" PRId64
                 " the platform_admin set for namespace \"%.63s\"",
                 field, want, ceiling, ns);
    }
    return false;
}

bool quota_rules_within_ceiling(const Gantry__V1__Quota *q, const char *ns, const struct quota_ceiling *c,
                                char *why, size_t len)
{
    if (!c->set) {
        return true;
    }
    return fits("max_concurrent_sandboxes", q->max_concurrent_sandboxes, c->max_sandboxes, ns, why, len) &&
           fits("max_gpus", q->max_gpus, c->max_gpus, ns, why, len) &&
           fits("max_lifetime_seconds", q->max_lifetime_seconds, c->max_lifetime_s, ns, why, len);
}

int64_t quota_rules_lifetime_max(const struct quota_state *st)
{
    int64_t q = st->has_quota ? st->max_lifetime_s : 0, c = st->ceiling.set ? st->ceiling.max_lifetime_s : 0;
    if (q > 0 && c > 0) {
        return q < c ? q : c;
    }
    return q > 0 ? q : c;
}
