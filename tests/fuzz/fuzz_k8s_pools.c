/* libFuzzer harness for drivers/k8s_pools.h: the SandboxWarmPool objects the kubernetes driver reads
 * back for Gantry-owned warm pools, and the replacement it builds from what it read.
 *
 * Input layout: byte 0 selects ((byte - '0') % 3, so the digits '0' to '2' that start the seeds in
 * corpus/k8s_pools/ name them), the rest is the body, copied into a heap block of exactly its size
 * so ASan sees any overread.
 *   0: a SandboxWarmPool (k8s_pool_decode)
 *   1: a SandboxWarmPoolList (k8s_pool_list_decode, at most 4 items)
 *   2: the replacement of a pool as read (k8s_pool_replacement)
 *
 * Promises checked (abort() otherwise): decoders answer 0 or GERR_PROTO; on success a pool has a
 * name, its pool id is empty or a UUID, ready is at most DRIVER_POOL_REPLICAS_MAX; a replacement
 * is NULL or a JSON object whose spec.replicas is the one asked for. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "drivers/driver_internal.h"
#include "drivers/k8s_pools.h"
#include "lib/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
    if (!ok) {
        abort();
    }
}

static void check_pool(const struct k8s_pool *p)
{
    check(p->name[0] != '\0');
    check(p->pool_id[0] == '\0' || driver_is_uuid(p->pool_id));
    check(p->ready <= DRIVER_POOL_REPLICAS_MAX);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errmsg[GERR_MSG_SIZE];
    if (size == 0) {
        return 0;
    }
    size_t n = size - 1;
    char *body = malloc(n + 1);
    memcpy(body, data + 1, n);
    body[n] = '\0';
    switch ((data[0] - '0') % 3) {
    case 0: {
        struct k8s_pool p;
        int rv = k8s_pool_decode(body, n, &p, errmsg);
        check(rv == 0 || rv == GERR_PROTO);
        if (rv == 0) {
            check_pool(&p);
        }
        break;
    }
    case 1: {
        struct k8s_pool p[4];
        size_t got = 99;
        int rv = k8s_pool_list_decode(body, n, p, 4, &got, errmsg);
        check(rv == 0 || rv == GERR_PROTO);
        check(got <= 4);
        for (size_t i = 0; rv == 0 && i < got; i++) {
            check_pool(&p[i]);
        }
        break;
    }
    default: {
        struct driver_pool_spec spec = {.id = "0f8fad5b-d9cb-469f-a165-70867728950e",
                                        .namespace = "team-a",
                                        .name = "warm",
                                        .template_name = "agent",
                                        .replicas = 7};
        char *doc = k8s_pool_replacement(body, n, &spec, 3);
        if (doc != NULL) {
            json_error_t jerr;
            json_t *j = json_loads(doc, 0, &jerr);
            check(json_is_object(j));
            check(json_integer_value(json_object_get(json_object_get(j, "spec"), "replicas")) == 7);
            json_decref(j);
            mem_free(doc);
        }
        break;
    }
    }
    free(body);
    return 0;
}
