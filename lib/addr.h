/* Network addresses as Gantry writes them: "a.b.c.d:port".
 *
 * dqlite 1.11 binds and dials IPv4 literals only and recognises its leader by exact string
 * comparison, so every module that dials or binds a node address parses it here, the same way. */
#ifndef GANTRY_LIB_ADDR_H
#define GANTRY_LIB_ADDR_H

#include <netinet/in.h>

/* Parse "a.b.c.d:port" (port 0..65535; 0 only when @allow_port_zero, for "any free port").
 * Returns 0 or GERR_INVAL; @sa is zeroed and filled on success. */
int addr_parse_ipv4(const char *address, struct sockaddr_in *sa, int allow_port_zero);

#endif
