#!/usr/bin/env bash
# Quick start: installs what is missing, builds release, creates a local
# datastore under ./var (if absent), backs up DIR (default: this
# repository's sources as a sample tree) and lists the snapshots.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
cargo build --release --locked -p lifeboat
LB=target/release/lifeboat
DS=${LIFEBOAT_DATASTORE:-$PWD/var/datastore}
SRC=${1:-$PWD/crates}
[[ -f $DS/config.json ]] || $LB datastore init "$DS"
rc=0
$LB backup --datastore "$DS" --tag quickstart "$SRC" || rc=$?
$LB snapshots --datastore "$DS"
exit $rc
