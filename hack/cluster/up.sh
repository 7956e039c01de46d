#!/usr/bin/env bash
# Brings up a one-node Kubernetes cluster on this machine (`make cluster`):
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd
# with runc, the kubelet, kube-proxy (iptables mode), bridge CNI and CoreDNS,
# with the locally built images imported. Run hack/cluster/build.sh first.
#
# Kind-style: every config is written as a file under the state directory
# ($CLUSTER_STATE) and then started, and everything that creation makes
# outside it is recorded in $CLUSTER_STATE/created, which
# hack/cluster/down.sh undoes. The node runs in namespaces of its own (see
# hack/cluster/tools/cmd/nodens): its network has no route out, its mounts
# stay in it, and its processes die with its init.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "needs root (namespaces, mounts, cgroups, iptables)"
for c in nsenter ip; do command -v $c >/dev/null || die "$c is missing"; done
command -v iptables >/dev/null || apt_install iptables

S="$CLUSTER_STATE"
if [ -e "$S/created" ]; then
  if [ -e "$S/nodens.pid" ] && kill -0 "$(cat "$S/nodens.pid")" 2>/dev/null; then
    log "already up; KUBECONFIG=$CLUSTER_KUBECONFIG"
    exit 0
  fi
  log "a stopped cluster's state is left in $S: tearing it down first"
  "$root/hack/cluster/down.sh"
fi

start=$SECONDS
phase_start=$SECONDS
phase() { log "$1 ($((SECONDS - phase_start))s)"; phase_start=$SECONDS; }

cdv=$(mod_version containerd github.com/containerd/containerd/v2)
CONTAINERD_DIR="$CLUSTER_BIN/containerd-$cdv"
RUNC="$CLUSTER_BIN/runc-$(mod_version runc github.com/opencontainers/runc)/runc"
CNI_BIN="$CLUSTER_BIN/cni-$(mod_version cni github.com/containernetworking/plugins)"
TOOLS="$CLUSTER_BIN/tools"
K="$KUBEBUILDER_ASSETS"
for f in "$K"/{etcd,kube-apiserver,kubectl,kubelet,kube-proxy,kube-scheduler,kube-controller-manager} \
  "$CONTAINERD_DIR"/{containerd,ctr,containerd-shim-runc-v2} "$RUNC" "$CNI_BIN"/{bridge,host-local,loopback,portmap} \
  "$TOOLS"/{pki,nodens} "$CLUSTER_BIN"/images/{pause,coredns,smoke,workload,caddy}.tar; do
  [ -e "$f" ] || die "$f is missing: run hack/cluster/build.sh (make cluster does)"
done

# The record of what this run creates outside $S, one "kind value..." a line,
# written before each thing is made so that a crash leaves nothing unrecorded.
mkdir -p "$S"
created() { echo "$*" >>"$S/created"; }
: >"$S/created"
created state-dir "$S"
for k in "${GLOBAL_SYSCTLS[@]}"; do
  v=$(sysctl -n "$k" 2>/dev/null) && created sysctl "$k" "$(echo $v)"
done

mkdir -p "$S"/{pki,config,logs,cmd,etcd,kubelet,cni/net.d,cni/data,varlog,containerd/root,containerd/opt}
# Paths the kubelet and CNI write to whatever they are told (device-plugin
# sockets, /var/log/containers, IPAM and result caches): inside the node they
# are bind mounts of directories in $S. A missing mount point is made here
# and removed by teardown.
for d in /var/lib/kubelet /var/lib/cni /var/log; do
  if [ ! -d "$d" ]; then created dir "$d"; mkdir -p "$d"; fi
done

