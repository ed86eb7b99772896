#!/usr/bin/env bash
# Installs the Debian bookworm packages Gantry builds, tests and runs with (DESIGN.md section 2).
# Idempotent: packages already present are skipped without touching apt's lists, so a warm
# machine pays nothing. Run as root, or with sudo available.
set -euo pipefail

pkgs=(
  # toolchain
  build-essential cmake pkg-config clang libclang-rt-14-dev clang-format
  # libraries
  libuv1-dev libdqlite-dev libraft-dev libsqlite3-dev
  libprotobuf-c-dev protobuf-c-compiler protobuf-compiler
  libssl-dev libjansson-dev libnghttp2-dev libcurl4-openssl-dev
  libcmocka-dev node-llhttp
  # test and run tools
  python3 python3-grpcio python3-protobuf python3-yaml nghttp2-client openssl
  bubblewrap procps iproute2 iptables faketime
  # deploy/monitoring checks (ctest -R monitoring): promtool from Debian's prometheus package (on a
  # machine with systemd the package also enables a Prometheus server on :9090), the JSON schema
  # check of the Grafana dashboard
  prometheus python3-jsonschema
  # the operator console's browser test (ctest -R console_browser): Debian's Chromium, driven by
  # playwright-core from the npm registry (pinned in tests/console/package-lock.json; the test installs
  # it with the machine's npm into a cache outside the tree). playwright-core needs Node.js 20, which
  # this machine kind has with its npm; Debian's nodejs is 18, so it is not installed from here.
  chromium
  # the baseline of `gantry-bench api --baseline etcd` (etcd 3.4, /usr/bin/etcd). On a machine
  # with systemd the package also enables a system etcd on 2379/2380; the bench's own members
  # take free ports in 20000-32000 and do not touch it.
  etcd-server
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
