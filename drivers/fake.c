/* The fake driver (see fake.h): records in memory or in a shared JSON file, a journal of every call.
 *
 * Every backend call runs the same steps: sleep the latency, load the state (shared mode), check
 * the epoch, draw the injected failure, do the operation on the state, save it if it changed,
 * draw the lost reply, append the journal line. */
#include "drivers/fake.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "drivers/driver_internal.h"
#include "lib/buf.h"
#include "lib/file.h"
#include "lib/mem.h"

#define FAKE_STATE_MAX_BYTES (64u * 1024u * 1024u)
#define FAKE_MAX_NAMESPACES  10000u

static const char *const no_keys[] = {NULL};

struct fake_rec {
    char *id;
    char *ns;
    char *name;
    char *owner;
    char *image;
    uint64_t epoch;
    uint64_t created_at_ms;
    uint64_t seq; /* creation order, the handle's number */
};

struct fake_state {
    uint64_t newest; /* newest epoch seen */
    uint64_t seq;    /* last handle number given */
    char **ns;       /* ensured namespaces */
    size_t n_ns;
    struct fake_rec *recs;
    size_t n_recs;
};

struct driver_fake {
    struct driver base;
    struct clock *clock;
    uint64_t latency_ns;
    uint32_t failure_ppm;
    uint32_t lost_reply_ppm;
    uint64_t rng;
    uint64_t ready_after_ms;
    int journal_fd; /* -1 without a journal */
    char *state_path;
    char *lock_path;
    char **config_keys;    /* NULL-terminated */
    struct fake_state mem; /* the state in memory mode */
    uint64_t calls;
};

/* ---- State records */

static void rec_close(struct fake_rec *r)
{
    mem_free(r->id);
    mem_free(r->ns);
    mem_free(r->name);
    mem_free(r->owner);
    mem_free(r->image);
    memset(r, 0, sizeof *r);
}

static void state_close(struct fake_state *st)
{
    for (size_t i = 0; i < st->n_ns; i++) {
        mem_free(st->ns[i]);
    }
    for (size_t i = 0; i < st->n_recs; i++) {
        rec_close(&st->recs[i]);
    }
    mem_free(st->ns);
    mem_free(st->recs);
    memset(st, 0, sizeof *st);
}

void fake_state_free(struct fake_state *st)
{
    if (st != NULL) {
        state_close(st);
        mem_free(st);
    }
}

static struct fake_rec *state_find(struct fake_state *st, const char *id)
{
    for (size_t i = 0; i < st->n_recs; i++) {
        if (strcmp(st->recs[i].id, id) == 0) {
            return &st->recs[i];
        }
    }
    return NULL;
}

static bool state_has_ns(const struct fake_state *st, const char *ns)
{
    for (size_t i = 0; i < st->n_ns; i++) {
        if (strcmp(st->ns[i], ns) == 0) {
            return true;
        }
    }
    return false;
}

static size_t state_count_ns(const struct fake_state *st, const char *ns)
{
    size_t n = 0;
    for (size_t i = 0; i < st->n_recs; i++) {
        n += strcmp(st->recs[i].ns, ns) == 0;
    }
    return n;
}

static void state_add_ns(struct fake_state *st, const char *ns)
{
    st->ns = mem_realloc(st->ns, (st->n_ns + 1) * sizeof *st->ns);
    st->ns[st->n_ns++] = mem_strdup(ns);
}

static void state_remove_ns(struct fake_state *st, const char *ns)
{
    for (size_t i = 0; i < st->n_ns; i++) {
        if (strcmp(st->ns[i], ns) == 0) {
            mem_free(st->ns[i]);
            st->ns[i] = st->ns[--st->n_ns];
            return;
        }
    }
}

static struct fake_rec *state_add_rec(struct fake_state *st)
{
    st->recs = mem_realloc(st->recs, (st->n_recs + 1) * sizeof *st->recs);
    struct fake_rec *r = &st->recs[st->n_recs++];
    memset(r, 0, sizeof *r);
    return r;
}

