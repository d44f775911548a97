#!/usr/bin/env bash
# The migration bench: rows/s of one `sql` migration of ROWS rows (default
# 1,000,000; Parquet -> Parquet) run through skein (a local 3-node cluster:
# plan apply, plan run, until the task succeeded) next to the same query run
# by DataFusion alone in one process on the same data. Prints both and the
# ratio; asserts nothing.
#
#   scripts/bench-migration.sh              ROWS=1000000, debug build (the dev profile, opt-level 1)
#   ROWS=5000000 PROFILE=release scripts/bench-migration.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$SKEIN_ROOT
cd "$root"
rows=${ROWS:-1000000}
profile=${PROFILE:-debug}
flag=""; [[ $profile == release ]] && flag="--release"
work=$(mktemp -d /tmp/skein-bench-migration.XXXXXX)
export SKEIN_CLUSTER_DIR=$work/cluster SKEIN_BASE_PORT=${SKEIN_BASE_PORT:-7750}
export SKEIN_BIN_DIR=$CARGO_TARGET_DIR/$profile
trap 'scripts/cluster.sh down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

scripts/deps.sh
skein_build $flag
export SKEIN_NO_BUILD=1 # cluster.sh: use the build above ($SKEIN_BIN_DIR)
bin=$CARGO_TARGET_DIR/$profile
query="SELECT id, upper(name) AS name, CAST(amount AS DOUBLE) * 100 AS amount_cents, country, created FROM source WHERE amount >= 0"

echo "generating $rows rows of Parquet..."
"$bin/migrate_bench" gen --rows "$rows" --out "$work/source.parquet" >/dev/null

echo "DataFusion alone, in one process..."
direct=$("$bin/migrate_bench" direct --source "$work/source.parquet" --target "$work/direct.parquet" --query "$query")
echo "  $direct"

echo "skein's engine alone, in one process (no cluster)..."
engine=$("$bin/migrate_bench" engine --source "$work/source.parquet" --target "$work/engine.parquet" --query "$query")
echo "  $engine"

echo "through skein (3 nodes, plan apply + plan run, until succeeded)..."
scripts/cluster.sh up 3 >/dev/null
addr=127.0.0.1:$((SKEIN_BASE_PORT + 1))
skein() { "$bin/skein" --addr "$addr" "$@"; }
cat > "$work/plan.yaml" <<YAML
apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {name: bench-migration, annotations: {honk/queue: bench}}
spec:
  type: migration-plan
  owner: bench
  lifecycle: experimental
  source: {url: "file://$work/source.parquet", format: parquet}
  target: {url: "file://$work/skein.parquet", format: parquet}
  steps:
    - type: sql
      query: "$query"
YAML
skein plan apply "$work/plan.yaml" >/dev/null
start=$(date +%s.%N)
skein plan run bench-migration --force --wait --timeout 1800 >/dev/null
end=$(date +%s.%N)
result=$(skein -o json plan show bench-migration)
task_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["task"]["id"])' <<<"$result")
detail=$(skein -o json tasks show "$task_id")
python3 - "$direct" "$detail" "$start" "$end" "$rows" "$engine" <<'PY'
import json, sys
direct = json.loads(sys.argv[1])
task = json.loads(sys.argv[2])
start, end, rows = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
engine = json.loads(sys.argv[6])
if task.get("status") != "succeeded":
    sys.exit(f"the skein migration did not succeed: {task.get('status')} {task.get('last_error')}")
# The cluster's own record: enqueued (created_ms) to succeeded (finished_ms),
# both stamped by the leader; and the engine's time inside the worker.
cluster_s = (task["finished_ms"] - task["created_ms"]) / 1000
engine_s = task["result"]["migration"]["elapsed_ms"] / 1000
cli_s = end - start
rate = rows / cluster_s
lines = [
    ("rows", f"{rows:>12,}"),
    ("DataFusion alone (one process)", f"{direct['rows_per_s']:>12,.0f} rows/s  ({direct['seconds']:.2f} s, median of {direct['runs']})"),
    ("skein's engine alone (one process)", f"{engine['rows_per_s']:>12,.0f} rows/s  ({engine['seconds']:.2f} s, median of {engine['runs']})"),
    ("skein: enqueue -> succeeded", f"{rate:>12,.0f} rows/s  ({cluster_s:.2f} s; the worker's migration itself {engine_s:.2f} s)"),
    ("skein: CLI run -> --wait saw it", f"{rows / cli_s:>12,.0f} rows/s  ({cli_s:.2f} s, polling every 200 ms)"),
    ("ratio skein / DataFusion", f"{rate / direct['rows_per_s']:>12.2f}"),
]
print()
for label, value in lines:
    print(f"{label:<38}{value}")
PY
