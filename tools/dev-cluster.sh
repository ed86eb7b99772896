#!/usr/bin/env bash
# A local 3-replica gantryd cluster on 127.0.0.1, for development and the README's run command.
# Data, logs, pid files and the bootstrap admin key live under one directory (default:
# .devcluster/ in the repository). Starting again reuses a running or stopped cluster and its data.
#
#   tools/dev-cluster.sh start [ID]  start (or restart) the 3 replicas, or only replica ID; replica 1
#                                 is initialised on the first start, 2 and 3 join with join tokens
#   tools/dev-cluster.sh status   show which replicas run and the cluster membership
#   tools/dev-cluster.sh env      print the GANTRY_* variables that point the gantry CLI at it
#   tools/dev-cluster.sh stop     stop the replicas (SIGTERM: clean handover), keep the data
#   tools/dev-cluster.sh kill ID  SIGKILL replica ID (1, 2, 3 or replica-N: a crash, for drills)
#   tools/dev-cluster.sh rotate-ca begin|finish|status
#                                 rotate the cluster CA as replica 1 (the CA holder) does it
#                                 (docs/operations.md, "Rotating the cluster CA")
#   tools/dev-cluster.sh restore FILE [KEYFILE]
#                                 replace the cluster by one restored from a backup (KEYFILE: the
#                                 key of a sealed one, else GANTRY_BACKUP_KEY): the replicas stop,
#                                 their data dirs move to restored-from-<time>/, replica 1 is
#                                 restored with the old secrets (API keys keep working) and 2 and 3
#                                 join it
#   tools/dev-cluster.sh promote  the standby site takes over (GANTRY_DEV_STANDBY > 0, every primary
#                                 replica stopped): the documented promotion (docs/operations.md,
#                                 "Standby site"): the standby-site replicas stop, the one with the
#                                 newest log is recovered with them all as voters, its store is copied
#                                 to the others, the primary data dirs move to promoted-from-<time>/
#                                 and the standby site starts as the cluster
#   tools/dev-cluster.sh clean    delete the sandboxes, stop the replicas, remove the directory and
#                                 the gantry contexts tools/run.sh wrote for it (gantry-dev,
#                                 gantry-dev-admin; kept when they point at another directory)
#
# Ports (GANTRY_DEV_PORT, default 7001): peers BASE..BASE+N-1, API BASE+100.., admin BASE+200...
# GANTRY_DEV_STANDBY=N (0-2, default 0) adds replicas 4.. as a standby site (standby_site on): 3
# primary replicas and N that hold a full copy without voting.
# GANTRY_DEV_GRACE_MS sets roles_grace_ms (how long a member may be away before it is replaced; tests).
# Environment: GANTRY_DEV_DIR (data directory), GANTRY_BIN_DIR (build tree, default
# build-test/plain). The admin key is kept in $GANTRY_DEV_DIR/admin.key (mode 0600) for this
# local cluster's convenience; a real deployment keeps it elsewhere (docs/operations.md).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=${GANTRY_DEV_DIR:-$top/.devcluster}
base=${GANTRY_DEV_PORT:-7001}
bin=${GANTRY_BIN_DIR:-$top/build-test/plain}
gantryd=$bin/server/gantryd
gantry=$bin/tools/gantry
standby=${GANTRY_DEV_STANDBY:-0}
case "$standby" in 0 | 1 | 2) ;; *) echo "GANTRY_DEV_STANDBY must be 0, 1 or 2" >&2; exit 2 ;; esac
peer() { echo "127.0.0.1:$((base + $1 - 1))"; }
api() { echo "127.0.0.1:$((base + 99 + $1))"; }
admin() { echo "127.0.0.1:$((base + 199 + $1))"; }
ids=$(seq 1 $((3 + standby)))
site_ids=$(seq 4 $((3 + standby)))
rev_ids=$(seq $((3 + standby)) -1 1)
endpoints=$(for id in $ids; do api "$id"; done | paste -sd,)
is_id() { [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le $((3 + standby)) ]; }
# The cluster CA: the copy kept beside the data dirs (a promotion moves the primary's away), else any
# replica's.
ca() {
  [ -f "$dir/ca.pem" ] && { echo "$dir/ca.pem"; return; }
  for id in $ids; do [ -f "$dir/replica$id/tls/ca.pem" ] && { echo "$dir/replica$id/tls/ca.pem"; return; }; done
  echo "$dir/replica1/tls/ca.pem"
}

