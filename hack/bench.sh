#!/usr/bin/env bash
# make bench: the Go benchmarks of the hot path, then the harness in
# test/bench/cmd/bench (the auth server binary under load beside a bare
# net/http handler, pinned and unpinned, propagation, memory, start-up, and
# the manager with fleets of keys), which writes docs/benchmarks.md. The
# binary of the base revision BENCH_BASE (default 2a397c1, the last commit
# before the package redesign) is built once per commit into
# bin/bench-base/<commit>/ and measured in the same rounds: the report's
# before and after.
#
#   hack/bench.sh            full run, report to docs/benchmarks.md (~25 min)
#   hack/bench.sh --smoke    tiny sizes, report to a temporary file (1-2 min);
#                            fails only when the harness or a server breaks;
#                            the current binary stands in for the base one
#                            unless --base is given
#   hack/bench.sh --out F    report to F
#   hack/bench.sh --base REV the before side (empty: none)
#   hack/bench.sh --compare N  also hack/bench-compare.sh BASE N (benchstat of the
#                            Go benchmarks at BASE and now; N=6 takes ~15 min)
#                            into the report
#   hack/bench.sh --benchtime 200x   shorter Go benchmarks (with reduced
#                            harness sizes after --, to try the report quickly)
#
# Extra arguments after -- go to the harness (go run ./test/bench/cmd/bench -h).
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
out=""
base="${BENCH_BASE-2a397c1}"
base_given=0
benchtime_flag=""
compare=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --out) out="$2"; shift ;;
    --base) base="$2"; base_given=1; shift ;;
    --benchtime) benchtime_flag="$2"; shift ;;
    --compare) compare="$2"; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--smoke] [--out FILE] [--base REV] [--benchtime T] [-- harness flags]" >&2; exit 2 ;;
  esac
  shift
done

export KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$PWD/bin/k8s/1.37.2}"
for b in etcd kube-apiserver kubectl; do
  if [ ! -x "$KUBEBUILDER_ASSETS/$b" ]; then
    echo "bench: $KUBEBUILDER_ASSETS/$b is missing: run make envtest-assets" >&2
    exit 1
  fi
done

work="$(mktemp -d "${TMPDIR:-/tmp}/meterr-bench.XXXXXX")"
chmod 700 "$work"
harness_pid=""

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$harness_pid" ] && kill -0 "$harness_pid" 2>/dev/null; then
    kill -TERM "$harness_pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$harness_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$harness_pid" 2>/dev/null || true
  fi
  # Anything the harness started and could not stop (it was killed): the
  # pids it recorded, each checked against its name before it is signalled.
  if [ -f "$work/pids" ]; then
    while read -r pid name; do
      [ -r "/proc/$pid/comm" ] || continue
      comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
      case "$comm" in
        etcd|kube-apiserver|meterr-operator|meterr-auth-ser|bare|load|wrk|kubectl|taskset) kill -KILL "$pid" 2>/dev/null || true ;;
      esac
    done < "$work/pids"
  fi
  if [ "${BENCH_KEEP_WORK:-}" = 1 ]; then
    echo "bench: logs kept in $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wrk from Debian's packages; the Go load generator if it cannot be had.
wrk="$(command -v wrk || true)"
if [ -z "$wrk" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "bench: installing wrk"
  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) >"$work/apt.log" 2>&1; then
    wrk="$(command -v wrk || true)"
  else
    echo "bench: could not install wrk (see below); using the Go load generator" >&2
    tail -5 "$work/apt.log" >&2 || true
  fi
fi
[ -n "$wrk" ] || echo "bench: wrk not available; using the Go load generator test/bench/cmd/load" >&2

echo "bench: building"
# One go build for the five, so that their links run side by side. The auth
# servers of the after side run meterr-auth-server (the image's slim binary,
# which the Deployments run); meterr-operator's auth-server is measured
# beside it.
go build -o "$work/" . ./cmd/meterr-auth-server ./test/bench/cmd/bare ./test/bench/cmd/load ./test/bench/cmd/bench
mv "$work/meterr-operator" bin/meterr-operator
mv "$work/meterr-auth-server" bin/meterr-auth-server
# Both binaries run from copies written the same way just now: how a file got
# into the page cache changes how much of it a process maps (a file freshly
# written by the linker showed 7 MiB more file-backed RSS than one read back
# from disk), which is not the code's doing and would skew before/after.
mkdir -p "$work/after"
cp bin/meterr-operator bin/meterr-auth-server "$work/after/"

# The before side: the base revision's binary, from `git archive` (no
# worktree to clean up), cached by commit. Only its own flags are passed to it.
base_args=()
if [ "$smoke" = 1 ] && [ "$base_given" = 0 ] && [ -z "${BENCH_BASE+x}" ]; then
  # The smoke run checks the harness's before/after path without a build.
  base_args=(-base-bin "$work/after/meterr-operator" -base-rev "the same binary (smoke)")
