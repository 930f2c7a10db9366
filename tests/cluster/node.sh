# tests/cluster/node.sh -- the suite's one real node, sourced by tests/cluster/ctl.
#
# A kubelet with Debian's containerd and runc, CNI from Debian's containernetworking-plugins (a bridge
# with host-local addresses), kube-proxy in iptables mode, and CoreDNS, all as host processes beside the
# control plane. Pods get addresses on a bridge of their own; the node's address is the bridge's, where
# the API server, the kubelet and CoreDNS listen, so that Pods reach all three and `kubectl logs/exec`
# reach the kubelet. Red's images come from tests/cluster/images/build, loaded into containerd.
#
# This sandbox's two quirks (see the real-Pods issue): containerd's CRI must not give containers negative
# OOM score adjustments (restrict_oom_score_adj), and the kubelet runs on cgroup v1 without QoS cgroups.
#
# One such node per machine: kube-proxy's iptables chains and the bridge are machine-wide, so a second
# checkout's `ctl up` refuses to start one while another runs (RED_CLUSTER_NODE=0 starts none).

NODE_NAME=red-node
NODE_BRIDGE=redbr0
NODE_IP=10.88.0.1
POD_CIDR=10.88.0.0/24
NODE_OWNER=/run/red-test-node.owner
# containerd's images and layers outlive `ctl down` (a warm `up` loads only what changed)
CONTAINERD_ROOT=$(realpath -m "${RED_CONTAINERD_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/red-test/containerd}")
CONTAINERD_SOCK=$STATE/containerd/containerd.sock
NODE_COMPONENTS=(containerd kubelet kube-proxy coredns provisioner)

node_enabled() { [ "${RED_CLUSTER_NODE:-1}" != 0 ]; }

node_build() {
  build_one node k8s.io/kubernetes/cmd/kubelet=kubelet k8s.io/kubernetes/cmd/kube-proxy=kube-proxy
  build_one coredns red.test/cluster/coredns=coredns
  build_one provisioner red.test/cluster/provisioner=red-provisioner
}

node_tools() {
  need_tool ip iproute2
  need_tool iptables iptables
  need_tool conntrack conntrack
  need_tool containerd containerd
  need_tool runc runc
  [ -x /usr/lib/cni/bridge ] || need_tool /usr/lib/cni/bridge containernetworking-plugins
  [ -x /usr/lib/cni/bridge ] || die "containernetworking-plugins did not install /usr/lib/cni/bridge"
}

node_claim() { # only one real node per machine
  local owner; owner=$(cat "$NODE_OWNER" 2>/dev/null || true)
  if [ -n "$owner" ] && [ "$owner" != "$STATE" ] && node_any_alive_in "$owner"; then
    die "another checkout's test cluster ($owner) runs this machine's real node; stop it first ('ctl down' there) or set RED_CLUSTER_NODE=0"
  fi
  echo "$STATE" > "$NODE_OWNER"
}

node_any_alive_in() { # node_any_alive_in STATE_DIR: one of that state dir's node processes runs
  local n
  for n in "${NODE_COMPONENTS[@]}"; do alive_in "$1" "$n" && return 0; done
  return 1
}

node_network() { # the bridge Pods attach to; its address is the node's
  sysctl -qw net.ipv4.ip_forward=1 || die "cannot enable IPv4 forwarding (net.ipv4.ip_forward)"
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    ip link add "$NODE_BRIDGE" type bridge || die "cannot create bridge $NODE_BRIDGE"
  fi
  # not `ip addr show | grep -q`: with pipefail, ip's SIGPIPE (grep done early) would read as "absent"
  [[ "$(ip -4 addr show dev "$NODE_BRIDGE")" == *" $NODE_IP/"* ]] || ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
}

node_pki() { # the kubelet's client and serving certificates (same CA as the control plane)
  [ -f "$PKI/kubelet.crt" ] && [ -f "$PKI/kubelet-serving.crt" ] && return 0
  mkcert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME"
  mkcert kubelet-serving "/CN=$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
}

