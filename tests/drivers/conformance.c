/* The shared driver checks (see conformance.h). */
#include "conformance.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "lib/clock.h"
#include "lib/rand.h"

static uint64_t next_epoch = 1;

uint64_t conf_epoch(void)
{
    next_epoch += 10;
    return next_epoch;
}

void conf_uuid(char out[DRIVER_ID_LEN + 1])
{
    uint8_t b[16];
    assert_int_equal(rand_bytes(b, sizeof b), 0);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, DRIVER_ID_LEN + 1, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

void conf_spec(const struct conf_env *env, struct conf_spec *cs, const char *name)
{
    memset(cs, 0, sizeof *cs);
    conf_uuid(cs->id);
    cs->spec.id = cs->id;
    cs->spec.namespace = env->ns;
    cs->spec.name = name;
    cs->spec.owner = "user:alice";
    cs->spec.image = env->image;
    cs->spec.command = env->command;
    cs->spec.n_command = env->n_command;
}

void conf_wait_ready(const struct conf_env *env, struct driver *d, uint64_t epoch, const char *ns,
                     const char *id)
{
    char errmsg[GERR_MSG_SIZE];
    struct clock *c = clock_system();
    uint64_t deadline = clock_mono_ms(c) + env->ready_timeout_ms;
    for (;;) {
        struct driver_sandbox s;
        int rv = driver_get(d, epoch, ns, id, &s, errmsg);
        if (rv != 0) {
            fail_msg("get %s: %s: %s", id, gerr_name(rv), errmsg);
        }
        enum driver_phase phase = s.phase;
        driver_sandbox_close(&s);
        if (phase == DRIVER_PHASE_READY) {
            return;
        }
        if (phase != DRIVER_PHASE_PROVISIONING || clock_mono_ms(c) > deadline) {
            fail_msg("sandbox %s is %s, not READY", id, driver_phase_name(phase));
        }
        c->sleep_ns(c, 5000000);
    }
}

size_t conf_count(const struct driver_sandbox_list *l, const char *id)
{
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++) {
        n += strcmp(l->items[i].id, id) == 0;
    }
    return n;
}

#define OK(expr)                                                                                             \
    do {                                                                                                     \
        int rv_ = (expr);                                                                                    \
        if (rv_ != 0) {                                                                                      \
            fail_msg("%s: %s: %s", #expr, gerr_name(rv_), errmsg);                                           \
        }                                                                                                    \
    } while (0)

#define FAILS(code, expr)                                                                                    \
    do {                                                                                                     \
        int rv_ = (expr);                                                                                    \
        if (rv_ != (code)) {                                                                                 \
            fail_msg("%s: %s (%s), want %s", #expr, gerr_name(rv_), errmsg, gerr_name(code));                \
        }                                                                                                    \
    } while (0)

static size_t list_count(struct driver *d, uint64_t epoch, const char *ns, const char *id)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver_sandbox_list l;
    OK(driver_list(d, epoch, ns, &l, errmsg));
    size_t n = conf_count(&l, id);
    driver_sandbox_list_close(&l);
    return n;
}

void conf_lifecycle(const struct conf_env *env)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = env->open(env->ctx);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s, again;
    conf_spec(env, &cs, "life");

    OK(driver_ensure_namespace(d, e, env->ns, errmsg));
    OK(driver_ensure_namespace(d, e, env->ns, errmsg));
    FAILS(GERR_NOTFOUND, driver_get(d, e, env->ns, cs.id, &s, errmsg));
    OK(driver_create(d, e, &cs.spec, &s, errmsg));
    assert_string_equal(s.id, cs.id);
    assert_string_equal(s.namespace, env->ns);
    assert_string_equal(s.name, "life");
    assert_int_equal(s.epoch, e);
    assert_true(s.handle[0] != '\0');
    conf_wait_ready(env, d, e, env->ns, cs.id);

    /* A second create of the same id is the same sandbox, not a second one. */
    OK(driver_create(d, e, &cs.spec, &again, errmsg));
    assert_string_equal(again.handle, s.handle);
    assert_int_equal(again.epoch, e);
    driver_sandbox_close(&again);
    assert_int_equal(list_count(d, e, env->ns, cs.id), 1);
    assert_int_equal(list_count(d, e, NULL, cs.id), 1);

    /* The same id under another name is refused. */
    cs.spec.name = "other";
    FAILS(GERR_EXISTS, driver_create(d, e, &cs.spec, &again, errmsg));
    cs.spec.name = "life";

    OK(driver_get(d, e, env->ns, cs.id, &again, errmsg));
    assert_int_equal(again.phase, DRIVER_PHASE_READY);
    assert_string_equal(again.handle, s.handle);
    driver_sandbox_close(&again);

    OK(driver_delete(d, e, env->ns, cs.id, errmsg));
    OK(driver_delete(d, e, env->ns, cs.id, errmsg));
    FAILS(GERR_NOTFOUND, driver_get(d, e, env->ns, cs.id, &again, errmsg));
    assert_int_equal(list_count(d, e, env->ns, cs.id), 0);
    driver_sandbox_close(&s);
    driver_free(d);
}

