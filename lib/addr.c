#include "lib/addr.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "lib/err.h"

int addr_parse_ipv4(const char *address, struct sockaddr_in *sa, int allow_port_zero)
{
    char host[INET_ADDRSTRLEN];
    const char *colon;

    if (address == NULL || (colon = strrchr(address, ':')) == NULL || colon == address ||
        (size_t)(colon - address) >= sizeof host) {
        return GERR_INVAL;
    }
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    const char *p = colon + 1;
    if (*p < '0' || *p > '9') {
        return GERR_INVAL;
    }
    char *end;
    long port = strtol(p, &end, 10);
    if (*end != '\0' || port < (allow_port_zero ? 0 : 1) || port > 65535) {
        return GERR_INVAL;
    }
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : GERR_INVAL;
}
