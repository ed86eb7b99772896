/* Listen addresses: "127.0.0.1:8443", "[::1]:8443", "0.0.0.0:0". Numeric hosts only: a control
 * plane binds where it is told, it does not resolve names at startup. */
#ifndef GANTRY_SERVER_ADDR_H
#define GANTRY_SERVER_ADDR_H

#include <stdbool.h>

#include <sys/socket.h>

/* Parse @s into @out. Returns 0 or GERR_INVAL with the reason in @errmsg. */
int addr_parse(const char *s, struct sockaddr_storage *out, char *errmsg);

/* True for 127.0.0.0/8 and ::1 (and ::ffff:127.x.y.z). */
bool addr_is_loopback(const struct sockaddr_storage *a);

/* The bound port of a socket address. */
int addr_port(const struct sockaddr_storage *a);

#endif
