# Copies a volume's files into another on this gluster node, through gluster's own client:
# both volumes are mounted under /run/glusterfs-clone/DEST for the copy's duration.
#   clone copy SERVER SOURCE DEST SOURCE_GID DEST_GID
#     empties DEST, copies SOURCE's tree (owners, modes, times, symlinks, hard links, user.*
#     xattrs; files of SOURCE_GID get DEST_GID), prints "copied BYTES" (DEST's growth).
#   clone progress DEST
#     prints the bytes a copy into DEST has written so far, or "none" when none runs.
#   clone check
#     prints "missing TOOL" for each tool a copy needs that this node lacks.
# Runs as `sh -c SCRIPT clone ACTION ARGS...`; every argument is passed on its own.
set -eu
action=$1
shift
runs=/run/glusterfs-clone

used() {
	stat -f -c '%b %f %S' "$1" | { read -r blocks free size && echo $(((blocks - free) * size)); }
}

case $action in
copy)
	server=$1 source=$2 dest=$3 source_gid=$4 dest_gid=$5
	work=$runs/$dest
	mkdir -p "$runs"
	# One copy into a volume at a time: one left running by a provisioner that died is
	# waited for, then started over.
	exec 9>"$work.lock"
	flock 9
	release() {
		# Not `mountpoint`: a client whose volume is gone fails every stat of its mount.
		for m in "$work/source" "$work/dest"; do
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
		done
		# rmdir, never rm -r: a directory still mounted stays, with what it holds.
		rmdir "$work/source" "$work/dest" "$work" 2>/dev/null || true
		rm -f "$work.base" "$work.groups" "$work.created"
	}
	release
	trap release EXIT
	# A copy whose SSH session ends (its provisioner died) still unmounts.
	trap 'exit 1' HUP INT TERM PIPE
	mkdir -p "$work/source" "$work/dest"
	log=/var/log/glusterfs/clone-$dest
	# The clients live on as daemons: without the lock's descriptor, which they would hold.
	mount -t glusterfs -o ro,log-level=WARNING,log-file="$log-source.log" \
		"$server:/$source" "$work/source" 9>&-
	mount -t glusterfs -o log-level=WARNING,log-file="$log.log" "$server:/$dest" "$work/dest" 9>&-
	# Starting over: whatever an interrupted copy wrote goes first.
	find "$work/dest" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system {} +
	used "$work/dest" >"$work.base"
	echo "+$source_gid +$dest_gid" >"$work.groups"
	# sh has no pipefail: the archiving side's status comes through a file. Status 1 is a
	# file that changed while read: a volume in use is copied as it was at each file's read.
	(
		cd "$work/source"
		status=0
		tar --create --file=- --numeric-owner --xattrs --xattrs-include='user.*' \
			--group-map="$work.groups" --warning=no-file-changed . || status=$?
		echo "$status" >"$work.created"
	) | (cd "$work/dest" && tar --extract --file=- --numeric-owner --same-owner \
		--same-permissions --xattrs --xattrs-include='user.*')
	[ "$(cat "$work.created")" -le 1 ] || { echo "archiving $source failed" >&2; exit 1; }
	echo "copied $(($(used "$work/dest") - $(cat "$work.base")))"
	;;
progress)
	work=$runs/$1
	if [ -f "$work.base" ] && mountpoint -q "$work/dest"; then
		echo $(($(used "$work/dest") - $(cat "$work.base")))
	else
		echo none
	fi
	;;
check)
	for tool in mount.glusterfs tar flock find stat umount; do
		command -v "$tool" >/dev/null || echo "missing $tool"
	done
	;;
*)
	echo "unknown action $action" >&2
	exit 2
	;;
esac
