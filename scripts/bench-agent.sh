#!/usr/bin/env bash
# Remote ingest (issue 5): `lifeboat agent` over loopback (HTTPS, HTTP/2)
# into `lifeboat serve`, against a local `lifeboat backup` of the same
# tree, fresh datastores each run, interleaved. Reports wall seconds and
# CPU seconds (the agent's plus the daemon's) per phase, and the ratio.
#   scripts/bench-agent.sh TREE [RUNS] [WORKDIR]
# TREE: e.g. /tmp/bench-trees/n100000-s1-* from ../shared/bench.
set -euo pipefail
tree=${1:?tree}
runs=${2:-3}
work=${3:-/tmp/lifeboat-agent-bench}
lb=${LIFEBOAT:-$(cd "$(dirname "$0")/.." && pwd)/target/release/lifeboat}
rm -rf "$work"; mkdir -p "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/lifeboat.toml" <<TOML
state_dir = "$work/state"
listen = "127.0.0.1:$port"

[[datastore]]
name = "default"
path = "$work/remote"
TOML

cpu_of() { # utime+stime of a pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}
# user+sys of a finished command, from GNU time's output file
cpu_file() { awk '{print $2 + $3}' "$1"; }

echo "phase,run,local_s,local_cpu,agent_s,agent_cpu,daemon_cpu" > "$work/results.csv"
for r in $(seq 1 "$runs"); do
  rm -rf "$work/local" "$work/remote" "$work/state"
  "$lb" datastore init "$work/local" >/dev/null
  "$lb" datastore init "$work/remote" >/dev/null
  "$lb" serve --config "$work/lifeboat.toml" 2> "$work/serve.log" &
  spid=$!
  trap 'kill $spid 2>/dev/null || true' EXIT
  until curl -sk "https://127.0.0.1:$port/api/health" >/dev/null 2>&1; do sleep 0.2; done
  pw=$(cat "$work/state/initial-admin-password")
  admin=$(curl -sk -X POST -H 'Content-Type: application/json' \
    --data "{\"username\":\"admin\",\"password\":\"$pw\"}" "https://127.0.0.1:$port/api/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  token=$(curl -sk -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $admin" \
    --data '{"name":"bench"}' "https://127.0.0.1:$port/api/agents" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  for phase in full nochange; do
    /usr/bin/time -f "%e %U %S" -o "$work/t.local" "$lb" backup --datastore "$work/local" "$tree" >/dev/null
    d0=$(cpu_of "$spid")
    /usr/bin/time -f "%e %U %S" -o "$work/t.agent" "$lb" agent --server "https://127.0.0.1:$port" \
      --token "$token" --insecure "$tree" >/dev/null
    d1=$(cpu_of "$spid")
    ls=$(awk '{print $1}' "$work/t.local"); as=$(awk '{print $1}' "$work/t.agent")
    dc=$(python3 -c "print(round($d1 - $d0, 2))")
    echo "$phase,$r,$ls,$(cpu_file "$work/t.local"),$as,$(cpu_file "$work/t.agent"),$dc" | tee -a "$work/results.csv"
  done
  kill "$spid"; wait "$spid" 2>/dev/null || true
done
python3 - "$work/results.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for phase in ("full", "nochange"):
    rs = [r for r in rows if r["phase"] == phase]
    if not rs:
        continue
    l = min(float(r["local_s"]) for r in rs)
    a = min(float(r["agent_s"]) for r in rs)
    lc = min(float(r["local_cpu"]) for r in rs)
    ac = min(float(r["agent_cpu"]) + float(r["daemon_cpu"]) for r in rs)
    print(f"{phase}: local {l:.2f} s ({lc:.1f} CPU s), agent {a:.2f} s ({ac:.1f} CPU s agent+daemon), ratio {a / l:.2f}x wall, {ac / lc:.2f}x CPU")
PY