elif [ -n "$base" ]; then
  if commit="$(git rev-parse --verify -q "$base^{commit}")"; then
    base_bin="bin/bench-base/$commit/meterr-operator"
    if [ ! -x "$base_bin" ]; then
      echo "bench: building the base revision $base ($commit) into $base_bin"
      mkdir -p "$work/base-src" "$(dirname "$base_bin")"
      git archive "$commit" | tar -x -C "$work/base-src"
      (cd "$work/base-src" && go build -o "$work/base-meterr-operator" .)
      mv "$work/base-meterr-operator" "$base_bin"
      rm -rf "$work/base-src"
    fi
    # Measured from a copy in the work directory, like the current binary
    # below: see there.
    mkdir -p "$work/before"
    cp "$base_bin" "$work/before/meterr-operator"
    base_args=(-base-bin "$work/before/meterr-operator" -base-rev "$(git log -1 --format='%h %cs' "$commit")")
  else
    echo "bench: BENCH_BASE=$base is not in this clone's history; no before side" >&2
  fi
fi

# The Go benchmarks: the hot path in-process, beside a bare handler; the gRPC
# ext_authz Check over loopback, beside a bare gRPC server (test/bench/gobench).
# Those of ./internal/... ./webhookserver/... ./controllers/... (the lastUsedAt
# writer's writes per second and lag at 10,000 active keys, on a fake clock)
# ./test/bench/... that have
# benchmarks: go test would link a test binary for each of the others too,
# to run nothing.
mapfile -t pkgs < <(grep -rlE --include='*_test.go' '^func Benchmark' internal webhookserver controllers test/bench | xargs -n1 dirname | sort -u | sed 's|^|./|')
if [ -n "$benchtime_flag" ]; then
  benchtime=(-benchtime="$benchtime_flag")
elif [ "$smoke" = 1 ]; then
  benchtime=(-benchtime=200x)
else
  benchtime=()
fi
echo "bench: go test -run='^\$' -bench=. -benchmem ${benchtime[*]} ${pkgs[*]}"
go test -run='^$' -bench=. -benchmem -count=1 "${benchtime[@]}" "${pkgs[@]}" 2>&1 | tee "$work/gobench.txt" | grep -E '^(Benchmark|ok|FAIL|---|    )' || true
gobench_failed=0
if grep -qE '^(FAIL|--- FAIL)' "$work/gobench.txt"; then
  # Reported (and the run fails) after the harness, which still runs.
  echo "bench: some Go benchmarks FAILED; continuing with the harness" >&2
  gobench_failed=1
fi

# benchstat's before/after of the Go benchmarks: long, so only when asked.
compare_args=()
if [ "$compare" -gt 0 ] && [ -n "$base" ] && [ "${#base_args[@]}" -gt 0 ] && [ "$smoke" = 0 ]; then
  echo "bench: hack/bench-compare.sh $base $compare"
  if hack/bench-compare.sh "$base" "$compare" >"$work/compare.txt" 2>&1; then
    compare_args=(-go-compare "$work/compare.txt")
  else
    echo "bench: bench-compare failed; the report goes without it:" >&2
    tail -5 "$work/compare.txt" >&2
  fi
fi

args=(-work "$work" -bin "$work/after/meterr-operator" -auth-bin "$work/after/meterr-auth-server" -bare "$work/bare" -load "$work/load" -wrk "$wrk"
  -assets "$KUBEBUILDER_ASSETS" -crd-dir config/crd/bases -go-bench "$work/gobench.txt" "${base_args[@]}" "${compare_args[@]}")
if [ "$smoke" = 1 ]; then
  out="${out:-$(mktemp "${TMPDIR:-/tmp}/meterr-bench-smoke.XXXXXX.md")}"
  args+=(-smoke -out "$out" -keys-small 10 -keys-large 100 -probe-keys 10 -duration 1s -rounds 1
    -create-workers 16 -prop-samples 10 -apply-samples 5 -controller-keys 20 -controller-timeout 90s)
else
  out="${out:-docs/benchmarks.md}"
  args+=(-out "$out")
fi

# The harness runs in its own session so that the trap can stop it (and it
# its children) even when this script is not in the foreground.
setsid "$work/bench" "${args[@]}" "${extra[@]}" &
harness_pid=$!
wait "$harness_pid"
harness_pid=""
echo "bench: report: $out"
if [ "$gobench_failed" = 1 ]; then
  echo "bench: FAILED: some Go benchmarks failed (see above and the report)" >&2
  exit 1
fi
