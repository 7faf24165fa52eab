# A worker node that runs pods: kubelet, containerd + runc, kube-proxy and pod networking, in a
# network namespace of its own on the gluster nodes' bridge (so its iptables rules, forwarding
# and ports are its own), sharing the host's mount namespace (so the FUSE mounts the kubelet makes
# are the host's, as on a real node). kube-scheduler runs with the control plane.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/images.sh"

NODE_DIR=$STATE_DIR/node
KUBELET_DIR=$NODE_DIR/kubelet
CONTAINERD_SOCK=$NODE_DIR/containerd/containerd.sock
# The kubelet changes these at start; they are put back when the environment goes down.
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Fixed paths the kubelet and containerd write whatever their flags say; only the entries this
# environment added are removed.
SHARED_DIRS=(/var/log/pods /var/log/containers /run/containerd)

# The node's daemons run in its network namespace; `ip netns exec` would also give them a mount
# namespace of their own, which the kubelet's mounts must not be in.
IN_WORKER=(nsenter --net="/run/netns/$WORKER")
ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

worker_network_up() {
  ip netns add "$WORKER"
  ip link add gpveth-w type veth peer name eth0 netns "$WORKER"
  ip link set gpveth-w master "$BRIDGE" up
  ip -n "$WORKER" addr add "$WORKER_IP/24" dev eth0
  ip -n "$WORKER" link set eth0 up
  ip -n "$WORKER" link set lo up
  ip -n "$WORKER" route add default via "$HOST_IP"
  # Pod addresses are reached through the node, as on a routed cluster network (Prometheus on
  # the host scrapes them).
  ip route add "$POD_CIDR" via "$WORKER_IP" dev "$BRIDGE"
}

