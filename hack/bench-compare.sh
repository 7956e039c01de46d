#!/usr/bin/env bash
# make bench-compare BASE=<git revision>: the hot path's Go benchmarks at BASE
# and at the working tree, interleaved (BASE, HEAD, BASE, ...) so the
# machine's noise falls on both, compared with benchstat. The way to show that
# a change meant to speed something up does.
#
#   hack/bench-compare.sh BASE [COUNT] [BENCH REGEXP]
#
# BENCH_COPY="path ..." copies benchmark files of the working tree into BASE's
# tree first (those absent there), for a benchmark added with the change.
set -euo pipefail
cd "$(dirname "$0")/.."

base="${1:?usage: $0 BASE [COUNT] [BENCH REGEXP]}"
count="${2:-6}"
bench="${3:-.}"
pkgs=(./webhookserver/ ./webhookserver/index/ ./test/bench/gobench/)
# Where a package lived before it moved: BASE may predate the move.
declare -A oldpath=([./test/bench/gobench/]=./hack/bench/gobench/)

benchstat="$PWD/bin/benchstat"
if [ ! -x "$benchstat" ] || [ hack/tools/go.mod -nt "$benchstat" ]; then
  (cd hack/tools && go build -o "$benchstat" golang.org/x/perf/cmd/benchstat)
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/meterr-bench-compare.XXXXXX")"
trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/base" "$base" >/dev/null
echo "bench-compare: $(git -C "$work/base" log --oneline -1) vs the working tree, ${count} runs each"
for f in ${BENCH_COPY:-}; do
  if [ ! -e "$work/base/$f" ]; then
    cp "$f" "$work/base/$f"
    echo "bench-compare: $f copied into BASE"
  fi
done

# pkgdir SIDE I: the directory of package I on SIDE, or nothing.
pkgdir() {
  local dir="$PWD" p="${pkgs[$2]}"
  [ "$1" = base ] && dir="$work/base"
  if [ -d "$dir/$p" ]; then echo "$dir/$p"
  elif [ "$1" = base ] && [ -n "${oldpath[$p]:-}" ] && [ -d "$dir/${oldpath[$p]}" ]; then echo "$dir/${oldpath[$p]}"
  fi
}

# Test binaries built once; then each run is one pass of every package,
# alternating sides. A package missing at BASE is left out on that side.
for side in base head; do
  for i in "${!pkgs[@]}"; do
    d="$(pkgdir "$side" "$i")"
    if [ -n "$d" ]; then
      (cd "$d" && go test -c -o "$work/$side-$i.test" .)
    fi
  done
done
for n in $(seq 1 "$count"); do
  for side in base head; do
    for i in "${!pkgs[@]}"; do
      [ -x "$work/$side-$i.test" ] || continue
      (cd "$(pkgdir "$side" "$i")" && "$work/$side-$i.test" -test.run='^$' -test.bench="$bench" -test.benchmem -test.count=1) |
        # benchstat pairs results by package: a moved package keeps its new name on both sides.
        sed "s#^pkg: \(.*\)/hack/bench/gobench\$#pkg: \1/test/bench/gobench#" >>"$work/$side.txt"
    done
  done
  echo "bench-compare: run $n of $count done"
done
"$benchstat" base="$work/base.txt" head="$work/head.txt"
