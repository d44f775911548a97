#!/usr/bin/env bash
# The migration bench: rows/s of one `sql` migration (Parquet -> Parquet,
# the same query everywhere) through skein next to the same query run by
# DataFusion alone, in one process, on the same data and the same cores.
# It prints figures and asserts nothing about speed; it fails (non-zero) if
# a migration does not succeed or does not write every row.
#
# The dataset: ROWS rows (`migrate_bench gen`, ids 1..ROWS) in one Parquet
# file, and the same rows split into FILES Parquet files of distinct ids
# (FILES contiguous id ranges, each written by `migrate_bench direct`).
# One run prints:
#
#  1. one file, one task (as before): DataFusion alone, skein's engine alone
#     (in one process, no cluster), and a plan of that file run by a local
#     3-node cluster (scripts/cluster.sh up 3): enqueue -> succeeded;
#  2. partitioned: a plan whose source is the folder of FILES files with
#     `partition: PARTITION` (default `file`: one task per file), target a
#     folder, run by a fresh local 3-node cluster with `skein plan run NAME
#     --wait --timeout 3600`; the cluster's own time is the planner task's
#     created_ms to the commit task's finished_ms. Against DataFusion alone
#     on the same folder; prints rows/s of each and the ratio, and how long
#     a partition took and how many ran at once on average;
#  3. the largest VmHWM (peak RSS, /proc/PID/status, read for every node
#     just before that cluster is taken down) of any node of the
#     partitioned run, against the source folder's size on disk (du -sb);
#  4. slots on one node: the first ROWS_SLOTS rows' files (rounded to whole
#     files, at least 2) as a partitioned plan on a fresh 1-node cluster
#     with `--slots 1 --migrate-threads 1`, then on another fresh one with
#     `--slots 2 --migrate-threads 1`: both times and the speedup.
#
#   scripts/bench-migration.sh                          ROWS=50000000 FILES=100 ROWS_SLOTS=10000000, debug build
#   PROFILE=release scripts/bench-migration.sh          the figures to quote (release build)
#   ROWS=2000000 FILES=20 ROWS_SLOTS=1000000 scripts/bench-migration.sh   a quick run
#
# Settings (environment):
#   PROFILE=debug|release   which build to use and (unless SKEIN_NO_BUILD=1) to build first [debug]
#   ROWS, FILES, ROWS_SLOTS sizes, as above
#   PARTITION               the partitioned source's `partition:` (YAML) [file]; e.g. '{files: 4}'
#   SKEIN_SLOTS, SKEIN_MIGRATE_THREADS  the 3-node clusters' nodes' --slots [4] and
#                           --migrate-threads [the CPU count] (part 4 sets its own)
#   SKEIN_BASE_PORT         the clusters' ports (one cluster at a time) [7750]
#   KEEP_WORK=1             keep the work folder (data, outputs, nodes' logs) at the end
#
# Each section prints the load average when it ends: the clusters and
# DataFusion share the machine's cores, so anything else running skews the
# figures. Everything lives in a fresh folder under /tmp (the one file, the
# folder and every output: about 8x the folder's size on disk); on exit
# (also on failure and Ctrl-C) every cluster the script started is taken
# down and the folder removed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$SKEIN_ROOT
cd "$root"
rows=${ROWS:-50000000}
files=${FILES:-100}
rows_slots=${ROWS_SLOTS:-10000000}
partition=${PARTITION:-file}
profile=${PROFILE:-debug}
flag=""; [[ $profile == release ]] && flag="--release"
(( rows >= files && files >= 1 )) || { echo "error: ROWS ($rows) must be at least FILES ($files) >= 1" >&2; exit 2; }
work=$(mktemp -d /tmp/skein-bench-migration.XXXXXX)
export SKEIN_BASE_PORT=${SKEIN_BASE_PORT:-7750}
export SKEIN_BIN_DIR=$CARGO_TARGET_DIR/$profile
unset SKEIN_TOKEN SKEIN_CLUSTER_DIR # each cluster below has its own
clusters=()
cleanup() {
  local d
  for d in "${clusters[@]}"; do SKEIN_CLUSTER_DIR=$d scripts/cluster.sh down >/dev/null 2>&1 || true; done
  if [[ -n ${KEEP_WORK:-} ]]; then echo "work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/deps.sh
skein_build $flag
export SKEIN_NO_BUILD=1 # cluster.sh: use the build above ($SKEIN_BIN_DIR)
bin=$CARGO_TARGET_DIR/$profile
query="SELECT id, upper(name) AS name, CAST(amount AS DOUBLE) * 100 AS amount_cents, country, created FROM source WHERE amount >= 0"
addr=127.0.0.1:$((SKEIN_BASE_PORT + 1))
skein() { "$bin/skein" --addr "$addr" "$@"; }
mb() { "$bin/migrate_bench" "$@"; }
mkdir -p "$work/results"

# cluster_up NAME N [VAR=VALUE...]: a fresh local cluster of N nodes in
# $work/NAME (the environment given to its nodes), the CLI's token, and the
# work folder allowed as a data root (a new cluster touches no dataset).
cluster_up() {
  local name=$1 n=$2; shift 2
  cur=$work/$name
  clusters+=("$cur")
  env -u SKEIN_TOKEN SKEIN_CLUSTER_DIR="$cur" "$@" scripts/cluster.sh up "$n" >/dev/null
  export SKEIN_TOKEN; SKEIN_TOKEN=$(cat "$cur/node1/admin.token")
  skein roots allow "file://$work/" >/dev/null
}
# peak_rss NAME: every node's VmHWM (kB) of the cluster in $work/NAME, as JSON.
peak_rss() {
  local f pid kb out=""
  for f in "$work/$1"/node*.pid; do
    pid=$(cat "$f")
    kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [[ -n $kb ]] || { echo "error: node pid $pid ($f) is gone: no VmHWM" >&2; exit 1; }
    out+="${out:+, }\"$(basename "$f" .pid)\": $kb"
  done
  echo "{$out}"
}
cluster_down() { SKEIN_CLUSTER_DIR=$cur scripts/cluster.sh down >/dev/null; }
# on_failure NAME: what the nodes of $work/NAME logged, for a failed run.
on_failure() {
  echo "--- the last warnings and errors of the nodes ($work/$1/node*.log):" >&2
  grep -hE 'WARN|ERROR' "$work/$1"/node*.log 2>/dev/null | grep -v openraft | tail -n 30 >&2 || true
}
# plan_yaml NAME SOURCE TARGET: a migration plan with the bench's query.
plan_yaml() {
  cat <<YAML
apiVersion: backstage.io/v1alpha1
kind: Component
metadata: {name: $1, annotations: {honk/queue: bench}}
spec:
  type: migration-plan
  owner: bench
  lifecycle: experimental
  source: $2
  target: $3
  steps:
    - type: sql
      query: "$query"
YAML
}
# run_partitioned CLUSTER PLAN SOURCE_DIR ROWS: applies and runs a
# partitioned plan of SOURCE_DIR on the cluster in $work/CLUSTER (up), checks
# it succeeded with every row, writes $work/results/PLAN.json.
run_partitioned() {
  local c=$1 plan=$2 src=$3 n=$4
  plan_yaml "$plan" "{url: \"file://$src/\", format: parquet, partition: $partition}" \
    "{url: \"file://$work/out-$plan/\", format: parquet}" >"$work/$plan.yaml"
  skein plan apply "$work/$plan.yaml" >/dev/null
  local start end
  start=$(date +%s.%N)
  if ! skein plan run "$plan" --wait --timeout 3600 >"$work/$plan.run.log" 2>&1; then
    cat "$work/$plan.run.log" >&2; on_failure "$c"
    echo "error: skein plan run $plan failed" >&2; exit 1
  fi
  end=$(date +%s.%N)
  local detail planner commit
  detail=$(skein -o json plan show "$plan")
  planner=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print((d.get("task") or {}).get("id", ""))' <<<"$detail")
  commit=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print((d.get("partitions") or {}).get("commit_task", ""))' <<<"$detail")
  if [[ -z $planner || -z $commit ]]; then
    cat "$work/$plan.run.log" >&2; on_failure "$c"
    echo "error: $plan: no partitioned run: $(python3 -c 'import json,sys; t=json.load(sys.stdin).get("task") or {}; print(f"""planner task {t.get("id")} {t.get("status")}: {t.get("last_error")}""")' <<<"$detail")" >&2
    exit 1
  fi
  skein -o json tasks show "$planner" >"$work/$plan.planner.json"
  skein -o json tasks show "$commit" >"$work/$plan.commit.json"
  skein -o json tasks list --queue bench --all >"$work/$plan.tasks.json"
  if ! python3 "$work/check.py" "$plan" "$n" "$start" "$end" "$work/$plan.planner.json" "$work/$plan.commit.json" \
    "$work/$plan.tasks.json" >"$work/results/$plan.json" <<<"$detail"; then
    cat "$work/$plan.run.log" >&2; on_failure "$c"; exit 1
  fi
}
cat >"$work/check.py" <<'PY'
# check.py PLAN ROWS START END PLANNER.json COMMIT.json TASKS.json < plan detail:
# the partitioned run succeeded, with every row; prints its figures (JSON).
import json, sys
plan, rows, start, end = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
planner = json.load(open(sys.argv[5]))
commit = json.load(open(sys.argv[6]))
parts = json.load(sys.stdin)["partitions"]
if parts.get("status") != "succeeded" or commit.get("status") != "succeeded":
    sys.exit(f"error: {plan}: the partitioned run did not succeed: partitions {json.dumps(parts)}; "
             f"commit task {commit.get('id')} {commit.get('status')}: {commit.get('last_error')}; "
             f"planner task {planner.get('id')} {planner.get('status')}: {planner.get('last_error')}")
migration = (commit.get("result") or {}).get("migration") or {}
written = migration.get("rows_written")
if written != rows:
    sys.exit(f"error: {plan}: the run wrote {written} rows, not {rows}: {json.dumps(commit.get('result'))}")
# The partition tasks (keys `.../part-<i>`): how long each ran (its last
# attempt) and how many ran at once on average over the partitions' span.
tasks = json.load(open(sys.argv[7]))["tasks"]
spans = [(t["last_started_ms"], t["finished_ms"]) for t in tasks
         if "/part-" in (t.get("idempotency_key") or "") and t.get("last_started_ms") and t.get("finished_ms")]
busy = sum(f - s for s, f in spans)
wall = max(f for _, f in spans) - min(s for s, _ in spans) if spans else 0
print(json.dumps({
    "part_mean_s": busy / len(spans) / 1000 if spans else 0,
    "parallel": busy / wall if wall else 0,
    "rows": rows,
    "partitions": parts["total"],
    # The cluster's own record, both stamped by the leader: the run's
    # planner enqueued -> its commit task succeeded (published).
    "cluster_s": (commit["finished_ms"] - planner["created_ms"]) / 1000,
    "commit_s": (commit["finished_ms"] - (commit.get("first_started_ms") or commit["finished_ms"])) / 1000,
    "cli_s": end - start,
}))
PY

per_file=$((rows / files))
echo "generating $rows rows of Parquet, one file and the same rows as $files files..."
mb gen --rows "$rows" --out "$work/source.parquet" >/dev/null
mkdir -p "$work/src"
for ((i = 0; i < files; i++)); do
  lo=$((rows * i / files)) hi=$((rows * (i + 1) / files))
  mb direct --repeat 1 --source "$work/source.parquet" --target "$(printf '%s/src/part-%05d.parquet' "$work" "$i")" \
    --query "SELECT * FROM source WHERE id > $lo AND id <= $hi" >/dev/null
done
src_bytes=$(du -sb "$work/src" | cut -f1)
# Part 4's source: the first files of the same folder (hard links).
slot_files=$(( (rows_slots + per_file / 2) / per_file ))
(( slot_files < 2 )) && slot_files=2
(( slot_files > files )) && slot_files=$files
slot_rows=$((rows * slot_files / files))
mkdir -p "$work/src-slots"
for ((i = 0; i < slot_files; i++)); do
  f=$(printf 'part-%05d.parquet' "$i")
  ln "$work/src/$f" "$work/src-slots/$f" 2>/dev/null || cp "$work/src/$f" "$work/src-slots/$f"
done

echo "one file: DataFusion alone, in one process..."
direct=$(mb direct --source "$work/source.parquet" --target "$work/direct.parquet" --query "$query")
echo "  $direct"

echo "one file: skein's engine alone, in one process (no cluster)..."
engine=$(mb engine --source "$work/source.parquet" --target "$work/engine.parquet" --query "$query")
echo "  $engine"

echo "one file: through skein (3 nodes, plan apply + plan run, until succeeded)..."
cluster_up single 3
plan_yaml bench-migration "{url: \"file://$work/source.parquet\", format: parquet}" \
  "{url: \"file://$work/skein.parquet\", format: parquet}" >"$work/plan.yaml"
skein plan apply "$work/plan.yaml" >/dev/null
start=$(date +%s.%N)
skein plan run bench-migration --force --wait --timeout 3600 >/dev/null || { on_failure single; exit 1; }
end=$(date +%s.%N)
result=$(skein -o json plan show bench-migration)
task_id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["task"]["id"])' <<<"$result")
detail=$(skein -o json tasks show "$task_id")
cluster_down
echo
echo "== $profile build, $(nproc) CPUs (load average now $(cut -d' ' -f1-3 /proc/loadavg)): one file, one task (3 nodes)"
python3 - "$direct" "$detail" "$start" "$end" "$rows" "$engine" <<'PY' || { on_failure single; exit 1; }
import json, sys
direct = json.loads(sys.argv[1])
task = json.loads(sys.argv[2])
start, end, rows = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
engine = json.loads(sys.argv[6])
if task.get("status") != "succeeded":
    sys.exit(f"the skein migration did not succeed: {task.get('status')} {task.get('last_error')}")
written = task["result"]["migration"].get("rows_written")
if written != rows:
    sys.exit(f"the skein migration wrote {written} rows, not {rows}")
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
for label, value in lines:
    print(f"{label:<38}{value}")
PY
echo

echo "$files files: DataFusion alone on the folder, in one process..."
direct_folder=$(mb direct --source "$work/src/" --target "$work/direct-folder.parquet" --query "$query")
echo "  $direct_folder"
echo "$direct_folder" >"$work/results/direct-folder.json"

echo "$files files: through skein, partitioned (3 nodes, plan run --wait, until published)..."
cluster_up fleet 3
run_partitioned fleet bench-partitioned "$work/src" "$rows"
peak_rss fleet >"$work/results/rss.json"
cluster_down

python3 - "$work/results" "$src_bytes" "$files" "$partition" "$profile" "$(nproc)" "${SKEIN_SLOTS:-4}" "${SKEIN_MIGRATE_THREADS:-the CPU count}" <<'PY'
import json, os, sys
res, src_bytes, files, partition, profile, cpus, slots, threads = sys.argv[1:9]
src_bytes = int(src_bytes)
load = lambda name: json.load(open(os.path.join(res, name)))
direct, fleet, rss = load("direct-folder.json"), load("bench-partitioned.json"), load("rss.json")
mib = lambda b: b / (1 << 20)
load = " ".join(open("/proc/loadavg").read().split()[:3])
rate = fleet["rows"] / fleet["cluster_s"]
peak_node = max(rss, key=rss.get)
peak = rss[peak_node] * 1024
print()
print(f"== {profile} build, {cpus} CPUs (load average now {load}): {files} files, partitioned (partition: {partition}), 3 nodes (--slots {slots}, --migrate-threads {threads})")
lines = [
    ("rows", f"{fleet['rows']:>12,}  in {files} files, {mib(src_bytes):,.1f} MiB on disk; {fleet['partitions']} partitions"),
    ("DataFusion alone on the folder", f"{direct['rows_per_s']:>12,.0f} rows/s  ({direct['seconds']:.2f} s, median of {direct['runs']})"),
    ("skein: enqueue -> published", f"{rate:>12,.0f} rows/s  ({fleet['cluster_s']:.2f} s, planner enqueued -> commit succeeded; the commit itself {fleet['commit_s']:.2f} s)"),
    ("skein: CLI run -> --wait saw it", f"{fleet['rows'] / fleet['cli_s']:>12,.0f} rows/s  ({fleet['cli_s']:.2f} s)"),
    ("skein: partitions", f"{fleet['part_mean_s']:>12.2f} s each on average, {fleet['parallel']:.1f} running at once on average"),
    ("ratio skein / DataFusion", f"{rate / direct['rows_per_s']:>12.2f}  (goal >= 0.9)"),
    ("peak RSS of a node (VmHWM)", f"{mib(peak):>12,.1f} MiB  ({peak_node}; all: " + ", ".join(f"{k} {mib(v * 1024):,.0f}" for k, v in sorted(rss.items())) + " MiB)"),
    ("peak RSS / source on disk", f"{peak / src_bytes:>12.2f}  ({mib(peak):,.1f} MiB / {mib(src_bytes):,.1f} MiB)"),
]
for label, value in lines:
    print(f"{label:<38}{value}")
PY
echo

echo "slots on one node: $slot_files files ($slot_rows rows), --slots 1 --migrate-threads 1..."
cluster_up slots1 1 SKEIN_SLOTS=1 SKEIN_MIGRATE_THREADS=1
run_partitioned slots1 bench-slots-1 "$work/src-slots" "$slot_rows"
cluster_down
echo "slots on one node: the same, --slots 2 --migrate-threads 1..."
cluster_up slots2 1 SKEIN_SLOTS=2 SKEIN_MIGRATE_THREADS=1
run_partitioned slots2 bench-slots-2 "$work/src-slots" "$slot_rows"
cluster_down

python3 - "$work/results" "$profile" "$(nproc)" <<'PY'
import json, os, sys
res, profile, cpus = sys.argv[1:4]
load = lambda name: json.load(open(os.path.join(res, name)))
s1, s2 = load("bench-slots-1.json"), load("bench-slots-2.json")
load = " ".join(open("/proc/loadavg").read().split()[:3])
print()
print(f"== {profile} build, {cpus} CPUs (load average now {load}): slots on one node: {s1['rows']:,} rows, {s1['partitions']} partitions, --migrate-threads 1")
lines = [
    ("--slots 1: enqueue -> published", f"{s1['rows'] / s1['cluster_s']:>12,.0f} rows/s  ({s1['cluster_s']:.2f} s; a partition {s1['part_mean_s']:.2f} s, {s1['parallel']:.1f} at once)"),
    ("--slots 2: enqueue -> published", f"{s2['rows'] / s2['cluster_s']:>12,.0f} rows/s  ({s2['cluster_s']:.2f} s; a partition {s2['part_mean_s']:.2f} s, {s2['parallel']:.1f} at once)"),
    ("speedup of 2 slots over 1", f"{s1['cluster_s'] / s2['cluster_s']:>12.2f}x  (goal >= 1.7x on 2 CPUs)"),
]
for label, value in lines:
    print(f"{label:<38}{value}")
PY
