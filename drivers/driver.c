/* The public driver functions: shared argument checks, the mutex, then the driver's op. */
#include "drivers/driver.h"

#include <string.h>

#include "drivers/driver_internal.h"
#include "lib/buf.h"
#include "lib/clock.h"
#include "lib/log.h"
#include "lib/mem.h"

const char *driver_phase_name(enum driver_phase phase)
{
    switch (phase) {
    case DRIVER_PHASE_PROVISIONING:
        return "PROVISIONING";
    case DRIVER_PHASE_READY:
        return "READY";
    case DRIVER_PHASE_ERROR:
        return "ERROR";
    case DRIVER_PHASE_DELETING:
        return "DELETING";
    case DRIVER_PHASE_STOPPED:
        return "STOPPED";
    case DRIVER_PHASE_UNKNOWN:
    default:
        return "UNKNOWN";
    }
}

void driver_sandbox_close(struct driver_sandbox *s)
{
    if (s == NULL) {
        return;
    }
    mem_free(s->id);
    mem_free(s->namespace);
    mem_free(s->name);
    mem_free(s->handle);
    mem_free(s->message);
    memset(s, 0, sizeof *s);
}

void driver_sandbox_list_close(struct driver_sandbox_list *l)
{
    if (l == NULL) {
        return;
    }
    for (size_t i = 0; i < l->n; i++) {
        driver_sandbox_close(&l->items[i]);
    }
    mem_free(l->items);
    memset(l, 0, sizeof *l);
}

void driver_pool_close(struct driver_pool *p)
{
    if (p == NULL) {
        return;
    }
    mem_free(p->id);
    mem_free(p->namespace);
    mem_free(p->name);
    mem_free(p->k8s_namespace);
    memset(p, 0, sizeof *p);
}

void driver_pool_list_close(struct driver_pool_list *l)
{
    if (l == NULL) {
        return;
    }
    for (size_t i = 0; i < l->n; i++) {
        driver_pool_close(&l->items[i]);
    }
    mem_free(l->items);
    memset(l, 0, sizeof *l);
}

/* ---- Shared argument rules */

static bool is_alnum_lower(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
    return is_alnum_lower(c) || (c >= 'A' && c <= 'Z');
}

static bool dns_label_n(const char *s, size_t n)
{
    if (n == 0 || n > 63 || !is_alnum_lower(s[0]) || !is_alnum_lower(s[n - 1])) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_alnum_lower(s[i]) && s[i] != '-') {
            return false;
        }
    }
    return true;
}

bool driver_is_dns_label(const char *s)
{
    return s != NULL && dns_label_n(s, strlen(s));
}

bool driver_is_dns_subdomain(const char *s)
{
    if (s == NULL) {
        return false;
    }
    size_t n = strlen(s);
    if (n == 0 || n > 253) {
        return false;
    }
    const char *p = s;
    for (;;) {
        const char *dot = strchr(p, '.');
        size_t len = dot != NULL ? (size_t)(dot - p) : strlen(p);
        if (!dns_label_n(p, len)) {
            return false;
        }
        if (dot == NULL) {
            return true;
        }
        p = dot + 1;
    }
}

bool driver_is_uuid(const char *s)
{
    if (s == NULL || strlen(s) != DRIVER_ID_LEN) {
        return false;
    }
    for (size_t i = 0; i < DRIVER_ID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    return true;
}

const char *driver_kv_get(const struct driver_kv *kv, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (kv[i].key != NULL && strcmp(kv[i].key, key) == 0) {
            return kv[i].value;
        }
    }
    return NULL;
}

bool driver__printable(const char *s, size_t max, bool no_space)
{
    size_t n = 0;
    if (s == NULL) {
        return false;
    }
    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= max || c < 0x20 || c > 0x7e || (no_space && c == ' ')) {
            return false;
        }
    }
    return n > 0;
}

static bool label_name_ok(const char *s, size_t n, bool allow_empty)
{
    if (n == 0) {
        return allow_empty;
    }
    if (n > DRIVER_LABEL_MAX || !is_alnum(s[0]) || !is_alnum(s[n - 1])) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_alnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.') {
            return false;
        }
    }
    return true;
}