# Is process $1 alive (and, with $2, replica $2's gantryd)? `kill -0` is not enough: it succeeds
# on a zombie (a replica just SIGKILLed that its parent has not reaped yet, so `start` would skip
# it) and on a pid the kernel has since given to another process. So: not a zombie (state Z or X
# in /proc/PID/stat, after the command name, which may hold spaces) and, with $2, a command line
# naming this replica's data directory (a zombie's command line is empty). Without $2 for the
# child just started, whose command line is the shell's until it execs gantryd. Linux /proc, like
# the process driver.
alive() { # pid [id]
  local stat cmd
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  case ${stat%% *} in Z | X | "") return 1 ;; esac
  [ -z "${2:-}" ] && return 0
  cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  case "$cmd" in *"--data-dir $dir/replica$2 "*) return 0 ;; esac
  return 1
}

running() { # id
  local pidf="$dir/replica$1.pid"
  [ -f "$pidf" ] && alive "$(cat "$pidf")" "$1"
}

flags() { # id
  # The process driver's state is shared by the 3 replicas, so whichever holds the reconciler lease
  # adopts the sandboxes the others started. Short lease timings make a local failover quick.
  echo --replica-id "$1" --data-dir "$dir/replica$1" --peer-address "$(peer "$1")" \
    --api-address "$(api "$1")" --admin-address "$(admin "$1")" --driver-state-dir "$dir/sandboxes" \
    --lease-duration-ms 3000 --lease-renew-deadline-ms 2000 --lease-retry-ms 500
  [ "$1" -gt 3 ] && echo --standby-site
  [ -n "${GANTRY_DEV_GRACE_MS:-}" ] && echo --roles-grace-ms "$GANTRY_DEV_GRACE_MS"
  true
}

cli() {
  GANTRY_TOKEN=$(cat "$dir/admin.key") "$gantry" --endpoint "$endpoints" --ca "$(ca)" "$@"
}

start_replica() { # id
  local id=$1 env=()
  if running "$id"; then
    echo "replica $id already running (pid $(cat "$dir/replica$id.pid"))"
    return
  fi
  if [ "$id" -le 3 ] && [ -f "$dir/promoted" ]; then
    echo "replica $id belongs to the primary site, which the standby site replaced ($(cat "$dir/promoted")): not started" >&2
    exit 1
  fi
  if [ "$id" -eq 1 ] && [ ! -f "$dir/replica1/identity.json" ]; then
    rm -rf "$dir/replica1"
    # shellcheck disable=SC2046
    "$gantryd" init $(flags 1) --admin-key-file "$dir/admin.key" >"$dir/init.log" 2>&1 ||
      { cat "$dir/init.log" >&2; exit 1; }
    echo "replica 1 initialised a new cluster (admin key in $dir/admin.key)"
    cp "$dir/replica1/tls/ca.pem" "$dir/ca.pem"
  fi
  local join=()
  if [ "$id" -ne 1 ] && [ ! -f "$dir/replica$id/identity.json" ]; then
    rm -rf "$dir/replica$id"
    env=(GANTRY_JOIN_TOKEN="$(cli cluster join-token --uses 1 2>/dev/null)")
    join=(--join "$endpoints")
  fi
  : >"$dir/replica$id.log"
  # shellcheck disable=SC2046
  env "${env[@]}" setsid "$gantryd" $(flags "$id") "${join[@]}" >>"$dir/replica$id.log" 2>&1 </dev/null &
  echo $! >"$dir/replica$id.pid"
  for _ in $(seq 1 600); do
    if grep -q '^READY' "$dir/replica$id.log"; then
      echo "replica $id running: API $(api "$id"), peers $(peer "$id"), admin http://$(admin "$id") (pid $(cat "$dir/replica$id.pid"), log $dir/replica$id.log)"
      return
    fi
    if ! alive "$(cat "$dir/replica$id.pid")"; then
      echo "replica $id exited; last lines of its log:" >&2
      tail -20 "$dir/replica$id.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "replica $id did not become ready within 60 s; see $dir/replica$id.log" >&2
  exit 1
}

