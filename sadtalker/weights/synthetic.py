"""Deterministic synthetic weights in the official checkpoint layouts.

The official weights cannot be downloaded everywhere (CI has no internet), so tests and offline runs use
checkpoints filled by a documented rule (the reference's ``make_weights.py``), keyed by ``(seed, key,
shape, dtype)`` only, so any implementation rebuilds exactly the same tensors. The layouts are given by
the caller: ``sadtalker.networks.file_layout`` derives them from this project's own modules, so a fresh
clone needs nothing else.

Anything produced from these weights is not a face video: every caller must say so loudly.

Command line: ``sadtalker weights synthetic --seed 0 [--out DIR] [NAME ...]``.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from sadtalker.atomic import atomic_path

log = logging.getLogger(__name__)

LayoutRow = tuple[str, str, tuple[int, ...]]  # (flat key, dtype name, shape)

_FLOAT = {"float32": np.float32, "float64": np.float64, "float16": np.float16}
_INT = {"int64": np.int64, "int32": np.int32}
MARKER = "SYNTHETIC.json"
SYNTHETIC_WARNING = (
    "SYNTHETIC WEIGHTS: the networks run on deterministic pseudo-random weights, not the official "
    "SadTalker checkpoints; outputs will not look like a talking face"
)


def _leaf(key: str) -> str:
    return key.rsplit("/", 1)[-1].rsplit(".", 1)[-1]


def _gaussian_kernel(shape: tuple[int, ...]) -> np.ndarray:
    size = shape[2]
    sigma = (size - 1) / 8.0
    axis = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(axis**2) / (2 * sigma**2))
    kernel = np.outer(g, g)
    return np.broadcast_to(kernel / kernel.sum(), shape).copy()


def synthetic_tensor(
    seed: int,
    key: str,
    dtype: str,
    shape: tuple[int, ...],
    spectral_siblings: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """One tensor by the rule (float64 before the final cast, or the integer array).

    ``spectral_siblings`` = (``weight_orig``, ``weight_u``) of the same layer, already rounded to their
    dtype, needed for a ``weight_v`` key.
    """
    if dtype in _INT:
        return np.zeros(shape, dtype=_INT[dtype])
    rng = np.random.Generator(np.random.PCG64((seed ^ zlib.crc32(key.encode("utf-8"))) & 0xFFFFFFFFFFFFFFFF))
    z = rng.standard_normal(int(np.prod(shape)) if shape else 1).reshape(shape)
    leaf = _leaf(key)
    if leaf == "running_mean":
        return 0.1 * z
    if leaf == "running_var":
        return 1.0 + 0.1 * np.abs(z)
    if leaf == "bias":
        return 0.01 * z
    if leaf == "weight" and key.endswith("down.weight") and len(shape) == 4 and shape[1] == 1:
        return _gaussian_kernel(shape)  # the kp detector's anti-alias buffer keeps its meaning
    if leaf == "weight_u":
        return z / max(float(np.linalg.norm(z)), 1e-12)
    if leaf == "weight_v":
        if spectral_siblings is None:
            raise ValueError(f"{key}: weight_v needs its weight_orig and weight_u")
        w_orig, u = spectral_siblings
        v = w_orig.reshape(w_orig.shape[0], -1).T @ u
        return v / max(float(np.linalg.norm(v)), 1e-12)
    if len(shape) >= 2:
        return z / math.sqrt(int(np.prod(shape[1:])))
    if leaf == "weight" and len(shape) == 1:
        return 1.0 + 0.1 * z
    return 0.01 * z


def synthetic_state(
    rows: Sequence[LayoutRow], seed: int, prefixes: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """``{key: array}`` in the rows' dtypes, for every row or only the keys starting with ``prefixes``."""
    wanted = tuple(prefixes) if prefixes is not None else None
    selected = [row for row in rows if wanted is None or row[0].startswith(wanted)]
    rounded: dict[str, np.ndarray] = {}
    out: dict[str, np.ndarray] = {}
    # weight_v rows last: they depend on the rounded weight_orig and weight_u of their layer.
    for key, dtype, shape in sorted(selected, key=lambda row: _leaf(row[0]) == "weight_v"):
        siblings = None
        if _leaf(key) == "weight_v":
            base = key[: -len("weight_v")]
            siblings = (rounded[base + "weight_orig"], rounded[base + "weight_u"])
        array = synthetic_tensor(seed, key, dtype, shape, siblings)
        if dtype in _FLOAT:
            array = np.asarray(array, dtype=_FLOAT[dtype])
            if _leaf(key) in ("weight_orig", "weight_u"):
                rounded[key] = array.astype(np.float64)
        out[key] = array
    return {row[0]: out[row[0]] for row in selected}


def write_checkpoint(state: dict[str, np.ndarray], path: Path) -> None:
    """Write ``state`` as the official file would be: flat safetensors, or a pickle ``{top: {rest: t}}``
    plus ``epoch`` for ``top/rest`` keys. Written atomically (``sadtalker.atomic``)."""
    import torch

    # np.ascontiguousarray would turn 0-d scalars (num_batches_tracked) into shape (1,)
    tensors = {k: torch.from_numpy(np.array(v, order="C", copy=True)) for k, v in state.items()}
    # A temporary of its own per writer: threads or worker processes that write the same file at once each
    # rename a complete copy into place (the content is deterministic), never a mix of two writes.
    with atomic_path(path) as tmp:
        if path.name.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(tensors, str(tmp))
        else:
            nested: dict[str, object] = {"epoch": 0}
            for key, tensor in tensors.items():
                top, rest = key.split("/", 1)
                nested.setdefault(top, {})[rest] = tensor  # type: ignore[index]
            torch.save(nested, str(tmp))


def synthetic_dir(seed: int, root: Path | None = None) -> Path:
    """The folder holding synthetic checkpoints for ``seed`` (under the weights cache by default)."""
    from sadtalker.weights.registry import cache_dir

    return (root or cache_dir() / "synthetic") / f"seed-{seed}"


def ensure_synthetic_checkpoints(
    seed: int,
    names: Iterable[str] = (),
    root: Path | None = None,
    layout: Callable[[str], list[LayoutRow]] | None = None,
) -> Path:
    """Write the missing synthetic files ``names`` for ``seed``, each in ``layout(name)`` (required when a
    file must be written), and return their folder, which carries a ``SYNTHETIC.json`` marker."""
    folder = synthetic_dir(seed, root)
    for name in names:
        path = folder / name
        if path.is_file():
            continue
        if layout is None:
            raise TypeError(f"ensure_synthetic_checkpoints: {name} is missing and no layout was given")
        log.warning("writing synthetic %s (seed %d) to %s", name, seed, folder)
        write_checkpoint(synthetic_state(layout(name), seed), path)
    marker = folder / MARKER
    if not marker.exists():
        with atomic_path(marker) as tmp:
            tmp.write_text(
                json.dumps({"synthetic": True, "seed": seed, "warning": SYNTHETIC_WARNING}, indent=1)
            )
    return folder


def is_synthetic(folder: Path) -> bool:
    """True when ``folder`` holds synthetic weights (it has the marker written by this module)."""
    return (Path(folder) / MARKER).is_file()
