#!/usr/bin/env bash
# Starts a real single-node Kubernetes v1.20.2 cluster on this machine:
#   etcd → kube-apiserver → kube-controller-manager → kube-scheduler →
#   containerd (+ pause image, CNI bridge) → kubelet → kube-proxy
#
# All state lives in $TB_CLUSTER_DIR (see lib.sh), pid files in run/, logs in
# logs/. Nothing of the system's own etcd/containerd/CNI configuration is used
# or changed: own ports, own containerd socket/root/state/runc root, own CNI
# conf dir and bridge.
#
# Idempotent: a healthy running cluster is left alone (fast exit 0); any
# other leftover state (crashed or killed run) is removed by cluster-down.sh
# first and the cluster is started fresh.
#
# Ends by printing the line to use it:  export KUBECONFIG=$TB_CLUSTER_DIR/kubeconfig
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"
must_be_root
with_cluster_lock "$HERE/$(basename "$0")" "$@"

ADMIN_USER="admin"

# --- health ---------------------------------------------------------------------

apiserver_ready() {
  curl -fsS --max-time 3 --cacert "$TB_PKI_DIR/ca.crt" \
    -H "Authorization: Bearer $(cat "$TB_ADMIN_TOKEN_FILE")" \
    "https://127.0.0.1:$TB_APISERVER_PORT/readyz" >/dev/null
}

