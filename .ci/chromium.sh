#!/usr/bin/env bash
# Debian's Chromium for the browser tests (test/web.test.ts drives it with playwright-core, which downloads no
# browser of its own). Idempotent: does nothing once /usr/bin/chromium is there. Source this file or run it.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  echo "chromium: installing Debian's chromium" >&2
  log=$(mktemp)
  if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq chromium; } >"$log" 2>&1; then
    cat "$log" >&2; echo "chromium: install failed" >&2; exit 1
  fi
  rm -f "$log"
fi
