#!/usr/bin/env bash
# skein's test command: the README's second command, and what CI runs.
# Installs what the build needs, builds every target (the multi-process tests
# launch the real skein-node and skein binaries), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/skein-target}
scripts/deps.sh
cargo build --workspace --all-targets --locked
cargo nextest run --workspace --no-fail-fast "$@"
