#!/bin/sh
# The container image's entrypoint (/usr/local/bin/skein-entrypoint):
#
#   skein-entrypoint [SKEIN-NODE FLAGS...]   start skein-node with these flags
#   skein-entrypoint healthcheck             exit 0 if this node's /readyz answers 200
#
# Before it starts skein-node, with SKEIN_TLS_BUNDLE set, it links this
# node's certificate into SKEIN_TLS_DIR. A StatefulSet's pods share one pod
# template, so they share one Secret: it holds ca.pem and every member's
# node-<id>.pem and node-<id>.key (`skein cert node --id <id>`). The id is
# SKEIN_ID, or the host name's trailing ordinal plus one (pod skein-0 is id 1,
# as `skein-node --id-from-hostname` computes it). Links, not copies: when the
# Secret is updated, the node reads the new files (it re-reads them as they
# change), so certificates rotate without a restart.
set -eu

if [ "${1:-}" = healthcheck ]; then
    # The image's HEALTHCHECK (Kubernetes uses its own probes instead). Over
    # loopback, so the certificate's name is not checked (-k): this asks
    # whether the node is ready, it sends no secret.
    http=${SKEIN_HTTP:-0.0.0.0:7700}
    port=${http##*:}
    if [ -n "${SKEIN_TLS_DIR:-}" ] && [ "${SKEIN_TLS_MODE:-required}" != off ]; then
        exec curl -fsSk --max-time 4 -o /dev/null "https://127.0.0.1:$port/readyz"
    fi
    exec curl -fsS --max-time 4 -o /dev/null "http://127.0.0.1:$port/readyz"
fi

if [ -n "${SKEIN_TLS_BUNDLE:-}" ]; then
    id=${SKEIN_ID:-}
    if [ -z "$id" ]; then
        host=$(cat /proc/sys/kernel/hostname 2>/dev/null || hostname)
        ordinal=${host##*[!0-9]}
        case $ordinal in
            '' | *[!0-9]*)
                echo "skein-entrypoint: the host name '$host' does not end in a number and SKEIN_ID is not set: cannot tell which certificate of $SKEIN_TLS_BUNDLE is this node's" >&2
                exit 2
                ;;
        esac
        # Strip leading zeros so that sh does not read the ordinal as octal.
        ordinal=$(printf '%s' "$ordinal" | sed 's/^0*//')
        id=$((${ordinal:-0} + 1))
    fi
    dir=${SKEIN_TLS_DIR:?skein-entrypoint: SKEIN_TLS_BUNDLE needs SKEIN_TLS_DIR (an empty, writable directory for the links)}
    for f in ca.pem "node-$id.pem" "node-$id.key"; do
        if [ ! -e "$SKEIN_TLS_BUNDLE/$f" ]; then
            echo "skein-entrypoint: no $SKEIN_TLS_BUNDLE/$f: issue it with \`skein cert node --id $id\` and add it to the Secret (deploy/README.md)" >&2
            exit 2
        fi
    done
    mkdir -p "$dir"
    ln -sfn "$SKEIN_TLS_BUNDLE/ca.pem" "$dir/ca.pem"
    ln -sfn "$SKEIN_TLS_BUNDLE/node-$id.pem" "$dir/node.pem"
    ln -sfn "$SKEIN_TLS_BUNDLE/node-$id.key" "$dir/node.key"
fi

exec skein-node "$@"
