#!/usr/bin/env bash
# Builds the Lifeboat test guests from Debian packages, cached by a hash of
# their inputs, and prints where they are:
#
#   tests/guest/build.sh [--tiny|--debian|--debian-ide|--all] [OUTDIR]
#
#   --tiny    the tiny guest: busybox init, Debian kernel, boots in seconds
#   --debian  a minimal Debian 12 guest: systemd, qemu-guest-agent
#   --debian-ide  the Debian guest as a legacy platform left it: root and
#             fstab by /dev/sda1, an initramfs with IDE drivers only
#             (MODULES=list), its NIC named lan0 by its MAC
#             (52:54:00:0e:10:00): boots on IDE, not on virtio until repaired
#   --all     tiny and debian (the default)
#   OUTDIR    if given, fresh sparse copies go there (tiny.raw, debian.raw,
#             debian-ide.raw)
#             and those paths are printed: boot the copies, never the cache,
#             because a guest writes to its disk.
#
# Output on stdout, one line per guest: `tiny=PATH` / `debian=PATH`; the
# build log goes to stderr. Cache: $LIFEBOAT_GUEST_CACHE, default
# /var/cache/lifeboat-test-guests. Set LIFEBOAT_GUEST_REBUILD=1 to ignore
# it. Runs as root (apt, chroot, loop mount for extlinux). See README.md.
set -euo pipefail

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${LIFEBOAT_GUEST_CACHE:-/var/cache/lifeboat-test-guests}
REBUILD=${LIFEBOAT_GUEST_REBUILD:-0}

# Fixed geometry: one primary partition from sector 2048 to the end.
PART_START=2048
PART_OFFSET=$((PART_START * 512))
TINY_SIZE_MIB=256
DEBIAN_SIZE_MIB=2048
# Fixed file system UUIDs: docs and tests can name them.
TINY_UUID=11feb0a7-0000-4000-8000-000000000001
DEBIAN_UUID=11feb0a7-0000-4000-8000-000000000002
# The MAC the debian-ide guest's NIC had on its old platform: its .link
# file names the NIC lan0 by it (tests/tests/convert.rs backs it up with
# this MAC).
DEBIAN_IDE_MAC=52:54:00:0e:10:00
DEBIAN_SUITE=bookworm
DEBIAN_PACKAGES=systemd-sysv,udev,dbus,linux-image-amd64,qemu-guest-agent,iproute2,ifupdown,e2fsprogs,iputils-ping,procps
# No fsync per unpacked file (the tar is written once, at the end).
MMDEBSTRAP_OPTS=(--variant=apt --dpkgopt=force-unsafe-io --aptopt='Acquire::Retries "3"' --aptopt='Acquire::Languages "none"')
ROOT_PASSWORD=lifeboat

log() { echo "guest-build: $*" >&2; }
die() { echo "guest-build: error: $*" >&2; exit 1; }

want_tiny=0 want_debian=0 want_debian_ide=0 outdir=
for a in "$@"; do
  case $a in
    --tiny) want_tiny=1 ;;
    --debian) want_debian=1 ;;
    --debian-ide) want_debian_ide=1 ;;
    --all) want_tiny=1; want_debian=1 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $a (try --help)" ;;
    *) [[ -z $outdir ]] || die "only one OUTDIR"; outdir=$a ;;
  esac
done
((want_tiny + want_debian + want_debian_ide)) || { want_tiny=1; want_debian=1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (apt, chroot, loop devices)"

# Dependencies, serialised between concurrent callers.
mkdir -p "$CACHE"
(
  flock -w 900 9 || die "timed out waiting for $CACHE/.deps.lock"
  bash "$HERE/install-deps.sh"
) 9>"$CACHE/.deps.lock"

pkgver() { dpkg-query -W -f='${Package}=${Version}\n' "$@"; }

# The kernel linux-image-amd64 points at (same for both guests' staging).
kernel_pkg() {
  dpkg-query -W -f='${Depends}' linux-image-amd64 | grep -o 'linux-image-[0-9][^ ,]*' | head -n1
}

# sha256 over files: path (relative to tests/guest), mode and content.
hash_files() {
  local f
  for f in "$@"; do
    printf '%s %s ' "${f#"$HERE"/}" "$(stat -c %a "$f")"
    sha256sum < "$f" | cut -d' ' -f1
  done
}

tree_files() { find "$@" -type f | LC_ALL=C sort; }

# Runs the cleanup stack on exit.
CLEANUP=()
cleanup() {
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[i]}" || true; done
}
trap cleanup EXIT

