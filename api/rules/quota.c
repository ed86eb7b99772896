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
