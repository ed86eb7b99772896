/* The operator console (docs/console.md): a web page served by gantryd on its admin port under
 * /console/, showing live, for the principal signed in: the members with their role, the leader,
 * reachability and last contact; the reconciler lease's holder and epoch; sandboxes per namespace
 * with their phase; quota use per namespace; the audit tail with filters; and, for a Platform
 * Admin, a drill that transfers leadership and measures the unavailability window.
 *
 * Routes (paths under /console; every answer carries a strict Content-Security-Policy, no-store,
 * nosniff, no framing):
 *   GET  /console/, /console/app.js, /console/app.css   the page (static, embedded in gantryd)
 *   POST /console/api/login     {"token": "<API key or OIDC token>"} -> 200 {"principal"} and the
 *                               session cookie; 401 with the API's reason
 *   POST /console/api/logout    forget the session, end its live views -> 204
 *   GET  /console/api/session   200 {"principal"} or 401
 *   GET  /console/api/snapshot  one snapshot (server/console_feed.h), filters in the query
 *   GET  /console/api/events    the same as server-sent events, one "snapshot" event every
 *                               refresh_ms; "signed-out" when the credential stops working
 *   POST /console/api/drill     {"target_id": N} -> 202 {"drill"}; 403 without platform_admin,
 *                               409 while a drill runs (server/console_drill.h)
 * POSTs need the header X-Gantry-Console: 1, a JSON content type and, when the browser sends an
 * Origin, the same origin as Host: a cross-site form or script cannot make them. Bad input is 400
 * with a reason and changes nothing.
 *
 * Sessions: sign-in checks the credential with Principals.WhoAmI; the session keeps it in memory
 * only (never on disk, wiped when forgotten) and every piece of data is fetched with it through
 * the gate, so the console sees exactly what the API lets that principal see, and a revoked key
 * stops it within the API's bound. The cookie (HttpOnly, SameSite=Strict, Path=/console; Secure
 * when the page came over https) carries a random 256-bit id. At most CONSOLE_MAX_SESSIONS
 * sessions per replica and CONSOLE_MAX_SESSIONS_PER_PRINCIPAL per principal (a principal at its
 * cap loses its own least recently used one; a full table loses the least recently used of all,
 * so one principal signing in again and again cannot push the others out), each forgotten after
 * session_idle_s unused
 * or 12 h in all. Sessions are per replica: another replica's console asks to sign in again.
 *
 * Threads: console_handle runs on the loop thread (the admin endpoint's handler); a console thread
 * makes the calls (sign-in, snapshots, the refresh of live views) and hands answers back to the
 * loop through a uv_async; the drill has a thread of its own. At most max_streams live views.
 *
 * Lifecycle: console_start on the loop thread before it runs; console_shutdown on the loop thread
 * when the admin endpoint closes (every exchange is finished, the async handle closed);
 * console_free once the loop has ended, before the gate and the worker pool stop. */
#ifndef GANTRY_SERVER_CONSOLE_H
#define GANTRY_SERVER_CONSOLE_H

#include <stdint.h>

#include <uv.h>

#include "api/gate/gate.h"
#include "raft/replica.h"
#include "server/admin.h"
#include "store/writer.h"

#define CONSOLE_PREFIX                     "/console"
#define CONSOLE_MAX_SESSIONS               64u
#define CONSOLE_MAX_SESSIONS_PER_PRINCIPAL 8u

struct console_config {
    uv_loop_t *loop;
    struct gate *gate;           /* every call the console makes goes through it */
    struct replica *replica;     /* the drill watches the leader change in its view */
    struct store_writer *writer; /* the drill's probe writes */
    uint64_t replica_id;
    const char *replica_name; /* copied */
    unsigned max_streams;     /* 0: 8 */
    unsigned refresh_ms;      /* 0: 500 */
    unsigned session_idle_s;  /* 0: 1800 */
};

struct console;

/* Start the console thread. Returns 0, or GERR_NOMEM (no thread) with @errmsg. */
int console_start(const struct console_config *cfg, struct console **out, char *errmsg);

/* The admin endpoint's handler (server/admin.h admin_handler_cb) for paths under CONSOLE_PREFIX;
 * @data is the console. */
void console_handle(void *data, struct admin_exchange *x, const struct admin_request *req);

/* Loop thread: finish every exchange (pending answers 503, live views end) and close the async
 * handle; later requests are answered 503. */
void console_shutdown(struct console *c);

/* After the loop ended: join the threads, wipe and free everything. NULL is ignored. */
void console_free(struct console *c);

#endif
