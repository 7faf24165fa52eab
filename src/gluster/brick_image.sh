# Bricks that keep to their size: an XFS file system in a sparse image file DIR.img, mounted on
# the brick's volume directory DIR and listed in the node's /etc/fstab, so that the node mounts
# it again when it boots. The provisioner runs this with each argument passed on its own:
#   sh -c SCRIPT brick-image create DIR BYTES GID      sh -c SCRIPT brick-image grow DIR BYTES
#   sh -c SCRIPT brick-image remove DIR
#   sh -c SCRIPT brick-image check ROOT...
# DIR is <brick root>/<volume>, checked by the provisioner and again here. `create` also makes
# the brick directory DIR/brick, `remove` also removes DIR (a brick of either kind): one SSH
# round trip a brick. Every action may be run again.
set -eu
action=$1
shift

line() { printf '%s\n' "$1.img $1 xfs loop,noatime,inode64,nofail 0 0"; }

# A DIR is one fstab field and a path of the topology's kind: anything else (blanks, quotes,
# newlines, `..`, a relative path read as an option) is refused, never written or removed.
checked() { # DIR [BYTES]
	case $1 in
	/*[!A-Za-z0-9/._-]* | */../* | */.. | [!/]* | '')
		echo "refused: $1 is not an absolute path of letters, digits, '/', '.', '_', '-'" >&2
		exit 2
		;;
	esac
	case ${2-0} in
	'' | *[!0-9]*)
		echo "refused: $2 is not a number" >&2
		exit 2
		;;
	esac
}

# Ends an fstab edit that did not land: the old file stays, the temporary copy goes.
unchanged() { # CAUSE
	rm -f -- "$tmp"
	echo "$fstab left unchanged: $1" >&2
	exit 1
}