static void state_remove_rec(struct fake_state *st, struct fake_rec *r)
{
    rec_close(r);
    *r = st->recs[--st->n_recs];
}

/* ---- The shared state file: encode and decode */

static char *state_encode(const struct fake_state *st, size_t *len)
{
    json_t *root = json_object();
    json_t *nss = json_array();
    json_t *sbs = json_array();
    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "newest_epoch", json_integer((json_int_t)st->newest));
    json_object_set_new(root, "seq", json_integer((json_int_t)st->seq));
    for (size_t i = 0; i < st->n_ns; i++) {
        json_array_append_new(nss, json_string(st->ns[i]));
    }
    for (size_t i = 0; i < st->n_recs; i++) {
        const struct fake_rec *r = &st->recs[i];
        json_array_append_new(sbs, json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I}", "id", r->id, "namespace",
                                             r->ns, "name", r->name, "owner", r->owner, "image", r->image,
                                             "epoch", (json_int_t)r->epoch, "created_at_ms",
                                             (json_int_t)r->created_at_ms, "seq", (json_int_t)r->seq));
    }
    json_object_set_new(root, "namespaces", nss);
    json_object_set_new(root, "sandboxes", sbs);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (text == NULL) {
        return NULL;
    }
    char *out = mem_strdup(text);
    free(text);
    *len = strlen(out);
    return out;
}

static int get_u64(json_t *obj, const char *key, uint64_t *v, char *errmsg)
{
    json_t *j = json_object_get(obj, key);
    if (!json_is_integer(j) || json_integer_value(j) < 0) {
        gerr_set(errmsg, "\"%s\" must be a non-negative integer", key);
        return GERR_PROTO;
    }
    *v = (uint64_t)json_integer_value(j);
    return 0;
}

static int get_str(json_t *obj, const char *key, size_t max, char **out, char *errmsg)
{
    json_t *j = json_object_get(obj, key);
    if (!json_is_string(j) || json_string_length(j) > max ||
        strlen(json_string_value(j)) != json_string_length(j)) {
        gerr_set(errmsg, "\"%s\" must be a string of at most %zu bytes without NUL", key, max);
        return GERR_PROTO;
    }
    *out = mem_strdup(json_string_value(j));
    return 0;
}

static int decode_rec(json_t *j, struct fake_rec *r, char *errmsg)
{
    int rv;
    if (!json_is_object(j)) {
        gerr_set(errmsg, "a sandbox record is not an object");
        return GERR_PROTO;
    }
    if ((rv = get_str(j, "id", DRIVER_ID_LEN, &r->id, errmsg)) != 0 ||
        (rv = get_str(j, "namespace", DRIVER_NAME_MAX, &r->ns, errmsg)) != 0 ||
        (rv = get_str(j, "name", DRIVER_NAME_MAX, &r->name, errmsg)) != 0 ||
        (rv = get_str(j, "owner", DRIVER_OWNER_MAX, &r->owner, errmsg)) != 0 ||
        (rv = get_str(j, "image", DRIVER_IMAGE_MAX, &r->image, errmsg)) != 0 ||
        (rv = get_u64(j, "epoch", &r->epoch, errmsg)) != 0 ||
        (rv = get_u64(j, "created_at_ms", &r->created_at_ms, errmsg)) != 0 ||
        (rv = get_u64(j, "seq", &r->seq, errmsg)) != 0) {
        return rv;
    }
    if (!driver_is_uuid(r->id) || !driver_is_dns_label(r->ns) || !driver_is_dns_label(r->name)) {
        gerr_set(errmsg, "a sandbox record has a malformed id, namespace or name");
        return GERR_PROTO;
    }
    return 0;
}

