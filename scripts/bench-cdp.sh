#!/usr/bin/env bash
# CDP benchmark: write latency and throughput of a protected disk, seen
# from inside a guest (the Debian test guest, QEMU TCG here), unprotected
# vs `lifeboat cdp protect --mode sync` vs `--mode async`.
#
#   sudo scripts/bench-cdp.sh [WORKDIR]
#
# The guest writes its second disk with dd, O_DIRECT (4 KiB x 2000 for
# latency, 1 MiB x 128 for throughput); dd's own timing is reported.
# Needs a release build (target/release/lifeboat) and the test guests'
# packages (tests/guest/install-deps.sh). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
LB=${LIFEBOAT_BIN:-$PWD/target/release/lifeboat}
W=${1:-$(mktemp -d /var/tmp/lifeboat-bench-cdp.XXXXXX)}
mkdir -p "$W"
debian=$(bash tests/guest/build.sh --debian "$W" 2>/dev/null | sed -n 's/^debian=//p')
rm -rf "$W/ds" "$W/data.raw"; "$LB" datastore init "$W/ds" >/dev/null
truncate -s 256M "$W/data.raw"
Q1=$W/q1.sock Q2=$W/q2.sock QGA=$W/qga.sock
rm -f "$Q1" "$Q2" "$QGA"
qemu-system-x86_64 -accel tcg -display none -nodefaults -machine pc -m 768 -name bench-cdp \
  -drive "file=$debian,format=raw,if=none,id=root,snapshot=on" -device virtio-blk-pci,drive=root,bootindex=0 \
  -drive "file=$W/data.raw,format=raw,if=none,id=drvdata,cache=none,aio=native" -device virtio-blk-pci,drive=drvdata,id=data \
  -device virtio-serial-pci -chardev "socket,id=qga,path=$QGA,server=on,wait=off" -device virtserialport,chardev=qga,name=org.qemu.guest_agent.0 \
  -qmp "unix:$Q1,server=on,wait=off" -qmp "unix:$Q2,server=on,wait=off" >/dev/null 2>&1 &
QEMU=$!
trap 'kill $QEMU 2>/dev/null || true; kill $PROT 2>/dev/null || true' EXIT
PROT=

guest_dd() { # BS COUNT -> "seconds MB/s" as dd reports them
  python3 - "$QGA" "$1" "$2" <<'PY'
import json, socket, sys, time, base64, re
path, bs, count = sys.argv[1], sys.argv[2], sys.argv[3]
def call(cmd, args=None):
    s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(path)
    s.sendall(json.dumps({"execute": "guest-sync", "arguments": {"id": 7}}).encode() + b"\n")
    f = s.makefile()
    while json.loads(f.readline()).get("return") != 7: pass
    s.sendall(json.dumps({"execute": cmd, "arguments": args or {}}).encode() + b"\n")
    r = json.loads(f.readline()); s.close(); return r["return"]
pid = call("guest-exec", {"path": "/bin/dd", "arg": ["if=/dev/zero", "of=/dev/vdb", f"bs={bs}", f"count={count}", "oflag=direct"], "capture-output": True})["pid"]
while True:
    st = call("guest-exec-status", {"pid": pid})
    if st["exited"]: break
    time.sleep(0.2)
err = base64.b64decode(st.get("err-data", "")).decode()
m = re.search(r"copied, ([0-9.]+) s, ([0-9.]+ [kMG]?B/s)", err)
if st["exitcode"] != 0 or not m: sys.exit("dd failed: " + err)
print(m.group(1), m.group(2).replace(" ", ""))
PY
}

# The guest agent answers once the guest is up.
for _ in $(seq 150); do python3 -c "
import socket,json,sys
s=socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect('$QGA')
s.sendall(b'{\"execute\":\"guest-ping\"}\n'); sys.exit(0 if b'return' in s.recv(100) else 1)" 2>/dev/null && break; sleep 2; done

measure() { # LABEL
  read -r lat_s _ < <(guest_dd 4k 2000)
  read -r _ tput < <(guest_dd 1M 128)
  printf '| %s | %.0f us | %s |\n' "$1" "$(python3 -c "print($lat_s / 2000 * 1e6)")" "$tput"
}

echo "| disk | 4 KiB O_DIRECT write, mean latency | 1 MiB O_DIRECT writes |"
echo "|---|---|---|"
guest_dd 4k 200 >/dev/null   # warm up
measure "unprotected"
for mode in sync async; do
  "$LB" cdp protect --datastore "$W/ds" --qmp "$Q1" --disk data --mode "$mode" >"$W/protect-$mode.log" 2>&1 &
  PROT=$!
  n=$(grep -c ready "$W/ds/cdp/bench-cdp/disks/data/sessions.json" 2>/dev/null || echo 0)
  for _ in $(seq 600); do [[ $(grep -c ready "$W/ds/cdp/bench-cdp/disks/data/sessions.json" 2>/dev/null || echo 0) -gt $n ]] && break; sleep 0.2; done
  measure "protected, $mode"
  kill -TERM $PROT; wait $PROT || true; PROT=
done
