/* gantryd's configuration: defaults, precedence, every validation error, and the docs check.
 *
 * Run with --write-doc to regenerate the reference table in docs/configuration.md from the field
 * table (the test named docs_match_table fails until that is done after a change to the table). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/buf.h"
#include "lib/mem.h"
#include "server/config.h"

#ifndef GANTRY_SOURCE_DIR
#error "GANTRY_SOURCE_DIR must name the source tree (tests/unit/CMakeLists.txt)"
#endif
#define DOC_PATH  GANTRY_SOURCE_DIR "/docs/configuration.md"
#define DOC_BEGIN "<!-- BEGIN GENERATED: config_doc_markdown -->\n"
#define DOC_END   "<!-- END GENERATED -->\n"

#define FILE_NAME "/etc/gantry/gantryd.json"

/* Everything a case needs: a file's content (or NULL), environment and flags (NULL-terminated;
 * flags without argv[0]). Returns the first nonzero result, as gantryd's main would see it. */
static int load(struct config *cfg, const char *json, const char *const *env, const char *const *flags,
                char *errmsg)
{
    char *argv[64];
    int argc = 0;
    bool help = false;
    int rv;

    argv[argc++] = "gantryd";
    for (size_t i = 0; flags != NULL && flags[i] != NULL; i++) {
        argv[argc++] = (char *)flags[i];
    }
    argv[argc] = NULL;
    errmsg[0] = '\0';
    config_init_defaults(cfg);
    if (json != NULL && (rv = config_load_buffer(cfg, json, strlen(json), FILE_NAME, errmsg)) != 0) {
        return rv;
    }
    if (env != NULL && (rv = config_apply_env(cfg, (char *const *)env, errmsg)) != 0) {
        return rv;
    }
    if ((rv = config_apply_flags(cfg, argc, argv, &help, errmsg)) != 0) {
        return rv;
    }
    assert_false(help);
    if ((rv = config_read_join_token_file(cfg, errmsg)) != 0) {
        return rv;
    }
    return config_validate(cfg, errmsg);
}

/* Expect failure with exactly @want as the message (or, if @want ends in '*', as its prefix). */
static void expect_error(const char *json, const char *const *env, const char *const *flags, const char *want)
{
    struct config cfg;
    char errmsg[GERR_MSG_SIZE];
    int rv = load(&cfg, json, env, flags, errmsg);
    size_t n = strlen(want);
    if (rv == 0) {
        fail_msg("expected an error like [%s], got success", want);
    }
    if (want[n - 1] == '*' ? strncmp(errmsg, want, n - 1) != 0 : strcmp(errmsg, want) != 0) {
        fail_msg("expected [%s]\n     got [%s]", want, errmsg);
    }
    config_free(&cfg);
}

static void expect_ok(const char *json, const char *const *env, const char *const *flags, struct config *cfg)
{
    char errmsg[GERR_MSG_SIZE];
    int rv = load(cfg, json, env, flags, errmsg);
    if (rv != 0) {
        fail_msg("unexpected error %d: %s", rv, errmsg);
    }
}

#define ENV(...)   ((const char *const[]){__VA_ARGS__, NULL})
#define FLAGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define ID2        "GANTRY_REPLICA_ID=2"

static size_t field_index(const char *key)
{
    struct config_field_info info;
    for (size_t i = 0; i < config_field_count(); i++) {
        config_field_get(i, &info);
        if (strcmp(info.key, key) == 0) {
            return i;
        }
    }
    fail_msg("no field %s", key);
    return 0;
}

/* ---- defaults and precedence ------------------------------------------------------------ */

static void defaults(void **state)
{
    (void)state;
    struct config cfg;
    char errmsg[GERR_MSG_SIZE];
    config_init_defaults(&cfg);
    assert_int_equal(cfg.replica_id, 0);
    assert_string_equal(cfg.replica_name, "");
    assert_string_equal(cfg.data_dir, "/var/lib/gantry");
    assert_string_equal(cfg.api_address, "127.0.0.1:8443");
    assert_string_equal(cfg.peer_address, "127.0.0.1:9443");
    assert_string_equal(cfg.admin_address, "127.0.0.1:8081");
    assert_string_equal(cfg.gateway_id, "gantry");
    assert_int_equal(cfg.failure_domain, 0);
    assert_string_equal(cfg.api_tls_cert, "");
    assert_false(cfg.api_h2c);
    assert_int_equal(cfg.join.n, 0);
    assert_string_equal(cfg.join_token, "");
    assert_int_equal(cfg.latency_ms, 20);
    assert_int_equal(cfg.snapshot_threshold, 256);
    assert_int_equal(cfg.snapshot_trailing, 256);
    assert_int_equal(cfg.roles_grace_ms, 30000);
    assert_string_equal(cfg.log_level, "info");
    assert_int_equal(cfg.max_message_bytes, 4u << 20);
    assert_int_equal(cfg.max_concurrent_streams, 100);
    for (size_t i = 0; i < config_field_count(); i++) {
        assert_int_equal(cfg.origin[i], CONFIG_SRC_DEFAULT);
    }
    /* The only thing the defaults lack is an identity. */
    assert_int_equal(config_validate(&cfg, errmsg), GERR_INVAL);
    assert_string_equal(errmsg,
                        "config: replica_id is required: a stable non-zero integer (file key replica_id, "
                        "GANTRY_REPLICA_ID or --replica-id)");
    cfg.replica_id = 7;
    assert_int_equal(config_validate(&cfg, errmsg), 0);
    assert_string_equal(cfg.replica_name, "replica-7");
    config_free(&cfg);
    config_free(&cfg); /* idempotent */
}

static const char *const prec_json =
    "{\"replica_id\": 3, \"data_dir\": \"/file/dir\", \"api_address\": "
    "\"127.0.0.1:1001\", \"latency_ms\": 30, \"log_level\": \"debug\", \"join\": "
    "[\"10.0.0.1:8443\"], \"join_token\": \"file-token\", \"gateway_id\": \"g-file\"}";

static void check_precedence(const struct config *cfg)
{
    assert_int_equal(cfg->replica_id, 3);                    /* file only */
    assert_string_equal(cfg->data_dir, "/file/dir");         /* file only */
    assert_string_equal(cfg->api_address, "127.0.0.1:2002"); /* file < env */
    assert_int_equal(cfg->latency_ms, 50);                   /* file < env < flag */
    assert_string_equal(cfg->log_level, "trace");            /* default < flag */
    assert_string_equal(cfg->gateway_id, "g-env");           /* file < env */
    assert_int_equal(cfg->join.n, 2);                        /* file < env: replaced, not merged */
    assert_string_equal(cfg->join.items[0], "10.0.0.2:8443");
    assert_string_equal(cfg->join.items[1], "10.0.0.3:8443");
    assert_string_equal(cfg->join_token, "file-token");
    assert_int_equal(cfg->origin[field_index("data_dir")], CONFIG_SRC_FILE);
    assert_int_equal(cfg->origin[field_index("api_address")], CONFIG_SRC_ENV);
    assert_int_equal(cfg->origin[field_index("latency_ms")], CONFIG_SRC_FLAG);
    assert_int_equal(cfg->origin[field_index("max_message_bytes")], CONFIG_SRC_DEFAULT);
}

