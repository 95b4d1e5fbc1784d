#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test Lifeboat.
# Idempotent and quiet when everything is there already.
set -euo pipefail

need_apt=()
for pkg in librocksdb-dev libclang-dev pkg-config clang fuse3 rsync time; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]}" >&2
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${need_apt[@]}" >/dev/null
fi

# VM tests (tests/guest, tests/tests/guest.rs): QEMU 10 + OVMF from
# bookworm-backports (matching the preinstalled qemu-utils 10) and the
# packages the test guests are built from. Same lines as
# tests/guest/install-deps.sh, which build.sh runs itself.
SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
APT=($SUDO apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "${URI:-http://deb.debian.org/debian}" | $SUDO tee /etc/apt/sources.list.d/backports.sources >/dev/null
  echo "setup: added bookworm-backports" >&2
  "${APT[@]}" update -qq
fi
need_bpo=()
for pkg in qemu-system-x86 ovmf; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_bpo+=("$pkg")
done
need_guest=()
for pkg in mmdebstrap busybox-static linux-image-amd64 extlinux syslinux-common e2fsprogs fdisk \
           iputils-ping iproute2 kmod cpio; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_guest+=("$pkg")
done
if ((${#need_bpo[@]} + ${#need_guest[@]})); then
  echo "setup: installing ${need_bpo[*]} ${need_guest[*]}" >&2
  "${APT[@]}" update -qq
  if ((${#need_bpo[@]})); then
    DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -qq -t bookworm-backports "${need_bpo[@]}" >/dev/null
  fi
  if ((${#need_guest[@]})); then
    DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -qq --no-install-recommends "${need_guest[@]}" >/dev/null
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