node_ready() {
  [[ $(tb_kubectl --request-timeout=5s get node "$TB_NODE_NAME" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

# The ServiceAccount admission of 1.20 rejects pods until the default
# ServiceAccount has its token secret, so wait for that, not just the object.
default_sa_ready() {
  [[ -n $(tb_kubectl -n default get serviceaccount default -o 'jsonpath={.secrets[0].name}' 2>/dev/null) ]]
}

# kube-proxy has programmed the `kubernetes` Service (pods can reach the API).
kube_proxy_ready() {
  iptables -w -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 'default/kubernetes:https'
}

# Every daemon runs, with the layout these scripts describe.
cluster_in_place() {
  local d
  for d in "${TB_DAEMONS[@]}"; do
    daemon_running "$d" || return 1
  done
  [[ -s $TB_ADMIN_TOKEN_FILE && -x $TB_KUBECTL ]] || return 1
  # A cluster started with another network layout (e.g. an older, smaller Service range) is
  # not the one these scripts describe: start it fresh.
  grep -qxF "TB_SERVICE_CIDR=$TB_SERVICE_CIDR" "$TB_CLUSTER_DIR/cluster.env" 2>/dev/null
}

cluster_answers() {
  apiserver_ready && node_ready
}

# A running cluster is given a minute to answer before it is started afresh: under load (two
# test lanes on two cores) one /readyz can take over 3 s, and starting afresh stops every pod
# of every run using it.
cluster_healthy() {
  cluster_in_place || return 1
  cluster_answers && return 0
  log "the running cluster does not answer yet; giving it 60 s before starting it afresh"
  wait_for 60 "the running cluster to answer" cluster_answers
}

print_usage_hint() {
  cat <<EOF

Cluster is up (Kubernetes $TB_K8S_VERSION, node $TB_NODE_NAME).
  kubectl:     $TB_KUBECTL
  containerd:  ctr --address $TB_CONTAINERD_SOCK -n k8s.io ...
  audit log:   $TB_AUDIT_LOG
  logs:        $TB_LOG_DIR
  settings:    $TB_CLUSTER_DIR/cluster.env
export KUBECONFIG=$TB_KUBECONFIG
EOF
}

if cluster_healthy; then
  log "cluster already up and healthy"
  print_usage_hint
  exit 0
fi

t_start=$SECONDS
"$HERE/install-deps.sh"
"$HERE/build-kubernetes.sh"

# Clean slate: stale pid files, leftover processes, mounts, iptables chains,
# bridge, lo address from a crashed or killed run. No-op when nothing is there.
"$HERE/cluster-down.sh"

t_boot=$SECONDS
mkdir -p "$TB_CLUSTER_DIR"
touch "$TB_CLUSTER_DIR/$TB_MARKER"
# Who started this cluster: only that run stops it again (lib.sh, stop_cluster_if_ours).
printf '%s\n' "${TB_RUN_ID:-by hand}" >"$TB_STARTED_BY"
mkdir -p "$TB_RUN_DIR" "$TB_LOG_DIR" "$TB_PKI_DIR" "$TB_CONF_DIR" "$TB_CLUSTER_DIR/bin" \
  "$TB_CONTAINERD_DIR" "$TB_KUBELET_DIR" "$TB_CNI_CONF_DIR" "$TB_CNI_IPAM_DIR"
chmod 700 "$TB_PKI_DIR"
ln -sfn "$TB_K8S_BIN/kubectl" "$TB_KUBECTL"

# On failure, show where to look (the state is left for inspection; the
# next cluster-up or cluster-down cleans it).
trap 'rc=$?; ((rc == 0)) || log "cluster-up failed; logs in $TB_LOG_DIR; clean up with $HERE/cluster-down.sh"' EXIT

# start_failed NAME: prints the tail of NAME's log and fails.
start_failed() {
  tail -n 40 "$TB_LOG_DIR/$1.log" >&2 || true
  die "$1 did not become ready"
}

# --- host network and sysctls ------------------------------------------------------

# Remember the sysctls kubelet/kube-proxy/we change; cluster-down restores them.
save_sysctls() {
  local key
  for key in "${TB_SYSCTLS[@]}"; do
    if [[ -e /proc/sys/${key//.//} ]]; then
      echo "$key=$(cat "/proc/sys/${key//.//}")"
    fi
  done >"$TB_RUN_DIR/sysctl.orig"
}

setup_host_network() {
  save_sysctls
  # Node address: kubelet --node-ip and the apiserver's advertise address.
  # (dummy interfaces are not available in this kernel; lo works.)
  ip addr add "$TB_NODE_IP/32" dev lo
  sysctl -q -w net.ipv4.ip_forward=1
  # Bridged pod-to-pod traffic must pass iptables for Service DNAT replies.
  sysctl -q -w net.bridge.bridge-nf-call-iptables=1
}

# --- PKI --------------------------------------------------------------------------------

# sign_cert NAME SUBJECT EXTENSIONS: key + certificate signed by our CA.
sign_cert() {
  local name=$1 subject=$2 ext=$3 dir=$TB_PKI_DIR
  openssl genrsa -out "$dir/$name.key" 2048 2>/dev/null
  openssl req -new -key "$dir/$name.key" -subj "$subject" -out "$dir/$name.csr"
  printf '%s\n' "$ext" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

generate_pki() {
  local dir=$TB_PKI_DIR
  log "generating CA, certificates, service-account key and tokens"
  openssl genrsa -out "$dir/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 -subj "/CN=tradingbot-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$dir/ca.crt"
  # API server serving certificate: every name/IP a client may use.
  sign_cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=IP:127.0.0.1,IP:$TB_NODE_IP,IP:$TB_KUBERNETES_SVC_IP,IP:$TB_POD_GATEWAY,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # Client certificate the API server presents to the kubelet (logs/exec).
  sign_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  # Service-account token signing key.
  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null

  # Static bearer tokens, one identity per component so the audit log tells
  # them apart: token,user,uid,"groups"
  local admin kubelet cm sched proxy
  admin=$(openssl rand -hex 24)
  kubelet=$(openssl rand -hex 24)
  cm=$(openssl rand -hex 24)
  sched=$(openssl rand -hex 24)
  proxy=$(openssl rand -hex 24)
  cat >"$dir/tokens.csv" <<EOF
$admin,$ADMIN_USER,admin,"system:masters"
$kubelet,system:node:$TB_NODE_NAME,kubelet,"system:nodes"
$cm,system:kube-controller-manager,kube-controller-manager
$sched,system:kube-scheduler,kube-scheduler
$proxy,system:kube-proxy,kube-proxy
EOF
  echo "$admin" >"$TB_ADMIN_TOKEN_FILE"

  write_kubeconfig "$TB_KUBECONFIG" "$ADMIN_USER" "$admin"
  write_kubeconfig "$TB_CONF_DIR/kubelet.kubeconfig" "system:node:$TB_NODE_NAME" "$kubelet"
  write_kubeconfig "$TB_CONF_DIR/controller-manager.kubeconfig" system:kube-controller-manager "$cm"
  write_kubeconfig "$TB_CONF_DIR/scheduler.kubeconfig" system:kube-scheduler "$sched"
  write_kubeconfig "$TB_CONF_DIR/kube-proxy.kubeconfig" system:kube-proxy "$proxy"
}

# write_kubeconfig FILE USER TOKEN
write_kubeconfig() {
  local file=$1 user=$2 token=$3
  (
    umask 077
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tradingbot
  cluster:
    server: https://127.0.0.1:$TB_APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$TB_PKI_DIR/ca.crt")
users:
- name: $user
  user:
    token: $token
contexts:
- name: tradingbot
  context:
    cluster: tradingbot
    user: $user
    namespace: default
current-context: tradingbot
EOF
  )
}

# --- control plane ------------------------------------------------------------------------

start_etcd() {
  start_daemon etcd /usr/bin/etcd \
    --name tb-etcd \
    --data-dir "$TB_CLUSTER_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$TB_ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$TB_ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$TB_ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$TB_ETCD_PEER_PORT" \
    --initial-cluster "tb-etcd=http://127.0.0.1:$TB_ETCD_PEER_PORT" \
    --initial-cluster-state new \
    --logger zap --log-outputs stderr
  wait_for 30 "etcd health" curl -fsS "http://127.0.0.1:$TB_ETCD_CLIENT_PORT/health" || start_failed etcd
}

# Audit: one Metadata event per write request, stage ResponseComplete only
# (kubectl exec/attach count as "create" of pods/exec, pods/attach);
# nothing for reads. Tests count write requests per user from this log.
write_audit_policy() {
  cat >"$TB_CONF_DIR/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
EOF
}

start_apiserver() {
  write_audit_policy
  start_daemon kube-apiserver "$TB_K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$TB_ETCD_CLIENT_PORT" \
    --bind-address 0.0.0.0 \
    --secure-port "$TB_APISERVER_PORT" \
    --insecure-port 0 \
    --advertise-address "$TB_NODE_IP" \
    --cert-dir "$TB_PKI_DIR/apiserver-generated" \
    --tls-cert-file "$TB_PKI_DIR/apiserver.crt" \
    --tls-private-key-file "$TB_PKI_DIR/apiserver.key" \
    --client-ca-file "$TB_PKI_DIR/ca.crt" \
    --token-auth-file "$TB_PKI_DIR/tokens.csv" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$TB_PKI_DIR/sa.pub" \
    --service-account-signing-key-file "$TB_PKI_DIR/sa.key" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --allow-privileged=true \
    --service-cluster-ip-range "$TB_SERVICE_CIDR" \
    --kubelet-preferred-address-types InternalIP \
    --kubelet-client-certificate "$TB_PKI_DIR/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$TB_PKI_DIR/apiserver-kubelet-client.key" \
    --audit-policy-file "$TB_CONF_DIR/audit-policy.yaml" \
    --audit-log-path "$TB_AUDIT_LOG" \
    --audit-log-maxsize 200
  wait_for 60 "kube-apiserver /readyz" apiserver_ready || start_failed kube-apiserver
}

start_controller_manager() {
  # Each controller uses its own service account (visible in the audit log).
  start_daemon kube-controller-manager "$TB_K8S_BIN/kube-controller-manager" \
    --kubeconfig "$TB_CONF_DIR/controller-manager.kubeconfig" \
    --leader-elect=false \
    --bind-address 127.0.0.1 \
    --port 0 \
    --root-ca-file "$TB_PKI_DIR/ca.crt" \
    --service-account-private-key-file "$TB_PKI_DIR/sa.key" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file "$TB_PKI_DIR/ca.crt" \
    --cluster-signing-key-file "$TB_PKI_DIR/ca.key" \
    --service-cluster-ip-range "$TB_SERVICE_CIDR" \
    --controllers '*,-nodeipam'
}

start_scheduler() {
  start_daemon kube-scheduler "$TB_K8S_BIN/kube-scheduler" \
    --kubeconfig "$TB_CONF_DIR/scheduler.kubeconfig" \
    --leader-elect=false \
    --bind-address 127.0.0.1 \
    --port 0
}

# --- node ------------------------------------------------------------------------------------

start_containerd() {
  local d=$TB_CONTAINERD_DIR
  cat >"$d/config.toml" <<EOF
# containerd for the tradingbot test cluster: private socket, root, state,
# runc root and CNI config, so it never collides with a system containerd.
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$TB_CONTAINERD_SOCK"

[ttrpc]
  address = "$TB_CONTAINERD_SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$TB_PAUSE_IMAGE"
  # Required here: the machine does not grant CAP_SYS_RESOURCE; without this
  # every sandbox fails ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  # Keep pod network namespace mounts under our state dir (not /var/run/netns).
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$d/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$TB_CNI_CONF_DIR"
    max_conf_num = 1
EOF
  start_daemon containerd /usr/bin/containerd --config "$d/config.toml"
  wait_for 30 "containerd socket" tb_ctr version || start_failed containerd
  log "importing pause image $TB_PAUSE_IMAGE"
  tb_ctr images import "$TB_PAUSE_TAR" >/dev/null
}

# CNI: bridge + host-local IPAM + portmap. containerd adds the loopback
# interface itself (loopback plugin from bin_dir).
write_cni_config() {
  cat >"$TB_CNI_CONF_DIR/10-$TB_CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$TB_CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$TB_CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$TB_POD_CIDR", "gateway": "$TB_POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$TB_CNI_IPAM_DIR"
      }
    },
    {
      "type": "portmap",
      "capabilities": {"portMappings": true}
    }
  ]
}
EOF
}

start_kubelet() {
  cat >"$TB_CONF_DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# API only on the node address; only clients with a certificate from our CA
# (the API server) may use it.
address: $TB_NODE_IP
port: $TB_KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $TB_KUBELET_HEALTHZ_PORT
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: $TB_PKI_DIR/ca.crt
authorization:
  mode: AlwaysAllow
# This machine: cgroup v1, no systemd, swap allowed.
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
# Images are imported, never pulled: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# Room for the live-fleet benchmark's real bot pods (make bench); the default is 110.
maxPods: 250
# Compute node status often (it is only written when it changes), so the node
# turns Ready a few seconds after registering instead of ~10 s.
nodeStatusUpdateFrequency: 2s
EOF
  start_daemon kubelet "$TB_K8S_BIN/kubelet" \
    --config "$TB_CONF_DIR/kubelet-config.yaml" \
    --kubeconfig "$TB_CONF_DIR/kubelet.kubeconfig" \
    --container-runtime remote \
    --container-runtime-endpoint "unix://$TB_CONTAINERD_SOCK" \
    --pod-infra-container-image "$TB_PAUSE_IMAGE" \
    --hostname-override "$TB_NODE_NAME" \
    --node-ip "$TB_NODE_IP" \
    --root-dir "$TB_KUBELET_DIR" \
    --cert-dir "$TB_KUBELET_DIR/pki"
}

start_kube_proxy() {
  # conntrack-* = 0: leave the host's conntrack sysctls alone.
  start_daemon kube-proxy "$TB_K8S_BIN/kube-proxy" \
    --kubeconfig "$TB_CONF_DIR/kube-proxy.kubeconfig" \
    --proxy-mode iptables \
    --cluster-cidr "$TB_POD_CIDR" \
    --hostname-override "$TB_NODE_NAME" \
    --bind-address "$TB_NODE_IP" \
    --metrics-bind-address 127.0.0.1:10249 \
    --healthz-bind-address 127.0.0.1:10256 \
    --conntrack-max-per-core 0 \
    --conntrack-tcp-timeout-established 0 \
    --conntrack-tcp-timeout-close-wait 0
}

# Paths and addresses for test code, as KEY=VALUE lines (shell- and
# dotenv-compatible): $TB_CLUSTER_DIR/cluster.env
write_env_file() {
  cat >"$TB_CLUSTER_DIR/cluster.env" <<EOF
KUBECONFIG=$TB_KUBECONFIG
TB_KUBECTL=$TB_KUBECTL
TB_APISERVER_URL=https://127.0.0.1:$TB_APISERVER_PORT
TB_CA_FILE=$TB_PKI_DIR/ca.crt
TB_ADMIN_TOKEN_FILE=$TB_ADMIN_TOKEN_FILE
TB_AUDIT_LOG=$TB_AUDIT_LOG
TB_CONTAINERD_SOCK=$TB_CONTAINERD_SOCK
TB_NODE_NAME=$TB_NODE_NAME
TB_NODE_IP=$TB_NODE_IP
TB_POD_CIDR=$TB_POD_CIDR
TB_POD_GATEWAY=$TB_POD_GATEWAY
TB_SERVICE_CIDR=$TB_SERVICE_CIDR
TB_KUBERNETES_SVC_IP=$TB_KUBERNETES_SVC_IP
EOF
}

# --- go ---------------------------------------------------------------------------------------

setup_host_network
generate_pki
start_etcd
start_apiserver
log "kube-apiserver ready ($((SECONDS - t_boot))s after start)"
start_controller_manager
start_scheduler
write_cni_config
start_containerd
start_kubelet
start_kube_proxy

wait_for 120 "node $TB_NODE_NAME Ready" node_ready || start_failed kubelet
log "node $TB_NODE_NAME Ready ($((SECONDS - t_boot))s after start)"
wait_for 60 "default ServiceAccount with token" default_sa_ready || start_failed kube-controller-manager
wait_for 60 "kube-proxy rules for the kubernetes Service" kube_proxy_ready || start_failed kube-proxy
for d in "${TB_DAEMONS[@]}"; do
  daemon_running "$d" || start_failed "$d"
done

write_env_file
log "cluster up in $((SECONDS - t_start))s (boot $((SECONDS - t_boot))s)"
print_usage_hint
