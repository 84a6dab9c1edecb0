#!/usr/bin/env bash
# tests/browser drive a real headless Chromium: Debian's package, through the Playwright
# Python package of the dev extra (executable_path=/usr/bin/chromium; Playwright never
# downloads a browser here).
set -u
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1
fi
command -v chromium >/dev/null 2>&1 || echo "chromium is not installed: browser tests will be skipped (apt-get install chromium)" >&2
exit 0
