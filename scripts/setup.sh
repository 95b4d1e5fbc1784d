#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test Lifeboat.
# Idempotent and quiet when everything is there already.
set -euo pipefail

SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
APT=($SUDO apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
export DEBIAN_FRONTEND=noninteractive
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# bookworm-backports on the same mirror as the existing Debian source:
# qemu-utils 10 is preinstalled from there, so QEMU, libnbd and OVMF must
# come from there too.
if [[ ! -e /etc/apt/sources.list.d/backports.sources ]] \
   && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "${URI:-http://deb.debian.org/debian}" | $SUDO tee /etc/apt/sources.list.d/backports.sources >/dev/null
  echo "setup: added bookworm-backports" >&2
  "${APT[@]}" update -qq
fi

# Build: RocksDB (system library), bindgen, libblkid (crates/disks). Tests:
# fuse3 (mount), time (peak RSS), what the test guests are built from
# (tests/guest), and the SMTP sink of the mail tests (python3-aiosmtpd, run
# by /usr/bin/python3); systemd for systemd-analyze and systemd-tmpfiles
# (tests/tests/systemd.rs); curl, the API client of the daemon and image
# tests; tmux + xfsprogs (console tests); what image-build/build.sh makes
# the ISO with (xorriso, isolinux, squashfs-tools, grub-efi, mtools,
# dosfstools), openssl for the image test; genimage and (pip) kconfiglib
# for buildroot/lint.sh; nftables: the agent test cuts a link with it, and
# the verification lab builds its firewall with it; chromium (headless)
# renders the lab's HTML report in tests/tests/lab.rs and drives the web
# console's tests (fonts-wqy-zenhei: its Chinese pages in their screenshots); dnsmasq-base
# serves DNS and DHCP inside labs; acl (setfacl, getfacl) and attr
# (getfattr) for tests/tests/fidelity.rs; libguestfs (guestfish),
# guestfs-tools, virt-v2v and hivex (hivexregedit: libwin-hivex-perl) repair guests in a cross-platform
# restore (crates/repair), and tests/tests/convert.rs reads its OVA back
# with virt-v2v (virt-xml-validate comes with libvirt below).
plain=()
for pkg in librocksdb-dev libclang-dev pkg-config clang fuse3 rsync time \
           mmdebstrap busybox-static linux-image-amd64 extlinux syslinux-common e2fsprogs fdisk \
           iputils-ping iproute2 kmod cpio python3-aiosmtpd systemd curl python3-venv \
           libblkid-dev tmux xfsprogs xorriso isolinux squashfs-tools grub-efi-amd64-bin mtools \
           dosfstools openssl genimage python3-pip nftables chromium fonts-wqy-zenhei dnsmasq-base acl attr \
           libguestfs-tools guestfs-tools virt-v2v libhivex-bin libwin-hivex-perl ntfs-3g libnfs-utils gdisk lvm2; do
  installed "$pkg" || plain+=("$pkg")
done
# Real peers from backports: qemu-img/qemu-io, nbdinfo/nbdcopy, QEMU, OVMF.
bpo=()
for pkg in qemu-utils libnbd-bin qemu-system-x86 ovmf qemu-block-extra; do
  installed "$pkg" || bpo+=("$pkg")
done
if installed qemu-system-x86 && ! dpkg-query -W -f='${Version}' qemu-system-x86 | grep -q '^1:10'; then
  bpo+=(qemu-system-x86)
fi
if ((${#plain[@]} + ${#bpo[@]})); then
  echo "setup: installing ${plain[*]} ${bpo[*]}" >&2
  "${APT[@]}" update -qq
  # Backports first: libguestfs and virt-v2v depend on qemu-system-x86,
  # and on a fresh machine apt would pick bookworm's 7.2 for it, which
  # the preinstalled qemu-utils 10 breaks ("held broken packages").
  if ((${#bpo[@]})); then
    "${APT[@]}" install -y -qq -t bookworm-backports "${bpo[@]}" >/dev/null
  fi
  if ((${#plain[@]})); then
    "${APT[@]}" install -y -qq --no-install-recommends "${plain[@]}" >/dev/null
  fi
fi

# libvirt 11 from backports for the libvirt connector (tests/tests/libvirt.rs
# starts its own libvirtd): the daemon, its QEMU driver, virsh. Each named
# /bookworm-backports instead of -t, which would also move systemd to
# backports; no recommends, so QEMU stays the one above.
lv=()
for pkg in libvirt0 libvirt-common libvirt-clients libvirt-daemon libvirt-daemon-common libvirt-daemon-log libvirt-daemon-driver-qemu; do
  if ! installed "$pkg" || ! dpkg-query -W -f='${Version}' "$pkg" | grep -q '^11\.'; then
    lv=(libvirt0 libvirt-common libvirt-clients libvirt-daemon libvirt-daemon-common libvirt-daemon-log libvirt-daemon-driver-qemu)
  fi
done
if ((${#lv[@]})); then
  echo "setup: installing libvirt from bookworm-backports" >&2
  "${APT[@]}" update -qq
  "${APT[@]}" install -y -qq --no-install-recommends "${lv[@]/%//bookworm-backports}" >/dev/null
fi

# schemathesis (PyPI) fuzzes the REST API from its OpenAPI document
# (tests/tests/api_fuzz.rs). Pinned: 3.39 needs a hypothesis from before
# 6.112's internal changes.
VENV=/opt/lifeboat-test-venv
SCHEMATHESIS_PINS=(schemathesis==3.39.16 'hypothesis<6.112')
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q '3\.39\.16'; then
  echo "setup: installing schemathesis into $VENV" >&2
  $SUDO /usr/bin/python3 -m venv "$VENV"
  $SUDO "$VENV/bin/pip" install -q --disable-pip-version-check "${SCHEMATHESIS_PINS[@]}"
fi

if ! python3 -c 'import kconfiglib' 2>/dev/null; then
  echo "setup: pip install kconfiglib" >&2
  python3 -m pip install -q kconfiglib 2>/dev/null || python3 -m pip install -q --break-system-packages kconfiglib
fi

# The web console (web/app) is built with Node.js and npm at build time
# (web/build.rs): machines of this kind carry Node 20; elsewhere Debian's
# nodejs and npm. Its packages come pinned by the lockfile; the browser
# tests drive the chromium installed above.
if ! command -v npm >/dev/null; then
  echo "setup: installing nodejs npm" >&2
  "${APT[@]}" install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
APP="$(dirname "$0")/../web/app"
if [[ -f $APP/package-lock.json ]] && { [[ ! -f $APP/node_modules/.package-lock.json ]] || [[ $APP/package-lock.json -nt $APP/node_modules/.package-lock.json ]]; }; then
  echo "setup: npm ci in web/app" >&2
  (cd "$APP" && npm ci --no-audit --no-fund --loglevel=error)
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi

# test.sh checks formatting and lints; rustup's minimal profile lacks both.
cargo fmt --version >/dev/null 2>&1 || { echo "setup: rustup component add rustfmt" >&2; rustup component add rustfmt; }
cargo clippy --version >/dev/null 2>&1 || { echo "setup: rustup component add clippy" >&2; rustup component add clippy; }
