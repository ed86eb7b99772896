/* Paging of the List and Query calls, as pure functions: how many items a page gets, and where it
 * continues.
 *
 * A page size of 0 means the default (PAGE_RULES_DEFAULT); a larger one than the list's maximum
 * (PAGE_RULES_MAX, docs/resources.md) is clamped to it, never refused, so a client that asks for
 * "everything" still gets a next_page_token and pages. A page token is the sort key of the last
 * item of the previous page. Clients must treat it as opaque; the server refuses any token that
 * does not have the shape of one it issues for that list (INVALID_ARGUMENT), so garbage, or 100 KB
 * of it, never reaches a query. */
#ifndef GANTRY_API_RULES_PAGE_H
#define GANTRY_API_RULES_PAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gantry/v1/meta.pb-c.h"

#define PAGE_RULES_DEFAULT   100u
#define PAGE_RULES_MAX       500u
#define PAGE_RULES_TOKEN_MAX 128u /* the longest token any list issues: "<namespace>/<name>" */

/* What a list's page token is. */
enum page_key {
    PAGE_KEY_NAME = 1, /* a DNS-1123 label of at most 63 characters: namespaces, providers, quotas */
    PAGE_KEY_NS_NAME,  /* "<namespace>/<name>", two such labels: sandboxes */
    PAGE_KEY_UUID,     /* a lowercase 8-4-4-4-12 hex UUID: principals, role bindings */
    PAGE_KEY_HEX32,    /* 32 lowercase hex digits: API key ids */
    PAGE_KEY_HEX16,    /* 16 lowercase hex digits: join token ids */
    PAGE_KEY_SEQ,      /* a positive decimal number below 2^63: audit event ids */
    PAGE_KEY_NONE,     /* the call answers in one reply: any token is refused */
};

struct page_req {
    unsigned limit;    /* items on this page: 1..PAGE_RULES_MAX */
    const char *after; /* the token, "" for the first page (points into the request) */
    int64_t after_seq; /* PAGE_KEY_SEQ: the token's value, 0 for the first page */
};

/* Read @p (NULL: the first page at the default size) for a list keyed by @key. true with @out
 * filled, or false with the INVALID_ARGUMENT message in @why (it names page.page_token and never
 * quotes the token). */
bool page_rules_read(const Gantry__V1__PageRequest *p, enum page_key key, struct page_req *out, char *why,
                     size_t len);

#endif