# install_extlinux DISK: MBR boot code plus extlinux in /boot/extlinux of
# the partition at PART_OFFSET (mounted through a loop offset: this kernel
# gives loop devices no partition nodes).
install_extlinux() {
  local disk=$1 size loopdev mnt
  dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
  size=$(( $(stat -c %s "$disk") - PART_OFFSET ))
  loopdev=$(losetup -f --show -o "$PART_OFFSET" --sizelimit "$size" "$disk")
  CLEANUP+=("losetup -d $loopdev")
  mnt=$(mktemp -d)
  CLEANUP+=("rmdir $mnt")
  mount -t ext4 "$loopdev" "$mnt"
  CLEANUP+=("umount $mnt")
  extlinux --install "$mnt/boot/extlinux" >/dev/null 2>&1 || die "extlinux --install failed"
  sync
  umount "$mnt"; unset 'CLEANUP[-1]'
  rmdir "$mnt"; unset 'CLEANUP[-1]'
  losetup -d "$loopdev"; unset 'CLEANUP[-1]'
}

# make_disk DISK SIZE_MIB UUID LABEL ROOTDIR: MBR with one bootable ext4
# partition, populated from ROOTDIR by mke2fs -d (no mount), then extlinux.
make_disk() {
  local disk=$1 size_mib=$2 uuid=$3 label=$4 root=$5
  rm -f "$disk"
  truncate -s "${size_mib}M" "$disk"
  echo "start=$PART_START, type=83, bootable" | sfdisk -q "$disk"
  # extlinux cannot boot from 64bit or metadata_csum file systems.
  mke2fs -q -F -t ext4 -b 4096 -O ^64bit,^metadata_csum -U "$uuid" -L "$label" -d "$root" \
    -E offset="$PART_OFFSET" "$disk" "$(( size_mib * 1024 - PART_OFFSET / 1024 ))k"
  install_extlinux "$disk"
}

# Publishes WORK as the cache entry DIR (atomically) and drops older
# entries of the same kind.
publish() {
  local work=$1 dir=$2 kind=$3 old
  chmod 0755 "$work"
  touch "$work/.complete"
  rm -rf "$dir"
  mv "$work" "$dir"
  # exactly KIND-<16 hex>: "debian-*" must not match "debian-rootfs-*"
  for old in "$CACHE/$kind"-????????????????; do
    [[ $old == "$dir" || ! -d $old ]] || rm -rf "$old"
  done
}

copy_out() {
  local src=$1 name=$2
  if [[ -n $outdir ]]; then
    mkdir -p "$outdir"
    cp --sparse=always "$src" "$outdir/$name"
    echo "$outdir/$name"
  else
    echo "$src"
  fi
}

# ------------------------------------------------------------------ tiny

