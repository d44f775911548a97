#!/usr/bin/env bash
# skein's chaos run (issue 4): a local cluster of real skein-node processes
# under load while a seeded nemesis kills (-9), pauses (SIGSTOP) and
# partitions (fault-injecting proxies on every link) its nodes; then a
# checker reads the recorded history, the worker journals and the final
# state, prints a summary table, and exits 1 on any violation.
#
#   scripts/chaos.sh                                  # 60 s, 3 nodes, seed from the clock
#   scripts/chaos.sh --minutes 30 --nodes 5           # the long run
#   scripts/chaos.sh --seed 42 --nodes 3 --seconds 90 # replay a run
#   scripts/chaos.sh --help
#
# Evidence (ops, faults, journals, final state, report.json) goes to --out
# (default: a new folder under /tmp, printed).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$SKEIN_ROOT"
scripts/deps.sh
skein_build
exec "$CARGO_TARGET_DIR/debug/skein-chaos" "$@"