static int decode_lists(json_t *root, struct fake_state *st, char *errmsg)
{
    json_t *nss = json_object_get(root, "namespaces");
    json_t *sbs = json_object_get(root, "sandboxes");
    if (!json_is_array(nss) || !json_is_array(sbs) || json_array_size(nss) > FAKE_MAX_NAMESPACES ||
        json_array_size(sbs) > DRIVER_FAKE_MAX_SANDBOXES) {
        gerr_set(errmsg, "\"namespaces\" and \"sandboxes\" must be arrays of at most %u and %u entries",
                 FAKE_MAX_NAMESPACES, DRIVER_FAKE_MAX_SANDBOXES);
        return GERR_PROTO;
    }
    for (size_t i = 0; i < json_array_size(nss); i++) {
        json_t *j = json_array_get(nss, i);
        if (!json_is_string(j) || !driver_is_dns_label(json_string_value(j)) ||
            state_has_ns(st, json_string_value(j))) {
            gerr_set(errmsg, "namespace entry %zu is not a DNS label or is repeated", i);
            return GERR_PROTO;
        }
        state_add_ns(st, json_string_value(j));
    }
    for (size_t i = 0; i < json_array_size(sbs); i++) {
        struct fake_rec r = {0};
        int rv = decode_rec(json_array_get(sbs, i), &r, errmsg);
        if (rv == 0 && state_find(st, r.id) != NULL) {
            gerr_set(errmsg, "sandbox %s is recorded twice", r.id);
            rv = GERR_PROTO;
        }
        if (rv != 0) {
            rec_close(&r);
            gerr_wrap(errmsg, "sandbox %zu", i);
            return rv;
        }
        *state_add_rec(st) = r;
    }
    return 0;
}

int fake_state_decode(const char *text, size_t len, struct fake_state **out, char *errmsg)
{
    json_error_t jerr;
    uint64_t version = 0;
    int rv;
    *out = NULL;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root)) {
        gerr_set(errmsg, "not a JSON object: %s", root == NULL ? jerr.text : "another JSON value");
        json_decref(root);
        return GERR_PROTO;
    }
    struct fake_state *st = mem_zalloc(sizeof *st);
    if ((rv = get_u64(root, "version", &version, errmsg)) != 0 ||
        (rv = get_u64(root, "newest_epoch", &st->newest, errmsg)) != 0 ||
        (rv = get_u64(root, "seq", &st->seq, errmsg)) != 0 || (rv = decode_lists(root, st, errmsg)) != 0) {
        goto err_after_alloc;
    }
    if (version != 1) {
        gerr_set(errmsg, "unsupported state version %llu", (unsigned long long)version);
        rv = GERR_PROTO;
        goto err_after_alloc;
    }
    json_decref(root);
    *out = st;
    return 0;

err_after_alloc:
    fake_state_free(st);
    json_decref(root);
    return rv;
}

/* ---- Loading and saving around a call */

static int state_load(struct driver_fake *f, struct fake_state *st, char *errmsg)
{
    char *text;
    size_t len;
    memset(st, 0, sizeof *st);
    int rv = file_read_all(f->state_path, FAKE_STATE_MAX_BYTES, &text, &len, errmsg);
    if (rv == GERR_NOTFOUND) {
        return 0; /* a new backend */
    }
    if (rv != 0) {
        return rv;
    }
    struct fake_state *loaded;
    rv = fake_state_decode(text, len, &loaded, errmsg);
    mem_free(text);
    if (rv != 0) {
        gerr_wrap(errmsg, "fake driver state %s", f->state_path);
        return rv;
    }
    *st = *loaded;
    mem_free(loaded);
    return 0;
}

static int state_save(struct driver_fake *f, const struct fake_state *st, char *errmsg)
{
    size_t len;
    char *text = state_encode(st, &len);
    if (text == NULL) {
        gerr_set(errmsg, "fake driver: cannot encode the state");
        return GERR_INTERNAL;
    }
    int rv = driver__write_atomic(f->state_path, text, len, 0600, errmsg);
    mem_free(text);
    return rv;
}

/* ---- Randomness and the journal */

static uint64_t rng_next(struct driver_fake *f)
{
    uint64_t x = f->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f->rng = x;
    return x;
}

static bool draw(struct driver_fake *f, uint32_t ppm)
{
    return ppm > 0 && rng_next(f) % 1000000u < ppm;
}

