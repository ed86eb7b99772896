/* Allocation that cannot fail from the caller's point of view.
 *
 * Decision (docs/architecture.md, "Out of memory"): a control-plane replica that cannot allocate a
 * few hundred bytes is not going to make progress safely, and Linux overcommits anyway, so these
 * functions log and abort() instead of returning NULL. The cluster survives the loss of a replica;
 * it does not survive a replica that limps on with half-initialised state. Sizes that come from a
 * peer must be capped by the caller *before* allocating (see store/proto.h limits). */
#ifndef GANTRY_LIB_MEM_H
#define GANTRY_LIB_MEM_H

#include <stdbool.h>
#include <stddef.h>

void *mem_alloc(size_t size);               /* uninitialised */
void *mem_zalloc(size_t size);              /* zeroed */
void *mem_realloc(void *p, size_t size);    /* like realloc; size 0 frees and returns NULL */
char *mem_strdup(const char *s);            /* s must not be NULL */
char *mem_strndup(const char *s, size_t n); /* copies at most n bytes and NUL-terminates */
void mem_free(void *p);                     /* NULL is fine */

/* For a long-running replica, before it starts threads: makes glibc's malloc serve blocks of 64 KiB
 * and more with their own mappings, given back to the system when freed, and trim the heap's top
 * past 128 KiB free. glibc otherwise raises its mmap threshold to the size of each large block freed
 * (up to 32 MiB), after which Raft entries (tens to hundreds of KiB each, freed as snapshots cover
 * them) are carved from the arenas and their memory stays with the process (docs/architecture.md,
 * "Memory"). Does nothing when GLIBC_TUNABLES names a malloc setting: the operator's choice wins.
 * Returns true when it changed the settings. */
bool mem_tune_for_server(void);

#endif
