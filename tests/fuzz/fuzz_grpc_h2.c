/* libFuzzer harness: client bytes into one plaintext HTTP/2 connection of the gRPC server.
 *
 * Every input is one connection with no socket: the client preface is prepended, the input is
 * fed in up to three chunks (split points taken from its first bytes, so frame boundaries land
 * anywhere), then the connection is closed and the loop runs until every connection, call and
 * timer is gone, so LeakSanitizer sees each input's memory freed. The server routes
 * gantry.testing.v1.Echo (unary, server-streaming, client-streaming, bidi; all synchronous),
 * health and reflection. */
#include <string.h>

#include "api/proto/services.h"
#include "gantry/testing/v1/echo.pb-c.h"
#include "lib/log.h"
#include "server/grpc/health.h"
#include "server/grpc/internal.h"
#include "server/grpc/reflection.h"

static uv_loop_t fuzz_loop;
static struct grpc_server *fuzz_server;

/* The request, or NULL after answering with the transport's refusal. */
static const void *fuzz_request(struct grpc_call *call)
{
    const ProtobufCMessage *m = grpc_call_request(call);
    if (m == NULL) {
        const char *why;
        int status = grpc_call_request_error(call, &why);
        grpc_call_finish(call, status, why, NULL);
    }
    return m;
}

static void fuzz_unary(struct grpc_call *call, void *data)
{
    (void)data;
    const Gantry__Testing__V1__EchoRequest *req = fuzz_request(call);
    if (req == NULL) {
        return;
    }
    Gantry__Testing__V1__EchoResponse resp = GANTRY__TESTING__V1__ECHO_RESPONSE__INIT;
    resp.message = req->message;
    resp.payload = req->payload;
    if (req->message[0] == '!') {
        grpc_call_finish(call, GRPC_STATUS_ABORTED, req->message, NULL);
        return;
    }
    grpc_call_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
}

static void fuzz_stream(struct grpc_call *call, void *data)
{
    (void)data;
    const Gantry__Testing__V1__StreamRequest *req = fuzz_request(call);
    if (req == NULL) {
        return;
    }
    Gantry__Testing__V1__EchoResponse resp = GANTRY__TESTING__V1__ECHO_RESPONSE__INIT;
    uint32_t n = req->count > 8 ? 8 : req->count;
    for (uint32_t i = 0; i < n; i++) {
        resp.index = i;
        grpc_call_send(call, &resp.base);
    }
    grpc_call_finish(call, GRPC_STATUS_OK, NULL, NULL);
}

static void fuzz_noop_start(struct grpc_call *call, void *data)
{
    (void)call;
    (void)data;
}

static void fuzz_bidi_message(struct grpc_call *call, const ProtobufCMessage *m, void *data)
{
    (void)data;
    if (m == NULL) {
        grpc_call_finish(call, GRPC_STATUS_OK, NULL, NULL);
        return;
    }
    const Gantry__Testing__V1__EchoRequest *req = (const void *)m;
    Gantry__Testing__V1__EchoResponse resp = GANTRY__TESTING__V1__ECHO_RESPONSE__INIT;
    resp.message = req->message;
    grpc_call_send(call, &resp.base);
}

static void fuzz_client_message(struct grpc_call *call, const ProtobufCMessage *m, void *data)
{
    (void)data;
    if (m == NULL) {
        Gantry__Testing__V1__EchoResponse resp = GANTRY__TESTING__V1__ECHO_RESPONSE__INIT;
        grpc_call_finish(call, GRPC_STATUS_OK, NULL, &resp.base);
    }
}

static void fuzz_setup(void)
{
    char errmsg[GERR_MSG_SIZE];
    log_set_level(LOG_LEVEL_ERROR);
    uv_loop_init(&fuzz_loop);
    struct grpc_server_config cfg;
    grpc_server_config_defaults(&cfg);
    cfg.h2c = true;
    cfg.max_recv_message_bytes = 64 << 10; /* small limits: reach the limit paths cheaply */
    cfg.max_header_list_bytes = 4096;
    cfg.conn_memory_bytes = 256 << 10;
    if (grpc_server_new(&fuzz_loop, &cfg, &fuzz_server, errmsg) != 0) {
        abort();
    }
    const ProtobufCServiceDescriptor *echo = &gantry__testing__v1__echo__descriptor;
    struct grpc_handler unary = {.kind = GRPC_UNARY, .on_start = fuzz_unary};
    struct grpc_handler stream = {.kind = GRPC_SERVER_STREAMING, .on_start = fuzz_stream};
    struct grpc_handler client = {
        .kind = GRPC_CLIENT_STREAMING, .on_start = fuzz_noop_start, .on_message = fuzz_client_message};
    struct grpc_handler bidi = {
        .kind = GRPC_BIDI_STREAMING, .on_start = fuzz_noop_start, .on_message = fuzz_bidi_message};
    grpc_server_handle(fuzz_server, echo, "Unary", &unary);
    grpc_server_handle(fuzz_server, echo, "ServerStream", &stream);
    grpc_server_handle(fuzz_server, echo, "ClientStream", &client);
    grpc_server_handle(fuzz_server, echo, "Bidi", &bidi);
    for (size_t i = 0; api_services[i] != NULL; i++) {
        grpc_server_add_service(fuzz_server, api_services[i]);
    }
    struct health *health;
    struct reflection *refl;
    if (health_new(fuzz_server, &health) != 0 || reflection_new(fuzz_server, &refl) != 0 ||
        reflection_add_descriptor_set(refl, api_descriptor_set, api_descriptor_set_len, errmsg) != 0 ||
        reflection_add_descriptor_set(refl, api_testing_descriptor_set, api_testing_descriptor_set_len,
                                      errmsg) != 0) {
        abort();
    }
    grpc__server_prepare_detached(fuzz_server);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (fuzz_server == NULL) {
        fuzz_setup();
    }
    struct h2_conn *c = grpc__server_feed_conn(fuzz_server);
    if (c != NULL) {
        size_t cut1 = size > 2 ? data[0] % size : size;
        size_t cut2 = size > 2 ? cut1 + (size - cut1) / 2 : size;
        const size_t cuts[] = {0, cut1, cut2, size};
        int rv = h2__conn_recv(c, (const uint8_t *)preface, sizeof(preface) - 1);
        for (int i = 0; i < 3 && rv == 0 && !c->closing; i++) {
            rv = h2__conn_recv(c, data + cuts[i], cuts[i + 1] - cuts[i]);
            h2__conn_flush(c);
        }
        h2__conn_close(c, "fuzz input done");
    }
    /* Closing is asynchronous: run until the connection, its calls and timers are gone. */
    while (fuzz_server->n_conns > 0 || fuzz_server->n_calls > 0) {
        uv_run(&fuzz_loop, UV_RUN_NOWAIT);
    }
    return 0;
}
