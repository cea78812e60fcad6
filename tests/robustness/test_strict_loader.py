"""Finding 10: the strict loader accepts exactly what ``torch.nn.Module.load_state_dict`` accepts for scalar
entries (a 0-d parameter or buffer stored with shape ``(1,)``, e.g. BatchNorm ``num_batches_tracked``
written by other tools) and stays strict about everything else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sadtalker.errors import WeightsError
from sadtalker.weights.loading import load_checkpoint, load_strict


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.bn = nn.BatchNorm2d(3)


class OneElementBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("v", torch.zeros(1))


def _state(counter_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    state = {
        k: v.clone() + 0.5 if v.is_floating_point() else v.clone() for k, v in Net().state_dict().items()
    }
    state["bn.num_batches_tracked"] = torch.full(counter_shape, 7, dtype=torch.long)
    return state


@pytest.mark.parametrize("shape", [(), (1,)], ids=["scalar", "one-element"])
def test_counter_of_either_shape_loads_like_torch(shape: tuple[int, ...]) -> None:
    state = _state(shape)
    nn.BatchNorm2d(3).load_state_dict(
        {k[3:]: v for k, v in state.items() if k.startswith("bn.")}
    )  # torch: ok
    net = load_strict(Net(), state, "net")
    assert net.bn.num_batches_tracked.shape == () and int(net.bn.num_batches_tracked) == 7
    torch.testing.assert_close(net.conv.weight, state["conv.weight"])


def test_one_element_counter_from_a_safetensors_file(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file(_state((1,)), str(tmp_path / "net.safetensors"))
    net = load_strict(Net(), load_checkpoint(tmp_path / "net.safetensors"), "net")
    assert int(net.bn.num_batches_tracked) == 7


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bn.num_batches_tracked", torch.zeros(2, dtype=torch.long)),  # two elements: not a scalar
        ("bn.num_batches_tracked", torch.zeros(1, 1, dtype=torch.long)),  # (1, 1): torch refuses too
        ("bn.running_mean", torch.zeros(1)),  # (3,) expected
        ("conv.weight", torch.zeros(3, 2, 1)),  # a dimension lost
        ("conv.bias", torch.zeros(())),  # () for (3,)
    ],
)
def test_other_shape_mismatches_are_still_refused(key: str, value: torch.Tensor) -> None:
    state = _state(())
    state[key] = value
    with pytest.raises(WeightsError, match="wrong shapes"):
        load_strict(Net(), state, "net")
    with pytest.raises(RuntimeError, match="size mismatch"):
        Net().load_state_dict(state)  # torch refuses these as well


def test_scalar_in_the_file_for_a_one_element_tensor_is_refused() -> None:
    """The converse of the accepted case: torch refuses it, so do we."""
    with pytest.raises(RuntimeError):
        OneElementBuffer().load_state_dict({"v": torch.tensor(3.0)})
    with pytest.raises(WeightsError, match="wrong shapes"):
        load_strict(OneElementBuffer(), {"v": torch.tensor(3.0)}, "one")


def test_missing_and_unexpected_keys_are_still_refused() -> None:
    state = _state(())
    del state["bn.running_var"]
    state["bn.extra"] = torch.zeros(3)
    with pytest.raises(WeightsError, match=r"1 missing \['bn.running_var'\], 1 unexpected \['bn.extra'\]"):
        load_strict(Net(), state, "net")