bool driver__label_key_ok(const char *key)
{
    if (key == NULL) {
        return false;
    }
    const char *slash = strchr(key, '/');
    if (slash == NULL) {
        return label_name_ok(key, strlen(key), false);
    }
    size_t plen = (size_t)(slash - key);
    if (plen == 0 || plen > 253) {
        return false;
    }
    char prefix[254];
    memcpy(prefix, key, plen);
    prefix[plen] = '\0';
    return driver_is_dns_subdomain(prefix) && label_name_ok(slash + 1, strlen(slash + 1), false);
}

bool driver__label_value_ok(const char *value)
{
    return value != NULL && label_name_ok(value, strlen(value), true);
}

static bool env_name_ok(const char *s)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 256 || (s[0] >= '0' && s[0] <= '9')) {
        return false;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if (!is_alnum(*p) && *p != '_') {
            return false;
        }
    }
    return true;
}

static bool has_duplicate_key(const struct driver_kv *kv, size_t n, size_t *at)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(kv[i].key, kv[j].key) == 0) {
                *at = i;
                return true;
            }
        }
    }
    return false;
}

static int check_command(const struct driver_sandbox_spec *s, char *errmsg)
{
    if (s->command == NULL || s->n_command == 0 || s->n_command > DRIVER_ARGV_MAX) {
        gerr_set(errmsg, "command must have 1 to %u arguments", DRIVER_ARGV_MAX);
        return GERR_INVAL;
    }
    for (size_t i = 0; i < s->n_command; i++) {
        if (s->command[i] == NULL || strlen(s->command[i]) > DRIVER_ARG_MAX) {
            gerr_set(errmsg, "command argument %zu is missing or longer than %u bytes", i, DRIVER_ARG_MAX);
            return GERR_INVAL;
        }
    }
    if (s->command[0][0] == '\0') {
        gerr_set(errmsg, "command[0] is empty");
        return GERR_INVAL;
    }
    return 0;
}

static int check_env(const struct driver_sandbox_spec *s, char *errmsg)
{
    size_t dup;
    if (s->n_env > DRIVER_ENV_MAX || (s->n_env > 0 && s->env == NULL)) {
        gerr_set(errmsg, "at most %u environment entries", DRIVER_ENV_MAX);
        return GERR_INVAL;
    }
    for (size_t i = 0; i < s->n_env; i++) {
        if (!env_name_ok(s->env[i].key)) {
            gerr_set(errmsg, "environment entry %zu: the name must match [A-Za-z_][A-Za-z0-9_]*", i);
            return GERR_INVAL;
        }
        if (s->env[i].value == NULL || strlen(s->env[i].value) > DRIVER_ENV_VAL_MAX) {
            gerr_set(errmsg, "environment variable %s: value missing or longer than %u bytes", s->env[i].key,
                     DRIVER_ENV_VAL_MAX);
            return GERR_INVAL;
        }
    }
    if (has_duplicate_key(s->env, s->n_env, &dup)) {
        gerr_set(errmsg, "environment variable %s is given twice", s->env[dup].key);
        return GERR_INVAL;
    }
    return 0;
}

static bool credential_key_ok(const char *k)
{
    size_t n = k != NULL ? strlen(k) : 0;
    if (n == 0 || n > DRIVER_CREDENTIAL_KEY_MAX || strcmp(k, ".") == 0 || strcmp(k, "..") == 0) {
        return false;
    }
    for (const char *p = k; *p != '\0'; p++) {
        if (!is_alnum(*p) && *p != '_' && *p != '.' && *p != '-') {
            return false;
        }
    }
    return true;
}

