# shellcheck shell=bash disable=SC2034  # variables are used by the sourcing scripts
# Shared settings and helpers for the local test cluster scripts.
#
# Sourced by every script in tests/cluster/. It only defines variables and
# functions; it never starts or changes anything by itself.
#
# Two directories matter:
#   TB_CACHE        persistent, expensive results (built Kubernetes binaries,
#                   pause image, prometheus, python venv). Never deleted by
#                   cluster-down.
#   TB_CLUSTER_DIR  runtime state of one cluster (certs, etcd data, logs, pid
#                   files, kubeconfigs, containerd root/state, kubelet root,
#                   audit log). Deleted by cluster-down.

TB_CACHE=${TB_CACHE:-$HOME/.cache/tradingbot-operator}
TB_CLUSTER_DIR=${TB_CLUSTER_DIR:-/var/tmp/tradingbot-cluster}

# --- Kubernetes build -------------------------------------------------------
TB_K8S_VERSION=v1.20.2
TB_K8S_DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
TB_K8S_DIR=$TB_CACHE/k8s-$TB_K8S_VERSION
TB_K8S_BIN=$TB_K8S_DIR/bin
TB_K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
# Pause (sandbox) image, built from the same source tree.
TB_PAUSE_VERSION=3.4.1
TB_PAUSE_IMAGE=tradingbot.local/pause:$TB_PAUSE_VERSION
TB_PAUSE_TAR=$TB_K8S_DIR/pause-image.tar

# --- Network layout -----------------------------------------------------------
TB_NODE_NAME=tb-node
# Private address added to lo: kubelet --node-ip and the apiserver's advertise
# address (pods reach the API server through the `kubernetes` Service → here).
TB_NODE_IP=10.200.0.1
# /20: room for a Service per bot of the 1,000-bot fleet benchmark (a /24 runs out at 253).
TB_SERVICE_CIDR=10.0.0.0/20
TB_KUBERNETES_SVC_IP=10.0.0.1
TB_POD_CIDR=10.88.0.0/16
TB_POD_GATEWAY=10.88.0.1
TB_CNI_BRIDGE=tbcni0
TB_CNI_NETWORK=tradingbot
TB_ETCD_CLIENT_PORT=12379
TB_ETCD_PEER_PORT=12380
TB_APISERVER_PORT=16443
TB_KUBELET_PORT=10250
TB_KUBELET_HEALTHZ_PORT=10248

# --- Runtime paths (all under TB_CLUSTER_DIR) ----------------------------------
TB_MARKER=.tradingbot-cluster # marks TB_CLUSTER_DIR as ours (cluster-down checks it)
TB_RUN_DIR=$TB_CLUSTER_DIR/run
TB_LOG_DIR=$TB_CLUSTER_DIR/logs
TB_PKI_DIR=$TB_CLUSTER_DIR/pki
TB_CONF_DIR=$TB_CLUSTER_DIR/config
TB_KUBECONFIG=$TB_CLUSTER_DIR/kubeconfig
TB_KUBECTL=$TB_CLUSTER_DIR/bin/kubectl
TB_AUDIT_LOG=$TB_LOG_DIR/audit.log
TB_ADMIN_TOKEN_FILE=$TB_PKI_DIR/admin.token
TB_CONTAINERD_DIR=$TB_CLUSTER_DIR/containerd
TB_CONTAINERD_SOCK=$TB_CONTAINERD_DIR/containerd.sock
TB_KUBELET_DIR=$TB_CLUSTER_DIR/kubelet
TB_CNI_CONF_DIR=$TB_CLUSTER_DIR/cni/net.d
TB_CNI_IPAM_DIR=$TB_CLUSTER_DIR/cni/ipam
# Sysctls kubelet / kube-proxy / we change; saved at start, restored by cluster-down.
TB_SYSCTLS=(
  net.ipv4.ip_forward
  net.bridge.bridge-nf-call-iptables
  net.ipv4.conf.all.route_localnet
  vm.overcommit_memory
  vm.panic_on_oom
  kernel.panic
  kernel.panic_on_oops
  kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes
)

# Daemons in start order (cluster-down stops them in reverse order).
TB_DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)

# --- Helpers ------------------------------------------------------------------

# log MESSAGE...: timestamped progress line on stderr.
log() {
  printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

die() {
  log "ERROR: $*"
  exit 1
}

# wait_for TIMEOUT_SECONDS DESCRIPTION COMMAND...: retries COMMAND every
# second until it succeeds; returns 1 (after logging) on timeout.
wait_for() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for: $what"
      return 1
    fi
    sleep 1
  done
}

