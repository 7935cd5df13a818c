#!/usr/bin/env bash
# Builds the sample image offline, then submits it to a running cluster twice:
# a good run (must complete with exit code 0) and bad input (must fail with 2).
#
#   sample_tasks/test-sample.sh --master 127.0.0.1:50051 --ca cloudai-data/tls/ca.crt --token <operator token>
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bash "$here/build-offline.sh"
bash "$here/../proto/generate.sh" >/dev/null
python3 "$here/submit.py" "$@" --steps 5
python3 "$here/submit.py" "$@" --bad-input
echo "sample task: both runs ended as expected"
