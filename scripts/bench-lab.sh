#!/usr/bin/env bash
# Verification lab benchmark: time from start to verdict of `lifeboat lab
# verify` for the tiny and the Debian test guest (QEMU TCG here), and four
# labs verifying the tiny guest at once against one alone.
#
#   sudo scripts/bench-lab.sh [WORKDIR]
#
# Needs a release build (target/release/lifeboat) and the test guests'
# packages (tests/guest/install-deps.sh). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
LB=${LIFEBOAT_BIN:-$PWD/target/release/lifeboat}
W=${1:-$(mktemp -d /var/tmp/lifeboat-bench-lab.XXXXXX)}
mkdir -p "$W"
trap '"$LB" lab cleanup >/dev/null 2>&1 || true' EXIT
tiny=$(bash tests/guest/build.sh --tiny "$W" 2>/dev/null | sed -n 's/^tiny=//p')
debian=$(bash tests/guest/build.sh --debian "$W" 2>/dev/null | sed -n 's/^debian=//p')
rm -rf "$W/ds"; "$LB" datastore init "$W/ds" >/dev/null

backup() { # DISK NAME MEM -> snapshot id (a guestless QEMU, never booted)
  local sock="$W/$2.qmp"
  qemu-system-x86_64 -accel tcg -S -display none -nodefaults -machine pc -m "$3" -name "$2" \
    -drive "file=$1,format=raw,if=virtio" -netdev hubport,id=n0,hubid=0 \
    -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 -qmp "unix:$sock,server=on,wait=off" 2>/dev/null &
  local q=$!
  for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.1; done
  sleep 0.3
  "$LB" vm backup --json --datastore "$W/ds" --qmp "$sock" | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_id"])'
  kill $q; wait $q 2>/dev/null || true
}
snap_tiny=$(backup "$tiny" bench-tiny 256)
snap_debian=$(backup "$debian" bench-debian 768)

verdict() { # SNAPSHOT REPORTDIR -> seconds from start to verdict (the report's own clock)
  "$LB" lab verify --json --datastore "$W/ds" "$1" --ip 10.0.2.15/24 --boot-timeout 300 --report "$2" \
    | python3 -c 'import json,sys
from datetime import datetime
r = json.load(sys.stdin)
assert r["passed"], r
p = lambda s: datetime.fromisoformat(s[:26].rstrip("Z"))
print("%.1f" % (p(r["ended"]) - p(r["started"])).total_seconds())'
}

t_tiny=$(verdict "$snap_tiny" "$W/r-tiny")
t_debian=$(verdict "$snap_debian" "$W/r-debian")
start=$(date +%s.%N)
for i in 1 2 3 4; do verdict "$snap_tiny" "$W/r-four-$i" > "$W/four-$i.txt" & done
wait
t_four=$(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')")
ratio=$(python3 -c "print(f'{$t_four / $t_tiny:.2f}')")
echo "| run | seconds |"
echo "|---|---|"
echo "| tiny guest, one lab: start to verdict | $t_tiny |"
echo "| Debian 12 guest (systemd, qemu-ga), one lab: start to verdict | $t_debian |"
echo "| tiny guest, 4 labs at once: wall time for all four | $t_four ($ratio x one; each: $(cat "$W"/four-*.txt | tr '\n' ' ')) |"
