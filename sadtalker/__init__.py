"""sadtalker-batch: a clean PyTorch reimplementation of SadTalker inference (CVPR 2023).

Sub-packages follow the data flow:
photo -> ``face`` -> ``recon``; audio -> ``audio`` -> ``coeffs``; coefficients -> ``render`` -> ``video``;
around them ``weights`` (registry, download, loading, synthetic weights) and ``qc``.
Nothing in this package imports Prefect.
"""

__version__ = "0.1.0"