# One edit of the table at a time (volumes are made and removed at once), each written whole
# beside the old one, checked, synced and renamed over it, the old kept as fstab.gp-bak: a full
# file system or a crash leaves the old table, never an empty or a partial one.
fstab_edit() { # add|remove DIR
	entry=$(line "$2")
	fstab=/etc/fstab tmp=
	# A link is followed, so that the rename replaces the file it names.
	if [ -L "$fstab" ]; then
		fstab=$(readlink -f /etc/fstab) || unchanged "cannot resolve it"
	fi
	# Nothing to do is found without the lock, so that a check of a node need not write /run.
	if [ -e "$fstab" ]; then
		listed=0
		grep -qxF -- "$entry" "$fstab" || listed=$?
		[ "$listed" -le 1 ] || unchanged "cannot read it"
		[ "$1-$listed" = add-1 ] || [ "$1-$listed" = remove-0 ] || return 0
	fi
	# `command`: a redirection that fails must not end the shell before it says why.
	command exec 9>>/run/glusterfs-brick-images.lock || unchanged "cannot open /run/glusterfs-brick-images.lock"
	flock 9 || unchanged "cannot lock /run/glusterfs-brick-images.lock"
	etc=${fstab%/*}
	# Copies a killed edit left behind; no edit is under way while the lock is held. The lock
	# is held by each edit in turn (a burst's removals queue here), so it runs few processes.
	for left in "$etc"/.fstab.gp-new.*; do
		[ ! -e "$left" ] || rm -f -- "$left"
	done
	old=0 found=0
	if [ -e "$fstab" ]; then
		# grep -c exits 1 when it counts none, 2 on its own error.
		old=$(grep -c '' "$fstab") || [ $? -eq 1 ] || unchanged "cannot read it"
		found=$(grep -cxF -- "$entry" "$fstab") || [ $? -eq 1 ] || unchanged "cannot read it"
	fi
	case $1-$found in
	add-0) expected=$((old + 1)) ;;
	remove-0 | add-*) exec 9>&- && return 0 ;; # done by an edit this one waited for
	remove-*) expected=$((old - found)) ;;
	esac
	# Under the lock, and leftovers gone: the name is free.
	tmp=$etc/.fstab.gp-new.$$
	if [ -e "$fstab" ]; then
		# Made with the old table's owner and mode, then written.
		cp --attributes-only -p -- "$fstab" "$tmp" || unchanged "cannot create a copy in $etc"
		grep -vxF -- "$entry" "$fstab" >"$tmp" || [ $? -eq 1 ] || unchanged "cannot write the new copy $tmp"
	else
		(umask 022 && : >"$tmp") || unchanged "cannot create a copy in $etc"
	fi
	if [ "$1" = add ]; then
		printf '%s\n' "$entry" >>"$tmp" || unchanged "cannot write the new copy $tmp"
	fi
	sync -- "$tmp" || unchanged "cannot sync the new copy $tmp"
	lines=$(grep -c '' "$tmp") || [ $? -eq 1 ] || unchanged "cannot read back the new copy $tmp"
	[ "$lines" -eq "$expected" ] ||
		unchanged "the new copy has $lines lines, not the $expected expected ($old before)"
	# An empty table replaces a non-empty one only when every line was this entry.
	[ -s "$tmp" ] || [ "$old" -eq "$found" ] || unchanged "the new copy is empty"
	if [ -e "$fstab" ]; then
		# A second name of the old file: it writes no data, so it holds even when the disk is full.
		ln -f -- "$fstab" "$fstab.gp-bak" || unchanged "cannot keep the old one as $fstab.gp-bak"
	fi
	mv -f -- "$tmp" "$fstab" || unchanged "cannot rename $tmp over it"
	sync -- "$etc" || { echo "$fstab changed, but $etc was not synced" >&2; exit 1; }
	exec 9>&-
}

case $action in
create)
	dir=$1 bytes=$2 gid=$3
	checked "$dir" "$bytes"
	checked "$dir" "$gid"
	if ! mountpoint -q "$dir" 2>/dev/null; then
		if [ ! -e "$dir.img" ]; then
			# Made under another name first: a half-made image is never mounted.
			rm -f "$dir.img.new"
			truncate -s "$bytes" "$dir.img.new"
			# A fixed log, so the provisioner knows the image size that gives the volume's size.
			mkfs.xfs -q -i size=512 -l size=64m "$dir.img.new"
			mv "$dir.img.new" "$dir.img"
		fi
		mkdir -p "$dir"
		fstab_edit add "$dir"
		mount "$dir"
	fi
	# The brick directory in the same round trip, as for any brick: group-owned by the volume's
	# GID, setgid so that files keep the group.
	install -d -m 2775 -g "$gid" -- "$dir/brick"
	;;
grow)
	dir=$1 bytes=$2
	checked "$dir" "$bytes"
	[ -e "$dir.img" ] || { echo none; exit 0; }
	mountpoint -q "$dir" || { echo "$dir.img is not mounted on $dir" >&2; exit 1; }
	[ "$(stat -c %s "$dir.img")" -ge "$bytes" ] || truncate -s "$bytes" "$dir.img"
	losetup -c "$(findmnt -no SOURCE "$dir")"
	xfs_growfs -d "$dir" >/dev/null
	echo grown
	;;
remove)
	dir=$1
	checked "$dir"
	if mountpoint -q "$dir" 2>/dev/null; then umount "$dir"; fi
	fstab_edit remove "$dir"
	rm -f "$dir.img" "$dir.img.new"
	# Then the volume's directory, a brick of either kind, in the same round trip.
	rm -rf --one-file-system -- "$dir"
	;;
check)
	for tool in mkfs.xfs xfs_growfs losetup findmnt flock mountpoint; do
		command -v "$tool" >/dev/null || echo "missing $tool"
	done
	[ -e /dev/loop-control ] || echo "missing /dev/loop-control"
	now=$(date +%s)
	for root; do
		checked "$root"
		for img in "$root"/*.img; do
			[ -e "$img" ] || continue
			# One made in the last minute may be between its rename and its mount.
			[ $((now - $(stat -c %W "$img"))) -ge 60 ] || continue
			dir=${img%.img}
			grep -qxF -- "$(line "$dir")" /etc/fstab 2>/dev/null || echo "unlisted $img"
			mountpoint -q "$dir" 2>/dev/null || echo "unmounted $img"
		done
		# The root is matched as a string, never as a pattern of grep's.
		[ ! -r /etc/fstab ] || while read -r src _; do
			case $src in "$root"/*.img) [ -e "$src" ] || echo "stale $src" ;; esac
		done </etc/fstab
	done
	;;
*)
	echo "unknown action $action" >&2
	exit 2
	;;
esac
