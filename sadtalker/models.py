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
from sadtalker.weights.registry import cache_dir, mapping_file, sadtalker_file
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


@dataclass(frozen=True)
class _SizeNetworks:
    expnet: torch.nn.Module
    posevae: torch.nn.Module
    recon: torch.nn.Module
    kp_detector: torch.nn.Module
    generator: torch.nn.Module


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

    def _networks(self, size: int) -> _SizeNetworks:
        """Every network stored in ``SadTalker_V0.0.2_<size>.safetensors``, built on the CPU in one pass so
        that the 725 MB file is read once and its tensors are dropped right after loading."""

        def build() -> _SizeNetworks:
            from sadtalker.coeffs.expnet import ExpNet
            from sadtalker.coeffs.posevae import Audio2Pose
            from sadtalker.recon.extract import build_recon_net
            from sadtalker.render.build import load_network
            from sadtalker.render.generator import OcclusionAwareSPADEGenerator
            from sadtalker.render.keypoint_detector import KPDetector

            state = load_checkpoint(self.weights(size, "crop").sadtalker)
            networks = _SizeNetworks(
                expnet=load_strict(ExpNet(), sub_state_dict(state, "audio2exp."), "audio2exp").eval(),
                posevae=load_strict(Audio2Pose(), sub_state_dict(state, "audio2pose."), "audio2pose").eval(),
                recon=build_recon_net(state),
                kp_detector=load_network(KPDetector, sub_state_dict(state, "kp_extractor."), "kp_detector"),
                generator=load_network(
                    OcclusionAwareSPADEGenerator, sub_state_dict(state, "generator."), "generator"
                ),
            )
            del state
            return networks

        return self._get(("networks", size), build)

    def audio_networks(self, size: int):
        """(ExpNet, PoseVAE) in eval mode on the CPU (they cost milliseconds per frame)."""
        networks = self._networks(size)
        return networks.expnet, networks.posevae

    def recon_network(self, size: int):
        """The 3DMM regressor in eval mode on the CPU."""
        return self._networks(size).recon

    def landmarker(self):
        """The face detector + 68-landmark backend (``auto``: face-alignment when its weights are cached,
        else the offline dlib backend)."""
        from sadtalker.face.landmarks import make_landmarker

        return self._get(("landmarker", self.landmarker_name), lambda: make_landmarker(self.landmarker_name))

    def animator(self, size: int, preprocess: str, device: str = "cpu", dtype: str = "float32"):
        """The face renderer engine (mapping net + keypoint detector + generator) on ``device``."""
        from sadtalker.render.animate import FaceAnimator
        from sadtalker.render.build import load_network
        from sadtalker.render.mapping import MappingConfig, MappingNet

        family = "full" if "full" in preprocess else "crop"

        def build():
            networks = self._networks(size)
            mapping_state = sub_state_dict(
                load_checkpoint(self.weights(size, preprocess).mapping), "mapping/"
            )
            coeff_nc = int(mapping_state["first.0.weight"].shape[1])
            mapping = load_network(
                lambda: MappingNet(MappingConfig(coeff_nc=coeff_nc)), mapping_state, "mapping"
            )
            autocast = None if dtype == "float32" else _DTYPES[dtype]
            return FaceAnimator(
                networks.kp_detector.to(device),
                networks.generator.to(device),
                mapping.to(device),
                autocast_dtype=autocast,
            )

        return self._get(("animator", size, family, device, dtype), build)
