/* Paging of the List and Query calls (api/rules/page.h). */
#include "api/rules/page.h"

#include <stdio.h>
#include <string.h>

#include "lib/names.h"

static bool lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    return true;
}

static bool is_uuid(const char *s, size_t n)
{
    if (n != 36) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !lower_hex(s + i, 1)) {
            return false;
        }
    }
    return true;
}

static bool is_label(const char *s, size_t n)
{
    char copy[64], why[160];
    if (n == 0 || n >= sizeof copy) {
        return false;
    }
    memcpy(copy, s, n);
    copy[n] = '\0';
    return names_dns_label_ok(copy, 63, why, sizeof why);
}

/* 1..2^63-1 in plain decimal: no sign, no leading zero, no overflow. */
static bool is_seq(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 19 || s[0] == '0') {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX) {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

static bool token_ok(const char *t, size_t n, enum page_key key, int64_t *seq)
{
    const char *slash;
    switch (key) {
    case PAGE_KEY_NAME:
        return is_label(t, n);
    case PAGE_KEY_NS_NAME:
        slash = memchr(t, '/', n);
        return slash != NULL && is_label(t, (size_t)(slash - t)) &&
               is_label(slash + 1, n - (size_t)(slash - t) - 1);
    case PAGE_KEY_UUID:
        return is_uuid(t, n);
    case PAGE_KEY_HEX32:
        return n == 32 && lower_hex(t, n);
    case PAGE_KEY_HEX16:
        return n == 16 && lower_hex(t, n);
    case PAGE_KEY_SEQ:
        return is_seq(t, n, seq);
    case PAGE_KEY_NONE:
        return false;
    }
    return false;
}

bool page_rules_read(const Gantry__V1__PageRequest *p, enum page_key key, struct page_req *out, char *why,
                     size_t len)
{
    *out = (struct page_req){.limit = PAGE_RULES_DEFAULT, .after = "", .after_seq = 0};
    if (p == NULL) {
        return true;
    }
    if (p->page_size != 0) {
        out->limit = p->page_size > PAGE_RULES_MAX ? PAGE_RULES_MAX : p->page_size;
    }
    const char *t = p->page_token != NULL ? p->page_token : "";
    if (t[0] == '\0') {
        return true;
    }
    /* Bounded before anything looks at it: a token longer than any the server issues is refused
     * without being read to its end. */
    size_t n = strnlen(t, PAGE_RULES_TOKEN_MAX + 1);
    if (key == PAGE_KEY_NONE) {
        snprintf(why, len, "page.page_token: this call answers in one reply and takes no page token");
        return false;
    }
    if (n > PAGE_RULES_TOKEN_MAX || !token_ok(t, n, key, &out->after_seq)) {
        snprintf(why, len,
                 "page.page_token is not a token this list issued: pass the next_page_token of the previous "
                 "reply unchanged, or none for the first page");
        return false;
    }
    out->after = t;
    return true;
}
