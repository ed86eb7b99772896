/* Authentication's lookups (struct authn_models, api/gate/authn.h) answered from this replica's
 * change-feed models (api/services/kind_model.h): principals, role bindings (with their scope as
 * stored), API key metadata (principals_svc.h) and linked identities (links_svc.h). The answers
 * are the store path's of api/gate/authn.c: the same fields, bindings in id order, at most
 * AUTHN_MAX_BINDINGS, a scope that does not parse granting nothing. No secret material is read:
 * the keys model has no hashes. */
#ifndef GANTRY_API_SERVICES_AUTHN_MODELS_H
#define GANTRY_API_SERVICES_AUTHN_MODELS_H

#include "api/gate/authn.h"
#include "api/services/kind_model.h"

/* The models, borrowed: principals_model_new, principals_bindings_model_new,
 * principals_keys_model_new and links_svc_links_model_new's. */
struct authn_models_src {
    struct kind_model *principals, *bindings, *keys, *links;
};

/* Fill @out with functions that read @src (borrowed: it and its models must outlive every call
 * through @out). */
void authn_models_init(struct authn_models *out, struct authn_models_src *src);

#endif
