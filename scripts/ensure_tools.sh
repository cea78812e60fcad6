#!/usr/bin/env bash
# Make the system tools `make setup` wants available, from Debian's packages when we are root and apt-get
# exists. Never fails setup: each tool has a fallback, said on stderr.
#   ffmpeg (+ ffprobe): else the static binary shipped inside the imageio-ffmpeg wheel (a declared dependency;
#     sadtalker.video finds it on its own), which has no ffprobe, so probing parses `ffmpeg -i` instead.
#   chromium: headless browser for the QC report test (tests/test_report.py), else that test skips.
#   tcmalloc: the faster malloc a CPU worker preloads (README, "CPU workers"), else glibc's malloc.
#   g++: inductor's compiler for `--compile` on a CPU (README), else that option stops with a clear error.
set -u

# ensure PACKAGE FALLBACK-MESSAGE COMMAND...: done when every COMMAND is on PATH, else install PACKAGE.
ensure() {
  local package=$1 fallback=$2 found=1 cmd
  shift 2
  for cmd in "$@"; do command -v "$cmd" >/dev/null 2>&1 || found=0; done
  [ "$found" = 1 ] && return 0
  apt_install "$package" "$fallback"
}

# ensure_library PACKAGE FALLBACK-MESSAGE SONAME: done when the dynamic linker knows SONAME, else install.
ensure_library() {
  ldconfig -p 2>/dev/null | grep -q "$3" && return 0
  apt_install "$1" "$2"
}

# apt_install PACKAGE FALLBACK-MESSAGE: from Debian as root, else say what is used instead.
apt_install() {
  local package=$1 fallback=$2
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure_tools: installing Debian's $package" >&2
    apt-get install -y --no-install-recommends "$package" >/dev/null 2>&1 && return 0
    apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends "$package" >/dev/null 2>&1 &&
      return 0
  fi
  echo "ensure_tools: no $package; $fallback" >&2
}

ensure ffmpeg "using the ffmpeg binary bundled with imageio-ffmpeg" ffmpeg ffprobe
# Debian names the browser chromium, Ubuntu's snapless images chromium-browser: either will do.
command -v chromium-browser >/dev/null 2>&1 ||
  ensure chromium "the report's browser test will be skipped" chromium
ensure g++ "--compile on the CPU is unavailable (it says so), its test skips" g++
ensure_library libtcmalloc-minimal4 "CPU workers run on glibc's malloc" libtcmalloc_minimal.so.4
exit 0
