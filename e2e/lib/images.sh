# Container images without a registry: built here from Debian packages and the project's own
# Dockerfile with buildah, saved as docker-archive tars and imported into the node's containerd.
#   pause   build/pause/linux/pause.c of the Kubernetes source tree, linked statically
#   shell   Debian's busybox-static (a shell, coreutils and httpd for test pods), setfattr, getfattr
#   provisioner   the Dockerfile's `prebuilt` stage: its runtime image around the binary cargo
#                 built, so the test image costs seconds instead of a second compile
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

IMAGE_CACHE=$CACHE_DIR/images
PAUSE_IMAGE=localhost/gp-e2e/pause:3.2
SHELL_IMAGE=localhost/gp-e2e/shell:2
PROVISIONER_IMAGE=localhost/glusterfs-provisioner:e2e
# The Dockerfile's base image, made once from Debian packages (what debian:bookworm-slim is).
BASE_IMAGE=docker.io/library/debian:bookworm-slim

# vfs storage: no overlay mounts to leak, and the cache survives across runs (the Dockerfile's
# apt-get layer is built once).
buildah_() {
  buildah --root "$IMAGE_CACHE/buildah" --runroot "$IMAGE_CACHE/buildah-run" --storage-driver vfs "$@"
}

# image_from_dir NAME DIR ENTRYPOINT-JSON OUT.tar: a one-layer image of DIR's contents.
image_from_dir() {
  local name=$1 dir=$2 entrypoint=$3 out=$4 ctr
  ctr=$(buildah_ from scratch)
  buildah_ copy "$ctr" "$dir" / >/dev/null
  buildah_ config --entrypoint "$entrypoint" --env PATH=/bin "$ctr"
  buildah_ commit -q --rm "$ctr" "$name" >/dev/null
  rm -f "$out.tmp"
  buildah_ push -q "$name" "docker-archive:$out.tmp:$name"
  mv "$out.tmp" "$out"
}

build_pause_image() {
  local out=$IMAGE_CACHE/pause.tar
  [ -s "$out" ] && return 0
  local tree dir
  tree=$(ls -d "$CACHE_DIR"/src/kubernetes-*/ | head -n1)
  dir=$(mktemp -d)
  gcc -Os -static -DVERSION=v3.2-gp -o "$dir/pause" "$tree/build/pause/linux/pause.c"
  image_from_dir "$PAUSE_IMAGE" "$dir" '["/pause"]' "$out"
  rm -rf "$dir"
}

build_shell_image() {
  local out=$IMAGE_CACHE/shell-2.tar
  [ -s "$out" ] && return 0
  local dir a
  dir=$(mktemp -d)
  mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc"
  cp /bin/busybox "$dir/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$dir/bin/$a"; done
  # setfattr and getfattr (attr), for the clone tests' user xattrs, with what they load.
  local tool lib
  for tool in setfattr getfattr; do
    cp "$(command -v $tool)" "$dir/bin/$tool"
    for lib in $(ldd "$dir/bin/$tool" | grep -o '/[^ ]*'); do
      mkdir -p "$dir$(dirname "$lib")"
      cp -L "$lib" "$dir$lib"
    done
  done
  printf 'root:x:0:0:root:/:/bin/sh\n' >"$dir/etc/passwd"
  printf 'root:x:0:\n' >"$dir/etc/group"
  image_from_dir "$SHELL_IMAGE" "$dir" '["/bin/sh"]' "$out"
  rm -rf "$dir"
}

build_base_image() {
  buildah_ inspect --type image "$BASE_IMAGE" >/dev/null 2>&1 && return 0
  log "making $BASE_IMAGE from Debian packages (mmdebstrap; first run only)"
  local tar=$IMAGE_CACHE/bookworm-minbase.tar ctr
  mmdebstrap --quiet --variant=minbase bookworm "$tar" /etc/apt/sources.list.d/debian.sources
  ctr=$(buildah_ from scratch)
  buildah_ add "$ctr" "$tar" / >/dev/null
  buildah_ config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  buildah_ commit -q --rm "$ctr" "$BASE_IMAGE" >/dev/null
  rm -f "$tar"
}

# The provisioner's image from the project's Dockerfile, around $GP_PROVISIONER_BIN (default: the
# debug binary, built if needed). Rebuilt on every run: the binary changes.
build_provisioner_image() {
  local binary=${GP_PROVISIONER_BIN:-}
  if [ -z "$binary" ]; then
    (cd "$REPO_DIR" && cargo build --quiet --bin glusterfs-provisioner)
    binary=$REPO_DIR/target/debug/glusterfs-provisioner
  fi
  build_base_image
  local ctx=$STATE_DIR/image-context
  mkdir -p "$ctx/target"
  cp "$REPO_DIR/Dockerfile" "$ctx/Dockerfile"
  # Debug information is most of a debug binary; the image needs none of it.
  objcopy --strip-debug "$binary" "$ctx/target/glusterfs-provisioner"
  # The runtime stage is tagged so that its cached layers (apt-get) outlive the removal of the
  # previous run's image, which would take untagged parents with it.
  local bud=(bud --quiet --pull-never --isolation chroot --layers)
  buildah_ "${bud[@]}" --target runtime -t "$PROVISIONER_IMAGE-runtime" "$ctx" >/dev/null
  buildah_ rmi -f "$PROVISIONER_IMAGE" >/dev/null 2>&1 || true
  buildah_ "${bud[@]}" --target prebuilt -t "$PROVISIONER_IMAGE" "$ctx" >/dev/null
  buildah_ push -q "$PROVISIONER_IMAGE" "docker-archive:$STATE_DIR/provisioner.tar:$PROVISIONER_IMAGE"
  rm -rf "$ctx"
}

build_images() {
  mkdir -p "$IMAGE_CACHE"
  build_pause_image
  build_shell_image
  build_provisioner_image
}
