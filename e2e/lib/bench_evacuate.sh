# The benchmark's evacuate scenario (`e2e/bench --only evacuate`): sourced by e2e/bench once the
# environment is up with five gluster nodes (gp-node1..5, zones a b a c c) and its env.sh is
# sourced. It measures `evacuate --node gp-node4 --apply` over N volumes of 1 GiB holding 200 MiB
# each against the same move typed by hand: per volume `replace-brick … commit force` and the
# same wait for the heal, over SSH, one volume at a time.
#
# Where the volumes are: on five nodes a replica-3 volume takes zone b's only node (gp-node2),
# one of zone a (gp-node1 or 3) and one of zone c (gp-node4 or 5), so gp-node4 would hold only
# about half of them. The claims are therefore made by a provisioner of the benchmark's own
# whose topology leaves gp-node5 out: gp-node4 is then zone c's only node, and every volume
# has a brick there. `evacuate` runs with the whole topology, so each brick goes to the one node
# of zone c the volume lacks, gp-node5; the loop by hand puts it there too.
#
# Both sets (2N claims) are made and filled first, from the host through gluster's FUSE client,
# then the provisioner is stopped (no sweep competes with the moves). The loop by hand moves
# its set first; `evacuate` then moves the other set (it also looks at the set already moved,
# whole by then, as it would at any volume of the cluster). After each, every volume is checked:
# no brick left on gp-node4, and its brick on gp-node5 holds the 200 MiB, checksum for checksum.
# Its volumes stay until the environment goes down (e2e/bench takes it down, processes and
# mounts of the state directory with it).
# shellcheck shell=bash

EV_FILES=20       # files of
EV_FILE_MIB=10    # MiB each: 200 MiB a volume
EV_HEAL_TIMEOUT=3600 # seconds, as evacuate's --heal-timeout-seconds
EV_FROM=gp-node4
EV_TO=gp-node5

ev_log() { printf '[bench] %s\n' "$*" >&2; }
ev_die() { ev_log "ERROR: $*"; exit 1; }

# What the topology says: `ssh USER PORT KEY KNOWN_HOSTS`, then `node NAME SSH STORAGE` lines.
ev_topology() {
  python3 - "$GP_TOPOLOGY" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
s = t["ssh"]
print("ssh", s.get("user", "root"), s.get("port", 22), s["private_key"], s["known_hosts"])
for n in t["clusters"][0]["nodes"]:
    print("node", n["name"], n["ssh_address"], n["storage_address"])
PY
}

# The topology without `name`: what the benchmark's provisioner places bricks by.
ev_topology_without() { # name out
  python3 - "$GP_TOPOLOGY" "$1" "$2" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
t["clusters"][0]["nodes"] = [n for n in t["clusters"][0]["nodes"] if n["name"] != sys.argv[2]]
json.dump(t, open(sys.argv[3], "w"), indent=2)
PY
}

# Runs a command on a node (by its SSH address), each argument quoted for the remote shell.
ev_on() { # host command...
  local host=$1
  shift
  "${EV_SSH[@]}" "$host" "$(printf '%q ' "$@")"
}

# shellcheck disable=SC2016 # expanded on the node
# gluster's CLI on the first node, with the retries any script needs: glusterd refuses a
# command while another holds its cluster-wide lock.
EV_GLUSTER='while ! out=$(gluster --mode=script "$@" 2>&1); do case $out in *"Another transaction"* | *"Locking failed"* | *"try again"*) sleep 0.1 ;; *) echo "gluster $*: $out" >&2; exit 1 ;; esac; done; printf "%s\n" "$out"'
ev_gluster() { ev_on "$EV_GLUSTER_HOST" sh -c "$EV_GLUSTER" gluster "$@"; }

# Reads gluster's --xml on stdin: `bricks` (host:/path, a line each), `option NAME` (its value),
# `healed` (exit 0 when every brick of a heal summary has nothing pending and no split-brain;
# a brick that is down has no counts).
ev_xml() {
  python3 -c '
import sys, xml.etree.ElementTree as E
root = E.parse(sys.stdin).getroot()
if sys.argv[1] == "bricks":
    for b in root.iter("brick"):
        print(b.findtext("name"))
elif sys.argv[1] == "option":
    for o in root.iter("option"):
        if o.findtext("name") == sys.argv[2]:
            print(o.findtext("value"))
else:
    bricks = list(root.iter("brick"))
    counts = ("numberOfEntriesInHealPending", "numberOfEntriesInSplitBrain")
    sys.exit(0 if bricks and all(b.findtext(c) == "0" for b in bricks for c in counts) else 1)
' "$@"
}

