/* The behaviour every driver owes drivers/driver.h, as cmocka checks any driver's test runs.
 *
 * A driver's test fills a struct conf_env (how to open another instance over the same backend,
 * what command keeps a sandbox running, a driver_config key the driver knows) and calls the
 * conf_* tests. Epochs come from conf_epoch(), which only grows, because backends remember the
 * newest epoch across tests. */
#ifndef GANTRY_TESTS_DRIVERS_CONFORMANCE_H
#define GANTRY_TESTS_DRIVERS_CONFORMANCE_H

#include <stddef.h>
#include <stdint.h>

#include "drivers/driver.h"

struct conf_env {
    struct driver *(*open)(void *ctx); /* a new instance over the shared backend */
    void *ctx;
    const char *const *command; /* keeps a sandbox running until it is deleted */
    size_t n_command;
    const char *image;
    const char *config_key;   /* a key the driver knows ... */
    const char *config_value; /* ... with a value it accepts */
    const char *ns;           /* a namespace the tests may ensure and delete */
    unsigned ready_timeout_ms;
};

/* The next epoch, larger than every epoch handed out before in this process. */
uint64_t conf_epoch(void);

/* A fresh canonical lowercase UUID. */
void conf_uuid(char out[DRIVER_ID_LEN + 1]);

/* A spec in @env->ns named @name with @env's command and image (the pointers stay valid until the
 * next conf_spec call on the same struct). */
struct conf_spec {
    char id[DRIVER_ID_LEN + 1];
    struct driver_sandbox_spec spec;
};
void conf_spec(const struct conf_env *env, struct conf_spec *cs, const char *name);

/* Poll get() until the sandbox is READY (fails the test after env->ready_timeout_ms). */
void conf_wait_ready(const struct conf_env *env, struct driver *d, uint64_t epoch, const char *ns,
                     const char *id);

/* How many items of a list have @id. */
size_t conf_count(const struct driver_sandbox_list *l, const char *id);

void conf_lifecycle(const struct conf_env *env);     /* create/get/list/delete, each idempotent */
void conf_stale_epoch(const struct conf_env *env);   /* older epochs refused by every operation */
void conf_adoption(const struct conf_env *env);      /* a second instance sees, keeps, deletes */
void conf_namespaces(const struct conf_env *env);    /* ensure before create, delete refuses non-empty */
void conf_config_keys(const struct conf_env *env);   /* unknown key GERR_INVAL, disallowed GERR_PERM */
void conf_bad_arguments(const struct conf_env *env); /* epoch 0, bad ids, bad specs: GERR_INVAL */

#endif