# pidfile_pid NAME: prints the pid recorded for daemon NAME (empty if none).
pidfile_pid() {
  local f=$TB_RUN_DIR/$1.pid
  if [[ -s $f ]]; then cat "$f"; fi
}

# pid_matches PID NAME: true if PID is alive and its command line still
# mentions NAME (guards against pid reuse after a crash).
pid_matches() {
  local pid=$1 name=$2
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

# daemon_running NAME: true if the daemon NAME from our pid file is alive.
daemon_running() {
  pid_matches "$(pidfile_pid "$1")" "$1"
}

# start_daemon NAME COMMAND...: starts COMMAND in its own session (so it
# survives the calling shell and terminal), stdout+stderr to
# $TB_LOG_DIR/NAME.log, pid to $TB_RUN_DIR/NAME.pid.
start_daemon() {
  local name=$1
  shift
  mkdir -p "$TB_RUN_DIR" "$TB_LOG_DIR"
  # Not a process-group leader here, so setsid execs COMMAND in place and $!
  # is the daemon's own pid.
  setsid "$@" </dev/null >>"$TB_LOG_DIR/$name.log" 2>&1 &
  echo $! >"$TB_RUN_DIR/$name.pid"
  log "started $name (pid $!, log $TB_LOG_DIR/$name.log)"
}

# kill_pid PID [TIMEOUT]: SIGTERM, wait up to TIMEOUT seconds (default 10),
# then SIGKILL. Succeeds if the process is gone.
kill_pid() {
  local pid=$1 timeout=${2:-10}
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + timeout))
  while kill -0 "$pid" 2>/dev/null && [[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]]; do
    if ((SECONDS >= deadline)); then
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.2
  done
}

# stop_daemon NAME [TIMEOUT]: stops the daemon recorded in NAME's pid file
# (only if the pid still belongs to it) and removes the pid file.
stop_daemon() {
  local name=$1 timeout=${2:-10} pid
  pid=$(pidfile_pid "$name")
  if pid_matches "$pid" "$name"; then
    log "stopping $name (pid $pid)"
    kill_pid "$pid" "$timeout"
  fi
  rm -f "$TB_RUN_DIR/$name.pid"
}

# our_pids: pids of leftover cluster processes whose pid files may be gone:
# processes named like one of our daemons (etcd, kube-*, containerd,
# containerd-shim*) whose command line mentions TB_CLUSTER_DIR (config paths,
# data dirs, the containerd socket). A system etcd/containerd never matches.
our_pids() {
  local p comm
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
    case $comm in
      etcd | kube-* | containerd | containerd-shim*) ;;
      *) continue ;;
    esac
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$TB_CLUSTER_DIR/"; then
      echo "$p"
    fi
  done
}

# descendants PID: all descendant pids of PID (children first, then theirs).
descendants() {
  local children c
  children=$(ps -e -o pid=,ppid= | awk -v p="$1" '$2 == p {print $1}')
  for c in $children; do
    echo "$c"
    descendants "$c"
  done
}

# kubectl wrapper bound to the admin kubeconfig.
tb_kubectl() {
  "$TB_K8S_BIN/kubectl" --kubeconfig "$TB_KUBECONFIG" "$@"
}

# ctr wrapper bound to our containerd socket and the CRI namespace.
tb_ctr() {
  ctr --address "$TB_CONTAINERD_SOCK" --namespace k8s.io "$@"
}

# k8s_cache_complete: true if every built artefact is in the cache.
k8s_cache_complete() {
  local b
  for b in "${TB_K8S_BINARIES[@]}"; do
    [[ -x $TB_K8S_BIN/$b && -s $TB_K8S_BIN/$b ]] || return 1
  done
  [[ -s $TB_PAUSE_TAR ]]
}

# with_cluster_lock SCRIPT ARGS...: re-executes SCRIPT under an exclusive
# lock so concurrent cluster-up/cluster-down runs take turns. flock -o: the
# daemons the script starts do not inherit the lock. Scripts run from a
# locked script (cluster-up → cluster-down) see TB_CLUSTER_LOCKED and go on.
with_cluster_lock() {
  if [[ -z ${TB_CLUSTER_LOCKED:-} ]]; then
    mkdir -p "$(dirname "$TB_CLUSTER_DIR")"
    TB_CLUSTER_LOCKED=1 exec flock -o -w 900 "${TB_CLUSTER_DIR%/}.lock" "$@"
  fi
}