static void precedence_file_env_flags(void **state)
{
    (void)state;
    struct config cfg;
    const char *const *env =
        ENV("GANTRY_API_ADDRESS=127.0.0.1:2002", "GANTRY_LATENCY_MS=40", "GANTRY_GATEWAY_ID=g-env",
            "GANTRY_JOIN=10.0.0.2:8443, 10.0.0.3:8443", "PATH=/usr/bin", "GANTRY_IT_KEEP=1");
    expect_ok(prec_json, env, FLAGS("--latency-ms", "50", "--log-level=TRACE"), &cfg);
    check_precedence(&cfg);
    config_free(&cfg);
}

/* gantryd reads flags and env first (they name the file) and the file last: same result. */
static void precedence_independent_of_call_order(void **state)
{
    (void)state;
    struct config cfg;
    char errmsg[GERR_MSG_SIZE];
    bool help;
    char *argv[] = {"gantryd", "--latency-ms", "50", "--log-level=TRACE", "--config", "/x.json", NULL};
    char *env[] = {"GANTRY_API_ADDRESS=127.0.0.1:2002", "GANTRY_LATENCY_MS=40", "GANTRY_GATEWAY_ID=g-env",
                   "GANTRY_JOIN=10.0.0.2:8443,10.0.0.3:8443", NULL};
    config_init_defaults(&cfg);
    assert_int_equal(config_apply_flags(&cfg, 6, argv, &help, errmsg), 0);
    assert_int_equal(config_apply_env(&cfg, env, errmsg), 0);
    assert_string_equal(cfg.config_file, "/x.json");
    assert_int_equal(config_load_buffer(&cfg, prec_json, strlen(prec_json), "/x.json", errmsg), 0);
    assert_int_equal(config_validate(&cfg, errmsg), 0);
    check_precedence(&cfg);
    config_free(&cfg);

    /* A value that is overridden is still checked: a mistake in a lower layer is not hidden. */
    char *argv2[] = {"gantryd", "--latency-ms", "50", NULL};
    char *env2[] = {"GANTRY_LATENCY_MS=fast", NULL};
    config_init_defaults(&cfg);
    assert_int_equal(config_apply_flags(&cfg, 3, argv2, &help, errmsg), 0);
    assert_int_equal(config_apply_env(&cfg, env2, errmsg), GERR_INVAL);
    assert_string_equal(errmsg,
                        "config: latency_ms (from GANTRY_LATENCY_MS): \"fast\" is not an unsigned decimal "
                        "integer");
    const char *json = "{\"latency_ms\": \"20\"}";
    assert_int_equal(config_load_buffer(&cfg, json, strlen(json), "/x.json", errmsg), GERR_INVAL);
    assert_string_equal(errmsg, "config: latency_ms (from /x.json): expected an integer, got a string");
    assert_int_equal(cfg.latency_ms, 50);
    config_free(&cfg);
}

static void repeated_join_flags_add(void **state)
{
    (void)state;
    struct config cfg;
    expect_ok("{\"join\": [\"10.9.9.9:1\"]}", ENV(ID2, "GANTRY_JOIN_TOKEN=t0k3n"),
              FLAGS("--join", "10.0.0.1:8443", "--join=[fd00::1]:8443,10.0.0.3:8443"), &cfg);
    assert_int_equal(cfg.join.n, 3);
    assert_string_equal(cfg.join.items[0], "10.0.0.1:8443");
    assert_string_equal(cfg.join.items[1], "[fd00::1]:8443");
    assert_string_equal(cfg.join.items[2], "10.0.0.3:8443");
    config_free(&cfg);
}

static void help_flag(void **state)
{
    (void)state;
    struct config cfg;
    char errmsg[GERR_MSG_SIZE];
    bool help;
    char *argv[] = {"gantryd", "--data-dir", "/d", "--help", "--bogus", NULL};
    config_init_defaults(&cfg);
    assert_int_equal(config_apply_flags(&cfg, 5, argv, &help, errmsg), 0);
    assert_true(help);
    config_free(&cfg);

    struct buf b;
    buf_init(&b);
    config_help(&b);
    for (size_t i = 0; i < config_field_count(); i++) {
        struct config_field_info info;
        config_field_get(i, &info);
        assert_non_null(strstr((char *)b.data, info.env));
        if (info.flag[0] != '\0') {
            assert_non_null(strstr((char *)b.data, info.flag));
        }
    }
    assert_null(strstr((char *)b.data, "--join-token "));
    buf_close(&b);
}

/* The env and flag names are derived from the key by one rule (config.c's env_name and flag_name);
 * this spells the rule out again, so that changing it, which renames every variable and flag, shows. */
static void names_follow_the_key(void **state)
{
    (void)state;
    for (size_t i = 0; i < config_field_count(); i++) {
        struct config_field_info info;
        char env[128] = "GANTRY_";
        char flag[128] = "--";
        config_field_get(i, &info);
        for (size_t k = 0; info.key[k] != '\0'; k++) {
            char c = info.key[k];
            env[7 + k] = (char)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
            env[8 + k] = '\0';
            flag[2 + k] = c == '_' ? '-' : c;
            flag[3 + k] = '\0';
        }
        assert_string_equal(info.env, env);
        if (info.secret) {
            assert_string_equal(info.flag, "");
        } else {
            assert_string_equal(info.flag, flag);
        }
    }
}

/* ---- validation errors, one per rule, each naming the key and its source ---------------- */

