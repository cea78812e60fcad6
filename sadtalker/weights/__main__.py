"""Command line for the weights cache.

    python -m sadtalker.weights fetch [NAME ... | all | face-alignment] [--dest DIR] [--no-progress]
    python -m sadtalker.weights list [--dest DIR] [--no-hash]
    python -m sadtalker.weights synthetic --seed N [--out DIR] [NAME ...]

``fetch`` without names, or with ``all``, fetches the current (non-legacy) SadTalker files; legacy files,
the QC-only ``syncnet_v2.model`` (LSE-D / LSE-C; alias ``syncnet_v2``) and the face enhancer's
``GFPGANv1.4.pth`` (alias ``gfpgan``) are fetched by name. ``list`` shows
every registry file: present, verified (SHA-256 and size when the registry has them) and size. ``synthetic``
writes deterministic fake weights for offline runs (:mod:`sadtalker.weights.synthetic`, in the layouts of
``sadtalker.networks``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from sadtalker.cli_base import new_app, run_app
from sadtalker.errors import WeightsError
from sadtalker.weights.download import check_file, fetch
from sadtalker.weights.registry import CURRENT_FILES, REGISTRY, SADTALKER_FILES, cache_dir

# Fetched by name only (not part of ``all``): the QC's SyncNet file and the optional face enhancer's file.
# Short names accepted on the command line.
_QC_ONLY = ("syncnet_v2.model",)
_ENHANCER_ONLY = ("GFPGANv1.4.pth",)
_ALIASES = {
    "syncnet_v2": "syncnet_v2.model",
    "syncnet": "syncnet_v2.model",
    "gfpgan": "GFPGANv1.4.pth",
    "GFPGANv1.4": "GFPGANv1.4.pth",
}


def _fetch_face_alignment(dest: Path | None, progress: bool, retries: int) -> int:
    """face-alignment's detector + landmark weights into torch hub's cache (where it reads them), checked
    against the SHA-256 prefix in their names."""
    from sadtalker.weights.face_models import FACE_ALIGNMENT_FILES, face_alignment_dir, verify_file

    folder = dest if dest is not None else face_alignment_dir()
    failed = 0
    for weight in FACE_ALIGNMENT_FILES:
        try:
            path = fetch(weight, folder, progress=progress, retries=retries)
            verify_file(path, weight)
            print(path)
        except WeightsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _fetch(names: list[str], dest: Path | None, progress: bool, retries: int) -> int:
    if names == ["face-alignment"]:
        return _fetch_face_alignment(dest, progress, retries)
    if not names or names == ["all"]:
        optional = _QC_ONLY + _ENHANCER_ONLY
        names = [name for name, weight in REGISTRY.items() if not weight.legacy and name not in optional]
    names = [_ALIASES.get(name, name) for name in names]
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        print(f"unknown file(s): {', '.join(unknown)}; known: {', '.join(REGISTRY)}", file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        try:
            print(fetch(REGISTRY[name], dest, progress=progress, retries=retries))
        except WeightsError as exc:  # DownloadError included
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _list(dest: Path | None, hash_files: bool) -> int:
    folder = dest if dest is not None else cache_dir()
    print(f"# {folder}")
    print(f"{'name':<42} {'present':<8} {'verified':<22} {'size':>12}")
    bad = 0
    for name, weight in REGISTRY.items():
        path = folder / name
        present = path.is_file()
        if not present:
            verified = "-"
            size = f"({weight.size})" if weight.size is not None else "?"
        else:
            size = str(path.stat().st_size)
            if not hash_files:
                verified = "not checked"
            else:
                try:
                    verified = "yes" if check_file(path, weight) else "no hash in registry"
                except WeightsError:
                    verified, bad = "NO (hash/size)", bad + 1
        legacy = " (legacy)" if weight.legacy else " (QC)" if name in _QC_ONLY else ""
        legacy = " (enhancer)" if name in _ENHANCER_ONLY else legacy
        print(f"{name + legacy:<42} {'yes' if present else 'no':<8} {verified:<22} {size:>12}")
    return 1 if bad else 0


def _synthetic(seed: int, names: Sequence[str], out: Path | None) -> int:
    # The command line sits above the networks: the layouts come from the builder table.
    from sadtalker.networks import file_layout
    from sadtalker.weights.synthetic import SYNTHETIC_WARNING, ensure_synthetic_checkpoints

    print(ensure_synthetic_checkpoints(seed, names, out, layout=file_layout))
    print(SYNTHETIC_WARNING)
    return 0


app = new_app("Fetch / list the official weights, write synthetic ones.", version=False)


@app.command("fetch")
def fetch_command(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="File names, 'all' (default: the current SadTalker files), 'face-alignment', "
            "'syncnet_v2' or 'gfpgan'."
        ),
    ] = None,
    dest: Annotated[Path | None, typer.Option(help="Folder (default: the weights cache).")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    retries: Annotated[int, typer.Option(help="Extra attempts per URL after a transient failure.")] = 4,
) -> None:
    """Download and verify registry files into the cache."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    raise typer.Exit(_fetch(list(names or []), dest, not no_progress, retries))


@app.command("list")
def list_command(
    dest: Annotated[Path | None, typer.Option(help="Folder (default: the weights cache).")] = None,
    no_hash: Annotated[bool, typer.Option("--no-hash", help="Skip hashing (fast).")] = False,
) -> None:
    """Show which registry files are present and verified."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    raise typer.Exit(_list(dest, not no_hash))


@app.command("synthetic")
def synthetic_command(
    names: Annotated[
        list[str] | None, typer.Argument(help=f"Files to write (default: {', '.join(CURRENT_FILES)}).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic weights.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Root folder (default: the weights cache).")] = None,
) -> None:
    """Write deterministic synthetic weights (official layouts)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    unknown = [name for name in names or [] if name not in SADTALKER_FILES]
    if unknown:
        raise typer.BadParameter(
            f"unknown file {unknown[0]!r}; choose from {', '.join(SADTALKER_FILES)}", param_hint="NAMES"
        )
    raise typer.Exit(_synthetic(seed, names or CURRENT_FILES, out))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 a file failed, 2 bad arguments)."""
    return run_app(app, argv, "python -m sadtalker.weights")


if __name__ == "__main__":
    sys.exit(main())
