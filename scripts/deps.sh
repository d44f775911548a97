#!/usr/bin/env bash
# Installs the system packages skein's build and tests need, if missing:
# libclang-dev (RocksDB's bindings are generated at build time) and curl
# (scripts/cluster.sh). Debian/Ubuntu, as root or with sudo.
set -euo pipefail
need=()
for pkg in libclang-dev curl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing ${need[*]} (apt-get)..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
