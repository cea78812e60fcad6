"""The builder table (``sadtalker.networks``): every network it names builds with its official configuration
and runs forward on an input of the documented shape; every weight file names only networks it knows, and
the networks load strictly from their prefixes (in the style of timm's parametrised model tests)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from sadtalker.networks import NETWORKS, build_network, file_layout, load_network, synthetic_network_state
from sadtalker.weights.registry import REGISTRY

torch.manual_seed(0)


def _image(size: int) -> torch.Tensor:
    return torch.rand(1, 3, size, size)


def _kp() -> torch.Tensor:
    return torch.rand(1, 15, 3) * 0.5


def _generator(net: nn.Module) -> torch.Tensor:
    return net(_image(128), _kp(), _kp())  # 128 px: the official 256 costs seconds on a CPU


#: name -> (forward on a small input of the documented shape, the output's shape)
FORWARD: dict[str, tuple[Callable[[nn.Module], object], tuple[int, ...]]] = {
    "face_3drecon": (lambda net: net(_image(224)), (1, 257)),
    "audio2exp": (lambda net: net(torch.rand(2, 1, 80, 16), torch.rand(2, 64), torch.zeros(2, 1)), (2, 64)),
    "audio2pose": (
        lambda net: net.generate(
            torch.rand(40, 80, 16), torch.zeros(6), 3, torch.randn(net.num_draws(40), 64)
        ),
        (40, 6),
    ),
    "kp_extractor": (lambda net: net(_image(256)), (1, 15, 3)),
    "generator": (_generator, (1, 3, 128, 128)),
    "he_estimator": (lambda net: net(_image(256)).exp, (1, 45)),
    "mapping_crop": (lambda net: net(torch.rand(2, 70, 27)).exp, (2, 45)),
    "mapping_full": (lambda net: net(torch.rand(2, 73, 27)).exp, (2, 45)),
    "syncnet": (lambda net: net.embed_lips(torch.rand(1, 3, 5, 224, 224)), (1, 1024)),
    "gfpgan": (lambda net: net(torch.rand(1, 3, 512, 512) * 2 - 1), (1, 3, 512, 512)),
}


def test_every_network_has_a_forward_test() -> None:
    assert set(FORWARD) == set(NETWORKS)


@pytest.mark.parametrize("name", list(NETWORKS))
def test_network_builds_and_runs_forward(name: str) -> None:
    forward, shape = FORWARD[name]
    net = build_network(name).eval()
    with torch.no_grad():
        out = forward(net)
    assert tuple(out.shape) == shape and torch.isfinite(out).all()


@pytest.mark.parametrize("file", [f for f in REGISTRY.values() if f.networks], ids=lambda f: f.name)
def test_weight_files_name_known_networks_with_distinct_prefixes(file) -> None:
    assert set(file.networks) <= set(NETWORKS), file.networks
    prefixes = [p for p in file.networks.values() if p]
    assert len(prefixes) == len(set(prefixes)) and not any(
        a != b and b.startswith(a) for a in prefixes for b in prefixes
    )


def test_load_network_is_strict_and_in_eval_mode() -> None:
    with torch.device("meta"):
        meta = build_network("mapping_crop")
    state = synthetic_network_state(meta, "mapping/", seed=3)
    net = load_network("mapping_crop", state)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert torch.equal(net.state_dict()["first.0.weight"], state["first.0.weight"])
    from sadtalker.errors import WeightsError

    with pytest.raises(WeightsError):  # 70 inputs' weights do not fit the 73-input network
        load_network("mapping_full", state)


def test_file_layout_follows_the_registry_order() -> None:
    rows = file_layout("SadTalker_V0.0.2_256.safetensors")
    tops = list(dict.fromkeys(key.split(".", 1)[0] for key, _, _ in rows))
    assert tops == list(REGISTRY["SadTalker_V0.0.2_256.safetensors"].networks)
