#!/usr/bin/env bash
# The README's run command: install what is missing, build, start a local 3-replica gantryd
# cluster on 127.0.0.1 with the process driver (tools/dev-cluster.sh), and show it working through
# the gantry CLI: membership and health, a namespace, a user with a role and an API key, a sandbox
# created by that user and READY (a bubblewrap process tree), the lease holder, a leadership
# transfer, an online backup and the audit trail. It leaves two gantry contexts behind
# ($XDG_CONFIG_HOME/gantry/config.json): gantry-dev (the user alice in namespace demo, made the
# current context, so `gantry` works right away) and gantry-dev-admin (the bootstrap admin).
# Running it again reuses the cluster, the user and the sandbox.
#
# Environment: GANTRY_BUILD_DIR (build tree, default build-test/plain), GANTRY_BIN_DIR (use the
# binaries already built in this tree: skips installing packages and building), GANTRY_DEV_DIR
# and GANTRY_DEV_PORT (tools/dev-cluster.sh).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if [ -n "${GANTRY_BIN_DIR:-}" ]; then
  bin=$GANTRY_BIN_DIR
  echo "== using the binaries in $bin"
  for t in server/gantryd tools/gantry; do
    [ -x "$bin/$t" ] || { echo "GANTRY_BIN_DIR: $bin/$t is missing; build it or unset GANTRY_BIN_DIR" >&2; exit 1; }
  done
else
  bash tools/install-deps.sh
  build=${GANTRY_BUILD_DIR:-build-test/plain}
  case "$build" in /*) bin=$build ;; *) bin=$top/$build ;; esac
  echo "== building into $bin"
  cmake -S . -B "$bin" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$bin" -j "$(nproc)" --target gantryd gantry gantry-store >/dev/null
fi
export GANTRY_BIN_DIR=$bin

dir=${GANTRY_DEV_DIR:-$top/.devcluster}
export GANTRY_DEV_DIR=$dir
echo "== starting the 3-replica cluster (data and logs in $dir)"
tools/dev-cluster.sh start
gantry() { "$bin/tools/gantry" "$@"; }
# The contexts: the endpoints of the three replicas (tried in turn), the cluster CA, a key file.
eval "$(tools/dev-cluster.sh env)"
endpoints=$GANTRY_ENDPOINT ca=$GANTRY_CA
unset GANTRY_ENDPOINT GANTRY_CA GANTRY_TOKEN
gantry context create gantry-dev-admin --endpoint "$endpoints" --ca "$ca" --token-file "$dir/admin.key" \
  --overwrite >/dev/null
admin() { gantry --context gantry-dev-admin "$@"; }

echo "== waiting for the cluster to settle (3 voters, all reachable)"
for _ in $(seq 1 100); do
  if admin -o json cluster members 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)["members"]
sys.exit(0 if sum(1 for x in m if x["role"] == "MEMBER_ROLE_VOTER" and x["reachable"]) == 3 else 1)'; then
    break
  fi
  sleep 0.2
done
echo "== gantry cluster members"
admin cluster members
echo "== gantry cluster health"
admin cluster health
echo "== a namespace, a user with the user role in it, and an API key for that user"
admin namespace get demo >/dev/null 2>&1 || admin namespace create demo --description "made by tools/run.sh"
admin user get alice >/dev/null 2>&1 || admin user create alice
bindings=$(admin role list --principal alice)
grep -q 'USER *demo' <<<"$bindings" || admin role grant alice user --namespace demo
if [ ! -s "$dir/alice.key" ]; then
  (umask 077 && admin key create --principal alice --name run.sh >"$dir/alice.key.tmp")
  mv "$dir/alice.key.tmp" "$dir/alice.key"
fi
gantry context create gantry-dev --endpoint "$endpoints" --ca "$ca" --token-file "$dir/alice.key" \
  --namespace demo --use --overwrite
echo "== as alice (the current context): gantry whoami, then a sandbox (waits until READY)"
gantry whoami
if ! gantry sandbox get hello >/dev/null 2>&1; then
  gantry sandbox create hello --image busybox --wait -- sleep 86400
fi
gantry sandbox list
echo "== gantry cluster lease (the replica driving the sandboxes)"
admin cluster lease
echo "== gantry cluster transfer (hand leadership to another voter)"
# Leadership goes only to a voter reachable for 15 s (a replica that has just joined or restarted
# may still be catching up, docs/operations.md): right after start-up the gateway says to wait.
for attempt in $(seq 1 12); do
  admin cluster transfer && break
  [ "$attempt" -lt 12 ] || exit 1
  echo "   (retrying in 3 s: the voters joined moments ago)"
  sleep 3
done
echo "== gantry cluster backup"
admin cluster backup "$dir/backup.gbk"
echo "== the last audit events (gantry audit query)"
admin audit query -A --limit 5

# The environment the dev-cluster.sh commands below need, when not the defaults.
envp=
[ "$bin" = "$top/build-test/plain" ] || envp="GANTRY_BIN_DIR=$bin "
[ "$dir" = "$top/.devcluster" ] || envp="${envp}GANTRY_DEV_DIR=$dir "
[ -z "${GANTRY_DEV_PORT:-}" ] || envp="${envp}GANTRY_DEV_PORT=$GANTRY_DEV_PORT "
cat <<MSG

The cluster is running: 3 replicas on 127.0.0.1, data, logs and the bootstrap admin key in $dir.
Use the CLI (the current context, gantry-dev, is the user alice in namespace demo):
  export PATH="$bin/tools:\$PATH"
  source <(gantry completion bash)
  gantry sandbox list
  gantry sandbox create my-agent --image busybox --wait -- sleep 3600
  gantry sandbox watch --timeout 30
  gantry --context gantry-dev-admin cluster members      (the platform admin)
  gantry --help, and gantry GROUP COMMAND --help; docs/cli.md
Status:  ${envp}tools/dev-cluster.sh status
Stop:    ${envp}tools/dev-cluster.sh stop
         (keeps the data; run tools/run.sh again to reuse it)
Remove:  ${envp}tools/dev-cluster.sh clean
         (deletes the sandboxes, stops the replicas, removes $dir and the contexts
         gantry-dev and gantry-dev-admin)
MSG
