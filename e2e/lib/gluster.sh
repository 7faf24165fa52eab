# Three GlusterFS nodes on this machine: each in its own network and mount namespace, with its
# own glusterd state, XFS brick roots on loop devices, and an sshd answering for it.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SSH_DIR=$STATE_DIR/ssh
TOPOLOGY=$STATE_DIR/topology.json
# Every node sees its brick roots at the same paths, as real servers usually do.
BRICK_ROOTS=(/srv/gluster/brick1 /srv/gluster/brick2)
# How each root keeps volumes to their size: tests and the benchmark use both kinds.
BRICK_LIMITS=(image quota)
# The benchmark asks for more room (GP_BRICK_SIZES): a burst of 30 1 GiB replica-3 volumes.
read -r -a BRICK_SIZES <<< "${GP_BRICK_SIZES:-10G 8G}"

node_dir() { echo "$STATE_DIR/nodes/${NODES[$1]}"; }
# Runs a command inside node i's network and mount namespaces.
node_exec() {
  local i=$1
  shift
  nsenter -t "$(cat "$STATE_DIR/pids/${NODES[$i]}-ns")" -n -m "$@"
}

network_up() {
  ip link add "$BRIDGE" type bridge
  ip addr add "$HOST_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  local i
  for i in "${!NODES[@]}"; do
    local ns=${NODES[$i]} veth=gpveth$i
    ip netns add "$ns"
    ip link add "$veth" type veth peer name eth0 netns "$ns"
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
  done
}

ssh_keys() {
  mkdir -p "$SSH_DIR"
  ssh-keygen -q -t ed25519 -N '' -C glusterfs-provisioner-e2e -f "$SSH_DIR/id_ed25519"
  cp "$SSH_DIR/id_ed25519.pub" "$SSH_DIR/authorized_keys"
  : >"$SSH_DIR/known_hosts"
}