/* The entries' names and sizes (never a value in the message). */
static int check_credentials(const struct driver_credential *c, size_t n, char *errmsg)
{
    if (n > DRIVER_CREDENTIALS_MAX || (n > 0 && c == NULL)) {
        gerr_set(errmsg, "at most %u credential entries", DRIVER_CREDENTIALS_MAX);
        return GERR_INVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!driver_is_dns_label(c[i].provider) || !credential_key_ok(c[i].key)) {
            gerr_set(errmsg,
                     "credential %zu: the provider must be a DNS-1123 label and the key 1..%u of "
                     "[A-Za-z0-9_.-] (not . or ..)",
                     i, DRIVER_CREDENTIAL_KEY_MAX);
            return GERR_INVAL;
        }
        if (c[i].value == NULL || strlen(c[i].value) > DRIVER_CREDENTIAL_VAL_MAX) {
            gerr_set(errmsg, "credential %s/%s: value missing or longer than %u bytes", c[i].provider,
                     c[i].key, DRIVER_CREDENTIAL_VAL_MAX);
            return GERR_INVAL;
        }
        if (c[i].env != NULL && !env_name_ok(c[i].env)) {
            gerr_set(errmsg, "credential %s/%s: the environment variable must match [A-Za-z_][A-Za-z0-9_]*",
                     c[i].provider, c[i].key);
            return GERR_INVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c[i].provider, c[j].provider) == 0 && strcmp(c[i].key, c[j].key) == 0) {
                gerr_set(errmsg, "credential %s/%s is given twice", c[i].provider, c[i].key);
                return GERR_INVAL;
            }
            if (c[i].env != NULL && c[j].env != NULL && strcmp(c[i].env, c[j].env) == 0) {
                gerr_set(errmsg, "credentials %s/%s and %s/%s both set environment variable %s",
                         c[j].provider, c[j].key, c[i].provider, c[i].key, c[i].env);
                return GERR_INVAL;
            }
        }
    }
    return 0;
}

static int check_labels(const struct driver_sandbox_spec *s, char *errmsg)
{
    size_t dup;
    if (s->n_labels > DRIVER_LABELS_MAX || (s->n_labels > 0 && s->labels == NULL)) {
        gerr_set(errmsg, "at most %u labels", DRIVER_LABELS_MAX);
        return GERR_INVAL;
    }
    for (size_t i = 0; i < s->n_labels; i++) {
        const char *k = s->labels[i].key;
        if (!driver__label_key_ok(k)) {
            gerr_set(errmsg,
                     "label %zu: the key is not a valid label key ([prefix/]name, name 1..63 of "
                     "[A-Za-z0-9._-])",
                     i);
            return GERR_INVAL;
        }
        if (strncmp(k, "gantry.dev/", 11) == 0) {
            gerr_set(errmsg, "label %s: the gantry.dev/ prefix is reserved", k);
            return GERR_INVAL;
        }
        if (!driver__label_value_ok(s->labels[i].value)) {
            gerr_set(errmsg, "label %s: the value must be 0..63 of [A-Za-z0-9._-], alphanumeric at both ends",
                     k);
            return GERR_INVAL;
        }
    }
    if (has_duplicate_key(s->labels, s->n_labels, &dup)) {
        gerr_set(errmsg, "label %s is given twice", s->labels[dup].key);
        return GERR_INVAL;
    }
    return 0;
}

static int check_config_shape(const struct driver_sandbox_spec *s, char *errmsg)
{
    size_t dup;
    if (s->n_driver_config > DRIVER_CONFIG_MAX || (s->n_driver_config > 0 && s->driver_config == NULL)) {
        gerr_set(errmsg, "at most %u driver_config entries", DRIVER_CONFIG_MAX);
        return GERR_INVAL;
    }
    for (size_t i = 0; i < s->n_driver_config; i++) {
        const struct driver_kv *kv = &s->driver_config[i];
        if (kv->key == NULL || kv->value == NULL || strlen(kv->value) > DRIVER_CONFIG_VAL) {
            gerr_set(errmsg, "driver_config entry %zu: key or value missing, or value longer than %u bytes",
                     i, DRIVER_CONFIG_VAL);
            return GERR_INVAL;
        }
    }
    if (has_duplicate_key(s->driver_config, s->n_driver_config, &dup)) {
        gerr_set(errmsg, "driver_config key \"%.64s\" is given twice", s->driver_config[dup].key);
        return GERR_INVAL;
    }
    return 0;
}

