#!/usr/bin/env bash
# Compares two `distsync` binaries side by side on this machine: for each round, each binary in
# turn (alternating, so that drift in the machine's speed hits both) starts a fresh 3-node
# `distsync dev` cluster and runs the same benchmarks against it. Prints one JSON line per
# measurement, tagged with the binary's label and the round, then a summary of medians.
#
#   bash scripts/compare-binaries.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS]
#
# With NEW_AS=NAME, the new binary's benchmarks run as identity NAME (issued by `certs client`
# and granted write on `kv:` and `lock:`) instead of the admin, so that the grant lookup of every
# request is measured too.
#
# The figures only mean something relative to each other: compare the two binaries' medians, not
# either against figures from another day (they swing by ±30 % here).
set -euo pipefail

old=${1:?usage: compare-binaries.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS]}
new=${2:?usage: compare-binaries.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS]}
rounds=${3:-3}
seconds=${4:-6}
work=$(mktemp -d)
trap 'kill "${dev_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
results="$work/results.jsonl"

run_one() {
  local label=$1 binary=$2 round=$3
  local dir="$work/$label-$round" base=$((7600 + round * 10))
  "$binary" dev --no-redis --dir "$dir" --base-port "$base" >"$dir.out" 2>&1 &
  dev_pid=$!
  local endpoints="127.0.0.1:$base,127.0.0.1:$((base + 1)),127.0.0.1:$((base + 2))"
  for _ in $(seq 1 300); do
    grep -q "Ctrl-C stops the cluster" "$dir.out" 2>/dev/null && break
    kill -0 "$dev_pid" 2>/dev/null || { cat "$dir.out" >&2; exit 1; }
    sleep 0.1
  done
  local common=(--endpoints "$endpoints" --ca "$dir/tls/ca.pem")
  if [ "$label" = new ] && [ -n "${NEW_AS:-}" ]; then
    "$binary" certs client --dir "$dir/tls" --name "$NEW_AS" >/dev/null
    "$binary" "${common[@]}" acl grant "$NEW_AS" kv: write >/dev/null
    "$binary" "${common[@]}" acl grant "$NEW_AS" lock: write >/dev/null
    common+=(--cert "$dir/tls/$NEW_AS.pem" --key "$dir/tls/$NEW_AS-key.pem")
  fi
  local name args
  while read -r name args; do
    # shellcheck disable=SC2086
    "$binary" "${common[@]}" bench $args --duration "$seconds" |
      sed "s/^{/{\"binary\":\"$label\",\"round\":$round,\"case\":\"$name\",/" | tee -a "$results"
  done <<EOF
write_1 write --clients 1
write_64 write --clients 64
lock_1 lock --clients 1
lock_32 lock --clients 32
EOF
  kill -INT "$dev_pid"
  wait "$dev_pid" || true
  dev_pid=
}

for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then
    run_one old "$old" "$round"; run_one new "$new" "$round"
  else
    run_one new "$new" "$round"; run_one old "$old" "$round"
  fi
done

python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
metric = {"write": "ops_per_sec", "lock": "acquires_per_sec"}
for case in sorted({r["case"] for r in rows}):
    key = metric[case.split("_")[0]]
    line = [case]
    medians = {}
    for binary in ("old", "new"):
        values = [r[key] for r in rows if r["case"] == case and r["binary"] == binary]
        p50s = [r["p50_ms"] for r in rows if r["case"] == case and r["binary"] == binary]
        medians[binary] = statistics.median(values)
        line.append(f"{binary}: {key} {', '.join(f'{v:.0f}' for v in values)} (median {medians[binary]:.0f}, "
                    f"p50 median {statistics.median(p50s):.2f} ms)")
    line.append(f"new/old {medians['new'] / medians['old']:.2f}")
    print(" | ".join(line))
EOF