ev_bricks() { ev_gluster volume info "$1" --xml | ev_xml bricks; }

# Entries of a brick, gluster's own .glusterfs left out: a copy healed whole has as many as a
# good one (what evacuate waits for).
ev_entries() { # ssh path
  # shellcheck disable=SC2016 # expanded on the node
  ev_on "$1" sh -c 'find "$1" -path "$1/.glusterfs" -prune -o -print | wc -l' count "$2"
}

# The wait evacuate does: every 2 s until the heal summary shows nothing pending on any brick
# and the new brick holds as many entries as one that kept its data.
ev_wait_healed() { # volume new_ssh new_path good_ssh good_path
  local deadline=$((SECONDS + EV_HEAL_TIMEOUT))
  until ev_gluster volume heal "$1" info summary --xml | ev_xml healed &&
    [ "$(ev_entries "$2" "$3")" -ge "$(ev_entries "$4" "$5")" ]; do
    [ $SECONDS -lt $deadline ] || ev_die "$1 not healed within $EV_HEAL_TIMEOUT s"
    sleep 2
  done
}

ev_secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Makes claims PREFIX1..N of the benchmark's class; prints their volumes, once all are Bound.
ev_claims() { # prefix n
  local i
  for ((i = 1; i <= $2; i++)); do
    printf -- '---\n%s\n' "apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1$i, namespace: $EV_NS}
spec: {storageClassName: $EV_CLASS, accessModes: [ReadWriteMany], resources: {requests: {storage: 1Gi}}}"
  done | "$GP_KUBECTL" apply -f - >/dev/null
  local deadline=$((SECONDS + 600)) pv
  for ((i = 1; i <= $2; i++)); do
    until [ "$("$GP_KUBECTL" -n "$EV_NS" get pvc "$1$i" -o 'jsonpath={.status.phase}')" = Bound ]; do
      [ $SECONDS -lt $deadline ] || ev_die "claim $1$i not Bound (see $EV_DIR/provisioner.log)"
      sleep 0.5
    done
    pv=$("$GP_KUBECTL" -n "$EV_NS" get pvc "$1$i" -o 'jsonpath={.spec.volumeName}')
    "$GP_KUBECTL" get pv "$pv" -o 'jsonpath={.spec.glusterfs.path}{.spec.csi.volumeHandle}{"\n"}'
  done
}

# Writes the reference files into the volume, through a FUSE mount from the host.
ev_fill() { # volume
  local mnt=$EV_DIR/mnt
  mkdir -p "$mnt"
  mount -t glusterfs -o "log-level=WARNING,backup-volfile-servers=$EV_BACKUP_SERVERS" \
    "$EV_SERVER:/$1" "$mnt"
  cp "$EV_DIR"/ref/f* "$mnt/"
  umount "$mnt"
}

# The volume's brick on the node whose storage address is given: its path.
ev_brick_on() { # volume storage-address
  ev_bricks "$1" | awk -v host="$2" '{ i = index($0, ":") } substr($0, 1, i - 1) == host {
    print substr($0, i + 1); found = 1 } END { exit !found }'
}

# Every volume off EV_FROM, its brick on EV_TO holding the reference files whole.
ev_check_moved() { # volume...
  local v path
  for v in "$@"; do
    ! ev_brick_on "$v" "${EV_STORAGE[$EV_FROM]}" >/dev/null || ev_die "$v still has a brick on $EV_FROM"
    path=$(ev_brick_on "$v" "${EV_STORAGE[$EV_TO]}") || ev_die "$v has no brick on $EV_TO"
    # shellcheck disable=SC2016 # expanded on the node
    ev_on "${EV_SSH_ADDRESS[$EV_TO]}" sh -c 'cd "$1" && md5sum -c --quiet -' check "$path" \
      <"$EV_DIR/ref.md5" || ev_die "$v: its brick on $EV_TO does not hold the data"
  done
}