void conf_stale_epoch(const struct conf_env *env)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = env->open(env->ctx);
    uint64_t old = conf_epoch(), cur = conf_epoch();
    struct conf_spec cs, cs2;
    struct driver_sandbox s;
    struct driver_sandbox_list l;
    conf_spec(env, &cs, "fenced");
    conf_spec(env, &cs2, "late");

    OK(driver_ensure_namespace(d, cur, env->ns, errmsg));
    OK(driver_create(d, cur, &cs.spec, &s, errmsg));
    driver_sandbox_close(&s);
    /* Every operation from the older epoch is refused and changes nothing. */
    FAILS(DRIVER_ERR_STALE, driver_create(d, old, &cs2.spec, &s, errmsg));
    assert_non_null(strstr(errmsg, "stale epoch"));
    FAILS(DRIVER_ERR_STALE, driver_delete(d, old, env->ns, cs.id, errmsg));
    FAILS(DRIVER_ERR_STALE, driver_get(d, old, env->ns, cs.id, &s, errmsg));
    FAILS(DRIVER_ERR_STALE, driver_list(d, old, NULL, &l, errmsg));
    FAILS(DRIVER_ERR_STALE, driver_ensure_namespace(d, old, env->ns, errmsg));
    FAILS(DRIVER_ERR_STALE, driver_delete_namespace(d, old, env->ns, errmsg));
    assert_int_equal(list_count(d, cur, env->ns, cs.id), 1);
    assert_int_equal(list_count(d, cur, env->ns, cs2.id), 0);

    /* Another instance over the same backend learned the epoch from the backend, not memory. */
    struct driver *d2 = env->open(env->ctx);
    FAILS(DRIVER_ERR_STALE, driver_delete(d2, old, env->ns, cs.id, errmsg));
    uint64_t newer = conf_epoch();
    OK(driver_delete(d2, newer, env->ns, cs.id, errmsg));
    /* The first instance is now stale at its own epoch. */
    FAILS(DRIVER_ERR_STALE, driver_create(d, cur, &cs2.spec, &s, errmsg));
    assert_int_equal(list_count(d2, newer, env->ns, cs2.id), 0);
    driver_free(d2);
    driver_free(d);
}

void conf_adoption(const struct conf_env *env)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *a = env->open(env->ctx);
    uint64_t e1 = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s, t;
    conf_spec(env, &cs, "adopted");

    OK(driver_ensure_namespace(a, e1, env->ns, errmsg));
    OK(driver_create(a, e1, &cs.spec, &s, errmsg));
    conf_wait_ready(env, a, e1, env->ns, cs.id);
    driver_free(a); /* the old holder goes away; its sandbox must not */

    struct driver *b = env->open(env->ctx);
    uint64_t e2 = conf_epoch();
    OK(driver_get(b, e2, env->ns, cs.id, &t, errmsg));
    assert_int_equal(t.phase, DRIVER_PHASE_READY);
    assert_string_equal(t.handle, s.handle);
    assert_int_equal(t.epoch, e1); /* the epoch that created it */
    driver_sandbox_close(&t);
    /* The new holder re-creating it (a resync) finds it: still one copy, the same handle. */
    OK(driver_create(b, e2, &cs.spec, &t, errmsg));
    assert_string_equal(t.handle, s.handle);
    driver_sandbox_close(&t);
    assert_int_equal(list_count(b, e2, NULL, cs.id), 1);
    OK(driver_delete(b, e2, env->ns, cs.id, errmsg));
    assert_int_equal(list_count(b, e2, NULL, cs.id), 0);
    driver_sandbox_close(&s);
    driver_free(b);
}

