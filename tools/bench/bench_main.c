/* gantry-bench: load generator and measurements for Gantry (results go to docs/benchmarks.md). */
#include <stdio.h>
#include <string.h>

#include "bench.h"

static const char usage[] =
    "usage: gantry-bench SUBCOMMAND [options]\n"
    "\n"
    "Subcommands:\n"
    "  store    the replicated store: INSERT throughput and latency, write contention, failover\n"
    "           (gantry-bench store --help for its options)\n"
    "  api      the gantry.v1 API of a local 3-replica gantryd: create, get, list, failover;\n"
    "           --baseline etcd measures etcd the same way in the same run\n"
    "           (gantry-bench api --help for its options)\n";

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "store") == 0) {
        return bench_store(argc - 1, argv + 1);
    }
    if (strcmp(argv[1], "api") == 0) {
        return bench_api(argc - 1, argv + 1);
    }
    fprintf(stderr, "gantry-bench: unknown subcommand \"%s\"\n\n%s", argv[1], usage);
    return 2;
}
