/* Name rules shared by every object (lib/names.h). */
#include "lib/names.h"

#include <stdio.h>
#include <string.h>

/* A DNS-1123 label of at most @max characters: lowercase alphanumerics and '-', starting and ending
 * with an alphanumeric. Writes the reason into @why. */
bool names_dns_label_ok(const char *s, size_t max, char *why, size_t why_size)
{
    size_t len = strlen(s);
    if (len == 0) {
        snprintf(why, why_size, "must not be empty");
        return false;
    }
    if (len > max) {
        snprintf(why, why_size, "is %zu characters long, at most %zu are allowed", len, max);
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && c != '-') {
            if (c >= 'A' && c <= 'Z') {
                snprintf(why, why_size, "contains uppercase '%c' (only lowercase letters, digits and '-')",
                         c);
            } else {
                snprintf(why, why_size, "contains a character other than lowercase letters, digits and '-'");
            }
            return false;
        }
    }
    if (s[0] == '-' || s[len - 1] == '-') {
        snprintf(why, why_size, "must start and end with a letter or digit");
        return false;
    }
    return true;
}
