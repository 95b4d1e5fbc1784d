#!/usr/bin/env bash
# Quick start: installs what is missing, builds release, and runs the
# appliance daemon with its embedded default: state (admin password,
# jobs, schedules, TLS certificate) and one datastore `default` under
# ./var, the API over TLS on port 8007 and plain HTTP on 127.0.0.1:8008.
# No config file is needed. Ctrl-C stops it.
#
# With DIR given, a first backup of DIR is run through the API once the
# daemon is up.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
cargo build --release --locked -p lifeboat
LB=$PWD/target/release/lifeboat
STATE=${LIFEBOAT_STATE_DIR:-$PWD/var/lib}
mkdir -p "$STATE"
"$LB" serve --state-dir "$STATE" --listen "${LIFEBOAT_LISTEN:-0.0.0.0:8007}" --listen-plain 127.0.0.1:8008 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid' INT TERM EXIT
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:8008/api/health >/dev/null && break
  sleep 0.2
done
if [[ -f $STATE/initial-admin-password ]]; then
  TOKEN=$(curl -sf -H 'Content-Type: application/json' \
    --data-binary "{\"username\":\"admin\",\"password\":\"$(cat "$STATE/initial-admin-password")\"}" \
    http://127.0.0.1:8008/api/login | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
  echo "run.sh: web console at https://$(hostname -f 2>/dev/null || hostname):8007/ (and http://127.0.0.1:8008/): user admin, password in $STATE/initial-admin-password"
  echo "run.sh: try   LIFEBOAT_TOKEN=$TOKEN $LB --server http://127.0.0.1:8008 snapshots"
  if [[ -n ${1:-} ]]; then
    "$LB" --server http://127.0.0.1:8008 --token "$TOKEN" backup "$(realpath "$1")" || true
    "$LB" --server http://127.0.0.1:8008 --token "$TOKEN" snapshots
  fi
fi
echo "run.sh: the appliance runs (pid $pid); Ctrl-C stops it"
wait $pid
