#!/usr/bin/env bash
# Makes sure headless Chromium and chromedriver are present for the dashboard's
# browser tests (tests/tests/dashboard.rs): installs Debian's chromium and
# chromium-driver when chromedriver is missing. Safe to run repeatedly.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
  exit 0
fi
echo "==> installing chromium and chromium-driver (browser tests of the dashboard)"
as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver >/dev/null
chromedriver --version
