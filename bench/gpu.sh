#!/usr/bin/env bash
# The GPU figures of issue #12 in one short run (under 5 minutes on an H100 / H200): the renderer in
# float32 / float16 / bfloat16 at 256 and 512 over batch sizes 1-32 (frames/s, GFLOP/s against the GPU's
# measured matmul and conv throughput, peak GPU memory), PSNR of float16 / bfloat16 frames against float32,
# and whether the streaming encode keeps up with the renderer. See bench/gpu.py.
#
#   bench/gpu.sh [--device cuda:1] [--out FILE] [--weights official]
#
# Exits 2, saying why, when torch sees no CUDA device. Writes bench/results/<date>-<host>-cuda-gpu-suite.json
# and prints a markdown table. PYTHON overrides the interpreter (default: the project's .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" bench/run.py --gpu-suite "$@"   # the suite's device defaults to cuda
