#!/bin/bash
# Starts one gantryd replica of the gantry StatefulSet (deploy/helm/gantry, docs/deploy-helm.md).
# It works out the replica's identity from the pod, then restarts an existing member, bootstraps a
# new cluster, or joins the existing one, and finally execs gantryd.
#
# The happy paths:
#   - the volume holds data: exec gantryd, which rejoins the cluster it belongs to (join is not set);
#   - ordinal 0, empty volume, first install: `gantryd init` with the chart's cluster CA, the first
#     Platform Admin key written to the volume and the chart's join token registered, then gantryd;
#   - ordinal k > 0, empty volume: wait until ordinal k-1 is ready (members are added one at a time,
#     in order), then gantryd with join = the lower ordinals and the client Service.
# What it refuses, with a message, rather than guessing:
#   - ordinal 0 with an empty volume while other members are ready: the replica lost its data, and
#     replica 1 bootstrapping again would split the cluster in two;
#   - ordinal 0 with an empty volume when bootstrap.allowInit says no (after the first install);
#   - a peer address that is not an IPv4 literal (dqlite 1.11 dials IPv4 only).
# Every refusal exits 1, so the kubelet restarts the container with back-off and the reason is in
# the logs (kubectl logs --previous).
#
# Signals: the script is PID 1 of the container until it execs gantryd. The kernel delivers no
# signal to PID 1 that has no handler, and bash acts on a trapped signal only after a foreground
# child ends, so the waits and `gantryd init` run as background children that the script waits for:
# a SIGTERM (pod deleted, rolled, drained) during the start stops the child and ends the script at
# once (exit 143) instead of after the grace period's SIGKILL.
#
# Input: the settings file the chart renders (argument 1, default /etc/gantry/config/start.env) and
# the pod's environment: CHART_POD_NAME, CHART_POD_IP, CHART_NODE_NAME, CHART_ZONE (downward API).
# Only gantryd's own settings are exported (GANTRY_*); the chart's settings stay shell variables.
set -euo pipefail

settings=${1:-/etc/gantry/config/start.env}
# shellcheck source=/dev/null
. "$settings"
GANTRYD=${GANTRYD:-/usr/bin/gantryd}
GETENT=${GETENT:-getent}

