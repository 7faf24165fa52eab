# The Kubernetes control plane: etcd, kube-apiserver (TLS, Node + RBAC authorization, token
# auth), kube-controller-manager running the controllers that bind and release PVs and run
# workloads, and kube-scheduler. The apiserver listens on the host's bridge address, which the
# worker node and its pods reach.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

KUBE_DIR=$STATE_DIR/kube
ADMIN_KUBECONFIG=$STATE_DIR/admin.kubeconfig
PROVISIONER_KUBECONFIG=$STATE_DIR/provisioner.kubeconfig
# persistentvolume-binder can be left out (GP_KUBE_CONTROLLERS) for tests that must see the
# objects exactly as a provisioner wrote them. GP_BINDER_SYNC: its resync period (2 s, so tests
# see its retries soon).
KUBE_CONTROLLERS=${GP_KUBE_CONTROLLERS:-persistentvolume-binder,pvc-protection,pv-protection,endpoint,endpointslice,namespace,garbagecollector,serviceaccount-token,serviceaccount,statefulset,deployment,replicaset,daemonset,job,nodelifecycle,podgc}
APISERVER_URL=https://$HOST_IP:$APISERVER_PORT

kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

write_kubeconfig() { # file user token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $APISERVER_URL
    certificate-authority: $KUBE_DIR/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: $2@local
  context: {cluster: local, user: $2}
current-context: $2@local
EOF
  chmod 600 "$1"
}

make_pki() {
  mkdir -p "$KUBE_DIR"
  cd "$KUBE_DIR"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
    -subj "/CN=glusterfs-provisioner-e2e-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
    -subj "/CN=kube-apiserver" 2>/dev/null
  # 10.96.0.1 is the `kubernetes` Service that in-cluster clients (the provisioner's pods) use.
  printf 'subjectAltName=IP:%s,IP:10.96.0.1,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n' \
    "$HOST_IP" >san.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -extfile san.ext -out apiserver.crt 2>/dev/null
  # The apiserver's client certificate for kubelets (exec, logs); the kubelet checks it with ca.crt.
  openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr \
    -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
  openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
    -out kubelet-client.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  # Only the admin is a cluster admin; each component has the identity its default RBAC (or the
  # Node authorizer) expects; the provisioner gets a ServiceAccount token later.
  local user uid groups kubeconfig token
  : >tokens.csv
  while read -r kubeconfig user uid groups; do
    token=$(openssl rand -hex 24)
    echo "$token,$user,$uid${groups:+,$groups}" >>tokens.csv
    write_kubeconfig "$kubeconfig" "$user" "$token"
  done <<EOF
$ADMIN_KUBECONFIG admin admin system:masters
$KUBE_DIR/controller-manager.kubeconfig system:kube-controller-manager controller-manager
$KUBE_DIR/scheduler.kubeconfig system:kube-scheduler scheduler
$KUBE_DIR/kube-proxy.kubeconfig system:kube-proxy kube-proxy
$KUBE_DIR/kubelet.kubeconfig system:node:$WORKER kubelet system:nodes
EOF
  chmod 600 tokens.csv ./*.key
  cd - >/dev/null
}

kube_up() {
  make_pki
  log "starting etcd"
  start_bg etcd /usr/bin/etcd --name gp-e2e --data-dir "$KUBE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "gp-e2e=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync
  wait_for 30 etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  log "starting kube-apiserver v$K8S_VERSION"
  start_bg kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$HOST_IP" --advertise-address "$HOST_IP" --secure-port "$APISERVER_PORT" --insecure-port 0 \
    --tls-cert-file "$KUBE_DIR/apiserver.crt" --tls-private-key-file "$KUBE_DIR/apiserver.key" \
    --client-ca-file "$KUBE_DIR/ca.crt" --token-auth-file "$KUBE_DIR/tokens.csv" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction --anonymous-auth=false \
    --kubelet-client-certificate "$KUBE_DIR/kubelet-client.crt" --kubelet-client-key "$KUBE_DIR/kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-key-file "$KUBE_DIR/sa.pub" --service-account-signing-key-file "$KUBE_DIR/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
    --cert-dir "$KUBE_DIR/certs"
  wait_for 90 kube-apiserver kubectl get --raw /readyz

  log "starting kube-controller-manager ($KUBE_CONTROLLERS)"
  start_bg kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$KUBE_DIR/controller-manager.kubeconfig" \
    --controllers "$KUBE_CONTROLLERS" --use-service-account-credentials --leader-elect=false --port 0 --secure-port 0 \
    --service-account-private-key-file "$KUBE_DIR/sa.key" --root-ca-file "$KUBE_DIR/ca.crt" \
    --pvclaimbinder-sync-period "${GP_BINDER_SYNC:-2s}"
  log "starting kube-scheduler"
  start_bg kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig "$KUBE_DIR/scheduler.kubeconfig" \
    --leader-elect=false --port 0 --secure-port 0
  # The serviceaccount controller creating "default" shows the controller-manager is working.
  wait_for 60 kube-controller-manager kubectl -n default get serviceaccount default

  log "applying the provisioner's RBAC and writing its restricted kubeconfig"
  kubectl apply -f "$REPO_DIR/manifests/base/rbac.yaml" >/dev/null
  local token=""
  local deadline=$((SECONDS + 60))
  while [ -z "$token" ]; do
    [ $SECONDS -lt $deadline ] || die "timed out waiting for the provisioner ServiceAccount token"
    local secret
    secret=$(kubectl -n glusterfs-provisioner get serviceaccount glusterfs-provisioner \
      -o jsonpath='{.secrets[0].name}' 2>/dev/null || true)
    [ -n "$secret" ] && token=$(kubectl -n glusterfs-provisioner get secret "$secret" \
      -o jsonpath='{.data.token}' 2>/dev/null | base64 -d || true)
    [ -n "$token" ] || sleep 0.5
  done
  write_kubeconfig "$PROVISIONER_KUBECONFIG" glusterfs-provisioner "$token"
}
