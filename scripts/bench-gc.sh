#!/usr/bin/env bash
# GC memory and reclaimed space on a datastore holding several snapshots
# of a large tree, each with its own churn of small files.
#   scripts/bench-gc.sh TREE [SNAPSHOTS] [WORKDIR]
# TREE: a generated tree from ../shared/bench (e.g. /tmp/bench-trees/n100000-s1-*).
set -euo pipefail
tree=${1:?tree}
snaps=${2:-4}
work=${3:-/tmp/lifeboat-gc-bench}
lb=${LIFEBOAT:-$(dirname "$0")/../target/release/lifeboat}
rm -rf "$work"
mkdir -p "$work/churn"
"$lb" datastore init "$work/ds" >/dev/null
for i in $(seq 1 "$snaps"); do
    # 20,000 files of 1-8 KiB that change completely between snapshots.
    rm -rf "$work/churn"; mkdir -p "$work/churn"
    python3 - "$work/churn" "$i" <<'PY'
import os, random, sys
root, seed = sys.argv[1], int(sys.argv[2])
r = random.Random(seed)
for d in range(100):
    p = os.path.join(root, f"d{d:03}")
    os.makedirs(p)
    for f in range(200):
        with open(os.path.join(p, f"f{f:03}"), "wb") as fh:
            fh.write(r.randbytes(r.randint(1024, 8192)))
PY
    /usr/bin/time -f "backup $i: %e s, %M KiB max RSS" "$lb" backup --datastore "$work/ds" "$tree" "$work/churn" >/dev/null
done
echo "packs before: $(du -sb "$work/ds/packs" | cut -f1) bytes"
"$lb" forget --datastore "$work/ds" --keep-last 1 >/dev/null
/usr/bin/time -f "gc: %e s, %M KiB max RSS" "$lb" gc --datastore "$work/ds" --json > "$work/gc.json"
echo "packs after: $(du -sb "$work/ds/packs" | cut -f1) bytes"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: r[k] for k in ('snapshots','trees','marks','mark_set_bytes','packs_deleted','packs_repacked','bytes_freed','bytes_repacked','garbage_kept')})" "$work/gc.json"
/usr/bin/time -f "check --read-data: %e s, %M KiB max RSS" "$lb" check --datastore "$work/ds" --read-data | tail -1
