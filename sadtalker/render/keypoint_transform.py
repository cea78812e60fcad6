"""Keypoint transformation of the face renderer (SadTalker §3.3; face-vid2vid's ``T(x_c, R, t, δ)``).

Pure tensor functions: MappingNet's head-pose bins → degrees → rotation matrix, and the transformation of
the canonical keypoints by rotation, translation and expression offsets (official
``headpose_pred_to_degree``, ``get_rotation_matrix`` and ``keypoint_transformation`` in
src/facerender/modules/make_animation.py). Two oddities of that code are reproduced on purpose (the
weights were trained with them): degrees → radians uses **3.14**, not π; only the y component of the
translation is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sadtalker.render.mapping import MappingOutput

REFERENCE_PI = 3.14
"""The official degrees → radians constant (``deg / 180 * 3.14`` in ``get_rotation_matrix``), not π."""


def headpose_bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Expected angle of the 66 three-degree bins: ``(B, 66)`` logits → ``(B,)`` degrees in [-99, 96]."""
    idx = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
    return (F.softmax(logits, dim=1) * idx).sum(dim=1) * 3 - 99


def rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """``(B,)`` angles in degrees → ``(B, 3, 3)`` rotation ``Rx(pitch) · Ry(yaw) · Rz(roll)``.

    Column-vector convention (``k' = M k``); radians = ``deg / 180 * 3.14``.
    """
    p, y, r = (angle / 180 * REFERENCE_PI for angle in (pitch, yaw, roll))
    one, zero = torch.ones_like(p), torch.zeros_like(p)
    # fmt: off
    pitch_mat = torch.stack([one, zero, zero,
                             zero, p.cos(), -p.sin(),
                             zero, p.sin(), p.cos()], dim=1).view(-1, 3, 3)
    yaw_mat = torch.stack([y.cos(), zero, y.sin(),
                           zero, one, zero,
                           -y.sin(), zero, y.cos()], dim=1).view(-1, 3, 3)
    roll_mat = torch.stack([r.cos(), -r.sin(), zero,
                            r.sin(), r.cos(), zero,
                            zero, zero, one], dim=1).view(-1, 3, 3)
    # fmt: on
    return pitch_mat @ yaw_mat @ roll_mat


def transform_keypoints(
    kp_canonical: torch.Tensor,
    he: MappingOutput,
    yaw_override: torch.Tensor | None = None,
    pitch_override: torch.Tensor | None = None,
    roll_override: torch.Tensor | None = None,
) -> torch.Tensor:
    """Canonical keypoints → posed keypoints: ``R · k + (0, t_y, 0) + δ_k``.

    Args:
        kp_canonical: ``(B, K, 3)`` or ``(1, K, 3)`` (broadcast to the B of ``he``).
        he: MappingNet output for B windows.
        yaw_override, pitch_override, roll_override: optional ``(B,)`` angles in degrees (free-view camera,
            the official ``yaw_in``/``pitch_in``/``roll_in``) that replace the predicted angle; used for
            driving keypoints only.

    Returns ``(B, K, 3)``. Inputs are not modified (the reference zeroes ``t[:, 0]``/``t[:, 2]`` in place).
    """
    yaw = headpose_bins_to_degrees(he.yaw) if yaw_override is None else yaw_override.to(he.yaw)
    pitch = headpose_bins_to_degrees(he.pitch) if pitch_override is None else pitch_override.to(he.pitch)
    roll = headpose_bins_to_degrees(he.roll) if roll_override is None else roll_override.to(he.roll)
    rot = rotation_matrix(yaw, pitch, roll)  # (B, 3, 3)
    batch = rot.shape[0]
    kp = kp_canonical.expand(batch, -1, -1)
    kp_rotated = torch.einsum("bmp,bkp->bkm", rot, kp)  # (B, K, 3)
    t = torch.zeros_like(he.t)
    t[:, 1] = he.t[:, 1]  # as the official code: x and z of the translation are dropped
    return kp_rotated + t.unsqueeze(1) + he.exp.view(batch, -1, 3)
