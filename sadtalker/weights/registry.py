"""The official weight files as typed metadata and the local cache directory.

The files and URLs are those of the official scripts/download_models.sh (the legacy ``.pth`` set is its
commented-out block); ``init_path`` (src/utils/init_path.py) chooses among them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

_RELEASE = "https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2-rc/"
_LEGACY = "https://github.com/Winfredy/SadTalker/releases/download/v0.0.2/"


@dataclass(frozen=True)
class WeightFile:
    """One downloadable checkpoint file.

    ``networks`` maps each sub-network (a name of the builder table, ``sadtalker.networks.NETWORKS``) to the
    key prefix that holds it in the file's flat key space (safetensors: ``"generator."``; torch pickles,
    flattened as ``top/rest``: ``"mapping/"``), in the file's order.
    """

    name: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    networks: dict[str, str] = field(default_factory=dict)
    licence: str = "Apache-2.0 (OpenTalker/SadTalker)"
    legacy: bool = False

    @property
    def is_safetensors(self) -> bool:
        return self.name.endswith(".safetensors")


def _sadtalker_file(name: str, sha256: str, size: int | None) -> WeightFile:
    return WeightFile(
        name=name,
        urls=(_RELEASE + name,),
        sha256=sha256,
        size=size,
        networks={  # in the order of the official wrapper (src/utils/model2safetensor.py)
            "kp_extractor": "kp_extractor.",
            "generator": "generator.",
            "audio2exp": "audio2exp.",
            "audio2pose": "audio2pose.",
            "face_3drecon": "face_3drecon.",
        },
    )


def _legacy_file(name: str, networks: dict[str, str]) -> WeightFile:
    return WeightFile(name, (_LEGACY + name,), sha256=None, size=None, networks=networks, legacy=True)


REGISTRY: dict[str, WeightFile] = {
    f.name: f
    for f in (
        _sadtalker_file(
            "SadTalker_V0.0.2_256.safetensors",
            "c211f5d6de003516bf1bbda9f47049a4c9c99133b1ab565c6961e5af16477bff",
            None,  # about 725 MB; exact byte count not published
        ),
        _sadtalker_file(
            "SadTalker_V0.0.2_512.safetensors",
            "0e063f7ff5258240bdb0f7690783a7b1374e6a4a81ce8fa33456f4cd49694340",
            None,  # about 725 MB; exact byte count not published
        ),
        WeightFile(
            name="mapping_00229-model.pth.tar",
            urls=(_RELEASE + "mapping_00229-model.pth.tar", _LEGACY + "mapping_00229-model.pth.tar"),
            sha256="62a1e06006cc963220f6477438518ed86e9788226c62ae382ddc42fbcefb83f1",
            size=None,
            networks={"mapping_crop": "mapping/"},  # coeff_nc 70: crop, extcrop, resize
        ),
        WeightFile(
            name="mapping_00109-model.pth.tar",
            urls=(_RELEASE + "mapping_00109-model.pth.tar", _LEGACY + "mapping_00109-model.pth.tar"),
            sha256="84a8642468a3fcfdd9ab6be955267043116c2bec2284686a5262f1eaf017f64c",
            size=None,
            networks={"mapping_full": "mapping/"},  # coeff_nc 73: full, extfull
        ),
        # Legacy pickles (--old_version in the reference). Their hashes are not published.
        _legacy_file("epoch_20.pth", {"face_3drecon": "net_recon/"}),
        _legacy_file("auido2exp_00300-model.pth", {"audio2exp": "model/"}),
        _legacy_file("auido2pose_00140-model.pth", {"audio2pose": "model/"}),
        _legacy_file(
            "facevid2vid_00189-model.pth.tar",
            {"generator": "generator/", "kp_extractor": "kp_detector/", "he_estimator": "he_estimator/"},
        ),
        # QC only (LSE-D / LSE-C, sadtalker.qc.syncnet), fetched by name. download_model.sh of
        # joonson/syncnet_python names this URL; no hash or size is published, so the measured SHA-256
        # is written into every QC record that used the file.
        WeightFile(
            name="syncnet_v2.model",
            urls=("http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",),
            sha256=None,
            size=None,
            networks={"syncnet": ""},  # a flat state dict: netcnnaud.*, netfcaud.*, netcnnlip.*, netfclip.*
            licence=(
                "code MIT (joonson/syncnet_python LICENSE.md, (c) Joon Son Chung); the model file is "
                "served by Oxford VGG with no licence stated; not redistributed by this project"
            ),
        ),
        # Face enhancer (the `enhancer: gfpgan` option, sadtalker.enhance), fetched by name. TencentARC does
        # not publish a hash; this SHA-256 is the one independent download manifests pin for this URL (e.g.
        # arktronic/sd-multi verify-resources.sh). About 349 MB; the byte count is not published either.
        WeightFile(
            name="GFPGANv1.4.pth",
            urls=("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth",),
            sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
            size=None,
            networks={"gfpgan": "params_ema/"},
            licence="Apache-2.0 (TencentARC/GFPGAN); not redistributed by this project",
        ),
    )
}


#: The files the current pipeline loads (the synthetic set writes these by default).
CURRENT_FILES = (
    "SadTalker_V0.0.2_256.safetensors",
    "SadTalker_V0.0.2_512.safetensors",
    "mapping_00229-model.pth.tar",
    "mapping_00109-model.pth.tar",
)
#: The SadTalker files, current and legacy, whose layouts the networks define (``sadtalker.networks``).
SADTALKER_FILES = CURRENT_FILES + tuple(name for name, f in REGISTRY.items() if f.legacy)


def sadtalker_file(size: int) -> WeightFile:
    """The safetensors file holding every network but the mapping net, for render size 256 or 512."""
    if size not in (256, 512):
        raise ValueError(f"size must be 256 or 512, got {size}")
    return REGISTRY[f"SadTalker_V0.0.2_{size}.safetensors"]


def mapping_file(preprocess: str) -> WeightFile:
    """mapping_00109 (coeff_nc 73) for the full modes, mapping_00229 (coeff_nc 70) otherwise, as the
    official ``init_path``."""
    return REGISTRY["mapping_00109-model.pth.tar" if "full" in preprocess else "mapping_00229-model.pth.tar"]


def cache_dir() -> Path:
    """Where official and synthetic weights live: ``$SADTALKER_HOME`` or ``~/.cache/sadtalker``."""
    env = os.environ.get("SADTALKER_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sadtalker"
