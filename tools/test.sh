#!/usr/bin/env bash
# The README's test command. On a fresh Debian bookworm machine it installs what is missing,
# then builds and runs every test three ways:
#   0. the Helm chart's check tools (deploy/helm/check.sh --install-only), so ctest's helm_check
#      runs them without installing anything itself;
#   1. plain build (gcc, -Werror), every ctest test (helm_check included);
#   2. AddressSanitizer + UndefinedBehaviorSanitizer build, every ctest test;
#   3. libFuzzer build (clang), every tests/fuzz harness for GANTRY_FUZZ_SECONDS (default 6) each,
#      GANTRY_TEST_JOBS of them at once.
# It ends with one line "N passed, N failed" and exits non-zero if anything failed.
#
# ctest runs two tests at a time (GANTRY_TEST_JOBS): the integration tests spend most of their time
# waiting on their clusters (about 60 % of two cores idle when run one by one), and a test that
# must have the machine to itself (fault injection, floods, kills under load, short reconciler
# leases, the browser, the README's command from a clean clone) has ctest's RUN_SERIAL property.
# On 2026-12-07 the plain stage took 1,460 s one by one and 1,206 s two at a time (README, "The two
# commands").
#
# Knobs (environment): JOBS (build parallelism, default nproc), GANTRY_TEST_JOBS (tests run at
# once by ctest, default 2; 1: one by one), GANTRY_FUZZ_SECONDS,
# GANTRY_TEST_ONLY=plain|asan|deploy|fuzz (run one stage), GANTRY_FAILOVER_ITERATIONS (plain build; the
# sanitizer build runs GANTRY_ASAN_FAILOVER_ITERATIONS, default 3, because it is ~3x slower).
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash tools/install-deps.sh || { echo "test: dependency installation failed" >&2; exit 1; }

JOBS=${JOBS:-$(nproc)}
TEST_JOBS=${GANTRY_TEST_JOBS:-2}
FUZZ_SECONDS=${GANTRY_FUZZ_SECONDS:-6}
ONLY=${GANTRY_TEST_ONLY:-}
out=build-test
mkdir -p "$out"
passed=0
failed=0
failures=()

note_result() { # name status
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$1"); fi
}

# Configure, build and run ctest in one build dir; add its counts to the totals.
ctest_stage() { # name builddir [cmake args...]
  local name=$1 dir=$2
  shift 2
  echo "=== $name: configure and build ($dir)"
  if ! cmake -S . -B "$dir" "$@" >"$dir.configure.log" 2>&1; then
    cat "$dir.configure.log"
    note_result "$name: configure" 1
    return
  fi
  if ! cmake --build "$dir" -j "$JOBS" >"$dir.build.log" 2>&1; then
    grep -E 'error|Error' "$dir.build.log" | head -50
    note_result "$name: build" 1
    return
  fi
  echo "=== $name: ctest"
  local log="$dir.ctest.log"
  (cd "$dir" && ctest --output-on-failure --timeout 1200 -j "$TEST_JOBS") 2>&1 | tee "$log"
  local total fails
  total=$(sed -n 's/.*tests passed, \([0-9]*\) tests\{0,1\} failed out of \([0-9]*\).*/\2/p' "$log" | tail -1)
  fails=$(sed -n 's/.*tests passed, \([0-9]*\) tests\{0,1\} failed out of \([0-9]*\).*/\1/p' "$log" | tail -1)
  if [ -z "$total" ]; then
    note_result "$name: ctest produced no summary" 1
    return
  fi
  passed=$((passed + total - fails))
  failed=$((failed + fails))
  if [ "$fails" -ne 0 ]; then
    failures+=("$name: $fails ctest failures (see $log)")
  fi
}

