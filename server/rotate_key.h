/* `gantryd rotate-provider-key` and `gantryd rotate-pepper`: one-shot commands that joins the running cluster
 * this replica belongs to through its peer TLS (like gantry-store), adds a key to the provider key ring and
 * re-encrypts every provider secret under it (api/services/providers_svc.h). */
#ifndef GANTRY_SERVER_ROTATE_KEY_H
#define GANTRY_SERVER_ROTATE_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct config;

/* Run the command with @cfg (gantryd's configuration); prints what it did to @out. Returns the
 * process exit status (0, or 1 with a message on stderr). */
int rotate_key_command(const struct config *cfg, FILE *out);

/* `gantryd rotate-pepper` (@rotate) and `gantryd pepper-status`: the same way into the cluster;
 * add a version of the API-key pepper (api/services/pepper_ring.h) when @rotate, then print the
 * current version and how many API keys (not revoked) each version hashed, so an operator knows
 * when no key uses an old one. Returns the exit status (0, or 1 with a message on stderr). */
int rotate_pepper_command(const struct config *cfg, bool rotate, FILE *out);

/* The cluster's peer addresses as this replica knows them (its own, then <data_dir>/peers) into
 * @out, pointing into @list. Returns how many (at most @max). */
unsigned rotate_key_peer_addresses(const struct config *cfg, char *list, size_t len, const char **out,
                                   unsigned max);

#endif
