#!/usr/bin/env bash
# VM disk benchmarks (issue 6), on a 4 GiB raw disk of which half is
# data (random, incompressible) and half holes:
#  1. full backup of a running (guestless) QEMU VM: MB/s of virtual disk
#  2. NBD sequential read with nbdcopy: our export straight from the
#     datastore (vm instant-restore --no-boot) vs qemu-nbd serving the raw
#     file; the ratio is ours / qemu-nbd throughput
#   scripts/bench-vm.sh [WORKDIR]
set -euo pipefail
work=${1:-/tmp/lifeboat-vm-bench}
lb=${LIFEBOAT:-$(cd "$(dirname "$0")/.." && pwd)/target/release/lifeboat}
rm -rf "$work"; mkdir -p "$work"
disk=$work/disk.raw
truncate -s 4G "$disk"
# 2 GiB of data in 64 MiB runs, every other 128 MiB.
for i in $(seq 0 31); do
  dd if=/dev/urandom of="$disk" bs=1M count=64 seek=$((i * 128)) conv=notrunc status=none
done
sync
"$lb" datastore init "$work/ds" >/dev/null
qemu-system-x86_64 -accel tcg -name bench -m 64 -nodefaults -display none -S \
  -qmp "unix:$work/qmp.sock,server=on,wait=off" \
  -blockdev "driver=raw,node-name=n0,file.driver=file,file.filename=$disk" \
  -device virtio-blk-pci,drive=n0,id=disk0 &
qpid=$!
trap 'kill $qpid 2>/dev/null || true; kill ${epid:-0} 2>/dev/null || true; kill ${npid:-0} 2>/dev/null || true' EXIT
while [ ! -S "$work/qmp.sock" ]; do sleep 0.1; done
sync; echo 3 > /proc/sys/vm/drop_caches
start=$(date +%s.%N)
"$lb" vm backup --datastore "$work/ds" --qmp "$work/qmp.sock" --json > "$work/backup.json"
end=$(date +%s.%N)
python3 - "$work/backup.json" "$start" "$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); t = float(sys.argv[3]) - float(sys.argv[2])
d = r["disks"][0][1]
print(f"full backup: {t:.1f} s for a 4 GiB disk = {4096/t:.0f} MB/s of virtual disk "
      f"({d['bytes_read']/2**20:.0f} MiB read, {d['chunks_zero']} of {d['chunks']} chunks skipped as holes)")
PY
snap=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['snapshot_id'])" "$work/backup.json")
kill $qpid; wait $qpid 2>/dev/null || true

# Our export, straight from the datastore.
"$lb" vm instant-restore --datastore "$work/ds" "$snap" --no-boot --listen 127.0.0.1:10811 --workdir "$work/ir" > "$work/ir.out" 2>&1 &
epid=$!
for _ in $(seq 100); do nbdinfo --size nbd://127.0.0.1:10811/disk0 >/dev/null 2>&1 && break; sleep 0.1; done
qemu-nbd -r -f raw -t -p 10812 -b 127.0.0.1 "$disk" &
npid=$!
for _ in $(seq 100); do nbdinfo --size nbd://127.0.0.1:10812 >/dev/null 2>&1 && break; sleep 0.1; done
for round in 1 2; do
  for who in ours qemu-nbd; do
    uri=nbd://127.0.0.1:10811/disk0; [ $who = qemu-nbd ] && uri=nbd://127.0.0.1:10812
    sync; echo 3 > /proc/sys/vm/drop_caches
    s=$(date +%s.%N); nbdcopy "$uri" null:; e=$(date +%s.%N)
    python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); print(f'round $round $who: nbdcopy of 4 GiB in {t:.2f} s = {4096/t:.0f} MB/s')" "$s" "$e"
  done
done
