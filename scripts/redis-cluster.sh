#!/usr/bin/env bash
# A private three-node Redis Cluster on loopback, for the store's tests.
#
#   scripts/redis-cluster.sh start DIR PORT1 PORT2 PORT3   # prints the store URL
#   scripts/redis-cluster.sh stop DIR
#
# Every node is a primary (no replicas): the tests exercise slot routing, not
# failover. Data lives in memory only; DIR holds the nodes' config and logs.
set -euo pipefail

cmd=${1:?usage: redis-cluster.sh start DIR P1 P2 P3 | stop DIR}
dir=${2:?usage: redis-cluster.sh start DIR P1 P2 P3 | stop DIR}

case "$cmd" in
start)
  shift 2
  [ $# -eq 3 ] || { echo "redis-cluster.sh: three ports needed" >&2; exit 2; }
  mkdir -p "$dir"
  nodes=()
  for port in "$@"; do
    mkdir -p "$dir/$port"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" \
      --dir "$dir/$port" --logfile "$dir/$port/redis.log" --daemonize yes \
      --pidfile "$dir/$port/redis.pid"
    nodes+=("127.0.0.1:$port")
  done
  for port in "$@"; do
    for _ in $(seq 1 100); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$dir/create.log" 2>&1 \
    || { cat "$dir/create.log" >&2; exit 1; }
  for _ in $(seq 1 100); do
    ok=1
    for port in "$@"; do
      redis-cli -p "$port" cluster info 2>/dev/null | grep -q "cluster_state:ok" || ok=0
    done
    [ "$ok" = 1 ] && break
    sleep 0.1
  done
  [ "$ok" = 1 ] || { echo "redis-cluster.sh: cluster did not become ready" >&2; exit 1; }
  (IFS=,; echo "redis-cluster://${nodes[*]}")
  ;;
stop)
  pids=()
  for pidfile in "$dir"/*/redis.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null && pids+=("$pid")
  done
  # Wait for them to exit: a node writes its nodes.conf as it shuts down, so
  # removing DIR right after the kill could race with that write (seen:
  # "rm: cannot remove DIR/PORT: Directory not empty", failing the run).
  for pid in ${pids[@]+"${pids[@]}"}; do
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
  done
  ;;
*)
  echo "redis-cluster.sh: unknown command $cmd" >&2
  exit 2
  ;;
esac
