#!/usr/bin/env bash
# Runs every fuzz target in the module for FUZZTIME (default 5s) each. The
# committed seed corpora also run as ordinary tests in `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-5s}"
n=0
while IFS=: read -r file name; do
  pkg="./$(dirname "$file")"
  echo "fuzz: $pkg $name for $FUZZTIME"
  go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" "$pkg" >/tmp/fuzz-$$.log 2>&1 || { cat /tmp/fuzz-$$.log; rm -f /tmp/fuzz-$$.log; exit 1; }
  tail -n 1 /tmp/fuzz-$$.log
  n=$((n + 1))
done < <(grep -rEo '^func (Fuzz[A-Za-z0-9_]+)' --include='*_test.go' internal pkg webhookserver controllers api 2>/dev/null | sed 's/func //' | sort)
rm -f /tmp/fuzz-$$.log
echo "fuzz: $n targets passed"
[ "$n" -gt 0 ]
