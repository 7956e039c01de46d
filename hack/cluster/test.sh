#!/usr/bin/env bash
# `make test-cluster`: builds what is missing, brings the local cluster up,
# runs the specs of test/cluster against it and tears it down (also on
# failure or Ctrl-C), printing each phase's duration. A cluster that is
# already up is used as it is and left up.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
cd "$root"

declare -a names results
run() { # name command...
  local name=$1; shift
  echo
  echo "==== $name"
  local start=$SECONDS rc=0
  "$@" || rc=$?
  names+=("$name ($((SECONDS - start))s)")
  if [ "$rc" = 0 ]; then results+=(PASS); else results+=(FAIL); fi
  return "$rc"
}
summary() {
  echo
  echo "==== summary"
  local i passed=0 failed=0
  for i in "${!names[@]}"; do
    printf '  %-4s %s\n' "${results[$i]}" "${names[$i]}"
    if [ "${results[$i]}" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  done
  echo "phases: $passed passed, $failed failed"
  [ "$failed" = 0 ]
}

owned=1
if [ -e "$CLUSTER_STATE/nodens.pid" ] && kill -0 "$(cat "$CLUSTER_STATE/nodens.pid")" 2>/dev/null; then
  echo "test-cluster: a cluster is already up; using it and leaving it up"
  owned=0
fi
teardown() {
  trap - EXIT INT TERM
  if [ "$owned" = 1 ]; then run "cluster down" "$root/hack/cluster/down.sh"; fi
  summary
}
trap 'teardown; exit $?' EXIT
trap 'exit 130' INT TERM

run "build (cached under bin/)" "$root/hack/cluster/build.sh" || exit 1
# The operator's image, imported by up.sh from dist/.
run "make image" make -C "$root" --no-print-directory image || exit 1
if [ "$owned" = 1 ]; then run "cluster up" "$root/hack/cluster/up.sh" || exit 1; fi
run "test/cluster specs" env METERR_CLUSTER_KUBECONFIG="$CLUSTER_KUBECONFIG" \
  go test -v -count=1 -timeout 25m ./test/cluster/... -ginkgo.v
