# The provisioner deployed as users deploy it: `kubectl apply -k` of manifests/ through the test
# overlay (e2e/overlay), in-cluster, on the worker node, two replicas and one leader.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

OVERLAY_DIR=$STATE_DIR/overlay

deploy_provisioner() {
  log "deploying the provisioner: kubectl apply -k manifests/ (with e2e/overlay)"
  mkdir -p "$OVERLAY_DIR"
  cp "$E2E_DIR"/overlay/*.yaml "$OVERLAY_DIR/"
  ln -sfn "$REPO_DIR/manifests" "$OVERLAY_DIR/base"
  # Where the Deployment mounts the glusterfs-provisioner-ssh Secret.
  write_topology "$OVERLAY_DIR/topology.json" /etc/gluster-ssh
  cp "$SSH_DIR/id_ed25519" "$SSH_DIR/known_hosts" "$OVERLAY_DIR/"
  kubectl apply -k "$OVERLAY_DIR" >/dev/null
  kubectl -n glusterfs-provisioner rollout status deployment/glusterfs-provisioner --timeout 180s >/dev/null ||
    die "the provisioner's Deployment did not become available: $(kubectl -n glusterfs-provisioner get pods -o wide 2>&1)"
}
