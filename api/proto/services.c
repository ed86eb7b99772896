#include "api/proto/services.h"

#include "gantry/v1/api_keys.pb-c.h"
#include "gantry/v1/audit.pb-c.h"
#include "gantry/v1/cluster.pb-c.h"
#include "gantry/v1/events.pb-c.h"
#include "gantry/v1/namespaces.pb-c.h"
#include "gantry/v1/policies.pb-c.h"
#include "gantry/v1/principals.pb-c.h"
#include "gantry/v1/providers.pb-c.h"
#include "gantry/v1/quotas.pb-c.h"
#include "gantry/v1/sandboxes.pb-c.h"
#include "gantry/v1/usage.pb-c.h"
#include "gantry/v1/warmpools.pb-c.h"

const ProtobufCServiceDescriptor *const api_services[] = {
    &gantry__v1__namespaces__descriptor, &gantry__v1__principals__descriptor,
    &gantry__v1__api_keys__descriptor,   &gantry__v1__sandboxes__descriptor,
    &gantry__v1__providers__descriptor,  &gantry__v1__policies__descriptor,
    &gantry__v1__egress__descriptor,     &gantry__v1__quotas__descriptor,
    &gantry__v1__usage__descriptor,      &gantry__v1__audit__descriptor,
    &gantry__v1__cluster__descriptor,    &gantry__v1__events__descriptor,
    &gantry__v1__warm_pools__descriptor, NULL,
};
