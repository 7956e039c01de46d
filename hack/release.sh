#!/usr/bin/env bash
# The release bundle: hack/release.sh VERSION [OUT_DIR] (make release VERSION=v0.x.y)
#   OUT_DIR/install.yaml                   config/default (CRD, namespace, RBAC, Deployments,
#                                          Services, PDB) with the image pinned to VERSION
#   OUT_DIR/meterr-operator-X.Y.Z.tgz      the Helm chart, version X.Y.Z (VERSION without
#                                          its "v"), appVersion VERSION (the image tag)
#   OUT_DIR/meterr-operator-image.tar      the image IMAGE_REPOSITORY:VERSION (make image):
#                                          an OCI layout and docker-archive in one tarball
# IMAGE_REPOSITORY (default: meterr-operator) names the image, e.g.
# registry.example.com/meterr/meterr-operator. Needs kubectl ($KUBECTL), helm ($HELM),
# make, and the CA bundle `make image` copies (CA_BUNDLE); PLATFORMS as for make image.
set -euo pipefail

version="${1:?usage: hack/release.sh VERSION [OUT_DIR]}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${2:-$root/dist}"
repo="${IMAGE_REPOSITORY:-meterr-operator}"
kubectl="${KUBECTL:-${KUBEBUILDER_ASSETS:-$root/bin/k8s/1.37.2}/kubectl}"
helm="${HELM:-$root/bin/helm}"
chart_version="${version#v}"
if ! [[ "$chart_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+([-+].*)?$ ]]; then
  echo "release: VERSION must be a semantic version such as v0.3.0, got $version" >&2
  exit 1
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# install.yaml: config/default with kustomize's image override.
mkdir -p "$tmp/kustomize"
cp -r "$root/config" "$tmp/kustomize/config"
cat >"$tmp/kustomize/kustomization.yaml" <<EOK
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - config/default
images:
  - name: meterr-operator
    newName: $repo
    newTag: $version
EOK
{
  echo "# meterr-operator $version: kubectl apply --server-side -f install.yaml"
  "$kubectl" kustomize "$tmp/kustomize"
} >"$out/install.yaml"
if ! grep -q "image: $repo:$version\$" "$out/install.yaml"; then
  echo "release: install.yaml does not pin the image $repo:$version" >&2
  exit 1
fi
echo "release: wrote $out/install.yaml"

# The chart, with the image repository set when it is not the default.
cp -r "$root/charts/meterr-operator" "$tmp/chart"
if [ "$repo" != meterr-operator ]; then
  sed -i "s|^  repository: meterr-operator\$|  repository: $repo|" "$tmp/chart/values.yaml"
fi
"$helm" lint --strict "$tmp/chart" >/dev/null
"$helm" package "$tmp/chart" --version "$chart_version" --app-version "$version" --destination "$out"

# The image: `make image` with VERSION stamped into the binary and the tag,
# built into a scratch LOCALBIN so bin/meterr-operator stays as it was.
"${MAKE:-make}" -C "$root" --no-print-directory image \
  VERSION="$version" IMG="$repo:$version" LOCALBIN="$tmp/bin" \
  MKIMAGE="${MKIMAGE:-$root/bin/mkimage}" IMAGE_ARCHIVE="$out/meterr-operator-image.tar"
echo "release: wrote $out/meterr-operator-image.tar ($repo:$version)"