static int check_identity(const struct driver_sandbox_spec *s, char *errmsg)
{
    if (!driver_is_uuid(s->id)) {
        gerr_set(errmsg, "sandbox id must be a canonical lowercase UUID");
        return GERR_INVAL;
    }
    if (!driver_is_dns_label(s->namespace)) {
        gerr_set(errmsg, "namespace must be a DNS-1123 label");
        return GERR_INVAL;
    }
    if (!driver_is_dns_label(s->name)) {
        gerr_set(errmsg, "name must be a DNS-1123 label");
        return GERR_INVAL;
    }
    if (s->owner != NULL && s->owner[0] != '\0' && !driver__printable(s->owner, DRIVER_OWNER_MAX, false)) {
        gerr_set(errmsg, "owner must be 1..%u printable ASCII bytes", DRIVER_OWNER_MAX);
        return GERR_INVAL;
    }
    if (s->image != NULL && s->image[0] != '\0' && !driver__printable(s->image, DRIVER_IMAGE_MAX, true)) {
        gerr_set(errmsg, "image must be 1..%u printable ASCII bytes without spaces", DRIVER_IMAGE_MAX);
        return GERR_INVAL;
    }
    return 0;
}

static int check_spec(const struct driver_sandbox_spec *s, char *errmsg)
{
    int rv;
    if (s == NULL) {
        gerr_set(errmsg, "no spec");
        return GERR_INVAL;
    }
    if ((rv = check_identity(s, errmsg)) != 0 || (rv = check_command(s, errmsg)) != 0 ||
        (rv = check_env(s, errmsg)) != 0 || (rv = check_labels(s, errmsg)) != 0 ||
        (rv = check_config_shape(s, errmsg)) != 0 ||
        (rv = check_credentials(s->credentials, s->n_credentials, errmsg)) != 0) {
        return rv;
    }
    if (s->gpu_count > DRIVER_GPU_MAX) {
        gerr_set(errmsg, "gpu_count %u is more than %u", s->gpu_count, DRIVER_GPU_MAX);
        return GERR_INVAL;
    }
    if (s->lifetime_s > DRIVER_LIFETIME_MAX) {
        gerr_set(errmsg, "lifetime of %llu s is more than %llu s", (unsigned long long)s->lifetime_s,
                 (unsigned long long)DRIVER_LIFETIME_MAX);
        return GERR_INVAL;
    }
    return 0;
}

static int check_epoch(uint64_t epoch, char *errmsg)
{
    if (epoch == 0) {
        gerr_set(errmsg, "epoch 0 is not a lease epoch");
        return GERR_INVAL;
    }
    return 0;
}

static int check_ns(const char *ns, bool optional, char *errmsg)
{
    if ((ns == NULL && optional) || driver_is_dns_label(ns)) {
        return 0;
    }
    gerr_set(errmsg, "namespace must be a DNS-1123 label");
    return GERR_INVAL;
}

static int check_id(const char *id, char *errmsg)
{
    if (driver_is_uuid(id)) {
        return 0;
    }
    gerr_set(errmsg, "sandbox id must be a canonical lowercase UUID");
    return GERR_INVAL;
}

/* ---- Public wrappers */

#define DRIVER__CALL(d, expr)                                                                                \
    do {                                                                                                     \
        pthread_mutex_lock(&(d)->mu);                                                                        \
        rv = (expr);                                                                                         \
        pthread_mutex_unlock(&(d)->mu);                                                                      \
    } while (0)

void driver_capabilities(struct driver *d, struct driver_caps *caps)
{
    memset(caps, 0, sizeof *caps);
    pthread_mutex_lock(&d->mu);
    d->ops->capabilities(d, caps);
    caps->logs = d->ops->logs_open != NULL;
    caps->exec = d->ops->exec_start != NULL;
    caps->port_forward = d->ops->port_connect != NULL;
    caps->pools = d->ops->pool_apply != NULL;
    pthread_mutex_unlock(&d->mu);
}

