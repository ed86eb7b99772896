#!/usr/bin/env bash
# Exercises the chart's start script (gantry/files/start.sh) without Kubernetes: a fake gantryd
# records how it is called, a fake getent answers the cluster DNS names, and a small HTTP server on
# 127.0.0.1 plays the other members' /readyz. Each case checks what the script ran and exported, or
# that it refused with the expected message.
#
# Usage: start-test.sh   (prints one line per case and "start script: N passed, N failed")
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
script="$here/../gantry/files/start.sh"
work=$(mktemp -d)
server_pid=
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1: $2"; }

mkdir -p "$work/bin"
# The fake gantryd: one line per call with its arguments and its GANTRY_* environment.
cat >"$work/bin/gantryd" <<'EOF'
#!/bin/bash
{
  printf 'call:'; printf ' %s' "$@"; printf '\n'
  env | grep '^GANTRY_' | sort | sed 's/^/env: /'
} >>"$FAKE_LOG"
if [[ ${1:-} == init ]]; then
  if [[ -n ${FAKE_INIT_SECONDS:-} ]]; then # a slow init, which records a SIGTERM
    trap 'echo "init: got SIGTERM" >>"$FAKE_LOG"; exit 143' TERM
    echo "init: waiting, SIGTERM trapped" >>"$FAKE_LOG"
    sleep "$FAKE_INIT_SECONDS" &
    wait $!
  fi
  mkdir -p "$FAKE_DATA" && echo '{}' >"$FAKE_DATA/identity.json"
fi
exit 0
EOF
# The fake getent: "getent ahostsv4 NAME" from $FAKE_HOSTS (lines "NAME IP").
cat >"$work/bin/getent" <<'EOF'
#!/bin/bash
[[ $1 == ahostsv4 ]] || exit 2
found=1
while read -r name ip; do
  if [[ $name == "$2" ]]; then printf '%s       STREAM %s\n' "$ip" "$2"; found=0; fi
done <"$FAKE_HOSTS"
exit $found
EOF
chmod +x "$work/bin/gantryd" "$work/bin/getent"

# /readyz answers 200 while $work/ready exists, 503 otherwise.
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
/usr/bin/python3 - "$port" "$work/ready" <<'EOF' &
import http.server, os, sys
port, flag = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path == "/readyz" and os.path.exists(flag) else 503
        self.send_response(code); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
server_pid=$!
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