# Wait (up to 10 s) until nothing listens on @port any more; say who still does if something does.
# A stopped replica's listener is gone when its process is, but a process it forked that has not
# yet closed the descriptors it inherited (a sandbox's spawning helper, for a moment) keeps it.
wait_port_free() { # host:port
  local port=${1##*:}
  for _ in $(seq 1 100); do
    ss -Hltn "sport = :$port" 2>/dev/null | grep -q . || return 0
    sleep 0.1
  done
  echo "port $port is still in use after 10 s:" >&2
  ss -ltnp "sport = :$port" >&2 || true
}

stop_replica() { # id
  local pidf="$dir/replica$1.pid"
  if running "$1"; then
    local pid
    pid=$(cat "$pidf")
    kill -TERM "$pid"
    for _ in $(seq 1 400); do
      alive "$pid" "$1" || break
      sleep 0.1
    done
    alive "$pid" "$1" && kill -KILL "$pid"
    echo "replica $1 stopped"
  fi
  rm -f "$pidf"
}

# A replica is named by its number or by its member name (replica-N), as `gantry drill` passes it.
[ $# -ge 2 ] && set -- "$1" "${2#replica-}" "${@:3}"

case "${1:-}" in
start)
  [ -x "$gantryd" ] || { echo "build first: $gantryd is missing" >&2; exit 1; }
  mkdir -p "$dir"
  chmod 711 "$dir" # traversable by the sandboxes' uid (the process driver state is under it); each replica dir is 0700
  if [ -z "${2:-}" ]; then
    for id in $ids; do [ "$id" -le 3 ] && [ -f "$dir/promoted" ] && continue; start_replica "$id"; done
  elif is_id "$2"; then
    start_replica "$2"
  else
    echo "start: no replica \"$2\" (1 to $((3 + standby)))" >&2; exit 2
  fi
  ;;
promote)
  # The standby-site promotion of docs/operations.md ("Standby site"), for this local cluster.
  [ "$standby" -gt 0 ] || { echo "promote: no standby site (GANTRY_DEV_STANDBY=0)" >&2; exit 2; }
  [ -f "$dir/promoted" ] && { echo "promote: already done ($(cat "$dir/promoted"))" >&2; exit 1; }
  for id in 1 2 3; do
    if running "$id"; then
      echo "promote: primary replica $id still runs: promote only when the primary site is lost (two clusters would serve)" >&2
      exit 1
    fi
  done
  # Stop the standby site at once: without a leader it serves nothing, a graceful stop would only wait
  # for calls that cannot finish, and its Raft log is on disk (SIGKILL is a crash, which Raft survives).
  for id in $site_ids; do
    if running "$id"; then
      pid=$(cat "$dir/replica$id.pid")
      kill -KILL "$pid"
      for _ in $(seq 1 100); do alive "$pid" "$id" || break; sleep 0.1; done
    fi
    rm -f "$dir/replica$id.pid"
  done
  # The member whose log was written last holds the most entries: standbys only ever receive the
  # leader's log, so the newest segment file marks the furthest along.
  best=$(for id in $site_ids; do
    t=$(find "$dir/replica$id/store" -maxdepth 1 -type f \( -name 'open-*' -o -name '[0-9]*-[0-9]*' \) \
      -printf '%T@\n' 2>/dev/null | sort -g | tail -1)
    echo "${t:-0} $id"
  done | sort -g -k1,1 | tail -1 | cut -d' ' -f2)
  members=$(for id in $site_ids; do echo "$id=$(peer "$id")/voter"; done | paste -sd,)
  # shellcheck disable=SC2046
  "$gantryd" recover $(flags "$best") --members "$members" >"$dir/promote.log" 2>&1 ||
    { cat "$dir/promote.log" >&2; exit 1; }
  for id in $site_ids; do
    [ "$id" = "$best" ] && continue
    rm -rf "$dir/replica$id/store"
    cp -a "$dir/replica$best/store" "$dir/replica$id/store"
  done
  old="$dir/promoted-from-$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$old"
  for id in 1 2 3; do [ -d "$dir/replica$id" ] && mv "$dir/replica$id" "$old/"; rm -f "$dir/replica$id.pid"; done
  echo "the standby site (replicas $(paste -sd' ' <<<"$site_ids")) replaced the primary site at $(date -u +%FT%TZ); its data dirs are in $old" >"$dir/promoted"
  echo "recovered replica $best with members $members (the primary site's data dirs are in $old)"
  # Start them together: none is ready before a majority of them runs.
  pids=()
  for id in $site_ids; do start_replica "$id" & pids+=($!); done
  rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  exit $rc
  ;;
