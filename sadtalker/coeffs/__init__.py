"""Audio -> motion coefficients: ExpNet, PoseVAE, smoothing and assembly (SPEC §4, §5)."""
