/* gantry warmpool: the WarmPools service (docs/cli.md, docs/platform-controller.md "Gantry-owned
 * warm pools"). */
#include <stdlib.h>
#include <string.h>

#include "gantry/v1/warmpools.pb-c.h"
#include "tools/gantry.h"

#define END                                                                                                  \
    {                                                                                                        \
        NULL, NULL, NULL, false                                                                              \
    }

static const struct gantry_col pool_cols[] = {
    {"NAMESPACE", "meta.namespace", NULL, false},
    {"NAME", "meta.name", NULL, false},
    {"TEMPLATE", "template", NULL, false},
    {"REPLICAS", "replicas", NULL, false},
    {"READY", "status.ready_replicas", NULL, false},
    {"K8S NAMESPACE", "status.kubernetes_namespace", NULL, false},
    {"ERROR", "status.last_error", NULL, false},
    END,
};

/* A size from the command line: 0..100 digits only (the server checks the range too). */
static int replicas_of(const char *s, uint32_t *out)
{
    char *end = NULL;
    unsigned long v = s != NULL ? strtoul(s, &end, 10) : 0;
    if (s == NULL || s[0] == '\0' || s[0] == '-' || *end != '\0' || v > 1000000ul) {
        fprintf(stderr, "gantry warmpool: --replicas needs a number (0..100)\n");
        return GANTRY_EXIT_USAGE;
    }
    *out = (uint32_t)v;
    return 0;
}

static int pool_create(struct cli *c, int argc, char **argv)
{
    const char *tmpl = gantry_opt(&argc, argv, "--template"), *n = gantry_opt(&argc, argv, "--replicas");
    const char *kns = gantry_opt(&argc, argv, "--k8s-namespace");
    const char *labels[32];
    int n_labels = gantry_opt_all(&argc, argv, "--label", labels, 32);
    int rc = gantry_args(gantry_find("warmpool", "create"), argc, argv, 1, 1);
    if (rc != 0) {
        return rc;
    }
    if (tmpl == NULL || n == NULL) {
        fprintf(stderr, "gantry warmpool create: give --template TEMPLATE and --replicas N\n");
        return GANTRY_EXIT_USAGE;
    }
    Gantry__V1__ObjectMeta meta = GANTRY__V1__OBJECT_META__INIT;
    Gantry__V1__WarmPool p = GANTRY__V1__WARM_POOL__INIT;
    Gantry__V1__CreateWarmPoolRequest req = GANTRY__V1__CREATE_WARM_POOL_REQUEST__INIT;
    if ((rc = replicas_of(n, &p.replicas)) != 0) {
        return rc;
    }
    Gantry__V1__ObjectMeta__LabelsEntry **labels_new = NULL;
    size_t n_labels_new = 0;
    if (gantry_map(&gantry__v1__object_meta__labels_entry__descriptor, labels, n_labels, &labels_new,
                   &n_labels_new) != 0) {
        return GANTRY_EXIT_USAGE;
    }
    meta.name = argv[0];
    meta.namespace_ = (char *)gantry_ns(c);
    meta.labels = labels_new;
    meta.n_labels = n_labels_new;
    p.meta = &meta;
    p.template_ = (char *)tmpl;
    p.kubernetes_namespace = (char *)(kns != NULL ? kns : "");
    char rid[37];
    gantry_request_id(rid);
    req.request_id = rid;
    req.warm_pool = &p;
    rc = gantry_simple(c, "/gantry.v1.WarmPools/Create", &req.base, &gantry__v1__warm_pool__descriptor, NULL,
                       pool_cols);
    gantry_map_free(labels_new, n_labels_new);
    return rc;
}

static int pool_get(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("warmpool", "get"), argc, argv, 1, 1);
    Gantry__V1__GetWarmPoolRequest req = GANTRY__V1__GET_WARM_POOL_REQUEST__INIT;
    req.namespace_ = (char *)gantry_ns(c);
    req.name = argv[0];
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.WarmPools/Get", &req.base,
                                   &gantry__v1__warm_pool__descriptor, NULL, pool_cols);
}

static int pool_list(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("warmpool", "list"), argc, argv, 0, 0);
    Gantry__V1__ListWarmPoolsRequest req = GANTRY__V1__LIST_WARM_POOLS_REQUEST__INIT;
    req.namespace_ = (char *)gantry_ns(c);
    return rc != 0
               ? rc
               : gantry_simple(c, "/gantry.v1.WarmPools/List", &req.base,
                               &gantry__v1__list_warm_pools_response__descriptor, "warm_pools", pool_cols);
}

static int pool_resize(struct cli *c, int argc, char **argv)
{
    const char *n = gantry_opt(&argc, argv, "--replicas");
    int rc = gantry_args(gantry_find("warmpool", "resize"), argc, argv, 1, 1);
    Gantry__V1__UpdateWarmPoolRequest req = GANTRY__V1__UPDATE_WARM_POOL_REQUEST__INIT;
    if (rc != 0) {
        return rc;
    }
    if (n == NULL) {
        fprintf(stderr, "gantry warmpool resize: give --replicas N\n");
        return GANTRY_EXIT_USAGE;
    }
    if ((rc = replicas_of(n, &req.replicas)) != 0) {
        return rc;
    }
    char rid[37];
    gantry_request_id(rid);
    req.request_id = rid;
    req.namespace_ = (char *)gantry_ns(c);
    req.name = argv[0];
    return gantry_simple(c, "/gantry.v1.WarmPools/Update", &req.base, &gantry__v1__warm_pool__descriptor,
                         NULL, pool_cols);
}

static int pool_delete(struct cli *c, int argc, char **argv)
{
    int rc = gantry_args(gantry_find("warmpool", "delete"), argc, argv, 1, 1);
    char rid[37];
    gantry_request_id(rid);
    Gantry__V1__DeleteWarmPoolRequest req = GANTRY__V1__DELETE_WARM_POOL_REQUEST__INIT;
    req.request_id = rid;
    req.namespace_ = (char *)gantry_ns(c);
    req.name = argv[0];
    return rc != 0 ? rc
                   : gantry_simple(c, "/gantry.v1.WarmPools/Delete", &req.base,
                                   &gantry__v1__warm_pool__descriptor, NULL, pool_cols);
}

const struct gantry_cmd gantry_warmpool_cmds[] = {
    {"warmpool", "create",
     "NAME --template TEMPLATE --replicas N [--k8s-namespace K8S_NS] [--label K=V ...] "
     "[--namespace NS]",
     "declare a warm pool of N ready sandboxes of a SandboxTemplate (kubernetes driver), kept by the "
     "reconciler",
     "gantry warmpool create agents-warm --template agent --replicas 5 --k8s-namespace agents-gpu "
     "--namespace team-a",
     pool_create, false},
    {"warmpool", "get", "NAME [--namespace NS]", "show a warm pool and its ready members",
     "gantry warmpool get agents-warm --namespace team-a", pool_get, false},
    {"warmpool", "list", "[--namespace NS]", "list a namespace's warm pools",
     "gantry warmpool list --namespace team-a", pool_list, false},
    {"warmpool", "resize", "NAME --replicas N [--namespace NS]", "change how many ready members a pool keeps",
     "gantry warmpool resize agents-warm --replicas 8 --namespace team-a", pool_resize, false},
    {"warmpool", "delete", "NAME [--namespace NS]",
     "delete a warm pool (its unclaimed members go; claimed sandboxes stay)",
     "gantry warmpool delete agents-warm --namespace team-a", pool_delete, false},
    {NULL, NULL, NULL, NULL, NULL, NULL, false},
};