static void journal(struct driver_fake *f, const char *op, const char *ns, const char *id, uint64_t epoch,
                    uint64_t newest, int rv)
{
    if (f->journal_fd < 0) {
        return;
    }
    struct buf b;
    buf_init(&b);
    buf_printf(&b,
               "{\"t_ms\":%llu,\"pid\":%ld,\"op\":\"%s\",\"ns\":\"%s\",\"id\":\"%s\",\"epoch\":%llu,"
               "\"newest\":%llu,\"result\":\"%s\",\"code\":%d}\n",
               (unsigned long long)f->clock->wall_ms(f->clock), (long)getpid(), op, ns != NULL ? ns : "",
               id != NULL ? id : "", (unsigned long long)epoch, (unsigned long long)newest, gerr_name(rv),
               rv);
    /* One write(2) of the whole line: O_APPEND keeps lines from different writers whole. */
    ssize_t w = write(f->journal_fd, b.data, b.len);
    (void)w;
    buf_close(&b);
}

/* ---- One call */

enum fake_op { FAKE_CREATE, FAKE_GET, FAKE_LIST, FAKE_DELETE, FAKE_ENSURE_NS, FAKE_DELETE_NS };

static const char *const fake_op_names[] = {"create",          "get", "list", "delete", "ensure_namespace",
                                            "delete_namespace"};

struct fake_call {
    enum fake_op op;
    const char *ns;
    const char *id;
    uint64_t epoch;
    const struct driver_sandbox_spec *spec;
    struct driver_sandbox *out;
    struct driver_sandbox_list *list;
};

static void rec_describe(struct driver_fake *f, const struct fake_rec *r, struct driver_sandbox *out)
{
    char handle[64];
    uint64_t now = f->clock->wall_ms(f->clock);
    bool ready = now >= r->created_at_ms + f->ready_after_ms;
    snprintf(handle, sizeof handle, "fake:%llu", (unsigned long long)r->seq);
    driver__sandbox_fill(out, r->id, r->ns, r->name, ready ? DRIVER_PHASE_READY : DRIVER_PHASE_PROVISIONING,
                         handle, "", r->epoch, r->created_at_ms);
}

static int op_create(struct driver_fake *f, struct fake_state *st, struct fake_call *c, bool *dirty,
                     char *errmsg)
{
    const struct driver_sandbox_spec *s = c->spec;
    struct fake_rec *r = state_find(st, s->id);
    if (r != NULL) {
        if (strcmp(r->ns, s->namespace) != 0 || strcmp(r->name, s->name) != 0) {
            gerr_set(errmsg, "sandbox %s exists as %s/%s", s->id, r->ns, r->name);
            return GERR_EXISTS;
        }
        rec_describe(f, r, c->out);
        return 0;
    }
    if (!state_has_ns(st, s->namespace)) {
        gerr_set(errmsg, "namespace %s was not ensured", s->namespace);
        return GERR_NOTFOUND;
    }
    if (st->n_recs >= DRIVER_FAKE_MAX_SANDBOXES) {
        gerr_set(errmsg, "the fake backend is full (%u sandboxes)", DRIVER_FAKE_MAX_SANDBOXES);
        return GERR_TOOBIG;
    }
    r = state_add_rec(st);
    r->id = mem_strdup(s->id);
    r->ns = mem_strdup(s->namespace);
    r->name = mem_strdup(s->name);
    r->owner = mem_strdup(s->owner != NULL ? s->owner : "");
    r->image = mem_strdup(s->image != NULL ? s->image : "");
    r->epoch = c->epoch;
    r->created_at_ms = f->clock->wall_ms(f->clock);
    r->seq = ++st->seq;
    *dirty = true;
    rec_describe(f, r, c->out);
    return 0;
}

static int op_get(struct driver_fake *f, struct fake_state *st, struct fake_call *c, char *errmsg)
{
    struct fake_rec *r = state_find(st, c->id);
    if (r == NULL || strcmp(r->ns, c->ns) != 0) {
        gerr_set(errmsg, "sandbox %s not found in namespace %s", c->id, c->ns);
        return GERR_NOTFOUND;
    }
    rec_describe(f, r, c->out);
    return 0;
}

