"""Conformance stages run by ``tests/golden_check.py`` on a golden directory.

Each stage module exposes ``STAGES: dict[str, Callable[[GoldenSet], list[Check]]]`` keyed by stage letter.
A stage reads the stored inputs of the golden directory, runs our implementation on synthetic weights made
for the seed in ``meta.json``, and returns one :class:`Check` per compared array.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Check:
    """One compared array: ``max_abs_err`` against ``tolerance`` (or a custom ``passed`` verdict)."""

    stage: str
    name: str
    max_abs_err: float
    tolerance: float
    detail: str = ""
    verdict: bool | None = None

    @property
    def passed(self) -> bool:
        if self.verdict is not None:
            return self.verdict
        return bool(np.isfinite(self.max_abs_err)) and self.max_abs_err <= self.tolerance


def compare(stage: str, name: str, ours, reference, tolerance: float) -> Check:
    """Max abs error between two arrays (shape mismatch is a failure with an infinite error)."""
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if ours.shape != reference.shape:
        return Check(stage, name, float("inf"), tolerance, f"shape {ours.shape} != {reference.shape}")
    err = float(np.max(np.abs(ours - reference))) if ours.size else 0.0
    return Check(stage, name, err, tolerance)


@dataclass
class GoldenSet:
    """A golden directory: ``meta.json`` + ``*.npz`` per stage + ``input_audio.wav``. ``compile``: stage f
    renders through ``torch.compile`` (the ``--compile`` render option) instead of eagerly."""

    root: Path
    compile: bool = False
    _cache: dict = field(default_factory=dict, repr=False)

    @cached_property
    def meta(self) -> dict:
        return json.loads((self.root / "meta.json").read_text())

    @property
    def seed(self) -> int:
        return int(self.meta["seed"])

    def npz(self, name: str) -> dict[str, np.ndarray]:
        """Arrays of ``<name>.npz`` (e.g. ``a_mel``), loaded once."""
        if name not in self._cache:
            with np.load(self.root / f"{name}.npz", allow_pickle=False) as data:
                self._cache[name] = {key: data[key] for key in data.files}
        return self._cache[name]

    def has(self, name: str) -> bool:
        return (self.root / f"{name}.npz").is_file()
