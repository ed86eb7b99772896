/* Allocation that cannot fail from the caller's point of view.
 *
 * Decision (docs/architecture.md, "Out of memory"): a control-plane replica that cannot allocate a
 * few hundred bytes is not going to make progress safely, and Linux overcommits anyway, so these
 * functions log and abort() instead of returning NULL. The cluster survives the loss of a replica;
 * it does not survive a replica that limps on with half-initialised state. Sizes that come from a
 * peer must be capped by the caller *before* allocating (see store/proto.h limits). */
#ifndef GANTRY_LIB_MEM_H
#define GANTRY_LIB_MEM_H

#include <stddef.h>

void *mem_alloc(size_t size);               /* uninitialised */
void *mem_zalloc(size_t size);              /* zeroed */
void *mem_realloc(void *p, size_t size);    /* like realloc; size 0 frees and returns NULL */
char *mem_strdup(const char *s);            /* s must not be NULL */
char *mem_strndup(const char *s, size_t n); /* copies at most n bytes and NUL-terminates */
void mem_free(void *p);                     /* NULL is fine */

#endif
