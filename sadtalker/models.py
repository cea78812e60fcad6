"""Builders and the per-process model holder.

:class:`Models` resolves which checkpoint files to use (official ones in the cache, or synthetic ones in the
official layouts, said loudly), loads each network once, and hands the same instances to every later call
in the process. Keyed by (render size, preprocess family, device, dtype).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from sadtalker.errors import WeightsError
from sadtalker.weights.download import sha256_file
from sadtalker.weights.loading import load_checkpoint, load_strict, sub_state_dict
from sadtalker.weights.registry import REGISTRY, cache_dir, mapping_file, sadtalker_file
from sadtalker.weights.synthetic import SYNTHETIC_WARNING, ensure_synthetic_checkpoints

log = logging.getLogger(__name__)

SYNTHETIC_SEED = 0
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class WeightSet:
    """The two files one render configuration needs, and where they come from."""

    sadtalker: Path  # SadTalker_V0.0.2_<size>.safetensors
    mapping: Path  # mapping_00229 (coeff_nc 70) or mapping_00109 (coeff_nc 73)
    synthetic: bool
    sha256: dict[str, str]


def weights_folder() -> Path:
    """``$SADTALKER_WEIGHTS`` if set, else the cache (``$SADTALKER_HOME`` or ``~/.cache/sadtalker``)."""
    return Path(os.environ.get("SADTALKER_WEIGHTS") or cache_dir())


def resolve_weights(
    size: int, preprocess: str, folder: Path | None = None, allow_synthetic: bool = True
) -> WeightSet:
    """Official files when both are in ``folder`` (verified by SHA-256), otherwise synthetic ones.

    Raises:
        WeightsError: an official file is present but its hash is wrong, or the files are missing and
            ``allow_synthetic`` is False.
    """
    folder = folder or weights_folder()
    wanted = (sadtalker_file(size), mapping_file(preprocess))
    paths = [folder / item.name for item in wanted]
    if all(path.is_file() for path in paths):
        sha = {}
        for item, path in zip(wanted, paths, strict=True):
            actual = sha256_file(path)
            if item.sha256 and actual != item.sha256:
                raise WeightsError(
                    f"{path}: SHA-256 {actual} does not match the official {item.sha256}; "
                    "delete it and fetch again (sadtalker-batch weights fetch)"
                )
            sha[item.name] = actual
        return WeightSet(paths[0], paths[1], synthetic=False, sha256=sha)
    if not allow_synthetic:
        missing = ", ".join(p.name for p in paths if not p.is_file())
        raise WeightsError(
            f"official weights missing in {folder}: {missing}; run `sadtalker-batch weights fetch`"
        )
    synthetic = ensure_synthetic_checkpoints(SYNTHETIC_SEED, [item.name for item in wanted])
    log.warning("%s (official files not found in %s)", SYNTHETIC_WARNING, folder)
    paths = [synthetic / item.name for item in wanted]
    return WeightSet(paths[0], paths[1], synthetic=True, sha256={p.name: sha256_file(p) for p in paths})


class Models:
    """Every network one process needs, loaded once and shared (thread-safe)."""

    _shared: ClassVar[Models | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        weights: Path | None = None,
        allow_synthetic: bool = True,
        landmarker: str = "auto",
    ):
        self.folder = weights
        self.allow_synthetic = allow_synthetic
        self.landmarker_name = landmarker
        self._lock = threading.RLock()
        self._cache: dict[tuple, object] = {}

    @classmethod
    def shared(cls) -> Models:
        """The per-process instance used by the pipeline and the Prefect tasks."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def _get(self, key: tuple, build):
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def weights(self, size: int, preprocess: str) -> WeightSet:
        family = "full" if "full" in preprocess else "crop"
        return self._get(
            ("weights", size, family),
            lambda: resolve_weights(size, preprocess, self.folder, self.allow_synthetic),
        )

    @property
    def synthetic(self) -> bool:
        """True when any weights this instance resolved are synthetic."""
        with self._lock:
            return any(v.synthetic for k, v in self._cache.items() if k[0] == "weights")

    def _state(self, size: int) -> dict[str, torch.Tensor]:
        # The 725 MB file is read once per size; networks keep their own copies of what they need.
        weights = self.weights(size, "crop")
        return self._get(("state", size), lambda: load_checkpoint(weights.sadtalker))

    def audio_networks(self, size: int, device: str = "cpu"):
        """(ExpNet, PoseVAE) in eval mode, float32."""
        from sadtalker.coeffs.expnet import ExpNet
        from sadtalker.coeffs.posevae import Audio2Pose

        def build():
            state = self._state(size)
            expnet = load_strict(ExpNet(), sub_state_dict(state, "audio2exp."), "audio2exp")
            posevae = load_strict(Audio2Pose(), sub_state_dict(state, "audio2pose."), "audio2pose")
            return expnet.eval().to(device), posevae.eval().to(device)

        return self._get(("audio", size, device), build)

    def recon_network(self, size: int, device: str = "cpu"):
        """The 3DMM regressor in eval mode, float32."""
        from sadtalker.recon.extract import build_recon_net

        return self._get(("recon", size, device), lambda: build_recon_net(self._state(size)).to(device))

    def landmarker(self):
        """The face detector + 68-landmark backend (``auto``: face-alignment when its weights are cached,
        else the offline dlib backend)."""
        from sadtalker.face.landmarks import make_landmarker

        return self._get(("landmarker", self.landmarker_name), lambda: make_landmarker(self.landmarker_name))

    def animator(self, size: int, preprocess: str, device: str = "cpu", dtype: str = "float32"):
        """The face renderer engine (mapping net + keypoint detector + generator)."""
        from sadtalker.render.animate import FaceAnimator
        from sadtalker.render.build import build_renderer

        family = "full" if "full" in preprocess else "crop"

        def build():
            weights = self.weights(size, preprocess)
            mapping_state = load_checkpoint(weights.mapping)
            renderer = build_renderer(self._state(size), mapping_state, device=device)
            autocast = None if dtype == "float32" else _DTYPES[dtype]
            return FaceAnimator(*renderer, autocast_dtype=autocast)

        return self._get(("animator", size, family, device, dtype), build)

    def release_checkpoints(self) -> None:
        """Drop the raw checkpoint dicts (the built networks stay)."""
        with self._lock:
            for key in [k for k in self._cache if k[0] == "state"]:
                del self._cache[key]


def official_names() -> list[str]:
    return [name for name, item in REGISTRY.items() if not item.legacy]
