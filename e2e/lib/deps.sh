# Installs the Debian packages the environment needs and builds the Kubernetes binaries once.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DEB_PACKAGES=(
  etcd-server glusterfs-server glusterfs-client openssh-server openssh-client xfsprogs
  iproute2 iptables util-linux procps psmisc rsync golang-1.19-go dpkg-dev make openssl curl prometheus
  fonts-dejavu-core
  # The node: container runtime, pod networking, image building (pause, shell and provisioner images).
  containerd runc containernetworking-plugins busybox-static gcc libc6-dev buildah mmdebstrap
)

install_packages() {
  local missing=()
  for p in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  # Debian's units would start a host-wide glusterd/sshd/etcd; ours run inside namespaces.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  rm -f /usr/sbin/policy-rc.d
}

# The control plane (kube-apiserver, kube-controller-manager, kubectl) and the node (kubelet,
# kube-scheduler, kube-proxy) v1.20.2 from Debian's source package, built with Debian's Go 1.19
# the way debian/rules does it (GOPATH mode, make WHAT=...). One make builds every missing binary,
# so the code generators run once.
K8S_BINS=(kube-apiserver kube-controller-manager kubectl kubelet kube-scheduler kube-proxy)

build_kubernetes() {
  local b missing=()
  for b in "${K8S_BINS[@]}"; do [ -x "$K8S_BIN/$b" ] || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local src=$CACHE_DIR/src
  mkdir -p "$src"
  if ! ls -d "$src"/kubernetes-*/ >/dev/null 2>&1; then
    if ! grep -rqs '^Types: deb-src' /etc/apt/sources.list.d/; then
      sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
        > /etc/apt/sources.list.d/glusterfs-provisioner-src.sources
    fi
    apt-get update -qq
    log "downloading Debian's kubernetes source package"
    (cd "$src" && apt-get source -qq kubernetes >/dev/null)
  fi
  local tree
  tree=$(ls -d "$src"/kubernetes-*/ | head -n1)
  tree=${tree%/}
  mkdir -p "$tree/.go/src/k8s.io"
  ln -sfn "$tree" "$tree/.go/src/k8s.io/kubernetes"
  log "building ${missing[*]} v$K8S_VERSION (first run only; 10 to 20 minutes)"
  (cd "$tree/.go/src/k8s.io/kubernetes" &&
    PATH=$GO_BIN:$PATH GOPATH=$tree/.go GO111MODULE=off CGO_ENABLED=0 GOFLAGS= GOCACHE=$CACHE_DIR/gocache \
      make WHAT="${missing[*]/#/cmd/}" >"$CACHE_DIR/build.log" 2>&1) ||
    { tail -30 "$CACHE_DIR/build.log" >&2; die "building Kubernetes failed (log: $CACHE_DIR/build.log)"; }
  mkdir -p "$K8S_BIN"
  for b in "${missing[@]}"; do
    install -m 0755 "$tree/_output/bin/$b" "$K8S_BIN/$b.tmp"
    mv "$K8S_BIN/$b.tmp" "$K8S_BIN/$b"
  done
}
