#!/usr/bin/env bash
# HAProxy from Debian (the replicas-behind-a-load-balancer test runs deploy/haproxy/haproxy.cfg with it).
# Idempotent: does nothing once haproxy is installed.
set -euo pipefail
if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  echo "haproxy: installing the Debian package" >&2
  log=$(mktemp)
  if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; } >"$log" 2>&1; then
    cat "$log" >&2; echo "haproxy: install failed" >&2; exit 1
  fi
  rm -f "$log"
fi