int driver_validate(struct driver *d, const struct driver_sandbox_spec *spec,
                    const char *const *allowed_config_keys, char *errmsg)
{
    int rv = check_spec(spec, errmsg);
    if (rv == 0) {
        DRIVER__CALL(d, d->ops->validate(d, spec, allowed_config_keys, errmsg));
    }
    return rv;
}

int driver_create(struct driver *d, uint64_t epoch, const struct driver_sandbox_spec *spec,
                  struct driver_sandbox *out, char *errmsg)
{
    int rv;
    memset(out, 0, sizeof *out);
    if ((rv = check_epoch(epoch, errmsg)) != 0 || (rv = check_spec(spec, errmsg)) != 0) {
        return rv;
    }
    if (spec->n_credentials > 0 && d->ops->update_credentials == NULL) {
        struct driver_caps caps;
        driver_capabilities(d, &caps);
        gerr_set(errmsg, "the %s driver does not deliver credentials", caps.name);
        return GERR_INVAL;
    }
    DRIVER__CALL(d, d->ops->create(d, epoch, spec, out, errmsg));
    if (rv != 0) {
        driver_sandbox_close(out);
    }
    LOG_DEBUG("driver create %s/%s (%s) epoch %llu: %s", spec->namespace, spec->name, spec->id,
              (unsigned long long)epoch, gerr_name(rv));
    return rv;
}

int driver_get(struct driver *d, uint64_t epoch, const char *ns, const char *id, struct driver_sandbox *out,
               char *errmsg)
{
    int rv;
    memset(out, 0, sizeof *out);
    if ((rv = check_epoch(epoch, errmsg)) != 0 || (rv = check_ns(ns, false, errmsg)) != 0 ||
        (rv = check_id(id, errmsg)) != 0) {
        return rv;
    }
    DRIVER__CALL(d, d->ops->get(d, epoch, ns, id, out, errmsg));
    if (rv != 0) {
        driver_sandbox_close(out);
    }
    return rv;
}

int driver_list(struct driver *d, uint64_t epoch, const char *ns, struct driver_sandbox_list *out,
                char *errmsg)
{
    int rv;
    memset(out, 0, sizeof *out);
    if ((rv = check_epoch(epoch, errmsg)) != 0 || (rv = check_ns(ns, true, errmsg)) != 0) {
        return rv;
    }
    DRIVER__CALL(d, d->ops->list(d, epoch, ns, out, errmsg));
    if (rv != 0) {
        driver_sandbox_list_close(out);
    }
    return rv;
}

int driver_delete(struct driver *d, uint64_t epoch, const char *ns, const char *id, char *errmsg)
{
    int rv;
    if ((rv = check_epoch(epoch, errmsg)) != 0 || (rv = check_ns(ns, false, errmsg)) != 0 ||
        (rv = check_id(id, errmsg)) != 0) {
        return rv;
    }
    DRIVER__CALL(d, d->ops->delete (d, epoch, ns, id, errmsg));
    LOG_DEBUG("driver delete %s/%s epoch %llu: %s", ns, id, (unsigned long long)epoch, gerr_name(rv));
    return rv;
}

int driver_update_credentials(struct driver *d, uint64_t epoch, const char *ns, const char *id,
                              const struct driver_credential *creds, size_t n, char *errmsg)
{
    int rv;
    if ((rv = check_epoch(epoch, errmsg)) != 0 || (rv = check_ns(ns, false, errmsg)) != 0 ||
        (rv = check_id(id, errmsg)) != 0 || (rv = check_credentials(creds, n, errmsg)) != 0) {
        return rv;
    }
    if (d->ops->update_credentials == NULL) {
        struct driver_caps caps;
        driver_capabilities(d, &caps);
        gerr_set(errmsg, "the %s driver does not deliver credentials", caps.name);
        return GERR_INVAL;
    }
    DRIVER__CALL(d, d->ops->update_credentials(d, epoch, ns, id, creds, n, errmsg));
    return rv;
}

