/* Whole small files (certificates, keys, tokens), read with a size cap. */
#ifndef GANTRY_LIB_FILE_H
#define GANTRY_LIB_FILE_H

#include <stddef.h>

/* Read @path into a new NUL-terminated heap buffer (*@out, mem_free it; *@len without the NUL,
 * may be NULL). Refuses files larger than @max bytes with GERR_TOOBIG; a missing file is
 * GERR_NOTFOUND; other failures GERR_IO or GERR_PERM. The message in @errmsg names the path. */
int file_read_all(const char *path, size_t max, char **out, size_t *len, char *errmsg);

#endif
