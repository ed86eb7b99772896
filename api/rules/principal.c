/* Which principals a caller manages (api/rules/principal.h). */
#include "api/rules/principal.h"

#include <stdio.h>

static bool administers(const struct authz_binding *caller, size_t n, const char *ns)
{
    for (size_t i = 0; i < n; i++) {
        if (caller[i].role == AZ_ROLE_NAMESPACE_ADMIN && authz_binding_covers(&caller[i], ns)) {
            return true;
        }
    }
    return false;
}

bool principal_rules_manages(const struct authz_binding *caller, size_t n_caller,
                             const struct authz_binding *target, size_t n_target, char *why, size_t len)
{
    for (size_t i = 0; i < n_caller; i++) {
        if (caller[i].role == AZ_ROLE_PLATFORM_ADMIN && caller[i].ns[0] == '\0' && !caller[i].scope.set) {
            return true;
        }
    }
    if (n_target == 0) {
        snprintf(why, len,
                 "the principal holds no role binding: only a platform_admin manages its API keys (a "
                 "namespace_admin "
                 "manages users bound with the user role in namespaces it administers)");
        return false;
    }
    for (size_t i = 0; i < n_target; i++) {
        const struct authz_binding *b = &target[i];
        if (b->role != AZ_ROLE_USER || b->scope.set || b->ns[0] == '\0') {
            snprintf(why, len,
                     "the principal holds the %s role%s%s%s: only a platform_admin manages its API keys",
                     authz_role_name(b->role), b->scope.set ? " through a delegation scope" : "",
                     b->ns[0] != '\0' ? " in namespace " : "", b->ns);
            return false;
        }
        if (!administers(caller, n_caller, b->ns)) {
            snprintf(why, len,
                     "the principal holds the user role in namespace \"%.63s\", which you do not administer: "
                     "its API "
                     "keys are managed by its own principal, a namespace_admin of every namespace it is "
                     "bound in, or "
                     "a platform_admin",
                     b->ns);
            return false;
        }
    }
    return true;
}
