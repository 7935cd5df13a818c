#!/usr/bin/env bash
# Generates the Python gRPC stubs for master_worker.proto and master_agent.proto
# with grpcio-tools (installed from PyPI when missing).
#
#   proto/generate.sh [OUT_DIR]     # default: agentic_scheduler/cloudai_proto
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../agentic_scheduler/cloudai_proto}
python3 -c 'import grpc_tools' 2>/dev/null || python3 -m pip install --quiet 'grpcio-tools>=1.60'
mkdir -p "$out"
python3 -m grpc_tools.protoc -I "$here" --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
  "$here/master_worker.proto" "$here/master_agent.proto"
# grpcio-tools emits absolute imports (`import master_worker_pb2`); make them package-relative.
sed -i -E 's/^import (master_[a-z_]+_pb2)/from . import \1/' "$out"/*_pb2*.py
touch "$out/__init__.py"
echo "generated Python stubs in $out"