static void address_errors(void **state)
{
    (void)state;
    expect_error(
        NULL, ENV(ID2, "GANTRY_PEER_ADDRESS=10.0.0.1"), NULL,
        "config: peer_address (from GANTRY_PEER_ADDRESS): \"10.0.0.1\" is not a.b.c.d:port (dqlite 1.11 "
        "takes IPv4 literals only; port 1..65535)");
    expect_error(NULL, ENV(ID2), FLAGS("--peer-address", "[::1]:9443"),
                 "config: peer_address (from --peer-address): \"[::1]:9443\" is not a.b.c.d:port*");
    expect_error(NULL, ENV(ID2), FLAGS("--peer-address", "10.0.0.1:0"),
                 "config: peer_address (from --peer-address): \"10.0.0.1:0\" is not a.b.c.d:port*");
    expect_error("{\"peer_address\": \"0.0.0.0:9443\"}", ENV(ID2), NULL,
                 "config: peer_address (from " FILE_NAME "): \"0.0.0.0:9443\" is a wildcard: peers dial this "
                 "address, so it must be one they can reach*");
    expect_error(
        NULL, ENV(ID2), FLAGS("--api-address", "localhost:8443"),
        "config: api_address (from --api-address): \"localhost:8443\" is not a.b.c.d:port or [v6]:port "
        "(numeric host, port 0..65535)");
    expect_error(NULL, ENV(ID2), FLAGS("--api-address", "[::1]:99999"),
                 "config: api_address (from --api-address)*");
    expect_error(NULL, ENV(ID2), FLAGS("--api-address", "[::1"), "config: api_address (from --api-address)*");
    expect_error(NULL, ENV(ID2, "GANTRY_ADMIN_ADDRESS=127.0.0.1:+80"), NULL,
                 "config: admin_address (from GANTRY_ADMIN_ADDRESS): \"127.0.0.1:+80\" is not a.b.c.d:port*");
    expect_error(
        NULL, ENV(ID2, "GANTRY_ADMIN_ADDRESS=127.0.0.1:8443"), NULL,
        "config: admin_address (from GANTRY_ADMIN_ADDRESS): port 8443 is already used by api_address (from "
        "default)");
    expect_error(NULL, ENV(ID2, "GANTRY_API_ADDRESS=0.0.0.0:9443"), NULL,
                 "config: peer_address (from default): port 9443 is already used by api_address (from "
                 "GANTRY_API_ADDRESS)");
    struct config cfg;
    expect_ok(NULL, ENV(ID2), FLAGS("--api-address", "[::]:0", "--admin-address", "0.0.0.0:0"), &cfg);
    config_free(&cfg);
}

static void integer_errors(void **state)
{
    (void)state;
    expect_error(NULL, ENV(ID2, "GANTRY_LATENCY_MS=0"), NULL,
                 "config: latency_ms (from GANTRY_LATENCY_MS): \"0\" is out of range (1..3600000)");
    expect_error(NULL, ENV(ID2), FLAGS("--latency-ms=3600001"),
                 "config: latency_ms (from --latency-ms): \"3600001\" is out of range (1..3600000)");
    expect_error(NULL, ENV(ID2), FLAGS("--latency-ms", "-5"),
                 "config: latency_ms (from --latency-ms): \"-5\" is not an unsigned decimal integer");
    expect_error(NULL, ENV(ID2, "GANTRY_LATENCY_MS=20ms"), NULL,
                 "config: latency_ms (from GANTRY_LATENCY_MS): \"20ms\" is not an unsigned decimal integer");
    expect_error(NULL, ENV(ID2, "GANTRY_LATENCY_MS=99999999999999999999999"), NULL,
                 "config: latency_ms (from GANTRY_LATENCY_MS): *");
    expect_error("{\"latency_ms\": -1}", ENV(ID2), NULL,
                 "config: latency_ms (from " FILE_NAME "): -1 is out of range (1..3600000)");
    expect_error("{\"replica_id\": 0}", NULL, NULL,
                 "config: replica_id (from " FILE_NAME "): 0 is out of range (1..9223372036854775807)");
    expect_error(NULL, ENV("GANTRY_REPLICA_ID=abc"), NULL,
                 "config: replica_id (from GANTRY_REPLICA_ID): \"abc\" is not an unsigned decimal integer");
    expect_error(NULL, ENV(ID2, "GANTRY_SNAPSHOT_TRAILING=3"), FLAGS("--snapshot-threshold", "2"),
                 "config: snapshot_trailing (from GANTRY_SNAPSHOT_TRAILING): \"3\" is out of range "
                 "(4..4294967295)");
    expect_error(
        NULL, ENV(ID2, "GANTRY_SNAPSHOT_TRAILING=100"), FLAGS("--snapshot-threshold", "200"),
        "config: snapshot_trailing (from GANTRY_SNAPSHOT_TRAILING): 100 is less than snapshot_threshold 200 "
        "(from --snapshot-threshold)");
    expect_error(NULL, ENV(ID2, "GANTRY_SNAPSHOT_THRESHOLD=0"), NULL,
                 "config: snapshot_threshold (from GANTRY_SNAPSHOT_THRESHOLD): \"0\" is out of range*");
    expect_error(
        NULL, ENV(ID2, "GANTRY_ROLES_GRACE_MS=300"), NULL,
        "config: roles_grace_ms (from GANTRY_ROLES_GRACE_MS): 300 is not longer than the election timeout "
        "of 300 ms (15 x latency_ms 20, from default): members would be replaced during ordinary elections");
    expect_error(
        NULL, ENV(ID2), FLAGS("--max-message-bytes", "100"),
        "config: max_message_bytes (from --max-message-bytes): \"100\" is out of range (1024..268435456)");
    expect_error(
        NULL, ENV(ID2), FLAGS("--max-concurrent-streams", "0"),
        "config: max_concurrent_streams (from --max-concurrent-streams): \"0\" is out of range (1..10000)");
    struct config cfg;
    expect_ok(NULL, ENV(ID2, "GANTRY_SNAPSHOT_TRAILING=4", "GANTRY_SNAPSHOT_THRESHOLD=4"),
              FLAGS("--latency-ms", "3600000", "--roles-grace-ms", "86400000"), &cfg);
    assert_int_equal(cfg.latency_ms, 3600000);
    config_free(&cfg);
}

static void string_errors(void **state)
{
    (void)state;
    expect_error(
        NULL, ENV(ID2, "GANTRY_REPLICA_NAME=Replica_1"), NULL,
        "config: replica_name (from GANTRY_REPLICA_NAME): \"Replica_1\" contains uppercase 'R' (only "
        "lowercase letters, digits and '-')");
    expect_error(NULL, ENV(ID2), FLAGS("--data-dir="),
                 "config: data_dir (from --data-dir): must not be empty");
    expect_error(
        NULL, ENV(ID2, "GANTRY_LOG_LEVEL=verbose"), NULL,
        "config: log_level (from GANTRY_LOG_LEVEL): \"verbose\" is not one of error, warn, info, debug, "
        "trace");
    expect_error(NULL, ENV(ID2, "GANTRY_DATA_DIR=/a\nb"), NULL,
                 "config: data_dir (from GANTRY_DATA_DIR): \"/a\\x0ab\" contains a control character");
    expect_error(NULL, ENV(ID2, "GANTRY_API_H2C=yes"), NULL,
                 "config: api_h2c (from GANTRY_API_H2C): \"yes\" is not a bool (true, false, 1 or 0)");
    expect_error(
        NULL, ENV(ID2, "GANTRY_FAILURE_DOMAIN=rack a"), NULL,
        "config: failure_domain (from GANTRY_FAILURE_DOMAIN): \"rack a\" is not a name of letters, digits, "
        "'-', '_', '.' and '/'");
    expect_error(NULL, NULL, FLAGS("--replica-id"), "config: flag --replica-id needs a value (integer)");
    expect_error(NULL, NULL, FLAGS("serve"),
                 "config: unexpected argument \"serve\" (flags look like --key value or "
                 "--key=value)");
    expect_error(NULL, NULL, FLAGS("--", "x"), "config: unexpected argument \"x\"");
}

