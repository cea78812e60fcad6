"""3DMM coefficients of the source image: 224 alignment (:mod:`.align`), the ResNet-50 regressor
(:mod:`.resnet_recon`), the coefficient layout (:mod:`.coefficients`) and their composition
(:mod:`.extract`). Official counterpart: the 3DMM part of ``CropAndExtract.generate``
(src/utils/preprocess.py)."""

from sadtalker.recon.align import Aligned, align_face_224, five_points, pos_fit
from sadtalker.recon.coefficients import COEFF_SLICES, Coeffs3DMM, semantic_row, split_coeffs
from sadtalker.recon.extract import (
    Recon3DMM,
    Recon3DMMFrames,
    extract_3dmm,
    extract_3dmm_frames,
    run_recon,
)
from sadtalker.recon.resnet_recon import ReconNet, ReconNetConfig

__all__ = [
    "COEFF_SLICES",
    "Aligned",
    "Coeffs3DMM",
    "Recon3DMM",
    "Recon3DMMFrames",
    "ReconNet",
    "ReconNetConfig",
    "align_face_224",
    "extract_3dmm",
    "extract_3dmm_frames",
    "five_points",
    "pos_fit",
    "run_recon",
    "semantic_row",
    "split_coeffs",
]
