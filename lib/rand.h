/* Randomness: cryptographic bytes from the kernel, and cheap jitter. Thread-safe. */
#ifndef GANTRY_LIB_RAND_H
#define GANTRY_LIB_RAND_H

#include <stddef.h>
#include <stdint.h>

/* Fill @p with @n bytes from getrandom(2). Returns 0 or GERR_IO (only if the kernel refuses). */
int rand_bytes(void *p, size_t n);

/* A uniformly distributed value in [lo, hi] (inclusive), not for secrets. */
uint64_t rand_range(uint64_t lo, uint64_t hi);

/* A random RFC 4122 version-4 UUID, lowercase, NUL-terminated. */
void rand_uuid(char out[37]);

/* A time-ordered RFC 9562 version-7 UUID: 48 bits of Unix milliseconds, then 74 random bits.
 * For keys of B-tree indexes that grow with every write (object ids, idempotency keys): new keys
 * land on the index's last page instead of a random one, so a transaction of many inserts
 * writes few pages. Unique like version 4 for practical purposes; it reveals when it was made. */
void rand_uuid7(char out[37]);

#endif
