#!/usr/bin/env bash
# Builds the offline test image cloudai-test/busybox:latest with no registry:
# a rootfs holding Debian's static busybox and its applet links, imported with
# `docker import`. Installs busybox-static when missing.
set -euo pipefail

IMAGE=${CLOUDAI_TEST_IMAGE:-cloudai-test/busybox:latest}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  exit 0
fi

BUSYBOX=/bin/busybox
# The image needs a static busybox (it has no libc); Debian's busybox-static provides one.
if ! { [ -x "$BUSYBOX" ] && ldd "$BUSYBOX" 2>&1 | grep -q "not a dynamic"; }; then
  echo "==> installing busybox-static"
  as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq busybox-static >/dev/null
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
echo "root:x:0:0:root:/:/bin/sh" > "$root/etc/passwd"
tar -C "$root" -c . | docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$IMAGE" >/dev/null
echo "==> built $IMAGE"
