/* libFuzzer harness for drivers/k8s_claims.h: what the kubernetes driver decodes of agent-sandbox's
 * extensions (SandboxClaim, SandboxClaimList, SandboxWarmPool) and the allocation keys of a
 * driver_config.
 *
 * Input layout: byte 0 selects ((byte - '0') % 4, so the digits '0' to '3' that start the seeds in
 * corpus/k8s_claims/ name them), the rest is the body, copied into a heap block of exactly its
 * size so ASan sees any overread.
 *   0: a SandboxClaim (k8s_claim_decode)
 *   1: a SandboxClaimList (k8s_claim_list_decode, at most 4 items)
 *   2: a SandboxWarmPool's template (k8s_pool_template)
 *   3: driver_config allocation keys: the body split at the first two NULs into the values of
 *      "allocation", "template" and "warm_pool" (k8s_allocation_of); when accepted as a claim, the
 *      claim manifest and the claimed patch are rendered and must be JSON.
 *
 * Promises checked (abort() otherwise): decoders answer 0 or GERR_PROTO; on success a claim has a
 * name, its bound name is empty or a DNS subdomain, its message is printable ASCII, failed only
 * while unbound; a pool template is a DNS subdomain; allocation answers 0 or GERR_INVAL, and a claim
 * it accepts names exactly one of template and warm_pool. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "drivers/driver_internal.h"
#include "drivers/k8s_claims.h"
#include "lib/mem.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
    if (!ok) {
        abort();
    }
}

static bool printable(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e) {
            return false;
        }
    }
    return true;
}

static void check_claim(const struct k8s_claim *c)
{
    check(c->name[0] != '\0' && printable(c->message));
    check(c->bound[0] == '\0' || driver_is_dns_subdomain(c->bound));
    check(!c->failed || c->bound[0] == '\0');
    check(c->sandbox_id[0] == '\0' || strlen(c->sandbox_id) == 36);
}

static bool is_json(char *doc)
{
    json_error_t jerr;
    json_t *j = doc != NULL ? json_loads(doc, 0, &jerr) : NULL;
    bool ok = json_is_object(j);
    json_decref(j);
    mem_free(doc);
    return ok;
}

static bool utf8(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

static void fuzz_allocation(const char *body, size_t n)
{
    char errmsg[GERR_MSG_SIZE];
    const char *vals[3] = {NULL, NULL, NULL};
    size_t at = 0;
    for (int i = 0; i < 3 && at <= n; i++) {
        vals[i] = body + at;
        at += strnlen(body + at, n - at) + 1;
    }
    struct driver_kv kv[3];
    size_t k = 0;
    const char *keys[3] = {"allocation", "template", "warm_pool"};
    for (int i = 0; i < 3; i++) {
        if (vals[i] != NULL && vals[i][0] != '\0' && vals[i] + strlen(vals[i]) < body + n + 1) {
            kv[k].key = keys[i];
            kv[k].value = vals[i];
            k++;
        }
    }
    struct driver_sandbox_spec spec = {.id = "0f8fad5b-d9cb-469f-a165-70867728950e",
                                       .namespace = "team-a",
                                       .name = "agent",
                                       .owner = "p1",
                                       .driver_config = kv,
                                       .n_driver_config = k};
    struct k8s_allocation a;
    int rv = k8s_allocation_of(&spec, &a, errmsg);
    check(rv == 0 || rv == GERR_INVAL);
    if (rv != 0 || !a.claim) {
        return;
    }
    check((a.template_name == NULL) != (a.warm_pool == NULL));
    const char *tmpl = a.template_name != NULL ? a.template_name : "tpl";
    if (!utf8(tmpl) || (a.warm_pool != NULL && !utf8(a.warm_pool))) {
        return; /* not UTF-8: a DNS subdomain never is, so unreachable */
    }
    check(is_json(k8s_claim_manifest(&spec, "gw", "ns", "team-a--agent", 7, tmpl, a.warm_pool)));
    check(is_json(k8s_claimed_patch(&spec, "gw", 7, "team-a--agent", "42")));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char errmsg[GERR_MSG_SIZE];
    if (size == 0) {
        return 0;
    }
    size_t n = size - 1;
    char *body = malloc(n + 1);
    memcpy(body, data + 1, n);
    body[n] = '\0';
    switch ((data[0] - '0') % 4) {
    case 0: {
        struct k8s_claim c;
        int rv = k8s_claim_decode(body, n, &c, errmsg);
        check(rv == 0 || rv == GERR_PROTO);
        if (rv == 0) {
            check_claim(&c);
        }
        break;
    }
    case 1: {
        struct k8s_claim c[4];
        size_t got = 99;
        int rv = k8s_claim_list_decode(body, n, c, 4, &got, errmsg);
        check(rv == 0 || rv == GERR_PROTO);
        check(got <= 4);
        for (size_t i = 0; rv == 0 && i < got; i++) {
            check_claim(&c[i]);
        }
        break;
    }
    case 2: {
        char tmpl[254];
        int rv = k8s_pool_template(body, n, tmpl, errmsg);
        check(rv == 0 || rv == GERR_PROTO);
        check(rv != 0 || driver_is_dns_subdomain(tmpl));
        break;
    }
    default:
        fuzz_allocation(body, n);
        break;
    }
    free(body);
    return 0;
}
