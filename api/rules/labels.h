/* Labels of an object (ObjectMeta.labels): their checks, their stored form and label selectors.
 * Pure functions. */
#ifndef GANTRY_API_RULES_LABELS_H
#define GANTRY_API_RULES_LABELS_H

#include <stdbool.h>
#include <stddef.h>

#include "gantry/v1/meta.pb-c.h"

/* Labels as stored: a JSON object text with sorted keys. Never fails (allocation aborts); the
 * result is a heap string (mem_free). */
char *labels_json(Gantry__V1__ObjectMeta__LabelsEntry *const *labels, size_t n);

/* At most 64 labels, keys 1..63 of [a-z0-9A-Z._/-], values up to 256 bytes. 0, or GERR_INVAL with
 * a message that starts with @what in @errmsg. */
int labels_check(Gantry__V1__ObjectMeta__LabelsEntry *const *labels, size_t n, const char *what,
                 char *errmsg);

/* Does the stored labels JSON @json match every requirement of @sel (NULL: everything)? */
bool labels_match(const char *json, const Gantry__V1__LabelSelector *sel);

#endif