static int no_pools(struct driver *d, char *errmsg)
{
    struct driver_caps caps;
    driver_capabilities(d, &caps);
    gerr_set(errmsg, "the %s driver does not manage warm pools (only the kubernetes driver does)", caps.name);
    return GERR_UNAVAILABLE;
}

int driver_pool_apply(struct driver *d, uint64_t epoch, const struct driver_pool_spec *spec,
                      struct driver_pool *out, char *errmsg)
{
    int rv;
    memset(out, 0, sizeof *out);
    if ((rv = check_epoch(epoch, errmsg)) != 0 || (rv = check_ns(spec->namespace, false, errmsg)) != 0 ||
        (rv = check_id(spec->id, errmsg)) != 0) {
        return rv;
    }
    if (spec->name == NULL || !driver_is_dns_label(spec->name)) {
        gerr_set(errmsg, "warm pool name must be a DNS-1123 label");
        return GERR_INVAL;
    }
    if (spec->k8s_namespace != NULL && spec->k8s_namespace[0] != '\0' &&
        !driver_is_dns_label(spec->k8s_namespace)) {
        gerr_set(errmsg, "warm pool namespace must be a DNS-1123 label");
        return GERR_INVAL;
    }
    if (spec->template_name == NULL || !driver_is_dns_subdomain(spec->template_name)) {
        gerr_set(errmsg, "warm pool template must be a DNS subdomain");
        return GERR_INVAL;
    }
    if (spec->replicas > DRIVER_POOL_REPLICAS_MAX) {
        gerr_set(errmsg, "warm pool replicas %u is above %u", spec->replicas, DRIVER_POOL_REPLICAS_MAX);
        return GERR_INVAL;
    }
    if (d->ops->pool_apply == NULL) {
        return no_pools(d, errmsg);
    }
    DRIVER__CALL(d, d->ops->pool_apply(d, epoch, spec, out, errmsg));
    return rv;
}

int driver_pool_delete(struct driver *d, uint64_t epoch, const char *k8s_namespace, const char *name,
                       const char *id, char *errmsg)
{
    int rv;
    if ((rv = check_epoch(epoch, errmsg)) != 0 || (rv = check_id(id, errmsg)) != 0) {
        return rv;
    }
    if (k8s_namespace == NULL || !driver_is_dns_label(k8s_namespace) || name == NULL ||
        !driver_is_dns_label(name)) {
        gerr_set(errmsg, "warm pool namespace and name must be DNS-1123 labels");
        return GERR_INVAL;
    }
    if (d->ops->pool_delete == NULL) {
        return no_pools(d, errmsg);
    }
    DRIVER__CALL(d, d->ops->pool_delete(d, epoch, k8s_namespace, name, id, errmsg));
    return rv;
}

int driver_pool_list(struct driver *d, uint64_t epoch, struct driver_pool_list *out, char *errmsg)
{
    int rv;
    memset(out, 0, sizeof *out);
    if ((rv = check_epoch(epoch, errmsg)) != 0) {
        return rv;
    }
    if (d->ops->pool_list == NULL) {
        return no_pools(d, errmsg);
    }
    DRIVER__CALL(d, d->ops->pool_list(d, epoch, out, errmsg));
    return rv;
}

int driver_logs_open(struct driver *d, const char *ns, const char *id, const struct driver_log_query *q,
                     struct driver_log **out, char *errmsg)
{
    int rv;
    if ((rv = check_ns(ns, false, errmsg)) != 0 || (rv = check_id(id, errmsg)) != 0) {
        return rv;
    }
    if (d->ops->logs_open == NULL) {
        struct driver_caps caps;
        driver_capabilities(d, &caps);
        gerr_set(errmsg, "logs are not supported by the %s driver yet", caps.name);
        return GERR_UNAVAILABLE;
    }
    return d->ops->logs_open(d, ns, id, q, out, errmsg); /* no mutex: see driver_internal.h */
}

