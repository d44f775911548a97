#!/usr/bin/env bash
# Builds the container image (Dockerfile at the repository's root) on a
# machine that reaches no container registry, with Debian's podman: the base
# is made from Debian's packages with mmdebstrap and imported, and the
# binaries are the workspace's (`cargo build --workspace --bins --locked`),
# stripped, through the Dockerfile's `prebuilt` stage.
#
#   deploy/docker/build-image.sh [TAG]      default TAG: localhost/skein-node:dev
#
# As root; installs podman, runc and mmdebstrap with apt-get if missing
# (scripts/deps.sh installs them for the tests). Where a registry is
# reachable, plain `docker build .` does the whole job.
#
# Cached: the base is made once (localhost/skein-base:bookworm); the image
# is labelled with a hash of what went into it (the stripped binaries, the
# Dockerfile, the entrypoint, EXTRA_PACKAGES, the base) and built again only
# when that changed, so a second run with the same binaries takes seconds.
# After a build it removes the machine's dangling images (podman image
# prune), which earlier builds leave behind.
# Prints the image's id and size. tests/tests/containers.rs runs it.
#
# Environment:
#   SKEIN_BIN_DIR       where skein-node and skein are (default
#                       $CARGO_TARGET_DIR/$PROFILE, PROFILE=debug)
#   SKEIN_IMAGE_WORK    scratch and the podman settings (/var/tmp/skein-image)
#   EXTRA_PACKAGES      Debian packages for `exec` tasks (the Dockerfile's
#                       build argument), e.g. "python3"
#   SKEIN_IMAGE_REBUILD=1  build even when the label matches
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
tag=${1:-localhost/skein-node:dev}
base=localhost/skein-base:bookworm
bins=${SKEIN_BIN_DIR:-${CARGO_TARGET_DIR:-/var/tmp/skein-target}/${PROFILE:-debug}}
work=${SKEIN_IMAGE_WORK:-/var/tmp/skein-image}
extra=${EXTRA_PACKAGES:-}
need=()
for pkg in podman runc mmdebstrap; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing ${need[*]} (apt-get)..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
mkdir -p "$work"
# One build at a time on this machine (two tests, or a test and a person).
exec 9>"$work/lock"
flock -w 600 9 || { echo "another build holds $work/lock for over 600 s" >&2; exit 1; }
# This kind of machine has hybrid cgroups (v1 controllers), which crun
# refuses, and a hard open-files limit that podman's default ulimits exceed:
# runc, and no default ulimits. Whoever runs the image here uses the same
# settings: CONTAINERS_CONF=$work/containers.conf.
cat >"$work/containers.conf.new" <<'CONF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
mv "$work/containers.conf.new" "$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"
if ! podman image exists "$base"; then
  echo "making $base from Debian's packages (mmdebstrap)..." >&2
  mmdebstrap --variant=minbase --include=ca-certificates bookworm "$work/base.tar" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" >&2
  podman import "$work/base.tar" "$base" >/dev/null
  rm -f "$work/base.tar"
fi
for bin in skein-node skein; do
  [[ -x $bins/$bin ]] || { echo "no $bins/$bin: run cargo build --workspace --bins --locked first" >&2; exit 1; }
done
ctx=$(mktemp -d "$work/context.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/prebuilt" "$ctx/deploy/docker"
strip -o "$ctx/prebuilt/skein-node" "$bins/skein-node"
strip -o "$ctx/prebuilt/skein" "$bins/skein"
cp "$here/deploy/docker/entrypoint.sh" "$ctx/deploy/docker/"
key=$({
  sha256sum "$ctx/prebuilt/skein-node" "$ctx/prebuilt/skein" "$here/Dockerfile" "$ctx/deploy/docker/entrypoint.sh" | cut -d' ' -f1
  podman image inspect "$base" --format '{{.Id}}'
  echo "extra=$extra"
} | sha256sum | cut -d' ' -f1)
old=$(podman image inspect "$tag" --format '{{.Id}} {{index .Labels "skein.build-key"}}' 2>/dev/null || true)
if [[ ${SKEIN_IMAGE_REBUILD:-0} != 1 && ${old#* } == "$key" ]]; then
  echo "$tag is up to date (build key ${key:0:12})" >&2
else
  podman build --network host --format docker -f "$here/Dockerfile" \
    --build-arg BASE_IMAGE="$base" --build-arg BINARIES_FROM=prebuilt \
    --build-arg EXTRA_PACKAGES="$extra" --label "skein.build-key=$key" \
    -t "$tag" "$ctx" >&2
  # What this tag named before, and the binaries stage of earlier builds,
  # are now untagged images of some 130-400 MB each: drop every dangling
  # image (untagged, without children, unused by containers). The cached
  # layers under tagged images stay (the apt-get step is not run again).
  podman image prune -f >/dev/null || true
fi
podman image inspect "$tag" --format '{{.Id}} {{.Size}}'