# One case: a fresh volume directory, settings, hosts; runs the script for a pod name.
# Globals after the call: rc, out (stderr+stdout of the script), log (the fake gantryd's record).
run_case() { # pod settings-overrides hosts [env...]
  local pod=$1 overrides=$2 hosts=$3
  shift 3
  local dir="$work/case"
  rm -rf "$dir"
  mkdir -p "$dir/state/data"
  [[ -z ${PRESEED:-} ]] || echo '{}' >"$dir/state/data/identity.json"
  printf '%s\n' "$hosts" >"$dir/hosts"
  echo "${ALLOW:-true}" >"$dir/allow-init"
  cat >"$dir/start.env" <<EOF
FULLNAME='gw'
NAMESPACE='ns'
CLUSTER_DOMAIN='test'
HEADLESS='gw-headless'
API_PORT='8443'
PEER_PORT='9443'
ADMIN_PORT='$port'
DATA_DIR='$dir/state/data'
ADMIN_KEY_FILE='$dir/state/bootstrap-admin.key'
CONFIG_FILE='/etc/gantry/config/gantryd.json'
CA_CERT='/etc/gantry/ca/ca.crt'
CA_KEY='/etc/gantry/ca/ca.key'
JOIN_TOKEN_FILE='/etc/gantry/join/token'
JOIN_TOKEN_USES='16'
JOIN_TOKEN_TTL_S='2592000'
ALLOW_INIT_FILE='$dir/allow-init'
ORDERED_JOIN='true'
JOIN_WAIT_SECONDS='0'
PEER_DNS_WAIT_SECONDS='0'
FAILURE_DOMAIN_MODE='zone'
EXTRA_SANS=''
PEER_CLUSTER_IPS=''
REPLICA_ID_OVERRIDES=''
GANTRYD='$work/bin/gantryd'
GETENT='$work/bin/getent'
$overrides
EOF
  : >"$dir/log"
  if [[ -n ${AS_PID1:-} ]]; then
    # PID 1 of a new PID namespace, as in a container; SIGTERM from outside once the predicate
    # AS_PID1 (pid1_joining, pid1_in_init: below) holds, polled for at most 10 s. If it never does,
    # nothing is signalled and the case fails (rc and took say so).
    env -i PATH=/usr/bin:/bin HOME="$dir" FAKE_LOG="$dir/log" FAKE_DATA="$dir/state/data" \
      FAKE_HOSTS="$dir/hosts" CHART_POD_NAME="$pod" CHART_POD_IP=10.244.0.9 CHART_NODE_NAME=node-a \
      CHART_ZONE=eu-1a "$@" unshare --pid --fork bash "$script" "$dir/start.env" >"$dir/out" 2>&1 &
    local unshare_pid=$! pid1='' started=$SECONDS reached=''
    while ((SECONDS - started < 10)); do
      [[ -n $pid1 ]] || pid1=$(pgrep -P "$unshare_pid" | head -n 1)
      if [[ -n $pid1 ]] && "$AS_PID1" "$pid1" "$dir"; then
        reached=1
        break
      fi
      sleep 0.05
    done
    started=$SECONDS
    if [[ -n $reached ]]; then
      kill -TERM "$pid1" 2>/dev/null
    else
      echo "start-test: the script never reached $AS_PID1; no SIGTERM sent" >>"$dir/out"
    fi
    while kill -0 "$unshare_pid" 2>/dev/null && ((SECONDS - started < 20)); do sleep 0.1; done
    took=$((SECONDS - started))
    kill -KILL "$unshare_pid" 2>/dev/null
    wait "$unshare_pid"
    rc=$?
    out=$(cat "$dir/out")
  else
    out=$(env -i PATH=/usr/bin:/bin HOME="$dir" FAKE_LOG="$dir/log" FAKE_DATA="$dir/state/data" \
      FAKE_HOSTS="$dir/hosts" CHART_POD_NAME="$pod" CHART_POD_IP=10.244.0.9 CHART_NODE_NAME=node-a \
      CHART_ZONE=eu-1a "$@" timeout 20 bash "$script" "$dir/start.env" 2>&1)
    rc=$?
  fi
  log=$(cat "$dir/log")
}

# AS_PID1 predicates (PID 1's pid, the case dir): the script waits for the previous member (its
# "in_child sleep 2"), or the fake gantryd init is running with its SIGTERM trap in place.
pid1_joining() { pgrep -P "$1" -x sleep >/dev/null; }
pid1_in_init() { grep -qF 'init: waiting, SIGTERM trapped' "$2/log"; }

has() { grep -qF -- "$1" <<<"$log"; }
said() { grep -qF -- "$1" <<<"$out"; }
# Only gantryd's own keys may reach its environment.
env_clean() {
  ! grep '^env: ' <<<"$log" | cut -d= -f1 | sed 's/^env: GANTRY_//' |
    grep -vxE 'REPLICA_ID|REPLICA_NAME|PEER_ADVERTISE_ADDRESS|CERT_SANS|FAILURE_DOMAIN|JOIN|JOIN_TOKEN_FILE|JOIN_CA_FILE' >/dev/null
}
calls() { grep -c '^call:' <<<"$log"; }

dns="gw-peer-0.ns.svc.test 10.96.0.10
gw-peer-1.ns.svc.test 10.96.0.11
gw-peer-2.ns.svc.test 10.96.0.12"

