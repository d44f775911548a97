# Sourced by every script in scripts/ (and so by .ci/run): the one target
# directory and the one build that the demo, the tests, the chaos run, the
# local cluster and the benches all share (issue 11).
#
# One build: `cargo build --workspace --bins` compiles every binary of the
# workspace with the feature set that `cargo build --workspace --all-targets`
# (the tests) also resolves, so the tests only add their own targets and
# proptest. Building a subset (`-p skein-node`) would resolve other features
# on shared crates (tokio, bytes, ...) and rebuild DataFusion and most of
# the tree: don't. scripts/check-one-build.py checks this on every test run.
#
# One target directory, outside the repository: $CARGO_TARGET_DIR, default
# /var/tmp/skein-target (also the default of .cargo/config.toml, so a plain
# `cargo build` or `cargo test` in the repository uses it too).

SKEIN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/skein-target}

# skein_build [--release]: build every binary, printing cargo's progress on
# stderr. Set SKEIN_NO_BUILD=1 to skip it and use the binaries already there
# (or those in $SKEIN_BIN_DIR).
skein_build() {
  [[ -n ${SKEIN_NO_BUILD:-} ]] && return 0
  local profile=debug
  [[ ${1:-} == --release ]] && profile=release
  if [[ ! -x $CARGO_TARGET_DIR/$profile/skein-node ]]; then
    if [[ $profile == release ]]; then
      echo "first release build into $CARGO_TARGET_DIR/release: about 50 minutes on 2 cores (RocksDB's C++ and DataFusion at -O3); later builds take seconds" >&2
    else
      echo "first build into $CARGO_TARGET_DIR/debug: about 31 minutes on 2 cores (RocksDB's C++ and DataFusion); later builds take seconds" >&2
    fi
  fi
  (cd "$SKEIN_ROOT" && cargo build --workspace --bins --locked "$@") >&2
}
