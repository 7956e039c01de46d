# Shared settings of the local cluster's scripts (hack/cluster/*.sh). Sourced.
# Every address here lives only inside the node's own network namespace
# (hack/cluster/tools/cmd/nodens), which has no route out; the host reaches
# the API server only through a forwarder on its loopback.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
K8S_VERSION="${K8S_VERSION:-1.37.2}"
LOCALBIN="${LOCALBIN:-$root/bin}"
KUBEBUILDER_ASSETS="${KUBEBUILDER_ASSETS:-$LOCALBIN/k8s/$K8S_VERSION}"
# Built binaries and images, one directory per pinned version (git-ignored).
CLUSTER_BIN="${CLUSTER_BIN:-$LOCALBIN/cluster}"
# Everything a running cluster writes: certificates, configs, etcd, the
# kubelet's and containerd's roots, logs. `make cluster-down` deletes it.
CLUSTER_STATE="${CLUSTER_STATE:-/var/lib/meterr-cluster}"
# The admin kubeconfig for the host (it goes with the state directory).
CLUSTER_KUBECONFIG="$CLUSTER_STATE/pki/admin.kubeconfig"
# The host side of the API server: loopback only.
CLUSTER_API_ADDR="${CLUSTER_API_ADDR:-127.0.0.1:16443}"
NODE_NAME=meterr-node
# The node's own address, on its loopback device (no dummy interfaces in this
# kernel); the API server advertises it, the kubelet reports it.
NODE_IP=10.245.0.1
POD_CIDR=10.244.0.0/24
POD_GATEWAY=10.244.0.1
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SERVICE_IP=10.96.0.1
DNS_SERVICE_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local
# The kubelet's cgroupRoot: every pod cgroup lives under this name in each
# hierarchy, so teardown knows exactly which ones are the cluster's.
CGROUP_ROOT=meterr-cluster
# Images imported into containerd; the tags are local-only names.
PAUSE_IMAGE=meterr.local/pause:1
COREDNS_IMAGE=meterr.local/coredns:v1.15.0
SMOKE_IMAGE=meterr.local/smoke:1
# test/e2e/workload (pkg/meterrkey calling the auth server from a mounted key)
# and Debian's caddy with its libraries: test/cluster's client pods.
WORKLOAD_IMAGE=meterr.local/workload:1
CADDY_IMAGE=meterr.local/caddy:1

# Global (not per network namespace) sysctls the kubelet, kube-proxy or runc
# may set; saved before start and restored by teardown.
GLOBAL_SYSCTLS=(
  kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes
  net.netfilter.nf_conntrack_max net.ipv4.ip_forward
)

log() { echo "cluster: $*"; }
die() { echo "cluster: $*" >&2; exit 1; }

mod_version() { # deps-dir module: the version its go.mod pins
  (cd "$root/hack/cluster/deps/$1" && go list -m -f '{{.Version}}' "$2")
}

apt_install() { # package...: Debian packages the node needs, if missing
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "cannot install $* here (needs root and apt-get)"
  log "installing $* (Debian packages)"
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" ||
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@")) >/tmp/meterr-cluster-apt.log 2>&1 ||
    { tail -5 /tmp/meterr-cluster-apt.log >&2; die "could not install $*"; }
}
