/* Which principals a caller manages besides itself, as a pure decision over role bindings.
 *
 * A namespace_admin onboards users into the namespaces it administers (docs/security.md): it
 * creates them bound there with the user role (Principals.Create with a namespace), and issues,
 * reads and revokes the API keys of the principals it manages: those whose every binding is a plain
 * (not delegated) user binding in a namespace where the caller holds the namespace_admin role. A
 * principal with any other binding (a global role, namespace_admin anywhere, a role in a namespace
 * the caller does not administer, a delegation scope), or with none, is managed by platform
 * admins only, so a namespace_admin can never mint a credential carrying more than it could grant
 * itself. The handlers load the target's bindings in the call's transaction and ask here. */
#ifndef GANTRY_API_RULES_PRINCIPAL_H
#define GANTRY_API_RULES_PRINCIPAL_H

#include <stdbool.h>
#include <stddef.h>

#include "api/authz/authz.h"

/* Does the caller holding @caller (@n_caller bindings) manage the principal holding @target
 * (@n_target bindings)? A platform_admin manages everyone. Otherwise true only as above; false with
 * the PERMISSION_DENIED message in @why (it names the binding that is out of reach). */
bool principal_rules_manages(const struct authz_binding *caller, size_t n_caller,
                             const struct authz_binding *target, size_t n_target, char *why, size_t len);

#endif
