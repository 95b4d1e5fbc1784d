#!/usr/bin/env bash
# Builds the Lifeboat appliance images from Debian 12 packages:
#
#   image-build/build.sh [--rootfs-only] [OUTDIR]
#
#   lifeboat-<version>.qcow2   BIOS boot (extlinux), ext4 root, 8 GiB virtual
#   lifeboat-<version>.iso     hybrid ISO (BIOS isolinux + UEFI grub), live
#                              system from a squashfs (live-boot)
#   lifeboat-<version>.manifest  sorted package list + image checksums
#
# Both boot to `lifeboat console` on tty1 and ttyS0 and run lifeboat.service.
# Inputs: image-build/packages (mmdebstrap --include), the machine's apt
# sources, image-build/rootfs/ (copied over the root), the units in
# systemd/ (falling back to image-build/units/*.placeholder while
# systemd/lifeboat.service is not in the tree), and the release binary
# ($LIFEBOAT_BIN, else `cargo build --release -p lifeboat`).
#
# Reproducible: SOURCE_DATE_EPOCH (default: the time of the last commit
# that changed image-build/ or systemd/) fixes
# file times, file-system UUIDs and hash seeds are fixed, the manifest is
# sorted. Cached by a hash of the inputs in $LIFEBOAT_IMAGE_CACHE (default
# /var/cache/lifeboat-image): the package root (slow, minutes) by package
# list + apt sources, the images by everything. LIFEBOAT_IMAGE_REBUILD=1
# ignores the cache. Prints `qcow2=PATH`, `iso=PATH`, `manifest=PATH` on
# stdout (copies in OUTDIR if given), sizes and the manifest on stderr.
# --rootfs-only stops after the package root (to warm the cache).
# Runs as root (mmdebstrap, loop mount for extlinux).
set -euo pipefail

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
CACHE=${LIFEBOAT_IMAGE_CACHE:-/var/cache/lifeboat-image}
REBUILD=${LIFEBOAT_IMAGE_REBUILD:-0}
SUITE=bookworm
DISK_SIZE_MIB=8192
PART_START=2048
PART_OFFSET=$((PART_START * 512))
ROOT_UUID=1feb0a70-0000-4000-8000-00000000a001
ISO_LABEL=LIFEBOAT
MMDEBSTRAP_OPTS=(--variant=apt --dpkgopt=force-unsafe-io --aptopt='Acquire::Retries "3"' --aptopt='Acquire::Languages "none"'
                 --aptopt='APT::Install-Recommends "false"')
KERNEL_ARGS="console=tty0 console=ttyS0,115200 quiet loglevel=3 net.ifnames=0"

log() { echo "image-build: $*" >&2; }
die() { echo "image-build: error: $*" >&2; exit 1; }

outdir= rootfs_only=0
for a in "$@"; do
  case $a in
    --rootfs-only) rootfs_only=1 ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $a (try --help)" ;;
    *) [[ -z $outdir ]] || die "only one OUTDIR"; outdir=$a ;;
  esac
done
[[ $(id -u) -eq 0 ]] || die "must run as root (mmdebstrap, loop devices)"
for tool in mmdebstrap mke2fs sfdisk extlinux qemu-img mksquashfs xorriso grub-mkstandalone mkfs.vfat mcopy; do
  command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh"
done

VERSION=$(awk -F'"' '/^\[workspace.package\]/{p=1} p && /^version/{print $2; exit}' "$REPO/Cargo.toml")
[[ -n $VERSION ]] || die "no workspace version in Cargo.toml"
: "${SOURCE_DATE_EPOCH:=$(git -C "$REPO" log -1 --format=%ct -- image-build systemd 2>/dev/null || true)}"
: "${SOURCE_DATE_EPOCH:=1700000000}"
export SOURCE_DATE_EPOCH
export E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH

# The binary.
if ((rootfs_only)); then
  LIFEBOAT_BIN=/bin/true
elif [[ -z ${LIFEBOAT_BIN:-} ]]; then
  log "cargo build --release -p lifeboat"
  (cd "$REPO" && cargo build --release -p lifeboat >&2)
  LIFEBOAT_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/lifeboat
fi
[[ -x $LIFEBOAT_BIN ]] || die "no lifeboat binary at $LIFEBOAT_BIN"

