/* The driver spec from a stored sandbox spec (leases/dspec.h). */
#include "leases/dspec.h"

#include <stdlib.h>
#include <string.h>

#include "lib/mem.h"

void dspec_build(struct dspec *d, const Gantry__V1__SandboxSpec *s, const char *id, const char *ns,
                 const char *name, const char *owner, const char *labels_json, const char *driver_name)
{
    memset(d, 0, sizeof *d);
    d->s.id = id;
    d->s.namespace = ns;
    d->s.name = name;
    d->s.owner = owner;
    d->s.image = s->image;
    static const char *default_cmd[] = {"sleep", "infinity"};
    d->argv = mem_zalloc(sizeof *d->argv * (s->n_command + 2));
    for (size_t i = 0; i < s->n_command; i++) {
        d->argv[i] = s->command[i];
    }
    d->s.command = s->n_command > 0 ? d->argv : default_cmd;
    d->s.n_command = s->n_command > 0 ? s->n_command : 2;
    d->env = mem_zalloc(sizeof *d->env * (s->n_env + 1));
    for (size_t i = 0; i < s->n_env; i++) {
        d->env[i] = (struct driver_kv){s->env[i]->key, s->env[i]->value};
    }
    d->s.env = d->env;
    d->s.n_env = s->n_env;
    d->s.gpu_count = s->gpu_count;
    d->s.lifetime_s = s->lifetime_seconds;
    d->labels_json = json_loads(labels_json, 0, NULL);
    size_t nl = json_is_object(d->labels_json) ? json_object_size(d->labels_json) : 0;
    d->labels = mem_zalloc(sizeof *d->labels * (nl + 1));
    const char *k;
    json_t *v;
    size_t j = 0;
    if (nl > 0) {
        json_object_foreach(d->labels_json, k, v)
        {
            d->labels[j++] = (struct driver_kv){k, json_string_value(v) != NULL ? json_string_value(v) : ""};
        }
    }
    d->s.labels = d->labels;
    d->s.n_labels = j;
    /* This driver's settings: the JSON object stored under its name. */
    for (size_t i = 0; i < s->n_driver_config; i++) {
        if (strcmp(s->driver_config[i]->key, driver_name) == 0) {
            d->config_json = json_loads(s->driver_config[i]->value, 0, NULL);
        }
    }
    size_t nc = json_is_object(d->config_json) ? json_object_size(d->config_json) : 0;
    d->config = mem_zalloc(sizeof *d->config * (nc + 1));
    d->config_values = mem_zalloc(sizeof *d->config_values * (nc + 1));
    j = 0;
    if (nc > 0) {
        json_object_foreach(d->config_json, k, v)
        {
            char *dumped = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT);
            d->config_values[j] =
                mem_strdup(json_is_string(v) ? json_string_value(v) : (dumped != NULL ? dumped : ""));
            free(dumped);
            d->config[j] = (struct driver_kv){k, d->config_values[j] != NULL ? d->config_values[j] : ""};
            j++;
        }
    }
    d->s.driver_config = d->config;
    d->s.n_driver_config = j;
}

void dspec_close(struct dspec *d)
{
    size_t nc = json_is_object(d->config_json) ? json_object_size(d->config_json) : 0;
    for (size_t i = 0; i < nc; i++) {
        mem_free(d->config_values[i]);
    }
    mem_free(d->config_values);
    mem_free(d->config);
    mem_free(d->argv);
    mem_free(d->env);
    mem_free(d->labels);
    json_decref(d->labels_json);
    json_decref(d->config_json);
}
