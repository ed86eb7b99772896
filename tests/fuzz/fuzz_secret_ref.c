/* libFuzzer harness for api/rules/secret_ref.h: a provider config value as a caller sends it, parsed
 * as a Kubernetes Secret reference ("<namespace>/<name>/<data key>"), and the rule of who may
 * reference it.
 *
 * Input: the bytes as the value (copied into a heap block of exactly their size plus the NUL, so
 * ASan sees any overread; a NUL inside ends the value, as in the C string the handler gets).
 *
 * Promises checked (abort() on a broken one): parse answers 0 or GERR_INVAL; on GERR_INVAL the
 * output is zeroed; on 0 the three parts are non-empty and joined with '/' give the input back, the
 * namespace is at most 63 characters of a-z, 0-9, '-', the name a ServiceAccount-style DNS-1123
 * subdomain (authz_sa_name_ok), and the key 1..253 characters of [-._a-zA-Z0-9] and not "." or "..";
 * a platform_admin may reference any parsed Secret, a caller without scope none, and a scope of "*"
 * for both lists every one. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/rules/secret_ref.h"
#include "lib/err.h"
#include "lib/mem.h"

static void check(int ok)
{
    if (!ok) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *value = mem_alloc(size + 1);
    memcpy(value, data, size);
    value[size] = '\0';
    struct secret_ref r;
    int rv = secret_ref_parse(value, &r);
    check(rv == 0 || rv == GERR_INVAL);
    if (rv != 0) {
        check(r.ns[0] == '\0' && r.name[0] == '\0' && r.key[0] == '\0');
        mem_free(value);
        return 0;
    }
    char joined[700];
    snprintf(joined, sizeof joined, "%s/%s/%s", r.ns, r.name, r.key);
    check(strcmp(joined, value) == 0);
    check(r.ns[0] != '\0' && strlen(r.ns) <= 63 &&
          strspn(r.ns, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(r.ns));
    check(authz_sa_name_ok(r.name));
    size_t n = strlen(r.key);
    check(n > 0 && n <= 253 && strcmp(r.key, ".") != 0 && strcmp(r.key, "..") != 0);
    check(strspn(r.key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._") == n);
    char why[GERR_MSG_SIZE];
    check(secret_ref_allowed(&r, true, NULL, 0, why, sizeof why));
    check(!secret_ref_allowed(&r, false, NULL, 0, why, sizeof why) && why[0] != '\0');
    struct authz_scope all;
    check(authz_scope_parse("{\"namespace_patterns\":[\"a\"],\"allowed_secret_namespaces\":[\"*\"],"
                            "\"allowed_secret_names\":[\"*\"]}",
                            &all) == 0);
    const struct authz_scope *one[] = {&all};
    check(secret_ref_allowed(&r, false, one, 1, why, sizeof why));
    mem_free(value);
    return 0;
}
