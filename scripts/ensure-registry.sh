#!/usr/bin/env bash
# Makes sure a private Docker registry can be started for the end-to-end tests
# (tests/src/registry.rs): installs Debian's docker-registry (Docker
# distribution) and apache2-utils (`htpasswd -B`) when either is missing. The
# tests start their own registry processes on loopback ports, so the package's
# own service (port 5000) is stopped and disabled where it runs. Safe to run
# repeatedly.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v docker-registry >/dev/null 2>&1 || ! command -v htpasswd >/dev/null 2>&1; then
  echo "==> installing docker-registry and apache2-utils (private registry for the pull tests)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
    docker-registry apache2-utils >/dev/null
fi

# The package's service is not needed: disable it under systemd, and stop one
# started without systemd (SysV script) if it runs.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  as_root systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
fi
if pids=$(pgrep -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml'); then
  echo "==> stopping the package's docker-registry service (pid $pids)"
  # shellcheck disable=SC2086
  as_root kill $pids || true
fi