int driver_log_next(struct driver_log *l, uint8_t *buf, size_t cap, size_t *n, uint64_t *ts_ms, char *errmsg)
{
    if (cap < DRIVER_LOG_CHUNK) {
        gerr_set(errmsg, "driver_log_next: a buffer of at least %u bytes is needed", DRIVER_LOG_CHUNK);
        return GERR_INVAL;
    }
    return l->ops->next(l, buf, cap, n, ts_ms, errmsg);
}

void driver_log_close(struct driver_log *l)
{
    if (l != NULL) {
        l->ops->close(l);
    }
}

int driver_exec_start(struct driver *d, const char *ns, const char *id, const struct driver_exec_spec *spec,
                      struct driver_exec **out, char *errmsg)
{
    int rv;
    if ((rv = check_ns(ns, false, errmsg)) != 0 || (rv = check_id(id, errmsg)) != 0) {
        return rv;
    }
    if (spec->n_command < 1 || spec->n_command > DRIVER_ARGV_MAX) {
        gerr_set(errmsg, "a command of 1 to %u arguments is required", DRIVER_ARGV_MAX);
        return GERR_INVAL;
    }
    for (size_t i = 0; i < spec->n_command; i++) {
        if (spec->command[i] == NULL || strlen(spec->command[i]) > DRIVER_ARG_MAX ||
            (i == 0 && spec->command[0][0] == '\0')) {
            gerr_set(errmsg, "command argument %zu is missing, empty or over %u bytes", i, DRIVER_ARG_MAX);
            return GERR_INVAL;
        }
    }
    if (d->ops->exec_start == NULL) {
        struct driver_caps caps;
        driver_capabilities(d, &caps);
        gerr_set(errmsg, "exec is not supported by the %s driver yet", caps.name);
        return GERR_UNAVAILABLE;
    }
    return d->ops->exec_start(d, ns, id, spec, out, errmsg); /* no mutex: see driver_internal.h */
}

int driver_port_connect(struct driver *d, const char *ns, const char *id, uint16_t port,
                        struct driver_exec **out, char *errmsg)
{
    int rv;
    if ((rv = check_ns(ns, false, errmsg)) != 0 || (rv = check_id(id, errmsg)) != 0) {
        return rv;
    }
    if (port == 0) {
        gerr_set(errmsg, "a port from 1 to 65535 is required");
        return GERR_INVAL;
    }
    if (d->ops->port_connect == NULL) {
        struct driver_caps caps;
        driver_capabilities(d, &caps);
        gerr_set(errmsg, "port-forward is not supported by the %s driver yet", caps.name);
        return GERR_UNAVAILABLE;
    }
    return d->ops->port_connect(d, ns, id, port, out, errmsg); /* no mutex: see driver_internal.h */
}

void driver_exec_fds(struct driver_exec *x, int *in, int *out, int *err)
{
    x->ops->fds(x, in, out, err);
}

void driver_exec_close_stdin(struct driver_exec *x)
{
    x->ops->close_stdin(x);
}

int driver_exec_resize(struct driver_exec *x, uint16_t rows, uint16_t cols)
{
    return x->ops->resize(x, rows, cols);
}

int driver_exec_signal(struct driver_exec *x, int sig)
{
    return sig < 1 || sig > 31 ? GERR_INVAL : x->ops->signal(x, sig);
}

int driver_exec_status(struct driver_exec *x, int *exit_code, int *signal)
{
    return x->ops->status(x, exit_code, signal);
}

void driver_exec_close(struct driver_exec *x)
{
    if (x != NULL) {
        x->ops->close(x);
    }
}

int driver_ensure_namespace(struct driver *d, uint64_t epoch, const char *ns, char *errmsg)
{
    int rv;
    if ((rv = check_epoch(epoch, errmsg)) != 0 || (rv = check_ns(ns, false, errmsg)) != 0) {
        return rv;
    }
    DRIVER__CALL(d, d->ops->ensure_namespace(d, epoch, ns, errmsg));
    return rv;
}

