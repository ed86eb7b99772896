/* gantry.v1.Usage behind the gate: the usage records the reconciler keeps (one per sandbox run,
 * opened when it first runs, closed when it is removed) cut to the requested time range, with
 * sandbox-seconds and GPU-seconds, filtered by namespace, owner and labels, and totals grouped by
 * up to four keys ("namespace", "owner", "label:<key>"). Readers of a namespace see its usage; with
 * no namespace, global roles see all and others the namespaces they hold a role in. At most
 * 10000 records per query (narrow the range for more). */
#ifndef GANTRY_API_SERVICES_USAGE_SVC_H
#define GANTRY_API_SERVICES_USAGE_SVC_H

struct gate;

int usage_svc_register(struct gate *g, char *errmsg);

#endif
