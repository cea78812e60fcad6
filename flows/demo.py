"""``python -m flows.demo`` (what ``make demo`` runs): the bundled example manifest through ``render_batch``.

Ephemeral Prefect (a temporary local server; its state in the project's git-ignored ``.prefect/demo``),
local storage into ``./outputs/demo``, the threads runner. The official weights are used when they are in
the weights cache, synthetic ones otherwise (``sadtalker.loader.Models`` decides; this says so loudly).
The example has 2 rows of 0.43 s speech (10 frames each) so that it ends in minutes on 2 CPU cores (the
CPU renderer costs about 10-20 s per 256 px frame); the second row reuses the first row's face.
Running it again resumes: finished rows are reused (``--force`` renders again).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Annotated

import typer

from sadtalker.cli_base import new_app, run_app
from tasks.settings import PROJECT_PREFECT_DIR, REPO, use_prefect_home

__all__ = ["main"]

OUTPUT = REPO / "outputs" / "demo"
#: The demo's weights policy: it must run on a fresh clone, so synthetic files stand in when the official ones
#: are not in the cache (said in a banner); production deployments use `official`.
DEMO_WEIGHTS = "auto"


def _banner(lines: Sequence[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("\n" + "!" * width)
    for line in lines:
        print(f"! {line.ljust(width - 4)} !")
    print("!" * width + "\n", flush=True)


app = new_app(__doc__.split("\n")[0], version=False, single=True)


@app.command()
def demo(
    force: Annotated[bool, typer.Option("--force", help="Render again even when the videos exist.")] = False,
    device: Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda.")] = "auto",
) -> None:
    """The bundled example manifest through render_batch (what `make demo` runs); exit 0 when every row
    succeeded."""
    use_prefect_home(PROJECT_PREFECT_DIR / "demo")  # created with its parents, before Prefect is imported

    from flows.cli import main as cli_main
    from flows.render_batch import render_batch
    from manifests import EXAMPLE_ALLOWED_PREFIXES, EXAMPLE_MANIFEST
    from sadtalker.loader import Models

    # The demo must work on a fresh clone, where the official files cannot be there: it runs under the
    # `auto` weights policy (the official set when it is complete, else synthetic files) and says which.
    # The example's rows are 256 px / crop; the flow's tasks reuse this process's Models.
    synthetic = bool(Models.shared(DEMO_WEIGHTS).weights(256, "crop").synthetic)
    if synthetic:
        _banner(
            [
                "SYNTHETIC WEIGHTS: the official SadTalker checkpoints are not in the weights cache.",
                f"The demo (weights policy {DEMO_WEIGHTS!r}) runs the whole pipeline with deterministic",
                "synthetic weights:",
                "the videos will NOT look like talking faces.",
                "Fetch the official weights (see README.md) and run `make demo` again.",
            ]
        )
    else:
        print(f"weights policy {DEMO_WEIGHTS!r}: using the official SadTalker weights from the weights cache")
    start = time.perf_counter()
    summary = render_batch(
        manifest=str(EXAMPLE_MANIFEST),
        output=str(OUTPUT),
        force=force,
        device=device,
        weights=DEMO_WEIGHTS,
        allowed_prefixes=list(EXAMPLE_ALLOWED_PREFIXES),  # its folder and tests/data (the portrait)
    )
    wall = time.perf_counter() - start
    print()
    cli_main(["results", summary.batch_uri])
    print(f"\ndemo: {summary.succeeded}/{summary.total} videos in {wall:.1f} s ({summary.reused} reused)")
    print(f"QC: {summary.qc_pass} pass, {summary.qc_warn} warn, {summary.qc_fail} fail")
    for row in sorted((OUTPUT / summary.batch_id / "items").glob("*/video.mp4")):
        print(f"  video:   {row}")
    print(f"  results: {summary.results_uri}")
    print(f"  QC:      {OUTPUT / summary.batch_id / 'qc.parquet'}")
    if summary.report_uri:
        print(f"  report:  {summary.report_uri}   <- open this in a browser to review the batch")
        print(f"  index:   {summary.index_uri}")
    if synthetic or summary.synthetic_weights:
        _banner(["These videos were rendered with SYNTHETIC weights: they are not real results."])
    raise typer.Exit(0 if summary.ok else 1)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns 0 when every row succeeded."""
    return run_app(app, argv, "python -m flows.demo")


if __name__ == "__main__":
    sys.exit(main())
