"""Builders of the face renderer networks (SadTalker §3.3): checkpoint state → loaded modules in eval mode.

The networks are created on the ``meta`` device (no random init of ~150 M parameters), materialised on
the target device and loaded with ``strict=True`` from the official files' prefixes:
``kp_extractor.`` and ``generator.`` in ``SadTalker_V0.0.2_<size>.safetensors``, ``mapping/`` in
``mapping_00229-model.pth.tar`` (coeff_nc 70) / ``mapping_00109-model.pth.tar`` (73). The legacy
``facevid2vid_00189-model.pth.tar`` works with ``kp_prefix="kp_detector/"`` and
``generator_prefix="generator/"``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple, TypeVar

import torch
from torch import nn

from sadtalker.errors import WeightsError
from sadtalker.render.generator import GeneratorConfig, OcclusionAwareSPADEGenerator
from sadtalker.render.keypoint_detector import KPDetector, KPDetectorConfig
from sadtalker.render.mapping import MappingConfig, MappingNet
from sadtalker.weights.loading import load_strict, sub_state_dict

M = TypeVar("M", bound=nn.Module)


class Renderer(NamedTuple):
    """The three networks of the renderer; ``FaceAnimator(*renderer)`` makes an engine of them."""

    kp_detector: KPDetector
    generator: OcclusionAwareSPADEGenerator
    mapping: MappingNet


def load_network(
    make: Callable[[], M], state: Mapping[str, torch.Tensor], what: str, device: str | torch.device = "cpu"
) -> M:
    """Build ``make()`` on the meta device, materialise it on ``device``, load ``state`` strictly, eval mode.

    Every persistent tensor comes from ``state``; non-persistent caches (the spectral-norm effective
    weights) are recomputed by the modules' load hooks.
    """
    with torch.device("meta"):
        module = make()
    module = module.to_empty(device=device)
    load_strict(module, state, what)
    module.eval().requires_grad_(False)
    return module


def mapping_coeff_nc(mapping_state: Mapping[str, torch.Tensor], prefix: str = "mapping/") -> int:
    """The input width of a MappingNet checkpoint (70 or 73), read from ``first.0.weight``."""
    key = f"{prefix}first.0.weight"
    if key not in mapping_state:
        raise WeightsError(f"mapping checkpoint has no {key!r}")
    return int(mapping_state[key].shape[1])


def build_renderer(
    sadtalker_state: Mapping[str, torch.Tensor],
    mapping_state: Mapping[str, torch.Tensor],
    coeff_nc: int | None = None,
    *,
    device: str | torch.device = "cpu",
    kp_prefix: str = "kp_extractor.",
    generator_prefix: str = "generator.",
    mapping_prefix: str = "mapping/",
    kp_config: KPDetectorConfig | None = None,
    generator_config: GeneratorConfig | None = None,
) -> Renderer:
    """Loaded ``(kp_detector, generator, mapping)`` on ``device``, eval mode, no grad.

    Args:
        sadtalker_state: flat state of ``SadTalker_V0.0.2_<size>.safetensors`` (``load_checkpoint``);
            only the ``kp_prefix``/``generator_prefix`` keys are used.
        mapping_state: flat state of the mapping ``.pth.tar`` (keys ``mapping/...``).
        coeff_nc: 70 (crop/extcrop/resize) or 73 (full/extfull); default: read from the checkpoint. A value
            that disagrees with the checkpoint fails the strict load with a :class:`WeightsError`.
        kp_config, generator_config: default = the official configuration (other values: small test nets).
    """
    found = mapping_coeff_nc(mapping_state, mapping_prefix)
    nc = found if coeff_nc is None else coeff_nc
    if nc not in (70, 73):
        raise WeightsError(f"mapping net input width must be 70 or 73, got {nc}")
    kp_detector = load_network(
        lambda: KPDetector(kp_config), sub_state_dict(sadtalker_state, kp_prefix), "kp_detector", device
    )
    generator = load_network(
        lambda: OcclusionAwareSPADEGenerator(generator_config),
        sub_state_dict(sadtalker_state, generator_prefix),
        "generator",
        device,
    )
    mapping = load_network(
        lambda: MappingNet(MappingConfig(coeff_nc=nc)),
        sub_state_dict(mapping_state, mapping_prefix),
        "mapping",
        device,
    )
    return Renderer(kp_detector, generator, mapping)
