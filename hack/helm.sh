#!/usr/bin/env bash
# Builds helm from Go modules (hack/helm/go.mod pins the version) into bin/helm.
# Nothing is downloaded but Go modules; a helm already built is kept.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${HELM:-$root/bin/helm}"
if [ -x "$out" ]; then
  echo "helm: already built ($out)"
  exit 0
fi
mkdir -p "$(dirname "$out")"
cd "$root/hack/helm"
version="$(go list -m -f '{{.Version}}' helm.sh/helm/v3)"
# As helm's own Makefile: the Kubernetes version `helm template` and `helm
# lint` assume is that of the client-go it is built with (v0.X.Y -> 1.X).
kminor="$(go list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2)"
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kminor"
done
echo "helm: building helm $version from Go modules into $out (a few minutes on 2 cores)..."
start=$SECONDS
( while sleep 30; do echo "helm: still building ($((SECONDS - start))s)..."; done ) &
ticker=$!
trap 'kill "$ticker" 2>/dev/null; true' EXIT
CGO_ENABLED=0 go build -trimpath \
  -ldflags "$ldflags" \
  -o "$out.tmp" helm.sh/helm/v3/cmd/helm
mv "$out.tmp" "$out"
echo "helm: built $out in $((SECONDS - start))s"
