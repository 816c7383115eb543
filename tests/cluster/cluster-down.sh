#!/usr/bin/env bash
# Stops everything cluster-up.sh started and removes its state:
#   1. kubelet and kube-proxy (so nothing restarts pods or rewrites rules),
#   2. every pod container: the processes under our containerd's shims, then
#      the shims (only shims whose command line names our socket),
#   3. the remaining daemons by pid file (SIGTERM, SIGKILL after a timeout),
#      then any leftover process of ours whose pid file was lost,
#   4. every mount under $TB_CLUSTER_DIR (pod volumes, rootfs, shm, netns),
#      deepest first, lazily if a normal unmount fails,
#   5. iptables rules/chains KUBE-* and CNI-* and rules tests added, the CNI bridge, the lo address,
#      container cgroups and shim sockets of ours, sysctls restored,
#   6. $TB_CLUSTER_DIR itself.
# Never touches $TB_CACHE. Safe to run when nothing is running (exit 0).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
must_be_root
with_cluster_lock "$HERE/$(basename "$0")" "$@"

# Guard against a mistyped TB_CLUSTER_DIR: only delete a directory that
# cluster-up created (it holds a marker file), or an empty one.
case $TB_CLUSTER_DIR in
  /*/?*) ;;
  *) die "refusing to work on TB_CLUSTER_DIR=$TB_CLUSTER_DIR" ;;
esac
if [[ -d $TB_CLUSTER_DIR && ! -e $TB_CLUSTER_DIR/$TB_MARKER ]] &&
  [[ -n $(ls -A "$TB_CLUSTER_DIR") ]]; then
  die "$TB_CLUSTER_DIR has no $TB_MARKER file: not a cluster state dir, refusing to touch it"
fi

TASK_DIR=$TB_CONTAINERD_DIR/state/io.containerd.runtime.v2.task/k8s.io
SANDBOX_DIR=$TB_CONTAINERD_DIR/state/io.containerd.grpc.v1.cri/sandboxes

# Ids and shim socket addresses of our containers, recorded now: containerd
# removes the task dirs as soon as their shims are gone. Used in step 5 to
# remove exactly our cgroups, shim sockets and CNI cache entries.
container_ids=()
shim_sockets=()
for t in "$TASK_DIR"/*/ "$SANDBOX_DIR"/*/; do
  [[ -d $t ]] || continue
  container_ids+=("$(basename "$t")")
  if [[ -f $t/address ]]; then
    shim_sockets+=("$(sed -n 's#^unix://##p' "$t/address")")
  fi
done
if ((${#container_ids[@]} > 0)); then
  # A sandbox id appears in both directories.
  mapfile -t container_ids < <(printf '%s\n' "${container_ids[@]}" | sort -u)
fi

# --- 1. node agents ---------------------------------------------------------------
stop_daemon kubelet 15
stop_daemon kube-proxy 10

# --- 2. containers and shims -----------------------------------------------------------
# Our shims carry "-address $TB_CONTAINERD_SOCK" on their command line.
shim_pids() {
  local p
  for p in $(our_pids); do
    [[ $(cat "/proc/$p/comm" 2>/dev/null) == containerd-shim* ]] && echo "$p"
  done
  return 0
}

shims=$(shim_pids)
if [[ -n $shims ]]; then
  log "killing pod containers and shims: $(tr '\n' ' ' <<<"$shims")"
  # Container processes first (shims are subreapers: every container process
  # stays in their tree), then the shims.
  for s in $shims; do
    for v in $(descendants "$s"); do kill -KILL "$v" 2>/dev/null || true; done
  done
  sleep 0.5
  for s in $shims; do kill_pid "$s" 5; done
fi
# Container processes whose shim was already killed (e.g. kill -9 of the
# whole cluster) are no longer in any shim's tree; their cgroups still list them.
orphans=$(for id in "${container_ids[@]}"; do
  cat /sys/fs/cgroup/*/k8s.io/"$id"/cgroup.procs 2>/dev/null || true
done | sort -un)
for p in $orphans; do
  log "killing orphaned container process $p ($(cat "/proc/$p/comm" 2>/dev/null || true))"
  kill -KILL "$p" 2>/dev/null || true
done