void conf_namespaces(const struct conf_env *env)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = env->open(env->ctx);
    uint64_t e = conf_epoch();
    struct conf_spec cs;
    struct driver_sandbox s;
    conf_spec(env, &cs, "nsbound");

    OK(driver_delete_namespace(d, e, env->ns, errmsg)); /* absent is fine */
    OK(driver_delete_namespace(d, e, env->ns, errmsg));
    FAILS(GERR_NOTFOUND, driver_create(d, e, &cs.spec, &s, errmsg));
    OK(driver_ensure_namespace(d, e, env->ns, errmsg));
    OK(driver_create(d, e, &cs.spec, &s, errmsg));
    driver_sandbox_close(&s);
    FAILS(GERR_CONSTRAINT, driver_delete_namespace(d, e, env->ns, errmsg));
    OK(driver_delete(d, e, env->ns, cs.id, errmsg));
    OK(driver_delete_namespace(d, e, env->ns, errmsg));
    driver_free(d);
}

void conf_config_keys(const struct conf_env *env)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = env->open(env->ctx);
    struct conf_spec cs;
    struct driver_sandbox s;
    struct driver_kv bad[] = {{"no_such_key", "1"}};
    struct driver_kv good[] = {{env->config_key, env->config_value}};
    const char *const none_allowed[] = {NULL};
    const char *const allowed[] = {env->config_key, NULL};
    conf_spec(env, &cs, "config");

    cs.spec.driver_config = bad;
    cs.spec.n_driver_config = 1;
    FAILS(GERR_INVAL, driver_validate(d, &cs.spec, NULL, errmsg));
    assert_non_null(strstr(errmsg, "\"no_such_key\""));
    assert_non_null(strstr(errmsg, env->config_key)); /* the message names what is known */
    FAILS(GERR_INVAL, driver_create(d, conf_epoch(), &cs.spec, &s, errmsg));

    cs.spec.driver_config = good;
    OK(driver_validate(d, &cs.spec, NULL, errmsg));
    OK(driver_validate(d, &cs.spec, allowed, errmsg));
    FAILS(GERR_PERM, driver_validate(d, &cs.spec, none_allowed, errmsg));
    assert_non_null(strstr(errmsg, env->config_key));
    assert_non_null(strstr(errmsg, "not allowed"));

    struct driver_kv twice[] = {{env->config_key, env->config_value}, {env->config_key, env->config_value}};
    cs.spec.driver_config = twice;
    cs.spec.n_driver_config = 2;
    FAILS(GERR_INVAL, driver_validate(d, &cs.spec, NULL, errmsg));
    driver_free(d);
}

void conf_bad_arguments(const struct conf_env *env)
{
    char errmsg[GERR_MSG_SIZE];
    struct driver *d = env->open(env->ctx);
    struct conf_spec cs;
    struct driver_sandbox s;
    uint64_t e = conf_epoch();
    conf_spec(env, &cs, "bad");

    FAILS(GERR_INVAL, driver_create(d, 0, &cs.spec, &s, errmsg));
    FAILS(GERR_INVAL, driver_get(d, e, env->ns, "not-a-uuid", &s, errmsg));
    FAILS(GERR_INVAL, driver_get(d, e, "Bad_NS", cs.id, &s, errmsg));
    FAILS(GERR_INVAL, driver_delete(d, e, env->ns, "0000", errmsg));
    FAILS(GERR_INVAL, driver_ensure_namespace(d, e, "-x", errmsg));

    cs.spec.name = "Upper";
    FAILS(GERR_INVAL, driver_validate(d, &cs.spec, NULL, errmsg));
    cs.spec.name = "ok";
    struct driver_kv env_bad[] = {{"1BAD", "x"}};
    cs.spec.env = env_bad;
    cs.spec.n_env = 1;
    FAILS(GERR_INVAL, driver_validate(d, &cs.spec, NULL, errmsg));
    cs.spec.n_env = 0;
    struct driver_kv reserved[] = {{"gantry.dev/gateway-id", "x"}};
    cs.spec.labels = reserved;
    cs.spec.n_labels = 1;
    FAILS(GERR_INVAL, driver_validate(d, &cs.spec, NULL, errmsg));
    assert_non_null(strstr(errmsg, "reserved"));
    cs.spec.n_labels = 0;
    cs.spec.n_command = 0;
    FAILS(GERR_INVAL, driver_validate(d, &cs.spec, NULL, errmsg));
    driver_free(d);
}
