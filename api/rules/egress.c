/* The egress decision point. See egress.h. */
#include "api/rules/egress.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "api/rules/policy.h"
#include "lib/err.h"

static bool given(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* @in lower-cased into @out, one trailing dot dropped; false when it is not a name. */
static bool normalise(const char *in, char *out, size_t len)
{
    size_t n = strlen(in);
    if (n > 0 && in[n - 1] == '.') {
        n--;
    }
    if (n == 0 || n > EGRESS_NAME_MAX || n >= len) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'Z') {
            c = (char)(c - 'A' + 'a');
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_')) {
            return false;
        }
        out[i] = c;
    }
    out[n] = '\0';
    return out[0] != '.' && strstr(out, "..") == NULL;
}

static bool is_ip(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

int egress_intent_check(const struct egress_intent *in, char *why, size_t len)
{
    char name[EGRESS_NAME_MAX + 2];
    bool dns = in->transport == GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_DNS;
    if ((in->port == 0 && !dns) || in->port > 65535) {
        snprintf(why, len, "intent.port must be 1..65535 (0 only for a DNS question: any port)");
        return GERR_INVAL;
    }
    if (in->transport < 0 || in->transport > GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_DNS) {
        snprintf(why, len, "intent.transport is not a known transport");
        return GERR_INVAL;
    }
    const struct {
        const char *field, *value;
    } names[] = {{"intent.host", in->host}, {"intent.sni", in->sni}, {"intent.http_host", in->http_host}};
    bool any = false;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!given(names[i].value)) {
            continue;
        }
        any = true;
        if (!normalise(names[i].value, name, sizeof name)) {
            snprintf(why, len, "%s is not a DNS name (at most %u bytes of letters, digits, '.', '-', '_')",
                     names[i].field, EGRESS_NAME_MAX);
            return GERR_INVAL;
        }
    }
    if (given(in->ip) && !is_ip(in->ip)) {
        snprintf(why, len, "intent.ip is not an IPv4 or IPv6 address");
        return GERR_INVAL;
    }
    if (!any && !given(in->ip)) {
        snprintf(why, len,
                 "the intent names no destination: give intent.host, intent.sni, intent.http_host or "
                 "intent.ip");
        return GERR_INVAL;
    }
    if (in->transport == GANTRY__V1__EGRESS_TRANSPORT__EGRESS_TRANSPORT_DNS && !given(in->host)) {
        snprintf(why, len, "a DNS intent asks about intent.host");
        return GERR_INVAL;
    }
    return 0;
}

/* One destination against one layer: true when allowed, with the entry in @rule. */
static bool layer_allows(const Gantry__V1__Policy *p, const char *dest, unsigned port, char *rule, size_t len)
{
    const char *m = policy_rules_egress_match(p, dest, port);
    if (m != NULL && m[0] != '\0') {
        snprintf(rule, len, "%s", m);
    }
    return m != NULL;
}

void egress_decide(const Gantry__V1__Policy *g, const Gantry__V1__Policy *n, const Gantry__V1__Policy *sb,
                   const struct egress_intent *in, struct egress_decision *out)
{
    memset(out, 0, sizeof *out);
    char dests[3][EGRESS_NAME_MAX + 2];
    size_t nd = 0;
    const char *names[] = {in->host, in->sni, in->http_host};
    for (size_t i = 0; i < 3; i++) {
        if (given(names[i]) && normalise(names[i], dests[nd], sizeof dests[nd])) {
            bool dup = false;
            for (size_t j = 0; j < nd; j++) {
                dup = dup || strcmp(dests[j], dests[nd]) == 0;
            }
            nd += dup ? 0 : 1;
        }
    }
    if (nd == 0 && given(in->ip)) {
        snprintf(dests[nd++], sizeof dests[0], "%s", in->ip);
    }
    /* Outermost first: the first layer that refuses decides; the innermost that restricts reports
     * an allowed intent. */
    const struct {
        const char *name;
        const Gantry__V1__Policy *p;
    } layers[] = {{"gateway", g}, {"namespace", n}, {"sandbox", sb}};
    char port[24]; /* ":443", or " on any port" for a DNS question */
    if (in->port == 0) {
        snprintf(port, sizeof port, " on any port");
    } else {
        snprintf(port, sizeof port, ":%u", in->port);
    }
    char rules[3][300] = {"", "", ""};
    for (size_t i = 0; i < nd; i++) {
        snprintf(out->destination, sizeof out->destination, "%.*s", (int)EGRESS_NAME_MAX, dests[i]);
        for (size_t k = 0; k < 3; k++) {
            if (!layer_allows(layers[k].p, dests[i], in->port, rules[k], sizeof rules[k])) {
                out->layer = layers[k].name;
                snprintf(out->reason, sizeof out->reason,
                         "no entry of the %s policy's egress_allow matches %.253s%.20s", layers[k].name,
                         dests[i], port);
                return;
            }
        }
    }
    out->allowed = true;
    out->layer = "default";
    for (size_t k = 3; k-- > 0;) {
        if (layers[k].p != NULL && layers[k].p->n_egress_allow > 0) {
            out->layer = layers[k].name;
            snprintf(out->rule, sizeof out->rule, "%s", rules[k]);
            break;
        }
    }
    if (strcmp(out->layer, "default") == 0) {
        snprintf(out->reason, sizeof out->reason, "no policy restricts egress: any destination is allowed");
    } else {
        snprintf(out->reason, sizeof out->reason,
                 "%.200s%.20s is allowed by the %.16s policy's egress_allow entry %.180s%s", out->destination,
                 port, out->layer, out->rule, nd > 1 ? " (every name of the connection is allowed)" : "");
    }
}