static void tls_presence_rules(void **state)
{
    (void)state;
    expect_error(
        NULL, ENV(ID2, "GANTRY_API_TLS_CERT=/c.pem"), NULL,
        "config: api_tls_cert (from GANTRY_API_TLS_CERT): is set but api_tls_key is not: they come as a "
        "pair");
    expect_error("{\"api_tls_key\": \"/k.pem\"}", ENV(ID2), NULL,
                 "config: api_tls_key (from " FILE_NAME
                 "): is set but api_tls_cert is not: they come as a pair");
    expect_error(
        NULL, ENV(ID2), FLAGS("--peer-tls-ca", "/ca.pem", "--peer-tls-key", "/k.pem"),
        "config: peer_tls_ca (from --peer-tls-ca): is set but peer_tls_cert is not: set peer_tls_ca, "
        "peer_tls_cert and peer_tls_key together, or none of them to use the files init/join create");
    expect_error(NULL, ENV(ID2), FLAGS("--peer-tls-key", "/k.pem"),
                 "config: peer_tls_key (from --peer-tls-key): is set but peer_tls_ca is not*");
    struct config cfg;
    expect_ok(NULL, ENV(ID2),
              FLAGS("--peer-tls-ca", "/a", "--peer-tls-cert", "/b", "--peer-tls-key", "/c", "--api-tls-cert",
                    "/d", "--api-tls-key", "/e", "--api-tls-client-ca", "/f"),
              &cfg);
    config_free(&cfg);
}

/* Scheduled backups: never without a key, never without a reconciler, and sane numbers. */
static void backup_rules(void **state)
{
    (void)state;
    expect_error(
        NULL, ENV(ID2), FLAGS("--backup-dir", "/b"),
        "config: backup_dir (from --backup-dir): is set but backup_seal_key_file is not: scheduled backups "
        "are always encrypted: give backup_dir and backup_seal_key_file together");
    expect_error(
        NULL, ENV(ID2, "GANTRY_BACKUP_SEAL_KEY_FILE=/k"), NULL,
        "config: backup_seal_key_file (from GANTRY_BACKUP_SEAL_KEY_FILE): is set but backup_dir is not*");
    expect_error(
        NULL, ENV(ID2), FLAGS("--backup-dir", "/b", "--backup-seal-key-file", "/k", "--driver", "none"),
        "config: backup_dir (from --backup-dir): scheduled backups are written by the replica holding "
        "the reconciler lease, and driver \"none\" runs no reconciler*");
    expect_error(NULL, ENV(ID2), FLAGS("--backup-keep-count", "0"), "config: backup_keep_count (from *");
    expect_error(NULL, ENV(ID2), FLAGS("--backup-interval-s", "0"), "config: backup_interval_s (from *");
    struct config cfg;
    expect_ok("{\"backup_dir\": \"/b\", \"backup_seal_key_file\": \"/k\", \"backup_keep_age_hours\": 0}",
              ENV(ID2), FLAGS("--backup-interval-s", "5", "--backup-keep-count", "3"), &cfg);
    assert_string_equal(cfg.backup_dir, "/b");
    assert_int_equal(cfg.backup_interval_s, 5);
    assert_int_equal(cfg.backup_keep_count, 3);
    assert_int_equal(cfg.backup_keep_age_hours, 0);
    config_free(&cfg);
}

/* The lifecycle webhook: an http(s) URL with a host, a reconciler to deliver it, files only with it. */
static void webhook_rules(void **state)
{
    (void)state;
    expect_error(
        NULL, ENV(ID2), FLAGS("--lifecycle-webhook-url", "ftp://h/"),
        "config: lifecycle_webhook_url (from --lifecycle-webhook-url): \"ftp://h/\" is not an http:// or "
        "https:// URL*");
    expect_error(NULL, ENV(ID2), FLAGS("--lifecycle-webhook-url", "https:///p"),
                 "config: lifecycle_webhook_url (from --lifecycle-webhook-url): \"https:///p\" has no host");
    expect_error(NULL, ENV(ID2), FLAGS("--lifecycle-webhook-url", "http://h/a b"),
                 "config: lifecycle_webhook_url (from --lifecycle-webhook-url): \"http://h/a b\" contains a "
                 "space or a "
                 "control character");
    expect_error(
        NULL, ENV(ID2), FLAGS("--lifecycle-webhook-url", "http://h/", "--driver", "none"),
        "config: lifecycle_webhook_url (from --lifecycle-webhook-url): lifecycle events are delivered "
        "by the replica holding the reconciler lease, and driver \"none\" runs no reconciler*");
    expect_error(NULL, ENV(ID2), FLAGS("--lifecycle-webhook-secret-file", "/s"),
                 "config: lifecycle_webhook_secret_file (from --lifecycle-webhook-secret-file): is set but "
                 "lifecycle_webhook_url is not");
    expect_error(NULL, ENV(ID2), FLAGS("--lifecycle-webhook-ca-file", "/c"),
                 "config: lifecycle_webhook_ca_file (from --lifecycle-webhook-ca-file): is set but "
                 "lifecycle_webhook_url "
                 "is not");
    expect_error(NULL, ENV(ID2),
                 FLAGS("--lifecycle-webhook-url", "http://h/", "--lifecycle-webhook-backoff-ms", "2000",
                       "--lifecycle-webhook-backoff-max-ms", "1000"),
                 "config: lifecycle_webhook_backoff_max_ms (from --lifecycle-webhook-backoff-max-ms): 1000 "
                 "is less than "
                 "lifecycle_webhook_backoff_ms*");
    struct config cfg;
    expect_ok("{\"lifecycle_webhook_url\": \"https://hooks.example.com:8443/g?x=1\"}", ENV(ID2),
              FLAGS("--lifecycle-webhook-secret-file", "/s", "--lifecycle-webhook-max-attempts", "3"), &cfg);
    assert_string_equal(cfg.lifecycle_webhook_url, "https://hooks.example.com:8443/g?x=1");
    assert_string_equal(cfg.lifecycle_webhook_secret_file, "/s");
    assert_int_equal(cfg.lifecycle_webhook_max_attempts, 3);
    assert_int_equal(cfg.lifecycle_webhook_backoff_ms, 500);
    assert_int_equal(cfg.lifecycle_webhook_backoff_max_ms, 30000);
    assert_int_equal(cfg.lifecycle_webhook_timeout_ms, 5000);
    config_free(&cfg);
}