static int op_list(struct driver_fake *f, struct fake_state *st, struct fake_call *c)
{
    for (size_t i = 0; i < st->n_recs; i++) {
        if (c->ns == NULL || strcmp(st->recs[i].ns, c->ns) == 0) {
            rec_describe(f, &st->recs[i], driver__list_push(c->list));
        }
    }
    return 0;
}

static int op_delete(struct fake_state *st, struct fake_call *c, bool *dirty)
{
    struct fake_rec *r = state_find(st, c->id);
    if (r != NULL && strcmp(r->ns, c->ns) == 0) {
        state_remove_rec(st, r);
        *dirty = true;
    }
    return 0;
}

static int op_ensure_ns(struct fake_state *st, struct fake_call *c, bool *dirty, char *errmsg)
{
    if (!state_has_ns(st, c->ns)) {
        if (st->n_ns >= FAKE_MAX_NAMESPACES) {
            gerr_set(errmsg, "the fake backend holds %u namespaces already", FAKE_MAX_NAMESPACES);
            return GERR_TOOBIG;
        }
        state_add_ns(st, c->ns);
        *dirty = true;
    }
    return 0;
}

static int op_delete_ns(struct fake_state *st, struct fake_call *c, bool *dirty, char *errmsg)
{
    size_t n = state_count_ns(st, c->ns);
    if (n > 0) {
        gerr_set(errmsg, "namespace %s still holds %zu sandboxes", c->ns, n);
        return GERR_CONSTRAINT;
    }
    if (state_has_ns(st, c->ns)) {
        state_remove_ns(st, c->ns);
        *dirty = true;
    }
    return 0;
}

static int dispatch(struct driver_fake *f, struct fake_state *st, struct fake_call *c, bool *dirty,
                    char *errmsg)
{
    switch (c->op) {
    case FAKE_CREATE:
        return op_create(f, st, c, dirty, errmsg);
    case FAKE_GET:
        return op_get(f, st, c, errmsg);
    case FAKE_LIST:
        return op_list(f, st, c);
    case FAKE_DELETE:
        return op_delete(st, c, dirty);
    case FAKE_ENSURE_NS:
        return op_ensure_ns(st, c, dirty, errmsg);
    case FAKE_DELETE_NS:
    default:
        return op_delete_ns(st, c, dirty, errmsg);
    }
}

/* Run one call against the state, in memory or loaded from the shared file under its lock. */
static int fake_call(struct driver_fake *f, struct fake_call *c, char *errmsg)
{
    struct fake_state loaded, *st = &f->mem;
    int lock_fd = -1, rv;
    bool dirty = false;
    uint64_t newest;

    f->calls++;
    if (f->latency_ns > 0) {
        f->clock->sleep_ns(f->clock, f->latency_ns);
    }
    if (f->state_path != NULL) {
        if ((rv = driver__lock_file(f->lock_path, &lock_fd, errmsg)) != 0) {
            journal(f, fake_op_names[c->op], c->ns, c->id, c->epoch, 0, rv);
            return rv;
        }
        if ((rv = state_load(f, &loaded, errmsg)) != 0) {
            close(lock_fd);
            journal(f, fake_op_names[c->op], c->ns, c->id, c->epoch, 0, rv);
            return rv;
        }
        st = &loaded;
    }
    newest = st->newest;
#ifdef GANTRY_PLANT_BUG_STALE_EPOCH
    /* Planted bug (tests/jepsen, docs/reliability.md): no fence, every epoch is accepted. */
    rv = 0;
    st->newest = c->epoch > st->newest ? c->epoch : st->newest;
#else
    rv = driver__epoch_check(c->epoch, &st->newest, "the fake backend", errmsg);
#endif
    dirty = st->newest != newest;
    if (rv == 0 && draw(f, f->failure_ppm)) {
        gerr_set(errmsg, "injected failure (fake driver, %s)", fake_op_names[c->op]);
        rv = GERR_UNAVAILABLE;
    }
    if (rv == 0) {
        rv = dispatch(f, st, c, &dirty, errmsg);
    }
    if (dirty && f->state_path != NULL) {
        int srv = state_save(f, st, errmsg);
        rv = rv == 0 ? srv : rv;
    }
    if (rv == 0 && draw(f, f->lost_reply_ppm)) {
        gerr_set(errmsg, "injected lost reply (fake driver, %s): the call took effect", fake_op_names[c->op]);
        rv = GERR_TIMEOUT;
    }
    if (f->state_path != NULL) {
        state_close(&loaded);
        close(lock_fd);
    }
    journal(f, fake_op_names[c->op], c->ns, c->id, c->epoch, newest, rv);
    return rv;
}

