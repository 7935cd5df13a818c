#!/usr/bin/env bash
# Idle resident memory of a master and a worker: starts an insecure master with
# one registered worker (real Docker), waits for them to settle, then samples
# VmRSS of both once a second and prints the median of the samples.
#
#   cargo build --release --bins && scripts/bench-idle-rss.sh [SAMPLES]
#
# BIN_DIR selects the binaries (default target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN_DIR=${BIN_DIR:-target/release}
SAMPLES=${1:-10}
bash scripts/ensure-docker.sh >/dev/null

work=$(mktemp -d)
cleanup() {
  kill "${worker_pid:-}" "${master_pid:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc=$(free_port); http=$(free_port); wport=$(free_port)

"$BIN_DIR/cloudai-master" --insecure --no-repl --data-dir "$work/master" \
  --grpc-addr "127.0.0.1:$grpc" --http-addr "127.0.0.1:$http" \
  --register "idle-1=127.0.0.1:$wport" >"$work/master.log" 2>&1 &
master_pid=$!
"$BIN_DIR/cloudai-worker" --insecure --id idle-1 --port "$wport" \
  --master "127.0.0.1:$grpc" --data-dir "$work/worker" >"$work/worker.log" 2>&1 &
worker_pid=$!

for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$http/healthz" 2>/dev/null | grep -q '"active":1' && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$http/healthz" | grep -q '"active":1' || { echo "the worker never became active"; cat "$work"/*.log; exit 1; }
sleep 5 # let both settle: first heartbeats, Docker client, NVML probe

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
master_samples=(); worker_samples=()
for _ in $(seq "$SAMPLES"); do
  master_samples+=("$(rss_kib "$master_pid")")
  worker_samples+=("$(rss_kib "$worker_pid")")
  sleep 1
done
m=$(printf '%s\n' "${master_samples[@]}" | median)
w=$(printf '%s\n' "${worker_samples[@]}" | median)
printf 'idle RSS over %s samples (KiB, min..max):\n' "$SAMPLES"
printf '  master: median %s KiB = %.1f MiB (%s..%s)\n' "$m" "$(awk -v k="$m" 'BEGIN {print k / 1024}')" \
  "$(printf '%s\n' "${master_samples[@]}" | sort -n | head -1)" "$(printf '%s\n' "${master_samples[@]}" | sort -n | tail -1)"
printf '  worker: median %s KiB = %.1f MiB (%s..%s)\n' "$w" "$(awk -v k="$w" 'BEGIN {print k / 1024}')" \
  "$(printf '%s\n' "${worker_samples[@]}" | sort -n | head -1)" "$(printf '%s\n' "${worker_samples[@]}" | sort -n | tail -1)"
