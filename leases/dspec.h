/* The driver's view of a stored sandbox spec (drivers/driver.h struct driver_sandbox_spec), built
 * the same way for the reconciler's driver calls and for admission checks at the API
 * (driver_validate), so a spec the API admits is the spec the driver later receives.
 *
 * dspec_build never fails (allocation aborts). The driver spec points into @spec, the strings
 * passed in and the dspec's own allocations: keep them all alive until dspec_close. A spec
 * without a command runs "sleep infinity". Only the driver_config entry named @driver_name is
 * passed, as key/value strings (non-string JSON values as compact JSON text). */
#ifndef GANTRY_LEASES_DSPEC_H
#define GANTRY_LEASES_DSPEC_H

#include <jansson.h>

#include "drivers/driver.h"
#include "gantry/v1/sandboxes.pb-c.h"

struct dspec {
    struct driver_sandbox_spec s;
    const char **argv;
    struct driver_kv *env, *labels, *config;
    json_t *labels_json, *config_json;
    char **config_values;
};

/* @labels_json: the stored labels (a JSON object text; anything else reads as no labels). */
void dspec_build(struct dspec *d, const Gantry__V1__SandboxSpec *spec, const char *id, const char *ns,
                 const char *name, const char *owner, const char *labels_json, const char *driver_name);
void dspec_close(struct dspec *d);

#endif
