"""Optional face restoration of rendered frames (the ``enhancer`` option: ``none`` | ``gfpgan``).

:mod:`sadtalker.enhance.gfpgan`: GFPGAN v1.4 (clean architecture) as our own module, its checkpoint layout,
strict loading and synthetic weights. :mod:`sadtalker.enhance.frames`: batch pre/post-processing and
:func:`enhance_frames`. :mod:`sadtalker.enhance.weights`: which file an enhancer loads under the render's
weights (official or synthetic, never mixed).
"""

from sadtalker.enhance.frames import enhance_frames
from sadtalker.enhance.weights import ENHANCERS, EnhancerWeights, resolve_enhancer_weights

__all__ = ["ENHANCERS", "EnhancerWeights", "enhance_frames", "resolve_enhancer_weights"]
