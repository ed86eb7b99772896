#include "rand.h"

#include <errno.h>
#include <stdio.h>
#include <sys/random.h>
#include <time.h>

#include "err.h"

int rand_bytes(void *p, size_t n)
{
    unsigned char *c = p;
    while (n > 0) {
        ssize_t got = getrandom(c, n, 0);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            return GERR_IO;
        }
        c += got;
        n -= (size_t)got;
    }
    return 0;
}

/* xorshift64* seeded per thread from getrandom; jitter does not need to be unpredictable. */
static _Thread_local uint64_t rand_state;

static uint64_t rand_next(void)
{
    if (rand_state == 0) {
        if (rand_bytes(&rand_state, sizeof rand_state) != 0 || rand_state == 0) {
            rand_state = 0x9e3779b97f4a7c15ull;
        }
    }
    rand_state ^= rand_state >> 12;
    rand_state ^= rand_state << 25;
    rand_state ^= rand_state >> 27;
    return rand_state * 0x2545f4914f6cdd1dull;
}

uint64_t rand_range(uint64_t lo, uint64_t hi)
{
    if (hi <= lo) {
        return lo;
    }
    uint64_t span = hi - lo + 1;
    return span == 0 ? rand_next() : lo + rand_next() % span;
}

void rand_uuid(char out[37])
{
    uint8_t b[16];
    rand_bytes(b, sizeof b);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

void rand_uuid7(char out[37])
{
    uint8_t b[16];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    rand_bytes(b + 6, sizeof b - 6);
    for (int i = 0; i < 6; i++) {
        b[i] = (uint8_t)(ms >> (40 - 8 * i));
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x70);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}
