/* Accepting at a bounded pace per loop turn: see uvpace.h. */
#include "lib/uvpace.h"

#include <stddef.h>

/* The check phase follows the poll phase: the turn's I/O is done. A new turn, a new count; take
 * the connection left waiting (its accept restarts libuv's watch of the listener). */
static void uv_pace_check_cb(uv_check_t *h)
{
    struct uv_pace *p = (struct uv_pace *)((char *)h - offsetof(struct uv_pace, check));
    uv_check_stop(h);
    p->this_turn = 0;
    if (p->deferred && !p->stopped) {
        p->deferred = false;
        p->cb(p->listener, 0);
    }
}

int uv_pace_init(struct uv_pace *p, uv_loop_t *loop, uv_stream_t *listener, unsigned per_turn,
                 uv_connection_cb cb)
{
    p->listener = listener;
    p->cb = cb;
    p->per_turn = per_turn > 0 ? per_turn : 1;
    p->this_turn = 0;
    p->deferred = false;
    p->stopped = false;
    return uv_check_init(loop, &p->check);
}

bool uv_pace_take(struct uv_pace *p)
{
    if (p->this_turn >= p->per_turn) {
        p->deferred = true;
        return false;
    }
    if (p->this_turn++ == 0) {
        uv_check_start(&p->check, uv_pace_check_cb);
    }
    return true;
}

void uv_pace_close(struct uv_pace *p, uv_close_cb close_cb)
{
    p->stopped = true;
    uv_close((uv_handle_t *)&p->check, close_cb);
}
