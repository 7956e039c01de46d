#!/usr/bin/env bash
# Proves that `make cluster-down` leaves the host as `make cluster` found it
# (`make test-cluster-teardown`). It snapshots the host, then, for each of
# two rounds, brings the cluster up, puts pods on it, tears it down and
# compares:
#   1. clean:  hack/cluster/down.sh on a running cluster;
#   2. crash:  every process of the node SIGKILLed first (as a crash or an
#              OOM kill would), then down.sh, which must still find and undo
#              everything.
# After each round it also runs down.sh a second time, which must succeed and
# change nothing. Compared: mounts (/proc/self/mountinfo), links, addresses,
# routes and named network namespaces, iptables/ip6tables/nft rules, cgroups,
# every sysctl but a few counters, the paths a kubelet or containerd writes
# by default, and the cluster's processes.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || die "needs root"

work=$(mktemp -d /tmp/meterr-teardown-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
KUBECTL=("$KUBEBUILDER_ASSETS/kubectl" --kubeconfig "$CLUSTER_KUBECONFIG" --cache-dir "$work/kubectl-cache")

# Paths a kubelet, containerd, runc or CNI write to when not told otherwise.
DEFAULT_PATHS=(
  /var/lib/kubelet /var/lib/cni /var/lib/containerd /var/log/pods /var/log/containers
  /run/containerd /run/runc /run/netns /var/run/netns /run/xtables.lock /run/nri /run/cdi
  /etc/cni /opt/cni /opt/containerd /etc/containerd /etc/nri /opt/nri /etc/kubernetes
  /usr/libexec/kubernetes /root/.kube/cache "$CLUSTER_STATE"
)

snapshot() { # dir
  local d=$1
  mkdir -p "$d"
  # Mount point, type and source: mount IDs change with every mount.
  awk '{sep=0; for (i=7; i<=NF; i++) if ($i == "-") {sep=i; break}; print $5, $(sep+1), $(sep+2)}' /proc/self/mountinfo | sort >"$d/mounts"
  ip -o link show | awk -F': ' '{print $2}' | sort >"$d/links"
  ip -o addr show | awk '{print $2, $3, $4}' | sort >"$d/addresses"
  { ip route show table all; ip -6 route show table all; } 2>/dev/null | sort >"$d/routes"
  ip netns list 2>/dev/null | sort >"$d/netns"
  # Rules without counters or the dump's timestamp comments.
  iptables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//' >"$d/iptables"
  ip6tables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//' >"$d/ip6tables"
  nft list ruleset 2>/dev/null >"$d/nft"
  # Every cgroup but the per-command ones this machine's sandbox makes.
  find /sys/fs/cgroup -mindepth 1 -type d 2>/dev/null | grep -v '/process_api' | sort >"$d/cgroups"
  sysctl -a 2>/dev/null | grep -Ev '^(fs\.quota\.|fs\.(dentry-state|file-nr|inode-nr|inode-state|aio-nr)|kernel\.(ns_last_pid|random\.|pty\.nr)|net\.netfilter\.nf_conntrack_count)' >"$d/sysctls"
  for p in "${DEFAULT_PATHS[@]}"; do [ -e "$p" ] && echo "$p"; done >"$d/paths"
  # Processes of the cluster: its binaries, or anything naming its state.
  for p in /proc/[0-9]*; do
    local exe cmd
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)
    case "$exe" in "$CLUSTER_BIN"/* | "$KUBEBUILDER_ASSETS"/*) echo "${p#/proc/} $cmd"; continue ;; esac
    case "$cmd" in *"$CLUSTER_STATE"*) echo "${p#/proc/} $cmd" ;; esac
  done | grep -v teardown-test >"$d/processes"
}

checks=0 failures=0
compare() { # round
  local f
  for f in mounts links addresses routes netns iptables ip6tables nft cgroups sysctls paths processes; do
    checks=$((checks + 1))
    if diff -u "$work/before/$f" "$work/after/$f" >"$work/diff"; then
      echo "  ok    $1: $f as before"
    else
      failures=$((failures + 1))
      echo "  FAIL  $1: $f changed:"
      sed -n '3,40p' "$work/diff" | sed 's/^/        /'
    fi
  done
}

# Pods, a Secret volume, a Service: what leaves mounts, veths, iptables rules
# and cgroups behind if teardown misses them.
workload() {
  "${KUBECTL[@]}" create deployment teardown --image "$SMOKE_IMAGE" --replicas 2 -- /smoke serve >/dev/null &&
    "${KUBECTL[@]}" expose deployment teardown --port 80 --target-port 8080 >/dev/null &&
    "${KUBECTL[@]}" create secret generic teardown --from-literal=k=v >/dev/null &&
    "${KUBECTL[@]}" patch deployment teardown --type json -p '[
      {"op":"add","path":"/spec/template/spec/volumes","value":[{"name":"s","secret":{"secretName":"teardown"}}]},
      {"op":"add","path":"/spec/template/spec/containers/0/volumeMounts","value":[{"name":"s","mountPath":"/s"}]},
      {"op":"add","path":"/spec/template/spec/containers/0/imagePullPolicy","value":"Never"}]' >/dev/null &&
    "${KUBECTL[@]}" rollout status deployment/teardown --timeout=120s >/dev/null
}

# The node's processes, as the host sees them: init and everything under it.
node_pids() {
  local init=$1 p
  echo "$init"
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$(readlink "/proc/$init/ns/pid_for_children" 2>/dev/null)" ] && echo "${p#/proc/}"
  done
}

[ -e "$CLUSTER_STATE/created" ] && die "a cluster is up ($CLUSTER_STATE): make cluster-down first"
snapshot "$work/before"
echo "teardown: snapshot of the host taken ($(wc -l <"$work/before/mounts") mounts, $(wc -l <"$work/before/cgroups") cgroups, $(wc -l <"$work/before/sysctls") sysctls)"

for round in clean crash; do
  echo "teardown: round '$round': make cluster"
  "$root/hack/cluster/up.sh" >"$work/up.log" 2>&1 || { cat "$work/up.log"; "$root/hack/cluster/down.sh"; die "the cluster did not come up"; }
  if workload; then echo "teardown: workload running (2 pods, a Service, a Secret volume)"; else
    echo "teardown: the workload did not come up (teardown is checked all the same)"; failures=$((failures + 1)); fi
  checks=$((checks + 1))
  if [ "$round" = crash ]; then
    init=$(cat "$CLUSTER_STATE/init.pid")
    pids=$(node_pids "$init" | sort -u)
    echo "teardown: SIGKILL to nodens and the node's $(echo "$pids" | wc -l) processes"
    kill -KILL "$(cat "$CLUSTER_STATE/nodens.pid")" $pids 2>/dev/null
    sleep 1
  fi
  echo "teardown: make cluster-down"
  if ! "$root/hack/cluster/down.sh"; then failures=$((failures + 1)); echo "  FAIL  $round: down.sh failed"; fi
  checks=$((checks + 1))
  snapshot "$work/after"
  compare "$round"
  echo "teardown: make cluster-down again (nothing left to do)"
  checks=$((checks + 1))
  if ! "$root/hack/cluster/down.sh" >/dev/null; then failures=$((failures + 1)); echo "  FAIL  $round: a second down.sh failed"; fi
  snapshot "$work/after"
  compare "$round, twice"
done

echo "teardown: $((checks - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
