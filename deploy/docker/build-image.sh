#!/usr/bin/env bash
# Builds the container image (Dockerfile at the repository's root) on a
# machine that reaches no container registry, with Debian's podman: the base
# is made from Debian's packages with mmdebstrap and imported, and the
# binaries are the workspace's (`cargo build --workspace --bins --locked`),
# stripped, through the Dockerfile's `prebuilt` stage.
#
#   deploy/docker/build-image.sh [TAG]      default TAG: localhost/skein-node:dev
#
# Opt-in: the tests do not run it. As root; installs podman, runc and
# mmdebstrap with apt-get if missing. PROFILE=release takes target/release.
# Where a registry is reachable, plain `docker build .` does the whole job.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
tag=${1:-localhost/skein-node:dev}
base=localhost/skein-base:bookworm
target=${CARGO_TARGET_DIR:-/var/tmp/skein-target}/${PROFILE:-debug}
work=${SKEIN_IMAGE_WORK:-/var/tmp/skein-image}
need=()
for pkg in podman runc mmdebstrap; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing ${need[*]} (apt-get)..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# This kind of machine has hybrid cgroups (v1 controllers), which crun
# refuses, and a hard open-files limit that podman's default ulimits exceed:
# runc, and no default ulimits.
mkdir -p "$work"
cat >"$work/containers.conf" <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
export CONTAINERS_CONF="$work/containers.conf"
if ! podman image exists "$base"; then
  echo "making $base from Debian's packages (mmdebstrap)..." >&2
  mmdebstrap --variant=minbase --include=ca-certificates bookworm "$work/base.tar" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" >&2
  podman import "$work/base.tar" "$base" >/dev/null
fi
for bin in skein-node skein; do
  [[ -x $target/$bin ]] || { echo "no $target/$bin: run cargo build --workspace --bins --locked first" >&2; exit 1; }
done
ctx=$(mktemp -d "$work/context.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/prebuilt" "$ctx/deploy/docker"
strip -o "$ctx/prebuilt/skein-node" "$target/skein-node"
strip -o "$ctx/prebuilt/skein" "$target/skein"
cp "$here/deploy/docker/entrypoint.sh" "$ctx/deploy/docker/"
podman build --network host --format docker -f "$here/Dockerfile" \
  --build-arg BASE_IMAGE="$base" --build-arg BINARIES_FROM=prebuilt \
  -t "$tag" "$ctx" >&2
podman image inspect "$tag" --format '{{.Id}} {{.Size}}'
