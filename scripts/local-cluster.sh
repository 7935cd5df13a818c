#!/usr/bin/env bash
# Starts a local CloudAI cluster in one command: a master on the embedded store
# (data in ./cloudai-data), one local worker already registered as `local-1`
# and joined with mutual TLS, and drops you into the master's REPL. `exit` or
# Ctrl-D stops both.
#
#   scripts/local-cluster.sh            # release build (first build takes a few minutes)
#   PROFILE=debug scripts/local-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
DATA_DIR=${CLOUDAI_DATA_DIR:-./cloudai-data}
GRPC_PORT=${CLOUDAI_GRPC_PORT:-50051}
WORKER_PORT=${CLOUDAI_WORKER_PORT:-50052}
HTTP_PORT=${CLOUDAI_HTTP_PORT:-8080}

bash scripts/ensure-docker.sh
bash scripts/build-test-image.sh

if [ "$PROFILE" = release ]; then
  cargo build --release --bins --locked
  BIN=target/release
else
  cargo build --bins --locked
  BIN=target/debug
fi

mkdir -p "$DATA_DIR"
echo "==> starting worker local-1 on 127.0.0.1:$WORKER_PORT (log: $DATA_DIR/worker.log)"
# The master writes local-1's join token for its start-up registration; the worker
# waits for the file on its first start and keeps its certificate afterwards.
join=()
if [ ! -f "$DATA_DIR/worker/tls/worker.crt" ]; then
  rm -f "$DATA_DIR/join-tokens/local-1.token"
  join=(--join-token-file "$DATA_DIR/join-tokens/local-1.token")
fi
"$BIN/cloudai-worker" --id local-1 --port "$WORKER_PORT" --advertise-host 127.0.0.1 \
  --master "127.0.0.1:$GRPC_PORT" --data-dir "$DATA_DIR/worker" "${join[@]}" >"$DATA_DIR/worker.log" 2>&1 &
WORKER_PID=$!
trap 'kill "$WORKER_PID" 2>/dev/null || true; wait "$WORKER_PID" 2>/dev/null || true' EXIT

echo "==> starting the master (logs: $DATA_DIR/master.log); try: task local-1 cloudai-test/busybox:latest -- echo hello"
"$BIN/cloudai-master" --grpc-addr "127.0.0.1:$GRPC_PORT" --http-addr "127.0.0.1:$HTTP_PORT" \
  --data-dir "$DATA_DIR" --register "local-1=127.0.0.1:$WORKER_PORT" 2>>"$DATA_DIR/master.log"
