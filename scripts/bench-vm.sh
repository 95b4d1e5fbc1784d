#!/usr/bin/env bash
# VM disk benchmarks (issue 6), on a 4 GiB raw disk of which half is
# data (random, incompressible) and half holes:
#  1. full backup of a running (guestless) QEMU VM: MB/s of virtual disk
#  3. bytes read by a 1 % incremental (41 MiB dirtied, in one run and
#     scattered)
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
  -device virtio-blk-pci,drive=n0,id=disk0 >/dev/null &
qpid=$!
# (kill 0 would signal our whole process group: only kill what started)
trap 'for p in $qpid ${epid:-} ${npid:-}; do kill $p 2>/dev/null || true; done' EXIT
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

# 3. 1 % incrementals: dirty 41 MiB (1 % of 4 GiB) through the guest
# device's own block backend (HMP qemu-io -d: the VM has no guest to write
# for it), then back up again. Once in one run, once scattered as 41 x 1 MiB.
hmp() {
  python3 - "$work/qmp.sock" "$1" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile("rw")
def cmd(c, **a):
    f.write(json.dumps({"execute": c, "arguments": a}) + "\n"); f.flush()
    while True:
        r = json.loads(f.readline())
        if "return" in r or "error" in r:
            return r
f.readline(); cmd("qmp_capabilities")
r = cmd("human-monitor-command", **{"command-line": sys.argv[2]})
if "error" in r or "error" in r.get("return", "").lower():
    sys.exit(f"HMP {sys.argv[2]!r}: {r}")
PY
}
incremental() {
  sync; echo 3 > /proc/sys/vm/drop_caches
  local s e; s=$(date +%s.%N)
  "$lb" vm backup --datastore "$work/ds" --qmp "$work/qmp.sock" --json > "$work/incr.json"
  e=$(date +%s.%N)
  python3 - "$work/incr.json" "$1" "$s" "$e" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); d = r["disks"][0][1]; t = float(sys.argv[4]) - float(sys.argv[3])
print(f"1 % incremental, {sys.argv[2]}: {d['bytes_read']/2**20:.0f} MiB read ({100*d['bytes_read']/d['size']:.2f} % of the disk), "
      f"{d['chunks_read']} chunks read, {d['chunks_reused']} reused, {d['bytes_added']/2**20:.0f} MiB added, {t:.2f} s"
      + (f"; FULL READ: {d['full_reason']}" if d['full_reason'] else ""))
PY
}
hmp "qemu-io -d /machine/peripheral/disk0/virtio-backend \"write -P 0x5a 1000M 41M\""
incremental "41 MiB in one run"
for i in $(seq 0 40); do hmp "qemu-io -d /machine/peripheral/disk0/virtio-backend \"write -P 0x6b $((i * 99 + 7))M 1M\""; done
incremental "41 x 1 MiB scattered"
kill $qpid; wait $qpid 2>/dev/null || true

# Our export, straight from the datastore.
"$lb" vm instant-restore --datastore "$work/ds" "$snap" --no-boot --listen 127.0.0.1:10811 --workdir "$work/ir" > "$work/ir.out" 2>&1 &
epid=$!
for _ in $(seq 100); do nbdinfo --size nbd://127.0.0.1:10811/disk0 >/dev/null 2>&1 && break; sleep 0.1; done
qemu-nbd -r -f raw -t -p 10812 -b 127.0.0.1 "$disk" &
npid=$!
for _ in $(seq 100); do nbdinfo --size nbd://127.0.0.1:10812 >/dev/null 2>&1 && break; sleep 0.1; done
for round in 1 2 3; do
  for who in ours qemu-nbd; do
    uri=nbd://127.0.0.1:10811/disk0; [ $who = qemu-nbd ] && uri=nbd://127.0.0.1:10812
    pid=$epid; [ $who = qemu-nbd ] && pid=$npid
    sync; echo 3 > /proc/sys/vm/drop_caches
    c0=$(awk '{print $14+$15}' /proc/$pid/stat)
    s=$(date +%s.%N); nbdcopy "$uri" null:; e=$(date +%s.%N)
    c1=$(awk '{print $14+$15}' /proc/$pid/stat)
    python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); print(f'round $round $who: nbdcopy of 4 GiB in {t:.2f} s = {4096/t:.0f} MB/s, server CPU {(int(sys.argv[4])-int(sys.argv[3]))/100:.2f} s')" "$s" "$e" "$c0" "$c1"
  done
done
