# Bricks that keep to their size: an XFS file system in a sparse image file DIR.img, mounted on
# the brick's volume directory DIR and listed in the node's /etc/fstab, so that the node mounts
# it again when it boots. The provisioner runs this with each argument passed on its own:
#   sh -c SCRIPT brick-image create|grow DIR BYTES     sh -c SCRIPT brick-image remove DIR
#   sh -c SCRIPT brick-image check ROOT...
# DIR is <brick root>/<volume>, checked by the provisioner. Every action may be run again.
set -eu
action=$1
shift

line() { echo "$1.img $1 xfs loop,noatime,inode64,nofail 0 0"; }

# Volumes are made and removed at once: one edit of the table at a time, and each edit
# replaces it whole, so a crash never leaves half a table.
fstab() { # add|remove DIR
	entry=$(line "$2")
	if grep -qxF -- "$entry" /etc/fstab 2>/dev/null; then
		[ "$1" = remove ] || return 0
	else
		[ "$1" = add ] || return 0
	fi
	exec 9>>/run/glusterfs-brick-images.lock
	flock 9
	tmp=/etc/.fstab.brick-image.$$
	grep -vxF -- "$entry" /etc/fstab >"$tmp" 2>/dev/null || true
	[ "$1" = remove ] || echo "$entry" >>"$tmp"
	chmod 644 "$tmp"
	mv -f "$tmp" /etc/fstab
	exec 9>&-
}

case $action in
create)
	dir=$1 bytes=$2
	mountpoint -q "$dir" 2>/dev/null && exit 0
	if [ ! -e "$dir.img" ]; then
		# Made under another name first: a half-made image is never mounted.
		rm -f "$dir.img.new"
		truncate -s "$bytes" "$dir.img.new"
		# A fixed log, so the provisioner knows the image size that gives the volume's size.
		mkfs.xfs -q -i size=512 -l size=64m "$dir.img.new"
		mv "$dir.img.new" "$dir.img"
	fi
	mkdir -p "$dir"
	fstab add "$dir"
	mount "$dir"
	;;
grow)
	dir=$1 bytes=$2
	[ -e "$dir.img" ] || { echo none; exit 0; }
	mountpoint -q "$dir" || { echo "$dir.img is not mounted on $dir" >&2; exit 1; }
	[ "$(stat -c %s "$dir.img")" -ge "$bytes" ] || truncate -s "$bytes" "$dir.img"
	losetup -c "$(findmnt -no SOURCE "$dir")"
	xfs_growfs -d "$dir" >/dev/null
	echo grown
	;;
remove)
	dir=$1
	if mountpoint -q "$dir" 2>/dev/null; then umount "$dir"; fi
	fstab remove "$dir"
	rm -f "$dir.img" "$dir.img.new"
	;;
check)
	for tool in mkfs.xfs xfs_growfs losetup findmnt flock mountpoint; do
		command -v "$tool" >/dev/null || echo "missing $tool"
	done
	[ -e /dev/loop-control ] || echo "missing /dev/loop-control"
	now=$(date +%s)
	for root; do
		for img in "$root"/*.img; do
			[ -e "$img" ] || continue
			# One made in the last minute may be between its rename and its mount.
			[ $((now - $(stat -c %W "$img"))) -ge 60 ] || continue
			dir=${img%.img}
			grep -qxF -- "$(line "$dir")" /etc/fstab 2>/dev/null || echo "unlisted $img"
			mountpoint -q "$dir" 2>/dev/null || echo "unmounted $img"
		done
		grep -o "^$root/[^ ]*\.img " /etc/fstab 2>/dev/null | while read -r img; do
			[ -e "$img" ] || echo "stale $img"
		done
	done
	;;
*)
	echo "unknown action $action" >&2
	exit 2
	;;
esac
