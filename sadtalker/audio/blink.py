"""The random eye-blink control curve fed to ExpNet, drawn from a per-item generator.

Official counterpart: ``generate_blink_seq_randomly`` in src/generate_batch.py.
"""

from __future__ import annotations

import numpy as np

_BLINK = np.array([0.5, 0.9, 1.0, 0.9, 0.5], dtype=np.float32)


def random_blink_curve(frames: int, rng: np.random.Generator) -> np.ndarray:
    """Eye-closure ratio per frame: 5-frame blinks at random gaps.

    Same shape of process as the reference (gaps drawn from ``[min(10, T), min(T // 2, 70))``), but from
    ``rng`` instead of Python's global ``random``, so one seed gives one curve. The reference crashes when
    that range is empty (T = 21); here there is simply no blink.

    Returns:
        ``(T, 1)`` float32.
    """
    ratio = np.zeros((frames, 1), dtype=np.float32)
    low, high = min(10, frames), min(frames // 2, 70)
    if frames <= 20 or high <= low:
        return ratio
    position = 0
    while position < frames:
        start = int(rng.integers(low, high))
        if position + start + len(_BLINK) > frames - 1:
            break
        ratio[position + start : position + start + len(_BLINK), 0] = _BLINK
        position += start + len(_BLINK)
    return ratio