static void h2c_only_on_loopback(void **state)
{
    (void)state;
    expect_error(
        NULL, ENV(ID2, "GANTRY_API_ADDRESS=0.0.0.0:8443"), FLAGS("--api-h2c"),
        "config: api_h2c (from --api-h2c): plaintext h2c is allowed only on a loopback api_address, and "
        "api_address (from GANTRY_API_ADDRESS) is \"0.0.0.0:8443\"");
    expect_error("{\"api_h2c\": true, \"api_address\": \"10.1.2.3:8443\"}", ENV(ID2), NULL,
                 "config: api_h2c (from " FILE_NAME
                 "): plaintext h2c is allowed only on a loopback api_address, and "
                 "api_address (from " FILE_NAME ") is \"10.1.2.3:8443\"");
    expect_error(NULL, ENV(ID2), FLAGS("--api-h2c=true", "--api-address", "[::]:8443"),
                 "config: api_h2c (from*");
    expect_error(NULL, ENV(ID2, "GANTRY_API_TLS_CLIENT_CA=/ca.pem"), FLAGS("--api-h2c"),
                 "config: api_h2c (from --api-h2c): plaintext h2c cannot use api_tls_client_ca (from "
                 "GANTRY_API_TLS_CLIENT_CA): drop one of them");
    const char *ok[] = {"127.0.0.1:8443", "127.9.9.9:1", "[::1]:8443", "[::ffff:127.0.0.1]:8443"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct config cfg;
        expect_ok(NULL, ENV(ID2), FLAGS("--api-h2c", "--api-address", ok[i]), &cfg);
        assert_true(cfg.api_h2c);
        config_free(&cfg);
    }
    struct config cfg;
    expect_ok(NULL, ENV(ID2, "GANTRY_API_H2C=1"), FLAGS("--api-h2c=false", "--api-address", "10.0.0.1:8443"),
              &cfg);
    assert_false(cfg.api_h2c);
    config_free(&cfg);
}

static void gateway_id_edges(void **state)
{
    (void)state;
    struct {
        const char *id;
        const char *reason; /* NULL = valid */
    } cases[] = {
        {"abcdefghij0123456789", NULL},
        {"a", NULL},
        {"0gw", NULL},
        {"gw-1-x", NULL},
        {"abcdefghij0123456789x", "is 21 characters long, at most 20 are allowed"},
        {"Gateway", "contains uppercase 'G' (only lowercase letters, digits and '-')"},
        {"-gw", "must start and end with a letter or digit"},
        {"gw-", "must start and end with a letter or digit"},
        {"", "must not be empty"},
        {"gw_1", "contains a character other than lowercase letters, digits and '-'"},
        {"gw.1", "contains a character other than lowercase letters, digits and '-'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--gateway-id=%s", cases[i].id);
        if (cases[i].reason == NULL) {
            struct config cfg;
            expect_ok(NULL, ENV(ID2), FLAGS(flag), &cfg);
            assert_string_equal(cfg.gateway_id, cases[i].id);
            config_free(&cfg);
        } else {
            char want[GERR_MSG_SIZE];
            snprintf(want, sizeof want,
                     "config: gateway_id (from --gateway-id): \"%s\" is not a DNS-1123 label of at most 20 "
                     "characters: %s",
                     cases[i].id, cases[i].reason);
            expect_error(NULL, ENV(ID2), FLAGS(flag), want);
        }
    }
}

static void failure_domain_int_or_name(void **state)
{
    (void)state;
    struct config cfg;
    expect_ok("{\"failure_domain\": 42}", ENV(ID2), NULL, &cfg);
    assert_int_equal(cfg.failure_domain, 42);
    assert_string_equal(cfg.failure_domain_name, "");
    config_free(&cfg);
    expect_ok("{\"failure_domain\": \"zone-a\"}", ENV(ID2), NULL, &cfg);
    assert_int_equal(cfg.failure_domain, config_failure_domain_hash("zone-a"));
    assert_string_equal(cfg.failure_domain_name, "zone-a");
    config_free(&cfg);
    expect_ok(NULL, ENV(ID2, "GANTRY_FAILURE_DOMAIN=7"), NULL, &cfg);
    assert_int_equal(cfg.failure_domain, 7);
    config_free(&cfg);
    /* FNV-1a 64 reference values: the hash must never change. */
    assert_true(config_failure_domain_hash("a") == 0xaf63dc4c8601ec8cull);
    assert_true(config_failure_domain_hash("") == 0xcbf29ce484222325ull);
    expect_error("{\"failure_domain\": -3}", ENV(ID2), NULL,
                 "config: failure_domain (from " FILE_NAME "): -3 is negative");
    /* The top bit marks the standby site (standby_site sets it): refused in an integer. */
    expect_error(
        NULL, ENV(ID2, "GANTRY_FAILURE_DOMAIN=9223372036854775808"), NULL,
        "config: failure_domain (from GANTRY_FAILURE_DOMAIN): 9223372036854775808 is 2^63 or more: that "
        "bit marks the standby site (use standby_site)");
    expect_ok("{\"failure_domain\": \"a\"}", ENV(ID2), NULL, &cfg);
    assert_false(cfg.standby_site);
    config_free(&cfg);
    expect_ok("{\"failure_domain\": 42, \"standby_site\": true}", ENV(ID2), NULL, &cfg);
    assert_true(cfg.standby_site);
    assert_int_equal(cfg.failure_domain, 42);
    config_free(&cfg);
    expect_ok(NULL, ENV(ID2, "GANTRY_STANDBY_SITE=true"), NULL, &cfg);
    assert_true(cfg.standby_site);
    config_free(&cfg);
    expect_ok(NULL, ENV(ID2), FLAGS("--standby-site"), &cfg);
    assert_true(cfg.standby_site);
    config_free(&cfg);
}

/* ---- join and its token ----------------------------------------------------------------- */

static void join_token_never_from_a_flag(void **state)
{
    (void)state;
    const char *want = "config: join_token may not be given as a flag (command lines are visible in ps); use "
                       "GANTRY_JOIN_TOKEN, the config file or --join-token-file";
    expect_error(NULL, ENV(ID2), FLAGS("--join", "10.0.0.1:8443", "--join-token=s3cret"), want);
    expect_error(NULL, ENV(ID2), FLAGS("--join", "10.0.0.1:8443", "--join-token", "s3cret"), want);
}

/* The lease timing order: retry < renew deadline < duration, reported on the renew deadline. */
static void lease_timing_order(void **state)
{
    (void)state;
#define LEASE_ORDER(from)                                                                                    \
    "config: lease_renew_deadline_ms (from " from "): must lie strictly between lease_retry_ms and "         \
    "lease_duration_ms (the holder must stop acting before a contender may take over)"
    expect_error(NULL, ENV(ID2, "GANTRY_LEASE_RETRY_MS=10000"), NULL, LEASE_ORDER("default"));
    expect_error(NULL, ENV(ID2), FLAGS("--lease-duration-ms", "10000"), LEASE_ORDER("default"));
    expect_error(NULL, ENV(ID2), FLAGS("--lease-renew-deadline-ms=1999"),
                 LEASE_ORDER("--lease-renew-deadline-ms"));
#undef LEASE_ORDER
    struct config cfg;
    expect_ok(NULL, ENV(ID2),
              FLAGS("--lease-retry-ms=50", "--lease-renew-deadline-ms=200", "--lease-duration-ms=300"), &cfg);
    config_free(&cfg);
}

/* With several rules broken, the first in the documented order is the one reported: the field's own
 * validators, then snapshots before TLS, TLS before join, join before ports. */
