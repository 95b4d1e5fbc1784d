#!/usr/bin/env bash
# Installs what the test guests need to be built and booted: QEMU 10 and
# OVMF from bookworm-backports (to match the preinstalled qemu-utils 10),
# plus the Debian packages the guest images are assembled from.
# Idempotent; quiet when everything is there. Must run as root.
set -euo pipefail

APT=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# bookworm-backports on the same mirror as the existing Debian source.
if [[ ! -f /etc/apt/sources.list.d/backports.sources ]] \
   && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  URI=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  URI=${URI:-http://deb.debian.org/debian}
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$URI" \
    > /etc/apt/sources.list.d/backports.sources
  echo "install-deps: added bookworm-backports ($URI)" >&2
  "${APT[@]}" update -qq
fi

bpo=()
for p in qemu-system-x86 ovmf; do installed "$p" || bpo+=("$p"); done
# qemu-system-x86 must come from backports (qemu-utils 10 is preinstalled).
if installed qemu-system-x86 && ! dpkg-query -W -f='${Version}' qemu-system-x86 | grep -q '^1:10'; then
  bpo+=(qemu-system-x86)
fi
plain=()
for p in mmdebstrap busybox-static linux-image-amd64 extlinux syslinux-common \
         e2fsprogs fdisk iputils-ping iproute2 kmod cpio; do
  installed "$p" || plain+=("$p")
done

if ((${#bpo[@]} + ${#plain[@]})); then
  echo "install-deps: installing ${bpo[*]} ${plain[*]}" >&2
  "${APT[@]}" update -qq
  if ((${#bpo[@]})); then
    "${APT[@]}" install -y -qq -t bookworm-backports "${bpo[@]}" >/dev/null
  fi
  if ((${#plain[@]})); then
    "${APT[@]}" install -y -qq --no-install-recommends "${plain[@]}" >/dev/null
  fi
fi
