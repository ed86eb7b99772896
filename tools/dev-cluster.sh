#!/usr/bin/env bash
# A local 3-node cluster of the replicated store on 127.0.0.1, for development and the README's
# run command. Data, logs and pid files live under one directory (default: .devcluster/ in the
# repository). Starting again reuses a running or stopped cluster and its data.
#
#   tools/dev-cluster.sh start    start (or restart) the 3 nodes; node 1 bootstraps, 2 and 3 join
#   tools/dev-cluster.sh status   show which nodes run and the cluster membership
#   tools/dev-cluster.sh stop     stop the nodes (SIGTERM), keep the data
#   tools/dev-cluster.sh clean    stop the nodes and remove the directory
#
# Environment: GANTRY_DEV_DIR (data directory), GANTRY_DEV_PORT (first port, default 7001),
# GANTRY_BIN_DIR (build tree, default build-test/plain).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=${GANTRY_DEV_DIR:-$top/.devcluster}
base=${GANTRY_DEV_PORT:-7001}
bin=${GANTRY_BIN_DIR:-$top/build-test/plain}
node_bin=$bin/store/gantry-store-node
store_bin=$bin/tools/gantry-store
addr() { echo "127.0.0.1:$((base + $1 - 1))"; }
addresses="$(addr 1),$(addr 2),$(addr 3)"

running() { # id
  local pidf="$dir/node$1.pid"
  [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null
}

start_node() { # id
  local id=$1 ndir="$dir/node$1" join=()
  if running "$id"; then
    echo "node $id already running (pid $(cat "$dir/node$id.pid"))"
    return
  fi
  # Only a node whose data dir is new joins; a restarted node is already a member.
  if [ "$id" -ne 1 ] && [ ! -d "$ndir" ]; then
    join=(--join "$(addr 1),$(addr 2),$(addr 3)" --voter)
  fi
  mkdir -p "$ndir"
  : >"$dir/node$id.log"
  setsid "$node_bin" --id "$id" --address "$(addr "$id")" --dir "$ndir" "${join[@]}" \
    >>"$dir/node$id.log" 2>&1 </dev/null &
  echo $! >"$dir/node$id.pid"
  for _ in $(seq 1 300); do
    if grep -q '^READY' "$dir/node$id.log"; then
      echo "node $id running at $(addr "$id") (pid $(cat "$dir/node$id.pid"), log $dir/node$id.log)"
      return
    fi
    if ! running "$id"; then
      echo "node $id exited; last lines of its log:" >&2
      tail -20 "$dir/node$id.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "node $id did not become ready within 30 s; see $dir/node$id.log" >&2
  exit 1
}

stop_node() { # id
  local pidf="$dir/node$1.pid"
  if running "$1"; then
    local pid
    pid=$(cat "$pidf")
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "node $1 stopped"
  fi
  rm -f "$pidf"
}

case "${1:-}" in
start)
  [ -x "$node_bin" ] || { echo "build first: $node_bin is missing" >&2; exit 1; }
  mkdir -p "$dir"
  chmod 700 "$dir"
  for id in 1 2 3; do start_node "$id"; done
  "$store_bin" --address "$addresses" migrate
  ;;
status)
  for id in 1 2 3; do
    if running "$id"; then echo "node $id: running (pid $(cat "$dir/node$id.pid"))"; else echo "node $id: stopped"; fi
  done
  "$store_bin" --address "$addresses" --timeout-ms 3000 members || true
  ;;
stop)
  for id in 3 2 1; do stop_node "$id"; done
  ;;
clean)
  for id in 3 2 1; do stop_node "$id"; done
  rm -rf "$dir"
  echo "removed $dir"
  ;;
*)
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