# Cgroups: the kubelet puts every pod under /$CGROUP_ROOT in each hierarchy.
for h in /sys/fs/cgroup/*/; do
  h=${h%/}
  [ -e "$h/cgroup.procs" ] || continue
  if [ ! -d "$h/$CGROUP_ROOT" ]; then
    created cgroup "$h/$CGROUP_ROOT"
    mkdir "$h/$CGROUP_ROOT"
    if [ -e "$h/cpuset.cpus" ]; then # a new cpuset is empty until given CPUs and memory nodes
      cat "$h/cpuset.cpus" >"$h/$CGROUP_ROOT/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h/$CGROUP_ROOT/cpuset.mems"
    fi
  fi
done
phase "state directory $S"

"$TOOLS/pki" --dir "$S/pki" --node-name "$NODE_NAME" --node-ip "$NODE_IP" --service-ip "$KUBERNETES_SERVICE_IP" \
  --server "https://$NODE_IP:6443" --host-server "https://$CLUSTER_API_ADDR"
P="$S/pki"
phase "certificates and kubeconfigs"

# --- configs -----------------------------------------------------------------
C="$S/config"
cat >"$C/containerd.toml" <<EOF
version = 3
root = "$S/containerd/root"
# Inside the node /run is its own tmpfs: the shims' sockets (always under
# /run/containerd/s) stay there.
state = "/run/containerd"
# NRI would watch /etc/nri and /opt/nri; the cluster needs none of it.
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins.'io.containerd.internal.v1.opt']
  path = "$S/containerd/opt"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  # No CAP_SYS_RESOURCE here: without this, runc fails to lower a
  # container's oom_score_adj ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$RUNC"
        # cgroup v1 with the cgroupfs driver, as the kubelet is told.
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN"]
    conf_dir = "$S/cni/net.d"

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF

# Pods get routes to the Service range and the node only: no default route.
# The bridge does not masquerade, and the node has no route out either.
cat >"$S/cni/net.d/10-meterr.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "meterr",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "/var/lib/cni/networks",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}, {"dst": "$NODE_IP/32"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

# Pods with dnsPolicy Default get this: no upstream resolver at all.
echo "search $CLUSTER_DOMAIN" >"$C/resolv.conf"

cat >"$C/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1, which the kubelet refuses unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $P/kubelet-serving.crt
tlsPrivateKeyFile: $P/kubelet-serving.key
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $C/resolv.conf
volumePluginDir: /var/lib/kubelet/volume-plugins
# Lowering its own OOM score needs CAP_SYS_RESOURCE, which this machine lacks.
oomScoreAdj: 0
failSwapOn: false
# A shared machine's disk may run low: evict only when it is nearly full.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 5s
EOF

cat >"$C/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $P/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the conntrack limits and timeouts as they are (0): some are global.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
# No NodePorts on 127.0.0.1: that would set route_localnet.
iptables: {localhostNodePorts: false}
# Raising its own OOM score needs CAP_SYS_RESOURCE, which this machine lacks.
oomScoreAdj: 0
EOF
phase "configs in $C"

# --- the node's namespaces ---------------------------------------------------
created nodens "$S/nodens.pid"
setsid "$TOOLS/nodens" run --state "$S" --hostname "$NODE_NAME" \
  --forward "$CLUSTER_API_ADDR=127.0.0.1:6443" \
  --tmpfs /run \
  --bind "$S/kubelet:/var/lib/kubelet" --bind "$S/cni/data:/var/lib/cni" --bind "$S/varlog:/var/log" \
  --pidfile "$S/init.pid" >"$S/logs/nodens.log" 2>&1 </dev/null &
echo $! >"$S/nodens.pid"
for _ in $(seq 100); do [ -s "$S/init.pid" ] && break; kill -0 "$(cat "$S/nodens.pid")" 2>/dev/null || break; sleep 0.1; done
[ -s "$S/init.pid" ] || { cat "$S/logs/nodens.log" >&2; die "the node's namespaces did not come up"; }
INIT=$(cat "$S/init.pid")
NODE_PATH="$CONTAINERD_DIR:$K:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# in_node CMD...: runs CMD inside the node's namespaces.
in_node() { nsenter --target "$INIT" --mount --net --pid --uts --ipc -- env -i PATH="$NODE_PATH" HOME=/root "$@"; }
# start NAME CMD...: starts a component in the node, logging to logs/NAME.log.
start() {
  local name=$1; shift
  # The command line, for hack/cluster/node.sh to start it again after a
  # fault test has killed it.
  printf '%q ' "$@" >"$S/cmd/$name"
  setsid nsenter --target "$INIT" --mount --net --pid --uts --ipc -- env -i PATH="$NODE_PATH" HOME=/root "$@" \
    >"$S/logs/$name.log" 2>&1 </dev/null &
}
# wait_for WHAT SECONDS CMD...: polls CMD once a second, at most SECONDS times.
wait_for() {
  local what=$1 n=$2; shift 2
  for _ in $(seq "$n"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  die "$what: not ready after ${n}s (logs in $S/logs)"
}

in_node ip link set lo up
in_node ip addr add "$NODE_IP/32" dev lo
# Clients on the node itself (hack/cluster/node.sh exec, as a hostNetwork
# gateway is) reach Services: with no default route, a Service address
# needs a route for kube-proxy's OUTPUT rules to rewrite it.
in_node ip route add "$SERVICE_CIDR" dev lo src "$NODE_IP"
# Routing between pods and to Services; per network namespace.
in_node sysctl -q -w net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
# Belt and braces (the node has no route out): forwarded traffic from a pod
# may go only to pods, Services and the node.
in_node iptables -N METERR-POD-EGRESS
in_node iptables -A METERR-POD-EGRESS -d "$POD_CIDR" -j RETURN
in_node iptables -A METERR-POD-EGRESS -d "$SERVICE_CIDR" -j RETURN
in_node iptables -A METERR-POD-EGRESS -d "$NODE_IP/32" -j RETURN
in_node iptables -A METERR-POD-EGRESS -j DROP
in_node iptables -I FORWARD 1 -s "$POD_CIDR" -j METERR-POD-EGRESS
phase "node namespaces (init PID $INIT)"

# --- control plane -----------------------------------------------------------
start etcd "$K/etcd" --name meterr --data-dir "$S/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster meterr=http://127.0.0.1:2380 --unsafe-no-fsync
start kube-apiserver "$K/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
  --bind-address 0.0.0.0 --secure-port 6443 --advertise-address "$NODE_IP" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --client-ca-file "$P/ca.crt" --tls-cert-file "$P/apiserver.crt" --tls-private-key-file "$P/apiserver.key" \
  --kubelet-client-certificate "$P/apiserver-kubelet-client.crt" --kubelet-client-key "$P/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$P/ca.crt" --kubelet-preferred-address-types InternalIP \
  --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
  --service-account-key-file "$P/sa.pub" --service-account-signing-key-file "$P/sa.key" \
  --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
  --allow-privileged=true --profiling=false
# --cache-dir: kubectl's discovery cache would go to ~/.kube otherwise.
KUBECTL=("$K/kubectl" --kubeconfig "$CLUSTER_KUBECONFIG" --cache-dir "$S/kubectl-cache")
wait_for kube-apiserver 90 "${KUBECTL[@]}" get --raw /readyz
phase "etcd and kube-apiserver"

start kube-controller-manager "$K/kube-controller-manager" \
  --kubeconfig "$P/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$P/controller-manager.kubeconfig" --authorization-kubeconfig "$P/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
  --root-ca-file "$P/ca.crt" --service-account-private-key-file "$P/sa.key" \
  --cluster-signing-cert-file "$P/ca.crt" --cluster-signing-key-file "$P/ca.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --cluster-name meterr --profiling=false \
  --flex-volume-plugin-dir /var/lib/kubelet/volume-plugins
start kube-scheduler "$K/kube-scheduler" --kubeconfig "$P/scheduler.kubeconfig" \
  --authentication-kubeconfig "$P/scheduler.kubeconfig" --authorization-kubeconfig "$P/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --leader-elect=false --profiling=false

# --- runtime, images, kubelet, kube-proxy ----------------------------------
start containerd "$CONTAINERD_DIR/containerd" --config "$C/containerd.toml"
CTR=("$CONTAINERD_DIR/ctr" --address /run/containerd/containerd.sock --namespace k8s.io)
wait_for containerd 30 in_node "${CTR[@]}" version
images=("$CLUSTER_BIN"/images/{pause,coredns,smoke,workload,caddy}.tar)
shopt -s nullglob
images+=("$root"/dist/*.tar)
shopt -u nullglob
for i in "${images[@]}"; do
  in_node "${CTR[@]}" images import --platform linux/amd64 "$i" >>"$S/logs/images.log" 2>&1 ||
    { tail -5 "$S/logs/images.log" >&2; die "could not import $i"; }
  log "imported $i"
done
phase "containerd and ${#images[@]} images"

start kubelet "$K/kubelet" --config "$C/kubelet.yaml" --kubeconfig "$P/kubelet.kubeconfig" \
  --node-ip "$NODE_IP" --hostname-override "$NODE_NAME"
start kube-proxy "$K/kube-proxy" --config "$C/kube-proxy.yaml"
wait_for "node $NODE_NAME" 120 "${KUBECTL[@]}" wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s
phase "kubelet and kube-proxy: node $NODE_NAME Ready"

sed -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g" -e "s|@DNS_SERVICE_IP@|$DNS_SERVICE_IP|g" \
  -e "s|@CLUSTER_DOMAIN@|$CLUSTER_DOMAIN|g" "$root/hack/cluster/coredns.yaml" >"$C/coredns.yaml"
"${KUBECTL[@]}" apply -f "$C/coredns.yaml" >/dev/null
wait_for CoreDNS 120 "${KUBECTL[@]}" -n kube-system rollout status deployment/coredns --timeout=1s
phase "CoreDNS"

log "up in $((SECONDS - start))s. The API server is on https://$CLUSTER_API_ADDR (host loopback):"
log "  export KUBECONFIG=$CLUSTER_KUBECONFIG"
log "  $K/kubectl get nodes"
log "make cluster-down tears it down."