static void rules_report_in_order(void **state)
{
    (void)state;
    expect_error(NULL,
                 ENV(ID2, "GANTRY_SNAPSHOT_TRAILING=100", "GANTRY_API_TLS_CERT=/c", "GANTRY_JOIN_TOKEN=t",
                     "GANTRY_ADMIN_ADDRESS=127.0.0.1:8443", "GANTRY_LOG_LEVEL=loud"),
                 NULL, "config: log_level (from GANTRY_LOG_LEVEL): \"loud\" is not one of*");
    expect_error(NULL,
                 ENV(ID2, "GANTRY_SNAPSHOT_TRAILING=100", "GANTRY_API_TLS_CERT=/c", "GANTRY_JOIN_TOKEN=t",
                     "GANTRY_ADMIN_ADDRESS=127.0.0.1:8443"),
                 NULL, "config: snapshot_trailing (from GANTRY_SNAPSHOT_TRAILING): 100 is less than*");
    expect_error(
        NULL,
        ENV(ID2, "GANTRY_API_TLS_CERT=/c", "GANTRY_JOIN_TOKEN=t", "GANTRY_ADMIN_ADDRESS=127.0.0.1:8443"),
        NULL, "config: api_tls_cert (from GANTRY_API_TLS_CERT): is set but api_tls_key is not*");
    expect_error(NULL, ENV(ID2, "GANTRY_JOIN_TOKEN=t", "GANTRY_ADMIN_ADDRESS=127.0.0.1:8443"), NULL,
                 "config: join_token (from GANTRY_JOIN_TOKEN): is set but join is empty*");
    expect_error(NULL, ENV(ID2, "GANTRY_ADMIN_ADDRESS=127.0.0.1:8443"), NULL,
                 "config: admin_address (from GANTRY_ADMIN_ADDRESS): port 8443 is already used by*");
}

static void join_rules(void **state)
{
    (void)state;
    struct config cfg;
    char path[] = "/tmp/test_config_token_XXXXXX";

    expect_error(
        NULL, ENV(ID2), FLAGS("--join", "10.0.0.1:8443"),
        "config: join (from --join): joining needs a join token (GANTRY_JOIN_TOKEN, join_token in the file, "
        "or --join-token-file)");
    expect_error(
        NULL, ENV(ID2, "GANTRY_JOIN_TOKEN=abc"), NULL,
        "config: join_token (from GANTRY_JOIN_TOKEN): is set but join is empty: give the API address of a "
        "member to join");
    expect_error(
        NULL, ENV("GANTRY_REPLICA_ID=1", "GANTRY_JOIN_TOKEN=abc"), FLAGS("--join", "10.0.0.1:8443"),
        "config: replica_id (from GANTRY_REPLICA_ID): 1 is the id that bootstraps a new cluster; a joining "
        "replica needs another id");
    expect_error(
        NULL, ENV(ID2, "GANTRY_JOIN_TOKEN=abc"), FLAGS("--join", "10.0.0.1:8443,nohost"),
        "config: join (from --join): entry 1 \"nohost\" is not a member's API address (a.b.c.d:port, "
        "[v6]:port or name:port)");
    expect_error(NULL, ENV(ID2, "GANTRY_JOIN_TOKEN=abc"), FLAGS("--join", "10.0.0.1:8443,"),
                 "config: join (from --join): entry 1 \"\" is not a member's API address*");
    static const char *const bad[] = {"host:",     "host:0",  "host:65536", "-host:1",  "host-:1",
                                      "a..b:1",    ".a:1",    "a_b:1",      "10.0.0:1", "0.0.0.0:8443",
                                      "[::]:8443", "[::1]:0", "[fd00::1:1", "host:+1",  "10.0.0.1",
                                      ":8443",     "h st:1",  "a..:1",      "a-.b:1",   "[h]:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--join=%s", bad[i]);
        expect_error(NULL, ENV(ID2, "GANTRY_JOIN_TOKEN=abc"), FLAGS(flag),
                     "config: join (from --join): entry 0 *");
    }
    expect_ok(NULL, ENV(ID2, "GANTRY_JOIN_TOKEN=abc"),
              FLAGS("--join",
                    "gantry-0.gantry.default.svc.cluster.local:8443,GW1:1,[fd00::1]:8443,10.0.0.1:65535",
                    "--join", "gantry.default.svc.cluster.local.:8443"),
              &cfg);
    assert_int_equal(cfg.join.n, 5);
    config_free(&cfg);
    /* The secret is never quoted, even when it is what is wrong. */
    expect_error(
        NULL, ENV(ID2, "GANTRY_JOIN_TOKEN=has space"), FLAGS("--join", "10.0.0.1:8443"),
        "config: join_token (from GANTRY_JOIN_TOKEN): (redacted) contains whitespace or a non-ASCII byte");
    expect_error(NULL, ENV(ID2, "GANTRY_JOIN_TOKEN=a\tb"), FLAGS("--join", "10.0.0.1:8443"),
                 "config: join_token (from GANTRY_JOIN_TOKEN): (redacted) contains a control character");

    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "tok-from-file\n", 14), 14);
    close(fd);
    expect_ok(NULL, ENV(ID2), FLAGS("--join", "10.0.0.1:8443", "--join-token-file", path), &cfg);
    assert_string_equal(cfg.join_token, "tok-from-file");
    config_free(&cfg);
    expect_error(NULL, ENV(ID2, "GANTRY_JOIN_TOKEN=abc"),
                 FLAGS("--join", "10.0.0.1:8443", "--join-token-file", path),
                 "config: join_token (from GANTRY_JOIN_TOKEN): is set and so is join_token_file (from "
                 "--join-token-file): choose one");
    unlink(path);
    expect_error(NULL, ENV(ID2), FLAGS("--join", "10.0.0.1:8443", "--join-token-file", path),
                 "config: cannot open join token file /tmp/test_config_token_*");
    expect_ok("{\"join\": [\"10.0.0.1:8443\"], \"join_token\": \"from-the-file\"}", ENV(ID2), NULL, &cfg);
    assert_string_equal(cfg.join_token, "from-the-file");
    config_free(&cfg);
}

/* ---- the file --------------------------------------------------------------------------- */

