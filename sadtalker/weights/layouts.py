"""Official checkpoint layouts, derived from this project's own modules (no reference files needed).

A layout is a list of ``(flat key, dtype, shape)`` rows in ``state_dict()`` order, the same format as the
reference's ``checkpoints/*.tsv``. Modules are built on the ``meta`` device, so this costs no memory.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sadtalker.weights.synthetic import LayoutRow

CURRENT_FILES = (
    "SadTalker_V0.0.2_256.safetensors",
    "SadTalker_V0.0.2_512.safetensors",
    "mapping_00229-model.pth.tar",
    "mapping_00109-model.pth.tar",
)


def _sadtalker_children() -> dict[str, nn.Module]:
    from sadtalker.coeffs.expnet import ExpNet
    from sadtalker.coeffs.posevae import Audio2Pose
    from sadtalker.recon.resnet_recon import ReconNet
    from sadtalker.render.generator import OcclusionAwareSPADEGenerator
    from sadtalker.render.keypoint_detector import KPDetector

    # Order of the official wrapper (src/utils/model2safetensor.py).
    return {
        "kp_extractor": KPDetector(),
        "generator": OcclusionAwareSPADEGenerator(),
        "audio2exp": ExpNet(),
        "audio2pose": Audio2Pose(),
        "face_3drecon": ReconNet(),
    }


def _mapping(coeff_nc: int) -> Callable[[], dict[str, nn.Module]]:
    def children() -> dict[str, nn.Module]:
        from sadtalker.render.mapping import MappingConfig, MappingNet

        return {"mapping": MappingNet(MappingConfig(coeff_nc=coeff_nc))}

    return children


def _only(module_path: str, cls: str, top: str) -> Callable[[], dict[str, nn.Module]]:
    def children() -> dict[str, nn.Module]:
        import importlib

        return {top: getattr(importlib.import_module(module_path), cls)()}

    return children


def _facevid2vid() -> dict[str, nn.Module]:
    from sadtalker.render.generator import OcclusionAwareSPADEGenerator
    from sadtalker.render.he_estimator import HEEstimator
    from sadtalker.render.keypoint_detector import KPDetector

    return {
        "generator": OcclusionAwareSPADEGenerator(),
        "kp_detector": KPDetector(),
        "he_estimator": HEEstimator(),
    }


# file name -> (children builder, key separator: "." for safetensors, "/" for torch pickles)
_LAYOUTS: dict[str, tuple[Callable[[], dict[str, nn.Module]], str]] = {
    "SadTalker_V0.0.2_256.safetensors": (_sadtalker_children, "."),
    "SadTalker_V0.0.2_512.safetensors": (_sadtalker_children, "."),
    "mapping_00229-model.pth.tar": (_mapping(70), "/"),
    "mapping_00109-model.pth.tar": (_mapping(73), "/"),
    "epoch_20.pth": (_only("sadtalker.recon.resnet_recon", "ReconNet", "net_recon"), "/"),
    "auido2exp_00300-model.pth": (_only("sadtalker.coeffs.expnet", "ExpNet", "model"), "/"),
    "auido2pose_00140-model.pth": (_only("sadtalker.coeffs.posevae", "Audio2Pose", "model"), "/"),
    "facevid2vid_00189-model.pth.tar": (_facevid2vid, "/"),
}
ALL_FILES = tuple(_LAYOUTS)


def official_layout(name: str) -> list[LayoutRow]:
    """The ``(key, dtype, shape)`` rows of the official file ``name``."""
    if name not in _LAYOUTS:
        raise KeyError(f"no layout for {name!r}; known: {', '.join(ALL_FILES)}")
    build, sep = _LAYOUTS[name]
    rows: list[LayoutRow] = []
    with torch.device("meta"):
        children = build()
    for top, module in children.items():
        for key, tensor in module.state_dict(keep_vars=False).items():
            dtype = str(tensor.dtype).removeprefix("torch.")
            rows.append((f"{top}{sep}{key}", dtype, tuple(tensor.shape)))
    return rows


def module_layout(module: nn.Module, prefix: str) -> list[LayoutRow]:
    """Layout rows of one network as it sits in a file under ``prefix`` (``"generator."``, ``"mapping/"``)."""
    return [
        (prefix + key, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape))
        for key, tensor in module.state_dict().items()
    ]


def synthetic_network_state(module: nn.Module, prefix: str, seed: int) -> dict[str, torch.Tensor]:
    """The synthetic state dict of one network (prefix stripped), as it would be read from the full file.

    Cheaper than writing the 725 MB file when only one network is needed (conformance stages, tests).
    """
    from sadtalker.weights.synthetic import synthetic_state

    state = synthetic_state(module_layout(module, prefix), seed)
    return {key[len(prefix) :]: torch.from_numpy(array) for key, array in state.items()}
