"""Stage f: mapping net + keypoint detector + keypoint transformation + generator (``f_render.npz``).

Builds the renderer from synthetic weights for the golden set's seed through the real builder, runs the
engine on the stored source image / semantics / coefficients, and compares every stored intermediate.
Sizes (T, batch size, S, 70 or 73 inputs) are read from the arrays.
"""

from __future__ import annotations

import numpy as np
import torch

from golden_stages import Check, GoldenSet, compare
from sadtalker.networks import load_renderer, synthetic_network_state
from sadtalker.render.animate import FaceAnimator
from sadtalker.render.generator import OcclusionAwareSPADEGenerator
from sadtalker.render.keypoint_detector import KPDetector
from sadtalker.render.mapping import MappingConfig, MappingNet
from sadtalker.render.windows import semantic_windows, target_coefficients, to_reference_layout

KP_TOL = 1e-4
FRAME_TOL = 1e-3
WINDOW_TOL = 1e-6
HEADS = ("yaw", "pitch", "roll", "t", "exp")


def _synthetic_states(coeff_nc: int, seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Flat synthetic states as the official files would hold them (only the renderer's prefixes)."""
    with torch.device("meta"):
        networks = {"kp_extractor.": KPDetector(), "generator.": OcclusionAwareSPADEGenerator()}
        mapping = MappingNet(MappingConfig(coeff_nc=coeff_nc))
    sadtalker = {
        prefix + key: tensor
        for prefix, module in networks.items()
        for key, tensor in synthetic_network_state(module, prefix, seed).items()
    }
    mapping_state = {
        "mapping/" + key: t for key, t in synthetic_network_state(mapping, "mapping/", seed).items()
    }
    return sadtalker, mapping_state


def run_f(golden: GoldenSet) -> list[Check]:
    data = golden.npz("f_render")
    source_semantics = data["source_semantics"]  # (1, C, 27)
    coeff_nc = source_semantics.shape[1]
    stored_windows = data["target_semantics"]  # (bs, n, C, 27)
    batch_size = stored_windows.shape[0]
    coeffs = data["coeffs_3frames"]  # (T, 70)

    networks = load_renderer(*_synthetic_states(coeff_nc, golden.seed), coeff_nc=coeff_nc)
    engine = FaceAnimator(*networks, compile=golden.compile)
    source = engine.set_source(data["source_image"], source_semantics[0])
    checks = [compare("f", "kp_canonical", source.kp_canonical, data["kp_canonical"], KP_TOL)]
    checks += [
        compare("f", f"he_source_{h}", getattr(source.he_source, h), data[f"he_source_{h}"], KP_TOL)
        for h in HEADS
    ]
    checks.append(compare("f", "kp_source", source.kp_source, data["kp_source"], KP_TOL))

    target = target_coefficients(coeffs, source_semantics[0, :, 0], full=coeff_nc == 73)
    windows = to_reference_layout(semantic_windows(target), batch_size)
    checks.append(compare("f", "target_semantics", windows, stored_windows, WINDOW_TOL))

    layout = stored_windows.shape[:2]
    he_driving, kp_driving = engine.driving_keypoints(stored_windows.reshape(-1, *stored_windows.shape[2:]))
    checks += [
        compare(
            "f",
            f"he_driving_{h}",
            getattr(he_driving, h).reshape(*layout, -1),
            data[f"he_driving_{h}"],
            KP_TOL,
        )
        for h in HEADS
    ]
    checks.append(compare("f", "kp_driving", kp_driving.reshape(*layout, -1, 3), data["kp_driving"], KP_TOL))

    frames = torch.cat(list(engine.animate(target, batch_size=batch_size))).cpu().numpy()
    check = compare("f", "frames", frames, data["frames"], FRAME_TOL)
    if frames.shape == data["frames"].shape:
        mean_err = float(np.abs(frames.astype(np.float64) - data["frames"]).mean())
        check = Check(check.stage, check.name, check.max_abs_err, check.tolerance, f"mean abs {mean_err:.1e}")
    checks.append(check)
    return checks


STAGES = {"f": run_f}
