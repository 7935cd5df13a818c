#!/usr/bin/env bash
# Builds cloudai-sample/python-task:latest with no registry: a root file system
# holding Debian's python3.11 (python3-minimal, installed when missing), the
# shared libraries it links, its standard library, and task.py — imported with
# `docker import`. Safe to run repeatedly.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
IMAGE=${CLOUDAI_SAMPLE_IMAGE:-cloudai-sample/python-task:latest}
PYTHON=/usr/bin/python3.11

if [ ! -x "$PYTHON" ]; then
  echo "==> installing python3-minimal (Debian's python3.11)"
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-minimal >/dev/null
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/app" "$root/tmp" "$root/etc"
cp "$PYTHON" "$root/usr/bin/python3.11"
ln -s python3.11 "$root/usr/bin/python3"
# The interpreter's shared libraries (and the dynamic loader), at the same paths.
for lib in $(ldd "$PYTHON" | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# The standard library, without caches and test suites.
mkdir -p "$root/usr/lib"
tar -C /usr/lib --exclude='__pycache__' --exclude='test' --exclude='idlelib' --exclude='tkinter' \
  --exclude='site-packages' --exclude='dist-packages' -cf - python3.11 | tar -C "$root/usr/lib" -xf -
cp "$here/task.py" "$root/app/task.py"
echo "root:x:0:0:root:/:/bin/sh" > "$root/etc/passwd"
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/bin PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1' \
  --change 'ENTRYPOINT ["python3", "/app/task.py"]' - "$IMAGE" >/dev/null
echo "==> built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