restore)
  # The documented procedure (docs/operations.md, "Restoring into a full cluster") in one command.
  from=${2:-}
  [ -n "$from" ] && [ -f "$from" ] || { echo "restore: which backup file?" >&2; exit 2; }
  from=$(cd "$(dirname "$from")" && pwd)/$(basename "$from")
  keyflag=()
  if [ -n "${3:-}" ]; then keyflag=(--backup-key-file "$(cd "$(dirname "$3")" && pwd)/$(basename "$3")"); fi
  [ -d "$dir/replica1/secrets" ] || { echo "restore: $dir/replica1/secrets is missing (nothing to keep the API keys with)" >&2; exit 1; }
  # Refuse a bad backup or key before touching anything.
  verify=()
  if [ -n "${3:-}" ]; then verify=(--key-file "${keyflag[1]}"); fi
  if ! "$gantry" cluster backup-verify "$from" "${verify[@]}" >"$dir/restore.log" 2>&1; then
    echo "restore: the backup was refused; the cluster is untouched:" >&2
    cat "$dir/restore.log" >&2
    exit 1
  fi
  if grep -q "STRUCTURE ONLY" "$dir/restore.log"; then
    echo "restore: $from is sealed: give its key file (or GANTRY_BACKUP_KEY); the cluster is untouched" >&2
    exit 1
  fi
  for id in $rev_ids; do stop_replica "$id"; done
  wait_port_free "$(peer 1)" # gantryd restore listens there
  old="$dir/restored-from-$(date -u +%Y%m%dT%H%M%SZ)"
  mkdir -p "$old"
  for id in 1 2 3; do [ -d "$dir/replica$id" ] && mv "$dir/replica$id" "$old/"; done
  # shellcheck disable=SC2046
  if ! "$gantryd" restore --from "$from" "${keyflag[@]}" --secrets "$old/replica1/secrets" $(flags 1) \
    >"$dir/restore.log" 2>&1; then
    # Put the old cluster back as it was (restore refuses a bad backup before creating anything,
    # but a failure later leaves a partial replica 1).
    cat "$dir/restore.log" >&2
    rm -rf "$dir/replica1"
    for id in 1 2 3; do [ -d "$old/replica$id" ] && mv "$old/replica$id" "$dir/"; done
    rmdir "$old"
    echo "restore failed; the old cluster's data dirs are back, starting it again" >&2
    for id in 1 2 3; do start_replica "$id"; done
    exit 1
  fi
  echo "replica 1 restored from $from (the replicas' old data dirs are in $old)"
  for id in 1 2 3; do start_replica "$id"; done
  ;;
