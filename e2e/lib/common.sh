# Shared settings for the e2e scripts. Sourced, never run.
# shellcheck shell=bash
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$E2E_DIR/.." && pwd)
# Built Kubernetes binaries survive across runs and clones; the environment state does not.
CACHE_DIR=${GP_CACHE_DIR:-$HOME/.cache/glusterfs-provisioner}
STATE_DIR=${GP_STATE_DIR:-/tmp/glusterfs-provisioner-env}
K8S_VERSION=1.20.2
K8S_BIN=$CACHE_DIR/k8s-v$K8S_VERSION
GO_BIN=/usr/lib/go-1.19/bin

# Network of the gluster nodes: a bridge on the host, one namespace per node.
BRIDGE=gpbr0
NET_PREFIX=10.213.7
HOST_IP=$NET_PREFIX.1
# GP_GLUSTER_NODES=N (3 to 6, default 3) starts the first N; `down` clears all six whatever
# was started. Zones: a b a c c d, so gp-node2 is the one node of a zone of its own with any N
# (tests rely on that), and nodes 4 to 6 add zones c and d.
# GP_GLUSTER_SPARES=K (default 0) leaves the last K of them out of the trusted pool and the
# topology file: running, with SSH and brick roots, ready to be added (tests that grow the pool).
ALL_NODES=(gp-node1 gp-node2 gp-node3 gp-node4 gp-node5 gp-node6)
ALL_ZONES=(zone-a zone-b zone-a zone-c zone-c zone-d)
GLUSTER_NODES=${GP_GLUSTER_NODES:-3}
case $GLUSTER_NODES in 3 | 4 | 5 | 6) ;; *) echo "GP_GLUSTER_NODES must be 3 to 6" >&2; exit 2 ;; esac
GLUSTER_SPARES=${GP_GLUSTER_SPARES:-0}
[ "$((GLUSTER_NODES - GLUSTER_SPARES))" -ge 3 ] && [ "$GLUSTER_SPARES" -ge 0 ] ||
  { echo "GP_GLUSTER_SPARES must leave at least three peers" >&2; exit 2; }
NODES=("${ALL_NODES[@]:0:$GLUSTER_NODES}")
NODE_ZONES=("${ALL_ZONES[@]:0:$GLUSTER_NODES}")
PEERS=$((GLUSTER_NODES - GLUSTER_SPARES))
# The worker node: its own network namespace on the bridge, pods on a routed subnet behind it.
WORKER=gp-worker
WORKER_IP=$NET_PREFIX.2
POD_CIDR=10.213.8.0/24
ETCD_PORT=23791
ETCD_PEER_PORT=23801
APISERVER_PORT=16443

node_ip() { echo "$NET_PREFIX.$((11 + $1))"; }

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

wait_for() { # seconds description command...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out waiting for $what"
    sleep 0.5
  done
}

start_bg() { # name command... : runs detached, logs and pid in the state dir
  local name=$1
  shift
  setsid "$@" >"$STATE_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE_DIR/pids/$name"
}
