#!/usr/bin/env bash
# skein's rolling-upgrade test (issue 12), run by hand: a 3-node cluster
# started on OLD_BIN_DIR/skein-node under the chaos harness's recorded
# workload; its nodes are replaced one at a time (SIGTERM: the node drains
# and exits; then NEW_BIN_DIR/skein-node on the same data directory),
# followers first and the leader last; then `finalize`. With --back, every
# node goes back to OLD_BIN_DIR/skein-node the same way instead (never
# finalized). The chaos checker then reads the history: no acknowledged task
# lost, no success under a stale token, every replica's digest equal. It
# prints each replacement's time and the longest gap without an
# acknowledged enqueue during it, and exits 1 on any violation.
#
#   scripts/upgrade-test.sh OLD_BIN_DIR NEW_BIN_DIR [--back] [--seconds N] [--seed N] [--out DIR]
#   scripts/upgrade-test.sh /var/tmp/skein-0.1.0/bin /var/tmp/skein-target/debug
#   scripts/upgrade-test.sh /var/tmp/skein-0.1.0/bin /var/tmp/skein-target/debug --back
#
# Other flags go to skein-chaos (`skein-chaos --help`). Default: 60 s of load.
#
# OLD_BIN_DIR needs a build of 0.1.0 (commit 65601e1), in a worktree of its
# own:
#
#   git worktree add /var/tmp/skein-0.1.0-src 65601e1
#   (cd /var/tmp/skein-0.1.0-src && cargo build --workspace --bins --locked)
#   mkdir -p /var/tmp/skein-0.1.0/bin
#   cp "${CARGO_TARGET_DIR:-/var/tmp/skein-0.1.0-src/target}"/debug/{skein-node,skein} /var/tmp/skein-0.1.0/bin/
#
# 65601e1 has no .cargo/config.toml, so it builds into the worktree's own
# target/ (a cold build: about 31 minutes on 2 cores) unless
# $CARGO_TARGET_DIR is set. With a shared target directory (e.g.
# CARGO_TARGET_DIR=/var/tmp/skein-target, which reuses most compiled
# dependencies) copy the binaries out at once: the next build of the
# current tree overwrites target/debug/skein-node.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() { sed -n '13,16p' "$0" | sed 's/^# \{0,3\}//' >&2; exit 2; }
[[ $# -ge 2 && $1 != -* && $2 != -* ]] || usage
old=$(cd "$1" && pwd) || usage
new=$(cd "$2" && pwd) || usage
shift 2

cd "$SKEIN_ROOT"
scripts/deps.sh
skein_build

for dir in "$old" "$new"; do
  if [[ ! -x $dir/skein-node ]]; then
    echo "no skein-node in $dir" >&2
    exit 2
  fi
done
release() {
  "$1/skein-node" --version 2>/dev/null || echo "($1/skein-node has no --version: release unknown)"
}
echo "old: $old/skein-node: $(release "$old")" >&2
echo "new: $new/skein-node: $(release "$new")" >&2

seconds=()
[[ " $* " == *" --seconds "* || " $* " == *" --minutes "* ]] || seconds=(--seconds 60)
exec "$CARGO_TARGET_DIR/debug/skein-chaos" --upgrade-from "$old" --upgrade-to "$new" "${seconds[@]}" "$@"
