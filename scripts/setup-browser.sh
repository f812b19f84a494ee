#!/usr/bin/env bash
# The headless browser the dashboard's tests drive
# (tests/dashboard_in_browser.rs): Debian's chromium, installed once with
# apt-get when this runs as root (CI, containers); elsewhere it says how.
set -euo pipefail
for browser in chromium chromium-browser google-chrome; do
  if command -v "$browser" >/dev/null 2>&1; then
    exit 0
  fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "setup: installing chromium for the dashboard's browser tests (once)" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; then
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends chromium >/dev/null
  fi
  exit 0
fi
echo "setup: the dashboard's browser tests need Chromium: install it (sudo apt-get install chromium) and run make test again" >&2
exit 1
