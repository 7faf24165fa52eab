# The provisioner deployed as users deploy it: `kubectl apply -k` of manifests/ through the test
# overlay (e2e/overlay), in-cluster, on the worker node, two replicas and one leader; and the CSI
# node plugin's DaemonSet.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

OVERLAY_DIR=$STATE_DIR/overlay

deploy_provisioner() {
  log "deploying the provisioner: kubectl apply -k manifests/ (with e2e/overlay)"
  mkdir -p "$OVERLAY_DIR"
  cp "$E2E_DIR"/overlay/*.yaml "$OVERLAY_DIR/"
  sed -i "s|KUBELET_DIR|$KUBELET_DIR|g; s|FUSE_LOG_DIR|$NODE_DIR/fuse-logs|g" "$OVERLAY_DIR/csi-node-patch.yaml"
  ln -sfn "$REPO_DIR/manifests" "$OVERLAY_DIR/base"
  # Where the Deployment mounts the glusterfs-provisioner-ssh Secret.
  write_topology "$OVERLAY_DIR/topology.json" /etc/gluster-ssh
  cp "$SSH_DIR/id_ed25519" "$SSH_DIR/known_hosts" "$OVERLAY_DIR/"
  kubectl apply -k "$OVERLAY_DIR" >/dev/null
  local what ns
  for what in glusterfs-provisioner/deployment/glusterfs-provisioner glusterfs-csi/daemonset/glusterfs-csi-node; do
    ns=${what%%/*}
    kubectl -n "$ns" rollout status "${what#*/}" --timeout 180s >/dev/null ||
      die "${what#*/} did not become available: $(kubectl -n "$ns" get pods -o wide 2>&1)"
  done
  # The node plugin registered with the kubelet: the node's CSINode lists the driver.
  wait_for 60 "the CSI driver registered on $WORKER" csi_registered
}

csi_registered() {
  kubectl get csinode "$WORKER" -o jsonpath='{.spec.drivers[*].name}' | grep -qw glusterfs.gluster.org
}
