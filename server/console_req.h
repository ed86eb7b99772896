/* Decoding what a browser sends the operator console (server/console.h): the filters in a query
 * string, the session cookie, the JSON bodies of sign-in and of a drill. Pure functions over the
 * bytes received (no allocation that outlives a call, no I/O); every decoder here is fuzzed
 * (tests/fuzz/fuzz_console_req.c) and unit-tested (tests/unit/test_console_req.c).
 *
 * Errors: GERR_INVAL with a reason in @errmsg that names the field and never echoes the value (a
 * mistyped key must not land in a log or a page). */
#ifndef GANTRY_SERVER_CONSOLE_REQ_H
#define GANTRY_SERVER_CONSOLE_REQ_H

#include <stddef.h>
#include <stdint.h>

#include "lib/err.h"

#define CONSOLE_SESSION_ID_LEN 64u   /* hex of 32 random bytes */
#define CONSOLE_TOKEN_MAX      4096u /* an API key (80 bytes) or an OIDC token */
#define CONSOLE_COOKIE         "gantry_console"

/* The audit tail's filters ("" for none), from the query string. */
struct console_filter {
    char ns[64];    /* audit_ns: a DNS-1123 label */
    char op[96];    /* audit_op: "/gantry.v1.<Service>/<Method>" */
    char status[8]; /* audit_status: "Success" or "Failure" */
    char actor[64]; /* audit_actor: a principal id (letters, digits, '-', ':', '.', '_') */
};

/* Decode @query (after '?', percent-encoded, '+' as space; "" for none) into @f. Unknown keys are
 * ignored; a key given twice, a malformed escape, a value too long or not of its field's form is
 * GERR_INVAL. */
int console_req_filter(const char *query, struct console_filter *f, char *errmsg);

/* The session id in a Cookie header: 0 and @id filled (CONSOLE_SESSION_ID_LEN lowercase hex
 * digits and a NUL) when the cookie CONSOLE_COOKIE is there and well formed; GERR_NOTFOUND when it
 * is absent; GERR_INVAL when it is malformed. */
int console_req_session(const char *cookie, char id[CONSOLE_SESSION_ID_LEN + 1]);

/* The sign-in body {"token": "<API key or OIDC token>"}: 0 with the token in @token (@cap bytes at
 * least CONSOLE_TOKEN_MAX + 1). The token is 1..CONSOLE_TOKEN_MAX characters of
 * [A-Za-z0-9._~+/=-]. */
int console_req_login(const uint8_t *body, size_t len, char *token, size_t cap, char *errmsg);

/* The drill body {"target_id": N} (N >= 0; 0 or absent: the server picks): 0 with *@target. */
int console_req_drill(const uint8_t *body, size_t len, uint64_t *target, char *errmsg);

#endif