log() { printf '%s gantry-start: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

child=
on_signal() {
  log "$1 before gantryd started: stopping${child:+ (and process $child)}"
  if [[ -n $child ]]; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  exit 143
}
trap 'on_signal SIGTERM' TERM
trap 'on_signal SIGINT' INT
# Run "$@" as a background child and wait for it (a signal interrupts the wait); its exit status.
in_child() {
  "$@" &
  child=$!
  local rc=0
  wait "$child" || rc=$?
  child=
  return "$rc"
}

pod=${CHART_POD_NAME:?CHART_POD_NAME is not set (downward API metadata.name)}
ordinal=${pod##*-}
case $ordinal in
  '' | *[!0-9]*) die "cannot take the ordinal from the pod name '$pod'" ;;
esac
ordinal=$((10#$ordinal))

replica_id=$((ordinal + 1))
for pair in $REPLICA_ID_OVERRIDES; do
  if [[ ${pair%%=*} == "$ordinal" ]]; then replica_id=${pair#*=}; fi
done
export GANTRY_REPLICA_ID=$replica_id
export GANTRY_REPLICA_NAME=$pod

svc_dns() { printf '%s.%s.svc.%s' "$1" "$NAMESPACE" "$CLUSTER_DOMAIN"; }
pod_dns() { printf '%s.%s.%s.svc.%s' "$1" "$HEADLESS" "$NAMESPACE" "$CLUSTER_DOMAIN"; }
# IPv4 addresses of a name (an address stands for itself), one a line, nothing when it does not resolve.
resolve4() {
  if [[ $1 =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]]; then
    printf '%s\n' "$1"
  else
    "$GETENT" ahostsv4 "$1" 2>/dev/null | awk '!seen[$1]++ { print $1 }' || true
  fi
}

# The peer address other members dial: this ordinal's peer Service ClusterIP, pinned in the values or
# looked up in DNS. It stays the same across pod restarts, which dqlite needs (it identifies members
# by address string); gantryd binds 0.0.0.0 and the Service forwards to the pod.
read -r -a pinned <<<"$PEER_CLUSTER_IPS"
peer_ip=${pinned[ordinal]:-}
if [[ -z $peer_ip ]]; then
  name=$(svc_dns "$FULLNAME-peer-$ordinal")
  deadline=$((SECONDS + PEER_DNS_WAIT_SECONDS))
  until peer_ip=$(resolve4 "$name") && peer_ip=${peer_ip%%$'\n'*} && [[ -n $peer_ip ]]; do
    ((SECONDS < deadline)) || die "cannot resolve $name, this replica's peer Service: is it deployed, and does cluster DNS answer?"
    in_child sleep 2
  done
fi
[[ $peer_ip =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] ||
  die "peer address '$peer_ip' is not an IPv4 literal (dqlite 1.11 dials IPv4 only): the cluster needs an IPv4 or dual-stack Service CIDR"
export GANTRY_PEER_ADVERTISE_ADDRESS=$peer_ip:$PEER_PORT

# Names under which clients and joiners reach this replica's API, put into its certificate.
sans="$(pod_dns "$pod"),$pod.$HEADLESS.$NAMESPACE.svc,$pod.$HEADLESS.$NAMESPACE,$pod.$HEADLESS"
sans+=",$(svc_dns "$FULLNAME"),$FULLNAME.$NAMESPACE.svc,$FULLNAME.$NAMESPACE,$FULLNAME,$peer_ip"
[[ -z $EXTRA_SANS ]] || sans+=",$EXTRA_SANS"
export GANTRY_CERT_SANS=$sans

# The failure domain the roles planner spreads voters over.
domain=
case $FAILURE_DOMAIN_MODE in
  zone)
    domain=${CHART_ZONE:-}
    if [[ -z $domain ]]; then
      domain=${CHART_NODE_NAME:-}
      log "the pod has no topology.kubernetes.io/zone label: using the node name '$domain' as failure domain"
    fi
    ;;
  node) domain=${CHART_NODE_NAME:-} ;;
  none) ;;
  *) die "unknown failure domain mode '$FAILURE_DOMAIN_MODE'" ;;
esac
if [[ -n $domain ]]; then
  # gantryd takes names of at most 63 characters from [A-Za-z0-9._/-]; anything else is reduced to
  # a checksum (an integer domain), the same on every replica that shares the name.
  if ((${#domain} > 63)) || [[ ! $domain =~ ^[A-Za-z0-9._/-]+$ ]]; then
    domain=$(printf '%s' "$domain" | cksum | cut -d' ' -f1)
  fi
  export GANTRY_FAILURE_DOMAIN=$domain
fi

run() {
  log "starting gantryd: replica $GANTRY_REPLICA_ID ($pod), peer $GANTRY_PEER_ADVERTISE_ADDRESS${GANTRY_FAILURE_DOMAIN:+, failure domain $GANTRY_FAILURE_DOMAIN}${GANTRY_JOIN:+, joining through $GANTRY_JOIN}"
  exec "$GANTRYD" --config "$CONFIG_FILE"
}

join() { # api-address...
  local IFS=,
  export GANTRY_JOIN="$*"
  export GANTRY_JOIN_TOKEN_FILE=$JOIN_TOKEN_FILE
  export GANTRY_JOIN_CA_FILE=$CA_CERT
  run
}

# Whether the admin endpoint at host (a name or an IPv4 address) answers GET /readyz with 200.
# bash's /dev/tcp does the request: the image has no HTTP client, and this needs none.
is_ready() { # host
  local ip status
  ip=$(resolve4 "$1")
  ip=${ip%%$'\n'*}
  [[ -n $ip ]] || return 1
  # shellcheck disable=SC2016 # the inner script expands its own arguments
  status=$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf "GET /readyz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" "$1" >&3
    IFS= read -r line <&3 && printf "%s" "$line"' _ "$ip" "$ADMIN_PORT" 2>/dev/null) || return 1
  [[ $status =~ ^HTTP/1\.[01]\ 200 ]]
}

# The pod IPs behind the headless Service, other than this pod's, whose /readyz answers 200.
ready_members() {
  local ip
  for ip in $(resolve4 "$(svc_dns "$HEADLESS")"); do
    [[ $ip != "${CHART_POD_IP:-}" ]] || continue
    if is_ready "$ip"; then printf '%s\n' "$ip"; fi
  done
}

mkdir -p "$DATA_DIR"
if [[ -e $DATA_DIR/identity.json ]]; then
  log "$DATA_DIR holds this replica's data: restarting as a member"
  run
fi

client="$(svc_dns "$FULLNAME"):$API_PORT"

if ((ordinal == 0)); then
  mapfile -t ready < <(ready_members)
  if ((${#ready[@]} > 0)); then
    if ((replica_id == 1)); then
      die "the volume is empty but members ${ready[*]} are ready, so this replica lost its data. Remove replica 1 from the cluster, then set bootstrap.replicaIdOverrides.\"0\" to an id never used before (docs/deploy-helm.md, 'A replica lost its volume')"
    fi
    log "the volume is empty and members ${ready[*]} are ready: joining as replica $replica_id"
    join "$client"
  fi
  if ((replica_id != 1)); then
    die "replica $replica_id has an empty volume and no member is ready to join through: will retry"
  fi
  allow=$(cat "$ALLOW_INIT_FILE" 2>/dev/null || echo false)
  if [[ $allow != true ]]; then
    die "the volume is empty and bootstrap.allowInit does not allow a new cluster now: after the first install, a bootstrap would create a second, separate cluster. For a new cluster on purpose, set bootstrap.allowInit=always"
  fi
  log "bootstrapping a new cluster as replica 1"
  in_child "$GANTRYD" init --config "$CONFIG_FILE" --ca-cert "$CA_CERT" --ca-key "$CA_KEY" \
    --admin-key-file "$ADMIN_KEY_FILE" --join-token-file "$JOIN_TOKEN_FILE" \
    --join-token-uses "$JOIN_TOKEN_USES" --join-token-ttl-s "$JOIN_TOKEN_TTL_S" ||
    die "gantryd init failed (exit $?)"
  log "bootstrapped; the first Platform Admin key is in $ADMIN_KEY_FILE: read it once, then delete it"
  run
fi

# A replica that joins for the first time. Waiting for the previous ordinal adds members one at a
# time and in order; after joinWaitSeconds any ready member will do (the previous one may be gone).
if [[ $ORDERED_JOIN == true ]]; then
  prev="$FULLNAME-$((ordinal - 1))"
  deadline=$((SECONDS + JOIN_WAIT_SECONDS))
  until is_ready "$(pod_dns "$prev")"; do
    if ((SECONDS >= deadline)); then
      mapfile -t ready < <(ready_members)
      ((${#ready[@]} > 0)) || die "no member is ready after ${JOIN_WAIT_SECONDS}s (waited for $prev): will retry"
      log "$prev is not ready after ${JOIN_WAIT_SECONDS}s, but ${ready[*]} are: joining through them"
      break
    fi
    in_child sleep 2
  done
fi
targets=()
for ((j = 0; j < ordinal; j++)); do targets+=("$(pod_dns "$FULLNAME-$j"):$API_PORT"); done
targets+=("$client")
join "${targets[@]}"