# --- 3. remaining daemons -----------------------------------------------------------------
for ((i = ${#TB_DAEMONS[@]} - 1; i >= 0; i--)); do
  stop_daemon "${TB_DAEMONS[i]}" 15
done
# Leftovers whose pid files were lost (e.g. a half-finished start).
for p in $(our_pids); do
  log "stopping leftover $(cat "/proc/$p/comm" 2>/dev/null) (pid $p)"
  for c in $(descendants "$p"); do kill -KILL "$c" 2>/dev/null || true; done
  kill_pid "$p" 5
done

# --- 4. mounts -------------------------------------------------------------------------------
# our_mounts: mount points at or below TB_CLUSTER_DIR, most recent first.
our_mounts() {
  awk -v dir="$TB_CLUSTER_DIR" '{
    m = $5; gsub(/\\040/, " ", m)   # mountinfo escapes spaces as \040
    if (m == dir || index(m, dir "/") == 1) print m
  }' /proc/self/mountinfo | tac
}

for pass in 1 2 3 4 5; do
  mounts=$(our_mounts)
  [[ -z $mounts ]] && break
  ((pass == 1)) && log "unmounting $(echo "$mounts" | wc -l) mounts under $TB_CLUSTER_DIR"
  while read -r m; do
    umount "$m" 2>/dev/null || ((pass < 3)) || umount -l "$m" 2>/dev/null || true
  done <<<"$mounts"
done
if [[ -n $(our_mounts) ]]; then
  our_mounts >&2
  die "mounts under $TB_CLUSTER_DIR remain"
fi

# --- 5. network, cgroups, sockets, sysctls ------------------------------------------------------

# clean_iptables CMD: with CMD=iptables|ip6tables removes every rule that
# jumps to a KUBE-*/CNI-* chain or that a test added (comment tradingbot-test:...,
# see tests/harness/src/iptables.rs), then flushes and deletes those chains, in
# one atomic iptables-restore --noflush per table.
clean_iptables() {
  local cmd=$1 table dump script
  command -v "$cmd-save" >/dev/null || return 0
  for table in filter nat mangle raw; do
    dump=$("$cmd-save" -t "$table" 2>/dev/null) || continue
    script=$(awk '
      function ours(c) { return c ~ /^(KUBE-|CNI-)/ }
      /^:/ { c = substr($1, 2); if (ours(c)) chains[++n] = c; next }
      /^-A / {
        if (!ours($2) && ($0 ~ / -[jg] (KUBE-|CNI-)/ || $0 ~ /--comment "?tradingbot-test:/)) { sub(/^-A /, "-D "); print }
      }
      END {
        for (i = 1; i <= n; i++) print "-F " chains[i]
        for (i = 1; i <= n; i++) print "-X " chains[i]
      }' <<<"$dump")
    [[ -z $script ]] && continue
    log "removing $cmd $table KUBE-*/CNI-* rules and chains"
    printf '*%s\n%s\nCOMMIT\n' "$table" "$script" | "$cmd-restore" -w 5 --noflush ||
      log "warning: $cmd-restore for table $table failed"
  done
}
clean_iptables iptables
clean_iptables ip6tables

if ip link show "$TB_CNI_BRIDGE" >/dev/null 2>&1; then
  log "deleting bridge $TB_CNI_BRIDGE"
  ip link del "$TB_CNI_BRIDGE"
fi
if ip -4 addr show dev lo | grep -q " $TB_NODE_IP/32 "; then
  log "removing $TB_NODE_IP from lo"
  ip addr del "$TB_NODE_IP/32" dev lo
fi

# Container cgroups (left behind when a shim was killed), shim sockets
# (/run/containerd/s/<hash>) and libcni's result cache (written on ADD,
# removed only by a DEL that a killed pod never got) of our containers only.
for id in "${container_ids[@]}"; do
  for cg in /sys/fs/cgroup/*/k8s.io/"$id"; do
    if [[ -d $cg ]]; then rmdir "$cg" 2>/dev/null || true; fi
  done
  rm -f "/var/lib/cni/results/cni-loopback-$id-lo"
done
for sock in "${shim_sockets[@]}"; do
  if [[ $sock == /run/containerd/s/* ]]; then rm -f "$sock"; fi
done
rm -f /var/lib/cni/results/"$TB_CNI_NETWORK"-*
# Directories our shims / CNI created; removed only if nothing else uses them.
rmdir /sys/fs/cgroup/*/k8s.io /run/containerd/s /run/containerd /var/lib/cni/results /var/lib/cni 2>/dev/null || true

if [[ -f $TB_RUN_DIR/sysctl.orig ]]; then
  log "restoring sysctls"
  while IFS= read -r kv; do
    sysctl -q -w "$kv" >/dev/null 2>&1 || log "warning: could not restore $kv"
  done <"$TB_RUN_DIR/sysctl.orig"
fi

# --- 6. state directory ------------------------------------------------------------------------------
if [[ -e $TB_CLUSTER_DIR ]]; then
  # --one-file-system: never follow into a mount we failed to remove.
  rm -rf --one-file-system "$TB_CLUSTER_DIR"
  log "removed $TB_CLUSTER_DIR"
fi

left=$(our_pids)
[[ -z $left ]] || die "processes still running: $left"
log "cluster is down"
