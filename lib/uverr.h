/* The one translation of libuv error codes (negative UV_E*) into GERR_* codes, for every file
 * of server/. The libuv text goes into @errmsg (may be NULL). 0 gives 0. */
#ifndef GANTRY_LIB_UVERR_H
#define GANTRY_LIB_UVERR_H

int uverr_to_gerr(int rv, char *errmsg);

#endif
