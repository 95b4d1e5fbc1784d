#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks to build and test Lifeboat.
# Idempotent and quiet when everything is there already.
set -euo pipefail

SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo

# bookworm-backports: qemu-utils 10 is preinstalled from there; libnbd-bin
# (nbdinfo, nbdcopy for the NBD server tests) comes from the same suite.
if [[ ! -e /etc/apt/sources.list.d/backports.sources ]] && [[ -e /etc/apt/sources.list.d/debian.sources ]]; then
  URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$URI" \
    | $SUDO tee /etc/apt/sources.list.d/backports.sources >/dev/null
  $SUDO apt-get update -qq
fi

need_apt=()
# busybox-static + linux-image-amd64: the tiny guest the NBD boot test runs.
for pkg in librocksdb-dev libclang-dev pkg-config clang fuse3 rsync time busybox-static linux-image-amd64; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# NBD test peers: qemu-img/qemu-io (qemu-utils), nbdinfo/nbdcopy
# (libnbd-bin) and qemu-system-x86 (a guest booting from nbd://), from
# bookworm-backports to match the preinstalled qemu-utils 10.
need_bp=()
for pkg in qemu-utils libnbd-bin qemu-system-x86; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_bp+=("$pkg")
done
if ((${#need_bp[@]})); then
  echo "setup: installing ${need_bp[*]} from bookworm-backports" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq -t bookworm-backports "${need_bp[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