kill)
  is_id "${2:-}" || { echo "kill: which replica? (1 to $((3 + standby)))" >&2; exit 2; }
  if running "$2"; then
    kill -KILL "$(cat "$dir/replica$2.pid")"
    echo "replica $2 killed"
  else
    echo "replica $2 is not running"
  fi
  rm -f "$dir/replica$2.pid"
  ;;
rotate-ca)
  # The cluster CA rotation (docs/operations.md, "Rotating the cluster CA"), run as replica 1, the
  # CA holder: begin, then finish once status shows every member on the new CA.
  case "${2:-}" in begin | finish | status) ;; *) echo "rotate-ca: begin, finish or status" >&2; exit 2 ;; esac
  # shellcheck disable=SC2046 # flags prints one flag or value per word
  "$gantryd" rotate-ca "$2" $(flags 1)
  # Clients trust what the replicas trust: both CAs during the overlap, the new one after. The
  # replicas install the bundle within a second or two; the CLI's CA file follows it here.
  sleep 2
  cp "$dir/replica1/tls/ca.pem" "$dir/ca.pem"
  ;;
status)
  for id in $ids; do
    if running "$id"; then echo "replica $id: running (pid $(cat "$dir/replica$id.pid"))"; else echo "replica $id: stopped"; fi
  done
  cli cluster members || true
  ;;
env)
  echo "export GANTRY_ENDPOINT=$endpoints"
  echo "export GANTRY_CA=$(ca)"
  echo "export GANTRY_TOKEN=\$(cat $dir/admin.key)"
  ;;
stop)
  for id in $rev_ids; do stop_replica "$id"; done
  ;;
clean)
  # Sandboxes belong to the driver's backend and outlive the replicas: delete them through the API
  # first (the reconciler stops their process trees), then stop the replicas.
  if running 1 || running 2 || running 3 || running 4 || running 5; then
    cli sandbox list -A 2>/dev/null | awk 'NR > 1 {print $1, $2}' | while read -r ns name; do
      cli sandbox delete "$name" --namespace "$ns" >/dev/null 2>&1 || true
    done
    # Wait until a list that SUCCEEDS shows none (a failed list, say during a leadership change,
    # proves nothing). Deleting a tree can take the driver's grace period, and a lease that moved
    # (a replica restarted) its duration, so allow 90 s.
    left=unknown
    for _ in $(seq 1 450); do
      if out=$(cli sandbox list -A 2>/dev/null); then
        left=$(printf '%s\n' "$out" | awk 'NR > 1 && NF > 0' | wc -l)
        [ "$left" -eq 0 ] && break
      fi
      sleep 0.2
    done
    [ "$left" = 0 ] || echo "warning: sandboxes may be left running ($left still listed): see docs/drivers.md" >&2
  fi
  for id in $rev_ids; do stop_replica "$id"; done
  # Contexts store absolute, resolved paths (gantry context create): compare with this directory's.
  real=$(cd "$dir" 2>/dev/null && pwd -P || echo "$dir")
  rm -rf "$dir"
  echo "removed $dir"
  # The contexts tools/run.sh wrote point into the removed directory: remove them, but only when
  # they do (their CA or credential file is under it). With another GANTRY_DEV_DIR the same names
  # may belong to another local cluster, which must keep them.
  if [ -x "$gantry" ]; then
    for ctx in gantry-dev gantry-dev-admin; do
      if "$gantry" -o json context show "$ctx" 2>/dev/null | grep -qF "\"$real/"; then
        "$gantry" context delete "$ctx" >/dev/null 2>&1 && echo "removed the gantry context $ctx"
      elif "$gantry" context show "$ctx" >/dev/null 2>&1; then
        echo "kept the gantry context $ctx: it points at another cluster directory"
      fi
    done
  fi
  true
  ;;
*)
  sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
