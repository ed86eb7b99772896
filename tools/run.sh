#!/usr/bin/env bash
# The README's run command: install what is missing, build, start a local 3-node cluster of
# Gantry's replicated store (tools/dev-cluster.sh), and show it working: membership, the schema,
# a replicated write read back through the leader, a leadership transfer, and a write after it.
#
# What runs today is the store layer (embedded dqlite nodes and Gantry's client for them). The
# gRPC API, gantryd and the gantry CLI arrive with later issues; this script will then start them.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash tools/install-deps.sh
build=build-test/plain
echo "== building into $build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$(nproc)" >/dev/null

echo "== starting the 3-node store cluster"
GANTRY_BIN_DIR=$top/$build tools/dev-cluster.sh start
base=${GANTRY_DEV_PORT:-7001}
addresses="127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
store() { "$build/tools/gantry-store" --address "$addresses" "$@"; }

echo "== members"
store members
echo "== a replicated write, read back from the leader"
store exec "CREATE TABLE IF NOT EXISTS demo (id INTEGER PRIMARY KEY, note TEXT NOT NULL, at_ms INTEGER NOT NULL) STRICT"
store exec "INSERT INTO demo (note, at_ms) VALUES (?, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))" "written by run.sh"
store query "SELECT count(*) AS rows_in_demo FROM demo"
echo "== handing leadership over, then writing through the new leader"
store transfer
store members
store exec "INSERT INTO demo (note, at_ms) VALUES (?, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))" "after transfer"
store query "SELECT id, note FROM demo ORDER BY id DESC LIMIT 3"

cat <<MSG

The cluster is running (data and logs in ${GANTRY_DEV_DIR:-$top/.devcluster}).
  Talk to it:   $build/tools/gantry-store --address $addresses members
  Status:       tools/dev-cluster.sh status
  Stop it:      tools/dev-cluster.sh stop      (keeps the data; run this script again to reuse it)
  Remove it:    tools/dev-cluster.sh clean     (stops it and deletes its data)
MSG
