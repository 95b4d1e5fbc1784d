#!/bin/bash
# Sequential read of a 4 GiB VM disk from a snapshot over NFS (libnfs
# nfs-cat) against the same over NBD (nbdcopy, one connection), both into
# /dev/null (nfs-cp cannot write to /dev/null; writing 4 GiB to a disk
# would time the disk) and both served
# by `lifeboat` on the appliance without the daemon (issue 21's benchmark;
# figures in docs/performance.md). As root, with lifeboat, qemu,
# libnfs-utils and libnbd-bin on PATH:
#   bash docs/bench/nfs-vs-nbd.sh /var/tmp/nfsbench [ROUNDS]
# The disk is made as in cross-platform-formats.sh (1.5 GiB random,
# 1.5 GiB text-like, 1 GiB holes); the page cache is dropped before each
# timed run, so each reads the datastore from disk.
set -euo pipefail
W=${1:?work directory}
ROUNDS=${2:-3}
mkdir -p "$W"
# shellcheck source=vm-disk-4g.sh
source "$(dirname "$0")/vm-disk-4g.sh"
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
secs() {
    local t0 t1
    t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
mbs() { echo "scale=0; 4096 / $1" | bc; }
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
PIDS=()
trap cleanup EXIT

# NFS: the local export prints nfs://HOST:PORT/PATH.
lifeboat vm export --datastore "$DS" --client 127.0.0.1 --listen 127.0.0.1:0 --portmap 127.0.0.1:0 latest > "$W/nfs.uri" 2>/dev/null &
PIDS+=($!)
# NBD: the instant-restore exports without a VM; one export per disk id.
lifeboat vm instant-restore --datastore "$DS" --no-boot --listen 127.0.0.1:0 --workdir "$W/ir" latest > "$W/nbd.uri" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$W/nfs.uri" ] && grep -q '^nbd://' "$W/nbd.uri" && break; sleep 0.2; done
uri=$(head -1 "$W/nfs.uri")
rest=${uri#nfs://}; hostport=${rest%%/*}; path=/${rest#*/}; port=${hostport##*:}
NFS="nfs://127.0.0.1$path?nfsport=$port&mountport=$port"
disk=$(basename "$path" .img)
NBD="$(grep '^nbd://' "$W/nbd.uri" | head -1)/$disk"

nfs=(); nbd=()
for _ in $(seq "$ROUNDS"); do
    drop; nfs+=("$(secs sh -c "nfs-cat '$NFS' > /dev/null")")
    # (`null:` would skip reading what block status calls zero)
    drop; nbd+=("$(secs sh -c "nbdcopy --connections=1 '$NBD' - > /dev/null")")
done
f=$(printf '%s\n' "${nfs[@]}" | sort -n | head -1); b=$(printf '%s\n' "${nbd[@]}" | sort -n | head -1)
printf '| path | best of %s | throughput |\n|---|---|---|\n' "$ROUNDS"
printf '| NFS (nfs-cat) | %.1f s (runs %s) | %s MB/s |\n' "$f" "${nfs[*]}" "$(mbs "$f")"
printf '| NBD (nbdcopy, 1 connection) | %.1f s (runs %s) | %s MB/s |\n' "$b" "${nbd[*]}" "$(mbs "$b")"
printf '\nNFS / NBD throughput: %.2fx\n' "$(echo "$b / $f" | bc -l)"