if [ -z "$ONLY" ] || [ "$ONLY" = plain ]; then
  echo "=== deploy tools: deploy/helm/check.sh --install-only"
  if bash deploy/helm/check.sh --install-only >"$out/deploy-tools.log" 2>&1; then
    tail -1 "$out/deploy-tools.log"
    note_result "deploy tools" 0
  else
    tail -40 "$out/deploy-tools.log"
    note_result "deploy tools" 1
  fi
  ctest_stage plain "$out/plain" -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi

if [ -z "$ONLY" ] || [ "$ONLY" = asan ]; then
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  GANTRY_FAILOVER_ITERATIONS=${GANTRY_ASAN_FAILOVER_ITERATIONS:-3} \
    ctest_stage asan "$out/asan" -DCMAKE_BUILD_TYPE=Debug -DGANTRY_SANITIZE=ON
fi

# Deployment checks (the Helm chart) on their own: each executable deploy/*/check.sh is one result.
# In a full run ctest's helm_check (plain stage) has run them already.
if [ "$ONLY" = deploy ]; then
  for check in deploy/*/check.sh; do
    [ -x "$check" ] || continue
    echo "=== deploy: $check"
    if "$check" >"$out/deploy-$(basename "$(dirname "$check")").log" 2>&1; then
      tail -3 "$out/deploy-$(basename "$(dirname "$check")").log"
      note_result "deploy $check" 0
    else
      tail -40 "$out/deploy-$(basename "$(dirname "$check")").log"
      note_result "deploy $check" 1
    fi
  done
fi

if [ -z "$ONLY" ] || [ "$ONLY" = fuzz ]; then
  dir="$out/fuzz"
  echo "=== fuzz: configure and build ($dir)"
  if CC=clang cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGANTRY_FUZZ=ON -DGANTRY_TESTS=OFF \
      >"$dir.configure.log" 2>&1 && cmake --build "$dir" -j "$JOBS" >"$dir.build.log" 2>&1; then
    # Each harness is one process on one core: GANTRY_TEST_JOBS of them run at once. A harness
    # writes its log and, last, its exit status to $dir/NAME.status; the results are read in name
    # order once all have ended.
    fuzz_one() { # bin name
      local bin=$1 name=$2 work seeds rc
      seeds="tests/fuzz/corpus/$name"
      work=$(mktemp -d)
      local corpora=("$work") # new inputs go to the scratch dir; the committed seeds are only read
      [ -d "$seeds" ] && corpora+=("$seeds")
      "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/" "${corpora[@]}" >"$dir/$name.log" 2>&1
      rc=$?
      if [ "$rc" -ne 0 ]; then
        ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* 2>/dev/null | while read -r f; do
          echo "fuzz: reproducer $f" >>"$dir/$name.log"; cp "$f" "$dir/"; done
      fi
      rm -rf "$work"
      echo "$rc" >"$dir/$name.status"
    }
    found=0
    names=()
    for bin in $(find "$dir/tests/fuzz" -maxdepth 1 -type f -name 'fuzz_*' -perm -u+x | sort); do
      found=1
      name=$(basename "$bin")
      name=${name#fuzz_}
      names+=("$name")
      rm -f "$dir/$name.status"
      while [ "$(jobs -rp | wc -l)" -ge "$TEST_JOBS" ]; do wait -n; done
      echo "=== fuzz: $name for ${FUZZ_SECONDS}s"
      fuzz_one "$bin" "$name" &
    done
    wait
    for name in "${names[@]}"; do
      if [ "$(cat "$dir/$name.status" 2>/dev/null)" = 0 ]; then
        echo "fuzz $name: $(grep -E 'stat::number_of_executed_units|Done [0-9]+ runs' "$dir/$name.log" | tail -1)"
        note_result "fuzz $name" 0
      else
        tail -40 "$dir/$name.log"
        note_result "fuzz $name (reproducers copied to $dir)" 1
      fi
    done
    [ "$found" -eq 1 ] || note_result "fuzz: no harness was built" 1
  else
    grep -E 'error|Error' "$dir.configure.log" "$dir.build.log" | head -50
    note_result "fuzz: build" 1
  fi
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
  echo "Failures:"
  printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
