#!/usr/bin/env bash
# Builds everything the local cluster runs, from Go modules, once: the node's
# Kubernetes components (next to envtest's etcd, kube-apiserver and kubectl
# in bin/k8s/<version>), containerd, runc, the CNI plugins, CoreDNS, the
# cluster's own tools, and the images (pause, CoreDNS, smoke). A binary or
# image already built is kept: each lives in a directory named after its
# pinned version, so a version bump builds anew. Nothing but Go modules and
# Debian packages is downloaded.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

NICE="${NICE:-nice -n 10}"
ticker=""
trap '[ -n "$ticker" ] && kill "$ticker" 2>/dev/null; true' EXIT

# gobuild dir out package [go build args...]: builds package from module dir.
gobuild() {
  local dir=$1 out=$2 pkg=$3; shift 3
  if [ -x "$out" ]; then return; fi
  mkdir -p "$(dirname "$out")"
  log "building $(basename "$out") from $pkg..."
  local start=$SECONDS
  # go build is silent for minutes: say that it is still working.
  ( while sleep 60; do log "still building $(basename "$out") ($((SECONDS - start))s)..."; done ) &
  ticker=$!
  (cd "$dir" && $NICE go build -trimpath "$@" -o "$out.tmp" "$pkg")
  kill "$ticker" 2>/dev/null || true
  ticker=""
  mv "$out.tmp" "$out"
  log "built $(basename "$out") in $((SECONDS - start))s"
}

total=$SECONDS

# The Kubernetes node components, exactly as envtest-assets builds the
# control plane (same module, same version stamp).
major="${K8S_VERSION%%.*}"
minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
vpkg=k8s.io/component-base/version
k8s_ldflags="-s -w -X $vpkg.gitVersion=v$K8S_VERSION -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
for c in kubelet kube-proxy kube-scheduler kube-controller-manager; do
  CGO_ENABLED=0 gobuild "$root/hack/envtest" "$KUBEBUILDER_ASSETS/$c" "k8s.io/kubernetes/cmd/$c" -ldflags "$k8s_ldflags"
done

# containerd, ctr and the runc shim: static, without the btrfs and
# devmapper snapshotters (their C headers are not needed then).
v=$(mod_version containerd github.com/containerd/containerd/v2)
d="$CLUSTER_BIN/containerd-$v"
cpkg=github.com/containerd/containerd/v2
for c in containerd ctr containerd-shim-runc-v2; do
  CGO_ENABLED=0 gobuild "$root/hack/cluster/deps/containerd" "$d/$c" "$cpkg/cmd/$c" \
    -tags "no_btrfs no_devmapper" -ldflags "-s -w -X $cpkg/version.Version=$v -X $cpkg/version.Package=$cpkg"
done

# runc needs cgo and libseccomp for its seccomp support. Upstream's default
# tags add libpathrs (a Rust library Debian 12 lacks); runc works without it.
v=$(mod_version runc github.com/opencontainers/runc)
if [ ! -x "$CLUSTER_BIN/runc-$v/runc" ] && [ ! -e /usr/include/seccomp.h ]; then apt_install libseccomp-dev; fi
CGO_ENABLED=1 gobuild "$root/hack/cluster/deps/runc" "$CLUSTER_BIN/runc-$v/runc" github.com/opencontainers/runc \
  -tags "seccomp urfave_cli_no_docs" -ldflags "-s -w"

v=$(mod_version cni github.com/containernetworking/plugins)
ppkg=github.com/containernetworking/plugins
for p in main/bridge ipam/host-local main/loopback meta/portmap; do
  CGO_ENABLED=0 gobuild "$root/hack/cluster/deps/cni" "$CLUSTER_BIN/cni-$v/$(basename $p)" "$ppkg/plugins/$p" \
    -ldflags "-s -w -X $ppkg/pkg/utils/buildversion.BuildVersion=$v"
done

v=$(mod_version coredns github.com/coredns/coredns)
CGO_ENABLED=0 gobuild "$root/hack/cluster/deps/coredns" "$CLUSTER_BIN/coredns-$v/coredns" github.com/coredns/coredns -ldflags "-s -w"
coredns_bin="$CLUSTER_BIN/coredns-$v/coredns"

# The cluster's own tools: small, rebuilt each time (Go's cache makes that
# a second or two) so that an edit is never stale.
tools="$root/hack/cluster/tools"
mkdir -p "$CLUSTER_BIN/tools"
for t in cmd/pki cmd/nodens cmd/ociimage images/pause images/smoke; do
  out="$CLUSTER_BIN/tools/$(basename $t)"
  (cd "$tools" && CGO_ENABLED=0 $NICE go build -trimpath -ldflags "-s -w" -o "$out.new" "./$t")
  # Keep the old file (and its time) when nothing changed, so that the
  # images made from it are not packed again.
  if cmp -s "$out.new" "$out"; then rm "$out.new"; else mv "$out.new" "$out"; fi
done

# The images, packed again only when their binary is newer.
img="$CLUSTER_BIN/images"
mkdir -p "$img"
image() { # tarball tag binary dst [ociimage flags...]
  local out=$1 tag=$2 bin=$3 dst=$4; shift 4
  if [ -s "$out" ] && [ "$out" -nt "$bin" ]; then return; fi
  "$CLUSTER_BIN/tools/ociimage" --tag "$tag" --out "$out" --binary "$bin:$dst" "$@"
  log "packed $tag into $out"
}
image "$img/pause.tar" "$PAUSE_IMAGE" "$CLUSTER_BIN/tools/pause" /pause --entrypoint /pause
image "$img/coredns.tar" "$COREDNS_IMAGE" "$coredns_bin" /coredns --entrypoint /coredns
image "$img/smoke.tar" "$SMOKE_IMAGE" "$CLUSTER_BIN/tools/smoke" /smoke --entrypoint /smoke

# test/e2e/workload, from this module: rebuilt each time (cached by Go) so
# that the image follows pkg/meterrkey.
(cd "$root" && CGO_ENABLED=0 $NICE go build -trimpath -ldflags "-s -w" -o "$CLUSTER_BIN/tools/workload.new" ./test/e2e/workload)
if cmp -s "$CLUSTER_BIN/tools/workload.new" "$CLUSTER_BIN/tools/workload"; then rm "$CLUSTER_BIN/tools/workload.new"; else mv "$CLUSTER_BIN/tools/workload.new" "$CLUSTER_BIN/tools/workload"; fi
image "$img/workload.tar" "$WORKLOAD_IMAGE" "$CLUSTER_BIN/tools/workload" /workload --entrypoint /workload

# Debian's caddy (test/proxies runs it too) with the libraries it links,
# for the gateway in front of the auth Service, configured from the shipped
# docs/integrations/caddy/Caddyfile.
command -v caddy >/dev/null || apt_install caddy
caddy_bin=$(command -v caddy)
caddy_libs=()
for l in $(ldd "$caddy_bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  caddy_libs+=(--binary "$(readlink -f "$l"):$l")
done
image "$img/caddy.tar" "$CADDY_IMAGE" "$caddy_bin" /usr/bin/caddy --entrypoint /usr/bin/caddy "${caddy_libs[@]}"

log "build ready in $((SECONDS - total))s"