build_tiny() {
  local kpkg kver key dir work stage ird t0 m
  kpkg=$(kernel_pkg); kver=${kpkg#linux-image-}
  [[ -f /boot/vmlinuz-$kver && -d /lib/modules/$kver ]] || die "kernel $kver not installed (linux-image-amd64)"
  key=$( {
    echo "tiny v1 size=$TINY_SIZE_MIB uuid=$TINY_UUID"
    hash_files "$HERE/build.sh" $(tree_files "$HERE/tiny")
    pkgver "$kpkg" busybox-static syslinux-common extlinux e2fsprogs
  } | sha256sum | cut -c1-16)
  dir=$CACHE/tiny-$key
  if [[ $REBUILD != 1 && -f $dir/.complete && -f $dir/disk.raw ]]; then
    log "tiny guest cached: $dir"
    TINY_DISK=$dir/disk.raw
    return
  fi
  t0=$SECONDS
  log "building tiny guest (kernel $kver) into $dir"
  work=$(mktemp -d "$CACHE/.tiny-$key.XXXXXX")
  CLEANUP+=("rm -rf $work")
  stage=$work/root ird=$work/initramfs

  # initramfs: busybox, /init, the modules for virtio, ext4, power button.
  mkdir -p "$ird/bin" "$ird/modules"
  cp /bin/busybox "$ird/bin/busybox"
  install -m 0755 "$HERE/tiny/initramfs-init" "$ird/init"
  for m in virtio_pci virtio_blk virtio_net virtio_console virtio_rng ext4 button evdev; do
    modprobe -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
  done | awk '!seen[$0]++' | grep -v -e '/crc32c-intel.ko$' | while read -r m; do
    cp "$m" "$ird/modules/"
    basename "$m" >> "$ird/modules/order"
  done

  # root file system: busybox applets, the guest's scripts, kernel, initrd.
  mkdir -p "$stage"
  cp -a "$HERE/tiny/rootfs/." "$stage/"
  mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,run,tmp,data,root,mnt,boot/extlinux}
  chmod 1777 "$stage/tmp"; chmod 0700 "$stage/root"
  cp /bin/busybox "$stage/bin/busybox"
  busybox --list-full | while read -r p; do
    [[ -e $stage/$p || -L $stage/$p ]] || ln -s /bin/busybox "$stage/$p"
  done
  cp "/boot/vmlinuz-$kver" "$stage/boot/vmlinuz"
  (cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) > "$stage/boot/initrd.img"
  cat > "$stage/boot/extlinux/extlinux.conf" <<EOF
SERIAL 0 115200
DEFAULT tiny
PROMPT 0
TIMEOUT 0
LABEL tiny
  LINUX /boot/vmlinuz
  INITRD /boot/initrd.img
  APPEND root=UUID=$TINY_UUID rw console=tty0 console=ttyS0,115200 quiet panic=-1
EOF
  echo "$kver" > "$stage/etc/lifeboat-guest/kernel"
  chown -R 0:0 "$stage"

  make_disk "$work/disk.raw" "$TINY_SIZE_MIB" "$TINY_UUID" lbtiny "$stage"
  rm -rf "$stage" "$ird"
  cat > "$work/info" <<EOF
kind=tiny
key=$key
kernel=$kver
uuid=$TINY_UUID
partition_offset=$PART_OFFSET
build_seconds=$((SECONDS - t0))
EOF
  publish "$work" "$dir" tiny
  unset 'CLEANUP[-1]'
  log "tiny guest built in $((SECONDS - t0)) s"
  TINY_DISK=$dir/disk.raw
}

# ---------------------------------------------------------------- debian

# The tiny guest's control-port scripts serve the Debian guest too.
DEBIAN_SHARED=("$HERE/tiny/rootfs/usr/sbin/lifeboat-control" "$HERE/tiny/rootfs/usr/sbin/lifeboat-port")

build_debian() {
  local tkey tar key dir work stage t0 mirror kver initrd
  mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -E '^(URIs:|deb )' | LC_ALL=C sort -u || true)
  # The rootfs tar (slow: ~100 s) depends on the package set, not on the
  # rest of this script.
  tkey=$( {
    echo "debian-rootfs v1 suite=$DEBIAN_SUITE include=$DEBIAN_PACKAGES opts=${MMDEBSTRAP_OPTS[*]}"
    echo "$mirror"
    pkgver mmdebstrap
  } | sha256sum | cut -c1-16)
  tar=$CACHE/debian-rootfs-$tkey/rootfs.tar
  t0=$SECONDS
  if [[ $REBUILD == 1 || ! -f $CACHE/debian-rootfs-$tkey/.complete ]]; then
    log "mmdebstrap $DEBIAN_SUITE ($DEBIAN_PACKAGES) into $tar"
    work=$(mktemp -d "$CACHE/.debian-rootfs-$tkey.XXXXXX")
    CLEANUP+=("rm -rf $work")
    mmdebstrap --quiet "${MMDEBSTRAP_OPTS[@]}" --include="$DEBIAN_PACKAGES" \
      "$DEBIAN_SUITE" "$work/rootfs.tar" >&2
    publish "$work" "$CACHE/debian-rootfs-$tkey" debian-rootfs
    unset 'CLEANUP[-1]'
    log "rootfs tar built in $((SECONDS - t0)) s"
  else
    log "debian rootfs cached: $tar"
  fi

  key=$( {
    echo "debian v1 size=$DEBIAN_SIZE_MIB uuid=$DEBIAN_UUID rootfs=$tkey"
    hash_files "$HERE/build.sh" $(tree_files "$HERE/debian") "${DEBIAN_SHARED[@]}"
    pkgver syslinux-common extlinux e2fsprogs
  } | sha256sum | cut -c1-16)
  dir=$CACHE/debian-$key
  if [[ $REBUILD != 1 && -f $dir/.complete && -f $dir/disk.raw ]]; then
    log "debian guest cached: $dir"
    DEBIAN_DISK=$dir/disk.raw
    return
  fi
  log "building debian guest into $dir"
  work=$(mktemp -d "$CACHE/.debian-$key.XXXXXX")
  CLEANUP+=("rm -rf $work")
  stage=$work/root
  mkdir -p "$stage"
  tar -C "$stage" --numeric-owner -xpf "$tar"
  cp -a "$HERE/debian/rootfs/." "$stage/"
  install -m 0755 "${DEBIAN_SHARED[@]}" "$stage/usr/local/sbin/"

  kver=$(ls "$stage/lib/modules" | LC_ALL=C sort -V | tail -n1)
  [[ -f $stage/boot/vmlinuz-$kver && -f $stage/boot/initrd.img-$kver ]] || die "no kernel/initrd for $kver in the rootfs"
  echo "UUID=$DEBIAN_UUID / ext4 errors=remount-ro 0 1" > "$stage/etc/fstab"
  echo lifeboat-debian > "$stage/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tlifeboat-debian\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$stage/etc/hosts"
  echo "root:$ROOT_PASSWORD" | chroot "$stage" chpasswd
  chroot "$stage" systemctl enable lifeboat-heartbeat.service lifeboat-control.service >/dev/null 2>&1 \
    || die "systemctl enable in the guest failed"
  mkdir -p "$stage/boot/extlinux"
  cat > "$stage/boot/extlinux/extlinux.conf" <<EOF
