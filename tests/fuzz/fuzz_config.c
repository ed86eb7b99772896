/* Arbitrary bytes as gantryd's JSON configuration file: load, validate and dump must never crash,
 * leak or read out of bounds, whatever the file holds. The environment and flag layers run too, with
 * fixed input, so that precedence bookkeeping is exercised against whatever the file left behind. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "lib/buf.h"
#include "server/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char *const env[] = {"GANTRY_LATENCY_MS=25", "GANTRY_IT_KEEP=1", NULL};
    static char *const argv[] = {"gantryd", "--log-level", "debug", NULL};
    struct config cfg;
    char errmsg[GERR_MSG_SIZE];
    bool help;

    errmsg[0] = '\0';
    config_init_defaults(&cfg);
    if (config_load_buffer(&cfg, (const char *)data, size, "fuzz.json", errmsg) == 0 &&
        config_apply_env(&cfg, env, errmsg) == 0 && config_apply_flags(&cfg, 3, argv, &help, errmsg) == 0 &&
        config_validate(&cfg, errmsg) == 0) {
        struct buf out;
        struct config back;
        buf_init(&out);
        config_dump_json(&cfg, &out);
        /* What the dump says must load back (the redacted token aside, it is the same config). */
        config_init_defaults(&back);
        if (config_load_buffer(&back, (const char *)out.data, out.len, "dump", errmsg) != 0) {
            __builtin_trap();
        }
        config_free(&back);
        buf_close(&out);
    }
    /* Every message is a terminated string that starts with the module's prefix. */
    if (strnlen(errmsg, GERR_MSG_SIZE) == GERR_MSG_SIZE ||
        (errmsg[0] != '\0' && strncmp(errmsg, "config: ", 8) != 0)) {
        __builtin_trap();
    }
    config_free(&cfg);
    return 0;
}