# 1. Ordinal 0, empty volume, first install: init with the chart's material, then run.
rm -f "$work/ready"
run_case gw-0 '' "$dns"
if [[ $rc -eq 0 ]] && [[ $(calls) -eq 2 ]] &&
  has "call: init --config /etc/gantry/config/gantryd.json --ca-cert /etc/gantry/ca/ca.crt --ca-key /etc/gantry/ca/ca.key --admin-key-file $work/case/state/bootstrap-admin.key --join-token-file /etc/gantry/join/token --join-token-uses 16 --join-token-ttl-s 2592000" &&
  has "call: --config /etc/gantry/config/gantryd.json" && has 'env: GANTRY_REPLICA_ID=1' &&
  has 'env: GANTRY_PEER_ADVERTISE_ADDRESS=10.96.0.10:9443' && has 'env: GANTRY_FAILURE_DOMAIN=eu-1a' &&
  has 'gw-0.gw-headless.ns.svc.test,' && has ',gw.ns.svc.test,' && ! has 'GANTRY_JOIN' && env_clean; then
  ok "ordinal 0 bootstraps on an empty volume"
else fail "ordinal 0 bootstraps on an empty volume" "rc=$rc $out $log"; fi

# 2. A restart with data: run only, never init, never join.
PRESEED=1 run_case gw-0 '' "$dns"
if [[ $rc -eq 0 ]] && [[ $(calls) -eq 1 ]] && has "call: --config" && ! has 'GANTRY_JOIN' && env_clean; then
  ok "a replica with data restarts as a member"
else fail "a replica with data restarts as a member" "rc=$rc $out $log"; fi

# 3. After an upgrade (allow-init false) an empty ordinal 0 refuses to bootstrap.
ALLOW=false run_case gw-0 '' "$dns"
if [[ $rc -ne 0 ]] && [[ $(calls) -eq 0 ]] && said 'bootstrap.allowInit does not allow a new cluster'; then
  ok "ordinal 0 refuses a second bootstrap"
else fail "ordinal 0 refuses a second bootstrap" "rc=$rc $out $log"; fi

# 4. Ordinal 0 lost its volume while members are ready: refuse (replica 1 would split the cluster).
touch "$work/ready"
run_case gw-0 '' "$dns
gw-headless.ns.svc.test 127.0.0.1
gw-headless.ns.svc.test 10.244.0.9"
if [[ $rc -ne 0 ]] && [[ $(calls) -eq 0 ]] && said 'lost its data' && said 'replicaIdOverrides'; then
  ok "ordinal 0 with a lost volume refuses to bootstrap beside live members"
else fail "ordinal 0 with a lost volume refuses to bootstrap beside live members" "rc=$rc $out $log"; fi

# 5. ... and with a new id it joins through the client Service.
run_case gw-0 "REPLICA_ID_OVERRIDES='0=11 2=13'" "$dns
gw-headless.ns.svc.test 127.0.0.1"
if [[ $rc -eq 0 ]] && [[ $(calls) -eq 1 ]] && has 'env: GANTRY_REPLICA_ID=11' &&
  has 'env: GANTRY_JOIN=gw.ns.svc.test:8443' && has 'env: GANTRY_JOIN_TOKEN_FILE=/etc/gantry/join/token' &&
  has 'env: GANTRY_JOIN_CA_FILE=/etc/gantry/ca/ca.crt' && ! has 'call: init' && env_clean; then
  ok "ordinal 0 under a new id joins the live members"
else fail "ordinal 0 under a new id joins the live members" "rc=$rc $out $log"; fi

# 6. Ordinal 2 joins once ordinal 1 is ready, through the lower ordinals and the client Service.
run_case gw-2 '' "$dns
gw-1.gw-headless.ns.svc.test 127.0.0.1"
if [[ $rc -eq 0 ]] && [[ $(calls) -eq 1 ]] && has 'env: GANTRY_REPLICA_ID=3' &&
  has 'env: GANTRY_JOIN=gw-0.gw-headless.ns.svc.test:8443,gw-1.gw-headless.ns.svc.test:8443,gw.ns.svc.test:8443' &&
  has 'env: GANTRY_PEER_ADVERTISE_ADDRESS=10.96.0.12:9443' && env_clean; then
  ok "ordinal 2 joins after ordinal 1 is ready"
else fail "ordinal 2 joins after ordinal 1 is ready" "rc=$rc $out $log"; fi