# The units: systemd/ of the tree, placeholders for what is missing.
UNITS=()
for u in "$REPO"/systemd/*.service "$REPO"/systemd/*.socket "$REPO"/systemd/*.timer; do
  [[ -f $u ]] && UNITS+=("$u")
done
if [[ ! -f $REPO/systemd/lifeboat.service ]]; then
  log "systemd/lifeboat.service not in the tree: using image-build/units/lifeboat.service.placeholder"
  UNITS+=("$HERE/units/lifeboat.service.placeholder")
fi

mkdir -p "$CACHE"
CLEANUP=()
cleanup() {
  local i
  for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do eval "${CLEANUP[i]}" || true; done
}
trap cleanup EXIT

hash_files() {
  local f
  for f in "$@"; do
    printf '%s %s ' "${f#"$REPO"/}" "$(stat -c %a "$f")"
    sha256sum < "$f" | cut -d' ' -f1
  done
}

# ------------------------------------------------------------ package root

PACKAGES=$(grep -v '^\s*#' "$HERE/packages" | awk 'NF' | LC_ALL=C sort | paste -sd, -)
# The machine's apt sources, as one deb822 file for the chroot.
SOURCES=$(mktemp)
CLEANUP+=("rm -f $SOURCES")
for f in /etc/apt/sources.list.d/*.sources; do
  [[ -f $f ]] && { grep -v '^#' "$f"; echo; }
done > "$SOURCES"
[[ -s $SOURCES ]] || grep -h '^deb ' /etc/apt/sources.list > "$SOURCES" || die "no apt sources on this machine"

TKEY=$( {
  echo "rootfs v1 suite=$SUITE packages=$PACKAGES opts=${MMDEBSTRAP_OPTS[*]}"
  LC_ALL=C sort "$SOURCES"
  dpkg-query -W -f='${Version}\n' mmdebstrap
} | sha256sum | cut -c1-16)
TAR=$CACHE/rootfs-$TKEY/rootfs.tar

exec 9>"$CACHE/.lock"
flock -w 1800 9 || die "timed out waiting for $CACHE/.lock"

if [[ $REBUILD == 1 || ! -f $CACHE/rootfs-$TKEY/.complete ]]; then
  t0=$SECONDS
  log "mmdebstrap $SUITE ($PACKAGES)"
  work=$(mktemp -d "$CACHE/.rootfs-$TKEY.XXXXXX")
  CLEANUP+=("rm -rf $work")
  mmdebstrap --quiet "${MMDEBSTRAP_OPTS[@]}" --include="$PACKAGES" "$SUITE" "$work/rootfs.tar" "$SOURCES" >&2
  touch "$work/.complete"
  rm -rf "$CACHE/rootfs-$TKEY"
  mv "$work" "$CACHE/rootfs-$TKEY"
  unset 'CLEANUP[-1]'
  for old in "$CACHE"/rootfs-????????????????; do [[ $old == "$CACHE/rootfs-$TKEY" ]] || rm -rf "$old"; done
  log "package root built in $((SECONDS - t0)) s"
else
  log "package root cached: $TAR"
fi

((rootfs_only)) && { echo "rootfs=$TAR"; exit 0; }

# ------------------------------------------------------------------ images

KEY=$( {
  echo "images v1 rootfs=$TKEY size=$DISK_SIZE_MIB uuid=$ROOT_UUID epoch=$SOURCE_DATE_EPOCH args=$KERNEL_ARGS version=$VERSION"
  hash_files "$HERE/build.sh" $(find "$HERE/rootfs" "$HERE/units" "$REPO/systemd" -type f 2>/dev/null | LC_ALL=C sort) "${UNITS[@]}"
  echo "bin $(sha256sum < "$LIFEBOAT_BIN" | cut -d' ' -f1)"
  dpkg-query -W -f='${Package}=${Version}\n' extlinux syslinux-common isolinux e2fsprogs squashfs-tools xorriso grub-efi-amd64-bin qemu-utils
} | sha256sum | cut -c1-16)
DIR=$CACHE/images-$KEY
NAME=lifeboat-$VERSION

if [[ $REBUILD != 1 && -f $DIR/.complete ]]; then
  log "images cached: $DIR"
else
  t0=$SECONDS
  log "building images into $DIR"
  work=$(mktemp -d "$CACHE/.images-$KEY.XXXXXX")
  CLEANUP+=("rm -rf $work")
  stage=$work/root
  mkdir -p "$stage"
  tar -C "$stage" --numeric-owner -xpf "$TAR"

  # The appliance on top of the packages.
  cp -a "$HERE/rootfs/." "$stage/"
  install -D -m 0755 "$LIFEBOAT_BIN" "$stage/usr/bin/lifeboat"
  objcopy --strip-debug "$stage/usr/bin/lifeboat"
  for u in "${UNITS[@]}"; do
    n=$(basename "$u"); n=${n%.placeholder}
    install -m 0644 "$u" "$stage/etc/systemd/system/$n"
  done
  for t in "$REPO"/systemd/*.tmpfiles; do
    [[ -f $t ]] && install -D -m 0644 "$t" "$stage/usr/lib/tmpfiles.d/$(basename "${t%.tmpfiles}").conf"
  done
  mkdir -p "$stage/etc/lifeboat" "$stage/var/lib/lifeboat" "$stage/srv/lifeboat"
  echo lifeboat > "$stage/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tlifeboat\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$stage/etc/hosts"
  ln -sf /usr/share/zoneinfo/Etc/UTC "$stage/etc/localtime"
  echo Etc/UTC > "$stage/etc/timezone"
  ln -sf ../run/systemd/resolve/stub-resolv.conf "$stage/etc/resolv.conf"
  systemctl --root="$stage" enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
    lifeboat.service lifeboat-console@tty1.service lifeboat-console@ttyS0.service >/dev/null 2>&1 \
    || die "systemctl enable in the image failed"
  systemctl --root="$stage" mask getty@tty1.service serial-getty@ttyS0.service >/dev/null 2>&1
  # No login on the console: the root account stays locked (tty2 and up
  # keep their gettys for a recovery shell once a password is set).
  # A machine id is made on first boot, so clones differ.
  : > "$stage/etc/machine-id"
  rm -f "$stage/var/lib/dbus/machine-id"
  rm -rf "$stage"/var/lib/apt/lists/* "$stage"/var/cache/apt/*.bin "$stage"/var/cache/apt/archives/*.deb \
         "$stage"/var/log/*.log "$stage"/var/log/apt/* "$stage"/tmp/* "$stage"/etc/ssh/ssh_host_* 2>/dev/null || true

  kver=$(ls "$stage/lib/modules" | LC_ALL=C sort -V | tail -n1)
  [[ -f $stage/boot/vmlinuz-$kver && -f $stage/boot/initrd.img-$kver ]] || die "no kernel/initrd for $kver in the image"
  dpkg-query --admindir="$stage/var/lib/dpkg" -W -f='${Package}\t${Version}\t${Architecture}\n' | LC_ALL=C sort > "$work/packages.txt"

  # --- ISO: squashfs of the root (no fstab root entry: live-boot mounts it)
  : > "$stage/etc/fstab"
  find "$stage" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
  iso=$work/iso
  mkdir -p "$iso/live" "$iso/isolinux" "$iso/boot/grub" "$iso/EFI/BOOT"
  mksquashfs "$stage" "$iso/live/filesystem.squashfs" -comp zstd -noappend -quiet -no-progress \
    -e boot >&2  # SOURCE_DATE_EPOCH sets every time stamp
  cp "$stage/boot/vmlinuz-$kver" "$iso/live/vmlinuz"
  cp "$stage/boot/initrd.img-$kver" "$iso/live/initrd.img"
  echo "$NAME" > "$iso/live/lifeboat.id"
  cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso/isolinux/"
  cat > "$iso/isolinux/isolinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT live
PROMPT 0
TIMEOUT 0
LABEL live
  KERNEL /live/vmlinuz
  APPEND initrd=/live/initrd.img boot=live components $KERNEL_ARGS
EOF
  cat > "$work/grub-embed.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --set=root --file /live/lifeboat.id
set timeout=0
linux /live/vmlinuz boot=live components $KERNEL_ARGS
initrd /live/initrd.img
boot
EOF
  grub-mkstandalone -O x86_64-efi -o "$work/BOOTX64.EFI" --locales= --fonts= --themes= \
    --install-modules="linux normal search search_fs_file iso9660 part_gpt part_msdos fat serial terminal configfile echo all_video" \
    --modules="linux normal search search_fs_file iso9660 part_gpt part_msdos fat serial terminal" \
    "boot/grub/grub.cfg=$work/grub-embed.cfg"
  mkfs.vfat -C -n LBEFI -i 1feb0a70 --invariant "$iso/EFI/efiboot.img" 4096 >/dev/null
  MTOOLS_SKIP_CHECK=1 mmd -i "$iso/EFI/efiboot.img" ::/EFI ::/EFI/BOOT
  MTOOLS_SKIP_CHECK=1 mcopy -m -i "$iso/EFI/efiboot.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
  cp "$work/BOOTX64.EFI" "$iso/EFI/BOOT/BOOTX64.EFI"
  find "$iso" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
  xorriso -as mkisofs -quiet -iso-level 3 -full-iso9660-filenames -volid "$ISO_LABEL" \
    --modification-date="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d%H%M%S00)" \
    -isohybrid-mbr /usr/lib/ISOLINUX/isohdpfx.bin \
    -eltorito-boot isolinux/isolinux.bin -eltorito-catalog isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table \
    -eltorito-alt-boot -e EFI/efiboot.img -no-emul-boot -isohybrid-gpt-basdat \
    -o "$work/$NAME.iso" "$iso" >&2
  rm -rf "$iso"

  # --- qcow2: MBR, one ext4 partition filled by mke2fs -d, extlinux
  echo "UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1" > "$stage/etc/fstab"
  mkdir -p "$stage/boot/extlinux"
  cat > "$stage/boot/extlinux/extlinux.conf" <<EOF
SERIAL 0 115200
DEFAULT lifeboat
PROMPT 0
TIMEOUT 0
LABEL lifeboat
  LINUX /boot/vmlinuz-$kver
  INITRD /boot/initrd.img-$kver
  APPEND root=UUID=$ROOT_UUID ro $KERNEL_ARGS
EOF
  find "$stage" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
  raw=$work/disk.raw
  truncate -s "${DISK_SIZE_MIB}M" "$raw"
  printf 'label: dos\nlabel-id: 0x1feb0a70\nstart=%s, type=83, bootable\n' "$PART_START" | sfdisk -q "$raw"
  # extlinux cannot boot from 64bit or metadata_csum file systems.
  mke2fs -q -F -t ext4 -b 4096 -O ^64bit,^metadata_csum -U "$ROOT_UUID" -E hash_seed="$ROOT_UUID",offset="$PART_OFFSET" \
    -L lifeboat-root -d "$stage" "$raw" "$(( DISK_SIZE_MIB * 1024 - PART_OFFSET / 1024 ))k"
  rm -rf "$stage"
  dd if=/usr/lib/syslinux/mbr/mbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none
  loopdev=$(losetup -f --show -o "$PART_OFFSET" "$raw")
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
  qemu-img convert -O qcow2 -c -o compression_type=zstd "$raw" "$work/$NAME.qcow2"
  rm -f "$raw"

  {
    echo "# $NAME: Debian $SUITE packages (name, version, architecture), sorted"
    cat "$work/packages.txt"
    echo "# images (sha256)"
    (cd "$work" && sha256sum "$NAME.qcow2" "$NAME.iso")
    echo "# lifeboat binary (sha256 before strip)"
    echo "$(sha256sum < "$LIFEBOAT_BIN" | cut -d' ' -f1)  usr/bin/lifeboat"
  } > "$work/$NAME.manifest"
  rm -f "$work/packages.txt" "$work/grub-embed.cfg" "$work/BOOTX64.EFI"
  echo "key=$KEY rootfs=$TKEY kernel=$kver epoch=$SOURCE_DATE_EPOCH build_seconds=$((SECONDS - t0))" > "$work/info"
  touch "$work/.complete"
  chmod 0755 "$work"
  rm -rf "$DIR"
  mv "$work" "$DIR"
  unset 'CLEANUP[-1]'
  for old in "$CACHE"/images-????????????????; do [[ $old == "$DIR" ]] || rm -rf "$old"; done
  log "images built in $((SECONDS - t0)) s"
fi

for f in "$NAME.qcow2" "$NAME.iso"; do
  log "$f: $(du -h --apparent-size "$DIR/$f" | cut -f1) ($(stat -c %s "$DIR/$f") bytes)"
done
log "manifest ($(grep -vc '^#' "$DIR/$NAME.manifest") lines):"
cat "$DIR/$NAME.manifest" >&2

out() {
  local kind=$1 f=$2
  if [[ -n $outdir ]]; then
    mkdir -p "$outdir"
    cp --sparse=always "$DIR/$f" "$outdir/$f"
    echo "$kind=$outdir/$f"
  else
    echo "$kind=$DIR/$f"
  fi
}
out qcow2 "$NAME.qcow2"
out iso "$NAME.iso"
out manifest "$NAME.manifest"
