/* Unit tests for the sealed backup container (store/sealed.h): round trips across record
 * boundaries, every byte of a small file flipped, truncation at every record boundary, swapped and
 * dropped records, another key, and key files (formats and permissions). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/buf.h"
#include "lib/err.h"
#include "store/sealed.h"

static const uint8_t key_a[32] = "0123456789abcdef0123456789abcdef";
static const uint8_t key_b[32] = "0123456789abcdef0123456789abcdeF";

static int to_buf(const uint8_t *p, size_t n, void *arg)
{
    buf_append(arg, p, n);
    return 0;
}

static int refuse_write(const uint8_t *p, size_t n, void *arg)
{
    (void)p;
    (void)n;
    int *left = arg;
    return (*left)-- > 0 ? 0 : GERR_IO;
}

static const struct store_sealed_info meta = {.cluster_id = "5b1c6d2e-0f3a-4c4b-9d8e-7a6b5c4d3e2f",
                                              .revision = 4711,
                                              .schema_version = 23,
                                              .created_ms = 1796000000000};

/* Seal @n bytes of a pattern, fed in pieces of @step bytes. */
static void seal(const uint8_t *key, size_t n, size_t step, struct buf *out, uint8_t **plain_out)
{
    uint8_t *plain = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        plain[i] = (uint8_t)(i * 7 + i / 251);
    }
    char errmsg[GERR_MSG_SIZE];
    struct store_sealer *s;
    assert_int_equal(store_sealer_new(key, &meta, to_buf, out, &s, errmsg), 0);
    for (size_t off = 0; off < n; off += step) {
        assert_int_equal(store_sealer_update(s, plain + off, n - off < step ? n - off : step, errmsg), 0);
    }
    uint64_t size;
    uint8_t sha[32];
    assert_int_equal(store_sealer_finish(s, &size, sha, errmsg), 0);
    assert_int_equal(size, n);
    assert_int_not_equal(store_sealer_update(s, plain, n > 0 ? 1 : 0, errmsg), 0);
    store_sealer_free(s);
    *plain_out = plain;
}

static void test_round_trip(void **state)
{
    (void)state;
    const size_t sizes[] = {0,
                            1,
                            300,
                            STORE_SEALED_CHUNK - 1,
                            STORE_SEALED_CHUNK,
                            STORE_SEALED_CHUNK + 1,
                            3 * STORE_SEALED_CHUNK + 17};
    const size_t steps[] = {1000, 7, 65536, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
            if (steps[k] == 7 && sizes[i] > 70000) {
                continue;
            }
            struct buf f, p;
            buf_init(&f);
            buf_init(&p);
            uint8_t *plain;
            seal(key_a, sizes[i], steps[k], &f, &plain);
            char errmsg[GERR_MSG_SIZE] = "";
            struct store_sealed_info info;
            assert_true(store_sealed_detect(f.data, f.len));
            /* Structure only: no key, nothing decrypted. */
            assert_int_equal(store_sealed_open(f.data, f.len, NULL, NULL, &info, errmsg), 0);
            assert_false(info.opened);
            assert_string_equal(info.cluster_id, meta.cluster_id);
            assert_int_equal(info.revision, 4711);
            assert_int_equal(info.schema_version, 23);
            assert_int_equal(info.created_ms, 1796000000000);
            assert_int_equal(info.chunk, STORE_SEALED_CHUNK);
            assert_int_equal(info.records, (sizes[i] + STORE_SEALED_CHUNK - 1) / STORE_SEALED_CHUNK);
            char kid[17];
            store_sealed_key_id(key_a, kid);
            assert_string_equal(info.key_id, kid);
            /* Verify only (no output), then decrypt. */
            assert_int_equal(store_sealed_open(f.data, f.len, key_a, NULL, &info, errmsg), 0);
            assert_true(info.opened);
            assert_int_equal(info.plain_size, sizes[i]);
            assert_int_equal(store_sealed_open(f.data, f.len, key_a, &p, &info, errmsg), 0);
            assert_int_equal(p.len, sizes[i]);
            assert_true(sizes[i] == 0 || memcmp(p.data, plain, sizes[i]) == 0);
            /* The plaintext does not appear in the file. */
            if (sizes[i] >= 300) {
                assert_null(memmem(f.data, f.len, plain + 100, 32));
            }
            free(plain);
            store_sealed_buf_wipe(&p);
            buf_close(&f);
        }
    }
}

