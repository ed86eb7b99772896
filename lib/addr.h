/* Network addresses as Gantry writes them: "a.b.c.d:port" and "[v6]:port", numeric hosts only: a
 * control plane binds and dials where it is told; it does not resolve names at startup.
 *
 * dqlite 1.11 binds and dials IPv4 literals only and recognises its leader by exact string
 * comparison, so node addresses go through addr_parse_ipv4; listen addresses of the API and admin
 * ports may also be IPv6 (addr_parse). Every module parses addresses here, the same way. */
#ifndef GANTRY_LIB_ADDR_H
#define GANTRY_LIB_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <sys/socket.h>

/* Parse "a.b.c.d:port" or "[v6]:port" (port 0..65535) into @out. Returns 0 or GERR_INVAL with the
 * reason in @errmsg (GERR_MSG_SIZE bytes; may be NULL). */
int addr_parse(const char *s, struct sockaddr_storage *out, char *errmsg);

/* True for 127.0.0.0/8, ::1 and ::ffff:127.x.y.z. */
bool addr_is_loopback(const struct sockaddr_storage *a);

/* True for the wildcard addresses 0.0.0.0 and ::. */
bool addr_is_any(const struct sockaddr_storage *a);

/* True if both are the same family and host (ports ignored). */
bool addr_same_host(const struct sockaddr_storage *a, const struct sockaddr_storage *b);

/* The port of a parsed or bound socket address (0 for other families). */
int addr_port(const struct sockaddr_storage *a);

/* Parse "a.b.c.d:port" (port 0..65535; 0 only when @allow_port_zero, for "any free port").
 * Returns 0 or GERR_INVAL; @sa is zeroed and filled on success. */
int addr_parse_ipv4(const char *address, struct sockaddr_in *sa, int allow_port_zero);

#endif
