#!/usr/bin/env bash
# Fault injection and maintenance on the running local cluster's node, for
# test/cluster (root):
#
#   node.sh kill NAME    SIGKILL one of the node's daemons (containerd,
#                        kubelet, kube-proxy, ...), as a crash would
#   node.sh start NAME   start it again with the command line up.sh used
#   node.sh ctr ARGS...  containerd's ctr in the k8s.io namespace
#   node.sh exec CMD...  CMD in the node's network namespace only (the host's
#                        files): a client on the node, as a gateway on
#                        hostNetwork is, that reaches Services and pods
set -euo pipefail
. "$(dirname "$0")/lib.sh"

S="$CLUSTER_STATE"
[ -s "$S/init.pid" ] && kill -0 "$(cat "$S/init.pid")" 2>/dev/null || die "no cluster is up (make cluster)"
INIT=$(cat "$S/init.pid")
cdv=$(mod_version containerd github.com/containerd/containerd/v2)
NODE_PATH="$CLUSTER_BIN/containerd-$cdv:$KUBEBUILDER_ASSETS:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# pids NAME: the node's processes whose executable is NAME's binary.
pids() {
  local cmd bin p
  cmd=$(cat "$S/cmd/$1" 2>/dev/null) || die "unknown component $1 (no $S/cmd/$1)"
  eval "set -- $cmd"
  bin=$1
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/exe" 2>/dev/null)" = "$bin" ] && echo "${p#/proc/}"
  done
  return 0
}

case "${1:-}" in
kill)
  name=${2:?kill NAME}
  mapfile -t ps < <(pids "$name")
  [ "${#ps[@]}" -gt 0 ] || die "$name is not running"
  kill -KILL "${ps[@]}"
  for _ in $(seq 50); do [ -z "$(pids "$name")" ] && break; sleep 0.1; done
  log "killed $name (${ps[*]})"
  ;;
start)
  name=${2:?start NAME}
  [ -z "$(pids "$name")" ] || die "$name is already running"
  eval "set -- $(cat "$S/cmd/$name")"
  setsid nsenter --target "$INIT" --mount --net --pid --uts --ipc -- env -i PATH="$NODE_PATH" HOME=/root "$@" \
    >>"$S/logs/$name.log" 2>&1 </dev/null &
  log "started $name"
  ;;
ctr)
  shift
  nsenter --target "$INIT" --mount --net --pid --uts --ipc -- env -i PATH="$NODE_PATH" HOME=/root \
    ctr --address /run/containerd/containerd.sock --namespace k8s.io "$@"
  ;;
exec)
  shift
  exec nsenter --target "$INIT" --net -- "$@"
  ;;
*)
  die "usage: node.sh kill|start NAME | ctr ARGS... | exec CMD..."
  ;;
esac