write_node_configs() {
  mkdir -p "$NODE_DIR"/{containerd,cni,cni-ipam,runc} "$KUBELET_DIR"
  cat >"$NODE_DIR/containerd.toml" <<EOF
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$NODE_DIR/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This machine's processes lack CAP_SYS_RESOURCE: nobody may lower oom_score_adj, and the
  # kubelet asks for -998 for the sandbox (runc then fails with "can't get final child's PID").
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "$NODE_DIR/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni"
EOF
  cat >"$NODE_DIR/cni/10-gp-pods.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "gp-pods",
  "plugins": [
    {"type": "bridge", "bridge": "gpcni0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "dataDir": "$NODE_DIR/cni-ipam",
              "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $WORKER_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $KUBE_DIR/ca.crt}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
makeIPTablesUtilChains: false
# Only memory pressure evicts: the test disk's fill level is not the node's business.
evictionHard: {memory.available: "1Mi"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
resolvConf: /etc/resolv.conf
# kubelet_volume_stats_* are refreshed this often (1 min by default).
volumeStatsAggPeriod: 5s
# A changed ConfigMap (the topology) reaches its mounts within this (1 min by default).
syncFrequency: 10s
EOF
}

save_sysctls() {
  local s
  for s in "${KUBELET_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$STATE_DIR/sysctls.saved"
  for s in "${SHARED_DIRS[@]}"; do
    if [ -d "$s" ]; then ls -A "$s" | sed "s|^|$s/|"; else echo "$s"; fi
  done >"$STATE_DIR/shared-dirs.before"
}

worker_up() {
  log "starting the worker node $WORKER ($WORKER_IP; pods in $POD_CIDR)"
  worker_network_up
  write_node_configs
  save_sysctls
  # Bidirectional mount propagation (the CSI node plugin's mounts reaching the kubelet) needs
  # a shared mount; / is private here.
  mount --bind "$KUBELET_DIR" "$KUBELET_DIR"
  mount --make-rshared "$KUBELET_DIR"
  start_bg containerd "${IN_WORKER[@]}" /usr/bin/containerd --config "$NODE_DIR/containerd.toml"
  wait_for 30 containerd ctr_ version
  local img
  for img in "$IMAGE_CACHE/pause.tar" "$IMAGE_CACHE/shell-2.tar" "$STATE_DIR/provisioner.tar"; do
    ctr_ images import "$img" >/dev/null
  done
  start_bg kube-proxy "${IN_WORKER[@]}" "$K8S_BIN/kube-proxy" --kubeconfig "$KUBE_DIR/kube-proxy.kubeconfig" \
    --hostname-override "$WORKER" --bind-address "$WORKER_IP" --proxy-mode iptables \
    --cluster-cidr "$POD_CIDR" --conntrack-max-per-core 0 \
    --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0 \
    --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256
  start_bg kubelet "${IN_WORKER[@]}" "$K8S_BIN/kubelet" --config "$NODE_DIR/kubelet.yaml" \
    --kubeconfig "$KUBE_DIR/kubelet.kubeconfig" --root-dir "$KUBELET_DIR" \
    --cert-dir "$KUBELET_DIR/pki" --hostname-override "$WORKER" --node-ip "$WORKER_IP" \
    --container-runtime remote --container-runtime-endpoint "unix://$CONTAINERD_SOCK" \
    --containerd "$CONTAINERD_SOCK" --pod-infra-container-image "$PAUSE_IMAGE"
  wait_for 120 "node $WORKER Ready" worker_ready
}

worker_ready() {
  [ "$(kubectl get node "$WORKER" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
    ! kubectl get node "$WORKER" -o jsonpath='{.spec.taints[*].key}' | grep -q not-ready
}

# Stops the node and removes everything it made, also after a killed run: containers first
# (so their processes and mounts go), then the daemons, mounts, cgroups and leftovers.
worker_down() {
  if [ -S "$CONTAINERD_SOCK" ]; then
    pkill -9 -f -- "$K8S_BIN/kubelet" 2>/dev/null || true
    local t
    for t in $(ctr_ tasks list -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$t" 2>/dev/null || true; done
  fi
  local pids
  pids=$(ip netns pids "$WORKER" 2>/dev/null || true)
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  worker_cgroups_kill
  # Mounts under the node's directories (pod volumes, container root filesystems, netns files),
  # deepest first.
  awk -v d="$NODE_DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ip link del gpveth-w 2>/dev/null || true
  ip netns del "$WORKER" 2>/dev/null || true
  if [ -f "$STATE_DIR/sysctls.saved" ]; then
    while IFS= read -r kv; do sysctl -qw "$kv" || true; done <"$STATE_DIR/sysctls.saved"
    rm -f "$STATE_DIR/sysctls.saved"
  fi
  if [ -f "$STATE_DIR/shared-dirs.before" ]; then
    local d e
    for d in "${SHARED_DIRS[@]}"; do
      if grep -qx "$d" "$STATE_DIR/shared-dirs.before"; then
        rm -rf --one-file-system "$d"
      elif [ -d "$d" ]; then
        for e in "$d"/* "$d"/.[!.]*; do
          [ -e "$e" ] || [ -L "$e" ] || continue
          grep -qxF "$e" "$STATE_DIR/shared-dirs.before" || rm -rf --one-file-system "$e"
        done
      fi
    done
    rm -f "$STATE_DIR/shared-dirs.before"
  fi
}

# Processes left in the containers' cgroups (a killed run's pods) are killed and the cgroups
# removed. Without QoS cgroups containerd puts each container in /k8s.io/<id>; only the ids this
# node's containerd ran (its task directories) are touched. So are the FUSE clients the CSI node
# plugin started outside its container (src/csi/mounts.rs).
worker_cgroups_kill() {
  local tasks=$NODE_DIR/containerd/state/io.containerd.runtime.v2.task/k8s.io id c
  for id in $(ls "$tasks" 2>/dev/null); do
    for c in /sys/fs/cgroup/*/k8s.io/"$id"; do cgroup_remove "$c"; done
  done
  rmdir /sys/fs/cgroup/*/k8s.io 2>/dev/null || true
  for c in /sys/fs/cgroup/*/glusterfs-csi-fuse; do cgroup_remove "$c"; done
}

cgroup_remove() {
  local c=$1 deadline=$((SECONDS + 5))
  [ -d "$c" ] || return 0
  xargs -r kill -9 <"$c/cgroup.procs" 2>/dev/null || true
  until rmdir "$c" 2>/dev/null || [ $SECONDS -ge $deadline ]; do sleep 0.1; done
}