SERIAL 0 115200
DEFAULT debian
PROMPT 0
TIMEOUT 0
LABEL debian
  LINUX /boot/vmlinuz-$kver
  INITRD /boot/initrd.img-$kver
  APPEND root=UUID=$DEBIAN_UUID ro console=tty0 console=ttyS0,115200 net.ifnames=0
EOF
  make_disk "$work/disk.raw" "$DEBIAN_SIZE_MIB" "$DEBIAN_UUID" lbdebian "$stage"
  rm -rf "$stage"
  cat > "$work/info" <<EOF
kind=debian
key=$key
rootfs=$tkey
kernel=$kver
uuid=$DEBIAN_UUID
partition_offset=$PART_OFFSET
root_password=$ROOT_PASSWORD
build_seconds=$((SECONDS - t0))
EOF
  publish "$work" "$dir" debian
  unset 'CLEANUP[-1]'
  log "debian guest built in $((SECONDS - t0)) s"
  DEBIAN_DISK=$dir/disk.raw
}

# ------------------------------------------------------------ debian-ide

# The Debian guest as an old platform (IDE disk) leaves it: the kernel
# finds its root as /dev/sda1 (command line and fstab), and the initramfs
# holds only the IDE/SATA drivers it needs there (MODULES=list, as
# MODULES=dep would make on that host). On virtio hardware it cannot find
# its root; guest repair (UUIDs, virtio drivers in a rebuilt initramfs)
# is what makes it boot. Its NIC is named lan0 by a .link file matching
# its old MAC, and /etc/network/interfaces configures lan0: with another
# MAC the NIC stays eth0 and gets no address until the repair's network
# step puts the new MAC into the .link file. Made from the debian cache
# entry in seconds.
build_debian_ide() {
  local key dir work loopdev mnt kver t0
  build_debian
  key=$( {
    echo "debian-ide v2 from=$(basename "$(dirname "$DEBIAN_DISK")") mac=$DEBIAN_IDE_MAC"
    hash_files "$HERE/build.sh"
  } | sha256sum | cut -c1-16)
  dir=$CACHE/debian-ide-$key
  if [[ $REBUILD != 1 && -f $dir/.complete && -f $dir/disk.raw ]]; then
    log "debian-ide guest cached: $dir"
    DEBIAN_IDE_DISK=$dir/disk.raw
    return
  fi
  t0=$SECONDS
  log "building debian-ide guest into $dir"
  work=$(mktemp -d "$CACHE/.debian-ide-$key.XXXXXX")
  CLEANUP+=("rm -rf $work")
  cp --sparse=always "$DEBIAN_DISK" "$work/disk.raw"
  loopdev=$(losetup -f --show -o "$PART_OFFSET" --sizelimit "$(( $(stat -c %s "$work/disk.raw") - PART_OFFSET ))" "$work/disk.raw")
  CLEANUP+=("losetup -d $loopdev")
  mnt=$(mktemp -d)
  CLEANUP+=("rmdir $mnt")
  mount -t ext4 "$loopdev" "$mnt"
  CLEANUP+=("umount -R $mnt")
  kver=$(ls "$mnt/lib/modules" | LC_ALL=C sort -V | tail -n1)
  echo "/dev/sda1 / ext4 errors=remount-ro 0 1" > "$mnt/etc/fstab"
  sed -i 's|root=UUID=[^ ]*|root=/dev/sda1|' "$mnt/boot/extlinux/extlinux.conf"
  grep -q 'root=/dev/sda1' "$mnt/boot/extlinux/extlinux.conf" || die "extlinux.conf has no root= to change"
  # The NIC by its MAC, as a real legacy guest names it (udev's .link
  # files apply Name= even with net.ifnames=0; initramfs-tools copies them
  # into the initramfs, so the rename happens there).
  mkdir -p "$mnt/etc/systemd/network"
  printf '# The NIC of the old platform, named by its MAC.\n[Match]\nMACAddress=%s\n\n[Link]\nName=lan0\n' \
    "$DEBIAN_IDE_MAC" > "$mnt/etc/systemd/network/10-lan0.link"
  sed -i 's/\beth0\b/lan0/g' "$mnt/etc/network/interfaces"
  grep -q '^iface lan0 inet static' "$mnt/etc/network/interfaces" || die "/etc/network/interfaces has no static eth0 to rename"
  ! grep -q eth0 "$mnt/etc/network/interfaces" || die "/etc/network/interfaces still names eth0"
  sed -i 's/^MODULES=.*/MODULES=list/' "$mnt/etc/initramfs-tools/initramfs.conf"
  printf '%s\n' ata_piix ata_generic libata sd_mod scsi_mod ext4 e1000 >> "$mnt/etc/initramfs-tools/modules"
  mount -t proc proc "$mnt/proc"; mount --bind /dev "$mnt/dev"; mount -t sysfs sys "$mnt/sys"
  chroot "$mnt" update-initramfs -u -k "$kver" >&2 || die "update-initramfs in the guest failed"
  umount "$mnt/proc" "$mnt/dev" "$mnt/sys"
  # The proof that the negative case is real: no virtio block driver.
  lsinitramfs "$mnt/boot/initrd.img-$kver" > "$work/initramfs.list"
  if grep -q '/virtio_blk\.ko' "$work/initramfs.list"; then die "the IDE-only initramfs still holds virtio_blk"; fi
  grep -q '/ata_piix\.ko' "$work/initramfs.list" || die "the IDE-only initramfs lacks ata_piix"
  sync
  umount "$mnt"; unset 'CLEANUP[-1]'
  rmdir "$mnt"; unset 'CLEANUP[-1]'
  losetup -d "$loopdev"; unset 'CLEANUP[-1]'
  sed -e 's/^kind=.*/kind=debian-ide/' -e "s/^key=.*/key=$key/" "$(dirname "$DEBIAN_DISK")/info" > "$work/info"
  echo "root=/dev/sda1 initramfs=MODULES=list (IDE only)" >> "$work/info"
  echo "nic=lan0 mac=$DEBIAN_IDE_MAC (/etc/systemd/network/10-lan0.link)" >> "$work/info"
  publish "$work" "$dir" debian-ide
  unset 'CLEANUP[-1]'
  log "debian-ide guest built in $((SECONDS - t0)) s"
  DEBIAN_IDE_DISK=$dir/disk.raw
}

# One builder per kind at a time; different kinds build in parallel.
if ((want_tiny)); then
  exec 8>"$CACHE/.tiny.lock"
  flock -w 900 8 || die "timed out waiting for $CACHE/.tiny.lock"
  build_tiny
  echo "tiny=$(copy_out "$TINY_DISK" tiny.raw)"
  flock -u 8
fi
if ((want_debian)); then
  exec 7>"$CACHE/.debian.lock"
  flock -w 1200 7 || die "timed out waiting for $CACHE/.debian.lock"
  build_debian
  echo "debian=$(copy_out "$DEBIAN_DISK" debian.raw)"
  flock -u 7
fi
if ((want_debian_ide)); then
  exec 7>"$CACHE/.debian.lock"
  flock -w 1200 7 || die "timed out waiting for $CACHE/.debian.lock"
  build_debian_ide
  echo "debian-ide=$(copy_out "$DEBIAN_IDE_DISK" debian-ide.raw)"
  flock -u 7
fi
