#!/bin/bash
# Restore of a 4 GiB VM disk into each target format, against qemu-img
# convert of the raw restore (issue 20's benchmark; figures in
# docs/performance.md). As root, with `lifeboat` and qemu on PATH:
#   bash docs/bench/cross-platform-formats.sh /var/tmp/xpbench [ROUNDS]
# The disk: 1.5 GiB of random bytes, 1.5 GiB of compressible text-like
# data, 1 GiB of holes. Page cache is dropped before every timed run, so
# each reads the datastore (or the raw file) from disk.
set -euo pipefail
W=${1:?work directory}
ROUNDS=${2:-2}
mkdir -p "$W"
# shellcheck source=vm-disk-4g.sh
source "$(dirname "$0")/vm-disk-4g.sh"
SNAP=latest
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
secs() { # prints the wall seconds of "$@"
    local t0 t1
    t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
mbs() { echo "scale=0; 4096 / $1" | bc; }

# The reference raw restore, kept for qemu-img convert.
lifeboat vm restore --datastore "$DS" "$SNAP" "$W/raw" >/dev/null
RAW=$(ls "$W"/raw/*.raw)

printf '| format | lifeboat vm restore | qemu-img convert of the raw restore | throughput vs qemu-img |\n|---|---|---|---|\n'
for spec in "raw:kvm:raw:-O raw" "qcow2:kvm:qcow2:-O qcow2" \
    "vmdk (streamOptimized, OVA):vmware::-O vmdk -o subformat=streamOptimized" \
    "vmdk (monolithicSparse):vmware:package=ovf:-O vmdk -o subformat=monolithicSparse" \
    "vhdx (dynamic):hyperv::-O vhdx -o subformat=dynamic"; do
    IFS=: read -r name plat extra qopts <<<"$spec"
    args=(--target "$plat" --no-repair)
    case "$extra" in raw|qcow2) args=(--target "$plat:$extra" --no-repair) ;; package=*) args+=(--map "$extra") ;; esac
    ours=() ; theirs=()
    for _ in $(seq "$ROUNDS"); do
        rm -rf "$W/out"; drop
        ours+=("$(secs lifeboat vm restore --datastore "$DS" "$SNAP" "$W/out" "${args[@]}")")
        rm -rf "$W/out" "$W/q.img"; drop
        # shellcheck disable=SC2086
        theirs+=("$(secs qemu-img convert -f raw $qopts "$RAW" "$W/q.img")")
        rm -f "$W/q.img"
    done
    o=$(printf '%s\n' "${ours[@]}" | sort -n | head -1); q=$(printf '%s\n' "${theirs[@]}" | sort -n | head -1)
    printf '| %s | %.1f s (%s MB/s; runs %s) | %.1f s (%s MB/s; runs %s) | %.2fx |\n' "$name" "$o" "$(mbs "$o")" "${ours[*]}" "$q" "$(mbs "$q")" "${theirs[*]}" "$(echo "$q / $o" | bc -l)"
done

# Four targets at once from one read, against the four one by one.
rm -rf "$W/out"; drop
all=$(secs lifeboat vm restore --datastore "$DS" "$SNAP" "$W/out" --target kvm --target vmware --target hyperv --target kvm:raw --no-repair)
rm -rf "$W/out"
sum=0
for t in kvm vmware hyperv kvm:raw; do
    drop
    s=$(secs lifeboat vm restore --datastore "$DS" "$SNAP" "$W/out" --target "$t" --no-repair)
    sum=$(echo "$sum + $s" | bc); rm -rf "$W/out"
done
printf '\nfour targets (kvm qcow2, vmware OVA, hyperv, kvm raw) at once: %.1f s; one after another: %.1f s\n' "$all" "$sum"
rm -rf "$W/raw"
