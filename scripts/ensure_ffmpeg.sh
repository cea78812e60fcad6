#!/usr/bin/env bash
# Make sure an ffmpeg binary is usable. Order: ffmpeg on PATH (with ffprobe), else Debian's package when we
# are root and apt-get exists, else the static binary shipped inside the imageio-ffmpeg wheel (a declared
# dependency; sadtalker.video finds it on its own), which has no ffprobe, so probing falls back to PyAV-free
# parsing of `ffmpeg -i`.
set -eu
if command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure_ffmpeg: installing Debian's ffmpeg" >&2
  (apt-get install -y --no-install-recommends ffmpeg >/dev/null 2>&1 ||
    { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends ffmpeg >/dev/null 2>&1; }) &&
    exit 0
fi
echo "ensure_ffmpeg: no system ffmpeg; using the binary bundled with imageio-ffmpeg" >&2
