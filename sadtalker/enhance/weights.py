"""Which file a face enhancer loads: the official checkpoint, or deterministic synthetic weights.

An enhancer follows the render it belongs to, so that one video never mixes official and synthetic
networks: a render on the official SadTalker set needs the official enhancer file (with its SHA-256), and a
render on synthetic weights (policy ``synthetic``, or ``auto`` without the official set) uses a synthetic
enhancer file written by the same rule (seed 0) beside the other synthetic files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sadtalker.errors import WeightsError
from sadtalker.hashing import sha256_file
from sadtalker.options import ENHANCERS
from sadtalker.weights.registry import REGISTRY, WeightFile, cache_dir

log = logging.getLogger(__name__)

__all__ = ["ENHANCERS", "ENHANCER_FILES", "EnhancerWeights", "enhancer_file", "resolve_enhancer_weights"]

#: Registry file of each enhancer.
ENHANCER_FILES: dict[str, str] = {"gfpgan": "GFPGANv1.4.pth"}


@dataclass(frozen=True)
class EnhancerWeights:
    """The file one enhancer loads.

    Attributes:
        name: the enhancer (``gfpgan``).
        path: the checkpoint.
        sha256: its SHA-256 (verified against the registry for an official file).
        synthetic: written by the synthetic rule (outputs are not faces).
        seed: the synthetic seed (None for the official file).
    """

    name: str
    path: Path
    sha256: str
    synthetic: bool
    seed: int | None = None

    @property
    def label(self) -> str:
        """``gfpgan:official:<sha12>`` or ``gfpgan:synthetic:seed0:<sha12>``."""
        kind = f"synthetic:seed{self.seed}" if self.synthetic else "official"
        return f"{self.name}:{kind}:{self.sha256[:12]}"

    def fingerprint(self) -> dict[str, Any]:
        """What a cache key needs: the enhancer, its file's SHA-256, synthetic or not."""
        return {"name": self.name, "sha256": self.sha256, "synthetic": self.synthetic}


def enhancer_file(name: str) -> WeightFile:
    """The registry entry of enhancer ``name``.

    Raises:
        ValueError: not an enhancer with weights (``none`` has none).
    """
    if name not in ENHANCER_FILES:
        raise ValueError(f"no weights for enhancer {name!r}; known: {', '.join(ENHANCER_FILES)}")
    return REGISTRY[ENHANCER_FILES[name]]


def _fetch_command(item: WeightFile, folder: Path) -> str:
    dest = "" if Path(folder) == cache_dir() else f" --dest {folder}"
    return f"sadtalker weights fetch {item.name}{dest}"


def resolve_enhancer_weights(name: str, folder: Path, synthetic: bool, seed: int = 0) -> EnhancerWeights:
    """The enhancer's file for a render whose SadTalker weights are ``synthetic`` or official.

    Official: ``folder/<file>``, which must be there with the registry's SHA-256. Synthetic: the file in the
    synthetic folder of ``seed`` (written on first use, about 350 MB for GFPGAN v1.4).

    Raises:
        WeightsError: official file missing (the message has the fetch command) or with a wrong hash.
    """
    item = enhancer_file(name)
    if synthetic:
        from sadtalker.enhance.gfpgan import write_synthetic_gfpgan
        from sadtalker.weights.synthetic import SYNTHETIC_WARNING, ensure_synthetic_checkpoints

        synthetic_folder = ensure_synthetic_checkpoints(seed, names=())  # the folder and its marker
        path = synthetic_folder / item.name
        if not path.is_file():
            log.warning("writing synthetic %s (seed %d) to %s", item.name, seed, synthetic_folder)
            write_synthetic_gfpgan(path, seed)
        log.warning("enhancer %s: %s", name, SYNTHETIC_WARNING)
        return EnhancerWeights(name, path, sha256_file(path), synthetic=True, seed=seed)
    path = Path(folder) / item.name
    if not path.is_file():
        raise WeightsError(
            f"enhancer {name!r}: {item.name} missing in {folder} (the render uses official weights, and one "
            "render never mixes official and synthetic networks); fetch it with "
            f"`{_fetch_command(item, folder)}`"
        )
    actual = sha256_file(path)
    if item.sha256 and actual != item.sha256:
        raise WeightsError(
            f"{path}: SHA-256 {actual} does not match the official {item.sha256}; delete it and fetch again "
            f"(`{_fetch_command(item, path.parent)}`)"
        )
    return EnhancerWeights(name, path, actual, synthetic=False)
