/* Decoding what a browser sends the operator console (server/console_req.h). */
#include "server/console_req.h"

#include <string.h>

#include <jansson.h>

#include "lib/names.h"

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decode [@s, @s + @n) into @out (@cap bytes with the NUL). Refuses bad escapes, a result
 * that does not fit, and bytes below 0x20 or 0x7f and above (the filters are ASCII). */
static bool decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= n) { /* an escape needs two more characters */
                return false;
            }
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0) {
                return false;
            }
            c = hi * 16 + lo;
            i += 2;
        }
        if (c < 0x20 || c >= 0x7f || o + 1 >= cap) {
            return false;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return true;
}

static bool all_of(const char *s, const char *allowed_extra, bool letters_digits)
{
    for (; *s != '\0'; s++) {
        char c = *s;
        bool ok = (letters_digits &&
                   ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) ||
                  strchr(allowed_extra, c) != NULL;
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* "/gantry.v1.<Service>/<Method>", letters only in the names. */
static bool operation_ok(const char *s)
{
    static const char prefix[] = "/gantry.v1.";
    if (strncmp(s, prefix, sizeof prefix - 1) != 0) {
        return false;
    }
    const char *svc = s + sizeof prefix - 1, *slash = strchr(svc, '/');
    if (slash == NULL || slash == svc || slash[1] == '\0') {
        return false;
    }
    for (const char *p = svc; *p != '\0'; p++) {
        if (p != slash && !((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) {
            return false;
        }
    }
    return true;
}

int console_req_filter(const char *query, struct console_filter *f, char *errmsg)
{
    static const char *const keys[] = {"audit_ns", "audit_op", "audit_status", "audit_actor"};
    memset(f, 0, sizeof *f);
    char *const slots[] = {f->ns, f->op, f->status, f->actor};
    const size_t caps[] = {sizeof f->ns, sizeof f->op, sizeof f->status, sizeof f->actor};
    bool seen[4] = {false, false, false, false};
    const char *p = query != NULL ? query : "";
    while (*p != '\0') {
        const char *end = strchr(p, '&');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        size_t klen = eq != NULL ? (size_t)(eq - p) : n;
        for (int k = 0; k < 4; k++) {
            if (klen != strlen(keys[k]) || memcmp(p, keys[k], klen) != 0) {
                continue;
            }
            if (seen[k]) {
                gerr_set(errmsg, "%s is given twice", keys[k]);
                return GERR_INVAL;
            }
            seen[k] = true;
            const char *v = eq != NULL ? eq + 1 : p + n;
            if (!decode(v, (size_t)(p + n - v), slots[k], caps[k])) {
                gerr_set(errmsg, "%s: a malformed or too long value (at most %zu characters)", keys[k],
                         caps[k] - 1);
                return GERR_INVAL;
            }
        }
        p += n;
        if (*p == '&') {
            p++;
        }
    }
    char why[96];
    if (f->ns[0] != '\0' && !names_dns_label_ok(f->ns, sizeof f->ns - 1, why, sizeof why)) {
        gerr_set(errmsg, "audit_ns: %s", why);
        return GERR_INVAL;
    }
    if (f->op[0] != '\0' && !operation_ok(f->op)) {
        gerr_set(errmsg, "audit_op: want /gantry.v1.<Service>/<Method>");
        return GERR_INVAL;
    }
    if (f->status[0] != '\0' && strcmp(f->status, "Success") != 0 && strcmp(f->status, "Failure") != 0) {
        gerr_set(errmsg, "audit_status: want Success or Failure");
        return GERR_INVAL;
    }
    if (f->actor[0] != '\0' && !all_of(f->actor, "-:._", true)) {
        gerr_set(errmsg, "audit_actor: want a principal id");
        return GERR_INVAL;
    }
    return 0;
}

int console_req_session(const char *cookie, char id[CONSOLE_SESSION_ID_LEN + 1])
{
    static const char name[] = CONSOLE_COOKIE;
    const size_t nlen = sizeof name - 1;
    const char *p = cookie != NULL ? cookie : "";
    while (*p != '\0') {
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        const char *end = strchr(p, ';');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        if (n > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == '=') {
            const char *v = p + nlen + 1;
            size_t vlen = (size_t)(p + n - v);
            while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) {
                vlen--;
            }
            if (vlen != CONSOLE_SESSION_ID_LEN) {
                return GERR_INVAL;
            }
            for (size_t i = 0; i < vlen; i++) {
                if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f'))) {
                    return GERR_INVAL;
                }
            }
            memcpy(id, v, vlen);
            id[vlen] = '\0';
            return 0;
        }
        p += n;
        if (*p == ';') {
            p++;
        }
    }
    return GERR_NOTFOUND;
}

/* A JSON object from @body: NULL with the reason in @errmsg. */
static json_t *object(const uint8_t *body, size_t len, char *errmsg)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL) {
        gerr_set(errmsg, "the body is not JSON (line %d, column %d)", jerr.line, jerr.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        gerr_set(errmsg, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

int console_req_login(const uint8_t *body, size_t len, char *token, size_t cap, char *errmsg)
{
    json_t *j = object(body, len, errmsg);
    if (j == NULL) {
        return GERR_INVAL;
    }
    json_t *t = json_object_get(j, "token");
    const char *s = json_is_string(t) ? json_string_value(t) : NULL;
    size_t n = s != NULL ? json_string_length(t) : 0;
    int rv = 0;
    if (s == NULL || n == 0) {
        gerr_set(errmsg, "token: give the API key (or OIDC token) as a string");
        rv = GERR_INVAL;
    } else if (n > CONSOLE_TOKEN_MAX || n + 1 > cap || strlen(s) != n || !all_of(s, "._~+/=-", true)) {
        gerr_set(errmsg,
                 "token: not an API key or token (at most %u characters of A-Z a-z 0-9 . _ ~ + / = -)",
                 CONSOLE_TOKEN_MAX);
        rv = GERR_INVAL;
    } else if (json_object_size(j) != 1) {
        gerr_set(errmsg, "the body has fields other than token");
        rv = GERR_INVAL;
    } else {
        memcpy(token, s, n + 1);
    }
    json_decref(j);
    return rv;
}

int console_req_drill(const uint8_t *body, size_t len, uint64_t *target, char *errmsg)
{
    json_t *j = object(body, len, errmsg);
    if (j == NULL) {
        return GERR_INVAL;
    }
    json_t *t = json_object_get(j, "target_id");
    int rv = 0;
    *target = 0;
    if (json_object_size(j) > (t != NULL ? 1u : 0u)) {
        gerr_set(errmsg, "the body has fields other than target_id");
        rv = GERR_INVAL;
    } else if (t != NULL && (!json_is_integer(t) || json_integer_value(t) < 0)) {
        gerr_set(errmsg, "target_id: want a member id (a non-negative integer; 0: the server picks)");
        rv = GERR_INVAL;
    } else if (t != NULL) {
        *target = (uint64_t)json_integer_value(t);
    }
    json_decref(j);
    return rv;
}
