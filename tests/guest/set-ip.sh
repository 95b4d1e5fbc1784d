#!/usr/bin/env bash
# Rewrites /etc/lifeboat-guest/ip inside a tiny guest disk (powered off)
# without mounting it:
#
#   tests/guest/set-ip.sh DISK "ADDRESS/PREFIX [GATEWAY]"
#
# e.g. set-ip.sh tiny.raw "192.168.77.10/24 192.168.77.1"
set -euo pipefail
disk=${1:?usage: set-ip.sh DISK \"ADDRESS/PREFIX [GATEWAY]\"}
ip=${2:?usage: set-ip.sh DISK \"ADDRESS/PREFIX [GATEWAY]\"}
offset=$((2048 * 512))
tmp=$(mktemp); cmds=$(mktemp)
trap 'rm -f "$tmp" "$cmds"' EXIT
echo "$ip" > "$tmp"
printf 'cd /etc/lifeboat-guest\nrm ip\nwrite %s ip\nsif ip mode 0100644\n' "$tmp" > "$cmds"
debugfs -w -f "$cmds" "$disk?offset=$offset" >/dev/null 2>&1
got=$(debugfs -R 'cat /etc/lifeboat-guest/ip' "$disk?offset=$offset" 2>/dev/null)
[[ $got == "$ip" ]] || { echo "set-ip: writing the ip file failed (read back '$got')" >&2; exit 1; }
