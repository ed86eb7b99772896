#!/usr/bin/env bash
# The README's run command: install what is missing, build, start a local 3-replica gantryd
# cluster on 127.0.0.1 (tools/dev-cluster.sh), and show it working through the gantry CLI:
# membership and roles, health, a join token, a leadership transfer, and an online backup.
#
# The tenant resources (namespaces, sandboxes, ...) and the reconciler arrive with later issues;
# this script will then also create a namespace, a user and a sandbox.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash tools/install-deps.sh
build=build-test/plain
echo "== building into $build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" --target gantryd gantry gantry-store >/dev/null

dir=${GANTRY_DEV_DIR:-$top/.devcluster}
echo "== starting the 3-replica cluster (data and logs in $dir)"
GANTRY_BIN_DIR=$top/$build tools/dev-cluster.sh start
eval "$(GANTRY_BIN_DIR=$top/$build tools/dev-cluster.sh env)"
export GANTRY_ENDPOINT GANTRY_CA GANTRY_TOKEN
gantry() { "$build/tools/gantry" "$@"; }

echo "== waiting for the cluster to settle (3 voters, all reachable)"
for _ in $(seq 1 100); do
  if [ "$(gantry -o json cluster members 2>/dev/null | grep -o '"role":"voter","reachable":true' | wc -l)" -eq 3 ]; then
    break
  fi
  sleep 0.2
done
echo "== gantry cluster members"
gantry cluster members
echo "== gantry cluster health"
gantry cluster health
echo "== gantry cluster transfer (hand leadership to another voter)"
gantry cluster transfer
echo "== gantry cluster backup"
gantry cluster backup "$dir/backup.gbk"

cat <<MSG

The cluster is running (data, logs and the bootstrap admin key in $dir).
  Use the CLI:  eval "\$(GANTRY_BIN_DIR=$top/$build tools/dev-cluster.sh env)"
                $build/tools/gantry cluster members
  Status:       tools/dev-cluster.sh status
  Stop it:      tools/dev-cluster.sh stop      (keeps the data; run this script again to reuse it)
  Remove it:    tools/dev-cluster.sh clean     (stops it and deletes its data)
MSG
