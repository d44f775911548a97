# syntax=docker/dockerfile:1
# skein-node's container image: one image for members and workers (the role
# is a flag). See deploy/README.md.
#
#   docker build -t skein-node:0.1.0 .
#
# Stages:
#   build    compiles the workspace's binaries (release) on a Rust image;
#   prebuilt takes binaries built outside, from prebuilt/ in the build
#            context (deploy/docker/build-image.sh, which also makes the base
#            from Debian's packages where no registry is reachable);
#   runtime  a small Debian with skein-node, skein, curl (the health check)
#            and tini, run as the unprivileged user skein (uid 10001).
# BINARIES_FROM picks build (default) or prebuilt.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim
ARG BINARIES_FROM=build

FROM ${RUST_IMAGE} AS build
# RocksDB's bindings are generated with libclang at build time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV CARGO_TARGET_DIR=/src/target
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --workspace --bins \
 && mkdir -p /out \
 && cp target/release/skein-node target/release/skein /out/

FROM scratch AS prebuilt
COPY prebuilt/skein-node prebuilt/skein /out/

FROM ${BINARIES_FROM} AS binaries

FROM ${BASE_IMAGE} AS runtime
# Programs that `exec` tasks run must be in the image and on the cluster's
# exec allow list (`skein exec allow`): add them here, e.g.
# --build-arg EXTRA_PACKAGES="python3".
ARG EXTRA_PACKAGES=""
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tini ${EXTRA_PACKAGES} \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 skein \
 && useradd --system --uid 10001 --gid skein --home-dir /var/lib/skein --shell /usr/sbin/nologin skein \
 && install -d -o skein -g skein -m 0700 /var/lib/skein \
 && install -d -o root -g skein -m 0750 /etc/skein /etc/skein/tls
COPY --from=binaries --chmod=0755 /out/skein-node /out/skein /usr/local/bin/
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/skein-entrypoint
RUN skein-node --version && skein --version

# Defaults every container gets; flags and the orchestrator's env override
# them. TLS is on by default: mount ca.pem, node.pem and node.key (from
# `skein cert`) at /etc/skein/tls, or the node refuses to start.
ENV SKEIN_DATA_DIR=/var/lib/skein \
    SKEIN_TLS_DIR=/etc/skein/tls \
    SKEIN_LOG_FORMAT=json
USER skein:skein
WORKDIR /var/lib/skein
VOLUME ["/var/lib/skein"]
# 7700: HTTP API (HTTPS with TLS), 7800: node-to-node RPC (members only).
EXPOSE 7700 7800
# SIGTERM drains the node (stops leasing, lets running tasks finish, hands
# back the rest after --drain-timeout): give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/skein-entrypoint", "healthcheck"]
# tini reaps the processes `exec` tasks leave behind and forwards signals.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/skein-entrypoint"]
CMD ["--help"]
