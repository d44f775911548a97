#!/usr/bin/env bash
# skein's test command: the README's second command, and what CI runs.
# Installs what the build needs, builds every target (the multi-process tests
# launch the real skein-node and skein binaries), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/skein-target}
# The artifacts of this run (the dashboard browser test's screenshots, see
# tests/tests/observe.rs): emptied first, listed at the end, pass or fail.
artifacts=$CARGO_TARGET_DIR/artifacts
rm -rf "$artifacts"
report() {
  if compgen -G "$artifacts/*" >/dev/null; then
    echo "artifacts of this run (keep them): $artifacts/" >&2
    ls -l "$artifacts" >&2
  fi
}
trap report EXIT
scripts/deps.sh
cargo build --workspace --all-targets --locked
cargo nextest run --workspace --no-fail-fast "$@"
