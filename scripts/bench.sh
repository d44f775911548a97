#!/usr/bin/env bash
# skein's benchmark (issue 7): builds skein-node and skein-bench with the
# release profile, makes sure nats-server is installed (for the JetStream
# comparison), and runs skein-bench with the given flags. It starts its own
# local clusters on loopback and cleans up after itself.
#
#   scripts/bench.sh                              # every scenario (~6-8 min)
#   scripts/bench.sh --quick                      # the smoke run (< 2 min)
#   scripts/bench.sh --scenarios lifecycle,compare --tasks 50000
#   scripts/bench.sh --help
#
# Results: a table on stdout and JSON in skein-bench.json (--json PATH).
# Measure on an idle machine: the table records the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/skein-target}
scripts/deps.sh
cargo build --release --locked -p skein-node -p skein-bench
exec "$CARGO_TARGET_DIR/release/skein-bench" "$@"
