#!/usr/bin/env bash
# Tears the local cluster down (`make cluster-down`): stops the node, then
# undoes what hack/cluster/up.sh recorded in $CLUSTER_STATE/created (cgroups,
# sysctls, mount points) and deletes the state directory. Idempotent, and
# works after a crash: what the record misses is found by name (the nodens
# process of this state directory, the $CGROUP_ROOT cgroups).
#
# Interfaces, routes, iptables/nft rules, per-network sysctls and every mount
# of the node live in the node's own namespaces, which the kernel frees when
# its last process exits; teardown checks that they are gone.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "needs root"
S="$CLUSTER_STATE"
start=$SECONDS
failed=0
warn() { echo "cluster-down: $*" >&2; failed=1; }

# PIDs of `nodens run` for this state directory: from the pid file, and by
# command line in case the file is gone.
nodens_pids() {
  local p a
  for p in /proc/[0-9]*; do
    mapfile -d '' a <"$p/cmdline" 2>/dev/null || continue
    [ "${#a[@]}" -ge 4 ] && [ "${a[0]##*/}" = nodens ] && [ "${a[1]}" = run ] &&
      [ "${a[2]}" = --state ] && [ "${a[3]}" = "$S" ] && echo "${p#/proc/}"
  done
}
pids=$(nodens_pids | sort -u)
if [ -n "$pids" ]; then
  log "stopping the node (nodens PID $(echo $pids))"
  kill -TERM $pids 2>/dev/null
  # nodens gives the node's processes 5s after SIGTERM, then kills its init.
  for _ in $(seq 150); do
    alive=""
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  if [ -n "$alive" ]; then
    log "nodens still running after 15s: SIGKILL (its init and so the node die with it)"
    kill -KILL $alive 2>/dev/null
  fi
fi

# Anything still in the cluster's cgroups is a leftover of the node: kill it.
cgroup_dirs() { for h in /sys/fs/cgroup/*/; do [ -d "$h$CGROUP_ROOT" ] && echo "$h$CGROUP_ROOT"; done; }
for i in $(seq 50); do
  procs=$(cgroup_dirs | while read -r d; do find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null; done | sort -u)
  [ -z "$procs" ] && break
  [ "$i" = 1 ] && log "killing leftover processes in the $CGROUP_ROOT cgroups: $(echo $procs)"
  kill -KILL $procs 2>/dev/null
  sleep 0.1
done
[ -n "${procs:-}" ] && warn "processes still in the $CGROUP_ROOT cgroups: $(echo $procs)"

# The node's mounts are in its mount namespace; none should be on the host.
if [ -d "$S" ] && grep -qF " $S" /proc/self/mountinfo; then
  warn "mounts under $S on the host (unmounting):"
  awk -v s="$S" 'index($5, s) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    echo "  $m" >&2
    umount -l "$m"
  done
fi

# Cgroups, deepest first; a cgroup whose tasks just died may be busy briefly.
{
  [ -f "$S/created" ] && awk '$1 == "cgroup" {print $2}' "$S/created"
  cgroup_dirs
} | sort -u | while read -r d; do
  [ -d "$d" ] || continue
  for _ in $(seq 20); do
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
    [ -d "$d" ] || break
    sleep 0.25
  done
  [ -d "$d" ] && warn "could not remove cgroup $d"
done

if [ -f "$S/created" ]; then
  # Global sysctls back to what they were before the cluster started.
  while read -r kind key value; do
    [ "$kind" = sysctl ] || continue
    cur=$(echo $(sysctl -n "$key" 2>/dev/null))
    if [ "$cur" != "$value" ]; then
      log "restoring $key = $value (was $cur)"
      sysctl -q -w "$key=$value" || warn "could not restore $key"
    fi
  done <"$S/created"
  # Mount points made on the host, if still empty (the node wrote into the
  # bind mounts over them, never into them).
  awk '$1 == "dir" {print $2}' "$S/created" | sort -r | while read -r d; do
    [ -d "$d" ] || continue
    rmdir "$d" 2>/dev/null || warn "$d is not empty; left as it is"
  done
fi

if [ -d "$S" ]; then
  # Keep the last run's logs for a post-mortem, under bin/ (git-ignored).
  if [ -d "$S/logs" ]; then
    rm -rf "$LOCALBIN/cluster-logs" && mkdir -p "$LOCALBIN" && cp -r "$S/logs" "$LOCALBIN/cluster-logs"
  fi
  # --one-file-system: never follow a mount, whatever is left.
  rm -rf --one-file-system "$S" || warn "could not remove $S"
fi

if [ "$failed" = 0 ]; then
  log "down in $((SECONDS - start))s (logs of the last run in $LOCALBIN/cluster-logs)"
else
  echo "cluster-down: finished with problems (above)" >&2
  exit 1
fi