static void unknown_keys(void **state)
{
    (void)state;
    expect_error("{\"api_adress\": \"127.0.0.1:1\"}", NULL, NULL,
                 "config: unknown key \"api_adress\" in " FILE_NAME " (did you mean \"api_address\"?)");
    expect_error("{\"snapshot_treshold\": 5}", NULL, NULL,
                 "config: unknown key \"snapshot_treshold\" in " FILE_NAME
                 " (did you mean \"snapshot_threshold\"?)");
    expect_error("{\"zzz\": 1}", NULL, NULL, "config: unknown key \"zzz\" in " FILE_NAME);
    expect_error("{\"config\": \"/other.json\"}", NULL, NULL,
                 "config: key \"config\" in " FILE_NAME
                 " is not allowed in the file (use GANTRY_CONFIG or --config)");
    expect_error(NULL, NULL, FLAGS("--api-adress", "x"),
                 "config: unknown flag \"--api-adress\" (did you mean --api-address?)");
    expect_error(NULL, NULL, FLAGS("--frobnicate=secret"),
                 "config: unknown flag \"--frobnicate\" (see --help)");
    expect_error(
        NULL, ENV("GANTRY_API_ADRESS=127.0.0.1:1"), NULL,
        "config: unknown variable GANTRY_API_ADRESS in the environment (did you mean GANTRY_API_ADDRESS?)");
    expect_error(
        NULL, ENV("GANTRY_LOGLEVEL=debug"), NULL,
        "config: unknown variable GANTRY_LOGLEVEL in the environment (did you mean GANTRY_LOG_LEVEL?)");
    /* Other GANTRY_* variables (test harness, Kubernetes service links) are not ours. */
    struct config cfg;
    expect_ok(NULL,
              ENV(ID2, "GANTRY_IT_KEEP=1", "GANTRY_BIN_DIR=/b", "GANTRY_DEV_DIR=/d",
                  "GANTRY_SERVICE_HOST=10.0.0.9", "GANTRY_PORT=tcp://10.0.0.9:8443", "GANTRY_FUZZ_SECONDS=5",
                  "GANTRY_", "GANTRY_NOEQUALS"),
              NULL, &cfg);
    config_free(&cfg);
}

static void wrong_json_types(void **state)
{
    (void)state;
    expect_error("{\"latency_ms\": \"20\"}", NULL, NULL,
                 "config: latency_ms (from " FILE_NAME "): expected an integer, got a string");
    expect_error("{\"latency_ms\": 2.5}", NULL, NULL,
                 "config: latency_ms (from " FILE_NAME "): expected an integer, got a real number");
    expect_error("{\"api_h2c\": \"true\"}", NULL, NULL,
                 "config: api_h2c (from " FILE_NAME "): expected a bool (true or false), got a string");
    expect_error("{\"data_dir\": 5}", NULL, NULL,
                 "config: data_dir (from " FILE_NAME "): expected a string, got an integer");
    expect_error("{\"data_dir\": null}", NULL, NULL,
                 "config: data_dir (from " FILE_NAME "): expected a string, got null");
    expect_error("{\"join\": \"10.0.0.1:8443\"}", NULL, NULL,
                 "config: join (from " FILE_NAME "): expected an array of strings, got a string");
    expect_error("{\"join\": [\"10.0.0.1:8443\", 7]}", NULL, NULL,
                 "config: join (from " FILE_NAME "): entry 1: expected a string, got an integer");
    expect_error("{\"failure_domain\": true}", NULL, NULL,
                 "config: failure_domain (from " FILE_NAME "): expected an integer or a string, got a bool");
    expect_error("{\"replica_id\": {}}", NULL, NULL,
                 "config: replica_id (from " FILE_NAME "): expected an integer, got an object");
    expect_error("[1, 2]", NULL, NULL,
                 "config: " FILE_NAME ": the top level must be a JSON object, got an array");
}

static void malformed_json(void **state)
{
    (void)state;
    expect_error("{\n  \"data_dir\": \"/x\",\n  \"latency_ms\": \n}\n", NULL, NULL,
                 "config: " FILE_NAME ": line 4, column 1: *");
    expect_error("", NULL, NULL, "config: " FILE_NAME ": line 1, column 0: *");
    struct config cfg;
    char errmsg[GERR_MSG_SIZE];
    config_init_defaults(&cfg);
    assert_int_equal(config_load_buffer(&cfg, "{\"a\": 1} trailing", 17, FILE_NAME, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "line 1, column"));
    assert_int_equal(config_load_buffer(&cfg, "{\"data_dir\": \"a\0b\"}", 19, FILE_NAME, errmsg), GERR_INVAL);
    config_free(&cfg);
}

static void duplicate_keys_message(void **state)
{
    (void)state;
    struct config cfg;
    char errmsg[GERR_MSG_SIZE];
    const char *json = "{\"data_dir\": \"/a\",\n \"data_dir\": \"/b\"}";
    config_init_defaults(&cfg);
    assert_int_equal(config_load_buffer(&cfg, json, strlen(json), FILE_NAME, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "duplicate object key"));
    assert_non_null(strstr(errmsg, "line 2"));
    config_free(&cfg);
}

static void replace_token_file(struct config *cfg, const char *path)
{
    mem_free(cfg->join_token_file);
    cfg->join_token_file = mem_strdup(path);
}

static void load_file_errors(void **state)
{
    (void)state;
    struct config cfg;
    char errmsg[GERR_MSG_SIZE];
    char path[] = "/tmp/test_config_file_XXXXXX";
    config_init_defaults(&cfg);
    assert_int_equal(config_load_file(&cfg, "/nonexistent/gantryd.json", errmsg), GERR_NOTFOUND);
    assert_string_equal(
        errmsg, "config: cannot open config file /nonexistent/gantryd.json: No such file or directory");
    assert_int_equal(config_load_file(&cfg, "/tmp", errmsg), GERR_INVAL);
    assert_string_equal(errmsg, "config: config file /tmp is not a regular file");

    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *json = "{\"replica_id\": 9, \"data_dir\": \"/from/disk\"}";
    assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    assert_int_equal(config_load_file(&cfg, path, errmsg), 0);
    assert_int_equal(cfg.replica_id, 9);
    assert_string_equal(cfg.data_dir, "/from/disk");
    assert_string_equal(cfg.loaded_file, path);

    /* Over the 1 MiB cap: refused before reading. */
    assert_int_equal(truncate(path, (1 << 20) + 1), 0);
    assert_int_equal(config_load_file(&cfg, path, errmsg), GERR_INVAL);
    char want[GERR_MSG_SIZE];
    snprintf(want, sizeof want, "config: config file %s is larger than 1048576 bytes", path);
    assert_string_equal(errmsg, want);

    /* The token file has its own, smaller cap, and may not hide a NUL byte. */
    replace_token_file(&cfg, path);
    assert_int_equal(config_read_join_token_file(&cfg, errmsg), GERR_INVAL);
    snprintf(want, sizeof want, "config: join token file %s is larger than 4096 bytes", path);
    assert_string_equal(errmsg, want);
    assert_int_equal(truncate(path, 100), 0); /* the JSON, then zeros */
    assert_int_equal(config_read_join_token_file(&cfg, errmsg), GERR_INVAL);
    snprintf(want, sizeof want, "config: join token file %s contains a NUL byte", path);
    assert_string_equal(errmsg, want);
    unlink(path);
    config_free(&cfg);
}

/* ---- dump, docs ------------------------------------------------------------------------- */

