#!/usr/bin/env bash
# incidentd side by side with Prometheus Alertmanager, on the same alert stream.
#
#   benches/compare.sh --seconds N
#
# Builds incidentd and its load tool (release), installs redis-server and
# prometheus-alertmanager if missing, starts private ones on free loopback
# ports, then runs the load tool (incidentd-load) three times for N seconds:
#   1. incidentd (Redis store, the example rules) flat out,
#   2. Alertmanager's POST /api/v2/alerts flat out, same stream,
#   3. incidentd at 5,000 alerts/s (latency and RSS at the target rate).
# It prints each run's table, the CPU each process used in runs 1 and 2, and
# ends with `ratio_vs_alertmanager=X.XX p99_ms=Y.Y` (throughput ratio of runs 1
# and 2; p99 of run 3). Everything it started is stopped on exit.
#
# incidentd runs with `--worker-threads` one less than the CPUs (at least 1),
# as on any machine where its Redis shares the CPUs: Redis runs commands on one
# thread and a daemon thread per CPU competes with it (on 2 cores, 1 thread
# ingested 23 % more alerts/s flat out than 2; BENCHMARKS.md). `--worker-threads
# 0` runs it on tokio's default, one per CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=30
rate=5000
cpus=$(nproc)
threads=$(( cpus > 1 ? cpus - 1 : 1 ))
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --worker-threads) threads="$2"; shift 2 ;;
    *) echo "usage: $0 --seconds N [--rate ALERTS_PER_S] [--worker-threads N]" >&2; exit 64 ;;
  esac
done
if ! [[ "$threads" =~ ^[0-9]+$ ]] || (( 10#$threads > 1024 )); then
  echo "--worker-threads: a number of threads from 0 (one per CPU) to 1024, not '$threads'" >&2
  exit 64
fi
threads=$(( 10#$threads ))
thread_args=()
if (( threads == 0 )); then
  echo "incidentd worker threads: one per CPU ($cpus CPUs)"
else
  thread_args=(--worker-threads "$threads")
  echo "incidentd worker threads: $threads ($cpus CPUs)"
fi

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq "$@" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@"; }
}
command -v redis-server >/dev/null || apt_install redis-server
command -v prometheus-alertmanager >/dev/null || apt_install prometheus-alertmanager

cargo build --release --locked --bin incidentd --bin incidentd-load >&2

free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
  done
  echo "no free port" >&2; exit 1
}
wait_port() { # port [log of what should listen there, shown if nothing does]
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listening on $1" >&2
  if [ -n "${2:-}" ]; then cat "$2" >&2; fi
  exit 1
}

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --logfile "$work/redis.log" &
redis_pid=$!; pids+=("$redis_pid")
wait_port "$redis_port"

start_incidentd() {
  local port=$1 prefix=$2
  cat > "$work/incidentd-$prefix.yaml" <<YAML
http:
  listen: 127.0.0.1:$port
store:
  url: redis://127.0.0.1:$redis_port/0
  key_prefix: $prefix
rules:
  dir: $PWD/rules
log:
  level: warn
YAML
  target/release/incidentd run --config "$work/incidentd-$prefix.yaml" ${thread_args[@]+"${thread_args[@]}"} \
    >"$work/incidentd-$prefix.log" 2>&1 &
  local pid=$!
  wait_port "$port" "$work/incidentd-$prefix.log"
  echo "$pid"
}

cat > "$work/am.yml" <<'YAML'
route:
  receiver: blackhole
receivers:
  - name: blackhole
YAML
am_port=$(free_port)
prometheus-alertmanager --config.file="$work/am.yml" --storage.path="$work/am" \
  --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address= >"$work/am.log" 2>&1 &
am_pid=$!; pids+=("$am_pid")
wait_port "$am_port"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
cpu_report() { # label pid start_ticks
  echo "  $1: $(awk -v t="$(( $(ticks "$2") - $3 ))" -v hz="$hz" -v s="$seconds" 'BEGIN { printf "%.2f cores", t / hz / s }')"
}

inc_port=$(free_port)
inc_pid=$(start_incidentd "$inc_port" "flat")
pids+=("$inc_pid")  # (started in a subshell: its pids+= did not reach us)
echo "## 1. incidentd (Redis store) flat out, ${seconds}s"
d0=$(ticks "$inc_pid"); r0=$(ticks "$redis_pid")
target/release/incidentd-load --url "http://127.0.0.1:$inc_port" --kind incidentd \
  --seconds "$seconds" --pid "$inc_pid" --json "$work/incidentd.json"
echo "CPU used:"; cpu_report incidentd "$inc_pid" "$d0"; cpu_report redis-server "$redis_pid" "$r0"

echo; echo "## 2. Alertmanager flat out, same stream, ${seconds}s"
a0=$(ticks "$am_pid")
target/release/incidentd-load --url "http://127.0.0.1:$am_port" --kind alertmanager \
  --seconds "$seconds" --pid "$am_pid" --json "$work/alertmanager.json"
echo "CPU used:"; cpu_report alertmanager "$am_pid" "$a0"

echo; echo "## 3. incidentd at ${rate} alerts/s, ${seconds}s"
rate_port=$(free_port)
rate_pid=$(start_incidentd "$rate_port" "rate")
pids+=("$rate_pid")
target/release/incidentd-load --url "http://127.0.0.1:$rate_port" --kind incidentd \
  --seconds "$seconds" --rate "$rate" --pid "$rate_pid" --json "$work/rate.json"

field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, d))" "$@"; }
echo
echo "RSS at ${rate}/s (KiB, sampled each second): first $(field "$work/rate.json" 'rss_kib[0] if rss_kib else 0'), max $(field "$work/rate.json" 'max(rss_kib) if rss_kib else 0'), last $(field "$work/rate.json" 'rss_kib[-1] if rss_kib else 0')"
ratio=$(python3 -c "import json; a=json.load(open('$work/incidentd.json')); b=json.load(open('$work/alertmanager.json')); print(f\"{a['alerts_per_s']/b['alerts_per_s']:.2f}\")")
p99=$(field "$work/rate.json" "'%.1f' % latency_ms['p99']")
echo "ratio_vs_alertmanager=$ratio p99_ms=$p99"