# must_be_root: the cluster scripts manipulate mounts, iptables and links.
must_be_root() {
  [[ $(id -u) == 0 ]] || die "$0 must run as root"
}

# cluster_running: true if the local cluster's API server answers /readyz.
cluster_running() {
  [[ -f $TB_KUBECONFIG ]] && "$TB_KUBECTL" --kubeconfig "$TB_KUBECONFIG" get --raw /readyz >/dev/null 2>&1
}

# --- Who uses the cluster, and who may stop it ---------------------------------------------
# A run that starts the cluster stops it again when it ends, but never a cluster another run
# started, and never while another run (or a demo) still uses it:
#   * cluster-up.sh records who started the cluster in $TB_STARTED_BY ($TB_RUN_ID, exported by
#     the starting script; "by hand" otherwise);
#   * every run using the cluster claims it: a file in $TB_USERS_DIR named after the run,
#     holding the pid the claim lives with (empty for a demo, which lives until demo-down).
TB_USERS_DIR=${TB_CLUSTER_DIR%/}.users
# Held exclusively by demo-down while it decides to delete the TradingBot CRD and deletes it,
# and shared by every test while it creates its namespace (tests/harness: Cluster::namespace),
# so a test namespace is either seen by that decision or created after the deletion began
# (and the test then waits for it and installs the CRD again).
TB_CRD_LOCK=${TB_CLUSTER_DIR%/}.crd.lock
TB_STARTED_BY=$TB_CLUSTER_DIR/started-by

# cluster_claim NAME [PID]: NAME uses the cluster (while PID runs, when given).
cluster_claim() {
  mkdir -p "$TB_USERS_DIR"
  printf '%s\n' "${2:-}" >"$TB_USERS_DIR/$1"
}

# cluster_release NAME: NAME no longer uses the cluster.
cluster_release() {
  rm -f "$TB_USERS_DIR/$1"
}

# cluster_other_users NAME: the live claims other than NAME, one a line (lapsed ones removed).
cluster_other_users() {
  local f name pid
  for f in "$TB_USERS_DIR"/*; do
    [[ -f $f ]] || continue
    name=$(basename "$f")
    [[ $name == "$1" ]] && continue
    pid=$(cat "$f" 2>/dev/null || true)
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$f"
      continue
    fi
    echo "$name"
  done
}

# cluster_started_by: the run that started the running cluster (empty when it is down).
cluster_started_by() {
  cat "$TB_STARTED_BY" 2>/dev/null || true
}

# stop_cluster_if_ours NAME: stops the cluster if NAME started it and nobody else uses it;
# otherwise says why it stays. KEEP_CLUSTER=1 always keeps it. TB_CLUSTER_DOWN overrides the
# stop command (tests of this logic).
stop_cluster_if_ours() {
  local name=$1 starter others
  starter=$(cluster_started_by)
  [[ -n $starter ]] || return 0
  if [[ $starter != "$name" ]]; then
    log "keeping the cluster: $starter started it, not $name"
    return 0
  fi
  if [[ -n ${KEEP_CLUSTER:-} ]]; then
    log "keeping the cluster this run started (KEEP_CLUSTER=$KEEP_CLUSTER)"
    return 0
  fi
  others=$(cluster_other_users "$name" | tr '\n' ' ')
  if [[ -n $others ]]; then
    log "keeping the cluster this run started: still used by ${others% }"
    return 0
  fi
  printf '\n==> stopping the cluster this run started\n' >&2
  "${TB_CLUSTER_DOWN:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/cluster-down.sh}" || true
}

# claim_cluster_for_this_run: the calling script uses the cluster until it exits. Its run id
# ($TB_RUN_ID, recorded by cluster-up.sh if this run starts the cluster) is the script's name
# and pid; at exit the claim is released and the cluster stopped if this run started it and no
# one else uses it.
claim_cluster_for_this_run() {
  TB_RUN_ID="$(basename "$0")-$$"
  export TB_RUN_ID
  cluster_claim "$TB_RUN_ID" $$
  trap 'cluster_release "$TB_RUN_ID"; stop_cluster_if_ours "$TB_RUN_ID"' EXIT
}

# ignored_tests LOG: the `cargo test` summary lines of LOG that report ignored (skipped) tests.
ignored_tests() {
  grep -E '^test result: .* [1-9][0-9]* ignored' "$1" || true
}
