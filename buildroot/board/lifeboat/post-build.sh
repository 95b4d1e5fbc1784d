#!/bin/sh
# Buildroot post-build script: $1 is the target directory.
set -eu
TARGET=$1
test -x "$TARGET/usr/bin/lifeboat" || { echo "post-build: lifeboat is not installed in $TARGET" >&2; exit 1; }
mkdir -p "$TARGET/etc/lifeboat" "$TARGET/var/lib/lifeboat" "$TARGET/srv/lifeboat"
# A machine id is made on first boot, so clones differ.
: > "$TARGET/etc/machine-id"
