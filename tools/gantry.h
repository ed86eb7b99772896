/* The gantry CLI's shared parts (tools/gantry.c: main and the cluster commands;
 * tools/gantry_res.c: the resource commands). */
#ifndef GANTRY_TOOLS_GANTRY_H
#define GANTRY_TOOLS_GANTRY_H

#include <stdbool.h>

#include <protobuf-c/protobuf-c.h>

#include "server/grpc_client.h"

struct cli {
    char *endpoints[16];
    unsigned n_endpoints;
    const char *ca;
    char token[512];
    bool json;
};

/* Call @path on the endpoints in turn until one answers other than UNAVAILABLE; the same request
 * (with its request_id) is sent each time, so a retried write applies once. Unary: *@out gets the
 * reply (protobuf_c_message_free_unpacked); streaming: @cb per message, @out NULL. Prints the
 * failure and returns 1, or 0. */
int call(struct cli *c, const char *path, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp,
         grpc_client_msg_cb cb, void *arg, ProtobufCMessage **out, unsigned timeout_ms);

/* The resource commands: @group is "namespace", "user", "sa", "role", "key", "sandbox", "audit",
 * "whoami". Returns the exit code, or -1 when @group is not one of them. */
int gantry_res_main(struct cli *c, const char *group, int argc, char **argv);
void gantry_res_usage(FILE *f);

#endif
