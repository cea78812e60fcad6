#!/usr/bin/env python3
"""Every QC metric on the constructed good and defective videos (and, optionally, on a batch), as a table.

    python bench/qc_metrics_table.py [--batch outputs/demo/<batch_id>] [--samples 16] [--out table.md]

The videos are those of the tests (tests/qc_media.py: the test portrait with its mouth opened and shut
following the speech envelope, muxed with the speech; then one defect per variant: frozen frames, muted
and missing audio, audio 5 frames late, blurred frames, another face, noise instead of the face, a
truncated file). Each is checked with :func:`sadtalker.qc.check_video` as a user's ``sadtalker qc`` would
(official-weights semantics, so face metrics count; SyncNet off: its weights are not here). ``--batch`` adds
one column per row of that batch's ``qc.parquet`` (e.g. the demo's). Cells: ``value verdict`` with the
verdict as P(ass) W(arn) F(ail) i(nfo) s(kipped) n(ot meaningful).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test-only media builder

_SHORT = {"pass": "P", "warn": "W", "fail": "F", "info": "i", "skipped": "s", "not_meaningful": "n"}


def _cell(value: object, verdict: str | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        text = "–"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.3g}"
    else:
        text = str(value)
    return f"{text} {_SHORT.get(str(verdict), '')}".strip()


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--batch", help="a batch folder whose qc.parquet to add (e.g. the demo's)")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--out", help="also write the markdown table here")
    args = parser.parse_args()

    from qc_media import FRAMES, VARIANTS, build_qc_media

    from sadtalker.qc import check_video

    columns: dict[str, dict[str, str]] = {}
    verdicts: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        media = build_qc_media(Path(tmp))
        for variant in VARIANTS:
            report = check_video(
                media.videos[variant],
                media.portrait,
                media.speech,
                expected_frames=FRAMES,
                max_samples=args.samples,
                syncnet=False,
                weights="official",
            )
            columns[variant] = {name: _cell(m.value, m.verdict) for name, m in report.metrics.items()}
            verdicts[variant] = report.verdict
    if args.batch:
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(Path(args.batch) / "qc.parquet").read().to_pylist()
        suffix = "__verdict"
        for row in rows:
            name = f"batch:{row['id']}"
            columns[name] = {
                key[: -len(suffix)]: _cell(row.get(key[: -len(suffix)]), value)
                for key, value in row.items()
                if key.endswith(suffix)
            }
            verdicts[name] = str(row["qc_verdict"])
    names = list(dict.fromkeys(name for column in columns.values() for name in column))
    header = ["metric", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.append("| **verdict** | " + " | ".join(f"**{verdicts[c]}**" for c in columns) + " |")
    for name in names:
        lines.append(f"| {name} | " + " | ".join(columns[c].get(name, "") for c in columns) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
