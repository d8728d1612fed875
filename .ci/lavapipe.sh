#!/usr/bin/env bash
# Mesa's lavapipe (a software Vulkan driver) from bookworm-backports, so that the WebGPU tests run without a GPU.
# Dawn rejects Debian 12's own Mesa 22; backports has Mesa 25. Idempotent: does nothing once the driver is there.
# Source this file: it exports VK_DRIVER_FILES for the tests.
set -euo pipefail
lavapipe_icd=/usr/share/vulkan/icd.d/lvp_icd.json
if [ ! -f "$lavapipe_icd" ]; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  # The same mirror as the machine's own Debian source (deb822 or one-line format), minus the security archive.
  debian_uri=$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}';
                  grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'; } |
                grep -v security | head -n1 || true)
  debian_uri=${debian_uri:-http://deb.debian.org/debian}
  echo "lavapipe: installing mesa-vulkan-drivers from $debian_uri bookworm-backports" >&2
  echo "deb $debian_uri bookworm-backports main" | as_root tee /etc/apt/sources.list.d/fastgen-backports.list >/dev/null
  log=$(mktemp)
  if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers; } >"$log" 2>&1; then
    cat "$log" >&2; echo "lavapipe: install failed" >&2; exit 1
  fi
  rm -f "$log"
fi
export VK_DRIVER_FILES="$lavapipe_icd"