# One volume moved as an admin would type it: the new brick laid out on EV_TO as the
# provisioner lays one out (an image of the old one's size, XFS, in the node's fstab, mounted,
# the brick directory of the volume's GID), `replace-brick … commit force`, a full heal, the
# wait, then the old brick's image and directory removed from EV_FROM.
ev_by_hand() { # volume
  local v=$1 old_path old_dir new_dir bytes gid good good_host good_path
  old_path=$(ev_brick_on "$v" "${EV_STORAGE[$EV_FROM]}") || ev_die "$v has no brick on $EV_FROM"
  old_dir=${old_path%/brick}
  new_dir=$old_dir # the same brick root on the other node
  bytes=$(ev_on "${EV_SSH_ADDRESS[$EV_FROM]}" stat -c %s "$old_dir.img")
  gid=$(ev_gluster volume info "$v" --xml | ev_xml option storage.owner-gid)
  ev_on "${EV_SSH_ADDRESS[$EV_TO]}" sh -c "$EV_LAYOUT" layout "$new_dir" "$bytes" "$gid"
  ev_gluster volume replace-brick "$v" "${EV_STORAGE[$EV_FROM]}:$old_path" \
    "${EV_STORAGE[$EV_TO]}:$new_dir/brick" commit force >/dev/null
  ev_gluster volume heal "$v" full >/dev/null || true
  good=$(ev_bricks "$v" | awk -v a="${EV_STORAGE[$EV_FROM]}" -v b="${EV_STORAGE[$EV_TO]}" \
    '{ host = substr($0, 1, index($0, ":") - 1) } host != a && host != b { print; exit }')
  good_host=${good%%:*} good_path=${good#*:}
  ev_wait_healed "$v" "${EV_SSH_ADDRESS[$EV_TO]}" "$new_dir/brick" "${EV_SSH_OF[$good_host]}" "$good_path"
  ev_on "${EV_SSH_ADDRESS[$EV_FROM]}" sh -c "$EV_CLEAR" clear "$old_dir"
}

# The steps on the nodes, one line each (the remote shell gets them quoted): a new brick
# DIR BYTES GID laid out, and an old brick DIR removed once its process has gone.
# shellcheck disable=SC2016 # expanded on the node
EV_LAYOUT='set -e; truncate -s "$2" "$1.img"; mkfs.xfs -q -i size=512 -l size=64m "$1.img"; mkdir -p "$1"; printf "%s\n" "$1.img $1 xfs loop,noatime,inode64,nofail 0 0" >>/etc/fstab; mount "$1"; install -d -m 2775 -g "$3" "$1/brick"'
# shellcheck disable=SC2016 # expanded on the node
EV_CLEAR='set -e; i=0; while mountpoint -q "$1" && ! umount "$1" 2>/dev/null && [ $i -lt 60 ]; do i=$((i + 1)); sleep 0.5; done; { grep -vxF "$1.img $1 xfs loop,noatime,inode64,nofail 0 0" /etc/fstab || true; } >/etc/fstab.bench; cat /etc/fstab.bench >/etc/fstab; rm -f /etc/fstab.bench "$1.img"; rmdir "$1"'

bench_evacuate() { # volumes out-dir
  local n=$1 out=$2 bin=$PWD/target/release/glusterfs-provisioner
  [ -x "$bin" ] || ev_die "no release build at $bin"
  ev_log "evacuate: $EV_FROM holding $n volumes of 1 GiB with $((EV_FILES * EV_FILE_MIB)) MiB each, against replace-brick + heal by hand"
  EV_DIR=$(mktemp -d "$GP_STATE_DIR/bench-evacuate.XXXXXX")
  declare -gA EV_STORAGE=() EV_SSH_ADDRESS=() EV_SSH_OF=()
  local kind a b c d names=()
  while read -r kind a b c d; do
    case $kind in
      ssh)
        EV_SSH=(ssh -F /dev/null -l "$a" -p "$b" -i "$c" -o "UserKnownHostsFile=$d"
          -o StrictHostKeyChecking=yes -o BatchMode=yes -o ControlMaster=auto
          -o "ControlPath=$EV_DIR/ssh-%h" -o ControlPersist=600) ;;
      node)
        names+=("$a")
        EV_SSH_ADDRESS[$a]=$b EV_STORAGE[$a]=$c EV_SSH_OF[$c]=$b ;;
    esac
  done < <(ev_topology)
  [ -n "${EV_STORAGE[$EV_TO]:-}" ] || ev_die "no $EV_TO in the topology: e2e/bench brings up five nodes for this scenario"
  EV_GLUSTER_HOST=${EV_SSH_ADDRESS[${names[0]}]}
  EV_SERVER=${EV_STORAGE[${names[0]}]}
  EV_BACKUP_SERVERS="${EV_STORAGE[${names[1]}]}:${EV_STORAGE[${names[2]}]}"

  mkdir -p "$EV_DIR/ref"
  local i
  for ((i = 1; i <= EV_FILES; i++)); do
    head -c "$((EV_FILE_MIB << 20))" /dev/urandom >"$EV_DIR/ref/f$i"
  done
  (cd "$EV_DIR/ref" && md5sum f*) >"$EV_DIR/ref.md5"

  # The benchmark's provisioner: as deployed (release build, restricted identity), on the
  # topology without EV_TO, its own name and class.
  ev_topology_without "$EV_TO" "$EV_DIR/topology-without-$EV_TO.json"
  local name suffix
  suffix=$(date +%s)
  name=bench.gluster.org/evacuate-$suffix EV_CLASS=bench-evacuate-$suffix EV_NS=bench-evacuate-$suffix
  "$GP_KUBECTL" create namespace "$EV_NS" >/dev/null
  "$GP_KUBECTL" apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: $EV_CLASS}
