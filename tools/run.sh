#!/usr/bin/env bash
# The README's run command: install what is missing, build, start a local 3-replica gantryd
# cluster on 127.0.0.1 with the process driver (tools/dev-cluster.sh), and show it working through
# the gantry CLI: membership and health, a namespace, a user with a role and an API key, a sandbox
# created by that user and READY (a bubblewrap process tree), the lease holder, a leadership
# transfer, an online backup and the audit trail.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash tools/install-deps.sh
build=${GANTRY_BUILD_DIR:-build-test/plain} # GANTRY_BUILD_DIR: reuse another build tree
case "$build" in /*) bin=$build ;; *) bin=$top/$build ;; esac
echo "== building into $build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" --target gantryd gantry gantry-store >/dev/null

dir=${GANTRY_DEV_DIR:-$top/.devcluster}
echo "== starting the 3-replica cluster (data and logs in $dir)"
GANTRY_BIN_DIR=$bin tools/dev-cluster.sh start
eval "$(GANTRY_BIN_DIR=$bin tools/dev-cluster.sh env)"
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
echo "== a namespace, a user with the user role in it, and an API key for that user"
gantry namespace get demo >/dev/null 2>&1 || gantry namespace create demo --description "made by tools/run.sh"
gantry user create alice 2>/dev/null || echo "user alice exists"
gantry role grant alice user --namespace demo 2>/dev/null || echo "alice already holds the user role in demo"
[ -s "$dir/alice.key" ] || gantry key create --principal alice --name run.sh >"$dir/alice.key"
echo "== as alice: gantry whoami, then a sandbox (waits until READY)"
GANTRY_TOKEN=$(cat "$dir/alice.key") gantry whoami
if ! GANTRY_TOKEN=$(cat "$dir/alice.key") gantry sandbox get hello --namespace demo >/dev/null 2>&1; then
  GANTRY_TOKEN=$(cat "$dir/alice.key") gantry sandbox create hello --namespace demo --image busybox --wait -- sleep 86400
fi
GANTRY_TOKEN=$(cat "$dir/alice.key") gantry sandbox list --namespace demo
echo "== gantry cluster lease (the replica driving the sandboxes)"
gantry cluster lease
echo "== gantry cluster transfer (hand leadership to another voter)"
gantry cluster transfer
echo "== gantry cluster backup"
gantry cluster backup "$dir/backup.gbk"

echo "== the last audit events (gantry audit export)"
gantry audit export | tail -3 | cut -c1-160

cat <<MSG

The cluster is running (data, logs and the bootstrap admin key in $dir).
  Use the CLI:  eval "\$(GANTRY_BIN_DIR=$bin tools/dev-cluster.sh env)"
                $build/tools/gantry cluster members
  Status:       tools/dev-cluster.sh status
  Stop it:      tools/dev-cluster.sh stop      (keeps the data; run this script again to reuse it)
  Remove it:    tools/dev-cluster.sh clean     (stops it and deletes its data)
MSG
