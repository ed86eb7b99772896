/* libFuzzer harness for api/forward/fwd.h's decoders: what a peer sends over a forwarding
 * connection (frames of ForwardRequest or ForwardResponse), and the principal a forwarded request
 * carries as the gate reads it (role names and scope JSON, api/authz/authz.h).
 *
 * Input: a stream of frames exactly as read from a connection (4-byte big-endian length, body);
 * each body is decoded as both a request and a response, the way either end of the connection
 * would. A header over FWD_MAX_FRAME must be refused (the connection would be dropped) and ends
 * the stream; a short last frame ends it too (the reader would wait for more bytes). Bodies are
 * copied into heap blocks of exactly their size so ASan sees any overread.
 *
 * Promises checked (abort() on a broken one): fwd_frame_length answers 0 or GERR_PROTO and gives
 * no length over FWD_MAX_FRAME; a decoded request's strings are terminated; a principal's scope
 * either parses to at most AUTHZ_SCOPE_MAX patterns and ServiceAccount names (each a valid name,
 * never the gateway's own, together within AUTHZ_SCOPE_SA_BYTES), Kubernetes namespace patterns (1..63
 * characters), RuntimeClass names (valid names, each allowed by the scope) and Secret namespace and
 * name patterns (1..63 and 1..253 characters), or is refused, and a
 * parsed scope prints back to JSON that parses to the same patterns and names. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/authz/authz.h"
#include "api/forward/fwd.h"
#include "lib/err.h"
#include "lib/mem.h"

static void check_principal(const Gantry__Internal__V1__ForwardPrincipal *pr)
{
    if (pr == NULL) {
        return;
    }
    if (strlen(pr->id) + strlen(pr->name) + strlen(pr->kind) + strlen(pr->via) == SIZE_MAX) {
        abort();
    }
    for (size_t i = 0; i < pr->n_bindings; i++) {
        (void)authz_role_parse(pr->bindings[i]->role);
        struct authz_scope sc;
        if (authz_scope_parse(pr->bindings[i]->scope, &sc) != 0) {
            continue;
        }
        const char *names[AUTHZ_SCOPE_MAX], *again_names[AUTHZ_SCOPE_MAX];
        size_t n_names = authz_scope_service_accounts(&sc, names, AUTHZ_SCOPE_MAX), bytes = 0;
        if (sc.n_patterns > AUTHZ_SCOPE_MAX || sc.n_service_accounts > AUTHZ_SCOPE_MAX ||
            n_names != sc.n_service_accounts) {
            abort();
        }
        for (size_t k = 0; k < n_names; k++) {
            bytes += strlen(names[k]) + 1;
            if (!authz_sa_name_ok(names[k]) || authz_sa_reserved(names[k]) ||
                !authz_scope_allows_service_account(&sc, names[k])) {
                abort();
            }
        }
        if (bytes > AUTHZ_SCOPE_SA_BYTES) {
            abort();
        }
        /* The placement lists: within their bounds, each entry allowed by its own check. */
        const char *kns[AUTHZ_SCOPE_MAX], *rcs[AUTHZ_SCOPE_MAX];
        size_t n_kns = authz_scope_kube_namespaces(&sc, kns, AUTHZ_SCOPE_MAX),
               n_rcs = authz_scope_runtime_classes(&sc, rcs, AUTHZ_SCOPE_MAX);
        if (n_kns != sc.n_kube_namespaces || n_rcs != sc.n_runtime_classes) {
            abort();
        }
        for (size_t k = 0; k < n_rcs; k++) {
            if (!authz_sa_name_ok(rcs[k]) || !authz_scope_allows_runtime_class(&sc, rcs[k])) {
                abort();
            }
        }
        for (size_t k = 0; k < n_kns; k++) {
            if (strlen(kns[k]) == 0 || strlen(kns[k]) > 63) {
                abort();
            }
        }
        const char *sns[AUTHZ_SCOPE_MAX], *snames[AUTHZ_SCOPE_MAX];
        size_t n_sns = authz_scope_secret_namespaces(&sc, sns, AUTHZ_SCOPE_MAX),
               n_snames = authz_scope_secret_names(&sc, snames, AUTHZ_SCOPE_MAX);
        if (n_sns != sc.n_secret_namespaces || n_snames != sc.n_secret_names) {
            abort();
        }
        for (size_t k = 0; k < n_sns; k++) {
            if (strlen(sns[k]) == 0 || strlen(sns[k]) > 63) {
                abort();
            }
        }
        for (size_t k = 0; k < n_snames; k++) {
            if (strlen(snames[k]) == 0 || strlen(snames[k]) > AUTHZ_SA_NAME_MAX) {
                abort();
            }
        }
        if (!sc.set) {
            continue;
        }
        char *json = authz_scope_json(&sc);
        struct authz_scope again;
        if (authz_scope_parse(json, &again) != 0 || again.n_patterns != sc.n_patterns) {
            abort();
        }
        for (unsigned k = 0; k < sc.n_patterns; k++) {
            if (strcmp(again.patterns[k], sc.patterns[k]) != 0) {
                abort();
            }
        }
        if (authz_scope_service_accounts(&again, again_names, AUTHZ_SCOPE_MAX) != n_names) {
            abort();
        }
        for (size_t k = 0; k < n_names; k++) {
            if (strcmp(again_names[k], names[k]) != 0) {
                abort();
            }
        }
        if (authz_scope_kube_namespaces(&again, again_names, AUTHZ_SCOPE_MAX) != n_kns) {
            abort();
        }
        for (size_t k = 0; k < n_kns; k++) {
            if (strcmp(again_names[k], kns[k]) != 0) {
                abort();
            }
        }
        if (authz_scope_runtime_classes(&again, again_names, AUTHZ_SCOPE_MAX) != n_rcs) {
            abort();
        }
        if (authz_scope_secret_namespaces(&again, again_names, AUTHZ_SCOPE_MAX) != n_sns ||
            authz_scope_secret_names(&again, again_names, AUTHZ_SCOPE_MAX) != n_snames) {
            abort();
        }
        for (size_t k = 0; k < n_rcs; k++) {
            if (strcmp(again_names[k], rcs[k]) != 0) {
                abort();
            }
        }
        mem_free(json);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    while (size >= 4) {
        size_t n = 0;
        int rv = fwd_frame_length(data, &n);
        if (rv != 0) {
            if (rv != GERR_PROTO) {
                abort();
            }
            return 0;
        }
        if (n > FWD_MAX_FRAME) {
            abort();
        }
        data += 4;
        size -= 4;
        if (n > size) {
            return 0;
        }
        uint8_t *body = malloc(n > 0 ? n : 1);
        memcpy(body, data, n);
        fwd_request *req = fwd_request_decode(body, n);
        if (req != NULL) {
            if (strlen(req->method) + strlen(req->peer) + strlen(req->idem_key) == SIZE_MAX) {
                abort();
            }
            check_principal(req->principal);
            gantry__internal__v1__forward_request__free_unpacked(req, NULL);
        }
        fwd_response *resp = fwd_response_decode(body, n);
        if (resp != NULL) {
            if (strlen(resp->message) == SIZE_MAX) {
                abort();
            }
            gantry__internal__v1__forward_response__free_unpacked(resp, NULL);
        }
        free(body);
        data += n;
        size -= n;
    }
    return 0;
}
