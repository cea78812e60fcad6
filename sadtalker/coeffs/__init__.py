"""Audio -> motion coefficients: ExpNet, PoseVAE, smoothing and assembly (official ``Audio2Coeff``,
src/test_audio2coeff.py)."""
