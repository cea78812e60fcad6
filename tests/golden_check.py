#!/usr/bin/env python3
"""Conformance: run every stage of our implementation on a golden directory and print per-stage errors.

    python tests/golden_check.py DIR [--stages abcdef] [--compile]

DIR holds ``meta.json`` (its ``seed`` names the synthetic weights), the stage files (``a_mel.npz`` ...) and
``input_audio.wav``, as produced by the official SadTalker code (see ../shared/reference/golden/README.md).
Prints one line per compared array, ``stage  max_abs_err  tolerance  PASS|FAIL``, and exits 1 on any failure.
Works on any directory of that format (other seed, length, pose style, image).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golden_stages import Check, GoldenSet  # noqa: E402

# stage letter -> module under tests/golden_stages that implements it
STAGE_MODULES = {"a": "audio", "b": "audio", "c": "audio", "d": "face", "e": "face", "f": "render"}


def run(root: Path, stages: str, compile: bool = False) -> list[Check]:
    golden = GoldenSet(root, compile=compile)
    checks: list[Check] = []
    for letter in stages:
        module = importlib.import_module(f"golden_stages.{STAGE_MODULES[letter]}")
        start = time.perf_counter()
        try:
            results = module.STAGES[letter](golden)
        except Exception as exc:  # a crash is a failure of that stage, reported, not a traceback wall
            results = [Check(letter, "error", float("inf"), 0.0, f"{type(exc).__name__}: {exc}")]
        for check in results:
            print(_line(check), flush=True)
        print(f"# stage {letter}: {time.perf_counter() - start:.1f} s", flush=True)
        checks.extend(results)
    return checks


def _line(check: Check) -> str:
    verdict = "PASS" if check.passed else "FAIL"
    name = f"{check.stage}:{check.name}"
    detail = f"  ({check.detail})" if check.detail else ""
    return f"{name:<34} {check.max_abs_err:>12.3e} {check.tolerance:>10.1e}  {verdict}{detail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("golden_dir", type=Path)
    parser.add_argument(
        "--stages", default="".join(STAGE_MODULES), help="stage letters to run (default: all)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="stage f renders through torch.compile (the --compile render option), same tolerances",
    )
    args = parser.parse_args(argv)
    if not (args.golden_dir / "meta.json").is_file():
        parser.error(f"{args.golden_dir} has no meta.json: not a golden directory")
    unknown = set(args.stages) - set(STAGE_MODULES)
    if unknown:
        parser.error(f"unknown stages {''.join(sorted(unknown))}; known: {''.join(STAGE_MODULES)}")
    print(f"{'stage:array':<34} {'max_abs_err':>12} {'tolerance':>10}  verdict")
    checks = run(args.golden_dir, args.stages, compile=args.compile)
    failed = [c for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
