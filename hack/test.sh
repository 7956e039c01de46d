#!/usr/bin/env bash
# Every test, in phases, with one summary at the end. Called by `make test`
# after the generated files are verified and the control plane is built.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${KUBEBUILDER_ASSETS:?KUBEBUILDER_ASSETS must point at etcd, kube-apiserver and kubectl (make envtest-assets)}"
export KUBEBUILDER_ASSETS
GO_TEST_FLAGS="${GO_TEST_FLAGS:--count=1}"

# redis-server and redis-cli (redis-tools) from Debian's packages: the shared
# rate-limit tests run against the real thing (one server, a three-master
# Cluster made with redis-cli --cluster create, a Sentinel pair run by
# redis-server --sentinel), and fail (rather than skip) here when it cannot
# be had.
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing redis-server and redis-tools"
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null 2>&1 ||
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools)) >/tmp/meterr-apt-redis.log 2>&1 ||
      { echo "test: could not install redis-server:" >&2; tail -5 /tmp/meterr-apt-redis.log >&2; }
    # The package starts a system-wide server; the tests run their own.
    (service redis-server stop || systemctl stop redis-server) >/dev/null 2>&1 || true
  else
    echo "test: redis-server or redis-cli is missing and cannot be installed here (needs root and apt-get)" >&2
  fi
fi
export MTR_REQUIRE_REDIS=1
# test/install lints, renders and installs the Helm chart: bin/helm (make helm).
export MTR_REQUIRE_HELM=1
HELM="${HELM:-$PWD/bin/helm}"
export HELM
# test/install checks the chart's PrometheusRule with promtool: bin/promtool
# (make promtool).
export MTR_REQUIRE_PROMTOOL=1
PROMTOOL="${PROMTOOL:-$PWD/bin/promtool}"
export PROMTOOL

# node (>= 18) and python3 with requests run the client recipes of
# docs/clients.md (docs/clients and the end-to-end suite), and fail rather
# than skip here. Missing pieces come from Debian's packages (nodejs,
# python3-requests); when the python3 on PATH lacks requests but Debian's
# has it, the tests use Debian's (MTR_PYTHON).
apt_install() { # package...
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || { echo "test: cannot install $* here (needs root and apt-get)" >&2; return 1; }
  echo "test: installing $*"
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" ||
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@")) >/tmp/meterr-apt-clients.log 2>&1 ||
    { echo "test: could not install $*:" >&2; tail -5 /tmp/meterr-apt-clients.log >&2; return 1; }
}
command -v node >/dev/null || apt_install nodejs || true
MTR_PYTHON="${MTR_PYTHON:-python3}"
if ! "$MTR_PYTHON" -c 'import requests' >/dev/null 2>&1; then
  /usr/bin/python3 -c 'import requests' >/dev/null 2>&1 || apt_install python3-requests || true
  if /usr/bin/python3 -c 'import requests' >/dev/null 2>&1; then MTR_PYTHON=/usr/bin/python3; fi
fi
export MTR_PYTHON MTR_REQUIRE_CLIENTS=1

# nginx and caddy from Debian's packages: test/proxies runs the shipped
# docs/integrations configurations with them, and fails (rather than skips)
# here when they cannot be had.
if ! command -v nginx >/dev/null || ! command -v caddy >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing nginx and caddy"
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx caddy >/dev/null 2>&1 ||
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx caddy)) >/tmp/meterr-apt-proxies.log 2>&1 ||
      { echo "test: could not install nginx and caddy:" >&2; tail -5 /tmp/meterr-apt-proxies.log >&2; }
    # The packages may start system-wide servers; the tests run their own.
    for svc in nginx caddy; do (service "$svc" stop || systemctl stop "$svc") >/dev/null 2>&1 || true; done
  else
    echo "test: nginx or caddy is missing and cannot be installed here (needs root and apt-get)" >&2
  fi
fi
export MTR_REQUIRE_PROXIES=1

# skopeo from Debian's packages: hack/image's tests read the image tarball
# with it (oci-archive: and docker-archive:), and fail (rather than skip)
# here when it cannot be had.
command -v skopeo >/dev/null || apt_install skopeo || true
export MTR_REQUIRE_SKOPEO=1

