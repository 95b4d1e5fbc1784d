# Sourced by the VM disk benchmarks: makes $W/disk.raw (4 GiB: 1.5 GiB of
# random bytes, 1.5 GiB of compressible text-like data, 1 GiB of holes)
# and backs it up from a paused QEMU into the datastore $W/ds, once.
# Sets DISK and DS.
DISK=$W/disk.raw
if [ ! -f "$DISK" ]; then
    truncate -s 4G "$DISK"
    head -c 1536M /dev/urandom | dd of="$DISK" bs=4M conv=notrunc status=none
    # Compressible: repeated text, so zstd/zlib have work but not noise
    # (the endless cat ends on SIGPIPE, which pipefail would count).
    set +o pipefail
    (while :; do cat /usr/share/common-licenses/*; done) 2>/dev/null | head -c 1536M |
        dd of="$DISK" bs=4M seek=384 conv=notrunc status=none
    set -o pipefail
fi
DS=$W/ds
if [ ! -d "$DS" ]; then
    lifeboat datastore init "$DS" >/dev/null
    Q=$W/qmp.sock
    qemu-system-x86_64 -accel tcg -S -display none -nodefaults -m 256 -name "$(basename "$W")" \
        -drive file="$DISK",format=raw,if=virtio -qmp unix:"$Q",server=on,wait=off &
    QPID=$!
    for _ in $(seq 50); do [ -S "$Q" ] && break; sleep 0.2; done
    lifeboat vm backup --datastore "$DS" --qmp "$Q" >/dev/null
    kill $QPID; wait $QPID 2>/dev/null || true
fi
