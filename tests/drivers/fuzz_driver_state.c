/* libFuzzer harness for the process and fake drivers' on-disk formats (drivers/process.h,
 * drivers/fake.h): files another process, an older version or a crash may have left behind.
 * Built by tests/fuzz/drivers.cmake as fuzz_driver_state; seeds in tests/fuzz/corpus/driver_state/.
 *
 * Input layout: byte 0 selects the decoder ((byte - '0') % 6: seeds start with '0'..'5'):
 *   0: a process driver state file (process_state_decode); when it decodes, it is encoded again
 *      and must decode to the same values;
 *   1: bwrap's --json-status-fd stream (process_status_decode);
 *   2: a /proc/<pid>/stat line (process_stat_decode);
 *   3: the epoch file (process_epoch_decode);
 *   4: the fake driver's shared state file (fake_state_decode);
 *   5: a process driver output log (drivers/process_log.h): records walked with
 *      plog_header_decode as a reader does; every accepted length is within PLOG_CHUNK_MAX.
 * Promises checked: the only codes are 0 and GERR_PROTO; outputs are zeroed on failure; decoded
 * pids are within 0..DRIVER_PROCESS_PID_MAX; errmsg is terminated. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/fake.h"
#include "drivers/process.h"
#include "drivers/process_log.h"
#include "lib/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
    if (!ok) {
        abort();
    }
}

static void state_roundtrip(const char *body, size_t n, char *errmsg)
{
    struct process_state st, back;
    int rv = process_state_decode(body, n, &st, errmsg);
    check(rv == 0 || rv == GERR_PROTO);
    if (rv != 0) {
        check(st.id == NULL && st.ns == NULL && st.name == NULL);
        return;
    }
    check(st.bwrap_pid >= 0 && st.bwrap_pid <= DRIVER_PROCESS_PID_MAX);
    check(st.init_pid >= 0 && st.init_pid <= DRIVER_PROCESS_PID_MAX);
    size_t len;
    char *text = process_state_encode(&st, NULL, &len);
    check(text != NULL && process_state_decode(text, len, &back, errmsg) == 0);
    check(strcmp(back.id, st.id) == 0 && strcmp(back.ns, st.ns) == 0 && strcmp(back.name, st.name) == 0);
    check(back.epoch == st.epoch && back.init_pid == st.init_pid && back.init_start == st.init_start &&
          back.pidns == st.pidns && back.bwrap_pid == st.bwrap_pid);
    process_state_close(&back);
    process_state_close(&st);
    mem_free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errmsg[GERR_MSG_SIZE];
    if (size == 0) {
        return 0;
    }
    size_t n = size - 1;
    char *body = mem_alloc(n > 0 ? n : 1);
    memcpy(body, data + 1, n);
    memset(errmsg, 'X', sizeof errmsg);
    switch ((uint8_t)(data[0] - '0') % 6) {
    case 0:
        state_roundtrip(body, n, errmsg);
        break;
    case 1: {
        struct process_status st;
        int rv = process_status_decode(body, n, &st, errmsg);
        check(rv == 0 || rv == GERR_PROTO);
        check(st.child_pid >= 0 && st.child_pid <= DRIVER_PROCESS_PID_MAX);
        check(!st.exited || (st.exit_code >= 0 && st.exit_code <= 255));
        break;
    }
    case 2: {
        struct process_stat st;
        int rv = process_stat_decode(body, n, &st, errmsg);
        check(rv == 0 || (rv == GERR_PROTO && st.starttime == 0));
        break;
    }
    case 3: {
        uint64_t e = 7;
        int rv = process_epoch_decode(body, n, &e, errmsg);
        check(rv == 0 || (rv == GERR_PROTO && e == 7));
        break;
    }
    case 5: {
        size_t off = 0;
        for (;;) {
            uint64_t ts;
            uint32_t len, flags;
            int rv = plog_header_decode((const uint8_t *)body + off, n - off, &ts, &len, &flags);
            check(rv == 0 || rv == GERR_BUSY || rv == GERR_PROTO);
            if (rv != 0) {
                check(rv != GERR_BUSY || n - off < PLOG_HEADER);
                break;
            }
            check(len <= PLOG_CHUNK_MAX && (flags & ~PLOG_FLAG_END) == 0);
            if (n - off - PLOG_HEADER < len) {
                break; /* a partial record: a reader waits for the rest */
            }
            off += PLOG_HEADER + len;
        }
        break;
    }
    default: {
        struct fake_state *st = NULL;
        int rv = fake_state_decode(body, n, &st, errmsg);
        check((rv == 0 && st != NULL) || (rv == GERR_PROTO && st == NULL));
        fake_state_free(st);
        break;
    }
    }
    check(memchr(errmsg, '\0', sizeof errmsg) != NULL || errmsg[0] == 'X');
    mem_free(body);
    return 0;
}