# 7. Nothing is ready: a joiner gives up (the kubelet restarts it with back-off).
rm -f "$work/ready"
run_case gw-1 '' "$dns
gw-0.gw-headless.ns.svc.test 127.0.0.1
gw-headless.ns.svc.test 127.0.0.1"
if [[ $rc -ne 0 ]] && [[ $(calls) -eq 0 ]] && said 'no member is ready'; then
  ok "a joiner waits for a ready member"
else fail "a joiner waits for a ready member" "rc=$rc $out $log"; fi

# 8. Pinned ClusterIPs win over DNS; node failure domain; a long node name becomes a checksum.
long=$(printf 'n%.0s' $(seq 70))
PRESEED=1 run_case gw-1 "PEER_CLUSTER_IPS='10.0.0.5 10.0.0.6'
FAILURE_DOMAIN_MODE='node'" "" CHART_NODE_NAME="$long"
sum=$(printf '%s' "$long" | cksum | cut -d' ' -f1)
if [[ $rc -eq 0 ]] && has 'env: GANTRY_PEER_ADVERTISE_ADDRESS=10.0.0.6:9443' && has 'env: GANTRY_REPLICA_ID=2' &&
  has "env: GANTRY_FAILURE_DOMAIN=$sum" && has 'env: GANTRY_CERT_SANS=gw-1.gw-headless.ns.svc.test,' && env_clean; then
  ok "pinned peer address and node failure domain"
else fail "pinned peer address and node failure domain" "rc=$rc $out $log"; fi

# 9. Zone mode without a zone label falls back to the node name.
PRESEED=1 run_case gw-1 '' "$dns" CHART_ZONE=
if [[ $rc -eq 0 ]] && has 'env: GANTRY_FAILURE_DOMAIN=node-a' && said 'using the node name'; then
  ok "zone failure domain falls back to the node name"
else fail "zone failure domain falls back to the node name" "rc=$rc $out $log"; fi

# 10. No peer Service in DNS: refuse rather than advertise something unstable.
PRESEED=1 run_case gw-1 '' ""
if [[ $rc -ne 0 ]] && [[ $(calls) -eq 0 ]] && said 'cannot resolve gw-peer-1.ns.svc.test'; then
  ok "an unresolvable peer Service stops the start"
else fail "an unresolvable peer Service stops the start" "rc=$rc $out $log"; fi

# 11. A pod name without an ordinal.
run_case gantry '' "$dns"
if [[ $rc -ne 0 ]] && said "cannot take the ordinal from the pod name 'gantry'"; then
  ok "a pod name without an ordinal is refused"
else fail "a pod name without an ordinal is refused" "rc=$rc $out $log"; fi

# 12-13. SIGTERM while the script is PID 1 (before it execs gantryd): it stops at once, and takes
# a running `gantryd init` with it. Without a handler, PID 1 would ignore the signal until the
# grace period's SIGKILL.
if unshare --pid --fork true 2>/dev/null; then
  rm -f "$work/ready"
  AS_PID1=pid1_joining run_case gw-1 "JOIN_WAIT_SECONDS='60'" "$dns
gw-0.gw-headless.ns.svc.test 127.0.0.1"
  if [[ $rc -eq 143 ]] && ((took <= 5)) && [[ $(calls) -eq 0 ]] && said 'SIGTERM before gantryd started'; then
    ok "SIGTERM during the join wait ends the start script (${took}s)"
  else fail "SIGTERM during the join wait ends the start script" "rc=$rc after ${took}s: $out $log"; fi
  AS_PID1=pid1_in_init run_case gw-0 '' "$dns" FAKE_INIT_SECONDS=60
  if [[ $rc -eq 143 ]] && ((took <= 5)) && has 'init: got SIGTERM' && ! has 'call: --config'; then
    ok "SIGTERM during gantryd init is passed on to it (${took}s)"
  else fail "SIGTERM during gantryd init is passed on to it" "rc=$rc after ${took}s: $out $log"; fi
else
  echo "skip SIGTERM cases: cannot make a PID namespace here (unshare --pid)"
fi

echo "start script: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
