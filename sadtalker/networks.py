"""The builder table: every network of the pipeline by name, what it expects, and how it is loaded.

One plain dict, :data:`NETWORKS` (in the style of segment-anything's ``sam_model_registry`` and timm's
pretrained configs). The weight files say which networks they hold and under which key prefix
(``sadtalker.weights.registry.WeightFile.networks``, e.g. ``{"generator": "generator."}``); this table says
how to build each of them. Together they give:

- :func:`load_network`: a network built on the ``meta`` device (no random init of ~150 M parameters),
  materialised on the target device, loaded strictly from its prefix, eval mode, no grad;
- :func:`load_file`: every network of one file, the file read once; :func:`load_renderer`: the renderer's
  three networks from the states of the size file and a mapping file;
- :func:`file_layout`: the ``(key, dtype, shape)`` rows of an official file, derived from these modules (the
  reference's ``checkpoints/*.tsv`` format), from which synthetic weights are made.

This module sits above the networks (``recon``, ``coeffs``, ``render``, ``qc``, ``enhance``) and the weights
package; none of them imports it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from sadtalker.errors import WeightsError
from sadtalker.weights.loading import load_checkpoint, load_strict, sub_state_dict
from sadtalker.weights.registry import CURRENT_FILES, REGISTRY, WeightFile
from sadtalker.weights.synthetic import LayoutRow, synthetic_state

__all__ = [
    "NETWORKS",
    "NetworkSpec",
    "Renderer",
    "build_network",
    "file_layout",
    "load_file",
    "load_network",
    "load_renderer",
    "module_layout",
    "synthetic_network_state",
]


@dataclass(frozen=True)
class NetworkSpec:
    """One network: the class that builds it (``module:Class``), its keyword arguments for the official
    configuration (configs are typed dataclasses; a ``(config_class, {fields})`` pair builds one), what its
    input is, and where it runs in the pipeline."""

    target: str
    stage: str
    inputs: str
    config: tuple[str, Mapping[str, object]] | None = None

    def build(self) -> nn.Module:
        """The network with the official configuration (random init: use :func:`load_network`)."""
        cls = _resolve(self.target)
        if self.config is None:
            return cls()
        config_cls, fields = self.config
        return cls(_resolve(config_cls)(**fields))


def _resolve(target: str) -> type:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


#: Every network, by the name the weight files use (``WeightFile.networks``).
NETWORKS: dict[str, NetworkSpec] = {
    "face_3drecon": NetworkSpec(
        "sadtalker.recon.resnet_recon:ReconNet", "recon", "224x224 RGB face aligned by 5 landmarks, [0, 1]"
    ),
    "audio2exp": NetworkSpec(
        "sadtalker.coeffs.expnet:ExpNet", "coeffs", "16 kHz speech: 80-bin mel windows, 25 fps; 64 exp coeffs"
    ),
    "audio2pose": NetworkSpec(
        "sadtalker.coeffs.posevae:Audio2Pose", "coeffs", "16 kHz speech windows, 25 fps, pose style 0-45"
    ),
    "kp_extractor": NetworkSpec(
        "sadtalker.render.keypoint_detector:KPDetector", "render", "256 or 512 px RGB source face, [0, 1]"
    ),
    "generator": NetworkSpec(
        "sadtalker.render.generator:OcclusionAwareSPADEGenerator",
        "render",
        "source face + source / driving keypoints, 256 or 512 px",
    ),
    "he_estimator": NetworkSpec(
        "sadtalker.render.he_estimator:HEEstimator", "render", "RGB face; legacy facevid2vid file only"
    ),
    "mapping_crop": NetworkSpec(
        "sadtalker.render.mapping:MappingNet",
        "render",
        "70 coefficients (exp + pose + crop), 27-frame windows: crop, extcrop, resize",
        ("sadtalker.render.mapping:MappingConfig", {"coeff_nc": 70}),
    ),
    "mapping_full": NetworkSpec(
        "sadtalker.render.mapping:MappingNet",
        "render",
        "73 coefficients (with the crop box), 27-frame windows: full, extfull",
        ("sadtalker.render.mapping:MappingConfig", {"coeff_nc": 73}),
    ),
    "syncnet": NetworkSpec(
        "sadtalker.qc.syncnet:SyncNet", "qc", "0.2 s of 16 kHz MFCC + 5 grey 224x224 mouth frames (LSE-D/C)"
    ),
    "gfpgan": NetworkSpec("sadtalker.enhance.gfpgan:GFPGANv1Clean", "enhance", "512x512 RGB face, [-1, 1]"),
}


def build_network(name: str) -> nn.Module:
    """Network ``name`` with its official configuration and random init."""
    if name not in NETWORKS:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(NETWORKS)}")
    return NETWORKS[name].build()


def load_network(
    make: str | Callable[[], nn.Module],
    state: Mapping[str, torch.Tensor],
    what: str | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """``make`` (a name of :data:`NETWORKS`, or a builder for test-sized networks) built on the meta device,
    given the tensors of ``state`` (already stripped of its prefix; strict, no copy: see
    :func:`~sadtalker.weights.loading.load_strict`), moved to ``device``, eval mode, no grad. Every persistent
    tensor comes from ``state``; the modules' load hooks then derive what they keep from it (the spectral-norm
    convolutions fold σ into their weight)."""
    build = (lambda: build_network(make)) if isinstance(make, str) else make
    with torch.device("meta"):
        module = build()
    load_strict(
        module, state, what or (make if isinstance(make, str) else type(module).__name__), assign=True
    )
    return module.to(device).eval().requires_grad_(False)


def load_file(path: str | Path, names: tuple[str, ...] | None = None, file: WeightFile | None = None):
    """The networks of one weight file (default: every one it holds), keyed by name, on the CPU. The file
    is read once and its tensors dropped after loading. ``file``: its registry entry (default: by name)."""
    entry = file or REGISTRY[Path(path).name]
    state = load_checkpoint(path)
    wanted = entry.networks if names is None else {n: entry.networks[n] for n in names}
    networks = {
        name: load_network(name, sub_state_dict(state, prefix) if prefix else state, name)
        for name, prefix in wanted.items()
    }
    del state
    return networks


class Renderer(NamedTuple):
    """The three networks of the face renderer; ``FaceAnimator(*renderer)`` makes an engine of them."""

    kp_detector: nn.Module
    generator: nn.Module
    mapping: nn.Module


def load_renderer(
    sadtalker_state: Mapping[str, torch.Tensor],
    mapping_state: Mapping[str, torch.Tensor],
    coeff_nc: int | None = None,
    *,
    device: str | torch.device = "cpu",
    kp_config: object | None = None,
    generator_config: object | None = None,
) -> Renderer:
    """``(kp_detector, generator, mapping)`` from the flat states of ``SadTalker_V0.0.2_<size>.safetensors``
    and of a mapping file, on ``device``, eval mode, no grad.

    Args:
        coeff_nc: 70 (crop/extcrop/resize: ``mapping_crop``) or 73 (full/extfull: ``mapping_full``);
            default: read from the checkpoint. A value that disagrees with it fails the strict load.
        kp_config, generator_config: default: the official configuration (others: small test networks).
    """
    from sadtalker.render.generator import OcclusionAwareSPADEGenerator
    from sadtalker.render.keypoint_detector import KPDetector

    key = "mapping/first.0.weight"
    if key not in mapping_state:
        raise WeightsError(f"mapping checkpoint has no {key!r}")
    nc = int(mapping_state[key].shape[1]) if coeff_nc is None else coeff_nc
    if nc not in (70, 73):
        raise WeightsError(f"mapping net input width must be 70 or 73, got {nc}")
    prefixes = REGISTRY[CURRENT_FILES[0]].networks  # where each network sits in the size file
    mapping = "mapping_crop" if nc == 70 else "mapping_full"
    kp = (lambda: KPDetector(kp_config)) if kp_config else "kp_extractor"
    generator = (lambda: OcclusionAwareSPADEGenerator(generator_config)) if generator_config else "generator"
    return Renderer(
        load_network(kp, sub_state_dict(sadtalker_state, prefixes["kp_extractor"]), "kp_detector", device),
        load_network(generator, sub_state_dict(sadtalker_state, prefixes["generator"]), "generator", device),
        load_network(mapping, sub_state_dict(mapping_state, "mapping/"), "mapping", device),
    )


def module_layout(module: nn.Module, prefix: str) -> list[LayoutRow]:
    """Layout rows of one network as it sits in a file under ``prefix`` (``"generator."``, ``"mapping/"``)."""
    return [
        (prefix + key, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape))
        for key, tensor in module.state_dict().items()
    ]


def file_layout(name: str) -> list[LayoutRow]:
    """The ``(key, dtype, shape)`` rows of the official file ``name``, in ``state_dict()`` order."""
    if name not in REGISTRY or not REGISTRY[name].networks:
        raise KeyError(f"no layout for {name!r}")
    rows: list[LayoutRow] = []
    for network, prefix in REGISTRY[name].networks.items():
        with torch.device("meta"):
            module = build_network(network)
        rows += module_layout(module, prefix)
    return rows


def synthetic_network_state(module: nn.Module, prefix: str, seed: int) -> dict[str, torch.Tensor]:
    """The synthetic state dict of one network (prefix stripped), as it would be read from the full file.

    Cheaper than writing the 725 MB file when only one network is needed (conformance stages, tests).
    """
    state = synthetic_state(module_layout(module, prefix), seed)
    return {key[len(prefix) :]: torch.from_numpy(array) for key, array in state.items()}
