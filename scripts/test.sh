#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine with Rust.
#
# Installs redis-server (with redis-cli, for a private Redis Cluster) and Request
# Tracker 5 if they are missing (apt-get) and the tansu Kafka broker (cargo
# install, once), starts private ones on free loopback ports, runs every test
# against them, and stops them again, whatever the outcome. Extra arguments go
# to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@"; }
}

command -v redis-server >/dev/null || { echo "test.sh: installing redis-server"; apt_install redis-server; }
# A real Kafka-protocol broker for tests/kafka_e2e.rs (in-memory storage).
export PATH="$HOME/.cargo/bin:$PATH"
command -v tansu >/dev/null || { echo "test.sh: installing tansu (once)"; cargo install tansu --locked --features dynostore; }

free_port() {
  local port
  for _ in $(seq 1 50); do
    # Below 30000, so that no port handed out is a Redis Cluster node's bus
    # port (its port + 10000) of another: that collision made a cluster node
    # fail to start now and then.
    port=$((20000 + RANDOM % 10000))
    # Nothing answers on it nor on its bus port: /dev/tcp fails to connect.
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null \
      && ! (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  echo "test.sh: no free port found" >&2
  exit 1
}

port=$(free_port)
workdir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$workdir" \
  --logfile "$workdir/redis.log" &
redis_pid=$!
rt_work="$workdir/rt"
kafka_port=$(free_port)
tansu broker --listener-url "tcp://127.0.0.1:$kafka_port" \
  --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
  --storage-engine memory://tansu/ >"$workdir/tansu.log" 2>&1 &
tansu_pid=$!
cleanup() {
  kill "$redis_pid" "$tansu_pid" 2>/dev/null || true
  wait "$redis_pid" "$tansu_pid" 2>/dev/null || true
  scripts/rt-server.sh stop "$rt_work" >/dev/null 2>&1 || true
  scripts/redis-cluster.sh stop "$workdir/cluster" >/dev/null 2>&1 || true
  # A process that outlived its stop may still be writing there: one more
  # try, and a leftover temporary directory never fails the run.
  rm -rf "$workdir" 2>/dev/null || { sleep 1; rm -rf "$workdir" || true; }
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
echo "test.sh: redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$port"

export INCIDENTD_TEST_REDIS_URL="redis://127.0.0.1:$port/0"

# A private three-node Redis Cluster: the store's contract and delivery across
# instances are also tested against it.
INCIDENTD_TEST_REDIS_CLUSTER_URL=$(scripts/redis-cluster.sh start "$workdir/cluster" \
  "$(free_port)" "$(free_port)" "$(free_port)")
export INCIDENTD_TEST_REDIS_CLUSTER_URL
echo "test.sh: Redis Cluster at $INCIDENTD_TEST_REDIS_CLUSTER_URL"

for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null && break
  sleep 0.1
done
echo "test.sh: tansu $(tansu --version 2>/dev/null | awk '{print $NF}') on 127.0.0.1:$kafka_port"
export INCIDENTD_TEST_KAFKA_BROKERS="127.0.0.1:$kafka_port"

# A real Request Tracker for the rt adapter's end-to-end tests.
rt_port=$(free_port)
RT_SERVER_WATCH_PID=$$ scripts/rt-server.sh start "$rt_port" "$rt_work"
export INCIDENTD_TEST_RT_URL="http://127.0.0.1:$rt_port" INCIDENTD_TEST_RT_USER=root \
  INCIDENTD_TEST_RT_PASSWORD=password INCIDENTD_TEST_RT_TOKEN_FILE="$rt_work/root.token"
cargo test --locked --all-targets "$@"
# Doc tests are not part of --all-targets.
cargo test --locked --doc