declare -a names results
# cpu_now: sets cpu to the CPU seconds (user + system) of this shell's
# finished children so far, from bash's `times` (run in this shell: in a
# command substitution it would count the subshell's children).
times_file="$(mktemp "${TMPDIR:-/tmp}/meterr-test-times.XXXXXX")"
trap 'rm -f "$times_file"' EXIT
cpu_now() {
  times >"$times_file"
  cpu=$(awk 'NR == 2 {
    t = 0
    for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] }
    printf "%d", t
  }' "$times_file")
}
run() { # name command...
  local name=$1; shift
  echo
  echo "==== $name: $*"
  local start=$SECONDS cpu cpu0
  detail=""
  cpu_now; cpu0=$cpu
  if "$@"; then results+=("PASS"); else results+=("FAIL"); fi
  cpu_now
  names+=("$name ($((SECONDS - start))s, CPU $((cpu - cpu0))s)$detail")
}
# together name command... [-- name command...]...: runs the commands at
# once, each line of their output prefixed with its name; fails when any
# fails. Sets detail to each one's result and duration, for the summary.
together() {
  local dir pids=() tags=() cmd=() rc=0 i
  dir="$(mktemp -d "${TMPDIR:-/tmp}/meterr-together.XXXXXX")"
  while [ $# -gt 0 ]; do
    cmd=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do cmd+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    tags+=("${cmd[0]}")
    (
      start=$SECONDS
      "${cmd[@]:1}" 2>&1 | sed -u "s|^|${cmd[0]}: |"
      status=$?
      echo "$((SECONDS - start))" >"$dir/${#tags[@]}"
      exit "$status"
    ) &
    pids+=($!)
  done
  detail=""
  for i in "${!pids[@]}"; do
    local res=PASS
    wait "${pids[$i]}" || { rc=1; res=FAIL; }
    detail+="
         $res ${tags[$i]} ($(cat "$dir/$((i + 1))" 2>/dev/null || echo '?')s)"
  done
  rm -rf "$dir"
  return "$rc"
}

lint="${GOLANGCI_LINT:-bin/golangci-lint}"
# An absolute path, for the image phase's run inside hack/image.
if [[ "$lint" == */* && "$lint" != /* ]]; then lint="$PWD/$lint"; fi
run "lint (golangci-lint)" "$lint" run ./...
chart=charts/meterr-operator
run "helm chart: lint, template (default and ci/all-on-values.yaml)" bash -c "
  '$HELM' lint --strict $chart && '$HELM' lint --strict $chart -f $chart/ci/all-on-values.yaml &&
  '$HELM' template meterr $chart >/dev/null && '$HELM' template meterr $chart -f $chart/ci/all-on-values.yaml >/dev/null"
# The image builder, a module of its own (hack/image): vet, lint, and its
# tests, which run `make image` twice (same bytes, make build's binary, the
# Dockerfile in agreement), and read the tarball with containerd's importer,
# go-containerregistry and skopeo.
run "image (hack/image: vet, lint, make image twice, importers)" bash -c "
  cd hack/image && go vet ./... && '$lint' run ./... && go test $GO_TEST_FLAGS -timeout 15m ./..."
# Unit tests and the envtest suites (schema, controller, install: chart drift,
# helm install/uninstall, release bundle, kustomize components), the race
# detector where the concurrency is real: the auth server (sharded limiter,
# index churn, Redis background work), the controller (parallel reconciles on
# a shared cache) and the client packages (a key swapped under live
# requests), and the end-to-end suite (the real binary, kubectl, HTTP). Each
# package runs once: those three trees with -race only, the rest without.
# The three go test runs go at once: much of each is waiting on a control
# plane, Redis or a child process, and one after another left a core idle.
# The fuzz phase's instrumented binaries are built alongside. The end-to-end
# suite is one chain of steps, the longest, so the others (many packages side
# by side) yield the CPU to it (nice); and go test starts packages in the
# order given: the longest (test/install, controllers) first.
module="$(go list -m)"
race_pkgs=(./controllers/... ./webhookserver/... ./pkg/...)
mapfile -t plain_pkgs < <(go list ./... | grep -v -e /test/e2e -e /test/cluster | grep -vE "^$module/(webhookserver|controllers|pkg)(/|\$)" |
  awk -v first="$module/test/install" '$0 == first { print; next } { rest[++n] = $0 } END { for (i = 1; i <= n; i++) print rest[i] }')
fuzz_bins="$(mktemp -d "${TMPDIR:-/tmp}/meterr-fuzz-bin.XXXXXX")"
trap 'rm -f "$times_file"; rm -rf "$fuzz_bins"' EXIT
run "unit and envtest suites, race detector (webhookserver, controllers, pkg), end-to-end" together \
  e2e go test $GO_TEST_FLAGS -timeout 20m ./test/e2e/ -- \
  unit nice -n 5 go test $GO_TEST_FLAGS -timeout 20m "${plain_pkgs[@]}" -- \
  race nice -n 5 go test $GO_TEST_FLAGS -race -timeout 20m "${race_pkgs[@]}" -- \
  fuzz-build nice -n 5 hack/fuzz.sh --build-only "$fuzz_bins"
run "fuzz (${FUZZTIME:-5s} per target)" hack/fuzz.sh --binaries "$fuzz_bins"
run "benchmark harness smoke run" hack/bench.sh --smoke
# A real node (hack/cluster, root): its binaries built once into bin/, the
# operator's image (make image), then the cluster up, test/cluster's specs
# on real pods (helm and install.yaml, rotations through the kubelet,
# rolling upgrade and faults under load, Caddy in front) and down; then
# the teardown test: two more up/down rounds (one after a crash) leave the
# host exactly as it was. After the rest: its load is measured.
run "local cluster: build, make image, up, test/cluster, down" hack/cluster/test.sh
run "local cluster: teardown leaves nothing behind" hack/cluster/teardown-test.sh

echo
echo "==== summary"
passed=0 failed=0
for i in "${!names[@]}"; do
  printf '  %-4s %s\n' "${results[$i]}" "${names[$i]}"
  if [ "${results[$i]}" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "phases: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
