#!/usr/bin/env bash
# Boots a tiny (or Debian) test guest disk under QEMU TCG with everything
# the tests talk to on unix sockets in RUNDIR:
#
#   tests/guest/run-tiny.sh DISK [RUNDIR]
#
#   RUNDIR/qmp.sock        QMP (server; connect and send qmp_capabilities)
#   RUNDIR/heartbeat.sock  virtio-serial org.lifeboat.heartbeat
#   RUNDIR/control.sock    virtio-serial org.lifeboat.control
#   RUNDIR/qga.sock        virtio-serial org.qemu.guest_agent.0
#   RUNDIR/serial.log      the serial console (ttyS0)
#
# DISK is any QEMU file name (a path, or nbd://HOST:PORT/EXPORT).
# Environment: GUEST_MEM (MiB, default 256), GUEST_SMP (1),
# GUEST_DISK_FORMAT (raw; qcow2 for an overlay),
# GUEST_NET=user (default; QEMU user networking, guest 10.0.2.15) or
# GUEST_NET=tap:IFNAME (an existing tap, e.g. on a bridge in a netns),
# GUEST_MAC (52:54:00:12:34:56). Extra arguments after RUNDIR go to QEMU.
# QEMU stays in the foreground; Ctrl-C or QMP `quit` stops it.
set -euo pipefail
disk=${1:?usage: run-tiny.sh DISK [RUNDIR] [QEMU ARGS...]}
run=${2:-$(mktemp -d /tmp/lifeboat-guest.XXXXXX)}
shift $(( $# >= 2 ? 2 : 1 ))
mkdir -p "$run"
net=${GUEST_NET:-user}
case $net in
  user) netdev=(-netdev user,id=n0) ;;
  tap:*) netdev=(-netdev "tap,id=n0,ifname=${net#tap:},script=no,downscript=no") ;;
  *) echo "run-tiny: GUEST_NET must be user or tap:IFNAME" >&2; exit 2 ;;
esac
echo "run-tiny: sockets and console log in $run" >&2
exec qemu-system-x86_64 \
  -name lifeboat-test-guest -machine pc -accel tcg \
  -m "${GUEST_MEM:-256}" -smp "${GUEST_SMP:-1}" \
  -nodefaults -no-user-config -vga std -display none \
  -drive "file=$disk,format=${GUEST_DISK_FORMAT:-raw},if=virtio" \
  "${netdev[@]}" -device "virtio-net-pci,netdev=n0,mac=${GUEST_MAC:-52:54:00:12:34:56},romfile=" \
  -device virtio-serial-pci,id=vser0 \
  -chardev "socket,id=hb,path=$run/heartbeat.sock,server=on,wait=off" \
  -device virtserialport,bus=vser0.0,chardev=hb,name=org.lifeboat.heartbeat \
  -chardev "socket,id=ctl,path=$run/control.sock,server=on,wait=off" \
  -device virtserialport,bus=vser0.0,chardev=ctl,name=org.lifeboat.control \
  -chardev "socket,id=qga,path=$run/qga.sock,server=on,wait=off" \
  -device virtserialport,bus=vser0.0,chardev=qga,name=org.qemu.guest_agent.0 \
  -chardev "socket,id=qmp,path=$run/qmp.sock,server=on,wait=off" \
  -mon chardev=qmp,mode=control \
  -chardev "file,id=con,path=$run/serial.log" -serial chardev:con \
  "$@"
