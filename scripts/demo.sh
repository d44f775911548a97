#!/usr/bin/env bash
# The main job, end to end on one machine: build skein, then
#  1. (samples) start a local 3-node cluster, migrate the bundled sample
#     datasets (CSV -> JSON lines, with typed columns and a row-count check)
#     as `exec` tasks spread over the nodes, show their status, stop it;
#  2. (plans) `skein demo`: a fresh local 3-node cluster stores the
#     migration plans of examples/plans/ (Backstage entities), runs them all
#     (dependencies first), waits for every migration, prints the status
#     table and stops.
#
#   scripts/demo.sh            run it
#   SAMPLES=0 scripts/demo.sh  only the plans
#   KEEP=1 scripts/demo.sh     leave the plans' cluster running afterwards
#
# Output goes to .skein-demo/out/ (samples) and .skein-demo/plans/examples/out/
# (plans); the clusters' logs to .skein-demo/node*.log and .skein-demo/plans/node*.log.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
root=$SKEIN_ROOT
cd "$root"
export SKEIN_CLUSTER_DIR=${SKEIN_CLUSTER_DIR:-$root/.skein-demo}
export SKEIN_BASE_PORT=${SKEIN_BASE_PORT:-7700}
skein=$CARGO_TARGET_DIR/debug/skein
addr=127.0.0.1:$((SKEIN_BASE_PORT + 1))
queue=dataset-migrations

scripts/deps.sh
skein_build
export SKEIN_NO_BUILD=1 # built once, above: cluster.sh starts at once
scripts/cluster.sh down >/dev/null 2>&1 || true
rm -rf "$SKEIN_CLUSTER_DIR"
if [[ ${SAMPLES:-1} == 0 ]]; then
  exec "$skein" demo --dir "$SKEIN_CLUSTER_DIR/plans" --base-port "$SKEIN_BASE_PORT" ${KEEP:+--keep}
fi
scripts/cluster.sh up 3
trap 'scripts/cluster.sh down' EXIT
# The first admin token, which node 1 wrote when it bootstrapped.
export SKEIN_TOKEN; SKEIN_TOKEN=$(cat "$SKEIN_CLUSTER_DIR/node1/admin.token")

out=$SKEIN_CLUSTER_DIR/out
# A new cluster runs no program until an admin allows it: allow python3
# running the one sample transform, and nothing else.
python=$(command -v python3)
transform=$root/samples/transforms/csv_to_jsonl.py
"$skein" --addr "$addr" exec allow "$python" --args "$transform" >/dev/null
typed() {
  case $1 in
    customers) echo '"integers": ["id"]' ;;
    orders) echo '"integers": ["order_id", "customer_id", "amount_cents"]' ;;
    invoices) echo '"integers": ["invoice_id", "order_id", "amount_cents"], "booleans": ["paid"]' ;;
    shipments) echo '"integers": ["shipment_id", "order_id", "weight_grams"]' ;;
    *) echo '"integers": ["price_cents"]' ;;
  esac
}
echo "enqueueing one migration task per dataset in samples/datasets/..."
for csv in samples/datasets/*.csv; do
  name=$(basename "$csv" .csv)
  "$skein" --addr "$addr" enqueue --queue "$queue" --kind exec --key "migrate-$name-v1" --payload "{
    \"dataset\": \"$name\",
    \"command\": [\"$python\", \"$transform\"],
    \"source\": \"$root/$csv\", \"target\": \"$out/$name.jsonl\", $(typed "$name") }" >/dev/null
done

echo "waiting for the fleet to migrate them..."
for _ in $(seq 1 120); do
  left=$("$skein" --addr "$addr" -o json queue list | python3 -c "
import json, sys
q = [q for q in json.load(sys.stdin)['queues'] if q['name'] == '$queue']
c = q[0]['counts'] if q else {}
print(c.get('pending', 0) + c.get('leased', 0) + c.get('blocked', 0))")
  [[ $left == 0 ]] && break
  sleep 0.5
done
"$skein" --addr "$addr" status --queue "$queue"
echo
echo "migrated files:"
wc -l "$out"/*.jsonl
head -n 2 "$out/invoices.jsonl"

echo
echo "==== part 2: migration plans (skein demo)"
scripts/cluster.sh down >/dev/null
trap - EXIT
"$skein" demo --dir "$SKEIN_CLUSTER_DIR/plans" --base-port "$SKEIN_BASE_PORT" ${KEEP:+--keep}
