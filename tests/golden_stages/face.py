"""Golden stages d (3DMM regressor) and e (crop + 224 alignment), SPEC §2.4-2.9.

e: for every ``e_crop_align_<mode>.npz``, from the stored photo and its fixed 68 landmarks: crop box, quad,
``crop_info`` size, the cropped face, the 256 source, the landmarks mapped into it, then the alignment
(``trans_params``, the 224 image, its landmarks) from the stored 256 source and landmarks, so each error
points at one step.

d: ReconNet on synthetic weights (``meta.json`` seed) on the stored network input, then the whole chain
photo → crop → align → ReconNet from e's ``crop`` file, compared with ``d_recon``.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from golden_stages import Check, GoldenSet, compare
from sadtalker.face.crop import apply_crop, landmarks_to_source, plan_crop, source_image
from sadtalker.networks import synthetic_network_state
from sadtalker.recon.align import align_face_224
from sadtalker.recon.coefficients import semantic_row
from sadtalker.recon.extract import image_tensor, run_recon
from sadtalker.recon.resnet_recon import ReconNet
from sadtalker.weights.loading import load_strict

COEFF_TOL = 1e-4
QUAD_TOL = 1e-6
LANDMARK_TOL = 1e-3
TRANS_TOL = 1e-4
# aligned_224: at most 1 grey level off, on at most this fraction of pixels
ALIGNED_MAX_FRACTION = 1e-3

_E_FILE = re.compile(r"^e_crop_align_(\w+)\.npz$")


_NETS: dict[int, ReconNet] = {}


def _recon_net(seed: int) -> ReconNet:
    """ReconNet with the synthetic ``face_3drecon.*`` weights of ``seed`` (built once per seed)."""
    if seed not in _NETS:
        net = ReconNet()
        load_strict(net, synthetic_network_state(net, "face_3drecon.", seed), "ReconNet")
        _NETS[seed] = net.eval()
    return _NETS[seed]


def _e_modes(golden: GoldenSet) -> list[str]:
    modes = []
    for path in sorted(golden.root.glob("e_crop_align_*.npz")):
        match = _E_FILE.match(path.name)
        if match:
            modes.append(match.group(1))
    return modes


def _or_empty(values) -> np.ndarray:
    """A box as an array; ``None`` (resize mode has no crop box) as an empty array, so a mismatch shows."""
    return np.asarray(values if values is not None else [], dtype=np.float64)


def _exact(stage: str, name: str, ours, reference) -> Check:
    """Integer arrays/images: must be identical (max abs error 0)."""
    return compare(stage, name, ours, reference, 0.0)


def _image_check(stage: str, name: str, ours: np.ndarray, reference: np.ndarray) -> Check:
    if ours.shape != reference.shape:
        return Check(
            stage, name, float("inf"), 1.0, f"shape {ours.shape} != {reference.shape}", verdict=False
        )
    diff = np.abs(ours.astype(np.int16) - reference.astype(np.int16))
    max_diff = int(diff.max()) if diff.size else 0
    fraction = float(np.mean(diff.max(axis=-1) > 0)) if diff.size else 0.0
    passed = max_diff <= 1 and fraction <= ALIGNED_MAX_FRACTION
    return Check(
        stage,
        name,
        float(max_diff),
        1.0,
        f"{fraction * 100:.3f} % of pixels differ, limit {ALIGNED_MAX_FRACTION * 100:.1f} %",
        verdict=passed,
    )


def run_e(golden: GoldenSet) -> list[Check]:
    modes = _e_modes(golden)
    if not modes:
        return [Check("e", "files", float("inf"), 0.0, "no e_crop_align_<mode>.npz in the golden directory")]
    checks: list[Check] = []
    for mode in modes:
        data = golden.npz(f"e_crop_align_{mode}")
        tag = f"{mode}."
        image = data["image"]
        height, width = image.shape[:2]
        size = int(data["crop_256"].shape[0])
        record = plan_crop(mode, (width, height), data["lm68_orig"], size)

        if "crop" in data:
            checks.append(_exact("e", tag + "crop", _or_empty(record.crop_box), data["crop"]))
        if "quad" in data:
            # The stored quad is float32: compare our float64 values after the same rounding ...
            checks.append(
                compare("e", tag + "quad", np.float32(_or_empty(record.quad)), data["quad"], QUAD_TOL)
            )
        # ... and against the float64 values of meta.json when present.
        info = golden.meta.get(f"crop_info_{mode}")
        if info is not None:
            checks.append(_exact("e", tag + "crop_info_size(meta)", record.crop_info_size, info[0]))
            if info[1] is not None:
                checks.append(_exact("e", tag + "crop_box(meta)", _or_empty(record.crop_box), info[1]))
                checks.append(compare("e", tag + "quad_f64(meta)", _or_empty(record.quad), info[2], QUAD_TOL))
        if "crop_info_size" in data:
            checks.append(_exact("e", tag + "crop_info_size", record.crop_info_size, data["crop_info_size"]))

        cropped = apply_crop(image, record)
        checks.append(_exact("e", tag + "cropped", cropped, data["cropped"]))
        source = source_image(cropped, size)
        checks.append(_exact("e", tag + "crop_256", source, data["crop_256"]))
        lm_source = landmarks_to_source(data["lm68_orig"], record)
        checks.append(compare("e", tag + "lm68_crop256", lm_source, data["lm68_crop256"], LANDMARK_TOL))

        # Alignment from the stored inputs of that step.
        aligned = align_face_224(data["crop_256"], data["lm68_crop256"])
        checks.append(
            compare("e", tag + "trans_params", aligned.trans_params, data["trans_params"], TRANS_TOL)
        )
        checks.append(_image_check("e", tag + "aligned_224", aligned.image, data["aligned_224"]))
        checks.append(
            compare("e", tag + "align_lm_out", aligned.landmarks, data["align_lm_out"], LANDMARK_TOL)
        )
    return checks


def run_d(golden: GoldenSet) -> list[Check]:
    data = golden.npz("d_recon")
    net = _recon_net(golden.seed)
    checks = [compare("d", "im_t", image_tensor(data["aligned_224"]).numpy(), data["im_t"], 0.0)]

    with torch.no_grad():
        full = net(torch.from_numpy(data["im_t"])).numpy()
    checks.append(compare("d", "full_coeff", full, data["full_coeff"], COEFF_TOL))
    checks.append(
        compare("d", "coeff_3dmm", semantic_row(full, data["trans_params"]), data["coeff_3dmm"], COEFF_TOL)
    )

    # Whole chain from the photo (d_recon was made in crop mode).
    if golden.has("e_crop_align_crop"):
        e = golden.npz("e_crop_align_crop")
        image = e["image"]
        size = int(e["crop_256"].shape[0])
        record = plan_crop("crop", (image.shape[1], image.shape[0]), e["lm68_orig"], size)
        source = source_image(apply_crop(image, record), size)
        aligned = align_face_224(source, landmarks_to_source(e["lm68_orig"], record))
        chain_full = run_recon(net, aligned.image)
        checks.append(
            compare("d", "chain.trans_params", aligned.trans_params, data["trans_params"], TRANS_TOL)
        )
        checks.append(compare("d", "chain.full_coeff", chain_full, data["full_coeff"], COEFF_TOL))
        checks.append(
            compare(
                "d",
                "chain.coeff_3dmm",
                semantic_row(chain_full, aligned.trans_params),
                data["coeff_3dmm"],
                COEFF_TOL,
            )
        )
    return checks


STAGES = {"d": run_d, "e": run_e}
