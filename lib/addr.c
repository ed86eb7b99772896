#include "lib/addr.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

#define addr_err(errmsg, ...)                                                                                \
    do {                                                                                                     \
        if ((errmsg) != NULL) {                                                                              \
            gerr_set((errmsg), __VA_ARGS__);                                                                 \
        }                                                                                                    \
    } while (0)

int addr_parse(const char *s, struct sockaddr_storage *out, char *errmsg)
{
    char host[64];
    const char *port;
    memset(out, 0, sizeof(*out));
    if (s == NULL || s[0] == '\0') {
        addr_err(errmsg, "empty address");
        return GERR_INVAL;
    }
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - s - 1) >= sizeof(host)) {
            addr_err(errmsg, "bad address %s (want [v6]:port)", s);
            return GERR_INVAL;
        }
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        port = end + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon == NULL || (size_t)(colon - s) >= sizeof(host)) {
            addr_err(errmsg, "bad address %s (want host:port)", s);
            return GERR_INVAL;
        }
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        port = colon + 1;
        if (strchr(host, ':') != NULL) {
            addr_err(errmsg, "bad address %s: write an IPv6 address in brackets, [v6]:port", s);
            return GERR_INVAL;
        }
    }
    char *endp;
    long p = strtol(port, &endp, 10);
    if (port[0] < '0' || port[0] > '9' || *endp != '\0' || p < 0 || p > 65535) {
        addr_err(errmsg, "bad port in %s", s);
        return GERR_INVAL;
    }
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)p);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)p);
        return 0;
    }
    addr_err(errmsg, "bad address %s: host must be a numeric IPv4 or IPv6 address", s);
    return GERR_INVAL;
}

bool addr_is_loopback(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)a;
        return (ntohl(v4->sin_addr.s_addr) >> 24) == 127;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)a;
        if (IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) {
            return true;
        }
        return IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr) && v6->sin6_addr.s6_addr[12] == 127;
    }
    return false;
}

bool addr_is_any(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET) {
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr == htonl(INADDR_ANY);
    }
    if (a->ss_family == AF_INET6) {
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)a)->sin6_addr);
    }
    return false;
}

bool addr_same_host(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family) {
        return false;
    }
    if (a->ss_family == AF_INET) {
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    }
    return false;
}

int addr_port(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET) {
        return ntohs(((const struct sockaddr_in *)a)->sin_port);
    }
    if (a->ss_family == AF_INET6) {
        return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
    }
    return 0;
}

int addr_parse_ipv4(const char *address, struct sockaddr_in *sa, int allow_port_zero)
{
    struct sockaddr_storage ss;
    if (addr_parse(address, &ss, NULL) != 0 || ss.ss_family != AF_INET) {
        return GERR_INVAL;
    }
    memcpy(sa, &ss, sizeof *sa);
    if (!allow_port_zero && sa->sin_port == 0) {
        return GERR_INVAL;
    }
    return 0;
}
