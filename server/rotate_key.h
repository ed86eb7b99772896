/* `gantryd rotate-provider-key`: a one-shot command that joins the running cluster this replica
 * belongs to through its peer TLS (like gantry-store), adds a key to the provider key ring and
 * re-encrypts every provider secret under it (api/services/providers_svc.h). */
#ifndef GANTRY_SERVER_ROTATE_KEY_H
#define GANTRY_SERVER_ROTATE_KEY_H

#include <stdio.h>

struct config;

/* Run the command with @cfg (gantryd's configuration); prints what it did to @out. Returns the
 * process exit status (0, or 1 with a message on stderr). */
int rotate_key_command(const struct config *cfg, FILE *out);

#endif
