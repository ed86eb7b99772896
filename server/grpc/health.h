/* grpc.health.v1.Health: Check and Watch, per service name ("" is the whole server).
 *
 * Statuses are HealthCheckResponse.ServingStatus values (SERVING = 1, NOT_SERVING = 2). Check on
 * an unknown service answers NOT_FOUND; Watch on one streams SERVICE_UNKNOWN and keeps watching.
 * Watchers get a message whenever their service's status changes; one that does not read gets
 * the latest status once it reads again, not every change in between (a watch buffers at most
 * the transport's high-water mark). Loop thread only. */
#ifndef GANTRY_SERVER_GRPC_HEALTH_H
#define GANTRY_SERVER_GRPC_HEALTH_H

#include "server/grpc/server.h"

struct health;

/* Register Check and Watch on @s (before grpc_server_start). The overall service "" starts
 * SERVING. Returns 0 or a GERR_* code from grpc_server_handle. */
int health_new(struct grpc_server *s, struct health **out);

/* Set @service's status (copied name) and notify its watchers. */
void health_set(struct health *h, const char *service, int status);

/* Mark every service of @s (grpc_server_service_name) and "" SERVING. After grpc_server_start. */
void health_serve_all(struct health *h, struct grpc_server *s);

/* Mark everything NOT_SERVING, send that to every watcher, and end the watches with OK, so
 * connections can drain during a graceful shutdown. */
void health_shutdown(struct health *h);

/* Free; after health_shutdown (or if no watch ever started). */
void health_free(struct health *h);

#endif
