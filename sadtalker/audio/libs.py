"""The audio libraries, fully imported once per process under a lock, before any thread uses them.

Why: librosa imports resampy (and samplerate) with ``lazy_loader.load``, which puts an
``importlib.util._LazyModule`` proxy in ``sys.modules``. Before Python 3.12.3 (CPython gh-114763) the
proxy's first attribute access turns it into a plain module *first* and only then runs the module's code
(about a second for resampy: it imports numba). Any other thread that reads an attribute meanwhile gets the
half-initialised module: ``AttributeError: module 'resampy' has no attribute 'resample'`` on the first
rows of a fresh worker. Ordinary ``import`` statements are safe (the import system's per-module locks make
other threads wait); lazy proxies are not. So every lazy proxy is resolved here, by one thread, while the
others wait on the lock. Every use of librosa in this package goes through :func:`librosa`.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from types import ModuleType

import numpy as np

__all__ = ["librosa", "materialize_lazy_modules"]

_LOCK = threading.Lock()
_librosa: ModuleType | None = None

# The private class of the proxies (present in every CPython 3.x; looked up defensively all the same).
_LAZY_MODULE: type | None = getattr(importlib.util, "_LazyModule", None)


def materialize_lazy_modules() -> list[str]:
    """Load every lazily-loaded module proxy now in ``sys.modules``; returns their names.

    Call with a lock held that every user of those modules also goes through. The proxies are recognised
    by their type only (``type()`` does not trigger the load, any attribute access would).
    """
    if _LAZY_MODULE is None:
        return []
    loaded = []
    for name, module in list(sys.modules.items()):
        if module is not None and issubclass(type(module), _LAZY_MODULE):
            _ = module.__dict__  # the first attribute access runs the module's code
            loaded.append(name)
    return loaded


def librosa() -> ModuleType:
    """``librosa``, with resampy and every other lazy module it uses already loaded (thread-safe).

    The first call in a process imports librosa and the submodules this package calls
    (``librosa.resample`` / ``stft`` / ``filters.mel``), resolves the lazy proxies and compiles resampy's
    kernels (about 3 s in all); later calls return at once.
    """
    global _librosa
    if _librosa is not None:
        return _librosa
    with _LOCK:
        if _librosa is None:
            import librosa as lib

            # librosa's own submodules come from lazy_loader.attach (import_module: thread-safe), touched
            # here anyway so that the first row pays for them, not a random later one.
            _ = (lib.resample, lib.stft, lib.filters.mel, lib.core.audio)
            import resampy  # the module the resample path needs; a plain import when it is not a proxy

            materialize_lazy_modules()
            # resampy's kernels are numba functions compiled on first call; threads that make that first
            # call together each compile (measured: 16 threads, 31 s instead of 0.5 s). One tiny call of
            # the exact path load_audio uses (1-D float32, kaiser_best) compiles them once, here.
            lib.resample(
                np.zeros(441, dtype=np.float32), orig_sr=44_100, target_sr=16_000, res_type="kaiser_best"
            )
            _ = resampy.resample
            _librosa = lib
    return _librosa
