/* server/lifecycle_event.h: the lifecycle mapping, the CloudEvent JSON, the signature. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "server/lifecycle_event.h"

static void mapping(void **state)
{
    (void)state;
    assert_string_equal(lifecycle_state("ADDED", GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_PROVISIONING),
                        "provisioning");
    assert_string_equal(lifecycle_state("MODIFIED", GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_PROVISIONING),
                        "provisioning");
    assert_string_equal(lifecycle_state("MODIFIED", GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_READY), "ready");
    assert_string_equal(lifecycle_state("MODIFIED", GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_ERROR),
                        "failed");
    assert_string_equal(lifecycle_state("MODIFIED", GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_DELETING),
                        "deleting");
    assert_string_equal(lifecycle_state("MODIFIED", GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_STOPPED),
                        "stopped");
    assert_string_equal(lifecycle_state("DELETED", 0), "deleted");
    assert_string_equal(lifecycle_state("DELETED", GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_READY),
                        "deleted");
    assert_null(lifecycle_state("MODIFIED", GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_UNSPECIFIED));
    assert_null(lifecycle_state("MODIFIED", GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_UNKNOWN));
    assert_null(lifecycle_state("MODIFIED", 99));
    assert_null(lifecycle_state("MODIFIED", -1));
}

static void failed_event(void **state)
{
    (void)state;
    Gantry__V1__Sandbox sb = GANTRY__V1__SANDBOX__INIT;
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__SandboxSpec spec = GANTRY__V1__SANDBOX_SPEC__INIT;
    Gantry__V1__SandboxStatus st = GANTRY__V1__SANDBOX_STATUS__INIT;
    Gantry__V1__SandboxCondition cond = GANTRY__V1__SANDBOX_CONDITION__INIT;
    Gantry__V1__SandboxCondition *conds[] = {&cond};
    Gantry__V1__SandboxSpec__EnvEntry env = GANTRY__V1__SANDBOX_SPEC__ENV_ENTRY__INIT;
    Gantry__V1__SandboxSpec__EnvEntry *envs[] = {&env};
    char *command[] = {"sh", "-c", "secret-command"};
    char *providers[] = {"openai"};
    meta.id = "0b1c";
    meta.name = "agent";
    meta.namespace_ = "team-a";
    meta.resource_version = 42;
    spec.image = "busybox:1.36";
    env.key = "TOKEN";
    env.value = "env-value-never-sent";
    spec.n_env = 1;
    spec.env = envs;
    spec.n_command = 3;
    spec.command = command;
    spec.n_providers = 1;
    spec.providers = providers;
    st.phase = GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_ERROR;
    cond.type = "Driver";
    cond.reason = "ERROR";
    cond.message = "bwrap: execvp x: No such file or directory";
    st.n_conditions = 1;
    st.conditions = conds;
    sb.meta = &meta;
    sb.spec = &spec;
    sb.status = &st;
    char *body = lifecycle_event_json("gw-1", 42, 1765066811532, "failed", &sb, "team-a", "0b1c");
    assert_non_null(body);
    assert_null(strstr(body, "env-value-never-sent"));
    assert_null(strstr(body, "secret-command"));
    json_error_t err;
    json_t *ev = json_loads(body, 0, &err);
    assert_non_null(ev);
    assert_string_equal(json_string_value(json_object_get(ev, "specversion")), "1.0");
    assert_string_equal(json_string_value(json_object_get(ev, "id")), "gw-1-42");
    assert_string_equal(json_string_value(json_object_get(ev, "source")), "gw-1");
    assert_string_equal(json_string_value(json_object_get(ev, "type")), "io.gantry.sandbox.failed");
    assert_string_equal(json_string_value(json_object_get(ev, "subject")), "team-a/agent");
    assert_string_equal(json_string_value(json_object_get(ev, "time")), "2025-12-07T00:20:11.532Z");
    assert_string_equal(json_string_value(json_object_get(ev, "datacontenttype")), "application/json");
    assert_int_equal(json_integer_value(json_object_get(ev, "gantryrevision")), 42);
    json_t *data = json_object_get(ev, "data");
    assert_string_equal(json_string_value(json_object_get(data, "state")), "failed");
    assert_string_equal(json_string_value(json_object_get(data, "phase")), "ERROR");
    assert_string_equal(json_string_value(json_object_get(data, "reason")), "ERROR");
    assert_string_equal(json_string_value(json_object_get(data, "message")), cond.message);
    assert_string_equal(json_string_value(json_array_get(json_object_get(data, "providers"), 0)), "openai");
    assert_null(json_object_get(data, "env"));
    assert_null(json_object_get(data, "command"));
    json_decref(ev);
    free(body);

    /* A ready sandbox has no reason; without a sandbox (a DELETED change whose last state is gone)
     * the event names it by id. */
    st.phase = GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_READY;
    body = lifecycle_event_json("gw-1", 43, 0, "ready", &sb, "team-a", "0b1c");
    ev = json_loads(body, 0, &err);
    assert_null(json_object_get(json_object_get(ev, "data"), "reason"));
    assert_string_equal(json_string_value(json_object_get(ev, "time")), "1970-01-01T00:00:00.000Z");
    json_decref(ev);
    free(body);
    body = lifecycle_event_json("gw-1", 44, 0, "deleted", NULL, "team-a", "0b1c");
    ev = json_loads(body, 0, &err);
    assert_string_equal(json_string_value(json_object_get(ev, "subject")), "team-a/0b1c");
    assert_string_equal(json_string_value(json_object_get(json_object_get(ev, "data"), "id")), "0b1c");
    json_decref(ev);
    free(body);
}

/* RFC 4231, test case 2. */
static void signature(void **state)
{
    (void)state;
    char out[LIFECYCLE_SIGNATURE_SIZE];
    const char *body = "what do ya want for nothing?";
    lifecycle_event_sign((const unsigned char *)"Jefe", 4, body, strlen(body), out);
    assert_string_equal(out, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mapping),
        cmocka_unit_test(failed_event),
        cmocka_unit_test(signature),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