/* Every byte of a small sealed file, flipped (low bit, then high bit), is refused with the key. */
static void test_every_byte_flipped(void **state)
{
    (void)state;
    struct buf f;
    buf_init(&f);
    uint8_t *plain;
    seal(key_a, 300, 100, &f, &plain);
    for (size_t i = 0; i < f.len; i++) {
        for (int m = 0; m < 2; m++) {
            uint8_t mask = m == 0 ? 0x01 : 0x80;
            f.data[i] ^= mask;
            char errmsg[GERR_MSG_SIZE] = "";
            struct store_sealed_info info;
            struct buf p;
            buf_init(&p);
            int rv = store_sealed_open(f.data, f.len, key_a, &p, &info, errmsg);
            if (rv != GERR_INVAL && rv != GERR_PERM) {
                fail_msg("byte %zu ^ 0x%02x: rv %d (%s)", i, mask, rv, errmsg);
            }
            assert_int_equal(p.len, 0);
            assert_false(info.opened);
            assert_true(strlen(errmsg) > 0);
            store_sealed_buf_wipe(&p);
            f.data[i] ^= mask;
        }
    }
    char errmsg[GERR_MSG_SIZE];
    struct store_sealed_info info;
    assert_int_equal(store_sealed_open(f.data, f.len, key_a, NULL, &info, errmsg), 0);
    free(plain);
    buf_close(&f);
}

/* Truncated anywhere in a small file, or at (and next to) every record boundary of a larger one:
 * refused with and without the key. Bytes appended are refused too. */
static void test_truncation(void **state)
{
    (void)state;
    struct buf f;
    buf_init(&f);
    uint8_t *plain;
    seal(key_a, 300, 300, &f, &plain);
    char errmsg[GERR_MSG_SIZE];
    struct store_sealed_info info;
    for (size_t n = 0; n < f.len; n++) {
        assert_int_not_equal(store_sealed_open(f.data, n, NULL, NULL, &info, errmsg), 0);
        assert_int_not_equal(store_sealed_open(f.data, n, key_a, NULL, &info, errmsg), 0);
    }
    free(plain);
    buf_close(&f);

    buf_init(&f);
    seal(key_a, 3 * STORE_SEALED_CHUNK + 17, 65536, &f, &plain);
    assert_int_equal(store_sealed_open(f.data, f.len, NULL, NULL, &info, errmsg), 0);
    size_t header = f.len - (3 * (4 + STORE_SEALED_CHUNK + 16) + (4 + 17 + 16) + (4 + 40 + 16));
    size_t bounds[] = {header, header + 1 * (4 + STORE_SEALED_CHUNK + 16),
                       header + 2 * (4 + STORE_SEALED_CHUNK + 16), header + 3 * (4 + STORE_SEALED_CHUNK + 16),
                       header + 3 * (4 + STORE_SEALED_CHUNK + 16) + (4 + 17 + 16)};
    for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++) {
        for (size_t d = 0; d < 3; d++) {
            size_t n = bounds[b] + d - 1;
            assert_int_not_equal(store_sealed_open(f.data, n, NULL, NULL, &info, errmsg), 0);
            assert_int_not_equal(store_sealed_open(f.data, n, key_a, NULL, &info, errmsg), 0);
        }
    }
    assert_int_equal(store_sealed_open(f.data, bounds[4], NULL, NULL, &info, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "final record is missing"));
    buf_append(&f, "x", 1);
    assert_int_equal(store_sealed_open(f.data, f.len, key_a, NULL, &info, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, "after the final record"));
    free(plain);
    buf_close(&f);
}

