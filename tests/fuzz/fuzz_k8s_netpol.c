/* libFuzzer harness for drivers/k8s_netpol.h: the NetworkPolicy the API server sends back, read by
 * the kubernetes driver when it reconciles the egress relay's policy, and the relay settings
 * (address, pod selector) checked and rendered.
 *
 * Input: the first byte picks the settings' shape; up to the first NUL the bytes are an address and
 * a pod selector (separated by '|'), the rest is the API server's answer.
 * Promises checked (abort() on a broken one): settings that pass k8s_egress_relay_check render a
 * manifest that is a JSON object, and that manifest read back as the server's answer (with a
 * resourceVersion added) is this gateway's and the same; compare never reports "same" for settings
 * that are off, and either decodes with a resourceVersion under 64 bytes or refuses. Input is
 * copied into heap blocks of exactly its size so ASan sees any overread. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/k8s_netpol.h"
#include "lib/err.h"
#include "lib/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    const uint8_t *nul = memchr(data + 1, 0, size - 1);
    size_t head = nul != NULL ? (size_t)(nul - data - 1) : size - 1;
    char *settings = malloc(head + 1);
    if (settings == NULL) {
        return 0;
    }
    memcpy(settings, data + 1, head);
    settings[head] = '\0';
    char *bar = strchr(settings, '|');
    if (bar != NULL) {
        *bar = '\0';
    }
    struct k8s_egress_relay e = {.address = settings,
                                 .pod_selector = bar != NULL ? bar + 1 : NULL,
                                 .home_namespace = (data[0] & 1) ? "gantry" : NULL,
                                 .port = (data[0] & 2) ? 3130u : 0u};
    char errmsg[GERR_MSG_SIZE], rv[64];
    bool ours, same;
    if (k8s_egress_relay_check(&e, errmsg) == 0 && k8s_egress_relay_on(&e)) {
        char *doc = k8s_egress_netpol_manifest("openshell-gw-team", "gw", &e, "42");
        json_t *j = doc != NULL ? json_loads(doc, JSON_REJECT_DUPLICATES, NULL) : NULL;
        if (!json_is_object(j) ||
            k8s_egress_netpol_compare(doc, strlen(doc), "openshell-gw-team", "gw", &e, &ours, &same, rv) !=
                0 ||
            !ours || !same || strcmp(rv, "42") != 0) {
            abort();
        }
        json_decref(j);
        mem_free(doc);
    }
    size_t rest = nul != NULL ? size - head - 2 : 0;
    char *answer = malloc(rest ? rest : 1);
    if (answer != NULL) {
        memcpy(answer, nul != NULL ? (const char *)nul + 1 : "", rest);
        struct k8s_egress_relay off = {0};
        if (k8s_egress_netpol_compare(answer, rest, "ns", "gw", &off, &ours, &same, rv) == 0 &&
            (same || strlen(rv) >= 64)) {
            abort();
        }
        if (k8s_egress_relay_check(&e, errmsg) == 0) {
            (void)k8s_egress_netpol_compare(answer, rest, "ns", "gw", &e, &ours, &same, rv);
        }
        free(answer);
    }
    free(settings);
    return 0;
}
