#!/usr/bin/env bash
# Builds the local control plane binaries (etcd, kube-apiserver, kubectl) from Go
# modules into bin/k8s/<version>/, the layout envtest's KUBEBUILDER_ASSETS expects.
# Nothing is downloaded but Go modules; a binary already built is kept.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${ENVTEST_ASSETS_DIR:-$root/bin/k8s/$K8S_VERSION}"
mkdir -p "$out"
cd "$root/hack/envtest"

major="${K8S_VERSION%%.*}"
minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"

ticker=""
trap '[ -n "$ticker" ] && kill "$ticker" 2>/dev/null; true' EXIT

build() { # name package
  local name=$1 pkg=$2
  if [ -x "$out/$name" ]; then
    echo "envtest-assets: $name already built ($out/$name)"
    return
  fi
  local hint=""
  [ "$name" = kube-apiserver ] && hint=" (the first build takes 5-10 minutes on 2 cores)"
  echo "envtest-assets: building $name from $pkg$hint..."
  local start=$SECONDS
  # go build is silent for minutes: say that it is still working.
  ( while sleep 30; do echo "envtest-assets: still building $name ($((SECONDS - start))s)..."; done ) &
  ticker=$!
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/$name.tmp" "$pkg"
  kill "$ticker" 2>/dev/null || true
  ticker=""
  mv "$out/$name.tmp" "$out/$name"
  echo "envtest-assets: built $name in $((SECONDS - start))s"
}

build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kubectl k8s.io/kubernetes/cmd/kubectl
echo "envtest-assets: ready in $out"