/* ---- Ops */

static struct driver_fake *fake_of(struct driver *d)
{
    return (struct driver_fake *)d;
}

static void fake_capabilities(struct driver *d, struct driver_caps *caps)
{
    struct driver_fake *f = fake_of(d);
    caps->name = "fake";
    caps->available = true;
    caps->isolation = false;
    caps->images = false;
    caps->gpus = true;
    caps->namespaces = true;
    caps->shared_backend = f->state_path != NULL;
    caps->config_keys = (const char *const *)f->config_keys;
    gerr_set(caps->detail, "fake driver: records only (%s), %u ppm failures, %u ppm lost replies",
             f->state_path != NULL ? "shared state file" : "in memory", f->failure_ppm, f->lost_reply_ppm);
}

static int fake_validate(struct driver *d, const struct driver_sandbox_spec *spec, const char *const *allowed,
                         char *errmsg)
{
    return driver__check_config_keys(spec, "fake", (const char *const *)fake_of(d)->config_keys, allowed,
                                     errmsg);
}

static int fake_create(struct driver *d, uint64_t epoch, const struct driver_sandbox_spec *spec,
                       struct driver_sandbox *out, char *errmsg)
{
    int rv = fake_validate(d, spec, NULL, errmsg);
    if (rv != 0) {
        return rv;
    }
    struct fake_call c = {
        .op = FAKE_CREATE, .ns = spec->namespace, .id = spec->id, .epoch = epoch, .spec = spec, .out = out};
    return fake_call(fake_of(d), &c, errmsg);
}

static int fake_get(struct driver *d, uint64_t epoch, const char *ns, const char *id,
                    struct driver_sandbox *out, char *errmsg)
{
    struct fake_call c = {.op = FAKE_GET, .ns = ns, .id = id, .epoch = epoch, .out = out};
    return fake_call(fake_of(d), &c, errmsg);
}

static int fake_list(struct driver *d, uint64_t epoch, const char *ns, struct driver_sandbox_list *out,
                     char *errmsg)
{
    struct fake_call c = {.op = FAKE_LIST, .ns = ns, .epoch = epoch, .list = out};
    return fake_call(fake_of(d), &c, errmsg);
}

static int fake_delete(struct driver *d, uint64_t epoch, const char *ns, const char *id, char *errmsg)
{
    struct fake_call c = {.op = FAKE_DELETE, .ns = ns, .id = id, .epoch = epoch};
    return fake_call(fake_of(d), &c, errmsg);
}

static int fake_ensure_ns(struct driver *d, uint64_t epoch, const char *ns, char *errmsg)
{
    struct fake_call c = {.op = FAKE_ENSURE_NS, .ns = ns, .epoch = epoch};
    return fake_call(fake_of(d), &c, errmsg);
}

static int fake_delete_ns(struct driver *d, uint64_t epoch, const char *ns, char *errmsg)
{
    struct fake_call c = {.op = FAKE_DELETE_NS, .ns = ns, .epoch = epoch};
    return fake_call(fake_of(d), &c, errmsg);
}

static void fake_free(struct driver *d)
{
    struct driver_fake *f = fake_of(d);
    if (f->journal_fd >= 0) {
        close(f->journal_fd);
    }
    for (size_t i = 0; f->config_keys[i] != NULL; i++) {
        mem_free(f->config_keys[i]);
    }
    mem_free(f->config_keys);
    mem_free(f->state_path);
    mem_free(f->lock_path);
    state_close(&f->mem);
    driver__close(&f->base);
    mem_free(f);
}

