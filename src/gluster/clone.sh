# Copies a volume's files into another on this gluster node, through gluster's own client:
# both volumes are mounted under /run/glusterfs-clone/DEST for the copy's duration.
#   setsid -w sh -c SCRIPT clone copy SERVER SOURCE DEST SOURCE_GID DEST_GID
#     ends an earlier copy into DEST on this node; refuses a DEST marked copied; empties DEST,
#     copies SOURCE's tree (owners, modes, times, symlinks, hard links, holes of sparse files,
#     user.* xattrs; files of SOURCE_GID get DEST_GID), marks DEST copied (the volume option
#     user.glusterfs-provisioner.clone-done), prints "copied BYTES" (the bytes archived). Run under
#     setsid, the copy is a process group of its own, which `stop` ends whole.
#   clone stop DEST
#     ends a copy into DEST (its process group), unmounts, removes its files and logs.
#   clone progress DEST
#     prints the bytes a copy into DEST has written so far, or "none" when none runs.
#   clone check
#     prints "missing TOOL" for each tool a copy needs that this node lacks.
# Runs as `sh -c SCRIPT clone ACTION ARGS...`; every argument is passed on its own.
set -eu
action=$1
shift
runs=/run/glusterfs-clone
done_option=user.glusterfs-provisioner.clone-done

used() {
	stat -f -c '%b %f %S' "$1" | { read -r blocks free size && echo $(((blocks - free) * size)); }
}

# A copy's files: $work (mounts, its state) and $log (the clients' logs).
paths() {
	work=$runs/$1
	log=/var/log/glusterfs/clone-$1
}

release() {
	# Not `mountpoint`: a client whose volume is gone fails every stat of its mount.
	for m in "$work/source" "$work/dest"; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
	# rmdir, never rm -r: a directory still mounted stays, with what it holds.
	rmdir "$work/source" "$work/dest" "$work" 2>/dev/null || true
	rm -f "$work.base" "$work.groups" "$work.created" "$work.totals" "$work.pid" "$log.log" \
		"$log-source.log"
}

# Takes the copy's lock on descriptor 9, ending the copy that holds it: its process group (as
# its pid file names it, written while it holds the lock) gets TERM, and KILL after 10 s. A
# stopped copy is continued so that it ends too.
take_lock() {
	mkdir -p "$runs"
	exec 9>"$work.lock"
	tries=0
	until flock -w 1 9; do
		tries=$((tries + 1))
		group=$(cat "$work.pid" 2>/dev/null) || continue
		signal=TERM
		[ "$tries" -le 10 ] || signal=KILL
		kill "-$signal" "-$group" 2>/dev/null || continue
		kill -CONT "-$group" 2>/dev/null || true
	done
}

# Whether the volume is marked copied. A volume whose options cannot be read counts as
# neither: the copy stops.
copied() {
	info=$(gluster --mode=script volume info "$1" --xml) || info=
	case $info in
	*"<opRet>0</opRet>"*"<name>$1</name>"*) ;;
	*)
		echo "cannot read the options of volume $1" >&2
		exit 1
		;;
	esac
	case $info in
	*"<name>$done_option</name>"*) return 0 ;;
	*) return 1 ;;
	esac
}

# Another gluster command may hold the cluster's lock for a moment.
mark_copied() {
	tries=0
	until out=$(gluster --mode=script volume set "$1" "$done_option" "$2" 2>&1); do
		tries=$((tries + 1))
		[ "$tries" -lt 30 ] || {
			echo "marking $1 copied: $out" >&2
			exit 1
		}
		sleep 1
	done
}

case $action in
copy)
	server=$1 source=$2 dest=$3 source_gid=$4 dest_gid=$5
	paths "$dest"
	# One copy into a volume at a time: one left running by a provisioner that died or gave up
	# is ended, and this one starts over.
	take_lock
	# A copy that finished whole is never emptied: its volume may be bound and written to.
	if copied "$dest"; then
		echo "volume $dest is marked copied already: it is not emptied" >&2
		exit 3
	fi
	release
	# The process group `stop` (or the next copy) ends: this script's, as setsid made it.
	echo $$ >"$work.pid"
	trap release EXIT
	trap 'exit 1' HUP INT TERM PIPE
	mkdir -p "$work/source" "$work/dest"
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
	# --sparse: holes are archived as holes, and extracted as holes, not as written zeros.
	# --totals: the bytes archived (data, not holes) are the bytes copied; the destination's
	# used space lags behind what emptying it freed.
	(
		cd "$work/source"
		status=0
		tar --create --file=- --sparse --numeric-owner --xattrs --xattrs-include='user.*' \
			--group-map="$work.groups" --warning=no-file-changed --totals . \
			2>"$work.totals" || status=$?
		echo "$status" >"$work.created"
	) | (cd "$work/dest" && tar --extract --file=- --numeric-owner --same-owner \
		--same-permissions --xattrs --xattrs-include='user.*')
	grep -v '^Total bytes written: ' "$work.totals" >&2 || true
	[ "$(cat "$work.created")" -le 1 ] || {
		echo "archiving $source failed" >&2
		exit 1
	}
	bytes=$(sed -n 's/^Total bytes written: \([0-9]*\).*/\1/p' "$work.totals")
	[ -n "$bytes" ] || bytes=$(($(used "$work/dest") - $(cat "$work.base")))
	# Unmounted first: every write is through before the volume is marked whole.
	release
	mark_copied "$dest" "$source"
	# Whoever takes the lock from here on finds the mark.
	rm -f "$work.lock"
	echo "copied $bytes"
	;;
stop)
	paths "$1"
	take_lock
	release
	rm -f "$work.lock"
	;;
progress)
	paths "$1"
	if [ -f "$work.base" ] && mountpoint -q "$work/dest"; then
		echo $(($(used "$work/dest") - $(cat "$work.base")))
	else
		echo none
	fi
	;;
check)
	for tool in mount.glusterfs tar flock find stat umount setsid gluster; do
		command -v "$tool" >/dev/null || echo "missing $tool"
	done
	;;
*)
	echo "unknown action $action" >&2
	exit 2
	;;
esac
