#!/usr/bin/env bash
# A local skein cluster on loopback, for trying skein out and for demos.
#
#   scripts/cluster.sh up N      build (the one build of scripts/lib.sh), then start N nodes (1 bootstraps, the rest join)
#   scripts/cluster.sh down      stop exactly the nodes this script started (SIGTERM, then KILL)
#   scripts/cluster.sh kill I    kill -9 node I
#   scripts/cluster.sh stop I    SIGTERM node I (it drains and exits)
#   scripts/cluster.sh start I   start node I again on its data directory
#   scripts/cluster.sh add I     start a new node I that joins the cluster
#   scripts/cluster.sh status    which nodes run, and their addresses
#
# Everything lives under $SKEIN_CLUSTER_DIR (default .skein-cluster/): node I
# keeps its data in nodeI/, its log in nodeI.log and its pid in nodeI.pid.
# Node I listens for HTTP on 127.0.0.1:$((SKEIN_BASE_PORT + I)) and for RPC
# on 127.0.0.1:$((SKEIN_BASE_PORT + 100 + I)); SKEIN_BASE_PORT defaults to 7700.
#
# The cluster is secure by default: node 1 writes the first admin token to
# node1/admin.token (mode 0600) when it bootstraps, the joining nodes present
# it, and the CLI needs it:  export SKEIN_TOKEN=$(cat .skein-cluster/node1/admin.token)
set -euo pipefail

source "$(dirname "$0")/lib.sh"
root=$SKEIN_ROOT
dir=${SKEIN_CLUSTER_DIR:-$root/.skein-cluster}
base=${SKEIN_BASE_PORT:-7700}
bin=${SKEIN_BIN_DIR:-$CARGO_TARGET_DIR/debug}
slots=${SKEIN_SLOTS:-4}

http_of() { echo "127.0.0.1:$((base + $1))"; }
rpc_of() { echo "127.0.0.1:$((base + 100 + $1))"; }

pid_alive() {
  local f=$dir/node$1.pid
  [[ -f $f ]] || return 1
  local pid; pid=$(cat "$f")
  # Only a process that is our skein-node counts: pids get reused.
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "skein-node.*--id $1 "
}

build() {
  skein_build
  [[ -x $bin/skein-node ]] || { echo "error: no $bin/skein-node; build it or set SKEIN_BIN_DIR" >&2; exit 1; }
}

wait_ready() {
  local i=$1 deadline=$((SECONDS + 30))
  until curl -fsS "http://$(http_of "$i")/readyz" >/dev/null 2>&1; do
    if ! pid_alive "$i"; then
      echo "error: node $i exited; last lines of $dir/node$i.log:" >&2
      tail -n 20 "$dir/node$i.log" >&2
      exit 1
    fi
    if (( SECONDS > deadline )); then echo "error: node $i not ready after 30 s (see $dir/node$i.log)" >&2; exit 1; fi
    sleep 0.2
  done
}

# The first admin token, once node 1 has bootstrapped: joining needs it.
token_file() { echo "$dir/node1/admin.token"; }
use_token() {
  if [[ -z ${SKEIN_TOKEN:-} && -f $(token_file) ]]; then export SKEIN_TOKEN; SKEIN_TOKEN=$(cat "$(token_file)"); fi
}

start_node() {
  local i=$1; shift
  use_token
  if pid_alive "$i"; then echo "node $i already runs (pid $(cat "$dir/node$i.pid"))"; return; fi
  mkdir -p "$dir/node$i"
  # `--id I ` with the trailing space is what pid_alive looks for.
  nohup "$bin/skein-node" --id "$i" --listen "$(rpc_of "$i")" --http "$(http_of "$i")" \
    --data-dir "$dir/node$i" --slots "$slots" "$@" >>"$dir/node$i.log" 2>&1 &
  echo $! >"$dir/node$i.pid"
  wait_ready "$i"
  echo "node $i: http://$(http_of "$i")  (rpc $(rpc_of "$i"), pid $(cat "$dir/node$i.pid"), log $dir/node$i.log)"
}

first_alive() {
  for f in "$dir"/node*.pid; do
    [[ -f $f ]] || continue
    local i=${f##*/node}; i=${i%.pid}
    if pid_alive "$i"; then echo "$i"; return; fi
  done
  return 1
}

cmd=${1:-}
case $cmd in
  up)
    n=${2:-3}
    build
    mkdir -p "$dir"
    start_node 1 --bootstrap
    for ((i = 2; i <= n; i++)); do start_node "$i" --join "$(http_of 1)"; done
    echo "cluster of $n up; try: export SKEIN_TOKEN=\$(cat $(token_file)); $bin/skein --addr $(http_of 1) cluster status"
    ;;
  add)
    i=${2:?usage: cluster.sh add I}
    j=$(first_alive) || { echo "error: no node runs to join" >&2; exit 1; }
    start_node "$i" --join "$(http_of "$j")"
    ;;
  start)
    i=${2:?usage: cluster.sh start I}
    start_node "$i"
    ;;
  kill | stop)
    i=${2:?usage: cluster.sh $cmd I}
    pid_alive "$i" || { echo "node $i is not running"; exit 0; }
    if [[ $cmd == kill ]]; then kill -9 "$(cat "$dir/node$i.pid")"; else kill -TERM "$(cat "$dir/node$i.pid")"; fi
    echo "node $i: sent SIG$([[ $cmd == kill ]] && echo KILL || echo TERM)"
    ;;
  down)
    for f in "$dir"/node*.pid; do
      [[ -f $f ]] || continue
      i=${f##*/node}; i=${i%.pid}
      if pid_alive "$i"; then kill -TERM "$(cat "$f")" 2>/dev/null || true; fi
    done
    deadline=$((SECONDS + 15))
    for f in "$dir"/node*.pid; do
      [[ -f $f ]] || continue
      i=${f##*/node}; i=${i%.pid}
      while pid_alive "$i" && (( SECONDS < deadline )); do sleep 0.2; done
      if pid_alive "$i"; then kill -9 "$(cat "$f")" 2>/dev/null || true; fi
      rm -f "$f"
    done
    echo "cluster down (data kept in $dir; remove it for a fresh start)"
    ;;
  status)
    for f in "$dir"/node*.pid; do
      [[ -f $f ]] || continue
      i=${f##*/node}; i=${i%.pid}
      if pid_alive "$i"; then echo "node $i: up   http://$(http_of "$i")"; else echo "node $i: down"; fi
    done
    ;;
  *)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
