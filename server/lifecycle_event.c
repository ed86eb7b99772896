/* The lifecycle webhook's encoding. See lifecycle_event.h for the contract. */
#include "server/lifecycle_event.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

const char *lifecycle_state(const char *type, int phase)
{
    if (strcmp(type, "DELETED") == 0) {
        return "deleted";
    }
    switch (phase) {
    case GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_PROVISIONING:
        return "provisioning";
    case GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_READY:
        return "ready";
    case GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_ERROR:
        return "failed";
    case GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_DELETING:
        return "deleting";
    case GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_STOPPED:
        return "stopped";
    default:
        return NULL;
    }
}

static const char *phase_name(int phase)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&gantry__v1__sandbox_status__phase__descriptor, phase);
    if (v == NULL) {
        return "UNKNOWN";
    }
    return strncmp(v->name, "PHASE_", 6) == 0 ? v->name + 6 : v->name;
}

/* The CloudEvent's data: the sandbox's public fields (never its environment, command, driver
 * configuration or policy, and nothing of its providers but their names). */
static json_t *sandbox_data(const Gantry__V1__Sandbox *sb, const char *state)
{
    json_t *d = json_object();
    const Gantry__V1__ObjectMeta *m = sb->meta;
    const Gantry__V1__SandboxSpec *sp = sb->spec;
    const Gantry__V1__SandboxStatus *st = sb->status;
    json_object_set_new(d, "state", json_string(state));
    if (m != NULL) {
        json_object_set_new(d, "id", json_string(m->id));
        json_object_set_new(d, "name", json_string(m->name));
        json_object_set_new(d, "namespace", json_string(m->namespace_));
        json_object_set_new(d, "created_by", json_string(m->created_by));
        json_object_set_new(d, "resource_version", json_integer((json_int_t)m->resource_version));
        json_object_set_new(d, "created_at_ms", json_integer(m->created_at_ms));
        json_object_set_new(d, "deletion_timestamp_ms", json_integer(m->deletion_timestamp_ms));
        json_t *labels = json_object();
        for (size_t i = 0; i < m->n_labels; i++) {
            json_object_set_new(labels, m->labels[i]->key, json_string(m->labels[i]->value));
        }
        json_object_set_new(d, "labels", labels);
    }
    if (sp != NULL) {
        json_object_set_new(d, "image", json_string(sp->image));
        json_object_set_new(d, "owner_id", json_string(sp->owner_id));
        json_t *prov = json_array();
        for (size_t i = 0; i < sp->n_providers; i++) {
            json_array_append_new(prov, json_string(sp->providers[i]));
        }
        json_object_set_new(d, "providers", prov);
    }
    if (st != NULL) {
        json_object_set_new(d, "phase", json_string(phase_name(st->phase)));
        json_object_set_new(d, "driver", json_string(st->driver));
        json_object_set_new(d, "started_at_ms", json_integer(st->started_at_ms));
        json_object_set_new(d, "expires_at_ms", json_integer(st->expires_at_ms));
        json_t *conds = json_array();
        for (size_t i = 0; i < st->n_conditions; i++) {
            const Gantry__V1__SandboxCondition *c = st->conditions[i];
            json_t *o = json_object();
            json_object_set_new(o, "type", json_string(c->type));
            json_object_set_new(o, "status", json_boolean(c->status));
            json_object_set_new(o, "reason", json_string(c->reason));
            json_object_set_new(o, "message", json_string(c->message));
            json_object_set_new(o, "last_transition_ms", json_integer(c->last_transition_ms));
            json_array_append_new(conds, o);
        }
        json_object_set_new(d, "conditions", conds);
        if (st->phase == GANTRY__V1__SANDBOX_STATUS__PHASE__PHASE_ERROR && st->n_conditions > 0) {
            json_object_set_new(d, "reason", json_string(st->conditions[0]->reason));
            json_object_set_new(d, "message", json_string(st->conditions[0]->message));
        }
    }
    return d;
}

char *lifecycle_event_json(const char *gateway_id, uint64_t rev, int64_t at_ms, const char *state,
                           const Gantry__V1__Sandbox *sb, const char *ns, const char *object_id)
{
    char id[160], type[64], subject[400], when[40];
    snprintf(id, sizeof id, "%s-%" PRIu64, gateway_id, rev);
    snprintf(type, sizeof type, "io.gantry.sandbox.%s", state);
    const char *name = sb != NULL && sb->meta != NULL ? sb->meta->name : object_id;
    snprintf(subject, sizeof subject, "%s/%s", ns, name);
    time_t secs = (time_t)(at_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + n, sizeof when - n, ".%03dZ", (int)(at_ms % 1000));
    json_t *ev = json_object();
    json_object_set_new(ev, "specversion", json_string("1.0"));
    json_object_set_new(ev, "id", json_string(id));
    json_object_set_new(ev, "source", json_string(gateway_id));
    json_object_set_new(ev, "type", json_string(type));
    json_object_set_new(ev, "subject", json_string(subject));
    json_object_set_new(ev, "time", json_string(when));
    json_object_set_new(ev, "datacontenttype", json_string("application/json"));
    json_object_set_new(ev, "gantryrevision", json_integer((json_int_t)rev));
    json_t *data;
    if (sb != NULL) {
        data = sandbox_data(sb, state);
    } else {
        data = json_object();
        json_object_set_new(data, "state", json_string(state));
        json_object_set_new(data, "id", json_string(object_id));
        json_object_set_new(data, "namespace", json_string(ns));
    }
    json_object_set_new(ev, "data", data);
    char *body = json_dumps(ev, JSON_COMPACT);
    json_decref(ev);
    return body;
}

void lifecycle_event_sign(const unsigned char *key, size_t key_len, const char *body, size_t body_len,
                          char out[LIFECYCLE_SIGNATURE_SIZE])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)body, body_len, mac, &len);
    int off = snprintf(out, LIFECYCLE_SIGNATURE_SIZE, "sha256=");
    for (unsigned i = 0; i < len && off + 2 < LIFECYCLE_SIGNATURE_SIZE; i++) {
        off += snprintf(out + off, (size_t)(LIFECYCLE_SIGNATURE_SIZE - off), "%02x", mac[i]);
    }
    OPENSSL_cleanse(mac, sizeof mac);
}
