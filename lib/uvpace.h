/* Accepting connections at a bounded pace per event-loop turn.
 *
 * libuv's listener accepts until the kernel's backlog is empty, calling the connection callback
 * once per connection. A flood that refills the backlog as fast as the loop accepts (each accepted
 * connection evicting an older one, which frees the attacker to connect again) keeps the loop in
 * that accept loop, and every other connection on the loop waits. With a pacer, at most
 * @per_turn connections are accepted per turn; the next is left in libuv (which stops watching
 * the listener until it is accepted) and handed to the connection callback again after the
 * turn's other I/O, from the pacer's check handle.
 *
 * Use, in the listener's connection callback, before anything else:
 *     if (!uv_pace_take(&pacer)) return;   // not now: the callback runs again for it later
 *     ... uv_accept(listener, ...) ...
 * The callback must accept (uv_accept) whenever uv_pace_take returned true, or close the listener.
 * Loop thread only. */
#ifndef GANTRY_LIB_UVPACE_H
#define GANTRY_LIB_UVPACE_H

#include <stdbool.h>

#include <uv.h>

struct uv_pace {
    uv_check_t check; /* private */
    uv_stream_t *listener;
    uv_connection_cb cb;
    unsigned per_turn, this_turn;
    bool deferred, stopped;
};

/* Initialize @p for @listener, whose connection callback is @cb (called again by the pacer for a
 * connection it deferred, with status 0). @per_turn is at least 1. Returns 0 or a UV_* error. */
int uv_pace_init(struct uv_pace *p, uv_loop_t *loop, uv_stream_t *listener, unsigned per_turn,
                 uv_connection_cb cb);

/* Whether the connection libuv holds may be accepted now (counted); false: leave it, the
 * pacer calls cb for it after this turn's other I/O. */
bool uv_pace_take(struct uv_pace *p);

/* Stop calling cb and close the check handle; @close_cb (may be NULL) gets the check handle,
 * whose data pointer is left to the caller (set it after uv_pace_init). A connection left
 * waiting is closed by libuv with the listener. */
void uv_pace_close(struct uv_pace *p, uv_close_cb close_cb);

#endif
