/* Labels of an object: checks, the stored form and selectors (api/rules/labels.h). */
#include "api/rules/labels.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "lib/err.h"
#include "lib/mem.h"

static bool label_key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > 63) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-' || c == '/')) {
            return false;
        }
    }
    return true;
}

int labels_check(Gantry__V1__ObjectMeta__LabelsEntry *const *labels, size_t n, const char *what, char *errmsg)
{
    if (n > 64) {
        gerr_set(errmsg, "%s: at most 64 labels", what);
        return GERR_INVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!label_key_ok(labels[i]->key)) {
            gerr_set(errmsg, "%s: key %zu is not 1..63 characters of letters, digits, '.', '_', '-', '/'",
                     what, i);
            return GERR_INVAL;
        }
        if (strlen(labels[i]->value) > 256) {
            gerr_set(errmsg, "%s: the value of \"%s\" is over 256 bytes", what, labels[i]->key);
            return GERR_INVAL;
        }
    }
    return 0;
}

char *labels_json(Gantry__V1__ObjectMeta__LabelsEntry *const *labels, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; i < n; i++) {
        json_object_set_new(o, labels[i]->key, json_string(labels[i]->value));
    }
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    char *out = mem_strdup(text != NULL ? text : "{}");
    free(text);
    return out;
}

bool labels_match(const char *json, const Gantry__V1__LabelSelector *sel)
{
    if (sel == NULL || sel->n_match_labels == 0) {
        return true;
    }
    json_t *o = json_loads(json, 0, NULL);
    bool ok = o != NULL;
    for (size_t i = 0; ok && i < sel->n_match_labels; i++) {
        const char *v = json_string_value(json_object_get(o, sel->match_labels[i]->key));
        ok = v != NULL && strcmp(v, sel->match_labels[i]->value) == 0;
    }
    json_decref(o);
    return ok;
}
