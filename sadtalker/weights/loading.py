"""One loading path for every checkpoint: a flat ``{key: tensor}`` view, split by prefix, loaded strictly.

Flat keys follow the layout TSVs of the reference: safetensors keys as stored; torch pickles (a dict of
state dicts) as ``<top-level key>/<state_dict key>``, e.g. ``mapping/fc_exp.weight``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from sadtalker.errors import WeightsError

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{key: tensor}`` dict on the CPU.

    safetensors files are read as they are. Pickles (``.pth``, ``.pth.tar``) are only ever read with
    ``torch.load(weights_only=True)``, so a file that would execute code is refused.

    Raises:
        WeightsError: one line naming the file: not found, empty, corrupt or truncated, or (a pickle)
            refused because it holds more than tensors, naming what it would have called.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty file (0 bytes)")
    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise WeightsError(
                f"{path}: not a readable safetensors file, corrupt or truncated ({_one_line(exc)})"
            ) from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        if "Weights only load failed" in text:  # torch's weights-only unpickler met something else
            raise WeightsError(
                f"{path}: refused to load: it holds more than tensors ({_unpickler_reason(text)}); only "
                "plain tensors are loaded (torch.load weights_only=True)"
            ) from None  # torch's message advises weights_only=False: not to be shown
        raise WeightsError(
            f"{path}: not a readable PyTorch checkpoint, corrupt or truncated ({_one_line(exc)})"
        ) from exc
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a dict of state dicts, got {type(obj).__name__}")
    flat: dict[str, torch.Tensor] = {}
    for top, value in obj.items():
        if isinstance(value, Mapping):
            for key, tensor in value.items():
                if isinstance(tensor, torch.Tensor):
                    flat[f"{top}/{key}"] = tensor
        elif isinstance(value, torch.Tensor):
            flat[str(top)] = value
    return flat


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unpickler_reason(text: str) -> str:
    """What torch's weights-only unpickler refused, from its (multi-line) message."""
    found = re.search(r"GLOBAL (\S+)", text)
    if found:
        return f"it would call {found.group(1)}"
    found = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    return found.group(1).strip() if found else "not plain tensors"


def sub_state_dict(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose key starts with ``prefix``, with the prefix removed (prefix form, not substring)."""
    out = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    if not out:
        raise WeightsError(f"no tensor under prefix {prefix!r} in the checkpoint")
    return out


def shapes_compatible(file_shape: tuple[int, ...], model_shape: tuple[int, ...]) -> bool:
    """Whether ``torch.nn.Module.load_state_dict`` loads a tensor of ``file_shape`` into one of
    ``model_shape``: equal shapes, or a 0-d model tensor from a one-element 1-d one (torch's rule for
    checkpoints written before 0.4, and by tools that store BatchNorm ``num_batches_tracked`` as ``(1,)``).
    Nothing else: not ``(1, 1)``, not ``()`` for ``(1,)``, no broadcasting."""
    return file_shape == model_shape or (model_shape == () and file_shape == (1,))


def load_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], what: str = "", assign: bool = False
) -> nn.Module:
    """Load ``state`` into ``module`` with ``strict=True``; a mismatch names the missing/unexpected keys and
    the wrong shapes (checked before torch, with torch's own shape rule: :func:`shapes_compatible`).

    ``assign=True`` (a module built on the meta device): the module takes the state's tensors themselves
    instead of copies, converted only where the dtype differs, so a network costs its weights' memory once,
    not twice while it loads. Afterwards no tensor may be left on the meta device (a buffer nothing filled).
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and not shapes_compatible(tuple(state[k].shape), tuple(expected[k].shape))
    ]
    if missing or unexpected or bad_shapes:
        name = what or type(module).__name__
        raise WeightsError(
            f"{name}: checkpoint does not match the network: "
            f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, "
            f"{len(bad_shapes)} wrong shapes {bad_shapes[:3]}"
        )
    if not assign:
        module.load_state_dict(dict(state), strict=True)
        return module
    # 0-d model tensors stored as (1,): reshaped here, as torch's copying load does on its own.
    module.load_state_dict(
        {k: state[k].to(expected[k].dtype).reshape(expected[k].shape) for k in expected},
        strict=True,
        assign=True,
    )
    left = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise WeightsError(
            f"{what or type(module).__name__}: tensors not filled by the checkpoint: {left[:5]}"
        )
    return module
