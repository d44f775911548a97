#!/usr/bin/env bash
# skein's test command: the README's second command, and what CI runs.
# Installs what the build needs, builds every target (the multi-process tests
# launch the real skein-node and skein binaries), then runs every test.
# After scripts/demo.sh it compiles only the test targets: both build the
# one feature set of scripts/lib.sh, which scripts/check-one-build.py checks.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$SKEIN_ROOT"
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
scripts/check-one-build.py
cargo build --workspace --all-targets --locked
cargo nextest run --workspace --no-fail-fast "$@"