int driver_delete_namespace(struct driver *d, uint64_t epoch, const char *ns, char *errmsg)
{
    int rv;
    if ((rv = check_epoch(epoch, errmsg)) != 0 || (rv = check_ns(ns, false, errmsg)) != 0) {
        return rv;
    }
    DRIVER__CALL(d, d->ops->delete_namespace(d, epoch, ns, errmsg));
    return rv;
}

void driver_free(struct driver *d)
{
    if (d != NULL) {
        d->ops->free(d);
    }
}

/* ---- Internal helpers */

void driver__init(struct driver *d, const struct driver_ops *ops)
{
    d->ops = ops;
    pthread_mutex_init(&d->mu, NULL);
}

void driver__close(struct driver *d)
{
    pthread_mutex_destroy(&d->mu);
}

int driver__epoch_check(uint64_t epoch, uint64_t *newest, const char *what, char *errmsg)
{
    if (epoch < *newest) {
        gerr_set(errmsg, "stale epoch %llu: %s has seen epoch %llu", (unsigned long long)epoch, what,
                 (unsigned long long)*newest);
        return DRIVER_ERR_STALE;
    }
    *newest = epoch;
    return 0;
}

static char *dup_or_empty(const char *s)
{
    return mem_strdup(s != NULL ? s : "");
}

void driver__sandbox_fill(struct driver_sandbox *out, const char *id, const char *ns, const char *name,
                          enum driver_phase phase, const char *handle, const char *message, uint64_t epoch,
                          uint64_t created_at_ms)
{
    driver_sandbox_close(out);
    out->id = dup_or_empty(id);
    out->namespace = dup_or_empty(ns);
    out->name = dup_or_empty(name);
    out->phase = phase;
    out->handle = dup_or_empty(handle);
    out->message = dup_or_empty(message);
    out->epoch = epoch;
    out->created_at_ms = created_at_ms;
}

/* The array's capacity is the smallest power of two >= max(n, 4), so it is full exactly when n is 0
 * or a power of two from 4 up. */
static bool list_full(size_t n)
{
    return n == 0 || (n >= 4 && (n & (n - 1)) == 0);
}

struct driver_sandbox *driver__list_push(struct driver_sandbox_list *l)
{
    if (list_full(l->n)) {
        size_t cap = l->n == 0 ? 4 : l->n * 2;
        l->items = mem_realloc(l->items, cap * sizeof *l->items);
    }
    struct driver_sandbox *s = &l->items[l->n++];
    memset(s, 0, sizeof *s);
    return s;
}

bool driver__in_list(const char *const *list, const char *key)
{
    for (size_t i = 0; list != NULL && list[i] != NULL; i++) {
        if (strcmp(list[i], key) == 0) {
            return true;
        }
    }
    return false;
}

void driver__join(struct buf *b, const char *const *list)
{
    if (list == NULL || list[0] == NULL) {
        buf_printf(b, "(none)");
        return;
    }
    for (size_t i = 0; list[i] != NULL; i++) {
        buf_printf(b, "%s%s", i > 0 ? ", " : "", list[i]);
    }
}

int driver__check_config_keys(const struct driver_sandbox_spec *spec, const char *driver_name,
                              const char *const *known, const char *const *allowed, char *errmsg)
{
    for (size_t i = 0; i < spec->n_driver_config; i++) {
        const char *key = spec->driver_config[i].key;
        const char *const *list = known;
        int rv = GERR_INVAL;
        const char *what = "is not known to the";
        if (driver__in_list(known, key)) {
            if (allowed == NULL || driver__in_list(allowed, key)) {
                continue;
            }
            list = allowed;
            rv = GERR_PERM;
            what = "is not allowed for this caller by the";
        }
        struct buf b;
        buf_init(&b);
        driver__join(&b, list);
        gerr_set(errmsg, "driver_config key \"%.64s\" %s %s driver (%s: %s)",
                 driver__printable(key, 64, false) ? key : "?", what, driver_name,
                 rv == GERR_PERM ? "allowed" : "known keys", (const char *)b.data);
        buf_close(&b);
        return rv;
    }
    return 0;
}

uint64_t driver__now_ms(void)
{
    struct clock *c = clock_system();
    return c->wall_ms(c);
}
