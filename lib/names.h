/* Name rules shared by every object and setting. Pure. */
#ifndef GANTRY_LIB_NAMES_H
#define GANTRY_LIB_NAMES_H

#include <stdbool.h>
#include <stddef.h>

/* Is @s a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or
 * digit) of 1..@max characters? If not, a reason that does not quote @s goes to @why. */
bool names_dns_label_ok(const char *s, size_t max, char *why, size_t why_size);

#endif
