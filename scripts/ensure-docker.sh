#!/usr/bin/env bash
# Makes sure a Docker daemon answers on /var/run/docker.sock: installs Debian's
# docker.io when dockerd is missing and starts dockerd in the background when it
# is not running (machines without systemd). Safe to run repeatedly.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

docker_ok() { docker version >/dev/null 2>&1; }

if docker_ok; then
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  echo "==> installing docker.io (dockerd is missing)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq docker.io >/dev/null
fi

echo "==> starting dockerd in the background (log: /tmp/cloudai-dockerd.log)"
as_root sh -c 'nohup dockerd >/tmp/cloudai-dockerd.log 2>&1 &'
for _ in $(seq 1 60); do
  if docker_ok; then
    echo "==> dockerd is up"
    exit 0
  fi
  sleep 1
done
echo "error: dockerd did not come up within 60s; see /tmp/cloudai-dockerd.log" >&2
tail -20 /tmp/cloudai-dockerd.log >&2 || true
exit 1
