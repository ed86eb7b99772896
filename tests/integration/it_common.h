/* Small helpers shared by the integration tests (header-only, static). */
#ifndef GANTRY_TESTS_INTEGRATION_IT_COMMON_H
#define GANTRY_TESTS_INTEGRATION_IT_COMMON_H

#include <stdio.h>
#include <stdlib.h>

#include "lib/clock.h"
#include "tools/localcluster.h"

/* Path of gantry-store-node: $GANTRY_STORE_NODE_BIN, else the one built with this test. */
static inline const char *it_node_bin(void)
{
    const char *env = getenv("GANTRY_STORE_NODE_BIN");
    return env != NULL && env[0] != '\0' ? env : GANTRY_STORE_NODE_BIN;
}

static inline uint64_t it_now_ms(void)
{
    return clock_mono_ms(clock_system());
}

/* Fail the current cmocka test with @msg (and the nodes' logs) unless @rv is 0. */
#define IT_CHECK(c, rv, msg)                                                                                 \
    do {                                                                                                     \
        int it_rv_ = (rv);                                                                                   \
        if (it_rv_ != 0) {                                                                                   \
            fprintf(stderr, "%s:%d: %s: %s (%s)\n", __FILE__, __LINE__, #rv, (msg), gerr_name(it_rv_));      \
            if ((c) != NULL) {                                                                               \
                cluster_print_logs((c), 1500);                                                               \
            }                                                                                                \
            fail();                                                                                          \
        }                                                                                                    \
    } while (0)

#endif