/* Records swapped or dropped (the framing stays valid): refused with the key. */
static void test_reorder(void **state)
{
    (void)state;
    struct buf f, g;
    buf_init(&f);
    buf_init(&g);
    uint8_t *plain;
    seal(key_a, 3 * STORE_SEALED_CHUNK, 65536, &f, &plain);
    size_t rec = 4 + STORE_SEALED_CHUNK + 16;
    size_t header = f.len - 3 * rec - (4 + 40 + 16);
    char errmsg[GERR_MSG_SIZE];
    struct store_sealed_info info;
    /* Swap records 0 and 1. */
    buf_append(&g, f.data, f.len);
    memcpy(g.data + header, f.data + header + rec, rec);
    memcpy(g.data + header + rec, f.data + header, rec);
    assert_int_equal(store_sealed_open(g.data, g.len, NULL, NULL, &info, errmsg), 0);
    assert_int_equal(store_sealed_open(g.data, g.len, key_a, NULL, &info, errmsg), GERR_PERM);
    assert_non_null(strstr(errmsg, "record 0"));
    /* Drop record 1. */
    buf_reset(&g);
    buf_append(&g, f.data, header + rec);
    buf_append(&g, f.data + header + 2 * rec, f.len - header - 2 * rec);
    assert_int_equal(store_sealed_open(g.data, g.len, key_a, NULL, &info, errmsg), GERR_PERM);
    /* Drop the last data record: the final record no longer matches its index. */
    buf_reset(&g);
    buf_append(&g, f.data, header + 2 * rec);
    buf_append(&g, f.data + header + 3 * rec, f.len - header - 3 * rec);
    assert_int_equal(store_sealed_open(g.data, g.len, key_a, NULL, &info, errmsg), GERR_PERM);
    /* A record from another file sealed under the same key (another salt and header). */
    struct buf h;
    buf_init(&h);
    uint8_t *plain2;
    seal(key_a, 3 * STORE_SEALED_CHUNK, 65536, &h, &plain2);
    buf_reset(&g);
    buf_append(&g, f.data, f.len);
    memcpy(g.data + header + rec, h.data + header + rec, rec);
    assert_int_equal(store_sealed_open(g.data, g.len, key_a, NULL, &info, errmsg), GERR_PERM);
    free(plain);
    free(plain2);
    buf_close(&f);
    buf_close(&g);
    buf_close(&h);
}

static void test_wrong_key(void **state)
{
    (void)state;
    struct buf f, p;
    buf_init(&f);
    buf_init(&p);
    uint8_t *plain;
    seal(key_a, 5000, 5000, &f, &plain);
    char errmsg[GERR_MSG_SIZE];
    struct store_sealed_info info;
    assert_int_equal(store_sealed_open(f.data, f.len, key_b, &p, &info, errmsg), GERR_PERM);
    assert_non_null(strstr(errmsg, "is not the backup's key"));
    assert_int_equal(p.len, 0);
    assert_false(info.opened);
    /* The key id in the header rewritten to the other key's: the header no longer matches. */
    char kid_a[17], kid_b[17];
    store_sealed_key_id(key_a, kid_a);
    store_sealed_key_id(key_b, kid_b);
    assert_string_not_equal(kid_a, kid_b);
    uint8_t *at = memmem(f.data, f.len, kid_a, 16);
    assert_non_null(at);
    memcpy(at, kid_b, 16);
    assert_int_equal(store_sealed_open(f.data, f.len, key_b, &p, &info, errmsg), GERR_PERM);
    assert_non_null(strstr(errmsg, "fails authentication"));
    assert_int_equal(p.len, 0);
    /* Not a sealed backup at all. */
    static const char plain_archive[] = "GANTRY-BACKUP 1\nEND\n";
    assert_false(store_sealed_detect((const uint8_t *)plain_archive, sizeof plain_archive - 1));
    assert_int_equal(store_sealed_open((const uint8_t *)plain_archive, sizeof plain_archive - 1, key_a, NULL,
                                       &info, errmsg),
                     GERR_INVAL);
    assert_non_null(strstr(errmsg, "not a sealed backup"));
    free(plain);
    store_sealed_buf_wipe(&p);
    buf_close(&f);
}

