/* gantry-bench: load generators. Each subcommand is one function taking the remaining arguments. */
#ifndef GANTRY_TOOLS_BENCH_BENCH_H
#define GANTRY_TOOLS_BENCH_BENCH_H

/* `gantry-bench store [options]`: the replicated store against its own 3-process cluster.
 * Returns the process exit code (0 ok, 1 failure, 2 bad flags). */
int bench_store(int argc, char **argv);

/* `gantry-bench api [options]`: the gantry.v1 API of its own 3-replica gantryd cluster, and with
 * --baseline etcd the same phases against a 3-member etcd. Same exit codes. */
int bench_api(int argc, char **argv);

#endif