write_if_changed() { # write_if_changed FILE < CONTENT: kube-proxy exits when its config file changes under it
  local tmp; tmp=$(mktemp "$1.XXXX")
  cat > "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}

node_config() {
  mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/kubelet" "$CONTAINERD_ROOT"
  write_kubeconfig "$STATE/kubelet.kubeconfig" kubelet "system:node:$NODE_NAME"
  write_if_changed "$STATE/containerd/config.toml" <<EOF
version = 2
root = "$CONTAINERD_ROOT"
state = "$STATE/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$(tests_images names | tail -1)"
  # this sandbox refuses negative OOM score adjustments: without this every Pod sandbox fails
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
  write_if_changed "$STATE/cni/net.d/10-red.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "red-test",
  "plugins": [
    {"type": "bridge", "bridge": "$NODE_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
  write_if_changed "$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
# this host has cgroup v1 and no systemd: cgroupfs, no QoS cgroups, no node-allocatable enforcement
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
# the images were loaded by hand and no registry could bring them back: never collect them, and
# never evict a Pod because a shared machine's disk is fuller than a cluster's would be
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
podLogsDir: $STATE/kubelet/pod-logs
resolvConf: ""
maxPods: 110
EOF
  write_if_changed "$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KCFG}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
# a Pod that reaches a Service backed by a Pod on the same bridge must get its replies back through the
# host's conntrack, and the bridge does not call iptables here: masquerade all Service traffic
iptables: {masqueradeAll: true, syncPeriod: 10s, minSyncPeriod: 0s}
# leave the host's conntrack sysctls alone
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
nodePortAddresses: ["$NODE_IP/32"]
EOF
  write_if_changed "$STATE/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:$DNS_HEALTH_PORT
    ready 127.0.0.1:$DNS_READY_PORT
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KCFG red-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
}
EOF
}

tests_images() { "$HERE/images/build" "$@"; }

node_ready() {
  [ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

node_up() {
  node_tools
  node_claim
  node_pki
  node_config
  start containerd containerd --config "$STATE/containerd/config.toml"
  wait_for containerd "its socket" ctr -a "$CONTAINERD_SOCK" version
  tests_images load "$CONTAINERD_SOCK" "$CONTAINERD_ROOT"
  # what the kubelet needs of the API: the legacy node role (Node authorizer + RBAC, as kubeadm's
  # clusters have it), and its Pods' logs and exec (the API server's client is the admin)
  kc apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: red-test-nodes}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:nodes"}]
EOF
  start kubelet "$BIN/kubelet" --config "$STATE/kubelet/config.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
    --root-dir "$STATE/kubelet/root" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --node-labels "red.dev/test-node=real" --v 1
  start kube-proxy "$BIN/kube-proxy" --config "$STATE/kube-proxy.yaml" --v 1
  start coredns "$BIN/coredns" -conf "$STATE/Corefile"
  wait_for kubelet "Node $NODE_NAME Ready" node_ready
  wait_for kube-proxy "/healthz" curl -sf --max-time 3 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
  wait_for coredns "/ready" curl -sf --max-time 3 "http://127.0.0.1:$DNS_READY_PORT/ready"
  # PVCs bind as on kind: a default StorageClass whose volumes are directories on this machine
  # (go/provisioner); they go with the cluster's etcd at `ctl down`
  start provisioner "$BIN/red-provisioner" -kubeconfig "$KCFG" -root "$STATE/volumes"
  kc apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: red.test/hostpath
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
}

purge_chains() { # remove this node's iptables rules and chains (kube-proxy, kubelet, CNI), nothing else
  local t rule chain
  for t in nat filter mangle; do
    { iptables -t "$t" -S 2>/dev/null | grep -E -- '-j (KUBE-|CNI-)' || true; } | sed 's/^-A /-D /' | while read -r rule; do
      eval "iptables -t $t $rule" 2>/dev/null || true
    done
    for chain in $(iptables -t "$t" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/ {print $2}'); do
      iptables -t "$t" -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -t "$t" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/ {print $2}'); do
      iptables -t "$t" -X "$chain" 2>/dev/null || true
    done
  done
}

node_down() { # after the kubelet stopped: kill every container, then undo mounts, links and rules
  local running=0
  alive containerd && running=1
  if [ $running = 1 ]; then
    local id
    for id in $(ctr -a "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$CONTAINERD_SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr -a "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      for _ in $(seq 1 25); do ctr -a "$CONTAINERD_SOCK" -n k8s.io tasks delete "$id" >/dev/null 2>&1 && break; sleep 0.2; done
    done
    for id in $(ctr -a "$CONTAINERD_SOCK" -n k8s.io containers ls -q 2>/dev/null); do
      ctr -a "$CONTAINERD_SOCK" -n k8s.io containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_one containerd
  # shims whose containerd is gone (a killed `up`) still hold their containers
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" 2>/dev/null || true
  local m
  for m in $(awk '{print $2}' /proc/mounts | grep -E "^($STATE|$CONTAINERD_ROOT|/run/netns/cni-|/var/run/netns/cni-)" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  rm -f /run/netns/cni-* 2>/dev/null || true
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  [ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  purge_chains
  # the kubelet links each container's log into /var/log/containers
  find /var/log/containers -maxdepth 1 -type l -lname "$STATE/kubelet/pod-logs/*" -delete 2>/dev/null || true
  rm -rf "$STATE/cni/ipam" "$STATE/kubelet/root" "$STATE/kubelet/pod-logs" "$STATE/containerd/state"
  [ "$(cat "$NODE_OWNER" 2>/dev/null)" = "$STATE" ] && rm -f "$NODE_OWNER"
  return 0
}