static void dump_redacts_and_round_trips(void **state)
{
    (void)state;
    struct config cfg;
    struct config back;
    struct buf b;
    char errmsg[GERR_MSG_SIZE];
    expect_ok(NULL, ENV(ID2, "GANTRY_JOIN_TOKEN=super-secret-token", "GANTRY_FAILURE_DOMAIN=rack-7"),
              FLAGS("--join", "10.0.0.1:8443,[fd00::2]:8443", "--latency-ms", "35", "--api-h2c"), &cfg);
    buf_init(&b);
    config_dump_json(&cfg, &b);
    buf_append(&b, "", 1);
    const char *text = (const char *)b.data;
    assert_null(strstr(text, "super-secret-token"));
    assert_non_null(strstr(text, "\"join_token\": \"(redacted)\""));
    assert_non_null(strstr(text, "\"failure_domain\": \"rack-7\""));
    assert_non_null(strstr(text, "\"replica_name\": \"replica-2\""));
    assert_null(strstr(text, "\"config\""));

    /* The dump loads back to the same configuration (apart from the redacted secret). */
    config_init_defaults(&back);
    assert_int_equal(config_load_buffer(&back, text, strlen(text), "dump", errmsg), 0);
    assert_int_equal(back.replica_id, 2);
    assert_int_equal(back.latency_ms, 35);
    assert_true(back.api_h2c);
    assert_int_equal(back.join.n, 2);
    assert_string_equal(back.join.items[1], "[fd00::2]:8443");
    assert_int_equal(back.failure_domain, cfg.failure_domain);
    assert_string_equal(back.join_token, "(redacted)");
    struct buf b2;
    buf_init(&b2);
    config_dump_json(&back, &b2);
    buf_append(&b2, "", 1);
    assert_string_equal((const char *)b2.data, text);
    buf_close(&b2);
    config_free(&back);
    buf_close(&b);
    config_free(&cfg);

    /* No token: empty, not "(redacted)". */
    expect_ok(NULL, ENV(ID2), NULL, &cfg);
    buf_init(&b);
    config_dump_json(&cfg, &b);
    buf_append(&b, "", 1);
    assert_non_null(strstr((const char *)b.data, "\"join_token\": \"\""));
    buf_close(&b);
    config_free(&cfg);
}

static char *read_doc(void)
{
    FILE *f = fopen(DOC_PATH, "r");
    if (f == NULL) {
        fail_msg("cannot open %s", DOC_PATH);
    }
    struct buf b;
    buf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        buf_append(&b, chunk, n);
    }
    fclose(f);
    buf_append(&b, "", 1);
    return (char *)b.data;
}

/* Every key of the table has a row in docs/configuration.md naming its variable, its flag and its
 * default, every row names a key of the table, and the generated section is current. */
static void docs_match_table(void **state)
{
    (void)state;
    char *doc = read_doc();
    char *begin = strstr(doc, DOC_BEGIN);
    char *end = begin != NULL ? strstr(begin, DOC_END) : NULL;
    assert_non_null(begin);
    assert_non_null(end);
    begin += strlen(DOC_BEGIN);

    /* Parse the rows: "| `key` ... | `ENV` | `--flag` | type | default | meaning |". */
    size_t n = config_field_count();
    bool *seen = calloc(n, sizeof *seen);
    for (char *line = begin; line < end;) {
        char *nl = strchr(line, '\n');
        *nl = '\0';
        if (strncmp(line, "| `", 3) == 0) {
            char *key = line + 3;
            char *tick = strchr(key, '`');
            assert_non_null(tick);
            *tick = '\0';
            bool found = false;
            for (size_t i = 0; i < n; i++) {
                struct config_field_info info;
                config_field_get(i, &info);
                if (strcmp(info.key, key) == 0) {
                    char *rest = tick + 1;
                    found = true;
                    if (strstr(rest, info.env) == NULL ||
                        (info.flag[0] != '\0' && strstr(rest, info.flag) == NULL) ||
                        strstr(rest, info.default_text) == NULL) {
                        fail_msg("docs/configuration.md: the row for %s lacks %s, %s or default %s", key,
                                 info.env, info.flag, info.default_text);
                    }
                    seen[i] = true;
                }
            }
            if (!found) {
                fail_msg("docs/configuration.md documents \"%s\", which is not in the field table", key);
            }
            *tick = '`';
        }
        *nl = '\n';
        line = nl + 1;
    }
    for (size_t i = 0; i < n; i++) {
        struct config_field_info info;
        config_field_get(i, &info);
        if (!seen[i]) {
            fail_msg("docs/configuration.md is missing key \"%s\" (run test_config --write-doc)", info.key);
        }
    }
    free(seen);

    /* And the whole table is exactly what the code generates. */
    struct buf b;
    buf_init(&b);
    config_doc_markdown(&b);
    size_t len = (size_t)(end - begin);
    if (len != strlen((char *)b.data) || memcmp(begin, b.data, len) != 0) {
        fail_msg("docs/configuration.md's generated table is stale (run test_config --write-doc)");
    }
    buf_close(&b);
    free(doc);
}

/* Replace the generated section of docs/configuration.md with the current table. */
static int write_doc(void)
{
    char *doc = read_doc();
    char *begin = strstr(doc, DOC_BEGIN);
    char *end = begin != NULL ? strstr(begin, DOC_END) : NULL;
    if (end == NULL) {
        fprintf(stderr, "%s has no %s ... %s section\n", DOC_PATH, DOC_BEGIN, DOC_END);
        return 1;
    }
    struct buf b;
    buf_init(&b);
    config_doc_markdown(&b);
    FILE *f = fopen(DOC_PATH, "w");
    if (f == NULL) {
        return 1;
    }
    fwrite(doc, 1, (size_t)(begin - doc) + strlen(DOC_BEGIN), f);
    fputs((char *)b.data, f);
    fputs(end, f);
    fclose(f);
    buf_close(&b);
    free(doc);
    printf("rewrote %s\n", DOC_PATH);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--write-doc") == 0) {
        return write_doc();
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(defaults),
        cmocka_unit_test(precedence_file_env_flags),
        cmocka_unit_test(precedence_independent_of_call_order),
        cmocka_unit_test(repeated_join_flags_add),
        cmocka_unit_test(help_flag),
        cmocka_unit_test(names_follow_the_key),
        cmocka_unit_test(address_errors),
        cmocka_unit_test(integer_errors),
        cmocka_unit_test(string_errors),
        cmocka_unit_test(tls_presence_rules),
        cmocka_unit_test(backup_rules),
        cmocka_unit_test(h2c_only_on_loopback),
        cmocka_unit_test(gateway_id_edges),
        cmocka_unit_test(failure_domain_int_or_name),
        cmocka_unit_test(join_token_never_from_a_flag),
        cmocka_unit_test(join_rules),
        cmocka_unit_test(lease_timing_order),
        cmocka_unit_test(rules_report_in_order),
        cmocka_unit_test(unknown_keys),
        cmocka_unit_test(wrong_json_types),
        cmocka_unit_test(malformed_json),
        cmocka_unit_test(duplicate_keys_message),
        cmocka_unit_test(load_file_errors),
        cmocka_unit_test(dump_redacts_and_round_trips),
        cmocka_unit_test(webhook_rules),
        cmocka_unit_test(docs_match_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
