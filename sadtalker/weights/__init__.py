"""Official checkpoints: the registry of files, the cache, download with verification, loading by prefix,
and deterministic synthetic weights in the official layouts."""

from sadtalker.weights.loading import load_checkpoint, load_strict, sub_state_dict
from sadtalker.weights.registry import REGISTRY, WeightFile, cache_dir

__all__ = ["REGISTRY", "WeightFile", "cache_dir", "load_checkpoint", "load_strict", "sub_state_dict"]
