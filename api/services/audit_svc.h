/* gantry.v1.Audit behind the gate: Query (filters: time range, actor, namespace, operation,
 * class; pages by event id) and Export (the same events as OCSF JSON lines, streamed in chunks of
 * whole lines of about 512 KiB, oldest first). Platform admins and auditors read everything;
 * namespace admins read their namespace's events (the request must name it: api/authz/authz.c). */
#ifndef GANTRY_API_SERVICES_AUDIT_SVC_H
#define GANTRY_API_SERVICES_AUDIT_SVC_H

struct gate;

int audit_svc_register(struct gate *g, char *errmsg);

#endif
