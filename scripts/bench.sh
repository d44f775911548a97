#!/usr/bin/env bash
# skein's benchmark (issue 7): builds the workspace's binaries with the
# release profile (the same feature set as every other script, into
# $CARGO_TARGET_DIR/release; a cold release build takes about 50 minutes on
# 2 cores, later ones seconds), makes sure nats-server is installed (for the
# JetStream comparison), and runs skein-bench with the given flags. It starts
# its own local clusters on loopback and cleans up after itself.
#
#   scripts/bench.sh                              # every scenario (~10-12 min; the fleet alone ~4)
#   scripts/bench.sh --quick                      # the smoke run (< 2 min)
#   scripts/bench.sh --scenarios lifecycle,compare --tasks 50000
#   scripts/bench.sh --help
#
# Results: a table on stdout and JSON in skein-bench.json (--json PATH).
# Measure on an idle machine: the table records the load average.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$SKEIN_ROOT"
scripts/deps.sh
skein_build --release
exec "$CARGO_TARGET_DIR/release/skein-bench" "$@"
