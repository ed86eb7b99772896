#!/usr/bin/env bash
# Shows that each tests/jepsen checker catches the bug planted for it (docs/reliability.md).
# For every planted bug: build gantryd with -DGANTRY_PLANT_BUG=<name> in its own build dir, run the
# harness with the faults that expose it, and require that the expected checker reports FAIL.
# Exit 0 only if every planted bug was caught. Needs root (like the harness itself).
#
#   tests/jepsen/planted.sh [name...]      default: every planted bug
# Environment: PLANT_BUILD_PREFIX (default /tmp/b-jepsen), PLANT_RESULTS (default
# /tmp/jepsen-planted), PLANT_SECONDS (overrides every bug's run length), JOBS (default 2).
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
prefix=${PLANT_BUILD_PREFIX:-/tmp/b-jepsen}
results=${PLANT_RESULTS:-/tmp/jepsen-planted}
jobs=${JOBS:-2}
mkdir -p "$results"

# name -> expected failing checker, nemeses that expose it
declare -A checker=([stale-epoch]=lease [skip-idempotency]=set [ack-before-commit]=register
                    [quota-off-by-one]=quota)
declare -A nemeses=([stale-epoch]=pause,kill [skip-idempotency]=partition-leader,partition-halves,kill
                    [ack-before-commit]=partition-leader [quota-off-by-one]=kill)
declare -A length=([stale-epoch]=40 [skip-idempotency]=60 [ack-before-commit]=90 [quota-off-by-one]=40)
# A lost acknowledged write needs the dqlite leader cut off while writes sent to its own replica
# are in flight (it steps down within ~150 ms): many short cuts and more writers.
declare -A extra=([stale-epoch]="--quiet 1.5" [skip-idempotency]="--quiet 1.5"
                  [ack-before-commit]="--hold-min 0.5 --hold-max 1.5 --quiet 1.0 --register-clients 8"
                  [quota-off-by-one]="--quiet 1.5")
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(stale-epoch skip-idempotency ack-before-commit quota-off-by-one)

caught=0
missed=()
for name in "${names[@]}"; do
  want=${checker[$name]:-}
  if [ -z "$want" ]; then
    echo "planted: unknown planted bug $name" >&2
    exit 2
  fi
  dir="$prefix-$name"
  echo "=== $name: build $dir"
  if ! { cmake -S "$top" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGANTRY_TESTS=OFF \
           -DGANTRY_PLANT_BUG="$name" && cmake --build "$dir" --target gantryd -j "$jobs"; } \
         >"$results/$name.build.log" 2>&1; then
    tail -20 "$results/$name.build.log"
    missed+=("$name (build failed)")
    continue
  fi
  seconds=${PLANT_SECONDS:-${length[$name]}}
  echo "=== $name: ${seconds}s of ${nemeses[$name]}; expecting the $want checker to fail"
  /usr/bin/python3 "$top/tests/jepsen/jepsen.py" --gantryd "$dir/server/gantryd" \
    --proto-dir "$top/api/proto" --time "$seconds" --nemesis "${nemeses[$name]}" --seed 1 ${extra[$name]} \
    --results "$results/$name" >"$results/$name.log" 2>&1
  rc=$?
  grep -E '^(register|set|quota|lease|watch|replicas|harness) ' "$results/$name.log"
  if [ "$rc" -eq 1 ] && /usr/bin/python3 -c '
import json, sys
v = {x["name"]: x["valid"] for x in json.load(open(sys.argv[1]))["verdicts"]}
sys.exit(0 if v.get(sys.argv[2]) is False else 1)' "$results/$name/verdicts.json" "$want"; then
    echo "=== $name: CAUGHT by the $want checker"
    caught=$((caught + 1))
  else
    echo "=== $name: NOT caught (harness exit $rc; see $results/$name.log)"
    missed+=("$name")
  fi
done
echo "planted bugs caught: $caught of ${#names[@]}"
[ ${#missed[@]} -eq 0 ] || { printf 'missed: %s\n' "${missed[@]}"; exit 1; }