provisioner: $name
reclaimPolicy: Delete
parameters: {volumetype: "replicate:3", sizeLimit: image, gidMin: "61000", gidMax: "61999"}
EOF
  "$bin" run --topology "$EV_DIR/topology-without-$EV_TO.json" \
    --kubeconfig "$GP_PROVISIONER_KUBECONFIG" --provisioner-name "$name" \
    --leader-election false --http-address 127.0.0.1:0 \
    --ssh-control-dir "$GP_STATE_DIR/ssh-ev" >"$EV_DIR/provisioner.log" 2>&1 &
  local provisioner=$!
  local by_evacuate=() by_hand=() v
  mapfile -t by_evacuate < <(ev_claims e "$n")
  mapfile -t by_hand < <(ev_claims h "$n")
  if [ "${#by_evacuate[@]}" -ne "$n" ] || [ "${#by_hand[@]}" -ne "$n" ]; then
    ev_die "claims without a volume"
  fi
  kill "$provisioner"
  wait "$provisioner" || true
  for v in "${by_evacuate[@]}" "${by_hand[@]}"; do
    ev_brick_on "$v" "${EV_STORAGE[$EV_FROM]}" >/dev/null || ev_die "$v has no brick on $EV_FROM: $(ev_bricks "$v" | tr '\n' ' ')"
    ev_fill "$v"
  done
  ev_log "   $((2 * n)) volumes Bound and filled, each with a brick on $EV_FROM"

  local started each=() hand_total evacuate_total
  started=$EPOCHREALTIME
  for v in "${by_hand[@]}"; do
    local one=$EPOCHREALTIME
    ev_by_hand "$v"
    each+=("$(ev_secs "$one" "$EPOCHREALTIME")")
  done
  hand_total=$(ev_secs "$started" "$EPOCHREALTIME")
  ev_check_moved "${by_hand[@]}"
  ev_log "   by hand: $hand_total s (each: ${each[*]})"

  started=$EPOCHREALTIME
  "$bin" evacuate --topology "$GP_TOPOLOGY" --kubeconfig "$KUBECONFIG" \
    --ssh-control-dir "$GP_STATE_DIR/ssh-evacuate" --node "$EV_FROM" --apply \
    >"$EV_DIR/evacuate.out" 2>"$EV_DIR/evacuate.err" ||
    ev_die "evacuate failed: $(cat "$EV_DIR/evacuate.err") (its report: $EV_DIR/evacuate.out)"
  evacuate_total=$(ev_secs "$started" "$EPOCHREALTIME")
  ev_check_moved "${by_evacuate[@]}"
  ev_log "   evacuate: $evacuate_total s"
  cat "$EV_DIR/evacuate.out" >&2

  local ratio
  ratio=$(awk -v a="$evacuate_total" -v b="$hand_total" 'BEGIN { printf "%.2f", a / b }')
  echo
  printf '%-46s %-40s %s\n' \
    "evacuate $EV_FROM --apply, $n x 1 GiB (s)" "$evacuate_total, ${ratio}x by hand" "" \
    "replace-brick + heal by hand, one at a time (s)" "$hand_total" ""
  mkdir -p "$out"
  printf '{"evacuate": {"volumes": %s, "mib_each": %s, "evacuate_seconds": %s, "by_hand_seconds": %s, "by_hand_each": [%s], "ratio": %s}}\n' \
    "$n" "$((EV_FILES * EV_FILE_MIB))" "$evacuate_total" "$hand_total" \
    "$(IFS=,; echo "${each[*]}")" "$ratio" >"$out/evacuate.json"
  echo
  echo "results: $out/evacuate.json"
}
