#!/usr/bin/env bash
# Fails when `make manifests generate` would change the committed generated files.
set -euo pipefail
cd "$(dirname "$0")/.."
paths=(config/crd/bases config/rbac/manager/role.yaml config/rbac/auth-server/role.yaml api/v1alpha1/zz_generated.deepcopy.go)
before=$(mktemp -d)
trap 'rm -rf "$before"' EXIT
for p in "${paths[@]}"; do mkdir -p "$before/$(dirname "$p")"; cp -r "$p" "$before/$p"; done
make --no-print-directory -s manifests generate >/dev/null
stale=0
for p in "${paths[@]}"; do
  if ! diff -r "$before/$p" "$p" >/dev/null; then
    echo "verify-generated: $p is stale; run 'make manifests generate' and commit the result" >&2
    diff -r "$before/$p" "$p" | head -20 >&2 || true
    stale=1
  fi
done
[ $stale -eq 0 ] && echo "verify-generated: CRD, RBAC and deepcopy are up to date"
exit $stale