node_up() {
  local i=$1 ns=${NODES[$1]} dir
  dir=$(node_dir "$1")
  mkdir -p "$dir"/{glusterd,run,log,etc,home,os-etc}
  # A real node's /var/lib/glusterd holds the option profiles Debian ships (`volume set V
  # group NAME` reads them); the node's own glusterd directory starts with them too.
  cp -r /var/lib/glusterd/groups "$dir/glusterd/"
  # The node's root gets its own empty home: the host's ~/.bashrc (which sshd's shell would
  # source for every remote command) belongs to the host, not to a gluster server.
  # Its own /etc too, as a real server has: image bricks are listed in the node's /etc/fstab,
  # which the node's boot (a test's restart of the node) mounts again.
  cp -a /etc/. "$dir/os-etc/"
  echo "# /etc/fstab of gluster node $ns" >"$dir/os-etc/fstab"
  local mounts="mount --bind $dir/os-etc /etc && mount --bind $dir/glusterd /var/lib/glusterd && mount --bind $dir/run /run && mount --bind $dir/log /var/log/glusterfs && mount --bind $dir/home /root"
  local r
  for r in "${!BRICK_ROOTS[@]}"; do
    local img=$dir/brick$r.img root=${BRICK_ROOTS[$r]}
    mkdir -p "$root"
    truncate -s "${BRICK_SIZES[$r]}" "$img"
    mkfs.xfs -q -f -i size=512 "$img"
    mounts+=" && mount -o loop $img $root"
  done
  # Its own /tmp too: glusterd writes temporary volfiles there named after the volume (every
  # peer at once, in an add-brick's commit), which nodes sharing the host's /tmp race on. The
  # state directory (configs, keys, logs) stays visible through it.
  mkdir -p "$dir/tmp" && chmod 1777 "$dir/tmp"
  if [[ $STATE_DIR == /tmp/* ]]; then
    mkdir -p "$dir/tmp/${STATE_DIR#/tmp/}"
    mounts+=" && mount --bind $STATE_DIR $dir/tmp/${STATE_DIR#/tmp/}"
  fi
  mounts+=" && mount --rbind $dir/tmp /tmp"
  # A holder process pins the node's mount namespace; every daemon of the node joins it.
  setsid ip netns exec "$ns" unshare -m --propagation private \
    sh -c "$mounts && mkdir -p /run/sshd /run/gluster && exec sleep infinity" \
    >"$STATE_DIR/logs/$ns-ns.log" 2>&1 </dev/null &
  echo $! >"$STATE_DIR/pids/$ns-ns"
  wait_for_node_mounts "$i"

  ssh-keygen -q -t ed25519 -N '' -C "$ns" -f "$dir/etc/ssh_host_ed25519_key"
  echo "$(node_ip "$i") $(cut -d' ' -f1,2 "$dir/etc/ssh_host_ed25519_key.pub")" >>"$SSH_DIR/known_hosts"
  cat >"$dir/etc/sshd_config" <<EOF
ListenAddress $(node_ip "$i")
Port 22
HostKey $dir/etc/ssh_host_ed25519_key
AuthorizedKeysFile $SSH_DIR/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
MaxStartups 64:30:128
EOF
  node_exec "$i" glusterd --log-file=/var/log/glusterfs/glusterd.log
  node_exec "$i" /usr/sbin/sshd -f "$dir/etc/sshd_config" -E "$STATE_DIR/logs/$ns-sshd.log"
}

wait_for_node_mounts() {
  local i=$1 deadline=$((SECONDS + 20))
  until node_exec "$i" mountpoint -q "${BRICK_ROOTS[-1]}" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "node ${NODES[$i]} did not come up: $(cat "$STATE_DIR/logs/${NODES[$i]}-ns.log")"
    sleep 0.2
  done
}

gluster_on() { local i=$1; shift; node_exec "$i" gluster --mode=script "$@"; }

pool_up() {
  local i
  for i in "${!NODES[@]}"; do
    wait_for 30 "glusterd on ${NODES[$i]}" gluster_on "$i" peer status
  done
  for ((i = 1; i < PEERS; i++)); do gluster_on 0 peer probe "$(node_ip "$i")" >/dev/null; done
  # node1 is known to the others by the address it probed from; probe back so they use its IP.
  gluster_on 1 peer probe "$(node_ip 0)" >/dev/null
  local deadline=$((SECONDS + 60))
  for ((i = 0; i < PEERS; i++)); do
    until [ "$(gluster_on "$i" pool list | grep -c Connected)" -eq "$PEERS" ]; do
      [ $SECONDS -lt $deadline ] || die "trusted pool did not form on ${NODES[$i]}"
      sleep 0.5
    done
  done
}

write_topology() { # file, the directory the SSH key and known_hosts are read from, [nodes]
  local out=$1 key_dir=$2 count=${3:-$PEERS} i specs=()
  for ((i = 0; i < count; i++)); do specs+=("${NODES[$i]}" "$(node_ip "$i")" "${NODE_ZONES[$i]}"); done
  python3 - "$out" "$key_dir" "${BRICK_ROOTS[*]}" "${BRICK_LIMITS[*]}" "${specs[@]}" <<'PY'
import json, sys
out, ssh_dir, paths, limits, specs = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split(), sys.argv[5:]
roots = [{"path": path, "size_limit": limit} for path, limit in zip(paths, limits)]
nodes = [
    {"name": name, "ssh_address": ip, "storage_address": ip, "zone": zone, "brick_roots": roots}
    for name, ip, zone in zip(specs[0::3], specs[1::3], specs[2::3])
]
ssh = {
    "user": "root",
    "port": 22,
    "private_key": f"{ssh_dir}/id_ed25519",
    "known_hosts": f"{ssh_dir}/known_hosts",
}
with open(out, "w") as f:
    json.dump({"ssh": ssh, "clusters": [{"name": "e2e", "nodes": nodes}]}, f, indent=2)
PY
}

gluster_up() {
  log "creating the node network ($BRIDGE, $NET_PREFIX.0/24)"
  network_up
  ssh_keys
  local i
  for i in "${!NODES[@]}"; do
    log "starting ${NODES[$i]} ($(node_ip "$i"), ${NODE_ZONES[$i]})"
    node_up "$i"
  done
  log "forming the trusted pool"
  pool_up
  write_topology "$TOPOLOGY" "$SSH_DIR"
  # Every node started, spares too: what tests that grow the pool add from.
  write_topology "$STATE_DIR/topology-all.json" "$SSH_DIR" "$GLUSTER_NODES"
}
