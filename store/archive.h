/* The backup archive: the files of a dqlite DUMP (the database and its WAL) in one byte stream,
 * as the Cluster API's Backup call streams it and `gantryd restore` reads it.
 *
 *   "GANTRY-BACKUP 1\n"
 *   then per file: "F <name> <size>\n" <size bytes> "\n"
 *   then "END\n" and nothing after it.
 *
 * Names are 1..64 bytes of [A-Za-z0-9._-], not starting with '.', at most STORE_ARCHIVE_MAX_FILES
 * files, sizes decimal without leading zeros. The parser is strict (any deviation is GERR_INVAL
 * with the offset in the message) and never reads past @len. Pure apart from the files it is told
 * to read or write. */
#ifndef GANTRY_STORE_ARCHIVE_H
#define GANTRY_STORE_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/err.h"

#define STORE_ARCHIVE_MAGIC     "GANTRY-BACKUP 1\n"
#define STORE_ARCHIVE_MAX_FILES 16u

/* Called once per file, in order; @data points into the archive. Non-zero stops the parse and is
 * returned. */
typedef int (*store_archive_file_cb)(const char *name, const uint8_t *data, size_t len, void *arg);

int store_archive_parse(const uint8_t *data, size_t len, store_archive_file_cb cb, void *arg, char *errmsg);

/* Append an archive of the regular files in @dir (sorted by name) to @out. GERR_IO/GERR_NOTFOUND
 * (unreadable), GERR_INVAL (a name the format cannot carry). */
int store_archive_pack_dir(const char *dir, struct buf *out, char *errmsg);

/* Parse @data and write its files into the existing directory @dir (0600). */
int store_archive_unpack(const uint8_t *data, size_t len, const char *dir, char *errmsg);

#endif
