#!/usr/bin/env bash
# Runs every fuzz target in the module for FUZZTIME (default 5s) each. The
# committed seed corpora also run as ordinary tests in `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-5s}"
n=0
log="$(mktemp "${TMPDIR:-/tmp}/meterr-fuzz.XXXXXX")"
trap 'rm -f "$log"' EXIT

# deadline_only: the run failed with nothing but "context deadline exceeded"
# and wrote no failing input. That is Go 1.26's fuzz coordinator racing its
# own -fuzztime deadline on a busy machine (golang/go#75804, fixed in Go
# 1.27), not a finding.
deadline_only() {
  grep -q 'context deadline exceeded' "$log" &&
    ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$log"
}

fuzz_once() { go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" "$pkg" >"$log" 2>&1; }

while IFS=: read -r file name; do
  pkg="./$(dirname "$file")"
  echo "fuzz: $pkg $name for $FUZZTIME"
  if ! fuzz_once; then
    if ! deadline_only; then cat "$log"; exit 1; fi
    echo "fuzz: $name hit the -fuzztime deadline race of Go 1.26 (golang/go#75804, no failing input); running it again"
    if ! fuzz_once; then
      if ! deadline_only; then cat "$log"; exit 1; fi
      echo "fuzz: WARNING: $name hit the deadline race twice; no failing input was found"
    fi
  fi
  tail -n 1 "$log"
  n=$((n + 1))
done < <(grep -rEo '^func (Fuzz[A-Za-z0-9_]+)' --include='*_test.go' cmd internal pkg webhookserver controllers api 2>/dev/null | sed 's/func //' | sort)
echo "fuzz: $n targets passed"
[ "$n" -gt 0 ]
