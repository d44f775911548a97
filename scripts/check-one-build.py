#!/usr/bin/env python3
"""Checks that one build serves everything (issue 11), without building.

`scripts/demo.sh` and every other script build `cargo build --workspace
--bins`; `scripts/test.sh` then builds `--workspace --all-targets` and
nextest runs `cargo test --no-run --workspace`. Those must reuse every
compiled registry crate of the first build: if a dev-dependency turns on
a feature of a shared crate (tokio's `test-util`, say), or a script builds
a subset of the workspace, cargo resolves other features and recompiles
DataFusion, RocksDB and the rest (22 minutes here).

It asks cargo for each command's unit graph (`--unit-graph`, unstable, so
RUSTC_BOOTSTRAP=1; it reads the manifests and lock file only), keys every
unit of a registry package the way cargo's metadata hash does (package,
target, mode, features, profile settings, and the keys of its
dependencies, recursively), and fails if a later command needs a unit the
first build did not make. Exit 0: shared; 1: not shared, with the crates
that would be rebuilt; 2: cargo could not answer.
"""
import hashlib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMANDS = {
    "bins (every script)": ["build", "--workspace", "--bins"],
    "all targets (scripts/test.sh)": ["build", "--workspace", "--all-targets"],
    "nextest (cargo test --no-run)": ["test", "--no-run", "--workspace"],
}


def registry_units(args):
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    cmd = ["cargo", *args, "--locked", "-Z", "unstable-options", "--unit-graph"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        sys.stderr.write(run.stderr)
        sys.exit(f"check-one-build: `{' '.join(cmd)}` failed")
    units = json.loads(run.stdout)["units"]
    memo = {}

    def key(i):
        if i not in memo:
            u = units[i]
            profile = {k: v for k, v in u["profile"].items() if k != "name"}
            own = json.dumps([u["pkg_id"], u["target"]["name"], u["mode"], u["features"], profile, u["platform"]],
                             sort_keys=True)
            deps = sorted(key(d["index"]) for d in u["dependencies"])
            memo[i] = hashlib.sha1("|".join([own, *deps]).encode()).hexdigest()
        return memo[i]

    # Workspace members are rebuilt when their sources change anyway; what
    # must be shared is everything from the registry.
    return {(u["pkg_id"].split("#")[-1], u["target"]["name"], u["mode"], key(i))
            for i, u in enumerate(units) if not u["pkg_id"].startswith("path+")}


def main():
    graphs = [(name, registry_units(args)) for name, args in COMMANDS.items()]
    failed = False
    # Each build against the one before it.
    for (_, base), (name, later) in zip(graphs, graphs[1:]):
        missing = later - base
        # The test targets may add crates of their own (proptest and its
        # dependencies); they must not need another build of a crate the
        # first build already made.
        built = {(pkg, target, mode) for pkg, target, mode, _ in base}
        rebuilt = sorted({pkg for pkg, target, mode, _ in missing if (pkg, target, mode) in built})
        if rebuilt:
            failed = True
            print(f"check-one-build: {name} would rebuild {len(rebuilt)} crates already built: {', '.join(rebuilt[:20])}"
                  f"{' ...' if len(rebuilt) > 20 else ''}")
            print("  a dev-dependency or a script turns on other features of a shared crate: put those features in"
                  " [workspace.dependencies] (Cargo.toml) so every build resolves the same set")
        else:
            added = sorted({pkg for pkg, *_ in missing})
            print(f"check-one-build: {name} reuses all {len(later) - len(missing)} registry units of the build before it"
                  f" and adds {len(added)} crates of its own{': ' + ', '.join(added) if added else ''}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