static const struct driver_ops fake_ops = {
    .capabilities = fake_capabilities,
    .validate = fake_validate,
    .create = fake_create,
    .get = fake_get,
    .list = fake_list,
    .delete = fake_delete,
    .ensure_namespace = fake_ensure_ns,
    .delete_namespace = fake_delete_ns,
    .free = fake_free,
};

static char **copy_keys(const char *const *keys)
{
    size_t n = 0;
    while (keys != NULL && keys[n] != NULL) {
        n++;
    }
    char **out = mem_zalloc((n + 1) * sizeof *out);
    for (size_t i = 0; i < n; i++) {
        out[i] = mem_strdup(keys[i]);
    }
    return out;
}

static int open_shared(struct driver_fake *f, const char *state_path, char *errmsg)
{
    struct fake_state st;
    int lock_fd, rv;
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "%s.lock", state_path);
    f->state_path = mem_strdup(state_path);
    f->lock_path = mem_strdup((const char *)b.data);
    buf_close(&b);
    /* Fail now, not on the first call, if the file is unusable. */
    if ((rv = driver__lock_file(f->lock_path, &lock_fd, errmsg)) != 0) {
        return rv;
    }
    rv = state_load(f, &st, errmsg);
    if (rv == 0) {
        state_close(&st);
    }
    close(lock_fd);
    return rv;
}

int driver_fake_new(const struct driver_fake_config *cfg, struct driver **out, char *errmsg)
{
    int rv;
    *out = NULL;
    if (cfg->failure_ppm > 1000000u || cfg->lost_reply_ppm > 1000000u) {
        gerr_set(errmsg, "fake driver: failure_ppm and lost_reply_ppm must be at most 1000000");
        return GERR_INVAL;
    }
    struct driver_fake *f = mem_zalloc(sizeof *f);
    driver__init(&f->base, &fake_ops);
    f->clock = cfg->clock != NULL ? cfg->clock : clock_system();
    f->latency_ns = cfg->latency_ns;
    f->failure_ppm = cfg->failure_ppm;
    f->lost_reply_ppm = cfg->lost_reply_ppm;
    f->rng = cfg->seed != 0 ? cfg->seed : 0x9e3779b97f4a7c15ull;
    f->ready_after_ms = cfg->ready_after_ms;
    f->config_keys = copy_keys(cfg->config_keys != NULL ? cfg->config_keys : no_keys);
    f->journal_fd = -1;
    if (cfg->journal_path != NULL) {
        f->journal_fd = open(cfg->journal_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (f->journal_fd < 0) {
            rv = gerr_from_errno(errno);
            gerr_set(errmsg, "fake driver journal %s: %s", cfg->journal_path, strerror(errno));
            goto err_after_alloc;
        }
    }
    if (cfg->state_path != NULL && (rv = open_shared(f, cfg->state_path, errmsg)) != 0) {
        goto err_after_alloc;
    }
    *out = &f->base;
    return 0;

err_after_alloc:
    fake_free(&f->base);
    return rv;
}

uint64_t driver_fake_calls(struct driver *d)
{
    pthread_mutex_lock(&d->mu);
    uint64_t n = fake_of(d)->calls;
    pthread_mutex_unlock(&d->mu);
    return n;
}

int driver_fake_count(struct driver *d, uint64_t *n, char *errmsg)
{
    struct driver_fake *f = fake_of(d);
    struct fake_state st;
    int lock_fd, rv = 0;
    pthread_mutex_lock(&d->mu);
    if (f->state_path == NULL) {
        *n = f->mem.n_recs;
    } else if ((rv = driver__lock_file(f->lock_path, &lock_fd, errmsg)) == 0) {
        if ((rv = state_load(f, &st, errmsg)) == 0) {
            *n = st.n_recs;
            state_close(&st);
        }
        close(lock_fd);
    }
    pthread_mutex_unlock(&d->mu);
    return rv;
}
