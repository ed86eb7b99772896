#include "mem.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void mem_oom(size_t size)
{
    fprintf(stderr, "gantry: out of memory allocating %zu bytes, aborting\n", size);
    abort();
}

void *mem_alloc(size_t size)
{
    void *p = malloc(size == 0 ? 1 : size);
    if (p == NULL) {
        mem_oom(size);
    }
    return p;
}

void *mem_zalloc(size_t size)
{
    void *p = calloc(1, size == 0 ? 1 : size);
    if (p == NULL) {
        mem_oom(size);
    }
    return p;
}

void *mem_realloc(void *p, size_t size)
{
    void *q;
    if (size == 0) {
        free(p);
        return NULL;
    }
    q = realloc(p, size);
    if (q == NULL) {
        mem_oom(size);
    }
    return q;
}

char *mem_strdup(const char *s)
{
    return mem_strndup(s, strlen(s));
}

char *mem_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = mem_alloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void mem_free(void *p)
{
    free(p);
}

bool mem_tune_for_server(void)
{
    const char *t = getenv("GLIBC_TUNABLES");
    if (t != NULL && strstr(t, "glibc.malloc.") != NULL) {
        return false;
    }
    /* Setting either threshold also turns glibc's dynamic adjustment of both off. */
    int ok = mallopt(M_MMAP_THRESHOLD, 64 * 1024);
    ok &= mallopt(M_TRIM_THRESHOLD, 128 * 1024);
    return ok == 1;
}
