#!/usr/bin/env bash
# Make headless Chromium available for the report test (tests/test_report.py opens report.html in it). Order:
# chromium already on PATH, else Debian's package when we are root and apt-get exists. Never fails setup: the
# browser test skips with a reason where Chromium cannot be had.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: installing Debian's chromium (headless browser for the QC report test)" >&2
  (apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; }) &&
    exit 0
fi
echo "ensure_chromium: no chromium; the report's browser test will be skipped" >&2
exit 0