static void test_writer_errors(void **state)
{
    (void)state;
    char errmsg[GERR_MSG_SIZE];
    struct store_sealer *s;
    struct store_sealed_info bad = meta;
    snprintf(bad.cluster_id, sizeof bad.cluster_id, "a b");
    struct buf f;
    buf_init(&f);
    assert_int_equal(store_sealer_new(key_a, &bad, to_buf, &f, &s, errmsg), GERR_INVAL);
    assert_null(s);
    bad.cluster_id[0] = '\0';
    assert_int_equal(store_sealer_new(key_a, &bad, to_buf, &f, &s, errmsg), GERR_INVAL);
    /* The header's write fails; then the first record's. */
    int left = 0;
    assert_int_equal(store_sealer_new(key_a, &meta, refuse_write, &left, &s, errmsg), GERR_IO);
    assert_null(s);
    left = 1;
    assert_int_equal(store_sealer_new(key_a, &meta, refuse_write, &left, &s, errmsg), 0);
    uint8_t zeros[STORE_SEALED_CHUNK] = {0};
    assert_int_equal(store_sealer_update(s, zeros, sizeof zeros, errmsg), GERR_IO);
    assert_int_equal(store_sealer_update(s, zeros, 1, errmsg), GERR_INVAL);
    assert_int_equal(store_sealer_finish(s, NULL, NULL, errmsg), GERR_INVAL);
    store_sealer_free(s);
    store_sealer_free(NULL);
    buf_close(&f);
}

static void test_key_parse(void **state)
{
    (void)state;
    uint8_t k[32];
    char errmsg[GERR_MSG_SIZE];
    const char *hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    uint8_t want[32];
    for (int i = 0; i < 32; i++) {
        want[i] = (uint8_t)i;
    }
    char text[80];
    const char *tails[] = {"", "\n", "\r\n"};
    for (int t = 0; t < 3; t++) {
        snprintf(text, sizeof text, "%s%s", hex, tails[t]);
        memset(k, 0xff, sizeof k);
        assert_int_equal(store_sealed_key_parse((const uint8_t *)text, strlen(text), k, errmsg), 0);
        assert_memory_equal(k, want, 32);
    }
    snprintf(text, sizeof text, "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
    assert_int_equal(store_sealed_key_parse((const uint8_t *)text, strlen(text), k, errmsg), 0);
    assert_memory_equal(k, want, 32);
    /* 32 raw bytes, whatever they are. */
    assert_int_equal(store_sealed_key_parse(key_a, 32, k, errmsg), 0);
    assert_memory_equal(k, key_a, 32);
    const char *bad[] = {"",
                         "00",
                         "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1",
                         "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f0",
                         "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1g",
                         "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n\n",
                         " 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(store_sealed_key_parse((const uint8_t *)bad[i], strlen(bad[i]), k, errmsg),
                         GERR_INVAL);
        /* The message never quotes the key. */
        assert_null(strstr(errmsg, "0001020304"));
    }
}

static void test_key_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_sealed.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/backup.key", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(key_a, 1, 32, f);
    fclose(f);
    uint8_t k[32];
    char errmsg[GERR_MSG_SIZE];
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(store_sealed_key_load(path, k, errmsg), 0);
    assert_memory_equal(k, key_a, 32);
    assert_int_equal(chmod(path, 0400), 0);
    assert_int_equal(store_sealed_key_load(path, k, errmsg), 0);
    const mode_t loose[] = {0640, 0604, 0620, 0602, 0644};
    for (size_t i = 0; i < sizeof loose / sizeof loose[0]; i++) {
        assert_int_equal(chmod(path, loose[i]), 0);
        assert_int_equal(store_sealed_key_load(path, k, errmsg), GERR_PERM);
        assert_non_null(strstr(errmsg, "chmod 600"));
    }
    /* Hex with a newline, as `openssl rand -hex 32 > FILE` writes it. */
    f = fopen(path, "wb");
    fprintf(f, "%s\n", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
    fclose(f);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(store_sealed_key_load(path, k, errmsg), 0);
    assert_int_equal(k[31], 0x1f);
    /* Not a key. */
    f = fopen(path, "wb");
    fprintf(f, "hunter2\n");
    fclose(f);
    assert_int_equal(store_sealed_key_load(path, k, errmsg), GERR_INVAL);
    assert_non_null(strstr(errmsg, path));
    unlink(path);
    assert_int_equal(store_sealed_key_load(path, k, errmsg), GERR_NOTFOUND);
    /* A directory is not a key file. */
    assert_int_equal(chmod(dir, 0700), 0);
    assert_int_equal(store_sealed_key_load(dir, k, errmsg), GERR_INVAL);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip), cmocka_unit_test(test_every_byte_flipped),
        cmocka_unit_test(test_truncation), cmocka_unit_test(test_reorder),
        cmocka_unit_test(test_wrong_key),  cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_key_parse),  cmocka_unit_test(test_key_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
